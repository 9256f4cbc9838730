"""Read and the per-document steps as one fused Ray Data stage, with its bookkeeping.

Every row leaves the stage marked: a quarantine reason (read), a drop step and rule
(filters), or neither (kept). Counts and per-step seconds come back as one small summary per
block, summed on the driver, so retries and worker counts cannot skew them. The kept
documents then get unique ids (ids.py) before any later step keys on them.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.documents.config import ReadConfig
from pipelines.documents.ids import repeated_rows, row_keys
from pipelines.documents.read import RAW_CHARS, SCHEMA, read_batch
from pipelines.documents.steps import DatasetStep, Doc, DocBatch, DocStep, RunContext
from refinery.inputs import InputFile
from refinery.ray_runtime import without_reservation
from refinery.runstats import StepStats
from refinery.storage import write_text

if TYPE_CHECKING:
    from ray.data import Dataset

MARKS = ["error", "detail", "line", "_drop_step", "_drop_rule", "_seconds"]
IDS_STEP = "unique_ids"
TASKS_PER_CPU = 4
MAX_FILES_PER_TASK = 256


def process_files(
    batch: dict[str, Any], cfg: ReadConfig, steps: list[DocStep], annotators: list[DatasetStep]
) -> pa.Table:
    """Ray map_batches function: read a block's files, run the document steps on them, add
    the annotators' columns; one table built once, with every row marked and timed."""
    t0 = time.perf_counter()
    docs = read_batch(batch, cfg)
    read_seconds = time.perf_counter() - t0
    table, seconds = run_doc_steps(docs, steps, annotators)
    return _with_seconds(table, [read_seconds, *seconds])


def _with_seconds(table: pa.Table, seconds: list[float]) -> pa.Table:
    # The batch's time rides on its first row, so a column sum is the stage's total.
    column = [seconds] + [None] * (table.num_rows - 1) if table.num_rows else []
    return table.append_column("_seconds", pa.array(column, pa.list_(pa.float64())))


def run_doc_steps(
    docs: list[Doc], steps: list[DocStep], annotators: list[DatasetStep]
) -> tuple[pa.Table, list[float]]:
    """Apply the steps in order to the documents (read rows); a dropped document keeps its id
    and source, loses its text, and names the step (index) and rule that dropped it. Kept
    documents then get the per-document columns of the dataset steps (`annotators`). The
    table, and the seconds of each step then each annotator."""
    drop_step: list[int | None] = [None] * len(docs)
    drop_rule: list[str | None] = [None] * len(docs)
    alive = [i for i, doc in enumerate(docs) if doc.get("error") is None]
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
    out = pa.Table.from_pylist(docs, schema=SCHEMA)
    out = out.append_column("_drop_step", pa.array(drop_step, pa.int32()))
    out = out.append_column("_drop_rule", pa.array(drop_rule, pa.string()))
    out, annotate_seconds = _annotate(out, annotators)
    return out, seconds + annotate_seconds


def _annotate(table: pa.Table, steps: list[DatasetStep]) -> tuple[pa.Table, list[float]]:
    if not steps:
        return table, []
    kept = _is_kept(table)
    batch = DocBatch(table.filter(kept))
    docs, seconds = batch.table, []
    for step in steps:
        t0 = time.perf_counter()
        for name, column in step.annotate(batch).items():
            docs = docs.append_column(name, column)
        seconds.append(time.perf_counter() - t0)
    # Marked rows get nulls in the new columns.
    rest = table.filter(pc.invert(kept))
    return pa.concat_tables([docs, rest], promote_options="default"), seconds


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


def _is_kept(table: pa.Table) -> pa.Array:
    return pc.and_(pc.is_null(table["error"]), pc.is_null(table["_drop_step"]))


def _documents(table: pa.Table) -> pa.Table:
    """The kept documents of a marked block, with their place in the input."""
    if table.num_rows == 0:
        return table
    return table.filter(_is_kept(table)).select(["id", "source", "line", "text"])


def _kept(table: pa.Table, removed: Any) -> pa.Table:
    """Kept documents, less the rows whose key is in the array behind `removed` (an
    ObjectRef: put once, shared by tasks)."""
    import ray

    keep = _is_kept(table)
    repeats = ray.get(removed)
    if len(repeats):
        keep = pc.and_(keep, pc.invert(pc.is_in(row_keys(table), value_set=repeats)))
    return table.filter(keep).drop_columns(MARKS)


def _excerpts(table: pa.Table, wanted: Any) -> pa.Table:
    """(row key, start of the text) of the rows whose key is behind `wanted`."""
    import ray

    keys = row_keys(table)
    rows = table.filter(pc.is_in(keys, value_set=ray.get(wanted)))
    return pa.table(
        {"key": row_keys(rows), "excerpt": pc.utf8_slice_codeunits(rows["text"], 0, RAW_CHARS)}
    )


def read_groups(files: list[InputFile], tasks: int) -> list[list[str]]:
    """The files in `tasks` groups of about equal bytes, heaviest group first: each file, the
    largest first, joins the lightest group, so the read tasks end together instead of one
    large group running on alone while the other CPUs idle. A file of unknown size (0)
    counts one byte, so such files are spread by count."""
    groups: list[tuple[int, int, list[str]]] = [(0, i, []) for i in range(tasks)]
    for f in sorted(files, key=lambda f: (-f.size, f.path)):
        total, i, paths = heapq.heappop(groups)
        paths.append(f.path)
        heapq.heappush(groups, (total + max(f.size, 1), i, paths))
    return [sorted(paths) for _, _, paths in sorted(groups, key=lambda g: (-g[0], g[1])) if paths]


def files_per_task(files: int, cpus: float) -> int:
    """About TASKS_PER_CPU read tasks per CPU, within [1, MAX_FILES_PER_TASK] files each:
    every later pass (side rows, dedup shuffles, chunk) runs one task per block, and on a
    small cluster Ray's per-task cost outweighs the work of a few dozen documents."""
    return min(max(1, math.ceil(files / (TASKS_PER_CPU * max(cpus, 1)))), MAX_FILES_PER_TASK)


def read_and_clean(
    files: list[InputFile],
    cfg: ReadConfig,
    steps: list[DocStep],
    ctx: RunContext,
    annotators: list[DatasetStep] | None = None,
) -> Dataset:
    """Kept documents, one per id (ids.py), with the columns of the `annotators`'
    annotate(); writes DIR/quarantine.jsonl and DIR/dropped.jsonl and records counts for
    read, each step and the id check."""
    import ray

    annotators = annotators or []
    per_task = cfg.files_per_task or files_per_task(
        len(files), ray.cluster_resources().get("CPU", 1)
    )
    groups = read_groups(files, math.ceil(len(files) / per_task))
    paths = ray.data.from_items([{"paths": g} for g in groups], override_num_blocks=len(groups))
    marked = (
        without_reservation(paths)
        .map_batches(
            process_files,
            fn_kwargs={"cfg": cfg, "steps": steps, "annotators": annotators},
            batch_size=None,
        )
        .materialize()
    )
    side = marked.map_batches(_side_rows, batch_format="pyarrow", batch_size=None)
    side = pa.concat_tables(ray.get(side.to_arrow_refs()))  # one table per block
    alive = _record(summarize(side, marked.count()), files, steps, annotators, ctx)
    with ctx.stats.timed(IDS_STEP) as ids_step:
        repeats = repeated_rows(marked.to_arrow_refs(), _documents)
        duplicate_ids = _duplicate_id_lines(marked, repeats)
    _record_repeats(ids_step, repeats, alive)
    quarantine = [_quarantine_line(q) for q in side.filter(pc.is_valid(side["error"])).to_pylist()]
    quarantine = sorted(quarantine + duplicate_ids, key=lambda q: (q["file"], q["line"] or 0))
    _write_lines(f"{ctx.output}/quarantine.jsonl", quarantine)
    _write_lines(f"{ctx.output}/dropped.jsonl", _dropped_lines(side, repeats, steps))
    removed = ray.put(row_keys(repeats).combine_chunks())
    return marked.map_batches(_kept, fn_kwargs={"removed": removed}, batch_format="pyarrow")


def _write_lines(path: str, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _dropped_lines(side: pa.Table, repeats: pa.Table, steps: list[DocStep]) -> list[dict]:
    """What the document steps dropped, and the records read twice, sorted by id."""
    names = [s.name for s in steps]
    dropped = [
        {"id": d["id"], "source": d["source"], "step": names[d["_drop_step"]],
         "rule": d["_drop_rule"]}
        for d in side.filter(pc.is_valid(side["_drop_step"])).to_pylist()
    ] + [
        {"id": r["id"], "source": r["source"], "step": IDS_STEP, "rule": r["reason"]}
        for r in repeats.filter(pc.equal(repeats["reason"], "repeated")).to_pylist()
    ]  # fmt: skip
    return sorted(dropped, key=lambda d: (d["id"], d["source"]))


def _record_repeats(step: StepStats, repeats: pa.Table, alive: int) -> None:
    reasons = Counter(repeats["reason"].to_pylist())
    step.rows_in += alive
    step.dropped["repeated"] += reasons["repeated"]
    step.quarantined["duplicate_id"] += reasons["duplicate_id"]
    step.rows_out += alive - repeats.num_rows


def _duplicate_id_lines(marked: Dataset, repeats: pa.Table) -> list[dict[str, Any]]:
    """Quarantine lines for the rows that reuse an earlier row's id with other text."""
    import ray

    rows = repeats.filter(pc.equal(repeats["reason"], "duplicate_id"))
    if rows.num_rows == 0:
        return []
    found = marked.map_batches(
        _excerpts,
        fn_kwargs={"wanted": ray.put(row_keys(rows).combine_chunks())},
        batch_format="pyarrow",
    ).take_all()
    excerpts = {r["key"]: r["excerpt"] for r in found}
    return [
        {
            "file": r["source"],
            "line": r["line"],
            "reason": "duplicate_id",
            "detail": f"id {r['id']!r} is first used with other text at "
            f"{r['first_source']}:{r['first_line'] or 0}",
            "raw": excerpts[key],
        }
        for r, key in zip(rows.to_pylist(), row_keys(rows).to_pylist(), strict=True)
    ]


def _quarantine_line(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": row["source"],
        "line": row["line"],
        "reason": row["error"],
        "detail": row["detail"],
        "raw": row["text"],
    }


def _record(
    totals: dict[str, Any],
    files: list[InputFile],
    steps: list[DocStep],
    annotators: list[DatasetStep],
    ctx: RunContext,
) -> int:
    """Record the counts of read and each document step; returns how many documents the
    steps keep."""
    width = 1 + len(steps) + len(annotators)
    seconds = totals["seconds"] + [0.0] * (width - len(totals["seconds"]))
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
    # Their counts are the dataset steps' own; what they spent in the read stage is theirs too.
    for k, step in enumerate(annotators):
        ctx.stats.step(step.name).seconds += seconds[1 + len(steps) + k]
    return alive
