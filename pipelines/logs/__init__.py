"""LLM log analytics: LogStore over JSONL logs, on in-process Arrow or on Ray Data."""

from pipelines.logs.parse import Quarantined
from pipelines.logs.query import QueryError, UnknownColumnError
from pipelines.logs.store import LogStore, Query, ScanStats, query_columns

__all__ = [
    "LogStore",
    "Query",
    "QueryError",
    "Quarantined",
    "ScanStats",
    "UnknownColumnError",
    "query_columns",
]
