"""Columnar reading of delimited click logs: numpy scans the bytes, no Python object per row.

:func:`scan_delimited` reads a file in blocks of whole lines into arrays allocated once for
the file's line count: for each id column its fields' bytes packed into big-endian 64-bit words
(and their values, while every id is a canonical decimal), for the timestamp column the parsed
floats, plus what the loaders need to refuse bad rows with the messages of the ``csv``-module
reader: the first short row, empty-field counts and the text of the timestamps the fast parser
does not take. Digits are read eight at a time with integer arithmetic on 64-bit words. It
handles the files the ``csv`` module reads without any quoting rule mattering; for the others
(a ``"`` in a quoted dialect, a carriage return that does not end a line, a NUL byte, a line
longer than the csv field limit, text that is not UTF-8 when strict) it raises
:class:`Unsupported` and the loaders fall back to ``csv``.

:func:`encode_column` turns packed id words into an :class:`Encoded` column (codes into the
distinct values). Canonical decimal ids (digits, no leading zero, up to 16 of them) are
encoded by value without sorting text, and their values are kept in numeric order, which is
the order :func:`~llm4sbr.data.presets.key_rank` gives them.

Timestamps: a field of the form ``[-]digits[.digits]`` whose digits, read as one integer, are at
most 2**53 and with at most 22 decimals is ``integer / 10**decimals``, one correctly rounded
division of two exact doubles, hence the same double as Python's ``float(text)``; every other
field is converted by numpy exactly as the ``csv``-module reader converts it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BLOCK_BYTES = 1 << 21
"""Bytes read per block (whole lines; a longer line is read whole)."""
FIELD_LIMIT = 131072
"""The csv module's default field size limit: longer lines go to the csv reader, which decides."""
PEAK_BYTES_PER_CLICK = 100
"""Peak memory of loading a log and building its samples, per click, with margin: the scale
benchmark measures about 72 bytes on 3.3M and 25M clicks (``python -m bench --suite scale``)."""
_POW10 = np.array([float(10**k) for k in range(23)])
_MAX_EXACT = 2**53
# Eight ASCII digits in a little-endian word (first character in the lowest byte) are read with
# a few multiplications (SWAR); these constants pad, mask and check them.
_ZEROS = 0x3030303030303030
_PAD = np.array([_ZEROS >> (8 * k) if k < 8 else 0 for k in range(9)], dtype=np.uint64)
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_POW10_INT = np.array([10**k for k in range(9)], dtype=np.uint64)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)


class InsufficientMemoryError(MemoryError):
    """A log too large for the memory this process may use, refused before it is read."""


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, capped by the cgroup
    v2 limit less current usage; None where neither is known (not Linux)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            left = max(int(limit) - used, 0)
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available


def check_fits_memory(path: str | os.PathLike, clicks: int) -> None:
    """Refuse a log of ``clicks`` lines that would not fit: raises
    :class:`InsufficientMemoryError` with the estimate (:data:`PEAK_BYTES_PER_CLICK` per click)
    when it exceeds :func:`available_memory`."""
    need, available = clicks * PEAK_BYTES_PER_CLICK, available_memory()
    if available is not None and need > available:
        raise InsufficientMemoryError(
            f"{path}: {clicks:,} clicks need about {need / 2**30:.1f} GiB to load and turn into "
            f"samples ({PEAK_BYTES_PER_CLICK} bytes per click), but only {available / 2**30:.1f} GiB "
            f"is available; free memory, use a larger machine or load part of the log"
        )


class Unsupported(Exception):
    """The file needs the ``csv`` module: quoting, a bare carriage return, a NUL byte, a line
    over the csv field limit, or (strict decoding) bytes that are not UTF-8."""


@dataclass(frozen=True)
class Encoded:
    """A text column as codes into its distinct values (dictionary encoding).

    codes [n] int32 or int64 index values [k] (str, distinct). ``ordered`` says the values are
    in key order (see :func:`~llm4sbr.data.presets.key_rank`: numeric for all-digit ids,
    code-point order otherwise), so that a code is its key's rank. Selecting rows
    (``column[mask]``) keeps the values, so some may then be unused.
    """

    codes: np.ndarray
    values: np.ndarray
    ordered: bool = False

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: np.ndarray | slice) -> Encoded:
        return Encoded(self.codes[index], self.values, self.ordered)

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        decoded = self.values[self.codes]
        return decoded if dtype is None else decoded.astype(dtype)

    def tolist(self) -> list[str]:
        return self.values[self.codes].tolist()


@dataclass
class ScanResult:
    """What :func:`scan_delimited` read.

    header: the first line's fields as the csv module parses them. rows: data rows (non-blank
    lines after the header). short_row: the first data row (0-based) with too few fields for
    the columns asked for, -1 if none, and short_fields its field count. empty_counts: per id
    column, how many rows have it empty, and empty_rows the first six of them [<= 6] int64.
    words: per id column, the field bytes as big-endian uint64 words [rows, w] (zero-padded,
    ``w`` fits the longest field). numbers: per id column, the ids as int64 [rows] when all are
    canonical decimals (see :func:`encode_column`), else None. timestamp [rows] float64 (0
    where the field was not parsed). complex_rows [m] int64 and complex_text [m] str: the
    timestamp fields the fast parser did not take, in row order. Rows too short to hold a
    column read it as empty.
    """

    header: list[str]
    rows: int = 0
    short_row: int = -1
    short_fields: int = 0
    empty_counts: list[int] = field(default_factory=list)
    empty_rows: list[np.ndarray] = field(default_factory=list)
    words: list[np.ndarray] = field(default_factory=list)
    numbers: list[np.ndarray | None] = field(default_factory=list)
    timestamp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    complex_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    complex_text: list[str] = field(default_factory=list)


def _lines(buf: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) [m] int64 of the non-blank lines of ``buf[:size]``, which ends at a line end
    (or the end of the file); ``\\r\\n`` counts as one line end."""
    newlines = np.flatnonzero(buf[:size] == 10)
    ends = newlines if len(newlines) and newlines[-1] == size - 1 else np.append(newlines, size)
    starts = np.concatenate([[0], ends[:-1] + 1])
    ends = ends - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13))
    keep = ends > starts
    return starts[keep], ends[keep]


def _check_block(buf: np.ndarray, size: int, quote: bool, strict: bool) -> None:
    """Raise :class:`Unsupported` when the block needs the csv module (see the module doc)."""
    data = buf[:size]
    carriage = np.flatnonzero(data == 13)
    if len(carriage) and (carriage[-1] == size - 1 or (data[carriage + 1] != 10).any()):
        raise Unsupported("a carriage return that does not end a line")
    if (data == 0).any():
        raise Unsupported("a NUL byte")
    if quote and (data == 34).any():
        raise Unsupported("quoted fields")
    if strict and (data >= 0x80).any():
        try:
            data.tobytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise Unsupported("not UTF-8") from err


def _field_bounds(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, delimiter: int, columns: tuple[int, ...]
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Fields per line [m] and, per column, (field starts, field ends) [m] int64 (empty where
    the line is too short). When every line has the same number of fields, as in most logs, the
    delimiters are simply cut into rows."""
    stop = int(ends[-1])
    delimiters = np.flatnonzero(buf[:stop] == delimiter)
    m = len(starts)
    per_line = len(delimiters) // m
    if per_line * m == len(delimiters):
        grid = delimiters.reshape(m, per_line)
        if not per_line or ((grid[:, 0] >= starts).all() and (grid[:, -1] < ends).all()):
            # Each line holds at least its row of delimiters, and there are no others.
            bounds = []
            for column in columns:
                if column > per_line:
                    bounds.append((ends, ends))
                    continue
                lo = starts if column == 0 else grid[:, column - 1] + 1
                hi = grid[:, column] if column < per_line else ends
                bounds.append((lo, hi))
            return np.full(m, per_line + 1, dtype=np.int64), bounds
    first = np.searchsorted(delimiters, starts)
    count = np.searchsorted(delimiters, ends) - first
    padded = np.append(delimiters, stop)
    last = len(padded) - 1
    bounds = []
    for column in columns:
        lo = starts if column == 0 else padded[np.minimum(first + column - 1, last)] + 1
        hi = np.where(count > column, padded[np.minimum(first + column, last)], ends)
        has = count >= column
        bounds.append((np.where(has, lo, ends), np.where(has, hi, ends)))
    return count + 1, bounds


def _pack_words(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Field bytes ``buf[lo:hi]`` as big-endian uint64 words [m, w], zero-padded (``buf`` has 8
    zero bytes past its data)."""
    lengths = hi - lo
    n_words = max(1, -(-int(lengths.max(initial=0)) // 8))
    windows = np.ndarray((len(buf) - 7,), dtype=">u8", buffer=buf, strides=(1,))
    words = np.empty((len(lo), n_words), dtype=">u8")
    for w in range(n_words):
        left = np.clip(lengths - 8 * w, 0, 8)
        shift = (np.uint64(8) * (8 - np.maximum(left, 1))).astype(np.uint64)
        keep = np.where(left > 0, ~np.uint64(0) << shift, np.uint64(0))
        words[:, w] = windows[np.minimum(lo + 8 * w, len(buf) - 8)] & keep
    return words


def _eight_digits(word: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [m] uint64, valid [m] bool) of little-endian words [m] whose low ``length`` (1..8)
    bytes are the text: valid where every one of them is an ASCII digit."""
    shift = (8 * (8 - length)).astype(np.uint64)
    text = ((word & _LOW_BYTES[length]) << shift) | _PAD[length]
    valid = ((text & _HIGH_NIBBLES) == _ZEROS) & (
        ((text + np.uint64(0x0606060606060606)) & _HIGH_NIBBLES) == _ZEROS
    )
    value = text - np.uint64(_ZEROS)
    value = (value * np.uint64(10) + (value >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    value = (value * np.uint64(100) + (value >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    value = (value * np.uint64(10000) + (value >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return value, valid


def _digit_fields(first: np.ndarray, second: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [m] uint64, valid [m] bool) of texts of ``length`` bytes whose first and second
    eight bytes are the little-endian words ``first``, ``second`` [m]: valid where the text is
    1 to 16 ASCII digits."""
    head, head_ok = _eight_digits(first, np.clip(length, 1, 8))
    short = length <= 8
    if short.all():
        return head, head_ok & (length >= 1)
    tail_length = np.clip(length - 8, 1, 8)
    tail, tail_ok = _eight_digits(second, tail_length)
    value = np.where(short, head, head * _POW10_INT[tail_length] + tail)
    return value, head_ok & (short | tail_ok) & (length >= 1) & (length <= 16)


def _integers(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [m] uint64, valid [m] bool) of the fields ``buf[lo:hi]`` that are 1 to 16 ASCII
    digits, read eight at a time (``buf`` has 8 zero bytes past its data)."""
    windows = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    last = len(buf) - 8
    return _digit_fields(windows[np.minimum(lo, last)], windows[np.minimum(lo + 8, last)], hi - lo)


def _canonical_ids(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """The fields ``buf[lo:hi]`` as int64 [m] when every one is a canonical decimal (ASCII
    digits, no leading zero unless it is ``0``, at most 16 of them), else None."""
    value, valid = _integers(buf, lo, hi)
    if not valid.all() or ((buf[lo] == 48) & (hi - lo > 1)).any():
        return None
    return value.astype(np.int64)


def _parse_decimals(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values [m] float64, parsed [m] bool): the fields ``[-]digits[.digits]`` that convert
    exactly with one division (see the module doc); values are 0 where not parsed. Plain
    integers of up to 16 digits are read eight digits at a time, the others byte by byte."""
    integer, ok = _integers(buf, lo, hi)
    ok &= integer <= _MAX_EXACT
    values = np.where(ok, integer.astype(np.float64), 0.0)
    rest = np.flatnonzero(~ok)
    if len(rest):
        values[rest], ok[rest] = _parse_decimal_bytes(buf, lo[rest], hi[rest])
    return values, ok


def _parse_decimal_bytes(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_decimals` byte by byte, for any ``[-]digits[.digits]`` field."""
    negative = (hi > lo) & (buf[lo] == 45)
    start = lo + negative
    width = hi - start
    mantissa = np.zeros(len(lo), dtype=np.uint64)
    digits = np.zeros(len(lo), dtype=np.int64)
    decimals = np.zeros(len(lo), dtype=np.int64)
    dot = np.zeros(len(lo), dtype=bool)
    ok = width > 0
    for j in range(min(int(width.max(initial=0)), 25)):
        active = j < width
        byte = buf[np.minimum(start + j, len(buf) - 1)]
        digit = (byte - np.uint8(48)) < 10
        is_dot = byte == 46
        ok &= ~active | digit | (is_dot & ~dot)
        take = active & digit & (digits < 19)
        mantissa = np.where(take, mantissa * np.uint64(10) + (byte - np.uint8(48)), mantissa)
        digits += active & digit
        decimals += active & digit & dot
        dot |= active & is_dot
    ok &= (width <= 25) & (digits >= 1) & (digits <= 19) & (mantissa <= _MAX_EXACT) & (decimals <= 22)
    values = mantissa.astype(np.float64) / _POW10[np.minimum(decimals, 22)]
    values = np.where(negative, -values, values)
    return np.where(ok, values, 0.0), ok


def _count_lines(handle: io.BufferedReader) -> int:
    """Line ends from the handle's position to the end of the file, plus one; the position is
    restored."""
    position = handle.tell()
    total = 1
    while chunk := handle.read(BLOCK_BYTES):
        total += chunk.count(b"\n")
    handle.seek(position)
    return total


def _widen(words: np.ndarray, width: int) -> np.ndarray:
    """``words`` [n, w] with zero words appended up to ``width`` columns."""
    if words.shape[1] >= width:
        return words
    return np.concatenate([words, np.zeros((len(words), width - words.shape[1]), dtype=words.dtype)], axis=1)


def scan_delimited(
    path: str | os.PathLike,
    delimiter: str,
    quote: bool,
    errors: str,
    id_columns: tuple[int, ...] | None = None,
    time_column: int | None = None,
) -> ScanResult:
    """Scan ``path``: the header, then (when ``id_columns`` and ``time_column`` are given) those
    columns of every data row, into arrays allocated once for the file's line count.

    ``delimiter`` is one ASCII character; ``quote`` says the dialect treats ``"`` as a quote
    (csv's default) rather than as text (``QUOTE_NONE``); ``errors`` is the text decoding's
    ("strict" or "replace"). Raises :class:`Unsupported` for files the csv module must read, and
    for an empty file.
    """
    dialect = {"delimiter": delimiter} | ({} if quote else {"quoting": csv.QUOTE_NONE})
    strict = errors == "strict"
    with open(path, "rb") as handle:
        head = handle.readline(FIELD_LIMIT + 1)
        if not head or len(head) > FIELD_LIMIT or (quote and b'"' in head):
            raise Unsupported("an empty file, a quoted header or one over the field limit")
        _check_block(np.frombuffer(head, dtype=np.uint8), len(head), False, strict)
        parsed = next(csv.reader(io.StringIO(head.decode("utf-8", errors), newline=""), **dialect), None)
        result = ScanResult(header=parsed if parsed is not None else [])
        if id_columns is None or time_column is None:
            return result
        columns = (*id_columns, time_column)
        width = max(columns) + 1
        capacity = _count_lines(handle)
        check_fits_memory(path, capacity - 1)
        result.timestamp = np.zeros(capacity, dtype=np.float64)
        result.words = [np.zeros((capacity, 1), dtype=">u8") for _ in id_columns]
        result.numbers = [np.zeros(capacity, dtype=np.int64) for _ in id_columns]
        result.empty_counts = [0 for _ in id_columns]
        empty_rows: list[list[int]] = [[] for _ in id_columns]
        complex_rows: list[np.ndarray] = []
        carry = b""
        while True:
            chunk = handle.read(BLOCK_BYTES)
            data = carry + chunk
            if not data:
                break
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0:
                if len(data) > FIELD_LIMIT:
                    raise Unsupported("a line over the csv field limit")
                carry = data
                continue
            carry = data[cut:]
            buf = np.frombuffer(data[:cut] + bytes(8), dtype=np.uint8)
            _check_block(buf, cut, quote, strict)
            starts, ends = _lines(buf, cut)
            if not len(starts):
                continue
            if int((ends - starts).max()) > FIELD_LIMIT:
                raise Unsupported("a line over the csv field limit")
            at, n = result.rows, len(starts)
            count, bounds = _field_bounds(buf, starts, ends, ord(delimiter), columns)
            short = np.flatnonzero(count < width)
            if len(short) and result.short_row < 0:
                result.short_row, result.short_fields = at + int(short[0]), int(count[short[0]])
            for k in range(len(id_columns)):
                lo, hi = bounds[k]
                empty = np.flatnonzero(lo == hi)
                result.empty_counts[k] += len(empty)
                empty_rows[k] += (at + empty[: 6 - len(empty_rows[k])]).tolist()
                packed = _pack_words(buf, lo, hi)
                result.words[k] = _widen(result.words[k], packed.shape[1])
                result.words[k][at : at + n, : packed.shape[1]] = packed
                numbers = result.numbers[k]
                if numbers is not None:
                    ids = _canonical_ids(buf, lo, hi)
                    if ids is None:
                        result.numbers[k] = None
                    else:
                        numbers[at : at + n] = ids
            lo, hi = bounds[-1]
            values, parsed_ok = _parse_decimals(buf, lo, hi)
            result.timestamp[at : at + n] = values
            odd = np.flatnonzero(~parsed_ok)
            complex_rows.append(at + odd)
            result.complex_text += [
                buf[a:b].tobytes().decode("utf-8", errors) for a, b in zip(lo[odd], hi[odd], strict=True)
            ]
            result.rows += n
    rows = result.rows
    result.timestamp = result.timestamp[:rows]
    result.words = [words[:rows] for words in result.words]
    result.numbers = [None if numbers is None else numbers[:rows] for numbers in result.numbers]
    result.empty_rows = [np.asarray(first, dtype=np.int64) for first in empty_rows]
    result.complex_rows = np.concatenate(complex_rows) if complex_rows else np.zeros(0, np.int64)
    return result


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending [k], codes [n] int32/int64) of non-negative int64 ``values``,
    by a lookup table when their range is small, else by sorting (value, position) pairs."""
    n = len(values)
    code_type = np.int32 if n < 2**31 else np.int64
    top = int(values.max())
    if top < 4 * n + 65536:
        present = np.zeros(top + 1, dtype=bool)
        present[values] = True
        code_of = np.cumsum(present, dtype=code_type) - 1
        return np.flatnonzero(present), code_of[values]
    shift = max(1, (n - 1).bit_length())
    if top.bit_length() + shift <= 63:
        packed = np.sort((values << shift) | np.arange(n, dtype=np.int64))
        ordered = packed >> shift
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
        codes = np.empty(n, dtype=code_type)
        codes[packed & ((1 << shift) - 1)] = np.cumsum(new, dtype=code_type) - 1
        return ordered[new], codes
    unique, inverse = np.unique(values, return_inverse=True)
    return unique, inverse.astype(code_type)


def encode_column(words: np.ndarray, numbers: np.ndarray | None, errors: str) -> Encoded:
    """An :class:`Encoded` column from packed field words [n, w], or from ``numbers`` [n] int64
    when the ids are canonical decimals (see :class:`ScanResult`).

    Canonical decimal ids (ASCII digits, no leading zero unless the id is ``0``, at most 16
    digits) get their values in numeric order; other text gets its distinct values in
    code-point order, decoded with ``errors`` (bytes that decode to the same text, as invalid
    UTF-8 replaced, are one value). ``ordered`` is set unless the values are digit strings that
    do not compare as numbers in that order (leading zeros, non-ASCII digits).
    """
    if numbers is not None:
        unique, codes = _dense_codes(numbers)
        return Encoded(codes, unique.astype(f"U{len(str(unique[-1]))}"), ordered=True)
    native = words.astype(np.uint64)
    code_type = np.int32 if len(words) < 2**31 else np.int64
    if native.shape[1] == 1:
        unique_words, inverse = np.unique(native[:, 0], return_inverse=True)
        codes = inverse.astype(code_type)
        distinct = unique_words.astype(">u8")[:, None]
    else:
        order = np.lexsort(native.T[::-1])
        ordered = native[order]
        new = np.ones(len(order), dtype=bool)
        new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        codes = np.empty(len(order), dtype=code_type)
        codes[order] = np.cumsum(new, dtype=code_type) - 1
        distinct = ordered[new].astype(">u8")
    del native
    raw = distinct.view(f"S{8 * distinct.shape[1]}").ravel()
    if (distinct.view(np.uint8) < 0x80).all():
        values = raw.astype(str)
    else:
        text = np.array([value.decode("utf-8", errors) for value in raw.tolist()], dtype=str)
        values, merged = np.unique(text, return_inverse=True)
        codes = merged.astype(code_type)[codes]
    return Encoded(codes, values, ordered=not np.char.isdigit(values).all())
