"""`refinery bench docs`: the document pipeline side by side with single-process baselines.

1. Clean + dedup (read, HTML to text, normalise, filters, exact and MinHash near dedup) on
   Ray against one Python process that runs the same cleaning steps and a datasketch
   MinHashLSH loop (query, then insert) over the same documents: documents/s per core.
2. The embed step (Ray actor pool) against plain sentence-transformers `encode` on the same
   chunks and the same number of cores: chunks/s, with and without the fixed start-up (the
   actor pool's processes and model load), from runs on two sizes.

Real text: the Python documentation (`scripts/python-docs.sh DIR`), each page also
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
    parser.add_argument("--docs", required=True, help="folder made by scripts/python-docs.sh")
    parser.add_argument("--work", default="/tmp/refinery-bench-docs", help="scratch folder")
    parser.add_argument("--copies", type=int, default=2, help="edited copies of each page")
    parser.add_argument("--edit-rate", type=float, default=0.01, help="share of words replaced")
    parser.add_argument("--cpus", type=int, default=2, help="cores for Ray and the baselines")
    parser.add_argument("--embed-chunks", type=int, default=512, help="chunks in the embed race")
    parser.add_argument(
        "--embed-small", type=int, default=64, help="chunks of the second, short embed race"
    )
    parser.add_argument("--embed-actors", type=int, default=1, help="actors sharing --cpus")
    parser.add_argument("--only", choices=["clean", "embed"], help="run one of the two races")
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

    from pipelines.documents.config import DocsJobConfig
    from refinery.config import load_job_config

    root = Path(args.docs)
    pages = sorted(root.rglob("*.html"))
    if not pages:
        print(f"no HTML under {args.docs}: run scripts/python-docs.sh {args.docs}")
        return 2
    work = Path(args.work)
    files = build_corpus(pages, root, work / "corpus", args.copies, args.edit_rate, args.seed)
    build_corpus(pages[:20], root, work / "warm", 0, 0.0, args.seed)
    cfg = load_job_config(DocsJobConfig, None)
    result: dict[str, Any] = {"bench": "docs", "docs": len(files), "pages": len(pages)}
    result["cpus"] = args.cpus
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        ds = clean_race(files, work, cfg, args, result)
        if args.only in (None, "embed"):
            texts = [r["text"] for r in ds.take(args.embed_chunks)]
            embed_race(_chunk_texts(texts, cfg, args.embed_chunks), work, cfg, args, result)
    finally:
        ray.shutdown()
    _table(result)
    print(json.dumps(result))
    return 0


def clean_race(
    files: list[Path], work: Path, cfg: Any, args: argparse.Namespace, result: dict[str, Any]
) -> Any:
    """Clean + dedup, Ray pipeline against one process (A B A); the Ray side's documents."""
    from pipelines.documents.config import ReadConfig
    from pipelines.documents.pipeline import build_steps, run_pipeline, split_steps

    steps = build_steps([s for s in cfg.steps if s.step not in ("chunk", "embed")])
    doc_steps, _ = split_steps(steps)
    minhash = next(s for s in cfg.steps if s.step == "minhash_dedup")
    # Warm-up on 20 pages: worker start-up and imports are paid once per cluster, not per job.
    run_pipeline(str(work / "warm"), ReadConfig(), steps, _context(cfg, work))

    def ray_run() -> Any:
        return run_pipeline(str(work / "corpus"), ReadConfig(), steps, _context(cfg, work))

    if args.only == "embed":
        return ray_run()

    def single_run() -> int:
        return baseline_clean_dedup(files, doc_steps, minhash.threshold, minhash.num_perm)

    # The machine is shared: each side's time is the mean of two runs around the other's
    # (A B A), so a load that drifts during the bench weighs on both sides alike.
    ray_s, single_s, ds, kept_single = _bracketed(ray_run, single_run)
    n = len(files)
    result["kept_ray"], result["kept_single"] = ds.count(), kept_single
    result["seconds_ray_clean_dedup"] = round(ray_s, 2)
    result["seconds_single_clean_dedup"] = round(single_s, 2)
    result["ray_clean_dedup_docs_per_s_per_core"] = round(n / ray_s / args.cpus, 1)
    result["single_clean_dedup_docs_per_s_per_core"] = round(n / single_s, 1)
    result["clean_dedup_per_core_ratio"] = round(single_s / (ray_s * args.cpus), 2)
    return ds


def embed_race(
    chunks: list[str], work: Path, cfg: Any, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    """The embed step (its own actor pool per run) against plain encode, A B A on all the
    chunks; then both once on the first --embed-small chunks, so the difference of the two
    sizes gives each side's throughput without its fixed start-up cost."""
    import ray
    import torch

    from pipelines.documents.config import EmbedConfig
    from pipelines.documents.embed import Embed
    from refinery.embedding import load_embedder

    torch.set_num_threads(args.cpus)
    model = load_embedder(cfg.runtime.embedding)
    model.encode(chunks[:8], batch_size=32)
    per_actor = args.cpus / args.embed_actors
    embed = Embed(EmbedConfig(actors=args.embed_actors, cpus_per_actor=per_actor))

    def plain(texts: list[str]) -> Callable[[], Any]:
        return lambda: model.encode(texts, batch_size=32, normalize_embeddings=True)

    def pool(texts: list[str]) -> Callable[[], Any]:
        ds = ray.data.from_items([{"text": c} for c in texts]).materialize()
        return lambda: embed.apply(ds, _context(cfg, work))

    # Warm caches and imports; every run still starts its own actor pool (processes, model
    # load), which the timed runs count, as the pipeline's embed step pays it.
    pool(chunks[:8])()
    plain_s, ray_s, _, _ = _bracketed(plain(chunks), pool(chunks))
    small = chunks[: args.embed_small]
    plain_small_s, ray_small_s, _, _ = _bracketed(plain(small), pool(small))
    n, m = len(chunks), len(small)
    result["embed_chunks"], result["embed_small"] = n, m
    result["embed_actors"] = args.embed_actors
    result["seconds_ray_embed"], result["seconds_plain_encode"] = round(ray_s, 2), round(plain_s, 2)
    result["ray_embed_chunks_per_s"] = round(n / ray_s, 1)
    result["plain_encode_chunks_per_s"] = round(n / plain_s, 1)
    result["ray_embed_start_s"] = round(ray_small_s - m * (ray_s - ray_small_s) / (n - m), 2)
    result["ray_embed_steady_chunks_per_s"] = round((n - m) / (ray_s - ray_small_s), 1)
    result["plain_encode_steady_chunks_per_s"] = round((n - m) / (plain_s - plain_small_s), 1)
    result["embed_ratio"] = round(plain_s / ray_s, 2)
    result["embed_steady_ratio"] = round(
        result["ray_embed_steady_chunks_per_s"] / result["plain_encode_steady_chunks_per_s"], 2
    )


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


def _table(r: dict[str, Any]) -> None:
    print(f"{r['docs']} documents ({r['pages']} pages + edited copies), {r['cpus']} cores")
    print(f"{'what':44} {'seconds':>8} {'rate':>9}  unit")
    rows = []
    if "kept_ray" in r:
        print(f"kept: Ray {r['kept_ray']}, single process {r['kept_single']}")
        rows += [
            ("clean+dedup, Ray Data pipeline", r["seconds_ray_clean_dedup"],
             r["ray_clean_dedup_docs_per_s_per_core"], f"docs/s/core ({r['cpus']} cores)"),
            ("clean+dedup, 1 process + MinHashLSH", r["seconds_single_clean_dedup"],
             r["single_clean_dedup_docs_per_s_per_core"], "docs/s/core (1 core)"),
        ]  # fmt: skip
    if "embed_chunks" in r:
        rows += [
            (f"embed {r['embed_chunks']} chunks, Ray actor pool", r["seconds_ray_embed"],
             r["ray_embed_chunks_per_s"], "chunks/s"),
            (f"embed {r['embed_chunks']} chunks, plain encode", r["seconds_plain_encode"],
             r["plain_encode_chunks_per_s"], "chunks/s"),
            ("embed without start-up, Ray actor pool", None,
             r["ray_embed_steady_chunks_per_s"], "chunks/s"),
            ("embed without start-up, plain encode", None,
             r["plain_encode_steady_chunks_per_s"], "chunks/s"),
        ]  # fmt: skip
    for name, seconds, rate, unit in rows:
        shown = f"{seconds:>8.1f}" if seconds is not None else f"{'':>8}"
        print(f"{name:44} {shown} {rate:>9}  {unit}")
