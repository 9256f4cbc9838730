"""Joining a Ray cluster or starting a local one, the same way for every job."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.config import RayConfig

if TYPE_CHECKING:
    from ray.data import Dataset


def ray_address(cfg: RayConfig) -> str | None:
    """The cluster to join: the config's address, else RAY_ADDRESS, else None (a new local Ray)."""
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


logger = logging.getLogger(__name__)

# Where Refinery's own actors (the canary controllers, the scheduler) are named.
ACTOR_NAMESPACE = "refinery"


def detached_actor(cls: type, name: str) -> Any:
    """`cls` as an actor that lives in the cluster on its own: it outlives the process that
    starts it, is found by `name`, is restarted by Ray after a crash (calls to it retried) and
    reserves no CPU; starting it again returns the one already running."""
    import ray

    return ray.remote(cls).options(
        name=name,
        namespace=ACTOR_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
    )


async def tick_forever(tick: Callable[[], Awaitable[None]], interval_s: float, what: str) -> None:
    """An actor's own loop: `tick` every `interval_s`; a failed tick is logged and the next one
    tries again, from the state the actor persisted."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await tick()
        except Exception:
            logger.exception("%s failed", what)


def find_actor(name: str) -> Any | None:
    """The running actor of that name, None if there is none."""
    import ray

    try:
        return ray.get_actor(name, namespace=ACTOR_NAMESPACE)
    except ValueError:
        return None


def auth_token() -> str | None:
    """Ray's token, looked up as Ray does: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names,
    then ~/.ray/auth_token. None: the cluster is taken to run without authentication."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def attach_ray(cfg: RayConfig) -> None:
    """Join the running cluster (the configured one, RAY_ADDRESS, else the one running on this
    machine, found as `ray status` finds it), never a new one: for commands that inspect or
    stop what runs. ConnectionError when none is running."""
    init_ray(cfg, address=ray_address(cfg) or "auto")


def init_ray(cfg: RayConfig, **overrides: Any) -> None:
    """ray.init once per process; later calls are no-ops, so jobs compose inside one driver."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"namespace": cfg.namespace, "log_to_driver": True}
    if cfg.runtime_env:
        kwargs["runtime_env"] = cfg.runtime_env
    address = ray_address(cfg)
    if address:
        kwargs["address"] = address
    else:
        # "local": a Ray of its own. ray.init() alone would join whatever `ray start` left
        # running on this machine, and then refuse the profile's num_cpus.
        kwargs.update(address="local", num_cpus=cfg.num_cpus)
    kwargs.update(overrides)
    if kwargs.get("num_cpus") is None:
        kwargs.pop("num_cpus", None)  # ray.init refuses it for an existing cluster
    ray.init(**kwargs)


def cluster_summary() -> dict[str, Any]:
    """Alive nodes and total CPUs of the joined cluster, for a run's stats."""
    import ray

    alive = [node for node in ray.nodes() if node["Alive"]]
    cpus = sum(node["Resources"].get("CPU", 0) for node in alive)
    return {"nodes": len(alive), "cpus": cpus}


def without_reservation(ds: Dataset) -> Dataset:
    """`ds`, and every dataset derived from it, run without Ray Data's per-operator resource
    reservation; the global DataContext is left alone.

    For chains of single-operator stages over materialised blocks (both pipelines run so):
    the reservation protects downstream operators, of which there are none, and on a small
    cluster it holds a stage to one task for its first second and leaves gaps between
    tasks (8 one-second tasks on 2 CPUs: 5.6 s with it, 4.2 s without)."""
    ds.context.op_resource_reservation_enabled = False
    return ds
