"""`refinery bench embed`: the CPU embedding paths side by side with plain sentence-transformers.

Chunks are the Python documentation (`scripts/python-docs.sh DIR`, `--docs DIR`) read,
cleaned and chunked as the documents pipeline does. Variants, all with `--cpus` torch threads
in this process:

- plain: `SentenceTransformer.encode`, float32 (the reference);
- fp32, bf16: refinery.embedding's encode (length buckets) in that precision;
- int8-dynamic: plain encode of a copy whose Linear layers are dynamically quantised, as a
  reference for what the quality bar rejects.

Throughput: each round encodes the same `--chunks` chunks with every variant, in an order that
rotates per round, so a load that drifts on a shared machine weighs on all; each variant's
ratio to plain is taken within a round and the median over rounds is reported. Quality: the
documents are split in two by a hash of their id; the first half's chunks (`--index-chunks`)
are indexed, and `--queries` short passages (8-16 words) cut from chunks of the other half
are the held-out queries. Each variant embeds both; reported: mean and minimum cosine of its
vectors to plain's, and recall@10 of its exact inner-product top 10 against plain's.

With `--pool`, the documents embed step itself (Ray actor pool, as `refinery run docs` runs it)
with the default config (resources from the cluster, precision auto) against the former
default (1 actor of 1 CPU, fp32), A B A, the actor start-up included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", required=True, help="folder made by scripts/python-docs.sh")
    parser.add_argument("--cpus", type=int, default=2, help="torch threads (and Ray CPUs)")
    parser.add_argument("--chunks", type=int, default=256, help="chunks per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--index-chunks", type=int, default=1000, help="chunks indexed")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 reference")
    parser.add_argument("--pool", action="store_true", help="also race the embed step on Ray")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import torch

    from refinery.config import EmbeddingConfig
    from refinery.embedding import cpu_flags, encode_texts, load_embedder, resolve_precision

    docs = _documents(Path(args.docs))
    if not docs:
        print(f"no HTML under {args.docs}: run scripts/python-docs.sh {args.docs}")
        return 2
    torch.set_num_threads(args.cpus)
    rng = random.Random(args.seed)
    indexed, held_out = _split(docs)
    index_chunks = _sample(_chunks(indexed), args.index_chunks, rng)
    queries = _queries(_chunks(held_out), args.queries, rng)
    bench_chunks = _sample(index_chunks, args.chunks, rng)
    flags = cpu_flags()
    result: dict[str, Any] = {
        "bench": "embed",
        "cpu": _cpu_model(),
        "flags": [f for f in FLAGS_SHOWN if f in flags],
        "auto": resolve_precision("auto"),
        "threads": args.cpus,
        "documents": len(docs),
        "chunks": len(bench_chunks),
        "index_chunks": len(index_chunks),
        "queries": len(queries),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }

    plain_model = load_embedder(EmbeddingConfig(precision="fp32"))
    variants: dict[str, Callable[[list[str]], Any]] = {
        "plain": lambda texts: plain_model.encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        )
    }
    for precision in ("fp32", "bf16"):
        cfg = EmbeddingConfig(precision=precision)
        model = load_embedder(cfg)
        variants[precision] = lambda texts, m=model, c=cfg: encode_texts(m, texts, c)
    if not args.no_int8:
        int8 = _int8_dynamic()
        if int8 is not None:
            variants["int8-dynamic"] = lambda texts: _unit(
                int8.encode(texts, batch_size=32, convert_to_numpy=True)
            )
    for encode in variants.values():
        encode(bench_chunks[:8])  # first-call costs (kernels, allocations) out of the timing

    result["throughput"] = _throughput(variants, bench_chunks, args.rounds)
    result["quality"] = _quality(variants, index_chunks, queries)
    if args.pool:
        result["pool"] = _pool_race(bench_chunks, args.cpus)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    _table(result)
    print(json.dumps(result))
    return 0


def _throughput(
    variants: dict[str, Callable[[list[str]], Any]], chunks: list[str], rounds: int
) -> dict[str, dict[str, Any]]:
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            variants[name](chunks)
            seconds[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for name in names:
        ratios = [p / s for p, s in zip(seconds["plain"], seconds[name], strict=True)]
        # CPU seconds move less than wall time with other work on the machine (threads that
        # wait for a core cost wall time, not CPU time): a second view of the same runs.
        cpu_ratios = [p / s for p, s in zip(cpu["plain"], cpu[name], strict=True)]
        out[name] = {
            "chunks_per_s": round(len(chunks) / statistics.median(seconds[name]), 1),
            "ratio": round(statistics.median(ratios), 2),
            "ratios": [round(x, 2) for x in ratios],
            "cpu_ratio": round(statistics.median(cpu_ratios), 2),
        }
    return out


def _quality(
    variants: dict[str, Callable[[list[str]], Any]], chunks: list[str], queries: list[str]
) -> dict[str, dict[str, float]]:
    import numpy as np

    vectors = {
        name: (np.asarray(encode(chunks), np.float32), np.asarray(encode(queries), np.float32))
        for name, encode in variants.items()
    }
    ref_chunks, ref_queries = vectors["plain"]
    truth = _top10(ref_queries, ref_chunks)
    out = {}
    for name, (c, q) in vectors.items():
        cosine = np.concatenate([(c * ref_chunks).sum(1), (q * ref_queries).sum(1)])
        found = _top10(q, c)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
        out[name] = {
            "cos_mean": round(float(cosine.mean()), 5),
            "cos_min": round(float(cosine.min()), 5),
            "recall_at_10": round(float(recall), 4),
        }
    return out


def _top10(queries: Any, corpus: Any) -> Any:
    import numpy as np

    scores = queries @ corpus.T
    return np.argpartition(-scores, 10, axis=1)[:, :10]


def _pool_race(chunks: list[str], cpus: int) -> dict[str, Any]:
    """The embed step with today's default config against the former default, A B A."""
    import ray

    from pipelines.documents.config import EmbedConfig
    from pipelines.documents.embed import Embed, cluster_cpus, embed_resources
    from pipelines.documents.steps import RunContext
    from refinery.config import EmbeddingConfig, RuntimeConfig
    from refinery.runstats import RunStats

    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    try:
        ds = ray.data.from_items([{"text": c} for c in chunks]).materialize()

        def step(cfg: EmbedConfig, precision: str) -> Callable[[], Any]:
            runtime = RuntimeConfig(embedding=EmbeddingConfig(precision=precision))
            ctx = RunContext(runtime, RunStats("bench"), "/tmp/refinery-bench-embed")
            return lambda: Embed(cfg).apply(ds, ctx)

        default = step(EmbedConfig(), "auto")
        former = step(EmbedConfig(actors=1, cpus_per_actor=1), "fp32")
        former()  # worker start-up and imports paid before timing, as a warm cluster has
        seconds = []
        for run in (former, default, former):
            _wait_all_free(cpus)
            t0 = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - t0)
        actors, per_actor = embed_resources(EmbedConfig(), *cluster_cpus(), "cpu")
    finally:
        ray.shutdown()
    former_s = (seconds[0] + seconds[2]) / 2
    return {
        "default": f"{actors} actor(s) x {per_actor:g} CPUs, precision auto",
        "former": "1 actor x 1 CPU, fp32",
        "default_chunks_per_s": round(len(chunks) / seconds[1], 1),
        "former_chunks_per_s": round(len(chunks) / former_s, 1),
        "ratio": round(former_s / seconds[1], 2),
    }


def _wait_all_free(cpus: int, timeout_s: float = 120.0) -> None:
    """Untimed: the previous run's actors give their CPUs back a while after it ends, and
    a run that waited for them would be charged for the other's teardown."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0.0) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)


def _int8_dynamic() -> Any:
    import warnings

    import torch

    from refinery.config import EmbeddingConfig
    from refinery.embedding import load_embedder

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_embedder(EmbeddingConfig(precision="fp32"))
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _unit(vectors: Any) -> Any:
    import numpy as np

    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _documents(root: Path) -> list[dict[str, Any]]:
    """The pages as the pipeline's read and document steps leave them."""
    from pipelines.documents.config import DocsJobConfig, ReadConfig
    from pipelines.documents.pipeline import build_steps, split_steps
    from pipelines.documents.read import read_file
    from refinery.config import load_job_config

    cfg = load_job_config(DocsJobConfig, None)
    steps, _ = split_steps(build_steps([s for s in cfg.steps if s.step in _DOC_STEPS]))

    docs = []
    for page in sorted(root.rglob("*.html")):
        for doc in read_file(str(page), ReadConfig()):
            if "text" in doc and doc.get("text") and not any(s.process(doc) for s in steps):
                docs.append(doc)
    return docs


_DOC_STEPS = ("html_to_text", "normalize", "length", "repetition", "gopher")


def _split(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def half(doc: dict[str, Any]) -> int:
        return hashlib.sha256(str(doc["id"]).encode()).digest()[0] % 2

    return [d for d in docs if half(d) == 0], [d for d in docs if half(d) == 1]


def _chunks(docs: list[dict[str, Any]]) -> list[str]:
    import pyarrow as pa

    from pipelines.documents.chunk import chunk_batch, max_tokens
    from refinery.embedding import resolve_model_path

    path = resolve_model_path("all-MiniLM-L6-v2")
    ids = [str(d["id"]) for d in docs]
    table = pa.table({"id": ids, "doc_id": ids, "text": [d["text"] for d in docs]})
    return chunk_batch(table, path, max_tokens(path), 50)["text"].to_pylist()


def _sample(items: list[str], n: int, rng: random.Random) -> list[str]:
    return rng.sample(items, min(n, len(items)))


def _queries(chunks: list[str], n: int, rng: random.Random) -> list[str]:
    out = []
    for chunk in _sample([c for c in chunks if len(c.split()) >= 24], n, rng):
        words = chunk.split()
        size = rng.randint(8, 16)
        start = rng.randrange(0, len(words) - size)
        out.append(" ".join(words[start : start + size]))
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _table(r: dict[str, Any]) -> None:
    print(f"CPU {r['cpu']}; flags {' '.join(r['flags'])}; auto = {r['auto']}; "
          f"{r['threads']} threads; load {r['load_before']} -> {r['load_after']}")  # fmt: skip
    print(f"{r['chunks']} chunks per round; quality on {r['index_chunks']} indexed chunks and "
          f"{r['queries']} held-out queries")  # fmt: skip
    print(f"{'variant':14} {'chunks/s':>9} {'x plain':>8} {'x cpu':>6} {'cos mean':>9} "
          f"{'cos min':>8} {'recall@10':>9}  ratios per round")  # fmt: skip
    for name, t in r["throughput"].items():
        q = r["quality"][name]
        print(f"{name:14} {t['chunks_per_s']:>9} {t['ratio']:>8} {t['cpu_ratio']:>6} "
              f"{q['cos_mean']:>9} {q['cos_min']:>8} {q['recall_at_10']:>9}  "
              f"{t['ratios']}")  # fmt: skip
    if "pool" in r:
        p = r["pool"]
        print(f"embed step on Ray, {p['default']}: {p['default_chunks_per_s']} chunks/s; "
              f"{p['former']}: {p['former_chunks_per_s']} chunks/s; {p['ratio']}x")  # fmt: skip
