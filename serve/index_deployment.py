"""IndexDeployment: a vectorindex snapshot behind @serve.batch, so concurrent single queries
become one matrix search (the index releases the GIL, so the event loop keeps accepting)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from serve.batching import BatchSizeMetric, apply_batching
from serve.protocol import Hit, PayloadFilter
from serve.snapshot import Snapshot


@serve.deployment(name="IndexDeployment", ray_actor_options={"num_cpus": 1})
class IndexDeployment:
    def __init__(self, snapshot: str) -> None:
        self.snapshot = Snapshot(snapshot)
        self.batch_sizes = BatchSizeMetric()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        apply_batching(self._search_one, user_config)

    def describe(self) -> dict[str, Any]:
        manifest = self.snapshot.manifest
        return {
            "snapshot": self.snapshot.path,
            "model": manifest.model,
            "dimension": manifest.dimension,
            "metric": manifest.metric,
            "count": self.snapshot.index.ntotal,
            "largest_batch": self.batch_sizes.largest,
        }

    async def search(
        self, vectors: np.ndarray, k: int, payload_filter: PayloadFilter | None = None
    ) -> list[list[Hit]]:
        if payload_filter:
            # Filtered queries restrict the candidate set per request, so they skip the batcher.
            return await asyncio.to_thread(self.snapshot.search, vectors, k, payload_filter)
        return list(await asyncio.gather(*(self._search_one((row, k)) for row in vectors)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _search_one(self, queries: list[tuple[np.ndarray, int]]) -> list[list[Hit]]:
        self.batch_sizes.observe(len(queries))
        matrix = np.ascontiguousarray(np.stack([row for row, _ in queries]), dtype=np.float32)
        k_max = max(k for _, k in queries)
        hits = await asyncio.to_thread(self.snapshot.search, matrix, k_max)
        return [row[:k] for row, (_, k) in zip(hits, queries, strict=True)]
