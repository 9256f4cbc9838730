"""Snapshot loading and search, without Ray: payloads, filters, and mismatched files."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.documents.write import write_snapshot
from refinery.manifest import Manifest
from refinery.update_log import Delete, UpdateLog, Upsert
from serve.errors import SchemaMismatch
from serve.snapshot import Snapshot, SnapshotError

VECTORS = np.eye(4, dtype=np.float32)
IDS = np.array([10, 11, 12, 13], dtype=np.int64)


def write(root: Path, extra: dict | None = None) -> Path:
    """Four documents, one unit vector each, written by the document pipeline's writer."""
    table = pa.table(
        {
            "id": [f"doc-{i}" for i in IDS],
            "index_id": IDS,
            "source": [f"s{i % 2}" for i in IDS],
            "text": [f"doc {i}" for i in IDS],
            **(extra or {}),
        }
    )
    return Path(write_snapshot(str(root), table, VECTORS))


def test_hits_carry_their_payloads_and_filters_restrict_them(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    [hits] = snapshot.search(VECTORS[1:2], 2)
    assert [(h["id"], h["score"], h["payload"]["text"]) for h in hits] == [
        (11, 1.0, "doc 11"),
        (10, 0.0, "doc 10"),
    ]
    [hits] = snapshot.search(VECTORS[1:2], 4, {"source": "s0"})
    assert sorted(h["id"] for h in hits) == [10, 12]
    assert snapshot.search(VECTORS[:2], 3, {"source": ["none"]}) == [[], []]
    with pytest.raises(
        SchemaMismatch, match="unknown filter field.*colour; known: id, source, text"
    ):
        snapshot.search(VECTORS[:1], 1, {"colour": "red"})


def test_index_ids_without_documents_are_rejected_at_load(tmp_path: Path) -> None:
    documents = Manifest.read(str(write(tmp_path))).documents
    (part,) = Path(documents).iterdir()
    pq.write_table(pq.read_table(part).slice(0, 3), part)  # one document lost
    with pytest.raises(SnapshotError, match="no document row for 1 index ids"):
        Snapshot(str(tmp_path / "index"))


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="manifest.json: cannot read manifest"):
        Snapshot(str(tmp_path))


def test_upsert_replaces_and_adds_and_filters_see_the_new_payloads(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    new = np.array([[0, 1, 0, 0], [0, 0, 0, 0.5]], dtype=np.float32)
    snapshot.upsert(np.array([10, 20]), new, [{"source": "s9", "text": "moved"}, {"text": "new"}])
    [hits] = snapshot.search(VECTORS[1:2], 2)
    assert {(h["id"], h["payload"]["text"]) for h in hits} == {(10, "moved"), (11, "doc 11")}
    assert snapshot.index.ntotal == 5
    [hits] = snapshot.search(VECTORS[3:4], 5, {"source": "s0"})
    assert sorted(h["id"] for h in hits) == [12]  # 10 left s0 when it was replaced
    [hits] = snapshot.search(VECTORS[3:4], 1)
    assert (hits[0]["id"], hits[0]["payload"]) == (
        13,
        {"id": "doc-13", "source": "s1", "text": "doc 13"},
    )
    [hits] = snapshot.search(VECTORS[3:4], 5, {"text": "new"})
    assert [(h["id"], h["payload"]["source"]) for h in hits] == [(20, None)]


def test_deleted_ids_never_come_back(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    assert snapshot.delete(np.array([11, 99])) == 1
    [hits] = snapshot.search(VECTORS[1:2], 4)
    assert sorted(h["id"] for h in hits) == [10, 12, 13]
    assert snapshot.search(VECTORS[1:2], 4, {"text": "doc 11"}) == [[]]


def test_upsert_rejects_payloads_that_do_not_fit(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    one = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(SchemaMismatch, match="unknown payload field.*colour"):
        snapshot.check_upsert(np.array([30]), one, [{"colour": "red"}])
    with pytest.raises(SchemaMismatch, match=r"shape \(1, 3\) for 1 ids; .* dimension 4"):
        snapshot.check_upsert(np.array([30]), one[:, :3], [{}])
    snapshot.check_upsert(np.array([30]), one, [{"text": "fits"}])
    with pytest.raises(
        SchemaMismatch, match="unknown payload field.*colour; known: id, source, text"
    ):
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
    return Snapshot(str(write(tmp_path, extra)))


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
    snapshot = Snapshot(str(write(tmp_path)))
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


def race(read_once: Callable[[], None], update: Callable[[int], None], rounds: int) -> list:
    """`read_once` in a loop on another thread while `update(n)` runs `rounds` times here;
    the errors the reader met (it stops at the first)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                read_once()
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(rounds):
            if errors:
                break
            update(n)
    finally:
        done.set()
        thread.join()
    return errors


@pytest.mark.usefixtures("fast_thread_switches")
def test_filtered_searches_racing_updates_see_whole_states(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))

    def update(n: int) -> None:
        ids = np.array([1000 + n % 20, 10 + n % 4])
        snapshot.upsert(ids, VECTORS[:2], [{"source": f"s{n % 2}"}, {"source": "s0"}])
        snapshot.delete(ids[:1])

    # The filter's half of a search, alone: it reads the rows and their live mask together.
    assert race(lambda: snapshot.allowed_ids({"source": "s0"}), update, 2000) == []


def test_an_index_file_that_contradicts_its_manifest_is_refused(tmp_path: Path) -> None:
    snapshot_dir = write(tmp_path)
    manifest = Manifest.read(str(snapshot_dir))
    Manifest(**{**manifest.__dict__, "dimension": 8}).write(str(snapshot_dir))
    with pytest.raises(SnapshotError, match="index has dimension 4 .* the manifest says 8"):
        Snapshot(str(snapshot_dir))


def entries_for(n: int) -> list[Upsert | Delete]:
    """Update n of a burst: an upsert (new id or a replacement), and now and then a delete."""
    i = 10 + n % 37
    vector = np.array([n % 3, n % 5, 1, (n * 7) % 11], dtype=np.float32)
    upsert = Upsert(i, vector, {"source": f"s{n % 2}", "text": f"doc {i} v{n}"})
    return [upsert, Delete((10 + (n * 5) % 37,))] if n % 4 == 3 else [upsert]


def answers(snapshot: Snapshot) -> list:
    queries = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=np.float32)
    return [snapshot.search(queries, 50), snapshot.search(queries, 50, {"source": "s1"})]


def test_two_copies_following_one_log_answer_identically(tmp_path: Path) -> None:
    snapshot_dir = str(write(tmp_path / "snap"))
    log = UpdateLog(str(tmp_path / "log"))
    early, late = Snapshot(snapshot_dir), Snapshot(snapshot_dir)
    early.follow(log)
    for n in range(300):
        log.append(entries_for(n))
        if n % 7 == 0:
            early.catch_up()  # one copy follows the burst closely, the other once at its end
    assert early.catch_up() == late.follow(log) == 300
    assert answers(early) == answers(late)
    assert early.index.ntotal == late.index.ntotal == len(early.row_of)
    restarted = Snapshot(snapshot_dir)
    restarted.follow(log)
    assert answers(restarted) == answers(early)


def test_records_caught_up_together_end_as_applied_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_dir = str(write(tmp_path / "snap"))
    log = UpdateLog(str(tmp_path / "log"))
    for n in range(120):
        log.append(entries_for(n))
        if n == 110:  # late: no later update of the same ids hides what a batch lost
            log.append([Upsert(99, VECTORS[0], {"colour": "red"})])  # fits no copy: skipped
    one_by_one = Snapshot(snapshot_dir)
    for record in log.read():
        with contextlib.suppress(SchemaMismatch):
            one_by_one.apply(record.entries)
    monkeypatch.setattr(Snapshot, "APPLY_BATCH_ENTRIES", 16)  # batches end mid-burst
    together = Snapshot(snapshot_dir)
    assert together.follow(log) == 121
    assert answers(together) == answers(one_by_one)
    assert sorted(together.row_of) == sorted(one_by_one.row_of) and 99 not in together.row_of


def test_applying_entries_again_changes_nothing(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    burst = [entry for n in range(40) for entry in entries_for(n)]
    snapshot.apply(burst)
    once = answers(snapshot)
    snapshot.apply(burst)
    assert answers(snapshot) == once
    [hits] = snapshot.search(VECTORS[:1], 50, {"text": "doc 10"})
    assert hits == []  # id 10 was replaced: its snapshot payload no longer matches
    with pytest.raises(TypeError, match="not an update entry: tuple"):
        snapshot.apply([(10, VECTORS[0])])  # type: ignore[list-item]


def test_the_log_is_applied_after_the_position_the_manifest_records(tmp_path: Path) -> None:
    snapshot_dir = write(tmp_path / "snap")
    log = UpdateLog(str(tmp_path / "log"))
    log.append([Upsert(50, VECTORS[0], {"text": "in the snapshot"})])
    log.append([Delete((11,)), Upsert(51, VECTORS[1], {"text": "after it"})])
    manifest = Manifest.read(str(snapshot_dir))
    Manifest(**{**manifest.__dict__, "update_log_position": 1}).write(str(snapshot_dir))
    snapshot = Snapshot(str(snapshot_dir))
    assert snapshot.follow(log) == 2
    assert sorted(snapshot.row_of) == [10, 12, 13, 51]
    log.append([Delete((51,))])
    assert snapshot.catch_up() == 3 and 51 not in snapshot.row_of


def test_a_record_that_does_not_fit_is_skipped_by_every_copy(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path / "snap")))
    log = UpdateLog(str(tmp_path / "log"))
    log.append([Upsert(60, VECTORS[0], {"colour": "red"})])
    log.append([Upsert(61, VECTORS[0], {}), Upsert(62, np.ones(3, dtype=np.float32), {})])
    log.append([Upsert(63, VECTORS[0], ["not", "a", "dict"])])  # type: ignore[arg-type]
    log.append([Upsert(64, VECTORS[0], {}), Delete((10,)), Upsert(65, VECTORS[0], {"x": 1})])
    log.append([Upsert(66, VECTORS[0], {"text": "fits"})])
    assert snapshot.follow(log) == 5
    assert sorted(snapshot.row_of) == [10, 11, 12, 13, 66]  # a record applies whole or not at all
    with pytest.raises(RuntimeError, match="call follow"):
        Snapshot(str(tmp_path / "snap" / "index")).catch_up()


def _stream_updates(location: str, acked: str) -> None:
    log = UpdateLog(location)
    fd = os.open(acked, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for n in range(10**9):
        i = 1000 + n
        vector = np.array([1, n % 7, 0, 0], dtype=np.float32)
        log.append([Upsert(i, vector, {"text": f"doc {i}"})])
        os.write(fd, f"upsert {i}\n".encode())
        if n % 3 == 2:
            log.append([Delete((i - 1,))])
            os.write(fd, f"delete {i - 1}\n".encode())


def test_a_writer_killed_while_updates_stream_loses_and_resurrects_nothing(
    tmp_path: Path,
) -> None:
    snapshot_dir = str(write(tmp_path / "snap"))
    location, acked = str(tmp_path / "log"), tmp_path / "acked"
    following = Snapshot(snapshot_dir)
    following.follow(UpdateLog(location))
    writer = multiprocessing.get_context("spawn").Process(
        target=_stream_updates, args=(location, str(acked))
    )
    writer.start()
    deadline = time.monotonic() + 60
    while len(acked.read_text().splitlines() if acked.exists() else []) < 60:
        assert time.monotonic() < deadline, "the writer process appended too little"
        following.catch_up()
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    restarted = Snapshot(snapshot_dir)
    restarted.follow(UpdateLog(location))
    following.catch_up()
    confirmed = [line.split() for line in acked.read_text().splitlines()]
    deleted = {int(i) for op, i in confirmed if op == "delete"}
    upserted = {int(i) for op, i in confirmed if op == "upsert"}
    for snapshot in (restarted, following):
        served = set(snapshot.row_of)
        assert upserted - deleted <= served  # no acknowledged upsert lost
        assert not deleted & served  # no acknowledged delete undone
        assert answers(snapshot) == answers(restarted)


def test_single_upserts_keep_the_table_in_few_pieces_and_reclaim_replaced_rows(
    tmp_path: Path,
) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    one = VECTORS[:1]
    for n in range(2000):
        snapshot.upsert(np.array([100 + n]), one, [{"text": f"doc {n}"}])
        # No merge of the whole table per upsert: it stays in a few geometrically sized pieces.
        assert snapshot.rows.chunks <= 2 * np.log2(snapshot.rows.state.table.num_rows)
    for n in range(2000):
        snapshot.upsert(np.array([100]), one, [{"text": f"again {n}"}])
        snapshot.delete(np.array([101 + n]))
    state = snapshot.rows.state
    assert len(state.row_of) == 5
    # Replaced and deleted rows are reclaimed once they outnumber the live ones.
    assert state.table.num_rows <= 2 * len(state.row_of) + 1
    [hits] = snapshot.search(one, 10, {"text": "again 1999"})
    assert [h["id"] for h in hits] == [100]


@pytest.mark.usefixtures("fast_thread_switches")
def test_searches_racing_updates_and_compactions_get_their_own_payloads(tmp_path: Path) -> None:
    snapshot = Snapshot(str(write(tmp_path)))
    # Many lookups per call, so that compactions land between a lookup and its payloads.
    wanted = [1000 + n % 20 for n in range(2000)]

    def search() -> None:
        for hits in snapshot.search(VECTORS, 8):
            # A compaction renumbers rows: a hit must never carry another id's payload.
            assert all(h["payload"]["text"].split()[1] == str(h["id"]) for h in hits)
        rows, state = snapshot.rows.resolve(wanted)
        found = [(i, row) for i, row in zip(wanted, rows, strict=True) if row is not None]
        taken = state.table["index_id"].take(pa.array([r for _, r in found], pa.int64()))
        assert taken.to_pylist() == [i for i, _ in found]

    def update(n: int) -> None:
        ids = np.array([1000 + n % 20, 10 + n % 4])
        snapshot.upsert(ids, VECTORS[:2], [{"text": f"doc {i} v{n}"} for i in ids.tolist()])
        snapshot.delete(ids[:1])

    assert race(search, update, 1500) == []
