"""The payload rows of a served snapshot under real-time updates: readers never lock, and an
update costs what it changes, not what the table holds.

Rows are only ever appended: an upsert adds its id's new row and retires the old one. The table
is a few segments of geometrically growing size (a new segment merges into the one before while
that one is not much bigger), so each row is copied a logarithmic number of times and the
table has a logarithmic number of chunks. Which rows are live is versioned: `killed_at[row]` is
the version that retired the row (NEVER: live), written in place only with the next version,
above every version a reader holds, so a reader's view of its own version never changes. When
retired rows outnumber live ones, a compaction copies the live ones to a new generation: its
cost is in proportion to the garbage it reclaims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class RowsState:
    """What a search reads together, published whole by one reference swap."""

    table: pa.Table  # index_id plus the payload columns
    payloads: pa.Table  # the same rows without index_id: what hits carry
    # id -> its current row. Shared by the states of one generation and filled in only after
    # the state holding that row is published; a compaction starts a new dict.
    row_of: dict[int, int]
    killed_at: np.ndarray  # per row: the version that retired it; see the module docstring
    version: int

    @property
    def live(self) -> np.ndarray:
        """Per row: still its id's current row, as of this state's version."""
        return self.killed_at[: self.table.num_rows] > self.version


class PayloadRows:
    """The published `state` plus the writer's side; writers serialise among themselves."""

    def __init__(self, table: pa.Table) -> None:
        self._start(table, version=0)

    def resolve(self, ids: list[int]) -> tuple[list[int | None], RowsState]:
        """Each id's current row (None: not served), and a state whose table holds them all."""
        while True:
            state = self.state
            rows = [state.row_of.get(i) for i in ids]
            # Read after the lookups: within a generation, the latest table holds every row
            # its dict pointed to. A compaction in between renumbered the rows: look again.
            latest = self.state
            if latest.row_of is state.row_of:
                return rows, latest

    def upsert(self, new_rows: pa.Table) -> list[int]:
        """Appends rows (distinct ids) as their ids' current rows; returns the ids replaced."""
        state = self.state
        ids = new_rows["index_id"].to_pylist()
        replaced = [i for i in ids if i in state.row_of]
        first = state.table.num_rows
        killed = self._room(first + len(ids))
        killed[[state.row_of[i] for i in replaced]] = state.version + 1
        self._publish(self._append(new_rows), state.row_of, state.version + 1)
        state.row_of.update(zip(ids, range(first, first + len(ids)), strict=True))
        self._compact_if_mostly_retired()
        return replaced

    def delete(self, ids: list[int]) -> list[int]:
        """Retires the rows of the ids served; returns those ids."""
        state = self.state
        present = [i for i in dict.fromkeys(ids) if i in state.row_of]
        if present:
            self._killed[[state.row_of.pop(i) for i in present]] = state.version + 1
            self._publish(state.table, state.row_of, state.version + 1)
            self._compact_if_mostly_retired()
        return present

    def _start(self, table: pa.Table, version: int) -> None:
        table = table.combine_chunks()
        self._segments = [table]
        self._killed = np.full(table.num_rows, NEVER, dtype=np.int64)
        row_of = {i: row for row, i in enumerate(table["index_id"].to_pylist())}
        self._publish(table, row_of, version)

    def _publish(self, table: pa.Table, row_of: dict[int, int], version: int) -> None:
        payloads = table.drop_columns(["index_id"])
        self.state = RowsState(table, payloads, row_of, self._killed, version)

    def _room(self, rows: int) -> np.ndarray:
        """killed_at with room for `rows`; growing copies it to a new array (doubling), so
        readers of the old one keep their view."""
        if rows > len(self._killed):
            grown = np.full(max(rows, 2 * len(self._killed)), NEVER, dtype=np.int64)
            grown[: len(self._killed)] = self._killed
            self._killed = grown
        return self._killed

    def _append(self, new_rows: pa.Table) -> pa.Table:
        segments = self._segments
        segments.append(new_rows.combine_chunks())
        while len(segments) > 1 and segments[-2].num_rows <= 2 * segments[-1].num_rows:
            last = segments.pop()
            segments[-1] = pa.concat_tables([segments[-1], last]).combine_chunks()
        return pa.concat_tables(segments)

    def _compact_if_mostly_retired(self) -> None:
        state = self.state
        retired = state.table.num_rows - len(state.row_of)
        if retired > len(state.row_of):
            self._start(state.table.filter(pa.array(state.live)), state.version + 1)

    @property
    def chunks(self) -> int:
        """How many pieces the table is in: what a `take` across it pays for."""
        return self.state.table.column(0).num_chunks
