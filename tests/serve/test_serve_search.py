"""The search serving class on a plain event loop (no Ray): the one batching layer, and a
snapshot switch while searches run, to a snapshot of another dimension."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.documents.write import write_snapshot
from refinery.manifest import SnapshotError
from serve.config import LimitsConfig
from serve.embed_service import EmbedService
from serve.errors import APIError, SchemaMismatch
from serve.protocol import DeleteRequest, SearchRequest, UpsertRequest
from serve.search_service import SearchService
from serve.snapshot import Snapshot


def write(root: Path, dimension: int, first_id: int, model: str | None = None) -> str:
    """A snapshot of `dimension` unit vectors, one per axis, ids from first_id, written by the
    document pipeline's writer."""
    ids = np.arange(first_id, first_id + dimension, dtype=np.int64)
    table = pa.table(
        {
            "id": [f"doc-{i}" for i in ids],
            "index_id": ids,
            "text": [f"doc {i}" for i in ids],
        }
    )
    return write_snapshot(str(root), table, np.eye(dimension, dtype=np.float32), model)


def service() -> SearchService:
    # No embedder: every search here is by vector.
    limits = LimitsConfig()
    return SearchService(EmbedService(None, limits), limits)


def top_id(answer: dict) -> int:
    return answer["results"][0][0]["id"]


def test_concurrent_searches_share_scans_and_a_lone_one_goes_at_once(tmp_path: Path) -> None:
    search = service()

    async def scenario() -> list[dict]:
        await search.reconfigure({"snapshot": write(tmp_path, 8, 100), "max_batch_size": 64})
        lone = await search.answer(SearchRequest(vectors=[np.eye(8)[0].tolist()], k=1))
        bodies = [SearchRequest(vectors=[np.eye(8)[i % 8].tolist()], k=2) for i in range(40)]
        return [lone, *await asyncio.gather(*(search.answer(body) for body in bodies))]

    answers = asyncio.run(scenario())
    assert [top_id(a) for a in answers] == [100] + [100 + i % 8 for i in range(40)]
    assert all(len(a["results"][0]) == 2 for a in answers[1:])
    described = search.describe()
    assert described["batched_queries"] == 41
    # The first query found the index idle and was scanned alone; the 40 shared fewer scans.
    assert described["batches"] < 41 and described["largest_batch"] > 1


def test_a_snapshot_switch_under_searches_moves_every_answer_to_the_new_one(
    tmp_path: Path,
) -> None:
    search = service()
    first = write(tmp_path / "first", 4, 100)
    second = write(tmp_path / "second", 8, 500)

    async def scenario() -> tuple[list[int], list[int]]:
        await search.reconfigure({"snapshot": first, "max_batch_size": 64})
        ids: list[int] = []
        statuses: list[int] = []
        switched = asyncio.ensure_future(
            search.reconfigure({"snapshot": second, "max_batch_size": 64})
        )
        while not switched.done() or ids[-1:] != [500]:
            # The dimension is the current snapshot's: 4 before the switch, 8 after. Read and
            # checked with no await between, so the query fits the snapshot that answers it.
            dimension = search.describe()["dimension"]
            body = SearchRequest(vectors=[np.eye(dimension)[0].tolist()], k=1)
            ids.append(top_id(await search.answer(body)))
        await switched
        stale = SearchRequest(vectors=[np.eye(4)[0].tolist()], k=1)
        with pytest.raises(APIError, match="dimension 4; the index has dimension 8") as refused:
            await search.answer(stale)
        statuses.append(refused.value.status)
        return ids, statuses

    ids, statuses = asyncio.run(scenario())
    assert ids[0] == 100 and ids[-1] == 500 and set(ids) == {100, 500}
    assert np.all(np.diff([i == 500 for i in ids]) >= 0)  # never back to the old snapshot
    assert statuses == [400]
    assert search.describe()["snapshot"] == second


def test_queries_waiting_for_a_scan_across_a_switch_are_scanned_on_the_snapshot_they_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = service()
    first = write(tmp_path / "first", 4, 100)
    second = write(tmp_path / "second", 8, 500)
    scan_started, release_scan = threading.Event(), threading.Event()
    unheld_search = Snapshot.search

    def held_search(self: Snapshot, *args: object) -> list:
        scan_started.set()
        release_scan.wait(timeout=30)  # the first scan holds until the switch is done
        return unheld_search(self, *args)

    async def scenario() -> list[dict]:
        await search.reconfigure({"snapshot": first, "max_batch_size": 64})
        monkeypatch.setattr(Snapshot, "search", held_search)
        body = SearchRequest(vectors=[np.eye(4)[0].tolist()], k=1)
        scanning = asyncio.ensure_future(search.answer(body))
        await asyncio.to_thread(scan_started.wait, 30)
        waiting = [asyncio.ensure_future(search.answer(body)) for _ in range(5)]
        await asyncio.sleep(0)  # checked against dimension 4, queued behind the scan
        await search.reconfigure({"snapshot": second, "max_batch_size": 64})
        release_scan.set()
        return await asyncio.gather(scanning, *waiting)

    answers = asyncio.run(scenario())
    assert [top_id(a) for a in answers] == [100] * 6
    assert search.describe()["snapshot"] == second


def test_updates_are_logged_durably_and_every_replica_applies_them(tmp_path: Path) -> None:
    """Two replicas of one snapshot: an update taken by either reaches both through the log,
    and a replica started afterwards (a restart) neither loses nor resurrects any."""
    snapshot = write(tmp_path, 4, 100)
    config = {"snapshot": snapshot, "max_batch_size": 64}
    new_vector = [0.0, 0.0, 0.6, 0.8]

    async def ids_near(search: SearchService, vector: list[float]) -> list[int]:
        answer = await search.answer(SearchRequest(vectors=[vector], k=10))
        return [hit["id"] for hit in answer["results"][0]]

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        first, second = service(), service()
        await first.reconfigure(config)
        await second.reconfigure(config)
        await first.upsert(UpsertRequest(items=[{"id": 7, "vector": new_vector}]))
        deleted = await second.delete(DeleteRequest(ids=[100, 999]))
        assert (deleted.deleted, deleted.count) == (1, 4)  # 999 was never there
        await asyncio.sleep(SearchService.FOLLOW_INTERVAL_S * 4)  # both follow the log
        restarted = service()
        await restarted.reconfigure(config)
        return [await ids_near(s, new_vector) for s in (first, second, restarted)]

    answers = asyncio.run(scenario())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 7 and 100 not in answers[0] and sorted(answers[0]) == [7, 101, 102, 103]
    assert (tmp_path / "updates").is_dir()  # beside the snapshot folder


def test_an_upsert_that_does_not_fit_is_refused_before_it_is_logged(tmp_path: Path) -> None:
    search = service()

    async def scenario() -> None:
        await search.reconfigure({"snapshot": write(tmp_path, 4, 100)})
        with pytest.raises(SchemaMismatch, match="colour"):
            await search.upsert(
                UpsertRequest(items=[{"id": 7, "vector": [1, 0, 0, 0], "payload": {"colour": 1}}])
            )

    asyncio.run(scenario())
    assert search.snapshot.log.last() == 0


class FixedEmbedder(EmbedService):
    """What the embedder deployment says of itself, without one (its info is asked once)."""

    def __init__(self, model: str, dim: int) -> None:
        super().__init__(embedder=object(), limits=LimitsConfig())
        self._info = {"model": model, "dim": dim}


def test_a_snapshot_from_another_model_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    search = SearchService(FixedEmbedder("minilm", 4), LimitsConfig())
    ours = write(tmp_path / "ours", 4, 100, model="minilm")
    theirs = write(tmp_path / "theirs", 4, 500, model="e5-small")

    async def scenario() -> dict:
        await search.reconfigure({"snapshot": ours})
        await search.reconfigure({"snapshot": theirs})
        return await search.answer(SearchRequest(vectors=[[1, 0, 0, 0]], k=1))

    assert top_id(asyncio.run(scenario())) == 100
    refused = search.describe()["refused"]
    assert refused["snapshot"] == theirs and "'e5-small'" in refused["reason"]

    alone = SearchService(FixedEmbedder("minilm", 4), LimitsConfig())
    with pytest.raises(SnapshotError, match="refusing this snapshot"):
        asyncio.run(alone.reconfigure({"snapshot": theirs}))
