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
    assert [(h["id"], h["score"], h["payload"]["text"]) for h in hits] == [
        (11, 1.0, "doc 11"),
        (10, 0.0, "doc 10"),
    ]
    [hits] = snapshot.search(VECTORS[1:2], 4, {"source": "s0"})
    assert sorted(h["id"] for h in hits) == [10, 12]
    assert snapshot.search(VECTORS[:2], 3, {"source": ["none"]}) == [[], []]
    with pytest.raises(KeyError, match="unknown filter field.*colour; known: source, text"):
        snapshot.search(VECTORS[:1], 1, {"colour": "red"})


def test_index_ids_without_documents_are_rejected_at_load(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no document row for 1 index ids"):
        Snapshot(str(write(tmp_path, IDS[:3])))


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="manifest.json: cannot read manifest"):
        Snapshot(str(tmp_path))


def test_upsert_replaces_and_adds_and_filters_see_the_new_payloads(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    new = np.array([[0, 1, 0, 0], [0, 0, 0, 0.5]], dtype=np.float32)
    snapshot.upsert(np.array([10, 20]), new, [{"source": "s9", "text": "moved"}, {"text": "new"}])
    [hits] = snapshot.search(VECTORS[1:2], 2)
    assert {(h["id"], h["payload"]["text"]) for h in hits} == {(10, "moved"), (11, "doc 11")}
    assert snapshot.index.ntotal == 5
    [hits] = snapshot.search(VECTORS[3:4], 5, {"source": "s0"})
    assert sorted(h["id"] for h in hits) == [12]  # 10 left s0 when it was replaced
    [hits] = snapshot.search(VECTORS[3:4], 1)
    assert (hits[0]["id"], hits[0]["payload"]) == (13, {"source": "s1", "text": "doc 13"})
    [hits] = snapshot.search(VECTORS[3:4], 5, {"text": "new"})
    assert [(h["id"], h["payload"]["source"]) for h in hits] == [(20, None)]


def test_deleted_ids_never_come_back(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    assert snapshot.delete(np.array([11, 99])) == 1
    [hits] = snapshot.search(VECTORS[1:2], 4)
    assert sorted(h["id"] for h in hits) == [10, 12, 13]
    assert snapshot.search(VECTORS[1:2], 4, {"text": "doc 11"}) == [[]]


def test_upsert_rejects_payloads_that_do_not_fit(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    one = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown payload field.*colour; known: source, text"):
        snapshot.upsert(np.array([30]), one, [{"colour": "red"}])
    with pytest.raises(ValueError, match="does not match the snapshot's columns"):
        snapshot.upsert(np.array([30]), one, [{"text": ["not", "a", "string"]}])
    assert snapshot.index.ntotal == 4 and 30 not in snapshot.row_of
