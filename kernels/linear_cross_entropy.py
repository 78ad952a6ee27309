"""linear_cross_entropy: the scoring head's linear layer fused with the cross-entropy loss.

x [B, d] session representations, weight [n, d] item embeddings, target [B] int64 class
indices in [0, n). With ``first_class`` = k > 0 the first k rows of weight are not classes (a
tied table's padding row: ``first_class=1`` with the whole ``embedding.weight``): everything
below applies to weight[k:] and target - k, and those k rows get a zero gradient.

    logits = x @ weight^T                          (never materialised as a whole [B, n])
    loss_b = logsumexp_j logits_bj - logits_b,target_b
    loss   = mean_b loss_b ("mean") | sum_b loss_b ("sum") | loss_b ("none")

Only x, weight, target and the per-row lse [B] are saved for backward, which recomputes the
logits one item chunk at a time. With s_b the row scale (grad_output / B for "mean",
grad_output for "sum", grad_output_b for "none"):

    G = (softmax(logits) - onehot(target)) * s[:, None]   (per chunk: exp(logits - lse) - onehot)
    dx = sum_chunks G_chunk @ W_chunk                        dW_chunk = G_chunk^T @ x

Torch path (CPU by default, and everywhere under ``use_backend("torch")``): the same algorithm
in PyTorch, ``chunk_size`` rows of weight at a time; the forward merges the chunks' lse with
``logaddexp`` and takes the target logit as (x * weight[target]).sum(-1). Memory beyond the
inputs and gradients is O(B * chunk_size). The default chunk keeps a [B, chunk] float tensor
under 64 MiB. When the whole catalog is one chunk, the forward keeps the exponentiated logits
for backward instead of recomputing them, so small catalogs cost the 3 GEMMs of the unfused
graph rather than 4; it computes them in tiles of about one L2 cache (1 MiB), stored transposed
([n, B], so each tile's GEMM writes contiguous rows), each exponentiated and summed while in
cache with its own row max, the tiles' (max, sum) merged into lse; backward scales each tile
by exp(max - lse) * s into one reused buffer and runs the dW and dx GEMMs tile by tile, and
subtracts the one-hot part as B rows (dx -= s * weight[target], dW[target] -= s * x). The
GEMMs run in the inputs' dtype: float16/bfloat16 inputs (the scoring head under autocast) give
logits rounded to it, as the unfused matmul under autocast gives them, which are then
exponentiated and summed in float32, and G is rounded to it for the gradient GEMMs. On a CPU
without AVX512-BF16 or AMX a bfloat16 GEMM runs many times slower than a float32 one.

Triton path (CUDA, or CPU under TRITON_INTERPRET=1):

1. ``_lce_fwd_kernel`` (grid row blocks x item chunks): each program walks the item tiles of
   its chunk, builds logits tiles with tl.dot (d in BLOCK_K slices), keeps an online (max, sum)
   per row and picks out the target logit. The host merges the chunks' (max, sum) stably into
   lse and forms loss_b = lse_b - logit_b,target (NaN for a target outside [0, n)).
2. ``_lce_bwd_x_kernel`` (grid row blocks x item chunks x d blocks): recomputes the logits
   tiles, G, and accumulates G @ W_tile into a per-chunk partial dx [chunks, B, d]; the host sums
   the partials.
3. ``_lce_bwd_w_kernel`` (grid item tiles x d blocks): each program loops over all row tiles,
   recomputes G and accumulates G^T @ x into its own rows of dW.

Every output element is written by one program and partial sums are added on the host: no
atomics, so forward and backward are bit-reproducible. The item chunks of the forward and of dx
give parallelism when B is small: ``chunk_size`` (rounded up to whole item tiles) sets them; by
default they give ~4 programs per SM on CUDA and a single chunk under the interpreter. Forward
plus backward cost ~5 [B, n, d] GEMMs (the logits are recomputed for dx and for dW) against 3
unfused.

Numerics: accumulation is float32 (float64 for float64 inputs); the tl.dot operands are upcast
to that dtype with input_precision="ieee" (no TF32, which would put ~1e-3 relative errors into
the logits). On a GPU, float16/bfloat16 inputs go to tl.dot as they are (their products are
exact in the float32 accumulator); G is then rounded to the input dtype for the gradient dots,
as the unfused PyTorch graph does. Under the interpreter every dot is in float32/float64 (its
bfloat16 tl.dot is wrong in triton 3.7.1). Loss and gradients come back in the input dtype.

Limits: B, n, d >= 1, x and weight of one floating dtype, target int64 on x's device. No
``ignore_index``: targets must lie in [0, n). That is checked with a ValueError for CPU tensors
only; for CUDA tensors the check would need a host sync, so it is skipped and a row whose target
is out of range gets a NaN loss instead (on both paths). Triton path: B * d < 2**31 (the dW
kernel indexes x with int32 offsets; int64 ones made ptxas spill), checked with a ValueError;
n and d are unbounded (tiled), but dx and dW recompute the logits for each block of 128
gradient columns, so d > 128 costs extra recomputation.

Tested on CPU (the PyTorch path, and the Triton interpreter in float16, bfloat16, float32 and
float64) and on an NVIDIA H200 (triton 3.6.0, float32 and bfloat16; bench/results/cuda-nvidia-h200).
The three kernels compile for sm_90 with triton 3.7.1 and its ptxas, without register spills
for float32, bfloat16 and float64 at B=512, n=400k, d=100 (64 x 64 tiles, 8 warps); not yet
tuned on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._launch import (
    accumulator_dtype,
    block_size,
    check_tensor,
    interpreter_enabled,
    jit,
    num_warps,
    tl,
    triton,
    use_triton,
)

REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The torch path's default chunk keeps one [B, chunk] logits tensor under this many bytes.
CHUNK_BYTES = 64 * 2**20
# A single chunk is computed in tiles of this many bytes of logits: about one core's L2 cache,
# so each tile is exponentiated and summed while in cache instead of in passes over [B, n] in
# memory, and the GEMMs run on blocks small enough to stay cache-resident.
TILE_BYTES = 2**20
MAX_BLOCK_ROWS = 64
MAX_BLOCK_ITEMS = 64
# Columns of d per tl.dot: 32 when the operands are upcast to float32/float64 (FMA dots; 64
# made ptxas spill for sm_90), 64 for float16/bfloat16 tensor-core dots.
MAX_BLOCK_K = 32
MAX_BLOCK_K_NATIVE = 64
MAX_BLOCK_D = 128
# Programs per SM that the default item chunks of the Triton path aim for on CUDA.
PROGRAMS_PER_SM = 4
MAX_GRID_Y = 65535
# _lce_bwd_w_kernel indexes x with int32 offsets.
MAX_X_ELEMENTS = 2**31 - 1


@jit
def _logits_tile(
    x_ptr,
    w_ptr,
    rows,
    items,
    B,
    N,
    D,
    ACC_FP64: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """x[rows] @ w[items]^T as a [BLOCK_B, BLOCK_N] tile in the accumulator dtype; rows and items
    out of range give 0."""
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    row_ok = rows < B
    item_ok = items < N
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=acc_dtype)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < D
        x = tl.load(x_ptr + rows[:, None] * D + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(
            w_ptr + items[:, None] * D + ks[None, :], mask=item_ok[:, None] & k_ok[None, :], other=0.0
        )
        if not NATIVE_DOT:
            x = x.to(acc_dtype)
            w = w.to(acc_dtype)
        acc += tl.dot(x, tl.trans(w), input_precision="ieee")
    return acc


@jit
def _grad_logits_tile(logits, items, N, target, lse, scale):
    """(softmax - onehot(target)) * scale of a logits tile; 0 for items out of range."""
    prob = tl.exp(logits - lse[:, None])
    grad = tl.where(items[None, :] == target[:, None], prob - 1.0, prob) * scale[:, None]
    return tl.where(items[None, :] < N, grad, 0.0)


@jit
def _lce_fwd_kernel(
    x_ptr,
    w_ptr,
    target_ptr,
    max_ptr,
    sum_ptr,
    target_logit_ptr,
    B,
    N,
    D,
    tiles_per_chunk,
    ACC_FP64: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One (row block, item chunk) -> max, sum [chunks, B] (online log-sum-exp of the chunk) and
    target_logit [chunks, B] (0 where the target lies in another chunk)."""
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    row_block = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    rows = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    target = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    run_max = tl.full([BLOCK_B], float("-inf"), acc_dtype)
    run_sum = tl.zeros([BLOCK_B], dtype=acc_dtype)
    target_logit = tl.zeros([BLOCK_B], dtype=acc_dtype)
    first = chunk * tiles_per_chunk * BLOCK_N
    last = tl.minimum(first + tiles_per_chunk * BLOCK_N, N)
    # Every chunk holds at least one item, so run_max is finite after the first tile and
    # exp(run_max - new_max) never sees -inf - -inf.
    for n0 in range(first, last, BLOCK_N):
        items = n0 + tl.arange(0, BLOCK_N)
        logits = _logits_tile(
            x_ptr, w_ptr, rows, items, B, N, D, ACC_FP64, NATIVE_DOT, BLOCK_B, BLOCK_N, BLOCK_K
        )
        logits = tl.where(items[None, :] < N, logits, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
        run_max = new_max
        is_target = items[None, :] == target[:, None]
        target_logit += tl.sum(tl.where(is_target, logits, 0.0), axis=1)
    out = chunk * B + rows
    tl.store(max_ptr + out, run_max, mask=row_ok)
    tl.store(sum_ptr + out, run_sum, mask=row_ok)
    tl.store(target_logit_ptr + out, target_logit, mask=row_ok)


@jit
def _lce_bwd_x_kernel(
    x_ptr,
    w_ptr,
    target_ptr,
    lse_ptr,
    scale_ptr,
    grad_x_ptr,
    B,
    N,
    D,
    tiles_per_chunk,
    ACC_FP64: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One (row block, item chunk, d block) -> grad_x [chunks, B, D] (accumulator dtype): the
    chunk's G @ W[:, d block]."""
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    row_block = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    d_block = tl.program_id(2).to(tl.int64)
    rows = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    target = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)  # 0 silences rows out of range
    acc = tl.zeros((BLOCK_B, BLOCK_D), dtype=acc_dtype)
    first = chunk * tiles_per_chunk * BLOCK_N
    last = tl.minimum(first + tiles_per_chunk * BLOCK_N, N)
    for n0 in range(first, last, BLOCK_N):
        items = n0 + tl.arange(0, BLOCK_N)
        logits = _logits_tile(
            x_ptr, w_ptr, rows, items, B, N, D, ACC_FP64, NATIVE_DOT, BLOCK_B, BLOCK_N, BLOCK_K
        )
        grad = _grad_logits_tile(logits, items, N, target, lse, scale)
        w = tl.load(
            w_ptr + items[:, None] * D + cols[None, :], mask=(items < N)[:, None] & col_ok[None, :], other=0.0
        )
        if NATIVE_DOT:
            grad = grad.to(w.dtype)
        else:
            w = w.to(acc_dtype)
        acc += tl.dot(grad, w, input_precision="ieee")
    out = (chunk * B + rows)[:, None] * D + cols[None, :]
    tl.store(grad_x_ptr + out, acc, mask=row_ok[:, None] & col_ok[None, :])


@jit
def _lce_bwd_w_kernel(
    x_ptr,
    w_ptr,
    target_ptr,
    lse_ptr,
    scale_ptr,
    grad_w_ptr,
    B,
    N,
    D,
    ACC_FP64: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One (item tile, d block) -> grad_w [N, D] (weight dtype): G^T @ x over all rows."""
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    item_block = tl.program_id(0).to(tl.int64)
    d_block = tl.program_id(1).to(tl.int64)
    items = item_block * BLOCK_N + tl.arange(0, BLOCK_N)
    item_ok = items < N
    cols = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=acc_dtype)
    for b0 in range(0, B, BLOCK_B):
        # int32 rows (int64 row offsets here made ptxas spill for sm_90): the launcher checks
        # B * d < 2**31.
        rows = b0 + tl.arange(0, BLOCK_B)
        row_ok = rows < B
        target = tl.load(target_ptr + rows, mask=row_ok, other=-1)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
        logits = _logits_tile(
            x_ptr, w_ptr, rows, items, B, N, D, ACC_FP64, NATIVE_DOT, BLOCK_B, BLOCK_N, BLOCK_K
        )
        grad = _grad_logits_tile(logits, items, N, target, lse, scale)
        x = tl.load(
            x_ptr + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0
        )
        if NATIVE_DOT:
            grad = grad.to(x.dtype)
        else:
            x = x.to(acc_dtype)
        acc += tl.dot(tl.trans(grad), x, input_precision="ieee")
    out = items[:, None] * D + cols[None, :]
    tl.store(grad_w_ptr + out, acc.to(grad_w_ptr.dtype.element_ty), mask=item_ok[:, None] & col_ok[None, :])


class _Config:
    """Tiles and item chunks of one Triton call: BLOCK_B rows x BLOCK_N items per logits tile,
    BLOCK_K columns of d per tl.dot, BLOCK_D gradient columns per program, ``tiles`` item tiles
    per chunk and ``chunks`` chunks. ``sms``: the GPU's SM count (None: one chunk by default).
    ``gpu``: whether the kernels are compiled for a GPU (default: unless TRITON_INTERPRET=1)."""

    def __init__(
        self,
        B: int,
        N: int,
        D: int,
        dtype: torch.dtype,
        chunk_size: int | None,
        sms: int | None = None,
        gpu: bool | None = None,
    ) -> None:
        gpu = not interpreter_enabled() if gpu is None else gpu
        self.native_dot = gpu and dtype in (torch.float16, torch.bfloat16)
        self.BLOCK_B = block_size(B, hi=MAX_BLOCK_ROWS)
        self.BLOCK_N = block_size(N, hi=MAX_BLOCK_ITEMS)
        self.BLOCK_K = block_size(D, hi=MAX_BLOCK_K_NATIVE if self.native_dot else MAX_BLOCK_K)
        self.BLOCK_D = block_size(D, hi=MAX_BLOCK_D)
        self.row_blocks = triton.cdiv(B, self.BLOCK_B)
        self.item_tiles = triton.cdiv(N, self.BLOCK_N)
        self.d_blocks = triton.cdiv(D, self.BLOCK_D)
        if chunk_size is None:
            chunks = 1 if sms is None else triton.cdiv(PROGRAMS_PER_SM * sms, self.row_blocks)
            self.tiles = triton.cdiv(self.item_tiles, max(1, min(chunks, self.item_tiles)))
        else:
            self.tiles = triton.cdiv(chunk_size, self.BLOCK_N)
        # The chunks span grid axis 1, which CUDA caps at 65535.
        self.tiles = max(self.tiles, triton.cdiv(self.item_tiles, MAX_GRID_Y))
        self.chunks = triton.cdiv(self.item_tiles, self.tiles)
        # Full 64 x 64 tiles with 8 warps compile without register spills for sm_90.
        self.warps = num_warps(2 * max(self.BLOCK_B, self.BLOCK_N) * max(self.BLOCK_N, self.BLOCK_D))

    @classmethod
    def for_inputs(cls, x: torch.Tensor, weight: torch.Tensor, chunk_size: int | None) -> _Config:
        sms = None
        if x.device.type == "cuda" and not interpreter_enabled():
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        return cls(x.shape[0], weight.shape[0], x.shape[1], x.dtype, chunk_size, sms)

    def constexprs(self, acc_fp64: bool, with_block_d: bool) -> dict[str, object]:
        """The constexpr kernel arguments (also used to compile the kernels for a GPU in tests)."""
        out = dict(
            ACC_FP64=acc_fp64,
            NATIVE_DOT=self.native_dot,
            BLOCK_B=self.BLOCK_B,
            BLOCK_N=self.BLOCK_N,
            BLOCK_K=self.BLOCK_K,
        )
        if with_block_d:
            out["BLOCK_D"] = self.BLOCK_D
        return out


def _nan_out_of_range(loss_rows: torch.Tensor, target: torch.Tensor, n_items: int) -> torch.Tensor:
    """loss_rows with NaN where the target is not a class index (checked on device, no sync)."""
    valid = (target >= 0) & (target < n_items)
    return torch.where(valid, loss_rows, torch.full_like(loss_rows, float("nan")))


def _reduce(loss_rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss_rows.mean()
    if reduction == "sum":
        return loss_rows.sum()
    return loss_rows


def _row_scale(grad_output: torch.Tensor, B: int, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """d(loss)/d(loss_b) * grad_output as a contiguous [B] tensor of ``dtype``."""
    g = grad_output.to(dtype)
    if reduction == "mean":
        g = g / B
    return g.expand(B).contiguous()


def _triton_forward(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, cfg: _Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous inputs -> (loss_b [B], lse [B]) in the accumulator dtype."""
    B, D = x.shape
    N = weight.shape[0]
    if B * D > MAX_X_ELEMENTS:
        raise ValueError(f"x has B * d = {B * D} elements; the Triton path supports up to {MAX_X_ELEMENTS}")
    acc_dtype = accumulator_dtype(x.dtype)
    part_max = torch.empty((cfg.chunks, B), dtype=acc_dtype, device=x.device)
    part_sum = torch.empty_like(part_max)
    part_target = torch.empty_like(part_max)
    _lce_fwd_kernel[(cfg.row_blocks, cfg.chunks)](
        x_ptr=x,
        w_ptr=weight,
        target_ptr=target,
        max_ptr=part_max,
        sum_ptr=part_sum,
        target_logit_ptr=part_target,
        B=B,
        N=N,
        D=D,
        tiles_per_chunk=cfg.tiles,
        num_warps=cfg.warps,
        **cfg.constexprs(acc_dtype == torch.float64, with_block_d=False),
    )
    top = part_max.amax(dim=0)
    lse = top + torch.log((part_sum * torch.exp(part_max - top)).sum(dim=0))
    return _nan_out_of_range(lse - part_target.sum(dim=0), target, N), lse


def _triton_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    scale: torch.Tensor,
    cfg: _Config,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Contiguous inputs, lse and the row scale [B] (accumulator dtype) -> (grad_x, grad_w) in
    the input dtype, None where not needed."""
    B, D = x.shape
    N = weight.shape[0]
    acc_dtype = accumulator_dtype(x.dtype)
    common = dict(
        x_ptr=x,
        w_ptr=weight,
        target_ptr=target,
        lse_ptr=lse,
        scale_ptr=scale,
        B=B,
        N=N,
        D=D,
        num_warps=cfg.warps,
        **cfg.constexprs(acc_dtype == torch.float64, with_block_d=True),
    )
    grad_x = grad_w = None
    if need_x:
        partial = torch.empty((cfg.chunks, B, D), dtype=acc_dtype, device=x.device)
        _lce_bwd_x_kernel[(cfg.row_blocks, cfg.chunks, cfg.d_blocks)](
            grad_x_ptr=partial, tiles_per_chunk=cfg.tiles, **common
        )
        grad_x = (partial[0] if cfg.chunks == 1 else partial.sum(dim=0)).to(x.dtype)
    if need_w:
        grad_w = torch.empty_like(weight)
        _lce_bwd_w_kernel[(cfg.item_tiles, cfg.d_blocks)](grad_w_ptr=grad_w, **common)
    return grad_x, grad_w


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Triton forward and backward of :func:`linear_cross_entropy_ref`; target gets no gradient."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        chunk_size: int | None,
        reduction: str,
    ) -> torch.Tensor:
        x, weight, target = x.contiguous(), weight.contiguous(), target.contiguous()
        cfg = _Config.for_inputs(x, weight, chunk_size)
        loss_rows, lse = _triton_forward(x, weight, target, cfg)
        ctx.cfg = cfg
        ctx.reduction = reduction
        ctx.save_for_backward(x, weight, target, lse)
        return _reduce(loss_rows, reduction).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        x, weight, target, lse = ctx.saved_tensors
        scale = _row_scale(grad_output, x.shape[0], ctx.reduction, lse.dtype)
        grad_x, grad_w = _triton_backward(
            x, weight, target, lse, scale, ctx.cfg, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_x, grad_w, None, None, None


def default_chunk_size(B: int, n_items: int, dtype: torch.dtype) -> int:
    """Items per chunk of the torch path: a [B, chunk] accumulator-dtype tensor stays under
    CHUNK_BYTES."""
    elem = torch.empty((), dtype=accumulator_dtype(dtype)).element_size()
    return max(1, min(n_items, CHUNK_BYTES // (elem * B)))


class ChunkedLinearCrossEntropyFunction(torch.autograd.Function):
    """PyTorch forward and backward over item chunks; saves x, weight, target and lse only
    (and, for a single chunk, the tiles' exponentials instead of lse). Rows of weight before
    ``first_class`` are not classes; their gradient is zero."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        chunk_size: int | None,
        reduction: str,
        first_class: int = 0,
    ) -> torch.Tensor:
        classes = weight[first_class:]
        target = target - first_class
        B, N = x.shape[0], classes.shape[0]
        chunk = chunk_size or default_chunk_size(B, N, x.dtype)
        acc_dtype = accumulator_dtype(x.dtype)
        xa = x.to(acc_dtype)
        ctx.chunk = chunk
        ctx.reduction = reduction
        ctx.first_class = first_class
        ctx.tiles = None
        # clamp keeps the gathers in range on any device; such rows become NaN below.
        clamped = target.clamp(0, N - 1)
        target_logit = (xa * classes[clamped].to(acc_dtype)).sum(dim=1)
        if N <= chunk:
            # One chunk: its logits fit the memory bound anyway, so keep them (exponentiated)
            # for backward instead of recomputing them there: 3 GEMMs in all, as unfused.
            tile = max(1, TILE_BYTES // (B * xa.element_size()))  # items per tile
            exps, factors, lse = _tiled_softmax(x, classes, tile, acc_dtype)
            if any(ctx.needs_input_grad[:2]):
                ctx.tiles = (exps, factors, tile)
        else:
            lse = torch.full((B,), float("-inf"), dtype=acc_dtype, device=x.device)
            for start in range(0, N, chunk):
                logits = (x @ classes[start : start + chunk].T).to(acc_dtype)
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
        loss_rows = _nan_out_of_range(lse - target_logit, target, N)
        ctx.save_for_backward(x, weight, target, lse)
        return _reduce(loss_rows, reduction).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        x, weight, target, lse = ctx.saved_tensors
        classes = weight[ctx.first_class :]
        B, N = x.shape[0], classes.shape[0]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc_dtype = lse.dtype
        xa = x.to(acc_dtype)
        scale = _row_scale(grad_output, B, ctx.reduction, acc_dtype)
        grad_x = torch.zeros_like(xa) if need_x else None
        grad_w = None
        if need_w:
            grad_w = torch.empty_like(weight)
            grad_w[: ctx.first_class].zero_()
        grad_classes = grad_w[ctx.first_class :] if need_w else None
        if ctx.tiles is not None:
            _tiled_backward(*ctx.tiles, x, classes, scale, grad_x, grad_classes)
            # The one-hot part of softmax - onehot, without touching the saved tiles.
            clamped = target.clamp(0, N - 1)
            if need_x:
                grad_x -= scale[:, None] * classes[clamped].to(acc_dtype)
            if need_w:
                grad_classes.index_add_(0, clamped, (-scale[:, None] * xa).to(weight.dtype))
            return (grad_x.to(x.dtype) if need_x else None), grad_w, None, None, None, None
        for start in range(0, N, ctx.chunk):
            w = classes[start : start + ctx.chunk]
            grad = torch.exp((x @ w.T).to(acc_dtype) - lse[:, None])
            _subtract_onehot(grad, target, start)
            grad *= scale[:, None]
            grad = grad.to(x.dtype)  # the gradient GEMMs run in the inputs' dtype too
            if need_x:
                grad_x += grad @ w
            if need_w:
                grad_classes[start : start + w.shape[0]] = grad.T @ x
        return (grad_x.to(x.dtype) if need_x else None), grad_w, None, None, None, None


def _tiled_softmax(
    x: torch.Tensor, weight: torch.Tensor, tile: int, acc_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The softmax of x @ weight^T, ``tile`` items at a time.

    x [B, d], weight [N, d] (one dtype; the GEMMs run in it) -> (exps [N, B], factors [tiles,
    B], lse [B], in ``acc_dtype``), where exps holds exp(logits - the tile's row max),
    transposed, so that the softmax of tile t is ``exps[tile t] * factors[t]``. Each tile's
    logits are exponentiated and summed while they are in cache, and the GEMMs write [tile, B]
    blocks with contiguous rows."""
    B, N = x.shape[0], weight.shape[0]
    exps = torch.empty(N, B, dtype=acc_dtype, device=x.device)
    maxes, sums = [], []
    for start in range(0, N, tile):
        block = exps[start : start + tile]
        if x.dtype == acc_dtype:
            torch.mm(weight[start : start + tile], x.T, out=block)
        else:  # logits rounded to the inputs' dtype, as the unfused matmul rounds them
            block.copy_(weight[start : start + tile] @ x.T)
        peak = block.amax(dim=0)
        block.sub_(peak).exp_()
        maxes.append(peak)
        sums.append(block.sum(dim=0))
    maxes, sums = torch.stack(maxes), torch.stack(sums)
    top = maxes.amax(dim=0)
    lse = top + (sums * torch.exp(maxes - top)).sum(dim=0).log()
    return exps, torch.exp(maxes - lse), lse


def _tiled_backward(
    exps: torch.Tensor,
    factors: torch.Tensor,
    tile: int,
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    grad_x: torch.Tensor | None,
    grad_w: torch.Tensor | None,
) -> None:
    """The softmax part of the gradients from :func:`_tiled_softmax`'s tiles. With P the softmax
    [B, N] and G = P * scale[:, None]: grad_x [B, d] (the tiles' dtype) += G @ weight; grad_w
    [N, d] (weight's dtype) = G^T @ x (overwritten). The GEMMs run in x's and weight's dtype, G
    rounded to it. The tiles are left as they are: a second backward (retain_graph) reuses them."""
    B, N = x.shape[0], weight.shape[0]
    buffer = torch.empty(min(tile, N), B, dtype=exps.dtype, device=x.device)
    factors = factors * scale
    for index, start in enumerate(range(0, N, tile)):
        rows = min(tile, N - start)
        grad = torch.mul(exps[start : start + rows], factors[index], out=buffer[:rows])  # [rows, B]
        grad = grad.to(x.dtype)
        if grad_w is not None:
            torch.mm(grad, x, out=grad_w[start : start + rows])
        if grad_x is not None:
            if grad_x.dtype == grad.dtype:
                grad_x.addmm_(grad.T, weight[start : start + rows])
            else:
                grad_x += grad.T @ weight[start : start + rows]


def _subtract_onehot(grad: torch.Tensor, target: torch.Tensor, start: int) -> None:
    """grad [B, c] (items start..start+c-1) -= onehot(target), in place, for the rows whose
    target falls in this chunk, without a host sync."""
    in_chunk = (target >= start) & (target < start + grad.shape[1])
    col = (target - start).clamp(0, grad.shape[1] - 1)[:, None]
    grad.scatter_add_(1, col, -in_chunk.to(grad.dtype)[:, None])


def linear_cross_entropy_ref(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Pure-PyTorch reference (materialises the [B, n] logits). x [B, d]; weight [n, d];
    target [B] int64 in [0, n)."""
    return F.cross_entropy(x @ weight.T, target, reduction=reduction)


def _check_inputs(x, weight, target, chunk_size, reduction, first_class):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    check_tensor("x", x, ("B", "d"))
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must have a floating dtype in {FLOAT_DTYPES}, got {x.dtype}")
    B, d = x.shape
    if B == 0 or d == 0:
        raise ValueError(f"x must have at least one row and one column, got shape {list(x.shape)}")
    check_tensor("weight", weight, ("n_items", d), like=x)
    if isinstance(first_class, bool) or not isinstance(first_class, int) or first_class < 0:
        raise ValueError(f"first_class must be a non-negative int, got {first_class!r}")
    n_rows = weight.shape[0]
    if n_rows <= first_class:
        raise ValueError(
            f"weight must have at least one class row after its first {first_class}, got {n_rows} rows"
        )
    check_tensor("target", target, (B,), dtype=torch.int64, device=x.device)
    # Range check only where it needs no host sync; CUDA rows out of range get a NaN loss.
    if target.device.type == "cpu":
        outside = (target < first_class) | (target >= n_rows)
        if bool(outside.any()):
            bad = target[outside][0].item()
            raise ValueError(f"target must lie in [{first_class}, {n_rows}) (weight's class rows), got {bad}")


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    chunk_size: int | None = None,
    reduction: str = "mean",
    first_class: int = 0,
) -> torch.Tensor:
    """Cross-entropy of the logits x @ weight^T against target, without materialising them.

    x [B, d]; weight [n, d]; target [B] int64 in [first_class, n) -> scalar ("mean", "sum") or
    [B] ("none"). ``chunk_size``: items per chunk (torch path: rows of weight per matmul; Triton
    path: items per program of the forward and of dx, rounded up to whole item tiles); None
    picks a default. ``first_class``: rows of weight before it are not classes (a tied table's
    padding row): they get no logit and a zero gradient, and targets index weight's rows. Passing
    the whole table this way, instead of ``weight[first_class:]``, spares the torch path the
    slice's backward (a zero-filled table-sized gradient and a copy into it)."""
    _check_inputs(x, weight, target, chunk_size, reduction, first_class)
    if use_triton(x.device, "linear_cross_entropy"):
        classes, target = weight[first_class:], target - first_class
        return LinearCrossEntropyFunction.apply(x, classes, target, chunk_size, reduction)
    return ChunkedLinearCrossEntropyFunction.apply(x, weight, target, chunk_size, reduction, first_class)
