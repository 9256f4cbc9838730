"""Read: files (directory, glob or URI) -> one row per document, or a quarantine row.

Files are listed on the driver (paths only); each Ray task opens its own files, so a bad
file or record costs one quarantine row, never the job. JSONL is decoded and parsed line by
line, so one broken line quarantines that line only, with its file and line number.
"""

from __future__ import annotations

import codecs
import fnmatch
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.documents.config import ReadConfig
from refinery.storage import is_uri, resolve

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("format", pa.string()),
        ("metadata", pa.string()),
        # Quarantine rows: why, and where (line is 1-based; null for a whole file).
        ("error", pa.string()),
        ("detail", pa.string()),
        ("line", pa.int64()),
    ]
)
FORMATS = {
    "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl",
    "parquet": "parquet", "pq": "parquet",
    "html": "html", "htm": "html", "xhtml": "html",
    "txt": "text", "text": "text", "rst": "text", "md": "markdown", "markdown": "markdown",
}  # fmt: skip
# A JSONL/Parquet record may say what its text is (a "format" field, a name or a MIME type).
RECORD_FORMATS = {
    "html": "html", "text/html": "html",
    "markdown": "markdown", "md": "markdown", "text/markdown": "markdown",
}  # fmt: skip
COMPRESSED = {"gz", "bz2", "zst", "lz4"}
_GLOB = re.compile(r"[*?\[]")
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]  # fmt: skip
_DECLARED = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9_.:-]+)""")
RAW_CHARS = 500


@dataclass(frozen=True, order=True)
class InputFile:
    path: str  # as a URI, or a local path
    size: int  # bytes (0 where the filesystem does not say)


def list_files(path: str) -> list[InputFile]:
    """Every file under a directory, matching a glob, or the one file; sorted by path."""
    fs, inner = resolve(path)
    prefix = path.split("://", 1)[0] + "://" if is_uri(path) else ""
    match = _GLOB.search(inner)
    base = inner[: inner.rfind("/", 0, match.start())] if match else inner
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {path!r}: not found")
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        selector = pafs.FileSelector(base, recursive=True)
        infos = [f for f in fs.get_file_info(selector) if f.type == pafs.FileType.File]
    if match:
        infos = [f for f in infos if fnmatch.fnmatch(f.path, inner)]
    visible = [f for f in infos if not _hidden(f.path[len(base) :])]
    return sorted(InputFile(prefix + f.path, f.size or 0) for f in visible)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def file_format(path: str) -> str | None:
    parts = path.rsplit("/", 1)[-1].lower().split(".")
    if len(parts) > 2 and parts[-1] in COMPRESSED:
        parts = parts[:-1]
    return FORMATS.get(parts[-1]) if len(parts) > 1 else None


def decode(data: bytes, encodings: list[str], declared_ok: bool = True) -> str | None:
    """Text of `data`: by its BOM, else its declared charset (HTML/XML), else the first of
    `encodings` that decodes it strictly; None when nothing does."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _try(data, codec)
    candidates = list(encodings)
    if declared_ok and (found := _DECLARED.search(data[:4096])):
        candidates.insert(0, found.group(1).decode("ascii"))
    for codec in candidates:
        text = _try(data, codec)
        if text is not None:
            return text
    return None


def _try(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def read_batch(batch: dict[str, Any], cfg: ReadConfig) -> list[dict[str, Any]]:
    """A block of file-path groups -> their document and quarantine rows."""
    return [row for group in batch["paths"] for path in group for row in read_file(str(path), cfg)]


def read_file(path: str, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    fmt = file_format(path)
    if fmt is None:
        yield quarantine(path, "unsupported_format", "unknown file extension")
        return
    try:
        fs, inner = resolve(path)
        if fmt == "parquet":
            yield from _read_parquet(fs, inner, path, cfg)
            return
        with fs.open_input_stream(inner, compression="detect") as stream:
            data = stream.read()
    except (OSError, pa.ArrowException) as e:
        yield quarantine(path, "unreadable", str(e))
        return
    if fmt == "jsonl":
        yield from _read_jsonl(data, path, cfg)
        return
    text = decode(data, cfg.encodings, declared_ok=fmt == "html")
    if text is None:
        yield quarantine(path, "undecodable", f"not {', '.join(cfg.encodings)}", raw=data)
    else:
        yield document(path, path, text, fmt, {})


def _read_jsonl(data: bytes, path: str, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        line = decode(raw, cfg.encodings, declared_ok=False)
        if line is None:
            yield quarantine(path, "undecodable", "line does not decode", number, raw)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield quarantine(path, "invalid_json", str(e), number, raw)
            continue
        row = _record(record, path, number, cfg)
        yield (
            row
            if row is not None
            else quarantine(
                path, "missing_text", f"no string field {cfg.text_field!r}", number, raw
            )
        )


def _read_parquet(
    fs: pafs.FileSystem, inner: str, path: str, cfg: ReadConfig
) -> Iterator[dict[str, Any]]:
    with fs.open_input_file(inner) as handle:
        parquet = pq.ParquetFile(handle)
        if cfg.text_field not in parquet.schema_arrow.names:
            yield quarantine(path, "missing_text", f"no column {cfg.text_field!r}")
            return
        number = 0
        for batch in parquet.iter_batches():
            for record in batch.to_pylist():
                number += 1
                row = _record(record, path, number, cfg)
                yield (
                    row
                    if row is not None
                    else quarantine(path, "missing_text", "null or non-string text", number)
                )


def _record(record: Any, path: str, number: int, cfg: ReadConfig) -> dict[str, Any] | None:
    if not isinstance(record, dict) or not isinstance(record.get(cfg.text_field), str):
        return None
    doc_id = record.get(cfg.id_field) if cfg.id_field else None
    doc_id = str(doc_id) if doc_id is not None else f"{path}#{number}"
    meta = {k: v for k, v in record.items() if k not in (cfg.text_field, cfg.id_field)}
    declared = record.get("format")
    fmt = RECORD_FORMATS.get(declared.lower(), "text") if isinstance(declared, str) else "text"
    return document(doc_id, path, record[cfg.text_field], fmt, meta)


def document(doc_id: str, source: str, text: str, fmt: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc_id,
        "doc_id": doc_id,
        "text": text,
        "source": source,
        "format": fmt,
        "metadata": json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True),
    }


def quarantine(
    path: str, reason: str, detail: str, line: int | None = None, raw: bytes = b""
) -> dict[str, Any]:
    return {
        "source": path,
        "error": reason,
        "detail": detail[:RAW_CHARS],
        "line": line,
        "text": raw[:RAW_CHARS].decode("utf-8", "backslashreplace"),
    }
