"""Batching: padding, truncation to the most recent clicks, dtypes, seeded shuffling, graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4sbr.data import (
    SampleDataset,
    SampleSet,
    build_session_graph,
    collate_sessions,
    make_loader,
)

PREFIXES = [[4, 5, 6, 7], [1], [2, 3], [9, 8, 7, 6, 5], [3, 3, 3]]
TARGETS = [1, 2, 3, 4, 5]


def sample_set() -> SampleSet:
    return SampleSet.from_lists(PREFIXES, TARGETS, np.arange(100, 105))


def test_collate_pads_right_with_zeros() -> None:
    batch = collate_sessions([SampleDataset(sample_set())[i] for i in (1, 0, 2)])
    assert set(batch) == {"item_seq", "item_seq_len", "target", "sample_id"}
    assert all(value.dtype == torch.long for value in batch.values())
    assert batch["item_seq"].tolist() == [[1, 0, 0, 0], [4, 5, 6, 7], [2, 3, 0, 0]]
    assert batch["item_seq_len"].tolist() == [1, 4, 2]
    assert batch["target"].tolist() == [2, 1, 3]
    assert batch["sample_id"].tolist() == [101, 100, 102]


def test_max_len_keeps_most_recent_clicks() -> None:
    dataset = SampleDataset(sample_set(), max_len=2)
    assert dataset[3][0].tolist() == [6, 5]
    assert dataset[1][0].tolist() == [1]
    batch = collate_sessions([dataset[i] for i in range(5)])
    assert batch["item_seq"].shape == (5, 2)
    assert batch["item_seq"][0].tolist() == [6, 7]
    assert batch["item_seq_len"].tolist() == [2, 1, 2, 2, 2]


def test_loader_order_and_last_batch() -> None:
    loader = make_loader(sample_set(), batch_size=2)
    batches = list(loader)
    assert [b["sample_id"].tolist() for b in batches] == [[100, 101], [102, 103], [104]]
    assert batches[1]["item_seq"].shape == (2, 5)


def epoch_order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [i for batch in loader for i in batch["sample_id"].tolist()]


def test_shuffle_depends_on_seed_and_epoch_only() -> None:
    big = SampleSet.from_lists([[1]] * 50, [2] * 50)
    loader = make_loader(big, batch_size=8, shuffle=True, seed=3)
    epochs = [epoch_order(loader) for _ in range(3)]
    assert all(sorted(order) == list(range(50)) for order in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    fresh = make_loader(big, batch_size=8, shuffle=True, seed=3)
    assert [epoch_order(fresh) for _ in range(3)] == epochs
    fresh.sampler.epoch = 2
    assert epoch_order(fresh) == epochs[2]
    assert epoch_order(make_loader(big, batch_size=8, shuffle=True, seed=4)) != epochs[0]


def test_with_graph_in_workers_matches_torch_builder() -> None:
    loader = make_loader(sample_set(), batch_size=3, with_graph=True, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        graph = build_session_graph(batch["item_seq"], batch["item_seq_len"])
        assert batch["graph_nodes"].dtype == batch["graph_alias"].dtype == torch.long
        assert batch["graph_A_in"].dtype == batch["graph_A_out"].dtype == torch.float32
        assert torch.equal(batch["graph_nodes"], graph.nodes)
        assert torch.equal(batch["graph_alias"], graph.alias)
        assert torch.equal(batch["graph_A_in"], graph.A_in)
        assert torch.equal(batch["graph_A_out"], graph.A_out)


def test_numba_is_an_optional_extra_with_an_actionable_error(monkeypatch) -> None:
    import sys

    import llm4sbr.data

    monkeypatch.setitem(sys.modules, "numba", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "llm4sbr.data.graph_numba", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'llm4sbr\[numba\]'"):
        llm4sbr.data.build_session_graph_numba  # noqa: B018
