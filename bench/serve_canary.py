"""`refinery bench serve-canary`: what the canary split and its per-arm metrics add to a search.

One app (serve.app:build, index only, deployed from its config as a rollout needs it) on an
N x D flat snapshot; `POST /v1/search` at one closed-loop client of bench/loadgen.py, in
interleaved rounds of three cells: no canary; a canary at 50% (the split, the per-arm counts
and the arm's metrics tags on every request; both arms the same snapshot, so the scan is
alike); and the same with 10% of searches shadowed to the other arm. Prints p50/p99 per cell,
the differences from no canary, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

APP = "bench-canary"
CELLS = {
    "no canary": None,
    "canary 50%": {"weight": 50, "shadow": 0.0},
    "canary 50%, 10% shadowed": {"weight": 50, "shadow": 0.1},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=10_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every cell")
    parser.add_argument("--seconds", type=float, default=10.0, help="per cell and round")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    parser.add_argument("--data", default=".refinery/bench/serve", help="snapshot cache")


def main(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from bench.loadgen import encode_post, merged, run_load
    from bench.serve import free_port
    from bench.serve_data import ensure_snapshot, query_vectors, search_bodies
    from serve.canary.deploy import set_canary
    from serve.config import CanaryConfig
    from serve.deploy import deploy_applications, wait_running

    snapshot = ensure_snapshot(Path(args.data) / f"{args.n}x{args.dim}", args.n, args.dim)
    port = free_port()
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = {"name": APP, "route_prefix": "/", "import_path": "serve.app:build",
              "args": _app_args(snapshot)}  # fmt: skip
    deploy_applications([config])
    if failed := wait_running([APP], timeout_s=600):
        raise SystemExit(f"{APP} did not start: {failed}")
    requests = [encode_post("127.0.0.1", port, "/v1/search", body)
                for body in search_bodies(query_vectors(64, args.dim), args.k)]  # fmt: skip
    results: dict[str, list[Any]] = {cell: [] for cell in CELLS}
    try:
        for _ in range(args.rounds):
            for cell, canary in CELLS.items():
                arm = (
                    CanaryConfig(version="b", snapshot=str(snapshot), **canary) if canary else None
                )
                set_canary(APP, arm)
                _wait_routing(port, arm)
                run_load("127.0.0.1", port, requests, 1, 50)  # warm the new routing
                result = run_load("127.0.0.1", port, requests, 1, 10**9, budget_s=args.seconds)
                results[cell].append(result)
    finally:
        serve.shutdown()
        ray.shutdown()
    _report({cell: merged(rounds) for cell, rounds in results.items()})
    return 0


def _app_args(snapshot: Path) -> dict[str, Any]:
    return {
        "version": "a",
        "index": {"snapshot": str(snapshot)},
        "ingress": {"num_cpus": 0},
        "embedding": {"num_cpus": 0},
        "limits": {"requests_per_s": 1e9, "burst": 10**9},
    }


def _wait_routing(port: int, canary: Any, timeout_s: float = 120) -> None:
    wanted = canary.model_dump(mode="json") if canary else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            if json.load(response).get("routing", {}).get("canary") == wanted:
                return
        time.sleep(0.2)
    raise SystemExit(f"the replica did not take the canary {wanted} in {timeout_s} s")


def _report(cells: dict[str, Any]) -> None:
    base = cells["no canary"]
    print(f"{'cell':<28}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}")
    rows = {}
    for cell, result in cells.items():
        extra = result.percentile_ms(50) - base.percentile_ms(50)
        rows[cell] = {**result.summary(), "p50_over_no_canary_ms": extra}
        print(f"{cell:<28}{result.requests:>10}{result.errors:>8}{result.percentile_ms(50):>9.2f}"
              f"{result.percentile_ms(99):>9.2f}{extra:>9.2f}")  # fmt: skip
    print(json.dumps({"bench": "serve-canary", "cells": rows}))
