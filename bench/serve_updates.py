"""`refinery bench serve-updates`: single-vector `POST /v1/upsert` under search load, one run.

On the N x D flat snapshot of `refinery bench serve` (default 100k x 384), through the real app
(serve.app.build, index only, a fresh update log per run), with the light load generator of
bench/loadgen.py: searches alone and searches with upserts from several clients at once
(flat out, or at --upsert-rate), in alternation; then upserts alone, and upserts to the
do-nothing endpoint behind the same proxy (the ceiling the proxy leaves). Each upsert is one
request with one item carrying a vector and a payload; it replaces an existing id, so the index
searched keeps its size. Before the HTTP phases, the update path is timed in this process,
without HTTP: the service's upsert (parse, check, durable log append, apply), and its parts.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PHASES = {
    "search": "searches alone",
    "mixed": "searches + upserts",
    "upsert": "upserts alone",
    "noop_upsert": "upserts, do-nothing endpoint",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--search-clients", type=int, default=8)
    parser.add_argument("--upsert-clients", type=int, default=16)
    parser.add_argument(
        "--upsert-rate",
        type=float,
        default=0,
        help="upserts/s asked while searches run; 0: flat out",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument(
        "--rounds", type=int, default=3, help="mixed phases, each between two search-alone ones"
    )
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests per client")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--in-process", type=int, default=300, help="upserts timed without HTTP")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    parser.add_argument("--data", default=".refinery/bench/serve", help="snapshot cache")


def main(args: argparse.Namespace) -> int:
    from bench.serve_data import ensure_snapshot, query_vectors, search_bodies

    root = Path(args.data) / f"{args.n}x{args.dim}"
    snapshot = ensure_snapshot(root, args.n, args.dim)
    searches = search_bodies(query_vectors(256, args.dim), args.k)
    upserts = upsert_bodies(args.n, args.dim, 4096)
    report: dict[str, Any] = {"bench": "serve-updates", "n": args.n, "dim": args.dim}
    report |= {"search_clients": args.search_clients, "upsert_clients": args.upsert_clients}
    report["upsert_rate_asked"] = args.upsert_rate or None
    # Each run logs into a fresh folder: the snapshot's own log would replay these updates
    # into every later bench that serves it.
    with tempfile.TemporaryDirectory(dir=root, prefix="bench-updates-") as scratch:
        report["in_process"] = time_update_path(snapshot, f"{scratch}/in-process", upserts, args)
        print_in_process(report["in_process"])
        with serve_app(snapshot, f"{scratch}/updates", args) as port:
            report["phases"] = run_phases(port, searches, upserts, args)
            report["served"] = check_applied(port, report["phases"], args.n)
    report["goals"] = goals(report["phases"])
    print_table(report)
    print(json.dumps(report))
    return 0


def upsert_bodies(n: int, d: int, count: int) -> list[bytes]:
    """`{"items": [{"id", "vector", "payload"}]}` per request: existing ids in random order,
    corpus-like unit vectors, and a payload of the snapshot's columns."""
    from bench.serve_data import query_vectors

    rng = np.random.default_rng(2)
    ids = rng.permutation(n)[:count].tolist()
    vectors = np.round(query_vectors(count, d), 6).tolist()
    return [
        json.dumps(
            {
                "items": [
                    {
                        "id": i,
                        "vector": vector,
                        "payload": {
                            "id": f"doc-{i:06d}",
                            "source": "bench/updated.txt",
                            "text": f"Updated passage number {i} of the serve benchmark corpus.",
                        },
                    }
                ]
            }
        ).encode()
        for i, vector in zip(ids, vectors, strict=True)
    ]


def time_update_path(
    snapshot: Path, log_dir: str, bodies: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    """The replica's update path without HTTP or Ray, one upsert at a time: the whole service
    call and its parts; then upsert_clients at once, as the replica meets them."""
    from refinery.update_log import Upsert
    from serve.config import LimitsConfig
    from serve.embed_service import EmbedService
    from serve.protocol import UpsertRequest
    from serve.search_service import SearchService

    count = min(args.in_process, len(bodies))
    service = SearchService(EmbedService(None, LimitsConfig()), LimitsConfig())

    async def run() -> dict[str, float]:
        await service.reconfigure({"snapshot": str(snapshot), "update_log": log_dir})
        service._follower.cancel()  # every update here is applied by the call that logs it
        requests = [UpsertRequest.model_validate_json(body) for body in bodies]
        await service.upsert(requests[0])  # the first update copies the mapped index
        cpu = time.process_time()
        out = {"service_upsert_ms": await _each_ms(service.upsert, requests[1 : count + 1])}
        out["service_upsert_cpu_ms"] = (time.process_time() - cpu) / count * 1e3
        started = time.perf_counter()
        queue = iter(requests)

        async def worker() -> None:
            for request in queue:
                await service.upsert(request)

        await asyncio.gather(*(worker() for _ in range(args.upsert_clients)))
        out["service_concurrent_per_s"] = len(requests) / (time.perf_counter() - started)
        return out

    out = asyncio.run(run())
    loaded = service.snapshot
    started = time.perf_counter()
    for body in bodies[:count]:
        UpsertRequest.model_validate_json(body)
    out["parse_ms"] = (time.perf_counter() - started) / count * 1e3
    item = UpsertRequest.model_validate_json(bodies[0]).items[0]
    entries = [Upsert(item.id, np.asarray(item.vector, dtype=np.float32), item.payload)]
    ids, vectors = np.array([item.id]), entries[0].vector[None]
    parts = {
        "check_ms": lambda: loaded.check_upsert(ids, vectors, [item.payload]),
        "log_append_ms": lambda: loaded.log.append(entries),
        "catch_up_ms": loaded.catch_up,  # after each append: read, decode, apply one record
        "apply_ms": lambda: loaded.apply(entries),
        "index_replace_ms": lambda: _replace(loaded.index, ids, vectors),
        "fsync_pair_ms": lambda: _fsync_pair(log_dir),
    }
    timings = {name: 0.0 for name in parts}
    for _ in range(count):  # interleaved, so load drift on the shared cores hits all alike
        for name, part in parts.items():
            started = time.perf_counter()
            part()
            timings[name] += time.perf_counter() - started
    return out | {name: seconds / count * 1e3 for name, seconds in timings.items()}


async def _each_ms(call: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        await call(item)
    return (time.perf_counter() - started) / len(items) * 1e3


def _replace(index: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    index.remove_ids(ids)
    index.add_with_ids(vectors, ids)


def _fsync_pair(directory: str) -> None:
    """What a log append waits on the disk for: its record file, then the folder's entry."""
    path = os.path.join(directory, ".bench-fsync")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"x" * 2048)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def serve_app(snapshot: Path, log_dir: str, args: argparse.Namespace) -> Iterator[int]:
    """A local Ray with Serve on a free port: the app at /, the do-nothing endpoint at /noop."""
    import ray
    from ray import serve

    from bench.serve import app_args, free_port
    from bench.serve_noop import DoNothing
    from serve.app import build

    port = free_port()
    app = app_args(snapshot, max_batch_size=64)
    app["index"]["update_log"] = log_dir
    # A new local Ray: without an address ray.init joins one already running on the machine.
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(app), name="bench-updates", route_prefix="/")
        serve.run(DoNothing.bind(), name="bench-noop", route_prefix="/noop")
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def run_phases(
    port: int, searches: list[bytes], upserts: list[bytes], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Each phase for --seconds. Search alone and mixed alternate, search alone first and
    last, and each kind's figures pool its rounds: the shared machine's load drifts over
    minutes, and alternation spreads the drift over both sides of the comparison."""
    from bench.loadgen import Load, LoadResult, encode_post, merged, run_loads
    from bench.serve import servers_cpu_s

    def encoded(path: str, bodies: list[bytes]) -> list[bytes]:
        return [encode_post("127.0.0.1", port, path, body) for body in bodies]

    search = Load(encoded("/v1/search", searches), args.search_clients, 10**9)
    upsert = Load(encoded("/v1/upsert", upserts), args.upsert_clients, 10**9)
    noop = Load(encoded("/noop/v1/upsert", upserts), args.upsert_clients, 10**9)
    # Only the mixed phase is paced: the upsert-only phases give the ceilings.
    paced = Load(upsert.requests, upsert.clients, upsert.total, args.upsert_rate or None)
    plans = {
        "search": {"search": search},
        "mixed": {"search": search, "upsert": paced},
        "upsert": {"upsert": upsert},
        "noop_upsert": {"upsert": noop},
    }
    for group in (search, upsert, noop):  # warm-up: connections, replicas, the index's copy
        warm = Load(group.requests, group.clients, group.clients * args.warmup)
        _check_no_errors(run_loads("127.0.0.1", port, [warm], args.timeout)[0], "warm-up")
    order = ["search", "mixed"] * args.rounds + ["search", "upsert", "noop_upsert"]
    runs: dict[str, dict[str, list[LoadResult]]] = {name: {} for name in plans}
    cpu_s = dict.fromkeys(plans, 0.0)
    for name in order:
        plan = plans[name]
        cpu = servers_cpu_s()
        results = run_loads("127.0.0.1", port, list(plan.values()), args.timeout, args.seconds)
        cpu_s[name] += servers_cpu_s() - cpu
        for kind, result in zip(plan, results, strict=True):
            runs[name].setdefault(kind, []).append(result)
        cells = {kind: r.summary() for kind, r in zip(plan, results, strict=True)}
        print(f"  {PHASES[name]:<30} {_phase_text(cells)}")
    phases: dict[str, dict[str, Any]] = {}
    for name, kinds in runs.items():
        phases[name] = {kind: merged(results).summary() for kind, results in kinds.items()}
        sent = sum(r.requests for results in kinds.values() for r in results)
        phases[name]["servers_cpu_ms_per_req"] = cpu_s[name] / max(sent, 1) * 1e3
    return phases


def _check_no_errors(result: Any, what: str) -> None:
    if result.errors:
        raise SystemExit(f"{what}: {result.errors} errors, the first: {result.first_error}")


def check_applied(port: int, phases: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """Every acknowledged upsert is in the log the replica serves, and the index kept its size
    (each upsert replaced an id)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as response:
        index = json.loads(response.read())["index"]
    acknowledged = sum(
        p["upsert"]["requests"] for k, p in phases.items() if k in ("mixed", "upsert")
    )
    if index["count"] != n or index["update_log_position"] < acknowledged:
        raise SystemExit(f"updates not applied as acknowledged ({acknowledged}): {index}")
    return {"count": index["count"], "update_log_position": index["update_log_position"]}


def goals(phases: dict[str, dict[str, Any]]) -> dict[str, float]:
    alone, mixed = phases["search"]["search"], phases["mixed"]
    return {
        "upserts_per_s_under_search": mixed["upsert"]["req_per_s"],
        "search_p99_with_vs_without": mixed["search"]["p99_ms"] / alone["p99_ms"],
        "search_p50_with_vs_without": mixed["search"]["p50_ms"] / alone["p50_ms"],
    }


GOALS = {"upserts_per_s_under_search": (">=", 1000.0), "search_p99_with_vs_without": ("<=", 2.0)}


def _phase_text(phase: dict[str, Any]) -> str:
    parts = [
        f"{kind} {cell['req_per_s']:7.1f}/s p50 {cell['p50_ms']:6.1f} p99 {cell['p99_ms']:6.1f} ms"
        f" errors {cell['errors']}"
        for kind, cell in phase.items()
        if isinstance(cell, dict)
    ]
    return "; ".join(parts)


def print_in_process(timings: dict[str, float]) -> None:
    print("update path in this process, no HTTP (single-vector upserts; ms: wall per upsert):")
    for name, value in timings.items():
        figure = f"{value:9.3f}" if name.endswith("_ms") else f"{value:5.0f}"
        print(f"  {name:<26} {figure}")


def print_table(report: dict[str, Any]) -> None:
    rate = report["upsert_rate_asked"]
    print(
        f"\n{report['n']} x {report['dim']} flat ip; {report['search_clients']} search clients "
        f"(k=10), {report['upsert_clients']} upsert clients "
        f"({f'{rate:g}/s asked' if rate else 'flat out'})"
    )
    print(
        f"{'phase':<30} {'kind':<7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'srv ms/req':>10}"
    )
    for name, label in PHASES.items():
        phase = report["phases"][name]
        for kind in ("search", "upsert"):
            if kind in phase:
                cell = phase[kind]
                print(
                    f"{label:<30} {kind:<7} {cell['req_per_s']:>8.1f} {cell['p50_ms']:>8.1f} "
                    f"{cell['p99_ms']:>8.1f} {cell['errors']:>6} "
                    f"{phase['servers_cpu_ms_per_req']:>10.1f}"
                )
    print("\ngoals:")
    for key, (op, goal) in GOALS.items():
        value = report["goals"][key]
        met = value >= goal if op == ">=" else value <= goal
        print(f"  {key:<30} {value:8.2f}  (goal {op} {goal:g}: {'met' if met else 'NOT met'})")
    print(
        f"  {'search_p50_with_vs_without':<30} {report['goals']['search_p50_with_vs_without']:8.2f}"
    )
