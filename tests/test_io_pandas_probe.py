"""io.pandas_probe: pandas stays out while the block is active (and in processes forked inside),
and pyarrow works with pandas again once something imports it. Each case runs in a fresh
interpreter: the test process has pandas imported already, where the block does nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_pandas_stays_out_inside_and_in_forked_children_and_reconnects_on_import():
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
        print("after", "pandas" in sys.modules)  # not imported on the way out: only when wanted
        print("child", os.waitpid(pid, 0)[1])
        import pandas as pd
        print("reconnected", pa.lib._pandas_api.have_pandas)
        print("loader", type(pd.__loader__).__name__, type(pd.__spec__.loader).__name__)
        frame = pd.DataFrame({"a": [1, None], "b": ["x", "y"]})
        print("table", pa.table(frame).to_pydict())  # pyarrow recognises the DataFrame again
        print("series", pa.array(pd.Series([1, None], dtype="Int64")).to_pylist())
    """)
    assert out == [
        "inside False",
        "after False",
        "child 0",
        "reconnected True",
        "loader SourceFileLoader SourceFileLoader",
        "table {'a': [1.0, None], 'b': ['x', 'y']}",
        "series [1, None]",
    ]


def test_one_reconnecting_finder_however_many_blocks_and_gone_once_used():
    out = _run("""
        import sys
        import pyarrow as pa
        from wit_retrieval.io.pandas_probe import pandas_kept_out

        def finders():
            return sum(type(f).__name__ == "_ReconnectOnImport" for f in sys.meta_path)

        for _ in range(2):
            with pandas_kept_out():
                pa.array([1, None])
        pa.array([1, None])  # pyarrow does not look again by itself: pandas stays unimported
        print(finders(), "pandas" in sys.modules, pa.lib._pandas_api.have_pandas)
        import pandas  # noqa: F401
        print(finders(), pa.lib._pandas_api.have_pandas)
    """)
    assert out == ["1 False False", "0 True"]


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
        print(sys.meta_path == finders)
    """)
    assert out == ["1 True", "True"]


def test_workers_forked_inside_never_import_pandas():
    """As `build mmir` runs its shards: the workers convert values without importing pandas."""
    out = _run("""
        import sys
        import pyarrow as pa
        from wit_retrieval.engine import EngineConfig, run_shards
        from wit_retrieval.io.pandas_probe import pandas_kept_out

        def task(x):
            pa.array([x, None]); pa.table({"x": [x]})
            return "pandas" in sys.modules

        with pandas_kept_out():
            print(list(run_shards(task, [1, 2, 3], EngineConfig(workers=2), preload=lambda: None)))
    """)
    assert out == ["[False, False, False]"]


def test_a_local_build_imports_no_pandas(tmp_path):
    """build_mmir with local workers, in a fresh process: no pandas there, and pandas works after."""
    from tests.test_build_mmir import make_world

    root, files = make_world(tmp_path)
    out = _run(f"""
        import sys
        import pyarrow as pa
        from wit_retrieval.build import MmirConfig, build_mmir
        from wit_retrieval.engine import EngineConfig

        stats = build_mmir(MmirConfig(out={str(root)!r}, wit={files!r}, engine=EngineConfig(workers=2), export=False))
        print(sum(s["queries"] for s in stats["splits"].values()) > 0, "pandas" in sys.modules)
        import pandas as pd
        print(pa.table(pd.DataFrame({{"a": [1]}})).num_rows)
    """)
    assert out == ["True False", "1"]
