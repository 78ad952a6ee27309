"""Kernel benchmarks: gnn_step, attn_pool, align_uniform_loss x provider x mode x shape.

Providers: ``triton`` (the Triton kernels, CUDA only), ``torch`` (the op's ``_ref``, the eager
reference) and ``compile`` (``torch.compile`` of the ref). Modes: ``forward`` (training forward),
``backward`` (gradients only; the forward runs untimed before each round) and ``full`` (both).
One benchmark group per (kernel, mode, shape), so pytest-benchmark compares the providers side
by side.
"""

from __future__ import annotations

import pytest
import torch

from bench.harness import KERNELS, MODES, PROVIDERS, SHAPES, peak_memory_mib
from bench.kernels import kernel_case, provider_skip_reason


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(
    benchmark,
    kernel: str,
    mode: str,
    provider: str,
    shape_name: str,
    device: torch.device,
    rounds: int,
    machine: dict,
) -> None:
    reason = provider_skip_reason(provider, device)
    if reason:
        pytest.skip(reason)
    shape = SHAPES[shape_name]
    case = kernel_case(kernel, provider, mode, shape, device)
    case.run(*(case.setup() if case.setup else ()))  # compilation and autotuning stay out of the timings
    benchmark.group = f"{kernel} {mode} {shape_name} (B={shape.B}, L={shape.L}, d={shape.d})"
    benchmark.extra_info.update(machine)
    peak = peak_memory_mib(case.run, device, case.setup)
    benchmark.extra_info.update(shape=shape_name, B=shape.B, L=shape.L, d=shape.d, peak_mib=peak)
    setup = (lambda: (case.setup(), {})) if case.setup else None
    benchmark.pedantic(case.run, setup=setup, rounds=rounds, warmup_rounds=2, iterations=1)
