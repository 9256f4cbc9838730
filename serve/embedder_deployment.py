"""EmbedderDeployment: texts -> float32 vectors exactly as the pipeline embeds them, batched
across requests so the model sees full batches under concurrent load."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from refinery.config import EmbeddingConfig
from refinery.embedding import encode_texts, load_embedder
from serve.batching import BatchSizeMetric, apply_batching


@serve.deployment(name="EmbedderDeployment", ray_actor_options={"num_cpus": 1})
class EmbedderDeployment:
    def __init__(self, embedding: dict[str, Any]) -> None:
        self.cfg = EmbeddingConfig.model_validate(embedding)
        self.model = load_embedder(self.cfg)
        self.batch_sizes = BatchSizeMetric()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        apply_batching(self._embed_one, user_config)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "dim": self.model.get_sentence_embedding_dimension(),
            "largest_batch": self.batch_sizes.largest,
        }

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack(await asyncio.gather(*(self._embed_one(text) for text in texts)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_one(self, texts: list[str]) -> list[np.ndarray]:
        self.batch_sizes.observe(len(texts))
        return list(await asyncio.to_thread(encode_texts, self.model, texts, self.cfg))
