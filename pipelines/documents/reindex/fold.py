"""The real-time update log (refinery/update_log.py) folded into a reindexed version.

Serving applies the log on top of a snapshot after the position its manifest records. A new
version built from the corpus alone would drop what was upserted through the API and bring
back what was deleted through it, so the reindex applies the log after the champion's position
up to its last record, and records that position in the new manifest: serving the new version
then applies only what came after.

An id the log touched keeps following the log in later versions, or the next reindex (which
reads the log only after the position its champion includes) would bring a deleted chunk back
from the corpus, or lose an upserted one the corpus does not hold. Each version records those
ids in LOG_STATE_FILE beside its index: the last operation and the corpus's text hash of the id
when it was folded. Once the corpus changes that chunk (another text, or gone, or new), the
corpus is the newer word and the id follows the corpus again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.storage import resolve
from refinery.update_log import Delete, UpdateLog, Upsert

log = logging.getLogger(__name__)

LOG_STATE_FILE = "log_state.parquet"
_SCHEMA = pa.schema(
    [("index_id", pa.int64()), ("op", pa.string()), ("corpus_hash", pa.string())]
)  # fmt: skip

_LOCATION = b"refinery.update_log"
Op = Literal["upsert", "delete"]


@dataclass(frozen=True)
class Governed:
    op: Op
    corpus_hash: str | None  # the corpus's text hash of the id when the entry was folded


@dataclass
class LogState:
    """The ids that follow the log rather than the corpus, by index id, and the log's location:
    the next reindex reads the same log whatever folder this version lives in."""

    ids: dict[int, Governed] = field(default_factory=dict)
    location: str | None = None

    @classmethod
    def read(cls, folder: str) -> LogState:
        """The state a version recorded in `folder`; empty where it recorded none (a version
        the document job wrote, which folded nothing)."""
        fs, inner = resolve(f"{folder.rstrip('/')}/{LOG_STATE_FILE}")
        if not fs.get_file_info(inner).is_file:
            return cls()
        table = pq.read_table(inner, filesystem=fs)
        location = (table.schema.metadata or {}).get(_LOCATION)
        return cls(
            {
                i: Governed(op, h)
                for i, op, h in zip(
                    table["index_id"].to_pylist(),
                    table["op"].to_pylist(),
                    table["corpus_hash"].to_pylist(),
                    strict=True,
                )
            },
            location.decode() if location else None,
        )

    def write(self, folder: str) -> None:
        fs, inner = resolve(f"{folder.rstrip('/')}/{LOG_STATE_FILE}")
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        items = sorted(self.ids.items())
        table = pa.table(
            {
                "index_id": [i for i, _ in items],
                "op": [g.op for _, g in items],
                "corpus_hash": [g.corpus_hash for _, g in items],
            },
            schema=_SCHEMA.with_metadata({_LOCATION: self.location or ""}),
        )
        pq.write_table(table, inner, filesystem=fs)

    def released(self, corpus_hash: Callable[[int], str | None]) -> list[int]:
        """Drops and returns the ids whose chunk the corpus changed since the log's entry."""
        gone = [i for i, g in self.ids.items() if corpus_hash(i) != g.corpus_hash]
        for i in gone:
            del self.ids[i]
        return gone

    def upserted(self) -> set[int]:
        return {i for i, g in self.ids.items() if g.op == "upsert"}


@dataclass
class Folded:
    """What the log added after the champion: its upserts by id (the last of each), the state
    of every id the log governs now, and the position folded up to."""

    state: LogState
    upserts: dict[int, Upsert]
    position: int | None
    records: int = 0
    upsert_entries: int = 0
    delete_entries: int = 0
    skipped: int = 0  # upserts dropped: they no longer fit the version (see build.py)

    def summary(self, after: int | None, location: str | None) -> dict[str, object]:
        return {
            "location": location,
            "after": after,
            "position": self.position,
            "records": self.records,
            "upserts": self.upsert_entries,
            "deletes": self.delete_entries,
            "skipped": self.skipped,
            "governed_ids": len(self.state.ids),
        }


def fold_log(
    update_log: UpdateLog | None,
    after: int,
    state: LogState,
    corpus_hash: Callable[[int], str | None],
) -> Folded:
    """Apply the records after `after`, in order, to `state`. The position is the last record
    read (records appended meanwhile come after it, and serving applies them); `after` when
    there was none."""
    folded = Folded(state, {}, after or None)
    if update_log is None:
        return folded
    for record in update_log.read(after=after):
        folded.records += 1
        folded.position = record.position
        for entry in record.entries:
            if isinstance(entry, Upsert):
                folded.upsert_entries += 1
                folded.upserts[entry.id] = entry
                state.ids[entry.id] = Governed("upsert", corpus_hash(entry.id))
            elif isinstance(entry, Delete):
                folded.delete_entries += 1
                for i in entry.ids:
                    folded.upserts.pop(i, None)
                    state.ids[i] = Governed("delete", corpus_hash(i))
    return folded
