"""Document ids made unique before any step keys on them (dedup, chunk ids, the index).

Ids come from the input, so two records may share one. The kept documents' (id, position,
text digest) rows are hash-shuffled by id (shuffle.py); within an id, rows are ordered by
their position in the input, (source, line), so the first is kept whatever the worker
count or task order. A later row with the same text is the same record read twice and is
dropped (`repeated`); one with other text is quarantined (`duplicate_id`), so no id ever
stands for two texts and no document is lost without a record of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.documents.shuffle import hash_shuffle

PARTITIONS = 8
_NO_KEYS = pa.schema(
    [("partition", pa.int64()), ("id", pa.string()), ("source", pa.string()),
     ("line", pa.int64()), ("digest", pa.string())]
)  # fmt: skip
_NO_REPEATS = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("line", pa.int64()),
     ("reason", pa.string()), ("first_source", pa.string()), ("first_line", pa.int64())]
)  # fmt: skip


def row_keys(table: pa.Table) -> pa.Array:
    """One string per row naming its place in the input: source, NUL, line (empty for a
    whole-file document). Unique per row, unlike the id."""
    line = pc.fill_null(pc.cast(table["line"], pa.string()), "")
    return pc.binary_join_element_wise(table["source"], line, "\0")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _id_keys(table: pa.Table, select: Callable[[pa.Table], pa.Table], partitions: int) -> pa.Table:
    docs = select(table)
    if docs.num_rows == 0:
        return _NO_KEYS.empty_table()
    ids = docs["id"].to_pylist()
    return pa.table(
        {
            "partition": pa.array([_bucket(x, partitions) for x in ids], pa.int64()),
            "id": docs["id"],
            "source": docs["source"],
            "line": docs["line"],
            "digest": pa.array([_digest(t) for t in docs["text"].to_pylist()], pa.string()),
        }
    )


def _bucket(doc_id: str, partitions: int) -> int:
    # Not hash(): Python salts str hashes per process, and each block splits in its own.
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % partitions


def _repeats(table: pa.Table) -> pa.Table:
    """Every row after the first of its id, with its reason and the first row's place."""
    if table.num_rows < 2:
        return _NO_REPEATS.empty_table()
    table = table.sort_by([("id", "ascending"), ("source", "ascending"), ("line", "ascending")])
    ids = table["id"]
    same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    later = np.flatnonzero(same) + 1
    if len(later) == 0:
        return _NO_REPEATS.empty_table()
    # Each later row's first row: the start of its run of equal ids.
    starts = np.flatnonzero(np.r_[True, ~same])
    first = starts[np.searchsorted(starts, later, side="right") - 1]
    take = partial(pc.take, indices=pa.array(later))
    first_of = partial(pc.take, indices=pa.array(first))
    digest = table["digest"]
    reason = pc.if_else(
        pc.equal(take(digest), first_of(digest)), pa.scalar("repeated"), pa.scalar("duplicate_id")
    )
    return pa.table(
        {
            "id": take(ids),
            "source": take(table["source"]),
            "line": take(table["line"]),
            "reason": reason,
            "first_source": first_of(table["source"]),
            "first_line": first_of(table["line"]),
        }
    )


def repeated_rows(
    blocks: list[Any], select: Callable[[pa.Table], pa.Table], partitions: int = PARTITIONS
) -> pa.Table:
    """The rows to remove so that every id is unique, from blocks given as Ray object refs;
    `select` picks a block's documents (id, source, line, text)."""
    keys = partial(_id_keys, select=select, partitions=partitions)
    found = hash_shuffle(blocks, keys, _repeats, partitions)
    return pa.concat_tables(found).sort_by([("source", "ascending"), ("line", "ascending")])
