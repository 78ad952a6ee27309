"""attn_pool: SR-GNN's attention readout (docs/method.md §3.1, global representation).

    e_j = w3^T sigmoid(q_last + W2 h_j + b2)          (q_last = W1 h_last + b1, computed by the caller)
    alpha = e ("none", SR-GNN)  |  softmax of e over the valid positions ("softmax")
    out = sum_j alpha_j * mask_j * h_j                 (a row without valid positions gives zeros)

Padding never changes a result: h at padded positions (mask False) may hold anything, NaN and
inf included. Both paths select those positions away before any arithmetic (a product with the
mask would not do: 0 * NaN = NaN), so the output and every gradient are those of zeros there,
and h's gradient there is exactly 0.

Triton path. The GEMM p = h @ W2^T stays on torch (cuBLAS). One program per session (grid B)
walks L in tiles of [BLOCK_L, BLOCK_D] and fuses + q_last + b2, the sigmoid, the dot with w3,
the masking, an online masked softmax and the weighted sum over L; it saves only the per-row
log-sum-exp (softmax mode). The backward recomputes p = h @ W2^T (one GEMM instead of keeping a
[B, L, d] tensor alive between passes) and, per session, e and alpha. With g = grad_out[b],
w_j = alpha_j mask_j and s_j = sigmoid(q_last + p_j + b2):

    dh_j  = w_j g + (dp @ W2)_j                      dw2 = dp^T h (flattened over B, L)
    de_j  = mask_j (g . h_j)                        ("none")
    de_j  = alpha_j (g . h_j - g . out)             ("softmax"; sum_k alpha_k g . h_k = g . out)
    dp_j  = de_j w3 * s_j (1 - s_j)                 dq_last = sum_j dp_j
    db2   = sum_b dq_last_b                          dw3 = sum_b sum_j de_j s_j

db2 and dw3 come from per-session partial rows summed on the host (no atomics, so the backward
is bit-reproducible). Accumulation is fp32 for fp16/bf16/fp32 inputs and fp64 for fp64 inputs;
outputs and gradients are in the input dtype. The mask gets no gradient.

Limits: one program holds a whole row of d (BLOCK_D = next power of two >= d), so register use
grows with d; L is unbounded (tiled). Tested on CPU with the Triton interpreter
(TRITON_INTERPRET=1; float16, bfloat16, float32, float64); the same tests passed on an NVIDIA
H200 with LLM4SBR_TEST_DEVICE=cuda (triton 3.6.0, float32 and bfloat16; bench/results/cuda-nvidia-h200).
Both kernels compile for sm_90 with triton 3.7.1
and its ptxas for all four dtypes, without register spills at (L, d) = (50, 100) and (64, 256)
(at most 168 registers for float32/bfloat16, 235 for float64; tests/kernels/test_attn_pool.py
compiles float32 and bfloat16).
"""

from __future__ import annotations

import torch

from ._launch import (
    accumulator_dtype,
    block_size,
    check_tensor,
    jit,
    next_power_of_2,
    num_warps,
    rows_per_tile,
    sigmoid,
    tl,
    use_triton,
)

NORMALIZE = ("none", "softmax")

# Elements of one [BLOCK_L, BLOCK_D] tile. 4096 made ptxas spill in the backward for sm_90
# (d = 100 and 256); 2048 compiles without spills.
_TILE_ELEMS = 2048


@jit
def _attn_pool_fwd_kernel(
    p_ptr,
    h_ptr,
    mask_ptr,
    q_ptr,
    b2_ptr,
    w3_ptr,
    out_ptr,
    lse_ptr,
    L,
    d,
    SOFTMAX: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < d
    bias = tl.load(q_ptr + b * d + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    bias += tl.load(b2_ptr + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    # w3 is 0 past d, so the padded columns add nothing to e.
    w3 = tl.load(w3_ptr + offs_d, mask=in_d, other=0.0).to(acc_dtype)

    acc = tl.zeros([BLOCK_D], dtype=acc_dtype)
    row_max = tl.full([], float("-inf"), acc_dtype)
    row_sum = tl.zeros([], dtype=acc_dtype)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        in_l = offs_l < L
        valid = tl.load(mask_ptr + b * L + offs_l, mask=in_l, other=0) != 0
        tile = (b * L + offs_l)[:, None] * d + offs_d[None, :]
        # Padded positions are never read: h (and p = h W2^T) may hold anything there, NaN and
        # inf included, and 0 * NaN would be NaN.
        in_tile = (in_l & valid)[:, None] & in_d[None, :]
        p = tl.load(p_ptr + tile, mask=in_tile, other=0.0).to(acc_dtype)
        h = tl.load(h_ptr + tile, mask=in_tile, other=0.0).to(acc_dtype)
        s = sigmoid(p + bias[None, :])
        e = tl.sum(s * w3[None, :], axis=1)
        if SOFTMAX:
            e = tl.where(valid, e, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(e, axis=0))
            # Until a valid position is seen the running max is -inf; shifting by 0 then keeps
            # exp(-inf - shift) = 0 instead of exp(-inf + inf) = NaN.
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            rescale = tl.exp(row_max - shift)
            weight = tl.exp(e - shift)
            row_sum = row_sum * rescale + tl.sum(weight, axis=0)
            acc = acc * rescale + tl.sum(weight[:, None] * h, axis=0)
            row_max = new_max
        else:
            acc += tl.sum(tl.where(valid[:, None], e[:, None] * h, 0.0), axis=0)

    if SOFTMAX:
        has_valid = row_sum > 0.0
        acc = tl.where(has_valid, acc / tl.where(has_valid, row_sum, 1.0), 0.0)
        # A row without valid positions stores lse = 0; its alphas are masked to 0 in backward.
        lse = tl.where(has_valid, row_max + tl.log(tl.where(has_valid, row_sum, 1.0)), 0.0)
        tl.store(lse_ptr + b, lse)
    tl.store(out_ptr + b * d + offs_d, acc.to(out_ptr.dtype.element_ty), mask=in_d)


@jit
def _attn_pool_bwd_kernel(
    p_ptr,
    h_ptr,
    mask_ptr,
    q_ptr,
    b2_ptr,
    w3_ptr,
    out_ptr,
    lse_ptr,
    grad_out_ptr,
    dh_ptr,
    dp_ptr,
    dq_ptr,
    dw3_part_ptr,
    L,
    d,
    SOFTMAX: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < d
    bias = tl.load(q_ptr + b * d + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    bias += tl.load(b2_ptr + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    w3 = tl.load(w3_ptr + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    g = tl.load(grad_out_ptr + b * d + offs_d, mask=in_d, other=0.0).to(acc_dtype)
    if SOFTMAX:
        out = tl.load(out_ptr + b * d + offs_d, mask=in_d, other=0.0).to(acc_dtype)
        g_dot_out = tl.sum(g * out, axis=0)
        lse = tl.load(lse_ptr + b).to(acc_dtype)

    dq = tl.zeros([BLOCK_D], dtype=acc_dtype)
    dw3 = tl.zeros([BLOCK_D], dtype=acc_dtype)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        in_l = offs_l < L
        valid = tl.load(mask_ptr + b * L + offs_l, mask=in_l, other=0) != 0
        tile = (b * L + offs_l)[:, None] * d + offs_d[None, :]
        in_tile = in_l[:, None] & in_d[None, :]
        # As in the forward, padded positions read as 0; their dh and dp (stored below) are 0.
        is_read = in_tile & valid[:, None]
        p = tl.load(p_ptr + tile, mask=is_read, other=0.0).to(acc_dtype)
        h = tl.load(h_ptr + tile, mask=is_read, other=0.0).to(acc_dtype)
        s = sigmoid(p + bias[None, :])
        e = tl.sum(s * w3[None, :], axis=1)
        g_dot_h = tl.sum(h * g[None, :], axis=1)
        if SOFTMAX:
            alpha = tl.where(valid, tl.exp(e - lse), 0.0)
            de = alpha * (g_dot_h - g_dot_out)
        else:
            alpha = tl.where(valid, e, 0.0)
            de = tl.where(valid, g_dot_h, 0.0)
        dp = de[:, None] * w3[None, :] * s * (1.0 - s)
        tl.store(dh_ptr + tile, (alpha[:, None] * g[None, :]).to(dh_ptr.dtype.element_ty), mask=in_tile)
        tl.store(dp_ptr + tile, dp.to(dp_ptr.dtype.element_ty), mask=in_tile)
        dq += tl.sum(dp, axis=0)
        dw3 += tl.sum(de[:, None] * s, axis=0)

    tl.store(dq_ptr + b * d + offs_d, dq, mask=in_d)
    tl.store(dw3_part_ptr + b * d + offs_d, dw3, mask=in_d)


def _tiles(L: int, d: int) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D): a whole row of d per tile, as many positions as fit _TILE_ELEMS."""
    # hi is never below d: the kernels have no loop over d.
    block_d = block_size(d, hi=max(1024, next_power_of_2(d)))
    return rows_per_tile(L, block_d, _TILE_ELEMS), block_d


def _attn_pool_forward(
    h: torch.Tensor,
    mask: torch.Tensor,
    q_last: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward on contiguous inputs. h [B, L, d]; mask [B, L] bool -> (out [B, d], lse [B]).

    lse is the per-row log-sum-exp of the masked e (softmax mode; zeros otherwise), in the
    accumulator dtype."""
    B, L, d = h.shape
    p = h @ w2.T
    out = torch.empty((B, d), device=h.device, dtype=h.dtype)
    lse = torch.zeros((B,), device=h.device, dtype=accumulator_dtype(h.dtype))
    block_l, block_d = _tiles(L, d)
    _attn_pool_fwd_kernel[(B,)](
        p_ptr=p,
        h_ptr=h,
        mask_ptr=mask.view(torch.uint8),
        q_ptr=q_last,
        b2_ptr=b2,
        w3_ptr=w3,
        out_ptr=out,
        lse_ptr=lse,
        L=L,
        d=d,
        SOFTMAX=softmax,
        ACC_FP64=h.dtype == torch.float64,
        BLOCK_L=block_l,
        BLOCK_D=block_d,
        num_warps=num_warps(block_l * block_d),
    )
    return out, lse


def _attn_pool_backward(
    grad_out: torch.Tensor,
    h: torch.Tensor,
    mask: torch.Tensor,
    q_last: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward on contiguous inputs; grad_out, out [B, d]; lse [B] from the forward.

    Returns (dh [B, L, d], dq_last [B, d], dw2 [d, d], db2 [d], dw3 [d])."""
    B, L, d = h.shape
    acc_dtype = accumulator_dtype(h.dtype)
    # The kernel never reads padded positions, but dw2 = dp^T h below is a GEMM over all of
    # them: h is zeroed there first (dp is 0 there, and 0 * NaN would be NaN).
    h = torch.where(mask[..., None], h, h.new_zeros(()))
    p = h @ w2.T
    dh = torch.empty_like(h)
    dp = torch.empty_like(h)
    dq = torch.empty((B, d), device=h.device, dtype=acc_dtype)
    dw3_part = torch.empty((B, d), device=h.device, dtype=acc_dtype)
    block_l, block_d = _tiles(L, d)
    _attn_pool_bwd_kernel[(B,)](
        p_ptr=p,
        h_ptr=h,
        mask_ptr=mask.view(torch.uint8),
        q_ptr=q_last,
        b2_ptr=b2,
        w3_ptr=w3,
        out_ptr=out,
        lse_ptr=lse,
        grad_out_ptr=grad_out,
        dh_ptr=dh,
        dp_ptr=dp,
        dq_ptr=dq,
        dw3_part_ptr=dw3_part,
        L=L,
        d=d,
        SOFTMAX=softmax,
        ACC_FP64=h.dtype == torch.float64,
        BLOCK_L=block_l,
        BLOCK_D=block_d,
        num_warps=num_warps(block_l * block_d),
    )
    dp_rows = dp.view(B * L, d)
    dh = torch.addmm(dh.view(B * L, d), dp_rows, w2).view(B, L, d)
    dw2 = dp_rows.T @ h.view(B * L, d)
    return dh, dq.to(h.dtype), dw2, dq.sum(dim=0).to(h.dtype), dw3_part.sum(dim=0).to(h.dtype)


class AttnPoolFunction(torch.autograd.Function):
    """Triton forward and backward of :func:`attn_pool_ref`; the mask and ``normalize`` get no gradient."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        mask: torch.Tensor,
        q_last: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        w3: torch.Tensor,
        normalize: str,
    ) -> torch.Tensor:
        h, mask, q_last, w2, b2, w3 = (t.contiguous() for t in (h, mask, q_last, w2, b2, w3))
        softmax = normalize == "softmax"
        out, lse = _attn_pool_forward(h, mask, q_last, w2, b2, w3, softmax)
        ctx.softmax = softmax
        ctx.save_for_backward(h, mask, q_last, w2, b2, w3, out, lse)
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        h, mask, q_last, w2, b2, w3, out, lse = ctx.saved_tensors
        dh, dq, dw2, db2, dw3 = _attn_pool_backward(
            grad_out.contiguous(), h, mask, q_last, w2, b2, w3, out, lse, ctx.softmax
        )
        return dh, None, dq, dw2, db2, dw3, None


def attn_pool_ref(
    h: torch.Tensor,
    mask: torch.Tensor,
    q_last: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    normalize: str = "none",
) -> torch.Tensor:
    """Pure-PyTorch reference. h [B, L, d]; mask [B, L] bool; q_last [B, d] -> [B, d]."""
    # Padded positions are selected away before any arithmetic (multiplying by the mask would
    # not do: 0 * NaN = NaN), so whatever h holds there reaches neither the output nor a
    # gradient, and h's gradient there is exactly 0.
    h = torch.where(mask[..., None], h, h.new_zeros(()))
    e = torch.sigmoid(q_last[:, None, :] + h @ w2.T + b2) @ w3  # [B, L]
    if normalize == "softmax":
        has_valid = mask.any(dim=-1, keepdim=True)
        # Rows without a valid position softmax over zeros (finite, masked out below), so
        # neither the output nor the gradient is ever NaN.
        e = torch.where(mask, e, torch.full_like(e, float("-inf")))
        e = torch.where(has_valid, e, torch.zeros_like(e))
        alpha = torch.softmax(e, dim=-1)
    else:
        alpha = e
    weights = torch.where(mask, alpha, alpha.new_zeros(()))
    return (weights[..., None] * h).sum(dim=1)


def _check_inputs(h, mask, q_last, w2, b2, w3, normalize):
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    check_tensor("h", h, ("B", "L", "d"))
    B, L, d = h.shape
    check_tensor("mask", mask, (B, L), dtype=torch.bool, device=h.device)
    check_tensor("q_last", q_last, (B, d), like=h)
    check_tensor("w2", w2, (d, d), like=h)
    check_tensor("b2", b2, (d,), like=h)
    check_tensor("w3", w3, (d,), like=h)


def attn_pool(
    h: torch.Tensor,
    mask: torch.Tensor,
    q_last: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    normalize: str = "none",
) -> torch.Tensor:
    """Attention readout. h [B, L, d]; mask [B, L] bool (True = a click); q_last [B, d]; w2 [d, d];
    b2 [d]; w3 [d] -> [B, d]."""
    _check_inputs(h, mask, q_last, w2, b2, w3, normalize)
    if use_triton(h.device, "attn_pool"):
        return AttnPoolFunction.apply(h, mask, q_last, w2, b2, w3, normalize)
    return attn_pool_ref(h, mask, q_last, w2, b2, w3, normalize)
