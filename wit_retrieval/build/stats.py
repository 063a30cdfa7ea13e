"""Build statistics: counters the shard workers fill, merged into stats.json under the data root."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..layout import DataRoot
from ..schema import SPLITS


@dataclass
class SplitStats:
    """What one split's build read, dropped and kept (summable across shards)."""

    rows_read: int = 0
    with_reference: int = 0
    queries: int = 0
    duplicates: int = 0
    dropped: Counter = field(default_factory=Counter)  # filter name -> rows
    by_language: Counter = field(default_factory=Counter)
    by_query_type: Counter = field(default_factory=Counter)
    entities_per_query: Counter = field(default_factory=Counter)  # n -> queries
    mentions: int = 0
    corpus: int = 0

    def add(self, other: SplitStats) -> None:
        """Add another shard's counts."""
        for name in ("rows_read", "with_reference", "queries", "duplicates", "mentions", "corpus"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("dropped", "by_language", "by_query_type", "entities_per_query"):
            getattr(self, name).update(getattr(other, name))

    def count_queries(self, queries, sign: int = 1) -> None:
        """Add the per-query counts of a queries table (sign=-1: take them out again, as for repeats)."""
        import pyarrow.compute as pc

        self.queries += sign * queries.num_rows
        self.mentions += sign * (pc.sum(pc.list_value_length(queries["mentions"])).as_py() or 0)
        for counter, column in ((self.by_language, "language"), (self.by_query_type, "query_type"),
                                (self.entities_per_query, "num_entities")):
            for item in pc.value_counts(queries[column]).to_pylist():
                counter[item["values"]] += sign * item["counts"]
                if counter[item["values"]] <= 0:
                    del counter[item["values"]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form with sorted keys (so stats.json is byte-stable)."""
        return {
            "rows_read": self.rows_read,
            "with_reference": self.with_reference,
            "queries": self.queries,
            "corpus": self.corpus,
            "duplicates": self.duplicates,
            "mentions": self.mentions,
            "dropped": dict(sorted(self.dropped.items())),
            "by_language": dict(sorted(self.by_language.items())),
            "by_query_type": dict(sorted(self.by_query_type.items())),
            "entities_per_query": {str(k): v for k, v in sorted(self.entities_per_query.items())},
        }


def read_stats(root: str | DataRoot) -> dict[str, Any]:
    """stats.json of a data root ({} when there is none yet)."""
    root = root if isinstance(root, DataRoot) else DataRoot(root)
    if not root.stats.exists():
        return {}
    return json.loads(root.stats.read_text(encoding="utf-8"))


def update_stats(root: DataRoot, section: str, data: dict[str, Any]) -> dict[str, Any]:
    """Replace one section of stats.json (entities | mmir | ei), keeping the others."""
    from ..io.shards import write_json_atomic

    stats = read_stats(root)
    stats[section] = data
    write_json_atomic(root.stats, stats)
    return stats


def totals(mmir: dict[str, Any]) -> dict[str, Any]:
    """Queries, languages and query types summed over the splits of an MMIR stats section."""
    languages: Counter = Counter()
    types: Counter = Counter()
    per_query: Counter = Counter()
    for split in mmir.get("splits", {}).values():
        languages.update(split["by_language"])
        types.update(split["by_query_type"])
        per_query.update(split["entities_per_query"])
    return {
        "queries": sum(s["queries"] for s in mmir.get("splits", {}).values()),
        "languages": len(languages),
        "by_language": dict(sorted(languages.items())),
        "by_query_type": dict(sorted(types.items())),
        "entities_per_query": dict(sorted(per_query.items(), key=lambda kv: int(kv[0]))),
    }


def print_stats(root) -> None:
    """Print a build's statistics as rich tables."""
    from rich.table import Table

    from ..errors import InputError
    from ..progress import console

    stats = read_stats(root)
    if not stats:
        raise InputError("no stats.json: build this root first (wit-retrieval build ei / build mmir)", path=str(root))
    if "entities" in stats:
        e = stats["entities"]
        console.print(f"[bold]entities[/]: {e['entities']:,} ({e['with_qid']:,} with a QID), {e['names']:,} names "
                      f"by source {e['names_by_source']}; dump languages: {', '.join(e['dump_languages']) or 'none'}")
    if "ei" in stats:
        console.print(f"[bold]EI[/] (entities used by queries): {stats['ei']['entities']:,}")
    mmir = stats.get("mmir")
    if not mmir:
        return
    splits = Table(title="MMIR per split")
    for column in ("split", "rows read", "with reference", "queries", "single", "multi", "corpus", "duplicates"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    ordered = [(name, mmir["splits"][name]) for name in SPLITS if name in mmir["splits"]]
    for name, s in ordered:
        splits.add_row(name, f"{s['rows_read']:,}", f"{s['with_reference']:,}", f"{s['queries']:,}",
                       f"{s['by_query_type'].get('single', 0):,}", f"{s['by_query_type'].get('multi', 0):,}",
                       f"{s['corpus']:,}", f"{s['duplicates']:,}")
    console.print(splits)
    filters = Table(title="rows dropped per filter")
    filters.add_column("filter")
    for name, _ in ordered:
        filters.add_column(name, justify="right")
    for reason in sorted({r for _, s in ordered for r in s["dropped"]}):
        filters.add_row(reason, *(f"{s['dropped'].get(reason, 0):,}" for _, s in ordered))
    console.print(filters)
    total = totals(mmir)
    languages = Table(title=f"queries per language ({total['languages']})")
    languages.add_column("language")
    languages.add_column("queries", justify="right")
    for language, count in sorted(total["by_language"].items(), key=lambda kv: -kv[1])[:30]:
        languages.add_row(language, f"{count:,}")
    console.print(languages)
    console.print("entities per query: " + ", ".join(f"{k}: {v:,}" for k, v in total["entities_per_query"].items()))
    console.print(f"bad rows: {mmir['bad_rows']['count']:,}")
