"""SessionGraphEncoder: SR-GNN's session-graph backbone, returning the (local, global) views.

Two paths compute the same function:

* padded (the kernels' path): the batch as [B, N, d] node states with dense [B, N, N] adjacency,
  through :func:`~llm4sbr.kernels.gnn_step` and :func:`~llm4sbr.kernels.attn_pool` (Triton on
  CUDA, their references elsewhere);
* packed (the default where Triton cannot run, i.e. on CPU, unless ``use_backend("torch")`` asks
  for the references themselves): only the T distinct (session, item) nodes of the batch, no
  padding rows and no N x N products. With M_in = W_ein^T W_ih,in^T and M_out = W_eout^T
  W_ih,out^T ([d, 3d]), gnn_step's input gates are (A is linear, so the edge linears fold into
  the GRU input weights):

      gi = A_in (h M_in + b_ein W_ih,in^T) + A_out (h M_out + b_eout W_ih,out^T)
           + b_iah W_ih,in^T + b_oah W_ih,out^T + b_ih,          gh = h W_hh^T + b_hh

  so one GEMM h @ [M_in | M_out | W_hh^T] (9d^2 multiply-adds per row instead of 11d^2) gives
  every per-node product, and one sparse product with a step matrix built from the graphs sums
  the neighbours' rows into gi and picks each node's own row for gh. In the first step h is the
  item embedding, so the GEMM runs once per distinct item of the batch instead of once per node
  (on MovieLens-100k about 960 items for 3,900 nodes in a batch of 100 sessions). The readout
  runs on nodes too: the score of a click depends only on its node, so node v enters the pooled
  sum ``clicks[v]`` times. Both paths agree to float64 rounding (tests/test_bench.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from llm4sbr.data.graph import (
    PackedSessionGraph,
    SessionGraph,
    build_packed_session_graph,
    build_session_graph,
)
from llm4sbr.kernels import current_backend
from llm4sbr.kernels._launch import triton_can_run
from llm4sbr.modules import AttentionReadout, GNNCell, reset_uniform


class SessionGraphEncoder(nn.Module):
    """Item embedding -> ``steps`` gated-GNN steps -> (local = last click, global = attention pool).

    Items are 1..n_items, 0 is padding. The session graph is built inside ``forward`` with
    batched tensor ops on the input's device unless a prebuilt ``graph`` (e.g. from data-loader
    workers) is passed. ``packed``: True or False forces the packed or padded path (see the module
    docstring); None (default) takes the packed path when no prebuilt graph is given, the kernel
    backend is "auto" and Triton cannot run on the input's device.
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
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, graph: SessionGraph | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_seq [B, L] (right-padded with 0); item_seq_len [B] >= 1 -> (local [B, d], global [B, d])."""
        if graph is None and self.uses_packed_path(item_seq.device):
            packed = build_packed_session_graph(item_seq, item_seq_len, dtype=self.embedding.weight.dtype)
            return self._forward_packed(packed)
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

    def _forward_packed(self, graph: PackedSessionGraph) -> tuple[torch.Tensor, torch.Tensor]:
        items, item_of_node = torch.unique(graph.nodes, return_inverse=True)
        rows = self.embedding(items)  # the first step's GEMM input: one row per distinct item
        h = rows[item_of_node]
        row_of_node = item_of_node
        for _ in range(self.steps):
            step_matrix = _step_matrix(graph, row_of_node, rows.shape[0], h.dtype)
            h = _gnn_step_packed(rows, h, step_matrix, self.gnn)
            rows, row_of_node = h, torch.arange(h.shape[0], device=h.device)
        local = h[graph.last]
        return local, _attn_pool_packed(h, graph, local, self.readout)

    def item_scores(self, session: torch.Tensor) -> torch.Tensor:
        """Logits against the tied item embeddings. session [B, d] -> [B, n_items] (item i at column i-1)."""
        return session @ self.embedding.weight[1:].T


def _step_matrix(
    graph: PackedSessionGraph, row_of_node: torch.Tensor, n_rows: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse CSR step matrix S [2T, 3R] and its transpose, over the products
    P = (rows @ [M_in | M_out | W_hh^T]).view(3R, 3d) of R GEMM rows, node v's being row
    ``row_of_node[v]`` (P[3r] = in, P[3r+1] = out, P[3r+2] = hh product of row r). Row 2v of S sums
    A_in[v, u] P[3 row(u)] + A_out[v, w] P[3 row(w) + 1] (gi without its constant), row 2v+1 picks
    P[3 row(v) + 2] (gh), so ``(S @ P).view(T, 6d) = [gi - constant, gh]``."""
    n_nodes = graph.nodes.shape[0]
    device = graph.nodes.device
    nodes = torch.arange(n_nodes, device=device)
    rows = torch.cat([2 * graph.dst, 2 * graph.src, 2 * nodes + 1])
    cols = torch.cat([3 * row_of_node[graph.src], 3 * row_of_node[graph.dst] + 1, 3 * row_of_node + 2])
    ones = torch.ones(n_nodes, dtype=dtype, device=device)
    values = torch.cat([graph.in_weight.to(dtype), graph.out_weight.to(dtype), ones])
    shape = (2 * n_nodes, 3 * n_rows)
    return _csr(rows, cols, values, shape), _csr(cols, rows, values, shape[::-1])


def _csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Sparse CSR matrix of ``shape`` from (row, column, value) triplets with distinct positions."""
    order = torch.argsort(rows * shape[1] + cols)
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=shape[0]), dim=0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
        )
        return torch.sparse_csr_tensor(crow, cols[order], values[order], shape, check_invariants=False)


class _SparseProduct(torch.autograd.Function):
    """``matrix @ x`` for a constant sparse matrix given with its transpose, so the backward is one
    sparse product (torch's own backward of a CSR product re-sorts the matrix on every call)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.transposed = transposed
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.transposed @ grad


def _gnn_step_packed(
    rows: torch.Tensor, h: torch.Tensor, step_matrix: tuple[torch.Tensor, torch.Tensor], cell: GNNCell
) -> torch.Tensor:
    """:func:`~llm4sbr.kernels.gnn_step_ref` on packed nodes with the folded weights (see the module
    docstring). rows [R, d] the GEMM rows; h [T, d] node states; step_matrix: S [2T, 3R] and its
    transpose from :func:`_step_matrix` -> h' [T, d]."""
    d = h.shape[1]
    w_ih_in, w_ih_out = cell.w_ih[:, :d], cell.w_ih[:, d:]
    # gi's constant: the r and z parts ride on the hh products (picked with weight 1, added to
    # gi's in the gates), the n part is added to i_n.
    constant = cell.b_iah @ w_ih_in.T + cell.b_oah @ w_ih_out.T + cell.b_ih
    weight = torch.cat(
        [cell.linear_edge_in.weight.T @ w_ih_in.T, cell.linear_edge_out.weight.T @ w_ih_out.T, cell.w_hh.T],
        dim=1,
    )
    bias = torch.cat(
        [
            cell.linear_edge_in.bias @ w_ih_in.T,
            cell.linear_edge_out.bias @ w_ih_out.T,
            cell.b_hh + torch.cat([constant[: 2 * d], constant.new_zeros(d)]),
        ]
    )
    products = torch.addmm(bias, rows, weight).view(3 * rows.shape[0], 3 * d)
    gates = _SparseProduct.apply(*step_matrix, products).view(h.shape[0], 6 * d)  # [gi - c, gh + c_rz]
    # One split (its backward is one concatenation), not four slices (a zero-filled [T, 6d]
    # gradient each).
    i_rz, i_n, h_rz, h_n = gates.split([2 * d, d, 2 * d, d], dim=1)
    r, z = torch.sigmoid(i_rz + h_rz).chunk(2, dim=1)
    n = torch.tanh(i_n + torch.addcmul(constant[2 * d :], r, h_n))
    return torch.lerp(n, h, z)  # n + z (h - n)


def _attn_pool_packed(
    h: torch.Tensor, graph: PackedSessionGraph, local: torch.Tensor, readout: AttentionReadout
) -> torch.Tensor:
    """:func:`~llm4sbr.kernels.attn_pool_ref` on packed nodes. h [T, d]; local [B, d] -> [B, d]."""
    batch = local.shape[0]
    q_last = readout.linear_one(local)
    projected = torch.addmm(readout.linear_two.bias, h, readout.linear_two.weight.T)
    e = torch.sigmoid(projected + q_last[graph.session]) @ readout.linear_three.weight[0]  # [T]
    clicks = graph.clicks.to(h.dtype)
    if readout.normalize == "softmax":
        # Softmax over a session's clicks: node v holds clicks[v] of them, all with score e[v].
        scores = e.detach()
        peak = scores.new_full((batch,), float("-inf")).scatter_reduce(0, graph.session, scores, "amax")
        weight = clicks * torch.exp(e - peak[graph.session])
        alpha = weight / weight.new_zeros(batch).index_add(0, graph.session, weight)[graph.session]
    else:
        alpha = e * clicks
    return h.new_zeros(batch, h.shape[1]).index_add(0, graph.session, alpha.unsqueeze(1) * h)
