"""The stages of `refinery demo`, in order. Each yields the lines it prints; later stages read
what earlier ones wrote under the demo's output folder (the serve stage loads the docs index).
Serving comes last: its replicas hold the CPUs that the batch jobs' tasks would need.

The demo prints only its own lines; what Ray, vLLM and the libraries log in this process goes
to DIR/demo.log, and what Ray's worker processes print stays in Ray's session logs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from jobs.batch import BATCH_JOBS, BatchJob, load_batch_config, run_batch_job
from refinery.config import RuntimeConfig, load_runtime
from refinery.ray_runtime import init_ray

DEMO_PORT = 8000
DEMO_DOCS = 60  # keeps the embedding step to a minute or two on 2 CPU cores
DEMO_QUESTIONS = ["How do I read and write Parquet files?", "a library for HTTP requests"]
DEMO_LOG = "demo.log"


@dataclass
class DemoContext:
    output: Path
    runtime: RuntimeConfig
    profile: str

    @classmethod
    def create(cls, output: str, profile: str) -> DemoContext:
        out = Path(output).resolve()
        out.mkdir(parents=True, exist_ok=True)
        return cls(out, load_runtime(profile), profile)


@dataclass(frozen=True)
class DemoStage:
    title: str
    run: Callable[[DemoContext], Iterator[str]]


@contextmanager
def output_to(path: Path) -> Iterator[TextIO]:
    """Everything this process writes to stdout and stderr goes to `path` (replaced), and the
    stream yielded writes to the terminal. Redirected by file descriptor, so Ray's and vLLM's
    native code, their Python loggers and warnings, and child processes started meanwhile all
    land in the file without naming each one."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    with open(path, "w", buffering=1, encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.close()


def ray_logs_dir() -> str:
    """Where this Ray session keeps its processes' logs (worker-*.out/.err, raylet.out, ...)."""
    import ray

    # Ray has no public call for the folder; its node object knows it, where the temp dir
    # (RAY_TMPDIR, --temp-dir) would have to be guessed.
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None:
        return node.get_logs_dir_path()
    return f"/tmp/ray/{ray.get_runtime_context().get_session_name()}/logs"


def start_ray(ctx: DemoContext) -> Iterator[str]:
    import ray

    # Without an address this is a Ray of the demo's own, ended with it (init_ray never joins a
    # cluster nobody named). Workers' output stays in the session's log files.
    init_ray(ctx.runtime.ray, log_to_driver=False)
    resources = ray.cluster_resources()
    yield f"Ray {ray.__version__}: {len(ray.nodes())} node(s), {resources.get('CPU', 0):.0f} CPUs"
    yield f"worker processes' output: {ray_logs_dir()} (worker-*.out and .err; Serve's in serve/)"


def refine_documents(ctx: DemoContext) -> Iterator[str]:
    from pipelines.documents.demo import build_demo_corpus

    corpus = build_demo_corpus(str(ctx.output / "corpus"), max_docs=DEMO_DOCS)
    yield f"corpus: {corpus} (README text of the installed Python packages)"
    stats = _run_job(BATCH_JOBS["docs"], corpus, ctx, "docs")
    for name, step in stats["steps"].items():
        dropped = ", ".join(f"{rule} {n}" for rule, n in step["dropped"].items())
        yield f"{name:>14}: {step['rows_in']:>5} in, {step['rows_out']:>5} out" + (
            f"  (dropped: {dropped})" if dropped else ""
        )
    yield f"outputs: {ctx.output / 'docs'} (documents/, index/, stats.json)"


def serve_search_and_rag(ctx: DemoContext) -> Iterator[str]:
    from ray import serve

    from serve.app import build

    snapshot = ctx.output / "docs" / "index"
    serve.start(http_options={"host": "127.0.0.1", "port": DEMO_PORT})
    args = {
        "index": {"snapshot": str(snapshot)},
        "embedding": ctx.runtime.embedding.model_dump(),
        "llm": ctx.runtime.llm.model_dump(),
        "storage_root": ctx.runtime.storage.root,
    }
    serve.run(build(args), name="refinery", route_prefix="/")
    url = f"http://127.0.0.1:{DEMO_PORT}"
    yield f"Serve app up at {url}: index {snapshot}, MiniLM embedder, vLLM ({_vllm_version()})"
    for question in DEMO_QUESTIONS:
        hits = _post(f"{url}/v1/search", {"texts": [question], "k": 3})["results"][0]
        yield f"POST /v1/search {question!r}:"
        for hit in hits:
            yield f"    {hit['score']:.3f}  {hit['payload'].get('doc_id', hit['id'])}"
    rag = _post(f"{url}/v1/rag", {"question": DEMO_QUESTIONS[0], "k": 3})
    yield f"POST /v1/rag {DEMO_QUESTIONS[0]!r} ({rag['model']}, random weights: gibberish):"
    yield f"    answer: {rag['answer']!r}"
    for number, source in enumerate(rag["sources"], 1):
        yield f"    [{number}] {source['score']:.3f}  {source['id']}  {source['text'][:60]!r}..."
    yield f"    cited: {rag['cited']}"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    response = httpx.post(url, json=body, timeout=120)
    response.raise_for_status()
    return response.json()


def aggregate_logs(ctx: DemoContext) -> Iterator[str]:
    from pipelines.logs.generate import generate_demo_logs

    paths = generate_demo_logs(ctx.output / "logs-input")
    yield f"generated {len(paths)} JSONL files of LLM logs (0.1% malformed, some quirky lines)"
    stats = _run_job(BATCH_JOBS["logs"], str(ctx.output / "logs-input"), ctx, "logs")
    parse = stats["steps"]["parse"]
    reasons = ", ".join(f"{reason} {n}" for reason, n in parse["quarantined"].items())
    yield f"parsed {parse['rows_in']} lines -> {parse['rows_out']} rows; quarantined: {reasons}"
    outputs = stats["logs"]["outputs"]
    with open(outputs["quarantine"], encoding="utf-8") as quarantine:
        example = json.loads(quarantine.readline())
    where = f"{Path(example['file']).name}:{example['line']}"
    yield f"e.g. {where} {example['reason']} ({example['detail']}): {example['raw'][:60]!r}"
    yield f"table {outputs['table']}, chart {outputs['chart']}, MLflow run {stats['mlflow_run_id']}"
    yield from _read_table(Path(outputs["table"])).head(8).to_string(index=False).splitlines()


def _run_job(job: BatchJob, input_path: str, ctx: DemoContext, name: str) -> dict[str, Any]:
    cfg = load_batch_config(job, None, ctx.profile)
    cfg.input = input_path
    cfg.output = str(ctx.output / name)
    return run_batch_job(job, cfg).to_dict()


def _read_table(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


DEMO_STAGES: list[DemoStage] = [
    DemoStage("start a local Ray", start_ray),
    DemoStage("refine documents: read, clean, dedup, chunk, embed, index", refine_documents),
    DemoStage("aggregate LLM logs: parse, quarantine, percentiles, cost", aggregate_logs),
    DemoStage("serve index, embedder and vLLM on Ray Serve: search, RAG", serve_search_and_rag),
]
