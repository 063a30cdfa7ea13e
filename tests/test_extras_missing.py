"""Installed without an extra, a command that needs it says in one line which extra to install.

Each command runs in a fresh interpreter in which the extra's modules are hidden
(`sys.modules[name] = None` makes `import name` raise ModuleNotFoundError, as on a machine
where the extra was never installed).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_models_world import make_world, write_store
from wit_retrieval.errors import EXTRA_OF_MODULE

REPO_BASELINES = "baselines/inject-mini.toml"

_RUNNER = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "from wit_retrieval.cli import app\n"
    "app(sys.argv[2:], prog_name='wit-retrieval')\n"
)


def _hidden(extra: str) -> str:
    return ",".join(sorted(m for m, e in EXTRA_OF_MODULE.items() if e == extra))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("extras")
    made = make_world(base / "data", entities=4, scenes={"train": 8, "test": 6}, size=16)
    write_store(made.store, base / "images")
    run = base / "run.trec"
    qrels = base / "qrels.tsv"
    run.write_text("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\n")
    qrels.write_text("q1 0 d1 1\n")
    return {"data": str(base / "data"), "images": str(base / "images"), "base": base,
            "run": str(run), "qrels": str(qrels)}


CASES = {
    "evaluate": ("clip", ["evaluate", "--model", "open_clip:wit-tiny-rn:random", "--fusion", "sum",
                          "--data", "{data}", "--images", "{images}", "--split", "test", "--out", "{base}/ev"]),
    "train": ("clip", ["train", REPO_BASELINES, "--data", "{data}", "--images", "{images}",
                       "--out", "{base}/tr"]),
    "embed": ("clip", ["embed", "--model", "open_clip:wit-tiny-vit:random", "--images", "{images}",
                       "--out", "{base}/emb.parquet"]),
    "score --plots": ("plots", ["score", "{run}", "--qrels", "{qrels}", "--plots", "{base}/plots"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_command_without_its_extra_names_the_extra_in_one_line(world, name):
    extra, args = CASES[name]
    argv = [a.format(**world) for a in args]
    done = subprocess.run([sys.executable, "-c", _RUNNER, _hidden(extra), *argv],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert f"pip install 'wit-retrieval[{extra}]'" in lines[0]


def test_an_unrelated_missing_module_is_not_dressed_up_as_an_extra():
    from wit_retrieval.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    hint = missing_extra(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"))
    assert hint is not None and hint.extra == "clip"
