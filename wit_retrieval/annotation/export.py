"""Write sampled items for raters: JSONL (the key, with gold), Label Studio tasks + config, crowd CSV.

Only items.jsonl holds gold answers; the files given to raters or platforms never do.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..io.shards import write_json_atomic, write_text_atomic
from .render import text_html
from .tasks import ITEMS_FILE, Item, TaskKind, get_kind, write_items

CSV_COLUMNS = (
    "item_id", "task_kind", "question", "labels", "title", "page_url", "text", "text_html", "entity_names",
    "entity_image_urls", "candidate_image_url", "reference_image_url", "language", "query_type", "overlap",
)
URL_SEPARATOR = " | "


def label_studio_config(kind: TaskKind) -> str:
    """The Label Studio labeling config (XML) for a task kind; hotkeys 1..n follow the label order."""
    target = "candidate" if "candidate" in kind.shows else "text"
    lines = ["<View>", '  <Header value="$question"/>']
    if kind.name in ("ei-correct", "mask-correct"):
        lines.append('  <Header value="$title" size="5"/>')
    lines.append('  <HyperText name="text" value="$text_html"/>')
    if "entities" in kind.shows:
        lines += ['  <HyperText name="entity_legend" value="$entities_html"/>',
                  '  <Image name="entities" valueList="$entity_image_urls"/>']
    if "reference" in kind.shows:
        lines += ['  <Header value="Target image" size="6"/>', '  <Image name="reference" value="$reference_image_url"/>']
    if "candidate" in kind.shows:
        lines += [f"  <Header value={quoteattr(kind.candidate_caption)} size=\"6\"/>",
                  '  <Image name="candidate" value="$candidate_image_url"/>']
    lines.append(f'  <Choices name="label" toName="{target}" choice="single" required="true" showInline="true">')
    for key, label in enumerate(kind.labels, 1):
        lines.append(f"    <Choice value={quoteattr(label)} hotkey=\"{key}\"/>")
    lines += ["  </Choices>", "</View>", ""]
    return "\n".join(lines)


def _entities_html(item: Item) -> str:
    rows = []
    for e in item.entities:
        name = f" {html.escape(e['name'])}" if e.get("name") else ""
        rows.append(f"<li>[MASK_{int(e['mask'])}]{name}</li>")
    return f"<ol>{''.join(rows)}</ol>"


def rater_view(item: Item) -> dict:
    """What a rater or platform may see of an item (no gold fields)."""
    kind = get_kind(item.task_kind)
    return {
        "item_id": item.item_id,
        "task_kind": item.task_kind,
        "question": kind.question,
        "labels": "|".join(kind.labels),
        "title": item.title,
        "page_url": item.page_url or "",
        "text": item.text,
        "text_html": text_html(item),
        "entities_html": _entities_html(item),
        "entity_names": URL_SEPARATOR.join(e.get("name") or "" for e in item.entities),
        "entity_image_urls": [e.get("image_url") or "" for e in item.entities],
        "candidate_image_url": (item.candidate or {}).get("image_url") or "",
        "reference_image_url": (item.reference or {}).get("image_url") or "",
        "language": item.language or "",
        "query_type": item.query_type or "",
        "overlap": item.overlap,
    }


def label_studio_tasks(items: list[Item]) -> list[dict]:
    """Label Studio import format: a list of {"data": {...}}."""
    return [{"data": rater_view(item)} for item in items]


def crowd_csv(items: list[Item]) -> str:
    """One row per item for crowd platforms (image URLs joined by ' | ')."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = rater_view(item)
        row["entity_image_urls"] = URL_SEPARATOR.join(row["entity_image_urls"])
        writer.writerow(row)
    return buffer.getvalue()


def write_export(items: list[Item], manifest: dict, out: str | Path) -> dict[str, Path]:
    """Write every export format into `out`; returns the paths written by name."""
    out = Path(out)
    written = {"items": out / ITEMS_FILE, "csv": out / "crowd.csv", "manifest": out / "manifest.json"}
    write_items(items, written["items"])
    write_text_atomic(written["csv"], crowd_csv(items))
    for kind_name in sorted({i.task_kind for i in items}):
        kind_items = [i for i in items if i.task_kind == kind_name]
        tasks_path = out / "label_studio" / f"{kind_name}.tasks.json"
        config_path = out / "label_studio" / f"{kind_name}.config.xml"
        write_text_atomic(tasks_path, json.dumps(label_studio_tasks(kind_items), ensure_ascii=False, indent=1))
        write_text_atomic(config_path, label_studio_config(get_kind(kind_name)))
        written[f"label_studio:{kind_name}"] = tasks_path
    # The manifest is written last: an export folder without one is unfinished.
    write_json_atomic(written["manifest"], {**manifest, "files": {k: str(v.relative_to(out)) for k, v in written.items()}})
    return written
