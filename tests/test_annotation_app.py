"""The rater app over real HTTP on loopback: CSRF, escaping, overlap, resume, images."""

from __future__ import annotations

import hashlib
import io
import re
import sqlite3
import threading
from pathlib import Path

import pytest
import requests

from wit_retrieval.annotation.app import AppConfig, make_server
from wit_retrieval.annotation.tasks import Item, write_items
from wit_retrieval.errors import ConfigError

EVIL = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def _image(image_id: str) -> dict:
    # Port 9 on loopback refuses at once: a browser never waits on the real network.
    return {"image_id": image_id, "image_url": f"https://127.0.0.1:9/commons/{image_id}.jpg"}


def make_items(count: int = 5, overlap: int = 2) -> list[Item]:
    """An evil item first, then plain mmir-answerable items, and one gold ei-correct item."""
    items = [Item(item_id="ei-correct-evil", task_kind="ei-correct", language="en", query_type=None,
                  source_id="Q1", title=f"Caption {EVIL}", page_url="https://en.wikipedia.org/wiki/X",
                  candidate=_image("aaaa000000000001"), overlap=overlap)]
    for n in range(count):
        items.append(Item(
            item_id=f"mmir-answerable-{n}", task_kind="mmir-answerable", language="de", query_type="single",
            source_id=f"test-{n}", text=f"[MASK_0] near the river, item {n} {EVIL}",
            entities=[{"mask": 0, "entity_id": "Q2", "name": None, **_image(f"bbbb00000000000{n}")}],
            candidate=_image(f"cccc00000000000{n}"), overlap=overlap))
    items.append(Item(item_id="ei-correct-gold", task_kind="ei-correct", language="en", query_type=None,
                      source_id="Q3", title="Gold", candidate=_image("dddd000000000001"), is_gold=True,
                      gold_label="no", overlap=overlap))
    return items


def write_store(directory: Path, image_ids: list[str]) -> None:
    """A real image store (helper D's shard format) holding small PNGs."""
    from PIL import Image

    from wit_retrieval.images.decode import StoredImage
    from wit_retrieval.images.store import ShardWriter

    writer = ShardWriter(directory, 0)
    for n, image_id in enumerate(image_ids):
        buffer = io.BytesIO()
        Image.new("RGB", (24, 16), (40 * n % 255, 120, 200)).save(buffer, format="PNG")
        data = buffer.getvalue()
        writer.add_ok(image_id, f"https://127.0.0.1:9/{image_id}", StoredImage(data, "png", 24, 16,
                                                                                hashlib.sha256(data).hexdigest()), "http")
    writer.commit({"ok": len(image_ids)})


class RunningApp:
    """The app served on a free loopback port in a background thread."""

    def __init__(self, tmp: Path, items: list[Item], images: Path | None = None):
        write_items(items, tmp / "items.jsonl")
        self.db = tmp / "ratings.sqlite"
        self.server = make_server(AppConfig(db=self.db, items=tmp / "items.jsonl", images=images, port=0))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def rows(self, rater: str) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT item_id, label FROM ratings WHERE rater = ? ORDER BY rowid", (rater,)).fetchall()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def running(tmp_path):
    app = RunningApp(tmp_path, make_items())
    yield app
    app.close()


def _token(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _login(app: RunningApp, name: str) -> tuple[requests.Session, str]:
    session = requests.Session()
    token = _token(session.get(app.url + "/").text)
    page = session.post(app.url + "/login", data={"csrf": token, "rater": name})
    assert page.status_code == 200 and page.url.endswith("/rate")
    return session, token


def _current(page: str) -> str:
    return re.search(r'data-item-id="([^"]+)"', page).group(1)


def test_post_without_or_with_wrong_csrf_token_is_refused(running):
    assert running.server.server_address[0] == "127.0.0.1" and AppConfig(db=Path("x")).host == "127.0.0.1"
    anonymous = requests.post(running.url + "/login", data={"rater": "mallory"}, allow_redirects=False)
    assert anonymous.status_code == 403
    session = requests.Session()
    session.get(running.url + "/")
    assert session.post(running.url + "/login", data={"rater": "mallory"}).status_code == 403
    assert session.post(running.url + "/login", data={"rater": "mallory", "csrf": "forged"}).status_code == 403
    session, token = _login(running, "alice")
    item_id = _current(session.get(running.url + "/rate").text)
    refused = session.post(running.url + "/rate", data={"item_id": item_id, "label": "yes"}, allow_redirects=False)
    assert refused.status_code == 403 and running.rows("alice") == []
    other, _ = _login(running, "bob")  # another session's token is not this one's
    stolen = other.post(running.url + "/rate", data={"item_id": item_id, "label": "yes", "csrf": token})
    assert stolen.status_code == 403 and running.rows("bob") == []


def test_data_is_escaped_and_scripts_are_forbidden(running):
    session, _ = _login(running, "alice")
    page = session.get(running.url + "/rate")
    assert "<script>window" not in page.text and "onerror=" not in page.text.replace("onerror=&quot;", "")
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_labels_overlap_gold_and_resume(running, tmp_path):
    session, token = _login(running, "alice")
    seen = []
    for _ in range(3):
        page = session.get(running.url + "/rate").text
        item_id = _current(page)
        seen.append(item_id)
        label = "yes" if item_id.startswith("ei-correct") else "partly"
        assert session.post(running.url + "/rate", data={"csrf": token, "item_id": item_id, "label": label}).ok
    assert [r[0] for r in running.rows("alice")] == seen
    bad = session.post(running.url + "/rate", data={"csrf": token, "item_id": seen[0], "label": "maybe"})
    assert bad.status_code == 400
    # A new session for the same name resumes after the last rated item.
    again, _ = _login(running, "alice")
    assert _current(again.get(running.url + "/rate").text) not in seen
    # With overlap 1, bob never gets alice's items, except gold items, which every rater sees.
    (tmp_path / "one").mkdir()
    single = RunningApp(tmp_path / "one", make_items(count=2, overlap=1))
    try:
        a, ta = _login(single, "alice")
        while "data-item-id" in (page := a.get(single.url + "/rate").text):
            a.post(single.url + "/rate", data={"csrf": ta, "item_id": _current(page), "label": "no"})
        assert 'id="done"' in page and len(single.rows("alice")) == 4
        b, tb = _login(single, "bob")
        page = b.get(single.url + "/rate").text
        assert _current(page) == "ei-correct-gold" and "0 / 1" in page
    finally:
        single.close()


def test_images_from_store_else_redirect_to_known_urls(tmp_path):
    write_store(tmp_path / "images", ["aaaa000000000001"])
    app = RunningApp(tmp_path, make_items(), images=tmp_path / "images")
    try:
        stored = requests.get(app.url + "/image/aaaa000000000001")
        assert stored.status_code == 200 and stored.headers["Content-Type"] == "image/png"
        assert stored.content.startswith(b"\x89PNG")
        moved = requests.get(app.url + "/image/cccc000000000001", allow_redirects=False)
        assert moved.status_code == 302 and moved.headers["Location"] == "https://127.0.0.1:9/commons/cccc000000000001.jpg"
        assert requests.get(app.url + "/image/ffffffffffffffff", allow_redirects=False).status_code == 404
    finally:
        app.close()


def test_empty_database_without_items_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no items"):
        make_server(AppConfig(db=tmp_path / "empty.sqlite", port=0))


def test_serve_finds_the_build_image_store_through_the_export(tmp_path):
    from wit_retrieval.annotation.export import write_export
    from wit_retrieval.annotation.sampling import SampleConfig, sample_items

    from .test_annotation_data import make_build

    root = make_build(tmp_path / "build")
    items, manifest = sample_items(root.root, SampleConfig(task_kinds=("ei-correct",), n=3, gold_fraction=0))
    write_export(items, manifest, tmp_path / "audit")
    write_store(root.images, [items[0].candidate["image_id"]])
    server = make_server(AppConfig(db=tmp_path / "r.sqlite", items=tmp_path / "audit", port=0))
    try:
        assert server.app.images is not None and items[0].candidate["image_id"] in server.app.images
        assert server.app.image(items[0].candidate["image_id"]).status == 200
        assert server.app.image(items[1].candidate["image_id"]).status == 302
    finally:
        server.server_close()


def test_rater_names_are_checked(running):
    session = requests.Session()
    token = _token(session.get(running.url + "/").text)
    page = session.post(running.url + "/login", data={"csrf": token, "rater": "<b>x</b>"})
    assert page.url.endswith("/login") and "Use 1-64 letters" in page.text and "<b>x</b>" not in page.text
    page = session.post(running.url + "/login", data={"csrf": token, "rater": "José Müller"})
    assert page.url.endswith("/rate") and "José Müller" in page.text
