"""The OpenAI-compatible endpoints' serving logic, apart from HTTP: forward a validated request
to one LLMDeployment and turn what it yields into one JSON body or a stream of SSE events.

The request and response models are vLLM's (re-exported by ray.serve.llm), so every field an
OpenAI client sends is understood; the engine's own errors come back as 4xx APIErrors. Each
answer ends in a Generation (its text, tokens and outcome) handed to the caller's callback:
the canary's per-arm counts and shadow comparisons are made from it, a stream's at its end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from ray.serve.handle import DeploymentHandle

from serve.config import ServeLLMConfig
from serve.errors import APIError, server_error
from serve.protocol import json_bytes

logger = logging.getLogger("ray.serve")
DONE_EVENT = "data: [DONE]\n\n"

# Error types of the OpenAI API by status, so clients map them to their exception classes.
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 422: "invalid_request_error"}
# A client that went away before the end of its stream: nginx's status for it, no server error.
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class Generation:
    """How an answer ended: `status` 200 when whole, else the error that ended it; the first
    choice's text and the token counts the engine reported (0 where it reported none)."""

    status: int = 200
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


OnEnd = Callable[[Generation], None]


def _usage_counts(usage: Any) -> tuple[int, int]:
    if not usage:
        return 0, 0
    if isinstance(usage, BaseModel):
        usage = usage.model_dump()
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _first_text(choices: list[Any]) -> str:
    """The text of choice 0 of a whole response or of a stream chunk (chat or completion)."""
    for choice in choices:
        if isinstance(choice, BaseModel):
            choice = choice.model_dump()
        if choice.get("index", 0) != 0:
            continue
        message = choice.get("message") or choice.get("delta") or {}
        return message.get("content") or choice.get("text") or ""
    return ""


def whole_generation(response: BaseModel) -> Generation:
    prompt, completion = _usage_counts(getattr(response, "usage", None))
    return Generation(200, _first_text(getattr(response, "choices", [])), prompt, completion)


class _StreamReader:
    """Follows a stream's chunks: the text of choice 0 and the usage chunk, which the engine
    sends only when asked for (the forwarder always asks; the client may not have)."""

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.text: list[str] = []
        self.usage: tuple[int, int] = (0, 0)

    def keep(self, event: str) -> bool:
        """Reads `event`; False for a usage chunk the client did not ask for."""
        payload = event.removeprefix("data: ").strip()
        try:
            chunk = json.loads(payload) if payload.startswith("{") else None
        except json.JSONDecodeError:  # not ours to judge: passed on as the engine sent it
            chunk = None
        if not isinstance(chunk, dict):
            return True
        self.text.append(_first_text(chunk.get("choices") or []))
        if chunk.get("usage"):
            self.usage = _usage_counts(chunk["usage"])
            return self.client_wants_usage or bool(chunk.get("choices"))
        return True

    def generation(self, status: int) -> Generation:
        return Generation(status, "".join(self.text), *self.usage)


def engine_error(error: Any) -> APIError:
    """An ErrorResponse from the engine as an APIError with the engine's status code."""
    info = error.error
    status = int(info.code) if info.code else 500
    return APIError(status, _ERROR_TYPES.get(status, info.type or "server_error"), info.message)


def error_event(error: APIError) -> str:
    return f"data: {json_bytes(error.body()).decode()}\n\n"


async def _failed_stream(error: APIError) -> AsyncIterator[str]:
    yield error_event(error)
    yield DONE_EVENT


def sse_event(item: Any) -> str:
    """One SSE event from what the engine streams: a formatted string or a response model."""
    if isinstance(item, str):
        return item
    if isinstance(item, BaseModel):
        return f"data: {item.model_dump_json()}\n\n"
    raise TypeError(f"unexpected stream item {type(item).__name__}")


class OpenAIForwarder:
    """Calls one LLMDeployment's chat/completions methods; the first item decides the answer:
    an error, a whole response, or the start of a stream. A request is answered by this
    deployment whatever model it named (the ingress chose it): its model becomes ours."""

    def __init__(
        self, llm: DeploymentHandle, cfg: ServeLLMConfig, path: str, timeout_s: float
    ) -> None:
        self.handle = llm
        self.llm = llm.options(stream=True)
        self.model_id = cfg.model_id
        self.max_model_len = cfg.max_model_len
        self.path = path  # the model's directory: its tokenizer fits RAG prompts
        self.timeout_s = timeout_s
        self.created = int(time.time())

    def models(self) -> dict[str, Any]:
        card = {"id": self.model_id, "object": "model", "created": self.created}
        return {"object": "list", "data": [{**card, "owned_by": "refinery"}]}

    async def check_health(self) -> Any:
        return await self.handle.check_health.remote()

    async def call(
        self, method: str, request: BaseModel, on_end: OnEnd | None = None
    ) -> BaseModel | AsyncIterator[str]:
        """A response model, or (streaming) an iterator of SSE events ending with [DONE].
        `on_end` learns how an answer given ended: at once when whole, at its end when
        streamed; an APIError raised here instead is the caller's to record."""
        streaming = bool(getattr(request, "stream", False))
        reader = _StreamReader(_wants_usage(request))
        stream = getattr(self.llm, method).remote(self._for_engine(request, streaming))
        try:
            first = await self._next(stream)
        except StopAsyncIteration:
            error = APIError(502, "server_error", "the engine ended its answer with no output")
            if not streaming:
                raise error from None
            _report(on_end, Generation(error.status))
            return _failed_stream(error)
        items = first if isinstance(first, list) else [first]
        if items and not isinstance(items[0], str) and hasattr(items[0], "error"):
            raise engine_error(items[0])
        if isinstance(first, BaseModel):
            _report(on_end, whole_generation(first))
            return first
        return self._events(items, stream, reader, on_end)

    def _for_engine(self, request: BaseModel, streaming: bool) -> BaseModel:
        update: dict[str, Any] = {"model": self.model_id}
        if streaming and not _wants_usage(request):
            # Asked for always, so that a stream's tokens are counted; dropped on the way out.
            options = type(request).model_fields["stream_options"].annotation
            update["stream_options"] = _non_none(options)(include_usage=True)
        return request.model_copy(update=update)

    async def text(self, method: str, request: BaseModel) -> str:
        """The whole answer's text (a shadow: never streamed)."""
        whole = request.model_copy(update={"stream": False, "stream_options": None})
        response = await self.call(method, whole)
        return whole_generation(response).text

    async def _events(
        self, first: list[Any], stream: Any, reader: _StreamReader, on_end: OnEnd | None
    ) -> AsyncIterator[str]:
        pending = list(first)
        done = finished = False
        status = 200
        try:
            while True:
                for item in pending:
                    event = sse_event(item)
                    done = done or event.strip() == DONE_EVENT.strip()
                    if reader.keep(event):
                        yield event
                try:
                    batch = await self._next(stream)
                except StopAsyncIteration:
                    finished = True
                    break
                except APIError as error:  # the response has started: report it in the stream
                    status = error.status
                    yield error_event(error)
                    break
                except Exception as error:  # an engine or replica failure, reported the same way
                    logger.exception("the %s stream failed", self.model_id)
                    status = 500
                    yield error_event(server_error(error))
                    break
                pending = batch if isinstance(batch, list) else [batch]
            if not done:
                yield DONE_EVENT
        finally:
            if not finished and status == 200:
                status = CLIENT_CLOSED
            if not finished:
                # A client gone mid-stream closes this generator: stop the generation too.
                stream.cancel()
            _report(on_end, reader.generation(status))

    async def _next(self, stream: Any) -> Any:
        """The next item, with the idle timeout: a stalled engine never hangs a request."""
        try:
            return await asyncio.wait_for(stream.__anext__(), self.timeout_s)
        except TimeoutError:
            stream.cancel()
            raise APIError(504, "timeout_error", f"no answer within {self.timeout_s:g} s") from None


def _wants_usage(request: BaseModel) -> bool:
    options = getattr(request, "stream_options", None)
    return bool(options is not None and options.include_usage)


def _non_none(annotation: Any) -> type:
    """StreamOptions out of `StreamOptions | None` (vLLM's module path moves between versions)."""
    from typing import get_args

    return next(arg for arg in get_args(annotation) if arg is not type(None))


def _report(on_end: OnEnd | None, generation: Generation) -> None:
    """A failing callback is logged: it must not fail an answer already given."""
    if on_end is None:
        return
    try:
        on_end(generation)
    except Exception:
        logger.exception("recording the end of an answer failed")
