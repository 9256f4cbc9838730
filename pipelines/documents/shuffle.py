"""A hash shuffle of small key tables on plain Ray tasks, for both dedup steps.

Ray Data's keyed repartition starts its own aggregator actors for every shuffle: 10-40 s on
two busy cores, longer than the dedup work itself. These tasks run in the worker pool that
the read already warmed. One map task per block turns the block into key rows (a compact
integer `partition` column plus what the reduce needs, never the text) and splits them; one
reduce task per partition receives its rows from every block, so all rows of a key meet in
one task and no process holds every key. Both functions are deterministic, so a task Ray
retries after a worker dies returns the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KeysFn = Callable[[pa.Table], pa.Table]
ReduceFn = Callable[[pa.Table], pa.Table]


def hash_shuffle(
    blocks: list[Any], keys: KeysFn, reduce: ReduceFn, partitions: int
) -> list[pa.Table]:
    """The reduce's output for each partition, for blocks given as Ray object refs."""
    import ray

    split = ray.remote(_split).options(num_returns=partitions)
    parts = [split.remote(block, keys, partitions) for block in blocks]
    if partitions == 1:  # one return value is the table itself, not a tuple
        parts = [[p] for p in parts]
    merge = ray.remote(_reduce)
    return ray.get([merge.remote(reduce, *(p[i] for p in parts)) for i in range(partitions)])


def _split(block: pa.Table, keys: KeysFn, partitions: int) -> tuple[pa.Table, ...] | pa.Table:
    rows = keys(block)
    rows = rows.take(pc.sort_indices(rows["partition"]))
    bounds = np.searchsorted(rows["partition"].to_numpy(), np.arange(partitions + 1))
    out = tuple(rows.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return out if partitions > 1 else out[0]


def _reduce(reduce: ReduceFn, *parts: pa.Table) -> pa.Table:
    return reduce(pa.concat_tables(parts))
