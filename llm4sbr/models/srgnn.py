"""SRGNN: the behaviour-only baseline (SR-GNN, hybrid readout)."""

from __future__ import annotations

import torch
from torch import nn

from llm4sbr.models.base import SessionModel
from llm4sbr.models.encoder import SessionGraphEncoder
from llm4sbr.models.layers import reset_uniform


class SRGNN(SessionModel):
    """``session = W [global; local] + b`` scored against the tied item embeddings with softmax CE."""

    def __init__(self, n_items: int, dim: int = 100, steps: int = 1, readout: str = "none") -> None:
        super().__init__()
        self.encoder = SessionGraphEncoder(n_items, dim, steps, readout)
        self.linear_transform = nn.Linear(2 * dim, dim)
        reset_uniform(self.linear_transform, dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Session representation [B, d] of a batch with ``item_seq`` [B, L] and ``item_seq_len`` [B]."""
        local, global_ = self.encode(batch)
        return self.linear_transform(torch.cat([global_, local], dim=-1))
