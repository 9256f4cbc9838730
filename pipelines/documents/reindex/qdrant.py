"""Qdrant for reindexed versions: a collection per version (`ALIAS-VERSION`), and the name
readers use (`runtime.qdrant.collection`) an alias moved to the new collection in one
`update_collection_aliases` call once the version passed validation. The collection it named
before is kept, for a rollback (`update_collection_aliases` back to it); older ones beyond
`reindex.keep_versions` are deleted.

The documents job upserts into a collection of that very name; Qdrant refuses an alias named
like a collection, so a reindex refuses to start over one (the message says what to do)
rather than delete what serves.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.documents import qdrant
from pipelines.documents.reindex.config import VERSION_NAME


class QdrantAliasError(RuntimeError):
    """The alias's name is taken by a collection."""


def aliases(client: Any) -> dict[str, str]:
    return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}


def check_alias(client: Any, alias: str) -> None:
    """Refuses an alias name that a collection holds (before anything is built)."""
    names = {c.name for c in client.get_collections().collections}
    if alias in names:
        raise QdrantAliasError(
            f"Qdrant collection {alias!r} is a collection, not an alias: the reindex writes a "
            f"collection per version and moves an alias named {alias!r} between them. Set "
            "runtime.qdrant.collection (and Serve's qdrant.collection) to a new alias name, "
            "or delete the collection"
        )


def write_collection(
    client: Any, alias: str, version: str, table: pa.Table, batch_size: int, retries: int
) -> tuple[str, int]:
    """The version's collection, filled with every row of `table` (with its vectors)."""
    name = f"{alias}-{version}"
    qdrant.ensure_collection(client, name, table.schema.field("vector").type.list_size)
    return name, qdrant.upsert(client, name, [_with_point_fields(table)], batch_size, retries)


def _with_point_fields(table: pa.Table) -> pa.Table:
    """A row upserted through the API may lack the chunk id (a point's id derives from it) and
    the metadata JSON: its index id, and no metadata, stand in."""
    ids = pc.coalesce(table["id"], pc.cast(table["index_id"], pa.string()))
    table = table.set_column(table.schema.get_field_index("id"), "id", ids)
    if "metadata" in table.column_names:
        metadata = pc.coalesce(table["metadata"], pa.scalar("{}"))
        table = table.set_column(table.schema.get_field_index("metadata"), "metadata", metadata)
    return table


def switch_alias(client: Any, alias: str, collection: str) -> str | None:
    """Points `alias` at `collection` in one update (readers see the old or the new one);
    returns the collection it named before."""
    from qdrant_client.models import (
        CreateAlias,
        CreateAliasOperation,
        DeleteAlias,
        DeleteAliasOperation,
    )

    previous = aliases(client).get(alias)
    operations: list[Any] = []
    if previous is not None:
        operations.append(DeleteAliasOperation(delete_alias=DeleteAlias(alias_name=alias)))
    operations.append(
        CreateAliasOperation(create_alias=CreateAlias(collection_name=collection, alias_name=alias))
    )
    client.update_collection_aliases(change_aliases_operations=operations)
    return previous


def prune_collections(client: Any, alias: str, keep: int, protected: set[str]) -> list[str]:
    """Deletes the version collections of `alias` but the newest `keep` and the protected
    ones (those an alias names among them); returns their names."""
    prefix = f"{alias}-"
    ours = sorted(
        c.name for c in client.get_collections().collections
        if c.name.startswith(prefix) and VERSION_NAME.fullmatch(c.name[len(prefix):])
    )  # fmt: skip
    named = set(aliases(client).values())
    removed = [n for n in ours[:-keep] if n not in protected and n not in named]
    for name in removed:
        client.delete_collection(name)
    return removed
