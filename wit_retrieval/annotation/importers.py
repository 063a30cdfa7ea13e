"""Read ratings from the app's SQLite, Label Studio exports, crowd CSV or a ratings parquet.

Every file is parsed and checked completely before anything is written, so a malformed file
fails with its path and line and leaves the output untouched.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from .ratings import RATINGS, now_iso, ratings_table, read_ratings_parquet
from .store import read_app_ratings
from .tasks import TASK_KINDS, Item, get_kind, read_items

FORMATS = ("app", "label-studio", "csv", "parquet")


def detect_format(path: Path) -> str:
    """The ratings format of a file, from its first bytes and its suffix."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"SQLite format 3\x00"):
        return "app"
    if head.startswith(b"PAR1"):
        return "parquet"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".json" or head.lstrip().startswith(b"["):
        return "label-studio"
    raise InputError("unknown ratings format: expected the app's .sqlite, a Label Studio .json export, "
                     "a crowd .csv (item_id, rater, label) or a ratings .parquet", path=str(path))


def _json_array_with_lines(path: Path) -> list[tuple[int, object]]:
    """(line, element) for each element of a top-level JSON array, so errors can name a line."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos, out = 0, []

    def skip(p):
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    def line(p):
        return text.count("\n", 0, p) + 1

    pos = skip(pos)
    if not text.startswith("[", pos):
        raise InputError("a Label Studio export is a JSON array of tasks", path=str(path), line=line(pos))
    pos = skip(pos + 1)
    while pos < len(text) and text[pos] != "]":
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
        out.append((line(pos), element))
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
        elif pos >= len(text) or text[pos] != "]":
            raise InputError("invalid JSON: expected ',' or ']'", path=str(path), line=line(pos))
    if pos >= len(text):
        raise InputError("invalid JSON: the array is not closed", path=str(path), line=line(pos))
    return out


def _ls_rater(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if who in (None, ""):
        raise ValueError("annotation without completed_by")
    return f"label-studio:{who}"


def _ls_choice(annotation: dict) -> str | None:
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == "label":
            choices = (result.get("value") or {}).get("choices") or []
            if len(choices) != 1:
                raise ValueError(f"expected one choice, got {choices!r}")
            return choices[0]
    return None


def read_label_studio(path: Path) -> list[tuple[int, dict]]:
    """(line, row) from a Label Studio JSON export (full JSON, or JSON-MIN with a `label` key)."""
    rows = []
    for line, task in _json_array_with_lines(path):
        try:
            if not isinstance(task, dict):
                raise ValueError("a task must be a JSON object")
            data = task.get("data", task)  # JSON-MIN puts the data fields at the top level
            item_id = data["item_id"]
            meta = {k: data.get(k) or None for k in ("task_kind", "language", "query_type")}
            if "annotations" not in task and "label" in task:
                rows.append((line, {**meta, "item_id": item_id, "rater": f"label-studio:{task.get('annotator')}",
                                    "label": task["label"], "rated_at": task.get("created_at")}))
                continue
            for annotation in task.get("annotations") or []:
                if annotation.get("was_cancelled"):
                    continue
                label = _ls_choice(annotation)
                if label is not None:
                    rows.append((line, {**meta, "item_id": item_id, "rater": _ls_rater(annotation),
                                        "label": label, "rated_at": annotation.get("created_at")}))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"not a Label Studio task ({exc}); export the project as JSON",
                             path=str(path), line=line) from None
    return rows


# Column names of crowd platforms' result files (Amazon MTurk batch results) -> ours.
CSV_ALIASES = {"Input.item_id": "item_id", "WorkerId": "rater", "Answer.label": "label", "SubmitTime": "rated_at",
               "worker_id": "rater", "annotator": "rater"}


CSV_KEPT = ("item_id", "rater", "label", "rated_at", "task_kind")


def read_crowd_csv(path: Path) -> list[tuple[int, dict]]:
    """(line, row) from a CSV with at least item_id, rater, label (or MTurk's Input.item_id, WorkerId,
    Answer.label)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        present = set(header)
        reader.fieldnames = [CSV_ALIASES[c] if c in CSV_ALIASES and CSV_ALIASES[c] not in present else c
                             for c in header]
        missing = {"item_id", "rater", "label"} - set(reader.fieldnames)
        if missing:
            raise InputError(f"missing column(s) {', '.join(sorted(missing))}; a crowd CSV needs "
                             "item_id, rater, label", path=str(path), line=1)
        rows = []
        try:
            for row in reader:
                if None in row or any(row.get(c) in (None, "") for c in ("item_id", "rater", "label")):
                    raise InputError("a row needs item_id, rater and label (and no extra fields)",
                                     path=str(path), line=reader.line_num)
                rows.append((reader.line_num, {k: row.get(k) or None for k in CSV_KEPT}))
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", path=str(path), line=reader.line_num) from None
    return rows


def _complete(row: dict, items: dict[str, Item] | None, source: str, path: Path, line: int | None) -> dict:
    """Fill item metadata from the items file and check the label against the task kind."""
    item = items.get(row["item_id"]) if items is not None else None
    if items is not None and item is None:
        raise InputError(f"item {row['item_id']!r} is not in the items file", path=str(path), line=line)
    if item is not None:
        row = {**row, "task_kind": item.task_kind, "is_gold": item.is_gold, "gold_label": item.gold_label,
               "language": item.language, "query_type": item.query_type}
    if not row.get("task_kind"):
        raise InputError("no task kind for this rating; pass the export's items.jsonl (--items)",
                         path=str(path), line=line)
    if row["task_kind"] not in TASK_KINDS:
        raise InputError(f"unknown task kind {row['task_kind']!r}", path=str(path), line=line)
    kind = get_kind(row["task_kind"])
    if not kind.check_label(row["label"]):
        raise InputError(f"label {row['label']!r} is not one of {', '.join(kind.labels)} ({kind.name})",
                         path=str(path), line=line)
    return {**row, "is_gold": bool(row.get("is_gold")), "source": row.get("source") or source,
            "rated_at": row.get("rated_at") or now_iso()}


def read_ratings_file(path: str | Path, items: dict[str, Item] | None = None, fmt: str | None = None) -> pa.Table:
    """One file of any supported format as a ratings table (InputError naming file and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("ratings file not found", path=str(path))
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        table = read_ratings_parquet(path)
        located = [(None, row) for row in table.to_pylist()]
    elif fmt == "app":
        located = [(None, row) for row in read_app_ratings(path)]
    elif fmt == "label-studio":
        located = read_label_studio(path)
    elif fmt == "csv":
        located = read_crowd_csv(path)
    else:
        raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", path=str(path))
    source = {"app": "app", "label-studio": "label-studio", "csv": "csv", "parquet": None}[fmt]
    rows = [_complete(row, items, source or "unknown", path, line) for line, row in located]
    return ratings_table(rows)


def import_ratings(paths: list[str | Path], items_path: str | Path | None = None) -> pa.Table:
    """Read every file into one ratings table; a later file's rating of the same item by the same
    rater from the same source replaces an earlier one."""
    items = {i.item_id: i for i in read_items(items_path)} if items_path is not None else None
    tables = [read_ratings_file(p, items) for p in paths]
    return deduplicate(pa.concat_tables(tables) if tables else RATINGS.empty_table())


def deduplicate(table: pa.Table) -> pa.Table:
    """Keep the last row for each (item_id, rater, source)."""
    rows = table.to_pylist()
    last = {(r["item_id"], r["rater"], r["source"]): n for n, r in enumerate(rows)}
    keep = sorted(last.values())
    return table.take(pa.array(keep, pa.int64())) if len(keep) != len(rows) else table


def load_ratings(path: str | Path, items_path: str | Path | None = None) -> pa.Table:
    """The ratings of one file of any format (what `annotate report --ratings` reads)."""
    items = {i.item_id: i for i in read_items(items_path)} if items_path is not None else None
    return read_ratings_file(path, items)
