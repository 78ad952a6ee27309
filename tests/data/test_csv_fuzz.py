"""Hypothesis-generated CSV logs through every preset: each either loads with counts that satisfy
the documented invariants or raises a ValueError whose message names the problem; never another
exception type, never a silently empty split.

Logs draw session and item ids from small pools (digit strings, unicode text, sometimes the
empty string), timestamps from a few days of minutes (so ties are common) with NaN/inf now and
then, and mix in blank lines, exact duplicate rows and short rows; some are header-only.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from llm4sbr.data import PRESETS, load_dataset

# Every ValueError a bad log may raise, by the problem it names.
KNOWN_PROBLEMS = re.compile(
    "|".join(
        [
            r"0 data rows after the header",
            r"column 'timestamp' has \d+ NaN/inf value",
            r"column '(session_id|item_id)' is empty in \d+ of \d+ data rows",
            r"data row \d+ has \d+ fields, expected at least 3",
            r"no sessions left to make samples: (all \d+ sessions .* single click|the preset's filters)",
            r"no (train|test) samples: ",
        ]
    )
)

IDS = st.one_of(
    st.integers(0, 40).map(str),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=4),
)
FINITE_TIMES = st.builds(
    lambda day, minute: repr(86400.0 * day + 60.0 * minute), st.integers(0, 12), st.integers(0, 3)
)
TIMES = st.one_of(FINITE_TIMES, st.sampled_from(["nan", "inf", "-inf", "NaN"]))
OPTIONS = {
    "movielens": st.fixed_dictionaries(
        {"min_item_count": st.sampled_from([1, 2, 5]), "train_fraction": st.sampled_from([0.5, 0.9, 1.0])}
    ),
    "amazon": st.fixed_dictionaries(
        {"k_core": st.sampled_from([0, 2, 5]), "train_fraction": st.sampled_from([0.5, 0.9, 1.0])}
    ),
    "srgnn": st.fixed_dictionaries(
        {"min_item_count": st.sampled_from([1, 2, 5]), "test_days": st.sampled_from([1.0, 3.0, 7.0])}
    ),
    "leave-one-out": st.fixed_dictionaries(
        {"max_history": st.sampled_from([1, 3, 50]), "float32_time": st.booleans()}
    ),
}


@st.composite
def logs(draw: st.DrawFn) -> list[list[str] | None]:
    """CSV data rows (a list of fields, or None for a blank line), header not included."""
    # One log in four may hold rows the reader refuses (NaN/inf, empty ids, short rows); the
    # others only blank lines and duplicates, so that most get to the presets.
    dirty = draw(st.integers(0, 3)) == 0
    ids = st.one_of(IDS, st.just("")) if dirty else IDS
    sessions = draw(st.lists(ids, min_size=1, max_size=10))
    items = draw(st.lists(ids, min_size=1, max_size=5))
    times = TIMES if dirty else FINITE_TIMES
    kinds = ["click"] * 8 + ["blank", "duplicate"] + (["short"] if dirty else [])
    rows: list[list[str] | None] = []
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(kinds))
        if kind == "blank":
            rows.append(None)
        elif kind == "duplicate" and any(rows):
            rows.append(draw(st.sampled_from([row for row in rows if row])))
        elif kind == "short":
            rows.append([draw(st.sampled_from(sessions)), draw(st.sampled_from(items))])
        else:
            rows.append([draw(st.sampled_from(sessions)), draw(st.sampled_from(items)), draw(times)])
    return rows


def write_log(path: Path, rows: list[list[str] | None]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("session_id,item_id,timestamp\n")
        writer = csv.writer(handle, lineterminator="\n")
        for row in rows:
            if row is None:
                handle.write("\n")
            else:
                writer.writerow(row)


def check_loaded(dataset, rows, preset: str, options: dict, valid_fraction: float, caught) -> None:
    clicks = [row for row in rows if row]
    distinct = {(s, i, float(t)) for s, i, t in clicks}
    report, meta = dataset.report, dataset.meta
    assert report["rows"] == len(clicks)
    assert report["duplicates_dropped"] == len(clicks) - len(distinct)

    # Items: 1..n_items, each the model id of a distinct raw id from the log, each used.
    assert dataset.item_raw_ids[0] == "[PAD]" and len(dataset.item_raw_ids) == dataset.n_items + 1
    raw_ids = dataset.item_raw_ids[1:]
    assert len(set(raw_ids)) == dataset.n_items and set(raw_ids) <= {i for _, i, _ in clicks}
    used = set()
    for split in dataset.splits.values():
        if len(split):
            assert 1 <= split.items.min() and split.items.max() <= dataset.n_items
            assert 1 <= split.targets.min() and split.targets.max() <= dataset.n_items
            used |= set(split.items.tolist()) | set(split.targets.tolist())
    assert used == set(range(1, dataset.n_items + 1))

    # Samples: ids 0..n-1 once each over all splits (so no split overlaps another), counts as
    # the kept sessions' lengths say, each sample's items all clicked in one session of the log.
    ids = np.concatenate([split.sample_ids for split in dataset.splits.values()])
    assert sorted(ids.tolist()) == list(range(len(ids)))
    assert meta["samples"] == {name: len(split) for name, split in dataset.splits.items()}
    n_sessions, n_clicks = meta["sessions"]["total"], meta["clicks"]
    assert report["kept"]["sessions"] == n_sessions and report["kept"]["clicks"] == n_clicks
    assert len(ids) == (n_sessions if preset == "movielens" else n_clicks - n_sessions)
    session_items = {}
    for s, i, _ in clicks:
        session_items.setdefault(s, set()).add(i)
    for split in dataset.splits.values():
        for k in range(len(split)):
            raw = {dataset.item_raw_ids[m] for m in [*split.prefix(k).tolist(), int(split.targets[k])]}
            assert any(raw <= items for items in session_items.values())
            if preset == "leave-one-out":
                assert len(split.prefix(k)) <= options["max_history"]

    # Empty splits: never train; test only when train_fraction=1 asked for it; valid with a
    # recorded reason and, unless valid_fraction=0 asked for it, a warning.
    assert len(dataset.splits["train"])
    empty = {name for name, split in dataset.splits.items() if not len(split)}
    assert empty == set(report["empty_splits"])
    assert "test" not in empty or options.get("train_fraction") == 1.0
    warned = " ".join(str(w.message) for w in caught)
    for name in empty:
        asked = (name == "valid" and valid_fraction == 0) or name == "test"
        assert asked or f"the {name} split is empty" in warned


@pytest.mark.parametrize("preset", PRESETS)
@settings(max_examples=50)
@given(rows=logs(), data=st.data(), valid_fraction=st.sampled_from([0.0, 0.1, 0.5]), seed=st.integers(0, 3))
def test_fuzzed_csv_logs_load_or_say_why(tmp_path_factory, preset, rows, data, valid_fraction, seed) -> None:
    options = data.draw(OPTIONS[preset])
    path = tmp_path_factory.mktemp("fuzz") / "log.csv"
    write_log(path, rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = load_dataset(path, preset, seed=seed, valid_fraction=valid_fraction, **options)
        except ValueError as error:
            message = str(error)
            problem = KNOWN_PROBLEMS.search(message)
            assert problem, message
            event("ValueError: " + re.sub(r"\d+", "N", problem.group(0))[:44])
            clicks = [row for row in rows if row]
            if not clicks:
                assert "0 data rows after the header" in message
            elif all(len(row) == 3 for row in clicks) and any(not math.isfinite(float(r[2])) for r in clicks):
                assert "NaN/inf" in message
            return
    event("loaded")
    check_loaded(dataset, rows, preset, options, valid_fraction, caught)
