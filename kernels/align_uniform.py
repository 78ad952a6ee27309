"""align_uniform_loss: view-averaged alignment + uniformity loss (docs/method.md §3.3, DirectAU).

Per view v, with x_hat, z_hat the L2-normalised rows of x[v], z[v] ([B, d]):
    align   = mean_b ||x_hat_b - z_hat_b||^2
    unif(u) = log mean_{i<j} exp(-t ||u_i - u_j||^2)     (0 when B == 1)
    AU_v    = align + (unif(x_hat) + unif(z_hat)) / 2
loss = mean_v AU_v ("mean", paper Alg. 1) or sum_v AU_v ("sum", the authors' code).

Triton path. x_hat and z_hat are stacked as 2V "halves" u[s] (s < V: x views, s >= V: z views):
1. ``_normalize_align_kernel`` (grid V x row blocks): u = x / max(||x||, 1e-12) as F.normalize,
   the row norms, and the per-row alignment terms ||x_hat_b - z_hat_b||^2.
2. ``_pair_lse_kernel`` (grid 2V x row blocks, B > 1): each program loops over the column
   blocks j >= its row block, builds the Gram tile with tl.dot and
   D_ij = max(|u_i|^2 + |u_j|^2 - 2 u_i.u_j, 0) (exactly as the reference, so zero rows are
   handled alike), and keeps an online (max, sum) of -t D_ij over the pairs i < j of each row.
   The host merges the rows into lse_s = log sum_{i<j} exp(-t D_ij) stably:
   unif_s = lse_s - log(B(B-1)/2).
3. ``_grad_kernel`` (grid 2V x row blocks, only when an input requires grad), from the
   forward, since the loss is a scalar: with w_ij = exp(-t D_ij - lse_s) (<= 1, no overflow),
       d unif / d u_i = -2t sum_{j != i} w_ij (u_i - u_j) = -2t (u_i r_i - (W u)_i),
   r_i = sum_j w_ij, plus the alignment term +-(2/B)(x_hat_i - z_hat_i), times 1/V for
   "mean"; then chained through F.normalize:
       dL/dx = (g - [||x|| >= eps] (g.u) u) / max(||x||, eps).
   The autograd backward only multiplies this saved gradient by grad_output.
Extra memory is O(V B d): the B x B pair matrix never leaves the tiles. Sums are tree
reductions in the kernels or torch sums over per-row buffers: no atomics, so repeated runs are
bit-identical. Accumulation is in float32 (float64 for float64 inputs); tl.dot runs with
input_precision="ieee" because TF32 Gram tiles would put errors of ~1e-3 into D_ij.

Torch path (CPU by default, and everywhere under ``use_backend("torch")``): the same algorithm
in batched PyTorch ops (``_align_uniform_torch``): all 2V halves at once, the Gram matrices by
one baddbmm, lse by one logsumexp over the masked pairs, the analytic gradient saved by the
forward as on the Triton path. About 30 ops against the autograd graph of the reference's ~80
(its triu gather, index_put backward and logsumexp); extra memory O(V B^2).
``align_uniform_loss_ref`` stays the plain-autograd reference the tests compare both paths with.

Inputs may be float16/bfloat16/float32/float64; the loss and the gradients come back in the
input dtype. Limits: d <= 1024 on the Triton path (one tile spans a row). The scalars t, 2/(B V)
and 1/(2V) are float32 kernel arguments when compiled for a GPU, so float64 results there
carry a ~1e-7 relative error in those factors (the interpreter keeps them exact). Tested on the
Triton CPU interpreter (TRITON_INTERPRET=1), and the same tests/kernels passed on an NVIDIA H200
(triton 3.6.0, float32 and bfloat16; bench/results/cuda-nvidia-h200). At large t the gradients carry
the conditioning of exp(-t D_ij): one float32 ulp of 1 in D_ij moves them by about t * 1.2e-7
relative, whichever order the Gram tile sums in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._launch import accumulator_dtype, block_size, check_tensor, jit, num_warps, tl, triton, use_triton

REDUCE_VIEWS = ("mean", "sum")
NORM_EPS = 1e-12  # F.normalize's default eps
MAX_D = 1024
# Running max of a row with no pair yet: finite, so that exp(old_max - new_max) never sees
# inf - inf; exp(NO_PAIR - anything real) is 0.
NO_PAIR = -1.0e30


@jit
def _clamp_min_eps(norm, EPS: tl.constexpr):
    """max(norm, EPS) with EPS built in norm's dtype: a bare float literal is rounded to float32."""
    return tl.maximum(norm, tl.full(norm.shape, EPS, norm.dtype))


@jit
def _normalize_align_kernel(
    x_ptr,
    z_ptr,
    unit_ptr,
    norm_ptr,
    align_ptr,
    V,
    B,
    D,
    EPS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """x, z [V, B, D] -> unit [2, V, B, D] (x_hat, z_hat), norm [2, V, B], align [V, B]."""
    view = tl.program_id(0).to(tl.int64)
    row_block = tl.program_id(1).to(tl.int64)
    rows = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols[None, :] < D)
    offs = (view * B + rows)[:, None] * D + cols[None, :]
    acc_dtype = unit_ptr.dtype.element_ty
    x = tl.load(x_ptr + offs, mask=tile_ok, other=0.0).to(acc_dtype)
    z = tl.load(z_ptr + offs, mask=tile_ok, other=0.0).to(acc_dtype)
    x_norm = tl.sqrt(tl.sum(x * x, axis=1))
    z_norm = tl.sqrt(tl.sum(z * z, axis=1))
    x_hat = x / _clamp_min_eps(x_norm, EPS)[:, None]
    z_hat = z / _clamp_min_eps(z_norm, EPS)[:, None]
    z_half = V * B * D
    tl.store(unit_ptr + offs, x_hat, mask=tile_ok)
    tl.store(unit_ptr + z_half + offs, z_hat, mask=tile_ok)
    tl.store(norm_ptr + view * B + rows, x_norm, mask=row_ok)
    tl.store(norm_ptr + V * B + view * B + rows, z_norm, mask=row_ok)
    diff = x_hat - z_hat
    tl.store(align_ptr + view * B + rows, tl.sum(diff * diff, axis=1), mask=row_ok)


@jit
def _pair_lse_kernel(
    unit_ptr,
    row_max_ptr,
    row_sum_ptr,
    B,
    D,
    t,
    NO_PAIR_LOGIT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """unit [2V, B, D] -> per row i: row_max [2V, B] = max_{j>i} -t D_ij and
    row_sum [2V, B] = sum_{j>i} exp(-t D_ij - row_max)."""
    half = tl.program_id(0).to(tl.int64)
    row_block = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols[None, :] < D
    base = half * B * D
    rows_i = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows_i < B
    u_i = tl.load(
        unit_ptr + base + rows_i[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok, other=0.0
    )
    sq_i = tl.sum(u_i * u_i, axis=1)
    run_max = tl.full([BLOCK_B], NO_PAIR_LOGIT, dtype=u_i.dtype)
    run_sum = tl.zeros([BLOCK_B], dtype=u_i.dtype)
    for col_block in range(row_block, tl.cdiv(B, BLOCK_B)):
        rows_j = col_block * BLOCK_B + tl.arange(0, BLOCK_B)
        u_j = tl.load(
            unit_ptr + base + rows_j[:, None] * D + cols[None, :],
            mask=(rows_j[:, None] < B) & col_ok,
            other=0.0,
        )
        sq_j = tl.sum(u_j * u_j, axis=1)
        gram = tl.dot(u_i, tl.trans(u_j), input_precision="ieee")
        dist = tl.maximum(sq_i[:, None] + sq_j[None, :] - 2.0 * gram, 0.0)
        is_pair = (rows_i[:, None] < rows_j[None, :]) & (rows_j[None, :] < B)
        logit = tl.where(is_pair, -t * dist, NO_PAIR_LOGIT)
        new_max = tl.maximum(run_max, tl.max(logit, axis=1))
        tile_sum = tl.sum(tl.where(is_pair, tl.exp(logit - new_max[:, None]), 0.0), axis=1)
        run_sum = run_sum * tl.exp(run_max - new_max) + tile_sum
        run_max = new_max
    tl.store(row_max_ptr + half * B + rows_i, run_max, mask=row_ok)
    tl.store(row_sum_ptr + half * B + rows_i, run_sum, mask=row_ok)


@jit
def _grad_kernel(
    unit_ptr,
    norm_ptr,
    lse_ptr,
    grad_ptr,
    V,
    B,
    D,
    t,
    align_scale,
    unif_scale,
    EPS: tl.constexpr,
    NO_PAIR_LOGIT: tl.constexpr,
    HAS_PAIRS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """unit [2V, B, D], norm [2V, B], lse [2V] -> grad [2V, B, D] (dL/dx stacked on dL/dz).

    align_scale = 2 / B * view_scale, unif_scale = view_scale / 2.
    """
    half = tl.program_id(0).to(tl.int64)
    row_block = tl.program_id(1).to(tl.int64)
    partner = (half + V) % (2 * V)  # x view v <-> z view v
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols[None, :] < D
    rows_i = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows_i < B
    tile_ok = row_ok[:, None] & col_ok
    offs_i = rows_i[:, None] * D + cols[None, :]
    u_i = tl.load(unit_ptr + half * B * D + offs_i, mask=tile_ok, other=0.0)
    grad_u = tl.zeros([BLOCK_B, BLOCK_D], dtype=u_i.dtype)
    if HAS_PAIRS:
        sq_i = tl.sum(u_i * u_i, axis=1)
        lse = tl.load(lse_ptr + half + tl.zeros([BLOCK_B], dtype=tl.int64), mask=row_ok, other=0.0)
        weight_sum = tl.zeros([BLOCK_B], dtype=u_i.dtype)
        weighted_u = tl.zeros([BLOCK_B, BLOCK_D], dtype=u_i.dtype)
        for col_block in range(0, tl.cdiv(B, BLOCK_B)):
            rows_j = col_block * BLOCK_B + tl.arange(0, BLOCK_B)
            u_j = tl.load(
                unit_ptr + half * B * D + rows_j[:, None] * D + cols[None, :],
                mask=(rows_j[:, None] < B) & col_ok,
                other=0.0,
            )
            sq_j = tl.sum(u_j * u_j, axis=1)
            gram = tl.dot(u_i, tl.trans(u_j), input_precision="ieee")
            raw_dist = sq_i[:, None] + sq_j[None, :] - 2.0 * gram
            # Pairs whose distance was clamped at 0 pass no gradient (clamp_min's backward).
            has_grad = (rows_i[:, None] != rows_j[None, :]) & (rows_j[None, :] < B) & (raw_dist >= 0.0)
            # Masked before exp: -t D_ii - lse alone could overflow.
            log_weight = tl.where(has_grad, -t * tl.maximum(raw_dist, 0.0) - lse[:, None], NO_PAIR_LOGIT)
            weight = tl.exp(log_weight)
            weight_sum += tl.sum(weight, axis=1)
            weighted_u += tl.dot(weight, u_j, input_precision="ieee")
        grad_u = unif_scale * (-2.0 * t) * (u_i * weight_sum[:, None] - weighted_u)
    u_partner = tl.load(unit_ptr + partner * B * D + offs_i, mask=tile_ok, other=0.0)
    grad_u += align_scale * (u_i - u_partner)
    norm = tl.load(norm_ptr + half * B + rows_i, mask=row_ok, other=1.0)
    radial = tl.where(norm >= EPS, tl.sum(u_i * grad_u, axis=1), 0.0)
    grad_x = (grad_u - radial[:, None] * u_i) / _clamp_min_eps(norm, EPS)[:, None]
    tl.store(grad_ptr + half * B * D + offs_i, grad_x.to(grad_ptr.dtype.element_ty), mask=tile_ok)


def _rows_per_tile(block_d: int) -> int:
    """Rows of a [rows, block_d] tile: up to four such tiles live in registers per program."""
    if block_d <= 64:
        return 64
    if block_d <= 128:
        return 32
    return 16


def _align_uniform_launch(
    x: torch.Tensor, z: torch.Tensor, t: float, reduce_views: str, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x, z [V, B, d] -> (loss scalar in x.dtype, dL/d[x; z] [2, V, B, d] in x.dtype or None)."""
    V, B, D = x.shape
    if D > MAX_D:
        raise ValueError(f"x has d = {D}; the Triton path of align_uniform_loss supports d <= {MAX_D}")
    x = x.contiguous()
    z = z.contiguous()
    acc_dtype = accumulator_dtype(x.dtype)
    BLOCK_D = block_size(D)
    BLOCK_B = _rows_per_tile(BLOCK_D)
    warps = num_warps(BLOCK_B * BLOCK_D)
    row_blocks = triton.cdiv(B, BLOCK_B)
    unit = torch.empty((2, V, B, D), dtype=acc_dtype, device=x.device)
    norm = torch.empty((2, V, B), dtype=acc_dtype, device=x.device)
    align_rows = torch.empty((V, B), dtype=acc_dtype, device=x.device)
    _normalize_align_kernel[(V, row_blocks)](
        x_ptr=x,
        z_ptr=z,
        unit_ptr=unit,
        norm_ptr=norm,
        align_ptr=align_rows,
        V=V,
        B=B,
        D=D,
        EPS=NORM_EPS,
        BLOCK_B=BLOCK_B,
        BLOCK_D=BLOCK_D,
        num_warps=warps,
    )
    au = align_rows.sum(dim=1) / B  # [V]
    has_pairs = B > 1
    lse = torch.zeros(2 * V, dtype=acc_dtype, device=x.device)
    if has_pairs:
        row_max = torch.empty((2 * V, B), dtype=acc_dtype, device=x.device)
        row_sum = torch.empty((2 * V, B), dtype=acc_dtype, device=x.device)
        _pair_lse_kernel[(2 * V, row_blocks)](
            unit_ptr=unit,
            row_max_ptr=row_max,
            row_sum_ptr=row_sum,
            B=B,
            D=D,
            t=float(t),
            NO_PAIR_LOGIT=NO_PAIR,
            BLOCK_B=BLOCK_B,
            BLOCK_D=BLOCK_D,
            num_warps=warps,
        )
        top = row_max.amax(dim=1, keepdim=True)
        lse = top.squeeze(1) + torch.log((row_sum * torch.exp(row_max - top)).sum(dim=1))
        unif = (lse - math.log(B * (B - 1) / 2)).view(2, V)
        au = au + 0.5 * (unif[0] + unif[1])
    view_scale = 1.0 / V if reduce_views == "mean" else 1.0
    loss = (au.sum() * view_scale).to(x.dtype)
    if not need_grad:
        return loss, None
    grad = torch.empty((2, V, B, D), dtype=x.dtype, device=x.device)
    _grad_kernel[(2 * V, row_blocks)](
        unit_ptr=unit,
        norm_ptr=norm,
        lse_ptr=lse,
        grad_ptr=grad,
        V=V,
        B=B,
        D=D,
        t=float(t),
        align_scale=2.0 / B * view_scale,
        unif_scale=0.5 * view_scale,
        EPS=NORM_EPS,
        NO_PAIR_LOGIT=NO_PAIR,
        HAS_PAIRS=has_pairs,
        BLOCK_B=BLOCK_B,
        BLOCK_D=BLOCK_D,
        num_warps=warps,
    )
    return loss, grad


def _align_uniform_torch(
    x: torch.Tensor, z: torch.Tensor, t: float, reduce_views: str, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch path: x, z [V, B, d] -> (loss scalar in x.dtype, dL/d[x; z] [2, V, B, d] in
    x.dtype or None), the Triton path's algorithm in about 30 batched ops on all 2V halves at
    once, with the B x B pair matrices materialised ([2V, B, B])."""
    V, B, _ = x.shape
    acc_dtype = accumulator_dtype(x.dtype)
    halves = torch.cat([x, z]).to(acc_dtype)  # [2V, B, d]: x views, then z views
    norm = torch.linalg.vector_norm(halves, dim=-1, keepdim=True)
    inv_norm = 1.0 / norm.clamp_min(NORM_EPS)
    unit = halves * inv_norm
    view_scale = 1.0 / V if reduce_views == "mean" else 1.0
    diff = unit[:V] - unit[V:]
    au = diff.square().sum(-1).mean(-1)  # [V] alignment
    if B > 1:
        sq = unit.square().sum(-1)
        # D_ij before the clamp at 0, as the reference: |u_i|^2 + |u_j|^2 - 2 u_i.u_j.
        raw_dist = torch.baddbmm(sq[:, :, None] + sq[:, None, :], unit, unit.transpose(1, 2), alpha=-2.0)
        not_pair = torch.ones(B, B, dtype=torch.bool, device=x.device).tril_()  # j <= i
        logits = raw_dist.clamp_min(0.0).mul_(-t).masked_fill_(not_pair, -math.inf)
        lse = torch.logsumexp(logits.flatten(1), dim=-1)  # [2V]
        unif = lse - math.log(B * (B - 1) / 2)
        au = au + 0.5 * (unif[:V] + unif[V:])
    loss = (au.sum() * view_scale).to(x.dtype)
    if not need_grad:
        return loss, None
    grad_unit = torch.cat([diff, -diff]).mul_(2.0 / B * view_scale)
    if B > 1:
        # Pair weights w_ij = exp(-t D_ij - lse) of the pairs i < j, none where the clamp at 0
        # was active (clamp_min's backward), mirrored so that row i sees its pairs on both sides.
        weight = logits.sub_(lse[:, None, None]).exp_().masked_fill_(raw_dist < 0, 0.0)
        weight = weight + weight.transpose(1, 2)
        unif_grad = unit * weight.sum(-1, keepdim=True) - torch.bmm(weight, unit)
        grad_unit.add_(unif_grad, alpha=-t * view_scale)  # -2t times unif_scale = view_scale / 2
    radial = (unit * grad_unit).sum(-1, keepdim=True).mul_(norm >= NORM_EPS)
    grad = (grad_unit - radial * unit).mul_(inv_norm)
    return loss, grad.to(x.dtype).view(2, V, B, -1)


class AlignUniformLossFunction(torch.autograd.Function):
    """Forward on the Triton or the torch path that also computes dL/dx, dL/dz; backward scales
    them by grad_output."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, z: torch.Tensor, t: float, reduce_views: str, triton_path: bool
    ) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        launch = _align_uniform_launch if triton_path else _align_uniform_torch
        loss, grad = launch(x, z, t, reduce_views, need_grad)
        if grad is not None:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(
        ctx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        (grad,) = ctx.saved_tensors
        scaled = grad * grad_output
        grad_x = scaled[0] if ctx.needs_input_grad[0] else None
        grad_z = scaled[1] if ctx.needs_input_grad[1] else None
        return grad_x, grad_z, None, None, None


def _uniformity_ref(u: torch.Tensor, t: float) -> torch.Tensor:
    """u [V, B, d] unit rows -> [V]: log of the mean over pairs i<j of exp(-t ||u_i - u_j||^2)."""
    V, B, _ = u.shape
    if B < 2:
        return u.sum(dim=(1, 2)) * 0.0
    sq = u.pow(2).sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * u @ u.transpose(1, 2)).clamp_min(0.0)
    iu = torch.triu_indices(B, B, offset=1, device=u.device)
    pairs = d2[:, iu[0], iu[1]]  # [V, B(B-1)/2]
    return torch.logsumexp(-t * pairs, dim=-1) - math.log(pairs.shape[-1])


def align_uniform_loss_ref(
    x: torch.Tensor, z: torch.Tensor, t: float = 2.0, reduce_views: str = "mean"
) -> torch.Tensor:
    """Pure-PyTorch reference. x, z [V, B, d] -> scalar."""
    xh = F.normalize(x, dim=-1)
    zh = F.normalize(z, dim=-1)
    align = (xh - zh).pow(2).sum(-1).mean(-1)  # [V]
    au = align + 0.5 * (_uniformity_ref(xh, t) + _uniformity_ref(zh, t))
    return au.mean() if reduce_views == "mean" else au.sum()


def _check_inputs(x, z, t, reduce_views):
    if reduce_views not in REDUCE_VIEWS:
        raise ValueError(f"reduce_views must be one of {REDUCE_VIEWS}, got {reduce_views!r}")
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise ValueError(f"t must be a positive finite number, got {t!r}")
    check_tensor("x", x, ("V", "B", "d"))
    check_tensor("z", z, tuple(x.shape), like=x)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have at least one view and one row, got shape {list(x.shape)}")


def align_uniform_loss(
    x: torch.Tensor, z: torch.Tensor, t: float = 2.0, reduce_views: str = "mean"
) -> torch.Tensor:
    """Alignment + uniformity loss. x, z [V, B, d] behaviour and text views -> scalar (first-order
    gradients only: the backward is the saved analytic gradient)."""
    _check_inputs(x, z, t, reduce_views)
    triton_path = use_triton(x.device, "align_uniform_loss")
    if torch.is_grad_enabled() and (x.requires_grad or z.requires_grad):
        return AlignUniformLossFunction.apply(x, z, t, reduce_views, triton_path)
    launch = _align_uniform_launch if triton_path else _align_uniform_torch
    return launch(x, z, t, reduce_views, need_grad=False)[0]
