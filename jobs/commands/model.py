"""`refinery model tiny`: build the tiny local Llama that every LLM path can run offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from refinery.config import load_runtime
from refinery.tinyllm import TINY_MODEL_NAME, build_tiny_llama


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="build local models")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tiny = actions.add_parser(
        "tiny", help="build the tiny random-weight Llama (tokenizer trained locally, chat template)"
    )
    tiny.add_argument(
        "--output",
        default=None,
        help=f"model directory (default: STORAGE_ROOT/models/{TINY_MODEL_NAME})",
    )
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same model)")
    tiny.add_argument("--profile", default=None, help="runtime profile giving the storage root")
    tiny.set_defaults(func=_tiny)


def _tiny(args: argparse.Namespace) -> int:
    output = (
        args.output or Path(load_runtime(args.profile).storage.root) / "models" / TINY_MODEL_NAME
    )
    print(build_tiny_llama(output, seed=args.seed))
    return 0
