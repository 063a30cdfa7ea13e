"""Set up a Label Studio project from an export folder through its REST API (standard library only).

Label Studio asks one annotation per task by default; an audit needs `overlap` raters on every item,
so the project's `maximum_annotations` is set to the export's overlap (with every task in the overlap
cohort). Label Studio cannot ask more raters for some tasks than for others, so gold items get the same
overlap as the rest; to show gold to every rater, set the overlap to the number of raters.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, InputError, WitRetrievalError


class LabelStudioError(WitRetrievalError):
    """Label Studio refused a request or could not be reached."""


@dataclass(frozen=True)
class LabelStudio:
    """A Label Studio server and an API token (legacy token: start it with --enable-legacy-api-token)."""

    url: str
    token: str
    timeout: float = 60.0

    def request(self, method: str, path: str, body: object | None = None) -> object:
        """A JSON API call; the parsed JSON answer (bytes for non-JSON answers)."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) checked)
                payload = response.read()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            hint = " (is the token right, and was Label Studio started with --enable-legacy-api-token?)" \
                if exc.code == 401 else ""
            raise LabelStudioError(f"Label Studio {method} {path}: HTTP {exc.code}{hint}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {exc}") from None
        return json.loads(payload) if "json" in kind and payload else payload

    def create_project(self, title: str, label_config: str) -> int:
        """A new project with this labeling config; its id."""
        return int(self.request("POST", "/api/projects", {"title": title, "label_config": label_config})["id"])

    def set_overlap(self, project: int, overlap: int) -> dict:
        """Every task of the project gets `overlap` annotations (one per rater)."""
        if overlap < 1:
            raise ConfigError(f"--overlap must be at least 1, not {overlap}")
        return self.request("PATCH", f"/api/projects/{project}", {
            "maximum_annotations": overlap, "overlap_cohort_percentage": 100,
            "show_overlap_first": True})

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        """Add tasks to the project; how many were added."""
        answer = self.request("POST", f"/api/projects/{project}/import", tasks)
        return int(answer.get("task_count", len(tasks))) if isinstance(answer, dict) else len(tasks)

    def export(self, project: int, fmt: str) -> bytes:
        """The project's annotations in one of Label Studio's export formats (JSON, JSON_MIN, CSV...)."""
        answer = self.request("GET", f"/api/projects/{project}/export?exportType={fmt}")
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode("utf-8")


def check_url(url: str) -> str:
    """Label Studio's base address (http(s)://host:port)."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ConfigError(f"--url {url!r}: give Label Studio's address, e.g. http://127.0.0.1:8080")
    return url


def export_files(export: Path, task_kind: str) -> tuple[str, list[dict], int]:
    """(labeling config, tasks, overlap) of one task kind of an `annotate export` folder."""
    folder = Path(export) / "label_studio"
    config, tasks = folder / f"{task_kind}.config.xml", folder / f"{task_kind}.tasks.json"
    if not config.is_file() or not tasks.is_file():
        raise InputError(f"no Label Studio files for task kind {task_kind!r}; run `annotate export --task "
                         f"{task_kind}` first", path=str(folder))
    manifest = Path(export) / "manifest.json"
    overlap = json.loads(manifest.read_text(encoding="utf-8")).get("overlap") if manifest.is_file() else None
    loaded = json.loads(tasks.read_text(encoding="utf-8"))
    overlap = overlap or max((t["data"].get("overlap") or 1 for t in loaded), default=1)
    return config.read_text(encoding="utf-8"), loaded, int(overlap)
