"""CLI: `wit-retrieval images fetch | retry-failed | status`: polite, resumable image fetching."""

from __future__ import annotations

import typer

from ..engine import RAY_ADDRESS_HELP

images_app = typer.Typer(
    help="Fetch the images of a build or a URL list politely into resumable webdataset shards.",
    no_args_is_help=True,
)

_RATE_HELP = (
    "Requests per second per host: a GLOBAL budget shared out over the workers (each of W workers "
    "gets RATE/W), so the host never sees more than RATE whatever --workers or --engine. 0: unlimited."
)


def _pairs(values: list[str], option: str) -> tuple[tuple[str, str], ...]:
    from ..errors import ConfigError

    pairs = []
    for value in values:
        host, sep, target = value.partition("=")
        if not sep or not host.strip() or not target.strip():
            raise ConfigError(f"{option} {value!r}: expected HOST=URL, e.g. upload.wikimedia.org=http://127.0.0.1:8123")
        pairs.append((host.strip().lower(), target.strip()))
    return tuple(pairs)


def _print_result(status: dict) -> None:
    from ..images.status import status_tables
    from ..progress import console

    totals, errors = status_tables(status)
    console.print(totals)
    if status["errors"]:
        console.print(errors)


@images_app.command("fetch")
def fetch(
    data: str | None = typer.Option(None, "--data", help="A build's data root (path or s3:// / gs:// URI): fetch "
                                    "every target and entity image."),
    urls: str | None = typer.Option(None, "--urls", help="A TSV, CSV (optionally .gz) or parquet file of URLs "
                                    "(path or URI)."),
    url_column: str = typer.Option("image_url", "--url-column", help="Column of --urls holding the URLs."),
    out: str | None = typer.Option(None, "--out", help="Store folder or s3:// / gs:// / file:// prefix "
                                   "(default with --data: ROOT/images)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images per shard (shards are cut from the sorted image_ids)."),
    user_agent: str = typer.Option("", "--user-agent", help="Your agent with a contact (email or URL); required for Wikimedia hosts."),
    rate: float = typer.Option(10.0, "--rate", help=_RATE_HELP),
    concurrency: int = typer.Option(16, "--concurrency", help="Requests in flight per host per worker (threads per worker)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds for a whole request, body included."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="Seconds to establish a connection."),
    max_retries: int = typer.Option(3, "--max-retries", help="Retries of a transient failure (backoff with jitter, Retry-After honoured)."),
    max_bytes: int = typer.Option(50_000_000, "--max-bytes", help="Largest body accepted; bigger is `too_large`."),
    thumb_width: int | None = typer.Option(None, "--thumb-width", help="Fetch Wikimedia thumbnails this wide instead of originals (SVG as PNG)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Also allow this host (repeatable); loopback/private addresses only this way."),
    host_alias: list[str] = typer.Option([], "--host-alias", help="HOST=URL: send requests for HOST to URL (repeatable); allow URL's host too."),
    mirror: list[str] = typer.Option([], "--mirror", help="[folder|parquet|shards:]PATH tried before HTTP, in order (repeatable)."),
    resize: str = typer.Option("none", "--resize", help="none | keep-ratio (longest side <= --image-size) | center-crop."),
    image_size: int = typer.Option(512, "--image-size", help="Target side for --resize."),
    encode: str = typer.Option("jpeg", "--encode", help="jpeg | webp | png | original (keep the fetched bytes)."),
    quality: int = typer.Option(90, "--quality", help="JPEG/WebP quality."),
    max_pixels: int = typer.Option(89_478_485, "--max-pixels", help="Refuse images with more pixels (decompression bombs)."),
    engine: str = typer.Option("local", "--engine", help="local (processes) | ray."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (or Ray tasks); 0: one per CPU "
                                "(of the cluster with --engine ray)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Fetch images into tar shards with a manifest row per URL; run again to resume.

    Example: wit-retrieval images fetch --data build/ --user-agent 'lab-bot/1.0 (me@lab.org)' --rate 10 --thumb-width 512
    """
    from ..engine import EngineConfig
    from ..errors import ConfigError
    from ..images.decode import DecodeConfig
    from ..images.fetch import FetchConfig
    from ..images.http import HttpConfig
    from ..images.mirrors import parse_mirror
    from ..images.run import fetch_images
    from ..images.sources import build_urls, file_urls
    from ..layout import DataRoot

    if (data is None) == (urls is None):
        raise ConfigError("give exactly one of --data ROOT or --urls FILE")
    if out is None:
        if data is None:
            raise ConfigError("--urls needs --out DIR")
        out = DataRoot(data).images
    http = HttpConfig(user_agent=user_agent, rate=rate or None, concurrency=concurrency, timeout=timeout,
                      connect_timeout=connect_timeout, max_retries=max_retries, max_bytes=max_bytes,
                      thumb_width=thumb_width, allow_hosts=tuple(allow_host),
                      host_aliases=_pairs(host_alias, "--host-alias"))
    decode = DecodeConfig(resize=resize, size=image_size, encode=encode, quality=quality, max_pixels=max_pixels)
    config = FetchConfig(str(out), http, decode, tuple(parse_mirror(m) for m in mirror), shard_size,
                         EngineConfig(engine, workers, ray_address))
    source = build_urls(data) if data is not None else file_urls(urls, url_column)
    _print_result(fetch_images(config, source, show_progress=progress))


@images_app.command("retry-failed")
def retry_failed(
    out: str = typer.Argument(..., help="Store folder or URI of an earlier `images fetch`."),
    user_agent: str | None = typer.Option(None, "--user-agent", help="Override the stored User-Agent."),
    rate: float | None = typer.Option(None, "--rate", help=_RATE_HELP + " Default: as fetched."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Requests in flight per host per worker."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds for a whole request."),
    max_retries: int | None = typer.Option(None, "--max-retries", help="Retries of a transient failure."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Also allow this host (repeatable)."),
    host_alias: list[str] = typer.Option([], "--host-alias", help="HOST=URL (repeatable), added to the stored aliases."),
    engine: str | None = typer.Option(None, "--engine", help="local | ray."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (or Ray tasks)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Fetch again only the retryable failures (timeouts, 429, 5xx, ...), rewriting those shards atomically.

    Example: wit-retrieval images retry-failed build/images --rate 5
    """
    from ..images.run import load_config
    from ..images.run import retry_failed as run_retry

    config = load_config(out, user_agent=user_agent, rate=rate, concurrency=concurrency, timeout=timeout,
                         max_retries=max_retries, allow_hosts=allow_host or None,
                         host_aliases=_pairs(host_alias, "--host-alias") or None, name=engine, workers=workers,
                         ray_address=ray_address)
    _print_result(run_retry(config, show_progress=progress))


@images_app.command("status")
def status(
    out: str = typer.Argument(..., help="Store folder or URI of an `images fetch`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts per status and error class, throughput and the estimated time left at the configured rate.

    Example: wit-retrieval images status build/images
    """
    import json

    from ..errors import InputError
    from ..images.status import store_status
    from ..io import fs

    if not fs.path(out).is_dir():
        raise InputError("no such store folder", path=fs.redact(out))
    result = store_status(out)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_result(result)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(images_app, name="images")
