"""Empty blocks reach the dedup shuffles with or without the columns an earlier step added
(Ray Data passes an empty block by a map UDF): their key and shingle rows are empty tables of
the same schema as full blocks', so the reduce can concatenate them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.documents.dedup import _band_rows, _content_keys, _shingles_of


@pytest.mark.parametrize("block", [pa.table({}), pa.table({"id": pa.array([], pa.string())})])
def test_empty_blocks_give_empty_rows_of_the_full_schema(block: pa.Table) -> None:
    full = pa.table(
        {
            "id": ["a"],
            "text": ["some text"],
            "_hash": ["0123456789abcdef0123456789abcdef"],
            "_bands": pa.FixedSizeListArray.from_arrays(pa.array([1, 2], pa.uint64()), 2),
        }
    )
    for keys in (_content_keys, _band_rows):
        empty, rows = keys(block, 4), keys(full, 4)
        assert empty.num_rows == 0 and empty.schema == rows.schema
        assert pa.concat_tables([empty, rows]).num_rows == rows.num_rows
    assert _shingles_of(block, None).column_names == ["id", "_shingles"]
