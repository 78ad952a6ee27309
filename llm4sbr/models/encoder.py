"""SessionGraphEncoder: SR-GNN's session-graph backbone (docs/method.md §3.1), returning the
(local, global) views.

Two paths compute the same function; the op math lives in ``llm4sbr.kernels``:

* padded: the batch as [B, N, d] node states with dense [B, N, N] adjacency, through
  :func:`~llm4sbr.kernels.gnn_step` and :func:`~llm4sbr.kernels.attn_pool` (via GNNCell and
  AttentionReadout), which run their Triton kernels on CUDA (and on CPU under
  ``TRITON_INTERPRET=1``) and their ``_ref`` references elsewhere or under
  ``use_backend("torch")``;
* packed (the default where Triton cannot run, i.e. on CPU, when no prebuilt graph is passed,
  unless ``use_backend("torch")`` or ``"triton"`` is set or ``packed`` forces a path; see
  :meth:`SessionGraphEncoder.uses_packed_path`): only the T distinct (session, item) nodes
  of the batch, through :func:`~llm4sbr.kernels.gnn_step_packed` and
  :func:`~llm4sbr.kernels.attn_pool_packed` with this module's parameters (kernels/packed.py
  explains the folded GEMM and the step matrix). The first step's GEMM runs once per distinct
  item of the batch.

Both paths agree to float64 rounding, outputs and gradients (tests/models/test_models.py; the
packed ops against the dense references in tests/kernels/test_packed.py).
"""

from __future__ import annotations

import torch
from torch import nn

from llm4sbr.data.graph import (
    PackedBatchGraph,
    SessionGraph,
    build_packed_batch_graph,
    build_session_graph,
    packed_step_matrices,
)
from llm4sbr.kernels import attn_pool_packed, current_backend, gnn_step_packed
from llm4sbr.kernels._launch import triton_can_run
from llm4sbr.models.layers import AttentionReadout, GNNCell, outside_autocast, reset_uniform


class SessionGraphEncoder(nn.Module):
    """Item embedding -> ``steps`` gated-GNN steps -> (local = last click, global = attention pool).

    Items are 1..n_items, 0 is padding. The session graph is built inside ``forward`` with
    batched tensor ops on the input's device unless a prebuilt ``graph`` (e.g. from data-loader
    workers) is passed: a :class:`SessionGraph` takes the padded path, a
    :class:`PackedBatchGraph` the packed one. ``packed``: True or False forces the packed or
    padded path (see the module docstring); None (default) takes the packed path when no prebuilt
    graph is given, the kernel backend is "auto" and Triton cannot run on the input's device.
    """

    def __init__(
        self, n_items: int, dim: int = 100, steps: int = 1, readout: str = "none", packed: bool | None = None
    ) -> None:
        super().__init__()
        if n_items < 1 or dim < 1 or steps < 1:
            raise ValueError(f"n_items, dim and steps must be >= 1, got {n_items}, {dim}, {steps}")
        self.n_items = n_items
        self.dim = dim
        self.steps = steps
        self.packed = packed
        self.embedding = nn.Embedding(n_items + 1, dim)
        self.gnn = GNNCell(dim)
        self.readout = AttentionReadout(dim, normalize=readout)
        reset_uniform(self.embedding, dim)

    def forward(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        graph: SessionGraph | PackedBatchGraph | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_seq [B, L] (right-padded with 0); item_seq_len [B] >= 1 -> (local [B, d], global [B, d])."""
        if isinstance(graph, PackedBatchGraph):
            return self._forward_packed(graph)
        if graph is None and self.uses_packed_path(item_seq.device):
            dtype = self.embedding.weight.dtype
            return self._forward_packed(build_packed_batch_graph(item_seq, item_seq_len, dtype))
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

    def uses_packed_path(self, device: torch.device) -> bool:
        """Whether ``forward`` (without a prebuilt graph) takes the packed path on ``device``."""
        if self.packed is not None:
            return self.packed
        return current_backend() == "auto" and not triton_can_run(device)

    def _forward_packed(self, packed: PackedBatchGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed path on a prebuilt packed graph -> (local [B, d], global [B, d])."""
        cell, readout, graph = self.gnn, self.readout, packed.graph
        rows = self.embedding(packed.items)  # the first step's GEMM input: one row per distinct item
        h = rows.index_select(0, packed.item_of_node)  # backward: index_add (see attn_pool_packed)
        dtype = h.dtype
        step_matrix = tuple(m if m.dtype == dtype else m.to(dtype) for m in packed.step)
        for step in range(self.steps):
            if step == 1:  # later steps: one GEMM row per node, the same matrix each step
                nodes = torch.arange(h.shape[0], device=h.device)
                step_matrix = packed_step_matrices(graph, nodes, h.shape[0], dtype)
            # As on the padded path, the fused ops run in their inputs' dtype under autocast.
            with outside_autocast(h.device):
                h = gnn_step_packed(
                    rows,
                    h,
                    step_matrix,
                    cell.linear_edge_in.weight,
                    cell.linear_edge_in.bias,
                    cell.linear_edge_out.weight,
                    cell.linear_edge_out.bias,
                    cell.b_iah,
                    cell.b_oah,
                    cell.w_ih,
                    cell.b_ih,
                    cell.w_hh,
                    cell.b_hh,
                )
            rows = h
        local = h.index_select(0, graph.last)
        q_last = readout.linear_one(local)
        with outside_autocast(h.device):
            global_ = attn_pool_packed(
                h,
                graph.session,
                graph.clicks,
                q_last.to(dtype),
                readout.linear_two.weight,
                readout.linear_two.bias,
                readout.linear_three.weight[0],
                readout.normalize,
            )
        return local, global_

    def item_scores(self, session: torch.Tensor) -> torch.Tensor:
        """Logits against the tied item embeddings. session [B, d] -> [B, n_items] (item i at column i-1)."""
        return session @ self.embedding.weight[1:].T
