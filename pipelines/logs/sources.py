"""Log files (listed by refinery/inputs.py) and their split into line-aligned byte chunks.

A chunk owns the lines that start inside its byte range, so chunks of one file can be parsed
in any order, by any process, and every line is parsed exactly once. Chunks are read, not
mapped: a mapped file that shrinks while it is read (copytruncate log rotation) kills the
process with SIGBUS, where a read comes back short and says so (FileShrank).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from pipelines.logs.schema import MAX_LINE_BYTES
from refinery.inputs import Source, list_input_files
from refinery.storage import resolve

LOG_SUFFIXES = (".jsonl", ".ndjson", ".json", ".log")
_WINDOW = 1 << 16  # bytes read past a chunk's end for its last line, or searched at a time
_LF = 10


@dataclass(frozen=True)
class LogFile:
    path: str  # as given by the user (or found under their directory), for messages
    uri: str  # what refinery.storage.resolve opens
    size: int


@dataclass(frozen=True)
class Chunk:
    file: LogFile
    index: int  # position among the file's chunks; line numbers are fixed up in this order
    start: int
    end: int


def list_files(source: Source) -> list[LogFile]:
    """Every log file named by `source` (refinery/inputs.py: the listing every job shares;
    under a directory, names ending in LOG_SUFFIXES), sorted; an error if there is none."""
    files = list_input_files(source, LOG_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no log files found for {source!r}")
    return [LogFile(f.path, f.path, f.size) for f in files]


def plan_chunks(files: Sequence[LogFile], chunk_bytes: int) -> list[Chunk]:
    chunks = []
    for file in files:
        starts = range(0, max(file.size, 1), chunk_bytes)
        for index, start in enumerate(starts):
            chunks.append(Chunk(file, index, start, min(start + chunk_bytes, file.size)))
    return chunks


class FileShrank(OSError):
    """The file is shorter than when it was listed (truncated or rotated while read); `data`
    holds the complete lines of the chunk that were read before its end."""

    def __init__(self, file: LogFile, size: int, data: memoryview) -> None:
        super().__init__(
            f"{file.path}: {size} bytes when read, {file.size} when listed (truncated or "
            "rotated while read); the lines from here on were not read"
        )
        self.data = data


def read_chunk(chunk: Chunk, max_line: int = MAX_LINE_BYTES) -> memoryview:
    """The bytes of the lines that start in [start, end), the last one complete unless it
    runs more than `max_line` bytes past `end`: then it ends there, with a LF added, long
    enough to be quarantined (line_too_long) without holding all of it."""
    # Read one byte early: if it is a newline, the first line starts exactly at `start`.
    begin = max(chunk.start - 1, 0)
    stop, rest = chunk.end - begin, chunk.file.size - begin  # the chunk's and file's end
    with _opened(chunk.file.uri) as read_at:
        data = read_at(begin, min(stop + _WINDOW, rest))
        first = _find_lf(data, 0, stop) + 1 if chunk.start > 0 else 0
        if chunk.start > 0 and not first:  # inside a long line: the rest of it is not read
            first, short = len(data), len(data) < min(stop, rest)
        else:
            data, short = _to_line_end(read_at, data, begin, stop, rest, max_line)
    if short:
        last = max(_rfind_lf(data, first) + 1, first)  # a line cut short is not a line
        raise FileShrank(chunk.file, begin + len(data), memoryview(data)[first:last])
    end = len(data) if stop == rest else _find_lf(data, stop - 1, len(data)) + 1
    return memoryview(data)[first : end or len(data)]


ReadAt = Callable[[int, int], np.ndarray]  # (offset, bytes) -> up to that many bytes


@contextmanager
def _opened(uri: str) -> Iterator[ReadAt]:
    fs, inner = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fd = os.open(inner, os.O_RDONLY)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):  # opens, and reads nothing when empty
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), inner)
            yield lambda offset, n: _pread(fd, offset, n)
        finally:
            os.close(fd)
    else:
        with fs.open_input_file(inner) as f:
            yield lambda offset, n: np.frombuffer(f.read_at(n, offset), np.uint8)


def _pread(fd: int, offset: int, n: int) -> np.ndarray:
    """Up to n bytes from offset, fewer only at the end of the file. Into a NumPy buffer:
    large ones get huge pages, which makes the copy about as cheap as mapping the file."""
    out = np.empty(n, np.uint8)
    done = 0
    while done < n:
        got = os.preadv(fd, [memoryview(out)[done:]], offset + done)
        if not got:
            break
        done += got
    return out[:done]


def _to_line_end(
    read_at: ReadAt, data: np.ndarray, begin: int, stop: int, rest: int, max_line: int
) -> tuple[np.ndarray, bool]:
    """`data`, read from `begin`, read on to the end of the line holding byte stop - 1 (or to
    the end of the file, `rest` bytes on when listed), and whether the file ended before
    that: it is shorter than when it was listed. A line that goes on past stop + max_line + 1
    is cut there and given a LF: it is over the limit wherever it started."""
    cut = stop + max_line + 1
    parts, done = [data], len(data)
    ended = done < min(stop + _WINDOW, rest)
    found = stop >= rest or _find_lf(data, stop - 1, min(done, cut)) >= 0
    while not (found or ended or done == rest or done >= cut):  # a line past the window
        want = min(max(done, _WINDOW), rest - done, cut - done)
        parts.append(read_at(begin + done, want))
        done += len(parts[-1])
        ended = len(parts[-1]) < want
        found = _find_lf(parts[-1], 0, len(parts[-1])) >= 0
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if not found and done >= cut and cut < rest:
        return np.concatenate([data[:cut], np.array([_LF], np.uint8)]), False
    return data, len(data) < rest and not (found and stop < rest)


def _find_lf(data: np.ndarray, start: int, stop: int) -> int:
    """Index of the first LF of data[start:stop], or -1; searched a window at a time."""
    for at in range(start, stop, _WINDOW):
        cut = data[at : min(at + _WINDOW, stop)].tobytes().find(b"\n")
        if cut >= 0:
            return at + cut
    return -1


def _rfind_lf(data: np.ndarray, start: int) -> int:
    """Index of the last LF of data[start:], or start - 1."""
    hits = np.flatnonzero(data[start:] == _LF)
    return start + int(hits[-1]) if len(hits) else start - 1
