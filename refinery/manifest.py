"""The snapshot manifest: what the document pipeline writes beside its index (DIR/index/
manifest.json) and what the Serve loader reads. One type, so the writer, the loader, the
tests and the bench cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from refinery.storage import read_text, write_text

MANIFEST_FILE = "manifest.json"
FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot that cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Manifest:
    model: str | None  # the embedding model the vectors came from
    dimension: int | None  # None: documents without vectors
    metric: str  # how the index scores: "ip", "l2" or "cosine"
    count: int  # rows written: documents' chunks, one vector each
    index: str | None  # the index file (path or URI); None: no index was written
    documents: str  # the Parquet documents that give each index id its payload
    corpus_fingerprint: str | None = None
    created_at: str | None = None
    version: str | None = None  # the folder name of a versioned snapshot (documents, index)
    format: int = FORMAT
    # The last update-log position (refinery/update_log.py) this snapshot includes; None: none,
    # so a reader applies the log from its start.
    update_log_position: int | None = None

    def write(self, snapshot_dir: str) -> str:
        """DIR/manifest.json; returns its path."""
        path = manifest_path(snapshot_dir)
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, snapshot_dir: str) -> Manifest:
        path = manifest_path(snapshot_dir)
        try:
            data = json.loads(read_text(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SnapshotError(f"{path}: cannot read manifest: {error}") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: str = MANIFEST_FILE) -> Manifest:
        """A manifest of a servable snapshot: with an index and its dimension."""
        if not isinstance(data, dict):
            raise SnapshotError(f"{path}: a manifest is a JSON object")
        required = ("dimension", "metric", "index", "documents")
        missing = [key for key in required if not data.get(key)]
        if missing:
            raise SnapshotError(f"{path}: manifest lacks {', '.join(missing)}")
        if data.get("format", FORMAT) != FORMAT:
            raise SnapshotError(f"{path}: manifest format {data['format']}, expected {FORMAT}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        try:
            return cls(**{**values, "dimension": int(values["dimension"]),
                          "count": int(values.get("count", 0))})  # fmt: skip
        except (TypeError, ValueError) as error:
            raise SnapshotError(f"{path}: bad manifest value: {error}") from None

    def check_embedder(self, model: str, dimension: int) -> None:
        """Queries are embedded by `model`: the vectors must come from the same model (a model
        of another name but the same width would answer with nonsense, not an error)."""
        if (model, dimension) != (self.model, self.dimension):
            raise SnapshotError(
                f"{self.documents}: vectors from model {self.model!r} ({self.dimension} dims), "
                f"queries embedded by {model!r} ({dimension} dims); refusing this snapshot"
            )

    def check_index(self, dimension: int, metric: str) -> None:
        """The index file must be what the manifest says it is."""
        if (dimension, metric) != (self.dimension, self.metric):
            raise SnapshotError(
                f"{self.index}: index has dimension {dimension} and metric {metric!r}, "
                f"the manifest says {self.dimension} and {self.metric!r}"
            )


def update_log_location(snapshot_dir: str) -> str:
    """Where a snapshot's real-time updates are logged unless configured: `updates` beside the
    snapshot folder (DIR/updates for DIR/index), outside the versions a new snapshot replaces."""
    parent, _, _ = snapshot_dir.rstrip("/").rpartition("/")
    return f"{parent}/updates" if parent else "updates"


def manifest_path(snapshot_dir: str) -> str:
    return f"{snapshot_dir.rstrip('/')}/{MANIFEST_FILE}"
