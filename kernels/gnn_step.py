"""gnn_step: one gated-GNN propagation step of SR-GNN (docs/method.md §3.1).

    a_in  = A_in  @ (h @ W_ein^T + b_ein)  + b_iah
    a_out = A_out @ (h @ W_eout^T + b_eout) + b_oah
    gi = [a_in; a_out] @ w_ih^T + b_ih ;  gh = h @ w_hh^T + b_hh
    r = sigmoid(i_r + h_r); z = sigmoid(i_z + h_z); n = tanh(i_n + r * h_n)
    h' = n + z * (h - n)

Shapes: h [B, N, d] node states, A_in / A_out [B, N, N] degree-normalised adjacency (an all-zero
row is a padding node), edge weights [d, d] and biases [d] in nn.Linear layout, w_ih [3d, 2d],
w_hh [3d, d], b_ih / b_hh [3d].

Triton path. The dense GEMMs stay on torch: the edge messages e = h @ [W_ein; W_eout]^T + b_e as
one [2d, d] GEMM, gi and gh. Two fused Triton kernels do the rest:

* aggregation: per session and node tile, x = [A_in @ e_in + b_iah, A_out @ e_out + b_oah] with
  tl.dot, written once as [B, N, 2d];
* gate: reads gi, gh, h and writes h'. Its backward reads grad_out, gi, gh, h, recomputes r, z, n
  and writes d_gi, d_gh and the direct dh = grad_out * z in one pass.

Backward of the aggregation: d_e = A^T @ d_x per session (Triton), dA = d_x @ e^T (Triton, only
when A_in or A_out needs a gradient; e is saved only then). Bias gradients come from
per-program partial sums (gate kernel: b_ih, b_hh; aggregation kernel: b_iah, b_oah, edge
biases) summed on the host, never atomics, so the backward is bit-reproducible. Weight
gradients are torch GEMMs.

Numerics: every kernel computes in fp32 (fp64 for fp64 inputs, so gradcheck works); tl.dot gets
operands upcast to that dtype and input_precision="ieee" (no TF32). Outputs and the saved
intermediates (x, gi, gh, e) are in the input dtype.
Limits: node tiles cover up to 64 nodes and feature tiles up to 128 features per program; larger
N or d loop over tiles. Tested on CPU under TRITON_INTERPRET=1 (fp32 and fp64) and on an NVIDIA
H200 (triton 3.6.0, fp32 and bf16; bench/results/cuda-nvidia-h200); not yet tuned on a GPU: there the
large-shape backward is 1.5x slower than eager PyTorch.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ._launch import (
    accumulator_dtype,
    block_size,
    check_tensor,
    jit,
    num_warps,
    rows_per_tile,
    sigmoid,
    tl,
    triton,
    use_triton,
)

MAX_NODE_BLOCK = 64
MAX_FEATURE_BLOCK = 128
GATE_TILE_ELEMS = 2048


@jit
def _matmul_tile(
    lhs_ptr,
    lhs_stride_m,
    lhs_stride_k,
    rhs_ptr,
    rhs_stride_k,
    rhs_stride_n,
    offs_m,
    offs_n,
    M,
    N,
    K,
    FP64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc[BLOCK_M, BLOCK_N] = lhs[offs_m, :K] @ rhs[:K, offs_n], out-of-range entries read as 0."""
    acc_dtype = tl.float64 if FP64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    mask_m = offs_m < M
    mask_n = offs_n < N
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        lhs = tl.load(
            lhs_ptr + offs_m[:, None] * lhs_stride_m + offs_k[None, :] * lhs_stride_k,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        ).to(acc_dtype)
        rhs = tl.load(
            rhs_ptr + offs_k[:, None] * rhs_stride_k + offs_n[None, :] * rhs_stride_n,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        ).to(acc_dtype)
        # Operands are upcast before the dot: the per-session products are small, so fp32 costs
        # little, keeps fp32 accuracy for fp16/bf16 inputs, and avoids the interpreter's bf16
        # tl.dot, which multiplies the raw bits (triton 3.7.1).
        acc += tl.dot(lhs, rhs, input_precision="ieee")
    return acc


@jit
def _tanh(x):
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(x >= 0, y, -y)


@jit
def _aggregate_fwd_kernel(
    a_in_ptr,
    a_out_ptr,
    e_ptr,
    b_iah_ptr,
    b_oah_ptr,
    x_ptr,
    N,
    d,
    node_blocks,
    FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One (session, node tile, feature tile): x[:, :d] = A_in @ e[:, :d] + b_iah,
    x[:, d:] = A_out @ e[:, d:] + b_oah. e, x: [B, N, 2d]; A: [B, N, N]."""
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    session = pid // node_blocks
    rows = (pid % node_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_cols = cols < d
    mask = (rows < N)[:, None] & mask_cols[None, :]
    adj_base = session * N * N
    msg_base = session * N * 2 * d

    a_in = _matmul_tile(
        a_in_ptr + adj_base, N, 1, e_ptr + msg_base, 2 * d, 1, rows, cols, N, d, N,
        FP64, BLOCK_N, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    a_out = _matmul_tile(
        a_out_ptr + adj_base, N, 1, e_ptr + msg_base + d, 2 * d, 1, rows, cols, N, d, N,
        FP64, BLOCK_N, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    a_in += tl.load(b_iah_ptr + cols, mask=mask_cols, other=0.0)[None, :]
    a_out += tl.load(b_oah_ptr + cols, mask=mask_cols, other=0.0)[None, :]

    x_tile = x_ptr + msg_base + rows[:, None] * 2 * d + cols[None, :]
    tl.store(x_tile, a_in.to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(x_tile + d, a_out.to(x_ptr.dtype.element_ty), mask=mask)


@jit
def _aggregate_bwd_kernel(
    a_in_ptr,
    a_out_ptr,
    dx_ptr,
    de_ptr,
    partial_b_a_ptr,
    partial_b_e_ptr,
    N,
    d,
    node_blocks,
    FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One (session, node tile, feature tile): d_e[:, :d] = A_in^T @ d_x[:, :d],
    d_e[:, d:] = A_out^T @ d_x[:, d:], plus this tile's row sums of d_x (for b_iah, b_oah) and
    of d_e (for the edge biases) in the partial buffers [B * node_blocks, 2d]."""
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    session = pid // node_blocks
    rows = (pid % node_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_cols = cols < d
    mask = (rows < N)[:, None] & mask_cols[None, :]
    adj_base = session * N * N
    msg_base = session * N * 2 * d

    # A^T tile: element [j, k] is A[k, j].
    de_in = _matmul_tile(
        a_in_ptr + adj_base, 1, N, dx_ptr + msg_base, 2 * d, 1, rows, cols, N, d, N,
        FP64, BLOCK_N, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    de_out = _matmul_tile(
        a_out_ptr + adj_base, 1, N, dx_ptr + msg_base + d, 2 * d, 1, rows, cols, N, d, N,
        FP64, BLOCK_N, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    de_tile = de_ptr + msg_base + rows[:, None] * 2 * d + cols[None, :]
    tl.store(de_tile, de_in.to(de_ptr.dtype.element_ty), mask=mask)
    tl.store(de_tile + d, de_out.to(de_ptr.dtype.element_ty), mask=mask)

    dx_tile = dx_ptr + msg_base + rows[:, None] * 2 * d + cols[None, :]
    dx_in = tl.load(dx_tile, mask=mask, other=0.0).to(de_in.dtype)
    dx_out = tl.load(dx_tile + d, mask=mask, other=0.0).to(de_in.dtype)
    partial_row = pid * 2 * d + cols
    tl.store(partial_b_a_ptr + partial_row, tl.sum(dx_in, axis=0), mask=mask_cols)
    tl.store(partial_b_a_ptr + partial_row + d, tl.sum(dx_out, axis=0), mask=mask_cols)
    tl.store(partial_b_e_ptr + partial_row, tl.sum(de_in, axis=0), mask=mask_cols)
    tl.store(partial_b_e_ptr + partial_row + d, tl.sum(de_out, axis=0), mask=mask_cols)


@jit
def _adjacency_grad_kernel(
    dx_ptr,
    e_ptr,
    da_in_ptr,
    da_out_ptr,
    N,
    d,
    node_blocks,
    FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One (session, row tile, column tile): dA_in = d_x[:, :d] @ e[:, :d]^T,
    dA_out = d_x[:, d:] @ e[:, d:]^T. dA: [B, N, N]."""
    pid = tl.program_id(0).to(tl.int64)
    pid_col = tl.program_id(1).to(tl.int64)
    session = pid // node_blocks
    rows = (pid % node_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_col * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < N)[:, None] & (cols < N)[None, :]
    adj_base = session * N * N
    msg_base = session * N * 2 * d

    # e^T tile: element [c, k] is e[k, c].
    da_in = _matmul_tile(
        dx_ptr + msg_base, 2 * d, 1, e_ptr + msg_base, 1, 2 * d, rows, cols, N, N, d,
        FP64, BLOCK_N, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    da_out = _matmul_tile(
        dx_ptr + msg_base + d, 2 * d, 1, e_ptr + msg_base + d, 1, 2 * d, rows, cols, N, N, d,
        FP64, BLOCK_N, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    da_tile = adj_base + rows[:, None] * N + cols[None, :]
    tl.store(da_in_ptr + da_tile, da_in.to(da_in_ptr.dtype.element_ty), mask=mask)
    tl.store(da_out_ptr + da_tile, da_out.to(da_out_ptr.dtype.element_ty), mask=mask)


@jit
def _gate_fwd_kernel(
    gi_ptr,
    gh_ptr,
    h_ptr,
    out_ptr,
    R,
    d,
    FP64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """GRU gate on a tile of rows: gi, gh [R, 3d], h [R, d] -> out [R, d]."""
    acc_dtype = tl.float64 if FP64 else tl.float32
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rows < R)[:, None] & (cols < d)[None, :]
    gate = rows[:, None] * 3 * d + cols[None, :]
    node = rows[:, None] * d + cols[None, :]

    i_r = tl.load(gi_ptr + gate, mask=mask, other=0.0).to(acc_dtype)
    i_z = tl.load(gi_ptr + gate + d, mask=mask, other=0.0).to(acc_dtype)
    i_n = tl.load(gi_ptr + gate + 2 * d, mask=mask, other=0.0).to(acc_dtype)
    h_r = tl.load(gh_ptr + gate, mask=mask, other=0.0).to(acc_dtype)
    h_z = tl.load(gh_ptr + gate + d, mask=mask, other=0.0).to(acc_dtype)
    h_n = tl.load(gh_ptr + gate + 2 * d, mask=mask, other=0.0).to(acc_dtype)
    h = tl.load(h_ptr + node, mask=mask, other=0.0).to(acc_dtype)

    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = _tanh(i_n + r * h_n)
    tl.store(out_ptr + node, (n + z * (h - n)).to(out_ptr.dtype.element_ty), mask=mask)


@jit
def _gate_bwd_kernel(
    grad_out_ptr,
    gi_ptr,
    gh_ptr,
    h_ptr,
    d_gi_ptr,
    d_gh_ptr,
    dh_ptr,
    partial_b_ih_ptr,
    partial_b_hh_ptr,
    R,
    d,
    FP64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Backward of the gate on a tile of rows, recomputing r, z, n from gi, gh: writes d_gi,
    d_gh [R, 3d], the direct dh = grad_out * z [R, d], and this tile's column sums of d_gi and
    d_gh in the partial buffers [row_blocks, 3d]."""
    acc_dtype = tl.float64 if FP64 else tl.float32
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_cols = cols < d
    mask = (rows < R)[:, None] & mask_cols[None, :]
    gate = rows[:, None] * 3 * d + cols[None, :]
    node = rows[:, None] * d + cols[None, :]

    i_r = tl.load(gi_ptr + gate, mask=mask, other=0.0).to(acc_dtype)
    i_z = tl.load(gi_ptr + gate + d, mask=mask, other=0.0).to(acc_dtype)
    i_n = tl.load(gi_ptr + gate + 2 * d, mask=mask, other=0.0).to(acc_dtype)
    h_r = tl.load(gh_ptr + gate, mask=mask, other=0.0).to(acc_dtype)
    h_z = tl.load(gh_ptr + gate + d, mask=mask, other=0.0).to(acc_dtype)
    h_n = tl.load(gh_ptr + gate + 2 * d, mask=mask, other=0.0).to(acc_dtype)
    h = tl.load(h_ptr + node, mask=mask, other=0.0).to(acc_dtype)
    # Masked entries have grad 0, so they add nothing to the partial sums below.
    g = tl.load(grad_out_ptr + node, mask=mask, other=0.0).to(acc_dtype)

    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = _tanh(i_n + r * h_n)
    d_z = g * (h - n) * z * (1.0 - z)
    d_n = g * (1.0 - z) * (1.0 - n * n)
    d_r = d_n * h_n * r * (1.0 - r)
    d_hn = d_n * r

    out_dtype = d_gi_ptr.dtype.element_ty
    tl.store(d_gi_ptr + gate, d_r.to(out_dtype), mask=mask)
    tl.store(d_gi_ptr + gate + d, d_z.to(out_dtype), mask=mask)
    tl.store(d_gi_ptr + gate + 2 * d, d_n.to(out_dtype), mask=mask)
    tl.store(d_gh_ptr + gate, d_r.to(out_dtype), mask=mask)
    tl.store(d_gh_ptr + gate + d, d_z.to(out_dtype), mask=mask)
    tl.store(d_gh_ptr + gate + 2 * d, d_hn.to(out_dtype), mask=mask)
    tl.store(dh_ptr + node, (g * z).to(out_dtype), mask=mask)

    partial_row = pid * 3 * d + cols
    sum_r = tl.sum(d_r, axis=0)
    sum_z = tl.sum(d_z, axis=0)
    tl.store(partial_b_ih_ptr + partial_row, sum_r, mask=mask_cols)
    tl.store(partial_b_ih_ptr + partial_row + d, sum_z, mask=mask_cols)
    tl.store(partial_b_ih_ptr + partial_row + 2 * d, tl.sum(d_n, axis=0), mask=mask_cols)
    tl.store(partial_b_hh_ptr + partial_row, sum_r, mask=mask_cols)
    tl.store(partial_b_hh_ptr + partial_row + d, sum_z, mask=mask_cols)
    tl.store(partial_b_hh_ptr + partial_row + 2 * d, tl.sum(d_hn, axis=0), mask=mask_cols)


def _fp64(t: torch.Tensor) -> bool:
    return t.dtype == torch.float64


def _node_blocks(N: int) -> tuple[int, int]:
    """(BLOCK_N, number of node tiles per session)."""
    block_n = block_size(N, hi=MAX_NODE_BLOCK)
    return block_n, triton.cdiv(N, block_n)


def _aggregate_forward(
    A_in: torch.Tensor, A_out: torch.Tensor, e: torch.Tensor, b_iah: torch.Tensor, b_oah: torch.Tensor
) -> torch.Tensor:
    """A_in, A_out [B, N, N]; e [B, N, 2d] edge messages -> x [B, N, 2d]."""
    B, N, two_d = e.shape
    d = two_d // 2
    block_n, node_blocks = _node_blocks(N)
    block_d = block_size(d, hi=MAX_FEATURE_BLOCK)
    x = torch.empty_like(e)
    _aggregate_fwd_kernel[(B * node_blocks, triton.cdiv(d, block_d))](
        a_in_ptr=A_in,
        a_out_ptr=A_out,
        e_ptr=e,
        b_iah_ptr=b_iah,
        b_oah_ptr=b_oah,
        x_ptr=x,
        N=N,
        d=d,
        node_blocks=node_blocks,
        FP64=_fp64(e),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=num_warps(block_n * block_d),
    )
    return x


def _aggregate_backward(
    A_in: torch.Tensor, A_out: torch.Tensor, dx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx [B, N, 2d] -> (d_e [B, N, 2d], [d b_iah; d b_oah] [2d], [d edge_in_b; d edge_out_b] [2d])."""
    B, N, two_d = dx.shape
    d = two_d // 2
    block_n, node_blocks = _node_blocks(N)
    block_d = block_size(d, hi=MAX_FEATURE_BLOCK)
    de = torch.empty_like(dx)
    partial_b_a = torch.empty(B * node_blocks, two_d, device=dx.device, dtype=accumulator_dtype(dx.dtype))
    partial_b_e = torch.empty_like(partial_b_a)
    _aggregate_bwd_kernel[(B * node_blocks, triton.cdiv(d, block_d))](
        a_in_ptr=A_in,
        a_out_ptr=A_out,
        dx_ptr=dx,
        de_ptr=de,
        partial_b_a_ptr=partial_b_a,
        partial_b_e_ptr=partial_b_e,
        N=N,
        d=d,
        node_blocks=node_blocks,
        FP64=_fp64(dx),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=num_warps(block_n * block_d),
    )
    return de, partial_b_a.sum(dim=0).to(dx.dtype), partial_b_e.sum(dim=0).to(dx.dtype)


def _adjacency_grad(dx: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dx, e [B, N, 2d] -> (dA_in, dA_out) [B, N, N]."""
    B, N, two_d = dx.shape
    d = two_d // 2
    block_n, node_blocks = _node_blocks(N)
    block_d = block_size(d, hi=MAX_FEATURE_BLOCK)
    da_in = torch.empty(B, N, N, device=dx.device, dtype=dx.dtype)
    da_out = torch.empty_like(da_in)
    _adjacency_grad_kernel[(B * node_blocks, node_blocks)](
        dx_ptr=dx,
        e_ptr=e,
        da_in_ptr=da_in,
        da_out_ptr=da_out,
        N=N,
        d=d,
        node_blocks=node_blocks,
        FP64=_fp64(dx),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=num_warps(block_n * block_n),
    )
    return da_in, da_out


def _gate_blocks(R: int, d: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D) for the elementwise gate kernels over R rows of width d."""
    block_d = block_size(d, lo=1, hi=MAX_FEATURE_BLOCK)
    return rows_per_tile(R, block_d, GATE_TILE_ELEMS), block_d


def _gate_forward(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """gi, gh [R, 3d]; h [R, d] -> h' [R, d]."""
    R, d = h.shape
    block_r, block_d = _gate_blocks(R, d)
    out = torch.empty_like(h)
    _gate_fwd_kernel[(triton.cdiv(R, block_r), triton.cdiv(d, block_d))](
        gi_ptr=gi,
        gh_ptr=gh,
        h_ptr=h,
        out_ptr=out,
        R=R,
        d=d,
        FP64=_fp64(h),
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=num_warps(block_r * block_d),
    )
    return out


def _gate_backward(
    grad_out: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_out, h [R, d]; gi, gh [R, 3d] -> (d_gi [R, 3d], d_gh [R, 3d], direct dh [R, d],
    d b_ih [3d], d b_hh [3d])."""
    R, d = h.shape
    block_r, block_d = _gate_blocks(R, d)
    row_blocks = triton.cdiv(R, block_r)
    d_gi = torch.empty_like(gi)
    d_gh = torch.empty_like(gh)
    dh = torch.empty_like(h)
    partial_b_ih = torch.empty(row_blocks, 3 * d, device=h.device, dtype=accumulator_dtype(h.dtype))
    partial_b_hh = torch.empty_like(partial_b_ih)
    _gate_bwd_kernel[(row_blocks, triton.cdiv(d, block_d))](
        grad_out_ptr=grad_out,
        gi_ptr=gi,
        gh_ptr=gh,
        h_ptr=h,
        d_gi_ptr=d_gi,
        d_gh_ptr=d_gh,
        dh_ptr=dh,
        partial_b_ih_ptr=partial_b_ih,
        partial_b_hh_ptr=partial_b_hh,
        R=R,
        d=d,
        FP64=_fp64(h),
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=num_warps(block_r * block_d),
    )
    return d_gi, d_gh, dh, partial_b_ih.sum(dim=0).to(h.dtype), partial_b_hh.sum(dim=0).to(h.dtype)


class GnnStepFunction(torch.autograd.Function):
    """Triton forward and backward of :func:`gnn_step_ref` (same arguments, same result)."""

    @staticmethod
    def forward(
        ctx,
        h: torch.Tensor,
        A_in: torch.Tensor,
        A_out: torch.Tensor,
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
        B, N, d = h.shape
        h = h.contiguous()
        A_in = A_in.contiguous()
        A_out = A_out.contiguous()
        nodes = h.view(B * N, d)
        edge_w = torch.cat([edge_in_w, edge_out_w])
        e = torch.addmm(torch.cat([edge_in_b, edge_out_b]), nodes, edge_w.T).view(B, N, 2 * d)
        x = _aggregate_forward(A_in, A_out, e, b_iah.contiguous(), b_oah.contiguous()).view(B * N, 2 * d)
        gi = torch.addmm(b_ih, x, w_ih.T)
        gh = torch.addmm(b_hh, nodes, w_hh.T)
        out = _gate_forward(gi, gh, nodes)

        needs_adjacency_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        # e is only needed for dA; SR-GNN's adjacency is data, so it is usually not kept.
        ctx.save_for_backward(
            h, A_in, A_out, edge_w, w_ih, w_hh, x, gi, gh, e if needs_adjacency_grad else None
        )
        return out.view(B, N, d)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, A_in, A_out, edge_w, w_ih, w_hh, x, gi, gh, e = ctx.saved_tensors
        B, N, d = h.shape
        nodes = h.view(B * N, d)
        needs = ctx.needs_input_grad

        d_gi, d_gh, dh, d_b_ih, d_b_hh = _gate_backward(grad_out.contiguous().view(B * N, d), gi, gh, nodes)
        dx = (d_gi @ w_ih).view(B, N, 2 * d)
        de, d_b_a, d_b_e = _aggregate_backward(A_in, A_out, dx)
        de = de.view(B * N, 2 * d)
        dh = torch.addmm(torch.addmm(dh, d_gh, w_hh), de, edge_w).view(B, N, d)

        d_A_in = d_A_out = None
        if needs[1] or needs[2]:
            d_A_in, d_A_out = _adjacency_grad(dx, e)
        d_edge_w = de.T @ nodes if needs[3] or needs[5] else None
        d_w_ih = d_gi.T @ x if needs[9] else None
        d_w_hh = d_gh.T @ nodes if needs[11] else None
        return (
            dh,
            d_A_in,
            d_A_out,
            d_edge_w[:d] if needs[3] else None,
            d_b_e[:d],
            d_edge_w[d:] if needs[5] else None,
            d_b_e[d:],
            d_b_a[:d],
            d_b_a[d:],
            d_w_ih,
            d_b_ih,
            d_w_hh,
            d_b_hh,
        )


def gnn_step_ref(
    h: torch.Tensor,
    A_in: torch.Tensor,
    A_out: torch.Tensor,
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
    """Pure-PyTorch reference. h [B, N, d]; A_in, A_out [B, N, N] -> h' [B, N, d]."""
    a_in = torch.matmul(A_in, h @ edge_in_w.T + edge_in_b) + b_iah
    a_out = torch.matmul(A_out, h @ edge_out_w.T + edge_out_b) + b_oah
    gi = torch.cat([a_in, a_out], dim=-1) @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def _check_inputs(
    h, A_in, A_out, edge_in_w, edge_in_b, edge_out_w, edge_out_b, b_iah, b_oah, w_ih, b_ih, w_hh, b_hh
):
    check_tensor("h", h, ("B", "N", "d"))
    B, N, d = h.shape
    check_tensor("A_in", A_in, (B, N, N), like=h)
    check_tensor("A_out", A_out, (B, N, N), like=h)
    check_step_weights(h, edge_in_w, edge_in_b, edge_out_w, edge_out_b, b_iah, b_oah, w_ih, b_ih, w_hh, b_hh)


def check_step_weights(
    h, edge_in_w, edge_in_b, edge_out_w, edge_out_b, b_iah, b_oah, w_ih, b_ih, w_hh, b_hh
) -> None:
    """The ten weights of a gated-GNN step for node states ``h`` [..., d] (ValueError naming the
    first bad one); shared with :func:`~llm4sbr.kernels.packed.gnn_step_packed`."""
    d = h.shape[-1]
    for name, t in (("edge_in_w", edge_in_w), ("edge_out_w", edge_out_w)):
        check_tensor(name, t, (d, d), like=h)
    for name, t in (("edge_in_b", edge_in_b), ("edge_out_b", edge_out_b), ("b_iah", b_iah), ("b_oah", b_oah)):
        check_tensor(name, t, (d,), like=h)
    check_tensor("w_ih", w_ih, (3 * d, 2 * d), like=h)
    check_tensor("b_ih", b_ih, (3 * d,), like=h)
    check_tensor("w_hh", w_hh, (3 * d, d), like=h)
    check_tensor("b_hh", b_hh, (3 * d,), like=h)


def gnn_step(
    h: torch.Tensor,
    A_in: torch.Tensor,
    A_out: torch.Tensor,
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
    """One SR-GNN step. h [B, N, d]; A_in, A_out [B, N, N]; returns h' [B, N, d]."""
    args = (
        h,
        A_in,
        A_out,
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
    _check_inputs(*args)
    if use_triton(h.device, "gnn_step"):
        return GnnStepFunction.apply(*args)
    return gnn_step_ref(*args)
