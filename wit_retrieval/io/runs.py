"""Runs on disk: TREC (`qid Q0 docid rank score tag`), CIRR-like JSON and parquet; qrels files.

Readers return a table (query_id, image_id, score, line) so 100M-row runs stay columnar; the
dict form (`Run`) is built from it. TREC goes through pyarrow.csv when the file is clean and
falls back to a line parser that names each bad line. Image URLs are mapped to image ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ..errors import InputError
from ..ids import image_id as url_image_id
from ..ranking import Qrels, Run
from .shards import atomic_path, write_json_atomic, write_parquet_atomic
from .trec import RUN_COLUMNS, ProblemSink, read_trec_qrels, read_trec_run

FORMATS = ("trec", "json", "parquet")
JSON_META_KEYS = ("version", "split", "metric")
TREC_COLUMNS = RUN_COLUMNS


@dataclass
class RunFile:
    """A run read from disk: columns query_id, image_id, score, line (and rank for TREC)."""

    table: pa.Table
    fmt: str
    meta: dict = field(default_factory=dict)


def detect_format(path: str | Path) -> str:
    """trec | json | parquet, from the extension, else from the first bytes."""
    name = str(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".json"):
        return "json"
    with open(path, "rb") as f:
        head = f.read(4).lstrip()
    if head.startswith(b"PAR1"):
        return "parquet"
    return "json" if head.startswith(b"{") else "trec"


def _raiser(path: Path) -> ProblemSink:
    def on_problem(kind: str, line: int | None, message: str) -> None:
        raise InputError(f"{message} ({kind}); run `wit-retrieval validate` for all problems",
                         path=str(path), line=line)

    return on_problem


def read_run_table(path: str | Path, fmt: str | None = None, *, on_problem: ProblemSink | None = None) -> RunFile:
    """Read a run file; bad lines raise InputError, or go to `on_problem` and are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError("run file not found", path=str(path))
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown run format {fmt!r}; use one of {', '.join(FORMATS)}", path=str(path))
    sink = on_problem or _raiser(path)
    reader = {"trec": _read_trec, "json": _read_json, "parquet": _read_parquet}[fmt]
    table, meta = reader(path, sink)
    return RunFile(map_urls(table), fmt, meta)


def read_run(path: str | Path, fmt: str | None = None) -> Run:
    """A run file as query_id -> [(image_id, score)] best first (score desc, then id desc)."""
    return table_to_run(read_run_table(path, fmt).table)


def table_to_run(table: pa.Table) -> Run:
    """query_id -> [(image_id, score)] ordered as trec_eval orders them."""
    order = pc.sort_indices(table, [("query_id", "ascending"), ("score", "descending"),
                                    ("image_id", "descending")])
    t = table.take(order)
    run: Run = {}
    for q, d, s in zip(t["query_id"].to_pylist(), t["image_id"].to_pylist(), t["score"].to_pylist()):
        run.setdefault(q, []).append((d, s))
    return run


def _read_trec(path: Path, on_problem: ProblemSink) -> tuple[pa.Table, dict]:
    return read_trec_run(path, on_problem), {}


_KEY_RE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def _read_json(path: Path, on_problem: ProblemSink) -> tuple[pa.Table, dict]:
    """CIRR-like `{"version":..., "split":..., "metric":..., qid: [image_id, ...]}`; score = -position."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        on_problem("encoding", data.count(b"\n", 0, exc.start) + 1, "not UTF-8; save the file as UTF-8")
        text = data.decode("utf-8", errors="replace")
    key_lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _KEY_RE.finditer(line):
            key_lines.setdefault(match.group(1), number)
    seen: set[str] = set()

    def pairs(items):
        for key, _ in items:
            if key in seen:
                on_problem("duplicate_query", key_lines.get(key), f"key {key!r} appears more than once")
            seen.add(key)
        return dict(items)

    try:
        obj = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        on_problem("format", exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
        obj = {}
    if not isinstance(obj, dict):
        on_problem("format", 1, "the top level must be an object {query_id: [image_id, ...]}")
        obj = {}
    meta = {k: obj[k] for k in JSON_META_KEYS if k in obj}
    qids, docs, scores, lines = [], [], [], []
    for qid, items in obj.items():
        if qid in JSON_META_KEYS:
            continue
        line = key_lines.get(qid)
        if not isinstance(items, list):
            on_problem("format", line, f"query {qid!r}: expected a list of image ids, got {type(items).__name__}")
            continue
        for position, item in enumerate(items):
            if not isinstance(item, str):
                on_problem("format", line, f"query {qid!r}: item {position} is {item!r}, not an image id string")
                continue
            qids.append(qid)
            docs.append(item)
            scores.append(float(-position))
            lines.append(line if line is not None else 0)
    table = pa.table({"query_id": pa.array(qids, pa.string()), "image_id": pa.array(docs, pa.string()),
                      "score": pa.array(scores, pa.float64()), "line": pa.array(lines, pa.int64())})
    return table, meta


def _read_parquet(path: Path, on_problem: ProblemSink) -> tuple[pa.Table, dict]:
    """Parquet with columns query_id, image_id, score; `line` is the 1-based row number."""
    import pyarrow.parquet as pq  # lazy: TREC scoring never needs it (nor ssl, which it pulls in)

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable parquet file ({exc})", path=str(path)) from None
    missing = [c for c in ("query_id", "image_id", "score") if c not in schema.names]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; a parquet run has query_id, image_id, score",
                         path=str(path))
    table = pq.read_table(path, columns=["query_id", "image_id", "score"])
    try:
        table = table.cast(pa.schema([("query_id", pa.string()), ("image_id", pa.string()),
                                      ("score", pa.float64())]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"columns have the wrong types ({exc}); want string, string, float", path=str(path)) from None
    table = table.append_column("line", pa.array(np.arange(1, table.num_rows + 1)))
    nulls = np.flatnonzero(np.asarray(pc.or_(pc.is_null(table["query_id"]), pc.is_null(table["image_id"]))
                                      .fill_null(True)))
    for row in nulls[:50]:
        on_problem("format", int(row) + 1, "query_id or image_id is null")
    if len(nulls):
        keep = np.ones(table.num_rows, bool)
        keep[nulls] = False
        table = table.filter(pa.array(keep))
    return table, {}


def map_urls(table: pa.Table) -> pa.Table:
    """Replace image URLs (http[s]://...) in image_id by their image ids (ids.image_id)."""
    col = table["image_id"]
    if not pc.any(pc.starts_with(col, "http")).as_py():  # cheap pre-check: most runs carry ids
        return table
    is_url = pc.match_substring_regex(col, "^https?://")
    urls = pc.unique(pc.filter(col, is_url))
    mapped = pa.array([url_image_id(u) for u in urls.to_pylist()], pa.string())
    replaced = pc.take(mapped, pc.index_in(col, value_set=urls))
    new = pc.if_else(is_url, replaced, col)
    return table.set_column(table.schema.get_field_index("image_id"), "image_id", new)


def _as_table(run: Run | pa.Table) -> pa.Table:
    if isinstance(run, pa.Table):
        return run.select(["query_id", "image_id", "score"])
    rows = [(q, d, float(s)) for q, items in run.items() for d, s in items]
    q, d, s = zip(*rows) if rows else ((), (), ())
    return pa.table({"query_id": pa.array(q, pa.string()), "image_id": pa.array(d, pa.string()),
                     "score": pa.array(s, pa.float64())})


def write_trec(run: Run | pa.Table, path: str | Path, tag: str = "wit-retrieval") -> None:
    """Write a TREC run (rank = position within the query, in the given order) atomically."""
    if not re.fullmatch(r"\S+", tag):
        raise InputError(f"run tag {tag!r} must be one word without spaces")
    table = _as_table(run)
    starts = np.flatnonzero(np.r_[True, pc.not_equal(table["query_id"][1:], table["query_id"][:-1])
                                  .to_numpy(zero_copy_only=False)]) if table.num_rows else np.zeros(0, int)
    lengths = np.diff(np.append(starts, table.num_rows))
    ranks = np.arange(table.num_rows) - np.repeat(starts, lengths) + 1
    out = pa.table({"q": table["query_id"], "q0": pa.array(np.full(table.num_rows, "Q0")),
                    "d": table["image_id"], "rank": pa.array(ranks), "score": table["score"],
                    "tag": pa.array(np.full(table.num_rows, tag))})
    with atomic_path(path) as tmp:
        pcsv.write_csv(out, tmp, pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none"))


def write_json_run(run: Run | pa.Table, path: str | Path, split: str, metric: str = "recall",
                   version: str = "1") -> None:
    """Write a CIRR-like JSON run `{version, split, metric, qid: [image_id, ...]}` atomically."""
    runs = table_to_run(_as_table(run)) if isinstance(run, pa.Table) else run
    obj = {"version": version, "split": split, "metric": metric}
    obj.update({q: [d for d, _ in items] for q, items in runs.items()})
    write_json_atomic(path, obj)


def write_parquet_run(run: Run | pa.Table, path: str | Path) -> None:
    """Write a parquet run (query_id, image_id, score) atomically."""
    write_parquet_atomic(_as_table(run), path)


def read_qrels_file(path: str | Path) -> pa.Table:
    """TREC qrels (`qid 0 docid rel`) or a parquet qrels table, as (query_id, image_id, relevance)."""
    path = Path(path)
    if not path.exists():
        raise InputError("qrels file not found", path=str(path))
    if path.is_dir() or detect_format(path) == "parquet":
        import pyarrow.parquet as pq

        from .shards import read_table_dir

        table = read_table_dir(path) if path.is_dir() else pq.read_table(path)
        missing = {"query_id", "image_id", "relevance"} - set(table.column_names)
        if missing:
            raise InputError(f"missing column(s) {', '.join(sorted(missing))}", path=str(path))
        return table.select(["query_id", "image_id", "relevance"])
    return read_trec_qrels(path)


def write_qrels_trec(qrels: Qrels, path: str | Path) -> None:
    """Write qrels as TREC `qid 0 docid rel` lines, atomically."""
    text = "".join(f"{q} 0 {d} {r}\n" for q, docs in qrels.items() for d, r in docs.items())
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_split_table(root: str | Path, table: str, split: str, columns: list[str] | None = None) -> pa.Table:
    """One split of a canonical table of a data root, with a clear error when it is missing."""
    from ..layout import DataRoot
    from .shards import read_manifest, read_table_dir

    folder = DataRoot(root).table_split(table, split)
    if read_manifest(folder) is None:
        raise InputError(f"no finished {table} table for split {split!r}; build the data root first "
                         "(wit-retrieval build) or pass --qrels", path=str(folder))
    return read_table_dir(folder, columns=columns)
