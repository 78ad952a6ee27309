import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llm4sbr.training.metrics import RankAccumulator, full_rank_metrics, metrics_from_ranks, target_ranks


def scores_with_ranks(ranks: list[int], n_items: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores where target item 1 has exactly the given 1-based rank in each row."""
    scores = torch.zeros(len(ranks), n_items + 1)
    scores[:, 1:] = torch.linspace(1.0, 0.0, n_items)  # item 1 best ... item n worst
    targets = torch.tensor(ranks)  # item r has rank r
    return scores, targets


def test_hand_computed_values():
    scores, targets = scores_with_ranks([1, 3, 7, 25])
    m = full_rank_metrics(scores, targets)
    assert m["hit@5"] == pytest.approx(2 / 4)
    assert m["hit@10"] == pytest.approx(3 / 4)
    assert m["hit@20"] == pytest.approx(3 / 4)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(8)) / 4)


def test_padding_column_is_never_ranked():
    scores, targets = scores_with_ranks([1, 2])
    scores[:, 0] = 1e9
    assert target_ranks(scores, targets).tolist() == [1, 2]


def test_ties_count_against_the_model():
    n_items = 50
    scores = torch.zeros(3, n_items + 1)
    targets = torch.tensor([1, 17, 50])
    assert target_ranks(scores, targets).tolist() == [n_items] * 3
    m = full_rank_metrics(scores, targets)
    assert all(v == 0.0 for v in m.values())


def test_partial_tie_is_pessimistic():
    scores = torch.tensor([[0.0, 1.0, 2.0, 2.0, 0.5]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [3]


def test_nan_scores_raise():
    scores, targets = scores_with_ranks([1, 2])
    scores[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        full_rank_metrics(scores, targets)


@pytest.mark.parametrize("bad", [torch.tensor([0, 1]), torch.tensor([1, 41])])
def test_targets_out_of_range_raise(bad):
    scores, _ = scores_with_ranks([1, 2])
    with pytest.raises(ValueError, match="1..40"):
        full_rank_metrics(scores, bad)


def official_code_metrics(ranks: list[int], k: int) -> dict[str, float]:
    """The authors' evaluation (docs/method.md §4.3): only the top 20 are inspected and a sample ranked
    in (k, 20] appends nothing to the mrr@k / ndcg@k lists, while misses beyond 20 append 0."""
    mrr, ndcg = [], []
    for r in ranks:
        if r <= k:
            mrr.append(1 / r)
            ndcg.append(1 / math.log2(r + 1))
        elif r > 20:
            mrr.append(0.0)
            ndcg.append(0.0)
    return {f"mrr@{k}": sum(mrr) / len(mrr), f"ndcg@{k}": sum(ndcg) / len(ndcg)}


def test_official_truncation_bug_inflates_and_we_do_not_copy_it():
    ranks = [1, 8, 12, 30]
    official = official_code_metrics(ranks, 5)
    ours = full_rank_metrics(*scores_with_ranks(ranks))
    assert official["mrr@5"] == pytest.approx(1 / 2)  # denominator 2: ranks 8 and 12 dropped
    assert ours["mrr@5"] == pytest.approx(1 / 4)
    assert ours["ndcg@5"] < official["ndcg@5"]
    # At k = 20 nothing is dropped and both agree.
    assert ours["mrr@20"] == pytest.approx(sum(1 / r for r in ranks if r <= 20) / 4)


def test_accumulator_counts_every_sample_once():
    acc = RankAccumulator()
    for ranks in ([1, 3], [7], [25, 2]):
        acc.add(*scores_with_ranks(ranks))
    assert acc.ranks.tolist() == [1, 3, 7, 25, 2]
    assert acc.compute() == pytest.approx(metrics_from_ranks(torch.tensor([1, 3, 7, 25, 2])))


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_metric_bounds_and_monotonicity(ranks):
    m = full_rank_metrics(*scores_with_ranks(ranks))
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["hit@5"] <= m["hit@10"] <= m["hit@20"]
    for k in (5, 10, 20):
        assert m[f"mrr@{k}"] <= m[f"ndcg@{k}"] + 1e-12 <= m[f"hit@{k}"] + 2e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_chunked_rank_counting_equals_one_pass_with_ties_and_padding(monkeypatch, dtype):
    import llm4sbr.training.metrics as metrics

    torch.manual_seed(0)
    scores = torch.randint(-3, 4, (7, 30)).to(dtype)  # many ties
    scores[:, 0] = float("inf")  # the padding column never counts, whatever it holds
    targets = torch.randint(1, 30, (7,))
    items = scores[:, 1:].float()
    expected = (items >= items.gather(1, (targets - 1)[:, None])).sum(1)
    for chunk in (1, 2, 5, 7 * 4, 7 * 29, 1 << 24):
        monkeypatch.setattr(metrics, "RANK_CHUNK_ELEMENTS", chunk)
        assert torch.equal(metrics.target_ranks(scores, targets), expected), chunk
    scores[3, 17] = float("nan")
    monkeypatch.setattr(metrics, "RANK_CHUNK_ELEMENTS", 7 * 4)
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(scores, targets)
