"""A replica's part in a canary rollout: it counts what each arm answered, mirrors a share of
the searches and greedy LLM requests to the other arm and compares the answers, and reports
both to the application's canary controller (serve/canary/controller.py), which judges the
rollout from every replica's counts. Shadows run in a bounded queue after the answer: a client
never waits for one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serve.canary.agreement import Agreement
from serve.canary.shadow import ShadowConfig, ShadowQueue, should_mirror
from serve.canary.split import STABLE
from serve.canary.window import ArmStats, new_origin
from serve.config import IngressUserConfig

logger = logging.getLogger("ray.serve")

AnswerT = TypeVar("AnswerT")  # what a shadow compares: hit ids per query, or an LLM's text


class CanaryReplica:
    REPORT_INTERVAL_S = 1.0

    def __init__(self, app: str, replica: str) -> None:
        self.app = app
        self.replica = replica
        self.counts = ArmStats(origin=new_origin())
        self.shadows = ShadowQueue.from_config(ShadowConfig())
        self.agreement: Agreement | None = None
        self.routing: IngressUserConfig | None = None
        self._reporter: asyncio.Task | None = None

    def configure(self, routing: IngressUserConfig) -> None:
        """Agreement is per pair of versions: a new pair starts from nothing."""
        canary = routing.canary
        pair = (routing.version, canary.version) if canary else None
        current = self.agreement
        if pair is None:
            self.agreement = None
        elif current is None or (current.stable_version, current.canary_version) != pair:
            self.agreement = Agreement(*pair)
        self.routing = routing
        if self._reporter is None:
            self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    def record(self, arm: str, status: int, seconds: float) -> None:
        self.counts.record(arm, status, seconds)

    def draw_shadow(self) -> Agreement | None:
        """Whether the request about to be answered gets a shadow, drawn now: the agreement
        of the versions serving now, where its comparison counts; None: no shadow."""
        routing, agreement = self.routing, self.agreement
        if agreement is None or routing is None or routing.canary is None:
            return None
        return agreement if should_mirror(routing.canary.shadow) else None

    def add_tokens(self, arm: str, tokens_in: int, tokens_out: int) -> None:
        self.counts.add_tokens(arm, tokens_in, tokens_out)

    def mirror(
        self,
        agreement: Agreement,
        arm: str,
        answer: AnswerT,
        other_answer: Callable[[], Awaitable[AnswerT]],
        add: Callable[[Agreement, AnswerT, AnswerT], None],
    ) -> None:
        """Ask the other arm the same, later, and `add` the pair to the agreement as (stable's
        answer, the canary's). Both ways, so that pairs keep coming at a weight of 0% and of
        100% alike."""

        async def compare() -> None:
            other = await other_answer()
            stable, canary = (answer, other) if arm == STABLE else (other, answer)
            add(agreement, stable, canary)

        self.shadows.offer(compare)

    def report(self) -> dict:
        return {
            "replica": self.replica,
            "counts": self.counts.to_dict(),
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "shadows": self.shadows.describe(),
        }

    async def _report_forever(self) -> None:
        """Push this replica's cumulative counts to the controller, if the application has one;
        a lost report changes nothing, the next one carries the same totals and more."""
        from serve.canary.controller import find_controller

        controller = None
        while True:
            await asyncio.sleep(self.REPORT_INTERVAL_S)
            try:
                controller = controller or find_controller(self.app)
                if controller is not None:
                    # Awaited: a controller that died (and one started anew under its name)
                    # shows only in the reply.
                    await asyncio.wait_for(controller.report.remote(self.report()), 5)
            except Exception:  # the controller restarting or gone: look it up again next time
                logger.debug("canary report to %s failed", self.app, exc_info=True)
                controller = None
