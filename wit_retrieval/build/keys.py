"""A split's keys (query and image ids, URLs) handled as integers, not strings.

Ids end in 16 hex digits of a sha256 (`ids`), and numeric order is their string order, so
repeats and the corpus (one row per target image, sorted by id) are numpy sorts over uint64
instead of hash tables and sorts over ~1M strings in the main process of a build.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .fast_ids import NORMAL_FORM


def _c_helpers():
    """The compiled module when the C path is on (its column helpers take a tenth of the time),
    else None: the numpy and RE2 versions below run."""
    from . import fastpath  # imports this module: asked for late

    return fastpath._fastbuild if fastpath.enabled() else None


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def string_buffers(array) -> tuple[np.ndarray, object]:
    """(int32 offsets, data buffer) of a string array, zero-copy; offsets start at the array's own."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.string():
        array = array.cast(pa.string())
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, np.int32)[array.offset:array.offset + len(array) + 1]
    return offsets, data if data is not None else b""


def hex_tails(ids) -> np.ndarray | None:
    """The last 16 hex digits of each id as uint64, or None when the ids are not all of one length
    ending in 16 lower-case hex digits (then callers fall back to string kernels)."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [hex_tails(chunk) for chunk in ids.chunks if len(chunk)]
        if any(part is None for part in parts):
            return None
        return np.concatenate(parts) if parts else None
    if not len(ids) or ids.null_count:
        return None
    offsets, data = string_buffers(ids)
    fast = _c_helpers()
    if fast is not None:
        tails = fast.hex_tails(offsets, data)
        return None if tails is None else np.frombuffer(tails, np.uint64).copy()  # writable: callers sort it
    width = int(offsets[1] - offsets[0])
    if width < 16 or np.any(np.diff(offsets) != width):
        return None
    raw = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]].reshape(len(ids), width)[:, -16:]
    digits = _HEX[raw]
    if (digits > 15).any():
        return None
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])  # 8 bytes per id, big-endian
    return packed.view(">u8").ravel().astype(np.uint64)


def repeats(query_ids, numbers: np.ndarray | None = None) -> bool:
    """Whether any query id occurs twice (`numbers`: their hex tails, when already known)."""
    if numbers is None:
        numbers = hex_tails(query_ids)
    if numbers is None:
        return pc.count_distinct(query_ids).as_py() < len(query_ids)
    numbers = np.sort(numbers, kind="stable")  # runs sorted in the workers merge, not re-sort
    return bool((numbers[1:] == numbers[:-1]).any())


def sorted_tails(ids) -> np.ndarray | None:
    """hex_tails of ids, sorted (None when they have none)."""
    numbers = hex_tails(ids)
    if numbers is not None:
        numbers.sort()
    return numbers


def part_images(image_ids, image_urls) -> pa.Table:
    """A part's (image_id, image_url, url_is_normal) rows, for the corpus: sorted by the id's tail
    (stably: an image's rows keep their order), which is then an `image_number` column.

    Workers sort their parts, so the main process's sort of a split merges sorted runs, and its
    gather of the corpus rows reads them nearly in order. Ids without a tail stay unsorted and
    without the column (the string kernels take them).
    """
    table = pa.table({"image_id": image_ids, "image_url": image_urls, "url_is_normal": is_normal_url(image_urls)})
    numbers = hex_tails(table["image_id"]) if table.num_rows else None
    if numbers is None:
        return table
    order = np.argsort(numbers, kind="stable")
    return table.take(pa.array(order)).append_column("image_number", pa.array(numbers[order]))


def split_images(parts: list[pa.Table], schema: pa.Schema, range_rows: int = 65536) -> pa.Table:
    """The corpus rows of a split from its parts' `part_images` tables (in part order).

    Numbered parts are merged a range of image numbers at a time (about `range_rows` rows
    each): every part is sorted, so a range is one slice of each, and an image's rows never
    straddle two ranges. Gathering a whole split at once read its URLs at random across
    ~50 MB, which the workers' scans keep out of the cache: 0.4 s of the build process's CPU
    for 600k rows, against 0.08 s alone; a range's rows fit in the cache.
    """
    if not parts:
        return schema.empty_table()
    if not all("image_number" in part.column_names for part in parts):
        return _unique_rows(parts, ["image_id", "image_url", "url_is_normal"], schema)
    names = ["image_id", "image_url", "url_is_normal", "image_number"]
    numbers = [part["image_number"].combine_chunks().to_numpy() for part in parts]
    count = max(1, sum(map(len, numbers)) // range_rows)
    step = (1 << 64) // count
    edges = [[0, *np.searchsorted(n, np.array([k * step for k in range(1, count)], np.uint64)), len(n)]
             for n in numbers]
    pieces = [_unique_rows([part.slice(cut[k], cut[k + 1] - cut[k]) for part, cut in zip(parts, edges)], names, schema)
              for k in range(count)]
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


def _unique_rows(parts: list[pa.Table], names: list[str], schema: pa.Schema) -> pa.Table:
    table = pa.concat_tables([part.select(names) for part in parts])
    if not table.num_rows:
        return schema.empty_table()
    normal = _numpy(table["url_is_normal"], bool)
    numbers = _numpy(table["image_number"], np.uint64) if "image_number" in names else None
    return unique_images(table.select(["image_id", "image_url"]), schema, normal, numbers)


def _numpy(column: pa.ChunkedArray, dtype) -> np.ndarray:
    # chunk by chunk: ChunkedArray.to_numpy goes through pandas
    return np.concatenate([np.zeros(0, dtype)] + [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks])


# fast_ids' test of a URL that is its own normal form (as RE2 sees it: anchored), so rows of one
# image whose URLs all pass it carry the same URL (their ids are the hash of that normal form)
NORMAL_URL = f"^{NORMAL_FORM.pattern}$"


def is_normal_url(urls) -> pa.Array:
    """Whether each URL is surely its own normal form (False: maybe not, check it).

    In C, the rows half's own test (which also passes upper-case %-escapes of UTF-8); else RE2
    with fast_ids' pattern. Either says True only where fast_ids.normal_url(url) == url.
    """
    fast = _c_helpers()
    if fast is not None and isinstance(urls, pa.Array) and urls.type == pa.string() and not urls.null_count:
        flags = np.frombuffer(fast.normal_urls(*string_buffers(urls)), np.bool_)
        return pa.array(flags, pa.bool_())
    return pc.fill_null(pc.match_substring_regex(urls, NORMAL_URL), False)


def unique_images(table: pa.Table, schema: pa.Schema, normal: np.ndarray | None = None,
                  numbers: np.ndarray | None = None) -> pa.Table:
    """(image_id, image_url) rows -> one per image id, sorted by it, with its smallest URL.

    `normal` (bool per row, from is_normal_url) spares the URL comparison in groups whose URLs
    are all normal forms: one id, one normal form, one URL. `numbers`: the ids' hex tails,
    when already known.
    """
    # one chunk: a take over a chunked column resolves the chunk row by row (~30x slower)
    table = table.rename_columns(["image_id", "image_url"]).combine_chunks()
    if numbers is None:
        numbers = hex_tails(table["image_id"]) if table.num_rows else None
    if numbers is None or table["image_url"].null_count:
        table = table.group_by("image_id", use_threads=False).aggregate([("image_url", "min")])
        return table.rename_columns(["image_id", "image_url"]).sort_by("image_id").select(schema.names)
    order = np.argsort(numbers, kind="stable")
    ordered = numbers[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts)
    chosen = order[first]
    group_of = np.cumsum(starts) - 1
    sizes = np.diff(np.r_[first, len(order)])
    doubtful = sizes[group_of] > 1  # rows of images with several rows ...
    if normal is not None:  # ... one of which may carry another spelling of the URL
        doubtful &= ~np.logical_and.reduceat(normal[order], first)[group_of]
    rows = order[doubtful]
    if len(rows):
        urls = table["image_url"]
        same = pc.equal(urls.take(pa.array(rows, pa.int64())),
                        urls.take(pa.array(chosen[group_of[doubtful]], pa.int64()))).to_numpy(zero_copy_only=False)
        for group in np.unique(group_of[doubtful][~same]):  # rare: pick the smallest spelling
            members = order[group_of == group]
            chosen[group] = min(members, key=lambda row: urls[int(row)].as_py())
    return table.take(pa.array(chosen, pa.int64())).select(schema.names)
