"""Session presets: from raw :class:`Interactions` to a split :class:`SessionDataset`.

Every preset orders clicks within a session by timestamp with a *stable* sort (ties keep file
order), remaps items to 1..n_items in order of first appearance over the ordered sessions (train
sessions first), and numbers samples uniquely over all splits. Session and user keys compare
numerically when they are integers or all-digit strings, as strings otherwise.

``movielens`` (docs/method.md §4.2, ML-1M)
    session = (user, floor(timestamp / bucket_seconds)); sessions holding any item seen fewer than
    ``min_item_count`` times (counted once, over all clicks) or shorter than 2 are dropped whole;
    sessions in (user, bucket) order, the first ``train_fraction`` are train, the rest test; one
    sample per session (s[:-1] -> s[-1]).
``amazon`` (docs/method.md §4.2, Beauty)
    session = user; optional iterative ``k_core`` on users and items (None or 0 turns it off);
    sessions shorter than 2 dropped; sessions in user order, the first ``train_fraction`` are
    train; prefix augmentation on train and test.
``srgnn`` (SR-GNN's diginetica/yoochoose rules)
    drop length-1 sessions, then clicks of items seen fewer than ``min_item_count`` times, then
    sessions shorter than 2; a session's date is its last click (before the item filter) and the
    sessions dated after ``max date - test_days`` days are test, the rest train (SR-GNN itself
    drops sessions dated exactly at the boundary; here they are train); sessions ordered by
    date; test clicks of items absent from train are removed and test sessions shorter than 2
    dropped; prefix augmentation on both.
``leave-one-out`` (RecBole 1.2.1's sequential setting, ``eval_args: {split: {LS: valid_and_test},
order: TO}``)
    session = user; every prefix is a sample, cut to its ``max_history`` most recent clicks. Per
    user with k samples: the last is test and the one before valid when k >= 3; when k = 2 the
    first is train and the last test; when k = 1 it is train (RecBole's
    ``_split_index_by_leave_one_out``). Sample ids: train, then valid, then test. With
    ``float32_time`` clicks are ordered by min-max-normalised float32 timestamps, as RecBole
    orders them when a dataset's config sets ``normalize_all`` (its ml-100k config does): clicks
    less than about a second apart then tie and keep file order.

For the presets with a train/test split, ``valid_fraction`` of the train *sessions*, drawn with
``numpy.random.default_rng(seed)``, become the validation split (all prefixes of a session on one
side). Sample ids number the un-carved train samples first (session order, shortest prefix
first), then test, so a sample keeps its id whatever ``valid_fraction`` and ``seed`` are.

Bad input, checked before any preset rule (:func:`build_dataset`): no rows, or a NaN or infinite
timestamp, raise ValueError. Rows identical in session key, item and timestamp are logging
artefacts: all but the first are dropped (a re-click at another time stays) and counted in
``SessionDataset.report["duplicates_dropped"]``.

A preset never returns an empty train split, nor an empty test split unless ``train_fraction=1``
asked for one: when its filters leave nothing it raises ValueError saying why (every session has
a single click; how many sessions, clicks and items each filter dropped; no session older than
the test window; ...). An empty valid split is allowed, since small data may have none, but its
reason is recorded in ``report["empty_splits"]`` and, unless ``valid_fraction=0`` asked for it,
a UserWarning says so.

Everything runs on arrays, with no Python object per click: the clicks are ordered by one sort
of (session key, file position) pairs packed in an int64 (only the sessions whose clicks are
then out of time order are sorted again), the sessions are CSR offsets into the sorted clicks,
each filter is a mask, and the samples are gathered a bounded chunk at a time into arrays
allocated once. The Interactions are freed once sorted when the caller holds no reference to
them (:func:`build_dataset_from`, which ``load_dataset`` uses).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .columnar import Encoded
from .dataset import SampleSet, SessionDataset
from .loaders import Interactions, check_finite_timestamps
from .splits import draw_valid_groups, session_samples

PRESET_OPTIONS: dict[str, dict[str, object]] = {
    "movielens": {"bucket_seconds": 600.0, "min_item_count": 5, "train_fraction": 0.9},
    "amazon": {"k_core": 5, "train_fraction": 0.9},
    "srgnn": {"test_days": 7.0, "min_item_count": 5},
    "leave-one-out": {"max_history": 50, "float32_time": False},
}
PRESETS = tuple(PRESET_OPTIONS)


@dataclass
class _Sessions:
    """Clicks grouped into ordered sessions, in CSR form: session s holds the clicks
    ``clicks[offsets[s]:offsets[s + 1]]`` (never none). clicks [n] (int32 or int64) indexes the
    sorted :class:`_Clicks`; offsets [count + 1] int64."""

    clicks: np.ndarray
    offsets: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def count(self) -> int:
        return len(self.offsets) - 1

    def per_click(self, values: np.ndarray) -> np.ndarray:
        """Per-session ``values`` [count] repeated for each click [n]."""
        return np.repeat(values, self.lengths())

    def numbers(self) -> np.ndarray:
        """The session number [n] int64 of each click."""
        return self.per_click(np.arange(self.count(), dtype=np.int64))

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per-session sums [count] int64 of per-click ``values`` [n] (bool or integer)."""
        if not self.count():
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(values, self.offsets[:-1], dtype=np.int64)

    def keep_clicks(self, mask: np.ndarray) -> _Sessions:
        """Drop the clicks where ``mask`` [n] is False and the sessions left with none."""
        kept = self.sum(mask)
        offsets = np.zeros(np.count_nonzero(kept) + 1, dtype=np.int64)
        np.cumsum(kept[kept > 0], out=offsets[1:])
        return _Sessions(self.clicks[mask], offsets)

    def keep_sessions(self, keep: np.ndarray) -> _Sessions:
        return self.keep_clicks(self.per_click(keep))

    def reorder(self, order: np.ndarray) -> _Sessions:
        """The sessions in the order ``order`` [count] (a permutation), clicks within
        unchanged."""
        offsets, positions = _gather_positions(self.offsets[:-1][order], self.lengths()[order])
        return _Sessions(self.clicks[positions], offsets)


def _gather_positions(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets [m + 1], positions [offsets[-1]])`` int64: the ranges ``starts[i] ..
    starts[i] + lengths[i] - 1`` one after another."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
    return offsets, positions


@dataclass
class _Trace:
    """What a preset's grouping and filters did, for ``SessionDataset.report`` and for the errors
    that explain an empty split. ``item_codes`` [m] codes the items of the sorted clicks."""

    item_codes: np.ndarray
    grouped: dict = field(default_factory=dict)
    filters: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    last: tuple[_Sessions, dict[str, int]] | None = None

    def counts(self, sessions: _Sessions) -> dict[str, int]:
        """Sessions, clicks and items of ``sessions`` (kept for the next call: a filter's input
        is the previous one's output)."""
        if self.last is not None and self.last[0] is sessions:
            return dict(self.last[1])
        counted = {
            "sessions": sessions.count(),
            "clicks": len(sessions.clicks),
            "items": int(np.count_nonzero(_item_counts(self.item_codes, sessions))),
        }
        self.last = (sessions, counted)
        return dict(counted)

    def start(self, sessions: _Sessions, keyed_by: str) -> None:
        single = int((sessions.lengths() == 1).sum())
        self.grouped = {**self.counts(sessions), "single_click_sessions": single, "keyed_by": keyed_by}

    def drop(self, what: str, before: _Sessions, after: _Sessions) -> None:
        old, new = self.counts(before), self.counts(after)
        self.filters.append({"filter": what, **{f"{key}_dropped": old[key] - new[key] for key in old}})


@dataclass
class _Clicks:
    """The clicks a preset works on, exact duplicates left out, sorted by (session key,
    timestamp, file row). key [m] ranks the session keys (:func:`key_rank`), item [m] codes the
    items, timestamp [m] float64, row [m] orders the file rows (the rows themselves, or
    positions when the file rows were increasing). ``name`` names the source."""

    key: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    row: np.ndarray
    name: str

    def permute(self, positions: np.ndarray, permutation: np.ndarray) -> None:
        """Reorder the clicks at ``positions`` [k] by ``permutation`` [k] of them."""
        for values in (self.key, self.item, self.timestamp, self.row):
            values[positions] = values[positions][permutation]


def key_rank(keys: np.ndarray | Encoded) -> np.ndarray:
    """Rank [n] of each key in sort order: numeric for integers and all-digit strings,
    lexicographic for other strings; equal keys get equal ranks. int64, or an Encoded column's
    codes when they are ``ordered`` (else it is ranked by its distinct values)."""
    if isinstance(keys, Encoded):
        return keys.codes if keys.ordered else key_rank(keys.values)[keys.codes]
    unique, inverse = np.unique(keys, return_inverse=True)
    if unique.dtype.kind in "US" and len(unique) and np.char.isdigit(unique.astype(str)).all():
        # Digit strings compare as numbers by (significant length, text), with no overflow.
        significant = np.char.lstrip(unique.astype(str), "0")
        order = np.lexsort((unique, significant, np.char.str_len(significant)))
        rank_of_unique = np.empty(len(unique), dtype=np.int64)
        rank_of_unique[order] = np.arange(len(unique))
        return rank_of_unique[inverse.ravel()]
    return inverse.ravel().astype(np.int64)


def _encode(column: np.ndarray | Encoded) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values [k], codes [n] into them) of an item column."""
    if isinstance(column, Encoded):
        return column.values, column.codes
    values, codes = np.unique(column, return_inverse=True)
    return values, codes.ravel().astype(np.int64)


def _index_type(n: int) -> type:
    """The integer type of positions into ``n`` clicks."""
    return np.int32 if n < 2**31 else np.int64


def _unsorted(key: np.ndarray, timestamp: np.ndarray, row: np.ndarray) -> np.ndarray | None:
    """Positions [k] of the clicks of every key whose (timestamp, row) are not increasing, in
    clicks grouped by ``key`` [m] (non-decreasing); None when there is none."""
    same = key[1:] == key[:-1]
    late = (timestamp[1:] < timestamp[:-1]) | ((timestamp[1:] == timestamp[:-1]) & (row[1:] < row[:-1]))
    late &= same
    if not late.any():
        return None
    bad_key = np.zeros(int(key.max()) + 1, dtype=bool)
    bad_key[key[1:][late]] = True
    return np.flatnonzero(bad_key[key])


def _duplicates(clicks: _Clicks) -> np.ndarray | None:
    """Mask [m] of the clicks equal to an earlier one (by file row) in session key, item and
    timestamp; None when there is none. Such clicks share a (key, timestamp) run, so only runs
    longer than one click are compared."""
    key, item, timestamp, row = clicks.key, clicks.item, clicks.timestamp, clicks.row
    tie = (key[1:] == key[:-1]) & (timestamp[1:] == timestamp[:-1])
    if not tie.any():
        return None
    in_long_run = np.zeros(len(key), dtype=bool)
    in_long_run[1:] = tie
    in_long_run[:-1] |= tie
    candidates = np.flatnonzero(in_long_run)
    candidates = candidates[
        np.lexsort((row[candidates], item[candidates], timestamp[candidates], key[candidates]))
    ]
    k, i, t = key[candidates], item[candidates], timestamp[candidates]
    again = (k[1:] == k[:-1]) & (t[1:] == t[:-1]) & (i[1:] == i[:-1])
    drop = np.zeros(len(key), dtype=bool)
    drop[candidates[1:][again]] = True
    return drop


def _sorted_clicks(
    interactions: Interactions, key: np.ndarray, item_codes: np.ndarray
) -> tuple[_Clicks, int]:
    """The clicks of ``interactions`` (session-key ranks ``key`` [n], item codes [n]) sorted by
    (key, timestamp, row) without exact duplicates, and how many duplicates were left out.

    When rows are in file order and (key, position) fits an int64, one sort of those packed
    pairs orders the clicks by key and file row, and only the keys whose clicks are then not
    in time order are sorted again (a log is usually appended in time order); otherwise
    ``np.lexsort``.
    """
    n = len(key)
    timestamp, row = interactions.timestamp, interactions.row
    index_type = _index_type(n)
    shift = max(1, (n - 1).bit_length())
    in_file_order = n < 2 or bool((row[1:] > row[:-1]).all())
    if in_file_order and int(key.min(initial=0)) >= 0 and int(key.max(initial=0)).bit_length() + shift <= 63:
        packed = key.astype(np.int64)
        packed <<= shift
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()
        sorted_key = np.empty(n, dtype=key.dtype)
        np.right_shift(packed, shift, out=sorted_key, casting="unsafe")
        packed &= (1 << shift) - 1
        order = packed.astype(index_type)
        del packed
    else:
        order = np.lexsort((row, timestamp, key)).astype(index_type)
        sorted_key = key[order]
    sorted_time = timestamp[order]
    # Positions order the rows as well when the rows are in file order.
    sorted_row = order if in_file_order else row[order]
    redo = _unsorted(sorted_key, sorted_time, sorted_row)
    if redo is not None:
        by = np.lexsort((sorted_row[redo], sorted_time[redo], sorted_key[redo]))
        for values in {id(v): v for v in (order, sorted_time, sorted_row)}.values():
            values[redo] = values[redo][by]
    clicks = _Clicks(sorted_key, item_codes[order], sorted_time, sorted_row, interactions.name)
    del order
    drop = _duplicates(clicks)
    if drop is None:
        return clicks, 0
    keep = ~drop
    for name in ("key", "item", "timestamp", "row"):  # one at a time, each old array freed first
        setattr(clicks, name, getattr(clicks, name)[keep])
    return clicks, int(drop.sum())


def _group(clicks: _Clicks, *keys: np.ndarray) -> _Sessions:
    """Sessions of the (sorted) clicks that start wherever one of ``keys`` [m] changes."""
    m = len(clicks.key)
    changes = np.zeros(m, dtype=bool)
    changes[:1] = True
    for key in keys:
        changes[1:] |= key[1:] != key[:-1]
    offsets = np.append(np.flatnonzero(changes), m).astype(np.int64)
    return _Sessions(np.arange(m, dtype=_index_type(m)), offsets)


def _item_counts(item_codes: np.ndarray, sessions: _Sessions, chunk: int = 1 << 20) -> np.ndarray:
    """Clicks [k] int64 of each item code in the sessions, counted ``chunk`` clicks at a time."""
    counts = np.zeros(int(item_codes.max(initial=-1)) + 1, dtype=np.int64)
    for lo in range(0, len(sessions.clicks), chunk):
        counts += np.bincount(item_codes[sessions.clicks[lo : lo + chunk]], minlength=len(counts))
    return counts


def _split_point(n_sessions: int, train_fraction: float) -> int:
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    return int(n_sessions * train_fraction)


def _movielens(clicks: _Clicks, options: dict, trace: _Trace) -> tuple[_Sessions, int]:
    item_codes, timestamp = clicks.item, clicks.timestamp
    bucket_seconds = float(options["bucket_seconds"])
    if not bucket_seconds > 0:
        raise ValueError(f"bucket_seconds must be > 0, got {options['bucket_seconds']}")
    buckets = timestamp / bucket_seconds
    if len(buckets) and np.abs(buckets).max() >= 2.0**62:
        raise ValueError(
            f"{clicks.name}: timestamps up to {np.abs(timestamp).max():g} seconds are too "
            f"large to bucket by bucket_seconds={bucket_seconds:g}; timestamps must be seconds"
        )
    # The bucket grows with the timestamp, so (key, timestamp, row) order is (key, bucket) order.
    bucket = np.floor(buckets).astype(np.int64)
    del buckets
    sessions = _group(clicks, clicks.key, bucket)
    trace.start(sessions, f"(session key, {bucket_seconds:g}-second time bucket)")
    rare = _item_counts(item_codes, sessions) < int(options["min_item_count"])
    has_rare = sessions.sum(rare[item_codes[sessions.clicks]])
    long_enough = sessions.lengths() >= 2
    kept = sessions.keep_sessions((has_rare == 0) & long_enough)
    without_short = sessions.keep_sessions(long_enough)
    trace.drop("sessions shorter than 2 clicks", sessions, without_short)
    rare_rule = f"sessions holding an item seen fewer than min_item_count={options['min_item_count']} times"
    trace.drop(rare_rule, without_short, kept)
    return kept, _split_point(kept.count(), float(options["train_fraction"]))


def _amazon(clicks: _Clicks, options: dict, trace: _Trace) -> tuple[_Sessions, int]:
    item_codes = clicks.item
    sessions = _group(clicks, clicks.key)
    trace.start(sessions, "session key (user)")
    grouped = sessions
    k_core = int(options["k_core"] or 0)
    while k_core > 0:
        item_ok = _item_counts(item_codes, sessions) >= k_core
        user_ok = sessions.lengths() >= k_core
        keep = item_ok[item_codes[sessions.clicks]] & sessions.per_click(user_ok)
        if keep.all():
            break
        sessions = sessions.keep_clicks(keep)
    if k_core > 0:
        rule = f"k-core k_core={k_core} (users and items with fewer than {k_core} clicks)"
        trace.drop(rule, grouped, sessions)
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("sessions shorter than 2 clicks", sessions, kept)
    return kept, _split_point(kept.count(), float(options["train_fraction"]))


def _srgnn(clicks: _Clicks, options: dict, trace: _Trace) -> tuple[_Sessions, int]:
    timestamp, item_codes = clicks.timestamp, clicks.item
    grouped = _group(clicks, clicks.key)
    trace.start(grouped, "session key")
    sessions = grouped.keep_sessions(grouped.lengths() >= 2)
    trace.drop("sessions of a single click", grouped, sessions)
    del grouped
    date = np.full(sessions.count(), -np.inf)
    np.maximum.at(date, sessions.numbers(), timestamp[sessions.clicks])
    frequent = _item_counts(item_codes, sessions) >= int(options["min_item_count"])
    kept = frequent[item_codes[sessions.clicks]]
    survives = sessions.sum(kept) >= 2
    date = date[survives]
    before = sessions
    sessions = sessions.keep_clicks(kept & sessions.per_click(survives))
    trace.drop(
        f"clicks of items seen fewer than min_item_count={options['min_item_count']} times, "
        "then sessions left shorter than 2 clicks",
        before,
        sessions,
    )
    del before, kept
    if not sessions.count():
        return sessions, 0
    is_test = date > date.max() - 86400.0 * float(options["test_days"])
    trace.facts.update(
        dated_sessions=len(date),
        date_span_days=float(date.max() - date.min()) / 86400.0,
        test_window_sessions=int(is_test.sum()),
    )
    # Train sessions by date, then test sessions by date; ties keep key order.
    sessions = sessions.reorder(np.lexsort((date, is_test)))
    is_test = np.sort(is_test)
    n_train = int((~is_test).sum())
    train_items = np.zeros(int(item_codes.max(initial=-1)) + 1, dtype=bool)
    train_items[item_codes[sessions.clicks[: int(sessions.offsets[n_train])]]] = True
    seen_in_train = train_items[item_codes[sessions.clicks]]
    before = sessions
    sessions = sessions.keep_clicks(~sessions.per_click(is_test) | seen_in_train)
    trace.drop("test clicks of items absent from train", before, sessions)
    del before, seen_in_train
    # Only test sessions can shrink, so the first n_train sessions are still the train ones.
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("test sessions left shorter than 2 clicks", sessions, kept)
    return kept, n_train


def _leave_one_out(clicks: _Clicks, options: dict, trace: _Trace) -> tuple[_Sessions, int]:
    if options["float32_time"]:
        t = clicks.timestamp
        span = max(float(t.max() - t.min()), 1e-300)
        normalised = ((t - t.min()) / span).astype(np.float32).astype(np.float64)
        # Normalising keeps the time order but can tie clicks, which then go by file row.
        redo = _unsorted(clicks.key, normalised, clicks.row)
        if redo is not None:
            clicks.permute(redo, np.lexsort((clicks.row[redo], normalised[redo], clicks.key[redo])))
    sessions = _group(clicks, clicks.key)
    trace.start(sessions, "session key (user)")
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("users with fewer than 2 clicks", sessions, kept)
    return kept, kept.count()


_BUILDERS: dict[str, Callable[[_Clicks, dict, _Trace], tuple[_Sessions, int]]] = {
    "movielens": _movielens,
    "amazon": _amazon,
    "srgnn": _srgnn,
    "leave-one-out": _leave_one_out,
}


def _resolve_options(preset: str, options: dict) -> dict:
    if preset not in PRESET_OPTIONS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(options) - set(PRESET_OPTIONS[preset])
    if unknown:
        accepted = sorted(PRESET_OPTIONS[preset])
        raise TypeError(f"preset {preset!r} got unknown options {sorted(unknown)}; it takes {accepted}")
    return {**PRESET_OPTIONS[preset], **options}


def _leave_one_out_splits(
    model_items: np.ndarray, offsets: np.ndarray, max_history: int
) -> dict[str, SampleSet]:
    """Per user with k samples (every prefix, shortest first): the last is test when k >= 2,
    the one before valid when k >= 3, the rest train; ids number train, then valid, then test."""
    per_user = np.maximum(np.diff(offsets) - 1, 0)
    in_test = (per_user >= 2).astype(np.int64)
    in_valid = (per_user >= 3).astype(np.int64)
    n_train = per_user - in_test - in_valid
    train_total, valid_total = int(n_train.sum()), int(in_valid.sum())
    valid_ids = train_total + np.cumsum(in_valid) - in_valid
    test_ids = train_total + valid_total + np.cumsum(in_test) - in_test
    users = np.arange(len(per_user), dtype=np.int64)
    first_train_ids = np.cumsum(n_train) - n_train
    return {
        "train": session_samples(
            model_items, offsets, users, np.zeros_like(users), n_train, first_train_ids, max_history
        ),
        "valid": session_samples(
            model_items, offsets, np.flatnonzero(in_valid), per_user - 2, per_user - 1, valid_ids, max_history
        ),
        "test": session_samples(
            model_items, offsets, np.flatnonzero(in_test), per_user - 1, per_user, test_ids, max_history
        ),
    }


def _ordered_splits(
    model_items: np.ndarray,
    offsets: np.ndarray,
    n_train: int,
    augment: bool,
    valid_fraction: float,
    seed: int,
) -> tuple[dict[str, SampleSet], dict[str, int]]:
    """Train = the first ``n_train`` sessions less the valid ones drawn from them, test = the
    rest. Samples: every prefix with ``augment``, else s[:-1] -> s[-1]; ids number all samples
    in session order."""
    lengths = np.diff(offsets)
    if augment:
        first_step = np.zeros_like(lengths)
        per_session = np.maximum(lengths - 1, 0)
    else:
        first_step = np.maximum(lengths - 2, 0)
        per_session = (lengths >= 2).astype(np.int64)
    stop_step = first_step + per_session
    first_ids = np.cumsum(per_session) - per_session
    chosen = draw_valid_groups(np.flatnonzero(per_session[:n_train] > 0), valid_fraction, seed)
    in_valid = np.zeros(len(lengths), dtype=bool)
    in_valid[chosen] = True

    def samples(sessions: np.ndarray) -> SampleSet:
        return session_samples(model_items, offsets, sessions, first_step, stop_step, first_ids)

    splits = {
        "train": samples(np.flatnonzero(~in_valid[:n_train])),
        "valid": samples(np.flatnonzero(in_valid)),
        "test": samples(np.arange(n_train, len(lengths), dtype=np.int64)),
    }
    session_counts = {"train": n_train - len(chosen), "valid": len(chosen), "test": len(lengths) - n_train}
    return splits, session_counts


def _trail(report: dict) -> str:
    """One line of what loading did: rows, sessions, each filter's drops, what was left."""
    grouped, kept = report["grouped"], report["kept"]
    steps = [f"{report['rows']} rows"]
    if report["duplicates_dropped"]:
        steps[0] += f" ({report['duplicates_dropped']} exact duplicates dropped)"
    steps.append(
        f"{grouped['sessions']} sessions by {grouped['keyed_by']} "
        f"({grouped['single_click_sessions']} of a single click), {grouped['clicks']} clicks, "
        f"{grouped['items']} items"
    )
    for step in report["filters"]:
        if step["clicks_dropped"]:
            steps.append(
                f"{step['filter']}: dropped {step['sessions_dropped']} sessions, "
                f"{step['clicks_dropped']} clicks, {step['items_dropped']} items"
            )
    steps.append(f"left {kept['sessions']} sessions, {kept['clicks']} clicks, {kept['items']} items")
    return " -> ".join(steps)


def _no_sessions_reason(report: dict) -> str:
    grouped = report["grouped"]
    if grouped["sessions"] and grouped["single_click_sessions"] == grouped["sessions"]:
        return (
            f"all {grouped['sessions']} sessions (by {grouped['keyed_by']}) have a single click; "
            "sessions need >= 2 clicks to make a sample"
        )
    return "the preset's filters dropped every session"


def _empty_split_reason(
    split: str,
    preset: str,
    resolved: dict,
    n_train: int,
    n_sessions: int,
    valid_fraction: float,
    report: dict,
) -> tuple[str, bool]:
    """``(why split is empty, whether the caller asked for that)``."""
    if preset == "leave-one-out":
        rule = {
            "train": "trains on a user's first sample",
            "test": "tests a user's last sample only when the user has >= 2 samples, i.e. 3 clicks",
            "valid": "validates on a user's second-to-last sample only when the user has >= 3 samples",
        }[split]
        need = {"train": 2, "test": 3, "valid": 4}[split]
        return f"no user has {need} or more clicks (leave-one-out {rule})", False
    if split == "valid":
        if valid_fraction == 0:
            return "valid_fraction=0", True
        return f"round(valid_fraction={valid_fraction} * {n_train} train sessions) = 0", False
    if split == "train":
        if n_train:
            return (
                f"the validation carve took all {n_train} train sessions "
                f"(round(valid_fraction={valid_fraction} * {n_train}) = {n_train})",
                False,
            )
        if preset == "srgnn":
            return (
                f"all {report['dated_sessions']} sessions left are dated within the last "
                f"test_days={resolved['test_days']} days before the latest click (their dates span "
                f"{report['date_span_days']:.3g} days; timestamps are read as seconds), so none is a "
                "train session",
                False,
            )
        fraction = resolved["train_fraction"]
        return f"int({n_sessions} sessions * train_fraction={fraction}) = 0 train sessions", False
    if preset == "srgnn":
        window = report.get("test_window_sessions", 0)
        if not window:
            return f"no session is dated within the last test_days={resolved['test_days']} days", False
        return (
            f"the {window} sessions dated within the last test_days={resolved['test_days']} days kept "
            "fewer than 2 clicks of items seen in train",
            False,
        )
    if float(resolved["train_fraction"]) == 1.0:
        return "train_fraction=1 puts every session in train", True
    return f"int({n_sessions} sessions * train_fraction={resolved['train_fraction']}) = {n_sessions}", False


def build_dataset(
    interactions: Interactions,
    item_table: dict[str, str] | None,
    preset: str,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    **options: object,
) -> SessionDataset:
    """Apply ``preset`` (see the module docstring) to ``interactions``.

    item_table maps raw item ids to display names (missing ids get ``""``). ``options`` override
    the preset's defaults in :data:`PRESET_OPTIONS`; an option the preset does not take raises
    TypeError. ``meta`` records the preset, its resolved options, seed, valid_fraction and the
    counts (sessions and samples per split, clicks, items, mean prefix length over all samples).

    ``report`` on the result records ``rows`` (given), ``duplicates_dropped`` (rows identical in
    session, item and timestamp to an earlier one), ``grouped`` (sessions, of them single-click,
    clicks and items before any filter), ``filters`` (sessions, clicks and items each rule
    dropped, in order), ``kept`` and ``empty_splits`` (split -> why it is empty); ``srgnn`` adds
    ``dated_sessions``, ``date_span_days`` and ``test_window_sessions``.

    Raises ValueError, saying why, for: no rows; a NaN or infinite timestamp (naming the first
    rows); no session left (all of a single click, or how many each filter dropped); an empty
    train split; an empty test split unless ``train_fraction=1``. An empty valid split is allowed
    and recorded, with a UserWarning unless ``valid_fraction=0``.
    """
    return build_dataset_from(
        lambda: interactions, item_table, preset, seed=seed, valid_fraction=valid_fraction, **options
    )


def build_dataset_from(
    read: Callable[[], Interactions],
    item_table: dict[str, str] | None,
    preset: str,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    **options: object,
) -> SessionDataset:
    """:func:`build_dataset` of the Interactions ``read()`` returns (called first, so a file's
    errors come before the options'). When ``read`` keeps no reference to them, as a file reader
    does, their memory is freed once the clicks are sorted, before the sessions and samples are
    built."""
    interactions = read()
    resolved = _resolve_options(preset, options)
    if preset == "leave-one-out" and int(resolved["max_history"]) < 1:
        raise ValueError(f"max_history must be >= 1, got {resolved['max_history']}")
    # Options are checked before the data, so a bad one is named even when the data is bad too.
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie in [0, 1), got {valid_fraction}")
    if "train_fraction" in resolved:
        _split_point(0, float(resolved["train_fraction"]))
    dataset_name, source = interactions.name, interactions.name or "interactions"
    rows = len(interactions)
    if not rows:
        raise ValueError(f"{preset} preset on {source!r}: 0 rows (clicks) to build sessions from")
    check_finite_timestamps(interactions.timestamp, source, rows=interactions.row)
    item_vocab, item_codes = _encode(interactions.item)
    clicks, duplicates = _sorted_clicks(interactions, key_rank(interactions.session), item_codes)
    # The sorted clicks hold all that is needed from here: free the Interactions (whose memory
    # returns when ``read`` kept no reference to them).
    del interactions, item_codes
    items = clicks.item
    trace = _Trace(items)
    sessions, n_train = _BUILDERS[preset](clicks, resolved, trace)
    del clicks
    report = {
        "source": source,
        "rows": rows,
        "duplicates_dropped": duplicates,
        "grouped": trace.grouped,
        "filters": trace.filters,
        "kept": trace.counts(sessions),
        **trace.facts,
    }
    if preset == "srgnn" and report.get("test_window_sessions", -1) == report.get("dated_sessions"):
        # Every session is a test session, whose clicks then need items seen in (no) train.
        reason, _ = _empty_split_reason("train", preset, resolved, 0, 0, valid_fraction, report)
        raise ValueError(f"{preset} preset on {source!r}: no train samples: {reason} ({_trail(report)})")
    if not sessions.count():
        raise ValueError(
            f"{preset} preset on {source!r}: no sessions left to make samples: "
            f"{_no_sessions_reason(report)} ({_trail(report)})"
        )

    ordered_codes = items[sessions.clicks]
    n_sessions, n_clicks, offsets = sessions.count(), len(sessions.clicks), sessions.offsets
    del sessions, items, trace
    first_position = np.full(len(item_vocab), n_clicks, dtype=np.int64)
    np.minimum.at(first_position, ordered_codes, np.arange(n_clicks, dtype=np.int64))
    seen = np.flatnonzero(first_position < n_clicks)
    appearance = seen[np.argsort(first_position[seen])]
    model_id_of_code = np.zeros(len(item_vocab), dtype=np.int32 if len(appearance) < 2**31 else np.int64)
    model_id_of_code[appearance] = np.arange(1, len(appearance) + 1)
    model_items = model_id_of_code[ordered_codes]
    del ordered_codes, first_position

    if preset == "leave-one-out":
        splits = _leave_one_out_splits(model_items, offsets, int(resolved["max_history"]))
        session_counts = {"users": n_sessions}
    else:
        augment = preset != "movielens"
        splits, session_counts = _ordered_splits(model_items, offsets, n_train, augment, valid_fraction, seed)

    empty = {
        name: _empty_split_reason(name, preset, resolved, n_train, n_sessions, valid_fraction, report)
        for name, split in splits.items()
        if not len(split)
    }
    for name in ("train", "test"):
        if name in empty and not empty[name][1]:
            reason = empty[name][0]
            raise ValueError(f"{preset} preset on {source!r}: no {name} samples: {reason} ({_trail(report)})")
    report["empty_splits"] = {name: reason for name, (reason, _) in empty.items()}
    for name, (reason, asked) in empty.items():
        if not asked:
            warnings.warn(f"{preset} preset on {source!r}: the {name} split is empty: {reason}", stacklevel=2)

    raw_ids = [str(raw) for raw in item_vocab[appearance]]
    table = item_table or {}
    samples = {name: len(split) for name, split in splits.items()}
    total_prefix = sum(int(split.lengths().sum()) for split in splits.values())
    meta = {
        "preset": preset,
        "options": {**resolved, "seed": seed, "valid_fraction": valid_fraction},
        "valid_split": "recbole leave-one-out"
        if preset == "leave-one-out"
        else "carved from train by session",
        "sessions": {"total": n_sessions, **session_counts},
        "samples": samples,
        "clicks": n_clicks,
        "items": len(appearance),
        "mean_prefix_length": total_prefix / max(sum(samples.values()), 1),
    }
    return SessionDataset(
        name=dataset_name,
        n_items=len(appearance),
        item_raw_ids=["[PAD]", *raw_ids],
        item_names=["", *(table.get(raw, "") for raw in raw_ids)],
        splits=splits,
        meta=meta,
        report=report,
    )
