"""Readers for the interaction formats llm4sbr accepts, into one columnar :class:`Interactions`.

* RecBole atomic files: ``<name>.inter`` (tab-separated, header ``field:type``; columns found by
  name) and the optional ``<name>.item`` (display names, see :func:`read_recbole_items`).
* Plain CSV with a header holding ``session_id,item_id,timestamp`` (other columns are ignored).
* SR-GNN pickles ``(sequences, targets)`` as SR-GNN's preprocess writes ``train.txt``/``test.txt``;
  these are already preprocessed samples and become a :class:`SessionDataset` directly.

Timestamps are floats in seconds (the presets' 10-minute buckets and day windows assume seconds).

CSV and ``.inter`` logs are read column by column (:mod:`llm4sbr.data.columnar`: numpy scans
the bytes, ids become :class:`~llm4sbr.data.columnar.Encoded` codes into their distinct
values), with the same values, checks and messages as the ``csv`` module gives; files that need
the ``csv`` module's quoting rules (a ``"`` in a CSV, a bare carriage return, a NUL byte, text
that is not UTF-8) are read with it, row by row.

Bad input is refused at load time with a ValueError naming the file (and the column and first
offending data rows where there is one): a header with no data rows, a NaN or infinite timestamp,
an empty session/user or item id, a short row, a non-numeric timestamp. Readers keep every row,
exact duplicates included; :func:`~llm4sbr.data.presets.build_dataset` then drops rows identical
in session, item and timestamp (logging artefacts; a re-click at another time stays) and counts
them in ``SessionDataset.report["duplicates_dropped"]``.

SR-GNN pickles are read with a restricted unpickler that refuses every global (so a crafted
``train.txt`` cannot run code): builtin lists, tuples and ints need none; numpy integer scalars
are the one exception, rebuilt by stand-ins that accept integer dtypes and raw bytes only.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .columnar import Encoded, ScanResult, Unsupported, encode_column, scan_delimited
from .dataset import SampleSet, SessionDataset
from .splits import carve_valid

_TITLE_FIELDS = ("title", "movie_title", "name")
_YEAR_SUFFIX = re.compile(r"\(\d{4}\)$")


@dataclass
class Interactions:
    """Clicks in file order, one entry per row.

    session [n]: the session key (a user id for per-user presets), str or int; item [n] str raw
    item ids; either may be an :class:`~llm4sbr.data.columnar.Encoded` column (codes into the
    distinct values, as the file readers return them). timestamp [n] float64 seconds; row [n]
    int64 position in the source file (the tie-breaker that keeps sorts stable). ``name`` names
    the source (file stem or built-in name).
    """

    session: np.ndarray | Encoded
    item: np.ndarray | Encoded
    timestamp: np.ndarray
    row: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.row)
        if not (len(self.session) == len(self.item) == len(self.timestamp) == n):
            raise ValueError(
                f"inconsistent Interactions: {len(self.session)} sessions, {len(self.item)} items, "
                f"{len(self.timestamp)} timestamps, {n} rows"
            )

    def __len__(self) -> int:
        return len(self.row)


def _column_index(header: list[str], names: tuple[str, ...], path: Path) -> int:
    """Position of the first of ``names`` in ``header``; ValueError naming the column and file."""
    for name in names:
        if name in header:
            return header.index(name)
    wanted = " or ".join(repr(name) for name in names)
    raise ValueError(f"{path}: missing required column {wanted} (header: {header})")


def _first_rows(index: np.ndarray, limit: int = 5) -> str:
    """``"3, 7, 9"``: the first 1-based data rows of the 0-based positions ``index``."""
    return ", ".join(str(i + 1) for i in index[:limit]) + (", ..." if len(index) > limit else "")


def check_finite_timestamps(
    timestamp: np.ndarray,
    source: object,
    raw: Sequence[str] | Mapping[int, str] | None = None,
    rows: np.ndarray | None = None,
) -> None:
    """ValueError naming ``source``, the ``timestamp`` column, how many values are NaN or
    infinite and the first such data rows (``rows`` [n]: 0-based row numbers, default positions;
    ``raw``: the values as text by position, shown when given; a mapping needs only the
    non-finite ones)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(timestamp, dtype=np.float64)))
    if len(bad):
        values = raw if raw is not None else np.asarray(timestamp)
        numbers = bad if rows is None else np.asarray(rows)[bad]
        shown = ", ".join(f"{n + 1} ({str(values[i])!r})" for n, i in zip(numbers[:5], bad[:5], strict=True))
        more = ", ..." if len(bad) > 5 else ""
        raise ValueError(
            f"{source}: column 'timestamp' has {len(bad)} NaN/inf value(s) in {len(timestamp)} rows "
            f"(first at data rows {shown}{more}); timestamps must be finite numbers of seconds"
        )


def _interactions(
    rows: list[list[str]], header: list[str], key: int, item: int, time: int, path: Path
) -> Interactions:
    """Interactions from the text rows of ``path``, taking the given column positions."""
    if not rows:
        raise ValueError(f"{path}: 0 data rows after the header; nothing to load")
    width = max(key, item, time) + 1
    short = next((i for i, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise ValueError(
            f"{path}: data row {short + 1} has {len(rows[short])} fields, expected at least {width}"
        )
    try:
        timestamp = np.asarray([row[time] for row in rows], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: timestamps must be numbers (seconds): {err}") from None
    check_finite_timestamps(timestamp, path, raw=[row[time] for row in rows])
    for column in (key, item):
        empty = np.flatnonzero([not row[column] for row in rows])
        if len(empty):
            raise ValueError(
                f"{path}: column {header[column]!r} is empty in {len(empty)} of {len(rows)} data rows "
                f"(first at data rows {_first_rows(empty)})"
            )
    return Interactions(
        session=np.asarray([row[key] for row in rows], dtype=str),
        item=np.asarray([row[item] for row in rows], dtype=str),
        timestamp=timestamp,
        row=np.arange(len(rows), dtype=np.int64),
        name=path.stem,
    )


def _scanned_interactions(
    scan: ScanResult, header: list[str], columns: tuple[int, int, int], path: Path, errors: str
) -> Interactions:
    """Interactions from a columnar scan of ``path`` (``columns``: key, item and timestamp
    positions), refusing bad rows as :func:`_interactions` does, in the same order and with the
    same messages; ids are decoded with ``errors``."""
    if not scan.rows:
        raise ValueError(f"{path}: 0 data rows after the header; nothing to load")
    if scan.short_row >= 0:
        raise ValueError(
            f"{path}: data row {scan.short_row + 1} has {scan.short_fields} fields, "
            f"expected at least {max(columns) + 1}"
        )
    timestamp = scan.timestamp
    if scan.complex_text:
        try:
            timestamp[scan.complex_rows] = np.asarray(scan.complex_text, dtype=np.float64)
        except ValueError as err:
            raise ValueError(f"{path}: timestamps must be numbers (seconds): {err}") from None
        bad = scan.complex_rows[~np.isfinite(timestamp[scan.complex_rows])]
        if len(bad):
            shown = set(bad[:5].tolist())
            rows = scan.complex_rows.tolist()
            raw = {row: text for row, text in zip(rows, scan.complex_text, strict=True) if row in shown}
            check_finite_timestamps(timestamp, path, raw=raw)
    for column, count, first in zip(columns[:2], scan.empty_counts, scan.empty_rows, strict=True):
        if count:
            raise ValueError(
                f"{path}: column {header[column]!r} is empty in {count} of {scan.rows} data rows "
                f"(first at data rows {_first_rows(first)})"
            )
    session = encode_column(scan.words.pop(0), scan.numbers.pop(0), errors)
    item = encode_column(scan.words.pop(0), scan.numbers.pop(0), errors)
    return Interactions(session, item, timestamp, np.arange(scan.rows, dtype=np.int64), path.stem)


def _read_log(
    path: Path,
    delimiter: str,
    quote: bool,
    errors: str,
    header_name: Callable[[str], str],
    key_names: tuple[str, ...],
    slow: Callable[[Path], Interactions],
) -> Interactions:
    """Read a click log column by column (see the module doc); ``slow(path)``, the ``csv``
    module reader, handles the files the columnar scan does not and every missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        head = scan_delimited(path, delimiter, quote, errors)
        header = [header_name(name) for name in head.header]
        wanted = (key_names, ("item_id",), ("timestamp",))
        found = [next((header.index(n) for n in names if n in header), None) for names in wanted]
        if None in found:
            return slow(path)
        key, item, time = (int(position) for position in found)
        scan = scan_delimited(path, delimiter, quote, errors, id_columns=(key, item), time_column=time)
    except Unsupported:
        return slow(path)
    return _scanned_interactions(scan, header, (key, item, time), path, errors)


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header field names (type suffix stripped) and the rows of a RecBole atomic file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a 'field:type' header")
        rows = [row for row in reader if row]
    return [field.split(":", 1)[0] for field in header], rows


def read_recbole_inter(path: str | os.PathLike) -> Interactions:
    """Read a RecBole ``.inter`` file.

    The session key is the ``session_id`` column if there is one, else ``user_id``; ``item_id``
    and ``timestamp`` are required. Raises FileNotFoundError or ValueError naming the file.
    """
    path = Path(path)
    return _read_log(
        path,
        "\t",
        False,
        "replace",
        lambda name: name.split(":", 1)[0],
        ("session_id", "user_id"),
        _inter_rows,
    )


def _inter_rows(path: Path) -> Interactions:
    """:func:`read_recbole_inter` with the csv module, row by row."""
    header, rows = _read_atomic(path)
    key = _column_index(header, ("session_id", "user_id"), path)
    item = _column_index(header, ("item_id",), path)
    time = _column_index(header, ("timestamp",), path)
    return _interactions(rows, header, key, item, time, path)


def _movielens_name(title: str, year: str, genres: str) -> str:
    name = title.strip()
    year = year.strip()
    if re.fullmatch(r"\d{4}", year) and not _YEAR_SUFFIX.search(name):
        name = f"{name} ({year})"
    genre_list = genres.split()
    return f"{name} -- {'|'.join(genre_list)}" if genre_list else name


def read_recbole_items(path: str | os.PathLike) -> dict[str, str]:
    """Read a RecBole ``.item`` file into ``{raw item id: display name}``.

    MovieLens files (``movie_title``, ``release_year`` and ``class`` columns) give
    ``"Title (Year) -- Genre|Genre"``: the year is added only when it is four digits and the title
    does not already end with ``(Year)`` (ml-100k has both titles that carry their year and
    placeholder years), and the space-separated genre tokens are joined with ``|``. Other files
    use the first of ``title``, ``movie_title``, ``name`` they have, or ``""`` when none.
    """
    path = Path(path)
    header, rows = _read_atomic(path)
    item = _column_index(header, ("item_id",), path)
    title = next((header.index(name) for name in _TITLE_FIELDS if name in header), None)

    def field(row: list[str], index: int | None) -> str:
        return row[index] if index is not None and index < len(row) else ""

    if title is not None and {"movie_title", "release_year", "class"} <= set(header):
        year, genres = header.index("release_year"), header.index("class")
        return {
            row[item]: _movielens_name(field(row, title), field(row, year), field(row, genres))
            for row in rows
        }
    return {row[item]: field(row, title).strip() for row in rows}


def read_csv_interactions(path: str | os.PathLike) -> Interactions:
    """Read a CSV file whose header holds ``session_id``, ``item_id`` and ``timestamp``.

    Extra columns are ignored and blank lines skipped. Every other row is kept, exact duplicates
    included (``build_dataset`` drops those, see the module docstring). ValueError naming the
    file for: an empty file, a missing column, no data rows after the header, a short row, a
    timestamp that is not a finite number, an empty ``session_id`` or ``item_id``, text that is
    not UTF-8 or not CSV.
    """
    return _read_log(Path(path), ",", True, "strict", str.strip, ("session_id",), _csv_rows)


ITEM_ID_FIELDS = ("item_id",)
ITEM_TITLE_FIELDS = ("title", "name", "item_name")


def read_csv_items(path: str | os.PathLike) -> dict[str, str]:
    """Read a CSV item table into ``{raw item id: display name}``.

    The header names the id column ``item_id`` and the title column ``title``, ``name`` or
    ``item_name`` (the first present); other columns are ignored and blank lines skipped.
    Titles are stripped of surrounding whitespace; an empty title, or a row that ends before
    the title column, gives ``""``. Raises FileNotFoundError for a missing file and ValueError
    naming the file for: an empty file, a missing id or title column, an empty ``item_id``, an
    item id on more than one row, text that is not UTF-8 or not CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such item table: {path}")
    header, (item, title), rows = _csv_table(
        path, "item_id and a title column", (ITEM_ID_FIELDS, ITEM_TITLE_FIELDS)
    )
    ids = [row[item] if item < len(row) else "" for row in rows]
    empty = np.flatnonzero([not raw for raw in ids])
    if len(empty):
        raise ValueError(
            f"{path}: column {header[item]!r} is empty in {len(empty)} of {len(rows)} data rows "
            f"(first at data rows {_first_rows(empty)})"
        )
    table = {raw: row[title].strip() if title < len(row) else "" for raw, row in zip(ids, rows, strict=True)}
    if len(table) < len(rows):
        seen: dict[str, int] = {}
        for number, raw in enumerate(ids):
            if raw in seen:
                raise ValueError(
                    f"{path}: {len(rows) - len(table)} row(s) repeat an earlier item id; item ids must be "
                    f"unique (first: {raw!r} at data rows {seen[raw] + 1} and {number + 1})"
                )
            seen[raw] = number
    return table


def _csv_rows(path: Path) -> Interactions:
    """:func:`read_csv_interactions` with the csv module, row by row."""
    header, (key, item, time), rows = _csv_table(
        path, "session_id,item_id,timestamp", (("session_id",), ("item_id",), ("timestamp",))
    )
    return _interactions(rows, header, key, item, time, path)


def _csv_table(
    path: Path, expected: str, columns: tuple[tuple[str, ...], ...]
) -> tuple[list[str], list[int], list[list[str]]]:
    """A CSV file read with the csv module: (header, the position of each of ``columns`` (the
    first present of its names), the non-blank data rows). ValueError naming the file for an
    empty file (``expected``: what its header should hold), a missing column, text that is not
    UTF-8 or not CSV."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
            if first is None:
                raise ValueError(f"{path}: empty file, expected a header with {expected}")
            header = [name.strip() for name in first]
            positions = [_column_index(header, names, path) for names in columns]
            rows = [row for row in reader if row]
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (line {reader.line_num + 1}): {err}") from None
        except csv.Error as err:
            raise ValueError(f"{path}: not readable as CSV (line {reader.line_num}): {err}") from None
    return header, positions, rows


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global (a function or class) the SR-GNN reader does not allow."""


_INTEGER_DTYPES = frozenset(f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8))


def _integer_dtype(spec: object, align: object = False, copy: object = True) -> np.dtype:
    """Stands in for ``numpy.dtype`` while unpickling: integer types only, always a copy (the
    pickle's BUILD step then sets the byte order on that copy, never on numpy's shared one)."""
    if not (isinstance(spec, str) and spec in _INTEGER_DTYPES):
        raise _RefusedGlobal(f"numpy.dtype({spec!r}) (only integer dtypes are allowed)")
    return np.dtype(spec, False, True)


def _integer_scalar(dtype: object, data: object = b"") -> np.integer:
    """Stands in for numpy's ``multiarray.scalar``: an integer scalar from its raw bytes."""
    plain = (
        isinstance(dtype, np.dtype)
        and dtype.kind in "iu"
        and dtype.fields is None
        and dtype.subdtype is None
        and isinstance(data, bytes)
        and len(data) == dtype.itemsize
    )
    if not plain:
        raise _RefusedGlobal(f"numpy multiarray.scalar({dtype!r}, ...) (only integer scalars are allowed)")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1_bytes(text: object, encoding: object = "latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles use to spell bytes."""
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise _RefusedGlobal(f"_codecs.encode(..., {encoding!r}) (only latin1 text is allowed)")
    return text.encode("latin-1")


# The only globals an SR-GNN pickle may name: what numpy integer scalars pickle to.
_SRGNN_GLOBALS = {
    ("numpy", "dtype"): _integer_dtype,
    ("numpy.core.multiarray", "scalar"): _integer_scalar,
    ("numpy._core.multiarray", "scalar"): _integer_scalar,
    ("_codecs", "encode"): _latin1_bytes,
}


class _SrgnnUnpickler(pickle.Unpickler):
    """Builtin containers and numbers (which need no global) plus numpy integer scalars; every
    other global, and so every way for a pickle to call a function, is refused."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _SRGNN_GLOBALS.get((module, name))
        if allowed is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return allowed


def _item_ids(values: object, path: Path, what: str) -> list[int]:
    """``values`` as a list of Python ints; ValueError naming ``path`` and ``what`` otherwise."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{path}: {what} must be a list of integer item ids, got {type(values).__name__}")
    if all(type(value) is int for value in values):  # bool, a subclass of int, is refused below
        return list(values)
    for value in values:
        if type(value) is not int and not isinstance(value, np.integer):
            shown = repr(value)[:40]
            raise ValueError(
                f"{path}: {what} holds {shown} ({type(value).__name__}); item ids must be integers"
            )
    return [int(value) for value in values]


def read_srgnn_pickle(path: str | os.PathLike) -> tuple[list[list[int]], list[int]]:
    """Read an SR-GNN ``(sequences, targets)`` pickle: sequence i is the prefix whose next item is
    targets[i].

    The file is read with a restricted unpickler: builtin lists, tuples and ints (what SR-GNN's
    preprocess and :func:`write_srgnn_pickle` write) and numpy integer scalars load; a pickle
    naming any other global (the way a crafted pickle runs code) raises ValueError naming the file
    and the global before anything is called. So does a file that is not a pickle, or one that
    does not hold two equal-length lists of non-empty integer sequences and integer targets.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as handle:
        try:
            data = _SrgnnUnpickler(handle).load()
        except _RefusedGlobal as err:
            raise ValueError(
                f"{path}: refused to load the global {err} from this pickle: SR-GNN pickles hold only "
                "lists of integer item ids, and a pickle that names a function can run code when loaded"
            ) from None
        except Exception as err:  # a truncated file or not a pickle: any error the unpickler raises
            raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if not (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(part, (tuple, list)) for part in data)
        and len(data[0]) == len(data[1])
    ):
        raise ValueError(f"{path}: expected a pickled (sequences, targets) pair of equal-length lists")
    # Each item id costs a pickle at least 2 bytes, unless lists are shared references: a small
    # crafted file could then expand to billions of ids when copied out below.
    total = sum(len(sequence) for sequence in data[0] if isinstance(sequence, (list, tuple)))
    size = path.stat().st_size
    if total > size:
        raise ValueError(
            f"{path}: its {len(data[0])} sequences hold {total} item ids in {size} bytes, so they share "
            "lists by reference, which SR-GNN pickles do not; refusing to expand them"
        )
    sequences = []
    for i, sequence in enumerate(data[0]):
        sequences.append(_item_ids(sequence, path, f"sequence {i}"))
        if not sequences[-1]:
            raise ValueError(f"{path}: sequence {i} is empty; every sample needs at least one item")
    return sequences, _item_ids(data[1], path, "targets")


def write_srgnn_pickle(path: str | os.PathLike, sequences: list[list[int]], targets: list[int]) -> None:
    """Write ``(sequences, targets)`` as SR-GNN does, atomically (temp file + ``os.replace``)."""
    if len(sequences) != len(targets):
        raise ValueError(f"{len(sequences)} sequences but {len(targets)} targets")
    path = Path(path)
    payload = (
        [[int(item) for item in sequence] for sequence in sequences],
        [int(target) for target in targets],
    )
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp:
            pickle.dump(payload, temp)
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise


def _session_groups(sequences: list[list[int]], targets: list[int]) -> np.ndarray:
    """Group id per sample, grouping the prefixes of one session.

    SR-GNN writes a session's prefixes consecutively, longest first (``s[:-1] -> s[-1]``, then
    ``s[:-2] -> s[-2]``, ...); llm4sbr writes them shortest first. The file's direction is the
    more frequent of the two steps, and a sample joins the previous group when it is the next
    prefix in that direction. Descending chains end at a length-1 prefix and ascending chains
    start at one, so two sessions never merge; a file without augmentation gives one group per sample.
    """
    shorter = np.zeros(len(targets), dtype=bool)
    longer = np.zeros(len(targets), dtype=bool)
    for i in range(1, len(targets)):
        previous, current = sequences[i - 1], sequences[i]
        shorter[i] = (
            len(current) == len(previous) - 1 and current == previous[:-1] and targets[i] == previous[-1]
        )
        longer[i] = (
            len(current) == len(previous) + 1 and current[:-1] == previous and current[-1] == targets[i - 1]
        )
    continues = shorter if shorter.sum() >= longer.sum() else longer
    return np.cumsum(~continues) - 1


def dataset_from_srgnn_pickles(
    train_path: str | os.PathLike, test_path: str | os.PathLike, valid_fraction: float = 0.1, seed: int = 0
) -> SessionDataset:
    """A :class:`SessionDataset` from SR-GNN ``train.txt``/``test.txt`` pickles.

    Item ids are kept as they are (SR-GNN's are already 1..n), so SR-GNN checkpoints and
    intent files keep matching; ``item_raw_ids[i] = str(i)`` and names are empty. Sample ids
    number train samples in file order, then test samples. The validation split takes
    ``valid_fraction`` of the train sessions (a session = a run of its consecutive prefixes, see
    :func:`_session_groups`) chosen with ``numpy.random.default_rng(seed)``.
    """
    train_sequences, train_targets = read_srgnn_pickle(train_path)
    test_sequences, test_targets = read_srgnn_pickle(test_path)
    for path, sequences, targets in (
        (train_path, train_sequences, train_targets),
        (test_path, test_sequences, test_targets),
    ):
        if not targets:
            raise ValueError(f"{path}: holds 0 samples; an SR-GNN pickle needs at least one")
        smallest = min(min(targets), min(min(sequence) for sequence in sequences))
        if smallest <= 0:
            raise ValueError(f"{path}: SR-GNN item ids must be >= 1 (0 is padding), found {smallest}")
    all_items = [item for sequence in train_sequences + test_sequences for item in sequence]
    all_items += train_targets + test_targets
    n_items = max(all_items, default=0)
    n_train = len(train_targets)
    train_all = SampleSet.from_lists(train_sequences, train_targets, np.arange(n_train))
    test = SampleSet.from_lists(test_sequences, test_targets, np.arange(n_train, n_train + len(test_targets)))
    groups = _session_groups(train_sequences, train_targets)
    train, valid = carve_valid(train_all, groups, valid_fraction, seed)
    n_groups = int(groups[-1]) + 1
    if not len(train):
        raise ValueError(
            f"{train_path}: no train samples left: the validation carve took all {n_groups} train "
            f"session(s) (round(valid_fraction={valid_fraction} * {n_groups}) = {n_groups})"
        )
    splits = {"train": train, "valid": valid, "test": test}
    empty_splits = {}
    if not len(valid):
        empty_splits["valid"] = (
            "valid_fraction=0"
            if valid_fraction == 0
            else f"round(valid_fraction={valid_fraction} * {n_groups} train sessions) = 0"
        )
        if valid_fraction > 0:
            warnings.warn(f"{train_path}: the valid split is empty: {empty_splits['valid']}", stacklevel=2)
    samples = {name: len(split) for name, split in splits.items()}
    total_prefix = sum(int(split.lengths().sum()) for split in splits.values())
    meta = {
        "preset": "srgnn-pickle",
        "options": {"valid_fraction": valid_fraction, "seed": seed},
        "samples": samples,
        "items": n_items,
        "mean_prefix_length": total_prefix / max(sum(samples.values()), 1),
        "source": {"train": str(train_path), "test": str(test_path)},
    }
    report = {
        "source": meta["source"],
        "samples_read": {"train": n_train, "test": len(test_targets)},
        "train_sessions": n_groups,
        "empty_splits": empty_splits,
    }
    return SessionDataset(
        name=Path(train_path).parent.name,
        n_items=n_items,
        item_raw_ids=["[PAD]"] + [str(i) for i in range(1, n_items + 1)],
        item_names=[""] * (n_items + 1),
        splits=splits,
        meta=meta,
        report=report,
    )
