"""Paths and URIs (local, s3://, gs://, ...) through pyarrow filesystems, so jobs take either."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and the path inside it; local paths become absolute."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    local = path.removeprefix("file://")
    return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve())


def ensure_dir(path: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(inner, recursive=True)


def write_text(path: str, text: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as out:
        out.write(text.encode("utf-8"))


def read_text(path: str) -> str:
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as src:
        return src.read().decode("utf-8")
