"""IndexDeployment: a vectorindex snapshot behind @serve.batch, so concurrent single queries
become one matrix search (the index releases the GIL, so the event loop keeps accepting).

The snapshot path and the batch settings are the deployment's user_config: redeploying with a
new snapshot loads it beside the old one and switches atomically, so no request is dropped
and none is answered from a half-loaded index.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from serve.batching import BatchSizeMetric, apply_batching
from serve.config import IndexDeploymentConfig
from serve.protocol import HitDict, PayloadFilter
from serve.snapshot import Snapshot


# @serve.batch never batches more than max_ongoing_requests queries: room for big batches.
@serve.deployment(
    name="IndexDeployment", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256
)
class IndexDeployment:
    # Batches of up to this many queries split their scan over all threads, for latency: the
    # load is light, so cores are free. A fuller batch means many clients wait and the other
    # cores are busy with the proxy and the ingress; one thread then scans at less CPU per query
    # (a split scan costs about a third more on 2 shared cores).
    SPLIT_SCAN_MAX_QUERIES = 8

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.batch_sizes = BatchSizeMetric()
        # Set while no batch is searching; see search().
        self._index_idle = asyncio.Event()
        self._index_idle.set()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = IndexDeploymentConfig.model_validate(user_config)
        apply_batching(self._search_one, cfg.batching.model_dump())
        if self.snapshot is None or self.snapshot.path != cfg.snapshot:
            # Loads off the event loop: searches keep being answered from the old snapshot.
            self.snapshot = await asyncio.to_thread(Snapshot, cfg.snapshot)

    def describe(self) -> dict[str, Any]:
        manifest = self.snapshot.manifest
        return {
            "snapshot": self.snapshot.path,
            "model": manifest.model,
            "dimension": manifest.dimension,
            "metric": manifest.metric,
            "count": self.snapshot.index.ntotal,
            "largest_batch": self.batch_sizes.largest,
            "batches": self.batch_sizes.batches,
            "batched_queries": self.batch_sizes.items,
        }

    async def search(
        self, vectors: np.ndarray, k: int, payload_filter: PayloadFilter | None = None
    ) -> list[list[HitDict]]:
        if payload_filter:
            # Filtered queries restrict the candidate set per request, so they skip the batcher.
            return await asyncio.to_thread(self.snapshot.search, vectors, k, payload_filter)
        # @serve.batch forms the next batch while one searches, from the few queries of a
        # batch_wait_timeout_s window, and queues it: under load that makes many small batches
        # that each scan the whole index. Queries that arrive during a search wait here and
        # join the batcher together when it ends, so each scan answers all of them.
        await self._index_idle.wait()
        return list(await asyncio.gather(*(self._search_one((row, k)) for row in vectors)))

    async def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict]) -> int:
        snapshot = self.snapshot
        await asyncio.to_thread(snapshot.upsert, ids, vectors, payloads)
        return snapshot.index.ntotal

    async def delete(self, ids: np.ndarray) -> tuple[int, int]:
        snapshot = self.snapshot
        deleted = await asyncio.to_thread(snapshot.delete, ids)
        return deleted, snapshot.index.ntotal

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _search_one(self, queries: list[tuple[np.ndarray, int]]) -> list[list[HitDict]]:
        self.batch_sizes.observe(len(queries))
        matrix = np.ascontiguousarray(np.stack([row for row, _ in queries]), dtype=np.float32)
        k_max = max(k for _, k in queries)
        self._index_idle.clear()
        try:
            threads = 1 if len(queries) > self.SPLIT_SCAN_MAX_QUERIES else None
            hits = await asyncio.to_thread(self.snapshot.search, matrix, k_max, None, threads)
        finally:
            self._index_idle.set()
        return [row[:k] for row, (_, k) in zip(hits, queries, strict=True)]
