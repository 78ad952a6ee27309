"""The device and precisions the kernel tests run on (imported by tests/kernels; conftest.py checks
the setting and provides the ``device`` fixture).

``LLM4SBR_TEST_DEVICE``: ``cpu`` (default) runs every test on CPU tensors, the Triton paths
through the interpreter (TRITON_INTERPRET=1, set by tests/conftest.py); ``cuda`` (or ``cuda:N``)
runs them on CUDA tensors, the Triton paths as real GPU kernels, which needs TRITON_INTERPRET=0
in the environment (bench/gpu_run.sh sets both).

Inputs are always drawn on the CPU from seeded generators and then moved with :func:`to_device`,
so both devices see the same values and the CPU run is what it was before the device setting.

The precision grid of the budget tests is float32 and bfloat16 (:data:`PRECISIONS`); the
bfloat16 cases run on CUDA only (:data:`cuda_only`): the CPU grid keeps its size, and the Triton
interpreter's bfloat16 tl.dot is wrong (triton 3.7.1), so a CPU run would test the interpreter.
Each file's own float16/bfloat16 tests (kernels that upcast before tl.dot) still run on both.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

ENV = "LLM4SBR_TEST_DEVICE"
SETTING = os.environ.get(ENV, "").strip() or "cpu"
_VALID = re.fullmatch(r"cpu|cuda(:\d+)?", SETTING) is not None
DEVICE = torch.device(SETTING if _VALID else "cpu")
ON_CUDA = DEVICE.type == "cuda"

BF16_SKIP_REASON = (
    "bfloat16 cases run on CUDA only (LLM4SBR_TEST_DEVICE=cuda): the Triton interpreter's "
    "bfloat16 tl.dot is wrong (triton 3.7.1), and the CPU grid keeps its size"
)
cuda_only = pytest.mark.skipif(not ON_CUDA, reason="needs LLM4SBR_TEST_DEVICE=cuda")
bf16_cuda_only = pytest.mark.skipif(not ON_CUDA, reason=BF16_SKIP_REASON)

# float32 everywhere; bfloat16 on CUDA only.
PRECISIONS = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.bfloat16, id="bfloat16", marks=bf16_cuda_only),
]

# Relative slack of the bfloat16 budget: |kernel - ref64| <= 2 |ref_bf16 - ref64| + atol with
# atol = BF16_REL * max(1, max |ref64|), 2.5 bfloat16 ulps (2**-7 = 0.0078 at 1) of the tensor's
# largest element. A kernel that accumulates in float32 and rounds once to bfloat16 is within
# half an ulp of every element; the slack covers the intermediates that the kernels store in
# bfloat16 (gnn_step's x, gi, gh, e; attn_pool's dp) and elements where the bfloat16 reference
# happens to be exact.
BF16_REL = 1e-2


def setting_problem() -> str | None:
    """Why the device setting cannot run, or None. CPU needs the interpreter (TRITON_INTERPRET=1)
    where triton is installed; CUDA needs a visible GPU, triton, and the Triton paths compiled
    (TRITON_INTERPRET=0), not interpreted."""
    if not _VALID:
        return f"{ENV}={SETTING!r}: expected 'cpu', 'cuda' or 'cuda:N'"
    from llm4sbr.kernels._launch import HAS_TRITON, interpreter_enabled

    if not ON_CUDA:
        if HAS_TRITON and not interpreter_enabled():
            return (
                f"{ENV}={SETTING} runs the Triton paths in the CPU interpreter, but TRITON_INTERPRET "
                "is not 1 (tests/conftest.py sets it unless the environment does): unset it"
            )
        return None
    if not torch.cuda.is_available():
        return (
            f"{ENV}={SETTING} but torch sees no CUDA device (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); unset it (or set it to 'cpu') to run on CPU"
        )
    if DEVICE.index is not None and DEVICE.index >= torch.cuda.device_count():
        return f"{ENV}={SETTING} but only {torch.cuda.device_count()} CUDA device(s) are visible"
    if not HAS_TRITON:
        return f"{ENV}={SETTING} but triton is not installed: the Triton paths cannot run"
    if interpreter_enabled():
        return (
            f"{ENV}={SETTING} needs TRITON_INTERPRET=0 in the environment (tests/conftest.py "
            "defaults it to 1): otherwise the Triton paths run in the CPU interpreter, not on the GPU"
        )
    return None


def to_device(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the test device (the same tensor when it is already there)."""
    return t.to(DEVICE)


def low_precision_atol(ref64: torch.Tensor, rel: float = BF16_REL) -> float:
    """The budget's atol for a low-precision result: ``rel`` times its largest magnitude (at least rel)."""
    return rel * max(1.0, ref64.detach().abs().max().item()) if ref64.numel() else rel
