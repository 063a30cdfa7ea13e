"""Names of entities: titles, qualifier stripping, Commons URLs, and text folding with offsets.

Folding (NFKC, then casefold) is what the linker matches on. It can change a text's length
("ß" -> "ss", "ﬁ" -> "fi", "e" + combining acute -> "é"), so `fold_with_offsets` keeps a map
from folded positions back to the original characters.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from urllib.parse import quote

COMMONS_BASE = "https://upload.wikimedia.org/wikipedia/commons"

# "X (band)" -> "X"; only a trailing parenthetical, as Wikipedia disambiguates titles.
_QUALIFIER = re.compile(r"^(?P<base>.*\S)\s+\([^()]+\)$")


def title_text(title: str) -> str:
    """A dump title (underscores) as text (spaces), as WIT writes page titles."""
    return title.replace("_", " ").strip()


def title_key(title: str) -> str:
    """A title in the dumps' underscore form (used in entity ids and page URLs)."""
    return title.strip().replace(" ", "_")


def strip_qualifier(title: str) -> str | None:
    """The title without a trailing parenthetical qualifier, or None when it has none."""
    match = _QUALIFIER.match(title)
    return match.group("base") if match else None


def commons_url(file_name: str) -> str:
    """The Commons URL of a file name (md5 of the underscored name, domain.md section 3)."""
    name = file_name.strip().replace(" ", "_")
    if name[:5].lower() == "file:":
        name = name[5:]
    digest = hashlib.md5(name.encode("utf-8")).hexdigest()
    return f"{COMMONS_BASE}/{digest[0]}/{digest[:2]}/{quote(name, safe=_URL_SAFE)}"


_URL_SAFE = "/:@!$&'()*+,;=-._~"


def page_url(language: str, title: str) -> str:
    """The article URL of a title, percent-encoded like WIT's page URLs."""
    return f"https://{language}.wikipedia.org/wiki/{quote(title_key(title), safe=_URL_SAFE)}"


def fold(text: str) -> str:
    """The matching form of a name: NFKC then casefold, segment by segment as for texts."""
    return fold_with_offsets(text)[0]


class _Folds(dict):
    """str.translate table: each character's NFKC + casefold (cached; never empty)."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        self[code] = unicodedata.normalize("NFKC", char).casefold() or char
        return self[code]


_FOLDS = _Folds()


def fold_with_offsets(text: str) -> tuple[str, list[int] | None]:
    """(folded text, map) where map[i] is the original index of folded index i, or -1.

    The map has len(folded) + 1 entries; -1 marks a folded position inside the expansion
    of one original character (a match may not start or end there). None means identity
    (no character changed length), which keeps the hot path cheap. Wikipedia stores NFC
    text, where folding is per character (C-level casefold or translate); other text is
    folded per base character plus its marks, so decomposed accents compose as in NFKC.
    """
    if text.isascii():
        return text.lower(), None
    if not unicodedata.is_normalized("NFC", text):
        return _fold_segments(text)
    folded, expanding = _fold_nfc(text)
    if expanding is None:
        return folded, None
    offsets: list[int] = []
    cursor = 0
    for match in re.finditer(f"[{expanding}]", text):
        i = match.start()
        offsets.extend(range(cursor, i + 1))
        offsets.extend([-1] * (len(_FOLDS[ord(text[i])]) - 1))
        cursor = i + 1
    offsets.extend(range(cursor, len(text) + 1))
    return folded, offsets


class FoldMap:
    """fold_with_offsets' map, kept as its expansions only: `map[i]` equals the list's `[i]`.

    A long text with a few expanding characters ("ß") would otherwise need a list of one int
    per character; the linker only looks up the ends of its matches.
    """

    __slots__ = ("_starts", "_ends", "_shifts")

    def __init__(self, starts: list[int], ends: list[int], shifts: list[int]):
        self._starts = starts  # folded index of each expansion's first character
        self._ends = ends  # folded index just after each expansion
        self._shifts = shifts  # folded minus original index after each expansion

    def __getitem__(self, index: int) -> int:
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0:
            return index
        if index < self._ends[k]:  # inside expansion k: its first character maps back, the rest -1
            return -1 if index > self._starts[k] else index - (self._shifts[k - 1] if k else 0)
        return index - self._shifts[k]


def fold_with_offset_map(text: str) -> tuple[str, FoldMap | list[int] | None]:
    """fold_with_offsets(text) with the map as a FoldMap (NFC text: the linker's batch path)."""
    if text.isascii() or not unicodedata.is_normalized("NFC", text):  # decomposed text keeps the list
        return fold_with_offsets(text)
    folded, expanding = _fold_nfc(text)
    if expanding is None:
        return folded, None
    starts, ends, shifts = [], [], []
    shift = 0
    for match in re.finditer(f"[{expanding}]", text):
        extra = len(_FOLDS[ord(match.group())]) - 1
        starts.append(match.start() + shift)
        shift += extra
        ends.append(match.start() + 1 + shift)
        shifts.append(shift)
    return folded, FoldMap(starts, ends, shifts)


def _fold_nfc(text: str) -> tuple[str, str | None]:
    """Fold NFC text; also a regex class of its expanding characters ("ß" -> "ss"), or None when none expand."""
    folded = text.casefold()  # equal to the per-character fold on NFKC-stable text
    if len(folded) == len(text) and unicodedata.is_normalized("NFKC", folded):
        return folded, None
    folded = text.translate(_FOLDS)
    if len(folded) == len(text):
        return folded, None
    # only the few characters that expand are then visited in Python
    return folded, "".join(re.escape(c) for c in set(text) if len(_FOLDS[ord(c)]) != 1)


def _fold_segments(text: str) -> tuple[str, list[int]]:
    pieces: list[str] = []
    offsets: list[int] = []
    for start, end in _segments(text):
        piece = unicodedata.normalize("NFKC", text[start:end]).casefold() or text[start:end]
        pieces.append(piece)
        offsets.append(start)
        offsets.extend([-1] * (len(piece) - 1))
    offsets.append(len(text))
    return "".join(pieces), offsets


def _segments(text: str):
    """Spans of a starter character plus the marks after it (NFKC composes within these)."""
    start = 0
    for i in range(1, len(text)):
        if unicodedata.category(text[i])[0] != "M":
            yield start, i
            start = i
    if text:
        yield start, len(text)


def is_word_char(char: str) -> bool:
    """Letters, digits and marks join words in scripts that use spaces."""
    return char.isalnum() or unicodedata.category(char)[0] == "M" or char == "_"


def uses_spaces(char: str) -> bool:
    """False for scripts written without spaces between words (CJK, Thai, Lao, Khmer, ...)."""
    cp = ord(char)
    return not (
        0x0E00 <= cp <= 0x0EFF  # Thai, Lao
        or 0x1000 <= cp <= 0x109F  # Myanmar
        or 0x1780 <= cp <= 0x17FF  # Khmer
        or 0x0F00 <= cp <= 0x0FFF  # Tibetan
        or 0x3040 <= cp <= 0x30FF  # Hiragana, Katakana
        or 0x3400 <= cp <= 0x9FFF  # CJK
        or 0xAC00 <= cp <= 0xD7AF  # Hangul syllables: particles attach to nouns
        or 0xF900 <= cp <= 0xFAFF
        or cp >= 0x20000
    )


class _Separators(dict):
    """str.translate table: characters that are not word characters become spaces (cached)."""

    def __missing__(self, code: int) -> int:
        char = chr(code)
        self[code] = code if code == 0 or is_word_char(char) else 32
        return self[code]


_SEPARATORS = _Separators()


# NUL stays itself: it separates rows when a batch of texts is scanned as one string
_ASCII_FORM = bytes(
    (c + 32 if 65 <= c <= 90 else c) if chr(c).isalnum() or c in (0, 95) else 32 for c in range(256)
)


def ascii_match_form(text: str) -> str:
    """match_form(fold(text)) of an ASCII text in one bytes.translate (the common case)."""
    return text.encode("ascii").translate(_ASCII_FORM).decode("ascii")


def match_form(folded: str) -> str:
    """A folded text with every non-word character turned into a space (same length).

    Names and texts both go through it, so a name " paris " padded with spaces matches only
    between separators: word boundaries are checked by the automaton, not per match.
    """
    return folded.translate(_SEPARATORS)


def count_words(text: str) -> int:
    """Words in a text: runs of word characters; each character counts in scripts without spaces."""
    if text.isascii() or not _SPACELESS.search(text):
        return len(_WORD_RUN.findall(text))
    count = 0
    for run in _WORD_RUN.findall(text):
        spaceless = sum(1 for c in run if not uses_spaces(c))
        count += spaceless + (1 if spaceless < len(run) else 0)
    return count


_WORD_RUN = re.compile(r"\w+")
_SPACELESS = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff\u3040-\u30ff\u3400-\u9fff"
                        "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0010ffff]")
