"""attn_pool: the Triton path (CPU interpreter, or the GPU with LLM4SBR_TEST_DEVICE=cuda) against
the float64 reference, gradients, padding invariance (NaN and inf included), softmax convexity,
all-padding rows, determinism, dispatch, input checks and a compile for sm_90."""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable

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
from kernel_device import BF16_REL, DEVICE, PRECISIONS, cuda_only, to_device

from llm4sbr.kernels import attn_pool, attn_pool_ref, use_backend
from llm4sbr.kernels._launch import HAS_TRITON

attn_pool_module = importlib.import_module("llm4sbr.kernels.attn_pool")

GRAD_NAMES = ("h", "q_last", "w2", "b2", "w3")
NORMALIZE = ("none", "softmax")


def make_inputs(
    B: int, L: int, d: int, seed: int, dtype: torch.dtype = torch.float32, empty_rows: tuple[int, ...] = ()
) -> dict[str, torch.Tensor]:
    """Random attn_pool inputs on the test device: h [B, L, d], a random mask [B, L] with at
    least one click per row except ``empty_rows`` (all padding), q_last [B, d], w2 [d, d], b2 [d],
    w3 [d]."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, generator=gen) < 0.6
    mask[torch.arange(B), torch.randint(0, L, (B,), generator=gen)] = True
    mask[list(empty_rows)] = False
    inputs = {
        "h": torch.randn(B, L, d, generator=gen, dtype=dtype),
        "mask": mask,
        "q_last": torch.randn(B, d, generator=gen, dtype=dtype),
        "w2": torch.randn(d, d, generator=gen, dtype=dtype) / math.sqrt(d),
        "b2": torch.randn(d, generator=gen, dtype=dtype) * 0.1,
        "w3": torch.randn(d, generator=gen, dtype=dtype),
    }
    return {k: to_device(v) for k, v in inputs.items()}


def cast(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Float tensors cast to ``dtype`` (the mask stays bool)."""
    return {k: v if v.dtype == torch.bool else v.to(dtype) for k, v in inputs.items()}


def run(
    fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], normalize: str, grad_out: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward ``fn`` on fresh leaves of ``inputs`` and backpropagate ``grad_out`` ([B, d]).

    Returns (out [B, d], gradient of every float input by name)."""
    leaves = {k: v if k == "mask" else v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(
        leaves["h"], leaves["mask"], leaves["q_last"], leaves["w2"], leaves["b2"], leaves["w3"], normalize
    )
    grads = torch.autograd.grad(out, [leaves[k] for k in GRAD_NAMES], grad_out.to(out.dtype))
    return out.detach(), dict(zip(GRAD_NAMES, grads, strict=True))


def within_budget(
    name: str, kernel: torch.Tensor, ref_low: torch.Tensor, ref64: torch.Tensor, rel: float
) -> None:
    """The error budget with atol = rel * the tensor's largest magnitude (at least rel): with
    normalize="none" the weights e are unnormalised sums over d, so values reach tens."""
    assert_within_budget(name, kernel, ref_low, ref64, atol=rel * max(1.0, ref64.abs().max().item()))


def triton_attn_pool(*args: object) -> torch.Tensor:
    with use_backend("triton"):
        return attn_pool(*args)


def grad_output(B: int, d: int, seed: int) -> torch.Tensor:
    return to_device(torch.randn(B, d, generator=torch.Generator().manual_seed(seed + 1)))


def rel_budget(dtype: torch.dtype) -> float:
    """The budget's relative slack: 2e-6 for float32 results, BF16_REL for bfloat16 ones."""
    return 2e-6 if dtype == torch.float32 else BF16_REL


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize(
    ("B", "L", "d", "empty_rows"),
    [
        (1, 1, 1, ()),
        (1, 3, 7, ()),
        (4, 1, 7, (2,)),
        (3, 19, 7, (1,)),
        (2, 3, 100, (0,)),
        (1, 50, 100, ()),
        (2, 50, 13, ()),
        (3, 19, 1, (2,)),
    ],
)
@pytest.mark.parametrize("dtype", PRECISIONS)
def test_forward_and_gradients_within_budget(B, L, d, empty_rows, normalize, dtype):
    # Budget against the reference in the input dtype and in float64 on the same (rounded) inputs.
    inputs = cast(make_inputs(B, L, d, seed=B * 1000 + L * 10 + d, empty_rows=empty_rows), dtype)
    grad_out = grad_output(B, d, seed=L)
    out_k, grads_k = run(triton_attn_pool, inputs, normalize, grad_out)
    out_low, grads_low = run(attn_pool_ref, inputs, normalize, grad_out)
    out_64, grads_64 = run(attn_pool_ref, cast(inputs, torch.float64), normalize, grad_out.double())
    assert out_k.dtype == dtype
    within_budget("out", out_k, out_low, out_64, rel=rel_budget(dtype))
    for name in GRAD_NAMES:
        assert grads_k[name].dtype == dtype
        within_budget(f"d{name}", grads_k[name], grads_low[name], grads_64[name], rel=rel_budget(dtype))


@pytest.mark.parametrize("dtype", PRECISIONS)
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize(("B", "L", "d"), [(3, 19, 7), (2, 50, 13)])
def test_many_tiles_over_L_within_budget(monkeypatch, B, L, d, normalize, dtype):
    # Tiles of 4 positions: the online softmax rescales across tiles, and row 0 starts with
    # whole tiles of padding (its running max is still -inf there).
    monkeypatch.setattr(attn_pool_module, "_TILE_ELEMS", 64)
    assert attn_pool_module._tiles(L, d)[0] == 4
    inputs = cast(make_inputs(B, L, d, seed=L + d, empty_rows=(1,)), dtype)
    inputs["mask"][0, :9] = False
    inputs["mask"][0, 9:] = True
    grad_out = grad_output(B, d, seed=d)
    out_k, grads_k = run(triton_attn_pool, inputs, normalize, grad_out)
    out_low, grads_low = run(attn_pool_ref, inputs, normalize, grad_out)
    out_64, grads_64 = run(attn_pool_ref, cast(inputs, torch.float64), normalize, grad_out.double())
    within_budget("out", out_k, out_low, out_64, rel=rel_budget(dtype))
    for name in GRAD_NAMES:
        within_budget(f"d{name}", grads_k[name], grads_low[name], grads_64[name], rel=rel_budget(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_low_precision_inputs_within_budget(dtype, normalize):
    inputs = make_inputs(3, 19, 7, seed=5, empty_rows=(1,))
    low = cast(inputs, dtype)
    grad_out = grad_output(3, 7, seed=5)
    out_k, grads_k = run(triton_attn_pool, low, normalize, grad_out)
    out_low, grads_low = run(attn_pool_ref, low, normalize, grad_out)
    out_64, grads_64 = run(attn_pool_ref, cast(low, torch.float64), normalize, grad_out.double())
    assert out_k.dtype == dtype
    within_budget("out", out_k, out_low, out_64, rel=1e-2)
    for name in GRAD_NAMES:
        assert grads_k[name].dtype == dtype
        within_budget(f"d{name}", grads_k[name], grads_low[name], grads_64[name], rel=1e-2)


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("path", ["reference", "triton"])
def test_gradcheck_float64(path, normalize):
    inputs = cast(make_inputs(3, 4, 3, seed=11, empty_rows=(1,)), torch.float64)
    fn = attn_pool_ref if path == "reference" else triton_attn_pool
    mask = inputs["mask"]
    leaves = tuple(inputs[k].clone().requires_grad_(True) for k in GRAD_NAMES)

    def pooled(h, q_last, w2, b2, w3):
        return fn(h, mask, q_last, w2, b2, w3, normalize)

    assert torch.autograd.gradcheck(pooled, leaves)


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_repeated_triton_runs_are_bit_identical(normalize):
    inputs = make_inputs(3, 19, 7, seed=3, empty_rows=(2,))
    grad_out = grad_output(3, 7, seed=3)
    out_a, grads_a = run(triton_attn_pool, inputs, normalize, grad_out)
    out_b, grads_b = run(triton_attn_pool, inputs, normalize, grad_out)
    assert torch.equal(out_a, out_b)
    for name in GRAD_NAMES:
        assert torch.equal(grads_a[name], grads_b[name]), name


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_functional_api_function_and_reference_agree(normalize):
    inputs = make_inputs(2, 5, 7, seed=8)
    # A non-contiguous h: the Triton path must make it contiguous before launch.
    inputs["h"] = inputs["h"].transpose(1, 2).contiguous().transpose(1, 2)
    args = [inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")]
    assert not args[0].is_contiguous()
    functional = triton_attn_pool(*args, normalize)
    applied = attn_pool_module.AttnPoolFunction.apply(*args, normalize)
    reference = attn_pool_ref(*args, normalize)
    assert torch.equal(functional, applied)
    torch.testing.assert_close(functional, reference)


class _TritonCalled:
    """Stands in for AttnPoolFunction to detect that the Triton path was taken."""

    @staticmethod
    def apply(*args):
        raise AssertionError("the Triton path ran")


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_torch_backend_runs_the_reference(monkeypatch, normalize):
    inputs = make_inputs(2, 5, 7, seed=9)
    args = [inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")]
    monkeypatch.setattr(attn_pool_module, "AttnPoolFunction", _TritonCalled)
    with use_backend("torch"):
        assert torch.equal(attn_pool(*args, normalize), attn_pool_ref(*args, normalize))
    with pytest.raises(AssertionError, match="the Triton path ran"):
        triton_attn_pool(*args, normalize)


def _bad_inputs() -> list:
    base = make_inputs(2, 3, 4, seed=0)
    meta = torch.device("meta")
    cpu = torch.device("cpu")
    cases = [
        ("h rank", {"h": base["h"][0]}, "h"),
        ("h not a tensor", {"h": base["h"].tolist()}, "h"),
        ("mask shape", {"mask": torch.ones(2, 4, dtype=torch.bool, device=DEVICE)}, "mask"),
        ("mask dtype", {"mask": base["mask"].float()}, "mask"),
        ("mask device", {"mask": base["mask"].to(meta)}, "mask"),
        ("q_last shape", {"q_last": torch.zeros(3, 4, device=DEVICE)}, "q_last"),
        ("q_last dtype", {"q_last": base["q_last"].double()}, "q_last"),
        ("q_last device", {"q_last": base["q_last"].to(meta)}, "q_last"),
        ("w2 shape", {"w2": torch.zeros(4, 5, device=DEVICE)}, "w2"),
        ("w2 dtype", {"w2": base["w2"].half()}, "w2"),
        ("b2 shape", {"b2": torch.zeros(5, device=DEVICE)}, "b2"),
        ("b2 device", {"b2": base["b2"].to(meta)}, "b2"),
        ("w3 rank", {"w3": torch.zeros(4, 1, device=DEVICE)}, "w3"),
        ("w3 dtype", {"w3": base["w3"].double()}, "w3"),
    ]
    params = [pytest.param(*case, id=case[0]) for case in cases]
    # A CPU tensor among CUDA inputs (only a CUDA run has two real devices to mix).
    cpu_cases = [("mask", "mask"), ("q_last", "q_last"), ("w2", "w2"), ("b2", "b2"), ("w3", "w3")]
    for arg, name in cpu_cases:
        override = {arg: base[arg].to(cpu)}
        params.append(pytest.param(f"{arg} on cpu", override, name, id=f"{arg} on cpu", marks=cuda_only))
    return params


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(("case", "override", "name"), _bad_inputs())
def test_bad_input_raises_value_error_naming_the_argument(backend, case, override, name):
    inputs = {**make_inputs(2, 3, 4, seed=0), **override}
    args = [inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")]
    with use_backend(backend), pytest.raises(ValueError, match=rf"^{name}\b"):
        attn_pool(*args)


@cuda_only
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cpu_h_with_cuda_parameters_names_the_first_mismatch(backend):
    # h sets the device: with h on the CPU, the CUDA mask is the first argument on another device.
    inputs = make_inputs(2, 3, 4, seed=0)
    args = [inputs["h"].cpu(), *(inputs[k] for k in ("mask", "q_last", "w2", "b2", "w3"))]
    with use_backend(backend), pytest.raises(ValueError, match=r"^mask is on cuda"):
        attn_pool(*args)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("normalize", ["max", "Softmax", "", None])
def test_unknown_normalize_raises(backend, normalize):
    inputs = make_inputs(2, 3, 4, seed=0)
    args = [inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")]
    with use_backend(backend), pytest.raises(ValueError, match="normalize"):
        attn_pool(*args, normalize)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9))
seeds = st.integers(0, 2**31 - 1)
paths = st.sampled_from([attn_pool_ref, triton_attn_pool])


GARBAGE = ("finite", "nan", "inf", "-inf", "mixed")


def padding_garbage(kind: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Values for the padded positions of h: large finite noise, NaN, +inf, -inf, or a mix of
    those with float32's largest finite value."""
    gen = torch.Generator().manual_seed(seed + 2)
    noise = 100.0 * torch.randn(shape, generator=gen)
    if kind == "finite":
        values = noise
    elif kind == "mixed":
        specials = torch.tensor([float("nan"), float("inf"), float("-inf"), 3.4e38])
        pick = torch.randint(0, 5, shape, generator=gen)
        values = torch.where(pick < 4, specials[pick.clamp(max=3)], noise)
    else:
        values = torch.full(shape, float(kind))
    return to_device(values.to(dtype))


def assert_padding_changes_nothing(
    fn, inputs: dict[str, torch.Tensor], garbage: str, normalize: str, seed: int
):
    """Whatever h holds at padded positions, the output and every gradient are bit-identical to
    those with h's own values there, and h's gradient there is exactly 0."""
    B, L, d = inputs["h"].shape
    padded = ~inputs["mask"]
    perturbed = dict(inputs)
    values = padding_garbage(garbage, (B, L, d), seed, inputs["h"].dtype)
    perturbed["h"] = torch.where(padded[..., None], values, inputs["h"])
    grad_out = grad_output(B, d, seed)
    out_a, grads_a = run(fn, inputs, normalize, grad_out)
    out_b, grads_b = run(fn, perturbed, normalize, grad_out)
    assert torch.equal(out_a, out_b)
    for name in ("q_last", "w2", "b2", "w3"):
        assert torch.equal(grads_a[name], grads_b[name]), name
    assert torch.equal(grads_a["h"][~padded], grads_b["h"][~padded])
    for grads in (grads_a, grads_b):
        assert torch.equal(grads["h"][padded], torch.zeros_like(grads["h"][padded]))


@given(
    shape=shapes,
    seed=seeds,
    normalize=st.sampled_from(NORMALIZE),
    fn=paths,
    garbage=st.sampled_from(GARBAGE),
    empty_row=st.booleans(),
)
def test_padding_perturbation_changes_nothing(shape, seed, normalize, fn, garbage, empty_row):
    B, L, d = shape
    inputs = make_inputs(B, L, d, seed, empty_rows=(0,) if empty_row else ())
    assert_padding_changes_nothing(fn, inputs, garbage, normalize, seed)


@pytest.mark.parametrize("garbage", ["nan", "inf"])
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("path", ["reference", "triton"])
def test_nan_and_inf_padding_change_nothing(path, normalize, garbage):
    # Every path, mode and value, whatever hypothesis draws: a row with padding inside and at
    # the end, and an all-padding row.
    inputs = make_inputs(3, 6, 5, seed=21, empty_rows=(2,))
    inputs["mask"][0] = to_device(torch.tensor([True, False, True, True, False, False]))
    fn = attn_pool_ref if path == "reference" else triton_attn_pool
    assert_padding_changes_nothing(fn, inputs, garbage, normalize, seed=21)


@given(shape=shapes, seed=seeds, fn=paths)
def test_softmax_output_is_a_convex_combination(shape, seed, fn):
    B, L, d = shape
    inputs = cast(make_inputs(B, L, d, seed), torch.float64)
    c = to_device(torch.randn(B, d, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64))
    # Padded positions keep their random h: they must get no weight.
    inputs["h"] = torch.where(inputs["mask"][..., None], c[:, None, :], inputs["h"])
    out = fn(*(inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")), "softmax")
    torch.testing.assert_close(out, c, rtol=1e-12, atol=1e-12)


@given(shape=shapes, seed=seeds, normalize=st.sampled_from(NORMALIZE), fn=paths)
def test_all_padding_rows_give_zeros_and_finite_gradients(shape, seed, normalize, fn):
    B, L, d = shape
    empty = 0
    inputs = make_inputs(B, L, d, seed, empty_rows=(empty,))
    out, grads = run(fn, inputs, normalize, grad_output(B, d, seed))
    assert torch.equal(out[empty], torch.zeros(d, device=DEVICE))
    for name in GRAD_NAMES:
        assert torch.isfinite(grads[name]).all(), name
    assert torch.equal(grads["h"][empty], torch.zeros(L, d, device=DEVICE))
    assert torch.equal(grads["q_last"][empty], torch.zeros(d, device=DEVICE))


# SR-GNN's readout at d = 100 (its default) and a wider d = 256, sessions of L = 50 clicks: the
# launchers' tiles are [16, 128] and [8, 256] with 4 warps (B only sets the grid).
COMPILE_CONFIGS = [dict(B=512, L=50, d=100), dict(B=2048, L=50, d=256)]


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_kernels_compile_for_sm90_without_spills(tmp_path):
    """Both kernels, both normalize modes, float32 and bfloat16 inputs, with the launch arguments
    the launchers pass (recorded on meta tensors) and triton's runtime specialisation."""
    meta = torch.device("meta")
    launches = []
    for (B, L, d), dtype in itertools.product(
        (c.values() for c in COMPILE_CONFIGS), (torch.float32, torch.bfloat16)
    ):
        shapes = {"h": (B, L, d), "q_last": (B, d), "w2": (d, d), "b2": (d,), "w3": (d,)}
        inputs = {k: torch.empty(shape, dtype=dtype, device=meta) for k, shape in shapes.items()}
        inputs["mask"] = torch.empty(B, L, dtype=torch.bool, device=meta)
        args = [inputs[k] for k in ("h", "mask", "q_last", "w2", "b2", "w3")]
        with record_launches(attn_pool_module.__name__) as recorded:
            for softmax in (False, True):
                out, lse = attn_pool_module._attn_pool_forward(*args, softmax)
                attn_pool_module._attn_pool_backward(out, *args, out, lse, softmax)
        label = f"{str(dtype).removeprefix('torch.')} B={B} L={L} d={d}"
        launches += [(label, launch) for launch in recorded]
    jobs = unique_jobs(launches)
    assert {job["kernel"] for job in jobs} == kernel_names(attn_pool_module.__name__)
    report = compile_for_gpu(jobs, str(tmp_path))
    print(format_report(report))
    assert set(report) == {job["name"] for job in jobs}
    check_spills(report)
