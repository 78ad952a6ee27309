"""The real MovieLens-100k shipped in the recbole 1.2.1 wheel (skipped when it is absent)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from llm4sbr.data import load_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("recbole") is None, reason="needs pip install --no-deps recbole==1.2.1"
    ),
]


def test_ml100k_movielens_preset() -> None:
    dataset = load_dataset("ml-100k")
    meta = dataset.meta
    sessions = meta["sessions"]["total"]
    mean_length = meta["clicks"] / sessions
    print(
        f"ml-100k movielens: {sessions} sessions, {meta['items']} items, {meta['clicks']} clicks, "
        f"mean session length {mean_length:.2f}, samples {meta['samples']}"
    )
    assert dataset.name == "ml-100k" and meta["preset"] == "movielens"
    assert 6000 <= sessions <= 6200
    assert 1300 <= dataset.n_items <= 1400
    assert 13.5 <= mean_length <= 14.5
    assert meta["samples"]["test"] == sessions - int(sessions * 0.9)
    assert sum(meta["samples"].values()) == sessions  # one sample per session
    assert all(" -- " in name for name in dataset.item_names[1:])


def test_ml100k_leave_one_out_matches_recbole() -> None:
    dataset = load_dataset("ml-100k", "leave-one-out")
    counts = {name: len(split) for name, split in dataset.splits.items()}
    print(f"ml-100k leave-one-out: {counts}")
    assert counts == {"train": 97171, "valid": 943, "test": 943}
    assert int(np.max(dataset.splits["train"].lengths())) == 50
