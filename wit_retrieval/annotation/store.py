"""The rater app's SQLite file: the items to rate and every rating, safe for several threads."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import InputError
from .ratings import now_iso
from .tasks import Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, position INTEGER NOT NULL, task_kind TEXT NOT NULL, payload TEXT NOT NULL,
    is_gold INTEGER NOT NULL, gold_label TEXT, language TEXT, query_type TEXT, overlap INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    item_id TEXT NOT NULL REFERENCES items(item_id), rater TEXT NOT NULL, label TEXT NOT NULL,
    rated_at TEXT NOT NULL, PRIMARY KEY (item_id, rater)
);
CREATE INDEX IF NOT EXISTS ratings_by_rater ON ratings(rater, rated_at);
"""

# Items this rater has not rated that still need raters (gold items go to every rater).
_OPEN = """
FROM items i WHERE NOT EXISTS (SELECT 1 FROM ratings r WHERE r.item_id = i.item_id AND r.rater = :rater)
AND (i.is_gold = 1 OR (SELECT COUNT(*) FROM ratings r WHERE r.item_id = i.item_id) < i.overlap)
"""


class AnnotationStore:
    """Items and ratings in one SQLite file; a connection per operation keeps threads apart."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def add_items(self, items: list[Item]) -> int:
        """Add items not yet in the store (existing ones and their ratings are kept); returns how many."""
        with self._connect() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.item_id, start + n, i.task_kind, json.dumps(i.to_dict(), ensure_ascii=False), int(i.is_gold),
                  i.gold_label, i.language, i.query_type, i.overlap) for n, i in enumerate(items)],
            )
            return db.total_changes - before

    def count_items(self) -> int:
        """How many items the store holds."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def item(self, item_id: str) -> Item | None:
        """One item by id."""
        with self._connect() as db:
            row = db.execute("SELECT payload FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return Item.from_dict(json.loads(row["payload"])) if row else None

    def next_item(self, rater: str) -> Item | None:
        """The first item in export order this rater should rate next (None when done)."""
        with self._connect() as db:
            row = db.execute(f"SELECT payload {_OPEN} ORDER BY i.position LIMIT 1", {"rater": rater}).fetchone()
        return Item.from_dict(json.loads(row["payload"])) if row else None

    def progress(self, rater: str) -> tuple[int, int]:
        """(items this rater has rated, that plus the items still open to them)."""
        with self._connect() as db:
            done = db.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,)).fetchone()[0]
            left = db.execute(f"SELECT COUNT(*) {_OPEN}", {"rater": rater}).fetchone()[0]
        return done, done + left

    def record(self, item_id: str, rater: str, label: str) -> None:
        """Store (or change) a rater's label for an item."""
        with self._connect() as db:
            if db.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone() is None:
                raise KeyError(item_id)
            db.execute(
                "INSERT INTO ratings VALUES (?, ?, ?, ?) ON CONFLICT(item_id, rater) "
                "DO UPDATE SET label = excluded.label, rated_at = excluded.rated_at",
                (item_id, rater, label, now_iso()),
            )

    def label_of(self, item_id: str, rater: str) -> str | None:
        """The label a rater gave an item, if any."""
        with self._connect() as db:
            row = db.execute("SELECT label FROM ratings WHERE item_id = ? AND rater = ?", (item_id, rater)).fetchone()
        return row["label"] if row else None

    def last_rated(self, rater: str) -> str | None:
        """The item this rater rated most recently (to offer changing it)."""
        with self._connect() as db:
            row = db.execute("SELECT item_id FROM ratings WHERE rater = ? ORDER BY rated_at DESC, rowid DESC LIMIT 1",
                             (rater,)).fetchone()
        return row["item_id"] if row else None

    def image_urls(self) -> dict[str, str]:
        """image_id -> URL for every image any item shows (the only redirects the app makes)."""
        with self._connect() as db:
            payloads = [r["payload"] for r in db.execute("SELECT payload FROM items")]
        urls: dict[str, str] = {}
        for payload in payloads:
            urls.update(Item.from_dict(json.loads(payload)).image_urls())
        return urls

    def rating_rows(self) -> list[dict]:
        """Every rating joined with its item, as ratings-table rows (source="app")."""
        with self._connect() as db:
            return _rating_rows(db)


def _rating_rows(db: sqlite3.Connection) -> list[dict]:
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT r.item_id, i.task_kind, r.rater, r.label, i.is_gold, i.gold_label, i.language, "
        "i.query_type, r.rated_at FROM ratings r JOIN items i USING (item_id) ORDER BY r.rowid"
    ).fetchall()
    return [{**dict(r), "is_gold": bool(r["is_gold"]), "source": "app"} for r in rows]


def read_app_ratings(path: str | Path) -> list[dict]:
    """Ratings rows from an app SQLite file; a file that is not one raises InputError."""
    path = Path(path)
    try:
        # Read-only: importing must not change a file raters may still be writing to.
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"items", "ratings"} <= tables:
                raise InputError("not a rater-app database (needs tables items and ratings)", path=str(path))
            return _rating_rows(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a readable rater-app SQLite file: {exc}", path=str(path)) from None
