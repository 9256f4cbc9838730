"""`refinery bench reindex`: an incremental reindex against a full one, on one corpus with a
share of its documents changed.

The corpus is the Python documentation (`scripts/python-docs.sh DIR`, `--docs DIR`), or
generated text without it. A first reindex (full: there is no champion yet) builds the champion
and warms Ray; then `--changed` of the documents (at least one) get a paragraph inserted at the
top, which moves every chunk of the document (chunk ids are character offsets), so each
changed document is embedded whole. On that corpus, against that champion, the incremental
reindex and a full one (`reindex.full`) run as `refinery run reindex` runs them (the harness,
MLflow, validation, registration), timed A B A: the incremental figure is the mean of the runs
on both sides of the full one, so a load that drifts on a shared machine weighs on both.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", default=None, help="folder made by scripts/python-docs.sh")
    parser.add_argument("--work", default="/tmp/refinery-bench-reindex", help="scratch folder")
    parser.add_argument("--changed", type=float, default=0.01, help="share of documents edited")
    parser.add_argument("--pages", type=int, default=None, help="use the first N pages only")
    parser.add_argument(
        "--generated", type=int, default=500, help="documents generated when there is no --docs"
    )
    parser.add_argument("--cpus", type=int, default=2, help="cores for Ray and the embed actor")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import ray

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    source = corpus_from(args, corpus)
    if source is None:
        return 2
    # A Ray of its own: one already running on this machine would be joined and share its CPUs.
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False)
    result: dict[str, Any] = {"bench": "reindex", "corpus": source, "cpus": args.cpus}
    try:
        champion = _run(work, corpus, args.cpus, "champion")
        result["champion"] = champion
        result["documents"] = champion["counts"]["documents"]
        edited = edit(corpus, args.changed, args.seed)
        result["changed_documents"] = len(edited)
        extra = [f"reindex.champion={champion['snapshot']}"]
        runs = [_run(work, corpus, args.cpus, name, *extra, *more) for name, more in (
            ("incremental-1", []), ("full", ["reindex.full=true"]), ("incremental-2", []),
        )]  # fmt: skip
    finally:
        ray.shutdown()
    first, full, second = runs
    result["incremental"] = [first, second]
    result["full"] = full
    result["incremental_seconds"] = round((first["seconds"] + second["seconds"]) / 2, 2)
    result["full_seconds"] = full["seconds"]
    result["ratio"] = round(result["incremental_seconds"] / full["seconds"], 3)
    _table(result)
    print(json.dumps(result))
    return 0


def corpus_from(args: argparse.Namespace, out: Path) -> str | None:
    """Writes the corpus under `out`; returns what it is, None when --docs has no pages."""
    out.mkdir(parents=True)
    if args.docs:
        root = Path(args.docs)
        pages = sorted(root.rglob("*.html"))[: args.pages]
        if not pages:
            print(f"no HTML under {args.docs}: run scripts/python-docs.sh {args.docs}")
            return None
        for page in pages:
            name = "-".join(page.relative_to(root).parts)
            shutil.copyfile(page, out / name)
        return f"python docs: {len(pages)} HTML pages"
    rng = random.Random(args.seed)
    words = _vocabulary()
    for i in range(args.generated):
        paragraphs = [" ".join(rng.choices(words, k=rng.randint(60, 160))) + "."
                      for _ in range(rng.randint(2, 8))]  # fmt: skip
        (out / f"doc-{i:05d}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return f"generated: {args.generated} text documents"


def _vocabulary() -> list[str]:
    """English words from the docstrings of a few standard library modules."""
    import collections
    import heapq
    import unittest

    text = " ".join((m.__doc__ or "") for m in (argparse, collections, heapq, json, unittest))
    return sorted(set(re.findall(r"\b[a-z]{3,12}\b", text)))


def edit(corpus: Path, share: float, seed: int) -> list[str]:
    """A paragraph inserted at the top of `share` of the documents (at least one)."""
    files = sorted(p for p in corpus.iterdir() if p.is_file())
    chosen = random.Random(seed).sample(files, max(1, math.ceil(len(files) * share)))
    note = "This page was revised: the examples below were checked against the new release."
    for path in chosen:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".html" and "<body" in text:
            at = text.index(">", text.index("<body")) + 1
            text = f"{text[:at]}<p>{note}</p>{text[at:]}"
        else:
            text = f"{note}\n\n{text}"
        path.write_text(text, encoding="utf-8")
    return [p.name for p in chosen]


def _run(work: Path, corpus: Path, cpus: int, name: str, *overrides: str) -> dict[str, Any]:
    """One `refinery run reindex` through the harness; its seconds, counts and step times."""
    from jobs.batch import BATCH_JOBS, load_batch_config, run_batch_job

    job = BATCH_JOBS["reindex"]
    cfg = load_batch_config(
        job,
        None,
        overrides=[
            f"input={corpus}",
            f"output={work / 'versions'}",
            f"runtime.storage.root={work / 'state'}",
            "runtime.tracking.experiment=bench-reindex",
            "reindex.registry.name=bench-reindex",
            *overrides,
        ],
    )
    # One actor with every core: the full run's embedding as fast as this machine allows.
    embed = next(s for s in cfg.steps if s.step == "embed")
    embed.cpus_per_actor = float(cpus)
    t0 = time.perf_counter()
    stats = run_batch_job(job, cfg)
    seconds = time.perf_counter() - t0
    report = stats.extra["reindex"]
    return {
        "run": name,
        "seconds": round(seconds, 2),
        "mode": report["mode"],
        "counts": report["counts"],
        "snapshot": report["snapshot"],
        "steps": {k: round(v.seconds, 2) for k, v in stats.steps.items()},
    }


def _table(r: dict[str, Any]) -> None:
    print(f"{r['corpus']}, {r['documents']} documents kept, {r['changed_documents']} changed, "
          f"{r['cpus']} cores")  # fmt: skip
    print(f"{'run':16} {'seconds':>8} {'chunks':>7} {'reused':>7} {'embedded':>9} {'deleted':>8}")
    for run in [r["champion"], r["incremental"][0], r["full"], r["incremental"][1]]:
        c = run["counts"]
        print(f"{run['run']:16} {run['seconds']:>8.1f} {c['total']:>7} {c['reused']:>7} "
              f"{c['embedded']:>9} {c['deleted']:>8}")  # fmt: skip
    incremental, full = r["incremental_seconds"], r["full_seconds"]
    print(f"incremental (mean of 2) {incremental:.1f} s, full {full:.1f} s: ratio {r['ratio']:.3f}")
