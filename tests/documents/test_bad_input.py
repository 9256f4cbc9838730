"""Hostile input through `refinery run docs`: every bad record quarantined with its reason and
counted, every good one kept, the job finished."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from docs_corpus import prose

from jobs.batch import BATCH_JOBS, load_batch_config, run_batch_job
from pipelines.documents import pipeline
from pipelines.documents.read import RAW_CHARS
from refinery.config import RuntimeConfig
from refinery.inputs import InputFile

pytestmark = pytest.mark.usefixtures("ray_session")

MAX_FILE_BYTES = 1 << 16


def _html(charset: str, body: str) -> bytes:
    return (
        f'<html><head><meta charset="{charset}"></head><body><p>{body}</p></body></html>'.encode()
    )


def _jsonl(*records: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


class Corpus:
    """Writes files, remembering which records must be kept and which quarantined."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kept: set[str] = set()
        self.quarantined: list[tuple[str, int | None, str]] = []
        root.mkdir()

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def bad(self, name: str, reason: str, line: int | None = None) -> None:
        self.quarantined.append((name, line, reason))


def bad_input_corpus(root: Path) -> Corpus:
    corpus = Corpus(root)
    big_int = "9" * 5000
    deep = "[" * 5000 + "]" * 5000
    lines = [
        json.dumps({"id": "good-1", "text": prose(1)}),
        '{"id": "deep", "text": "x", "extra": ' + deep + "}",
        '{"id": "big-int", "text": "x", "extra": {"n": [' + big_int + "]}}",
        '{"id": "surrogate-text", "text": "a \\ud800 b"}',
        '{"id": "surrogate-field", "text": "x", "title": "\\udfff"}',
        '{"id": "\\ud800", "text": "x"}',
        '{"id": "surrogate-key", "text": "x", "\\ud800": 1}',
        json.dumps({"id": "text-number", "text": 3}),
        json.dumps({"id": "text-list", "text": ["a", "b"]}),
        json.dumps({"id": "text-object", "text": {"a": 1}}),
        json.dumps({"id": "text-null", "text": None}),
        deep,
        json.dumps({"id": "good-2", "text": prose(2)}),
    ]
    corpus.write("docs.jsonl", "\n".join(lines) + "\n")
    corpus.kept |= {"good-1", "good-2"}
    reasons = ["too_deep", "number_too_long"] + ["lone_surrogate"] * 4
    reasons += ["text_not_string"] * 3 + ["missing_text", "too_deep"]
    for line, reason in enumerate(reasons, start=2):
        corpus.bad("docs.jsonl", reason, line)

    # Declared charsets that fail on the bytes or do not exist; one that decodes to a
    # lone surrogate; one honest page.
    corpus.write("punycode.html", _html("punycode", prose(3)))
    corpus.write("idna.html", _html("idna", "Visit a.xn--ab-.b " + prose(3)))
    corpus.write("utf7.html", _html("utf-7", "Café " + prose(3)))
    corpus.write("nosuch.html", _html("x-no-such-charset", prose(3)))
    corpus.write("utf7-surrogate.html", _html("utf-7", "+2AA- " + prose(3)))
    for name in ("punycode", "idna", "utf7", "nosuch"):
        corpus.bad(f"{name}.html", "bad_charset")
    corpus.bad("utf7-surrogate.html", "lone_surrogate")
    corpus.kept.add(str(corpus.write("page.html", _html("utf-8", "Grüße " + prose(4)))))
    xhtml = f'<?xml version="1.0" encoding="utf-8"?>\n<html><body><p>{prose(12)}</p></body></html>'
    corpus.kept.add(str(corpus.write("page.xhtml", xhtml)))

    # A gzip bomb past read.max_file_bytes next to a small gzip file that is read.
    bomb = _jsonl({"id": "bomb", "text": "a " * MAX_FILE_BYTES})
    corpus.write("bomb.jsonl.gz", gzip.compress(bomb.encode()))
    corpus.bad("bomb.jsonl.gz", "too_large")
    corpus.write(
        "small.jsonl.gz", gzip.compress(_jsonl({"id": "good-gz", "text": prose(5)}).encode())
    )
    corpus.kept.add("good-gz")

    # A Parquet file whose second record's text is not UTF-8 (Arrow's writer does not check).
    text = pa.array([prose(13).encode(), b"\xff\xfe"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["good-pq", "bad-pq"], "text": text}), root / "mixed.parquet")
    corpus.kept.add("good-pq")
    corpus.bad("mixed.parquet", "undecodable", 2)

    corpus.write("empty.txt", b"")
    corpus.write("blank.jsonl", b"\n  \n")
    corpus.bad("empty.txt", "empty_file")
    corpus.bad("blank.jsonl", "empty_file")
    corpus.kept.add(str(corpus.write("notes.txt", prose(6))))

    # Listed, then gone or turned into a directory before a task reads them (see below).
    corpus.write("gone.jsonl", _jsonl({"id": "gone", "text": prose(7)}))
    corpus.write("dir.jsonl", _jsonl({"id": "dir", "text": prose(8)}))
    corpus.bad("gone.jsonl", "file_gone")
    corpus.bad("dir.jsonl", "unreadable")

    # One record in two files; one id with two texts (the later, by file, is quarantined).
    shared, first, second = (
        {"id": "shared", "text": prose(9)},
        {"id": "clash", "text": prose(10)},
        {"id": "clash", "text": prose(11)},
    )
    corpus.write("a.jsonl", _jsonl(shared, first))
    corpus.write("b.jsonl", _jsonl(second, shared))
    corpus.kept |= {"shared", "clash"}
    corpus.bad("b.jsonl", "duplicate_id", 1)
    return corpus


def vanish_after_listing(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Between the driver's listing and the read tasks: one file deleted, one replaced by a
    directory (a path no one can read, root included)."""
    listed = pipeline.list_input_files

    def list_then_vanish(source: str) -> list[InputFile]:
        files = listed(source)
        (root / "gone.jsonl").unlink()
        (root / "dir.jsonl").unlink()
        (root / "dir.jsonl").mkdir()
        return files

    monkeypatch.setattr(pipeline, "list_input_files", list_then_vanish)


def run_docs(corpus: Path, output: Path, runtime: RuntimeConfig):
    job = BATCH_JOBS["docs"]
    overrides = [f"input={corpus}", f"output={output}", f"read.max_file_bytes={MAX_FILE_BYTES}"]
    cfg = load_batch_config(job, None, overrides=overrides)
    cfg.runtime = runtime.model_copy(update={"qdrant": cfg.runtime.qdrant})
    return run_batch_job(job, cfg)


def test_bad_input_is_quarantined_and_good_input_kept(
    tmp_path: Path, runtime: RuntimeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = bad_input_corpus(tmp_path / "corpus")
    vanish_after_listing(monkeypatch, corpus.root)
    out = tmp_path / "out"
    run_docs(corpus.root, out, runtime)

    written = json.loads((out / "stats.json").read_text())
    assert written["status"] == "FINISHED"
    lines = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    got = [(Path(q["file"]).name, q["line"], q["reason"]) for q in lines]
    assert sorted(got, key=str) == sorted(corpus.quarantined, key=str)
    assert all(q["detail"] and len(q["raw"]) <= RAW_CHARS for q in lines)
    bomb = next(q for q in lines if q["reason"] == "too_large")
    assert bomb["raw"].startswith('{"id": "bomb"')

    reasons = Counter(reason for _, _, reason in corpus.quarantined)
    duplicate = reasons.pop("duplicate_id")
    steps = written["steps"]
    assert steps["read"]["quarantined"] == dict(reasons)
    assert steps["unique_ids"]["quarantined"] == {"duplicate_id": duplicate}
    assert steps["unique_ids"]["dropped"] == {"repeated": 1}

    table = pq.read_table(out / "documents")
    assert set(table["doc_id"].to_pylist()) == corpus.kept
    texts = dict(zip(table["doc_id"].to_pylist(), table["text"].to_pylist(), strict=True))
    assert texts["clash"] == prose(10)  # the first file's text
    chunk_ids = table["id"].to_pylist()
    assert len(set(chunk_ids)) == len(chunk_ids)
    manifest = json.loads((out / "index" / "manifest.json").read_text())
    assert manifest["count"] == len(chunk_ids)
