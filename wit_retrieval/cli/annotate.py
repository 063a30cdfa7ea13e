"""CLI: `wit-retrieval annotate ...`: human quality audits (export, rater app, import, report, simulate)."""

from __future__ import annotations

from pathlib import Path

import typer

annotate = typer.Typer(help="Human quality audits of EI and MMIR: export, rate, import, report.",
                       no_args_is_help=True)


@annotate.callback()
def _group():
    """Human quality audits of EI and MMIR: export, rate, import, report."""


@annotate.command("export")
def export(
    root: Path = typer.Argument(..., help="Data root of a build (tables entities, queries, corpus)."),
    out: Path = typer.Option(..., "--out", help="Folder for items.jsonl, crowd.csv, label_studio/ and manifest.json."),
    task: list[str] = typer.Option(["ei-correct"], "--task", help="Task kind (repeatable): ei-correct, "
                                   "mask-correct, mmir-answerable, relevance."),
    n: int = typer.Option(200, "--n", help="Items per task kind, before gold items."),
    split: str = typer.Option("test", "--split", help="Split of the queries to sample (query task kinds)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    overlap: int = typer.Option(3, "--overlap", help="Raters per item."),
    gold_fraction: float = typer.Option(0.1, "--gold-fraction", help="Gold control items, as a share of --n."),
    allocation: str = typer.Option("equal", "--allocation", help="Across strata: equal or proportional."),
    run: Path | None = typer.Option(None, "--run", help="A run (TREC, JSON or parquet) for the relevance task."),
    depth: int = typer.Option(3, "--depth", help="relevance: top non-target images per query to consider."),
    image_base_url: str | None = typer.Option(None, "--image-base-url", help="Where raters' browsers fetch images: "
                                              "this prefix + image_id, e.g. http://127.0.0.1:8765/image/ "
                                              "(`annotate serve --cors-origin` for Label Studio); default: "
                                              "the images' own URLs."),
) -> None:
    """Sample items stratified by language and query type and write them for raters and platforms.

    Example: wit-retrieval annotate export data/ --out audit/ --task ei-correct --task mmir-answerable --n 300
    """
    from ..annotation.export import write_export
    from ..annotation.sampling import SampleConfig, sample_items

    config = SampleConfig(task_kinds=tuple(task), split=split, n=n, seed=seed, overlap=overlap,
                          gold_fraction=gold_fraction, allocation=allocation, depth=depth)
    loaded = None
    if run is not None:
        from ..io.runs import read_run

        loaded = read_run(run)
    items, manifest = sample_items(root, config, run=loaded)
    written = write_export(items, manifest, out, image_base_url=image_base_url)
    for kind, info in manifest["task_kinds"].items():
        typer.echo(f"{kind}: {info['items']} items + {info['gold_items']} gold over {len(info['strata'])} strata")
    typer.echo(f"wrote {len(written)} files to {out}")


@annotate.command("serve")
def serve(
    items: Path | None = typer.Argument(None, help="items.jsonl or an export folder (optional once the db has them)."),
    db: Path = typer.Option(Path("ratings.sqlite"), "--db", help="SQLite file where ratings are kept."),
    images: Path | None = typer.Option(None, "--images", help="Image store folder (default: the build's images, "
                                       "found through the export's manifest); images missing there are "
                                       "redirected to their URLs."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; keep it on loopback unless you "
                             "trust the network."),
    port: int = typer.Option(8765, "--port", help="TCP port (0 picks a free one)."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="An origin allowed to fetch /image/... "
                                          "from another site (repeatable), e.g. Label Studio's "
                                          "http://127.0.0.1:8080; only image routes, never '*'."),
) -> None:
    """Run the rater web app: one item per page, keys 1..n to answer, resumes per rater name.

    Example: wit-retrieval annotate serve audit/ --db audit/ratings.sqlite --images data/images
    """
    from ..annotation.app import AppConfig, make_server

    server = make_server(AppConfig(db=db, items=items, images=images, host=host, port=port,
                                     cors_origins=tuple(cors_origin)))
    bound_host, bound_port = server.server_address[:2]
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"WARNING: listening on {host}: the app has no passwords; anyone who can reach it can rate "
                   "under any name. Prefer 127.0.0.1 behind an authenticating proxy.", err=True)
    typer.echo(f"rater app at http://{bound_host}:{bound_port}/  (ratings in {db}); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@annotate.command("label-studio")
def label_studio(
    export: Path = typer.Argument(..., help="Folder written by `annotate export`."),
    url: str = typer.Option(..., "--url", help="Label Studio's address, e.g. http://127.0.0.1:8080."),
    task: str = typer.Option(..., "--task", help="Task kind whose config and tasks to use, e.g. ei-correct."),
    project: int | None = typer.Option(None, "--project", help="An existing project: only set its overlap "
                                       "(default: create a project with our config and import the tasks)."),
    overlap: int | None = typer.Option(None, "--overlap", help="Annotations per task (default: the export's "
                                       "overlap); the number of raters shows gold items to every rater."),
    token_env: str = typer.Option("LABEL_STUDIO_API_KEY", "--token-env", help="Environment variable holding "
                                  "your Label Studio API token (Account & Settings; legacy token)."),
) -> None:
    """Create a Label Studio project from an export (config, tasks) and set its annotations per task.

    Label Studio asks one annotation per task unless told otherwise; this sets maximum_annotations to the
    overlap for every task; the token is read from $LABEL_STUDIO_API_KEY.

    Example: wit-retrieval annotate label-studio audit/ --url http://127.0.0.1:8080 --task ei-correct
    """
    import os

    from ..annotation.label_studio import LabelStudio, check_url, export_files
    from ..errors import ConfigError

    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"set {token_env} to your Label Studio API token (Account & Settings)")
    config, tasks, wanted = export_files(export, task)
    client = LabelStudio(check_url(url), token)
    if project is None:
        project = client.create_project(f"wit-retrieval {task} ({export.name})", config)
        typer.echo(f"created project {project}: {client.import_tasks(project, tasks)} tasks imported")
    settings = client.set_overlap(project, overlap or wanted)
    typer.echo(f"project {project}: {settings['maximum_annotations']} annotations per task "
               f"({url.rstrip('/')}/projects/{project}/)")


@annotate.command("import")
def import_(
    files: list[Path] = typer.Argument(..., help="Ratings files: the app's .sqlite, Label Studio .json exports, "
                                       "crowd .csv (item_id, rater, label), ratings .parquet."),
    out: Path = typer.Option(..., "--out", help="Ratings table to write (parquet)."),
    items: Path | None = typer.Option(None, "--items", help="The export's items.jsonl (needed for Label Studio "
                                      "and crowd CSV: it says which items are gold)."),
    append: bool = typer.Option(False, "--append", help="Keep the ratings already in --out."),
) -> None:
    """Read ratings from every format into one ratings table; nothing is written if any file is bad.

    Example: wit-retrieval annotate import audit/ratings.sqlite mturk.csv --items audit/ --out audit/ratings.parquet
    """
    from ..annotation.importers import import_ratings
    from ..annotation.ratings import write_ratings

    paths = ([out] if append and out.exists() else []) + list(files)
    table = import_ratings(paths, items)
    write_ratings(table, out)
    typer.echo(f"wrote {table.num_rows} ratings to {out}")


@annotate.command("report")
def report(
    ratings: Path = typer.Option(..., "--ratings", help="The ratings table, or any importable ratings file."),
    items: Path | None = typer.Option(None, "--items", help="The export's items.jsonl: needed for crowd CSV input; "
                                      "adds population-weighted estimates."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report JSON here."),
    out: Path | None = typer.Option(None, "--out", help="Folder for report.md, report.json and PNG plots."),
    root: Path | None = typer.Option(None, "--root", help="Write the estimates to ROOT/annotation/annotation.json "
                                     "for the data cards."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the Wilson intervals."),
    min_gold_accuracy: float | None = typer.Option(None, "--min-gold-accuracy",
                                                   help="Leave out raters below this accuracy on gold items."),
) -> None:
    """Agreement (Fleiss, Krippendorff), majority labels, rater accuracy and quality estimates with intervals.

    Example: wit-retrieval annotate report --ratings audit/ratings.parquet --out audit/report --json audit/report.json
    """
    from ..annotation.audit_outputs import clean_json, write_card_estimates, write_report
    from ..annotation.audit_report import analyze
    from ..annotation.importers import load_ratings
    from ..io.shards import write_json_atomic

    populations = None
    if items is not None:
        from ..annotation.audit_report import populations_from_items
        from ..annotation.tasks import read_items

        populations = populations_from_items(read_items(items))
    result = analyze(load_ratings(ratings, items), confidence=confidence, min_gold_accuracy=min_gold_accuracy,
                     populations=populations)
    if result["simulated"]:
        typer.echo("NOTE: these ratings are SIMULATED (source=simulated), not human judgements.")
    for kind, s in result["task_kinds"].items():
        est = s["estimate"]
        typer.echo(f"{kind}: {s['items']} items, {s['ratings']} ratings, kappa={s['fleiss_kappa']:.3f}, "
                   f"alpha={s['krippendorff_alpha']:.3f}, {est['name']}={est['value']:.3f} "
                   f"[{est['low']:.3f}, {est['high']:.3f}]")
    if json_out is not None:
        write_json_atomic(json_out, clean_json(result))
    if out is not None:
        write_report(result, out)
        typer.echo(f"wrote {out}/report.md")
    if root is not None:
        typer.echo(f"wrote {write_card_estimates(result, root)}")


@annotate.command("simulate")
def simulate(
    items: Path = typer.Argument(..., help="items.jsonl or an export folder."),
    out: Path = typer.Option(..., "--out", help="Ratings table to write (parquet, source=simulated)."),
    raters: int = typer.Option(5, "--raters", help="Number of simulated raters."),
    accuracy: str = typer.Option("0.7:0.95", "--accuracy", help="Rater accuracy range LOW:HIGH (uniform)."),
    positive_rate: float = typer.Option(0.85, "--positive-rate", help="Share of items whose simulated truth is yes."),
    seed: int = typer.Option(0, "--seed", help="Simulation seed."),
) -> None:
    """Write SIMULATED ratings for a demo of the report (every row has source=simulated).

    Example: wit-retrieval annotate simulate audit/ --out audit/simulated.parquet --raters 5
    """
    from ..annotation.ratings import write_ratings
    from ..annotation.simulate import SimulationConfig, simulate_ratings
    from ..annotation.tasks import read_items
    from ..errors import ConfigError

    try:
        low, high = (float(x) for x in accuracy.split(":"))
    except ValueError:
        raise ConfigError(f"--accuracy must be LOW:HIGH, e.g. 0.7:0.95, not {accuracy!r}") from None
    config = SimulationConfig(raters=raters, accuracy=(low, high), positive_rate=positive_rate, seed=seed)
    table = simulate_ratings(read_items(items), config)
    write_ratings(table, out)
    typer.echo(f"wrote {table.num_rows} SIMULATED ratings to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(annotate, name="annotate")
