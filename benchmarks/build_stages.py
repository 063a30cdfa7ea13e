"""Where one shard's CPU goes in `build mmir` (used by bench_build.py).

Each stage runs on its own over a whole WIT file in this process (one-time loads and a first
run of the shard function outside the clock), then the real shard function runs once; the rest is that total minus the named
stages. The Python reference path (`shard._queries_python`) is timed on the same rows, so the
table shows what the C part replaced.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path


def stage_breakdown(path: Path, root: Path) -> dict:
    """CPU seconds per stage of the shard function on one WIT file."""
    import pyarrow.compute as pc

    from wit_retrieval.build import MmirConfig
    from wit_retrieval.build import shard as shard_module
    from wit_retrieval.build.mmir import plan_tasks
    from wit_retrieval.build.stats import SplitStats
    from wit_retrieval.io.shards import UNIQUE_COLUMNS, write_parquet_atomic
    from wit_retrieval.io.tsv import read_wit_batches

    task = plan_tasks(MmirConfig(out=str(root), wit=(str(path),), export=False))[0]
    shard_module.preload(task)  # as a build worker starts: loads, imports
    Path(task.staging).mkdir(parents=True, exist_ok=True)
    for part in shard_module.build_shard(task).parts:  # first use (memory, kernels) outside the clock
        for staged in (part.path, part.qrels_path, part.images_path):
            Path(staged).unlink()
    linker = shard_module.load_linker(task.linker)
    images = shard_module.entity_images(task.entities_path)
    fast = shard_module._fast_shard(linker, images)  # the one the shard function uses
    times: dict[str, float] = {}
    gc.disable()  # the stages allocate much; collections would land in whichever stage runs then
    clock = time.process_time()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.process_time()
        times[name] = times.get(name, 0.0) + now - clock
        clock = now

    batches = list(shard_module._rebatched(read_wit_batches(path, columns=shard_module.WIT_QUERY_COLUMNS), 65536))
    tick("read + parse (5 columns, gzip)")
    masks = [pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(
        batch.column("caption_reference_description"))), 0), False) for batch in batches]
    tick("rows with a description (a mask; the C path skips the others in place)")
    for batch in batches:  # automata are built here, outside the clock
        for language in set(batch.column("language").to_pylist()):
            fast.automaton(language or "")
    clock = time.process_time()
    tables = [fast.queries(batch, task.split, task.filters, SplitStats(), mask) for batch, mask in zip(batches, masks)]
    tick("link, mask, filter, ids in C (`_fastbuild.process`) + Arrow columns")
    with tempfile.TemporaryDirectory() as folder:
        for number, table in enumerate(tables):
            write_parquet_atomic(table.drop_columns(["split"]), Path(folder) / f"{number}.parquet",
                                 **shard_module.QUERY_FILE_OPTIONS)
        tick("write the query files (parquet, lz4)")
        for number, table in enumerate(tables):
            SplitStats().count_queries(table)
            pc.value_counts(pc.list_flatten(table["entity_ids"]))
            keys = shard_module.keys_of(table)
            write_parquet_atomic(shard_module.qrels_of(keys), Path(folder) / f"{number}.qrels.parquet",
                                 **UNIQUE_COLUMNS)
            shard_module.staged_part(str(Path(folder) / f"{number}.parquet"), keys, "", None)
        tick("qrels files; counts, sorted id tails and images for the main process")
        gc.enable()
        result = shard_module.build_shard(task)
        for part in result.parts:
            for staged in (part.path, part.qrels_path, part.images_path):
                Path(staged).unlink()
        named = sum(times.values())
        times["the rest of the shard function"] = max(result.cpu_seconds - named, 0.0)
        gc.disable()
        selected = [batch.filter(mask) for batch, mask in zip(batches, masks)]
        for batch in selected:  # pyahocorasick's automata, built outside the clock
            for language in set(batch.column("language").to_pylist()):
                linker.link("", language or "")
        clock = time.process_time()
        for batch in selected:
            shard_module._queries_python(batch, task, linker, images, SplitStats())
        reference = time.process_time() - clock
        gc.enable()
    return {"file": path.name, "rows": result.stats.rows_read, "shard_cpu_seconds": result.cpu_seconds,
            "stages": times, "python_reference_seconds": reference,
            "c_seconds": times["link, mask, filter, ids in C (`_fastbuild.process`) + Arrow columns"]}


def stage_lines(stages: dict, floor_cpu_per_row: float) -> list[str]:
    """The per-stage table: where a build's CPU time goes, per row, against the floor's."""
    rows = stages["rows"]
    lines = [f"Where the shard function's CPU goes ({stages['file']}, {rows:,} rows, 1 process; each stage "
             f"run on its own, so the parts add up only roughly to the {stages['shard_cpu_seconds']:.2f} s of the "
             f"real shard function; the rest is that total minus the named stages):", "",
             "| stage | CPU s | µs/row | x floor's per-row CPU |", "|---|---:|---:|---:|"]
    for name, seconds in stages["stages"].items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / rows * 1e6:.1f} | "
                     f"{seconds / rows / floor_cpu_per_row:.1f} |")
    lines += [f"| floor (pyarrow.csv, all columns) | | {floor_cpu_per_row * 1e6:.1f} | 1.0 |", "",
              f"The same rows through the Python reference path (`shard._queries_python`, what the C part "
              f"replaced): {stages['python_reference_seconds']:.2f} s, "
              f"{stages['python_reference_seconds'] / max(stages['c_seconds'], 1e-9):.1f}x the C path's "
              f"{stages['c_seconds']:.2f} s; both give the same tables (tests/test_build_fastpath.py).", ""]
    return lines
