"""A miniature Wikipedia world in the real formats (WIT shards, SQL dumps, released files, images).

`generate_world(WorldConfig(...), out)` writes a folder whose relative paths are the real
hosts' URL paths, so one loopback server (synth.server) can stand in for all of them.
"""

from __future__ import annotations

from .generate import WorldSummary, generate_world
from .world import WorldConfig

__all__ = ["WorldConfig", "WorldSummary", "generate_world"]
