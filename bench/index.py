"""`refinery bench index`: vectorindex side by side with FAISS, hnswlib and NumPy in one run.

Flat: exact search on random data at several batch sizes (nq) and thread counts, against
faiss.IndexFlatL2 and the seed's NumPy baseline (per query, a broadcast distance over the whole
matrix and argpartition). HNSW: build time, and QPS at fixed recall@k levels, against hnswlib
on several kinds of data side by side (`--datasets`: generated feature-like and clustered
vectors, and all-MiniLM-L6-v2 embeddings of the Python documentation, cached on disk since
encoding is the slow part). Memory per vector, float32 against int8. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUICK = {
    "flat": "20000x768,100000x384",
    "nq": "1,16,64",
    "hnsw_n": 20000,
    "hnsw_queries": 200,
    "datasets": "feat96:20000,gmm128:20000,feat960:5000",
}
CHUNK = 5000  # embeddings are cached in files of this many vectors

# HNSW data sets: name -> (dimension, metric, default corpus size, what it stands for). The
# sizes are what a whole `--only hnsw` run on two cores affords (builds dominate); MiniLM's
# first run encodes its texts (minutes on CPU; the vectors are cached after it).
DATASETS: dict[str, tuple[int, str, int, str]] = {
    "feat96": (96, "l2", 100_000, "image-descriptor-like: correlated, heavy-tailed, >= 0"),
    "feat960": (960, "l2", 25_000, "GIST-like: 960 correlated non-negative features"),
    "gmm128": (128, "l2", 100_000, "Gaussian mixture on a 12-d subspace (low intrinsic dim)"),
    "minilm": (384, "cosine", 100_000, "all-MiniLM-L6-v2 sentence embeddings, unit length"),
    "unit96": (96, "cosine", 50_000, "feat96 centred and normalised to unit length"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, random HNSW data")
    parser.add_argument("--flat", default="100000x768,1000000x384", help="flat sizes, NxD,...")
    parser.add_argument("--nq", default="1,16,64,256", help="query batch sizes")
    parser.add_argument("--threads", default="1,2", help="thread counts")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs a cell; best is kept")
    parser.add_argument("--numpy-queries", type=int, default=4, help="queries timed for NumPy")
    parser.add_argument("--only", action="append", choices=["flat", "hnsw", "memory"])
    parser.add_argument("--hnsw-n", type=int, default=200_000, help="HNSW corpus size")
    parser.add_argument("--hnsw-queries", type=int, default=1000)
    parser.add_argument(
        "--data",
        choices=["minilm", "random"],
        help="one HNSW data set with the full ef table (instead of --datasets)",
    )
    parser.add_argument(
        "--datasets",
        default=",".join(f"{name}:{spec[2]}" for name, spec in DATASETS.items()),
        help="HNSW data sets side by side, NAME[:N],...; names: " + ", ".join(DATASETS),
    )
    parser.add_argument(
        "--recalls", default="0.95,0.99", help="recall@k levels at which QPS is compared"
    )
    parser.add_argument("--ef", default="16,32,64,128,256", help="ef_search values (--data)")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument(
        "--build-repeat", type=int, default=1, help="HNSW builds per library (best is kept)"
    )
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help="vectorindex set-ups timed against hnswlib (--datasets), of: " + ", ".join(SETUPS),
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--cache-dir", default=".refinery/bench/index", help="embedding cache")
    parser.add_argument(
        "--docs-dir",
        default=".refinery/python-docs",
        help="Python docs (made by scripts/python-docs.sh DIR when missing)",
    )
    parser.add_argument("--embed-only", action="store_true", help="fill the cache and stop")


def main(args: argparse.Namespace) -> int:
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == _default(key):
                setattr(args, key, value)
    data = args.data or ("random" if args.quick else "minilm")
    if args.embed_only:
        embeddings(args, args.hnsw_n + args.hnsw_queries)
        return 0
    parts = set(args.only or ["flat", "hnsw", "memory"])
    report: dict[str, Any] = {"bench": "index"}
    if "flat" in parts:
        report["flat"] = bench_flat(args)
    if args.data is None and ("hnsw" in parts or "memory" in parts):
        report["datasets"] = bench_datasets(args, parts)
    elif "hnsw" in parts or "memory" in parts:
        xb, xq = hnsw_data(args, data)
        report["data"] = {"kind": data, "n": len(xb), "d": xb.shape[1], "queries": len(xq)}
        if "memory" in parts:
            report["memory"] = bench_memory(xb, args)
        if "hnsw" in parts:
            report["hnsw"] = bench_hnsw(xb, xq, args)
    print(json.dumps(report))
    return 0


def _default(key: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default(key)


def best_time(fn: Callable[[], object], repeat: int, budget_s: float = 3.0) -> float:
    """Best of up to `repeat` timed runs after a warm-up (caches, page-in, threads); slow cells
    get fewer runs so the whole benchmark stays within minutes on a shared machine."""
    t = time.perf_counter()
    fn()
    warm = time.perf_counter() - t
    times = [warm]
    for _ in range(max(1, min(repeat, int(budget_s / max(warm, 1e-9))))):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# --- flat ---------------------------------------------------------------------------------


def numpy_seed_search(xb, xq, k: int):
    """The seed's baseline: one broadcast distance over the matrix per query, argpartition."""
    import numpy as np

    out = np.empty((len(xq), k), np.int64)
    for i, q in enumerate(xq):
        dist = ((xb - q) ** 2).sum(axis=1)
        part = np.argpartition(dist, k)[:k]
        out[i] = part[np.argsort(dist[part])]
    return out


def bench_flat(args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"flat search, k={args.k}, best of {args.repeat}; ms per batch (QPS)")
    print(
        f"{'n x d':>14} {'thr':>3} {'nq':>4} {'vectorindex':>18} {'faiss':>18} "
        f"{'numpy':>18} {'vs faiss':>8} {'vs numpy':>8} {'GB/s':>6}"
    )
    rows = []
    for size in args.flat.split(","):
        n, d = (int(x) for x in size.split("x"))
        rows += bench_flat_size(n, d, args)
    return rows


def bench_flat_size(n: int, d: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    import faiss
    import numpy as np

    import vectorindex as vi

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, d), dtype=np.float32)
    xq_all = rng.standard_normal((max(ints(args.nq)), d), dtype=np.float32)
    ours = vi.IndexFlatL2(d)
    ours.add(xb)
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    # Read bandwidth of one thread (a SIMD max over the matrix), the floor for nq=1 scans.
    bandwidth = n * d * 4 / best_time(xb.max, args.repeat)
    print(f"{f'{n}x{d}':>14} read bandwidth {bandwidth / 1e9:.1f} GB/s (numpy max, 1 thread)")
    # NumPy is single-threaded here and linear in nq: time a few queries, scale up.
    nq_np = min(args.numpy_queries, len(xq_all))
    np_per_query = best_time(lambda: numpy_seed_search(xb, xq_all[:nq_np], args.k), 1) / nq_np
    rows = []
    for threads in ints(args.threads):
        vi.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        for nq in ints(args.nq):
            xq = xq_all[:nq]
            t_vi = best_time(lambda xq=xq: ours.search(xq, args.k), args.repeat)
            t_fa = best_time(lambda xq=xq: ref.search(xq, args.k), args.repeat)
            t_np = np_per_query * nq
            row = {
                "n": n,
                "d": d,
                "threads": threads,
                "nq": nq,
                "vectorindex_s": t_vi,
                "faiss_s": t_fa,
                "numpy_s": t_np,
                "speedup_vs_faiss": t_fa / t_vi,
                "speedup_vs_numpy": t_np / t_vi,
                "scan_gb_per_s": n * d * 4 / t_vi / 1e9,
                "read_bandwidth_gb_per_s": bandwidth / 1e9,
            }
            rows.append(row)
            print(
                f"{f'{n}x{d}':>14} {threads:>3} {nq:>4} {_cell(t_vi, nq):>18} "
                f"{_cell(t_fa, nq):>18} {_cell(t_np, nq):>18} {t_fa / t_vi:>7.2f}x "
                f"{t_np / t_vi:>7.1f}x {row['scan_gb_per_s']:>6.1f}"
            )
    return rows


def _cell(seconds: float, nq: int) -> str:
    return f"{seconds * 1e3:.2f} ({nq / seconds:.0f})"


# --- data for HNSW ------------------------------------------------------------------------


def hnsw_data(args: argparse.Namespace, kind: str):
    import numpy as np

    total = args.hnsw_n + args.hnsw_queries
    if kind == "minilm":
        vectors = embeddings(args, total)
    else:
        # Clustered like real embeddings, unit length like MiniLM's.
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((200, 384), dtype=np.float32)
        vectors = centres[rng.integers(0, 200, total)] + rng.standard_normal(
            (total, 384), dtype=np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Queries are a random sample of the corpus (held out of the index), not its tail: the
    # tail is all docstrings once the docs run out.
    order = np.random.default_rng(1).permutation(total)
    queries, base = order[: args.hnsw_queries], np.sort(order[args.hnsw_queries :])
    return np.ascontiguousarray(vectors[base]), np.ascontiguousarray(vectors[queries])


def doc_texts(docs_dir: Path) -> list[str]:
    """Lines and sentences of the Python docs' HTML, deduplicated, in a fixed shuffled order."""
    import random
    import subprocess

    if not (docs_dir / "html").is_dir():
        script = Path(__file__).resolve().parents[1] / "scripts" / "python-docs.sh"
        subprocess.run(["bash", str(script), str(docs_dir)], check=True)
    texts: dict[str, None] = {}
    for page in sorted((docs_dir / "html").rglob("*.html")):
        raw = page.read_text(errors="ignore")
        raw = re.sub(r"(?s)<(script|style)[^>]*>.*?</\1>", " ", raw)
        for line in html.unescape(re.sub(r"<[^>]+>", "\n", raw)).split("\n"):
            _add_sentences(" ".join(line.split()), texts)
    order = list(texts)
    random.Random(0).shuffle(order)
    return order


def _add_sentences(line: str, texts: dict[str, None]) -> None:
    """The line and each of its sentences, 20 characters or more."""
    if len(line) < 20:
        return
    texts[line] = None
    for sentence in re.split(r"(?<=[.!?])\s+", line):
        if len(sentence) >= 20:
            texts[sentence] = None


def package_texts(exclude: set[str]) -> list[str]:
    """Paragraphs and sentences of the docstrings (triple-quoted strings) of the installed
    Python packages, none in `exclude`, in a fixed shuffled order."""
    import random
    import sysconfig

    texts: dict[str, None] = {}
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        for doc in re.findall(r'(?s)"""(.*?)"""', path.read_text(errors="ignore")):
            for para in re.split(r"\n\s*\n", doc):
                _add_sentences(" ".join(para.split())[:1000], texts)
    pool = sorted(set(texts) - exclude)
    random.Random(0).shuffle(pool)
    return pool


def corpus_texts(args: argparse.Namespace, count: int, cache: Path) -> list[str]:
    """The docs' texts, then docstrings of installed packages for whatever more `count` needs.
    The docstrings chosen are cached with the vectors: installing a package later must not
    change which text a cached vector stands for."""
    texts = doc_texts(Path(args.docs_dir))
    extra_path = cache / "package_texts.json"
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else []
    if count > len(texts) + len(extra):
        known = set(texts) | set(extra)
        extra += [t for t in package_texts(known) if t not in known][
            : count - len(texts) - len(extra)
        ]
        extra_path.write_text(json.dumps(extra))
    if count > len(texts) + len(extra):
        raise SystemExit(f"docs and docstrings give {len(texts) + len(extra)} texts, not {count}")
    return texts + extra


def embeddings(args: argparse.Namespace, count: int):
    """The first `count` MiniLM vectors of the corpus, encoding only uncached chunks."""
    import numpy as np

    cache = Path(args.cache_dir) / "minilm"
    cache.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts(args, count, cache)
    model = None
    chunks = []
    for start in range(0, count, CHUNK):
        path = cache / f"{start // CHUNK:05d}.npy"
        part = texts[start : start + CHUNK]
        # A chunk cached when the corpus ended inside it is short: encode it again in full.
        if not path.exists() or len(np.load(path, mmap_mode="r")) != len(part):
            if model is None:
                from refinery.config import EmbeddingConfig
                from refinery.embedding import load_embedder

                model = load_embedder(EmbeddingConfig())
            t = time.perf_counter()
            np.save(path, model.encode(part, batch_size=128).astype(np.float32))
            print(f"encoded texts {start}..{start + len(part)} in {time.perf_counter() - t:.0f} s")
        chunks.append(np.load(path))
    return np.concatenate(chunks)[:count]


# --- HNSW and memory ----------------------------------------------------------------------


def recall_at(found, truth) -> float:
    import numpy as np

    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def bench_hnsw(xb, xq, args: argparse.Namespace) -> dict[str, Any]:

    import vectorindex as vi

    n, d = xb.shape
    threads = max(ints(args.threads))
    vi.set_num_threads(threads)
    exact = vi.IndexFlat(d, "cosine")
    exact.add(xb)
    truth = exact.search(xq, args.k)[1]
    del exact

    def build_vi(**kw):
        index = vi.IndexHNSW(d, "cosine", M=args.M, ef_construction=args.ef_construction, **kw)
        index.add(xb)

        def search(ef: int, thr: int):
            vi.set_num_threads(thr)
            return index.search(xq, args.k, ef_search=ef)[1]

        return search

    builders = {
        "vectorindex": build_vi,
        "vectorindex_int8": lambda: build_vi(quantize="int8"),
        "hnswlib": lambda: build_hnswlib(xb, xq, "cosine", threads, args)[0],
    }
    searchers, build_s = {}, {}
    for name, build in builders.items():
        t = time.perf_counter()
        searchers[name] = build()
        build_s[name] = time.perf_counter() - t
    print(
        f"\nHNSW n={n} d={d} M={args.M} ef_construction={args.ef_construction}, build with "
        f"{threads} threads: " + ", ".join(f"{k} {v:.1f} s" for k, v in build_s.items())
    )
    print(f"{'thr':>3} {'ef':>4} " + " ".join(f"{name:>24}" for name in searchers))
    rows = []
    for thr in ints(args.threads):
        for ef in ints(args.ef):
            row: dict[str, Any] = {"threads": thr, "ef": ef}
            cells = []
            for name, search in searchers.items():
                elapsed = best_time(lambda s=search, ef=ef, thr=thr: s(ef, thr), args.repeat)
                row[f"recall_{name}"] = recall_at(search(ef, thr), truth)
                row[f"qps_{name}"] = len(xq) / elapsed
                cells.append(f"R {row[f'recall_{name}']:.4f} {row[f'qps_{name}']:>8.0f} qps")
            rows.append(row)
            print(f"{thr:>3} {ef:>4} " + " ".join(f"{c:>24}" for c in cells))
    summary: dict[str, Any] = {"n": n, "build_threads": threads, "build_s": build_s, "rows": rows}
    # Each library's best QPS among settings reaching the target recall, by thread count.
    summary["qps_at_target_recall"] = {
        name: {
            thr: max(
                (
                    r[f"qps_{name}"]
                    for r in rows
                    if r["threads"] == thr and r[f"recall_{name}"] >= args.target_recall
                ),
                default=None,
            )
            for thr in ints(args.threads)
        }
        for name in searchers
    }
    print(f"QPS at recall >= {args.target_recall} by threads:", summary["qps_at_target_recall"])
    return summary


def build_hnswlib(xb, xq, metric: str, threads: int, args: argparse.Namespace):
    """An hnswlib index of xb; returns search(ef, threads) -> ids of xq's neighbours."""
    import hnswlib

    index = hnswlib.Index(space=metric, dim=xb.shape[1])
    index.init_index(max_elements=len(xb), M=args.M, ef_construction=args.ef_construction)
    index.add_items(xb, num_threads=threads)

    def search(ef: int, thr: int):
        index.set_ef(ef)
        return index.knn_query(xq, args.k, num_threads=thr)[0]

    return search, index.index_file_size() / len(xb)


def bench_memory(xb, args: argparse.Namespace, metric: str = "cosine") -> dict[str, float]:
    import vectorindex as vi

    n, d = xb.shape
    sub = xb[: min(n, 50_000)]
    out = {}
    for name, make in {
        "flat_float32": lambda: vi.IndexFlat(d, metric),
        "flat_int8": lambda: vi.IndexFlat(d, metric, quantize="int8", keep_float=False),
        "hnsw_float32": lambda: vi.IndexHNSW(d, metric, M=args.M, ef_construction=40),
        "hnsw_int8": lambda: vi.IndexHNSW(
            d, metric, M=args.M, ef_construction=40, quantize="int8", keep_float=False
        ),
    }.items():
        index = make()
        index.add(sub)
        out[name] = index.memory_usage() / len(sub)
    print(
        f"\nmemory per vector (d={d}): "
        + ", ".join(f"{k} {v:.0f} B" for k, v in out.items())
        + f"; int8/float32 flat {out['flat_int8'] / out['flat_float32']:.2f}x, "
        f"HNSW {out['hnsw_int8'] / out['hnsw_float32']:.2f}x"
    )
    out["flat_int8_ratio"] = out["flat_int8"] / out["flat_float32"]
    out["hnsw_int8_ratio"] = out["hnsw_int8"] / out["hnsw_float32"]
    return out


# --- HNSW across data sets ------------------------------------------------------------------


def synthetic(name: str, total: int):
    """`total` vectors of a generated data set (seeded: every run sees the same vectors)."""
    import numpy as np

    rng = np.random.default_rng(7)
    if name in ("feat96", "unit96"):
        # Descriptor-like: a 24-d latent mixture through a random map with a decaying spectrum,
        # rectified and raised to a power: sparse-ish, skewed, correlated coordinates.
        centres = rng.standard_normal((64, 24)) * 1.5
        z = centres[rng.integers(0, 64, total)] + rng.standard_normal((total, 24))
        w = rng.standard_normal((24, 96)) * (np.arange(1, 25) ** -0.5)[:, None]
        x = np.maximum(z @ w + 0.3 * rng.standard_normal((total, 96)), 0) ** 1.5 * 20
        if name == "unit96":
            x -= x.mean(axis=0)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
    elif name == "feat960":
        # GIST-like: 960 non-negative coordinates driven by a 64-d latent with a power-law
        # spectrum, so neighbouring coordinates move together.
        z = rng.standard_normal((total, 64)) * (np.arange(1, 65) ** -0.7)
        w = np.abs(rng.standard_normal((64, 960)))
        x = np.abs(z @ w + 0.05 * rng.standard_normal((total, 960)))
    elif name == "gmm128":
        # 200 Gaussian clusters on a random 12-d subspace of R^128, tiny noise off it.
        centres = rng.standard_normal((200, 12)) * 4
        z = centres[rng.integers(0, 200, total)] + rng.standard_normal((total, 12))
        x = z @ rng.standard_normal((12, 128)) + 0.05 * rng.standard_normal((total, 128))
    else:
        raise SystemExit(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return x.astype(np.float32)


def dataset(args: argparse.Namespace, name: str, n: int):
    """Corpus and held-out queries of one data set."""
    import numpy as np

    total = n + args.hnsw_queries
    vectors = embeddings(args, total) if name == "minilm" else synthetic(name, total)
    order = np.random.default_rng(1).permutation(total)
    queries, base = order[: args.hnsw_queries], np.sort(order[args.hnsw_queries :])
    return np.ascontiguousarray(vectors[base]), np.ascontiguousarray(vectors[queries])


def parse_datasets(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, size = item.partition(":")
        if name not in DATASETS:
            raise SystemExit(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
        out.append((name, int(size) if size else DATASETS[name][2]))
    return out


# The vectorindex set-ups timed against hnswlib. "vectorindex-int8" walks the graph on int8
# codes (a quarter of the bytes a distance reads) and re-ranks the ef candidates it found with
# the float rows it keeps as well, as FAISS's HNSW-SQ8 with a refine step does.
SETUPS: dict[str, dict[str, Any]] = {
    "vectorindex": {},
    "vectorindex-int8": {"quantize": "int8", "keep_float": True},
}

# Beam widths tried for recall; timing then runs only at those bracketing each recall level.
EF_GRID = [10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768]


def bench_datasets(args: argparse.Namespace, parts: set[str]) -> list[dict[str, Any]]:
    levels = [float(x) for x in args.recalls.split(",")]
    results = []
    for name, n in parse_datasets(args.datasets):
        xb, xq = dataset(args, name, n)
        d, metric = xb.shape[1], DATASETS[name][1]
        print(f"\n== {name}: n={len(xb)} d={d} {metric}, {DATASETS[name][3]}")
        result: dict[str, Any] = {"name": name, "n": len(xb), "d": d, "metric": metric}
        if "memory" in parts:
            result["memory"] = bench_memory(xb, args, metric)
        if "hnsw" in parts:
            result.update(compare_hnsw(xb, xq, metric, levels, args))
        results.append(result)
    if "hnsw" in parts:
        print_summary(results, levels, ints(args.threads))
    return results


def compare_hnsw(xb, xq, metric: str, levels: list[float], args) -> dict[str, Any]:
    """Build both indexes (interleaved if repeated), find each one's recall per ef, then time
    the efs bracketing each recall level with the two libraries interleaved, best of
    `--repeat` runs. QPS at a level is interpolated linearly in recall between the bracketing
    efs (the smallest ef's QPS when even that is above the level).

    Two clocks: wall time, and the CPU time of this process (queries per CPU-second; builds in
    CPU-seconds). On a machine shared with other jobs the wall clock mostly measures who else
    ran; the CPU clock counts only the work done, so it compares the libraries more steadily
    (it does not see threads that sit idle waiting for each other)."""

    import vectorindex as vi

    n, d = xb.shape
    threads = ints(args.threads)
    build_threads = max(threads)
    vi.set_num_threads(build_threads)
    exact = vi.IndexFlat(d, metric)
    exact.add(xb)
    truth = exact.search(xq, args.k)[1]
    del exact

    memory: dict[str, float] = {}

    def build_ours(name: str) -> Callable[[], Any]:
        def build():
            index = vi.IndexHNSW(
                d, metric, M=args.M, ef_construction=args.ef_construction, **SETUPS[name]
            )
            vi.set_num_threads(build_threads)
            index.add(xb)
            memory[name] = index.memory_usage() / n

            def search(ef: int, thr: int):
                # Re-rank the whole beam: a larger rerank would widen it past ef.
                rerank = max(1, ef // args.k)
                return index.search(xq, args.k, ef_search=ef, rerank=rerank, threads=thr)[1]

            return search

        return build

    def build_theirs():
        search, memory["hnswlib"] = build_hnswlib(xb, xq, metric, build_threads, args)
        return search

    ours = args.setups.split(",")
    unknown = sorted(set(ours) - set(SETUPS))
    if unknown:
        raise SystemExit(f"unknown set-up {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    libs = {name: build_ours(name) for name in ours} | {"hnswlib": build_theirs}
    searchers: dict[str, Any] = {}
    build_s = {clock: {name: float("inf") for name in libs} for clock in CLOCKS}
    for _ in range(max(1, args.build_repeat)):
        for name, build in libs.items():
            searchers.pop(name, None)
            t, c = time.perf_counter(), time.process_time()
            searchers[name] = build()
            spent = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
            for clock in CLOCKS:
                build_s[clock][name] = min(build_s[clock][name], spent[clock])
    build_ratio = {
        name: {c: build_s[c][name] / build_s[c]["hnswlib"] for c in CLOCKS} for name in ours
    }
    print(
        f"build ({build_threads} threads, M={args.M}, ef_construction={args.ef_construction}), "
        "wall (CPU): "
        + ", ".join(
            f"{k} {s:.1f} s ({build_s['cpu'][k]:.1f} s)" for k, s in build_s["wall"].items()
        )
    )
    print("bytes per vector: " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    # Recall per ef does not depend on the thread count; stop a little past the top level.
    recall: dict[str, dict[int, float]] = {}
    for name, search in searchers.items():
        recall[name] = {}
        for ef in EF_GRID:
            if ef < args.k:
                continue
            recall[name][ef] = recall_at(search(ef, build_threads), truth)
            if recall[name][ef] >= max(levels) + (1 - max(levels)) / 2:
                break
    print(
        "recall@k by ef: "
        + "; ".join(
            name + " " + " ".join(f"{ef}:{r:.3f}" for ef, r in by_ef.items())
            for name, by_ef in recall.items()
        )
    )
    timed = {name: sorted(_brackets(by_ef, levels)) for name, by_ef in recall.items()}
    # qps[clock][name][threads][ef]
    qps: dict[str, dict[str, dict[int, dict[int, float]]]] = {
        c: {name: {t: {} for t in threads} for name in searchers} for c in CLOCKS
    }
    for thr in threads:
        for _ in range(args.repeat):
            for name, search in searchers.items():
                for ef in timed[name]:
                    per_query = _time_per_query(functools.partial(search, ef, thr), len(xq))
                    for clock in CLOCKS:
                        cell = qps[clock][name][thr]
                        cell[ef] = max(cell.get(ef, 0.0), 1 / per_query[clock])
    at_level = {
        clock: {
            name: {
                thr: {lv: _qps_at(recall[name], qps[clock][name][thr], lv) for lv in levels}
                for thr in threads
            }
            for name in searchers
        }
        for clock in CLOCKS
    }
    for clock in CLOCKS:
        for thr in threads:
            for name in ours:
                cells = []
                for lv in levels:
                    mine = at_level[clock][name][thr][lv]
                    ref = at_level[clock]["hnswlib"][thr][lv]
                    ratio = f"{mine / ref:.2f}x" if mine and ref else "n/a"
                    cells.append(f"R{lv}: {_num(mine)} vs {_num(ref)} ({ratio})")
                print(f"QPS ({clock}) {thr} thread(s) {name}: " + "; ".join(cells))
    return {
        "memory_bytes_per_vector": memory,
        "build_s": build_s,
        "build_ratio": build_ratio,
        "recall_by_ef": recall,
        "qps_by_ef": qps,
        "qps_at_recall": at_level,
    }


CLOCKS = ("wall", "cpu")


def _time_per_query(run: Callable[[], object], nq: int, min_s: float = 0.2) -> dict[str, float]:
    """Wall and CPU seconds per query over as many passes as fill `min_s`: a pass of a fast
    setting takes a few milliseconds, short enough for one scheduler hiccup to decide it."""
    passes, t, c = 0, time.perf_counter(), time.process_time()
    while True:
        run()
        passes += 1
        elapsed = time.perf_counter() - t
        if elapsed >= min_s:
            return {
                "wall": elapsed / (passes * nq),
                "cpu": (time.process_time() - c) / (passes * nq),
            }


def _brackets(by_ef: dict[int, float], levels: list[float]) -> set[int]:
    """For each level, the smallest ef reaching it and the largest ef below it."""
    out = set()
    efs = sorted(by_ef)
    for lv in levels:
        above = [ef for ef in efs if by_ef[ef] >= lv]
        if above:
            out.add(above[0])
            below = [ef for ef in efs if ef < above[0]]
            if below:
                out.add(below[-1])
    return out


def _qps_at(recall: dict[int, float], qps: dict[int, float], level: float) -> float | None:
    efs = sorted(qps)
    hi = next((ef for ef in efs if recall[ef] >= level), None)
    if hi is None:
        return None
    lo = max((ef for ef in efs if ef < hi), default=None)
    if lo is None or recall[hi] == recall[lo]:
        return qps[hi]
    w = (level - recall[lo]) / (recall[hi] - recall[lo])
    return qps[lo] + w * (qps[hi] - qps[lo])


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def print_summary(results: list[dict[str, Any]], levels: list[float], threads: list[int]) -> None:
    cols = [f"R{lv} {t}t" for lv in levels for t in threads]
    for clock in CLOCKS:
        print(
            f"\nQPS ratio to hnswlib at recall@k ({clock} clock; higher is better), build time "
            "ratio (lower is better), memory ratio:"
        )
        print(
            f"{'data set':>10} {'n':>7} {'d':>4} {'set-up':>16} "
            + " ".join(f"{c:>10}" for c in cols)
            + "  build memory"
        )
        for r in results:
            for name, build_ratio in r["build_ratio"].items():
                cells = []
                for lv in levels:
                    for t in threads:
                        mine = r["qps_at_recall"][clock][name][t][lv]
                        ref = r["qps_at_recall"][clock]["hnswlib"][t][lv]
                        cells.append(f"{mine / ref:.2f}x" if mine and ref else "n/a")
                memory = r["memory_bytes_per_vector"]
                print(
                    f"{r['name']:>10} {r['n']:>7} {r['d']:>4} {name:>16} "
                    + " ".join(f"{c:>10}" for c in cells)
                    + f"  {build_ratio[clock]:.2f}x {memory[name] / memory['hnswlib']:.2f}x"
                )
