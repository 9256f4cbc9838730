"""The scheduler's decisions: which fires run, which are skipped, coalesced or missed, and the
verbs of `refinery schedule`. Plain Python: the time is an argument of every call and the Ray
Jobs API is a `Backend` passed in, so a test drives days of fires in milliseconds.

Each tick, per schedule:

1. The runs that may still be going are brought up to date from the backend (a run decided but
   not yet accepted is submitted again, under its deterministic submission id).
2. The fires due since the cursor are decided (`plan`): the latest runs if it is within the
   grace window and no earlier run of the schedule is still going (else it is SKIPPED); earlier
   fires due together with it are COALESCED into it, or MISSED when older than the window.
3. The decision and the moved cursor are persisted, and only then is the run submitted.

A scheduler that dies anywhere in there resumes from the persisted state: a fire is decided once
(the cursor has moved past it) and a decided run is submitted again under the same id, which the
Jobs API reports as the existing job rather than starting it twice.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from jobs.schedule.cron import CronSchedule, expand, submission_id, utc
from jobs.schedule.model import (
    RAY_TERMINAL,
    Run,
    ScheduleSpec,
    ScheduleState,
    format_duration,
)
from jobs.schedule.store import ScheduleStore

logger = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A verb that does not apply: an unknown schedule name."""


@dataclass(frozen=True)
class JobInfo:
    status: str  # Ray's: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    start: datetime | None = None
    end: datetime | None = None
    message: str = ""


class Backend(Protocol):
    def submit(self, job: str, config: dict[str, Any], submission_id: str) -> str:
        """Submit the job (idempotent for a known submission id); returns the job id."""

    def status(self, job_id: str) -> JobInfo:
        """The job's state; LookupError when the cluster does not know it."""


def plan(state: ScheduleState, now: datetime, max_records: int = 200) -> tuple[list[Run], datetime]:
    """The records of the fires due in (cursor, now] and the cursor after them (pure)."""
    if state.paused:
        return [], state.cursor
    spec = state.spec
    now = utc(now)
    due: deque[datetime] = deque(maxlen=max(max_records, 2))
    count = 0
    for fire in CronSchedule(spec.cron, spec.tz).fires_between(state.cursor, now):
        due.append(fire)
        count += 1
    if not due:
        return [], state.cursor
    grace = timedelta(seconds=spec.grace)
    *earlier, latest = due
    records = [_not_run(fire, latest, now, grace) for fire in earlier]
    if count > len(due):
        records[0].reason += f"; {count - len(due)} fires before it are not recorded"
    if now - latest > grace:
        records.append(_missed(latest, now, grace))
    elif (active := state.active_run()) is not None:
        records.append(Run(fire_time=latest, status="SKIPPED", reason=_overlap(active)))
    else:
        records.append(
            Run(
                fire_time=latest,
                status="SUBMITTING",
                submission_id=submission_id(spec.name, latest),
            )
        )
    return records, latest


def _not_run(fire: datetime, latest: datetime, now: datetime, grace: timedelta) -> Run:
    if now - fire > grace:
        return _missed(fire, now, grace)
    return Run(
        fire_time=fire,
        status="COALESCED",
        reason=f"due together with the fire at {latest.isoformat()}, which stands for it",
    )


def _missed(fire: datetime, now: datetime, grace: timedelta) -> Run:
    late = format_duration(now - fire)
    return Run(
        fire_time=fire,
        status="MISSED",
        reason=f"{late} late, beyond the grace window of {format_duration(grace)}",
    )


def _overlap(active: Run) -> str:
    return f"the previous run {active.submission_id} is still {active.status}"


class Scheduler:
    """The schedules of one store. One instance owns the store (the actor serializes calls);
    it keeps the states in memory and writes each change through before acting on it."""

    def __init__(self, store: ScheduleStore, backend: Backend, poll_s: float = 10.0) -> None:
        self.store = store
        self.backend = backend
        self.poll_s = poll_s
        self._states: dict[str, ScheduleState] | None = None
        self._polled: dict[str, datetime] = {}

    # -- state ---------------------------------------------------------------------------

    def states(self) -> dict[str, ScheduleState]:
        if self._states is None:
            self._states = self.store.load_all()
        return self._states

    def get(self, name: str) -> ScheduleState:
        state = self.states().get(name)
        if state is None:
            raise ScheduleError(f"no schedule named {name!r}")
        return state

    def _copy(self, name: str) -> ScheduleState:
        # Changes are made on a copy and take effect in memory only once persisted.
        return self.get(name).model_copy(deep=True)

    def _commit(self, state: ScheduleState) -> None:
        self.store.save(state)
        kept = state.model_copy(deep=True)
        kept.runs = kept.runs[-self.store.max_runs :]
        self.states()[state.spec.name] = kept

    # -- verbs ---------------------------------------------------------------------------

    def add(
        self, spec: ScheduleSpec, job_config: dict[str, Any], now: datetime
    ) -> tuple[Literal["added", "updated", "unchanged"], ScheduleState]:
        """Create or replace a schedule; its runs and cursor survive a replacement."""
        now = utc(now)
        old = self.states().get(spec.name)
        if old is None:
            state = ScheduleState(
                spec=spec, job_config=job_config, created=now, updated=now, cursor=now
            )
            self._commit(state)
            return "added", state
        if old.spec == spec and old.job_config == job_config:
            return "unchanged", old
        cursor = old.cursor
        if (expand(spec.cron), spec.tz) != (expand(old.spec.cron), old.spec.tz):
            # The old timetable's due fires are not the new one's to catch up on.
            cursor = max(cursor, now)
        state = self._copy(spec.name).model_copy(
            update={"spec": spec, "job_config": job_config, "updated": now, "cursor": cursor}
        )
        self._commit(state)
        return "updated", state

    def remove(self, name: str) -> None:
        """Forget the schedule and its history; a run it started goes on."""
        self.get(name)
        self.store.delete(name)
        self.states().pop(name, None)

    def pause(self, name: str, now: datetime) -> ScheduleState:
        state = self._copy(name)
        if not state.paused:
            state.paused, state.updated = True, utc(now)
            self._commit(state)
        return self.get(name)

    def resume(self, name: str, now: datetime) -> ScheduleState:
        """Fires that fell in the pause are neither run nor recorded: the pause meant them."""
        state = self._copy(name)
        if state.paused:
            now = utc(now)
            state.paused, state.updated, state.cursor = False, now, max(state.cursor, now)
            self._commit(state)
        return self.get(name)

    def run_now(self, name: str, now: datetime) -> Run:
        """One run outside the timetable, under the same overlap rule as a cron fire."""
        now = utc(now).replace(microsecond=0)
        state = self._copy(name)
        self._refresh(state, now, poll=True)
        active = state.active_run()
        if active is not None:
            run = Run(fire_time=now, trigger="manual", status="SKIPPED", reason=_overlap(active))
        else:
            run = Run(
                fire_time=now,
                trigger="manual",
                status="SUBMITTING",
                submission_id=submission_id(name, now, manual=True),
            )
        state.runs.append(run)
        self._commit(state)
        if run.status == "SUBMITTING":
            self._submit(state, run, now)
            self._commit(state)
        return run

    # -- ticks ---------------------------------------------------------------------------

    def tick(self, now: datetime) -> list[Run]:
        """Every schedule's tick; one schedule's failure (logged) does not hold the others."""
        records = []
        for name in list(self.states()):
            try:
                records += self.tick_one(name, now)
            except Exception:  # the next tick tries again from the persisted state
                logger.exception("schedule tick of %s", name)
        return records

    def tick_one(self, name: str, now: datetime) -> list[Run]:
        now = utc(now)
        state = self._copy(name)
        changed = self._refresh(state, now, poll=self._poll_now(state, now))
        records, cursor = plan(state, now, self.store.max_runs)
        if records:
            state.runs.extend(records)
            state.cursor = cursor
            self._commit(state)
            changed = self._refresh(state, now, poll=False)
        if changed:
            self._commit(state)
        return records

    def _poll_now(self, state: ScheduleState, now: datetime) -> bool:
        """Whether to ask the Jobs API about the runs that may be going: when a fire is due,
        whose overlap rule needs their state now, and otherwise every poll_s."""
        name, spec = state.spec.name, state.spec
        due = not state.paused and CronSchedule(spec.cron, spec.tz).next_fire(state.cursor) <= now
        last = self._polled.get(name)
        if due or last is None or now - last >= timedelta(seconds=self.poll_s):
            self._polled[name] = now
            return True
        return False

    def _refresh(self, state: ScheduleState, now: datetime, poll: bool) -> bool:
        """Submit the runs decided but not accepted yet and, with `poll`, bring the others that
        may be going up to date. Whether anything changed."""
        changed = False
        for run in state.runs:
            if not run.active:
                continue
            before = run.model_dump()
            if run.status == "SUBMITTING":
                self._submit(state, run, now)
            elif poll:
                self._poll(run, now)
            changed = changed or run.model_dump() != before
        return changed

    def _submit(self, state: ScheduleState, run: Run, now: datetime) -> None:
        assert run.submission_id is not None
        try:
            job_id = self.backend.submit(state.spec.job, state.job_config, run.submission_id)
        except Exception as error:  # the Jobs API unreachable, a config the job now refuses
            grace = timedelta(seconds=state.spec.grace)
            if now - run.fire_time > grace:
                run.status, run.end = "FAILED", now
                run.reason = f"not submitted within the grace window: {error}"
            else:
                run.reason = f"submission failed, tried again each tick: {error}"
            return
        run.status, run.job_id, run.start, run.reason = "PENDING", job_id, now, ""

    def _poll(self, run: Run, now: datetime) -> None:
        assert run.job_id is not None
        try:
            info = self.backend.status(run.job_id)
        except LookupError:
            run.status, run.end = "FAILED", now
            run.reason = "the cluster no longer knows this job (a cluster restart?)"
            return
        except Exception as error:  # unknown for now: still counted as going
            logger.warning("status of %s: %s", run.job_id, error)
            return
        if info.status not in ("PENDING", "RUNNING", *RAY_TERMINAL):
            return
        run.status = info.status
        if info.start is not None:
            run.start = info.start
        if info.status in RAY_TERMINAL:
            run.end = info.end or now
            if info.status != "SUCCEEDED" and info.message:
                run.reason = info.message

    # -- reading -------------------------------------------------------------------------

    def summary(self, name: str, now: datetime) -> dict[str, Any]:
        return summarize(self.get(name), now)

    def summaries(self, now: datetime) -> list[dict[str, Any]]:
        return [summarize(state, now) for _, state in sorted(self.states().items())]


def summarize(state: ScheduleState, now: datetime) -> dict[str, Any]:
    """What `list` and `show` print of a schedule (JSON-able)."""
    cron = CronSchedule(state.spec.cron, state.spec.tz)
    upcoming: list[datetime] = []
    if not state.paused:
        fires = cron.fires_after(max(state.cursor, utc(now)))
        upcoming = [next(fires) for _ in range(3)]
    last = state.runs[-1] if state.runs else None
    active = state.active_run()
    return {
        "name": state.spec.name,
        "spec": state.spec.model_dump(mode="json"),
        "paused": state.paused,
        "cursor": state.cursor.isoformat(),
        "next_fires": [fire.astimezone(cron.tz).isoformat() for fire in upcoming],
        "last_run": last.model_dump(mode="json") if last else None,
        "active_run": active.model_dump(mode="json") if active else None,
        "runs": len(state.runs),
    }
