"""The OpenAI forwarder when the engine's stream misbehaves, without Ray: the real engine cannot
be made to end early or fail mid-stream on demand, so a stand-in handle yields what it would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from serve.errors import APIError
from serve.openai_api import DONE_EVENT, OpenAIForwarder


class Request(BaseModel):
    stream: bool


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
        return self.stream


def collect(items: list[Any], stream: bool) -> list[str]:
    async def run() -> list[str]:
        result = await OpenAIForwarder(Handle(items), "m", 5.0).call("chat", Request(stream=stream))
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
        asyncio.run(OpenAIForwarder(handle, "m", 5.0).call("chat", Request(stream=False)))
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
