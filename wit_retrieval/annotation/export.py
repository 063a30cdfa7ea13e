"""Write sampled items for raters: JSONL (the key, with gold), Label Studio tasks + config, crowd CSV.

Only items.jsonl holds gold answers; the files given to raters or platforms never do.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import quoteattr

from ..errors import ConfigError
from ..io.shards import write_json_atomic, write_text_atomic
from .render import text_html
from .tasks import ITEMS_FILE, Item, TaskKind, get_kind, write_items

CSV_COLUMNS = (
    "item_id", "task_kind", "question", "labels", "title", "page_url", "text", "text_html", "entity_names",
    "entity_image_urls", "candidate_image_url", "reference_image_url", "language", "query_type", "overlap",
)
URL_SEPARATOR = " | "


# Small images keep their size (never stretched to the page width) so the answer buttons stay in view.
LS_STYLE = (".wr-figures{display:flex;flex-wrap:wrap;gap:12px;margin:4px 0}"
            ".wr-figures figure{margin:0;text-align:center}"
            ".wr-figures img{max-height:220px;max-width:320px;object-fit:contain}"
            ".wr-figures figcaption{font-weight:600}")


def label_studio_config(kind: TaskKind) -> str:
    """The Label Studio labeling config (XML) for a task kind; hotkeys 1..n follow the label order.

    Every image is an <img> inside inline HTML with its caption, so all entity images show at once, each
    under its [MASK_i], at their own size (LS's <Image> pages through a list and stretches to full width).
    """
    lines = ["<View>", f"  <Style>{LS_STYLE}</Style>", '  <Header value="$question"/>']
    if kind.name in ("ei-correct", "mask-correct"):
        lines.append('  <Header value="$title" size="5"/>')
    if kind.name != "ei-correct":  # an ei-correct item has no text: an empty HyperText spins forever
        lines.append('  <HyperText name="text" value="$text_html" inline="true"/>')
    lines.append('  <HyperText name="images" value="$images_html" inline="true"/>')
    lines.append('  <Choices name="label" toName="images" choice="single" required="true" showInline="true">')
    for key, label in enumerate(kind.labels, 1):
        lines.append(f"    <Choice value={quoteattr(label)} hotkey=\"{key}\"/>")
    lines += ["  </Choices>", "</View>", ""]
    return "\n".join(lines)


def _figure(src: str, caption: str) -> str:
    image = f'<img src="{html.escape(src)}" alt="{html.escape(caption)}"/>' if src else "<em>(no image)</em>"
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def images_html(item: Item, image_base_url: str | None = None) -> str:
    """Every image of an item as captioned figures: [MASK_i] name for entities, then the target/candidate."""
    kind = get_kind(item.task_kind)
    figures = []
    for e in item.entities:
        name = f" {e['name']}" if e.get("name") else ""
        figures.append(_figure(image_address(e, image_base_url), f"[MASK_{int(e['mask'])}]{name}"))
    if item.reference:
        figures.append(_figure(image_address(item.reference, image_base_url), "Target image"))
    if item.candidate:
        figures.append(_figure(image_address(item.candidate, image_base_url), kind.candidate_caption))
    return f'<div class="wr-figures">{"".join(figures)}</div>'


def image_address(image: dict | None, base_url: str | None) -> str:
    """Where raters' browsers fetch an image: `base_url` + image_id (our `annotate serve`, a local-files
    folder), else the image's own URL."""
    if not image:
        return ""
    if base_url and image.get("image_id"):
        return base_url + quote(str(image["image_id"]))
    return image.get("image_url") or ""


def rater_view(item: Item, image_base_url: str | None = None) -> dict:
    """What a rater or platform may see of an item (no gold fields); images at `image_base_url` + image_id
    when given."""
    kind = get_kind(item.task_kind)
    where = lambda image: image_address(image, image_base_url)  # noqa: E731
    return {
        "item_id": item.item_id,
        "task_kind": item.task_kind,
        "question": kind.question,
        "labels": "|".join(kind.labels),
        "title": item.title,
        "page_url": item.page_url or "",
        "text": item.text,
        "text_html": text_html(item),
        "images_html": images_html(item, image_base_url),
        "entity_names": URL_SEPARATOR.join(e.get("name") or "" for e in item.entities),
        "entity_image_urls": [where(e) for e in item.entities],
        "candidate_image_url": where(item.candidate),
        "reference_image_url": where(item.reference),
        "language": item.language or "",
        "query_type": item.query_type or "",
        "overlap": item.overlap,
    }


def label_studio_tasks(items: list[Item], image_base_url: str | None = None) -> list[dict]:
    """Label Studio import format: a list of {"data": {...}}."""
    return [{"data": rater_view(item, image_base_url)} for item in items]


def crowd_csv(items: list[Item], image_base_url: str | None = None) -> str:
    """One row per item for crowd platforms (image URLs joined by ' | ')."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = rater_view(item, image_base_url)
        row["entity_image_urls"] = URL_SEPARATOR.join(row["entity_image_urls"])
        writer.writerow(row)
    return buffer.getvalue()


def check_image_base_url(base_url: str | None) -> str | None:
    """An http(s) URL prefix to which image ids are appended (ConfigError otherwise)."""
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"--image-base-url {base_url!r}: give an http(s) URL prefix such as "
                          "http://127.0.0.1:8765/image/ (image ids are appended to it)")
    return base_url


def write_export(items: list[Item], manifest: dict, out: str | Path, image_base_url: str | None = None
                 ) -> dict[str, Path]:
    """Write every export format into `out`; returns the paths written by name. Label Studio tasks and the
    crowd CSV point at `image_base_url` + image_id when given."""
    out = Path(out)
    image_base_url = check_image_base_url(image_base_url)
    manifest = {**manifest, "image_base_url": image_base_url}
    written = {"items": out / ITEMS_FILE, "csv": out / "crowd.csv", "manifest": out / "manifest.json"}
    write_items(items, written["items"])
    write_text_atomic(written["csv"], crowd_csv(items, image_base_url))
    for kind_name in sorted({i.task_kind for i in items}):
        kind_items = [i for i in items if i.task_kind == kind_name]
        tasks_path = out / "label_studio" / f"{kind_name}.tasks.json"
        config_path = out / "label_studio" / f"{kind_name}.config.xml"
        write_text_atomic(tasks_path, json.dumps(label_studio_tasks(kind_items, image_base_url), ensure_ascii=False, indent=1))
        write_text_atomic(config_path, label_studio_config(get_kind(kind_name)))
        written[f"label_studio:{kind_name}"] = tasks_path
    # The manifest is written last: an export folder without one is unfinished.
    write_json_atomic(written["manifest"], {**manifest, "files": {k: str(v.relative_to(out)) for k, v in written.items()}})
    return written
