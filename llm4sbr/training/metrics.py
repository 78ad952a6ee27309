"""Full-ranking metrics for next-item prediction.

Every item except padding (column 0) is ranked; nothing is sampled and seen items are not
filtered. ``rank = 1 + #(other items whose score >= the target's)``: ties count against the
model, so a collapsed model that scores everything equal ranks every target last. A target
ranked below k scores 0 at k and still counts in the denominator (the authors' code drops
such samples from MRR/NDCG@5/10, docs/method.md §4.3).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

DEFAULT_KS = (5, 10, 20)
# Elements of one comparison chunk in target_ranks (about 16 MB of temporaries).
RANK_CHUNK_ELEMENTS = 1 << 24


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pessimistic 1-based rank of each target. scores [B, n_items + 1]; targets [B] in 1..n_items -> [B]."""
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape [B, n_items + 1], got {list(scores.shape)}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must have shape [{scores.shape[0]}], got {list(targets.shape)}")
    n_items = scores.shape[1] - 1
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > n_items):
        raise ValueError(f"targets must lie in 1..{n_items} (0 is padding)")
    target_scores = scores.gather(1, targets.long()[:, None])
    if torch.isnan(target_scores).any():
        raise ValueError("scores contain NaN: the model diverged or its input is corrupt")
    # Counting the target itself makes this 1 + #others with a score >= the target's. Items go
    # in column chunks so the comparison temporaries stay small whatever the catalog size.
    ranks = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    width = max(1, RANK_CHUNK_ELEMENTS // max(scores.shape[0], 1))
    for start in range(1, n_items + 1, width):
        chunk = scores[:, start : start + width]
        if torch.isnan(chunk).any():
            raise ValueError("scores contain NaN: the model diverged or its input is corrupt")
        # int32 sums in place; count_nonzero and an int64 sum copy the chunk to int64 first.
        ranks += (chunk >= target_scores).sum(dim=1, dtype=torch.int32)
    return ranks


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """hit@k (= recall@k), mrr@k and ndcg@k averaged over every sample. ranks [N] (1-based)."""
    ranks = ranks.double()
    n = max(ranks.numel(), 1)
    out: dict[str, float] = {}
    for k in ks:
        within = ranks <= k
        out[f"hit@{k}"] = float(within.sum()) / n
        out[f"mrr@{k}"] = float(torch.where(within, 1.0 / ranks, 0.0).sum()) / n
        out[f"ndcg@{k}"] = float(torch.where(within, 1.0 / torch.log2(ranks + 1.0), 0.0).sum()) / n
    return out


def full_rank_metrics(
    scores: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics of one batch. scores [B, n_items + 1] (column 0 = padding, never ranked);
    targets [B] in 1..n_items. Returns floats in [0, 1] keyed ``hit@k``, ``mrr@k``, ``ndcg@k``."""
    return metrics_from_ranks(target_ranks(scores, targets), ks)


class RankAccumulator:
    """Collects target ranks over batches so that metrics count every sample exactly once."""

    def __init__(self) -> None:
        self._ranks: list[torch.Tensor] = []

    def add(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        self._ranks.append(target_ranks(scores, targets).cpu())

    @property
    def ranks(self) -> torch.Tensor:
        return torch.cat(self._ranks) if self._ranks else torch.zeros(0, dtype=torch.long)

    def compute(self, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
        return metrics_from_ranks(self.ranks, ks)
