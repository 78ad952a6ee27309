"""Thin ``nn.Module``s that own the kernels' parameters (SR-GNN names) and call the functional API."""

from __future__ import annotations

import math

import torch
from torch import nn

from llm4sbr.kernels import attn_pool, gnn_step


def outside_autocast(device: torch.device):
    """Kernels run in the dtype of their inputs: under autocast the surrounding linear layers
    may run in bf16, while the fused ops get their fp32 inputs unchanged."""
    return torch.autocast(device.type, enabled=False)


def reset_uniform(module: nn.Module, dim: int) -> None:
    """SR-GNN's init: every parameter ~ U(-1/sqrt(d), 1/sqrt(d))."""
    bound = 1.0 / math.sqrt(dim)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class GNNCell(nn.Module):
    """One gated-GNN step (docs/method.md §3.1) with SR-GNN's parameter names, registered in SR-GNN's
    order (so optimizer states saved by SR-GNN map to the same tensors)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))
        self.b_iah = nn.Parameter(torch.empty(dim))
        self.b_oah = nn.Parameter(torch.empty(dim))
        self.linear_edge_in = nn.Linear(dim, dim, bias=True)
        self.linear_edge_out = nn.Linear(dim, dim, bias=True)
        reset_uniform(self, dim)

    def forward(self, h: torch.Tensor, A_in: torch.Tensor, A_out: torch.Tensor) -> torch.Tensor:
        """h [B, N, d]; A_in, A_out [B, N, N] -> [B, N, d]."""
        with outside_autocast(h.device):
            return gnn_step(
                h,
                A_in,
                A_out,
                self.linear_edge_in.weight,
                self.linear_edge_in.bias,
                self.linear_edge_out.weight,
                self.linear_edge_out.bias,
                self.b_iah,
                self.b_oah,
                self.w_ih,
                self.b_ih,
                self.w_hh,
                self.b_hh,
            )


class AttentionReadout(nn.Module):
    """SR-GNN's global readout ``sum_j alpha_j h_j`` with ``e_j = w3^T sigmoid(W1 h_last + W2 h_j)``."""

    def __init__(self, dim: int, normalize: str = "none") -> None:
        super().__init__()
        self.normalize = normalize
        self.linear_one = nn.Linear(dim, dim, bias=True)
        self.linear_two = nn.Linear(dim, dim, bias=True)
        self.linear_three = nn.Linear(dim, 1, bias=False)
        reset_uniform(self, dim)

    def forward(self, seq_hidden: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """seq_hidden [B, L, d]; mask [B, L] bool; last [B, d] -> [B, d]."""
        q_last = self.linear_one(last)
        with outside_autocast(seq_hidden.device):
            return attn_pool(
                seq_hidden,
                mask,
                q_last.to(seq_hidden.dtype),
                self.linear_two.weight,
                self.linear_two.bias,
                self.linear_three.weight[0],
                normalize=self.normalize,
            )
