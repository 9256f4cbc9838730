"""`refinery bench NAME`: the side-by-side benchmarks in bench/, each a module with
`add_arguments(parser)` and `main(args) -> int` that prints a table and a JSON line."""

from __future__ import annotations

import argparse
import importlib

# Name -> module in bench/. The CLI imports each to build --help, so a bench module imports
# its heavy dependencies inside main().
BENCHMARKS: dict[str, tuple[str, str]] = {
    "index": ("bench.index", "vectorindex against FAISS, hnswlib and NumPy"),
    "logs": (
        "bench.logs",
        "LogStore against DuckDB and Polars on noisy log variants: file -> answer, loaded query",
    ),
    "docs": ("bench.docs", "document pipeline against a single-process datasketch loop"),
    "embed": ("bench.embed", "CPU embedding precisions against plain sentence-transformers"),
    "serve": ("bench.serve", "Serve /v1/search against a do-nothing endpoint and FastAPI+FAISS"),
    "serve-updates": ("bench.serve_updates", "Serve /v1/upsert under search load"),
    "serve-memory": ("bench.serve_memory", "memory of 1 and 2 ingress replicas on one snapshot"),
    "serve-canary": ("bench.serve_canary", "what the canary split adds to a search, at 1 client"),
    "reindex": ("bench.reindex", "incremental against full reindex, 1 in 100 documents changed"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a side-by-side benchmark from bench/")
    names = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        sub = names.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=_runner(module))
        importlib.import_module(module).add_arguments(sub)


def _runner(module: str):
    return lambda args: importlib.import_module(module).main(args)
