"""The HTTP ingress: a thin FastAPI router over the deployments. Each handler checks the caller
(key, rate, body size), validates the typed request, calls a deployment with a timeout (a search
or an embedding goes again on another replica when its replica dies: serve/retry.py), and
answers JSON (or SSE) with the serving version in X-Refinery-Version.

The OpenAI endpoints forward to the LLMDeployment (serve/openai_api.py); /v1/rag chains the
embedder, the index and the LLM with a prompt cut to the model's context (serve/rag_service.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.coalesce import Coalescer
from serve.config import ServeAppConfig
from serve.errors import APIError, SchemaMismatch, bad_request, from_validation, server_error
from serve.guard import (
    ANONYMOUS,
    RateLimiter,
    authenticate,
    check_body_size,
    open_access_warning,
    read_body,
)
from serve.metrics import RequestMetrics
from serve.openai_api import OpenAIForwarder
from serve.protocol import (
    DeleteRequest,
    EmbedRequest,
    EmbedResponse,
    Hit,
    HitDict,
    RAGRequest,
    SearchRequest,
    UpdateResponse,
    UpsertRequest,
    json_bytes,
)
from serve.rag_service import RAGService
from serve.retry import IDEMPOTENT_ATTEMPTS, call_deployment

logger = logging.getLogger("ray.serve")
app = FastAPI(title="Refinery", docs_url=None, redoc_url=None)
RequestT = TypeVar("RequestT", bound=BaseModel)
Answer = BaseModel | Response
# /readyz probes each deployment this long: a replica still starting is "not ready", not a hang.
READY_PROBE_S = 2.0


# Defined above the deployment class: Serve pickles the class by value when it is declared,
# with only the module globals that exist at that moment.
def _parse(raw: bytes, model: type[RequestT]) -> RequestT:
    # One pass from bytes to the model: a 384-float vector parsed into Python objects first
    # and validated after costs several times as much CPU.
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise _parse_error(error) from None


def _parse_error(error: ValidationError) -> APIError:
    """Malformed JSON and a body that is no object fail the whole body: say so plainly."""
    first = error.errors()[0]
    if not first["loc"] and first["type"] == "json_invalid":
        return bad_request(f"body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}")
    if not first["loc"] and first["type"] == "model_type":
        return bad_request(f"body must be a JSON object, got {type(first['input']).__name__}")
    return from_validation(error)


def _warn_if_open(keys: frozenset[str]) -> None:
    """Logged by each replica as it starts: Serve's HTTP host is known only to its controller."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    warning = open_access_warning(client.http_config.host, keys) if client else None
    if warning:
        logger.warning(warning)


# Each request holds a slot while it waits on the index: Serve's default of 5 would cap the
# index's batches at 5 and queue the rest in the proxy.
@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        config: dict[str, Any],
        embedder: DeploymentHandle,
        index: DeploymentHandle | None,
        llm: DeploymentHandle | None = None,
        llm_path: str | None = None,
    ) -> None:
        self.cfg = ServeAppConfig.model_validate(config)
        self.keys = self.cfg.resolved_api_keys()
        _warn_if_open(self.keys)
        self.limiter = RateLimiter(self.cfg.limits.requests_per_s, self.cfg.limits.burst)
        self.embedder = embedder
        self.index = index
        self.llm = llm
        self.openai = (
            OpenAIForwarder(llm, self.cfg.llm.model_id, self.cfg.limits.timeout_s) if llm else None
        )
        self.rag_service = (
            RAGService(self.cfg, self.openai, llm_path, self._embed_texts, self._index_search)
            if llm
            else None
        )
        # Model, dimension and metric do not change while a replica lives: ask once.
        self._index_info: dict[str, Any] | None = None
        self._embedder_info: dict[str, Any] | None = None
        self.metrics = RequestMetrics()
        # Unfiltered searches share index calls under load (serve/coalesce.py); with batching
        # off (max_batch_size 1) each goes on its own call.
        batch = self.cfg.index.batching.max_batch_size
        self._coalescer = Coalescer(self._search_many, batch) if batch > 1 else None

    @app.get("/healthz")
    async def healthz(self) -> Response:
        return self._json({"status": "ok"})

    @app.get("/readyz")
    async def readyz(self) -> Response:
        probes = {"embedder": self.embedder.describe}
        if self.index is not None:
            probes["index"] = self.index.describe
        if self.llm is not None:
            probes["llm"] = self.llm.check_health
        parts: dict[str, Any] = {}
        for name, method in probes.items():
            try:
                parts[name] = await asyncio.wait_for(method.remote(), READY_PROBE_S) or "ok"
            except Exception as error:  # starting, failed or gone: all mean "not ready"
                reason = f"{name}: {type(error).__name__} {error}".strip()
                return self._json({"status": "not ready", "reason": reason}, status=503)
        return self._json({"status": "ready", **parts})

    @app.get("/v1/models")
    async def models(self, request: Request) -> Response:
        return await self._handle(request, None, lambda _: self._models())

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        return await self._handle(request, ChatCompletionRequest, self._forward("chat"))

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        from ray.serve.llm.openai_api_models import CompletionRequest

        return await self._handle(request, CompletionRequest, self._forward("completions"))

    @app.post("/v1/rag")
    async def rag(self, request: Request) -> Response:
        return await self._handle(request, RAGRequest, self._rag)

    @app.post("/v1/upsert")
    async def upsert(self, request: Request) -> Response:
        return await self._handle(request, UpsertRequest, self._upsert)

    @app.post("/v1/delete")
    async def delete(self, request: Request) -> Response:
        return await self._handle(request, DeleteRequest, self._delete)

    @app.post("/v1/embed")
    async def embed(self, request: Request) -> Response:
        return await self._handle(request, EmbedRequest, self._embed)

    @app.post("/v1/search")
    async def search(self, request: Request) -> Response:
        return await self._handle(request, SearchRequest, self._search)

    async def _embed(self, body: EmbedRequest) -> EmbedResponse:
        self._check_texts(body.texts)
        vectors = await self._embed_texts(body.texts)
        info = await self._embedder_describe()
        return EmbedResponse(vectors=vectors.tolist(), model=info["model"], dim=info["dim"])

    async def _search(self, body: SearchRequest) -> Response:
        self._require("index")
        self._check_k(body.k)
        self._check_items(body.size, "queries")
        if body.texts is not None:
            self._check_texts(body.texts)
            vectors = await self._embed_texts(body.texts)
        else:
            vectors = self._check_vectors(body.vectors, (await self._index_describe())["dimension"])
        hits = await self._index_hits(vectors, body.k, body.filter)
        # The index's hits are already the answer's shape: serialised as they are, without a
        # model per hit to build and validate again.
        return self._json({"results": hits})

    async def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return await self._call(lambda: self.embedder.embed.remote(texts), idempotent=True)

    async def _index_search(
        self, vectors: np.ndarray, k: int, payload_filter: dict | None
    ) -> list[list[Hit]]:
        """The hits as models, for the RAG flow."""
        rows = await self._index_hits(vectors, k, payload_filter)
        return [[Hit(**hit) for hit in row] for row in rows]

    async def _index_hits(
        self, vectors: np.ndarray, k: int, payload_filter: dict | None
    ) -> list[list[HitDict]]:
        if payload_filter is None and self._coalescer is not None:
            return await self._coalescer.submit((vectors, k))
        return await self._call(
            lambda: self.index.search.remote(vectors, k, payload_filter), idempotent=True
        )

    async def _search_many(
        self, queries: list[tuple[np.ndarray, int]]
    ) -> list[list[list[HitDict]]]:
        """Several requests' unfiltered queries in one index call, split back per request."""
        matrix = np.concatenate([vectors for vectors, _ in queries])
        k_max = max(k for _, k in queries)
        hits = await self._call(
            lambda: self.index.search.remote(matrix, k_max, None), idempotent=True
        )
        answers, start = [], 0
        for vectors, k in queries:
            answers.append([row[:k] for row in hits[start : start + len(vectors)]])
            start += len(vectors)
        return answers

    async def _upsert(self, body: UpsertRequest) -> UpdateResponse:
        self._require("index")
        self._check_items(len(body.items), "items")
        ids = np.array([item.id for item in body.items], dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise bad_request("item ids must be unique within one request")
        vectors = await self._item_vectors(body)
        payloads = [item.payload for item in body.items]
        count = await self._call(lambda: self.index.upsert.remote(ids, vectors, payloads))
        return UpdateResponse(upserted=len(ids), count=count)

    async def _item_vectors(self, body: UpsertRequest) -> np.ndarray:
        """Given vectors as they are; texts embedded in one call (the embedder batches them)."""
        dimension = (await self._index_describe())["dimension"]
        rows: list[Any] = [item.vector for item in body.items]
        to_embed = [i for i, item in enumerate(body.items) if item.vector is None]
        if to_embed:
            texts = [body.items[i].text for i in to_embed]
            self._check_texts(texts)
            embedded = await self._embed_texts(texts)
            for i, vector in zip(to_embed, embedded, strict=True):
                rows[i] = vector.tolist()
        return self._check_vectors(rows, dimension, name="items[].vector")

    async def _delete(self, body: DeleteRequest) -> UpdateResponse:
        self._require("index")
        self._check_items(len(body.ids), "ids")
        ids = np.array(body.ids, dtype=np.int64)
        deleted, count = await self._call(lambda: self.index.delete.remote(ids))
        return UpdateResponse(deleted=deleted, count=count)

    async def _models(self) -> Response:
        self._require("llm")
        return self._json(self.openai.models())

    def _forward(self, method: str) -> Callable[[BaseModel], Awaitable[Answer]]:
        async def forward(body: BaseModel) -> Answer:
            self._require("llm")
            result = await self.openai.call(method, body)
            return result if isinstance(result, BaseModel) else self._stream(result)

        return forward

    async def _rag(self, body: RAGRequest) -> Answer:
        self._require("llm")
        if not self.cfg.qdrant.enabled:
            self._require("index")
        self._check_k(body.k or self.cfg.rag.k)
        self._check_texts([body.question])
        result = await self.rag_service.answer(body)
        return result if isinstance(result, BaseModel) else self._stream(result)

    def _require(self, part: str) -> None:
        if getattr(self, part) is None:
            raise APIError(404, "not_found_error", f"no {part} is configured for this application")

    def _check_k(self, k: int) -> None:
        if k > self.cfg.limits.max_k:
            raise bad_request(f"k={k} exceeds the limit of {self.cfg.limits.max_k}")

    def _check_items(self, count: int, what: str) -> None:
        limit = self.cfg.limits.max_batch_items
        if count > limit:
            raise bad_request(f"{count} {what} exceed the limit of {limit}")

    def _check_texts(self, texts: list[str]) -> None:
        limits = self.cfg.limits
        self._check_items(len(texts), "texts")
        for i, text in enumerate(texts):
            if not text.strip():
                raise bad_request(f"texts[{i}] is empty")
            if len(text) > limits.max_text_chars:
                raise bad_request(
                    f"texts[{i}] has {len(text)} characters; the limit is {limits.max_text_chars}"
                )

    @staticmethod
    def _check_vectors(
        vectors: list[list[float]], dimension: int, name: str = "vectors"
    ) -> np.ndarray:
        for i, vector in enumerate(vectors):
            if len(vector) != dimension:
                raise bad_request(
                    f"{name}[{i}] has dimension {len(vector)}; the index has dimension {dimension}"
                )
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dimension)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            # Python's json accepts NaN and Infinity literals, so they do reach this point.
            raise bad_request(f"{name}[{int(np.argmin(finite))}] holds NaN or infinity")
        return matrix

    async def _index_describe(self) -> dict[str, Any]:
        if self._index_info is None:
            self._index_info = await self._call(self.index.describe.remote, idempotent=True)
        return self._index_info

    async def _embedder_describe(self) -> dict[str, Any]:
        if self._embedder_info is None:
            self._embedder_info = await self._call(self.embedder.describe.remote, idempotent=True)
        return self._embedder_info

    async def _handle(
        self,
        request: Request,
        model: type[RequestT] | None,
        logic: Callable[[RequestT | None], Awaitable[Answer]],
    ) -> Response:
        started = time.perf_counter()
        response = await self._answer(request, model, logic)
        self.metrics.record(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    async def _answer(
        self,
        request: Request,
        model: type[RequestT] | None,
        logic: Callable[[RequestT | None], Awaitable[Answer]],
    ) -> Response:
        """`model` None: a GET without a body."""
        try:
            key = authenticate(request.headers.get("authorization"), self.keys)
            # Without keys, callers are told apart by address (behind a proxy: the proxy's).
            client = request.client.host if request.client else ANONYMOUS
            self.limiter.take(key if self.keys else client)
            body = None
            if model is not None:
                check_body_size(request.headers.get("content-length"), self.cfg.limits)
                body = _parse(await read_body(request.stream(), self.cfg.limits), model)
            response = await logic(body)
        except APIError as error:
            return self._error(error)
        except SchemaMismatch as error:
            # Through Ray the error is also a RayTaskError, whose str() holds the traceback.
            return self._error(bad_request(str(error.args[0] if error.args else error)))
        except Exception as error:  # a bug or a failed replica: still a JSON error
            logger.exception("%s failed", request.url.path)
            return self._error(server_error(error))
        if isinstance(response, Response):
            return response
        return self._json(response.model_dump(mode="json"))

    def _stream(self, events: Any) -> StreamingResponse:
        headers = {"X-Refinery-Version": self.cfg.version, "Cache-Control": "no-cache"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    async def _call(self, send: Callable[[], Any], idempotent: bool = False) -> Any:
        """A downstream call under the timeout; `idempotent`: tried again on another replica
        when its replica dies (serve/retry.py)."""
        attempts = IDEMPOTENT_ATTEMPTS if idempotent else 1
        return await call_deployment(send, self.cfg.limits.timeout_s, attempts)

    def _error(self, error: APIError) -> Response:
        return self._json(error.body(), status=error.status)

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(
            json_bytes(body),
            status,
            media_type="application/json",
            headers={"X-Refinery-Version": self.cfg.version},
        )
