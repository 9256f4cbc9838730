"""The OpenAI forwarder when the engine's stream misbehaves, and what it reports of each answer's
end (tokens, text, outcome), without Ray: the real engine cannot be made to end early or fail
mid-stream on demand, so a stand-in handle yields what it would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from serve.config import ServeLLMConfig
from serve.errors import APIError
from serve.openai_api import CLIENT_CLOSED, DONE_EVENT, Generation, OpenAIForwarder


class StreamOptions(BaseModel):
    include_usage: bool | None = True


class Request(BaseModel):
    """The fields of vLLM's request models that the forwarder reads or sets."""

    model: str = "the-app's-model"
    stream: bool
    stream_options: StreamOptions | None = None


def forwarder(handle: Handle) -> OpenAIForwarder:
    return OpenAIForwarder(handle, ServeLLMConfig(model_id="m"), "/models/m", 5.0)


class Stream:
    """What `handle.options(stream=True).method.remote(...)` returns: an async iterator."""

    def __init__(self, items: list[Any]) -> None:
        self.items = iter(items)
        self.cancelled = False

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        item = next(self.items, StopAsyncIteration)
        if item is StopAsyncIteration or isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


class Handle:
    def __init__(self, items: list[Any]) -> None:
        self.stream = Stream(items)

    def options(self, stream: bool) -> Handle:
        return self

    @property
    def chat(self) -> Handle:
        return self

    def remote(self, request: BaseModel) -> Stream:
        self.sent = request
        return self.stream


def collect(
    items: list[Any], stream: bool, ended: list[Generation] | None = None, **fields: Any
) -> list[str]:
    async def run() -> list[str]:
        request = Request(stream=stream, **fields)
        result = await forwarder(Handle(items)).call(
            "chat", request, ended.append if ended is not None else None
        )
        assert isinstance(result, AsyncIterator)
        return [event async for event in result]

    return asyncio.run(run())


def error_of(event: str) -> dict[str, str]:
    return json.loads(event.removeprefix("data: "))["error"]


CHUNK = 'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'


def test_a_stream_that_ends_without_an_item_ends_with_an_error_event() -> None:
    events = collect([], stream=True)
    assert events[-1] == DONE_EVENT and len(events) == 2
    assert error_of(events[0]) == {
        "type": "server_error",
        "message": "the engine ended its answer with no output",
    }


def test_a_whole_answer_that_never_comes_is_a_502() -> None:
    handle = Handle([])
    with pytest.raises(APIError, match="ended its answer with no output") as error:
        asyncio.run(forwarder(handle).call("chat", Request(stream=False)))
    assert error.value.status == 502


def test_a_failure_mid_stream_ends_with_an_error_event() -> None:
    events = collect([[CHUNK], RuntimeError("replica died")], stream=True)
    assert events[0] == CHUNK and events[-1] == DONE_EVENT and len(events) == 3
    assert error_of(events[1]) == {
        "type": "server_error",
        "message": "the server failed (RuntimeError); see its log",
    }


def test_an_api_error_mid_stream_keeps_its_status_type() -> None:
    timeout = APIError(504, "timeout_error", "no answer within 5 s")
    events = collect([[CHUNK], timeout], stream=True)
    assert error_of(events[1]) == {"type": "timeout_error", "message": "no answer within 5 s"}
    assert events[-1] == DONE_EVENT


USAGE = 'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'


def test_a_streams_end_reports_its_text_and_tokens_and_hides_usage_nobody_asked_for() -> None:
    ended: list[Generation] = []
    events = collect([[CHUNK], [CHUNK, USAGE], [DONE_EVENT]], stream=True, ended=ended)
    assert events == [CHUNK, CHUNK, DONE_EVENT]
    assert ended == [Generation(200, "hihi", 7, 2)]

    asked: list[Generation] = []
    events = collect([[CHUNK, USAGE]], True, asked, stream_options=StreamOptions())
    assert events == [CHUNK, USAGE, DONE_EVENT] and asked == [Generation(200, "hi", 7, 2)]


def test_the_engine_gets_this_deployments_model_and_is_asked_for_usage() -> None:
    handle = Handle([[CHUNK]])

    async def run() -> None:
        result = await forwarder(handle).call("chat", Request(stream=True))
        [event async for event in result]

    asyncio.run(run())
    assert handle.sent.model == "m" and handle.sent.stream_options.include_usage


def test_a_failed_or_abandoned_stream_reports_how_it_ended() -> None:
    failed: list[Generation] = []
    collect([[CHUNK], RuntimeError("replica died")], True, failed)
    assert failed == [Generation(500, "hi")]

    async def leave_after_one_event() -> list[Generation]:
        left: list[Generation] = []
        handle = Handle([[CHUNK], [CHUNK], [DONE_EVENT]])
        stream = await forwarder(handle).call("chat", Request(stream=True), left.append)
        await stream.__anext__()
        await stream.aclose()  # what Starlette does when the client goes away
        assert handle.stream.cancelled
        return left

    assert asyncio.run(leave_after_one_event()) == [Generation(CLIENT_CLOSED, "hi")]


def test_a_whole_answer_reports_at_once() -> None:
    class Message(BaseModel):
        content: str

    class Choice(BaseModel):
        index: int = 0
        message: Message

    class Usage(BaseModel):
        prompt_tokens: int
        completion_tokens: int

    class Response(BaseModel):
        choices: list[Choice]
        usage: Usage

    whole = Response(
        choices=[Choice(message=Message(content="Paris."))],
        usage=Usage(prompt_tokens=5, completion_tokens=3),
    )
    ended: list[Generation] = []
    result = asyncio.run(
        forwarder(Handle([whole])).call("chat", Request(stream=False), ended.append)
    )
    assert result is whole and ended == [Generation(200, "Paris.", 5, 3)]
