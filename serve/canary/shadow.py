"""Shadow traffic: a copy of a request also goes to the canary while stable answers the client.

The client must never wait for a shadow, so `offer` only puts the call in a bounded queue and
returns; a few worker tasks run the queue. Under pressure (a slow canary, a burst) the queue
fills and further shadows are dropped and counted, rather than piling up memory or competing
with client requests for the event loop without bound. A shadow's failure is counted, never
raised: it says something about the canary, nothing about the client's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from refinery.config import StrictModel

logger = logging.getLogger("ray.serve")

ShadowCall = Callable[[], Awaitable[Any]]


class ShadowConfig(StrictModel):
    share: float = Field(
        0.1, ge=0, le=1, description="share of stable's requests also sent to the canary"
    )
    max_queue: int = Field(64, ge=1, description="shadows waiting; more are dropped and counted")
    workers: int = Field(4, ge=1, description="shadows running at once, per replica")
    timeout_s: float = Field(30.0, gt=0, description="a shadow running longer counts as failed")


def should_mirror(share: float, rng: random.Random | None = None) -> bool:
    """Whether this request gets a shadow: drawn per request, independent of the arm split."""
    return share > 0 and (rng or random).random() < share


class ShadowQueue:
    """A bounded queue of shadow calls run by `workers` tasks on the loop `offer` is called on.

    `offer` takes a factory, not a coroutine: a dropped shadow then never creates one (an
    un-awaited coroutine warns), and the canary call only starts when a worker is free."""

    def __init__(self, maxsize: int, workers: int = 4, timeout_s: float | None = None) -> None:
        if maxsize < 1 or workers < 1:
            raise ValueError("maxsize and workers must be at least 1")
        self.maxsize = maxsize
        self.workers = workers
        self.timeout_s = timeout_s
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.completed = 0
        self._queue: asyncio.Queue[ShadowCall] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: ShadowConfig) -> ShadowQueue:
        return cls(config.max_queue, config.workers, config.timeout_s)

    def offer(self, call: ShadowCall) -> bool:
        """Queue a shadow; False (and counted in `dropped`) when the queue is full. Never
        awaits; must be called on the running loop that serves the requests."""
        queue = self._started()
        try:
            queue.put_nowait(call)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def _started(self) -> asyncio.Queue[ShadowCall]:
        # Lazily, on the loop that serves: a replica's constructor may run before it exists.
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue(self.maxsize)
            self._tasks = [loop.create_task(self._work(self._queue)) for _ in range(self.workers)]
        return self._queue

    async def _work(self, queue: asyncio.Queue[ShadowCall]) -> None:
        while True:
            call = await queue.get()
            try:
                if self.timeout_s is None:
                    await call()
                else:
                    await asyncio.wait_for(call(), self.timeout_s)
            except Exception as error:  # the canary's failure, counted; the client never sees it
                self.failed += 1
                logger.debug("shadow call failed: %r", error)
            else:
                self.completed += 1
            finally:
                queue.task_done()

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def drain(self) -> None:
        """Wait until every queued shadow has run (tests, a graceful shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Stop the workers; shadows still queued are dropped and counted."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.dropped += self.queued
        self._tasks, self._queue, self._loop = [], None, None

    def describe(self) -> dict[str, int]:
        return {
            "maxsize": self.maxsize,
            "workers": self.workers,
            "queued": self.queued,
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "completed": self.completed,
        }
