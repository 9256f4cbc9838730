"""`refinery bench logs`: LogStore against DuckDB and Polars on the seed query (filter by
model + latency, group by route, 6 metrics), over several noisy variants of generated logs.

Each variant (pipelines/logs/generate.py VARIANTS: clean, 0.1% and 1% malformed lines,
optional and nested extra fields, float vs integer latencies, escaped and non-ASCII strings,
CRLF endings, and all of them at once) is timed two ways per contender: file -> answer (parse
the JSONL, then query) and the query alone on data already loaded. Contenders are timed round
by round (A B C A B C ...), best round kept: the machine's speed drifts over minutes.

How each reads the malformed lines: LogStore quarantines and counts them (the bench checks
the count against the lines the generator broke); DuckDB reads with `ignore_errors=true` (a
bad line becomes a row of NULLs, dropped by the query's WHERE); Polars raises on them even
with ignore_errors, so it reads a copy with the bad lines removed beforehand, untimed (which
flatters it). Both peers are given the seed query's columns and types, so neither infers a
schema nor builds the extra fields; so is LogStore for file -> answer (`columns=` from
`query_columns`: every line still validated, the quarantine the same). The store queried on
loaded data has every field, extras included.

Answers must agree (counts, sums and max exactly, averages to 1e-9, p95 within 1%). Prints a
table per size, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL, MIN_LATENCY = "gpt-4.1", 200.0
METRICS = {
    "count": "count",
    "avg_latency": "avg(latency_ms)",
    "p95_latency": "p95(latency_ms)",
    "max_latency": "max(latency_ms)",
    "tokens_out": "sum(tokens_output)",
    "error_rate": "error_rate",
}
COLUMNS = {
    "ts": "VARCHAR",
    "model": "VARCHAR",
    "latency_ms": "DOUBLE",
    "tokens_input": "BIGINT",
    "tokens_output": "BIGINT",
    "route": "VARCHAR",
    "status": "VARCHAR",
}
DUCK_QUERY = (
    "SELECT route, count(*), avg(latency_ms), quantile_disc(latency_ms, 0.95), max(latency_ms), "
    "sum(tokens_output), avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) FROM {source} "
    f"WHERE model = '{MODEL}' AND latency_ms >= {MIN_LATENCY} GROUP BY route ORDER BY route"
)
PEERS = ("duckdb", "polars")
# A query on loaded data takes milliseconds, where one scheduler hiccup on a shared machine
# decides a best of a few rounds: every side gets this many.
QUERY_ROUNDS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants",
        default="all",
        help="comma-separated noisy variants (clean, bad0.1, bad1, nested, float, int, "
        "unicode, crlf, mixed) or all",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per variant")
    parser.add_argument("--files", type=int, default=1, help="files per variant")
    parser.add_argument(
        "--big", action="store_true", help="also run --big-rows rows over --big-files files"
    )
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--big-files", type=int, default=32)
    parser.add_argument(
        "--big-variants", default="bad0.1,mixed", help="the variants of the --big run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per timing")
    parser.add_argument("--big-repeat", type=int, default=2, help="rounds of the --big timings")
    parser.add_argument("--data", default=".refinery/bench/logs", help="generated data cache")
    parser.add_argument(
        "--ray", action="store_true", help="also time the Ray engine's file -> answer"
    )
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the bench's local Ray")


def main(args: argparse.Namespace) -> int:
    from pipelines.logs.generate import VARIANTS

    def chosen(text: str) -> list[str]:
        names = list(VARIANTS) if text == "all" else [v.strip() for v in text.split(",")]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
        return names

    runs = [(args.rows, args.files, args.repeat, chosen(args.variants))]
    if args.big:
        runs.append((args.big_rows, args.big_files, args.big_repeat, chosen(args.big_variants)))
    if args.ray:
        import ray
        import ray.data

        # A cluster of its own, not one another process on the machine started.
        ray.init(
            address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False
        )
        # Ray Data's progress lines would bury the table.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        reports = [
            run_variant(name, rows, files, repeat, args)
            for rows, files, repeat, names in runs
            for name in names
        ]
    finally:
        if args.ray:
            ray.shutdown()
    print_table(reports)
    print(json.dumps({"bench": "logs", "variants": reports}))
    return 0 if all(r["agree"] and r["quarantine_exact"] for r in reports) else 1


def run_variant(
    name: str, rows: int, files: int, repeat: int, args: argparse.Namespace
) -> dict[str, Any]:
    raw, clean, broken = prepare_data(Path(args.data), name, rows, files)
    file_fns: dict[str, Callable[[], Any]] = {
        "ours": lambda: logstore_answer(raw, "arrow"),
        "duckdb": lambda: duckdb_file(raw),
        "polars": lambda: polars_file(clean),
    }
    if args.ray:
        logstore_answer(raw, "ray")  # warm-up: worker start-up is not the engine's speed
        file_fns["ray"] = lambda: logstore_answer(raw, "ray")
    file_times = interleaved(file_fns, repeat)
    store = logstore(raw, "arrow")
    states = {"ours": store, "duckdb": duckdb_load(raw), "polars": polars_load(clean)}
    queries = {"ours": seed_query, "duckdb": duckdb_query, "polars": polars_query}
    query_times = interleaved(
        {n: (lambda q=q, s=states[n]: q(s)) for n, q in queries.items()},
        max(repeat, QUERY_ROUNDS),
    )
    answers = {n: r for n, (_, _, r) in file_times.items()}
    answers.update({f"{n} (loaded)": r for n, (_, _, r) in query_times.items()})
    agree = check_agreement(answers)
    quarantined = len(store.quarantine)
    del states, store
    report = {
        "variant": name,
        "rows": rows,
        "files": files,
        "agree": agree,
        "quarantined": quarantined,
        "broken_lines": broken,
        "quarantine_exact": quarantined == broken,
        "file_s": {n: wall for n, (wall, _, _) in file_times.items()},
        "file_cpu_s": {n: cpu for n, (_, cpu, _) in file_times.items()},
        "query_s": {n: wall for n, (wall, _, _) in query_times.items()},
        "query_cpu_s": {n: cpu for n, (_, cpu, _) in query_times.items()},
    }
    for kind in ("file_s", "file_cpu_s", "query_s", "query_cpu_s"):
        times = report[kind]
        report[kind.replace("_s", "_ratio")] = round(
            times["ours"] / min(times[p] for p in PEERS), 3
        )
    print(
        f"  {name:<8} {rows:>11,} rows  file: ours {ms(report['file_s']['ours'])} "
        f"duckdb {ms(report['file_s']['duckdb'])} polars {ms(report['file_s']['polars'])} "
        f"-> {report['file_ratio']:.2f}x  query: {report['query_ratio']:.2f}x  "
        f"agree {agree}, quarantined {quarantined:,} of {broken:,} broken",
        flush=True,
    )
    return report


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int
) -> dict[str, tuple[float, float, Any]]:
    """name -> (best wall seconds, best process CPU seconds, last result) of fn, timed
    `rounds` times, one round of all at a time. CPU time counts every thread of the
    process (DuckDB's and Polars' too) and moves less than wall time on a shared machine."""
    best = {name: (math.inf, math.inf, None) for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu), result)
    return best


def prepare_data(root: Path, name: str, rows: int, files: int) -> tuple[list[str], list[str], int]:
    """The variant's generated logs (cached between runs), the copy without broken lines that
    Polars reads, and how many lines were broken."""
    from pipelines.logs.generate import VARIANTS, write_logs

    base = root / "variants" / f"{name}-{rows}x{files}"
    raw_dir, clean_dir, done = base / "raw", base / "clean", base / "done.json"
    if not done.exists():
        print(f"generating {name}: {rows:,} rows over {files} files under {raw_dir} ...")
        paths = write_logs(raw_dir, rows, files=files, seed=0, noise=VARIANTS[name])
        clean_dir.mkdir(parents=True, exist_ok=True)
        broken = 0
        for path in paths:
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
            kept = [line for line in lines[:-1] if valid(line)]
            broken += len(lines) - 1 - len(kept)
            (clean_dir / Path(path).name).write_bytes(b"".join(line + b"\n" for line in kept))
        done.write_text(json.dumps({"broken": broken}))
    broken = json.loads(done.read_text())["broken"]
    raws = sorted(map(str, raw_dir.glob("*.jsonl")))
    return raws, sorted(map(str, clean_dir.glob("*.jsonl"))), broken


def valid(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("latency_ms"), int | float)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


# --- DuckDB -------------------------------------------------------------------------------
def _duck_source(paths: list[str]) -> str:
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    return f"read_json({paths}, columns={columns}, format='newline_delimited', ignore_errors=true)"


def duckdb_file(paths: list[str]) -> list[tuple]:
    import duckdb

    return duckdb.connect().execute(DUCK_QUERY.format(source=_duck_source(paths))).fetchall()


def duckdb_load(paths: list[str]):
    import duckdb

    con = duckdb.connect()
    source = _duck_source(paths)
    con.execute(f"CREATE TABLE logs AS SELECT * FROM {source} WHERE latency_ms IS NOT NULL")
    return con


def duckdb_query(con) -> list[tuple]:
    return con.execute(DUCK_QUERY.format(source="logs")).fetchall()


# --- Polars -------------------------------------------------------------------------------
def polars_load(paths: list[str]):
    import polars as pl

    types = {"VARCHAR": pl.String, "DOUBLE": pl.Float64, "BIGINT": pl.Int64}
    schema = {name: types[kind] for name, kind in COLUMNS.items()}
    return pl.concat([pl.read_ndjson(p, schema=schema) for p in paths])


def polars_query(df) -> list[tuple]:
    import polars as pl

    result = (
        df.lazy()
        .filter((pl.col("model") == MODEL) & (pl.col("latency_ms") >= MIN_LATENCY))
        .group_by("route")
        .agg(
            pl.len().alias("count"),
            pl.col("latency_ms").mean().alias("avg"),
            pl.col("latency_ms").quantile(0.95, "higher").alias("p95"),
            pl.col("latency_ms").max().alias("max"),
            pl.col("tokens_output").sum().alias("tokens"),
            (pl.col("status") != "ok").mean().alias("error_rate"),
        )
        .sort("route")
        .collect()
    )
    return result.rows()


def polars_file(paths: list[str]) -> list[tuple]:
    return polars_query(polars_load(paths))


# --- LogStore -----------------------------------------------------------------------------
SEED_FILTERS = ({"model": MODEL, "min_latency_ms": MIN_LATENCY},)
SEED_BY = ("route",)


def logstore(paths: list[str], engine: str, columns: set[str] | None = None):
    from pipelines.logs import LogStore

    return LogStore.from_jsonl(paths, engine=engine, columns=columns)


def seed_query(store) -> list[tuple]:
    df = store.query()
    for conds in SEED_FILTERS:
        df = df.filter(**conds)
    answer = df.aggregate(by=list(SEED_BY), metrics=METRICS)
    # The cheapest rows out of a pandas frame, as .rows() is for Polars (itertuples: 0.4 ms).
    return [tuple(row) for row in answer.to_numpy(dtype=object).tolist()]


def logstore_answer(paths: list[str], engine: str) -> list[tuple]:
    from pipelines.logs import query_columns

    columns = query_columns(SEED_FILTERS, list(SEED_BY), METRICS)
    return seed_query(logstore(paths, engine, columns))


# --- report -------------------------------------------------------------------------------
def check_agreement(answers: dict[str, list[tuple]]) -> bool:
    """Counts, sums and max equal; averages to 1e-9; p95 within 1% of DuckDB's. Rows are
    compared by key: engines sort non-ASCII keys their own way."""
    ref = sorted(answers["duckdb"])
    for name, answer in answers.items():
        if len(answer) != len(ref):
            print(f"  !! {name}: {len(answer)} groups, DuckDB {len(ref)}")
            return False
        for mine, theirs in zip(sorted(answer), ref, strict=True):
            exact = mine[0] == theirs[0] and mine[1] == theirs[1] and mine[4:6] == theirs[4:6]
            close = all(math.isclose(mine[i], theirs[i], rel_tol=1e-9) for i in (2, 6))
            p95 = math.isclose(mine[3], theirs[3], rel_tol=0.01)
            if not (exact and close and p95):
                print(f"  !! {name} disagrees with DuckDB: {mine} vs {theirs}")
                return False
    return True


def print_table(reports: list[dict[str, Any]]) -> None:
    print(
        "\nseed query; file -> answer and query on loaded data, best round, ms; ratio: ours "
        "over the faster peer (wall, then process CPU)"
    )
    head = (
        f"{'variant':<8} {'rows':>11} | {'ours':>7} {'duckdb':>7} {'polars':>7} "
        f"{'ratio':>5} {'cpu':>5} | {'ours':>6} {'duckdb':>6} {'polars':>6} {'ratio':>5} "
        f"{'cpu':>5} | {'quarantined':>11} agree"
    )
    print(head)
    for r in reports:
        f, q = r["file_s"], r["query_s"]
        print(
            f"{r['variant']:<8} {r['rows']:>11,} | {f['ours'] * 1e3:>7.0f} "
            f"{f['duckdb'] * 1e3:>7.0f} {f['polars'] * 1e3:>7.0f} {r['file_ratio']:>5.2f} "
            f"{r['file_cpu_ratio']:>5.2f} | {q['ours'] * 1e3:>6.1f} {q['duckdb'] * 1e3:>6.1f} "
            f"{q['polars'] * 1e3:>6.1f} {r['query_ratio']:>5.2f} {r['query_cpu_ratio']:>5.2f} | "
            f"{r['quarantined']:>11,} {r['agree'] and r['quarantine_exact']}"
        )
        if "ray" in f:
            print(f"{'':<8} {'':>11} | Ray engine file -> answer {f['ray'] * 1e3:,.0f} ms")
