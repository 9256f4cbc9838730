"""`refinery`: one console script; each subcommand lives in jobs/commands/ and registers itself.

Heavy imports (Ray, torch, vLLM) happen inside the commands, so `refinery --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.commands import COMMANDS
from refinery.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinery",
        description="Turn raw documents and LLM logs into served, searchable knowledge on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"refinery: config error:\n{error}", file=sys.stderr)
        return 2
    except ConnectionError as error:  # a cluster or service that does not answer
        print(f"refinery: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
