"""What the canary Serve tests share: a controller of their own per test, and waits on what an
application serves and on where its rollout stands."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


@contextmanager
def fresh_controller(app: str, root: Path, restore: dict[str, Any]) -> Iterator[Any]:
    """A controller with its own state (rollouts and MLflow under `root`); afterwards it is
    gone and the application serves `restore` (the stable arm's fields) alone again."""
    import ray

    from serve.canary.controller import find_controller, start_controller
    from serve.canary.deploy import set_canary

    tracking = f"sqlite:///{root / 'mlflow.db'}"
    handle = start_controller(app, str(root / "rollouts"), tracking, tick_s=0.2)
    try:
        yield handle
    finally:
        ray.kill(handle, no_restart=True)
        # ray.kill returns before the name is free: the next test's controller must be new.
        deadline = time.monotonic() + 30
        while find_controller(app) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        set_canary(app, None, restore)


async def wait_for_routing(
    url: str, reached: Callable[[dict], bool], timeout_s: float = 60
) -> None:
    """Until the replica serves what `reached` wants (set_canary returns once Serve's controller
    has the config; the replicas apply it a moment later)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            ready = (await client.get("/readyz")).json()
            if "routing" in ready and reached(ready["routing"]):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"routing not reached within {timeout_s} s: {ready}")


def wait_status(handle: Any, done: Callable[[dict], bool], timeout_s: float = 120) -> dict:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ray.get(handle.status.remote())
        if done(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"not reached in {timeout_s} s: {status}")


def rollout_status(handle: Any, wanted: str, timeout_s: float = 120) -> dict:
    return wait_status(handle, lambda s: s["rollout"]["status"] == wanted, timeout_s)


class BackgroundLoad:
    """Requests in a background thread while a rollout runs: `batch` sends a few at a time and
    returns their responses; every status code is counted."""

    def __init__(self, batch: Callable[[], Awaitable[list[httpx.Response]]]) -> None:
        self.batch, self.statuses = batch, Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        while not self.stop.is_set():
            for response in await self.batch():
                self.statuses[response.status_code] += 1

    def __enter__(self) -> BackgroundLoad:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
