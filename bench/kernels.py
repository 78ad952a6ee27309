"""The ``kernels`` suite: gnn_step, attn_pool, align_uniform_loss and linear_cross_entropy (the
scoring head against a :data:`SCORING_ITEMS`-item catalog) per provider, mode and shape.

Providers: ``triton`` (CUDA only), ``torch`` (the op's ``_ref``, eager PyTorch: where Triton
cannot run, gnn_step and attn_pool run their packed ops instead, align_uniform_loss and
linear_cross_entropy their own batched and chunked PyTorch paths) and ``compile``
(``torch.compile`` of the ref). Modes: ``forward`` (the training forward: inputs
require grad), ``backward`` (the gradients only; the forward runs untimed before each call) and
``full`` (both). Shapes: :data:`bench.harness.SHAPES`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from .harness import (
    KERNELS,
    MODES,
    BenchOptions,
    Case,
    Shape,
    add_speedups,
    measure,
    progress,
    synchronize,
)

SCORING_ITEMS = 43_000
"""Catalog of the linear_cross_entropy cases: the M-sized log's (Diginetica's), where the scoring
head is most of a training step."""


def provider_skip_reason(provider: str, device: torch.device) -> str | None:
    """Why ``provider`` cannot be benchmarked on ``device`` (None: it can)."""
    from llm4sbr.kernels import HAS_TRITON

    if provider == "triton" and device.type != "cuda":
        return "the triton provider needs a CUDA device (the CPU interpreter is a test tool, not a benchmark)"
    if provider == "triton" and not HAS_TRITON:
        return "triton is not installed"
    if provider == "compile" and device.type == "cpu" and not _has_cxx_compiler():
        return "torch.compile on CPU needs a C++ compiler"
    return None


@functools.cache
def _has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def _reference(kernel: str) -> Callable[..., torch.Tensor]:
    from llm4sbr import kernels

    return getattr(kernels, f"{kernel}_ref")


@functools.cache
def _compiled(kernel: str) -> Callable[..., torch.Tensor]:
    """``torch.compile`` of the reference, one per op for the whole process (shapes recompile)."""
    return torch.compile(_reference(kernel), dynamic=False)


def kernel_function(kernel: str, provider: str) -> Callable[..., torch.Tensor]:
    """The op as ``provider`` runs it: Triton forced, the reference, or the compiled reference."""
    if provider == "torch":
        return _reference(kernel)
    if provider == "compile":
        return _compiled(kernel)
    from llm4sbr import kernels

    op = getattr(kernels, kernel)

    def forced_triton(*args: Any, **kwargs: Any) -> torch.Tensor:
        with kernels.use_backend("triton"):
            return op(*args, **kwargs)

    return forced_triton


def random_sessions(
    batch: int, max_len: int, n_items: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sessions shaped like MovieLens-100k leave-one-out prefixes: about half reach ``max_len``
    (lengths uniform in 1..2 max_len, capped; mean about 0.75 max_len), distinct items each.
    Returns item_seq [batch, max_len] right-padded with 0 and item_seq_len [batch]."""
    lengths = torch.randint(1, 2 * max_len + 1, (batch,), generator=generator).clamp(max=max_len)
    item_seq = torch.zeros(batch, max_len, dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        item_seq[row, :length] = torch.randperm(n_items, generator=generator)[:length] + 1
    return item_seq, lengths


def kernel_inputs(
    kernel: str, shape: Shape, device: torch.device, seed: int = 0
) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments of one call of ``kernel`` at ``shape`` (float32; the
    float inputs that carry gradients in training require grad). gnn_step gets real session
    graphs (N = the largest distinct count, at most L), attn_pool real masks, align_uniform_loss
    two views of [B, d], linear_cross_entropy B session vectors [B, d] against an item table
    [SCORING_ITEMS, d] (L unused)."""
    from llm4sbr.data.graph import build_session_graph

    g = torch.Generator().manual_seed(seed)
    B, L, d = shape
    bound = 1.0 / math.sqrt(d)

    def param(*size: int) -> torch.Tensor:
        return ((torch.rand(*size, generator=g) * 2 - 1) * bound).to(device).requires_grad_()

    def state(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g).to(device).requires_grad_()

    if kernel == "gnn_step":
        item_seq, lengths = random_sessions(B, L, 10 * L, g)
        graph = build_session_graph(item_seq, lengths)
        n = graph.nodes.shape[1]
        weights = [param(d, d), param(d), param(d, d), param(d), param(d), param(d)]
        gru = [param(3 * d, 2 * d), param(3 * d), param(3 * d, d), param(3 * d)]
        return [state(B, n, d), graph.A_in.to(device), graph.A_out.to(device), *weights, *gru], {}
    if kernel == "attn_pool":
        _, lengths = random_sessions(B, L, 10 * L, g)
        mask = (torch.arange(L)[None, :] < lengths[:, None]).to(device)
        return [state(B, L, d), mask, state(B, d), param(d, d), param(d), param(d)], {"normalize": "none"}
    if kernel == "align_uniform_loss":
        return [state(2, B, d), state(2, B, d)], {"t": 2.0, "reduce_views": "mean"}
    if kernel == "linear_cross_entropy":
        target = torch.randint(0, SCORING_ITEMS, (B,), generator=g).to(device)
        return [state(B, d), param(SCORING_ITEMS, d), target], {}
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def kernel_case(
    kernel: str, provider: str, mode: str, shape: Shape, device: torch.device, seed: int = 0
) -> Case:
    """One ``mode`` call of ``kernel`` via ``provider`` at ``shape``; ``backward`` cases run their
    forward in the untimed setup."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    fn = kernel_function(kernel, provider)
    args, kwargs = kernel_inputs(kernel, shape, device, seed)
    differentiable = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def forward() -> None:
        fn(*args, **kwargs)
        synchronize(device)

    def backward(out: torch.Tensor) -> None:
        torch.autograd.grad(out, differentiable, torch.ones_like(out))
        synchronize(device)

    if mode == "forward":
        return Case(forward)
    if mode == "full":
        return Case(lambda: backward(fn(*args, **kwargs)))
    return Case(backward, lambda: (fn(*args, **kwargs),))


def run_kernels(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """One record per (kernel, provider, mode, shape); skipped cases say why."""
    records = []
    for kernel in options.kernels:
        for shape_name in options.shapes:
            shape = options.shape(shape_name)
            for mode in options.modes:
                for provider in options.providers:
                    record: dict[str, Any] = {
                        "kernel": kernel, "provider": provider, "mode": mode, "shape": shape_name,
                        "size": f"{shape.B}x{shape.L}x{shape.d}", "B": shape.B, "L": shape.L, "d": shape.d,
                    }  # fmt: skip
                    reason = provider_skip_reason(provider, device)
                    if reason is None:
                        case = kernel_case(kernel, provider, mode, shape, device)
                        record.update(measure(case, device, options, options.rounds))
                        record["sessions_per_s"] = shape.B / record["p50_ms"] * 1e3
                    else:
                        record["skipped"] = reason
                    records.append(record)
                    progress(f"kernels {kernel} {provider} {mode} {shape_name}", record)
    add_speedups(records, ("kernel", "mode", "shape"), "provider", ("torch", "compile"))
    return records
