"""The kernels' error budget: |kernel - ref64| <= 2 |ref32 - ref64| + atol, elementwise."""

from __future__ import annotations

import torch


def assert_within_budget(
    name: str,
    kernel: torch.Tensor,
    ref32: torch.Tensor,
    ref64: torch.Tensor,
    atol: float | torch.Tensor = 1e-5,
) -> None:
    """Fail, naming the worst element, if ``kernel`` misses the float64 reference by more than
    twice the float32 reference's own error plus ``atol`` (a number, or a tensor of per-element
    slack broadcast against the outputs)."""
    assert kernel.shape == ref64.shape, f"{name}: shape {tuple(kernel.shape)} != {tuple(ref64.shape)}"
    k = kernel.detach().double()
    r32 = ref32.detach().double()
    r64 = ref64.detach().double()
    assert torch.isfinite(k).all(), f"{name}: non-finite values in kernel output"
    err = (k - r64).abs()
    budget = 2 * (r32 - r64).abs() + atol
    excess = err - budget
    if (excess > 0).any():
        idx = int(torch.argmax(excess.flatten()))
        raise AssertionError(
            f"{name}: |kernel - ref64| = {err.flatten()[idx]:.3e} exceeds budget "
            f"{budget.flatten()[idx]:.3e} at flat index {idx} (max error {err.max():.3e})"
        )
