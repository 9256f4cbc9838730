"""A replica's part in a canary rollout: it counts what each arm answered, mirrors a share of
stable's searches to the canary and compares the hits, and reports both to the application's
canary controller (serve/canary/controller.py), which judges the rollout from every replica's
counts. Shadows run in a bounded queue after the answer: a client never waits for one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from serve.canary.agreement import Agreement
from serve.canary.shadow import ShadowConfig, ShadowQueue, should_mirror
from serve.canary.split import STABLE
from serve.canary.window import ArmStats, new_origin
from serve.config import IngressUserConfig

logger = logging.getLogger("ray.serve")

HitIds = list[list[int]]  # per query, the ids of its hits in rank order


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

    def mirror(
        self, arm: str, stable_ids: HitIds, canary_search: Callable[[], Awaitable[HitIds]]
    ) -> None:
        """Maybe run the same search on the canary, later, and compare (the agreement's top k
        of each, or all a request asked for if fewer): only for answers of stable, while a
        canary serves."""
        routing, agreement = self.routing, self.agreement
        if arm != STABLE or agreement is None or routing is None or routing.canary is None:
            return
        if not should_mirror(routing.canary.shadow):
            return

        async def compare() -> None:
            canary_ids = await canary_search()
            for ours, theirs in zip(stable_ids, canary_ids, strict=True):
                agreement.add_search(ours, theirs)

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
