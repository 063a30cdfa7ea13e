"""Object-store URIs: their scheme, their credentials kept out of logs, and their pyarrow filesystem.

Endpoints and credentials (nothing here is ever written to a config, log or result; `redact`
strips what a URI carries):
- S3: the AWS SDK's standard credential chain (env, profile, instance role);
  `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` for S3-compatible stores (pyarrow does not read
  them itself, so they are passed as endpoint_override); `AWS_REGION` / `AWS_DEFAULT_REGION`.
- GCS: Google's default credentials; `WIT_RETRIEVAL_GCS_ENDPOINT` or `STORAGE_EMULATOR_HOST`
  (as Google's own clients read it) point at an emulator, which is then used without credentials.
One filesystem object is kept per set of credentials and endpoint (`lru_cache`), so its
connections are reused.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:  # imported where used: local paths never need it
    import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs", "gcs")
GCS_ENDPOINT_ENV = "WIT_RETRIEVAL_GCS_ENDPOINT"


def scheme_of(target: Any) -> str:
    """'s3', 'gs', 'file' or '' (a plain local path)."""
    text = str(target)
    if "://" not in text:
        return ""
    return text.split("://", 1)[0].lower()


def redact(target: Any) -> str:
    """The URI without credentials (user:secret@ and secret query parameters): safe to log."""
    text = str(target)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query)
                     if not any(word in k.lower() for word in ("key", "secret", "token", "password")))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_all(obj: Any) -> Any:
    """A JSON-able config with every URI in it redacted (for resolved configs written beside outputs)."""
    if isinstance(obj, dict):
        return {k: redact_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_all(v) for v in obj]
    return redact(obj) if isinstance(obj, str) and "://" in obj else obj


def _env_endpoint(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    """('host:port', scheme) from 'http://host:port' or 'host:port' (https by default)."""
    if "://" in endpoint:
        scheme, rest = endpoint.split("://", 1)
        return rest.rstrip("/"), scheme
    return endpoint.rstrip("/"), "https"


@lru_cache(maxsize=16)
def _s3(access_key: str | None, secret_key: str | None, endpoint: str | None, region: str | None,
        options: tuple) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = dict(options)
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key)
    if endpoint:
        host, scheme = _split_endpoint(endpoint)
        kwargs.update(endpoint_override=host, scheme=scheme)
        # an S3-compatible store rarely has regions; without one the SDK would ask AWS for it
        region = region or "us-east-1"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


@lru_cache(maxsize=16)
def _gcs(endpoint: str | None, project: str | None) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {}
    if project:
        kwargs["project_id"] = project
    if endpoint:
        host, scheme = _split_endpoint(endpoint)
        # emulators take no credentials; the client would otherwise look for Google's
        kwargs.update(endpoint_override=host, scheme=scheme, anonymous=True)
    return pafs.GcsFileSystem(**kwargs)


def _s3_for(parts) -> pafs.FileSystem:
    query = dict(parse_qsl(parts.query))
    access = unquote(parts.username) if parts.username else None
    secret = unquote(parts.password) if parts.password else None
    endpoint = query.pop("endpoint_override", None) or _env_endpoint("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = query.pop("region", None) or _env_endpoint("AWS_REGION", "AWS_DEFAULT_REGION")
    return _s3(access, secret, endpoint, region, tuple(sorted(query.items())))


def remote_filesystem(text: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and key of an s3:// or gs:// URI; ConfigError for any other scheme."""
    scheme = scheme_of(text)
    parts = urlsplit(text)
    key = f"{parts.hostname or ''}{parts.path}".rstrip("/")
    if scheme == "s3":
        return _s3_for(parts), key
    if scheme in ("gs", "gcs"):
        endpoint = _env_endpoint(GCS_ENDPOINT_ENV, "STORAGE_EMULATOR_HOST")
        return _gcs(endpoint, _env_endpoint("GOOGLE_CLOUD_PROJECT")), key
    from ..errors import ConfigError

    raise ConfigError(f"unsupported URI scheme {scheme!r} in {redact(text)}; use a local path, file://, s3:// or gs://")
