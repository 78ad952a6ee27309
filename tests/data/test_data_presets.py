"""Presets on small crafted data with hand-computed outputs, and the validation carve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm4sbr.data import Interactions, SessionDataset, build_dataset
from llm4sbr.data.presets import key_rank

DAY = 86400.0


def clicks(rows: list[tuple[object, str, float]], name: str = "toy") -> Interactions:
    """Interactions from (session key, raw item, timestamp) rows in file order."""
    return Interactions(
        session=np.array([str(key) for key, _, _ in rows]),
        item=np.array([item for _, item, _ in rows]),
        timestamp=np.array([t for _, _, t in rows], dtype=np.float64),
        row=np.arange(len(rows), dtype=np.int64),
        name=name,
    )


def samples(dataset: SessionDataset, split: str) -> list[tuple[list[int], int, int]]:
    s = dataset.splits[split]
    return [(s.prefix(i).tolist(), int(s.targets[i]), int(s.sample_ids[i])) for i in range(len(s))]


def check_contract(dataset: SessionDataset) -> None:
    """The SessionDataset contract every stage relies on."""
    assert dataset.item_raw_ids[0] == "[PAD]" and dataset.item_names[0] == ""
    assert len(dataset.item_raw_ids) == len(dataset.item_names) == dataset.n_items + 1
    ids = np.concatenate([split.sample_ids for split in dataset.splits.values()])
    assert sorted(ids.tolist()) == list(range(len(ids)))
    for split in dataset.splits.values():
        assert split.items.dtype == split.targets.dtype == np.int64
        if len(split):
            assert split.items.min() >= 1 and split.items.max() <= dataset.n_items
            assert split.targets.min() >= 1 and split.targets.max() <= dataset.n_items
    assert dataset.meta["samples"] == {name: len(split) for name, split in dataset.splits.items()}
    json.dumps(dataset.meta)  # checkpoints store it


def test_key_rank_numeric_for_digits() -> None:
    assert key_rank(np.array(["10", "2", "010", "2", "1"])).tolist() == [3, 1, 2, 1, 0]
    assert key_rank(np.array(["b10", "b2", "a"])).tolist() == [1, 2, 0]
    assert key_rank(np.array([30, 4, 30])).tolist() == [1, 0, 1]


MOVIELENS_ROWS = [
    # user 10: buckets [0, 600) -> a, b; [600, 1200) -> c, a; [1200, 1800) -> x (length 1).
    (10, "a", 0.0),
    (10, "c", 600.0),
    (10, "b", 599.0),
    (10, "a", 650.0),
    (10, "x", 1300.0),
    # user 2: b and a tie at t=100 and keep file order; one bucket.
    (2, "b", 100.0),
    (2, "a", 100.0),
    (2, "c", 200.0),
    # user 3: r is seen once, so the whole session goes.
    (3, "r", 0.0),
    (3, "a", 10.0),
]


def test_movielens_hand_computed() -> None:
    table = {"a": "Alpha (1990) -- Drama", "b": "Beta"}
    dataset = build_dataset(clicks(MOVIELENS_ROWS), table, "movielens", valid_fraction=0.0, min_item_count=2)
    check_contract(dataset)
    # Sessions in (user, bucket) order, users numeric: (2, 0) = b a c; (10, 0) = a b; (10, 1) = c a.
    assert dataset.item_raw_ids == ["[PAD]", "b", "a", "c"]
    assert dataset.item_names == ["", "Beta", "Alpha (1990) -- Drama", ""]
    assert samples(dataset, "train") == [([1, 2], 3, 0), ([2], 1, 1)]  # int(3 * 0.9) = 2 train sessions
    assert samples(dataset, "valid") == []
    assert samples(dataset, "test") == [([3], 2, 2)]
    meta = dataset.meta
    assert meta["preset"] == "movielens" and meta["options"]["min_item_count"] == 2
    assert meta["sessions"] == {"total": 3, "train": 2, "valid": 0, "test": 1}
    assert meta["clicks"] == 7 and meta["items"] == 3
    assert meta["mean_prefix_length"] == pytest.approx(4 / 3)


def test_movielens_default_threshold_drops_sessions_with_rare_items() -> None:
    rows = [(u, "hot", 10.0 * u) for u in range(5)] + [(u, "hot2", 10.0 * u + 1) for u in range(5)]
    rows += [(9, "hot", 0.0), (9, "cold", 1.0)] + [(u, "cold", 5000.0 + u) for u in range(3)]
    dataset = build_dataset(clicks(rows), None, "movielens", valid_fraction=0.0)
    # "cold" is seen 4 < 5 times, so user 9's (hot, cold) session goes; the lone cold clicks are
    # length-1 sessions. "hot2", seen exactly 5 times, stays.
    assert dataset.meta["sessions"]["total"] == 5
    assert dataset.item_raw_ids == ["[PAD]", "hot", "hot2"]


def test_amazon_iterative_k_core() -> None:
    rows = [
        ("u1", "i1", 0.0),
        ("u1", "i2", 1.0),
        ("u2", "i3", 0.0),
        ("u2", "i1", 1.0),
        ("u2", "i2", 2.0),
        ("u3", "i3", 0.0),
        ("u3", "i4", 1.0),
        ("u4", "i4", 0.0),
    ]
    # k=2: u4 (1 click) goes, then i4 (1 left), then u3 (1 left), then i3 (1 left): u1 = u2 = i1 i2.
    dataset = build_dataset(clicks(rows), None, "amazon", valid_fraction=0.0, k_core=2, train_fraction=0.5)
    check_contract(dataset)
    assert dataset.item_raw_ids == ["[PAD]", "i1", "i2"]
    assert samples(dataset, "train") == [([1], 2, 0)]
    assert samples(dataset, "test") == [([1], 2, 1)]
    no_core = build_dataset(clicks(rows), None, "amazon", valid_fraction=0.0, k_core=None, train_fraction=0.5)
    assert no_core.meta["sessions"]["total"] == 3  # u4 has a single click


def test_amazon_prefix_augmentation_on_both_splits() -> None:
    rows = [(user, f"{user}-{t}", float(10 - t)) for user in range(10) for t in range(3)]
    dataset = build_dataset(clicks(rows), None, "amazon", valid_fraction=0.0, k_core=0)
    check_contract(dataset)
    # Clicks come in reverse time order in the file; each user is 3 new items; 9 train users, 1 test.
    train, test = samples(dataset, "train"), samples(dataset, "test")
    assert len(train) == 18 and train[:2] == [([1], 2, 0), ([1, 2], 3, 1)]
    assert dataset.item_raw_ids[1:4] == ["0-2", "0-1", "0-0"]
    assert test == [([28], 29, 18), ([28, 29], 30, 19)]


def srgnn_rows() -> list[tuple[object, str, float]]:
    end = 10 * DAY
    return [
        (5, "b", 0.0),  # key 5: b a, date 10 (first by date)
        (5, "a", 10.0),
        (2, "z", 5.0),  # key 2: length 1, dropped before counting items
        (9, "z", 6.0),  # key 9: z is then seen once -> removed -> session too short
        (9, "a", 7.0),
        (3, "b", 1000.0),  # key 3: b a q b; q is rare
        (3, "a", 1001.0),
        (3, "q", 1002.0),
        (3, "b", 1003.0),
        (1, "a", end - DAY - 5),  # key 1: dated exactly at the split -> train
        (1, "b", end - DAY),
        (4, "a", end - 100),  # key 4: test; n never occurs in train
        (4, "n", end - 50),
        (4, "b", end - 40),
        (4, "a", end),
        (6, "n", end - 20),  # key 6: test, only n -> empty -> dropped
        (6, "n", end - 10),
    ]


def test_srgnn_hand_computed() -> None:
    dataset = build_dataset(
        clicks(srgnn_rows()), None, "srgnn", valid_fraction=0.0, test_days=1, min_item_count=2
    )
    check_contract(dataset)
    # Train by date: key 5 (b a), key 3 (b a b), key 1 (a b); test: key 4 (a b a).
    assert dataset.item_raw_ids == ["[PAD]", "b", "a"]
    assert samples(dataset, "train") == [([1], 2, 0), ([1], 2, 1), ([1, 2], 1, 2), ([2], 1, 3)]
    assert samples(dataset, "test") == [([2], 1, 4), ([2, 1], 2, 5)]
    assert dataset.meta["sessions"] == {"total": 4, "train": 3, "valid": 0, "test": 1}


def test_leave_one_out_matches_recbole_rules() -> None:
    rows = [("1", "a", 0.0)]  # one click: no sample
    rows += [("2", "a", 0.0), ("2", "b", 1.0)]  # one sample: train
    rows += [("3", "c", 5.0), ("3", "a", 5.0), ("3", "b", 6.0)]  # two samples: train, test (tie keeps order)
    rows += [("4", item, float(t)) for t, item in enumerate("abcde")]  # four: train, train, valid, test
    dataset = build_dataset(clicks(rows), None, "leave-one-out", max_history=2)
    check_contract(dataset)
    assert dataset.item_raw_ids == ["[PAD]", "a", "b", "c", "d", "e"]
    a, b, c, d, e = 1, 2, 3, 4, 5
    assert samples(dataset, "train") == [([a], b, 0), ([c], a, 1), ([a], b, 2), ([a, b], c, 3)]
    assert samples(dataset, "valid") == [([b, c], d, 4)]  # cut to the 2 most recent clicks
    assert samples(dataset, "test") == [([c, a], b, 5), ([c, d], e, 6)]
    assert dataset.meta["valid_split"] == "recbole leave-one-out"


def test_preset_errors() -> None:
    data = clicks(MOVIELENS_ROWS)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        build_dataset(data, None, "nope")
    with pytest.raises(TypeError, match="k_core"):
        build_dataset(data, None, "movielens", k_core=3)
    with pytest.raises(ValueError, match="valid_fraction"):
        build_dataset(data, None, "movielens", valid_fraction=1.0)
    with pytest.raises(ValueError, match="max_history"):
        build_dataset(data, None, "leave-one-out", max_history=0)


def carve_data() -> Interactions:
    # 40 users whose items are their own, so a sample's session shows in its target's raw id.
    return clicks([(user, f"{user}:{t}", float(t)) for user in range(40) for t in range(2 + user % 4)])


def session_of_samples(dataset: SessionDataset, split: str) -> set[str]:
    s = dataset.splits[split]
    return {dataset.item_raw_ids[t].split(":")[0] for t in s.targets}


def test_valid_is_carved_by_session_seeded_and_disjoint() -> None:
    first = build_dataset(carve_data(), None, "amazon", k_core=0, valid_fraction=0.25, seed=7)
    check_contract(first)
    train, valid, test = (session_of_samples(first, split) for split in ("train", "valid", "test"))
    assert len(valid) == 9  # round(0.25 * 36 train sessions)
    assert not train & valid and not (train | valid) & test
    assert train | valid == {str(u) for u in range(36)}
    assert first.meta["sessions"] == {"total": 40, "train": 27, "valid": 9, "test": 4}

    again = build_dataset(carve_data(), None, "amazon", k_core=0, valid_fraction=0.25, seed=7)
    for split in ("train", "valid", "test"):
        assert samples(again, split) == samples(first, split)
    other = build_dataset(carve_data(), None, "amazon", k_core=0, valid_fraction=0.25, seed=8)
    assert session_of_samples(other, "valid") != valid
    # A sample keeps its id whatever the seed: ids number the un-carved train samples.
    by_id = {i: (p, t) for split in ("train", "valid", "test") for p, t, i in samples(first, split)}
    assert {i: (p, t) for split in ("train", "valid", "test") for p, t, i in samples(other, split)} == by_id


def test_valid_carve_on_movielens_and_srgnn() -> None:
    rows = [(u, f"i{(u + t) % 3}", 600.0 * (t // 2) + t) for u in range(20) for t in range(4)]
    movielens = build_dataset(clicks(rows), None, "movielens", min_item_count=1, valid_fraction=0.5, seed=1)
    check_contract(movielens)
    assert movielens.meta["sessions"] == {"total": 40, "train": 18, "valid": 18, "test": 4}
    srgnn = build_dataset(
        clicks(srgnn_rows()), None, "srgnn", valid_fraction=0.5, seed=0, test_days=1, min_item_count=2
    )
    check_contract(srgnn)
    assert srgnn.meta["sessions"]["valid"] == 2 and srgnn.meta["sessions"]["train"] == 1
