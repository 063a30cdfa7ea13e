"""`evaluate --model mteb:NAME`: an MTEB-registry model (transformers CLIP) through our scorer, offline.

A tiny random CLIP in the transformers format (with a byte-level tokenizer built here) is written into a
temporary HF_HOME under the repository id and revision MTEB's registry names for
openai/clip-vit-base-patch32, so mteb's own CLIPModel loader finds it without a network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_models_world import make_world, write_store

pytest.importorskip("mteb")
pytest.importorskip("transformers")
REPO_ID = "openai/clip-vit-base-patch32"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet (every byte a printable character)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def write_tiny_clip(folder: Path) -> None:
    """A random 2-layer CLIP (32 px images, 16-d embeddings) with a character-level byte BPE vocabulary."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True)
    alphabet = sorted(set(_bytes_to_unicode().values()))
    vocab = {c: n for n, c in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
             "projection_dim": 16}
    config = CLIPConfig(text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 77,
                                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                                     "pad_token_id": vocab["<|endoftext|>"]},
                        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)


SCRIPT = r"""
import json, sys
from typer.testing import CliRunner
from wit_retrieval.cli import app
root, out = sys.argv[1], sys.argv[2]
base = ["evaluate", "--model", "mteb:openai/clip-vit-base-patch32", "--data", root, "--bootstrap", "0", "--k", "10"]
ok = CliRunner().invoke(app, base + ["--out", out])
listed = CliRunner().invoke(app, base + ["--out", out + "-list", "--fusion", "list"])
text_only = CliRunner().invoke(app, ["evaluate", "--model", "mteb:sentence-transformers/all-MiniLM-L6-v2",
                                     "--data", root, "--out", out + "-text"])
from wit_retrieval.models import load_encoder
from wit_retrieval.models.train_data import read_queries
from wit_retrieval.images import open_store
import numpy as np
enc = load_encoder("mteb:openai/clip-vit-base-patch32", device="cpu")
store = open_store(root + "/images")
query = next(q for q in read_queries(root, "test") if len(q["entity_image_urls"]) > 1)
fused = enc.encode_queries_from_store([query], store, "pair-mean", 8)[0]
pairs = [enc.encode_queries_from_store([{**query, "entity_image_urls": [u]}], store, "pair-mean", 8)[0]
         for u in query["entity_image_urls"]]
mean = np.mean(pairs, axis=0)
print(json.dumps({"ok": [ok.exit_code, ok.output], "list": [listed.exit_code, listed.output],
                  "text": [text_only.exit_code, text_only.output],
                  "fused_is_mean_of_pairs": bool(np.allclose(fused, mean / np.linalg.norm(mean), atol=1e-5))}))
"""


@pytest.mark.slow
def test_evaluate_an_mteb_clip_model_offline(tmp_path):
    import mteb

    revision = mteb.get_model_meta(REPO_ID).revision
    hub = tmp_path / "hf" / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    write_tiny_clip(hub / "snapshots" / revision)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(revision)
    world = make_world(tmp_path / "root", entities=6, scenes={"test": 12}, size=32)
    write_store(world.store, tmp_path / "root" / "images")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "root"), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"][0] == 0, report["ok"][1]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["fusion"] == "pair-mean" and results["num_queries"] == 12
    assert results["model"]["name"] == "mteb:openai/clip-vit-base-patch32"
    assert len((tmp_path / "out" / "run.trec").read_text().splitlines()) == 12 * 10
    assert report["list"][0] == 1 and "cannot take several images per query" in report["list"][1]
    assert report["text"][0] == 1 and "cannot take image+text queries" in report["text"][1]
    assert report["fused_is_mean_of_pairs"]
