"""Snapshot loading and search, without Ray: payloads, filters, and mismatched files."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vectorindex
from refinery.manifest import Manifest
from serve.errors import SchemaMismatch
from serve.snapshot import Snapshot, SnapshotError

VECTORS = np.eye(4, dtype=np.float32)
IDS = np.array([10, 11, 12, 13], dtype=np.int64)


def write(root: Path, document_ids: np.ndarray, extra: dict | None = None) -> Path:
    (root / "documents").mkdir(parents=True)
    (root / "index").mkdir()
    table = pa.table(
        {
            "index_id": document_ids,
            "source": [f"s{i % 2}" for i in document_ids],
            "text": [f"doc {i}" for i in document_ids],
            **(extra or {}),
        }
    )
    pq.write_table(table, root / "documents" / "part-0.parquet")
    index = vectorindex.IndexFlatIP(4)
    index.add_with_ids(VECTORS, IDS)
    index.save(str(root / "index" / "index.bin"))
    Manifest(
        model=None,
        dimension=4,
        metric="ip",
        count=len(document_ids),
        index=str(root / "index" / "index.bin"),
        documents=str(root / "documents"),
    ).write(str(root / "index"))
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
    with pytest.raises(SchemaMismatch, match="unknown filter field.*colour; known: source, text"):
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
    with pytest.raises(SchemaMismatch, match="unknown payload field.*colour; known: source, text"):
        snapshot.upsert(np.array([30]), one, [{"colour": "red"}])
    with pytest.raises(SchemaMismatch, match="does not match the snapshot's columns"):
        snapshot.upsert(np.array([30]), one, [{"text": ["not", "a", "string"]}])
    assert snapshot.index.ntotal == 4 and 30 not in snapshot.row_of


@pytest.fixture
def typed(tmp_path: Path) -> Snapshot:
    """A snapshot with a column of each type a filter can match, and one it cannot."""
    extra = {
        "rank": pa.array([1, 2, 3, 4], pa.int64()),
        "weight": pa.array([0.5, 1.0, 1.5, 2.0], pa.float32()),
        "draft": [True, False, True, False],
        "tags": [["a"], ["b"], [], ["a", "b"]],
    }
    return Snapshot(str(write(tmp_path, IDS, extra)))


@pytest.mark.parametrize(
    ("payload_filter", "ids"),
    [
        ({"rank": 2}, [11]),
        ({"rank": [1, 4]}, [10, 13]),
        ({"weight": 1}, [11]),
        ({"weight": [0.5, 2.0]}, [10, 13]),
        ({"draft": True}, [10, 12]),
        ({"source": "s1", "draft": False}, [11, 13]),
    ],
)
def test_filters_match_values_of_their_column_type(
    typed: Snapshot, payload_filter: dict, ids: list[int]
) -> None:
    [hits] = typed.search(VECTORS[:1], 4, payload_filter)
    assert sorted(h["id"] for h in hits) == ids


@pytest.mark.parametrize(
    ("payload_filter", "message"),
    [
        ({"source": 1}, "'source': 1 does not fit the column's type string"),
        ({"source": ["s0", True]}, "'source': True does not fit the column's type string"),
        # Arrow would cast 1.5 to 1 and match rank 1.
        ({"rank": 1.5}, "'rank': 1.5 does not fit the column's type int64"),
        ({"rank": "1"}, "'rank': '1' does not fit the column's type int64"),
        ({"rank": True}, "'rank': True does not fit the column's type int64"),
        ({"rank": 2**63}, "'rank': 9223372036854775808 does not fit the column's type int64"),
        ({"weight": "heavy"}, "'weight': 'heavy' does not fit the column's type float"),
        ({"draft": 1}, "'draft': 1 does not fit the column's type bool"),
        ({"tags": "a"}, "'tags': 'a' does not fit the column's type list<"),
    ],
)
def test_filter_values_of_another_type_are_refused(
    typed: Snapshot, payload_filter: dict, message: str
) -> None:
    with pytest.raises(SchemaMismatch, match=message):
        typed.search(VECTORS[:1], 4, payload_filter)


def test_an_emptied_index_has_no_hits(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    assert snapshot.delete(IDS) == 4
    assert snapshot.search(VECTORS[:2], 3) == [[], []]
    assert snapshot.search(VECTORS[:1], 3, {"source": "s0"}) == [[]]
    snapshot.upsert(IDS[:1], VECTORS[:1], [{"text": "back"}])
    [hits] = snapshot.search(VECTORS[:1], 3)
    assert [(h["id"], h["payload"]["text"]) for h in hits] == [(10, "back")]


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """Switch threads often, so a reader lands inside an update's steps if it can."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_thread_switches")
def test_filtered_searches_racing_updates_see_whole_states(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path, IDS)))
    errors: list[BaseException] = []
    done = threading.Event()

    def search() -> None:
        # The filter's half of a search, alone: it reads the rows and their live mask together.
        while not done.is_set():
            try:
                snapshot.allowed_ids({"source": "s0"})
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                return

    reader = threading.Thread(target=search)
    reader.start()
    try:
        for n in range(2000):
            if errors:
                break
            ids = np.array([1000 + n % 20, 10 + n % 4])
            snapshot.upsert(ids, VECTORS[:2], [{"source": f"s{n % 2}"}, {"source": "s0"}])
            snapshot.delete(ids[:1])
    finally:
        done.set()
        reader.join()
    assert errors == []


def test_an_index_file_that_contradicts_its_manifest_is_refused(tmp_path: Path) -> None:
    snapshot_dir = write(tmp_path, IDS)
    manifest = Manifest.read(str(snapshot_dir))
    Manifest(**{**manifest.__dict__, "dimension": 8}).write(str(snapshot_dir))
    with pytest.raises(SnapshotError, match="index has dimension 4 .* the manifest says 8"):
        Snapshot(str(snapshot_dir))
