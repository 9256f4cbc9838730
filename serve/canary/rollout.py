"""The rollout state machine: a canary's traffic weight grows step by step while its gates hold,
and drops to 0 the moment one fails.

Every function here is pure (it returns a new state, the input is left as it was) and takes the
time as an argument: the controller decides when to call it and persists what it returns, and a
test walks a whole rollout in microseconds. The state carries everything a restarted controller
needs (the config, the step, the weight, when the step began, the counts at its start), so it
resumes the step where it was: never back to 0%, never ahead to 100%.

`weight` is always the share (0-100) of requests for the `to` version. After a promotion the
serving side swaps the arms, so `to` is stable at 100%; a rollback after that is 0%: all traffic
back to `from_version`, which stays loaded until the next rollout.

When gates are judged. A step moves on only when both its interval has passed and the canary
answered `min_requests` in the step's window, and every gate passed. A failure does not wait for
the interval: once the window holds `min_requests`, every `advance` judges the gates and one
failure rolls back at once. Before that, too few requests make latency and success rates noise,
but errors are not: when the window's errors already reach the error budget of `min_requests`
(max_error_rate x min_requests), the error gate would fail even if every request still missing
succeeded, so the rollout rolls back then. Together this bounds the time to roll back by the
time the canary takes to answer `min_requests`, within one interval whenever traffic reaches the
minimum in an interval (a step could not move on sooner anyway).

`set_weight` is a step of its own, not a pause of the machine: the weight applies at once, a new
window starts, the gates keep judging it, and after the interval the schedule continues at the
first step above it (none: promote). `set 0` thus holds the rollout (a canary without traffic
never reaches `min_requests`) until another `set`, `abort`, `promote` or `rollback`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from refinery import storage
from refinery.config import StrictModel
from serve.canary.agreement import Agreement
from serve.canary.gates import GateConfig, GateResult, describe_failures, evaluate, verdict
from serve.canary.split import CANARY
from serve.canary.window import ArmStats
from serve.config import FaultConfig

RolloutStatus = Literal["running", "promoted", "rolled_back", "aborted"]
EventKind = Literal["step", "gate", "rollback", "promote", "abort", "set"]

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RolloutError(ValueError):
    """A verb that does not apply to the rollout as it is (abort a finished one, ...)."""


class RolloutConflict(RolloutError):
    """A second rollout of an application while one is running."""


class RolloutConfig(StrictModel):
    steps: list[int] = Field(
        default_factory=lambda: [1, 5, 10, 25, 50, 100],
        description="canary weights in percent, strictly increasing, 1-100",
    )
    interval_s: float = Field(300.0, ge=0, description="the least time each step holds")
    min_requests: int = Field(
        100, ge=1, description="canary requests each step's window needs before it moves on"
    )
    gates: GateConfig = Field(default_factory=GateConfig)
    shadow: float = Field(
        0.1, ge=0, le=1, description="share of searches mirrored to the other arm, compared"
    )
    fault: FaultConfig | None = Field(
        None, description="faults injected into the canary's answers, to rehearse a rollback"
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("at least one step")
        if any(not 1 <= step <= 100 for step in steps):
            raise ValueError(f"every step must be within 1-100, got {steps}")
        if any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        return steps


class RolloutEvent(StrictModel):
    at: float
    kind: EventKind
    weight: int
    gates: list[GateResult] = Field(default_factory=list)
    reason: str = ""


class RegistryVersion(StrictModel):
    """The index registry version of a rollout's canary snapshot (refinery/registry.py)."""

    uri: str = Field(description="the registry's MLflow tracking URI")
    name: str = Field(description="the registered model")
    version: str = Field(description="made `champion` when the rollout is promoted")
    previous: str | None = Field(
        None, description="the champion before: made champion again by a rollback after promotion"
    )


class RolloutState(StrictModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    app: str
    to: str
    from_version: str
    to_snapshot: str | None = Field(None, description="the canary's index snapshot")
    from_snapshot: str | None = Field(None, description="the stable index snapshot it replaces")
    to_llm: str | None = Field(None, description="the model_id of the canary's LLM deployment")
    from_llm: str | None = Field(None, description="the model_id of the stable LLM it replaces")
    status: RolloutStatus = "running"
    config: RolloutConfig = Field(default_factory=RolloutConfig)
    index_arm: bool = True
    step: int | None = Field(
        0, description="index of the current step in config.steps; None: a weight set by hand"
    )
    weight: int = Field(ge=0, le=100)
    step_started_at: float
    window_start: dict[str, Any] | None = Field(
        None, description="ArmStats.to_dict() at the step's start; None: taken at next advance"
    )
    history: list[RolloutEvent] = Field(default_factory=list)
    run_id: str | None = Field(None, description="the rollout's MLflow run")
    registry: RegistryVersion | None = Field(None, description="the canary's registry version")
    started_at: float
    ended_at: float | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        return cls.model_validate_json(text)


@dataclass(frozen=True)
class Decision:
    """What one `advance` concluded. `weight` is the weight to apply now, None to keep the
    current one; `state` is the new state, to persist before applying the weight."""

    state: RolloutState
    weight: int | None = None
    promoted: bool = False
    rolled_back: bool = False
    gates: list[GateResult] = field(default_factory=list)
    reason: str = ""


def next_weight(weight: int, steps: list[int]) -> int | None:
    """The first step above `weight`; None past the last: the canary is promoted."""
    return next((step for step in steps if step > weight), None)


def _event(state: RolloutState, now: float, kind: EventKind, **kwargs: Any) -> None:
    state.history.append(RolloutEvent(at=now, kind=kind, weight=state.weight, **kwargs))


def _new_step(state: RolloutState, now: float, weight: int, counts: ArmStats | None) -> None:
    state.weight = weight
    state.step = state.config.steps.index(weight) if weight in state.config.steps else None
    state.step_started_at = now
    state.window_start = counts.to_dict() if counts is not None else None


def _end(state: RolloutState, now: float, status: RolloutStatus, weight: int) -> None:
    state.status = status
    state.weight = weight
    state.ended_at = now


class Rollout:
    """The automatic part: start a rollout and move it on from the counts of each poll."""

    @staticmethod
    def start(
        app: str,
        to: str,
        from_version: str,
        cfg: RolloutConfig,
        now: float,
        *,
        index_arm: bool = True,
        counts: ArmStats | None = None,
    ) -> RolloutState:
        """The first step's weight at once. `counts`: the controller's counts now, the first
        window's start; None takes them at the first `advance`."""
        if not APP_NAME.fullmatch(app):
            raise RolloutError(f"application name {app!r}: letters, digits, '_', '.', '-'")
        if to == from_version:
            raise RolloutError(f"{to!r} is already the stable version of {app}")
        state = RolloutState(
            app=app,
            to=to,
            from_version=from_version,
            config=cfg,
            index_arm=index_arm,
            weight=cfg.steps[0],
            step_started_at=now,
            window_start=counts.to_dict() if counts is not None else None,
            started_at=now,
        )
        _event(state, now, "step", reason=f"rollout of {to} (from {from_version}) started")
        return state

    @staticmethod
    def advance(
        state: RolloutState,
        cfg: RolloutConfig,
        now: float,
        counts: ArmStats,
        agreement: Agreement | None,
    ) -> Decision:
        """One poll. `counts`: the controller's cumulative per-arm counts (a Tally's total);
        `agreement`: the shadow agreement of (from_version, to), None without shadows. `cfg` is
        normally `state.config`; another one (edited gates) applies from this call on."""
        if not state.running:
            return Decision(state, reason=f"rollout {state.status}")
        if agreement is not None and (agreement.stable_version, agreement.canary_version) != (
            state.from_version,
            state.to,
        ):
            raise ValueError(
                f"agreement of {agreement.stable_version} -> {agreement.canary_version} given "
                f"for the rollout {state.from_version} -> {state.to}"
            )
        new = state.model_copy(deep=True)
        new.config = cfg
        if new.window_start is None:
            new.window_start = counts.to_dict()
            return Decision(new, reason="window started")

        canary = counts.minus(ArmStats.from_dict(new.window_start))[CANARY]
        results = evaluate(canary, agreement, cfg.gates, new.index_arm)
        if canary.requests < cfg.min_requests:
            budget = cfg.gates.max_error_rate * cfg.min_requests
            # The tolerance keeps 0.07 x 100 from asking for an 8th error.
            if canary.errors > 0 and canary.errors >= budget - 1e-9:
                spent = GateResult(
                    "error_budget",
                    float(canary.errors),
                    budget,
                    "failed",
                    f"{canary.errors} errors in the first {canary.requests} of the "
                    f"{cfg.min_requests} requests the error gate judges",
                )
                return _rolled_back(new, now, [*results, spent])
            return Decision(
                new,
                gates=[_not_yet(result, cfg.min_requests) for result in results],
                reason=f"{canary.requests} of {cfg.min_requests} canary requests",
            )
        outcome = verdict(results)
        if outcome == "failed":
            return _rolled_back(new, now, results)
        remaining = cfg.interval_s - (now - new.step_started_at)
        if remaining > 0:
            return Decision(new, gates=results, reason=f"step holds {remaining:.0f} s more")
        if outcome == "pending":
            waiting = ", ".join(r.name for r in results if r.pending)
            return Decision(new, gates=results, reason=f"waiting for {waiting}")

        _event(new, now, "gate", gates=results, reason=f"step at {new.weight}% passed")
        following = next_weight(new.weight, cfg.steps)
        if following is None:
            _end(new, now, "promoted", 100)
            _event(new, now, "promote", reason="last step passed")
            return Decision(new, 100, promoted=True, gates=results, reason="last step passed")
        _new_step(new, now, following, counts)
        _event(new, now, "step", reason="gates passed")
        return Decision(new, following, gates=results, reason="gates passed")


def _not_yet(result: GateResult, min_requests: int) -> GateResult:
    """A verdict on fewer than `min_requests` is shown as pending: it is not acted on."""
    if result.pending:
        return result
    return replace(result, status="pending", detail=f"{result.detail}; judged at {min_requests}")


def _rolled_back(state: RolloutState, now: float, results: list[GateResult]) -> Decision:
    reason = f"gate failed: {describe_failures(results)}"
    _event(state, now, "gate", gates=results, reason=f"step at {state.weight}% failed")
    _end(state, now, "rolled_back", 0)
    _event(state, now, "rollback", reason=reason)
    return Decision(state, 0, rolled_back=True, gates=results, reason=reason)


def _running(state: RolloutState, verb: str) -> RolloutState:
    if not state.running:
        raise RolloutError(
            f"cannot {verb} the rollout of {state.app} to {state.to}: it is {state.status}"
        )
    return state.model_copy(deep=True)


def set_weight(
    state: RolloutState, weight: int, now: float, counts: ArmStats | None = None
) -> RolloutState:
    """Move the canary to `weight` by hand: a step of its own (see the module docstring)."""
    if not 0 <= weight <= 100:
        raise RolloutError(f"weight must be within 0-100, got {weight}")
    new = _running(state, "set the weight of")
    _new_step(new, now, weight, counts)
    _event(new, now, "set", reason=f"weight set by hand to {weight}%")
    return new


def abort(state: RolloutState, now: float, reason: str = "aborted by hand") -> RolloutState:
    """Stop a running rollout with no verdict on the canary: 0%."""
    new = _running(state, "abort")
    _end(new, now, "aborted", 0)
    _event(new, now, "abort", reason=reason)
    return new


def promote(state: RolloutState, now: float, reason: str = "promoted by hand") -> RolloutState:
    """Skip the remaining steps and gates: the canary takes 100% and becomes stable."""
    new = _running(state, "promote")
    _end(new, now, "promoted", 100)
    _event(new, now, "promote", reason=reason)
    return new


def rollback(state: RolloutState, now: float, reason: str = "rolled back by hand") -> RolloutState:
    """0% for `to`, from a running rollout or after its promotion (the old stable is still
    loaded until the next rollout)."""
    if state.status not in ("running", "promoted"):
        raise RolloutError(
            f"cannot roll back the rollout of {state.app} to {state.to}: it is {state.status}"
        )
    new = state.model_copy(deep=True)
    _end(new, now, "rolled_back", 0)
    _event(new, now, "rollback", reason=reason)
    return new


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class RolloutStore:
    """One JSON file per application under `root` (a path or URI): the current rollout, running
    or the last one ended (so that `rollback` after a promotion finds it), and the ones before.

    Read-modify-write without a lock: one controller actor owns the store and serializes its
    calls. Each write replaces the file whole (storage.write_text), so a crash mid-write leaves
    the previous state, never half of one."""

    def __init__(self, root: str, max_history: int = 50) -> None:
        self.root = root.rstrip("/")
        self.max_history = max_history

    def path(self, app: str) -> str:
        if not APP_NAME.fullmatch(app):
            raise RolloutError(f"application name {app!r}: letters, digits, '_', '.', '-'")
        return f"{self.root}/{app}.json"

    def _read(self, app: str) -> tuple[RolloutState | None, list[RolloutState]]:
        try:
            text = storage.read_text(self.path(app))
        except FileNotFoundError:
            return None, []
        data = json.loads(text)
        current = data.get("current")
        return (
            RolloutState.model_validate(current) if current is not None else None,
            [RolloutState.model_validate(item) for item in data.get("history", [])],
        )

    def _write(self, app: str, current: RolloutState | None, history: list[RolloutState]) -> None:
        data = {
            "app": app,
            "current": current.model_dump(mode="json") if current is not None else None,
            "history": [item.model_dump(mode="json") for item in history[-self.max_history :]],
        }
        storage.write_text(self.path(app), json.dumps(data, indent=2))

    def load(self, app: str) -> RolloutState | None:
        """The current rollout (running or the last ended), None before the first."""
        return self._read(app)[0]

    def history(self, app: str) -> list[RolloutState]:
        """The rollouts before the current one, oldest first."""
        return self._read(app)[1]

    def save(self, state: RolloutState) -> None:
        """Persist a new state of the current rollout; another running rollout is never
        overwritten."""
        current, history = self._read(state.app)
        if current is not None and current.id != state.id:
            if current.running:
                raise RolloutConflict(_conflict(current))
            history.append(current)
        self._write(state.app, state, history)

    def start(
        self,
        app: str,
        to: str,
        from_version: str,
        cfg: RolloutConfig,
        now: float,
        *,
        index_arm: bool = True,
        counts: ArmStats | None = None,
    ) -> RolloutState:
        """Start and persist a rollout; RolloutConflict while another of `app` runs."""
        current, _ = self._read(app)
        if current is not None and current.running:
            raise RolloutConflict(_conflict(current))
        state = Rollout.start(app, to, from_version, cfg, now, index_arm=index_arm, counts=counts)
        self.save(state)
        return state


def _conflict(current: RolloutState) -> str:
    step = (
        f"step {current.step + 1}/{len(current.config.steps)}"
        if current.step is not None
        else "a weight set by hand"
    )
    return (
        f"a rollout of {current.app} is running: {current.from_version} -> {current.to} at "
        f"{current.weight}% ({step}), started {_when(current.started_at)}; one rollout per "
        "application at a time: abort, promote or roll it back first"
    )
