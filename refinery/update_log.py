"""A durable, append-only log of index updates (upserts and deletes), kept in a directory given
by path or URI, so every reader of a snapshot can apply the same updates in the same order.

Layout: one file per append, named by its position (`00000000000000000042.entry`), holding a
framed record (magic, body length, CRC-32 of the body, then the body: JSON with each vector as
base64 float32). Positions are 1, 2, 3, ...; position 0 means "no entry".

Why one file per append, claimed by hard link (local directories): an append writes its record
to a private temporary file, fsyncs it, then `os.link`s it to the next free position's name and
fsyncs the directory. `link` fails with EEXIST when the name exists, atomically, across
processes (and on NFS), so two writers never take one position, and a name, once there, always
holds a complete record: a crash mid-write leaves only a temporary file, which readers never
see. A writer tries position n only after seeing n - 1 exist (in a listing or by its own EEXIST),
so the positions present are always 1..last with no gap: a reader reads n + 1, n + 2, ... until
one is missing, without listing, and never passes an entry that a slower writer still has to
publish. O_APPEND on one file was the alternative; its offsets would not survive a record torn
mid-file by a crashed writer followed by other writers' records, and it needs a scan to resync.

Object storage (s3://, gs://, ... through pyarrow): each append is one immutable object, durable
once written. Pyarrow exposes no create-if-absent, so there the claim is a check then a write:
correct with one appender per log; several appenders need conditional writes (S3 If-None-Match,
GCS ifGenerationMatch=0) in `_ObjectStore.publish`.

A record that fails its frame or checksum (a torn or corrupted file) is skipped with a warning,
never applied and never fatal. Reading holds one record in memory at a time.

Compaction (not done here): write a checkpoint (a snapshot whose manifest records position P,
or a record folding 1..P), then delete `*.entry` files up to P and stale `.tmp-*` files; the
first position present becomes the base that readers start from, and a reader asked for an
older position must load that checkpoint first.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow.fs as pafs

from refinery.storage import resolve

log = logging.getLogger(__name__)

MAGIC = b"RUL1"
_HEADER = struct.Struct("<4sII")  # magic, body length, CRC-32 of the body
SUFFIX = ".entry"
_DIGITS = 20


class UpdateLogError(ValueError):
    """An update that cannot be logged; the message says what is wrong."""


@dataclass(frozen=True, eq=False)  # eq would compare vectors element-wise, ambiguously
class Upsert:
    id: int
    vector: np.ndarray  # float32, one dimension
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delete:
    ids: tuple[int, ...]


Entry = Upsert | Delete


class Record(NamedTuple):
    """One append: its position and its entries, in the order they were given."""

    position: int
    entries: list[Entry]


class UpdateLog:
    """The log in `location` (a directory path or URI; created on first append)."""

    def __init__(self, location: str) -> None:
        self.location = location
        fs, inner = resolve(location)
        local = isinstance(fs, pafs.LocalFileSystem)
        self._store = _LocalStore(inner) if local else _ObjectStore(fs, inner)
        self._next: int | None = None  # this writer's next position to try

    def append(self, entries: Sequence[Entry]) -> int:
        """Logs the entries as one record; returns its position once the record is durable."""
        if not entries:
            raise UpdateLogError("an append needs at least one entry")
        data = encode(entries)
        if self._next is None:
            self._next = self._store.last() + 1
        position = self._store.publish(data, self._next)
        self._next = position + 1
        return position

    def read(self, after: int = 0) -> Iterator[Record]:
        """The records after position `after`, in order, up to the last one present now."""
        if after < 0:
            raise UpdateLogError(f"position {after}: positions are 0 or more")
        position = after + 1
        while (data := self._store.get(position)) is not None:
            try:
                entries = decode(data)
            except UpdateLogError as error:
                log.warning("%s: record %d skipped: %s", self.location, position, error)
            else:
                yield Record(position, entries)
            position += 1

    def last(self) -> int:
        """The position of the last record present (0: none)."""
        return self._store.last()


def encode(entries: Sequence[Entry]) -> bytes:
    body = json.dumps([_entry_json(e) for e in entries], separators=(",", ":")).encode()
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def decode(data: bytes) -> list[Entry]:
    if len(data) < _HEADER.size:
        raise UpdateLogError(f"torn record: {len(data)} bytes, shorter than its header")
    magic, length, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if magic != MAGIC:
        raise UpdateLogError(f"not an update record (magic {magic!r})")
    if len(body) != length:
        raise UpdateLogError(f"torn record: body of {len(body)} bytes, header says {length}")
    if zlib.crc32(body) != crc:
        raise UpdateLogError("record fails its checksum")
    try:
        return [_entry_of(item) for item in json.loads(body)]
    except (ValueError, KeyError, TypeError) as error:  # checksummed, yet not ours
        raise UpdateLogError(f"unreadable record: {error!r}") from None


def _entry_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, Delete):
        return {"op": "delete", "ids": [_checked_id(i) for i in entry.ids]}
    if not isinstance(entry, Upsert):
        raise UpdateLogError(f"not an update entry: {type(entry).__name__}")
    _checked_id(entry.id)
    vector = np.asarray(entry.vector)
    if vector.ndim != 1 or not np.isfinite(vector).all():
        raise UpdateLogError(f"id {entry.id}: a vector is one row of finite numbers")
    raw = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    try:
        payload = json.loads(json.dumps(entry.payload))
    except (TypeError, ValueError) as error:
        raise UpdateLogError(f"id {entry.id}: payload is not JSON: {error}") from None
    vector_text = base64.b64encode(raw).decode()
    return {"op": "upsert", "id": int(entry.id), "vector": vector_text, "payload": payload}


def _checked_id(i: Any) -> int:
    if isinstance(i, bool) or not isinstance(i, int | np.integer):
        raise UpdateLogError(f"id {i!r}: ids are integers")
    return int(i)


def _entry_of(item: dict[str, Any]) -> Entry:
    if item["op"] == "delete":
        return Delete(tuple(item["ids"]))
    vector = np.frombuffer(base64.b64decode(item["vector"]), dtype="<f4").astype(np.float32)
    return Upsert(item["id"], vector, item["payload"])


def _name(position: int) -> str:
    return f"{position:0{_DIGITS}d}{SUFFIX}"


def _position_of(name: str) -> int | None:
    stem = name.removesuffix(SUFFIX)
    return int(stem) if name.endswith(SUFFIX) and stem.isdigit() else None


class _LocalStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def publish(self, data: bytes, position: int) -> int:
        """Writes the record, then links it to the first free position from `position` on."""
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, f".tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:  # write may take less than all of it
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            while not _link(tmp, os.path.join(self.directory, _name(position))):
                position += 1
        finally:
            os.unlink(tmp)
        _fsync_dir(self.directory)
        return position

    def get(self, position: int) -> bytes | None:
        try:
            with open(os.path.join(self.directory, _name(position)), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def last(self) -> int:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        return max((p for n in names if (p := _position_of(n)) is not None), default=0)


def _link(source: str, target: str) -> bool:
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    return True


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ObjectStore:
    def __init__(self, fs: pafs.FileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory.rstrip("/")

    def _path(self, position: int) -> str:
        return f"{self.directory}/{_name(position)}"

    def publish(self, data: bytes, position: int) -> int:
        """Writes the record as the first absent position from `position` on."""
        while self.fs.get_file_info(self._path(position)).type != pafs.FileType.NotFound:
            position += 1
        self.fs.create_dir(self.directory, recursive=True)
        # The object appears whole when the stream closes: no reader sees part of it.
        with self.fs.open_output_stream(self._path(position)) as out:
            out.write(data)
        return position

    def get(self, position: int) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._path(position)) as src:
                return src.read()
        except FileNotFoundError:
            return None

    def last(self) -> int:
        selector = pafs.FileSelector(self.directory, allow_not_found=True)
        names = (info.base_name for info in self.fs.get_file_info(selector))
        return max((p for n in names if (p := _position_of(n)) is not None), default=0)
