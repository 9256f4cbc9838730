"""The update log (refinery/update_log.py): durable, ordered, shared by several writer processes,
and a torn or corrupt record is skipped, never applied."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from refinery.update_log import Delete, Record, UpdateLog, UpdateLogError, Upsert, encode

# A real second process: fork would copy the test runner's threads' locks.
SPAWN = multiprocessing.get_context("spawn")


def upsert(i: int, **payload: object) -> Upsert:
    return Upsert(i, np.array([i, 0.5, -1.25], dtype=np.float32), dict(payload))


def ids_of(records: list[Record]) -> list[int]:
    return [e.id for r in records for e in r.entries if isinstance(e, Upsert)]


def test_appends_read_back_in_order_and_after_a_position(tmp_path: Path) -> None:
    log = UpdateLog(str(tmp_path / "log"))
    assert list(log.read()) == [] and log.last() == 0
    first = log.append([upsert(1, text="one", tags=["a"]), upsert(2)])
    second = log.append([Delete((1, 7))])
    third = log.append([upsert(3, rank=3)])
    assert (first, second, third) == (1, 2, 3)
    records = list(UpdateLog(str(tmp_path / "log")).read())
    assert [r.position for r in records] == [1, 2, 3]
    one, two = records[0].entries
    assert (one.id, one.payload, two.payload) == (1, {"text": "one", "tags": ["a"]}, {})
    assert one.vector.dtype == np.float32 and one.vector.tolist() == [1, 0.5, -1.25]
    assert records[1].entries == [Delete((1, 7))]
    assert [r.position for r in log.read(after=2)] == [3]
    assert list(log.read(after=3)) == []


def test_every_append_is_its_own_synced_file(tmp_path: Path) -> None:
    log = UpdateLog(str(tmp_path))
    log.append([upsert(1)])
    log.append([upsert(2)])
    # Durable means on disk under its final name, with no temporary file left behind.
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000001.entry",
        "00000000000000000002.entry",
    ]


def _append_many(location: str, writer: int, count: int, acked: str) -> None:
    log = UpdateLog(location)
    with open(acked, "a") as out:
        for n in range(count):
            i = writer * 100_000 + n
            position = log.append([upsert(i), Delete((i + 1,))])
            out.write(f"{position} {i}\n")
            out.flush()


def test_writer_processes_appending_together_lose_and_repeat_nothing(tmp_path: Path) -> None:
    location, writers, count = str(tmp_path / "log"), 4, 40
    procs = [
        SPAWN.Process(target=_append_many, args=(location, w, count, str(tmp_path / f"ack{w}")))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    records = list(UpdateLog(location).read())
    assert [r.position for r in records] == list(range(1, writers * count + 1))
    # Each record is one append whole: its upsert and its delete, never another writer's.
    assert all(r.entries[1] == Delete((r.entries[0].id + 1,)) for r in records)
    at = {r.position: r.entries[0].id for r in records}
    lines = [(tmp_path / f"ack{w}").read_text().splitlines() for w in range(writers)]
    acked = [line.split() for each in lines for line in each]
    assert sorted(at.values()) == sorted(int(i) for _, i in acked)
    assert all(at[int(position)] == int(i) for position, i in acked)


def test_a_torn_or_corrupt_record_is_skipped_and_appends_go_on(tmp_path: Path) -> None:
    log = UpdateLog(str(tmp_path))
    log.append([upsert(1)])
    whole = encode([upsert(2)])
    (tmp_path / "00000000000000000002.entry").write_bytes(whole[:-3])  # torn by a crash
    flipped = bytearray(encode([upsert(3)]))
    flipped[-2] ^= 0xFF
    (tmp_path / "00000000000000000003.entry").write_bytes(bytes(flipped))
    (tmp_path / ".tmp-left-by-a-crash").write_bytes(whole[:5])
    assert log.append([upsert(4)]) == 4
    records = list(UpdateLog(str(tmp_path)).read())
    assert [(r.position, ids_of([r])) for r in records] == [(1, [1]), (4, [4])]


def _append_forever(location: str, acked: str) -> None:
    log = UpdateLog(location)
    fd = os.open(acked, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(10**9):
        position = log.append([upsert(i)])
        os.write(fd, f"{position} {i}\n".encode())


def test_a_writer_killed_mid_loop_loses_no_acknowledged_append(tmp_path: Path) -> None:
    location, acked = str(tmp_path / "log"), tmp_path / "acked"
    proc = SPAWN.Process(target=_append_forever, args=(location, str(acked)))
    proc.start()
    deadline = time.monotonic() + 60
    while (not acked.exists() or len(acked.read_text().splitlines()) < 50) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    restarted = UpdateLog(location)
    after_kill = restarted.append([upsert(-1)])
    records = list(restarted.read())
    at = {r.position: ids_of([r]) for r in records}
    confirmed = [line.split() for line in acked.read_text().splitlines()]
    assert len(confirmed) >= 50
    assert all(at[int(position)] == [int(i)] for position, i in confirmed)
    # At most one append was in flight: logged but not yet acknowledged when killed.
    assert after_kill in (len(confirmed) + 1, len(confirmed) + 2)
    assert [r.position for r in records] == list(range(1, after_kill + 1))
    assert len(ids_of(records)) == len(set(ids_of(records)))


def test_bad_updates_are_refused_with_the_reason(tmp_path: Path) -> None:
    log = UpdateLog(str(tmp_path))
    with pytest.raises(UpdateLogError, match="at least one entry"):
        log.append([])
    with pytest.raises(UpdateLogError, match="id 5: a vector is one row of finite numbers"):
        log.append([Upsert(5, np.array([1.0, np.nan]), {})])
    with pytest.raises(UpdateLogError, match="id 6: payload is not JSON"):
        log.append([Upsert(6, np.ones(2), {"when": object()})])
    with pytest.raises(UpdateLogError, match="id '8': ids are integers"):
        log.append([Delete((7, "8"))])
    with pytest.raises(UpdateLogError, match="id 1.5: ids are integers"):
        log.append([Upsert(1.5, np.ones(2), {})])  # type: ignore[arg-type]
    with pytest.raises(UpdateLogError, match="not an update entry: str"):
        log.append(["upsert 7"])  # type: ignore[list-item]
    with pytest.raises(UpdateLogError, match="position -1"):
        next(log.read(after=-1))
    assert log.last() == 0


def test_object_storage_keeps_one_object_per_append() -> None:
    log = UpdateLog("mock:///bucket/log")
    assert [log.append([upsert(i)]) for i in range(3)] == [1, 2, 3]
    assert [ids_of([r]) for r in log.read(after=1)] == [[1], [2]]
    assert log.last() == 3
