"""linear_cross_entropy: the chunked PyTorch path and the Triton path (CPU interpreter, or the GPU
with LLM4SBR_TEST_DEVICE=cuda) against the float64 reference, gradcheck, properties, determinism,
memory, input checks and a compile for sm_90."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from budget import assert_within_budget
from gpu_compile import (
    check_spills,
    compile_for_gpu,
    format_report,
    kernel_names,
    record_launches,
    unique_jobs,
)
from hypothesis import given
from hypothesis import strategies as st
from kernel_device import BF16_REL, PRECISIONS, cuda_only, to_device
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from llm4sbr.kernels._launch import HAS_TRITON, use_backend
from llm4sbr.kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref

# The package exports the function linear_cross_entropy under the submodule's name, so
# `import llm4sbr.kernels.linear_cross_entropy as lce` would bind the function.
lce = importlib.import_module("llm4sbr.kernels.linear_cross_entropy")

# Tiny tensors throughout: a second OpenMP thread only adds contention.
pytestmark = pytest.mark.usefixtures("one_thread")

REDUCTIONS = ("mean", "sum", "none")
PATHS = ("torch", "triton")

# (B, n_items, d, chunk_size): B = 1, primes, n not a multiple of the chunk, chunk_size = 1,
# d not a power of two; (70, 200, 7) spans two row tiles, d = 131 two gradient column blocks and
# five d slices per tl.dot, chunk 64 / 10 give several item chunks on the Triton path too.
SHAPES = [
    (1, 1, 1, None),
    (1, 37, 7, 1),
    (2, 5, 3, 2),
    (7, 97, 13, 10),
    (19, 131, 100, 64),
    (70, 200, 7, None),
    (5, 67, 131, 3),
]


def _inputs(
    B: int, n: int, d: int, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, d], weight [n, d] (logits of std ~2) and target [B] int64 in [0, n), on the test device."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=gen, dtype=torch.float64)
    weight = torch.randn(n, d, generator=gen, dtype=torch.float64) * (2.0 / d**0.5)
    target = torch.randint(0, n, (B,), generator=gen)
    return to_device(x.to(dtype)), to_device(weight.to(dtype)), to_device(target)


def _loss_fn(path: str) -> Callable[..., torch.Tensor]:
    def loss(x, weight, target, chunk_size=None, reduction="mean"):
        with use_backend(path):
            return linear_cross_entropy(x, weight, target, chunk_size=chunk_size, reduction=reduction)

    return loss


def _ref(x, weight, target, chunk_size=None, reduction="mean"):
    return linear_cross_entropy_ref(x, weight, target, reduction)


def _loss_and_grads(
    loss_fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    grad_out: torch.Tensor,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and (dL/dx, dL/dweight) of <grad_out, loss_fn(x, weight, target)> on fresh leaves."""
    x = x.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = loss_fn(x, weight, target, **kwargs)
    grad_x, grad_w = torch.autograd.grad(loss, (x, weight), grad_outputs=grad_out.to(loss.dtype))
    return loss.detach(), grad_x, grad_w


def _grad_out(B: int, reduction: str, seed: int) -> torch.Tensor:
    shape = (B,) if reduction == "none" else ()
    return to_device(
        torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    )


def _assert_matches_reference(path, x, w, target, reduction, chunk_size, seed=0, dtype=torch.float32):
    """The path on ``dtype`` inputs (x, w cast to it) vs the reference on them and on their float64
    values, loss and both gradients, within the budget."""
    x, w = x.to(dtype), w.to(dtype)
    grad_out = _grad_out(x.shape[0], reduction, seed)
    kw = dict(chunk_size=chunk_size, reduction=reduction)
    op = _loss_and_grads(_loss_fn(path), x, w, target, grad_out, **kw)
    ref_low = _loss_and_grads(_ref, x, w, target, grad_out, **kw)
    ref64 = _loss_and_grads(_ref, x.double(), w.double(), target, grad_out, **kw)
    rel = 1e-6 if dtype == torch.float32 else BF16_REL
    for name, k, r_low, r64 in zip(("loss", "grad_x", "grad_w"), op, ref_low, ref64, strict=True):
        assert k.dtype == dtype, name
        # Sums over B rows reach hundreds: the absolute slack scales with the magnitude.
        assert_within_budget(name, k, r_low, r64, atol=rel * max(1.0, r64.abs().max().item()))


@pytest.mark.parametrize("dtype", PRECISIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-n{}-d{}-chunk{}".format(*s))
@pytest.mark.parametrize("path", PATHS)
def test_forward_and_grads_within_budget(path, shape, reduction, dtype):
    B, n, d, chunk_size = shape
    x, weight, target = _inputs(B, n, d, seed=B + n + d)
    _assert_matches_reference(path, x, weight, target, reduction, chunk_size, seed=n, dtype=dtype)


@pytest.mark.parametrize("path", PATHS)
def test_large_logits_within_budget(path):
    # Logits of magnitude ~300: exp overflows float32 without the running max.
    x, weight, target = _inputs(9, 150, 5, seed=2)
    _assert_matches_reference(path, x * 30.0, weight * 10.0, target, "mean", chunk_size=40)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(path, dtype):
    x, weight, target = _inputs(7, 97, 13, seed=9)
    x, weight = x.to(dtype), weight.to(dtype)
    grad_out = _grad_out(7, "mean", 9)
    loss, grad_x, grad_w = _loss_and_grads(_loss_fn(path), x, weight, target, grad_out, chunk_size=40)
    ref = _loss_and_grads(_ref, x.double(), weight.double(), target, grad_out)
    assert loss.dtype == grad_x.dtype == grad_w.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for name, k, r in zip(("loss", "grad_x", "grad_w"), (loss, grad_x, grad_w), ref, strict=True):
        torch.testing.assert_close(k.double(), r, rtol=tol, atol=tol, msg=name)


class _MatmulDtypes(TorchDispatchMode):
    """Records the operand dtypes of every matrix product run while active."""

    PRODUCTS = {torch.ops.aten.mm: (0, 1), torch.ops.aten.addmm: (1, 2), torch.ops.aten.addmm_: (1, 2)}

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        operands = self.PRODUCTS.get(func.overloadpacket, ())
        self.dtypes.update(args[i].dtype for i in operands)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("chunk_size", [40, None])  # several chunks; one, in tiles
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_torch_path_runs_its_gemms_in_the_inputs_dtype(dtype, chunk_size, monkeypatch):
    """Under autocast the scoring head gets bfloat16 inputs: its GEMMs must run in bfloat16 (the
    point of autocast on CPUs with bf16 instructions), not be upcast to float32."""
    monkeypatch.setattr(lce, "TILE_BYTES", 7 * 4 * 30)  # a single chunk in four tiles
    x, weight, target = (t.cpu() for t in _inputs(7, 97, 13, seed=3))
    x = x.to(dtype).requires_grad_()
    weight = weight.to(dtype).requires_grad_()
    spy = _MatmulDtypes()
    with use_backend("torch"), spy:
        loss = linear_cross_entropy(x, weight, target, chunk_size=chunk_size)
        loss.backward()
    assert spy.dtypes == {dtype}
    assert x.grad.dtype == weight.grad.dtype == dtype


@pytest.mark.parametrize("chunk_size", [3, None])  # several chunks; one (softmax kept for backward)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_chunked_float64(reduction, chunk_size):
    x, weight, target = _inputs(3, 7, 4, seed=12, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, w: _loss_fn("torch")(a, w, target, chunk_size=chunk_size, reduction=reduction),
        (x.requires_grad_(), weight.requires_grad_()),
    )


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_gradcheck_triton_float64(reduction):
    # Two interpreter launches per input element: keep it tiny.
    x, weight, target = _inputs(2, 5, 3, seed=13, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, w: _loss_fn("triton")(a, w, target, chunk_size=2, reduction=reduction),
        (x.requires_grad_(), weight.requires_grad_()),
    )


@pytest.mark.parametrize("path", PATHS)
def test_repeated_runs_are_bit_identical(path):
    # chunk_size 20 gives several chunks on both paths (partial sums merged on the host).
    x, weight, target = _inputs(70, 150, 13, seed=14)
    grad_out = _grad_out(70, "mean", 14)
    first = _loss_and_grads(_loss_fn(path), x, weight, target, grad_out, chunk_size=20)
    second = _loss_and_grads(_loss_fn(path), x, weight, target, grad_out, chunk_size=20)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("path", PATHS)
def test_only_inputs_that_require_grad_get_one(path):
    x, weight, target = _inputs(5, 40, 6, seed=15)
    weight.requires_grad_()
    _loss_fn(path)(x, weight, target).backward()
    w64 = weight.detach().double().requires_grad_()
    linear_cross_entropy_ref(x.double(), w64, target).backward()
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", PATHS)
def test_no_grad_returns_a_plain_loss(path):
    x, weight, target = _inputs(5, 40, 6, seed=16)
    x.requires_grad_()
    with torch.no_grad():
        loss = _loss_fn(path)(x, weight, target)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, linear_cross_entropy_ref(x.detach(), weight, target))


def test_dispatch_follows_the_backend(monkeypatch):
    x, weight, target = _inputs(3, 9, 4, seed=17)
    seen = []
    for name in ("LinearCrossEntropyFunction", "ChunkedLinearCrossEntropyFunction"):
        fn = getattr(lce, name)
        spy = SimpleNamespace(apply=lambda *args, _f=fn.apply, _n=name: seen.append(_n) or _f(*args))
        monkeypatch.setattr(lce, name, spy)
    _loss_fn("torch")(x, weight, target)
    _loss_fn("triton")(x, weight, target)
    linear_cross_entropy(x, weight, target)  # "auto" on CUDA or under TRITON_INTERPRET=1: Triton
    chunked, fused = "ChunkedLinearCrossEntropyFunction", "LinearCrossEntropyFunction"
    assert seen == [chunked, fused, fused]


@pytest.mark.parametrize("fn", [lce.LinearCrossEntropyFunction, lce.ChunkedLinearCrossEntropyFunction])
def test_out_of_range_target_gives_nan_without_host_check(fn):
    # What CUDA tensors get (the public function checks the range only for CPU tensors).
    x, weight, target = _inputs(4, 9, 3, seed=18)
    target[1] = 9
    target[3] = -1
    loss = fn.apply(x, weight, target, None, "none")
    assert torch.isnan(loss[[1, 3]]).all()
    ref = linear_cross_entropy_ref(x, weight, target.clamp(0, 8), "none")
    torch.testing.assert_close(loss[[0, 2]], ref[[0, 2]])


def _cases(max_b: int = 20, max_n: int = 150, max_d: int = 20) -> st.SearchStrategy:
    return st.tuples(
        st.integers(1, max_b),
        st.integers(1, max_n),
        st.integers(1, max_d),
        st.one_of(st.none(), st.integers(1, max_n)),
        st.integers(0, 2**31 - 1),
    )


@given(_cases(), st.sampled_from(PATHS), st.sampled_from(REDUCTIONS))
def test_property_random_shapes_match_reference(case, path, reduction):
    B, n, d, chunk_size, seed = case
    x, weight, target = _inputs(B, n, d, seed, dtype=torch.float64)
    torch.testing.assert_close(
        _loss_fn(path)(x, weight, target, chunk_size=chunk_size, reduction=reduction),
        linear_cross_entropy_ref(x, weight, target, reduction),
        rtol=1e-10,
        atol=1e-10,
    )


@given(_cases(), st.sampled_from(PATHS))
def test_property_permuting_items_with_targets(case, path):
    B, n, d, chunk_size, seed = case
    x, weight, target = _inputs(B, n, d, seed)
    perm = to_device(
        torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    )  # new row i = old perm[i]
    new_target = torch.argsort(perm)[target]
    grad_out = _grad_out(B, "none", seed)
    loss, grad_x, grad_w = _loss_and_grads(_loss_fn(path), x, weight, target, grad_out, reduction="none")
    loss_p, grad_x_p, grad_w_p = _loss_and_grads(
        _loss_fn(path), x, weight[perm], new_target, grad_out, chunk_size=chunk_size, reduction="none"
    )
    torch.testing.assert_close(loss_p, loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x_p, grad_x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w_p, grad_w[perm], rtol=1e-4, atol=1e-5)


@given(_cases(), st.sampled_from(PATHS))
def test_property_shifting_all_items_by_one_vector(case, path):
    # weight_j + c adds x_b . c to every logit of row b: the softmax, hence the loss, is unchanged.
    B, n, d, chunk_size, seed = case
    x, weight, target = _inputs(B, n, d, seed, dtype=torch.float64)
    shift = to_device(torch.randn(d, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64))
    fn = _loss_fn(path)
    torch.testing.assert_close(
        fn(x, weight + shift, target, chunk_size=chunk_size, reduction="none"),
        fn(x, weight, target, chunk_size=chunk_size, reduction="none"),
        rtol=1e-9,
        atol=1e-9,
    )


@given(_cases(), st.sampled_from(PATHS))
def test_property_reductions_agree(case, path):
    B, n, d, chunk_size, seed = case
    x, weight, target = _inputs(B, n, d, seed, dtype=torch.float64)
    fn = _loss_fn(path)
    rows = fn(x, weight, target, chunk_size=chunk_size, reduction="none")
    torch.testing.assert_close(fn(x, weight, target, chunk_size=chunk_size, reduction="sum"), rows.sum())
    torch.testing.assert_close(fn(x, weight, target, chunk_size=chunk_size, reduction="mean"), rows.mean())


@given(
    st.integers(1, 12),
    st.integers(1, 90),
    st.integers(1, 9),
    st.integers(1, 40),
    st.sampled_from(REDUCTIONS),
    st.integers(0, 2**31 - 1),
)
def test_property_single_chunk_tiles_match_reference(B, n, d, tile_items, reduction, seed):
    # One chunk in tiles of tile_items items (the last one partial when it does not divide n):
    # each tile has its own row max, merged into lse; backward scales the saved tiles.
    x, weight, target = _inputs(B, n, d, seed, dtype=torch.float64)
    grad_out = _grad_out(B, reduction, seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lce, "TILE_BYTES", tile_items * B * 8)
        got = _loss_and_grads(_loss_fn("torch"), x, weight, target, grad_out, reduction=reduction)
    ref = _loss_and_grads(_ref, x, weight, target, grad_out, reduction=reduction)
    for name, a, b in zip(("loss", "grad_x", "grad_w"), got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_single_chunk_in_several_tiles(reduction, monkeypatch):
    monkeypatch.setattr(lce, "TILE_BYTES", 3 * 2 * 8)  # 3 items per tile for B = 2: tiles 3, 3, 1
    x, weight, target = _inputs(2, 7, 4, seed=21, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, w: _loss_fn("torch")(a, w, target, reduction=reduction),
        (x.requires_grad_(), weight.requires_grad_()),
    )


def test_a_second_backward_sees_the_same_tiles(monkeypatch):
    # The single-chunk backward must not modify what the forward saved (retain_graph).
    monkeypatch.setattr(lce, "TILE_BYTES", 4 * 6 * 4)
    x, weight, target = _inputs(6, 30, 5, seed=22)
    x.requires_grad_()
    loss = _loss_fn("torch")(x, weight, target)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("first_class", [1, 3])
@pytest.mark.parametrize("chunk_size", [4, None])
@pytest.mark.parametrize("path", PATHS)
def test_rows_before_first_class_are_not_classes(path, chunk_size, first_class):
    # The whole table with first_class = k is weight[k:] with targets shifted by k, and the first
    # k rows get a zero gradient.
    x, weight, target = _inputs(5, 23, 6, seed=23 + first_class)
    target = target.clamp(min=first_class)
    grad_out = _grad_out(5, "none", 23)

    def loss_fn(a, w, t, **kw):
        return _first_class_loss(path, a, w, t, first_class, **kw)

    loss, grad_x, grad_w = _loss_and_grads(
        loss_fn, x, weight, target, grad_out, chunk_size=chunk_size, reduction="none"
    )
    ref = _loss_and_grads(_ref, x, weight[first_class:], target - first_class, grad_out, reduction="none")
    torch.testing.assert_close(loss, ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x, ref[1], rtol=1e-5, atol=1e-6)
    assert grad_w.shape == weight.shape
    assert torch.equal(grad_w[:first_class], torch.zeros_like(grad_w[:first_class]))
    torch.testing.assert_close(grad_w[first_class:], ref[2], rtol=1e-5, atol=1e-6)


def _first_class_loss(path, x, weight, target, first_class, chunk_size=None, reduction="mean"):
    with use_backend(path):
        return linear_cross_entropy(
            x, weight, target, chunk_size=chunk_size, reduction=reduction, first_class=first_class
        )


@pytest.mark.parametrize(
    "first_class, target_value, message",
    [(1, 0, r"target must lie in \[1, 9\)"), (9, 0, "at least one class row"), (-1, 0, "non-negative")],
)
def test_first_class_is_checked(first_class, target_value, message):
    x, weight, target = _inputs(3, 9, 4, seed=24)
    target[1] = target_value
    if x.device.type == "cuda" and first_class == 1:
        # The target range is checked for CPU tensors only; on CUDA the row's loss is NaN.
        loss = linear_cross_entropy(x, weight, target, first_class=first_class, reduction="none")
        assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
        return
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(x, weight, target, first_class=first_class)


class _LargestTensor(TorchDispatchMode):
    """Records the largest newly allocated tensor (in elements) of any op run while active; views
    and in-place results share an argument's storage and do not count."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        leaves = tree_leaves((args, kwargs))
        inputs = {t.untyped_storage().data_ptr() for t in leaves if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


def _saved_numels(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return loss, saved


def test_chunked_path_memory_stays_within_a_chunk():
    B, n, d, chunk = 64, 3000, 4, 60
    x, weight, target = _inputs(B, n, d, seed=19)
    x.requires_grad_()
    weight.requires_grad_()
    watch = _LargestTensor()
    with watch:
        loss, saved = _saved_numels(lambda: _loss_fn("torch")(x, weight, target, chunk_size=chunk))
        loss.backward()
    # Saved: x, weight, target, lse; nothing of B x n.
    assert sorted(saved) == sorted([B * d, n * d, B, B])
    # Largest tensor any op made: dL/dweight [n, d]; a [B, chunk] tile is the largest temporary.
    assert watch.largest == n * d
    assert B * chunk < n * d <= B * n // 16
    x, weight = x.detach(), weight.detach()
    watch = _LargestTensor()
    with watch:
        _loss_fn("torch")(x, weight, target, chunk_size=chunk)
    assert watch.largest == B * chunk


def test_triton_path_saves_only_inputs_and_lse():
    B, n, d = 20, 300, 5
    x, weight, target = _inputs(B, n, d, seed=20)
    loss, saved = _saved_numels(
        lambda: _loss_fn("triton")(x.requires_grad_(), weight.requires_grad_(), target, chunk_size=64)
    )
    assert sorted(saved) == sorted([B * d, n * d, B, B])
    loss.backward()


def test_default_chunk_size_bounds_the_tile():
    assert lce.default_chunk_size(1, 50, torch.float32) == 50
    chunk = lce.default_chunk_size(500, 400_000, torch.float32)
    assert 500 * chunk * 4 <= lce.CHUNK_BYTES < 500 * (chunk + 1) * 4
    assert lce.default_chunk_size(500, 400_000, torch.bfloat16) == chunk  # float32 logits
    assert lce.default_chunk_size(10**9, 5, torch.float64) == 1


def test_triton_item_chunks():
    cfg = lce._Config(B=512, N=400_000, D=100, dtype=torch.float32, chunk_size=None, sms=132)
    assert cfg.row_blocks * cfg.chunks >= lce.PROGRAMS_PER_SM * 132
    assert (cfg.chunks - 1) * cfg.tiles < cfg.item_tiles <= cfg.chunks * cfg.tiles
    assert lce._Config(512, 400_000, 100, torch.float32, None).chunks == 1
    assert lce._Config(3, 10**8, 4, torch.float32, chunk_size=1).chunks <= lce.MAX_GRID_Y


def _bad_inputs():
    x, weight, target = _inputs(3, 5, 4, seed=0)
    cases = {
        "x-rank-1": ("x", dict(x=x[0], weight=weight, target=target)),
        "x-rank-3": ("x", dict(x=x[None], weight=weight, target=target)),
        "x-not-a-tensor": ("x", dict(x=[[1.0]], weight=weight, target=target)),
        "x-integer": ("x", dict(x=x.long(), weight=weight.long(), target=target)),
        "x-no-rows": ("x", dict(x=x[:0], weight=weight, target=target[:0])),
        "weight-rank-1": ("weight", dict(x=x, weight=weight[0], target=target)),
        "weight-d-mismatch": ("weight", dict(x=x, weight=weight[:, :3], target=target)),
        "weight-dtype": ("weight", dict(x=x, weight=weight.double(), target=target)),
        "weight-device": ("weight", dict(x=x, weight=weight.to("meta"), target=target)),
        "weight-no-items": ("weight", dict(x=x, weight=weight[:0], target=target)),
        "target-rank-2": ("target", dict(x=x, weight=weight, target=target[:, None])),
        "target-length": ("target", dict(x=x, weight=weight, target=target[:2])),
        "target-int32": ("target", dict(x=x, weight=weight, target=target.int())),
        "target-float": ("target", dict(x=x, weight=weight, target=target.float())),
        "target-device": ("target", dict(x=x, weight=weight, target=target.to("meta"))),
        # The range check runs for CPU tensors only (CUDA rows out of range get a NaN loss).
        "target-too-large": ("target", dict(x=x.cpu(), weight=weight.cpu(), target=torch.tensor([0, 5, 1]))),
        "target-negative": ("target", dict(x=x.cpu(), weight=weight.cpu(), target=torch.tensor([0, -1, 1]))),
        "target-ignore-index": (
            "target",
            dict(x=x.cpu(), weight=weight.cpu(), target=torch.tensor([-100, 1, 1])),
        ),
        "reduction": ("reduction", dict(x=x, weight=weight, target=target, reduction="max")),
        "chunk_size-zero": ("chunk_size", dict(x=x, weight=weight, target=target, chunk_size=0)),
        "chunk_size-float": ("chunk_size", dict(x=x, weight=weight, target=target, chunk_size=2.0)),
        "chunk_size-bool": ("chunk_size", dict(x=x, weight=weight, target=target, chunk_size=True)),
    }
    params = [pytest.param(arg_name, kwargs, id=case) for case, (arg_name, kwargs) in cases.items()]
    # A CPU tensor among CUDA inputs (only a CUDA run has two real devices to mix).
    for arg_name in ("weight", "target"):
        kwargs = dict(x=x, weight=weight, target=target)
        kwargs[arg_name] = kwargs[arg_name].cpu()
        params.append(pytest.param(arg_name, kwargs, id=f"{arg_name}-on-cpu", marks=cuda_only))
    return params


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("arg_name,kwargs", _bad_inputs())
def test_bad_input_raises_value_error_naming_the_argument(path, arg_name, kwargs):
    with use_backend(path), pytest.raises(ValueError, match=rf"^{arg_name}\b"):
        linear_cross_entropy(**kwargs)


def test_triton_path_rejects_x_beyond_int32_offsets(monkeypatch):
    monkeypatch.setattr(lce, "MAX_X_ELEMENTS", 11)
    x, weight, target = _inputs(3, 5, 4, seed=0)
    with pytest.raises(ValueError, match=r"^x has B \* d = 12"):
        _loss_fn("triton")(x, weight, target)
    _loss_fn("torch")(x, weight, target)


def _lce_launches(dtype: torch.dtype) -> list[tuple[str, dict]]:
    """The three kernels' launches for B=512, n=400k, d=100 as on an H100/H200 (132 SMs), with
    the constexprs, warps and arguments the launchers pass (recorded on meta tensors)."""
    B, N, D = 512, 400_000, 100
    x = torch.empty(B, D, dtype=dtype, device="meta")
    weight = torch.empty(N, D, dtype=dtype, device="meta")
    target = torch.empty(B, dtype=torch.long, device="meta")
    cfg = lce._Config(B=B, N=N, D=D, dtype=dtype, chunk_size=None, sms=132, gpu=True)
    with record_launches(lce.__name__) as recorded:
        _, lse = lce._triton_forward(x, weight, target, cfg)
        lce._triton_backward(x, weight, target, lse, torch.empty_like(lse), cfg, True, True)
    label = f"{str(dtype).removeprefix('torch.')} B={B} n={N} d={D}"
    return [(label, launch) for launch in recorded]


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_kernels_compile_for_sm90_without_spills(tmp_path):
    # Compiled in a fresh interpreter with TRITON_INTERPRET=0 (tests/kernels/gpu_compile.py), with
    # triton's runtime specialisation of the recorded arguments.
    jobs = unique_jobs(_lce_launches(torch.float32) + _lce_launches(torch.bfloat16))
    assert {job["kernel"] for job in jobs} == kernel_names(lce.__name__)
    assert len(jobs) == 6
    report = compile_for_gpu(jobs, str(tmp_path))
    print(format_report(report))
    assert set(report) == {job["name"] for job in jobs}
    check_spills(report)
