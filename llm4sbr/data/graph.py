"""SR-GNN session graphs built with batched tensor ops (paper-spec 3.1).

For each session b (the first ``item_seq_len[b]`` clicks of ``item_seq[b]``):

* ``nodes[b]``: the sorted unique items of the session, right-padded with 0 to N, the largest
  unique count in the batch;
* ``alias[b, i]``: the node index of click i (0 at padded positions);
* edge u -> v for each pair of consecutive clicks (a repeated pair counts once; self-loops are
  kept); ``A_in[b, v, u] = 1 / indeg(v)`` and ``A_out[b, u, v] = 1 / outdeg(u)`` for every edge
  u -> v, 0 elsewhere, so a node without incoming (outgoing) edges has a zero row in A_in (A_out).

Positions at or after ``item_seq_len[b]`` are padding whatever they hold, so padding never
changes a session's graph. :func:`build_session_graph` runs on CPU or CUDA without a Python loop
over sessions; the numba twin for data-loader workers is
``llm4sbr.data.graph_numba.build_session_graph_numba`` (same definition, numpy arrays).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SessionGraph(NamedTuple):
    """nodes [B, N] long, alias [B, L] long, A_in [B, N, N] and A_out [B, N, N] floating."""

    nodes: torch.Tensor
    alias: torch.Tensor
    A_in: torch.Tensor
    A_out: torch.Tensor


def build_session_graph(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, dtype: torch.dtype = torch.float32
) -> SessionGraph:
    """Build the session graphs of a right-padded batch.

    item_seq [B, L] integer item ids (1..n_items, 0 = padding); item_seq_len [B] valid lengths.
    Returns :class:`SessionGraph` on ``item_seq.device``, adjacency in ``dtype``. N is at least 1
    (a batch of empty sessions gets one all-zero node column). The only host sync is reading N
    (one ``.max()``), which the output shapes need.
    """
    if item_seq.dim() != 2:
        raise ValueError(f"item_seq must be [B, L], got shape {tuple(item_seq.shape)}")
    if item_seq_len.shape != item_seq.shape[:1]:
        raise ValueError(
            f"item_seq_len must be [B] = [{item_seq.shape[0]}], got shape {tuple(item_seq_len.shape)}"
        )
    batch, length = item_seq.shape
    device = item_seq.device
    positions = torch.arange(length, device=device)
    valid = positions.unsqueeze(0) < item_seq_len.to(device).unsqueeze(1)
    seq = torch.where(valid, item_seq.long(), 0)

    # Padding (0) sorts first; a run of equal items starts where the sorted value changes.
    sorted_items, order = seq.sort(dim=1, stable=True)
    starts_run = (sorted_items != 0) & ((sorted_items != sorted_items.roll(1, dims=1)) | (positions == 0))
    rank = starts_run.cumsum(dim=1) - 1
    n_nodes = max(int(starts_run.sum(dim=1).max()) if batch else 0, 1)

    # Scatter each run's first item to its node slot; non-run positions go to a spare column.
    nodes = torch.zeros(batch, length + 1, dtype=torch.long, device=device)
    nodes.scatter_(1, torch.where(starts_run, rank, length), sorted_items)
    nodes = nodes[:, :n_nodes].contiguous()

    # ``order`` is a permutation per row, so scattering the ranks back inverts the sort; padding
    # (rank -1) gets node 0.
    alias = torch.zeros(batch, length, dtype=torch.long, device=device)
    alias.scatter_(1, order, rank.clamp(min=0))

    # Edges as keys u * N + v; sorting them per row puts repeats of a pair next to each other.
    slots = n_nodes * n_nodes
    edge_valid = valid[:, 1:]
    edge_key = torch.where(edge_valid, alias[:, :-1] * n_nodes + alias[:, 1:], slots)
    edge_key, _ = edge_key.sort(dim=1)
    new_edge = (edge_key < slots) & ((edge_key != edge_key.roll(1, dims=1)) | (positions[:-1] == 0))
    source = torch.div(edge_key, n_nodes, rounding_mode="floor")
    target = torch.where(new_edge, edge_key - source * n_nodes, n_nodes)
    source = torch.where(new_edge, source, n_nodes)
    edge_weight = new_edge.to(dtype)
    out_degree = torch.zeros(batch, n_nodes + 1, dtype=dtype, device=device)
    out_degree.scatter_add_(1, source, edge_weight)
    in_degree = torch.zeros(batch, n_nodes + 1, dtype=dtype, device=device)
    in_degree.scatter_add_(1, target, edge_weight)

    row_base = torch.arange(batch, device=device).unsqueeze(1) * slots
    unused = batch * slots
    out_slot = torch.where(new_edge, row_base + source * n_nodes + target, unused)
    in_slot = torch.where(new_edge, row_base + target * n_nodes + source, unused)
    A_out = torch.zeros(batch * slots + 1, dtype=dtype, device=device)
    A_out.scatter_(0, out_slot.reshape(-1), out_degree.gather(1, source).reciprocal().reshape(-1))
    A_in = torch.zeros(batch * slots + 1, dtype=dtype, device=device)
    A_in.scatter_(0, in_slot.reshape(-1), in_degree.gather(1, target).reciprocal().reshape(-1))
    shape = (batch, n_nodes, n_nodes)
    return SessionGraph(nodes, alias, A_in[:-1].view(shape), A_out[:-1].view(shape))
