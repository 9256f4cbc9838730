"""Coalescing of concurrent calls: while one call is in flight, later items wait and go together
in the next call. Idle, an item goes at once (no batching wait); under load each call carries
everything that arrived during the previous one, so a per-call cost (a scan of the whole index)
is paid once per batch, not once per request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Coalescer(Generic[ItemT, ResultT]):
    """`call` takes a list of items and returns one result per item, in order."""

    def __init__(
        self, call: Callable[[list[ItemT]], Awaitable[list[ResultT]]], max_items: int
    ) -> None:
        self._call = call
        self._max_items = max_items
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._draining = False

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_items]
                del self._pending[: self._max_items]
                await self._run(batch)
        finally:
            self._draining = False

    async def _run(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch])
        except Exception as error:  # every caller of the batch gets the call's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a caller that gave up (timeout, disconnect) is skipped
                future.set_result(result)
