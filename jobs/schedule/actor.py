"""The scheduler in the cluster: one detached actor, `refinery-scheduler` in namespace refinery,
that ticks the schedules (jobs/schedule/scheduler.py) on its own event loop and submits through
the Jobs API (jobs/submit.py), so schedules fire with no CLI running.

Ray restarts the actor after a crash (max_restarts=-1) and the new one resumes from the state
store: each decision is persisted before its submission, and submission ids are derived from
the schedule and the fire, so it neither misses nor repeats a fire. It does not outlive a
restart of the whole cluster; any `refinery schedule` command starts it again, and it catches up
on the fires within their grace windows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobs.schedule.model import ScheduleSpec
from jobs.schedule.scheduler import Backend, JobInfo, ScheduleError, Scheduler
from jobs.schedule.store import ScheduleStore
from refinery.ray_runtime import detached_actor, find_actor, tick_forever

logger = logging.getLogger(__name__)

NAME = "refinery-scheduler"


def utc_now() -> datetime:
    return datetime.now(UTC)


def find_scheduler() -> Any | None:
    return find_actor(NAME)


def start_scheduler(state_root: str, tick_s: float = 1.0) -> tuple[Any, str]:
    """The cluster's scheduler, started if it has none (detached: it outlives the CLI), and the
    state root it uses: a running scheduler keeps the one it was started with."""
    import ray

    scheduler = detached_actor(SchedulerActor, NAME).remote(state_root, tick_s)
    info = ray.get(scheduler.start.remote())
    return scheduler, info["state_root"]


class JobsApiBackend:
    """Submissions and job states through Ray's Jobs API, with the token jobs/submit.py sends."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from jobs.submit import connect

            self._client = connect(self.address or _cluster_address())
        return self._client

    def submit(self, job: str, config: dict[str, Any], submission_id: str) -> str:
        from jobs.batch import BATCH_JOBS
        from jobs.submit import submit

        batch = BATCH_JOBS[job]
        cfg = batch.load_config_model().model_validate(config)
        job_id, _ = submit(self.client(), batch, cfg, submission_id)
        return job_id

    def status(self, job_id: str) -> JobInfo:
        try:
            info = self.client().get_job_info(job_id)
        except RuntimeError as error:
            if "404" in str(error):
                raise LookupError(job_id) from None
            raise
        return JobInfo(
            status=str(info.status.value),
            start=_from_ms(info.start_time),
            end=_from_ms(info.end_time),
            message=info.message or "",
        )


def _cluster_address() -> str | None:
    """The cluster this actor runs in, for the Jobs API client to find its dashboard by (the
    client's own default lookup looks for a head process on this node, which a worker node
    lacks). RAY_API_SERVER_ADDRESS or RAY_ADDRESS, when set, still win, as in the client."""
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def _from_ms(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


class SchedulerActor:
    def __init__(
        self,
        state_root: str,
        tick_s: float = 1.0,
        backend: Backend | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state_root = state_root
        self.scheduler = Scheduler(ScheduleStore(state_root), backend or JobsApiBackend())
        self.tick_s = tick_s
        self.clock = clock
        self.lock = asyncio.Lock()  # one verb or tick at a time: the store has one writer
        self._ticker: asyncio.Task | None = None
        self._tick_when_restarted()

    def _tick_when_restarted(self) -> None:
        """Ray runs __init__ again when it restarts the actor, and no caller may come to start
        the ticks (the CLI is not running): the actor asks itself, once __init__ returns."""
        import ray

        if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
            ray.get_runtime_context().current_actor.start.remote()

    async def start(self) -> dict[str, Any]:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                tick_forever(self.tick, self.tick_s, "scheduler tick")
            )
        return {"state_root": self.state_root}

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        async with self.lock:
            return await asyncio.to_thread(method, *args)

    async def _verb(self, method: Callable[..., Any], *args: Any) -> dict[str, Any]:
        try:
            return {"result": await self._call(method, *args)}
        except ScheduleError as error:
            return {"error": str(error)}

    async def add(self, spec: dict[str, Any], job_config: dict[str, Any]) -> dict[str, Any]:
        def add() -> dict[str, Any]:
            now = self.clock()
            result, state = self.scheduler.add(ScheduleSpec.model_validate(spec), job_config, now)
            return {"action": result, "schedule": self.scheduler.summary(state.spec.name, now)}

        return await self._verb(add)

    async def remove(self, name: str) -> dict[str, Any]:
        return await self._verb(self.scheduler.remove, name)

    async def pause(self, name: str) -> dict[str, Any]:
        return await self._verb(lambda: self._summary_after(self.scheduler.pause, name))

    async def resume(self, name: str) -> dict[str, Any]:
        return await self._verb(lambda: self._summary_after(self.scheduler.resume, name))

    def _summary_after(self, verb: Callable[[str, datetime], Any], name: str) -> dict[str, Any]:
        now = self.clock()
        verb(name, now)
        return self.scheduler.summary(name, now)

    async def run_now(self, name: str) -> dict[str, Any]:
        return await self._verb(
            lambda: self.scheduler.run_now(name, self.clock()).model_dump(mode="json")
        )

    async def show(self, name: str) -> dict[str, Any]:
        return await self._verb(lambda: self.scheduler.summary(name, self.clock()))

    async def history(self, name: str, limit: int = 20) -> dict[str, Any]:
        def history() -> list[dict[str, Any]]:
            runs = self.scheduler.get(name).runs[-limit:] if limit > 0 else []
            return [run.model_dump(mode="json") for run in runs]

        return await self._verb(history)

    async def list_schedules(self) -> list[dict[str, Any]]:
        return await self._call(lambda: self.scheduler.summaries(self.clock()))

    async def tick(self) -> None:
        await self._call(lambda: self.scheduler.tick(self.clock()))
