"""CLI: `validate`, `score` and `compare` runs offline against a split's qrels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

DATA_HELP = "Data root of a build (qrels, queries and corpus of the split)."
SPLIT_HELP = "Split to score against: train | val | test."
QRELS_HELP = "Qrels file instead of --data: TREC `qid 0 docid rel` or a parquet qrels table."
MEASURES_HELP = "Comma-separated measures: R@k, Success@k, MRR@k, nDCG@k, AP@k."
FORMAT_HELP = "Run format: trec | json | parquet (default: from the extension and first bytes)."


def _config(strict: bool, max_k: int, max_bytes: int, fmt: str | None):
    from ..submission import ValidationConfig

    return ValidationConfig(strict=strict, max_k=max_k, max_bytes=max_bytes, fmt=fmt)


def _truth(data: Path | None, split: str | None, qrels: Path | None):
    """SplitTruth and, when scoring, the split's inputs; exactly one of --data/--qrels."""
    import pyarrow.compute as pc

    from ..errors import ConfigError
    from ..io.runs import read_qrels_file
    from ..ranking import flat
    from ..results import SplitInputs, load_split_inputs
    from ..submission import SplitTruth, load_truth

    if (data is None) == (qrels is None):
        raise ConfigError("give either --data ROOT --split S, or --qrels FILE")
    if data is not None:
        if not split:
            raise ConfigError("--data needs --split (train | val | test)")
        return load_truth(data, split), load_split_inputs(data, split)
    table = read_qrels_file(qrels)
    return SplitTruth(flat(pc.unique(table["query_id"]))), SplitInputs(table, None, None, None)


def _print_report(report, console) -> None:
    """Each kind of problem once: its count, its first lines and its first message."""
    from rich.table import Table

    kinds = report.by_kind()
    if kinds:
        table = Table("severity", "kind", "count", "first lines", "first problem", title=f"Problems in {report.path}")
        for k in kinds:
            table.add_row(k["severity"], k["kind"], f"{k['count']:,}", ", ".join(map(str, k["first_lines"])) or "-",
                          k["example"])
        console.print(table)
    console.print(report.summary())


def _validated_run(run: Path, truth, config, console):
    from ..errors import InputError
    from ..submission import validate_run

    report, parsed = validate_run(run, truth, config)
    if report.counts:
        _print_report(report, console)
    if not report.ok:
        raise InputError(f"{report.num_errors} error(s) in the run; see above or run `wit-retrieval validate`",
                         path=str(run))
    return parsed


def register(app: typer.Typer) -> None:
    """Add `validate`, `score` and `compare`."""
    _register_validate(app)
    _register_score(app)
    _register_compare(app)


def _register_validate(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        run: Path = typer.Argument(..., help="Run file: TREC, JSON or parquet."),
        data: Path = typer.Option(None, "--data", help=DATA_HELP),
        split: str = typer.Option(None, "--split", help=SPLIT_HELP),
        qrels: Path = typer.Option(None, "--qrels", help=QRELS_HELP + " (no corpus check)"),
        strict: bool = typer.Option(False, "--strict", help="Missing queries are errors, not warnings."),
        max_k: int = typer.Option(1000, "--max-k", help="Most results allowed per query."),
        max_bytes: int = typer.Option(8 << 30, "--max-bytes", help="Refuse files larger than this many bytes."),
        fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
        json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON here."),
        problems_out: Path = typer.Option(None, "--problems", help="Write every problem (kind, severity, line, "
                                          "message) here, one JSON object per line."),
    ):
        """Check a run file and list every problem with its line; exit 1 on errors.

        Without --data or --qrels only the file's own shape is checked.

        Example: wit-retrieval validate runs/clip.trec --data data --split test
        """
        from ..io.shards import write_json_atomic
        from ..progress import console
        from ..submission import validate_run

        truth = _truth(data, split, qrels)[0] if (data or qrels) else None
        report, _ = validate_run(run, truth, _config(strict, max_k, max_bytes, fmt))
        _print_report(report, console)
        if json_out:
            write_json_atomic(json_out, report.to_dict())
        if problems_out:
            console.print(f"{report.write_jsonl(problems_out):,} problems: {problems_out}")
        if not report.ok:
            raise typer.Exit(1)



def _register_score(app: typer.Typer) -> None:
    @app.command("score")
    def score(
        run: str = typer.Argument(..., help="Run file: TREC, JSON or parquet (sidecar RUN.meta.json is read); "
                                  "a path or an s3://, gs://, file:// URI, as --data, --qrels and --json may be."),
        data: str = typer.Option(None, "--data", help=DATA_HELP),
        split: str = typer.Option(None, "--split", help=SPLIT_HELP),
        qrels: str = typer.Option(None, "--qrels", help=QRELS_HELP),
        measures: str = typer.Option(None, "--measures", help=MEASURES_HELP + " [default: R@1,5,10, Success@1,5,10, MRR@10, nDCG@10, AP@10]"),
        json_out: str = typer.Option(None, "--json", help="Write the results JSON here (atomically)."),
        keep_per_query: bool = typer.Option(False, "--per-query", help="Include per-query values in the JSON."),
        plots_dir: Path = typer.Option(None, "--plots", help="Write recall@k and per-group PNG plots here."),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for 95% CIs (0: none)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
        corpus_size: int = typer.Option(None, "--corpus-size", help="Corpus size for chance levels with --qrels."),
        strict: bool = typer.Option(False, "--strict", help="Refuse runs that miss queries."),
        max_k: int = typer.Option(1000, "--max-k", help="Most results allowed per query."),
        fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
    ):
        """Score a run: a table of measures with 95% CIs and chance level, breakdowns, a results JSON.

        Example: wit-retrieval score runs/clip.trec --data data --split test --json results/clip.json
        """
        from contextlib import ExitStack

        from ..io import fs
        from ..metrics import DEFAULT_MEASURES
        from ..progress import console
        from ..results import read_run_metadata, score_run

        with ExitStack() as stack:  # inputs on an object store are read from local copies
            local_run = stack.enter_context(_staged_run(run))
            staged_qrels = stack.enter_context(_staged(qrels)) if qrels else None
            truth, inputs = _truth(data, split, staged_qrels)
            parsed = _validated_run(local_run, truth, _config(strict, max_k, 8 << 40, fmt), console)
            metadata = {**parsed.meta, **read_run_metadata(local_run), "run_file": fs.redact(run)}
        results = score_run(parsed.table, inputs.qrels, measures or DEFAULT_MEASURES, queries_table=inputs.queries,
                            bootstrap=bootstrap, seed=seed, corpus_size=corpus_size or inputs.corpus_size,
                            metadata=metadata, dataset_revision=inputs.revision, split=split,
                            keep_per_query=keep_per_query)
        run = fs.path(run)
        _print_results(results, _data_console())
        if json_out:
            results.save(json_out)
            console.print(f"results: {fs.redact(json_out)}", markup=False, emoji=False)
        if plots_dir:
            for path in _write_plots(results, run.name, plots_dir):
                console.print(f"plot: {path}", markup=False, emoji=False)



def _staged(target: str):
    """A local path for a qrels file or table folder given as a path or URI (io.fs)."""
    from ..io import fs

    return fs.local_tree(target) if fs.path(target).is_dir() else fs.local_copy(target)


@contextmanager
def _staged_run(run: str) -> Iterator[Path]:
    """A local path of a run file and, beside it, its sidecar RUN.meta.json when there is one."""
    import tempfile

    from ..io import fs

    target = fs.path(run)
    if isinstance(target, Path):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="wit-retrieval-") as folder:
        local = Path(folder) / target.name
        for source, copy in ((target, local), (fs.path(f"{run}.meta.json"), Path(f"{local}.meta.json"))):
            if source is target or source.exists():
                copy.write_bytes(source.read_bytes())
        yield local


def _register_compare(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        run_a: Path = typer.Argument(..., help="Baseline run A."),
        run_b: Path = typer.Argument(..., help="Run B, compared with A (differences are B - A)."),
        data: Path = typer.Option(None, "--data", help=DATA_HELP),
        split: str = typer.Option(None, "--split", help=SPLIT_HELP),
        qrels: Path = typer.Option(None, "--qrels", help=QRELS_HELP),
        measures: str = typer.Option("R@1,R@10,MRR@10,nDCG@10", "--measures", help=MEASURES_HELP),
        permutations: int = typer.Option(10000, "--permutations", help="Sign flips of the permutation test."),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the difference's CI."),
        seed: int = typer.Option(0, "--seed", help="Seed of the permutation test and bootstrap."),
        json_out: Path = typer.Option(None, "--json", help="Write the comparison JSON here (atomically)."),
        fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
    ):
        """Paired t-test and permutation test of two runs per measure and per breakdown group.

        Example: wit-retrieval compare runs/zero_shot.trec runs/trained.trec --data data --split test
        """
        from ..io.shards import write_json_atomic
        from ..progress import console
        from ..results import compare_runs

        truth, inputs = _truth(data, split, qrels)
        config = _config(False, 1 << 30, 8 << 40, fmt)
        a = _validated_run(run_a, truth, config, console)
        b = _validated_run(run_b, truth, config, console)
        result = compare_runs(a.table, b.table, inputs.qrels, measures, queries_table=inputs.queries,
                              permutations=permutations, bootstrap=bootstrap, seed=seed,
                              names=(_run_label(run_a), _run_label(run_b)))
        _print_comparison(result, _data_console())
        if json_out:
            write_json_atomic(json_out, result)
            console.print(f"comparison: {json_out}")


def _data_console():
    """A console for tables of results: ids, measure names and group values are data, printed as they
    are (no rich markup, no :emoji: codes; the emoji table is not even loaded)."""
    from rich.console import Console

    return Console(markup=False, emoji=False)


def _print_results(results, console) -> None:
    from rich.table import Table

    title = f"{results.num_queries} queries" + (f", corpus {results.corpus_size}" if results.corpus_size else "")
    table = Table("measure", "score", "95% CI", "chance", title=title)
    for name, value in results.scores.items():
        ci = results.ci.get(name)
        chance = results.chance.get(name)
        table.add_row(name, f"{value:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-",
                      f"{chance:.2g}" if chance is not None else "-")
    console.print(table)
    # Breakdown tables show a few headline measures so they fit a terminal; the JSON has them all.
    shown = [m for m in ("R@1", "R@10", "Success@10", "MRR@10", "nDCG@10") if m in results.scores]
    shown = shown or list(results.scores)[:4]
    for key, groups in results.breakdowns.items():
        table = Table(key, "n", *shown, title=f"by {key.replace('_', ' ')}")
        for value, group in groups.items():
            table.add_row(value, str(group["num_queries"]), *[f"{group['scores'][m]:.4f}" for m in shown])
        console.print(table)


def _write_plots(results, name: str, out: Path) -> list[Path]:
    from ..plots import breakdown_bars_png, recall_curve_png

    paths = [recall_curve_png({name: results}, out / "recall_at_k.png")]
    for key in results.breakdowns:
        paths.append(breakdown_bars_png(results, key, out / f"by_{key}.png"))
    return paths


def _print_comparison(result: dict, console) -> None:
    from rich.table import Table

    table = Table("measure", "A", "B", "B - A [95% CI]", "p t-test", "p perm.", "d",
                  title=f"{result['run_b']} vs {result['run_a']} on {result['num_queries']} queries")
    for name, t in result["tests"].items():
        lo, hi = t["difference_ci"]
        table.add_row(name, f"{t['mean_a']:.4f}", f"{t['mean_b']:.4f}", f"{t['mean_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
                      f"{t['p_ttest']:.3g}", f"{t['p_permutation']:.3g}", f"{t['cohens_d']:.3f}")
    console.print(table)


def _run_label(path: Path) -> str:
    """A run's name in comparisons: its file name, or its folder's for a generic `run.*` (evaluate's output)."""
    return path.parent.name if path.stem == "run" and path.parent.name else path.name
