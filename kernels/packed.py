"""Packed ops: :func:`gnn_step` and :func:`attn_pool` on a batch's distinct nodes (docs/method.md §3.1).

The dense ops take the batch as [B, N, d] node states with [B, N, N] adjacency, padding
included. The packed ops take only the T distinct (session, item) nodes of the batch, session
after session (the layout of ``llm4sbr.data.graph.PackedSessionGraph``), with the graph as edge
lists: no padding rows and no N x N products. They are pure PyTorch (no Triton kernel, no
backend dispatch) and compute the dense references' functions up to rounding; the encoder uses
them where Triton cannot run (see ``llm4sbr.models.encoder``).

gnn_step, folded. Write W_ein, b_ein, W_eout, b_eout for edge_in_w, edge_in_b, edge_out_w,
edge_out_b, and w_ih = [W_ih,in | W_ih,out] (the halves acting on a_in and a_out). With
M_in = W_ein^T W_ih,in^T and M_out = W_eout^T W_ih,out^T ([d, 3d]), the input gates of
:func:`gnn_step_ref` are (A is linear, so the edge linears fold into the GRU input weights; the
edge biases pass through A as A 1 b^T there too, so this holds for any adjacency weights):

    gi = A_in (h M_in + b_ein W_ih,in^T) + A_out (h M_out + b_eout W_ih,out^T)
         + b_iah W_ih,in^T + b_oah W_ih,out^T + b_ih,          gh = h W_hh^T + b_hh

So one GEMM P = rows @ [M_in | M_out | W_hh^T] + bias (9d^2 multiply-adds per row instead of
11d^2) gives every per-node product, and one sparse product with the step matrix S sums the
neighbours' rows into gi and picks each node's own row for gh. ``rows`` [R, d] are the distinct
GEMM inputs, node v's being row ``row_of_node[v]``: in the first step h is the item embedding,
so R is the number of distinct items of the batch and the GEMM runs once per item instead of
once per node (on MovieLens-100k about 960 items for 3,900 nodes in a batch of 100 sessions);
in later steps rows = h and R = T.

The step matrix. P viewed as [9R, d] holds, for GEMM row q, its 9 [d] parts: row 9q + 3k + g
is part g (0: r, 1: z, 2: n) of product k (0: in, 1: out, 2: hh). S [4T, 9R] (sparse CSR) has
four blocks of T rows, one per gate input, so that S @ P is

    [r + c_r; z + c_z; i_n - c_n; h_n]  (each [T, d], one under the other)

with r = i_r + h_r and z = i_z + h_z before their sigmoids: for each edge u -> v and gate
g in (r, z), in_weight at (g T + v, 9 row(u) + g) and out_weight at (g T + u, 9 row(v) + 3 + g),
and 1 at (g T + v, 9 row(v) + 6 + g), so the input and hidden parts are summed inside the
sparse product; for i_n, the same edge entries at (2T + v, 9 row(u) + 2) and
(2T + u, 9 row(v) + 5); for h_n, 1 at (3T + v, 9 row(v) + 8). Each gate input is then one
contiguous [T, d] block, forward and backward (no adds of gate parts, no strided views).
constant = b_iah W_ih,in^T + b_oah W_ih,out^T + b_ih [3d] is gi's bias: its r and z parts are
added to the hh products' bias (picked with weight 1 into r and z), its n part c_n to i_n in the
gates. The backward of the sparse product is one product with the transpose, built alongside S
(torch's own backward of a CSR product re-sorts the matrix on every call); both products run as
``embedding_bag`` sums (see :func:`csr_times_dense`). The gates then follow gnn_step_ref:
r, z = sigmoid(.), n = tanh(i_n + c_n + r * h_n) (computed as 2 sigmoid(2x) - 1, which torch
runs faster on CPU), h' = n + z (h - n), in one autograd.Function whose backward writes the
gates' gradient into one [4T, d] tensor from the saved sigmoid and tanh outputs.

attn_pool on nodes. The score e_j = w3^T sigmoid(q_last + W2 h_j + b2) of a click depends only
on its node, so node v enters the pooled sum ``clicks[v]`` times (the clicks of its session it
stands for): out[b] = sum_{v in b} w_v h_v with w_v = clicks[v] e_v ("none") or, the softmax
over the session's clicks, w_v = clicks[v] exp(e_v) / sum_{u in b} clicks[u] exp(e_u)
("softmax", computed shifted by the session's largest score).

Tested against the dense references in float64 and by gradcheck (tests/kernels/test_packed.py);
the encoder's packed path against its padded path in tests/models/test_models.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ._launch import check_tensor
from .gnn_step import check_step_weights

NORMALIZE = ("none", "softmax")


def packed_step_matrix(
    src: torch.Tensor,
    dst: torch.Tensor,
    in_weight: torch.Tensor,
    out_weight: torch.Tensor,
    row_of_node: torch.Tensor,
    n_rows: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step matrix S [4T, 9R] of :func:`gnn_step_packed` and its transpose [9R, 4T], sparse CSR.

    src, dst [E] long: the edges u -> v of the batch over its T nodes; in_weight, out_weight [E]
    floating: ``A_in[v, u]`` and ``A_out[u, v]`` of each edge (a ``PackedSessionGraph`` has all
    four fields under these names); row_of_node [T] long: the GEMM row in 0..n_rows-1 of each
    node, T = ``row_of_node.shape[0]``; n_rows: R; dtype: the values' dtype (that of h). All
    tensors on one device. Positions must be distinct (each edge once, as the graph builders give
    them); the indices are not range-checked (that would cost a host sync). On CPU,
    ``llm4sbr.data.graph.build_packed_batch_graph`` builds the same matrices with numba.
    """
    check_tensor("row_of_node", row_of_node, ("T",), dtype=torch.long)
    device = row_of_node.device
    check_tensor("src", src, ("E",), dtype=torch.long, device=device)
    n_edges = src.shape[0]
    check_tensor("dst", dst, (n_edges,), dtype=torch.long, device=device)
    check_tensor("in_weight", in_weight, (n_edges,), device=device)
    check_tensor("out_weight", out_weight, (n_edges,), device=device)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"n_rows must be a non-negative int, got {n_rows!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")

    n_nodes = row_of_node.shape[0]
    nodes = torch.arange(n_nodes, device=device)
    in_col, out_col, own_col = 9 * row_of_node[src], 9 * row_of_node[dst] + 3, 9 * row_of_node + 6
    weights = (in_weight.to(dtype), out_weight.to(dtype))
    ones = torch.ones(n_nodes, dtype=dtype, device=device)
    rows, cols, values = [], [], []
    for gate in range(3):  # r, z, i_n: the edges' in and out parts; r and z also the own hh part
        block = gate * n_nodes
        rows += [block + dst, block + src]
        cols += [in_col + gate, out_col + gate]
        values += weights
        if gate < 2:
            rows.append(block + nodes)
            cols.append(own_col + gate)
            values.append(ones)
    rows.append(3 * n_nodes + nodes)  # h_n
    cols.append(own_col + 2)
    values.append(ones)
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    shape = (4 * n_nodes, 9 * n_rows)
    return _csr(rows, cols, values, shape), _csr(cols, rows, values, shape[::-1])


def _csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Sparse CSR matrix of ``shape`` from (row, column, value) triplets with distinct positions."""
    key = rows * shape[1] + cols
    if key.device.type == "cpu":
        # numpy's sort is faster than torch's on CPU for these keys; they are distinct, so any
        # sort works.
        order = torch.from_numpy(np.argsort(key.numpy()))
    else:
        order = torch.argsort(key)
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=shape[0]), dim=0, out=crow[1:])
    return sparse_csr(crow, cols[order], values[order], shape)


def sparse_csr(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A sparse CSR matrix of ``shape`` from its parts (crow [rows + 1], col and values [nnz]),
    without invariant checks (a host sync each) and without torch's beta warning, nor the
    "invariant checks are implicitly disabled" one that torch 2.11 (seen with its CUDA 13 build)
    gives even for an explicit ``check_invariants=False``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        warnings.filterwarnings("ignore", "Sparse invariant checks are implicitly disabled", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def csr_times_dense(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ x`` for a sparse CSR matrix [M, K] and a dense x [K, n] -> [M, n], without
    gradient, as a weighted sum of x's rows per matrix row.

    ``embedding_bag`` in "sum" mode with per-sample weights is exactly this product, with the
    matrix's crow as offsets. On CPU it runs several times faster than torch's CSR product on the
    packed step's matrices (which also zero-fills and copies its output), on every thread."""
    return torch.nn.functional.embedding_bag(
        matrix.col_indices(),
        x,
        matrix.crow_indices(),
        mode="sum",
        per_sample_weights=matrix.values(),
        include_last_offset=True,
    )


class _SparseProduct(torch.autograd.Function):
    """``matrix @ x`` for a constant sparse CSR matrix given with its transpose, so the backward is
    one product with the transpose. matrix [M, K], transposed [K, M], x [K, n] -> [M, n]; no
    gradient to the matrix."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.transposed = transposed
        # detached: embedding_bag of a weight that requires grad also builds its backward's indices.
        return csr_times_dense(matrix, x.detach())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, csr_times_dense(ctx.transposed, grad)


def _check_gnn_inputs(
    rows, h, step_matrix, edge_in_w, edge_in_b, edge_out_w, edge_out_b, b_iah, b_oah, w_ih, b_ih, w_hh, b_hh
):
    check_tensor("h", h, ("T", "d"))
    T, d = h.shape
    check_tensor("rows", rows, ("R", d), like=h)
    R = rows.shape[0]
    if not (isinstance(step_matrix, (tuple, list)) and len(step_matrix) == 2):
        raise ValueError(
            f"step_matrix must be the pair (S [4T, 9R], S^T [9R, 4T]) from packed_step_matrix, "
            f"got {type(step_matrix).__name__}"
        )
    check_tensor("step_matrix[0]", step_matrix[0], (4 * T, 9 * R), like=h)
    check_tensor("step_matrix[1]", step_matrix[1], (9 * R, 4 * T), like=h)
    check_step_weights(h, edge_in_w, edge_in_b, edge_out_w, edge_out_b, b_iah, b_oah, w_ih, b_ih, w_hh, b_hh)


def gnn_step_packed(
    rows: torch.Tensor,
    h: torch.Tensor,
    step_matrix: tuple[torch.Tensor, torch.Tensor],
    edge_in_w: torch.Tensor,
    edge_in_b: torch.Tensor,
    edge_out_w: torch.Tensor,
    edge_out_b: torch.Tensor,
    b_iah: torch.Tensor,
    b_oah: torch.Tensor,
    w_ih: torch.Tensor,
    b_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
) -> torch.Tensor:
    """:func:`gnn_step_ref` on packed nodes with the folded weights (see the module docstring).

    rows [R, d]: the GEMM rows, with ``h[v] == rows[row_of_node[v]]`` for the ``row_of_node`` the
    step matrix was built with; h [T, d] node states; step_matrix: (S [4T, 9R], S^T [9R, 4T]) from
    :func:`packed_step_matrix` (constant: no gradient); the weights as in :func:`gnn_step`
    (edge weights [d, d], edge biases, b_iah, b_oah [d], w_ih [3d, 2d], w_hh [3d, d], b_ih,
    b_hh [3d]) -> h' [T, d]. All floating tensors share h's dtype and device.
    """
    _check_gnn_inputs(
        rows,
        h,
        step_matrix,
        edge_in_w,
        edge_in_b,
        edge_out_w,
        edge_out_b,
        b_iah,
        b_oah,
        w_ih,
        b_ih,
        w_hh,
        b_hh,
    )
    d = h.shape[1]
    w_ih_in, w_ih_out = w_ih[:, :d], w_ih[:, d:]
    # gi's constant: the r and z parts ride on the hh products (picked with weight 1, added to
    # gi's in the gates), the n part is added to i_n.
    constant = b_iah @ w_ih_in.T + b_oah @ w_ih_out.T + b_ih
    weight = torch.cat([edge_in_w.T @ w_ih_in.T, edge_out_w.T @ w_ih_out.T, w_hh.T], dim=1)
    bias = torch.cat(
        [
            edge_in_b @ w_ih_in.T,
            edge_out_b @ w_ih_out.T,
            b_hh + torch.cat([constant[: 2 * d], constant.new_zeros(d)]),
        ]
    )
    products = torch.addmm(bias, rows, weight).view(9 * rows.shape[0], d)
    gates = _SparseProduct.apply(*step_matrix, products)  # [r + c_r; z + c_z; i_n - c_n; h_n]
    return _GRUGates.apply(gates, h, constant[2 * d :])


class _GRUGates(torch.autograd.Function):
    """The GRU update from the step's gate inputs, with a hand-written backward.

    gates [4T, d] = [r; z; i_n; h_n] before the nonlinearities (see the module docstring), h
    [T, d], c_n [d]: r, z = sigmoid(.), n = tanh(i_n + c_n + r * h_n), h' = n + z (h - n)
    -> [T, d]. The backward writes the four blocks of the gates' gradient straight into one
    [4T, d] tensor (autograd's graph of the same ops builds them separately and concatenates
    them) and uses the saved sigmoid and tanh outputs."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, h: torch.Tensor, c_n: torch.Tensor) -> torch.Tensor:
        n_nodes = h.shape[0]
        rz = torch.sigmoid(gates[: 2 * n_nodes])
        i_n, h_n = gates[2 * n_nodes : 3 * n_nodes], gates[3 * n_nodes :]
        # n = tanh(x) as 2 sigmoid(2x) - 1, with 2x formed by the ops that form x: torch's CPU
        # tanh costs several of its sigmoids.
        twice = torch.add(torch.addcmul(2 * c_n, rz[:n_nodes], h_n, value=2), i_n, alpha=2)
        n = torch.sigmoid(twice).mul_(2).sub_(1)
        ctx.save_for_backward(h_n, h, rz, n)
        return torch.lerp(n, h, rz[n_nodes:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h_n, h, rz, n = ctx.saved_tensors
        n_nodes = h.shape[0]
        r, z = rz[:n_nodes], rz[n_nodes:]
        grad_gates = torch.empty(4 * n_nodes, h.shape[1], dtype=h.dtype, device=h.device)
        g_rz, g_in, g_hn = (
            grad_gates[: 2 * n_nodes],
            grad_gates[2 * n_nodes : 3 * n_nodes],
            grad_gates[3 * n_nodes :],
        )
        torch.mul(grad, h - n, out=g_rz[n_nodes:])  # dL/dz
        # dL/dn = grad (1 - z), then through tanh: dL/d(i_n) = dL/dn (1 - n^2).
        torch.ops.aten.tanh_backward.grad_input(torch.addcmul(grad, grad, z, value=-1), n, grad_input=g_in)
        torch.mul(g_in, r, out=g_hn)
        torch.mul(g_in, h_n, out=g_rz[:n_nodes])  # dL/dr = dL/d(i_n) h_n
        torch.ops.aten.sigmoid_backward.grad_input(g_rz, rz, grad_input=g_rz)
        return grad_gates, grad * z, g_in.sum(dim=0)


def _check_pool_inputs(h, session, clicks, q_last, w2, b2, w3, normalize):
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    check_tensor("h", h, ("T", "d"))
    T, d = h.shape
    check_tensor("session", session, (T,), dtype=torch.long, device=h.device)
    check_tensor("clicks", clicks, (T,), device=h.device)
    check_tensor("q_last", q_last, ("B", d), like=h)
    check_tensor("w2", w2, (d, d), like=h)
    check_tensor("b2", b2, (d,), like=h)
    check_tensor("w3", w3, (d,), like=h)


def attn_pool_packed(
    h: torch.Tensor,
    session: torch.Tensor,
    clicks: torch.Tensor,
    q_last: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    normalize: str = "none",
) -> torch.Tensor:
    """:func:`attn_pool_ref` on packed nodes (see the module docstring).

    h [T, d] node states; session [T] long: the batch row of each node, in 0..B-1; clicks [T]
    (any real dtype, used in h's): how many clicks of its session each node stands for;
    q_last [B, d] = W1 h_last + b1 (B, the number of sessions, is taken from it); w2 [d, d];
    b2 [d]; w3 [d]; normalize "none" or "softmax" -> [B, d]. A session without nodes gets zeros.
    session is not range-checked (that would cost a host sync).
    """
    _check_pool_inputs(h, session, clicks, q_last, w2, b2, w3, normalize)
    batch = q_last.shape[0]
    # index_select, not (q_last + b2)[session]: its backward is index_add, where advanced
    # indexing's (index_put with accumulate) runs slower with more threads. The gathered rows are
    # the GEMM's bias, so no separate [T, d] add runs forward or backward.
    e = torch.sigmoid(torch.addmm((q_last + b2).index_select(0, session), h, w2.T)) @ w3  # [T]
    clicks = clicks.to(h.dtype)
    if normalize == "softmax":
        # Softmax over a session's clicks: node v holds clicks[v] of them, all with score e[v].
        scores = e.detach()
        peak = scores.new_full((batch,), float("-inf")).scatter_reduce(0, session, scores, "amax")
        weight = clicks * torch.exp(e - peak[session])
        alpha = weight / weight.new_zeros(batch).index_add(0, session, weight)[session]
    else:
        alpha = e * clicks
    return h.new_zeros(batch, h.shape[1]).index_add(0, session, alpha.unsqueeze(1) * h)
