"""Keep pandas out of build processes that never hold a pandas object.

pyarrow imports pandas the first time it converts a Python value: its Cython shim does, to
recognise DataFrames and Series, and its C++ converter does, to recognise pandas' NA. That
costs a quarter of a second of CPU in every process that converts anything. A build's shard
workers never see a pandas object. The parent loads their shared state, then forks them,
and has no use for pandas before that, so it can import pandas while the workers run.

`pandas_kept_out()` makes `import pandas` fail while it is active. Processes forked inside it
keep it for good. On the way out, the parent points pyarrow back at pandas: pyarrow
remembers a failed look. Where pandas is imported already, it does nothing.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _KeepOut(importlib.abc.MetaPathFinder):
    """A finder that refuses pandas, first in line; pyarrow takes the ImportError as 'no pandas'."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is kept out of this build process (wit_retrieval.io.pandas_probe)", name=name)
        return None


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
        reconnect_pandas()


def reconnect_pandas() -> bool:
    """Let pyarrow find pandas again after a look that failed (this imports pandas); True if it did.

    pyarrow keeps the first answer for its quick checks (is this a DataFrame?) and asks again
    only where pandas is required. Asking here makes `pa.table(dataframe)` work as before.
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
