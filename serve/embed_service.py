"""The /v1/embed serving logic, apart from HTTP, and the embedding every other endpoint family
asks for (text searches, upserts by text, RAG questions): calls on the EmbedderDeployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve.checks import check_texts
from serve.config import LimitsConfig
from serve.protocol import EmbedRequest, EmbedResponse
from serve.retry import IDEMPOTENT_ATTEMPTS, call_deployment


class EmbedService:
    def __init__(self, embedder: DeploymentHandle, limits: LimitsConfig) -> None:
        self.embedder = embedder
        self.limits = limits
        # The model is fixed by the deployment's arguments, the same for every replica: ask once.
        self._info: dict[str, Any] | None = None

    async def answer(self, body: EmbedRequest) -> EmbedResponse:
        vectors = await self.embed(body.texts)
        info = await self.info()
        return EmbedResponse(vectors=vectors.tolist(), model=info["model"], dim=info["dim"])

    async def embed(self, texts: list[str]) -> np.ndarray:
        """The texts' vectors, once the texts are within the limits."""
        check_texts(texts, self.limits)
        return await self._call(lambda: self.embedder.embed.remote(texts))

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.describe()
        return self._info

    async def describe(self) -> dict[str, Any]:
        """Asked anew each time: what /readyz probes."""
        return await self._call(self.embedder.describe.remote)

    async def _call(self, send: Callable[[], Any]) -> Any:
        # Every call here is idempotent: one whose replica died goes again (serve/retry.py).
        return await call_deployment(send, self.limits.timeout_s, IDEMPOTENT_ATTEMPTS)
