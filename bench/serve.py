"""`refinery bench serve`: `POST /v1/search` through Refinery's Serve app, side by side, one run.

On a N x D flat inner-product snapshot (default 100k x 384), at 1, 8 and 64 closed-loop clients
of the light load generator in bench/loadgen.py: the real app (serve.app.build, index only) with
batching on and with batching off (max_batch_size 1), a do-nothing Serve endpoint behind the
same proxy, and a plain single-process FastAPI + FAISS server (uvicorn subprocess) as the peer.
Every target gets the same pre-encoded requests; each cell is bounded by a request count and a
per-request timeout. Prints a table, the ratios against the goals of issue 6, and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TARGETS = {
    "noop": "do-nothing Serve endpoint",
    "batched": "search, batching on",
    "unbatched": "search, batching off",
    "peer": "FastAPI + FAISS peer",
}
ROUTES = {"noop": "/noop", "batched": "", "unbatched": "/unbatched", "peer": ""}
REPO = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients per cell")
    parser.add_argument(
        "--requests", default="300,1000,2000", help="timed requests per cell, one per --clients"
    )
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests per client")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--cell-budget", type=float, default=20.0, help="no request starts later in a cell (s)"
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="batching on")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    parser.add_argument("--data", default=".refinery/bench/serve", help="snapshot cache")
    parser.add_argument("--only", action="append", choices=list(TARGETS), help="targets to run")


def main(args: argparse.Namespace) -> int:
    from bench.serve_data import ensure_snapshot, query_vectors, search_bodies

    clients = [int(c) for c in args.clients.split(",")]
    counts = [int(c) for c in args.requests.split(",")]
    if len(counts) != len(clients):
        raise SystemExit("--requests needs one count per --clients value")
    targets = args.only or list(TARGETS)
    root = Path(args.data) / f"{args.n}x{args.dim}"
    snapshot = ensure_snapshot(root, args.n, args.dim)
    bodies = search_bodies(query_vectors(256, args.dim), args.k)
    report: dict[str, Any] = {"bench": "serve", "n": args.n, "dim": args.dim, "k": args.k}
    report["index_single_query_ms"] = index_query_ms(snapshot, bodies[0])
    with contextlib.ExitStack() as stack:
        ports = {}
        if {"noop", "batched", "unbatched"} & set(targets):
            ports |= stack.enter_context(serve_targets(snapshot, targets, args))
        if "peer" in targets:
            ports["peer"] = stack.enter_context(peer_server(root))
        check_answers(ports, bodies[0], args.k)
        report["cells"] = run_cells(ports, bodies, clients, counts, args)
    report["ratios"] = ratios(report, clients)
    print_table(report, clients)
    print(json.dumps(report))
    return 0


def index_query_ms(snapshot: Path, body: bytes) -> float:
    """The index's own time for one query (median of 30), as the 1-client goal needs it."""
    import numpy as np

    import vectorindex
    from refinery.manifest import Manifest

    index = vectorindex.load(Manifest.read(str(snapshot)).index)
    query = np.asarray(json.loads(body)["vectors"], dtype=np.float32)
    times = []
    for _ in range(31):
        started = time.perf_counter()
        index.search(query, 10)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]) * 1e3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_args(snapshot: Path, max_batch_size: int) -> dict[str, Any]:
    """The app's args with only the index configured, and limits that never throttle the load."""
    return {
        "version": "bench",
        "index": {"snapshot": str(snapshot), "max_batch_size": max_batch_size},
        "limits": {"requests_per_s": 1e9, "burst": 10**9, "timeout_s": 60},
    }


@contextlib.contextmanager
def serve_targets(
    snapshot: Path, targets: list[str], args: argparse.Namespace
) -> Iterator[dict[str, int]]:
    """A local Ray with Serve on a free port, each Serve target its own app and route."""
    import ray
    from ray import serve

    from bench.serve_noop import DoNothing
    from serve.app import build

    port = free_port()
    # A new local Ray: without an address ray.init joins one already running on the machine.
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = {
            "noop": lambda: DoNothing.bind(),
            "batched": lambda: build(app_args(snapshot, args.max_batch_size)),
            "unbatched": lambda: build(app_args(snapshot, 1)),
        }
        for name in targets:
            if name in apps:
                serve.run(apps[name](), name=f"bench-{name}", route_prefix=ROUTES[name] or "/")
        yield {name: port for name in targets if name in apps}
    finally:
        serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def peer_server(root: Path) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.serve_peer:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log"]
    env = {**os.environ, "REFINERY_PEER_DATA": str(root.resolve())}
    process = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", process, deadline_s=180)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_ready(url: str, process: subprocess.Popen, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the peer server exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise SystemExit(f"the peer server was not ready within {deadline_s:g} s")


def post_json(port: int, path: str, body: bytes) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def check_answers(ports: dict[str, int], body: bytes, k: int) -> None:
    """Before timing: every search target answers k hits, and they agree on the ids."""
    found = {}
    for name, port in ports.items():
        answer = post_json(port, ROUTES[name] + "/v1/search", body)
        if name != "noop":
            hits = answer["results"][0]
            if len(hits) != k:
                raise SystemExit(f"{TARGETS[name]}: {len(hits)} hits, expected {k}")
            found[name] = [hit["id"] for hit in hits]
    if len({tuple(ids) for ids in found.values()}) > 1:
        raise SystemExit(f"the targets disagree on the nearest ids: {found}")


def run_cells(
    ports: dict[str, int],
    bodies: list[bytes],
    clients: list[int],
    counts: list[int],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Each client count in turn, every target at it back to back, so the shared machine's
    load drifts as little as possible between the figures a ratio compares."""
    from bench.loadgen import encode_post, run_load

    cells = []
    for concurrency, count in zip(clients, counts, strict=True):
        for name, port in ports.items():
            path = ROUTES[name] + "/v1/search"
            requests = [encode_post("127.0.0.1", port, path, body) for body in bodies]
            run_load("127.0.0.1", port, requests, concurrency, concurrency * args.warmup)
            server_cpu = servers_cpu_s()
            result = run_load(
                "127.0.0.1", port, requests, concurrency, count, args.timeout, args.cell_budget
            )
            server_cpu = servers_cpu_s() - server_cpu
            cells.append({"target": name, **result.summary()})
            cells[-1]["servers_cpu_ms_per_req"] = server_cpu / max(result.requests, 1) * 1e3
            print(f"  {TARGETS[name]:<26} {concurrency:>3} clients: {_cell_text(cells[-1])}")
    return cells


def servers_cpu_s() -> float:
    """CPU seconds so far of every live process this bench started (Ray's: proxy, controller,
    replicas; and the peer), from /proc: what the servers took from the shared cores. It counts
    the whole Serve instance, background loops and the other targets' idle replicas included."""
    parents, cpu = {}, {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"{entry.path}/stat") as stat:
                # After the command's closing parenthesis: state, ppid, ...; utime, stime.
                fields = stat.read().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
                cpu[int(entry.name)] = int(fields[11]) + int(fields[12])
    me = os.getpid()

    def started_by_me(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    return sum(ticks for pid, ticks in cpu.items() if started_by_me(pid)) / os.sysconf("SC_CLK_TCK")


def _cell_text(cell: dict[str, Any]) -> str:
    return (
        f"{cell['req_per_s']:7.1f} req/s  p50 {cell['p50_ms']:7.1f} ms  "
        f"p99 {cell['p99_ms']:7.1f} ms  errors {cell['errors']}  "
        f"servers {cell['servers_cpu_ms_per_req']:.1f} ms CPU/req"
    )


def _cell(report: dict[str, Any], target: str, clients: int) -> dict[str, Any] | None:
    return next(
        (c for c in report["cells"] if c["target"] == target and c["clients"] == clients), None
    )


def ratios(report: dict[str, Any], clients: list[int]) -> dict[str, Any]:
    """The ratios issue 6 sets goals for (None where a target was not run)."""

    def rps(target: str, n: int) -> float | None:
        cell = _cell(report, target, n)
        return cell["req_per_s"] if cell and cell["requests"] else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    top = max(clients)
    out: dict[str, Any] = {
        "clients": top,
        "batched_vs_unbatched": ratio(rps("batched", top), rps("unbatched", top)),
        "search_vs_noop": ratio(rps("batched", top), rps("noop", top)),
        "serve_vs_peer": ratio(rps("batched", top), rps("peer", top)),
    }
    search, noop = _cell(report, "batched", 1), _cell(report, "noop", 1)
    if search and noop:
        budget = noop["p50_ms"] + report["index_single_query_ms"]
        out["one_client_p50_over_budget_ms"] = search["p50_ms"] - budget
    return out


GOALS = {
    "batched_vs_unbatched": (">=", 3.0),
    "search_vs_noop": (">=", 0.8),
    "serve_vs_peer": (">=", 0.8),
    "one_client_p50_over_budget_ms": ("<=", 2.0),
}


def print_table(report: dict[str, Any], clients: list[int]) -> None:
    print(
        f"\nPOST /v1/search, {report['n']} x {report['dim']} flat ip, k={report['k']}; "
        f"index alone, one query: {report['index_single_query_ms']:.1f} ms"
    )
    print(
        f"{'target':<26} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'gen us/req':>10} {'srv ms/req':>10}"
    )
    for n in clients:
        for target, label in TARGETS.items():
            cell = _cell(report, target, n)
            if cell:
                print(
                    f"{label:<26} {n:>7} {cell['req_per_s']:>8.1f} {cell['p50_ms']:>8.1f} "
                    f"{cell['p99_ms']:>8.1f} {cell['errors']:>6} "
                    f"{cell['loadgen_cpu_us_per_req']:>10.0f} "
                    f"{cell['servers_cpu_ms_per_req']:>10.1f}"
                )
    ratios_ = report["ratios"]
    print(f"\nratios at {ratios_['clients']} clients, and the 1-client latency budget:")
    for key, (op, goal) in GOALS.items():
        value = ratios_.get(key)
        if value is None:
            continue
        met = value >= goal if op == ">=" else value <= goal
        print(f"  {key:<32} {value:8.2f}  (goal {op} {goal:g}: {'met' if met else 'NOT met'})")
