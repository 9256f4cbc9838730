"""The canary controller: one detached actor per Serve application, in the cluster, that runs
its rollouts (serve/canary/rollout.py) unattended.

Replicas push their cumulative per-arm counts and shadow agreement every second
(serve/canary/replica.py); each tick the controller adds them up, moves the rollout on, persists
the new state, then applies the weight through the ingress's user_config (serve/canary/deploy.py).
State first, weight second: a controller that dies between the two re-applies the persisted
weight when it starts again, so a restart resumes the rollout at its step, never at 0% nor at
100%. Ray restarts the actor after a crash; the CLI talks to it by name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from refinery.config import StorageConfig, TrackingConfig
from refinery.manifest import update_log_location
from refinery.ray_runtime import detached_actor, find_actor, tick_forever
from refinery.registry import IndexRegistry, RegistryError, resolve_snapshot
from refinery.tracking import Tracker, mlflow_client, start_run
from serve.canary import rollout as verbs
from serve.canary.agreement import Agreement
from serve.canary.deploy import current_routing, deployed_llms, set_canary
from serve.canary.rollout import (
    Decision,
    RegistryVersion,
    Rollout,
    RolloutConfig,
    RolloutError,
    RolloutState,
    RolloutStore,
)
from serve.canary.window import ArmStats, Tally
from serve.config import CanaryConfig

logger = logging.getLogger(__name__)

NAME_PREFIX = "refinery-canary-"


def controller_name(app: str) -> str:
    return NAME_PREFIX + app


def find_controller(app: str) -> Any | None:
    """The application's controller, None if it has none."""
    return find_actor(controller_name(app))


def start_controller(
    app: str, state_root: str, tracking_uri: str | None = None, tick_s: float = 1.0
) -> Any:
    """The application's controller, started if it has none (detached: it outlives the CLI).
    Each rollout is an MLflow run at `tracking_uri` (None: untracked)."""
    import ray

    actor = detached_actor(CanaryController, controller_name(app))
    controller = actor.remote(app, state_root, tracking_uri, tick_s)
    ray.get(controller.resume.remote())
    return controller


class CanaryController:
    def __init__(
        self,
        app: str,
        state_root: str,
        tracking_uri: str | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.store = RolloutStore(state_root)
        self.tracking = TrackingConfig(uri=tracking_uri) if tracking_uri else None
        self.tick_s = tick_s
        self.clock = clock
        self.tally = Tally()
        self.replicas: dict[str, dict[str, Any]] = {}  # the last report of each replica
        self.last: Decision | None = None
        self.lock = asyncio.Lock()  # one verb or tick at a time: the store has one writer
        self._ticker: asyncio.Task | None = None

    async def resume(self) -> dict[str, Any]:
        """Start ticking and serve the persisted weight (after a restart: the step's weight)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                tick_forever(self.tick, self.tick_s, f"canary tick of {self.app}")
            )
            state = await asyncio.to_thread(self.store.load, self.app)
            if state is not None and state.running:
                await self._serve(state)
        return await self.status()

    async def report(self, report: dict[str, Any]) -> None:
        self.replicas[report["replica"]] = report
        if self._ticker is None:
            await self.resume()

    async def rollout(
        self,
        to: str,
        snapshot: str | None,
        config: dict[str, Any],
        registry: dict[str, Any] | None = None,
        llm: str | None = None,
    ) -> dict:
        """`snapshot`: the canary's index snapshot, `llm`: the model_id of its LLM deployment
        (one of the application's `llm_arms`); None: stable's. `registry`: the canary's index
        registry version (RegistryVersion's fields), whose `champion` alias then follows the
        rollout's promotion and a rollback after it."""
        cfg = RolloutConfig.model_validate(config)
        registered = RegistryVersion.model_validate(registry) if registry else None
        async with self.lock:
            routing = await asyncio.to_thread(current_routing, self.app)
            if llm is not None:
                await asyncio.to_thread(self._check_llm, llm)
            stable = routing.index.snapshot if routing.index else None
            state = await asyncio.to_thread(self.store.start, self.app, to, routing.version, cfg,
                                            self.clock(), index_arm=snapshot is not None,
                                            counts=self._counts())  # fmt: skip
            run_id = await asyncio.to_thread(self._start_run, state)
            update = {"to_snapshot": snapshot, "from_snapshot": stable, "run_id": run_id,
                      "to_llm": llm, "from_llm": routing.llm, "registry": registered}  # fmt: skip
            await self._save(None, state.model_copy(update=update))
        return await self.status()

    def _check_llm(self, llm: str) -> None:
        deployed = deployed_llms(self.app)
        if llm not in deployed:
            raise RolloutError(
                f"LLM {llm!r} is not deployed by {self.app} (it deploys "
                f"{', '.join(deployed) or 'no LLM'}): add it to the application's llm_arms"
            )

    async def set_weight(self, weight: int) -> dict:
        return await self._verb(lambda s, now: verbs.set_weight(s, weight, now, self._counts()))

    async def abort(self, reason: str = "aborted by hand") -> dict:
        return await self._verb(lambda s, now: verbs.abort(s, now, reason))

    async def promote(self, reason: str = "promoted by hand") -> dict:
        return await self._verb(lambda s, now: verbs.promote(s, now, reason))

    async def rollback(self, reason: str = "rolled back by hand") -> dict:
        return await self._verb(lambda s, now: verbs.rollback(s, now, reason))

    async def _verb(self, change: Callable[[RolloutState, float], RolloutState]) -> dict:
        async with self.lock:
            state = await asyncio.to_thread(self.store.load, self.app)
            if state is None:
                raise RolloutError(f"no rollout of {self.app} to act on")
            await self._save(state, change(state, self.clock()))
        return await self.status()

    async def tick(self) -> None:
        async with self.lock:
            state = await asyncio.to_thread(self.store.load, self.app)
            if state is None or not state.running:
                return
            decision = Rollout.advance(state, state.config, self.clock(), self._counts(),
                                       self._agreement(state))  # fmt: skip
            self.last = decision
            if decision.weight is not None or decision.rolled_back:
                await self._save(state, decision.state)
            elif decision.state != state:  # a new window, nothing to serve differently
                await asyncio.to_thread(self.store.save, decision.state)

    def _counts(self) -> ArmStats:
        reports = {r: ArmStats.from_dict(report["counts"]) for r, report in self.replicas.items()}
        return self.tally.observe(reports)

    def _agreements(self) -> dict[tuple[str, str], Agreement]:
        """Per (stable, canary) pair of versions, the replicas' shadow agreement summed."""
        total: dict[tuple[str, str], Agreement] = {}
        for report in self.replicas.values():
            if report.get("agreement"):
                agreement = Agreement.from_dict(report["agreement"])
                pair = (agreement.stable_version, agreement.canary_version)
                total[pair] = total[pair].merged(agreement) if pair in total else agreement
        return total

    def _agreement(self, state: RolloutState) -> Agreement | None:
        return self._agreements().get((state.from_version, state.to))

    async def _save(self, before: RolloutState | None, after: RolloutState) -> None:
        """Persist, record in the rollout's MLflow run, then serve: in that order, so a crash
        between them leaves a state that the restarted controller serves again."""
        await asyncio.to_thread(self.store.save, after)
        await asyncio.to_thread(self._track, before, after)
        await self._serve(after)
        await asyncio.to_thread(self._move_champion, before, after)

    def _move_champion(self, before: RolloutState | None, after: RolloutState) -> None:
        """The registry's `champion` follows what serves as stable: the canary's version once
        promoted, the one before it after a rollback of the promotion. Moved after serving,
        so the alias never names a version that does not serve; a registry that fails leaves
        the rollout as it is and is logged."""
        registered = after.registry
        if registered is None or before is None or before.status == after.status:
            return
        if after.status == "promoted":
            target = registered.version
            why = f"promoted by canary rollout {after.id} of {after.app}"
        elif after.status == "rolled_back" and before.status == "promoted" and registered.previous:
            target = registered.previous
            why = f"canary rollout {after.id} of {after.app} rolled back after its promotion"
        else:
            return
        try:
            IndexRegistry(registered.uri, registered.name).set_alias("champion", target, why)
        except RegistryError:
            logger.exception("moving champion of %s to version %s", registered.name, target)

    def _start_run(self, state: RolloutState) -> str | None:
        if self.tracking is None:
            return None
        tracker = start_run(f"canary-{state.app}-{state.to}", self.tracking, StorageConfig())
        tracker.log_params({"app": state.app, "from": state.from_version, "to": state.to,
                            **state.config.model_dump(mode="json")})  # fmt: skip
        return tracker.run_id

    def _track(self, before: RolloutState | None, after: RolloutState) -> None:
        """Each new event's weight and gate values as metrics (step: the event's number), and
        the outcome when the rollout ends."""
        if self.tracking is None or after.run_id is None:
            return
        tracker = Tracker(mlflow_client(self.tracking, StorageConfig()), after.run_id)
        seen = len(before.history) if before is not None and before.id == after.id else 0
        for number, event in enumerate(after.history[seen:], start=seen):
            gates = {f"gate.{g.name}": g.value for g in event.gates if g.value is not None}
            tracker.log_metrics({"weight": event.weight, **gates}, step=number)
        if not after.running and (before is None or before.status != after.status):
            tracker.set_tags({"outcome": after.status, "reason": after.history[-1].reason})
            tracker.log_dict(after.model_dump(mode="json"), "rollout.json")
            tracker.finish(None)

    async def _serve(self, state: RolloutState) -> None:
        """Make the application serve what `state` says."""
        await asyncio.to_thread(self._serve_now, state)

    def _serve_now(self, state: RolloutState) -> None:
        if state.status == "running":
            to = CanaryConfig(
                version=state.to,
                snapshot=state.to_snapshot,
                llm=state.to_llm,
                weight=state.weight,
                shadow=state.config.shadow,
                fault=state.config.fault,
            )
            set_canary(self.app, to)
        elif state.status == "promoted" and state.weight == 100:
            # The canary becomes stable; the old stable stays loaded, at 0%, for `rollback`.
            old = CanaryConfig(version=state.from_version, snapshot=state.from_snapshot,
                               llm=state.from_llm if state.to_llm else None, weight=0)  # fmt: skip
            set_canary(self.app, old, self._stable(state.to, state.to_snapshot, state.to_llm))
        elif _was_promoted(state):  # rolled back after its promotion
            stable = self._stable(state.from_version, state.from_snapshot, state.from_llm)
            set_canary(self.app, None, stable)
        else:  # aborted or rolled back before promotion: stable alone
            set_canary(self.app, None)

    def _stable(self, version: str, snapshot: str | None, llm: str | None) -> dict[str, Any]:
        """The stable arm's fields: `version`, and the index and LLM where given."""
        routing = current_routing(self.app)
        index = routing.index.model_dump() if routing.index else None
        if index is not None and snapshot is not None:
            if index.get("update_log") is None and snapshot != index["snapshot"]:
                # The log defaults to the stable snapshot's folder: a stable from another folder
                # (a reindexed version) keeps the log the replicas follow and its positions.
                stable = resolve_snapshot(index["snapshot"], index.get("registry_uri"))
                index["update_log"] = update_log_location(stable)
            index["snapshot"] = snapshot
        stable = {"version": version, "index": index}
        return {**stable, "llm": llm} if llm is not None else stable

    async def status(self) -> dict[str, Any]:
        state = await asyncio.to_thread(self.store.load, self.app)
        routing = await asyncio.to_thread(current_routing, self.app)
        counts = self._counts()  # the replicas' latest reports, with or without a rollout
        window = (
            counts.minus(ArmStats.from_dict(state.window_start))
            if state is not None and state.window_start
            else counts
        )
        return {
            "app": self.app,
            "rollout": state.model_dump(mode="json") if state is not None else None,
            "routing": routing.model_dump(mode="json"),
            "arms": {arm: _summary(window[arm]) for arm in ("stable", "canary")},
            "gates": [g.to_dict() for g in self.last.gates] if self.last else [],
            "reason": self.last.reason if self.last else "",
            "shadow": {
                "agreement": {
                    f"{stable} -> {canary}": agreement.summary()
                    for (stable, canary), agreement in self._agreements().items()
                },
                "queues": {r: report.get("shadows") for r, report in self.replicas.items()},
            },
        }


def _was_promoted(state: RolloutState) -> bool:
    return any(event.kind == "promote" for event in state.history)


def _summary(counts: Any) -> dict[str, Any]:
    return {
        "requests": counts.requests,
        "errors": counts.errors,
        "error_rate": counts.error_rate,
        "success_rate": counts.success_rate,
        "p50_s": counts.quantile(0.5),
        "p99_s": counts.quantile(0.99),
        "tokens_in": counts.tokens_in,
        "tokens_out": counts.tokens_out,
    }
