"""`refinery run logs`: parse (quarantining bad lines), aggregate, write table + chart.

Outputs under cfg.output: the aggregate table (Parquet or CSV), quarantine.jsonl and the
chart; the harness (jobs/batch.py) adds stats.json and closes the MLflow run.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.logs import chart
from pipelines.logs.config import LogsJobConfig
from pipelines.logs.store import LogStore, Query, write_quarantine
from refinery.runstats import RunStats
from refinery.storage import is_uri, resolve
from refinery.tracking import Tracker


def run(cfg: LogsJobConfig, stats: RunStats, tracker: Tracker) -> None:
    out = cfg.output.rstrip("/")
    # The Arrow engine parses here; the lazy Ray engine parses inside the aggregate pass.
    with stats.timed("parse") as parse:
        store = LogStore.from_jsonl(
            cfg.input, engine=cfg.engine, prices=cfg.prices, max_line_bytes=cfg.max_line_bytes
        )
    query = store.query().filter(**cfg.query.filters)
    with stats.timed("aggregate") as step:
        frame = query.aggregate(cfg.query.by, cfg.query.metrics, cfg.query.bucket)
        step.rows_in, step.rows_out = store.scan.rows, len(frame)
    scan = store.scan
    parse.rows_in, parse.rows_out = scan.lines - scan.blank, scan.rows
    parse.quarantined.update(scan.quarantined)
    outputs = {
        "table": write_table(frame, f"{out}/{cfg.table.name}.{cfg.table.format}", cfg.table.format),
        "quarantine": f"{out}/quarantine.jsonl",
    }
    write_quarantine(store.quarantine, outputs["quarantine"])
    if cfg.chart.enabled:
        with stats.timed("chart"):
            outputs["chart"] = write_chart(query, cfg, f"{out}/{cfg.chart.name}")
    stats.extra["logs"] = {
        "engine": store.engine,
        "scan": scan.to_dict(),
        "groups": len(frame),
        "outputs": outputs,
    }
    tracker.log_metrics(
        {
            "logs.rows": scan.rows,
            "logs.quarantined": sum(scan.quarantined.values()),
            "logs.groups": len(frame),
        }
    )
    tracker.log_dict(summary(frame), "logs_summary.json")
    for path in outputs.values():
        if not is_uri(path):
            tracker.log_artifact(resolve(path)[1], "logs")


def write_table(frame: pd.DataFrame, path: str, fmt: str) -> str:
    fs, inner = resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), inner, filesystem=fs)
    else:
        with fs.open_output_stream(inner) as stream:
            stream.write(frame.to_csv(index=False).encode("utf-8"))
    return path


def write_chart(query: Query, cfg: LogsJobConfig, path: str) -> str:
    c = cfg.chart
    metrics = {chart.percentile_name(p): f"p{p:g}({c.column})" for p in c.percentiles}
    frame = query.aggregate(
        ["model"], {**metrics, "error_rate": "error_rate", "n": "count"}, bucket=c.bucket
    )
    busiest = frame.groupby("model")["n"].sum().nlargest(c.top_models).index
    frame = frame[frame["model"].isin(busiest)]
    png = chart.render(frame, c.percentiles, c.column, f"{cfg.input} by model, per {c.bucket}")
    fs, inner = resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(png)
    return path


def summary(frame: pd.DataFrame, rows: int = 50) -> dict[str, Any]:
    """The first rows of the answer as JSON-able records, for the MLflow run page."""
    records = json.loads(frame.head(rows).to_json(orient="records", date_format="iso"))
    return {"columns": list(frame.columns), "groups": len(frame), "rows": records}
