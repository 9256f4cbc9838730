"""`refinery demo`: everything end to end on the embedded defaults, printing what it did."""

from __future__ import annotations

import argparse
import time
import traceback
from typing import TextIO

from jobs.demo import DEMO_LOG, DEMO_PORT, DEMO_STAGES, DemoContext, output_to


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
    ctx = DemoContext.create(args.output, args.profile)
    log_path = ctx.output / DEMO_LOG
    print(f"Ray's, vLLM's and the libraries' logs: {log_path}", flush=True)
    with output_to(log_path) as terminal:
        _run_stages(ctx, args.keep_serving, terminal)
    return 0


def _say(terminal: TextIO, line: str) -> None:
    print(line, file=terminal, flush=True)
    print(line, flush=True)  # into the log as well, to find each stage's records there


def _run_stages(ctx: DemoContext, keep_serving: bool, terminal: TextIO) -> None:
    import ray

    stage_title = ""
    try:
        for number, stage in enumerate(DEMO_STAGES, 1):
            stage_title = stage.title
            _say(terminal, f"\n== [{number}/{len(DEMO_STAGES)}] {stage.title}")
            t0 = time.perf_counter()
            for line in stage.run(ctx):
                print(f"   {line}", file=terminal, flush=True)
            print(f"   ({time.perf_counter() - t0:.1f} s)", file=terminal, flush=True)
        _say(terminal, f"\ndemo finished; outputs under {ctx.output}")
        if keep_serving:
            _say(terminal, f"serving on http://127.0.0.1:{DEMO_PORT}; Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except Exception as error:
        traceback.print_exc()  # into the log, after the records that led up to it
        print(
            f"demo failed in {stage_title!r}: {type(error).__name__}: {error}\n"
            f"see {ctx.output / DEMO_LOG}",
            file=terminal,
            flush=True,
        )
        raise
    finally:
        ray.shutdown()  # stops Serve and the local Ray the demo started
