"""What the loopback server sends: files and thumbnails as resources, content types, ranges."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Small files are read whole (one write per answer); bigger ones go out with sendfile.
_READ_WHOLE_BYTES = 1 << 20
_CONTENT_TYPES = {
    ".gz": "application/gzip",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".sql": "application/sql",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".parquet": "application/vnd.apache.parquet",
}
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


@dataclass(frozen=True)
class Resource:
    """One answerable entity: bytes in memory, or a file streamed from disk."""

    size: int
    content_type: str
    etag: str
    mtime: float
    body: bytes | None = None
    file: Path | None = None

    def read(self) -> bytes:
        """The whole entity (faults that rewrite bodies need it)."""
        return self.body if self.body is not None else self.file.read_bytes()


def content_type(name: str) -> str:
    """Content-Type by extension: `.tsv.gz`/`.sql.gz` -> application/gzip, `.png` -> image/png."""
    suffix = Path(name).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def file_resource(path: Path) -> Resource:
    """A file on disk as a Resource (ETag from size and modification time)."""
    st = path.stat()
    body = path.read_bytes() if st.st_size <= _READ_WHOLE_BYTES else None
    return Resource(
        size=st.st_size if body is None else len(body),
        content_type=content_type(path.name),
        etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
        mtime=st.st_mtime,
        body=body,
        file=path,
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single `bytes=` range as inclusive (start, end); None to serve it all; 'unsatisfiable'.

    Several ranges or a malformed header are ignored (a full 200 is a valid answer to those).
    """
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def thumbnail_resource(root: Path, match: re.Match) -> Resource | tuple[int, str]:
    """Render `/wikipedia/commons/thumb/{h0}/{h0h1}/{Name}/{W}px-{Name}` from the original."""
    h0, h01, name, width, thumb_name = match.groups()
    if not h01.startswith(h0):
        return 404, "not found"
    is_svg = name.lower().endswith(".svg")
    if thumb_name != (name + ".png" if is_svg else name):
        return 404, f"thumbnail name must be {name + '.png' if is_svg else name}"
    original = (root / "wikipedia" / "commons" / h0 / h01 / name).resolve()
    if not original.is_relative_to(root):
        return 403, "path traversal refused"
    if not original.is_file():
        return 404, "original file not found"
    if is_svg:
        return 501, "SVG rasterisation is not available on this server"
    if int(width) < 1:
        return 400, "width must be at least 1 px"
    st = original.stat()
    try:
        body, ctype = _render_thumbnail(str(original), st.st_mtime_ns, int(width))
    except OSError as exc:
        return 500, f"cannot render thumbnail: {exc}"
    etag = '"' + hashlib.sha1(f"{st.st_mtime_ns}:{st.st_size}:{width}".encode()).hexdigest()[:16] + '"'
    return Resource(size=len(body), content_type=ctype, etag=etag, mtime=st.st_mtime, body=body)


@lru_cache(maxsize=2048)
def _render_thumbnail(path: str, mtime_ns: int, width: int) -> tuple[bytes, str]:
    """Resize keeping the aspect ratio, in the original's format; never upscale (serve as is)."""
    from PIL import Image

    with Image.open(path) as img:
        ctype = Image.MIME.get(img.format or "", "image/png")
        fmt = _PIL_FORMATS.get(ctype, "PNG")
        ctype = ctype if ctype in _PIL_FORMATS else "image/png"
        w, h = img.size
        if width < w:
            img = img.resize((width, max(1, round(h * width / w))), Image.Resampling.LANCZOS)
        else:
            img.load()
        if fmt == "JPEG" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        out = io.BytesIO()
        img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue(), ctype
