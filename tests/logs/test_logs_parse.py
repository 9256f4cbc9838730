"""Parsing: typed columns, extras kept, every bad line quarantined with its line number."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipelines.logs import LogStore, sources
from pipelines.logs.generate import quirky_lines
from pipelines.logs.parse import _KINDS, _NAMES, parse_buffer
from pipelines.logs.scan import MAX_DISTINCT, scan
from pipelines.logs.sources import list_files, plan_chunks, read_chunk
from pipelines.logs.tables import normalize, records_to_table
from pipelines.logs.validate import BadLine, check_line
from refinery.storage import resolve

GOOD = {
    "ts": "2024-01-01T12:00:00Z",
    "model": "gpt-4.1",
    "latency_ms": 423,
    "tokens_input": 100,
    "tokens_output": 921,
    "route": "chat",
    "status": "ok",
}


def good(**changes) -> str:
    return json.dumps({**GOOD, **changes})


# (line text, expected reason or None when the line is kept); blank lines are skipped.
LINES = [
    (good(), None),
    ("this is not json", "invalid_json"),
    (good()[:40], "invalid_json"),  # truncated
    ("", None),
    (good(latency_ms="abc"), "wrong_type"),
    ("[" + good() + "]", "not_object"),
    (good(tokens_input=1.5), "wrong_type"),
    (good(model=42), "wrong_type"),
    (good(ts="yesterday"), "bad_timestamp"),
    ("   " + good(route="rag"), None),  # leading spaces: valid JSON, kept
    (good(ts=1704110400), None),  # epoch seconds
    ('{"a": 1}{"a": 2}', "invalid_json"),  # two objects on one line
    ("null", "not_object"),
    (good(tokens_output=7.0), None),  # an integral float is an integer
    (good(latency_ms=True), "wrong_type"),
]


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    return path


def expected_quarantine(lines=LINES) -> list[tuple[int, str]]:
    return [(n, reason) for n, (_, reason) in enumerate(lines, 1) if reason]


def test_bad_lines_are_quarantined_with_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.jsonl", [text for text, _ in LINES])
    store = LogStore.from_jsonl(path, engine="arrow")
    got = [(q.line, q.reason) for q in store.quarantine]
    assert got == expected_quarantine()
    kept = sum(1 for text, reason in LINES if reason is None and text)
    assert store.scan.rows == kept == store.backend.table.num_rows
    assert store.scan.blank == 1 and store.scan.lines == len(LINES)
    assert all(q.file == str(path) for q in store.quarantine)
    by_line = {q.line: q for q in store.quarantine}
    assert by_line[5].raw == good(latency_ms="abc")
    assert "latency_ms" in by_line[5].detail


def test_line_numbers_survive_chunks(tmp_path: Path) -> None:
    lines = [text for text, _ in LINES] * 40
    path = write(tmp_path / "many.jsonl", lines, newline="\r\n")
    whole = LogStore.from_jsonl(path, engine="arrow")
    chunked = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=777)
    expected = expected_quarantine(LINES * 40)
    assert [(q.line, q.reason) for q in whole.quarantine] == expected
    assert [(q.line, q.reason) for q in chunked.quarantine] == expected
    kept = sum(1 for text, reason in LINES if reason is None and text)
    assert chunked.scan.rows == whole.scan.rows == kept * 40
    assert sorted(map(str, chunked.backend.table.to_pylist())) == sorted(
        map(str, whole.backend.table.to_pylist())
    )


def test_types_and_quirks(tmp_path: Path) -> None:
    path = write(tmp_path / "quirky.jsonl", quirky_lines())
    store = LogStore.from_jsonl(path, engine="arrow")
    assert store.quarantine == []
    table = store.backend.table
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    for name in ("model", "route", "status", "user"):
        assert pa.types.is_dictionary(table.schema.field(name).type), name
    assert table.schema.field("latency_ms").type == pa.float64()
    assert table.schema.field("tokens_input").type == pa.int64()
    rows = {r["model"]: r for r in table.to_pylist() if r["model"] != "gpt-4.1"}
    assert rows["modèle-ü"]["user"] == "ユーザー" and rows["modèle-ü"]["meta"] == {"k": 1}
    times = sorted(t.isoformat() for t in table["ts"].to_pylist())
    # +02:00 becomes 10:00Z; epoch 1704110400 is 12:00Z; the rest are UTC already.
    assert times == [
        "2024-01-01T10:00:00+00:00",
        "2024-01-01T10:30:00+00:00",
        "2024-01-01T11:00:00.500000+00:00",
        "2024-01-01T12:00:00+00:00",
    ]


def test_extra_field_type_clash_becomes_text(tmp_path: Path) -> None:
    lines = [good(user=7)] * 3 + [good(user="bob")] * 3
    path = write(tmp_path / "clash.jsonl", lines)
    store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=3 * len(lines[0]) + 3)
    assert store.quarantine == []
    assert sorted(store.backend.table["user"].to_pylist()) == ["7", "7", "7", "bob", "bob", "bob"]


def test_invalid_utf8_and_empty_input() -> None:
    data = good().encode() + b"\n" + b'{"model": "\xff"}\n'
    parsed = parse_buffer(data, "f.jsonl")
    assert [(q.line, q.reason) for q in parsed.quarantined] == [(2, "invalid_utf8")]
    empty = parse_buffer(b"", "empty.jsonl")
    assert empty.table.num_rows == 0 and empty.lines == 0
    assert "latency_ms" in empty.table.column_names


def test_sources(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", [good()])
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.jsonl", [good(), good()])
    (tmp_path / "notes.txt").write_text("not a log")
    assert LogStore.from_jsonl(tmp_path, engine="arrow").scan.rows == 3
    assert LogStore.from_jsonl(str(tmp_path / "*.jsonl"), engine="arrow").scan.rows == 1
    assert LogStore.from_jsonl(f"file://{tmp_path}/a.jsonl", engine="arrow").scan.rows == 1
    with pytest.raises(FileNotFoundError, match="missing"):
        LogStore.from_jsonl(tmp_path / "missing.jsonl")


# Lines the compiled scan may take or leave to the validator: either way the row must be
# what the validator (json.loads + type checks) makes of the line.
EDGE_LINES = [
    good(latency_ms=1e3),
    good(latency_ms=-0.0),
    good(latency_ms=12.345678901234567),  # more digits than the scan's exact path
    good(latency_ms=2.5e-7),
    good(tokens_input=-12),
    good(model='a "quoted" \\ name'),  # escapes in a known string
    good(model="modèle ü ユーザー"),
    good(ts="2024-02-29T23:59:59.1+05:30"),
    good(ts="2024-01-01 12:00:00"),
    good(ts="2024-01-01T12:00Z"),  # a form the scan leaves to fromisoformat
    good(ts="2024-01-01T12:00:00.1234567Z"),
    good(ts=None, model=None),
    good(user=None, flag=True, n=-3.5, note="tab\there"),
    good(meta={"k": [1, {"x": None}]}),  # nested extra
    '{"model": "gpt-4.1", "model": "o3"}',  # a key twice: the last wins
    "{}",
]


@pytest.mark.parametrize("line", EDGE_LINES)
def test_scan_agrees_with_the_validator(line: str) -> None:
    parsed = parse_buffer(line.encode() + b"\n", "f.jsonl")
    assert parsed.quarantined == []
    expected = records_to_table([check_line(line.encode())])
    assert normalize(parsed.table).to_pylist() == normalize(expected).to_pylist()


BAD_LINES = [
    (good()[:-1], "invalid_json"),  # no closing brace
    (good() + "x", "invalid_json"),
    (good(route=["chat"]), "wrong_type"),
    (good(tokens_output="12"), "wrong_type"),
    (good(status=True), "wrong_type"),
    (good(tokens_input=2**63), "wrong_type"),  # past int64
    (good(tokens_input=123456789012345678901), "int_out_of_range"),  # past 64 bits
    (good(ts="2024-13-01T00:00:00Z"), "bad_timestamp"),
    (good(ts="2024-02-30T00:00:00Z"), "bad_timestamp"),
    ('{"model": "a\x01b"}', "invalid_json"),  # a raw control character
    ('{"model": "\\x"}', "invalid_json"),  # a bad escape
    ('{"latency_ms": 01}', "invalid_json"),
    ('{"latency_ms": 1.}', "invalid_json"),
    ('{"a": tru}', "invalid_json"),
    (good(latency_ms=float("nan")), "non_finite"),
    (good(latency_ms=float("-inf")), "non_finite"),
    (good(latency_ms=1).replace(": 1,", ": 1e400,"), "non_finite"),
    (good(x=1).replace('"x": 1', '"x": 1e400'), "non_finite"),  # an extra the scan reads
    (good(x=1).replace('"x": 1', '"x": NaN'), "non_finite"),
    (good(ts="0001-01-01T00:00:00+01:00"), "bad_timestamp"),  # the year 0 in UTC
    (good(ts="9999-12-31T23:59:59-00:01"), "bad_timestamp"),  # the year 10000 in UTC
    (good(ts=-9e10), "bad_timestamp"),
    (good(x=1).replace('"x": 1', '"x": ' + "7" * 5000), "int_out_of_range"),
    (good(x=2**64), "int_out_of_range"),
    (good(x=1).replace('"x": 1', '"x": ' + "[" * 2000 + "]" * 2000), "too_deep"),
    (good(x=1).replace('"x": 1', '"x": ' + '{"a": ' * 65 + "1" + "}" * 65), "too_deep"),
    ('{"a" 1}', "invalid_json"),
    ("{,}", "invalid_json"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_scan_sends_bad_lines_to_quarantine(line: str, reason: str) -> None:
    data = (good() + "\n" + line + "\n" + good()).encode()
    parsed = parse_buffer(data, "f.jsonl")
    assert [(q.line, q.reason, q.raw) for q in parsed.quarantined] == [(2, reason, line)]
    assert parsed.table.num_rows == 2


def test_bad_lines_at_chunk_edges_and_encodings(tmp_path: Path) -> None:
    """A bad line first and last in every chunk, CRLF endings, a byte order mark, invalid
    UTF-8 and a truncated last line: every good row kept, every bad line numbered."""
    lines = [b"\xef\xbb\xbf" + good().encode()]  # BOM at the start of the file
    expected = []
    for n in range(2, 200):
        if n % 10 in (0, 1):
            lines.append(b"oops" if n % 20 else b'{"model": "\xff\xfe"}')
            expected.append((n, "invalid_json" if n % 20 else "invalid_utf8"))
        else:
            lines.append(good(tokens_input=n).encode())
    lines.append(good().encode()[:30])  # truncated, no newline at the end
    expected.append((len(lines), "invalid_json"))
    path = tmp_path / "edges.jsonl"
    path.write_bytes(b"\r\n".join(lines))
    width = len(lines[5]) + 2
    for chunk_bytes in (10 * width, 10 * width + 7, 1 << 20):
        store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=chunk_bytes)
        assert [(q.line, q.reason) for q in store.quarantine] == expected
        assert store.scan.rows == len(lines) - len(expected)
        assert all("\r" not in q.raw for q in store.quarantine)


def assert_like_validator(data: bytes) -> None:
    """parse_buffer keeps exactly the rows the validator makes of each line, and quarantines
    the others with its reason, whichever lines the compiled scan takes."""
    rows, bad = [], []
    for n, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if not raw:
            continue
        try:
            rows.append(check_line(raw))
        except BadLine as error:
            bad.append((n, error.reason))
    parsed = parse_buffer(data, "f.jsonl")
    assert [(q.line, q.reason) for q in parsed.quarantined] == bad
    expected = normalize(records_to_table(rows)).to_pylist() if rows else []
    got = normalize(parsed.table).to_pylist()
    assert sorted(map(str, got)) == sorted(map(str, expected))


# Bytes the word-at-a-time string scan must stop at, wherever they fall in a word: escapes,
# control bytes, UTF-8 (a surrogate, a lone continuation byte, a truncated sequence), a quote.
STOPS = [b'\\"', b"\\\\", b"\\u00e9", b"\x01", b"\x7f", "é".encode(), "ユ".encode()]
STOPS += [b"\xed\xb3\xbf", b"\x85", b"\xc3", b'"']


@pytest.mark.parametrize("stop", STOPS)
def test_string_stops_at_every_word_offset(stop: bytes) -> None:
    lines = []
    for shift in range(8):  # where the line starts relative to an 8-byte word
        for k in range(17):  # where the stop byte falls in the string
            text = good(model="m" * k + "@" + "x" * (k % 3)).encode()
            lines.append(b" " * shift + text.replace(b"@", stop))
    assert_like_validator(b"\n".join(lines) + b"\n")


def test_lines_cut_anywhere() -> None:
    """A line cut in two at every byte: the scan never reads across the LF, or past the
    buffer end where the second half is the last line without one."""
    line = good(latency_ms=189.05, user="bob", n=-3.5e2, ts="2024-02-29T23:59:59.1+05:30")
    for cut in range(len(line) + 1):
        head, tail = line[:cut].encode(), line[cut:].encode()
        assert_like_validator(head + b"\n" + tail + b"\n")
        assert_like_validator(head + b"\n" + tail)
        assert_like_validator(head)


def test_last_line_without_newline() -> None:
    data = (good() + "\n" + good(route="rag", tokens_input=12345678)).encode()
    parsed = parse_buffer(data, "f.jsonl")
    assert parsed.quarantined == [] and parsed.lines == 2
    assert sorted(parsed.table["route"].to_pylist()) == ["chat", "rag"]
    assert sorted(parsed.table["tokens_input"].to_pylist()) == [100, 12345678]


# Number shapes the scan takes, leaves to the validator, or rejects.
NUMBERS = [
    *("0", "-0", "7", "12345678", "123456789", "0.5", "1.25", "1.2345678", "1.23456789"),
    *("-12.5", "00", "01", "1.", ".5", "-", "1e3", "1.5E-2", "2e+2", "1ea", "99999999.99999999"),
    *("1e290", "1e291", "1e308", "1.7976931348623157e308", "1e309", "-1e400", "1e-400"),
    *("9223372036854775808", "18446744073709551615", "18446744073709551616"),
]


@pytest.mark.parametrize("number", NUMBERS)
def test_numbers_like_the_validator(number: str) -> None:
    lines = [good().replace('"latency_ms": 423', f'"latency_ms": {number}')]
    lines.append(good().replace('"tokens_input": 100', f'"tokens_input": {number}'))
    lines.append(good().replace('"tokens_input": 100', f'"tokens_input": {number}, "x": {number}'))
    assert_like_validator("\n".join(lines).encode() + b"\n")


def test_extras_are_kept_once_per_distinct_line() -> None:
    lines = [good(region=r) for r in ("eu", "us", "eu", None, "eu")] + [good()]
    found = scan(("\n".join(lines) + "\n").encode(), _NAMES, _KINDS)
    assert found.extras.tobytes().splitlines() == [
        b'{"region": "eu"}',
        b'{"region": "us"}',
        b'{"region": null}',
    ]
    assert found.extra_lines.tolist() == [0, 1, 0, 2, 0, -1]
    # Past MAX_DISTINCT distinct lines of extras, lines are kept as they come.
    lines += [good(user=f"u{i}", region="eu") for i in range(MAX_DISTINCT + 100)]
    lines += [good(region="us", n=1.5), good(region="us")]
    assert_like_validator(("\n".join(lines) + "\n").encode())


def test_outputs_grow_past_their_first_guess() -> None:
    """Short lines: more rows and slow lines than the scan's first guess from the size."""
    lines = ['{"a":1}', "{}", "x", '{"model":"m"}', '{"latency_ms":1.5}'] * 500
    assert_like_validator(("\n".join(lines) + "\n").encode())


# One after another: the scan reuses the last date it read when the next has the same bytes.
TIMESTAMPS = [
    *("2024-01-01T00:00:00Z", "2024-01-01T23:59:59.999999Z", "2024-01-01T24:00:00Z"),
    *("2024-01-01T12:60:00Z", "2024-01-01T12:00:60Z", "2024-01-01t12:00:00Z"),
    *("2024-01-01 12:00:00", "2024-01-01T1:00:00Z", "2024-01-01T12:00:00.Z"),
    *("2024-01-01T12:00:00.1234567Z", "2024-01-01T12:00:00.5-01:30", "2024-01-32T00:00:00Z"),
    *("2024-01-31T00:00:00Z", "2023-02-29T00:00:00Z", "2024-02-29T00:00:00+14:00"),
    *("0001-01-01T00:00:00Z", "2024-01-01T12:00:00+2:00", "2024-01-01T12:00:00Z "),
    *("0001-01-01T00:59:59+01:00", "0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00-01:00"),
    *("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59-00:01", "9999-12-31T23:00:00+01:00"),
]


def test_timestamps_like_the_validator() -> None:
    lines = [good(ts=ts) for ts in TIMESTAMPS]
    assert_like_validator(("\n".join(lines + lines[::-1]) + "\n").encode())


def test_unsigned_64_bit_extras_are_kept_exactly() -> None:
    """Valid JSON past int64 but inside uint64: a uint64 column, or text next to signed values
    (the rule for any extra whose types clash); one bit more is quarantined."""
    top = 2**64 - 1
    parsed = parse_buffer(f"{good(id=top)}\n{good(id=2**63)}\n{good()}\n".encode(), "f.jsonl")
    assert parsed.quarantined == []
    assert parsed.table.schema.field("id").type == pa.uint64()
    assert sorted(parsed.table["id"].to_pylist(), key=str) == sorted([top, 2**63, None], key=str)
    mixed = parse_buffer(f"{good(id=top)}\n{good(id=-1)}\n{good(id=2**64)}\n".encode(), "f")
    assert sorted(mixed.table["id"].to_pylist()) == ["-1", str(top)]
    assert [(q.line, q.reason) for q in mixed.quarantined] == [(3, "int_out_of_range")]


def test_lines_over_the_limit_on_both_paths() -> None:
    """The limit counts a line's bytes without its line ending, whichever path reads it."""
    short = good(model="x")
    width = len(short)
    lines = [short, short + "\r", good(model="xy"), good(model="\u00e9y"), good(meta=[1, 2])]
    data = "\n".join(lines).encode() + b"\n"
    parsed = parse_buffer(data, "f.jsonl", max_line=width)
    assert [(q.line, q.reason) for q in parsed.quarantined] == [
        (3, "line_too_long"),
        (4, "line_too_long"),
        (5, "line_too_long"),
    ]
    assert parsed.table.num_rows == 2
    assert parsed.quarantined[0].raw == good(model="xy")
    assert str(width) in parsed.quarantined[0].detail
    assert parse_buffer(data, "f.jsonl").quarantined == []


def test_chunks_equal_the_file_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk is the lines that start in its byte range, the last one whole, read from
    local files and through other filesystems alike; a line longer than the read-ahead too."""
    (tmp_path / "a.jsonl").write_bytes(b"x\n\r\n\nyy\n" * 40 + b"no newline")
    (tmp_path / "b.jsonl").write_bytes(b"\n\n")
    (tmp_path / "c.jsonl").write_bytes(b"")
    (tmp_path / "d.jsonl").write_bytes(b"short\n" + b"z" * 200_000 + b"\nend\n")
    small, long = list_files(str(tmp_path / "[abc].jsonl")), list_files(tmp_path / "d.jsonl")
    chunks = [c for size in (1, 2, 3, 7, 50, 1 << 20) for c in plan_chunks(small, size)]
    chunks += [c for size in (50_000, 70_000, 1 << 20) for c in plan_chunks(long, size)]
    expected = [lines_starting_in(Path(c.file.path).read_bytes(), c.start, c.end) for c in chunks]
    assert [bytes(read_chunk(c)) for c in chunks] == expected

    def remote(path: str) -> tuple[pafs.FileSystem, str]:  # not a LocalFileSystem
        return pafs.SubTreeFileSystem("/", pafs.LocalFileSystem()), resolve(path)[1][1:]

    monkeypatch.setattr(sources, "resolve", remote)
    assert [bytes(read_chunk(c)) for c in chunks] == expected


def lines_starting_in(data: bytes, start: int, end: int) -> bytes:
    starts = [0] + [i + 1 for i in range(len(data)) if data[i] == 10]
    lines = [data[s : data.find(b"\n", s) + 1 or len(data)] for s in starts if start <= s < end]
    return b"".join(lines)


def with_extras(extras: dict, at: int, **changes) -> str:
    """good() with `extras` inserted before its known field number `at` (7: at the end)."""
    items = list({**GOOD, **changes}.items())
    return json.dumps(dict(items[:at] + list(extras.items()) + items[at:]))


def expected_extras(lines: list[str]) -> tuple[list[bytes], list[int]]:
    """The scan's lines of extras (`"key": value` as json.dumps writes them, joined by the
    scan's own commas) and each row's line in them."""
    kept: list[bytes] = []
    rows = []
    for line in lines:
        pairs = [(k, v) for k, v in json.loads(line).items() if k not in GOOD]
        if not pairs:
            rows.append(-1)
            continue
        text = (
            "{" + ",".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
        ).encode()
        if text not in kept:
            kept.append(text)
        rows.append(kept.index(text))
    return kept, rows


def assert_extras(lines: list[str]) -> None:
    """The scan takes every line, copies its extras as they are, and so does parse_buffer."""
    data = ("\n".join(lines) + "\n").encode()
    found = scan(data, _NAMES, _KINDS)
    assert len(found.slow) == 0
    kept, rows = expected_extras(lines)
    assert found.extras.tobytes().splitlines() == kept
    assert found.extra_lines.tolist() == rows
    assert_like_validator(data)


def test_extras_in_every_position() -> None:
    """One extra or several, before, between and after the known fields, the same layout
    line after line (separators to and from extras are learned) and changing."""
    lines = []
    for at in range(8):
        one = [with_extras({"region": r}, at) for r in ("eu", "us", "eu")]
        two = [with_extras({"region": r, "user": "u1"}, at) for r in ("eu", "us")]
        many = [with_extras({f"x{k}": k for k in range(7)}, at, route=r) for r in "ab"]
        lines += one + two + many + one
    assert_extras(lines)


def test_optional_extras_flip_line_to_line() -> None:
    """Extras present on some lines only: the field before one is followed by it or by the
    next field (or the end), at random; values of every scalar type."""
    rng = random.Random(7)
    values = ["eu", None, True, False, 0, -12, 3.25, "tab\there", "ü"]
    lines = []
    for _ in range(600):
        extras = {k: rng.choice(values) for k in ("region", "user", "team") if rng.random() < 0.4}
        lines.append(with_extras(extras, rng.choice((2, 7)), tokens_input=rng.randrange(9)))
    assert_extras(lines)


def test_keys_like_a_learned_separator_or_a_known_name() -> None:
    """Keys that share a learned separator's bytes up to their last byte, or longer or
    shorter, and keys that are a known name's prefix or extension: each is its own field."""
    keys = ["region", "regioN", "regio", "region_", "mode", "model_", "statu", "status2"]
    keys += ["tokens_in", "tokens_inputs", "tokens_output ", "r", ""]
    lines = []
    for key in keys:
        for at in (1, 2, 7):
            lines += [with_extras({"region": "eu"}, at), with_extras({key: "x"}, at)]
            lines.append(with_extras({"region": "eu", key: 1}, at))
    # Known fields after an extra: the learned separator to `model` is not one to `mode`.
    lines += ['{"region": 1, "model": "a"}', '{"region": 1, "mode": "a"}'] * 2
    lines += ['{"mode": "a", "model": "b"}', '{"model": "b", "mode": "a"}'] * 2
    assert_extras(lines)


def test_extras_with_unusual_separators_and_values_like_the_validator() -> None:
    """Whitespace around an extra's colon and comma, an escaped key, a nested or bad value
    after the same separator was learned: the copy keeps the bytes from the key on, and what
    the scan cannot judge goes to the validator."""
    base = good(region="eu")[:-1]  # without its closing brace
    tails = [', "region" :"eu"}', ',"region":"eu"  }', ', "a": 1 , "b":2}', ', "reg\\u0069on": 1}']
    tails += [', "region": {"a": 1}}', ', "region": [1]}', ', "region": tru}', ', "region": 01}']
    tails += [', "region": "x\\"y"}', ', "region": 1e400}', ', "region": "eu" "us"}', ', "region"}']
    lines = [base + "}"]
    for tail in tails:
        lines += [base + tail, good(region="eu"), base + tail]
    assert_like_validator(("\n".join(lines) + "\n").encode())
