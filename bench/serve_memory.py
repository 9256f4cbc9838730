"""`refinery bench serve-memory`: the memory of 1 and of 2 ingress replicas on one node serving
one N x D flat snapshot (default 1M x 384), through the real app (serve.app.build, index only).

Each replica count is a fresh deployment: the replicas are found through Ray's state API (their
actors' pids), searched until every replica has its whole index mapping resident, then measured
from /proc: per replica PSS (shared pages split among the processes that map them) and RSS
(counted whole in each), each as anonymous and file-backed, and the drop of the system's
MemAvailable since just before the deployment (the page cache of a mapped file counts as
available: the drop is what the app's processes, its embedder too, hold of their own; other
work on the machine moves it as well). The index file is memory-mapped, so with 2 replicas the
sum of PSS grows by the second replica's own memory only. With --with-update each count is
measured again after one upsert: updates go to a delta in the replica's memory and leave the
mapped vectors shared. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

APP = "bench-memory"
ROLLUP_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean", "Anonymous")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--replicas", default="1,2", help="ingress replica counts, in turn")
    parser.add_argument("--touch-requests", type=int, default=200, help="searches at most")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--with-update", action="store_true", help="measure again after one upsert")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    parser.add_argument("--data", default=".refinery/bench/serve", help="snapshot cache")


def main(args: argparse.Namespace) -> int:
    from bench.serve_data import ensure_snapshot, query_vectors, search_bodies
    from refinery.manifest import Manifest

    root = Path(args.data).resolve() / f"{args.n}x{args.dim}"
    snapshot = ensure_snapshot(root, args.n, args.dim)
    index_file = os.path.realpath(Manifest.read(str(snapshot)).index)
    bodies = search_bodies(query_vectors(16, args.dim), 10)
    report: dict[str, Any] = {"bench": "serve-memory", "n": args.n, "dim": args.dim}
    report["index_file_mb"] = os.path.getsize(index_file) / 2**20
    report["steps"] = []
    with ray_serve(args) as (port, dashboard):
        for count in [int(c) for c in args.replicas.split(",")]:
            for step in measure(snapshot, index_file, count, port, dashboard, bodies, args):
                report["steps"].append(step)
                print(f"  {_label(step)}: {_step_text(step)}")
    report["ratios"] = ratios([step for step in report["steps"] if not step["updated"]])
    print_table(report)
    print(json.dumps(report))
    return 0


@contextlib.contextmanager
def ray_serve(args: argparse.Namespace) -> Iterator[tuple[int, str]]:
    """A local Ray with Serve on a free port, and its dashboard, which serves the state API."""
    import ray
    from ray import serve

    from bench.serve import free_port

    port = free_port()
    # A new local Ray: without an address ray.init joins one already running on the machine.
    context = ray.init(
        address="local",
        num_cpus=args.ray_cpus,
        include_dashboard=True,
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port, f"http://{context.dashboard_url}"
    finally:
        serve.shutdown()
        ray.shutdown()


def measure(
    snapshot: Path,
    index_file: str,
    count: int,
    port: int,
    dashboard: str,
    bodies: list[bytes],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Deploy with `count` ingress replicas, touch every page of each one's index mapping,
    measure (with --with-update, again after one upsert), and take the application down."""
    from ray import serve

    from bench.serve import app_args, post_json
    from serve.app import build

    config = app_args(snapshot, max_batch_size=64) | {"ingress": {"num_replicas": count}}
    steps = []
    # The update goes to a log of this run's own: the snapshot's would replay it into every
    # later bench that serves the snapshot.
    with tempfile.TemporaryDirectory(dir=snapshot.parent, prefix="bench-memory-") as scratch:
        config["index"]["update_log"] = scratch
        available_before = mem_available_mb()
        serve.run(build(config), name=APP, route_prefix="/")
        try:
            pids = replica_pids(dashboard, count)
            searches = touch(port, pids, index_file, bodies, args.touch_requests)
            time.sleep(args.settle)
            steps.append(measured(pids, index_file, available_before) | {"updated": False})
            if args.with_update:
                post_json(port, "/v1/upsert", upsert_body(args.dim))
                time.sleep(args.settle)  # every replica follows the log within a second
                steps.append(measured(pids, index_file, available_before) | {"updated": True})
        finally:
            serve.delete(APP)
            wait_gone(dashboard)
    return [{"replicas": count, "touch_searches": searches} | step for step in steps]


def measured(pids: list[int], index_file: str, available_before: float) -> dict[str, Any]:
    available_after = mem_available_mb()
    replicas = [
        {"pid": pid, "index_rss_mb": mapping_rss_mb(read(pid, "smaps"), index_file)}
        | {k: kb / 1024 for k, kb in rollup_kb(read(pid, "smaps_rollup")).items()}
        for pid in pids
    ]
    return {
        "per_replica_mb": replicas,
        "pss_mb": sum(r["Pss"] for r in replicas),
        "rss_mb": sum(r["Rss"] for r in replicas),
        "pss_anon_mb": sum(r["Pss_Anon"] for r in replicas),
        "pss_file_mb": sum(r["Pss_File"] for r in replicas),
        "mem_available_drop_mb": available_before - available_after,
    }


def upsert_body(d: int) -> bytes:
    """One new vector under an id the snapshot does not hold."""
    vector = [1.0] + [0.0] * (d - 1)
    return json.dumps({"items": [{"id": 10**12, "vector": vector, "payload": {}}]}).encode()


def _ingress_actors(dashboard: str) -> list[Any]:
    from ray.util.state import list_actors

    filters = [("class_name", "=", f"ServeReplica:{APP}:Ingress"), ("state", "=", "ALIVE")]
    return list_actors(address=dashboard, filters=filters)


def replica_pids(dashboard: str, count: int, deadline_s: float = 60.0) -> list[int]:
    """The pids of the app's ingress replicas, from Ray: the actors Serve started for them."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        actors = _ingress_actors(dashboard)
        if len(actors) == count:
            return sorted(actor.pid for actor in actors)
        time.sleep(0.5)
    raise SystemExit(f"expected {count} ingress replicas alive, found {len(actors)}")


def wait_gone(dashboard: str, deadline_s: float = 60.0) -> None:
    """Until no ingress replica of the app is alive: the next step starts from none."""
    deadline = time.monotonic() + deadline_s
    while _ingress_actors(dashboard) and time.monotonic() < deadline:
        time.sleep(0.5)


def touch(port: int, pids: list[int], index_file: str, bodies: list[bytes], most: int) -> int:
    """Search until every replica has its whole index mapping resident (a flat scan reads every
    vector; the proxy spreads requests over the replicas); returns the searches it took."""
    from bench.serve import post_json

    size_mb = os.path.getsize(index_file) / 2**20
    for done in range(1, most + 1):
        post_json(port, "/v1/search", bodies[done % len(bodies)])
        resident = [mapping_rss_mb(read(pid, "smaps"), index_file) for pid in pids]
        if min(resident) >= 0.99 * size_mb:
            return done
    raise SystemExit(f"after {most} searches the index mapping is not all resident: {resident}")


def read(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}") as file:
        return file.read()


def rollup_kb(text: str) -> dict[str, int]:
    """The fields of /proc/PID/smaps_rollup that tell shared from own memory, in kB."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ROLLUP_FIELDS:
            fields[name] = int(value.split()[0])
    return fields


def mapping_rss_mb(smaps: str, path: str) -> float:
    """The resident part of the mappings of `path` in /proc/PID/smaps text."""
    rss_kb, inside = 0, False
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            inside = len(head) == 6 and head[5] == path
        elif inside and head and head[0] == "Rss:":
            rss_kb += int(head[1])
    return rss_kb / 1024


def mem_available_mb() -> float:
    with open("/proc/meminfo") as file:
        for line in file:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def ratios(steps: list[dict[str, Any]]) -> dict[str, float]:
    """The most replicas against the fewest, each the mean of its steps (a count given twice
    in --replicas is measured twice: the system's MemAvailable moves with other work)."""
    counts = sorted({step["replicas"] for step in steps})
    out = {}
    for key in ("pss_mb", "rss_mb", "mem_available_drop_mb"):
        low, high = (_mean(steps, key, n) for n in (counts[0], counts[-1]))
        if low > 0:
            out[key.removesuffix("_mb")] = high / low
    return out


def _mean(steps: list[dict[str, Any]], key: str, replicas: int) -> float:
    values = [step[key] for step in steps if step["replicas"] == replicas]
    return sum(values) / len(values)


GOAL_PSS = 1.2


def _label(step: dict[str, Any]) -> str:
    return f"{step['replicas']} replica(s){', after one upsert' if step['updated'] else ''}"


def _step_text(step: dict[str, Any]) -> str:
    return (
        f"PSS {step['pss_mb']:.0f} MB (anon {step['pss_anon_mb']:.0f}, file "
        f"{step['pss_file_mb']:.0f}), RSS {step['rss_mb']:.0f} MB, MemAvailable drop "
        f"{step['mem_available_drop_mb']:.0f} MB, {step['touch_searches']} searches to touch"
    )


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{report['n']} x {report['dim']} flat ip, index file {report['index_file_mb']:.0f} MB; "
        "MB, summed over the ingress replicas"
    )
    print(
        f"{'replicas':<30} {'PSS':>7} {'PSS anon':>8} {'PSS file':>8} {'RSS':>7} "
        f"{'index RSS':>9} {'MemAvail drop':>13}"
    )
    for step in report["steps"]:
        index_rss = sum(r["index_rss_mb"] for r in step["per_replica_mb"])
        print(
            f"{_label(step):<30} {step['pss_mb']:>7.0f} {step['pss_anon_mb']:>8.0f} "
            f"{step['pss_file_mb']:>8.0f} {step['rss_mb']:>7.0f} {index_rss:>9.0f} "
            f"{step['mem_available_drop_mb']:>13.0f}"
        )
    ratios_ = report["ratios"]
    if "pss" in ratios_:
        met = "met" if ratios_["pss"] <= GOAL_PSS else "NOT met"
        print(f"\nPSS ratio {ratios_['pss']:.2f} (goal <= {GOAL_PSS:g}: {met}); ", end="")
        print(", ".join(f"{k} {v:.2f}" for k, v in ratios_.items() if k != "pss"))
