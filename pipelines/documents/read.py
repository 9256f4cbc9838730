"""Read: files (directory, glob or URI) -> one row per document, or a quarantine row.

Files are listed on the driver (paths only); each Ray task opens its own files, so a bad
file or record costs one quarantine row, never the job. JSONL is decoded and parsed line by
line, so one broken line quarantines that line only, with its file and line number. A row
leaves the reader only once Arrow can hold it: a lone surrogate (which JSON escapes and
some codecs produce) would otherwise fail the whole block when it becomes a table.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.documents.config import ReadConfig
from refinery.storage import resolve

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
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]  # fmt: skip
_DECLARED = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9_.:-]+)""")
RAW_CHARS = 500
READ_CHUNK = 1 << 22  # bytes per read call, so a size limit stops a stream early
# The string columns of a document row, checked before the row becomes Arrow.
_STRINGS = ("id", "text", "source", "metadata")


def file_format(path: str) -> str | None:
    parts = path.rsplit("/", 1)[-1].lower().split(".")
    if len(parts) > 2 and parts[-1] in COMPRESSED:
        parts = parts[:-1]
    return FORMATS.get(parts[-1]) if len(parts) > 1 else None


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML/XML file declares in its first bytes, if any."""
    found = _DECLARED.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def decode(data: bytes, encodings: list[str], declared_ok: bool = True) -> str | None:
    """Text of `data`: by its BOM, else its declared charset (HTML/XML) alone, else the
    first of `encodings` that decodes it strictly; None when nothing does. A declaration is
    taken at its word: a file that names a charset its bytes are not in says something
    false about itself."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _try(data, codec)
    declared = declared_charset(data) if declared_ok else None
    for codec in [declared] if declared else encodings:
        text = _try(data, codec)
        if text is not None:
            return text
    return None


def _try(data: bytes, codec: str) -> str | None:
    # UnicodeError, not only UnicodeDecodeError: punycode and idna raise the base class;
    # LookupError: no such codec, or one that is not a text encoding (rot13, zlib).
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


def read_batch(batch: dict[str, Any], cfg: ReadConfig) -> list[dict[str, Any]]:
    """A block of file-path groups -> their document and quarantine rows."""
    return [row for group in batch["paths"] for path in group for row in read_file(str(path), cfg)]


def read_file(path: str, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    """The file's document and quarantine rows. Whatever a file holds, it ends in rows: an
    input failure this reader does not foresee quarantines the rest of the file, named by
    its exception, instead of failing the task and with it the job."""
    try:
        yield from _read_file(path, cfg)
    except Exception as e:  # see the docstring: a bad file never fails the job
        yield quarantine(path, "read_failed", f"{type(e).__name__}: {e}")


def _read_file(path: str, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
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
            data = read_bounded(stream, cfg.max_file_bytes)
    except FileNotFoundError as e:  # listed, then gone before this task opened it
        yield quarantine(path, "file_gone", str(e))
        return
    except (OSError, pa.ArrowException) as e:
        yield quarantine(path, "unreadable", str(e))
        return
    if len(data) > cfg.max_file_bytes:
        detail = f"more than read.max_file_bytes ({cfg.max_file_bytes}) once decompressed"
        yield quarantine(path, "too_large", detail, raw=data)
    elif not data or data.isspace():
        yield quarantine(path, "empty_file", "no content")
    elif fmt == "jsonl":
        yield from _read_jsonl(data, path, cfg)
    else:
        yield from _read_text(data, path, fmt, cfg)


def read_bounded(stream: Any, limit: int) -> bytes:
    """The stream's bytes, or its first limit + 1 when it holds more: a compressed file
    is never inflated past the limit in memory."""
    parts, total = [], 0
    while total <= limit and (chunk := stream.read(min(READ_CHUNK, limit + 1 - total))):
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def _read_text(data: bytes, path: str, fmt: str, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    text = decode(data, cfg.encodings, declared_ok=fmt == "html")
    declared = declared_charset(data) if fmt == "html" else None
    if text is None and declared:
        detail = f"declared charset {declared!r} is unknown or does not decode the file"
        yield quarantine(path, "bad_charset", detail, raw=data)
    elif text is None:
        yield quarantine(path, "undecodable", f"not {', '.join(cfg.encodings)}", raw=data)
    else:
        yield checked(document(path, path, text, fmt, {}), None, data)


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
            row = _record(record, path, number, cfg)
        except json.JSONDecodeError as e:
            row = quarantine(path, "invalid_json", str(e), number)
        except RecursionError:
            row = quarantine(path, "too_deep", "nested past Python's recursion limit", number)
        except ValueError as e:  # an integer past the interpreter's digit limit
            row = quarantine(path, "number_too_long", str(e), number)
        yield checked(row, number, raw)


def _read_parquet(
    fs: pafs.FileSystem, inner: str, path: str, cfg: ReadConfig
) -> Iterator[dict[str, Any]]:
    with fs.open_input_file(inner) as handle:
        parquet = pq.ParquetFile(handle)
        if cfg.text_field not in parquet.schema_arrow.names:
            yield quarantine(path, "missing_text", f"no column {cfg.text_field!r}")
            return
        if parquet.metadata.num_rows == 0:
            yield quarantine(path, "empty_file", "no rows")
            return
        number = 0
        for batch in parquet.iter_batches():
            for record in _batch_records(batch):
                number += 1
                if record is None:
                    yield quarantine(path, "undecodable", "a string is not UTF-8", number)
                else:
                    yield checked(_record(record, path, number, cfg), number)


def _batch_records(batch: pa.RecordBatch) -> list[dict[str, Any] | None]:
    """The batch's records; None for one holding a string that is not UTF-8 (Parquet
    writers need not check), so the batch's other records are kept."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        return [_record_or_none(batch.slice(i, 1)) for i in range(batch.num_rows)]


def _record_or_none(row: pa.RecordBatch) -> dict[str, Any] | None:
    try:
        return row.to_pylist()[0]
    except UnicodeDecodeError:
        return None


def _record(record: Any, path: str, number: int, cfg: ReadConfig) -> dict[str, Any]:
    """The record's document row, or its quarantine row when it has no string text."""
    if not isinstance(record, dict) or record.get(cfg.text_field) is None:
        return quarantine(path, "missing_text", f"no field {cfg.text_field!r}", number)
    text = record[cfg.text_field]
    if not isinstance(text, str):
        detail = f"{cfg.text_field!r} is {type(text).__name__}, not a string"
        return quarantine(path, "text_not_string", detail, number)
    doc_id = record.get(cfg.id_field) if cfg.id_field else None
    doc_id = str(doc_id) if doc_id is not None else f"{path}#{number}"
    meta = {k: v for k, v in record.items() if k not in (cfg.text_field, cfg.id_field)}
    declared = record.get("format")
    fmt = RECORD_FORMATS.get(declared.lower(), "text") if isinstance(declared, str) else "text"
    return {**document(doc_id, path, text, fmt, meta), "line": number}


def checked(row: dict[str, Any], line: int | None, raw: bytes = b"") -> dict[str, Any]:
    """The row, or a quarantine row when a string of it cannot be UTF-8 (a lone surrogate);
    `raw`, the input it came from, becomes the excerpt of any quarantine row."""
    if "error" in row:
        return {**row, "text": _excerpt(raw)} if raw else row
    for name in _STRINGS:
        value = row[name]
        if not value.isascii():  # O(1) in CPython: most text needs no second look
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return quarantine(row["source"], "lone_surrogate", f"{name}: {e}", line, raw)
    return row


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
        "source": _printable(path),
        "error": reason,
        "detail": _printable(detail[:RAW_CHARS]),
        "line": line,
        "text": _excerpt(raw),
    }


def _excerpt(raw: bytes) -> str:
    return raw[:RAW_CHARS].decode("utf-8", "backslashreplace")


def _printable(text: str) -> str:
    """`text` with any lone surrogate written as an escape: a quarantine row must always
    become Arrow."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()
