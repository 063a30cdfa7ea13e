"""The rater web app: standard-library HTTP server, one item per page, SQLite storage.

Security: binds to loopback by default; every value from the data is HTML-escaped (captions
come from Wikipedia) and a Content-Security-Policy forbids inline scripts besides; each POST
must carry the session's CSRF token (403 otherwise); images are served from the local store
or redirected only to URLs the items name.
"""

from __future__ import annotations

import contextlib
import html
import http.cookies
import re
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, quote, urlsplit

from ..errors import ConfigError
from ..layout import DataRoot
from .render import text_html
from .store import AnnotationStore
from .tasks import Item, get_kind, read_items

RATER_NAME = re.compile(r"^[\w .@-]{1,64}$")  # letters of any script, digits, space, . _ - @
COOKIE = "wr_session"
MAX_FORM_BYTES = 64 * 1024
STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; script-src 'self'; "
                               "style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class AppConfig:
    """Where the app keeps ratings, which items it loads, where images are, where it listens."""

    db: Path
    items: Path | None = None        # items.jsonl or an export folder, added to the db at start
    images: Path | None = None       # an image store folder; default: the build's, from the export manifest
    host: str = "127.0.0.1"
    port: int = 8765
    cors_origins: tuple[str, ...] = ()  # e.g. Label Studio's origin: may fetch /image/... (never "*")


@dataclass
class Response:
    """What a route returns."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] | None = None


def _redirect(location: str) -> Response:
    return Response(303, headers={"Location": location})


def _template(name: str) -> Template:
    return Template((resources.files(__package__) / "templates" / name).read_text(encoding="utf-8"))


def _open_image_store(directory: Path | None):
    """The image store, or None (then images are redirected to their URLs)."""
    if directory is None or not Path(directory).exists():
        return None
    try:
        from ..images import open_store
    except ImportError:
        return None
    return open_store(directory)


def default_images(items: Path | None) -> Path | None:
    """The image store of the build an export folder was sampled from, when it exists."""
    import json

    manifest = Path(items) / "manifest.json" if items is not None and Path(items).is_dir() else None
    if manifest is None or not manifest.exists():
        return None
    root = json.loads(manifest.read_text(encoding="utf-8")).get("root")
    images = DataRoot(root).images if root else None
    return images if images is not None and images.is_dir() else None


def check_origin(origin: str) -> str:
    """A web origin as browsers send it (scheme://host[:port], no path); ConfigError otherwise."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"--cors-origin {origin!r} is not an origin; give scheme://host:port, "
                          "e.g. http://127.0.0.1:8080 (Label Studio's address), never '*'")
    return f"{parts.scheme}://{parts.netloc}"


def _image_type(data: bytes) -> str:
    for magic, mime in ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif")):
        if data.startswith(magic):
            return mime
    return "image/webp" if data[8:12] == b"WEBP" else "application/octet-stream"


class RaterApp:
    """Routes of the app, independent of the HTTP plumbing."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.store = AnnotationStore(config.db)
        if config.items is not None:
            self.store.add_items(read_items(config.items))
        self.image_urls = self.store.image_urls()
        if self.store.count_items() == 0:
            raise ConfigError(f"{config.db} holds no items; pass the export's items.jsonl (--items)")
        self.images = _open_image_store(config.images or default_images(config.items))
        self.sessions: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.templates = {n: _template(f"{n}.html") for n in ("base", "login", "header", "item", "done")}
        self.cors_origins = frozenset(check_origin(o) for o in config.cors_origins)

    def cors_headers(self, path: str, origin: str | None) -> dict[str, str]:
        """CORS headers for a request: only on image routes, only for a configured origin (never "*")."""
        if not path.startswith("/image/"):
            return {}
        headers = {"Vary": "Origin"}
        if origin and origin in self.cors_origins:
            headers.update({"Access-Control-Allow-Origin": origin, "Cross-Origin-Resource-Policy": "cross-origin"})
        return headers

    # -- sessions -------------------------------------------------------------------------
    def session(self, cookie_header: str | None) -> tuple[str, dict, bool]:
        """(session id, session, is new) for the request's cookie; a new session when unknown."""
        jar = http.cookies.SimpleCookie()
        with contextlib.suppress(http.cookies.CookieError):
            jar.load(cookie_header or "")
        sid = jar[COOKIE].value if COOKIE in jar else None
        with self.lock:
            if sid and sid in self.sessions:
                return sid, self.sessions[sid], False
            sid = secrets.token_urlsafe(24)
            self.sessions[sid] = {"csrf": secrets.token_urlsafe(32), "rater": None}
            return sid, self.sessions[sid], True

    # -- pages ----------------------------------------------------------------------------
    def page(self, title: str, body: str, session: dict) -> Response:
        header = ""
        if session.get("rater"):
            done, total = self.store.progress(session["rater"])
            header = self.templates["header"].substitute(
                rater=html.escape(session["rater"]), done=done, total=total, csrf=session["csrf"])
        text = self.templates["base"].substitute(title=html.escape(title), header=header, body=body)
        return Response(200, text.encode("utf-8"))

    def login_page(self, session: dict, message: str = "") -> Response:
        body = self.templates["login"].substitute(
            csrf=session["csrf"], message=f'<p class="error">{html.escape(message)}</p>' if message else "")
        return self.page("Sign in", body, session)

    def item_page(self, item: Item, session: dict) -> Response:
        kind = get_kind(item.task_kind)
        current = self.store.label_of(item.item_id, session["rater"])
        buttons = "".join(
            f'<button type="submit" name="label" value="{html.escape(label)}" data-key="{n}" '
            f'id="label-{html.escape(label)}"{" class=current" if label == current else ""}>'
            f'{html.escape(label.capitalize())} <kbd>{n}</kbd></button>'
            for n, label in enumerate(kind.labels, 1))
        body = self.templates["item"].substitute(
            item_id=html.escape(item.item_id), task_kind=html.escape(item.task_kind),
            kind_help=html.escape(kind.help), question=html.escape(kind.question),
            title_block=self._title_block(item),
            text_block=f'<div class="text" id="item-text">{text_html(item)}</div>' if item.text else "", images=self._images_block(item, kind),
            csrf=session["csrf"], buttons=buttons, keys=", ".join(str(n) for n in range(1, len(kind.labels) + 1)),
            previous=self._previous_link(session["rater"], item.item_id))
        return self.page(kind.name, body, session)

    def _title_block(self, item: Item) -> str:
        if not item.title:
            return ""
        link = ""
        if item.page_url and urlsplit(item.page_url).scheme == "https":  # for raters who need to look it up
            link = f' <a href="{html.escape(item.page_url)}" target="_blank" rel="noopener noreferrer">(page)</a>'
        if item.task_kind != "ei-correct":  # the page the text comes from, not an entity
            return (f'<p class="page" id="item-title">Wikipedia page: <strong>{html.escape(item.title)}</strong>'
                    f"{link}</p>")
        return f'<h2 class="title" id="item-title">{html.escape(item.title)}{link}</h2>'

    def _images_block(self, item: Item, kind) -> str:
        figures = []
        for e in item.entities:
            caption = f"[MASK_{int(e['mask'])}]" + (f" {html.escape(e['name'])}" if e.get("name") else "")
            figures.append(self._figure(e.get("image_id"), caption, "entity"))
        if item.reference:
            figures.append(self._figure(item.reference.get("image_id"), "Target image", "main reference"))
        if item.candidate:
            figures.append(self._figure(item.candidate.get("image_id"), html.escape(kind.candidate_caption),
                                        "main candidate"))
        return f'<div class="images">{"".join(figures)}</div>' if figures else ""

    @staticmethod
    def _figure(image_id: str | None, caption: str, css: str) -> str:
        src = f"/image/{quote(image_id)}" if image_id else ""
        return (f'<figure class="{css}"><img src="{src}" alt="{html.escape(re.sub("<[^>]*>", "", caption))}">'
                f"<figcaption>{caption}</figcaption></figure>")

    def _previous_link(self, rater: str, current_id: str | None) -> str:
        last = self.store.last_rated(rater)
        if not last or last == current_id:
            return ""
        return f'<a href="/rate?item={quote(last)}" id="previous">Change my previous answer</a>'

    def done_page(self, session: dict) -> Response:
        done, _ = self.store.progress(session["rater"])
        body = self.templates["done"].substitute(done=done, previous=self._previous_link(session["rater"], None))
        return self.page("Done", body, session)

    # -- routes ---------------------------------------------------------------------------
    def get(self, path: str, query: dict[str, list[str]], session: dict) -> Response:
        """Answer a GET request."""
        if path == "/":
            return _redirect("/rate") if session.get("rater") else self.login_page(session)
        if path == "/rate":
            if not session.get("rater"):
                return _redirect("/")
            wanted = (query.get("item") or [None])[0]
            item = self.store.item(wanted) if wanted else self.store.next_item(session["rater"])
            if wanted and item is None:
                return Response(404, b"no such item", "text/plain; charset=utf-8")
            return self.item_page(item, session) if item else self.done_page(session)
        if path.startswith("/image/"):
            return self.image(path[len("/image/"):])
        if path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            data = (resources.files(__package__) / "static" / name).read_bytes()
            return Response(200, data, STATIC[name], {"Cache-Control": "max-age=300"})
        if path == "/healthz":
            return Response(200, b"ok", "text/plain; charset=utf-8")
        return Response(404, b"not found", "text/plain; charset=utf-8")

    def post(self, path: str, form: dict[str, list[str]], session: dict) -> Response:
        """Answer a POST request whose CSRF token has been checked."""
        field = lambda name: (form.get(name) or [""])[0].strip()  # noqa: E731
        if path == "/login":
            name = field("rater")
            if not RATER_NAME.fullmatch(name):
                return self.login_page(session, "Use 1-64 letters, digits, spaces or . _ - @ for your name.")
            session["rater"] = name
            return _redirect("/rate")
        if path == "/logout":
            session["rater"] = None
            return _redirect("/")
        if path == "/rate":
            if not session.get("rater"):
                return _redirect("/")
            item = self.store.item(field("item_id"))
            if item is None:
                return Response(400, b"unknown item", "text/plain; charset=utf-8")
            if not get_kind(item.task_kind).check_label(field("label")):
                return Response(400, b"unknown label for this task", "text/plain; charset=utf-8")
            self.store.record(item.item_id, session["rater"], field("label"))
            return _redirect("/rate")
        return Response(404, b"not found", "text/plain; charset=utf-8")

    def image(self, image_id: str) -> Response:
        """An image from the local store, else a redirect to its (known) URL."""
        if self.images is not None:
            try:
                data = self.images.get(image_id)
            except (KeyError, FileNotFoundError):
                data = None
            if data:
                return Response(200, data, _image_type(data), {"Cache-Control": "max-age=86400"})
        url = self.image_urls.get(image_id)
        if url and urlsplit(url).scheme in ("http", "https"):
            return Response(302, headers={"Location": url})
        return Response(404, b"no such image", "text/plain; charset=utf-8")


class _Handler(BaseHTTPRequestHandler):
    server_version = "wit-retrieval-annotate"
    app: RaterApp

    def log_message(self, format, *args):  # quiet: ratings are in the database, not the log
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_OPTIONS(self):  # a CORS preflight: answered for image routes of a configured origin only
        path = urlsplit(self.path).path
        headers = self.server.app.cors_headers(path, self.headers.get("Origin"))
        if "Access-Control-Allow-Origin" in headers:
            headers.update({"Access-Control-Allow-Methods": "GET, OPTIONS", "Access-Control-Max-Age": "600"})
            wanted = self.headers.get("Access-Control-Request-Headers")
            if wanted:
                headers["Access-Control-Allow-Headers"] = wanted
        self._send(Response(204 if "Access-Control-Allow-Origin" in headers else 403, headers=headers), None)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        sid, session, new = app.session(self.headers.get("Cookie"))
        if method == "GET":
            response = app.get(url.path, parse_qs(url.query), session)
            cors = app.cors_headers(url.path, self.headers.get("Origin"))
            if cors:
                response.headers = {**(response.headers or {}), **cors}
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_FORM_BYTES:
                response = Response(413, b"form too large", "text/plain; charset=utf-8")
            else:
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                token = (form.get("csrf") or [""])[0]
                if new or not secrets.compare_digest(token, session["csrf"]):
                    response = Response(403, b"missing or wrong CSRF token; reload the page",
                                        "text/plain; charset=utf-8")
                else:
                    response = app.post(url.path, form, session)
        self._send(response, sid if new else None)

    def _send(self, response: Response, new_sid: str | None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**SECURITY_HEADERS, **(response.headers or {})}.items():
            self.send_header(name, value)
        if response.content_type.startswith("text/html"):
            self.send_header("Cache-Control", "no-store")
        if new_sid:
            self.send_header("Set-Cookie", f"{COOKIE}={new_sid}; HttpOnly; SameSite=Strict; Path=/")
        self.end_headers()
        self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def make_server(config: AppConfig) -> ThreadingHTTPServer:
    """A ready server (not yet serving); `.server_address` gives the bound port (port 0 = any)."""
    server = _Server((config.host, config.port), _Handler)
    server.app = RaterApp(config)
    return server
