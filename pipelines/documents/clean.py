"""Read and the per-document steps as one fused Ray Data stage, with its bookkeeping.

Every row leaves the stage marked: a quarantine reason (read), a drop step and rule
(filters), or neither (kept). Counts and per-step seconds come back as one small summary per
block, summed on the driver, so retries and worker counts cannot skew them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.documents.config import ReadConfig
from pipelines.documents.read import read_batch
from pipelines.documents.steps import DocStep, RunContext
from refinery.storage import write_text

if TYPE_CHECKING:
    from ray.data import Dataset

MARKS = ["error", "detail", "line", "_drop_step", "_drop_rule", "_seconds"]


def read_timed(batch: dict[str, Any], cfg: ReadConfig) -> pa.Table:
    t0 = time.perf_counter()
    table = read_batch(batch, cfg)
    return _with_seconds(table, [time.perf_counter() - t0])


def _with_seconds(table: pa.Table, seconds: list[float]) -> pa.Table:
    # The batch's time rides on its first row, so a column sum is the stage's total.
    column = [seconds] + [None] * (table.num_rows - 1) if table.num_rows else []
    if "_seconds" in table.column_names:
        table = table.drop_columns(["_seconds"])
    return table.append_column("_seconds", pa.array(column, pa.list_(pa.float64())))


def run_doc_steps(table: pa.Table, steps: list[DocStep]) -> pa.Table:
    """Apply the steps in order to the batch's documents; a dropped document keeps its id
    and source, loses its text, and names the step (index) and rule that dropped it."""
    docs = table.to_pylist()
    # A batch may hold several read batches, each with its time on its first row.
    read_seconds = [sum(row[0] for row in table["_seconds"].to_pylist() if row)]
    drop_step: list[int | None] = [None] * len(docs)
    drop_rule: list[str | None] = [None] * len(docs)
    alive = [i for i, doc in enumerate(docs) if doc["error"] is None]
    seconds = []
    for k, step in enumerate(steps):
        t0 = time.perf_counter()
        kept = []
        for i in alive:
            rule = step.process(docs[i])
            if rule is None:
                kept.append(i)
            else:
                drop_step[i], drop_rule[i], docs[i]["text"] = k, rule, ""
        alive = kept
        seconds.append(time.perf_counter() - t0)
    out = pa.Table.from_pylist(docs, schema=table.schema)
    out = out.append_column("_drop_step", pa.array(drop_step, pa.int32()))
    out = out.append_column("_drop_rule", pa.array(drop_rule, pa.string()))
    return _with_seconds(out, read_seconds + seconds)


def _side_rows(table: pa.Table) -> pa.Table:
    """Everything but kept documents' content: quarantine and drop rows, and batch timings
    (one pass, so the driver counts, times and lists them from one small table)."""
    marked = pc.or_(
        pc.or_(pc.is_valid(table["error"]), pc.is_valid(table["_drop_step"])),
        pc.is_valid(table["_seconds"]),
    )
    return table.filter(marked).select(["id", "source", *MARKS, "text"])


def summarize(side: pa.Table, rows: int) -> dict[str, Any]:
    """Counts by quarantine reason and by (step, rule), summed seconds per stage."""
    quarantined = Counter(x for x in side["error"].to_pylist() if x is not None)
    dropped = Counter(
        (step, rule)
        for step, rule in zip(
            side["_drop_step"].to_pylist(), side["_drop_rule"].to_pylist(), strict=True
        )
        if rule is not None
    )
    seconds: list[float] = []
    for row in side["_seconds"].to_pylist():
        for i, s in enumerate(row or []):
            seconds.extend([0.0] * (i + 1 - len(seconds)))
            seconds[i] += s
    return {
        "documents": rows - sum(quarantined.values()),
        "quarantined": quarantined,
        "dropped": dropped,
        "seconds": seconds,
    }


def _kept(table: pa.Table) -> pa.Table:
    mask = pc.and_(pc.is_null(table["error"]), pc.is_null(table["_drop_step"]))
    return table.filter(mask).drop_columns(MARKS)


def read_and_clean(
    files: list[str], cfg: ReadConfig, steps: list[DocStep], ctx: RunContext
) -> Dataset:
    """Kept documents; writes DIR/quarantine.jsonl and records counts for read and each step."""
    import ray

    marked = (
        ray.data.from_items(
            [{"path": f} for f in files],
            override_num_blocks=max(1, -(-len(files) // cfg.files_per_task)),
        )
        .map_batches(read_timed, fn_kwargs={"cfg": cfg}, batch_size=None)
        .map_batches(
            run_doc_steps, fn_kwargs={"steps": steps}, batch_format="pyarrow", batch_size=None
        )
        .materialize()
    )
    side = marked.map_batches(_side_rows, batch_format="pyarrow", batch_size=None)
    side = pa.concat_tables(ray.get(side.to_arrow_refs()))  # one table per block
    _record(summarize(side, marked.count()), files, steps, ctx)
    quarantine = side.filter(pc.is_valid(side["error"])).to_pylist()
    write_text(
        f"{ctx.output}/quarantine.jsonl",
        "".join(json.dumps(_quarantine_line(q), ensure_ascii=False) + "\n" for q in quarantine),
    )
    dropped = side.filter(pc.is_valid(side["_drop_step"])).sort_by("id").to_pylist()
    names = [s.name for s in steps]
    write_text(
        f"{ctx.output}/dropped.jsonl",
        "".join(
            json.dumps({"id": d["id"], "source": d["source"], "step": names[d["_drop_step"]],
                        "rule": d["_drop_rule"]}, ensure_ascii=False) + "\n"
            for d in dropped
        ),
    )  # fmt: skip
    return marked.map_batches(_kept, batch_format="pyarrow")


def _quarantine_line(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": row["source"],
        "line": row["line"],
        "reason": row["error"],
        "detail": row["detail"],
        "raw": row["text"],
    }


def _record(
    totals: dict[str, Any], files: list[str], steps: list[DocStep], ctx: RunContext
) -> None:
    seconds = totals["seconds"] + [0.0] * (len(steps) + 1 - len(totals["seconds"]))
    read = ctx.stats.step("read")
    read.rows_in += len(files)
    read.rows_out += totals["documents"]
    read.seconds += seconds[0]
    read.quarantined.update(totals["quarantined"])
    alive = totals["documents"]
    for k, step in enumerate(steps):
        stat = ctx.stats.step(step.name)
        stat.rows_in += alive
        for (index, rule), n in totals["dropped"].items():
            if index == k:
                stat.dropped[rule] += n
        alive -= sum(stat.dropped.values())
        stat.rows_out += alive
        stat.seconds += seconds[k + 1]
