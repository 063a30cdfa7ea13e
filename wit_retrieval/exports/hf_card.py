"""The README.md of an `export hf` folder: YAML front matter (configs + card fields) and the card text."""

from __future__ import annotations

from pathlib import Path

from ..cards import _SIZES, PAPER, RELEASE
from ..io.shards import write_text_atomic
from ..langcodes import languages
from .source import _human

CITATION = """@article{wit-retrieval-2025,
  title   = {Entity Image and Mixed-Modal Image Retrieval Datasets},
  journal = {arXiv preprint arXiv:2506.02291},
  year    = {2025},
  url     = {https://arxiv.org/abs/2506.02291}
}"""
TASK_CATEGORIES = ("image-to-image", "text-to-image", "image-feature-extraction")


def _size_category(rows: int) -> str:
    return next((label for bound, label in _SIZES if rows < bound), "n>100M")


def front_matter(stats, config) -> str:
    """configs (corpus, queries, qrels per split), licence, languages, sizes, task categories, tags."""
    table = languages()
    isos = sorted({table[w].iso639_3 for w in stats.languages if w in table})
    query_rows = sum(v for k, v in stats.rows.items() if k.startswith("queries/"))
    lines = ["---", "license: cc-by-sa-3.0", "pretty_name: MMIR (Mixed-Modal Image Retrieval, WIT)"]
    lines += ["language:"] + [f"- {c}" for c in isos or ["mul"]]
    lines += ["multilinguality:", "- multilingual" if len(isos) > 1 else "- monolingual"]
    lines += ["task_categories:"] + [f"- {t}" for t in TASK_CATEGORIES]
    lines += ["tags:", "- mteb", "- retrieval", "- multimodal", "- wikipedia", "- wit", "- mixed-modal",
              "size_categories:", f"- {_size_category(query_rows)}", "configs:"]
    for table_name in ("corpus", "queries", "qrels"):
        lines += [f"- config_name: {table_name}", "  data_files:"]
        for key in stats.files:
            kind, split = key.split("/")
            if kind == table_name:
                lines += [f"  - split: {split}", f"    path: {table_name}/{split}-*.parquet"]
    return "\n".join(lines + ["---", ""])


def body(root, config, stats) -> str:
    """The card text: what it is, licences, sizes, languages (mapped and not), loading, pushing, citation."""
    table = languages()
    unmapped = sorted(w for w in stats.languages if w not in table)
    counts = "\n".join(f"| {k} | {v:,} |" for k, v in sorted(stats.rows.items()))
    images = ("Images are embedded: the corpus `image` is an `Image()`, the queries' `image` a `List(Image())` "
              f"(one per `[MASK_i]`, in order). {stats.images_embedded:,} images take {_human(stats.image_bytes)}; "
              "an entity image is stored again in every query that uses it, so this is more than the distinct "
              f"images ({stats.distinct_images:,} in the store)." if config.images == "embed" else
              "Images are given as URLs (`image_url`, `entity_image_urls`), not embedded; "
              "`wit_retrieval.mteb.tasks(DIR, image_store=...)` opens them from an image store "
              "fetched with `wit-retrieval images fetch`.")
    dropped = (f"\n\nLeft out for images missing from the store: {stats.dropped_queries:,} queries, "
               f"{stats.dropped_corpus:,} corpus images." if stats.dropped_queries or stats.dropped_corpus else "")
    return f"""# MMIR: Mixed-Modal Image Retrieval (WIT)

Queries are a Wikipedia image's reference text with the linked entities masked (`[MASK_0]`, ...) plus one
entity image per mask; the answer is the image itself. From {PAPER}; released at {RELEASE}.
Exported by `wit-retrieval export hf` from a data root built with the wit-retrieval toolkit.

## Licences

Text and annotations: CC BY-SA 3.0 (from Wikipedia, through WIT). Images: each under its own Wikimedia
Commons licence, named on the image's Commons file page (its URL is in `image_url` /
`entity_image_urls`); they are not covered by this dataset's licence. For a public push prefer
`--images urls`.

## Files and sizes

`corpus` (`id`, `image_url`), `queries` (`id`, `text`, `entity_image_urls`, `entity_image_ids`, `entity_ids`,
`language`, `query_type` single|multi, `num_entities`, `page_title`, `page_url`) and `qrels` (`query-id`,
`corpus-id`, `score`) configs, one split each of train / validation / test present, as parquet shards.
{images}{dropped}

| config/split | rows |
|---|---|
{counts}

Files: {_human(stats.bytes)} in all.

## Languages

{len(stats.languages)} Wikipedia language codes; MTEB language codes (ISO 639-3 + script) come from the
toolkit's table `wit_retrieval/data/languages.tsv`. Without a mapping (left out of the per-language
MTEB tasks): {", ".join(unmapped) or "none"}.

## Use

```python
import datasets
queries = datasets.load_dataset("DIR", "queries", split="test")  # after re-exporting into DIR offline:
# add download_mode="force_redownload" (datasets otherwise returns its cached copy of the old files)
import wit_retrieval.mteb, mteb
tasks = wit_retrieval.mteb.tasks("DIR"{", image_store='ROOT/images'" if config.images == "urls" else ""})
mteb.evaluate(wit_retrieval.mteb.encoder("open_clip:ViT-B-32:laion2b_s34b_b79k", fusion="sum"), tasks=tasks)
```

Push (Hugging Face CLI, after `hf auth login`): `hf upload USER/mmir DIR . --repo-type dataset`

## Citation

```bibtex
{CITATION}
```
"""


def write_readme(out: Path, root, config, stats) -> Path:
    """DIR/README.md, atomically."""
    path = Path(out) / "README.md"
    write_text_atomic(path, front_matter(stats, config) + "\n" + body(root, config, stats))
    return path
