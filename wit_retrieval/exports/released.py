"""`export released`: the released TSV.gz layout (build/export.py does the writing)."""

from __future__ import annotations

from pathlib import Path

from .source import data_root


def export_released(root: str | Path, out: str | Path | None = None, *, train_shards: int = 5) -> list[Path]:
    """Write the released TSV.gz files of `root`; into `out` when given (else ROOT/exports). Returns paths."""
    import os

    from ..build.export import export_all

    found = data_root(root)
    written = export_all(found, train_shards=train_shards)
    if out is None or Path(out).resolve() == found.exports.resolve():
        return written
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in written:  # same file system in the common case; os.replace is atomic there
        dest = target / path.name
        try:
            os.replace(path, dest)
        except OSError:
            import shutil

            shutil.move(str(path), dest)
        moved.append(dest)
    return moved
