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


def _ls_person(who: object) -> dict:
    """Who made a Label Studio annotation: {"ls_id": ..., "email": ...} from an id, an e-mail or a dict."""
    if isinstance(who, dict):
        return {"ls_id": who.get("id"), "email": who.get("email") or None}
    if who in (None, ""):
        raise ValueError("annotation without completed_by / annotator")
    text = str(who)
    return {"ls_id": None, "email": text} if "@" in text else {"ls_id": text, "email": None}


def _ls_choice(annotation: dict) -> str | None:
    results = annotation.get("result") or []
    for result in results:
        if result.get("type") == "choices" and result.get("from_name") == LS_CHOICES_TAG:
            choices = (result.get("value") or {}).get("choices") or []
            if len(choices) != 1:
                raise ValueError(f"expected one choice, got {choices!r}")
            return choices[0]
    if results:  # answered, but not through our tag: the config was customised
        tags = sorted({str(r.get("from_name")) for r in results})
        raise ValueError(f"no answer from the choices tag {LS_CHOICES_TAG!r} (found {', '.join(tags)}); the "
                         f"labeling config must keep <Choices name=\"{LS_CHOICES_TAG}\">: rename the tag back "
                         "and re-export")
    return None


# Keys Label Studio's JSON-MIN adds beside the task's data; any other non-data key is a renamed tag.
LS_MIN_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "drafts", "predictions"}
LS_CHOICES_TAG = "label"


def _ls_min_row(task: dict, meta: dict) -> dict:
    if LS_CHOICES_TAG not in task:
        from .export import CSV_COLUMNS

        others = sorted(set(task) - LS_MIN_KEYS - set(CSV_COLUMNS) - {"images_html"})
        raise ValueError(f"no {LS_CHOICES_TAG!r} field (found {', '.join(others) or 'none'}); the labeling "
                         f"config must keep <Choices name=\"{LS_CHOICES_TAG}\">: rename the tag back and re-export")
    return {**meta, "item_id": task["item_id"], **_ls_person(task.get("annotator")), "label": task[LS_CHOICES_TAG],
            "rated_at": task.get("created_at")}


def read_label_studio(path: Path) -> list[tuple[int, dict]]:
    """(line, row) from a Label Studio JSON export (full JSON, or JSON-MIN with a `label` key); rows carry
    `ls_id` and `email` for the rater (see `label_studio_raters`)."""
    rows = []
    for line, task in _json_array_with_lines(path):
        try:
            if not isinstance(task, dict):
                raise ValueError("a task must be a JSON object")
            data = task.get("data", task)  # JSON-MIN puts the data fields at the top level
            item_id = data["item_id"]
            meta = {k: data.get(k) or None for k in ("task_kind", "language", "query_type")}
            if "annotations" not in task and "annotator" in task:
                rows.append((line, _ls_min_row(task, meta)))
                continue
            for annotation in task.get("annotations") or []:
                if annotation.get("was_cancelled"):
                    continue
                label = _ls_choice(annotation)
                if label is not None:
                    rows.append((line, {**meta, "item_id": item_id, **_ls_person(annotation.get("completed_by")),
                                        "label": label, "rated_at": annotation.get("created_at")}))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"not a Label Studio task ({exc}); export the project as JSON",
                             path=str(path), line=line) from None
    return rows


def label_studio_raters(rows: list[dict]) -> None:
    """Give every Label Studio row one rater identity, in place: the e-mail when any file names it (an
    export with e-mails maps the numeric ids of the others), else `label-studio:<id>`."""
    emails = {str(r["ls_id"]): r["email"] for r in rows if r.get("ls_id") is not None and r.get("email")}
    for row in rows:
        if "ls_id" not in row and "email" not in row:
            continue
        ls_id, email = row.pop("ls_id", None), row.pop("email", None)
        email = email or emails.get(str(ls_id))
        row["rater"] = email if email else f"label-studio:{ls_id}"


# Column names of crowd platforms' result files (Amazon MTurk batch results) -> ours.
CSV_ALIASES = {"Input.item_id": "item_id", "WorkerId": "rater", "Answer.label": "label", "SubmitTime": "rated_at",
               "worker_id": "rater", "annotator": "rater"}


CSV_KEPT = ("item_id", "rater", "label", "rated_at", "task_kind")


def read_crowd_csv(path: Path) -> tuple[str, list[tuple[int, dict]]]:
    """(source, [(line, row)]) from a CSV with at least item_id, rater, label (or MTurk's Input.item_id,
    WorkerId, Answer.label), or Label Studio's CSV export (annotation_id, annotator, label...)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        present = set(header)
        if {"annotation_id", "annotator", "item_id"} <= present:
            return "label-studio", _label_studio_csv(reader, path)
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
    return "csv", rows


def _label_studio_csv(reader: csv.DictReader, path: Path) -> list[tuple[int, dict]]:
    """Rows of Label Studio's CSV export: one per annotation, the answer in the choices tag's column."""
    rows = []
    try:
        for row in reader:
            try:
                meta = {k: row.get(k) or None for k in ("task_kind", "language", "query_type")}
                rows.append((reader.line_num, _ls_min_row({**row, "created_at": row.get("created_at")}, meta)))
            except ValueError as exc:
                raise InputError(f"not a Label Studio annotation ({exc})", path=str(path),
                                 line=reader.line_num) from None
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


def _read_located(path: Path, fmt: str | None = None) -> tuple[str, list[tuple[int | None, dict]]]:
    """(source, [(line, row)]) of one file of any supported format."""
    if not path.is_file():
        raise InputError("ratings file not found", path=str(path))
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        return "unknown", [(None, row) for row in read_ratings_parquet(path).to_pylist()]
    if fmt == "app":
        return "app", [(None, row) for row in read_app_ratings(path)]
    if fmt == "label-studio":
        return "label-studio", read_label_studio(path)
    if fmt == "csv":
        return read_crowd_csv(path)
    raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", path=str(path))


def _complete_all(files: list[tuple[Path, str, list]], items: dict[str, Item] | None) -> pa.Table:
    for path, source, located in files:
        if items is None and source in ("label-studio", "csv") and located:
            raise InputError("these ratings do not say which items are gold, so gold items would be counted "
                             "as data; pass the export's items.jsonl (--items)", path=str(path))
    label_studio_raters([row for _, _, located in files for _, row in located])
    return ratings_table([_complete(row, items, source, path, line)
                          for path, source, located in files for line, row in located])


def read_ratings_file(path: str | Path, items: dict[str, Item] | None = None, fmt: str | None = None) -> pa.Table:
    """One file of any supported format as a ratings table (InputError naming file and line)."""
    path = Path(path)
    return _complete_all([(path, *_read_located(path, fmt))], items)


def import_ratings(paths: list[str | Path], items_path: str | Path | None = None) -> pa.Table:
    """Read every file into one ratings table; a later file's rating of the same item by the same
    rater from the same source replaces an earlier one (so a project's JSON and CSV exports together
    count each rating once, under one rater identity)."""
    items = {i.item_id: i for i in read_items(items_path)} if items_path is not None else None
    files = [(Path(p), *_read_located(Path(p))) for p in paths]
    return deduplicate(_complete_all(files, items) if files else RATINGS.empty_table())


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
