"""Updates on a memory-mapped index: `upsert` (atomic replace), removals that leave the mapping
shared, and LayeredIndex (mapped base + in-memory delta) against one index of the same set."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vectorindex as vi

D = 16


def mapped_flat(tmp_path, xb: np.ndarray, ids: np.ndarray, metric: str) -> vi.Index:
    index = vi.IndexFlat(D, metric)
    index.add_with_ids(xb, ids)
    index.save(tmp_path / "base.vi")
    return vi.load(tmp_path / "base.vi", mmap=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_upsert_replaces_present_ids_and_adds_new_ones(kind):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((50, D)).astype(np.float32)
    index = vi.IndexFlat(D, "l2") if kind == "flat" else vi.IndexHNSW(D, "l2")
    index.add_with_ids(xb[:40], np.arange(40))
    index.upsert(xb[40:50], np.arange(35, 45))
    assert index.ntotal == 45
    assert sorted(index.ids().tolist()) == list(range(45))
    _, found = index.search(xb[40:50], 1)
    assert found[:, 0].tolist() == list(range(35, 45))
    index.upsert(np.zeros((0, D), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="id 3 is repeated"):
        index.upsert(xb[:2], [3, 3])
    with pytest.raises(ValueError, match="ids has shape"):
        index.upsert(xb[:2], [1])
    with pytest.raises(ValueError, match="xb must be"):
        index.upsert(xb[:2, :3], [1, 2])
    assert index.ntotal == 45


def test_removing_from_a_mapped_index_keeps_it_mapped(tmp_path):
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((4000, D)).astype(np.float32)
    index = mapped_flat(tmp_path, xb, np.arange(4000), "ip")
    assert index.mapped and not vi.IndexFlat(D).mapped
    before = index.memory_usage()
    # Past the share of deleted rows at which an in-memory index compacts itself.
    assert index.remove_ids(np.arange(0, 4000, 2)) == 2000
    assert index.mapped and index.memory_usage() <= before
    _, found = index.search(xb[:200], 3)
    assert (found % 2 == 1).all()
    _, found = index.search(xb[:5], 2, allowed_ids=np.arange(10))
    assert set(found.ravel().tolist()) <= {1, 3, 5, 7, 9}
    # An explicit compaction, or an add, takes the rows into memory as before.
    index.compact()
    assert not index.mapped and index.ntotal == 2000


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_layered_searches_like_one_index_of_the_final_set(tmp_path, metric):
    rng = np.random.default_rng({"l2": 2, "ip": 3, "cosine": 4}[metric])
    n = 3000
    xb = rng.standard_normal((n, D)).astype(np.float32)
    layered = vi.LayeredIndex(mapped_flat(tmp_path, xb, np.arange(n), metric))
    final = {i: xb[i] for i in range(n)}
    for _ in range(30):
        ids = rng.choice(n + 400, size=int(rng.integers(1, 40)), replace=False)
        if rng.random() < 0.3:
            assert layered.remove_ids(ids) == sum(int(i) in final for i in ids)
            for i in ids.tolist():
                final.pop(i, None)
        else:
            vectors = rng.standard_normal((len(ids), D)).astype(np.float32)
            layered.upsert(vectors, ids)
            final.update(zip(ids.tolist(), vectors, strict=True))
    assert layered.base.mapped
    assert layered.ntotal == len(final)
    assert sorted(layered.ids().tolist()) == sorted(final)
    fresh = vi.IndexFlat(D, metric)
    fresh.add_with_ids(np.stack(list(final.values())), np.array(list(final)))
    xq = rng.standard_normal((40, D)).astype(np.float32)
    allowed = rng.choice(n + 400, size=500, replace=False)
    for k in (1, 10, 60):
        for args in ({}, {"allowed_ids": allowed}, {"allowed_ids": lambda ids: ids % 3 == 0}):
            got, want = layered.search(xq, k, **args), fresh.search(xq, k, **args)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_layered_empty_layers_and_bad_input(tmp_path):
    xb = np.eye(D, dtype=np.float32)
    layered = vi.LayeredIndex(mapped_flat(tmp_path, xb[:2], np.arange(2), "ip"))
    scores, ids = layered.search(xb[:1], 3)
    assert ids.tolist() == [[0, 1, -1]] and scores[0, 2] == -np.inf
    with pytest.raises(ValueError, match="xq must be"):
        layered.search(xb[:1, :3], 1)
    assert layered.remove_ids([0, 1, 7]) == 2
    with pytest.raises(ValueError, match="empty"):
        layered.search(xb[:1], 1)
    layered.upsert(xb[5:6], [0])
    assert layered.search(xb[5:6], 2)[1].tolist() == [[0, -1]]


def test_a_search_during_replacements_always_finds_the_id(tmp_path):
    """Readers never lock: an id being replaced is found with its old or its new vector."""
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((2000, D)).astype(np.float32) * 0.01
    target = np.zeros((1, D), np.float32)
    target[0, 0] = 1.0
    xb[7] = target[0]
    layered = vi.LayeredIndex(mapped_flat(tmp_path, xb, np.arange(2000), "ip"))
    stop, misses = threading.Event(), []

    def search() -> None:
        while not stop.is_set():
            _, found = layered.search(target, 2)
            if 7 not in found[0].tolist() or found[0].tolist().count(7) > 1:
                misses.append(found[0].tolist())

    readers = [threading.Thread(target=search) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(300):
            layered.upsert(target * (1.0 + n % 2), [7])
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert misses == []
    assert layered.base.mapped
