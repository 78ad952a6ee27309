"""Session presets: from raw :class:`Interactions` to a split :class:`SessionDataset`.

Every preset orders clicks within a session by timestamp with a *stable* sort (ties keep file
order), remaps items to 1..n_items in order of first appearance over the ordered sessions (train
sessions first), and numbers samples uniquely over all splits. Session and user keys compare
numerically when they are integers or all-digit strings, as strings otherwise.

``movielens`` (paper-spec 4.2, ML-1M)
    session = (user, floor(timestamp / bucket_seconds)); sessions holding any item seen fewer than
    ``min_item_count`` times (counted once, over all clicks) or shorter than 2 are dropped whole;
    sessions in (user, bucket) order, the first ``train_fraction`` are train, the rest test; one
    sample per session (s[:-1] -> s[-1]).
``amazon`` (paper-spec 4.2, Beauty)
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
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .dataset import SampleSet, SessionDataset
from .loaders import Interactions, check_finite_timestamps, drop_duplicate_clicks
from .splits import carve_valid, gather_samples, prefix_samples, take

PRESET_OPTIONS: dict[str, dict[str, object]] = {
    "movielens": {"bucket_seconds": 600.0, "min_item_count": 5, "train_fraction": 0.9},
    "amazon": {"k_core": 5, "train_fraction": 0.9},
    "srgnn": {"test_days": 7.0, "min_item_count": 5},
    "leave-one-out": {"max_history": 50, "float32_time": False},
}
PRESETS = tuple(PRESET_OPTIONS)


@dataclass
class _Sessions:
    """Clicks grouped into ordered sessions: ``clicks`` indexes the Interactions arrays, and
    ``session`` [n] is the non-decreasing session number of each click."""

    clicks: np.ndarray
    session: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.bincount(self.session, minlength=self.count())

    def count(self) -> int:
        return int(self.session[-1]) + 1 if len(self.session) else 0

    def offsets(self) -> np.ndarray:
        offsets = np.zeros(self.count() + 1, dtype=np.int64)
        np.cumsum(self.lengths(), out=offsets[1:])
        return offsets

    def keep_clicks(self, mask: np.ndarray) -> _Sessions:
        """Drop the clicks where ``mask`` is False and renumber the sessions left."""
        session = self.session[mask]
        _, renumbered = np.unique(session, return_inverse=True)
        return _Sessions(self.clicks[mask], renumbered.astype(np.int64))

    def keep_sessions(self, keep: np.ndarray) -> _Sessions:
        return self.keep_clicks(keep[self.session])

    def reorder(self, session_rank: np.ndarray) -> _Sessions:
        """Reorder sessions by ``session_rank`` [n_sessions] (stable), clicks within unchanged."""
        order = np.argsort(session_rank[self.session], kind="stable")
        _, renumbered = np.unique(session_rank[self.session][order], return_inverse=True)
        return _Sessions(self.clicks[order], renumbered.astype(np.int64))


@dataclass
class _Trace:
    """What a preset's grouping and filters did, for ``SessionDataset.report`` and for the errors
    that explain an empty split. ``item_codes`` [n] int64 codes the Interactions' items."""

    item_codes: np.ndarray
    grouped: dict = field(default_factory=dict)
    filters: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def counts(self, sessions: _Sessions) -> dict[str, int]:
        items = np.count_nonzero(np.bincount(self.item_codes[sessions.clicks])) if len(sessions.clicks) else 0
        return {"sessions": sessions.count(), "clicks": len(sessions.clicks), "items": int(items)}

    def start(self, sessions: _Sessions, keyed_by: str) -> None:
        single = int((sessions.lengths() == 1).sum())
        self.grouped = {**self.counts(sessions), "single_click_sessions": single, "keyed_by": keyed_by}

    def drop(self, what: str, before: _Sessions, after: _Sessions) -> None:
        old, new = self.counts(before), self.counts(after)
        self.filters.append({"filter": what, **{f"{key}_dropped": old[key] - new[key] for key in old}})


def key_rank(keys: np.ndarray) -> np.ndarray:
    """Rank [n] int64 of each key in sort order: numeric for integers and all-digit strings,
    lexicographic for other strings; equal keys get equal ranks."""
    unique, inverse = np.unique(keys, return_inverse=True)
    if unique.dtype.kind in "US" and len(unique) and np.char.isdigit(unique.astype(str)).all():
        # Digit strings compare as numbers by (significant length, text), with no overflow.
        significant = np.char.lstrip(unique.astype(str), "0")
        order = np.lexsort((unique, significant, np.char.str_len(significant)))
        rank_of_unique = np.empty(len(unique), dtype=np.int64)
        rank_of_unique[order] = np.arange(len(unique))
        return rank_of_unique[inverse]
    return inverse.astype(np.int64)


def _group(interactions: Interactions, *keys: np.ndarray) -> _Sessions:
    """Sessions keyed by ``keys`` (compared in that order), clicks by (timestamp, file row)."""
    order = np.lexsort((interactions.row, interactions.timestamp, *reversed(keys)))
    changes = np.zeros(len(order), dtype=bool)
    for key in keys:
        ordered = key[order]
        changes[1:] |= ordered[1:] != ordered[:-1]
    return _Sessions(order.astype(np.int64), np.cumsum(changes).astype(np.int64))


def _item_counts(item_codes: np.ndarray, sessions: _Sessions) -> np.ndarray:
    return np.bincount(item_codes[sessions.clicks], minlength=int(item_codes.max(initial=-1)) + 1)


def _split_point(n_sessions: int, train_fraction: float) -> int:
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    return int(n_sessions * train_fraction)


def _movielens(
    interactions: Interactions, item_codes: np.ndarray, options: dict, trace: _Trace
) -> tuple[_Sessions, int]:
    bucket_seconds = float(options["bucket_seconds"])
    if not bucket_seconds > 0:
        raise ValueError(f"bucket_seconds must be > 0, got {options['bucket_seconds']}")
    buckets = interactions.timestamp / bucket_seconds
    if len(buckets) and np.abs(buckets).max() >= 2.0**62:
        raise ValueError(
            f"{interactions.name}: timestamps up to {np.abs(interactions.timestamp).max():g} seconds are too "
            f"large to bucket by bucket_seconds={bucket_seconds:g}; timestamps must be seconds"
        )
    bucket = np.floor(buckets).astype(np.int64)
    sessions = _group(interactions, key_rank(interactions.session), bucket)
    trace.start(sessions, f"(session key, {bucket_seconds:g}-second time bucket)")
    rare = _item_counts(item_codes, sessions) < int(options["min_item_count"])
    has_rare = np.bincount(
        sessions.session, weights=rare[item_codes[sessions.clicks]], minlength=sessions.count()
    )
    long_enough = sessions.lengths() >= 2
    kept = sessions.keep_sessions((has_rare == 0) & long_enough)
    without_short = sessions.keep_sessions(long_enough)
    trace.drop("sessions shorter than 2 clicks", sessions, without_short)
    rare_rule = f"sessions holding an item seen fewer than min_item_count={options['min_item_count']} times"
    trace.drop(rare_rule, without_short, kept)
    return kept, _split_point(kept.count(), float(options["train_fraction"]))


def _amazon(
    interactions: Interactions, item_codes: np.ndarray, options: dict, trace: _Trace
) -> tuple[_Sessions, int]:
    sessions = _group(interactions, key_rank(interactions.session))
    trace.start(sessions, "session key (user)")
    grouped = sessions
    k_core = int(options["k_core"] or 0)
    while k_core > 0:
        item_ok = _item_counts(item_codes, sessions) >= k_core
        user_ok = sessions.lengths() >= k_core
        keep = item_ok[item_codes[sessions.clicks]] & user_ok[sessions.session]
        if keep.all():
            break
        sessions = sessions.keep_clicks(keep)
    if k_core > 0:
        rule = f"k-core k_core={k_core} (users and items with fewer than {k_core} clicks)"
        trace.drop(rule, grouped, sessions)
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("sessions shorter than 2 clicks", sessions, kept)
    return kept, _split_point(kept.count(), float(options["train_fraction"]))


def _srgnn(
    interactions: Interactions, item_codes: np.ndarray, options: dict, trace: _Trace
) -> tuple[_Sessions, int]:
    grouped = _group(interactions, key_rank(interactions.session))
    trace.start(grouped, "session key")
    sessions = grouped.keep_sessions(grouped.lengths() >= 2)
    trace.drop("sessions of a single click", grouped, sessions)
    date = np.full(sessions.count(), -np.inf)
    np.maximum.at(date, sessions.session, interactions.timestamp[sessions.clicks])
    frequent = _item_counts(item_codes, sessions) >= int(options["min_item_count"])
    kept = frequent[item_codes[sessions.clicks]]
    survives = np.bincount(sessions.session, weights=kept, minlength=sessions.count()) >= 2
    date = date[survives]
    before = sessions
    sessions = sessions.keep_clicks(kept & survives[sessions.session])
    trace.drop(
        f"clicks of items seen fewer than min_item_count={options['min_item_count']} times, "
        "then sessions left shorter than 2 clicks",
        before,
        sessions,
    )
    if not sessions.count():
        return sessions, 0
    is_test = date > date.max() - 86400.0 * float(options["test_days"])
    trace.facts.update(
        dated_sessions=len(date),
        date_span_days=float(date.max() - date.min()) / 86400.0,
        test_window_sessions=int(is_test.sum()),
    )
    # Train sessions by date, then test sessions by date; ties keep key order.
    sessions = sessions.reorder(np.lexsort((date, is_test)).argsort())
    is_test = np.sort(is_test)
    n_train = int((~is_test).sum())
    train_items = np.zeros(int(item_codes.max(initial=-1)) + 1, dtype=bool)
    train_items[item_codes[sessions.clicks[~is_test[sessions.session]]]] = True
    seen_in_train = train_items[item_codes[sessions.clicks]]
    before = sessions
    sessions = sessions.keep_clicks(~is_test[sessions.session] | seen_in_train)
    trace.drop("test clicks of items absent from train", before, sessions)
    # Only test sessions can shrink, so the first n_train sessions are still the train ones.
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("test sessions left shorter than 2 clicks", sessions, kept)
    return kept, n_train


def _leave_one_out(
    interactions: Interactions, item_codes: np.ndarray, options: dict, trace: _Trace
) -> tuple[_Sessions, int]:
    if options["float32_time"]:
        t = interactions.timestamp
        span = max(float(t.max() - t.min()), 1e-300)
        normalised = ((t - t.min()) / span).astype(np.float32).astype(np.float64)
        interactions = dataclasses.replace(interactions, timestamp=normalised)
    sessions = _group(interactions, key_rank(interactions.session))
    trace.start(sessions, "session key (user)")
    kept = sessions.keep_sessions(sessions.lengths() >= 2)
    trace.drop("users with fewer than 2 clicks", sessions, kept)
    return kept, kept.count()


_BUILDERS: dict[str, Callable[[Interactions, np.ndarray, dict, _Trace], tuple[_Sessions, int]]] = {
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
    starts, ends, targets = prefix_samples(offsets, augment=True, max_history=max_history)
    per_user = np.maximum(np.diff(offsets) - 1, 0)
    last = np.cumsum(per_user) - 1
    role = np.zeros(len(ends), dtype=np.int8)  # 0 train, 1 valid, 2 test
    role[last[per_user >= 2]] = 2
    role[last[per_user >= 3] - 1] = 1
    splits = {}
    next_id = 0
    for code, name in enumerate(("train", "valid", "test")):
        index = np.flatnonzero(role == code)
        ids = np.arange(next_id, next_id + len(index), dtype=np.int64)
        splits[name] = gather_samples(
            model_items, starts[index], ends[index], model_items[targets[index]], ids
        )
        next_id += len(index)
    return splits


def _ordered_splits(
    model_items: np.ndarray,
    offsets: np.ndarray,
    n_train: int,
    augment: bool,
    valid_fraction: float,
    seed: int,
) -> tuple[dict[str, SampleSet], dict[str, int]]:
    starts, ends, targets = prefix_samples(offsets, augment=augment)
    sample_session = np.searchsorted(offsets, starts, side="right") - 1
    samples = gather_samples(model_items, starts, ends, model_items[targets], np.arange(len(ends)))
    is_train = sample_session < n_train
    train, valid = carve_valid(
        take(samples, np.flatnonzero(is_train)), sample_session[is_train], valid_fraction, seed
    )
    # Sample ids are positions in ``samples`` here, so they index ``sample_session``.
    n_valid_sessions = len(np.unique(sample_session[valid.sample_ids]))
    session_counts = {
        "train": n_train - n_valid_sessions,
        "valid": n_valid_sessions,
        "test": len(offsets) - 1 - n_train,
    }
    return {"train": train, "valid": valid, "test": take(samples, np.flatnonzero(~is_train))}, session_counts


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
    resolved = _resolve_options(preset, options)
    if preset == "leave-one-out" and int(resolved["max_history"]) < 1:
        raise ValueError(f"max_history must be >= 1, got {resolved['max_history']}")
    # Options are checked before the data, so a bad one is named even when the data is bad too.
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie in [0, 1), got {valid_fraction}")
    if "train_fraction" in resolved:
        _split_point(0, float(resolved["train_fraction"]))
    source = interactions.name or "interactions"
    rows = len(interactions)
    if not rows:
        raise ValueError(f"{preset} preset on {source!r}: 0 rows (clicks) to build sessions from")
    check_finite_timestamps(interactions.timestamp, source, rows=interactions.row)
    interactions, duplicates = drop_duplicate_clicks(interactions)
    item_vocab, item_codes = np.unique(interactions.item, return_inverse=True)
    item_codes = item_codes.astype(np.int64)
    trace = _Trace(item_codes)
    sessions, n_train = _BUILDERS[preset](interactions, item_codes, resolved, trace)
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

    ordered_codes = item_codes[sessions.clicks]
    first_seen_codes, first_position = np.unique(ordered_codes, return_index=True)
    appearance = first_seen_codes[np.argsort(first_position)]
    model_id_of_code = np.zeros(len(item_vocab), dtype=np.int64)
    model_id_of_code[appearance] = np.arange(1, len(appearance) + 1)
    model_items = model_id_of_code[ordered_codes]
    offsets = sessions.offsets()

    if preset == "leave-one-out":
        splits = _leave_one_out_splits(model_items, offsets, int(resolved["max_history"]))
        session_counts = {"users": sessions.count()}
    else:
        augment = preset != "movielens"
        splits, session_counts = _ordered_splits(model_items, offsets, n_train, augment, valid_fraction, seed)

    empty = {
        name: _empty_split_reason(name, preset, resolved, n_train, sessions.count(), valid_fraction, report)
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
        "sessions": {"total": sessions.count(), **session_counts},
        "samples": samples,
        "clicks": len(sessions.clicks),
        "items": len(appearance),
        "mean_prefix_length": total_prefix / max(sum(samples.values()), 1),
    }
    return SessionDataset(
        name=interactions.name,
        n_items=len(appearance),
        item_raw_ids=["[PAD]", *raw_ids],
        item_names=["", *(table.get(raw, "") for raw in raw_ids)],
        splits=splits,
        meta=meta,
        report=report,
    )
