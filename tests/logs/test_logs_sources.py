"""Files that change or vanish between listing and reading: reported, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.logs.arrow_engine import ArrowEngine
from pipelines.logs.prices import load_prices
from pipelines.logs.ray_engine import RayEngine
from pipelines.logs.schema import MAX_LINE_BYTES
from pipelines.logs.sources import list_files, plan_chunks, read_chunk

REPO = Path(__file__).resolve().parents[2]


def write_lines(path: Path, n: int) -> list[bytes]:
    lines = [json.dumps({"model": "m", "tokens_output": i}).encode() for i in range(n)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def stores(files, chunk_bytes: int, max_line: int = MAX_LINE_BYTES):
    prices = load_prices(None)
    yield ArrowEngine(files, prices, chunk_bytes, max_line)
    yield RayEngine(files, prices, chunk_bytes, max_line)


@pytest.mark.parametrize("chunk_bytes", [100, 1 << 20])
def test_file_truncated_after_listing(ray_session, tmp_path: Path, chunk_bytes: int) -> None:
    """copytruncate: the file is cut (mid-line) after it was listed. The lines before the cut
    are kept, the file is reported once at the first line not read."""
    path = tmp_path / "app.jsonl"
    lines = write_lines(path, 60)
    files = list_files(path)
    kept = 20
    os.truncate(path, sum(len(line) + 1 for line in lines[:kept]) + 5)
    for store in stores(files, chunk_bytes):
        assert store.scan.rows == kept
        [report] = store.quarantine
        assert (report.file, report.line, report.reason) == (str(path), kept + 1, "file_shrank")
        assert str(path) in report.detail
        assert store.scan.quarantined == {"file_shrank": 1}


def test_file_removed_after_listing(ray_session, tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 10)
    write_lines(tmp_path / "b.jsonl", 10)
    files = list_files(tmp_path)
    os.remove(tmp_path / "a.jsonl")
    for store in stores(files, 64):
        assert store.scan.rows == 10
        assert [(q.file, q.line, q.reason) for q in store.quarantine] == [
            (str(tmp_path / "a.jsonl"), 1, "unreadable")
        ]


def test_a_line_past_the_limit_is_not_read_whole(ray_session, tmp_path: Path) -> None:
    """A chunk holds at most the limit's worth of a long line past its end, and the line is
    quarantined where it is, the lines after it kept, however many chunks it spans."""
    path = tmp_path / "big.jsonl"
    long = json.dumps({"model": "m", "blob": "x" * 300_000})
    path.write_text(f'{{"model": "a"}}\n{long}\n{{"model": "b"}}\n{{"model": "c"}}\n')
    files = list_files(path)
    for chunk_bytes in (100, 1 << 20):
        chunks = plan_chunks(files, chunk_bytes)
        assert max(len(read_chunk(c, max_line=1000)) for c in chunks) <= chunk_bytes + 1003
        for store in stores(files, chunk_bytes, max_line=1000):
            assert store.scan.rows == 3 and store.scan.lines == 4
            assert [(q.line, q.reason) for q in store.quarantine] == [(2, "line_too_long")]
            assert long.startswith(store.quarantine[0].raw)


def test_a_chunk_stays_readable_when_its_file_shrinks(tmp_path: Path) -> None:
    """A chunk's bytes are the reader's own: a mapped file cut under it would kill the
    process with SIGBUS at the first touch of a page past the new end."""
    path = tmp_path / "app.jsonl"
    lines = write_lines(path, 200_000)
    code = (
        "import os\n"
        "from pipelines.logs.sources import list_files, plan_chunks, read_chunk\n"
        f"chunk = plan_chunks(list_files({str(path)!r}), 1 << 30)[0]\n"
        "data = read_chunk(chunk)\n"
        f"os.truncate({str(path)!r}, 0)\n"
        f"assert bytes(data).count(b'\\n') == {len(lines)}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
