"""What the reader says a document's text is: by file extension, or as a record declares."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.documents.config import ReadConfig
from pipelines.documents.read import read_file


def test_formats_by_extension_and_by_record(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Title <b>x</b>\n")
    (tmp_path / "notes.txt").write_text("plain\n")
    records = [
        {"id": "a", "text": "x", "format": "text/markdown"},
        {"id": "b", "text": "x", "format": "HTML"},
        {"id": "c", "text": "x", "format": "application/pdf"},
        {"id": "d", "text": "x", "format": 3},
        {"id": "e", "text": "x"},
    ]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = ReadConfig()
    assert [d["format"] for d in read_file(str(tmp_path / "notes.md"), cfg)] == ["markdown"]
    assert [d["format"] for d in read_file(str(tmp_path / "notes.txt"), cfg)] == ["text"]
    formats = {d["id"]: d["format"] for d in read_file(str(tmp_path / "docs.jsonl"), cfg)}
    assert formats == {"a": "markdown", "b": "html", "c": "text", "d": "text", "e": "text"}
