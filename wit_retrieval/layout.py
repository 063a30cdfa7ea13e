"""Where each artefact lives under a data root. Nothing else builds these paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .io import fs
from .schema import SPLIT_TABLES, TABLES


@dataclass(frozen=True)
class DataRoot:
    """A build's data root: parquet tables, images, embeddings, runs, results, reports.

    `root` is a local path or an s3:// / gs:// URI (then an io.fs.ObjectPath, as every path below)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", fs.path(self.root))

    def table(self, name: str) -> Path:
        """Folder of a canonical table (hive-partitioned by split for split tables)."""
        if name not in TABLES:
            raise ConfigError(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))}")
        return self.root / name

    def table_split(self, name: str, split: str) -> Path:
        """Folder of one split of a split table: ROOT/{name}/split={split}/."""
        if name not in SPLIT_TABLES:
            raise ConfigError(f"table {name!r} has no splits")
        return self.table(name) / f"split={split}"

    @property
    def exports(self) -> Path:
        """TSV.gz exports in the released layout."""
        return self.root / "exports"

    @property
    def stats(self) -> Path:
        """Build statistics (JSON) that cards and reports read."""
        return self.root / "stats.json"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def annotation(self) -> Path:
        return self.root / "annotation"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def config(self) -> Path:
        """Resolved build configs, one JSON per stage."""
        return self.root / "config"
