"""Polite, resumable image fetching into webdataset-compatible shards, and reading them back.

Stages, one module each: sources (what to fetch, shard plan), mirrors (offline sources first),
ratelimit and http (polite network access), decode (validate, resize, re-encode), store (tar
shards + parquet manifests, `open_store`), fetch (the shard function and its orchestration),
run (plan, engine, retry-failed), status (counts, throughput, time left).
"""

from __future__ import annotations

from .store import ImageStore, open_store

__all__ = ["FetchConfig", "ImageStore", "open_store", "fetch_images", "retry_failed", "store_status"]


def __getattr__(name: str):
    if name in ("fetch_images", "retry_failed"):
        from . import run

        return getattr(run, name)
    if name == "FetchConfig":
        from .fetch import FetchConfig

        return FetchConfig
    if name == "store_status":
        from .status import store_status

        return store_status
    raise AttributeError(name)
