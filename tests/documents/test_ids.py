"""Repeated ids: one copy of a record read twice, the later of two texts under one id
quarantined, whatever the worker count; exact and near dedup then drop rows, never every
row of an id."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
from docs_corpus import dedup_steps, prose

from pipelines.documents.ids import _id_keys, _repeats

pytestmark = pytest.mark.usefixtures("ray_session")


def _write(path: Path, *records: dict) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def id_corpus(root: Path) -> Path:
    root.mkdir()
    shared = {"id": "shared", "text": prose(1)}
    first_clash = {"id": "clash", "text": prose(3)}
    _write(root / "a.jsonl", {"id": "solo", "text": prose(2)}, shared, first_clash)
    _write(root / "b.jsonl", {"id": "clash", "text": prose(4)}, shared)
    # Other ids, same text: content dedup keeps the smallest id.
    _write(root / "c.jsonl", {"id": "copy-b", "text": prose(5)}, first_clash)
    _write(root / "d.jsonl", {"id": "copy-a", "text": prose(5)})
    # Other ids, nearly the same text: near dedup keeps the smallest id.
    words = prose(6).split()
    near = " ".join([*words[:40], "different", *words[41:]])
    _write(root / "e.jsonl", {"id": "near-b", "text": near}, {"id": "near-a", "text": prose(6)})
    return root


def test_repeated_ids_resolve_the_same_with_one_or_many_workers(tmp_path, run_steps) -> None:
    source = id_corpus(tmp_path / "corpus")
    single = run_steps(source, dedup_steps(1), files_per_task=100, name="single")
    many = run_steps(source, dedup_steps(8), files_per_task=1, name="many")
    for run in (single, many):
        assert run["ids"] == ["clash", "copy-a", "near-a", "shared", "solo"]
        stats = run["stats"]
        assert stats["unique_ids"]["dropped"] == {"repeated": 2}  # shared in b, clash in c
        assert stats["unique_ids"]["quarantined"] == {"duplicate_id": 1}
        assert stats["unique_ids"]["rows_out"] == 7
        assert stats["exact_dedup"]["dropped"] == {"duplicate": 1}
        assert stats["minhash_dedup"]["dropped"] == {"near_duplicate": 1}
    lines = [(run["out"] / "quarantine.jsonl").read_text() for run in (single, many)]
    assert lines[0] == lines[1]
    (clash,) = [json.loads(x) for x in lines[0].splitlines()]
    assert (Path(clash["file"]).name, clash["line"]) == ("b.jsonl", 1)
    assert clash["reason"] == "duplicate_id"
    assert clash["raw"] == prose(4) and "a.jsonl:3" in clash["detail"]
    dropped = [json.loads(x) for x in (single["out"] / "dropped.jsonl").open()]
    assert [(d["id"], Path(d["source"]).name, d["rule"]) for d in dropped] == [
        ("clash", "c.jsonl", "repeated"),
        ("shared", "b.jsonl", "repeated"),
    ]


def test_repeats_do_not_depend_on_row_order() -> None:
    rows = [
        ("x", "f2", 1, "t1"), ("x", "f1", 7, "t1"), ("x", "f1", 2, "t2"),
        ("y", "f3", None, "t3"), ("z", "f1", 1, "t4"), ("z", "f1", 3, "t4"),
    ]  # fmt: skip
    results = []
    for seed in range(5):
        shuffled = random.Random(seed).sample(rows, len(rows))
        ids, sources, lines, texts = zip(*shuffled, strict=True)
        table = pa.table({"id": ids, "source": sources, "line": lines, "text": texts})
        results.append(_repeats(_id_keys(table, lambda t: t, 1)).to_pylist())
    assert all(r == results[0] for r in results)
    assert [(r["id"], r["source"], r["line"], r["reason"]) for r in results[0]] == [
        ("x", "f1", 7, "duplicate_id"),  # f1:2 comes first and has other text
        ("x", "f2", 1, "duplicate_id"),
        ("z", "f1", 3, "repeated"),
    ]
