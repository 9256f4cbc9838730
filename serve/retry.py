"""Calls from the ingress to a deployment, under a deadline. An idempotent call (an embedding, a
describe) goes again when the replica that took it dies: Serve does not resend a request whose
replica died while answering it, and another replica answers it just as well.
Updates and LLM generations are never resent: they may have taken effect before the replica
died, or have started streaming."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError

from serve.errors import APIError

logger = logging.getLogger("ray.serve")

# Bounded so that a request which itself kills replicas cannot take the whole deployment down.
IDEMPOTENT_ATTEMPTS = 3
# The first pause; doubled after each failure. Short: the router stops choosing a dead replica
# as soon as one of its calls fails, so the next attempt goes to a live one.
BACKOFF_S = 0.05


def replica_lost(error: BaseException | None) -> bool:
    """Whether the replica that took a call died or cannot be reached. ActorDiedError and
    ActorUnavailableError are RayActorErrors; Ray and Serve may wrap them in another error."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RayActorError):
            return True
        seen.add(id(error))
        cause = getattr(error, "cause", None)  # RayTaskError keeps the remote error here
        error = cause if isinstance(cause, BaseException) else error.__cause__
    return False


async def call_deployment(
    send: Callable[[], Any],
    timeout_s: float,
    attempts: int = 1,
    backoff_s: float = BACKOFF_S,
) -> Any:
    """The answer of `send()` (a call on a deployment handle, made anew for each attempt).
    All attempts and pauses together stay within `timeout_s`: past it the caller gets a 504.
    A call is tried again only when its replica was lost, at most `attempts` times in all."""
    deadline = time.monotonic() + timeout_s
    failures = 0
    while True:
        response = send()
        try:
            return await asyncio.wait_for(response, deadline - time.monotonic())
        except TimeoutError:
            response.cancel()
            raise APIError(504, "timeout_error", f"no answer within {timeout_s:g} s") from None
        except Exception as error:
            failures += 1
            pause = backoff_s * 2 ** (failures - 1)
            if (
                failures >= attempts
                or not replica_lost(error)
                or time.monotonic() + pause >= deadline
            ):
                raise
            logger.warning("a replica was lost (%s); trying again", type(error).__name__)
            await asyncio.sleep(pause)
