"""SessionGraphEncoder: SR-GNN's session-graph backbone, returning the (local, global) views."""

from __future__ import annotations

import torch
from torch import nn

from llm4sbr.data.graph import SessionGraph, build_session_graph
from llm4sbr.modules import AttentionReadout, GNNCell, reset_uniform


class SessionGraphEncoder(nn.Module):
    """Item embedding -> ``steps`` gated-GNN steps -> (local = last click, global = attention pool).

    Items are 1..n_items, 0 is padding. The session graph is built inside ``forward`` with
    batched tensor ops on the input's device unless a prebuilt ``graph`` (e.g. from data-loader
    workers) is passed.
    """

    def __init__(self, n_items: int, dim: int = 100, steps: int = 1, readout: str = "none") -> None:
        super().__init__()
        if n_items < 1 or dim < 1 or steps < 1:
            raise ValueError(f"n_items, dim and steps must be >= 1, got {n_items}, {dim}, {steps}")
        self.n_items = n_items
        self.dim = dim
        self.steps = steps
        self.embedding = nn.Embedding(n_items + 1, dim)
        self.gnn = GNNCell(dim)
        self.readout = AttentionReadout(dim, normalize=readout)
        reset_uniform(self.embedding, dim)

    def forward(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, graph: SessionGraph | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_seq [B, L] (right-padded with 0); item_seq_len [B] >= 1 -> (local [B, d], global [B, d])."""
        if graph is None:
            graph = build_session_graph(item_seq, item_seq_len, dtype=self.embedding.weight.dtype)
        h = self.embedding(graph.nodes)
        A_in = graph.A_in.to(h.dtype)
        A_out = graph.A_out.to(h.dtype)
        for _ in range(self.steps):
            h = self.gnn(h, A_in, A_out)
        seq_hidden = h.gather(1, graph.alias[..., None].expand(-1, -1, h.shape[-1]))
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        mask = positions[None, :] < item_seq_len[:, None]
        local = seq_hidden[torch.arange(item_seq.shape[0], device=item_seq.device), item_seq_len - 1]
        return local, self.readout(seq_hidden, mask, local)

    def item_scores(self, session: torch.Tensor) -> torch.Tensor:
        """Logits against the tied item embeddings. session [B, d] -> [B, n_items] (item i at column i-1)."""
        return session @ self.embedding.weight[1:].T
