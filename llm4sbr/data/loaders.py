"""Readers for the interaction formats llm4sbr accepts, into one columnar :class:`Interactions`.

* RecBole atomic files: ``<name>.inter`` (tab-separated, header ``field:type``; columns found by
  name) and the optional ``<name>.item`` (display names, see :func:`read_recbole_items`).
* Plain CSV with a header holding ``session_id,item_id,timestamp`` (other columns are ignored).
* SR-GNN pickles ``(sequences, targets)`` as SR-GNN's preprocess writes ``train.txt``/``test.txt``;
  these are already preprocessed samples and become a :class:`SessionDataset` directly.

Timestamps are floats in seconds (the presets' 10-minute buckets and day windows assume seconds).
"""

from __future__ import annotations

import csv
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import SampleSet, SessionDataset
from .splits import carve_valid

_TITLE_FIELDS = ("title", "movie_title", "name")
_YEAR_SUFFIX = re.compile(r"\(\d{4}\)$")


@dataclass
class Interactions:
    """Clicks in file order, one entry per row.

    session [n]: the session key (a user id for per-user presets), str or int; item [n] str raw
    item ids; timestamp [n] float64 seconds; row [n] int64 position in the source file (the
    tie-breaker that keeps sorts stable). ``name`` names the source (file stem or built-in name).
    """

    session: np.ndarray
    item: np.ndarray
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


def _interactions(rows: list[list[str]], key: int, item: int, time: int, path: Path) -> Interactions:
    """Interactions from the text rows of ``path``, taking the given column positions."""
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
    return Interactions(
        session=np.asarray([row[key] for row in rows], dtype=str),
        item=np.asarray([row[item] for row in rows], dtype=str),
        timestamp=timestamp,
        row=np.arange(len(rows), dtype=np.int64),
        name=path.stem,
    )


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
    header, rows = _read_atomic(path)
    key = _column_index(header, ("session_id", "user_id"), path)
    item = _column_index(header, ("item_id",), path)
    time = _column_index(header, ("timestamp",), path)
    return _interactions(rows, key, item, time, path)


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

    Extra columns are ignored; a missing one raises ValueError naming it and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        key = _column_index(header, ("session_id",), path)
        item = _column_index(header, ("item_id",), path)
        time = _column_index(header, ("timestamp",), path)
        rows = [row for row in reader if row]
    return _interactions(rows, key, item, time, path)


def read_srgnn_pickle(path: str | os.PathLike) -> tuple[list[list[int]], list[int]]:
    """Read an SR-GNN ``(sequences, targets)`` pickle: sequence i is the prefix whose next item is
    targets[i]. Only open pickles you trust: unpickling can run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and len(data[0]) == len(data[1])):
        raise ValueError(f"{path}: expected a pickled (sequences, targets) pair of equal-length lists")
    sequences, targets = data
    return [[int(item) for item in sequence] for sequence in sequences], [int(target) for target in targets]


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
    all_items = [item for sequence in train_sequences + test_sequences for item in sequence]
    all_items += train_targets + test_targets
    if any(item <= 0 for item in all_items):
        raise ValueError("SR-GNN item ids must be >= 1 (0 is padding)")
    n_items = max(all_items, default=0)
    n_train = len(train_targets)
    train_all = SampleSet.from_lists(train_sequences, train_targets, np.arange(n_train))
    test = SampleSet.from_lists(test_sequences, test_targets, np.arange(n_train, n_train + len(test_targets)))
    train, valid = carve_valid(
        train_all, _session_groups(train_sequences, train_targets), valid_fraction, seed
    )
    splits = {"train": train, "valid": valid, "test": test}
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
    return SessionDataset(
        name=Path(train_path).parent.name,
        n_items=n_items,
        item_raw_ids=["[PAD]"] + [str(i) for i in range(1, n_items + 1)],
        item_names=[""] * (n_items + 1),
        splits=splits,
        meta=meta,
    )
