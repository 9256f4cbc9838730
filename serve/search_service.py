"""The search and update serving logic, apart from HTTP: the index snapshot lives in the replica
that receives the request, so a vector search makes no call to another replica (a text search
makes one, to the embedder).

Each replica loads the snapshot with the index file memory-mapped: replicas on one node share
one page-cache copy of the vectors. The snapshot path and `max_batch_size` are the ingress's
user_config: a new snapshot is loaded beside the old one, off the event loop, and replaces it
by one reference swap, so no request is dropped and none is answered from a half-loaded index.

Batching is one layer, a Coalescer (serve/coalesce.py): while a scan runs, the unfiltered
queries that arrive wait and go together as one matrix in the next scan; a query that finds
the index idle is scanned at once, with no batch wait. Chosen by measurement against no
batching and against @serve.batch in its place (README, Serve bench): @serve.batch forms its
next batch while a scan runs, so under load it queues many small batches that each scan the
whole index.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from refinery.manifest import SnapshotError, update_log_location
from refinery.registry import resolve_snapshot
from refinery.update_log import Delete, UpdateLog, Upsert
from serve.batching import BatchSizeMetric
from serve.canary.split import CANARY, STABLE
from serve.checks import check_items, check_k, check_vectors
from serve.coalesce import Coalescer
from serve.config import IndexUserConfig, LimitsConfig
from serve.embed_service import EmbedService
from serve.errors import bad_request
from serve.protocol import (
    DeleteRequest,
    HitDict,
    PayloadFilter,
    SearchRequest,
    UpdateResponse,
    UpsertRequest,
)
from serve.snapshot import Snapshot

# A query carries the snapshot it was checked against: a switch while it waits in the
# Coalescer must not scan it on a snapshot of another dimension.
Query = tuple[Snapshot, np.ndarray, int]
logger = logging.getLogger("ray.serve")


class SearchService:
    # Scans of up to this many queries split over all threads, for latency: the load is light,
    # so cores are free. A fuller scan means many clients wait and the other cores are busy with
    # the proxy and HTTP; one thread then scans at less CPU per query.
    SPLIT_SCAN_MAX_QUERIES = 8

    # How often a replica applies the updates other replicas logged.
    FOLLOW_INTERVAL_S = 0.25

    def __init__(self, embed: EmbedService, limits: LimitsConfig) -> None:
        self.embed = embed
        self.limits = limits
        # The snapshot of each arm serving now: stable, and during a rollout the canary. Both
        # follow one update log. Replaced whole, never changed in place.
        self.arms: dict[str, Snapshot] = {}
        self.batch_sizes = BatchSizeMetric()
        self._coalescer: Coalescer[Query, list[list[HitDict]]] | None = None
        self._follower: asyncio.Task | None = None
        self.refused: dict[str, str] | None = None  # the last snapshot refused, and why

    @property
    def snapshot(self) -> Snapshot:
        """The stable arm's snapshot: updates are checked against it."""
        return self.arms[STABLE]

    def arm(self, name: str) -> Snapshot:
        """The snapshot answering `name` now; stable's for an arm without one of its own."""
        arms = self.arms
        return arms.get(name, arms[STABLE])

    async def reconfigure(self, user_config: dict[str, Any], canary: str | None = None) -> None:
        """Serve the snapshot of `user_config` as stable and `canary` (a snapshot directory)
        as the canary arm. A snapshot already loaded for either arm is reused: promoting the
        canary, or rolling back to the old stable, loads nothing."""
        cfg = IndexUserConfig.model_validate(user_config)
        # A models:/ snapshot names a directory in the index registry: looked up off the loop.
        cfg.snapshot, canary = await asyncio.to_thread(
            lambda: [resolve_snapshot(path, cfg.registry_uri) for path in (cfg.snapshot, canary)]
        )
        batch = cfg.max_batch_size
        # With batching off (max_batch_size 1) each request scans on its own.
        self._coalescer = Coalescer(self._scan_many, batch) if batch > 1 else None
        log = cfg.update_log or update_log_location(cfg.snapshot)
        loaded = {(s.path, s.log.location): s for s in self.arms.values()}
        wanted = {STABLE: cfg.snapshot, **({CANARY: canary} if canary else {})}
        arms: dict[str, Snapshot] = {}
        self.refused = None
        for arm, path in wanted.items():
            snapshot = loaded.get((path, log))
            if snapshot is None:
                # Loaded and brought up to date off the event loop: searches keep being
                # answered from the old arms until the new snapshot has every logged update.
                snapshot = await asyncio.to_thread(_load_following, path, log)
                if not await self._acceptable(snapshot, arm):
                    continue
            arms[arm] = snapshot
        arms.setdefault(STABLE, self.arms.get(STABLE))
        self.arms = arms  # one reference swap
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow())

    async def _acceptable(self, loaded: Snapshot, arm: str) -> bool:
        """Whether `loaded` may serve: not if its vectors come from another model than the
        queries. A refused snapshot is said why (describe, the log); the arm keeps its old
        snapshot, or a canary goes without one; a replica with no stable one cannot serve."""
        try:
            await self._check_embedder(loaded)
        except SnapshotError as error:
            if STABLE not in self.arms:
                raise
            self.refused = {"arm": arm, "snapshot": loaded.path, "reason": str(error)}
            logger.error("%s snapshot %s refused: %s", arm, loaded.path, error)
            return False
        return True

    async def _check_embedder(self, snapshot: Snapshot) -> None:
        # A snapshot that names no model (vectors from elsewhere) is taken as it is.
        if self.embed.embedder is None or snapshot.manifest.model is None:
            return
        info = await self.embed.info()
        snapshot.manifest.check_embedder(info["model"], info["dim"])

    async def _follow(self) -> None:
        """Keep applying what other replicas log, so every replica answers alike."""
        while True:
            await asyncio.sleep(self.FOLLOW_INTERVAL_S)
            try:
                await asyncio.to_thread(_catch_up, self.arms)
            except Exception:  # a storage hiccup: the next round reads on from the same place
                logger.exception("following the update log %s", self.snapshot.log.location)

    def describe(self) -> dict[str, Any]:
        arms = self.arms
        return {
            **_describe(arms[STABLE]),
            "canary": _describe(arms[CANARY]) if CANARY in arms else None,
            "refused": self.refused,
            "largest_batch": self.batch_sizes.largest,
            "batches": self.batch_sizes.batches,
            "batched_queries": self.batch_sizes.items,
        }

    async def answer(
        self, body: SearchRequest, arm: str = STABLE, arms: dict[str, Snapshot] | None = None
    ) -> dict[str, list[list[HitDict]]]:
        """`arms`: the arms as a caller saw them (default: as they are now); an arm without a
        snapshot is answered by stable."""
        check_k(body.k, self.limits)
        check_items(body.size, "queries", self.limits)
        arms = arms or self.arms
        snapshot = arms.get(arm, arms[STABLE])
        if body.texts is not None:
            vectors = await self.embed.embed(body.texts)
        else:
            vectors = check_vectors(body.vectors, snapshot.manifest.dimension)
        # The hits are already the answer's shape: serialised as they are.
        return {"results": await self.search(vectors, body.k, body.filter, snapshot)}

    async def search(
        self,
        vectors: np.ndarray,
        k: int,
        payload_filter: PayloadFilter | None = None,
        snapshot: Snapshot | None = None,
    ) -> list[list[HitDict]]:
        """Per query vector, its k best hits (the RAG flow retrieves through this too), from
        `snapshot` (the one the vectors were checked against), else the stable one."""
        snapshot = snapshot or self.snapshot
        if payload_filter:
            # A filter restricts the candidates per request: such a search scans on its own.
            return await asyncio.to_thread(snapshot.search, vectors, k, payload_filter)
        if self._coalescer is None:
            return (await self._scan_many([(snapshot, vectors, k)]))[0]
        return await self._coalescer.submit((snapshot, vectors, k))

    async def _scan_many(self, queries: list[Query]) -> list[list[list[HitDict]]]:
        """Several requests' unfiltered queries, one scan per snapshot among them (one, but
        across a switch), split back per request."""
        answers: list[list[list[HitDict]] | None] = [None] * len(queries)
        for snapshot in {id(q[0]): q[0] for q in queries}.values():
            mine = [i for i, q in enumerate(queries) if q[0] is snapshot]
            hits = await self._scan(snapshot, [queries[i][1:] for i in mine])
            for i, answer in zip(mine, hits, strict=True):
                answers[i] = answer
        return answers

    async def _scan(
        self, snapshot: Snapshot, queries: list[tuple[np.ndarray, int]]
    ) -> list[list[list[HitDict]]]:
        matrix = np.ascontiguousarray(np.concatenate([v for v, _ in queries]), dtype=np.float32)
        k_max = max(k for _, k in queries)
        self.batch_sizes.observe(len(matrix))
        threads = 1 if len(matrix) > self.SPLIT_SCAN_MAX_QUERIES else None
        hits = await asyncio.to_thread(snapshot.search, matrix, k_max, None, threads)
        answers, start = [], 0
        for vectors, k in queries:
            answers.append([row[:k] for row in hits[start : start + len(vectors)]])
            start += len(vectors)
        return answers

    async def upsert(self, body: UpsertRequest) -> UpdateResponse:
        check_items(len(body.items), "items", self.limits)
        ids = np.array([item.id for item in body.items], dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise bad_request("item ids must be unique within one request")
        rows: list[Any] = [item.vector for item in body.items]
        to_embed = [i for i, item in enumerate(body.items) if item.vector is None]
        if to_embed:
            # Texts embedded in one call: the embedder batches them.
            embedded = await self.embed.embed([body.items[i].text for i in to_embed])
            for i, vector in zip(to_embed, embedded, strict=True):
                rows[i] = vector.tolist()
        # Checked against the snapshot the update goes to: no await between here and there.
        vectors = check_vectors(rows, self.snapshot.manifest.dimension, name="items[].vector")
        count = await self.apply_upsert(ids, vectors, [item.payload for item in body.items])
        return UpdateResponse(upserted=len(ids), count=count)

    async def delete(self, body: DeleteRequest) -> UpdateResponse:
        check_items(len(body.ids), "ids", self.limits)
        deleted, count = await self.apply_delete(np.array(body.ids, dtype=np.int64))
        return UpdateResponse(deleted=deleted, count=count)

    # Where an update takes effect: logged durably first (the answer waits for it), then
    # applied here at once; the other replicas apply it from the log.
    async def apply_upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict]) -> int:
        """Add or replace vectors with their payloads; the index's count after."""
        snapshot = self.snapshot
        snapshot.check_upsert(ids, vectors, payloads)  # only what every copy can apply is logged
        entries = [
            Upsert(int(i), vector, payload)
            for i, vector, payload in zip(ids, vectors, payloads, strict=True)
        ]
        await asyncio.to_thread(_log_and_apply, self.arms, entries)
        return snapshot.index.ntotal

    async def apply_delete(self, ids: np.ndarray) -> tuple[int, int]:
        """Remove ids (unknown ones ignored); how many went, and the index's count after."""
        snapshot = self.snapshot
        present = snapshot.row_of
        deleted = sum(int(i) in present for i in ids)
        await asyncio.to_thread(_log_and_apply, self.arms, [Delete(tuple(int(i) for i in ids))])
        return deleted, snapshot.index.ntotal


def _load_following(snapshot_dir: str, log_location: str) -> Snapshot:
    snapshot = Snapshot(snapshot_dir)
    snapshot.follow(UpdateLog(log_location))
    return snapshot


def _log_and_apply(arms: dict[str, Snapshot], entries: list[Upsert] | list[Delete]) -> None:
    arms[STABLE].log.append(entries)
    _catch_up(arms)


def _catch_up(arms: dict[str, Snapshot]) -> None:
    for snapshot in arms.values():
        snapshot.catch_up()


def _describe(snapshot: Snapshot) -> dict[str, Any]:
    manifest = snapshot.manifest
    return {
        "snapshot": snapshot.path,
        "version": manifest.version,
        "model": manifest.model,
        "dimension": manifest.dimension,
        "metric": manifest.metric,
        "count": snapshot.index.ntotal,
        "update_log": snapshot.log.location,
        "update_log_position": snapshot.position,
    }
