"""`refinery demo`: everything end to end on the embedded defaults, printing what it did."""

from __future__ import annotations

import argparse
import time

from jobs.demo import DEMO_PORT, DEMO_STAGES, DemoContext


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="start a local Ray and run every job end to end on embedded data"
    )
    parser.add_argument(
        "--output", default=".refinery/demo", help="where the demo writes its outputs"
    )
    parser.add_argument("--profile", default="local", help="runtime profile (default: local)")
    parser.add_argument(
        "--keep-serving", action="store_true", help="leave the Serve app up until Ctrl-C"
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import ray

    ctx = DemoContext.create(args.output, args.profile)
    try:
        for number, stage in enumerate(DEMO_STAGES, 1):
            print(f"\n== [{number}/{len(DEMO_STAGES)}] {stage.title}", flush=True)
            t0 = time.perf_counter()
            for line in stage.run(ctx):
                print(f"   {line}", flush=True)
            print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
        print("\ndemo finished; outputs under", ctx.output, flush=True)
        if args.keep_serving:
            print(f"serving on http://127.0.0.1:{DEMO_PORT}; Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
    finally:
        ray.shutdown()  # stops Serve and the local Ray the demo started
    return 0
