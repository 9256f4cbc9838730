"""`refinery bench docs`: the document pipeline side by side with single-process baselines.

1. Clean + dedup (read, HTML to text, normalise, filters, exact and MinHash near dedup) on
   Ray against one Python process that runs the same cleaning steps and a datasketch
   MinHashLSH loop (query, then insert) over the same documents: documents/s per core.
2. The embed step (Ray actor pool) against plain sentence-transformers `encode` on the same
   chunks and the same number of cores: chunks/s.

Real text: the Python documentation (`../shared/data/python-docs DIR`), each page also
copied with random word edits (`--copies`), so the corpus has planted near-duplicates.
Ray is started (and its workers warmed on 20 pages) before any timing; each side is timed
A B A against the other so a drifting load on a shared machine weighs on both.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", required=True, help="folder from ../shared/data/python-docs")
    parser.add_argument("--work", default="/tmp/refinery-bench-docs", help="scratch folder")
    parser.add_argument("--copies", type=int, default=2, help="edited copies of each page")
    parser.add_argument("--edit-rate", type=float, default=0.01, help="share of words replaced")
    parser.add_argument("--cpus", type=int, default=2, help="cores for Ray and the baselines")
    parser.add_argument("--embed-chunks", type=int, default=512, help="chunks in the embed race")
    parser.add_argument("--embed-actors", type=int, default=1, help="actors sharing --cpus")
    parser.add_argument("--seed", type=int, default=0)


def build_corpus(
    pages: list[Path], root: Path, out: Path, copies: int, rate: float, seed: int
) -> list[Path]:
    """Every page plus `copies` edited copies, as HTML files; returns their paths. `out`
    is emptied first: the Ray side reads the whole folder, so files of an earlier run (other
    copies, other page names) would make it process more documents than the other side."""
    rng = random.Random(seed)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = []
    for page in pages:
        html = page.read_text(encoding="utf-8", errors="replace")
        for copy in range(copies + 1):
            path = out / f"{'-'.join(page.relative_to(root).parts)}.{copy}.html"
            path.write_text(html if copy == 0 else _edit(html, rng, rate), encoding="utf-8")
            files.append(path)
    return files


def _edit(html: str, rng: random.Random, rate: float) -> str:
    words = html.split(" ")
    for i in range(len(words)):
        if rng.random() < rate and words[i].isalpha():
            words[i] = words[i][::-1]
    return " ".join(words)


def baseline_clean_dedup(files: list[Path], steps: list[Any], threshold: float, perms: int) -> int:
    """One process: the same reader and cleaning steps, then a datasketch MinHashLSH loop
    (query, insert when no near-duplicate is indexed yet) after an exact-hash check."""
    from datasketch import MinHash, MinHashLSH

    from pipelines.documents.config import ReadConfig
    from pipelines.documents.read import read_file
    from pipelines.documents.text import content_hash, shingles

    lsh = MinHashLSH(threshold=threshold, num_perm=perms)
    seen: set[str] = set()
    kept = 0
    for path in files:
        for doc in read_file(str(path), ReadConfig()):
            if any(step.process(doc) for step in steps):
                continue
            digest = content_hash(doc["text"])
            if digest in seen:
                continue
            seen.add(digest)
            minhash = MinHash(num_perm=perms)
            minhash.update_batch(sorted(shingles(doc["text"], 5)))
            if lsh.query(minhash):
                continue
            lsh.insert(doc["id"], minhash)
            kept += 1
    return kept


def main(args: argparse.Namespace) -> int:
    import ray
    import torch

    from pipelines.documents.config import DocsJobConfig, EmbedConfig, ReadConfig
    from pipelines.documents.embed import Embed
    from pipelines.documents.pipeline import build_steps, run_pipeline, split_steps
    from refinery.config import load_job_config
    from refinery.embedding import load_embedder

    root = Path(args.docs)
    pages = sorted(root.rglob("*.html"))
    if not pages:
        print(f"no HTML under {args.docs}: run ../shared/data/python-docs {args.docs}")
        return 2
    work = Path(args.work)
    files = build_corpus(pages, root, work / "corpus", args.copies, args.edit_rate, args.seed)
    build_corpus(pages[:20], root, work / "warm", 0, 0.0, args.seed)
    n_docs = len(files)
    cfg = load_job_config(DocsJobConfig, None)
    steps = build_steps([s for s in cfg.steps if s.step not in ("chunk", "embed")])
    doc_steps, _ = split_steps(steps)
    minhash = next(s for s in cfg.steps if s.step == "minhash_dedup")

    ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        # Warm-up on 20 pages: worker start-up and imports are paid once per cluster, not per job.
        run_pipeline(str(work / "warm"), ReadConfig(), steps, _context(cfg, work))

        def ray_run() -> Any:
            return run_pipeline(str(work / "corpus"), ReadConfig(), steps, _context(cfg, work))

        def single_run() -> int:
            return baseline_clean_dedup(files, doc_steps, minhash.threshold, minhash.num_perm)

        # The machine is shared: each side's time is the mean of two runs around the other's
        # (A B A), so a load that drifts during the bench weighs on both sides alike.
        ray_s, single_s, ds, kept_single = _bracketed(ray_run, single_run)
        kept_ray = ds.count()

        texts = [r["text"] for r in ds.take(args.embed_chunks)]
        chunks = _chunk_texts(texts, cfg, args.embed_chunks)
        torch.set_num_threads(args.cpus)
        model = load_embedder(cfg.runtime.embedding)
        model.encode(chunks[:8], batch_size=32)
        cpus_per_actor = args.cpus / args.embed_actors
        embed = Embed(EmbedConfig(actors=args.embed_actors, cpus_per_actor=cpus_per_actor))
        chunk_ds = ray.data.from_items([{"text": c} for c in chunks]).materialize()
        # Warm caches and imports; every run still starts its own actor pool (processes,
        # model load), which the timed run counts, as the pipeline's embed step pays it.
        embed.apply(chunk_ds.limit(8).materialize(), _context(cfg, work))
        plain_s, ray_embed_s, _, _ = _bracketed(
            lambda: model.encode(chunks, batch_size=32, normalize_embeddings=True),
            lambda: embed.apply(chunk_ds, _context(cfg, work)),
        )
    finally:
        ray.shutdown()

    result = {
        "bench": "docs",
        "docs": n_docs,
        "pages": len(pages),
        "cpus": args.cpus,
        "kept_ray": kept_ray,
        "kept_single": kept_single,
        "ray_clean_dedup_docs_per_s_per_core": round(n_docs / ray_s / args.cpus, 1),
        "single_clean_dedup_docs_per_s_per_core": round(n_docs / single_s, 1),
        "embed_chunks": len(chunks),
        "embed_actors": args.embed_actors,
        "ray_embed_chunks_per_s": round(len(chunks) / ray_embed_s, 1),
        "plain_encode_chunks_per_s": round(len(chunks) / plain_s, 1),
    }
    seconds = {"ray": ray_s, "single": single_s, "ray_embed": ray_embed_s, "plain": plain_s}
    _table(result, seconds)
    print(json.dumps(result))
    return 0


def _context(cfg: Any, work: Path) -> Any:
    from pipelines.documents.steps import RunContext
    from refinery.runstats import RunStats

    return RunContext(cfg.runtime, RunStats("bench"), str(work / "out"))


def _bracketed(a: Callable[[], Any], b: Callable[[], Any]) -> tuple[float, float, Any, Any]:
    """Runs a, b, a: the mean seconds of a's two runs, b's seconds, and their results."""
    seconds = []
    results = []
    for run in (a, b, a):
        t0 = time.perf_counter()
        results.append(run())
        seconds.append(time.perf_counter() - t0)
    return (seconds[0] + seconds[2]) / 2, seconds[1], results[0], results[1]


def _chunk_texts(texts: list[str], cfg: Any, limit: int) -> list[str]:
    import pyarrow as pa

    from pipelines.documents.chunk import chunk_batch, max_tokens
    from refinery.embedding import resolve_model_path

    path = resolve_model_path(cfg.runtime.embedding.model)
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    table = table.append_column("doc_id", table["id"])
    chunks = chunk_batch(table, path, max_tokens(path), 50)["text"].to_pylist()
    return chunks[:limit]


def _table(r: dict[str, Any], seconds: dict[str, float]) -> None:
    cores = f"docs/s/core ({r['cpus']} cores)"
    rows = [
        ("clean+dedup, Ray Data pipeline", "ray", r["ray_clean_dedup_docs_per_s_per_core"], cores),
        ("clean+dedup, 1 process + MinHashLSH", "single",
         r["single_clean_dedup_docs_per_s_per_core"], "docs/s/core (1 core)"),
        ("embed, Ray actor pool", "ray_embed", r["ray_embed_chunks_per_s"], "chunks/s"),
        ("embed, plain encode", "plain", r["plain_encode_chunks_per_s"], "chunks/s"),
    ]  # fmt: skip
    print(f"{r['docs']} documents ({r['pages']} pages + edited copies), {r['embed_chunks']} chunks")
    print(f"kept: Ray {r['kept_ray']}, single process {r['kept_single']}")
    print(f"{'what':38} {'seconds':>8} {'rate':>9}  unit")
    for name, key, rate, unit in rows:
        print(f"{name:38} {seconds[key]:>8.1f} {rate:>9}  {unit}")
