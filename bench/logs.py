"""`refinery bench logs`: LogStore (Arrow and Ray engines) against pure Python, DuckDB and
Polars on the seed query (filter by model + latency, group by route, 6 metrics).

Two timings per contender: file -> answer (parse the JSONL, then query) and the query alone
on data already loaded. Same generated logs for all (Zipf models/routes, lognormal
latencies, ~0.1% malformed lines); Polars raises on malformed lines, so it reads a clean copy
(bad lines removed beforehand, untimed). Then the cost of bad lines: the Arrow engine loads
the same logs clean and with --bad-rate of the lines broken, rounds interleaved. Prints
tables, then one JSON line with the ratios and that cost.
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
DUCK_COLUMNS = (
    "{'ts': 'VARCHAR', 'model': 'VARCHAR', 'latency_ms': 'DOUBLE', 'tokens_input': 'BIGINT', "
    "'tokens_output': 'BIGINT', 'route': 'VARCHAR', 'status': 'VARCHAR'}"
)
DUCK_QUERY = (
    "SELECT route, count(*), avg(latency_ms), quantile_disc(latency_ms, 0.95), max(latency_ms), "
    "sum(tokens_output), avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) FROM {source} "
    f"WHERE model = '{MODEL}' AND latency_ms >= {MIN_LATENCY} GROUP BY route ORDER BY route"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the small run")
    parser.add_argument("--files", type=int, default=1, help="files of the small run")
    parser.add_argument(
        "--big", action="store_true", help="also run 10M rows over --big-files files"
    )
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--big-files", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the 100k timings")
    parser.add_argument("--big-repeat", type=int, default=3, help="rounds of the 10M timings")
    parser.add_argument("--data", default=".refinery/bench/logs", help="generated data cache")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the bench's local Ray")
    parser.add_argument(
        "--bad-rows", type=int, default=1_000_000, help="rows of the clean vs bad-lines load"
    )
    parser.add_argument("--bad-rate", type=float, default=0.003, help="bad lines of that load")


def main(args: argparse.Namespace) -> int:
    sizes = [(args.rows, args.files)] + ([(args.big_rows, args.big_files)] if args.big else [])
    if not args.no_ray:
        import ray
        import ray.data

        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        # Ray Data's progress lines would bury the table.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        reports = [run_size(rows, files, args) for rows, files in sizes]
    finally:
        if not args.no_ray:
            ray.shutdown()
    bad_lines = bad_line_cost(args)
    for report in reports:
        print_table(report)
    print_bad_lines(bad_lines)
    print(json.dumps({"bench": "logs", "runs": reports, "bad_lines": bad_lines}))
    return 0


def run_size(rows: int, files: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every contender timed round by round (A B C A B C ...), best round kept: the machine's
    speed drifts over minutes, and timing one contender's repeats back to back would hand
    the drift to whichever ran in a slow spell."""
    raw, clean = prepare_data(Path(args.data), rows, files)
    big = rows > 1_000_000
    # Pure Python at 10M rows would hold 10M dicts (GBs): file -> answer only, streamed, once.
    file_fns: dict[str, tuple[Callable[[], Any], int]] = {
        "python": (lambda: python_answer(python_rows(raw)), 1 if big else args.repeat),
        "duckdb": (lambda: duckdb_file(raw), args.big_repeat if big else args.repeat),
        "polars": (lambda: polars_file(clean), args.big_repeat if big else args.repeat),
        "arrow": (lambda: logstore_answer(raw, "arrow"), args.big_repeat if big else args.repeat),
    }
    if not args.no_ray:
        logstore_answer(raw, "ray")  # warm-up: worker start-up is not the engine's speed
        file_fns["ray"] = (lambda: logstore_answer(raw, "ray"), file_fns["arrow"][1])
    loaders: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
        "duckdb": (lambda: duckdb_load(raw), duckdb_query),
        "polars": (lambda: polars_load(clean), polars_query),
        "arrow": (lambda: logstore(raw, "arrow"), seed_query),
    }
    if not big:
        loaders = {"python": (lambda: list(python_rows(raw)), python_answer), **loaders}
    contenders: dict[str, dict[str, Any]] = {name: {} for name in file_fns}
    for name, (seconds, answer) in interleaved(file_fns).items():
        contenders[name].update(file_s=seconds, answer=answer)
    states = {name: load() for name, (load, _) in loaders.items()}
    queries = {
        name: (lambda q=query, s=states[name]: q(s), args.repeat)
        for name, (_, query) in loaders.items()
    }
    for name, (seconds, _) in interleaved(queries).items():
        contenders[name]["query_s"] = seconds
    del states
    for name, entry in contenders.items():
        timings = "  ".join(f"{k}={v * 1000:.1f}ms" for k, v in entry.items() if k.endswith("_s"))
        print(f"  {rows:>10,} rows  {name:<8} {timings}", flush=True)
    agree = check_agreement(contenders)
    return {
        "rows": rows,
        "files": files,
        "agree": agree,
        "ratios": ratios(contenders),
        "seconds": {
            n: {k: v for k, v in e.items() if k.endswith("_s")} for n, e in contenders.items()
        },
    }


def interleaved(fns: dict[str, tuple[Callable[[], Any], int]]) -> dict[str, tuple[float, Any]]:
    """name -> (best seconds, last result) of fn, timed `rounds` times, one round of all at
    a time."""
    best = {name: (math.inf, None) for name in fns}
    for round_ in range(max(rounds for _, rounds in fns.values())):
        for name, (fn, rounds) in fns.items():
            if round_ < rounds:
                t0 = time.perf_counter()
                result = fn()
                best[name] = (min(best[name][0], time.perf_counter() - t0), result)
    return best


def prepare_data(root: Path, rows: int, files: int) -> tuple[list[str], list[str]]:
    """Generated logs (cached between runs) and the clean copy Polars needs."""
    from pipelines.logs.generate import write_logs

    raw_dir, clean_dir = root / f"{rows}x{files}" / "raw", root / f"{rows}x{files}" / "clean"
    done = root / f"{rows}x{files}" / "done"
    if not done.exists():
        print(f"generating {rows:,} rows over {files} files under {raw_dir} ...", flush=True)
        paths = write_logs(raw_dir, rows, files=files, seed=0)
        clean_dir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if valid(line)]
            (clean_dir / Path(path).name).write_text("".join(kept), encoding="utf-8")
        done.touch()
    return sorted(map(str, raw_dir.glob("*.jsonl"))), sorted(map(str, clean_dir.glob("*.jsonl")))


def bad_line_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Arrow-engine load of the same generated logs clean and with args.bad_rate of their
    lines broken (same seed: every other line is the same), best of interleaved rounds."""
    from pipelines.logs.generate import write_logs

    paths = {}
    for name, rate in (("clean", 0.0), ("bad", args.bad_rate)):
        directory = Path(args.data) / f"{args.bad_rows}-bad-{rate:g}"
        if not (directory / "done").exists():
            print(f"generating {args.bad_rows:,} rows, {rate:.2%} bad, under {directory} ...")
            write_logs(directory, args.bad_rows, seed=0, malformed_rate=rate)
            (directory / "done").touch()
        paths[name] = sorted(map(str, directory.glob("*.jsonl")))
    timed = interleaved(
        {name: (lambda p=p: logstore(p, "arrow"), args.repeat) for name, p in paths.items()}
    )
    (clean, clean_store), (bad, bad_store) = timed["clean"], timed["bad"]
    return {
        "rows": args.bad_rows,
        "bad_rate": args.bad_rate,
        "quarantined": len(bad_store.quarantine),
        "kept": {"clean": clean_store.scan.rows, "bad": bad_store.scan.rows},
        "load_s": {"clean": clean, "bad": bad},
        "overhead": round(bad / clean - 1, 3),
    }


def print_bad_lines(report: dict[str, Any]) -> None:
    seconds = report["load_s"]
    print(
        f"\nbad lines: Arrow load of {report['rows']:,} rows, clean vs "
        f"{report['bad_rate']:.1%} bad ({report['quarantined']:,} quarantined)"
    )
    print(f"{'clean':>12} {'bad lines':>12} {'overhead':>10}")
    print(
        f"{seconds['clean'] * 1000:>9,.1f} ms {seconds['bad'] * 1000:>9,.1f} ms "
        f"{report['overhead']:>+10.1%}"
    )


def valid(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("latency_ms"), int | float)


# --- pure Python: json.loads per line, dict aggregation -------------------------------------
def python_rows(paths: list[str]):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("latency_ms"), int | float):
                    yield record


def python_answer(records) -> list[tuple]:
    groups: dict[str, list] = {}
    for r in records:
        if r.get("model") == MODEL and r["latency_ms"] >= MIN_LATENCY:
            g = groups.setdefault(r.get("route"), [0, [], 0, 0])
            g[0] += 1
            g[1].append(r["latency_ms"])
            g[2] += r.get("tokens_output") or 0
            g[3] += r.get("status") != "ok"
    out = []
    for route in sorted(groups):
        n, lat, tokens, errors = groups[route]
        lat.sort()
        p95 = lat[max(math.ceil(0.95 * n - 1e-9) - 1, 0)]
        out.append((route, n, sum(lat) / n, p95, lat[-1], tokens, errors / n))
    return out


# --- DuckDB -------------------------------------------------------------------------------
def duckdb_file(paths: list[str]) -> list[tuple]:
    import duckdb

    source = (
        f"read_json({paths}, columns={DUCK_COLUMNS}, format='newline_delimited', "
        "ignore_errors=true)"
    )
    return duckdb.connect().execute(DUCK_QUERY.format(source=source)).fetchall()


def duckdb_load(paths: list[str]):
    import duckdb

    con = duckdb.connect()
    source = (
        f"read_json({paths}, columns={DUCK_COLUMNS}, format='newline_delimited', "
        "ignore_errors=true)"
    )
    con.execute(f"CREATE TABLE logs AS SELECT * FROM {source} WHERE latency_ms IS NOT NULL")
    return con


def duckdb_query(con) -> list[tuple]:
    return con.execute(DUCK_QUERY.format(source="logs")).fetchall()


# --- Polars -------------------------------------------------------------------------------
def polars_load(paths: list[str]):
    import polars as pl

    return pl.concat([pl.read_ndjson(p) for p in paths], how="diagonal_relaxed")


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
def logstore(paths: list[str], engine: str):
    from pipelines.logs import LogStore

    return LogStore.from_jsonl(paths, engine=engine)


def seed_query(store) -> list[tuple]:
    df = store.query().filter(model=MODEL, min_latency_ms=MIN_LATENCY)
    answer = df.aggregate(by=["route"], metrics=METRICS)
    # The cheapest rows out of a pandas frame, as .rows() is for Polars (itertuples: 0.4 ms).
    return [tuple(row) for row in answer.to_numpy(dtype=object).tolist()]


def logstore_answer(paths: list[str], engine: str) -> list[tuple]:
    return seed_query(logstore(paths, engine))


# --- report -------------------------------------------------------------------------------
def check_agreement(contenders: dict[str, dict[str, Any]]) -> bool:
    """Counts, sums and max equal; averages to 1e-9; p95 within 1% of DuckDB's."""
    ref = contenders["duckdb"]["answer"]
    for name, entry in contenders.items():
        answer = entry["answer"]
        if len(answer) != len(ref):
            print(f"  !! {name}: {len(answer)} groups, DuckDB {len(ref)}")
            return False
        for mine, theirs in zip(answer, ref, strict=True):
            exact = mine[0] == theirs[0] and mine[1] == theirs[1] and mine[4:6] == theirs[4:6]
            close = all(math.isclose(mine[i], theirs[i], rel_tol=1e-9) for i in (2, 6))
            p95 = math.isclose(mine[3], theirs[3], rel_tol=0.01)
            if not (exact and close and p95):
                print(f"  !! {name} disagrees with DuckDB: {mine} vs {theirs}")
                return False
    return True


def ratios(contenders: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """How many times faster each LogStore engine is than each peer (>1: faster)."""
    out: dict[str, dict[str, float]] = {}
    for engine in ("arrow", "ray"):
        if engine not in contenders:
            continue
        for peer in ("python", "duckdb", "polars"):
            for kind in ("file_s", "query_s"):
                mine, theirs = contenders[engine].get(kind), contenders[peer].get(kind)
                if mine and theirs:
                    out.setdefault(engine, {})[f"{kind[:-2]}_vs_{peer}"] = round(theirs / mine, 2)
    if "ray" in contenders:
        ray_over_arrow = contenders["ray"]["file_s"] / contenders["arrow"]["file_s"]
        out["ray"]["file_time_over_arrow"] = round(ray_over_arrow, 2)
    return out


def print_table(report: dict[str, Any]) -> None:
    seconds = report["seconds"]
    print(
        f"\nseed query, {report['rows']:,} rows in {report['files']} file(s); "
        f"answers agree with DuckDB: {report['agree']}"
    )
    print(f"{'engine':<10} {'file->answer':>14} {'query (loaded)':>16}")
    for name, entry in seconds.items():
        file_ms = f"{entry['file_s'] * 1000:,.1f} ms" if "file_s" in entry else "-"
        query_ms = f"{entry['query_s'] * 1000:,.1f} ms" if "query_s" in entry else "-"
        print(f"{name:<10} {file_ms:>14} {query_ms:>16}")
