"""Keep pandas out of build processes that never hold a pandas object.

pyarrow imports pandas the first time it converts a Python value: its Cython shim does, to
recognise DataFrames and Series, and its C++ converter does, to recognise pandas' NA. That
costs a quarter of a second of CPU in every process that converts anything, and a build's
processes (the parent and each worker) never see a pandas object.

`pandas_kept_out()` makes `import pandas` fail while it is active; pyarrow takes that as
"no pandas" and goes on. Processes forked inside it keep it for good. pyarrow remembers
that failed look, so on the way out a finder is left that points pyarrow back at pandas as
soon as anything imports it; until then nothing imports it (pyarrow does not look again by
itself). Where pandas is imported already, nothing happens at all.

While active, the block is process-wide: another thread of the process cannot import
pandas either.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _KeepOut(importlib.abc.MetaPathFinder):
    """A finder that refuses pandas, first in line."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is kept out of this build process (wit_retrieval.io.pandas_probe)", name=name)
        return None


class _ReconnectOnImport(importlib.abc.MetaPathFinder):
    """A finder that lets pandas be imported as usual, then points pyarrow at it (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "pandas":
            return None
        sys.meta_path.remove(self)  # once: what follows finds the real spec
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenReconnect(spec.loader)
        return spec


class _ThenReconnect(importlib.abc.Loader):
    """pandas' own loader, then reconnect_pandas() once pandas is imported."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader  # pandas sees its own loader
        self.loader.exec_module(module)
        reconnect_pandas()


@contextmanager
def pandas_kept_out() -> Iterator[None]:
    """Inside: pandas cannot be imported here, nor in processes forked meanwhile (for good in them)."""
    if "pandas" in sys.modules:
        yield
        return
    finder = _KeepOut()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        if not any(isinstance(f, _ReconnectOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _ReconnectOnImport())


def reconnect_pandas() -> bool:
    """Let pyarrow find pandas after a look that failed (this imports pandas); True if it did.

    pyarrow keeps the first answer for its quick checks (is this a DataFrame?) and asks again
    only where pandas is required. Asking makes `pa.table(dataframe)` work as before.
    """
    import pyarrow as pa

    shim = getattr(pa.lib, "_pandas_api", None)  # private: a pyarrow without it needs nothing
    if shim is None:
        return False
    try:
        shim.pd  # noqa: B018  (the property asks again: it imports pandas when it can)
    except ImportError:
        return False
    return True
