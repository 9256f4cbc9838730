"""An index snapshot as the document pipeline writes it (DIR/index/), loaded for serving.

manifest.json names the model, dimension, metric and the Parquet documents; the index file
holds the vectors by `index_id`; the documents give each id its payload (text, source, ...).
Search logic lives here, apart from Ray Serve, so it is testable without a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from refinery.storage import read_text, resolve
from serve.protocol import Hit, PayloadFilter


class SnapshotError(ValueError):
    """A snapshot that cannot be served; the message names the file."""


@dataclass
class Manifest:
    model: str | None
    dimension: int
    metric: str
    count: int
    index: str
    documents: str

    @classmethod
    def read(cls, snapshot_dir: str) -> Manifest:
        path = f"{snapshot_dir.rstrip('/')}/manifest.json"
        try:
            data = json.loads(read_text(path))
        except (OSError, json.JSONDecodeError) as error:
            raise SnapshotError(f"{path}: cannot read manifest: {error}") from None
        missing = [
            key for key in ("dimension", "metric", "index", "documents") if not data.get(key)
        ]
        if missing:
            raise SnapshotError(f"{path}: manifest lacks {', '.join(missing)}")
        return cls(
            data.get("model"),
            int(data["dimension"]),
            data["metric"],
            int(data.get("count", 0)),
            data["index"],
            data["documents"],
        )


class Snapshot:
    """A loaded index plus payloads; `search` answers many queries with one index call."""

    def __init__(self, snapshot_dir: str) -> None:
        import vectorindex

        self.path = snapshot_dir
        self.manifest = Manifest.read(snapshot_dir)
        fs, inner = resolve(self.manifest.index)
        if not fs.get_file_info(inner).is_file:
            raise SnapshotError(f"{self.manifest.index}: index file not found")
        self.index = vectorindex.load(inner)
        self.table = _load_payload_table(self.manifest.documents)
        # Payloads stay in Arrow; hits look up their rows, so loading builds no Python dicts.
        self.payload_table = self.table.drop_columns(["index_id"])
        self.row_of = {i: row for row, i in enumerate(self.table["index_id"].to_pylist())}
        unmatched = np.setdiff1d(self.index.ids(), self.table["index_id"].to_numpy())
        if len(unmatched):
            raise SnapshotError(
                f"{self.manifest.documents}: no document row for {len(unmatched)} index ids "
                f"(e.g. {unmatched[:3].tolist()}); index and documents are from different runs?"
            )

    def search(
        self, vectors: np.ndarray, k: int, payload_filter: PayloadFilter | None = None
    ) -> list[list[Hit]]:
        allowed = self.allowed_ids(payload_filter) if payload_filter else None
        scores, ids = self.index.search(vectors, k, allowed_ids=allowed)
        return [
            self.hits(row_scores, row_ids) for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        found = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0]
        rows = pa.array([self.row_of[i] for _, i in found], pa.int64())
        payloads = self.payload_table.take(rows).to_pylist()
        return [Hit(id=i, score=s, payload=p) for (s, i), p in zip(found, payloads, strict=True)]

    def allowed_ids(self, payload_filter: PayloadFilter) -> np.ndarray:
        known = [c for c in self.table.column_names if c != "index_id"]
        unknown = sorted(set(payload_filter) - set(known))
        if unknown:
            raise KeyError(
                f"unknown filter field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        mask = None
        for field, wanted in payload_filter.items():
            values = pa.array(wanted if isinstance(wanted, list) else [wanted])
            condition = pc.is_in(self.table[field], value_set=values)
            mask = condition if mask is None else pc.and_(mask, condition)
        return self.table.filter(mask)["index_id"].to_numpy().astype(np.int64)


def _load_payload_table(documents: str) -> pa.Table:
    """index_id plus every payload column (not the vectors: the index holds those)."""
    fs, inner = resolve(documents)
    dataset = pads.dataset(inner, filesystem=fs, format="parquet")
    names = [n for n in dataset.schema.names if n not in ("vector", "index_id")]
    return dataset.to_table(columns=["index_id", *names])
