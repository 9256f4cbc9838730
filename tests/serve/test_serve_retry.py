"""The ingress's downstream calls on a plain event loop (no Ray running): which failures go
again, the attempts bound, and the deadline over all attempts. Each attempt answers with an
asyncio future, which is awaitable and cancellable like a Serve DeploymentResponse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import RayServeException

from serve.errors import APIError
from serve.retry import call_deployment, replica_lost


def attempts_answering(outcomes: list[Any]) -> tuple[Callable[[], asyncio.Future], list[float]]:
    """A send() whose n-th attempt raises or returns outcomes[n]; `None` never answers."""
    started: list[float] = []

    def send() -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        outcome = outcomes[len(started)]
        started.append(time.monotonic())
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif outcome is not None:
            future.set_result(outcome)
        return future

    return send, started


def run(send: Callable[[], asyncio.Future], timeout_s: float = 5.0, attempts: int = 3) -> Any:
    return asyncio.run(call_deployment(send, timeout_s, attempts, backoff_s=0.01))


def wrapped_by_serve(error: Exception) -> RayServeException:
    wrapper = RayServeException("an upstream actor died")
    wrapper.__cause__ = error
    return wrapper


@pytest.mark.parametrize(
    "error",
    [
        ActorDiedError(),
        ActorUnavailableError("unreachable", None),
        RayTaskError("search", "traceback", ActorDiedError()).as_instanceof_cause(),
        RayTaskError("search", "traceback", ActorDiedError()),
        wrapped_by_serve(ActorDiedError()),
    ],
    ids=["died", "unavailable", "task-error-as-cause", "task-error", "serve-wrapped"],
)
def test_a_lost_replica_is_tried_again(error: Exception) -> None:
    assert replica_lost(error)
    send, started = attempts_answering([error, "hits"])
    assert run(send) == "hits"
    assert len(started) == 2


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad filter"),
        RayTaskError("search", "traceback", ValueError("bad")).as_instanceof_cause(),
        APIError(400, "invalid_request_error", "bad"),
        RuntimeError("a bug"),
    ],
    ids=["value-error", "remote-value-error", "api-error", "runtime-error"],
)
def test_any_other_failure_is_raised_at_once(error: Exception) -> None:
    assert not replica_lost(error)
    send, started = attempts_answering([error, "hits"])
    with pytest.raises(type(error)):
        run(send)
    assert len(started) == 1


def test_attempts_are_bounded_and_pauses_grow() -> None:
    send, started = attempts_answering([ActorDiedError()] * 5)
    with pytest.raises(ActorDiedError):
        run(send, attempts=3)
    assert len(started) == 3
    first_pause, second_pause = started[1] - started[0], started[2] - started[1]
    assert first_pause >= 0.01 and second_pause >= 0.02


def test_a_single_attempt_call_is_never_resent() -> None:
    send, started = attempts_answering([ActorDiedError(), "hits"])
    with pytest.raises(ActorDiedError):
        run(send, attempts=1)
    assert len(started) == 1


def test_the_deadline_covers_every_attempt() -> None:
    # The first attempt hangs past the whole deadline: no second attempt, and a 504 in time.
    send, started = attempts_answering([None, "hits"])
    begun = time.monotonic()
    with pytest.raises(APIError) as raised:
        run(send, timeout_s=0.2)
    assert raised.value.status == 504 and "0.2 s" in raised.value.message
    assert len(started) == 1 and time.monotonic() - begun < 1.0


def test_a_retry_gets_only_the_time_left() -> None:
    send, started = attempts_answering([ActorDiedError(), None])
    begun = time.monotonic()
    with pytest.raises(APIError, match="no answer within 0.3 s"):
        run(send, timeout_s=0.3)
    assert len(started) == 2
    assert 0.3 <= time.monotonic() - begun < 0.6


def test_no_retry_whose_pause_would_pass_the_deadline() -> None:
    send, started = attempts_answering([ActorDiedError(), "hits"])
    with pytest.raises(ActorDiedError):
        asyncio.run(call_deployment(send, 0.05, attempts=3, backoff_s=0.1))
    assert len(started) == 1
