"""io.pandas_probe: pandas stays out while the block is active (and in processes forked inside),
and pyarrow works with pandas again afterwards. Each case runs in a fresh interpreter: the
test process has pandas imported already, where the block rightly does nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_pandas_stays_out_inside_and_in_forked_children_and_comes_back_after():
    out = _run("""
        import os, sys
        import pyarrow as pa
        from wit_retrieval.io.pandas_probe import pandas_kept_out

        with pandas_kept_out():
            pa.array(["a", None]); pa.scalar(0); pa.table({"x": [1, 2]})  # each would import pandas
            print("inside", "pandas" in sys.modules)
            pid = os.fork()
            if pid == 0:  # a worker forked inside: no pandas for good, even once the parent left
                import time; time.sleep(0.3)
                pa.array([1, 2])
                try:
                    import pandas  # noqa: F401
                    os._exit(1)
                except ImportError:
                    os._exit(0 if "pandas" not in sys.modules else 2)
        print("outside", "pandas" in sys.modules, pa.lib._pandas_api.have_pandas)
        print("child", os.waitpid(pid, 0)[1])
        import pandas as pd
        frame = pd.DataFrame({"a": [1, None], "b": ["x", "y"]})
        print("table", pa.table(frame).to_pydict())  # pyarrow recognises the DataFrame again
        print("series", pa.array(pd.Series([1, None], dtype="Int64")).to_pylist())
    """)
    assert out.splitlines() == [
        "inside False",
        "outside True True",
        "child 0",
        "table {'a': [1.0, None], 'b': ['x', 'y']}",
        "series [1, None]",
    ]


def test_nothing_changes_where_pandas_is_imported_already():
    out = _run("""
        import sys
        import pandas as pd
        import pyarrow as pa
        from wit_retrieval.io.pandas_probe import pandas_kept_out

        finders = list(sys.meta_path)
        with pandas_kept_out():
            import pandas.io.formats.style_render  # noqa: F401  (still importable, submodules too)
            print(pa.table(pd.DataFrame({"a": [1]})).num_rows, sys.meta_path == finders)
    """)
    assert out == "1 True"


def test_workers_forked_inside_never_import_pandas():
    """As `build mmir` runs its shards (shard.preloaded): the workers convert values without
    importing pandas (a quarter second each)."""
    out = _run("""
        import os, sys
        import pyarrow as pa
        from wit_retrieval.engine import EngineConfig, run_shards
        from wit_retrieval.io.pandas_probe import pandas_kept_out

        def task(x):
            pa.array([x, None]); pa.table({"x": [x]})
            return "pandas" in sys.modules

        print(list(run_shards(task, [1, 2, 3], EngineConfig(workers=2), preload=pandas_kept_out)))
    """)
    assert out == "[False, False, False]"
