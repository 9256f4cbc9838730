"""The HTTP ingress: a router of thin route functions. Each checks the caller (key, rate, body
size), parses the typed request, and hands it to the serving class of its endpoint family:
search and updates (serve/search_service.py: the index lives in this replica), embeddings
(serve/embed_service.py), the OpenAI API (serve/openai_api.py) and RAG (serve/rag_service.py).
It answers JSON (or SSE) with the serving version in X-Refinery-Version and the replica that
answered in X-Refinery-Replica (Serve's replica id: each replica holds its own copy of the
index), and every error as a JSON error (serve/errors.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve.canary.agreement import Agreement
from serve.canary.replica import CanaryReplica
from serve.canary.split import (
    CANARY,
    FORCE_ARM_HEADER,
    ROUTE_KEY_HEADER,
    STABLE,
    choose_arm,
)
from serve.config import IngressUserConfig, ServeAppConfig
from serve.embed_service import EmbedService
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
from serve.openai_api import Generation, OnEnd, OpenAIForwarder
from serve.protocol import (
    DeleteRequest,
    EmbedRequest,
    RAGRequest,
    SearchRequest,
    UpsertRequest,
    json_bytes,
)
from serve.rag_service import RAGService
from serve.search_service import SearchService

logger = logging.getLogger("ray.serve")
# The parts of the application a canary can bring a version of; RAG uses both.
INDEX, LLM, RAG = "index", "llm", "rag"
app = FastAPI(title="Refinery", docs_url=None, redoc_url=None)
RequestT = TypeVar("RequestT", bound=BaseModel)
ServiceT = TypeVar("ServiceT")
Answer = BaseModel | Response | dict
# /readyz probes each part this long: a replica still starting is "not ready", not a hang.
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


def _configured(service: ServiceT | None, part: str) -> ServiceT:
    if service is None:
        raise _not_configured(part)
    return service


def _not_configured(part: str) -> APIError:
    return APIError(404, "not_found_error", f"no {part} is configured for this application")


def _other(arm: str) -> str:
    return CANARY if arm == STABLE else STABLE


def _greedy(body: Any) -> bool:
    """A request whose answer is one deterministic text: a shadow of it can match exactly."""
    return getattr(body, "temperature", None) == 0 and (getattr(body, "n", 1) or 1) == 1


def _add_searches(agreement: Agreement, stable: list[list[int]], canary: list[list[int]]) -> None:
    for stable_ids, canary_ids in zip(stable, canary, strict=True):
        agreement.add_search(stable_ids, canary_ids)


# Each request holds a slot while it waits on a scan or a downstream call: Serve's default of 5
# would cap the index's batches at 5 and queue the rest in the proxy.
@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        config: dict[str, Any],
        embedder: DeploymentHandle,
        llms: dict[str, DeploymentHandle] | None = None,
        llm_paths: dict[str, str] | None = None,
    ) -> None:
        """`llms`: the application's LLM deployments by model_id, `llm_paths` their models'
        directories."""
        self.cfg = ServeAppConfig.model_validate(config)
        # Which versions answer, and in what shares: set by reconfigure() from user_config.
        self.routing = IngressUserConfig.model_validate(self.cfg.ingress_user_config())
        self.keys = self.cfg.resolved_api_keys()
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.canary = CanaryReplica(context.app_name, self.replica)
        _warn_if_open(self.keys)
        self.limiter = RateLimiter(self.cfg.limits.requests_per_s, self.cfg.limits.burst)
        self.metrics = RequestMetrics()
        limits = self.cfg.limits
        self.embed = EmbedService(embedder, limits)
        # The snapshot is loaded by reconfigure(), which Serve runs before the replica serves.
        self.search = SearchService(self.embed, limits) if self.cfg.index.snapshot else None
        self.llms = {
            llm.model_id: OpenAIForwarder(
                (llms or {})[llm.model_id], llm, (llm_paths or {})[llm.model_id], limits.timeout_s
            )
            for llm in self.cfg.llms
        }
        self.rag = RAGService(self.cfg, self.embed, self.search) if self.llms else None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        routing = IngressUserConfig.model_validate(user_config)
        self._check_llms(routing)
        if self.search is not None and routing.index is not None:
            canary = routing.canary.snapshot if routing.canary else None
            await self.search.reconfigure(routing.index.model_dump(), canary)
        self.routing = routing
        self.canary.configure(routing)

    @app.get("/healthz")
    async def healthz(self) -> Response:
        return self._json({"status": "ok"})

    @app.get("/readyz")
    async def readyz(self) -> Response:
        probes: dict[str, Callable[[], Awaitable[Any]]] = {"embedder": self.embed.describe}
        if self.search is not None:
            probes["index"] = self._describe_index
        if self.llms:
            probes["llm"] = self._check_llm_health
        parts: dict[str, Any] = {}
        for name, probe in probes.items():
            try:
                parts[name] = await asyncio.wait_for(probe(), READY_PROBE_S) or "ok"
            except Exception as error:  # starting, failed or gone: all mean "not ready"
                reason = f"{name}: {type(error).__name__} {error}".strip()
                return self._json({"status": "not ready", "reason": reason}, status=503)
        routing = self.routing.model_dump(mode="json")  # the versions and weights it serves
        return self._json({"status": "ready", **parts, "routing": routing})

    @app.get("/v1/models")
    async def models(self, request: Request) -> Response:
        return await self._handle(request, None, self._models)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        return await self._handle(request, ChatCompletionRequest, self._generate("chat"), LLM)

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        from ray.serve.llm.openai_api_models import CompletionRequest

        return await self._handle(request, CompletionRequest, self._generate("completions"), LLM)

    @app.post("/v1/rag")
    async def rag_answer(self, request: Request) -> Response:
        return await self._handle(request, RAGRequest, self._rag_answer, RAG)

    @app.post("/v1/upsert")
    async def upsert(self, request: Request) -> Response:
        return await self._handle(request, UpsertRequest, lambda b: self._index().upsert(b))

    @app.post("/v1/delete")
    async def delete(self, request: Request) -> Response:
        return await self._handle(request, DeleteRequest, lambda b: self._index().delete(b))

    @app.post("/v1/embed")
    async def embed_texts(self, request: Request) -> Response:
        return await self._handle(request, EmbedRequest, self.embed.answer)

    @app.post("/v1/search")
    async def search_index(self, request: Request) -> Response:
        return await self._handle(request, SearchRequest, self._search, INDEX)

    async def _search(self, body: SearchRequest, arm: str) -> dict[str, Any]:
        # The arms and the agreement as they are now: a shadow compares the versions that
        # answered, even if a switch lands in between.
        index, shadow = self._index(), self._draw_shadow(INDEX)
        arms = index.arms
        answer = await index.answer(body, arm, arms)
        if shadow is not None:
            ids = [[hit["id"] for hit in hits] for hits in answer["results"]]
            other = _other(arm)
            self.canary.mirror(
                shadow, arm, ids, lambda: self._hit_ids(body, other, arms), _add_searches
            )
        return answer

    async def _hit_ids(self, body: SearchRequest, arm: str, arms: dict) -> list[list[int]]:
        answer = await self._index().answer(body, arm, arms)
        return [[hit["id"] for hit in hits] for hits in answer["results"]]

    def _generate(self, method: str) -> Callable[[BaseModel, str], Awaitable[Answer]]:
        async def generate(body: BaseModel, arm: str) -> Answer:
            llm = self._llm(arm, getattr(body, "model", None))
            shadow = self._draw_shadow(LLM) if _greedy(body) else None
            on_end = self._on_generation(arm, body, shadow, method)
            return self._stream_or_body(await llm.call(method, body, on_end), arm)

        return generate

    def _on_generation(
        self, arm: str, body: Any, shadow: Agreement | None = None, method: str = ""
    ) -> OnEnd:
        """What an LLM answer adds to its arm when it ends: tokens, a stream's outcome (a whole
        answer's is recorded as the request is), and the shadow comparison if one was drawn."""
        started, streamed = time.perf_counter(), bool(getattr(body, "stream", False))

        def ended(generation: Generation) -> None:
            tokens = (generation.prompt_tokens, generation.completion_tokens)
            self.canary.add_tokens(arm, *tokens)
            self.metrics.record_tokens(arm, *tokens)
            if streamed:
                self.canary.record(arm, generation.status, time.perf_counter() - started)
            if shadow is not None and generation.status == 200:
                other = self._llm(_other(arm))
                self.canary.mirror(
                    shadow,
                    arm,
                    generation.text,
                    lambda: other.text(method, body),
                    Agreement.add_text,
                )

        return ended

    async def _models(self, _: None) -> dict[str, Any]:
        """The application's model: the name clients use, whichever deployment answers it."""
        if not self.llms:
            raise _not_configured("llm")
        return self.llms[self.cfg.llm.model_id].models()

    async def _rag_answer(self, body: RAGRequest, arm: str) -> Answer:
        llm = self._llm(arm)
        answer = await self.rag.answer(body, llm, arm, self._on_generation(arm, body))
        return self._stream_or_body(answer, arm)

    def _llm(self, arm: str, requested: str | None = None) -> OpenAIForwarder:
        """The LLM deployment answering `arm`. Clients name the application's model
        (`llm.model_id`) or one of its deployments; the arm decides which one answers."""
        if not self.llms:
            raise _not_configured("llm")
        if requested is not None and requested not in self.llms:
            raise APIError(404, "not_found_error", f"The model `{requested}` does not exist.")
        canary, stable = self.routing.canary, self.routing.llm or self.cfg.llm.model_id
        serving = canary.llm if arm == CANARY and canary is not None and canary.llm else stable
        return self.llms[serving]

    def _check_llms(self, routing: IngressUserConfig) -> None:
        """A user_config naming an LLM this application does not deploy fails the redeploy."""
        named = [routing.llm, routing.canary.llm if routing.canary else None]
        unknown = [model for model in named if model is not None and model not in self.llms]
        if unknown:
            deployed = ", ".join(self.llms) or "none"
            raise ValueError(f"LLM {unknown[0]!r} is not deployed by this application ({deployed})")

    async def _check_llm_health(self) -> None:
        await asyncio.gather(*(llm.check_health() for llm in self.llms.values()))

    def _serving(self, part: str) -> bool:
        """Whether the canary has a version of its own of `part` (index, llm, or either for rag)
        serving in this replica: else its requests are stable's."""
        canary = self.routing.canary
        if canary is None:
            return False
        index = self.search is not None and CANARY in self.search.arms
        llm = canary.llm is not None and canary.llm != (self.routing.llm or self.cfg.llm.model_id)
        return {INDEX: index, LLM: llm, RAG: index or llm}[part]

    def _draw_shadow(self, part: str) -> Agreement | None:
        """A shadow compares two versions of `part`: none where the canary has no version of it."""
        return self.canary.draw_shadow() if self._serving(part) else None

    async def _describe_index(self) -> dict[str, Any]:
        return self.search.describe()

    def _index(self) -> SearchService:
        return _configured(self.search, "index")

    async def _handle(
        self,
        request: Request,
        model: type[RequestT] | None,
        logic: Callable[..., Awaitable[Answer]],
        part: str | None = None,
    ) -> Response:
        """`part`: the route has a stable and a canary arm of that part (index, llm, rag), and
        `logic` takes the arm chosen. A stream's outcome is recorded at its end (_on_generation)."""
        started = time.perf_counter()
        response, arm = await self._answer(request, model, logic, part)
        seconds = time.perf_counter() - started
        self.metrics.record(request.url.path, response.status_code, seconds, arm)
        if part is not None and not isinstance(response, StreamingResponse):
            self.canary.record(arm, response.status_code, seconds)
        return response

    async def _answer(
        self,
        request: Request,
        model: type[RequestT] | None,
        logic: Callable[..., Awaitable[Answer]],
        part: str | None,
    ) -> tuple[Response, str]:
        """`model` None: a GET without a body."""
        arm = STABLE
        try:
            key = authenticate(request.headers.get("authorization"), self.keys)
            # Without keys, callers are told apart by address (behind a proxy: the proxy's).
            client = request.client.host if request.client else ANONYMOUS
            self.limiter.take(key if self.keys else client)
            body = None
            if model is not None:
                check_body_size(request.headers.get("content-length"), self.cfg.limits)
                body = _parse(await read_body(request.stream(), self.cfg.limits), model)
            if part is not None:
                arm = self._choose_arm(request, key, part)
                await self._inject_fault(arm)
                response = await logic(body, arm)
            else:
                response = await logic(body)
        except APIError as error:
            return self._error(error, arm), arm
        except SchemaMismatch as error:
            # Through Ray the error is also a RayTaskError, whose str() holds the traceback.
            return self._error(bad_request(str(error.args[0] if error.args else error)), arm), arm
        except Exception as error:  # a bug or a failed replica: still a JSON error
            logger.exception("%s failed", request.url.path)
            return self._error(server_error(error), arm), arm
        if isinstance(response, Response):
            return response, arm
        if isinstance(response, BaseModel):
            return self._json(response.model_dump(mode="json"), arm=arm), arm
        return self._json(response, arm=arm), arm

    def _choose_arm(self, request: Request, key: str, part: str) -> str:
        """The canary arm only where the canary's version of `part` is serving in this replica."""
        canary = self.routing.canary
        serving = self._serving(part)
        route_key = request.headers.get(ROUTE_KEY_HEADER) or (key if self.keys else None)
        return choose_arm(
            canary.weight if serving else 0,
            canary.version if serving else None,
            route_key,
            request.headers.get(FORCE_ARM_HEADER),
        )

    async def _inject_fault(self, arm: str) -> None:
        fault = self.routing.canary.fault if arm == CANARY and self.routing.canary else None
        if fault is None:
            return
        if random.random() * 100 < fault.delay_percent:
            await asyncio.sleep(fault.delay_s)
        if random.random() * 100 < fault.abort_percent:
            raise APIError(fault.abort_status, "injected_fault", "fault injected into the canary")

    def _headers(self, arm: str = STABLE) -> dict[str, str]:
        """The arm and version that answered, and the replica (each holds its own index copy)."""
        routing = self.routing
        version = routing.canary.version if arm == CANARY and routing.canary else routing.version
        return {"X-Refinery-Version": f"{arm}/{version}", "X-Refinery-Replica": self.replica}

    def _stream_or_body(self, result: Any, arm: str) -> Answer:
        """A whole answer as it is; a stream of SSE events as a streaming response."""
        if isinstance(result, BaseModel):
            return result
        headers = {**self._headers(arm), "Cache-Control": "no-cache"}
        return StreamingResponse(result, media_type="text/event-stream", headers=headers)

    def _error(self, error: APIError, arm: str = STABLE) -> Response:
        return self._json(error.body(), status=error.status, arm=arm)

    def _json(self, body: Any, status: int = 200, arm: str = STABLE) -> Response:
        return Response(
            json_bytes(body), status, media_type="application/json", headers=self._headers(arm)
        )
