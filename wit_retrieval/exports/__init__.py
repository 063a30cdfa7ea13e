"""Exports of a data root into the formats researchers already use, side by side.

`released` (the released TSV.gz layout), `hf` (a Hugging Face dataset repository that MTEB's
stock loader reads), `mbeir` (UniIR's M-BEIR layout). Each reads a root made by `build` or by
`released import`; columns a root lacks are written as null.
"""

from __future__ import annotations

EXPORTS = ("released", "hf", "mbeir")
