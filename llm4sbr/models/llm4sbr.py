"""LLM4SBR (docs/method.md §3): SR-GNN views gated by projected LLM intents, aligned with DirectAU.

z_lt = T e_lt + b_T ,  z_st = T e_st + b_T          (one T shared by both views, §3.2)
alpha_lt = Q1^T sigmoid(global + z_lt)               (unbounded scalar gates, §3.4)
alpha_st = Q2^T sigmoid(local + z_st)
session  = W [local * alpha_st ; global * alpha_lt] + b    ("paper" order; "code" puts global first)
loss     = CE + tau * AU([global, local], [z_lt, z_st])    (views averaged: paper; "sum": code)
"""

from __future__ import annotations

import torch
from torch import nn

from llm4sbr.config import CONCAT_ORDERS, TrainConfig
from llm4sbr.kernels import align_uniform_loss
from llm4sbr.models.base import SessionModel, upcast
from llm4sbr.models.encoder import SessionGraphEncoder
from llm4sbr.models.layers import outside_autocast, reset_uniform


class LLM4SBR(SessionModel):
    """The full model. Batches carry ``intent`` [B, 2, d_text]: (long-term, short-term) text vectors.
    Defaults are :class:`~llm4sbr.config.TrainConfig`'s."""

    uses_intents = True

    def __init__(
        self,
        n_items: int,
        d_text: int,
        dim: int = TrainConfig.dim,
        steps: int = TrainConfig.steps,
        readout: str = TrainConfig.readout,
        tau: float = TrainConfig.tau,
        reduce_views: str = TrainConfig.reduce_views,
        uniformity_t: float = TrainConfig.uniformity_t,
        concat_order: str = TrainConfig.concat_order,
    ) -> None:
        super().__init__()
        if concat_order not in CONCAT_ORDERS:
            raise ValueError(f"concat_order must be one of {CONCAT_ORDERS}, got {concat_order!r}")
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.d_text = d_text
        self.tau = tau
        self.reduce_views = reduce_views
        self.uniformity_t = uniformity_t
        self.concat_order = concat_order
        self.encoder = SessionGraphEncoder(n_items, dim, steps, readout)
        self.text_proj = nn.Linear(d_text, dim)
        self.gate_long = nn.Linear(dim, 1, bias=False)
        self.gate_short = nn.Linear(dim, 1, bias=False)
        self.linear_transform = nn.Linear(2 * dim, dim)
        for m in (self.text_proj, self.gate_long, self.gate_short, self.linear_transform):
            reset_uniform(m, dim)

    def views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(local, global, z_short, z_long), each [B, d]."""
        intent = batch.get("intent")
        if intent is None:
            raise ValueError("LLM4SBR needs batch['intent'] [B, 2, d_text]; pass --intents to training")
        if intent.dim() != 3 or intent.shape[1:] != (2, self.d_text):
            raise ValueError(f"intent must have shape [B, 2, {self.d_text}], got {list(intent.shape)}")
        local, global_ = self.encode(batch)
        z = self.text_proj(intent.to(local.dtype))
        return local, global_, z[:, 1], z[:, 0]

    def fuse(self, local: torch.Tensor, global_: torch.Tensor, z_short: torch.Tensor, z_long: torch.Tensor):
        alpha_long = self.gate_long(torch.sigmoid(global_ + z_long))
        alpha_short = self.gate_short(torch.sigmoid(local + z_short))
        parts = [local * alpha_short, global_ * alpha_long]
        if self.concat_order == "code":
            parts.reverse()
        return self.linear_transform(torch.cat(parts, dim=-1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Session representation [B, d]."""
        return self.fuse(*self.views(batch))

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        local, global_, z_short, z_long = self.views(batch)
        loss = self.recommendation_loss(self.fuse(local, global_, z_short, z_long), batch)
        if self.tau > 0:
            behaviour = upcast(torch.stack([global_, local]))
            text = upcast(torch.stack([z_long, z_short]))
            with outside_autocast(behaviour.device):
                au = align_uniform_loss(
                    behaviour, text.to(behaviour.dtype), t=self.uniformity_t, reduce_views=self.reduce_views
                )
            loss = loss + self.tau * au
        return loss
