"""Flat search equals exact float64 search, on every SIMD level, for all metrics."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vi_helpers import assert_exact, simd_levels

import vectorindex as vi

LEVELS = simd_levels()
METRICS = ["l2", "ip", "cosine"]


@pytest.fixture(params=LEVELS)
def level(request):
    vi.set_simd_level(request.param)
    yield request.param
    vi.set_simd_level(LEVELS[0])


def build(xb: np.ndarray, metric: str, **kw) -> vi.IndexFlat:
    index = vi.IndexFlat(xb.shape[1], metric, **kw)
    index.add(xb)
    return index


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 70),
    nq=st.integers(1, 20),
    k=st.integers(1, 40),
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_matches_exact(n, d, nq, k, metric, seed):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    dist, found = build(xb, metric).search(xq, k)
    assert_exact(dist, found, xb, np.arange(n), xq, k, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_kernel_levels_match_exact(level, metric):
    rng = np.random.default_rng(1)
    # Sizes around the register and tile blocks (rows and queries not multiples of them), and
    # enough queries (>= 24) for the packed GEMM path.
    for n, d, nq in [(1, 1, 1), (7, 17, 5), (1000, 384, 3), (2003, 96, 70), (1500, 40, 151)]:
        xb = rng.standard_normal((n, d)).astype(np.float32)
        xq = rng.standard_normal((nq, d)).astype(np.float32)
        dist, found = build(xb, metric).search(xq, 10)
        assert_exact(dist, found, xb, np.arange(n), xq, 10, metric)


def test_adversarial_data():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 16)).astype(np.float32)
    cases = {
        "duplicates": np.repeat(base, 40, axis=0),
        "zeros": np.zeros((50, 16), np.float32),
        "d=1": rng.standard_normal((200, 1)).astype(np.float32),
        "d=4096": rng.standard_normal((300, 4096)).astype(np.float32),
        "n<k": rng.standard_normal((3, 16)).astype(np.float32),
        "large values": (rng.standard_normal((100, 16)) * 1e15).astype(np.float32),
    }
    for name, xb in cases.items():
        xq = np.concatenate([xb[:3], rng.standard_normal((3, xb.shape[1])).astype(np.float32)])
        for metric in METRICS:
            dist, found = build(xb, metric).search(xq, 20)
            try:
                assert_exact(dist, found, xb, np.arange(len(xb)), xq, 20, metric)
            except AssertionError as e:
                raise AssertionError(f"{name} {metric}") from e


def test_query_equal_to_a_row_has_distance_zero():
    rng = np.random.default_rng(3)
    xb = (rng.standard_normal((500, 64)) * 100).astype(np.float32)
    dist, found = build(xb, "l2").search(xb[:10], 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(10))
    np.testing.assert_array_equal(dist[:, 0], 0)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_same_ids_as_faiss(metric):
    rng = np.random.default_rng(4)
    xb = rng.standard_normal((5000, 48)).astype(np.float32)
    xq = rng.standard_normal((40, 48)).astype(np.float32)
    ref = faiss.IndexFlatL2(48) if metric == "l2" else faiss.IndexFlatIP(48)
    ref.add(xb)
    faiss_dist, faiss_ids = ref.search(xq, 10)
    dist, found = build(xb, metric).search(xq, 10)
    np.testing.assert_array_equal(found, faiss_ids)
    np.testing.assert_allclose(dist, faiss_dist, rtol=1e-4, atol=1e-4)


def test_flat_l2_and_ip_classes():
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((100, 8)).astype(np.float32)
    for index, metric in [
        (vi.IndexFlatL2(8), "l2"),
        (vi.IndexFlatIP(8), "ip"),
        (vi.IndexFlatIP(8, "cosine"), "cosine"),
    ]:
        index.add(xb)
        assert (index.d, index.ntotal, index.metric) == (8, 100, metric)
        dist, found = index.search(xb[:4], 5)
        assert_exact(dist, found, xb, np.arange(100), xb[:4], 5, metric)


def test_ids_remove_and_compaction():
    rng = np.random.default_rng(6)
    xb = rng.standard_normal((400, 12)).astype(np.float32)
    ids = rng.choice(10**12, size=400, replace=False).astype(np.int64)
    index = vi.IndexFlatL2(12)
    index.add_with_ids(xb, ids)
    gone = ids[::3]
    assert index.remove_ids(gone) == len(gone)
    assert index.remove_ids(gone) == 0
    keep = ~np.isin(ids, gone)
    assert index.ntotal == keep.sum()
    np.testing.assert_array_equal(np.sort(index.ids()), np.sort(ids[keep]))
    dist, found = index.search(xb, 10)
    assert not np.isin(found, gone).any()
    assert_exact(dist, found, xb[keep], ids[keep], xb, 10, "l2")
    # New rows after the compaction get fresh sequential ids.
    fresh = rng.standard_normal((5, 12)).astype(np.float32) + 100
    index.add(fresh)
    dist, found = index.search(fresh, 1)
    np.testing.assert_array_equal(found[:, 0], ids.max() + 1 + np.arange(5))
    np.testing.assert_array_equal(dist[:, 0], 0)


@pytest.mark.parametrize("metric", METRICS)
def test_filtered_search_is_exact(metric):
    rng = np.random.default_rng(7)
    xb = rng.standard_normal((3000, 24)).astype(np.float32)
    xq = rng.standard_normal((8, 24)).astype(np.float32)
    index = build(xb, metric)
    for allowed in [np.array([5, 17, 2999]), np.arange(0, 3000, 2), np.array([], np.int64)]:
        dist, found = index.search(xq, 10, allowed_ids=allowed)
        assert_exact(dist, found, xb[allowed], allowed, xq, 10, metric)
    dist, found = index.search(xq, 10, allowed_ids=lambda ids: ids % 7 == 0)
    sel = np.arange(0, 3000, 7)
    assert_exact(dist, found, xb[sel], sel, xq, 10, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_int8_recall_and_memory(metric):
    rng = np.random.default_rng(8)
    # 384 dims: all-MiniLM-L6-v2, the project's embedder.
    xb = rng.standard_normal((3000, 384)).astype(np.float32)
    xq = rng.standard_normal((50, 384)).astype(np.float32)
    exact = build(xb, metric)
    _, ref = exact.search(xq, 10)
    reranked = build(xb, metric, quantize="int8")
    dist, found = reranked.search(xq, 10)
    # Re-ranked with the kept floats: exact for all but near-ties at the candidate cut.
    assert np.mean([len(set(a) & set(b)) for a, b in zip(found, ref, strict=True)]) >= 9.9
    codes_only = build(xb, metric, quantize="int8", keep_float=False)
    _, ids8 = codes_only.search(xq, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ids8, ref, strict=True)]) >= 9.0
    assert codes_only.memory_usage() <= 0.3 * exact.memory_usage()


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "remove"]), st.integers(1, 60), st.integers(0, 2**16)),
        min_size=1,
        max_size=12,
    ),
    metric=st.sampled_from(METRICS),
    quantize=st.sampled_from([None, "int8"]),
)
def test_adds_and_removes_match_a_model(ops, metric, quantize):
    """Any sequence of adds and removes (compactions included) searches like exact search over
    the rows a plain dict says are live."""
    d = 6
    index = vi.IndexFlat(d, metric, quantize=quantize)
    live: dict[int, np.ndarray] = {}
    next_id = 0
    for op, count, seed in ops:
        rng = np.random.default_rng(seed)
        if op == "add":
            rows = rng.standard_normal((count, d)).astype(np.float32)
            index.add_with_ids(rows, np.arange(next_id, next_id + count))
            live.update(zip(range(next_id, next_id + count), rows, strict=True))
            next_id += count
        elif live:
            gone = rng.choice(list(live), min(count, len(live)), replace=False)
            assert index.remove_ids(gone) == len(gone)
            for i in gone:
                del live[int(i)]
    assert index.ntotal == len(live)
    if not live:
        return
    ids = np.array(sorted(live))
    xb = np.stack([live[i] for i in ids])
    xq = np.random.default_rng(0).standard_normal((5, d)).astype(np.float32)
    dist, found = index.search(xq, 8)
    assert_exact(dist, found, xb, ids, xq, 8, metric)


@pytest.mark.parametrize("make", [lambda: vi.IndexFlatIP(16), lambda: vi.IndexHNSW(16)])
def test_adding_one_row_at_a_time_grows_storage_geometrically(make) -> None:
    index = make()
    rows = np.random.default_rng(0).random((2000, 16), dtype=np.float32)
    before, grew = index.memory_usage(), 0
    for i in range(len(rows)):
        index.add_with_ids(rows[i : i + 1], np.array([i]))
        after = index.memory_usage()
        # One more id-map entry is a few dozen bytes; growing by a whole row (or more) each add
        # means every add reallocated, and copied, every array.
        grew += after - before > 64
        before = after
    assert grew <= 60
