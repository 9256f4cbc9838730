"""One compiled pass over a JSONL buffer: line bounds, JSON validation and the known fields.

pyarrow.json fails a whole block on one bad line and builds every column generically; this
scanner (Numba, GIL released, so chunks scan in threads) reads each line once, validates it
as JSON and writes the known fields straight into typed arrays. It is sound rather than
complete: a line it is not sure about (an escape in a known string, an unusual number or
timestamp, a number that may not fit a double, a nested extra, any syntax error, a line
longer than the caller's limit) is marked SLOW and goes to the line validator
(validate.check_line), which keeps or quarantines it. So a FAST line is valid JSON whose
known fields equal what the validator would produce. Strings of the known fields are
dictionary-encoded here (model, route and status take a handful of values).

The hot loops have no bounds checks: the fast path only takes lines that end with a LF (a
last line without one goes to the validator) and every loop stops at a byte the grammar
does not allow where it is, which a LF always is, so no byte read passes the line's LF. The
exceptions check the end themselves: a timestamp's fixed layout, and 8-byte words (strings,
separators, numbers and times are searched and compared a word at a time), read by _word;
extras are copied a word at a time too, into a buffer with 8 bytes to spare.

Numba compiles this on first use and caches the machine code in __pycache__ (cache=True):
about 30 s of CPU once per checkout, then a fraction of a second per process.

Extra fields of FAST lines are copied, as `{"key": value, ...}` lines, into a small side
buffer that pyarrow.json then types (extras are few and unknown in advance). A line of
extras is kept once: rows with the same extras (`"region": "eu-west"`) share it, so
pyarrow.json reads a few lines, not one per row.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import NamedTuple

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from llvmlite import ir
from numba.core import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from pipelines.logs.schema import MAX_LINE_BYTES

# What the caller says each field it names holds.
TS_KIND, STRING_KIND, FLOAT_KIND, INT_KIND = 0, 1, 2, 3

_QUOTE, _BACKSLASH, _COLON, _COMMA, _LF, _CR = 34, 92, 58, 44, 10, 13
_OPEN, _CLOSE = 123, 125
_OPEN_LIST, _CLOSE_LIST = 91, 93
_MAX_EXACT = 1 << 53  # integers a double holds exactly
_MAX_DIGITS = 18  # digits that always fit an int64
# Exponents up to this keep a mantissa of _MAX_DIGITS digits below the largest double.
_MAX_EXP10 = 308 - _MAX_DIGITS
_MIN_EXP10 = -300  # and down to this, a nonzero mantissa stays a normal double
# Nesting a nested extra may have and still be read here (deeper ones go to the validator,
# which bounds the whole line's).
_MAX_NESTING = 16
# Distinct values a known string field may take in one buffer (model, route and status take
# a handful); lines past that go to the validator.
MAX_DISTINCT = 1 << 13
_SLOT_BITS = 14  # hash slots per field: twice MAX_DISTINCT keeps probes short
_SEP_WORDS = 3  # the longest separator learned: 24 bytes, `, "tokens_output": ` and more
# Separators learned after the first, second, ... extra field of a line (the last slot for
# any later one): lines that repeat a layout with several extras repeat each one's successor.
_EXTRA_SLOTS = 4
_END = -1  # the field _connective gives for the end of the object
_POW10 = np.array([10.0**k for k in range(23)])  # exact doubles: Clinger's fast path
_NULL, _TRUE, _FALSE = (np.frombuffer(w, np.uint8).copy() for w in (b"null", b"true", b"false"))
_ESCAPES = np.zeros(256, np.bool_)  # what may follow a backslash, \u aside
_ESCAPES[list(b'"\\/bfnrt')] = True
_DAYS_BEFORE = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], np.int64)
# Words are read as little-endian uint64s: byte k of the buffer is byte k of the word.
assert sys.byteorder == "little"
_ONES = np.uint64(0x0101010101010101)
_HIGHS = _ONES * np.uint64(0x80)
_QUOTES = _ONES * np.uint64(_QUOTE)
_BACKSLASHES = _ONES * np.uint64(_BACKSLASH)
_SPACES = _ONES * np.uint64(32)
_ALL = ~np.uint64(0)
_ZEROS = _ONES * np.uint64(48)
_PAST_NINE = _ONES * np.uint64(0x80 - 58)
_PAIRS = np.uint64(0x00FF00FF00FF00FF)
_FOURS = np.uint64(0x0000FFFF0000FFFF)
_EIGHTS = np.uint64(0x00000000FFFFFFFF)
_POW10_INT = np.array([10**k for k in range(9)], np.int64)
_COLONS_AT = np.uint64(0x0000FF0000FF0000)  # bytes 2 and 5 of `HH:MM:SS`
_CLOCK_COLONS = _COLONS_AT & (_ONES * np.uint64(_COLON))
_CLOCK_ZEROS = _COLONS_AT & _ZEROS
_NO_DATE = -(1 << 62)
# Microseconds since the epoch of the timestamps Python (and so the validator) can hold:
# years 1 to 9999 in UTC, which an offset can leave.
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_MIN_MICROS = (date.min.toordinal() - _EPOCH_DAY) * 86_400_000_000
_MAX_MICROS = (datetime.max.toordinal() + 1 - _EPOCH_DAY) * 86_400_000_000 - 1
_BYTE = np.uint64(0xFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


class Scan(NamedTuple):
    lines: int  # lines in the buffer, blank ones included
    blank: int
    slow: np.ndarray  # int64 [k, 3]: line index, start and end (before any CR LF) of each
    # line left to the validator
    # Per field, per FAST line in order (a row):
    valid: np.ndarray  # bool [field, row]: the field has a non-null value
    numbers: np.ndarray  # float64 [field, row]: float fields
    integers: np.ndarray  # int64 [field, row]: int fields, ts (microseconds, UTC), string
    # fields as codes into their dictionary, and for float fields the mantissa of a value
    # left for deferred_numbers (0 for the others)
    dictionaries: np.ndarray  # int64 [field, code, 2]: byte range of each distinct string
    distinct: np.ndarray  # int64 [field]: codes used
    extras: np.ndarray  # uint8: `{...}` lines of extra fields, each distinct one once
    extra_lines: np.ndarray  # int32 per row: its line in `extras`, -1 if it has no extras


def scan(
    data: bytes | memoryview, names: list[bytes], kinds: list[int], max_line: int = MAX_LINE_BYTES
) -> Scan:
    """Scan `data` for the fields `names` of the given kinds; lines longer than `max_line`
    bytes are left to the validator."""
    buf = np.frombuffer(data, np.uint8)
    key_bytes = np.frombuffer(b"".join(names), np.uint8)
    key_ends = np.cumsum([len(n) for n in names]).astype(np.int64)
    return Scan(*_scan(buf, key_bytes, key_ends, np.array(kinds, np.int8), max_line))


@nb.njit(cache=True, nogil=True)
def _scan(buf, key_bytes, key_ends, kinds, max_line):
    size = len(buf)
    # The fast path reads lines in place up to their LF (see the module docstring).
    fast_end = size
    while fast_end > 0 and buf[fast_end - 1] != _LF:
        fast_end -= 1
    n_fields = len(kinds)
    # Lines are not counted first, a pass over the whole buffer: the outputs per row (and
    # per slow line, [3, line]) start at a guess and double when full.
    guess = size // 64 + 16
    slow = np.empty((3, guess), np.int64)
    valid = np.zeros((n_fields, guess), np.bool_)
    numbers = np.empty((n_fields, guess), np.float64)
    integers = np.empty((n_fields, guess), np.int64)
    extra_lines = np.empty((1, guess), np.int32)
    slots = np.zeros((n_fields, 1 << _SLOT_BITS), np.int32)  # code + 1 (0: empty)
    dictionaries = np.empty((n_fields, MAX_DISTINCT, 2), np.int64)
    distinct = np.zeros(n_fields, np.int64)
    # The last date read, as timestamps repeat it: (set, its first 8 bytes, the next 2, days)
    dates = np.zeros(4, np.int64)
    # A line's extras take at most its bytes: `{`, `,` and `}` stand for the line's own. They
    # are copied a word at a time: 8 bytes spare for the last word's overshoot.
    extras = np.empty(size + 8, np.uint8)
    # The lines of extras kept, interned like a string field's values: (slots, spans, count).
    line_slots = np.zeros((1, 1 << _SLOT_BITS), np.int32)
    line_spans = np.empty((1, MAX_DISTINCT, 2), np.int64)
    interned = np.zeros(1, np.int64)
    kept = 0
    # Logs repeat one layout, so the bytes from the end of a value (or the line start) to the
    # next value, `, "model": ` say, repeat too. Per slot (see _line), the field that came
    # next, those bytes when they fit 3 words, and where the key starts in them: a line that
    # repeats them is read without parsing them again (same bytes after the same kind of
    # token, same parse; the key is in the bytes, so it is compared whole). Each slot has
    # two ways, slot and slot + n_fields + 1 + _EXTRA_SLOTS, the last two separators seen:
    # a field present on some lines only leaves the one before it two successors.
    n_slots = 2 * (n_fields + 1 + _EXTRA_SLOTS)
    follows = np.full(n_slots, -1, np.int64)
    seps = np.zeros((n_slots, _SEP_WORDS), np.uint64)
    sep_sizes = np.zeros(n_slots, np.int64)
    key_offsets = np.zeros(n_slots, np.int64)
    pos = line = row = out = blank = n_slow = kept = 0
    while pos < size:
        if row == valid.shape[1]:
            valid, numbers = _grown(valid, row), _grown(numbers, row)
            integers, extra_lines = _grown(integers, row), _grown(extra_lines, row)
        if n_slow == slow.shape[1]:
            slow = _grown(slow, n_slow)
        # The loop over lines is apart: arrays reassigned in a loop cost reference counting.
        pos, line, row, out, blank, n_slow, kept = _lines(
            buf, fast_end, max_line, pos, line, row, out, blank, n_slow, kept, key_bytes, key_ends,
            kinds, follows, seps, sep_sizes, key_offsets, valid, numbers, integers,
            extra_lines, slow, slots, dictionaries, distinct, dates, extras, line_slots,
            line_spans, interned,
        )  # fmt: skip
    return (
        line, blank, slow[:, :n_slow].T, valid[:, :row], numbers[:, :row], integers[:, :row],
        dictionaries, distinct, extras[:out], extra_lines[0, :row],
    )  # fmt: skip


@nb.njit
def _lines(
    buf, fast_end, max_line, pos, line, row, out, blank, n_slow, kept, key_bytes, key_ends, kinds,
    follows, seps, sep_sizes, key_offsets, valid, numbers, integers, extra_lines, slow,
    slots, dictionaries, distinct, dates, extras, line_slots, line_spans, interned,
):  # fmt: skip
    """Lines from pos until the buffer or an output ends: the counts after them."""
    size = len(buf)
    while pos < size and row < valid.shape[1] and n_slow < slow.shape[1]:
        mark, stop = out, -1
        if pos < fast_end:
            stop, out = _line(
                buf, pos, row, key_bytes, key_ends, kinds, follows, seps, sep_sizes,
                key_offsets, valid, numbers, integers, slots, dictionaries, distinct, dates,
                extras, out,
            )  # fmt: skip
            if stop - pos > max_line:
                stop = -1
        if stop >= 0:
            extra_lines[0, row] = -1
            if out > mark:
                code = _intern(extras, mark, out, 0, line_slots, line_spans, interned)
                if 0 <= code < kept:  # seen before: drop this copy
                    extra_lines[0, row], out = code, mark
                else:  # new, or past MAX_DISTINCT lines: kept as it is
                    extra_lines[0, row] = kept
                    kept += 1
            row += 1
        else:  # blank, or not a line the fast path takes: find its end
            out, stop = mark, pos
            valid[:, row] = False  # the next line reuses the row
            while stop < size and buf[stop] != _LF:
                stop += 1
            end = stop - 1 if stop > pos and buf[stop - 1] == _CR else stop
            if end == pos:
                blank += 1
            else:
                slow[0, n_slow], slow[1, n_slow], slow[2, n_slow] = line, pos, end
                n_slow += 1
        line += 1
        pos = stop + 1
    return pos, line, row, out, blank, n_slow, kept


@nb.njit
def _grown(outputs, n):
    """`outputs` [k, capacity] with twice the capacity, its first n columns kept."""
    bigger = np.zeros((outputs.shape[0], 2 * outputs.shape[1]), outputs.dtype)
    bigger[:, :n] = outputs[:, :n]
    return bigger


@intrinsic
def _load(typingctx, buf, i):
    """The 8 bytes of buf from i as a uint64: one unaligned load, no bounds check."""

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(address, align=1)

    return types.uint64(buf, i), codegen


@intrinsic
def _store(typingctx, buf, i, word):
    """Write the uint64 `word` as the 8 bytes of buf from i: one unaligned store, no bounds
    check."""

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], address, align=1)
        return context.get_dummy_value()

    return types.void(buf, i, word), codegen


@nb.njit(inline="always")
def _word(buf, i):
    """The 8 bytes of buf from i as a uint64 (byte i lowest), zeros past the buffer end."""
    if i + 8 <= len(buf):
        return _load(buf, i)
    word = np.uint64(0)
    for k in range(len(buf) - i):
        word |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return word


@nb.njit(inline="always")
def _low_bytes(n):
    """A mask of the n (0 to 8) lowest bytes of a word."""
    return _ALL >> np.uint64(64 - 8 * n) if n else np.uint64(0)


@nb.njit(inline="always")
def _skip_ws(buf, i):
    while buf[i] == 32 or buf[i] == 9 or buf[i] == _CR:
        i += 1
    return i


@nb.njit
def _line(
    buf, i, row, key_bytes, key_ends, kinds, follows, seps, sep_sizes, key_offsets, valid,
    numbers, integers, slots, dictionaries, distinct, dates, extras, out,
):  # fmt: skip
    """One line from i into `row`: (index of its LF, extras written up to), or (-1, out)
    where the fast path does not take it."""
    # The slot of what came before the next separator: a known field f is slot f, the line
    # start slot `extra` (= the number of known fields), the k-th extra field of the line
    # slot extra + k (up to _EXTRA_SLOTS).
    extra, ways = len(kinds), len(follows) // 2
    slot, mark, n_extras = extra, out, 0
    while True:
        way = slot  # the way of the slot whose separator the line repeats, or -1
        if not (sep_sizes[way] and _repeats(buf, i, seps, way, sep_sizes[way])):
            if slot != extra and buf[i] == _CLOSE:
                # The end of the object, without a call: the usual way past an optional
                # last field (an end is not learned, so the slot keeps that field).
                i += 1
                break
            way = slot + ways
            if not (sep_sizes[way] and _repeats(buf, i, seps, way, sep_sizes[way])):
                way = -1
        if way >= 0:
            field, key = follows[way], i + key_offsets[way]
            i = _skip_ws(buf, i + sep_sizes[way])  # it was learned perhaps cut short by a LF
        else:
            start = i
            i, field, key = _connective(buf, i, slot == extra, follows[slot], key_bytes, key_ends)
            if i < 0:
                return -1, out
            if field == _END:
                break
            _learn(buf, start, i, key, field, slot, follows, seps, sep_sizes, key_offsets)
        if field < extra:
            i = _known(
                buf, i, field, kinds[field], row, valid, numbers, integers,
                slots, dictionaries, distinct, dates,
            )  # fmt: skip
            slot = field
        else:
            # Strings, the usual extras, are read here: _extra, a call, reads the other values.
            end = _text(buf, i) if buf[i] == _QUOTE else _extra(buf, i)
            if end < 0:
                return -1, out
            # `"key": value` from the key: whatever joins them is valid JSON, copied as it is
            out = _copy_extra(buf, key, end, extras, out, out == mark)
            i = end
            n_extras += 1
            slot = extra + min(n_extras, _EXTRA_SLOTS)
        if i < 0:
            return -1, out
    if out > mark:
        extras[out] = _CLOSE
        extras[out + 1] = _LF
        out += 2
    i = _skip_ws(buf, i)
    return (i if buf[i] == _LF else -1), out


@nb.njit
def _connective(buf, i, first, guess, key_bytes, key_ends):
    """What joins a value (or the line start, if `first`) to the next value: (where the value
    starts, its field, where its key starts), (after the `}`, _END, 0) at the end of the
    object, or (-1, 0, 0) if it is not valid JSON."""
    if first:
        if buf[i] == 0xEF and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
            i += 3  # a UTF-8 byte order mark, as some Windows tools write: not part of the line
        i = _skip_ws(buf, i)
        if buf[i] != _OPEN:  # blank lines too: the caller tells them from bad ones
            return -1, 0, 0
        i = _skip_ws(buf, i + 1)
        if buf[i] == _CLOSE:
            return i + 1, _END, 0
    else:
        i = _skip_ws(buf, i)
        if buf[i] == _CLOSE:
            return i + 1, _END, 0
        if buf[i] != _COMMA:
            return -1, 0, 0
        i = _skip_ws(buf, i + 1)
    if buf[i] != _QUOTE:
        return -1, 0, 0
    key = i
    i, escaped = _string(buf, i)
    if i < 0 or escaped:
        return -1, 0, 0
    field = _field(buf, key + 1, i - 1, key_bytes, key_ends, guess)
    i = _skip_ws(buf, i)
    if buf[i] != _COLON:
        return -1, 0, 0
    return _skip_ws(buf, i + 1), field, key


@nb.njit(inline="always")
def _repeats(buf, i, seps, slot, size):
    """Whether buf from i starts with the `size` bytes of seps[slot]."""
    # seps[slot, k], not a row view: a view costs two reference count updates
    for k in range(0, size, 8):
        if (_word(buf, i + k) ^ seps[slot, k >> 3]) & _low_bytes(min(size - k, 8)):
            return False
    return True


@nb.njit
def _learn(buf, start, end, key, field, slot, follows, seps, sep_sizes, key_offsets):
    """Learn buf[start:end], the separator from `slot` to `field` whose key starts at `key`,
    as the slot's first way (its size 0 if it does not fit); the first way becomes the
    second, the second is forgotten."""
    other = slot + len(follows) // 2
    follows[other], sep_sizes[other] = follows[slot], sep_sizes[slot]
    key_offsets[other] = key_offsets[slot]
    for k in range(_SEP_WORDS):
        seps[other, k] = seps[slot, k]
    size = end - start
    follows[slot], key_offsets[slot] = field, key - start
    sep_sizes[slot] = size if size <= 8 * _SEP_WORDS else 0
    for k in range(_SEP_WORDS):
        seps[slot, k] = _word(buf, start + 8 * k) & _low_bytes(min(max(size - 8 * k, 0), 8))


@nb.njit(inline="always")
def _copy_extra(buf, start, end, extras, out, first):
    """Append `{` (the line's first extra) or `,`, then buf[start:end], to extras at out: the
    end. A word at a time: up to 7 bytes past the end are written too, which the next write
    overwrites and the buffer has room for."""
    extras[out] = _OPEN if first else _COMMA
    out += 1
    for k in range(0, end - start, 8):
        _store(extras, out + k, _word(buf, start + k))
    return out + end - start


@nb.njit
def _field(buf, start, end, key_bytes, key_ends, guess):
    """Index of the known field named buf[start:end] (`guess` tried first), or the number
    of known fields for an extra field."""
    if 0 <= guess < len(key_ends) and _is_name(buf, start, end, key_bytes, key_ends, guess):
        return guess
    for f in range(len(key_ends)):
        if _is_name(buf, start, end, key_bytes, key_ends, f):
            return f
    return len(key_ends)


@nb.njit(inline="always")
def _is_name(buf, start, end, key_bytes, key_ends, f):
    begin = key_ends[f - 1] if f else 0
    if key_ends[f] - begin != end - start:
        return False
    k = 0
    while k < end - start and buf[start + k] == key_bytes[begin + k]:
        k += 1
    return k == end - start


@nb.njit(inline="always")
def _known(
    buf, i, field, kind, row, valid, numbers, integers, slots, dictionaries, distinct, dates
):  # fmt: skip
    """Validate the value at i and store it as known field `field`; its end, or -1 where
    the validator should judge it (wrong type, escapes, unusual number or timestamp)."""
    c = buf[i]
    if c == _QUOTE and kind == TS_KIND:
        end, integers[field, row] = _timestamp(buf, i + 1, dates)
        valid[field, row] = True
        return end
    if c == _QUOTE and kind == STRING_KIND:
        # A value with escapes is interned as written, and decoded with the dictionary
        # (decode_strings): a handful of values, not one per row. A surrogate escape may be
        # a lone one, which is no text; the validator judges those.
        end, escaped = _string(buf, i)
        if end < 0 or (escaped and _surrogate_escape(buf, i + 1, end - 1)):
            return -1
        code = _intern(buf, i + 1, end - 1, field, slots, dictionaries, distinct)
        integers[field, row] = code
        valid[field, row] = True
        return end if code >= 0 else -1
    if c == 110:  # null
        valid[field, row] = False
        return _literal(buf, i, _NULL)
    if (c == 45 or 48 <= c <= 57) and kind >= FLOAT_KIND:
        end, mantissa, exp10, integral, exact = _number(buf, i)
        if end < 0 or not exact:
            return -1
        if kind == INT_KIND:
            if not integral:
                return -1
            integers[field, row] = -mantissa if c == 45 else mantissa
        elif mantissa == 0 or (mantissa <= _MAX_EXACT and -22 <= exp10 <= 22):
            value = 0.0
            if mantissa:
                value = mantissa * _POW10[exp10] if exp10 >= 0 else mantissa / _POW10[-exp10]
            # json.loads reads -0 as the integer 0, and -0.0 as the float -0.0
            numbers[field, row] = -value if c == 45 and (mantissa or not integral) else value
            integers[field, row] = 0
        else:
            # Past Clinger's fast path (full-precision doubles, as loggers print them): the
            # signed mantissa (never 0 here) in the float field's integer slot and the power
            # of ten in its number slot, for an exact conversion after the scan
            # (deferred_numbers). The exponent's bounds keep it a finite, normal double.
            if exp10 < _MIN_EXP10 or exp10 > _MAX_EXP10:
                return -1
            integers[field, row] = -mantissa if c == 45 else mantissa
            numbers[field, row] = exp10
        valid[field, row] = True
        return end
    return -1  # wrong types, booleans, objects, arrays, NaN, numeric ts, anything else


@nb.njit
def _extra(buf, i):
    """Validate an extra field's value at i: its end, or -1 (numbers too long to be exact,
    and values nested deeper than _MAX_NESTING, go to the validator)."""
    if buf[i] == _OPEN or buf[i] == _OPEN_LIST:
        return _nested(buf, i)
    return _scalar(buf, i)


@nb.njit
def _nested(buf, i):
    """An object or array from i, validated (its scalars as _scalar does): its end, or -1."""
    # Open containers as bits, 1 for an object, so no stack is allocated.
    objects, depth = np.uint64(0), 0
    while True:
        c = buf[i]
        if c in (_OPEN, _OPEN_LIST):
            if depth == _MAX_NESTING:
                return -1
            objects = (objects << np.uint64(1)) | np.uint64(c == _OPEN)
            depth += 1
            i = _skip_ws(buf, i + 1)
            if buf[i] == (_CLOSE if c == _OPEN else _CLOSE_LIST):
                i += 1
                objects >>= np.uint64(1)
                depth -= 1
            elif c == _OPEN:
                i = _member_key(buf, i)
                if i < 0:
                    return -1
                continue
            else:
                continue
        else:
            i = _scalar(buf, i)
            if i < 0:
                return -1
        # After a value: a comma, the end of its container, or the end of the value.
        while True:
            if depth == 0:
                return i
            i = _skip_ws(buf, i)
            in_object = objects & np.uint64(1)
            c = buf[i]
            if c == _COMMA:
                i = _skip_ws(buf, i + 1)
                if in_object:
                    i = _member_key(buf, i)
                    if i < 0:
                        return -1
                break
            if c != (_CLOSE if in_object else _CLOSE_LIST):
                return -1
            i += 1
            objects >>= np.uint64(1)
            depth -= 1


@nb.njit
def _member_key(buf, i):
    """`"key":` from i: where its value starts, or -1."""
    if buf[i] != _QUOTE:
        return -1
    i = _text(buf, i)
    if i < 0:
        return -1
    i = _skip_ws(buf, i)
    if buf[i] != _COLON:
        return -1
    return _skip_ws(buf, i + 1)


@nb.njit
def _scalar(buf, i):
    """Validate a scalar value at i: its end, or -1 (numbers too long to be exact, or whose
    exponent may overflow a double, go to the validator)."""
    c = buf[i]
    if c == _QUOTE:
        return _text(buf, i)
    if c == 110:
        return _literal(buf, i, _NULL)
    if c == 116:
        return _literal(buf, i, _TRUE)
    if c == 102:
        return _literal(buf, i, _FALSE)
    if c == 45 or 48 <= c <= 57:
        end, _, exp10, _, exact = _number(buf, i)
        return end if exact and exp10 <= _MAX_EXP10 else -1
    return -1


@nb.njit(inline="always")
def _intern(buf, start, end, field, slots, dictionaries, distinct):
    """The dictionary code of the string buf[start:end] for `field`, adding it if new."""
    length = end - start
    # Every byte counts: values alike at both ends (ids, lines of extras) must not collide.
    h = np.uint64(length)
    for k in range(0, length, 8):
        h = (h ^ (_word(buf, start + k) & _low_bytes(min(length - k, 8)))) * _GOLDEN
    slot = np.int64(h >> np.uint64(64 - _SLOT_BITS))
    mask = (1 << _SLOT_BITS) - 1
    while True:
        code = slots[field, slot] - 1
        if code < 0:
            code = distinct[field]
            if code == MAX_DISTINCT:
                return -1
            distinct[field] += 1
            slots[field, slot] = code + 1
            dictionaries[field, code, 0], dictionaries[field, code, 1] = start, end
            return code
        s, e = dictionaries[field, code, 0], dictionaries[field, code, 1]
        if e - s == length and _same(buf, s, start, length):
            return code
        slot = (slot + 1) & mask


@nb.njit(inline="always")
def _same(buf, a, b, length):
    """Whether buf[a:a + length] equals buf[b:b + length], compared a word at a time."""
    for k in range(0, length, 8):
        differ = _word(buf, a + k) ^ _word(buf, b + k)
        if differ & _low_bytes(min(length - k, 8)):
            return False
    return True


@nb.njit
def _literal(buf, i, word):
    for k in range(len(word)):
        if buf[i + k] != word[k]:
            return -1
    return i + len(word)


@nb.njit(inline="always")
def _specials(word):
    """The high bit of each byte of `word` that a string scan stops at: a quote, a backslash,
    a control or a non-ASCII byte. Exact up to the lowest one (borrows may mark bytes above
    it), which is the one used."""
    quotes = word ^ _QUOTES
    backslashes = word ^ _BACKSLASHES
    marks = (quotes - _ONES) & ~quotes | (backslashes - _ONES) & ~backslashes
    return (marks | (word - _SPACES) | word) & _HIGHS


@nb.njit(inline="always")
def _string(buf, i):
    """A JSON string from its opening quote at i: (index after its closing quote, whether
    it has escapes), or (-1, False) if invalid (control character, bad escape, bad UTF-8)."""
    i += 1
    found = _specials(_word(buf, i))
    while not found:  # plain ASCII a word at a time, to the first byte that needs a look
        i += 8
        found = _specials(_word(buf, i))
    i += np.int64(trailing_zeros(found) >> np.uint64(3))
    if buf[i] == _QUOTE:
        return i + 1, False
    return _string_rest(buf, i)


@nb.njit
def _string_rest(buf, i):
    """_string from i, byte by byte (escapes, UTF-8 sequences)."""
    escaped = False
    while True:
        c = buf[i]
        if c == _QUOTE:
            return i + 1, escaped
        if c < 32:
            return -1, False
        if c == _BACKSLASH:
            escaped = True
            e = buf[i + 1]
            if e == 117:  # \uXXXX
                for k in range(2, 6):
                    if not _is_hex(buf[i + k]):
                        return -1, False
                i += 6
            elif _ESCAPES[e]:
                i += 2
            else:
                return -1, False
        elif c < 128:
            i += 1
        else:
            i = _utf8(buf, i)
            if i < 0:
                return -1, False


@nb.njit(inline="always")
def _text(buf, i):
    """_string's end, or -1 also where an escape may be a lone surrogate (no text, which the
    validator quarantines)."""
    end, escaped = _string(buf, i)
    if escaped and _surrogate_escape(buf, i + 1, end - 1):
        return -1
    return end


@nb.njit
def _surrogate_escape(buf, i, end):
    """Whether the string bytes buf[i:end] hold a lone surrogate escape (\\uD800 to \\uDFFF
    not in a high-low pair)."""
    while i < end:
        if buf[i] != _BACKSLASH:
            i += 1
        elif _surrogate(buf, i) == 1 and _surrogate(buf, i + 6) == 2:
            i += 12  # a pair, as json.dumps writes a character past U+FFFF
        elif _surrogate(buf, i):
            return True
        else:
            i += 2
    return False


@nb.njit(inline="always")
def _surrogate(buf, i):
    """1 for a high surrogate escape at i, 2 for a low one, else 0 (the escape's hex digits
    are valid: the string was read)."""
    if buf[i] != _BACKSLASH or buf[i + 1] != 117 or (buf[i + 2] | 32) != 100:
        return 0
    third = buf[i + 3] | 32  # 8 9 a b: high; c d e f: low; digits 0 to 7: not one
    if third == 56 or third == 57 or third == 97 or third == 98:
        return 1
    return 2 if 99 <= third <= 102 else 0


@nb.njit
def _is_hex(c):
    return 48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102


@nb.njit
def _utf8(buf, i):
    """One well-formed UTF-8 sequence (no overlongs, no surrogates) from i; its end or -1."""
    c = buf[i]
    low, high = 0x80, 0xBF
    if 0xC2 <= c <= 0xDF:
        n = 1
    elif 0xE0 <= c <= 0xEF:
        n = 2
        if c == 0xE0:
            low = 0xA0
        elif c == 0xED:
            high = 0x9F
    elif 0xF0 <= c <= 0xF4:
        n = 3
        if c == 0xF0:
            low = 0x90
        elif c == 0xF4:
            high = 0x8F
    else:
        return -1
    for k in range(1, n + 1):
        b = buf[i + k]
        if not (low <= b <= high):
            return -1
        low, high = 0x80, 0xBF
    return i + n + 1


@nb.njit(inline="always")
def _number(buf, i):
    """A JSON number from i: (end, |mantissa|, power of ten, integral, exact); end -1 if
    invalid. exact: the mantissa has at most 18 significant digits."""
    # The usual shape, up to 7 digits then a fraction, both read a word at a time, up to
    # _MAX_DIGITS digits in all (full-precision doubles print 17); any other (more digits,
    # an exponent, a leading zero, an error) is left to the byte loop.
    j = i + 1 if buf[i] == 45 else i
    word = _word(buf, j)
    n = _digit_run(word)
    if 0 < n < 8 and (n == 1 or buf[j] != 48):
        mantissa = _digits_value(word, n)
        j += n
        if buf[j] == 46:
            j += 1
            digits = n
            while True:
                word = _word(buf, j)
                m = _digit_run(word)
                if m == 0 or digits + m > _MAX_DIGITS:
                    break
                mantissa = mantissa * _POW10_INT[m] + _digits_value(word, m)
                digits += m
                j += m
                if m < 8:
                    if (buf[j] | 32) != 101:  # no exponent: e or E
                        return j, mantissa, n - digits, False, True
                    break
        elif (buf[j] | 32) != 101:
            return j, mantissa, 0, True, True
    return _number_bytes(buf, i)


@nb.njit(inline="always")
def _digit_run(word):
    """How many of the lowest bytes of `word` are ASCII digits, in a row (8: all)."""
    # A byte below '0' borrows (high bit set), one above '9' reaches 0x80 when 0x46 is added;
    # carries and borrows only come from such bytes, so the lowest one found is exact.
    others = ((word - _ZEROS) | (word + _PAST_NINE)) & _HIGHS
    return np.int64(trailing_zeros(others) >> np.uint64(3))


@nb.njit(inline="always")
def _digits_value(word, n):
    """The value of the n (1 to 8) ASCII digits in the lowest bytes of `word`."""
    # Moved to the top bytes, zeros (leading zero digits) below them; the first digit is the
    # lowest byte, so pairs, then fours, then all eight combine by multiply and shift.
    word = (word - _ZEROS) << np.uint64(64 - 8 * n)
    word = (word * np.uint64(10) + (word >> np.uint64(8))) & _PAIRS
    word = (word * np.uint64(100) + (word >> np.uint64(16))) & _FOURS
    return np.int64((word * np.uint64(10000) + (word >> np.uint64(32))) & _EIGHTS)


@nb.njit
def _number_bytes(buf, i):
    """_number a byte at a time."""
    if buf[i] == 45:
        i += 1
    c = buf[i]
    if not (48 <= c <= 57):
        return -1, 0, 0, False, False
    mantissa, digits, exp10 = 0, 0, 0
    if c == 48:
        i += 1
    else:
        while 48 <= buf[i] <= 57:
            if digits < _MAX_DIGITS:
                mantissa = mantissa * 10 + (buf[i] - 48)
                digits += mantissa > 0
            else:
                exp10 += 1
                digits += 1
            i += 1
    integral = True
    if buf[i] == 46:
        integral = False
        i += 1
        if not (48 <= buf[i] <= 57):
            return -1, 0, 0, False, False
        while 48 <= buf[i] <= 57:
            if digits < _MAX_DIGITS:
                mantissa = mantissa * 10 + (buf[i] - 48)
                digits += mantissa > 0
                exp10 -= 1
            else:
                digits += 1
            i += 1
    if buf[i] == 101 or buf[i] == 69:
        integral = False
        i += 1
        sign = 1
        if buf[i] == 43 or buf[i] == 45:
            sign = -1 if buf[i] == 45 else 1
            i += 1
        if not (48 <= buf[i] <= 57):
            return -1, 0, 0, False, False
        power = 0
        while 48 <= buf[i] <= 57:
            power = min(power * 10 + (buf[i] - 48), 100_000)
            i += 1
        exp10 += sign * power
    return i, mantissa, exp10, integral, digits <= _MAX_DIGITS


@nb.njit(inline="always")
def _timestamp(buf, s, dates):
    """The JSON string from s (after its quote) as `YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}]` then
    `Z`, `+HH:MM`, `-HH:MM` or nothing (UTC): (index after the closing quote, microseconds
    since the epoch), or (-1, 0) for any other form, which the validator then judges
    (datetime.fromisoformat). Reading the digits validates the bytes: no string scan first.
    `dates` keeps the last date: the same 10 bytes are the same valid date."""
    if s + 20 > len(buf):  # the fixed layout is read out of order: up to s + 19 in bounds
        return -1, 0
    date, day = np.int64(_word(buf, s)), np.int64(_word(buf, s + 8) & np.uint64(0xFFFF))
    if not (dates[0] and date == dates[1] and day == dates[2]):
        days = _date(buf, s)
        if days == _NO_DATE:
            return -1, 0
        dates[0], dates[1], dates[2], dates[3] = 1, date, day, days
    # HH:MM:SS in one word: its colons made zero digits, then each pair combined in place.
    clock = _word(buf, s + 11)
    if (buf[s + 10] != 84 and buf[s + 10] != 32) or (clock & _COLONS_AT) != _CLOCK_COLONS:
        return -1, 0
    clock ^= _CLOCK_COLONS ^ _CLOCK_ZEROS
    if _digit_run(clock) != 8:
        return -1, 0
    digits = clock - _ZEROS
    pairs = digits * np.uint64(10) + (digits >> np.uint64(8))  # bytes 0, 3, 6: HH, MM, SS
    hour = np.int64(pairs & _BYTE)
    minute = np.int64((pairs >> np.uint64(24)) & _BYTE)
    second = np.int64((pairs >> np.uint64(48)) & _BYTE)
    if hour > 23 or minute > 59 or second > 59:
        return -1, 0
    i = s + 19  # from here on read in order: the LF stops every rule
    micros = 0
    if buf[i] == 46:
        fraction = _word(buf, i + 1)
        n = _digit_run(fraction)
        if n == 0 or n > 6:
            return -1, 0
        micros = _digits_value(fraction, n) * _POW10_INT[6 - n]
        i += n + 1
    offset = 0
    c = buf[i]
    if c == 90:  # Z
        i += 1
    elif c == 43 or c == 45:
        oh, ok = _digits(buf, i + 1, 2)
        if not ok or buf[i + 3] != _COLON:
            return -1, 0
        om, ok = _digits(buf, i + 4, 2)
        if not ok or oh > 23 or om > 59:
            return -1, 0
        offset = (oh * 60 + om) * (1 if c == 43 else -1)
        i += 6
    if buf[i] != _QUOTE:
        return -1, 0
    seconds = dates[3] * 86400 + hour * 3600 + minute * 60 + second - offset * 60
    micros += seconds * 1_000_000
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        return -1, 0
    return i + 1, micros


@nb.njit
def _date(buf, s):
    """Days since 1970-01-01 of the date `YYYY-MM-DD` at s, or _NO_DATE."""
    if buf[s + 4] != 45 or buf[s + 7] != 45:
        return _NO_DATE
    year, ok1 = _digits(buf, s, 4)
    month, ok2 = _digits(buf, s + 5, 2)
    day, ok3 = _digits(buf, s + 8, 2)
    if not (ok1 and ok2 and ok3) or year < 1 or not 1 <= month <= 12:
        return _NO_DATE
    if not 1 <= day <= _month_days(year, month):
        return _NO_DATE
    return _days_from_civil(year, month, day)


@nb.njit
def _digits(buf, i, n):
    """n decimal digits from i, read in order up to the first non-digit."""
    value = 0
    for k in range(n):
        c = buf[i + k]
        if not 48 <= c <= 57:
            return 0, False
        value = value * 10 + (c - 48)
    return value, True


@nb.njit
def _leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@nb.njit
def _month_days(year, month):
    if month == 2:
        return 29 if _leap(year) else 28
    return 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31


@nb.njit
def _days_from_civil(year, month, day):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE[month - 1] + day - 1
    if month > 2 and _leap(year):
        days += 1
    return days - 719162  # days from 0001-01-01 to 1970-01-01


def gather_strings(data: bytes | memoryview, spans: np.ndarray) -> pa.Array:
    """The byte ranges `spans` [n, 2] of `data` as an Arrow string array."""
    offsets, chars = _gather(np.frombuffer(data, np.uint8), spans)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
    return pa.Array.from_buffers(pa.string(), len(spans), buffers)


@nb.njit(cache=True, nogil=True)
def _gather(buf, spans):
    n = len(spans)
    offsets = np.zeros(n + 1, np.int32)
    for r in range(n):
        offsets[r + 1] = offsets[r] + spans[r, 1] - spans[r, 0]
    out = np.empty(offsets[n], np.uint8)
    for r in range(n):
        out[offsets[r] : offsets[r + 1]] = buf[spans[r, 0] : spans[r, 1]]
    return offsets, out


def deferred_numbers(numbers: np.ndarray, integers: np.ndarray, valid: np.ndarray) -> None:
    """Convert, in `numbers`, the values of a float field the scan left as a mantissa (in
    `integers`, nonzero) and a power of ten (in `numbers`): as `{mantissa}e{power}` text, cast
    by Arrow, whose conversion is correctly rounded as Python's float() (the validator's)
    is."""
    todo = np.flatnonzero((integers != 0) & valid)
    if not len(todo):
        return
    mantissas = pc.cast(pa.array(integers[todo]), pa.string())
    powers = pc.cast(pa.array(numbers[todo].astype(np.int64)), pa.string())
    text = pc.binary_join_element_wise(mantissas, powers, "e")
    numbers[todo] = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)


def decode_strings(words: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """A known field's dictionary as scanned (values with escapes as written) -> (its
    values decoded, each distinct once; per scanned code its code there, None where the
    codes stand)."""
    if not pc.any(pc.match_substring(words, "\\")).as_py():
        return words, None
    decoded = [json.loads(f'"{word}"') if "\\" in word else word for word in words.to_pylist()]
    codes = {word: code for code, word in enumerate(dict.fromkeys(decoded))}
    remap = np.array([codes[word] for word in decoded], np.int32)
    return pa.array(list(codes), pa.string()), remap
