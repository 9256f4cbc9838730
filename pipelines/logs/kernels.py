"""Compiled per-group reductions: the query's inner loops, one pass over the selected rows.

NumPy needs a call per statistic and a gathered copy of every column for the selected rows
(masks, takes, bincounts, minimum.at: about 30 calls of 20-150 us for the seed query at 100k
rows); these loops read each selected row of a column once and keep every group's sum,
non-null count, min and max together, plus the values the quantile sketch counts.
They release the GIL, so the Arrow engine's query threads run them side by side.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from pipelines.logs import sketch


class GroupStats(NamedTuple):
    sums: np.ndarray  # float64 per group
    counts: np.ndarray  # int64 non-null values per group
    mins: np.ndarray  # float64, NaN for a group without values
    maxs: np.ndarray
    sketch: np.ndarray | None  # int64 [n, 3] of (group, bucket, count), sorted


def group_stats(
    ids: np.ndarray,
    values: np.ndarray,
    groups: int,
    rows: np.ndarray | None = None,
    lut: np.ndarray | None = None,
    with_sketch: bool = False,
) -> GroupStats:
    """Statistics of values per group; ids[j] is the group of the j-th selected row.

    rows: the selected rows' positions in values (None: values are the selected rows).
    lut: values are codes, and lut[code] the value (NaN: null). with_sketch: also count
    the sketch buckets of the non-null values per group.
    """
    positions = np.zeros(0, np.int64) if rows is None else rows
    table = np.zeros(0) if lut is None else lut
    size = len(ids) if with_sketch else 0
    picked, picked_ids = np.empty(size), np.empty(size, np.int64)
    sums, counts, mins, maxs, m = _group_stats(
        ids, values, positions, table, groups, picked, picked_ids
    )
    empty = counts == 0
    mins[empty] = maxs[empty] = np.nan
    rows_of_sketch = _sketch_rows(picked_ids[:m], picked[:m], groups) if with_sketch else None
    return GroupStats(sums, counts, mins, maxs, rows_of_sketch)


@nb.njit(cache=True, nogil=True)
def _group_stats(ids, values, rows, lut, groups, picked, picked_ids):
    """The per-group statistics in one pass; the non-null values and their groups are also
    written to picked / picked_ids when those have room (the sketch's input)."""
    sums = np.zeros(groups)
    counts = np.zeros(groups, np.int64)
    mins = np.full(groups, np.inf)
    maxs = np.full(groups, -np.inf)
    gather, coded, pick = len(rows) > 0, len(lut) > 0, len(picked) > 0
    m = 0
    for j in range(len(ids)):
        raw = values[rows[j]] if gather else values[j]
        value = lut[np.int64(raw)] if coded else np.float64(raw)
        if value != value:  # NaN: null
            continue
        g = ids[j]
        sums[g] += value
        counts[g] += 1
        mins[g] = min(mins[g], value)
        maxs[g] = max(maxs[g], value)
        if pick:
            picked[m] = value
            picked_ids[m] = g
            m += 1
    return sums, counts, mins, maxs, m


def _sketch_rows(ids: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """(group, bucket, count) rows of the values' sketch keys, sorted by group then bucket."""
    if not len(values):
        return np.zeros((0, 3), np.int64)
    keys = sketch.keys(values)  # vectorised: NumPy's log is several times a scalar one's speed
    low, high = int(keys.min()), int(keys.max())
    width = high - low + 1
    # Dense (group, bucket) cells while they are few next to the rows, else a sort.
    if groups * width <= max(4 * len(ids), 1 << 16):
        return _dense_sketch_rows(ids, keys, low, width, groups)
    present, counts = np.unique(ids * width + (keys - low), return_counts=True)
    group, bucket = np.divmod(present, width)
    return np.column_stack([group, bucket + low, counts])


@nb.njit(cache=True, nogil=True)
def _dense_sketch_rows(ids, keys, low, width, groups):
    cells = np.zeros(groups * width, np.int64)
    for j in range(len(ids)):
        cells[ids[j] * width + (keys[j] - low)] += 1
    present = np.flatnonzero(cells)
    out = np.empty((len(present), 3), np.int64)
    for r in range(len(present)):
        out[r, 0] = present[r] // width
        out[r, 1] = present[r] % width + low
        out[r, 2] = cells[present[r]]
    return out


def select(codes: np.ndarray, wanted: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Positions of the rows (of `rows`; None: all) whose code is wanted: wanted[codes[i]]."""
    return _select(codes, wanted, np.zeros(0, np.int64) if rows is None else rows, rows is None)


@nb.njit(cache=True, nogil=True)
def _select(codes, wanted, rows, every):
    n = len(codes) if every else len(rows)
    out = np.empty(n + 1, np.int64)
    k = 0
    for j in range(n):  # no branch: every row is written, the count moves on the wanted
        i = j if every else rows[j]
        out[k] = i
        k += wanted[codes[i]]
    return out[:k]


@nb.njit(cache=True, nogil=True)
def dense_ids(code, radix):
    """Codes below radix -> ids 0..G-1 in code order, and a row of each group."""
    slot = np.full(radix, -1, np.int64)
    for j in range(len(code)):
        slot[code[j]] = j
    present = np.flatnonzero(slot >= 0)
    example = slot[present]
    for g in range(len(present)):
        slot[present[g]] = g
    ids = np.empty(len(code), np.int64)
    for j in range(len(code)):
        ids[j] = slot[code[j]]
    return ids, example
