"""The HTTP ingress: a thin FastAPI router over the deployments. Each handler checks the caller
(key, rate, body size), validates the typed request, calls a deployment with a timeout, and
answers JSON with the serving version in X-Refinery-Version."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.config import ServeAppConfig
from serve.errors import APIError, bad_request, from_validation
from serve.guard import RateLimiter, authenticate, check_body_size
from serve.metrics import RequestMetrics
from serve.protocol import EmbedRequest, EmbedResponse, SearchRequest, SearchResponse

app = FastAPI(title="Refinery", docs_url=None, redoc_url=None)
RequestT = TypeVar("RequestT", bound=BaseModel)


# Defined above the deployment class: Serve pickles the class by value when it is declared,
# with only the module globals that exist at that moment.
def _parse(raw: bytes, model: type[RequestT]) -> RequestT:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise bad_request(f"body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation(error) from None


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(
        self, config: dict[str, Any], embedder: DeploymentHandle, index: DeploymentHandle | None
    ) -> None:
        self.cfg = ServeAppConfig.model_validate(config)
        self.keys = self.cfg.resolved_api_keys()
        self.limiter = RateLimiter(self.cfg.limits.requests_per_s, self.cfg.limits.burst)
        self.embedder = embedder
        self.index = index
        # Model, dimension and metric do not change while a replica lives: ask once.
        self._index_info: dict[str, Any] | None = None
        self._embedder_info: dict[str, Any] | None = None
        self.metrics = RequestMetrics()

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        return self._json({"status": "ok"})

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            parts = {"embedder": await self._call(self.embedder.describe.remote())}
            if self.index is not None:
                parts["index"] = await self._index_describe()
        except APIError as error:
            return self._json({"status": "not ready", "reason": error.message}, status=503)
        return self._json({"status": "ready", **parts})

    @app.post("/v1/embed")
    async def embed(self, request: Request) -> JSONResponse:
        return await self._handle(request, EmbedRequest, self._embed)

    @app.post("/v1/search")
    async def search(self, request: Request) -> JSONResponse:
        return await self._handle(request, SearchRequest, self._search)

    async def _embed(self, body: EmbedRequest) -> EmbedResponse:
        self._check_texts(body.texts)
        vectors = await self._call(self.embedder.embed.remote(body.texts))
        info = await self._embedder_describe()
        return EmbedResponse(vectors=vectors.tolist(), model=info["model"], dim=info["dim"])

    async def _search(self, body: SearchRequest) -> SearchResponse:
        if self.index is None:
            raise APIError(404, "not_found_error", "no index is configured for this application")
        limits = self.cfg.limits
        if body.k > limits.max_k:
            raise bad_request(f"k={body.k} exceeds the limit of {limits.max_k}")
        if body.size > limits.max_batch_items:
            raise bad_request(f"{body.size} queries exceed the limit of {limits.max_batch_items}")
        if body.texts is not None:
            self._check_texts(body.texts)
            vectors = await self._call(self.embedder.embed.remote(body.texts))
        else:
            vectors = self._check_vectors(body.vectors, (await self._index_describe())["dimension"])
        try:
            results = await self._call(self.index.search.remote(vectors, body.k, body.filter))
        except KeyError as error:  # an unknown filter field, raised by the snapshot
            raise bad_request(str(error.args[0] if error.args else error)) from None
        return SearchResponse(results=results)

    def _check_texts(self, texts: list[str]) -> None:
        limits = self.cfg.limits
        if len(texts) > limits.max_batch_items:
            raise bad_request(f"{len(texts)} texts exceed the limit of {limits.max_batch_items}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise bad_request(f"texts[{i}] is empty")
            if len(text) > limits.max_text_chars:
                raise bad_request(
                    f"texts[{i}] has {len(text)} characters; the limit is {limits.max_text_chars}"
                )

    @staticmethod
    def _check_vectors(vectors: list[list[float]], dimension: int) -> np.ndarray:
        for i, vector in enumerate(vectors):
            if len(vector) != dimension:
                raise bad_request(
                    f"vectors[{i}] has dimension {len(vector)}; the index has dimension {dimension}"
                )
        matrix = np.asarray(vectors, dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            # Python's json accepts NaN and Infinity literals, so they do reach this point.
            raise bad_request(f"vectors[{int(np.argmin(finite))}] holds NaN or infinity")
        return matrix

    async def _index_describe(self) -> dict[str, Any]:
        if self._index_info is None:
            self._index_info = await self._call(self.index.describe.remote())
        return self._index_info

    async def _embedder_describe(self) -> dict[str, Any]:
        if self._embedder_info is None:
            self._embedder_info = await self._call(self.embedder.describe.remote())
        return self._embedder_info

    async def _handle(
        self,
        request: Request,
        model: type[RequestT],
        logic: Callable[[RequestT], Awaitable[BaseModel]],
    ) -> JSONResponse:
        started = time.perf_counter()
        response = await self._answer(request, model, logic)
        self.metrics.record(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    async def _answer(
        self,
        request: Request,
        model: type[RequestT],
        logic: Callable[[RequestT], Awaitable[BaseModel]],
    ) -> JSONResponse:
        try:
            key = authenticate(request.headers.get("authorization"), self.keys)
            self.limiter.take(key)
            check_body_size(request.headers.get("content-length"), None, self.cfg.limits)
            raw = await request.body()
            check_body_size(None, raw, self.cfg.limits)
            response = await logic(_parse(raw, model))
        except APIError as error:
            return self._json(error.body(), status=error.status)
        return self._json(response.model_dump(mode="json"))

    async def _call(self, response: Any) -> Any:
        try:
            return await asyncio.wait_for(response, self.cfg.limits.timeout_s)
        except TimeoutError:
            response.cancel()
            raise APIError(
                504, "timeout_error", f"no answer within {self.cfg.limits.timeout_s:g} s"
            ) from None

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status, headers={"X-Refinery-Version": self.cfg.version})
