"""`embed --engine ray`: the parts plan of embed_corpus.py run as Ray Data batch inference.

The pipeline is Ray Data's canonical one: a CPU stage decodes and runs the PIL part of the
transform (resize, crop) into uint8 arrays, a pool of encoder actors (one model each, loaded once;
one GPU per actor where the cluster has GPUs) normalises and encodes fixed-size batches, and the
driver writes each part of the plan as soon as all its rows are back (order preserved, so parts
complete one after another and the driver holds about one part). The output folder is exactly
what one process writes: same plan, same part files, same failures, manifest last; a re-run
skips the parts already written. Every node needs wit-retrieval installed and the image store
and output folder on storage all nodes see (a shared filesystem).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .embed import EmbedConfig, Failed
from .embed_corpus import KEY_FILE, ensure_key, finish, key_of, plan_parts, write_part

DECODE_ROWS = 64  # images a decode task prepares at once


class _DecodeStage:
    """CPU stage: image id -> uint8 HWC pixels after open_clip's PIL transforms (or a failure reason)."""

    def __init__(self, images: str, preprocess, draft: bool):
        from ..images import open_store
        from .preprocess import split_transform

        self.store = open_store(images)
        self.split = split_transform(preprocess, draft=draft)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .embed import _load

        prepared = [_load(self.store, self.split, str(i)) for i in batch["id"]]
        shape = next((p.shape for p in prepared if isinstance(p, np.ndarray)), None)
        pixels, reasons = [], []
        for item in prepared:
            if isinstance(item, np.ndarray) and item.shape == shape:
                pixels.append(item)
                reasons.append("")
            else:
                reason = item.reason if isinstance(item, Failed) else "undecodable: transform output not uint8 RGB"
                pixels.append(None)
                reasons.append(reason)
        blank = np.zeros(shape or (1, 1, 3), np.uint8)
        return {**batch, "pixels": np.stack([p if p is not None else blank for p in pixels]),
                "reason": np.array(reasons, dtype=object)}


class _EncodeStage:
    """Encoder actor: one model, loaded once; normalises and encodes a batch of decoded rows."""

    def __init__(self, model: str, device: str | None, preprocess, draft: bool, quantize: str = ""):
        from . import load_encoder
        from .preprocess import split_transform
        from .qat import quantize_encoder

        self.encoder = quantize_encoder(load_encoder(model, device=device), quantize)
        self.split = split_transform(preprocess, draft=draft)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .preprocess import to_batch

        ok = np.flatnonzero(batch["reason"] == "")
        dim = self.encoder.metadata.dim
        embedding = np.zeros((len(batch["id"]), dim), np.float32)
        if ok.size:
            embedding[ok] = self.encoder.encode_pixels(to_batch(list(batch["pixels"][ok]), self.split))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        return {**out, "embedding": embedding}


def embed_with_ray(model: str, images: str, ids: Sequence[str], out: str | Path, config: EmbedConfig, *,
                   dtype: str = "float32", actors: int = 0, device: str | None = None,
                   quantize: str = "") -> dict[str, Any]:
    """Embed `ids` of the store `images` into the parts folder `out` on the connected Ray cluster."""
    import ray

    from ..images import open_store
    from . import load_encoder

    out = Path(out)
    from .qat import quantize_encoder

    # the driver needs the key (quantization included) and the transform, not a device
    encoder = quantize_encoder(load_encoder(model, device="cpu"), quantize)
    from .preprocess import split_transform

    if not split_transform(encoder.preprocess).vectorised:
        raise ConfigError(f"{model}: its image transform is not open_clip's shape; use --engine local")
    store = open_store(images)
    plan = plan_parts(store.disk_order(ids), config.part_rows)
    key = key_of(encoder.metadata, dtype)
    ensure_key(out, key)
    todo = [part for part in plan if not (out / part.file).is_file()]
    counts = {"parts": len(plan), "parts_written": 0, "embedded": 0, "failed": 0}
    if todo:
        _run(ray, todo, out, encoder, model, images, config, dtype, actors, device, counts, quantize)
    manifest = finish(out, plan, key)
    return {"rank": 0, **counts, "out": str(out), "rows": manifest["rows"], "failed_total": manifest["failed"],
            "parts_total": len(plan), "dim": key["dim"], "dtype": dtype, "engine": "ray"}


def _run(ray, todo, out: Path, encoder, model, images, config, dtype, actors, device, counts, quantize) -> None:
    import json

    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().execution_options.preserve_order = True  # parts complete one after another
    gpus = ray.cluster_resources().get("GPU", 0)
    size = actors or max(1, int(gpus) or 1)
    rows = [{"part": p.number, "pos": n, "id": i} for p in todo for n, i in enumerate(p.ids)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // DECODE_ROWS))
    ds = ds.map_batches(_DecodeStage, fn_constructor_kwargs={"images": images, "preprocess": encoder.preprocess,
                                                             "draft": config.draft},
                        batch_size=DECODE_ROWS, num_cpus=1, compute=ActorPoolStrategy(min_size=1, max_size=max(
                            1, int(ray.cluster_resources().get("CPU", 1)) - size)))
    ds = ds.map_batches(_EncodeStage, fn_constructor_kwargs={"model": model, "preprocess": encoder.preprocess,
                                                             "draft": config.draft, "quantize": quantize,
                                                             "device": device or ("cuda" if gpus else "cpu")},
                        batch_size=config.batch_size, compute=ActorPoolStrategy(size=size),
                        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
    meta = json.loads((out / KEY_FILE).read_text(encoding="utf-8"))
    by_number = {p.number: p for p in todo}
    pending: dict[int, list] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for part, pos, image, reason, vector in zip(batch["part"], batch["pos"], batch["id"], batch["reason"],
                                                    batch["embedding"]):
            pending.setdefault(int(part), []).append((int(pos), str(image), str(reason), vector))
            if len(pending[int(part)]) == len(by_number[int(part)].ids):
                _write(out, by_number[int(part)], sorted(pending.pop(int(part))), meta, dtype, counts)


def _write(out: Path, part, rows: list, meta: dict, dtype: str, counts: dict) -> None:
    ok = [(image, vector) for _, image, reason, vector in rows if not reason]
    failures = [Failed(image, reason) for _, image, reason, _ in rows if reason]
    matrix = np.stack([v for _, v in ok]) if ok else np.zeros((0, int(meta["dim"])), np.float32)
    write_part(out, part, [i for i, _ in ok], matrix, failures, meta, dtype)
    counts["parts_written"] += 1
    counts["embedded"] += len(ok)
    counts["failed"] += len(failures)
