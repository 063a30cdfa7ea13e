"""Model soups: averages of real (tiny, random-weight) open_clip checkpoints, written and reloaded."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from wit_retrieval.errors import ConfigError
from wit_retrieval.models.checkpoint import SPEC, WEIGHTS, build_retriever, save_checkpoint
from wit_retrieval.models.soup import SoupConfig, first_difference, soup

pytestmark = pytest.mark.slow  # builds three small open_clip models

BASE = "open_clip:wit-tiny-rn:random"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Three checkpoints: two of one architecture (seeds 0, 1), one with an extra inject head."""
    root = tmp_path_factory.mktemp("soup")
    a = save_checkpoint(root / "a", build_retriever(BASE, seed=0), step=10, training_datasets=["MMIR:x:train"])
    b = save_checkpoint(root / "b", build_retriever(BASE, seed=1), step=20, training_datasets=["MMIR:y:train"])
    c = save_checkpoint(root / "c", build_retriever(BASE, {"inject": {}}, seed=2), step=5)
    return a, b, c


def test_soup_of_two_is_the_mean(checkpoints, tmp_path):
    a, b, _ = checkpoints
    spec = soup(SoupConfig((str(a), str(b)), str(tmp_path / "soup")))
    got, sa, sb = (load_file(str(p / WEIGHTS)) for p in (tmp_path / "soup", a, b))
    assert set(got) == set(sa)
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert floats and any(not torch.equal(sa[k], sb[k]) for k in floats)
    for key in floats:
        torch.testing.assert_close(got[key], (sa[key] + sb[key]) / 2, rtol=1e-6, atol=1e-6)
    integers = [k for k in sa if not sa[k].is_floating_point()]
    for key in integers:
        assert torch.equal(got[key], sa[key])
    assert [i["weight"] for i in spec["soup"]["ingredients"]] == [0.5, 0.5]
    assert spec["step"] == 20 and spec["training_datasets"] == ["MMIR:x:train", "MMIR:y:train"]
    on_disk = json.loads((tmp_path / "soup" / SPEC).read_text())
    assert on_disk["soup"]["method"] == "uniform"
    assert on_disk["weights_sha256"] not in {i["weights_sha256"] for i in spec["soup"]["ingredients"]}
    assert not list(tmp_path.glob(".soup.*")), "no temporary folder is left behind"

    from wit_retrieval.models.checkpoint import load_local_dir

    encoder = load_local_dir(tmp_path / "soup", name="soup", device="cpu")
    vectors = encoder.encode_texts(["a red circle"])
    assert vectors.shape == (1, 64)


def test_soup_of_one_is_itself_and_weights_are_honoured(checkpoints, tmp_path):
    a, b, _ = checkpoints
    soup(SoupConfig((str(a),), str(tmp_path / "one")))
    one, original = load_file(str(tmp_path / "one" / WEIGHTS)), load_file(str(a / WEIGHTS))
    assert all(torch.equal(one[k], original[k]) for k in original)
    soup(SoupConfig((str(a), str(b)), str(tmp_path / "w"), weights=(3.0, 1.0)))
    weighted, sb = load_file(str(tmp_path / "w" / WEIGHTS)), load_file(str(b / WEIGHTS))
    key = next(k for k in original if original[k].is_floating_point() and original[k].numel() > 1)
    torch.testing.assert_close(weighted[key], 0.75 * original[key] + 0.25 * sb[key], rtol=1e-6, atol=1e-6)


def test_mismatches_name_what_differs(checkpoints, tmp_path):
    a, b, c = checkpoints
    with pytest.raises(ConfigError, match="another architecture.*heads.inject"):
        soup(SoupConfig((str(a), str(c)), str(tmp_path / "x")))
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    state = load_file(str(broken / WEIGHTS))
    dropped = sorted(state)[3]
    del state[dropped]
    save_file(state, str(broken / WEIGHTS))
    with pytest.raises(ConfigError, match=f"tensor '{dropped}' is in .* but not in"):
        soup(SoupConfig((str(a), str(broken)), str(tmp_path / "x")))
    state = load_file(str(b / WEIGHTS))
    key = next(k for k in sorted(state) if state[k].ndim == 2)
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, str(broken / WEIGHTS))
    with pytest.raises(ConfigError, match=f"tensor '{key}' differs"):
        soup(SoupConfig((str(a), str(broken)), str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="one of the ingredients"):
        soup(SoupConfig((str(a),), str(a)))
    with pytest.raises(ConfigError, match="2 weights for 1"):
        SoupConfig((str(a),), "x", weights=(1.0, 2.0))
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "a[1].b (2 != 3)"


def test_cli_soup(checkpoints, tmp_path):
    from wit_retrieval.cli import app

    a, b, _ = checkpoints
    runner = CliRunner()
    result = runner.invoke(app, ["soup", str(a), str(b), "--out", str(tmp_path / "s"), "--weights", "1,1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / SPEC).read_text())["soup"]["method"] == "weighted"
    again = runner.invoke(app, ["soup", str(a), "--out", str(tmp_path / "s")])
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(app, ["soup", str(a), "--out", str(tmp_path / "s"), "--force"]).exit_code == 0
    missing = runner.invoke(app, ["soup", str(tmp_path / "nope"), "--out", str(tmp_path / "t")])
    assert missing.exit_code == 1 and "checkpoint folder not found" in missing.output
