"""The query kernels against plain NumPy on random data: nulls, gathers, code tables."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.logs import kernels, sketch

rng = np.random.default_rng(11)


def reference(ids: np.ndarray, values: np.ndarray, groups: int) -> list[np.ndarray]:
    out = [
        np.zeros(groups),
        np.zeros(groups, np.int64),
        np.full(groups, np.nan),
        np.full(groups, np.nan),
    ]
    for g in range(groups):
        mine = values[(ids == g) & ~np.isnan(values)]
        out[0][g], out[1][g] = mine.sum(), len(mine)
        if len(mine):
            out[2][g], out[3][g] = mine.min(), mine.max()
    return out


@pytest.mark.parametrize("n", [0, 1, 3, 5, 1000])
@pytest.mark.parametrize("gather", [False, True])
def test_group_stats_match_numpy(n: int, gather: bool) -> None:
    groups = 5  # one group never used: its min / max are NaN, its sum 0
    ids = rng.integers(0, groups - 1, n)
    values = rng.lognormal(3, 1, 3 * n)
    values[rng.random(3 * n) < 0.2] = np.nan
    rows = np.sort(rng.choice(3 * n, n, replace=False)) if gather else None
    selected = values[rows] if gather else values[:n]
    got = kernels.group_stats(ids, values if gather else values[:n], groups, rows, with_sketch=True)
    for have, want in zip(got[:4], reference(ids, selected, groups), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-12)
    valid = ~np.isnan(selected)
    keys = sketch.keys(selected[valid])
    expected = sorted(zip(ids[valid].tolist(), keys.tolist(), strict=True))
    flat = [(g, k) for g, k, c in got.sketch.tolist() for _ in range(c)]
    assert flat == expected
    assert got.sketch[:, 2].min(initial=1) >= 1  # no empty cells


def test_integer_values_and_code_tables() -> None:
    ids = rng.integers(0, 3, 500)
    tokens = rng.integers(0, 10_000, 500)
    got = kernels.group_stats(ids, tokens, 3)
    for have, want in zip(got[:4], reference(ids, tokens.astype(float), 3), strict=True):
        np.testing.assert_array_equal(have, want)
    codes = rng.integers(0, 3, 500).astype(np.int32)
    lut = np.array([0.0, 1.0, np.nan])  # e.g. ok, error, no status
    got = kernels.group_stats(ids, codes, 3, lut=lut)
    for have, want in zip(got[:4], reference(ids, lut[codes], 3), strict=True):
        np.testing.assert_array_equal(have, want)


def test_sparse_sketch_cells_take_the_sort() -> None:
    # Values over 20 decades make (group, bucket) cells far more than rows.
    ids = rng.integers(0, 50, 200)
    values = 10.0 ** rng.uniform(-10, 10, 200)
    got = kernels.group_stats(ids, values, 50, with_sketch=True).sketch
    pairs = sorted(zip(ids.tolist(), sketch.keys(values).tolist(), strict=True))
    assert [(g, k) for g, k, c in got.tolist() for _ in range(c)] == pairs


@pytest.mark.parametrize("start_all", [True, False])
def test_select_narrows_rows(start_all: bool) -> None:
    codes = rng.integers(0, 6, 2000).astype(np.int32)
    wanted = np.array([True, False, True, False, False, True])
    rows = None if start_all else np.flatnonzero(rng.random(2000) < 0.5)
    got = kernels.select(codes, wanted, rows)
    base = np.arange(2000) if rows is None else rows
    np.testing.assert_array_equal(got, base[wanted[codes[base]]])


def test_dense_ids_number_groups_in_code_order() -> None:
    code = rng.choice([7, 2, 40, 2, 9], 300)
    ids, example = kernels.dense_ids(code, 41)
    present = np.unique(code)
    np.testing.assert_array_equal(present[ids], code)
    np.testing.assert_array_equal(code[example], present)
