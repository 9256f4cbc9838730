"""Snapshot loading and search, without Ray: payloads, filters, and mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vectorindex
from serve.snapshot import Snapshot, SnapshotError

VECTORS = np.eye(4, dtype=np.float32)
IDS = np.array([10, 11, 12, 13], dtype=np.int64)


def write(root: Path, document_ids: np.ndarray) -> Path:
    (root / "documents").mkdir(parents=True)
    (root / "index").mkdir()
    table = pa.table(
        {
            "index_id": document_ids,
            "source": [f"s{i % 2}" for i in document_ids],
            "text": [f"doc {i}" for i in document_ids],
        }
    )
    pq.write_table(table, root / "documents" / "part-0.parquet")
    index = vectorindex.IndexFlatIP(4)
    index.add_with_ids(VECTORS, IDS)
    index.save(str(root / "index" / "index.bin"))
    manifest = {
        "dimension": 4,
        "metric": "ip",
        "index": str(root / "index" / "index.bin"),
        "documents": str(root / "documents"),
    }
    (root / "index" / "manifest.json").write_text(json.dumps(manifest))
    return root / "index"


def test_hits_carry_their_payloads_and_filters_restrict_them(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    [hits] = snapshot.search(VECTORS[1:2], 2)
    assert [(h.id, h.score, h.payload["text"]) for h in hits] == [
        (11, 1.0, "doc 11"),
        (10, 0.0, "doc 10"),
    ]
    [hits] = snapshot.search(VECTORS[1:2], 4, {"source": "s0"})
    assert sorted(h.id for h in hits) == [10, 12]
    assert snapshot.search(VECTORS[:2], 3, {"source": ["none"]}) == [[], []]
    with pytest.raises(KeyError, match="unknown filter field.*colour; known: source, text"):
        snapshot.search(VECTORS[:1], 1, {"colour": "red"})


def test_index_ids_without_documents_are_rejected_at_load(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no document row for 1 index ids"):
        Snapshot(str(write(tmp_path, IDS[:3])))


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="manifest.json: cannot read manifest"):
        Snapshot(str(tmp_path))
