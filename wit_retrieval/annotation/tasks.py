"""Annotation task kinds (what raters are asked, with which labels) and the items they rate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.shards import write_text_atomic
from ..registry import Registry


@dataclass(frozen=True)
class TaskKind:
    """One kind of human check: the question, its labels and how they turn into an estimate."""

    name: str
    question: str
    labels: tuple[str, ...]          # in the order shown; for ordinal kinds, lowest first
    ordinal: bool
    positive: tuple[str, ...]        # labels that count as "yes" for the dataset estimate
    abstain: str | None              # a label meaning "cannot tell": missing for agreement
    estimate: str                    # name of the dataset estimate (accuracy | false_negative_rate)
    shows: tuple[str, ...]           # parts of an item shown: text, entities, candidate, reference
    candidate_caption: str = "Image"
    help: str = ""

    def check_label(self, label: str) -> bool:
        """True when `label` is one of this kind's labels."""
        return label in self.labels

    def decided(self, label: str) -> bool:
        """True unless the label is the abstain label."""
        return label != self.abstain


TASK_KINDS: Registry[TaskKind] = Registry("annotation task kind")


def _kind(kind: TaskKind) -> TaskKind:
    TASK_KINDS.register(kind.name)(lambda: kind)
    return kind


EI_CORRECT = _kind(TaskKind(
    name="ei-correct",
    question="Does this image show the entity named above?",
    labels=("yes", "no", "unsure"), ordinal=False, positive=("yes",), abstain="unsure",
    estimate="accuracy", shows=("text", "candidate"), candidate_caption="Canonical image",
    help="EI: is the canonical image of an entity really that entity?",
))
MASK_CORRECT = _kind(TaskKind(
    name="mask-correct",
    question="Is every highlighted span a mention of the entity linked to it?",
    labels=("yes", "no", "unsure"), ordinal=False, positive=("yes",), abstain="unsure",
    estimate="accuracy", shows=("text", "entities"),
    help="MMIR: is each masked span a correct mention of its linked entity?",
))
MMIR_ANSWERABLE = _kind(TaskKind(
    name="mmir-answerable",
    question="From the entity images and the masked text alone, could a person pick the target image?",
    labels=("no", "partly", "yes"), ordinal=True, positive=("yes",), abstain=None,
    estimate="accuracy", shows=("text", "entities", "candidate"), candidate_caption="Target image",
    help="MMIR: graded answerability of the query from its images and text.",
))
RELEVANCE = _kind(TaskKind(
    name="relevance",
    question="Is the retrieved image (right) also a correct answer to the query, like the target?",
    labels=("yes", "no", "unsure"), ordinal=False, positive=("yes",), abstain="unsure",
    estimate="false_negative_rate", shows=("text", "entities", "reference", "candidate"),
    candidate_caption="Retrieved image",
    help="MMIR runs: is a top-ranked non-target image a false negative?",
))


def get_kind(name: str) -> TaskKind:
    """The task kind called `name` (ConfigError with suggestions when unknown)."""
    return TASK_KINDS.create(name)


@dataclass
class Item:
    """One thing to rate. Everything a rater sees is here; gold fields are never shown."""

    item_id: str
    task_kind: str
    language: str | None
    query_type: str | None
    source_id: str                   # entity_id or query_id (plus image_id for relevance)
    title: str = ""                  # entity name / page title shown above the text
    page_url: str | None = None      # the Wikipedia page (linked for ei-correct and mask-correct)
    text: str = ""                   # masked text, or original text for mask-correct
    mentions: list[dict[str, Any]] = field(default_factory=list)   # mask, surface, start, end
    entities: list[dict[str, Any]] = field(default_factory=list)   # mask, entity_id, name, image_url, image_id
    candidate: dict[str, Any] | None = None   # image_url, image_id (the image being judged)
    reference: dict[str, Any] | None = None   # image_url, image_id (the target, for relevance)
    rank: int | None = None                   # rank of the candidate in the run (relevance)
    is_gold: bool = False
    gold_label: str | None = None
    overlap: int = 3                          # raters wanted per item
    stratum_size: int | None = None           # population size of the item's stratum

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        """Build from `to_dict` output; unknown keys are ignored so old files still read."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def image_urls(self) -> dict[str, str]:
        """image_id -> URL of every image this item shows."""
        out = {e["image_id"]: e["image_url"] for e in self.entities if e.get("image_id") and e.get("image_url")}
        for image in (self.candidate, self.reference):
            if image and image.get("image_id") and image.get("image_url"):
                out[image["image_id"]] = image["image_url"]
        return out


def make_item_id(kind: str, *key: str) -> str:
    """A stable item id from the task kind and what identifies the item."""
    digest = hashlib.sha256("\x1f".join((kind, *key)).encode("utf-8")).hexdigest()[:16]
    return f"{kind}-{digest}"


ITEMS_FILE = "items.jsonl"


def write_items(items: list[Item], path: str | Path) -> None:
    """Write items as JSON lines (atomically)."""
    write_text_atomic(path, "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n" for i in items))


def read_items(path: str | Path) -> list[Item]:
    """Read items.jsonl (or an export folder holding one); bad lines raise InputError with the line."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEMS_FILE
    if not path.exists():
        raise InputError("items file not found; run `wit-retrieval annotate export` first", path=str(path))
    items = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                item = Item.from_dict(data)
            except (json.JSONDecodeError, TypeError) as exc:
                raise InputError(f"not an annotation item: {exc}", path=str(path), line=line_no) from None
            if item.task_kind not in TASK_KINDS:
                raise InputError(f"unknown task kind {item.task_kind!r}", path=str(path), line=line_no)
            items.append(item)
    return items
