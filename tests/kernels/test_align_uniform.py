"""align_uniform_loss: the Triton path (CPU interpreter, or the GPU with LLM4SBR_TEST_DEVICE=cuda)
against the float64 reference, and a compile for sm_90."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
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

import llm4sbr.kernels as K
from llm4sbr.kernels import align_uniform as au
from llm4sbr.kernels import align_uniform_loss, align_uniform_loss_ref, use_backend
from llm4sbr.kernels._launch import HAS_TRITON

# (V, B, d): every V in {1, 2, 3}, B in {1, 2, 7, 19, 50}, d in {1, 7, 100}, primes and
# non-powers of two; B = 50 with d = 100 and B = 70 with d = 7 span two row tiles.
SHAPES = [
    (1, 1, 1),
    (2, 1, 100),
    (1, 2, 1),
    (3, 2, 7),
    (2, 7, 7),
    (1, 7, 13),
    (3, 19, 1),
    (2, 19, 100),
    (1, 50, 100),
    (2, 50, 7),
    (1, 70, 7),
]


def _inputs(
    shape: tuple[int, int, int], seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    return to_device(x.to(dtype)), to_device(z.to(dtype))


def _triton_loss(
    x: torch.Tensor, z: torch.Tensor, t: float = 2.0, reduce_views: str = "mean"
) -> torch.Tensor:
    with use_backend("triton"):
        return align_uniform_loss(x, z, t, reduce_views)


def _torch_loss(x: torch.Tensor, z: torch.Tensor, t: float = 2.0, reduce_views: str = "mean") -> torch.Tensor:
    with use_backend("torch"):
        return align_uniform_loss(x, z, t, reduce_views)


# The two paths of align_uniform_loss (the reference is what both are compared with).
PATHS = {"triton": _triton_loss, "torch": _torch_loss}
LAUNCHERS = {"triton": "_align_uniform_launch", "torch": "_align_uniform_torch"}


def _loss_and_grads(
    loss_fn: Callable[..., torch.Tensor], x: torch.Tensor, z: torch.Tensor, grad_out: float, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and (dL/dx, dL/dz) of grad_out * loss_fn(x, z)."""
    x = x.detach().clone().requires_grad_()
    z = z.detach().clone().requires_grad_()
    loss = loss_fn(x, z, **kwargs)
    grad_x, grad_z = torch.autograd.grad(
        loss, (x, z), grad_outputs=torch.tensor(grad_out, dtype=loss.dtype, device=loss.device)
    )
    return loss.detach(), grad_x, grad_z


def _assert_matches_reference(
    x: torch.Tensor,
    z: torch.Tensor,
    grad_out: float,
    atol: float = 1e-5,
    dtype: torch.dtype = torch.float32,
    path: str = "triton",
    **kwargs: object,
) -> None:
    """The ``path`` of align_uniform_loss on ``dtype`` inputs (x, z cast to it) vs the reference
    on them and on their float64 values, within the budget: ``atol`` for float32, BF16_REL times the largest
    magnitude for bfloat16; plus the conditioning slack of :func:`_temperature_slack`."""
    x, z = x.to(dtype), z.to(dtype)
    kernel = _loss_and_grads(PATHS[path], x, z, grad_out, **kwargs)
    ref_low = _loss_and_grads(align_uniform_loss_ref, x, z, grad_out, **kwargs)
    ref64 = _loss_and_grads(align_uniform_loss_ref, x.double(), z.double(), grad_out, **kwargs)
    t = float(kwargs.get("t", 2.0))
    for name, k, r_low, r64 in zip(("loss", "grad_x", "grad_z"), kernel, ref_low, ref64, strict=True):
        assert k.dtype == dtype, name
        if dtype != torch.float32:
            atol = BF16_REL * max(1.0, r64.abs().max().item())
        assert_within_budget(name, k, r_low, r64, atol=atol + _temperature_slack(r64, t, dtype))


def _temperature_slack(ref64: torch.Tensor, t: float, dtype: torch.dtype) -> torch.Tensor:
    """Slack for the conditioning of exp(-t D_ij): D_ij = |u_i|^2 + |u_j|^2 - 2 u_i.u_j carries
    rounding errors of about one ulp of 1 in any order of summation, and each moves every pair
    weight, so every gradient element, by t times that relative to itself. Two ulps of 1 in D
    are allowed (at t = 500 in float32, 1.2e-4 of the element). The float32 reference's own error
    does not bound this: on a GPU, cuBLAS's Gram happened to round 5x better than the kernel's
    tile order on the t = 500 case, on the CPU 1.2x worse."""
    return 2 * t * torch.finfo(dtype).eps * ref64.detach().double().abs()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", PRECISIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "V{}-B{}-d{}".format(*s))
@pytest.mark.parametrize("reduce_views", ["mean", "sum"])
def test_forward_and_grads_within_budget(shape, reduce_views, dtype, path):
    x, z = _inputs(shape, seed=sum(shape))
    grad_out = float(torch.randn((), generator=torch.Generator().manual_seed(7)))
    _assert_matches_reference(x, z, grad_out, dtype=dtype, path=path, reduce_views=reduce_views)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", PRECISIONS)
@pytest.mark.parametrize("t", [0.3, 7.0, 500.0])
def test_temperatures_within_budget(t, dtype, path):
    # t = 500 puts every exp(-t D) far below float32's range: only the max-shifted sums survive.
    x, z = _inputs((2, 19, 7), seed=3)
    _assert_matches_reference(x, z, grad_out=-1.3, dtype=dtype, path=path, t=t)


@pytest.mark.parametrize("path", list(PATHS))
def test_all_padding_and_tiny_rows_match_reference(path):
    # Rows with norm below F.normalize's eps = 1e-12 (zero padding, tiny rows) are divided by eps,
    # with no gradient through the clamped norm, and get gradients of order 1/eps.
    x, z = _inputs((3, 7, 7), seed=11)
    x[0, 2] = 0.0
    z[0, 5] = 0.0
    x[1] = 0.0
    z[2, :3] = 0.0
    x[2, 4] *= 1e-13
    kernel = _loss_and_grads(PATHS[path], x, z, grad_out=0.7)
    ref32 = _loss_and_grads(align_uniform_loss_ref, x, z, grad_out=0.7)
    ref64 = _loss_and_grads(align_uniform_loss_ref, x.double(), z.double(), grad_out=0.7)
    # dL/dx = P(g) / max(|x|, eps): compared at the scale of g (each gradient row times
    # max(|x|, eps), exact in float64), since at ~1e11 the budget's absolute slack is below one
    # float32 ulp and the elementwise relative error of a row's small entries is ill-conditioned.
    scales = [
        torch.ones((), dtype=torch.float64, device=x.device),
        x.double().norm(dim=-1, keepdim=True).clamp_min(1e-12),
        z.double().norm(dim=-1, keepdim=True).clamp_min(1e-12),
    ]
    for name, k, r32, r64, scale in zip(
        ("loss", "grad_x", "grad_z"), kernel, ref32, ref64, scales, strict=True
    ):
        assert_within_budget(name, k.double() * scale, r32.double() * scale, r64 * scale)


@pytest.mark.parametrize("path", list(PATHS))
def test_grad_output_scales_gradients(path):
    x, z = _inputs((2, 7, 7), seed=5)
    x.requires_grad_()
    z.requires_grad_()
    (PATHS[path](x, z) * 3.7).backward()
    x64 = x.detach().double().requires_grad_()
    z64 = z.detach().double().requires_grad_()
    (align_uniform_loss_ref(x64, z64) * 3.7).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_only_inputs_that_require_grad_get_one(path):
    x, z = _inputs((1, 7, 7), seed=6)
    x.requires_grad_()
    PATHS[path](x, z).backward()
    assert x.grad is not None and z.grad is None
    x64 = x.detach().double().requires_grad_()
    align_uniform_loss_ref(x64, z.double()).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_no_grad_skips_the_gradient_pass(monkeypatch, path):
    x, z = _inputs((2, 7, 7), seed=8)
    x.requires_grad_()
    with torch.no_grad():
        expected = align_uniform_loss_ref(x, z)
    seen = []
    launch = getattr(au, LAUNCHERS[path])

    def spy(*args, need_grad):
        seen.append(need_grad)
        return launch(*args, need_grad=need_grad)

    monkeypatch.setattr(au, LAUNCHERS[path], spy)
    with torch.no_grad():
        loss = PATHS[path](x, z)
    assert seen == [False]
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype, path):
    x, z = _inputs((2, 7, 7), seed=9, dtype=dtype)
    loss, grad_x, grad_z = _loss_and_grads(PATHS[path], x, z, grad_out=1.0)
    ref = _loss_and_grads(align_uniform_loss_ref, x.double(), z.double(), grad_out=1.0)
    assert loss.dtype == grad_x.dtype == grad_z.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for name, k, r in zip(("loss", "grad_x", "grad_z"), (loss, grad_x, grad_z), ref, strict=True):
        torch.testing.assert_close(k.double(), r, rtol=tol, atol=tol, msg=name)


def test_gradcheck_reference_float64():
    x, z = _inputs((2, 5, 3), seed=12, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: align_uniform_loss_ref(a, b, 1.5), (x.requires_grad_(), z.requires_grad_())
    )


@pytest.mark.parametrize("shape,fast_mode", [((1, 3, 2), False), ((1, 1, 4), False), ((2, 5, 3), True)])
def test_gradcheck_triton_float64(shape, fast_mode):
    # The full numerical Jacobian costs two interpreter launches per input element: the
    # bigger shape uses gradcheck's random-projection mode.
    x, z = _inputs(shape, seed=13, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: _triton_loss(a, b, 1.5, "sum"),
        (x.requires_grad_(), z.requires_grad_()),
        fast_mode=fast_mode,
    )


@pytest.mark.parametrize("path", list(PATHS))
def test_repeated_runs_are_bit_identical(path):
    x, z = _inputs((2, 50, 7), seed=14)
    first = _loss_and_grads(PATHS[path], x, z, grad_out=0.9)
    second = _loss_and_grads(PATHS[path], x, z, grad_out=0.9)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_functional_api_function_and_reference_agree():
    x, z = _inputs((2, 7, 7), seed=15)

    def functional(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with use_backend("triton"):
            return K.align_uniform_loss(a, b, 2.0, "sum")

    via_api = _loss_and_grads(functional, x, z, grad_out=1.0)
    via_apply = _loss_and_grads(
        lambda a, b: au.AlignUniformLossFunction.apply(a, b, 2.0, "sum", True), x, z, 1.0
    )
    via_ref = _loss_and_grads(lambda a, b: align_uniform_loss_ref(a, b, 2.0, "sum"), x, z, 1.0)
    for api, applied, ref in zip(via_api, via_apply, via_ref, strict=True):
        assert torch.equal(api, applied)
        torch.testing.assert_close(api, ref, rtol=1e-5, atol=1e-6)


def test_torch_backend_runs_the_torch_path(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton launcher ran under use_backend('torch')")

    monkeypatch.setattr(au, "_align_uniform_launch", fail)
    x, z = _inputs((2, 7, 7), seed=16)
    x.requires_grad_()
    with use_backend("torch"):
        loss = align_uniform_loss(x, z)
    assert loss.grad_fn is not None and "AlignUniformLossFunction" in type(loss.grad_fn).__name__
    torch.testing.assert_close(loss, align_uniform_loss_ref(x, z), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert x.grad is not None


def test_gradcheck_torch_path_float64():
    x, z = _inputs((2, 5, 3), seed=17, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: _torch_loss(a, b, 1.5, "sum"), (x.requires_grad_(), z.requires_grad_())
    )


def _rows(max_b: int = 9) -> st.SearchStrategy[tuple[int, int, int, int]]:
    return st.tuples(st.integers(1, 3), st.integers(1, max_b), st.integers(1, 9), st.integers(0, 2**31 - 1))


@given(_rows(), st.floats(0.5, 4.0))
def test_property_rescaling_rows_leaves_loss_unchanged(case, t):
    V, B, d, seed = case
    x, z = _inputs((V, B, d), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    scale_x = to_device(torch.exp(torch.empty(V, B, 1).uniform_(-3.0, 3.0, generator=gen)))
    scale_z = to_device(torch.exp(torch.empty(V, B, 1).uniform_(-3.0, 3.0, generator=gen)))
    torch.testing.assert_close(
        _triton_loss(x * scale_x, z * scale_z, t), _triton_loss(x, z, t), rtol=1e-5, atol=1e-5
    )


@given(_rows())
def test_property_sum_is_views_times_mean(case):
    V, B, d, seed = case
    x, z = _inputs((V, B, d), seed)
    torch.testing.assert_close(
        _triton_loss(x, z, reduce_views="sum"), V * _triton_loss(x, z), rtol=1e-5, atol=1e-5
    )


@given(st.integers(1, 3), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_property_single_row_is_alignment_only(V, d, seed):
    x, z = _inputs((V, 1, d), seed)
    align = (F.normalize(x.double(), dim=-1) - F.normalize(z.double(), dim=-1)).pow(2).sum(-1).mean()
    torch.testing.assert_close(_triton_loss(x, z).double(), align, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
@given(case=_rows())
def test_property_swapping_x_and_z(case, path):
    V, B, d, seed = case
    x, z = _inputs((V, B, d), seed)
    loss, grad_x, grad_z = _loss_and_grads(PATHS[path], x, z, grad_out=1.0)
    loss_swapped, grad_z_swapped, grad_x_swapped = _loss_and_grads(PATHS[path], z, x, grad_out=1.0)
    torch.testing.assert_close(loss_swapped, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x_swapped, grad_x, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_z_swapped, grad_z, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
@given(case=_rows(max_b=70))
def test_property_permuting_rows_together(case, path):
    V, B, d, seed = case
    x, z = _inputs((V, B, d), seed)
    perm = to_device(torch.randperm(B, generator=torch.Generator().manual_seed(seed)))
    loss, grad_x, grad_z = _loss_and_grads(PATHS[path], x, z, grad_out=1.0)
    loss_p, grad_x_p, grad_z_p = _loss_and_grads(PATHS[path], x[:, perm], z[:, perm], grad_out=1.0)
    torch.testing.assert_close(loss_p, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_x_p, grad_x[:, perm], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_z_p, grad_z[:, perm], rtol=1e-4, atol=1e-6)


def _bad_inputs():
    x, z = _inputs((2, 3, 4), seed=0)
    cases = {
        "x-rank-2": ("x", dict(x=x[0], z=z[0])),
        "x-not-a-tensor": ("x", dict(x="not a tensor", z=z)),
        "x-no-rows": ("x", dict(x=x[:, :0], z=z[:, :0])),
        "z-shape-mismatch": ("z", dict(x=x, z=z[:, :2])),
        "z-rank-4": ("z", dict(x=x, z=z[None])),
        "z-dtype-mismatch": ("z", dict(x=x, z=z.double())),
        "z-device-mismatch": ("z", dict(x=x, z=z.to("meta"))),
        "reduce_views-unknown": ("reduce_views", dict(x=x, z=z, reduce_views="max")),
        "t-zero": ("t", dict(x=x, z=z, t=0.0)),
        "t-negative": ("t", dict(x=x, z=z, t=-1.0)),
        "t-infinite": ("t", dict(x=x, z=z, t=math.inf)),
        "t-string": ("t", dict(x=x, z=z, t="2")),
    }
    params = [pytest.param(arg_name, kwargs, id=case) for case, (arg_name, kwargs) in cases.items()]
    # A CPU tensor among CUDA inputs (only a CUDA run has two real devices to mix).
    params.append(pytest.param("z", dict(x=x, z=z.cpu()), id="z-on-cpu", marks=cuda_only))
    return params


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("arg_name,kwargs", _bad_inputs())
def test_bad_input_raises_value_error_naming_the_argument(backend, arg_name, kwargs):
    with use_backend(backend), pytest.raises(ValueError, match=rf"^{arg_name}\b"):
        align_uniform_loss(**kwargs)


def test_triton_path_rejects_rows_wider_than_one_tile():
    x, z = _inputs((1, 1, au.MAX_D + 1), seed=0)
    with pytest.raises(ValueError, match=r"^x has d"):
        _triton_loss(x, z)


# DirectAU on SR-GNN's representations: V = 2 views of B = 512 rows at d = 100 (tiles [32, 128])
# and of B = 2048 rows at d = 256 (tiles [16, 256]), 4 warps.
COMPILE_CONFIGS = [(2, 512, 100), (2, 2048, 256)]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_kernels_compile_for_sm90_without_spills(tmp_path):
    """The three kernels for float32 and bfloat16 inputs with the launch arguments the launcher
    passes (recorded on meta tensors) and triton's runtime specialisation. The unit rows are in
    float32 for both, so _pair_lse_kernel compiles once per config. Slow: ~20 s of compiling."""
    launches = []
    for shape, dtype in itertools.product(COMPILE_CONFIGS, (torch.float32, torch.bfloat16)):
        x = torch.empty(shape, dtype=dtype, device="meta")
        with record_launches(au.__name__) as recorded:
            au._align_uniform_launch(x, x, 2.0, "mean", need_grad=True)
        label = "{} V={} B={} d={}".format(str(dtype).removeprefix("torch."), *shape)
        launches += [(label, launch) for launch in recorded]
    jobs = unique_jobs(launches)
    assert {job["kernel"] for job in jobs} == kernel_names(au.__name__)
    report = compile_for_gpu(jobs, str(tmp_path))
    print(format_report(report))
    assert set(report) == {job["name"] for job in jobs}
    check_spills(report)
