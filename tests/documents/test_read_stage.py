"""The fused read stage without Ray: doc steps, then the dataset steps' per-document columns
(annotate) for kept documents only, and the read task size."""

from __future__ import annotations

import pyarrow as pa

from pipelines.documents import steps as steps_module
from pipelines.documents.clean import MAX_FILES_PER_TASK, files_per_task, read_groups, run_doc_steps
from pipelines.documents.config import ExactDedupConfig, LengthFilterConfig, MinHashConfig
from pipelines.documents.dedup import BANDS, HASH, SHINGLES, ExactDedup, MinHashDedup
from pipelines.documents.filters import LengthFilter
from pipelines.documents.minhash import shingle_hashes
from pipelines.documents.read import quarantine
from pipelines.documents.steps import DocBatch
from pipelines.documents.text import content_hash, token_hashes
from refinery.inputs import InputFile

LONG = "Every kept document gets a hash and band keys computed next to its text. " * 3


def _rows(texts: list[str | None]) -> list[dict]:
    return [
        {"id": f"d{i}", "doc_id": f"d{i}", "text": t, "source": "f", "format": "text"}
        if t is not None
        else quarantine("bad", "undecodable", "x", raw=b"raw")
        for i, t in enumerate(texts)
    ]


def test_kept_documents_get_the_dataset_steps_columns_and_marked_rows_nulls() -> None:
    exact, near = ExactDedup(ExactDedupConfig()), MinHashDedup(MinHashConfig())
    steps = [LengthFilter(LengthFilterConfig(min_chars=100))]
    docs = _rows([LONG, "too short", None, LONG.upper()])
    out, seconds = run_doc_steps(docs, steps, [exact, near])
    rows = {r["id"] or r["source"]: r for r in out.to_pylist()}
    assert rows["d0"][HASH] == content_hash(LONG) == rows["d3"][HASH]  # case-insensitive
    assert rows["d0"][SHINGLES] == shingle_hashes(token_hashes([LONG]), 5)[0].tolist()
    assert len(rows["d0"][BANDS]) == near.banding.bands
    for dropped in (rows["d1"], rows["bad"]):
        assert dropped[HASH] is None and dropped[BANDS] is None and dropped[SHINGLES] is None
    assert rows["d1"]["_drop_rule"] == "too_short" and rows["bad"]["error"] == "undecodable"
    assert len(seconds) == 3  # one doc step, then one per annotating step


def test_a_batch_tokenises_once_for_every_step(monkeypatch) -> None:
    calls = []

    def counted(texts):
        calls.append(texts)
        return token_hashes(texts)

    monkeypatch.setattr(steps_module, "token_hashes", counted)
    batch = DocBatch(pa.table({"text": [LONG, "other words here"]}))
    exact, near = ExactDedup(ExactDedupConfig()), MinHashDedup(MinHashConfig())
    columns = {**exact.annotate(batch), **near.annotate(batch)}
    assert len(calls) == 1 and set(columns) == {HASH, BANDS, SHINGLES}
    empty = DocBatch(pa.table({"text": pa.array([], pa.string())}))
    assert len(exact.annotate(empty)[HASH]) == 0


def test_read_tasks_are_a_few_per_cpu_within_bounds() -> None:
    assert files_per_task(1590, 2) == 199  # 8 tasks
    assert files_per_task(10, 2) == 2
    assert files_per_task(3, 64) == 1
    assert files_per_task(10_000_000, 64) == MAX_FILES_PER_TASK


def test_read_groups_balance_bytes_heaviest_first() -> None:
    sizes = [100, 90, 10, 10, 10, 10, 10, 10, 40, 50]
    files = [InputFile(f"f{i:02d}", size) for i, size in enumerate(sizes)]
    groups = read_groups(files, 3)
    by_path = {f.path: f.size for f in files}
    totals = [sum(by_path[p] for p in g) for g in groups]
    assert sorted(p for g in groups for p in g) == [f.path for f in files]
    assert totals == sorted(totals, reverse=True) and max(totals) - min(totals) <= 10
    assert read_groups(files[:2], 5) == [["f00"], ["f01"]]  # no empty groups
    unknown = [InputFile(f"s3://b/{i}", 0) for i in range(6)]  # sizes a store did not give
    assert sorted(map(len, read_groups(unknown, 3))) == [2, 2, 2]
