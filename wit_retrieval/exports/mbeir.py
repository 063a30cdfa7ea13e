"""`export mbeir`: UniIR's M-BEIR layout, task 7 (image,text -> image).

    query/{split}/mbeir_wit_{split}.jsonl              qid, query_txt, query_img_path, query_modality,
                                                       query_src_content, pos_cand_list, neg_cand_list
    cand_pool/local/mbeir_wit_{split}_cand_pool.jsonl  did, txt, img_path, modality, src_content
    qrels/{split}/mbeir_wit_{split}_qrels.txt          qid 0 did relevance 7
    instructions/query_instructions.tsv                one prompt per dataset id used (UniIR looks them up)
    mbeir_images/wit_images/ab/{image_id}.{ext}        image files (when an image store is given)
    id_map.tsv                                          split, kind, M-BEIR id, our id

Ids are `{dataset_id}:{n}` with n < 500,000 (UniIR's hash_qid is dataset_id * 500,000 + n; hash_did
dataset_id * 10,000,000 + n), numbered per split and kind from dataset id 10 up (UniIR uses 0-9), so
a split of millions spreads over several dataset ids. Splits are M-BEIR's: train, val, test.

A multi-entity query's `query_img_path` is its [MASK_0] entity image; `query_src_content` (a JSON
string) holds every entity image in mask order: `entity_image_paths[i]` is [MASK_i]'s image, with
`entity_image_urls`, `entity_ids`, our `query_id` and `language`. UniIR's loaders read only
`query_img_path`; a multi-image model reads the rest from there.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..ids import image_id
from ..io.shards import atomic_path, write_text_atomic
from .source import check_free_space, data_root, iter_batches, num_rows, splits
from .source import progress as progress_bar

FIRST_DATASET_ID = 10
PER_DATASET = 500_000
TASK_ID = 7  # "image,text -> image"
NAME = "wit"
PROMPT = "Retrieve the Wikipedia image that this text describes, where each [MASK] is the entity shown."
_MAGIC = ((b"\xff\xd8", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"RIFF", "webp"), (b"BM", "bmp"))


def mbeir_id(n: int) -> str:
    """The n-th id of a kind in a split: '{10 + n // 500000}:{n % 500000}'."""
    return f"{FIRST_DATASET_ID + n // PER_DATASET}:{n % PER_DATASET}"


@dataclass
class MbeirStats:
    queries: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    images_written: int = 0
    images_missing: int = 0
    dataset_ids: set = field(default_factory=set)
    files: list = field(default_factory=list)


def export_mbeir(root: str | Path, out: str | Path, *, image_store: str | Path | None = None,
                 progress: bool = True) -> MbeirStats:
    """Write the M-BEIR folder; images are copied from `image_store` (default ROOT/images, when present)."""
    found = data_root(root)
    out = Path(out)
    store_path = Path(image_store) if image_store else found.images
    store = None
    if store_path.is_dir():
        from ..images import open_store

        store = open_store(store_path)
    elif image_store:
        raise InputError("no such image store folder", path=str(store_path))
    rows = sum(num_rows(found, t, s) for s in splits(found) for t in ("queries", "corpus"))
    check_free_space(out, rows * 700 + (_store_bytes(store) if store is not None else 0))
    stats = MbeirStats()
    images = _Images(out, store, stats)
    with atomic_path(out / "id_map.tsv") as tmp, open(tmp, "w", encoding="utf-8") as id_map:
        id_map.write("split\tkind\tmbeir_id\tid\n")
        for split in splits(found):
            if num_rows(found, "queries", split) == 0:
                continue  # no empty files
            dids = _write_pool(found, out, split, images, id_map, stats)
            _write_queries(found, out, split, dids, images, id_map, stats, progress)
    stats.files.append(out / "id_map.tsv")
    _write_instructions(out, stats)
    return stats


def _store_bytes(store) -> int:
    from ..images.store import shard_paths

    return sum(shard_paths(store.directory, s)[0].stat().st_size for s in store.shards)


class _Images:
    """Relative image paths, writing each image file once (when a store is given)."""

    def __init__(self, out: Path, store, stats: MbeirStats):
        self.out, self.store, self.stats = out, store, stats
        self.done: dict[str, str] = {}

    def path(self, key: str) -> str:
        if key in self.done:
            return self.done[key]
        data = None
        if self.store is not None and key in self.store:
            data = self.store.get(key)
        ext = next((e for magic, e in _MAGIC if data and data.startswith(magic)), "jpg")
        rel = f"mbeir_images/wit_images/{key[:2]}/{key}.{ext}"
        if data is not None:
            target = self.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            self.stats.images_written += 1
        else:
            self.stats.images_missing += 1
        self.done[key] = rel
        return rel


def _write_pool(root, out: Path, split: str, images: _Images, id_map, stats: MbeirStats) -> dict[str, str]:
    dids: dict[str, str] = {}
    path = out / "cand_pool" / "local" / f"mbeir_{NAME}_{split}_cand_pool.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for batch in iter_batches(root, "corpus", split, ["image_id", "image_url"]):
            for key, url in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                if key in dids:
                    continue
                did = dids[key] = mbeir_id(len(dids))
                fh.write(json.dumps({"did": did, "txt": None, "img_path": images.path(key), "modality": "image",
                                     "src_content": json.dumps({"image_id": key, "image_url": url})},
                                    ensure_ascii=False) + "\n")
                id_map.write(f"{split}\tcandidate\t{did}\t{key}\n")
                stats.dataset_ids.add(int(did.split(":")[0]))
    stats.candidates[split] = len(dids)
    stats.files.append(path)
    return dids


def _qrels(root, split: str) -> dict[str, list[tuple[str, int]]]:
    grouped: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for batch in iter_batches(root, "qrels", split, ["query_id", "image_id", "relevance"]):
        for q, d, r in zip(*(batch.column(i).to_pylist() for i in range(3))):
            grouped[q].append((d, 1 if r is None else r))
    return grouped


def _write_queries(root, out: Path, split: str, dids: dict[str, str], images: _Images, id_map,
                   stats: MbeirStats, progress: bool) -> None:
    qrels = _qrels(root, split)
    query_path = out / "query" / split / f"mbeir_{NAME}_{split}.jsonl"
    qrels_path = out / "qrels" / split / f"mbeir_{NAME}_{split}_qrels.txt"
    for p in (query_path, qrels_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    columns = ["query_id", "masked_text", "entity_image_urls", "entity_ids", "language"]
    with atomic_path(query_path) as qtmp, open(qtmp, "w", encoding="utf-8") as qfh, \
            atomic_path(qrels_path) as rtmp, open(rtmp, "w", encoding="utf-8") as rfh, \
            progress_bar(progress, f"export mbeir {split}", num_rows(root, "queries", split)) as advance:
        for batch in iter_batches(root, "queries", split, columns):
            for row in batch.to_pylist():
                positives = [(dids[d], r) for d, r in qrels.get(row["query_id"], []) if d in dids and r > 0]
                if not positives or not row["entity_image_urls"]:
                    continue  # UniIR asserts a positive candidate and an image
                qid = mbeir_id(count)
                count += 1
                paths = [images.path(image_id(u)) for u in row["entity_image_urls"]]
                source = {"query_id": row["query_id"], "language": row["language"], "entity_ids": row["entity_ids"],
                          "entity_image_urls": row["entity_image_urls"], "entity_image_paths": paths}
                qfh.write(json.dumps({
                    "qid": qid, "query_txt": row["masked_text"], "query_img_path": paths[0],
                    "query_modality": "image,text", "query_src_content": json.dumps(source, ensure_ascii=False),
                    "pos_cand_list": [d for d, _ in positives], "neg_cand_list": [],
                }, ensure_ascii=False) + "\n")
                rfh.writelines(f"{qid} 0 {d} {r} {TASK_ID}\n" for d, r in positives)
                id_map.write(f"{split}\tquery\t{qid}\t{row['query_id']}\n")
                stats.dataset_ids.add(int(qid.split(":")[0]))
            advance(batch.num_rows)
    stats.queries[split] = count
    if not count:  # no empty files: a split none of whose queries has a positive in the pool is left out
        for path in (query_path, qrels_path, out / "cand_pool" / "local" / f"mbeir_{NAME}_{split}_cand_pool.jsonl"):
            path.unlink(missing_ok=True)
        return
    stats.files += [query_path, qrels_path]


def _write_instructions(out: Path, stats: MbeirStats) -> None:
    """UniIR looks a prompt up by (dataset id, query modality, candidate modality)."""
    lines = ["query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1"]
    lines += [f"image,text\timage\tWIT\t{d}\t{PROMPT}" for d in sorted(stats.dataset_ids)]
    path = out / "instructions" / "query_instructions.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    stats.files.append(path)

