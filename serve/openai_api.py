"""The OpenAI-compatible endpoints' serving logic, apart from HTTP: forward a validated request
to the LLMDeployment and turn what it yields into one JSON body or a stream of SSE events.

The request and response models are vLLM's (re-exported by ray.serve.llm), so every field an
OpenAI client sends is understood; the engine's own errors come back as 4xx APIErrors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from ray.serve.handle import DeploymentHandle

from serve.errors import APIError, server_error
from serve.protocol import json_bytes

logger = logging.getLogger("ray.serve")
DONE_EVENT = "data: [DONE]\n\n"

# Error types of the OpenAI API by status, so clients map them to their exception classes.
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 422: "invalid_request_error"}


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
    """Calls the LLMDeployment's chat/completions methods; the first item decides the answer:
    an error, a whole response, or the start of a stream."""

    def __init__(self, llm: DeploymentHandle, model_id: str, timeout_s: float) -> None:
        self.handle = llm
        self.llm = llm.options(stream=True)
        self.model_id = model_id
        self.timeout_s = timeout_s
        self.created = int(time.time())

    def models(self) -> dict[str, Any]:
        card = {"id": self.model_id, "object": "model", "created": self.created}
        return {"object": "list", "data": [{**card, "owned_by": "refinery"}]}

    async def check_health(self) -> Any:
        return await self.handle.check_health.remote()

    async def call(self, method: str, request: BaseModel) -> BaseModel | AsyncIterator[str]:
        """A response model, or (streaming) an iterator of SSE events ending with [DONE]."""
        stream = getattr(self.llm, method).remote(request)
        try:
            first = await self._next(stream)
        except StopAsyncIteration:
            error = APIError(502, "server_error", "the engine ended its answer with no output")
            if getattr(request, "stream", False):
                return _failed_stream(error)
            raise error from None
        items = first if isinstance(first, list) else [first]
        if items and not isinstance(items[0], str) and hasattr(items[0], "error"):
            raise engine_error(items[0])
        if isinstance(first, BaseModel):
            return first
        return self._events(items, stream)

    async def _events(self, first: list[Any], stream: Any) -> AsyncIterator[str]:
        pending = list(first)
        done = finished = False
        try:
            while True:
                for item in pending:
                    event = sse_event(item)
                    done = done or event.strip() == DONE_EVENT.strip()
                    yield event
                try:
                    batch = await self._next(stream)
                except StopAsyncIteration:
                    finished = True
                    break
                except APIError as error:  # the response has started: report it in the stream
                    yield error_event(error)
                    break
                except Exception as error:  # an engine or replica failure, reported the same way
                    logger.exception("the %s stream failed", self.model_id)
                    yield error_event(server_error(error))
                    break
                pending = batch if isinstance(batch, list) else [batch]
            if not done:
                yield DONE_EVENT
        finally:
            if not finished:
                # A client gone mid-stream closes this generator: stop the generation too.
                stream.cancel()

    async def _next(self, stream: Any) -> Any:
        """The next item, with the idle timeout: a stalled engine never hangs a request."""
        try:
            return await asyncio.wait_for(stream.__anext__(), self.timeout_s)
        except TimeoutError:
            stream.cancel()
            raise APIError(504, "timeout_error", f"no answer within {self.timeout_s:g} s") from None
