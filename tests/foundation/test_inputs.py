"""One listing of input files for every job (refinery/inputs.py): the same path, directory or
glob picks the same files in the documents job and the logs job."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.logs.sources import LOG_SUFFIXES
from pipelines.logs.sources import list_files as list_log_files
from refinery.inputs import InputFile, list_input_files

NAMES = (
    "a.jsonl", "notes.txt", "sub/b.jsonl", "sub/c.html", "sub/deep/d.jsonl",
    ".hidden/e.jsonl", "sub/.f.jsonl.swp", "x.log",
)  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "a.jsonl").write_text("{}\n{}\n")
    return tmp_path


def names(root: Path, files: list) -> list[str]:
    return [str(Path(f.path).relative_to(root)) for f in files]


def test_a_directory_lists_every_visible_file(tree: Path) -> None:
    assert names(tree, list_input_files(tree)) == [
        "a.jsonl", "notes.txt", "sub/b.jsonl", "sub/c.html", "sub/deep/d.jsonl", "x.log"
    ]  # fmt: skip
    logs = ["a.jsonl", "sub/b.jsonl", "sub/deep/d.jsonl", "x.log"]
    assert names(tree, list_input_files(tree, LOG_SUFFIXES)) == logs
    assert names(tree, list_log_files(tree)) == logs


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.jsonl", ["a.jsonl"]),  # one segment: not sub/b.jsonl
        ("sub/*", ["sub/b.jsonl", "sub/c.html"]),
        ("**/*.jsonl", ["a.jsonl", "sub/b.jsonl", "sub/deep/d.jsonl"]),
        ("sub/[bc].*", ["sub/b.jsonl", "sub/c.html"]),
        ("*.txt", ["notes.txt"]),  # named by the pattern: counts whatever the suffixes
    ],
)
def test_a_glob_picks_the_same_files_for_both_jobs(
    tree: Path, pattern: str, expected: list[str]
) -> None:
    source = str(tree / pattern)
    assert names(tree, list_input_files(source)) == expected
    assert names(tree, list_log_files(source)) == expected


def test_files_uris_lists_and_missing_paths(tree: Path) -> None:
    assert list_input_files(f"file://{tree}/a.jsonl") == [InputFile(str(tree / "a.jsonl"), 6)]
    both = list_input_files([tree / "x.log", str(tree / "*.log"), tree / "notes.txt"])
    assert names(tree, both) == ["notes.txt", "x.log"]  # each once
    with pytest.raises(FileNotFoundError, match="nope"):
        list_input_files(tree / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        list_input_files(str(tree / "nope" / "*.jsonl"))
    with pytest.raises(FileNotFoundError, match="no log files"):
        list_log_files(str(tree / "*.parquet"))


def test_a_directory_named_like_a_log_is_listed_for_the_reader_to_report(tree: Path) -> None:
    (tree / "dir.jsonl").mkdir()
    assert "dir.jsonl" in names(tree, list_log_files(str(tree / "*.jsonl")))
    assert "dir.jsonl" not in names(tree, list_input_files(str(tree / "*.jsonl")))
