"""Realistic noise, one kind at a time and all at once (generate.VARIANTS): CRLF endings,
optional and nested extras, escaped and non-ASCII strings, float and integer latencies,
malformed lines at 0.1-1%. Each variant parses to what the line validator alone gives,
quarantines exactly the broken lines, and answers the seed query as DuckDB does."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.logs import LogStore, scan
from pipelines.logs.generate import VARIANTS, generate_lines, write_logs
from pipelines.logs.parse import _KINDS, _NAMES, parse_buffer
from pipelines.logs.tables import normalize, records_to_table
from pipelines.logs.validate import BadLine, check_line

ROWS = 4000


def expected(lines: list[str]) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The validator's verdict on every line: its table and the (line, reason) it rejects."""
    records, rejected = [], []
    for number, line in enumerate(lines, 1):
        try:
            records.append(check_line(line.encode()))
        except BadLine as bad:
            rejected.append((number, bad.reason))
    return records_to_table(records), rejected


def rows(table: pa.Table) -> list[str]:
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in normalize(table).to_pylist())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_parses_as_the_validator_does(tmp_path: Path, variant: str) -> None:
    noise = VARIANTS[variant]
    [path] = write_logs(tmp_path, ROWS, seed=3, noise=noise)
    lines = Path(path).read_bytes().decode().split(noise.newline)[:-1]
    # Small chunks: lines of every kind start and end chunks too.
    store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=50_000)
    table, rejected = expected(lines)
    assert [(q.line, q.reason) for q in store.quarantine] == rejected
    assert store.scan.rows == table.num_rows == ROWS - len(rejected)
    assert rows(store.backend.table) == rows(table)
    if noise.newline == "\r\n":
        assert Path(path).read_bytes().count(b"\r\n") == ROWS


def test_malformed_ratios_are_quarantined_exactly(tmp_path: Path) -> None:
    for rate in (0.001, 0.003, 0.01):
        lines = generate_lines(20_000, seed=5, malformed_rate=rate)
        path = tmp_path / f"{rate}.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        broken = sum(not _is_record(line) for line in lines)
        assert broken == pytest.approx(rate * 20_000, rel=0.35)
        store = LogStore.from_jsonl(path, engine="arrow")
        assert len(store.quarantine) == sum(store.scan.quarantined.values()) == broken
        assert store.scan.rows == 20_000 - broken


def _is_record(line: str) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and not isinstance(value.get("latency_ms"), str)


def _fast(data: bytes):
    """The scan's verdict: (slow line count, parsed table)."""
    return len(scan.scan(data, _NAMES, _KINDS).slow), parse_buffer(data, "f.jsonl")


def test_full_precision_floats_are_exact_on_the_fast_path() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(6, 1) for _ in range(3000)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(3000)]
    values += [0.1, 1e22, 1e23, 9007199254740993.0, 123456789012345678.0, 2.2250738585072014e-280]
    texts = [repr(v) for v in values] + ["12345678901234567", "-0.00000000000000000000000000"]
    data = "".join(f'{{"model": "m", "latency_ms": {t}}}\n' for t in texts).encode()
    slow, parsed = _fast(data)
    assert slow == 0 and parsed.quarantined == []
    got = parsed.table["latency_ms"].to_pylist()
    assert got == [float(t) for t in texts]
    assert math.copysign(1, got[-1]) == -1


def test_numbers_past_the_fast_path_go_to_the_validator() -> None:
    texts = ["1e300", "1e-320", "0.12345678901234567890123", "1e400", "-1e999"]
    data = "".join(f'{{"model": "m", "latency_ms": {t}}}\n' for t in texts).encode()
    slow, parsed = _fast(data)
    assert slow == len(texts)
    assert parsed.table["latency_ms"].to_pylist() == [float(t) for t in texts[:3]]
    assert [(q.line, q.reason) for q in parsed.quarantined] == [(4, "non_finite")] * 1 + [
        (5, "non_finite")
    ]


def test_integer_and_float_latencies_mix() -> None:
    data = b"".join(
        b'{"model": "m", "latency_ms": %s, "tokens_input": %s}\n' % (lat, tok)
        for lat, tok in [(b"423", b"7"), (b"423.5", b"8"), (b"-0", b"0"), (b"1e2", b"9.0")]
    )
    slow, parsed = _fast(data)
    assert parsed.quarantined == []
    assert parsed.table["latency_ms"].to_pylist() == [423.0, 423.5, 0.0, 100.0]
    assert parsed.table["tokens_input"].to_pylist() == [7, 8, 0, 9]


def test_escaped_and_raw_spellings_of_a_key_are_one_group(tmp_path: Path) -> None:
    spellings = ['"résumé"', '"r\\u00e9sum\\u00e9"', '"r\\u00E9sum\\u00e9"', '"\\u7ffb\\u8a33"']
    spellings += ['"翻訳"', '"say \\"hi\\""', '"tab\\there"', '"emoji \\ud83d\\ude42"']
    lines = [f'{{"model": "m", "route": {s}, "latency_ms": {i}}}' for i, s in enumerate(spellings)]
    data = "".join(line + "\n" for line in lines).encode()
    slow, parsed = _fast(data)
    assert slow == 0
    assert parsed.table["route"].to_pylist() == [json.loads(s) for s in spellings]
    path = tmp_path / "routes.jsonl"
    path.write_bytes(data)
    frame = (
        LogStore.from_jsonl(path, engine="arrow")
        .query()
        .aggregate(by=["route"], metrics={"n": "count"})
    )
    assert dict(zip(frame["route"], frame["n"], strict=True)) == {
        "résumé": 3,
        "翻訳": 2,
        'say "hi"': 1,
        "tab\there": 1,
        "emoji 🙂": 1,
    }


def test_lone_surrogate_escapes_are_quarantined() -> None:
    data = (
        b'{"model": "m", "route": "\\ud800"}\n'
        b'{"model": "m", "user": "\\udfff x"}\n'
        b'{"model": "m", "meta": {"k": ["\\uDBFF"]}}\n'
        b'{"model": "m", "user": "\\\\ud800 is text"}\n'
    )
    parsed = parse_buffer(data, "f.jsonl")
    assert [(q.line, q.reason) for q in parsed.quarantined] == [
        (i, "invalid_utf8") for i in (1, 2, 3)
    ]
    assert parsed.table["user"].to_pylist() == ["\\ud800 is text"]


def test_nested_extras_on_the_fast_path() -> None:
    extras = [
        '"meta": {"user": "u1", "tags": ["a", "b"], "attempt": 1}',
        '"meta": {"user": "u2", "tags": [], "attempt": 0, "more": {"deep": [[1, 2], [3]]}}',
        '"meta": {"user": "u\\"3\\"", "tags": ["é"], "attempt": 2}, "ok": true',
        '"meta": null',
        '"meta": {"a": 1, "a": 2}',
    ]
    lines = [f'{{"model": "m", {e}, "latency_ms": 1.5}}' for e in extras]
    data = "".join(line + "\r\n" for line in lines).encode()
    slow, parsed = _fast(data)
    assert slow == 0 and parsed.quarantined == []
    table, _ = expected(lines)
    assert rows(parsed.table) == rows(table)


def test_nesting_past_the_scan_goes_to_the_validator() -> None:
    deep = "[" * 20 + "1" + "]" * 20  # kept, by the validator
    too_deep = "[" * 70 + "1" + "]" * 70
    broken = ['{"a": }', '{"a": 1,}', "[1 2]", '{"a" 1}', "[1, 2", '{"a": [}]']
    lines = [f'{{"model": "m", "x": {v}}}' for v in [deep, too_deep, *broken]]
    slow, parsed = _fast("".join(line + "\n" for line in lines).encode())
    assert slow == len(lines)
    got = [(q.line, q.reason) for q in parsed.quarantined]
    assert got == [(2, "too_deep")] + [(i, "invalid_json") for i in range(3, 3 + len(broken))]
    assert parsed.table.num_rows == 1


def test_crlf_line_numbers_and_blank_lines(tmp_path: Path) -> None:
    lines = ['{"model": "m", "latency_ms": 1}', "", "not json", '{"model": "m", "meta": {}}']
    path = tmp_path / "crlf.jsonl"
    path.write_bytes("".join(line + "\r\n" for line in lines * 50).encode())
    store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=300)
    assert [q.line for q in store.quarantine] == [3 + 4 * k for k in range(50)]
    assert store.scan.rows == 100 and store.scan.blank == 50
    assert all(not q.raw.endswith("\r") for q in store.quarantine)


def test_seed_query_matches_duckdb_on_every_variant(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    for name, noise in VARIANTS.items():
        [path] = write_logs(tmp_path / name, ROWS, seed=9, noise=noise)
        store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=100_000)
        ours = (
            store.query()
            .filter(model="gpt-4.1", min_latency_ms=200)
            .aggregate(
                by=["route"],
                metrics={
                    "n": "count",
                    "avg": "avg(latency_ms)",
                    "max": "max(latency_ms)",
                    "tokens": "sum(tokens_output)",
                },
            )
        )
        columns = (
            "{'model': 'VARCHAR', 'latency_ms': 'DOUBLE', 'tokens_output': 'BIGINT', "
            "'route': 'VARCHAR'}"
        )
        theirs = duckdb.sql(
            f"SELECT route, count(*), avg(latency_ms), max(latency_ms), sum(tokens_output) "
            f"FROM read_json('{path}', columns={columns}, format='newline_delimited', "
            "ignore_errors=true) WHERE model = 'gpt-4.1' AND latency_ms >= 200 GROUP BY route"
        ).fetchall()
        got = sorted(ours.itertuples(index=False, name=None))
        assert len(got) == len(theirs), name
        for mine, ref in zip(got, sorted(theirs), strict=True):
            assert (mine[0], mine[1], mine[3], mine[4]) == (ref[0], ref[1], ref[3], ref[4]), name
            assert mine[2] == pytest.approx(ref[2], rel=1e-12), name


def test_deferred_floats_keep_nulls_and_rows() -> None:
    lines = [
        '{"model": "m", "latency_ms": 1554.1295026869584}',
        '{"model": "m", "latency_ms": null}',
        '{"model": "m"}',
        '{"model": "m", "latency_ms": 227.6542564125326}',
    ]
    slow, parsed = _fast("".join(line + "\n" for line in lines).encode())
    assert slow == 0
    got = parsed.table["latency_ms"].to_pylist()
    assert got == [1554.1295026869584, None, None, 227.6542564125326]
    assert not np.isnan(parsed.table["latency_ms"].to_numpy(zero_copy_only=False)[[0, 3]]).any()
