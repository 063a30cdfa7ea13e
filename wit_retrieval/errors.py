"""Errors of the toolkit. The CLI turns any WitRetrievalError into one clean line and exit 1."""

from __future__ import annotations


class WitRetrievalError(Exception):
    """Base class: a problem the user can fix; its message says what to do."""


class ConfigError(WitRetrievalError):
    """A configuration or option is invalid; raised before any work starts."""


class InputError(WitRetrievalError):
    """An input file is unusable as a whole (missing, wrong format, unknown columns)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class DownloadError(WitRetrievalError):
    """A file could not be downloaded or verified."""


class MissingDependencyError(WitRetrievalError):
    """An optional dependency (an extra) is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed; install it with: pip install 'wit-retrieval[{extra}]'"
        )
        self.package = package
        self.extra = extra


# The top-level module of each optional dependency, and the extra that installs it. The CLI turns a
# ModuleNotFoundError for one of these, raised anywhere below a command, into the one-line hint.
EXTRA_OF_MODULE = {
    "torch": "clip", "torchvision": "clip", "open_clip": "clip", "safetensors": "clip",
    "sentence_transformers": "text", "ray": "ray", "markdown": "annotate", "matplotlib": "plots",
}


def missing_extra(exc: ModuleNotFoundError) -> MissingDependencyError | None:
    """The install hint for a missing optional module, or None when it is not one of ours."""
    package = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(package)
    return None if extra is None else MissingDependencyError(package, extra)


def require(module: str, extra: str):
    """Import an optional module or raise MissingDependencyError with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module.split(".")[0], extra) from exc
