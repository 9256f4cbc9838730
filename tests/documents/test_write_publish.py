"""Snapshots are versioned folders published by one atomic manifest write: a write that fails
before it leaves the served snapshot whole, and the Serve loader reads the job's own output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.documents import write
from pipelines.documents.config import WriteConfig
from pipelines.documents.steps import RunContext
from refinery.config import RuntimeConfig
from refinery.manifest import Manifest
from refinery.runstats import RunStats
from serve.snapshot import Snapshot

pytestmark = pytest.mark.usefixtures("ray_session")
DIM = 8


def chunks(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pa.table(
        {
            "id": [f"doc{seed}-{i}@0" for i in range(n)],
            "doc_id": [f"doc{seed}-{i}" for i in range(n)],
            "text": [f"text {seed} {i}" for i in range(n)],
            "source": ["corpus.jsonl"] * n,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )


def publish(table: pa.Table, out: Path, runtime: RuntimeConfig) -> dict:
    import ray

    ctx = RunContext(runtime=runtime, stats=RunStats("docs"), output=str(out))
    return write.write_outputs(ray.data.from_arrow(table), WriteConfig(), ctx)


def served_ids(out: Path) -> set[str]:
    """The chunk ids the Serve loader finds in the published snapshot."""
    snapshot = Snapshot(str(out / "index"))
    [hits] = snapshot.search(np.ones((1, DIM), dtype=np.float32), k=100)
    return {hit["payload"]["id"] for hit in hits}


def test_a_new_version_replaces_the_old_one_whole(tmp_path: Path, runtime: RuntimeConfig) -> None:
    out = tmp_path / "out"
    first = publish(chunks(5, seed=1), out, runtime)
    second = publish(chunks(7, seed=2), out, runtime)

    manifest = Manifest.read(str(out / "index"))
    assert manifest.version and manifest.count == 7
    assert Path(second["index"]) == out / "index" / manifest.version / "index.bin"
    assert Manifest.read(str(out / "index" / manifest.version)) == manifest
    # The old version is gone; DIR/documents holds the published documents only.
    assert sorted(p.name for p in (out / "documents").iterdir()) == [manifest.version]
    assert sorted(p.name for p in (out / "index").iterdir()) == ["manifest.json", manifest.version]
    assert not Path(first["index"]).exists()
    assert pq.read_table(out / "documents").num_rows == 7
    assert served_ids(out) == {f"doc2-{i}@0" for i in range(7)}


def test_a_write_that_fails_before_publishing_leaves_the_served_snapshot(
    tmp_path: Path, runtime: RuntimeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    publish(chunks(5, seed=1), out, runtime)
    before = Manifest.read(str(out / "index"))

    def disk_full(self: write.IndexWriter, path: str) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(write.IndexWriter, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        publish(chunks(7, seed=2), out, runtime)

    assert Manifest.read(str(out / "index")) == before
    assert served_ids(out) == {f"doc1-{i}@0" for i in range(5)}
    monkeypatch.undo()
    publish(chunks(3, seed=3), out, runtime)  # the next run clears what the failed one left
    assert len(list((out / "documents").iterdir())) == 1
    assert served_ids(out) == {f"doc3-{i}@0" for i in range(3)}
