"""Which files an input names: one listing for every job, so a path, directory or glob
picks the same files in the documents job and the logs job.

- a file: that file, whatever its name;
- a directory: every file under it, at any depth;
- a glob: `*`, `?` and `[...]` match within one path segment, `**` across segments;
- a URI (s3://, gs://, ...) or file:// path of any of these; or a list of them (their union).

Under a directory or glob, names starting with "." are skipped (editor swap files, hidden
checkpoints). A job may give `suffixes`: then a directory contributes only the files whose
names end in one (a glob's matches count whatever their names: the pattern named them), and
a directory that a glob matches and whose name ends in one is listed as well, so that
reading it reports it instead of the listing hiding it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from refinery.storage import is_uri, resolve

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True, order=True)
class InputFile:
    path: str  # a URI, or an absolute local path: what refinery.storage.resolve opens
    size: int  # bytes (0 where the filesystem does not say)


def list_input_files(source: Source, suffixes: tuple[str, ...] | None = None) -> list[InputFile]:
    """The files `source` names, sorted by path, each once. FileNotFoundError for a path
    (or the folder of a glob) that does not exist."""
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    found: set[InputFile] = set()
    for item in items:
        found.update(_expand(os.fspath(item), suffixes))
    return sorted(found)


def _expand(path: str, suffixes: tuple[str, ...] | None) -> list[InputFile]:
    fs, inner = resolve(path)
    prefix = path.split("://", 1)[0] + "://" if is_uri(path) else ""
    magic = _MAGIC.search(inner)
    base = inner[: inner.rfind("/", 0, magic.start())] if magic else inner
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {path!r}: {base!r} not found")
    if info.type == pafs.FileType.File:
        return [InputFile(prefix + info.path, info.size or 0)]
    entries = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    wanted = [e for e in entries if not _hidden(e.path[len(base) :])]
    if magic:
        wanted = [e for e in wanted if _glob_match(e.path, inner)]
    listed = [e for e in wanted if _counts(e, suffixes, globbed=magic is not None)]
    return [InputFile(prefix + e.path, e.size or 0) for e in listed]


def _counts(entry: pafs.FileInfo, suffixes: tuple[str, ...] | None, globbed: bool) -> bool:
    named = suffixes is not None and entry.path.endswith(suffixes)
    if entry.type == pafs.FileType.File:
        return globbed or suffixes is None or named
    return globbed and named and entry.type == pafs.FileType.Directory


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _glob_match(path: str, pattern: str) -> bool:
    """Segment by segment: `*` stays within one, a `**` segment spans any number (none too)."""
    return _match_parts(path.split("/"), pattern.split("/"))


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[skip:], pattern[1:]) for skip in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _match_parts(parts[1:], pattern[1:])
    )
