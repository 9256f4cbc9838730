"""One compiled pass over a JSONL buffer: line bounds, JSON validation and the known fields.

pyarrow.json fails a whole block on one bad line and builds every column generically; this
scanner (Numba, GIL released, so chunks scan in threads) reads each line once, validates it
as JSON and writes the known fields straight into typed arrays. It is sound rather than
complete: a line it is not sure about (an escape in a known string, an unusual number or
timestamp, a nested extra, any syntax error) is marked SLOW and goes to the line validator
(validate.check_line), which keeps or quarantines it. So a FAST line is valid JSON whose
known fields equal what the validator would produce. Strings of the known fields are
dictionary-encoded here (model, route and status take a handful of values).

The hot loops have no bounds checks: the fast path only takes lines that end with a LF (a
last line without one goes to the validator) and every loop stops at a byte the grammar
does not allow where it is, which a LF always is, so no byte read passes the line's LF. The
exceptions check the end themselves: a timestamp's fixed layout, and 8-byte words (strings
and keys are compared and searched a word at a time), read by _word.

Numba compiles this on first use and caches the machine code in __pycache__ (cache=True):
about 30 s of CPU once per checkout, then a fraction of a second per process.

Extra fields of FAST lines are copied, as `{"key": value, ...}` lines, into a small side
buffer that pyarrow.json then types (extras are few and unknown in advance).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numba as nb
import numpy as np
import pyarrow as pa
from llvmlite import ir
from numba.core import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

# What the caller says each field it names holds.
TS_KIND, STRING_KIND, FLOAT_KIND, INT_KIND = 0, 1, 2, 3

_QUOTE, _BACKSLASH, _COLON, _COMMA, _LF, _CR = 34, 92, 58, 44, 10, 13
_OPEN, _CLOSE = 123, 125
_MAX_EXACT = 1 << 53  # integers a double holds exactly
_MAX_DIGITS = 18  # digits that always fit an int64
# Distinct values a known string field may take in one buffer (model, route and status take
# a handful); lines past that go to the validator.
MAX_DISTINCT = 1 << 13
_SLOT_BITS = 14  # hash slots per field: twice MAX_DISTINCT keeps probes short
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
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


class Scan(NamedTuple):
    lines: int  # lines in the buffer, blank ones included
    blank: int
    slow: np.ndarray  # int64 [k, 3]: line index, start and end (before any CR LF) of each
    # line left to the validator
    # Per field, per FAST line in order (a row):
    valid: np.ndarray  # bool [field, row]: the field has a non-null value
    numbers: np.ndarray  # float64 [field, row]: float fields
    integers: np.ndarray  # int64 [field, row]: int fields, ts (microseconds, UTC), and
    # string fields as codes into their dictionary
    dictionaries: np.ndarray  # int64 [field, code, 2]: byte range of each distinct string
    distinct: np.ndarray  # int64 [field]: codes used
    extras: np.ndarray  # uint8: one `{...}` line per row that has extra fields
    has_extras: np.ndarray  # bool per row


def scan(data: bytes, names: list[bytes], kinds: list[int]) -> Scan:
    """Scan `data` for the fields `names` of the given kinds."""
    buf = np.frombuffer(data, np.uint8)
    key_bytes = np.frombuffer(b"".join(names), np.uint8)
    key_ends = np.cumsum([len(n) for n in names]).astype(np.int64)
    key_words, key_masks = _key_words(names)
    return Scan(*_scan(buf, key_bytes, key_ends, key_words, key_masks, np.array(kinds, np.int8)))


def _key_words(names: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Each name with its closing quote as little-endian words [field, word], and masks of
    the bytes that belong to it, to compare a key a word at a time."""
    width = max((len(n) + 8) // 8 for n in names) * 8 if names else 8
    words = np.zeros((len(names), width), np.uint8)
    masks = np.zeros((len(names), width), np.uint8)
    for f, name in enumerate(names):
        words[f, : len(name) + 1] = np.frombuffer(name + b'"', np.uint8)
        masks[f, : len(name) + 1] = 0xFF
    return words.view("<u8"), masks.view("<u8")


@nb.njit(cache=True, nogil=True)
def _scan(buf, key_bytes, key_ends, key_words, key_masks, kinds):
    size = len(buf)
    lines = 1
    for i in range(size):
        lines += np.int64(buf[i] == _LF)  # an integer sum vectorises; a bool one does not
    # The fast path reads lines in place up to their LF (see the module docstring).
    fast_end = size
    while fast_end > 0 and buf[fast_end - 1] != _LF:
        fast_end -= 1
    n_fields = len(kinds)
    # Outputs are written once, so np.empty: fresh pages cost page faults, not zeroing.
    slow = np.empty((lines, 3), np.int64)
    valid = np.zeros((n_fields, lines), np.bool_)
    numbers = np.empty((n_fields, lines), np.float64)
    integers = np.empty((n_fields, lines), np.int64)
    slots = np.zeros((n_fields, 1 << _SLOT_BITS), np.int32)  # code + 1 (0: empty)
    dictionaries = np.empty((n_fields, MAX_DISTINCT, 2), np.int64)
    distinct = np.zeros(n_fields, np.int64)
    extras = np.empty(len(buf) + 3 * lines, np.uint8)  # + `{`, `}`, LF per line
    has_extras = np.zeros(lines, np.bool_)
    # follows[f]: the field that came after field f on the last line (n_fields: an extra,
    # n_fields + 1: the line start): logs repeat one key order, so it is the first guess.
    follows = np.full(n_fields + 2, -1, np.int64)
    pos, line, row, out, blank, n_slow = 0, 0, 0, 0, 0, 0
    while pos < size:
        mark, stop = out, -1
        if pos < fast_end:
            stop, out = _line(
                buf, pos, row, key_bytes, key_ends, key_words, key_masks, kinds, follows,
                valid, numbers, integers, slots, dictionaries, distinct, extras, out,
            )  # fmt: skip
        if stop >= 0:
            has_extras[row] = out > mark
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
                slow[n_slow, 0], slow[n_slow, 1], slow[n_slow, 2] = line, pos, end
                n_slow += 1
        line += 1
        pos = stop + 1
    return (
        line, blank, slow[:n_slow], valid[:, :row], numbers[:, :row], integers[:, :row],
        dictionaries, distinct, extras[:out], has_extras[:row],
    )  # fmt: skip


@intrinsic
def _load(typingctx, buf, i):
    """The 8 bytes of buf from i as a uint64: one unaligned load, no bounds check."""

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(address, align=1)

    return types.uint64(buf, i), codegen


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
    buf, i, row, key_bytes, key_ends, key_words, key_masks, kinds, follows, valid, numbers,
    integers, slots, dictionaries, distinct, extras, out,
):  # fmt: skip
    """One line from i into `row`: (index of its LF, extras written up to), or (-1, out)
    where the fast path does not take it."""
    if buf[i] == 0xEF and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
        i += 3  # a UTF-8 byte order mark, as some Windows tools write: not part of the line
    i = _skip_ws(buf, i)
    if buf[i] != _OPEN:  # blank lines too: the caller tells them from bad ones
        return -1, out
    i = _skip_ws(buf, i + 1)
    first_extra = True
    previous = len(kinds) + 1
    if buf[i] == _CLOSE:
        i += 1
    else:
        while True:
            if buf[i] != _QUOTE:
                return -1, out
            key_start = i
            field = follows[previous]
            if 0 <= field < len(kinds) and _is_key(buf, i + 1, key_words, key_masks, field):
                i += key_ends[field] - (key_ends[field - 1] if field else 0) + 2
            else:
                i, escaped = _string(buf, i)
                if i < 0 or escaped:
                    return -1, out
                field = _field(buf, key_start + 1, i - 1, key_bytes, key_ends)
            follows[previous] = field if field >= 0 else len(kinds)
            previous = follows[previous]
            i = _skip_ws(buf, i)
            if buf[i] != _COLON:
                return -1, out
            i = _skip_ws(buf, i + 1)
            if field < 0:
                i = _extra(buf, i)
                if i < 0:
                    return -1, out
                out = _copy_extra(buf, key_start, i, extras, out, first_extra)
                first_extra = False
            else:
                i = _known(
                    buf, i, field, kinds[field], row, valid, numbers, integers,
                    slots, dictionaries, distinct,
                )  # fmt: skip
                if i < 0:
                    return -1, out
            i = _skip_ws(buf, i)
            if buf[i] == _COMMA:
                i = _skip_ws(buf, i + 1)
            elif buf[i] == _CLOSE:
                i += 1
                break
            else:
                return -1, out
    if not first_extra:
        extras[out] = _CLOSE
        extras[out + 1] = _LF
        out += 2
    i = _skip_ws(buf, i)
    if buf[i] != _LF:
        return -1, out
    return i, out


@nb.njit(inline="always")
def _is_key(buf, i, key_words, key_masks, field):
    """Whether the key string from i (after its quote) is exactly known field `field`."""
    for k in range(key_words.shape[1]):
        mask = key_masks[field, k]
        if not mask:
            break
        if _word(buf, i + 8 * k) & mask != key_words[field, k]:
            return False
    return True


@nb.njit
def _copy_extra(buf, start, end, extras, out, first):
    extras[out] = _OPEN if first else _COMMA
    out += 1
    for k in range(end - start):
        extras[out + k] = buf[start + k]
    return out + end - start


@nb.njit
def _field(buf, start, end, key_bytes, key_ends):
    """Index of the known field named buf[start:end], or -1 for an extra field."""
    begin = 0
    for f in range(len(key_ends)):
        if key_ends[f] - begin == end - start:
            same = True
            for k in range(end - start):
                if buf[start + k] != key_bytes[begin + k]:
                    same = False
                    break
            if same:
                return f
        begin = key_ends[f]
    return -1


@nb.njit(inline="always")
def _known(buf, i, field, kind, row, valid, numbers, integers, slots, dictionaries, distinct):
    """Validate the value at i and store it as known field `field`; its end, or -1 where
    the validator should judge it (wrong type, escapes, unusual number or timestamp)."""
    c = buf[i]
    if c == _QUOTE and kind == TS_KIND:
        end, integers[field, row] = _timestamp(buf, i + 1)
        valid[field, row] = True
        return end
    if c == _QUOTE and kind == STRING_KIND:
        end, escaped = _string(buf, i)
        if end < 0 or escaped:
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
        else:
            if mantissa > _MAX_EXACT or exp10 < -22 or exp10 > 22:
                return -1
            value = mantissa * _POW10[exp10] if exp10 >= 0 else mantissa / _POW10[-exp10]
            # json.loads reads -0 as the integer 0, and -0.0 as the float -0.0
            numbers[field, row] = -value if c == 45 and (mantissa or not integral) else value
        valid[field, row] = True
        return end
    return -1  # wrong types, booleans, objects, arrays, NaN, numeric ts, anything else


@nb.njit
def _extra(buf, i):
    """Validate an extra field's scalar value at i: its end, or -1 (nested values and
    numbers too long to be exact go to the validator)."""
    c = buf[i]
    if c == _QUOTE:
        return _string(buf, i)[0]
    if c == 110:
        return _literal(buf, i, _NULL)
    if c == 116:
        return _literal(buf, i, _TRUE)
    if c == 102:
        return _literal(buf, i, _FALSE)
    if c == 45 or 48 <= c <= 57:
        end, _, _, _, exact = _number(buf, i)
        return end if exact else -1
    return -1


@nb.njit(inline="always")
def _intern(buf, start, end, field, slots, dictionaries, distinct):
    """The dictionary code of the string buf[start:end] for `field`, adding it if new."""
    length = end - start
    # Hash the first and last 8 bytes and the length: the values are few, a probe compares.
    head = _word(buf, start) & _low_bytes(min(length, 8))
    tail = _word(buf, end - 8) if length > 8 else head
    h = ((head * _GOLDEN) ^ tail ^ np.uint64(length)) * _GOLDEN
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


@nb.njit
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


@nb.njit
def _number(buf, i):
    """A JSON number from i: (end, |mantissa|, power of ten, integral, exact); end -1 if
    invalid. exact: the mantissa has at most 18 significant digits."""
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


@nb.njit
def _timestamp(buf, s):
    """The JSON string from s (after its quote) as `YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}]` then
    `Z`, `+HH:MM`, `-HH:MM` or nothing (UTC): (index after the closing quote, microseconds
    since the epoch), or (-1, 0) for any other form, which the validator then judges
    (datetime.fromisoformat). Reading the digits validates the bytes: no string scan first."""
    if s + 20 > len(buf):  # the fixed layout is read out of order: up to s + 19 in bounds
        return -1, 0
    if buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 13] != _COLON or buf[s + 16] != _COLON:
        return -1, 0
    if buf[s + 10] != 84 and buf[s + 10] != 32:
        return -1, 0
    year, ok1 = _digits(buf, s, 4)
    month, ok2 = _digits(buf, s + 5, 2)
    day, ok3 = _digits(buf, s + 8, 2)
    hour, ok4 = _digits(buf, s + 11, 2)
    minute, ok5 = _digits(buf, s + 14, 2)
    second, ok6 = _digits(buf, s + 17, 2)
    if not (ok1 and ok2 and ok3 and ok4 and ok5 and ok6):
        return -1, 0
    if year < 1 or not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return -1, 0
    if not 1 <= day <= _month_days(year, month):
        return -1, 0
    i = s + 19  # from here on read in order: the LF stops every rule
    micros = 0
    if buf[i] == 46:
        i += 1
        n = 0
        while 48 <= buf[i] <= 57:
            micros = micros * 10 + (buf[i] - 48)
            n += 1
            i += 1
        if n == 0 or n > 6:
            return -1, 0
        for _ in range(6 - n):
            micros *= 10
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
    days = _days_from_civil(year, month, day)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset * 60
    return i + 1, seconds * 1_000_000 + micros


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


def gather_strings(data: bytes, spans: np.ndarray) -> pa.Array:
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
