"""Every bad input is a ValueError that names what was expected; none crashes."""

from __future__ import annotations

import numpy as np
import pytest

import vectorindex as vi


@pytest.fixture(params=["flat", "hnsw"])
def index(request):
    index = vi.IndexFlat(4) if request.param == "flat" else vi.IndexHNSW(4, M=4)
    index.add(np.eye(4, dtype=np.float32))
    return index


GOOD = np.ones((2, 4), np.float32)


@pytest.mark.parametrize(
    ("xq", "match"),
    [
        (np.ones((2, 5), np.float32), r"shape \(n, 4\), got shape \(2, 5\)"),
        (np.ones(4, np.float32), r"got shape \(4,\)"),
        (np.ones((1, 2, 4), np.float32), r"got shape \(1, 2, 4\)"),
        (np.ones((2, 4), np.float64), "got dtype float64"),
        (np.ones((2, 4), np.int32), "got dtype int32"),
        (np.ones((4, 8), np.float32)[:, ::2], "non-contiguous"),
        (np.asfortranarray(np.ones((3, 4), np.float32)), "non-contiguous"),
        (np.array([[1, np.nan, 0, 0]], np.float32), "NaN or inf at row 0"),
        (np.array([[0, 0, 0, 0], [1, np.inf, 0, 0]], np.float32), "NaN or inf at row 1"),
        ([[1.0, 2.0, 3.0, 4.0]], "got list"),
        (None, "got NoneType"),
    ],
)
def test_bad_vectors(index, xq, match):
    with pytest.raises(ValueError, match=match):
        index.search(xq, 1)
    with pytest.raises(ValueError, match=match.replace("xq", "xb")):
        index.add(xq)
    assert index.ntotal == 4


@pytest.mark.parametrize("k", [0, -3, 1.5, "2", True, None])
def test_bad_k(index, k):
    with pytest.raises(ValueError, match="k must be"):
        index.search(GOOD, k)


def test_bad_ids(index):
    with pytest.raises(ValueError, match=r"ids has shape \(3,\) but xb has shape \(2, 4\)"):
        index.add_with_ids(GOOD, [7, 8, 9])
    with pytest.raises(ValueError, match="must hold integers, got dtype float64"):
        index.add_with_ids(GOOD, np.array([1.5, 2.5]))
    with pytest.raises(ValueError, match="already in the index or repeated"):
        index.add_with_ids(GOOD, [0, 100])
    with pytest.raises(ValueError, match="already in the index or repeated"):
        index.add_with_ids(GOOD, [100, 100])
    with pytest.raises(ValueError, match="must be 1-D"):
        index.remove_ids(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="beyond the int64 range"):
        index.remove_ids(np.array([2**63], np.uint64))
    with pytest.raises(ValueError, match="allowed_ids must hold integers"):
        index.search(GOOD, 1, allowed_ids=["a"])
    with pytest.raises(ValueError, match="boolean array of shape"):
        index.search(GOOD, 1, allowed_ids=lambda ids: ids)
    assert index.ntotal == 4


def test_empty_index():
    for index in [vi.IndexFlatL2(3), vi.IndexHNSW(3)]:
        with pytest.raises(ValueError, match="empty"):
            index.search(np.ones((1, 3), np.float32), 1)
        index.add(np.zeros((0, 3), np.float32))
        index.add(np.ones((1, 3), np.float32))
        index.remove_ids([0])
        with pytest.raises(ValueError, match="empty"):
            index.search(np.ones((1, 3), np.float32), 1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="d must be between"):
        vi.IndexFlat(0)
    with pytest.raises(ValueError, match="metric must be"):
        vi.IndexFlat(3, "hamming")
    with pytest.raises(ValueError, match="quantize must be"):
        vi.IndexFlat(3, quantize="int4")
    with pytest.raises(ValueError, match="IndexFlatIP metric"):
        vi.IndexFlatIP(3, "l2")
    with pytest.raises(ValueError, match="M must be"):
        vi.IndexHNSW(3, M=1)
    with pytest.raises(ValueError, match="ef_search must be"):
        vi.IndexHNSW(3).search(np.ones((1, 3), np.float32), 1, ef_search=0)
    with pytest.raises(ValueError, match="cannot run SIMD level"):
        vi.set_simd_level("avx9000")
