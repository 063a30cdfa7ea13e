"""Building EI and MMIR from WIT and Wikipedia dumps: entities, linking, masking, filters, export.

Entry points: `build_entities(EntitiesConfig)` (tables `entities`, `entity_names`) and
`build_mmir(MmirConfig)` (tables `queries`, `corpus`, `qrels` per split, and `ei`).
"""

from __future__ import annotations

from .entities import EntitiesConfig, build_entities
from .linker import LINKERS, LinkerSpec, load_linker
from .mask import mask_text
from .mmir import MmirConfig, build_mmir, read_split_table
from .shard import FilterConfig

__all__ = [
    "LINKERS", "EntitiesConfig", "FilterConfig", "LinkerSpec", "MmirConfig", "build_entities", "build_mmir",
    "load_linker", "mask_text", "read_split_table",
]
