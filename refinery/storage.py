"""Paths and URIs (local, s3://, gs://, ...) through pyarrow filesystems, so jobs take either."""

from __future__ import annotations

import os
import tempfile
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
    """Replace the file whole: a reader sees the old text or the new, never a part (local files:
    a synced temporary file renamed over it; object stores: one PUT is atomic already)."""
    fs, inner = resolve(path)
    parent = inner.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(inner) as out:
            out.write(text.encode("utf-8"))
        return
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, inner)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: str) -> str:
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as src:
        return src.read().decode("utf-8")
