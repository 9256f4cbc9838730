"""`refinery bench index`: vectorindex side by side with FAISS, hnswlib and NumPy in one run.

Flat: exact search on random data at several batch sizes (nq) and thread counts, against
faiss.IndexFlatL2 and the seed's NumPy baseline (per query, a broadcast distance over the whole
matrix and argpartition). HNSW: recall@k, QPS and build time against hnswlib on all-MiniLM-L6-v2
embeddings of the Python documentation (cached on disk; encoding is the slow part). Memory per
vector, float32 against int8. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUICK = {"flat": "20000x768,100000x384", "nq": "1,16,64", "hnsw_n": 20000, "hnsw_queries": 200}
CHUNK = 5000  # embeddings are cached in files of this many vectors


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
    parser.add_argument("--data", choices=["minilm", "random"], help="HNSW vectors")
    parser.add_argument("--ef", default="16,32,64,128,256", help="ef_search values")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
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
    if "hnsw" in parts or "memory" in parts:
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
    import hnswlib

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

    def build_hnswlib():
        index = hnswlib.Index(space="cosine", dim=d)
        index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction)
        index.add_items(xb, num_threads=threads)

        def search(ef: int, thr: int):
            index.set_ef(ef)
            return index.knn_query(xq, args.k, num_threads=thr)[0]

        return search

    builders = {
        "vectorindex": build_vi,
        "vectorindex_int8": lambda: build_vi(quantize="int8"),
        "hnswlib": build_hnswlib,
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


def bench_memory(xb, args: argparse.Namespace) -> dict[str, float]:
    import vectorindex as vi

    n, d = xb.shape
    sub = xb[: min(n, 50_000)]
    out = {}
    for name, make in {
        "flat_float32": lambda: vi.IndexFlat(d, "cosine"),
        "flat_int8": lambda: vi.IndexFlat(d, "cosine", quantize="int8", keep_float=False),
        "hnsw_float32": lambda: vi.IndexHNSW(d, "cosine", M=args.M, ef_construction=40),
        "hnsw_int8": lambda: vi.IndexHNSW(
            d, "cosine", M=args.M, ef_construction=40, quantize="int8", keep_float=False
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
