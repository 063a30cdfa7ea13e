"""Wikipedia language codes -> ISO 639-3 + ISO 15924 script (MTEB's `eng-Latn`), from data/languages.tsv.

The table is committed (and checked against mteb's own language tables by a test); a code it
does not list has no MTEB language: such languages are left out of per-language tasks and named
in the export's card.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).parent / "data" / "languages.tsv"


@dataclass(frozen=True)
class Language:
    wiki: str
    iso639_3: str
    script: str
    name: str

    @property
    def mteb(self) -> str:
        """MTEB's code: ISO 639-3, a dash, the script (e.g. 'deu-Latn')."""
        return f"{self.iso639_3}-{self.script}"


@functools.cache
def languages() -> dict[str, Language]:
    """Every mapped Wikipedia code."""
    rows = [line.split("\t") for line in TABLE.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    return {r[0]: Language(*r) for r in rows[1:]}


def mteb_code(wiki: str | None) -> str | None:
    """'de' -> 'deu-Latn'; None when the code is not in the table."""
    found = languages().get(wiki or "")
    return found.mteb if found else None
