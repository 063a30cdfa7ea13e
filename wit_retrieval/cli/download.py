"""CLI: `download {ei,mmir,wit,dumps}`: resumable, verified downloads of the released files."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""

    @app.command("download")
    def download(
        dataset: str = typer.Argument(..., help="What to download: ei, mmir, wit or dumps."),
        out: str = typer.Option(..., "--out", help="Folder to download into (files keep their URL paths): a path "
                                "or an s3://, gs://, file:// URI."),
        split: list[str] = typer.Option(None, "--split", help="mmir/wit split: train, val, test (wit: sample). "
                                        "Repeatable; default train, val and test."),
        lang: list[str] = typer.Option(None, "--lang", help="Wikipedia language of the dumps, e.g. en. Repeatable."),
        base_url: str = typer.Option(None, "--base-url", help="Mirror to use instead of the official hosts "
                                     "(replaces scheme and host, keeps the path)."),
        host_alias: list[str] = typer.Option(None, "--host-alias", help="HOST=URL: send requests for HOST to URL, "
                                             "keeping the path (repeatable), e.g. dumps.wikimedia.org=http://127.0.0.1:8123."),
        user_agent: str = typer.Option(None, "--user-agent", help="User-Agent to send; please include your "
                                       "contact (Wikimedia policy), e.g. 'my-lab-bot/1.0 (me@example.org)'."),
        retries: int = typer.Option(5, "--retries", help="Retries on 5xx, 429 and connection errors."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ):
        """Download the released EI/MMIR files, WIT shards or Wikipedia dumps (resumable, verified).

        Example: wit-retrieval download mmir --split test --out downloads
        """
        from ..errors import ConfigError
        from ..io import fs
        from ..sources import DEFAULT_USER_AGENT, DownloadConfig, download_release

        aliases = {}
        for value in host_alias or []:
            host, sep, url = value.partition("=")
            if not sep or not host or not url.startswith(("http://", "https://")):
                raise ConfigError(f"--host-alias {value!r}: expected HOST=URL, e.g. dumps.wikimedia.org=http://127.0.0.1:8123")
            aliases[host.strip()] = url
        config = DownloadConfig(out=fs.path(out), base_url=base_url, host_aliases=aliases,
                                user_agent=user_agent or DEFAULT_USER_AGENT, retries=retries)
        results = download_release(dataset, config, splits=split, languages=lang, progress=not quiet)
        for r in results:
            typer.echo(f"{r.status:<10} {fs.redact(r.path)}  ({r.size:,} bytes; {r.verification})")
        if any("no checksum" in r.verification for r in results):
            typer.echo("note: no checksum is published for some files; they were verified by size only", err=True)
