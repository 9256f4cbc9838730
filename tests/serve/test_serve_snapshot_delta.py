"""Updates on a served snapshot leave the memory-mapped index shared: a replica's own memory
grows with what was updated, not with the index, and searches answer as a snapshot written
with the final set would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vectorindex as vi
from pipelines.documents.write import write_snapshot
from refinery.manifest import Manifest
from refinery.update_log import Delete, Upsert
from serve.snapshot import Snapshot


def documents(ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": [f"doc-{i}" for i in ids],
            "index_id": pa.array(ids, pa.int64()),
            "source": [f"s{i % 3}" for i in ids],
            "text": [f"doc {i}" for i in ids],
        }
    )


def snapshot_of(out: Path, ids: list[int], vectors: np.ndarray, metric: str) -> str:
    """The pipeline's writer builds inner-product indexes; for another metric the index file is
    rewritten with the same rows."""
    snapshot_dir = write_snapshot(str(out), documents(ids), vectors, metric=metric)
    if metric != "ip":
        index = vi.IndexFlat(vectors.shape[1], metric)
        index.add_with_ids(vectors, np.array(ids))
        index.save(Manifest.read(snapshot_dir).index)
    return snapshot_dir


def anonymous_bytes() -> int:
    """This process's private (anonymous) memory: a copied mapping would land here."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Anonymous line in smaps_rollup")


@pytest.mark.slow
def test_updates_do_not_copy_the_mapped_vectors(tmp_path: Path) -> None:
    n, d = 200_000, 64
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    snapshot = Snapshot(write_snapshot(str(tmp_path), documents(list(range(n))), vectors))
    del vectors
    query = rng.standard_normal((4, d)).astype(np.float32)
    snapshot.search(query, 5)  # the first search's own allocations, before measuring
    before, index_bytes = anonymous_bytes(), snapshot.index.memory_usage()
    new = rng.standard_normal((2, d)).astype(np.float32)
    snapshot.upsert(np.array([5, n + 1]), new, [{"text": "replaced"}, {"text": "new"}])
    snapshot.delete(np.array([6, 7]))
    snapshot.search(query, 5)
    grown = anonymous_bytes() - before
    assert snapshot.index.base.mapped
    assert snapshot.index.memory_usage() - index_bytes < 64 * 1024
    # What does grow is the payload rows' bookkeeping and the allocators' slack.
    assert grown < n * d * 4 / 5, f"{grown} bytes of private memory after one update"
    [hits] = snapshot.search(new[:1], 1)
    assert hits[0]["id"] == 5 and hits[0]["payload"]["text"] == "replaced"
    assert snapshot.index.ntotal == n - 1 and 6 not in snapshot.row_of


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_search_after_updates_matches_a_snapshot_of_the_final_set(
    tmp_path: Path, metric: str
) -> None:
    rng = np.random.default_rng({"ip": 1, "l2": 2, "cosine": 3}[metric])
    n, d = 600, 12
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    snapshot = Snapshot(snapshot_of(tmp_path / "served", list(range(n)), vectors, metric))
    final = dict(enumerate(vectors))
    for step in range(25):
        ids = rng.choice(n + 100, size=int(rng.integers(1, 20)), replace=False).tolist()
        if rng.random() < 0.3:
            snapshot.apply([Delete(tuple(ids))])
            for i in ids:
                final.pop(i, None)
            continue
        new = rng.standard_normal((len(ids), d)).astype(np.float32)
        payloads = [{"source": f"s{i % 3}", "text": f"doc {i} v{step}"} for i in ids]
        if step % 2:
            snapshot.apply([Upsert(i, v, p) for i, v, p in zip(ids, new, payloads, strict=True)])
        else:
            snapshot.upsert(np.array(ids), new, payloads)
        final.update(zip(ids, new, strict=True))
    assert snapshot.index.base.mapped
    assert snapshot.index.ntotal == len(final) == len(snapshot.row_of)
    fresh = Snapshot(
        snapshot_of(tmp_path / "fresh", list(final), np.stack(list(final.values())), metric)
    )
    queries = rng.standard_normal((30, d)).astype(np.float32)
    for k in (1, 8, 50):
        for payload_filter in (None, {"source": "s1"}, {"source": ["s0", "s2"]}):
            got = snapshot.search(queries, k, payload_filter)
            want = fresh.search(queries, k, payload_filter)
            assert [[h["id"] for h in q] for q in got] == [[h["id"] for h in q] for q in want]
            np.testing.assert_allclose(
                [h["score"] for q in got for h in q],
                [h["score"] for q in want for h in q],
                rtol=1e-5,
                atol=1e-5,
            )
            assert all(h["payload"]["source"] == f"s{h['id'] % 3}" for q in got for h in q)
