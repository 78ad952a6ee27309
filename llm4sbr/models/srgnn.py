"""SRGNN: the behaviour-only baseline (SR-GNN, hybrid readout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm4sbr.models.encoder import SessionGraphEncoder
from llm4sbr.models.scoring import full_sort_scores, graph_from_batch, pick_scores, upcast
from llm4sbr.modules import reset_uniform


class SRGNN(nn.Module):
    """``session = W [global; local] + b`` scored against the tied item embeddings with softmax CE."""

    def __init__(self, n_items: int, dim: int = 100, steps: int = 1, readout: str = "none") -> None:
        super().__init__()
        self.encoder = SessionGraphEncoder(n_items, dim, steps, readout)
        self.linear_transform = nn.Linear(2 * dim, dim)
        reset_uniform(self.linear_transform, dim)

    @property
    def n_items(self) -> int:
        return self.encoder.n_items

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Session representation [B, d] of a batch with ``item_seq`` [B, L] and ``item_seq_len`` [B]."""
        local, global_ = self.encoder(batch["item_seq"], batch["item_seq_len"], graph_from_batch(batch))
        return self.linear_transform(torch.cat([global_, local], dim=-1))

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.encoder.item_scores(self.forward(batch))
        return F.cross_entropy(upcast(logits), batch["target"] - 1)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Score of ``batch["item_id"]`` [B] for each session -> [B]."""
        return pick_scores(self.forward(batch), self.encoder, batch["item_id"])

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores over every item -> [B, n_items + 1], column 0 (padding) = -inf."""
        return full_sort_scores(self.encoder.item_scores(self.forward(batch)))
