"""Searches from many threads while another thread adds and removes: no crash, and only ids
that exist (or existed a moment ago) come back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import vectorindex as vi


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_while_adding(kind):
    d, batch, least, most = 16, 200, 15, 300
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((batch * most, d)).astype(np.float32)
    index = vi.IndexFlat(d) if kind == "flat" else vi.IndexHNSW(d, M=8, ef_construction=40)
    index.add_with_ids(xb[:batch], np.arange(batch))
    added = threading.Event()
    # Ids below limit[0] are added or being added; it only grows.
    limit = [batch]
    errors: list[BaseException] = []
    seen_bad: list[np.ndarray] = []
    # (start, end) of every search and every add, to check that they really overlapped.
    searches: list[tuple[float, float]] = []
    adds: list[tuple[float, float]] = []
    deadline = time.monotonic() + 20

    def searcher(seed: int) -> None:
        q = np.random.default_rng(seed).standard_normal((8, d)).astype(np.float32)
        try:
            while not added.is_set() and time.monotonic() < deadline:
                start = time.perf_counter()
                _, found = index.search(q, 10)
                searches.append((start, time.perf_counter()))
                if not ((found >= 0) & (found < limit[0])).all():
                    seen_bad.append(found)
        except BaseException as e:  # noqa: BLE001 - any failure in a thread fails the test
            errors.append(e)

    def overlapping() -> int:
        return sum(any(s0 < a1 and a0 < s1 for a0, a1 in adds) for s0, s1 in list(searches))

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    # Adds go on until searches ran during them: on a busy machine the searchers may get so
    # little CPU that a fixed number of quick adds all pass between two searches.
    batches = 1
    while batches < least or (
        batches < most and time.monotonic() < deadline and overlapping() < 10
    ):
        rows = slice(batches * batch, (batches + 1) * batch)
        limit[0] = rows.stop
        start = time.perf_counter()
        index.add_with_ids(xb[rows], np.arange(rows.start, rows.stop))
        adds.append((start, time.perf_counter()))
        index.remove_ids(np.arange(rows.start, rows.start + 10))
        batches += 1
    added.set()
    for t in threads:
        t.join()
    assert not errors and not seen_bad
    overlapped = overlapping()
    assert overlapped >= 10, f"only {overlapped} of {len(searches)} searches overlapped an add"
    assert index.ntotal == batch * batches - 10 * (batches - 1)
    xb = xb[: batch * batches]
    _, found = index.search(xb, 1)
    removed = np.isin(
        np.arange(len(xb)), [b * batch + j for b in range(1, batches) for j in range(10)]
    )
    assert not np.isin(found, np.flatnonzero(removed)).any()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_threads_of_one_search_leave_the_process_count_alone(kind):
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((5000, 32)).astype(np.float32)
    index = vi.IndexFlat(32) if kind == "flat" else vi.IndexHNSW(32, M=8, ef_construction=40)
    index.add(xb)
    before = vi.get_num_threads()
    default = index.search(xb[:64], 5)
    for threads in (1, 2, 64):
        for a, b in zip(index.search(xb[:64], 5, threads=threads), default, strict=True):
            np.testing.assert_array_equal(a, b)
    assert vi.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        index.search(xb[:1], 5, threads=0)
