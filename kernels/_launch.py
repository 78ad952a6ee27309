"""The one place that decides Triton vs reference, plus what the kernel files share: the launch
heuristics (tile sizes, warps, accumulator dtype), the ``@triton.jit`` helper :func:`sigmoid`
and the input checks.

Dispatch happens at call time, at the ``autograd.Function`` boundary:

* backend ``"auto"`` (default): Triton for CUDA tensors, and for CPU tensors when
  ``TRITON_INTERPRET=1`` is set and triton imports; the pure-PyTorch reference otherwise.
* ``"triton"``: always Triton; raises ``RuntimeError`` where it cannot run.
* ``"torch"``: always the reference.

The packed ops (``packed.py``) are pure PyTorch and do not dispatch: the caller
(``llm4sbr.models.encoder``) decides when to use them.

``import llm4sbr.kernels`` never imports CUDA and works where triton is not installed: the
kernel files decorate with :func:`jit` and annotate with :data:`tl`, which are inert stand-ins
when triton is missing (the kernels are then never launched).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the reference path still works
    HAS_TRITON = False

    class _MissingTriton:
        """Stands in for ``triton``/``triton.language`` so kernel files import without triton."""

        def __getattr__(self, name: str) -> _MissingTriton:
            return self

        def __call__(self, *args: object, **kwargs: object) -> _MissingTriton:
            raise RuntimeError("triton is not installed: pip install 'llm4sbr[triton]'")

    triton = _MissingTriton()  # type: ignore[assignment]
    tl = _MissingTriton()  # type: ignore[assignment]

BACKENDS = ("auto", "triton", "torch")
_backend: contextvars.ContextVar[str] = contextvars.ContextVar("llm4sbr_kernel_backend", default="auto")


def jit(fn):  # noqa: ANN001, ANN201 - decorator passthrough
    """``triton.jit`` when triton is installed; the undecorated function otherwise."""
    return triton.jit(fn) if HAS_TRITON else fn


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force the kernel path inside a ``with`` block: ``"auto"``, ``"triton"`` or ``"torch"``."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    token = _backend.set(name)
    try:
        yield
    finally:
        _backend.reset(token)


def current_backend() -> str:
    return _backend.get()


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_can_run(device: torch.device) -> bool:
    """Whether a Triton kernel can be launched for tensors on ``device``."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())


def use_triton(device: torch.device, op: str) -> bool:
    """Decide the path for one call of ``op`` on ``device`` under the current backend."""
    backend = _backend.get()
    if backend == "torch":
        return False
    can_run = triton_can_run(device)
    if backend == "triton" and not can_run:
        reason = (
            "triton is not installed"
            if not HAS_TRITON
            else f"tensors are on {device.type}; Triton needs CUDA or TRITON_INTERPRET=1 set before import"
        )
        raise RuntimeError(f"{op}: backend 'triton' was forced but cannot run: {reason}")
    return can_run


@jit
def sigmoid(x):
    """Overflow-free logistic sigmoid for Triton kernels: exp only ever sees -|x| <= 0."""
    t = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + t), t / (1.0 + t))


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels accumulate in: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def block_size(n: int, lo: int = 16, hi: int = 1024) -> int:
    """Power-of-two tile covering ``n`` (clamped to [lo, hi]); tl.dot needs at least 16."""
    return max(lo, min(hi, next_power_of_2(n)))


def rows_per_tile(n: int, block_d: int, tile_elems: int) -> int:
    """Power-of-two row count of a [rows, block_d] tile over ``n`` rows: covers ``n`` where the
    tile stays within ``tile_elems`` elements, at least 1 and at most 1024 rows."""
    return block_size(n, lo=1, hi=max(1, min(1024, tile_elems // block_d)))


def num_warps(block_elems: int) -> int:
    """Warps for a program that touches ``block_elems`` elements per tile."""
    if block_elems >= 16384:
        return 8
    if block_elems >= 2048:
        return 4
    return 2


def check_tensor(
    name: str,
    t: object,
    shape: tuple[int | str, ...],
    *,
    like: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``t`` is a tensor of the expected shape.

    ``shape`` entries are ints (exact size) or strings (a named dimension, reported in the
    message; equality between named dims is checked by the caller). ``like`` requires the same
    device and floating dtype; ``dtype`` an exact dtype; ``device`` only the device (for index
    and count tensors, whose dtype differs from the inputs').
    """
    # The message is built only on failure: the checks run on every call of an op.
    if not isinstance(t, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape {_shape_text(shape)}, got {type(t).__name__}"
        )
    if t.dim() != len(shape):
        raise ValueError(
            f"{name} must have shape {_shape_text(shape)} (rank {len(shape)}), got {list(t.shape)}"
        )
    for size, s in zip(t.shape, shape, strict=True):
        if isinstance(s, int) and size != s:
            raise ValueError(f"{name} must have shape {_shape_text(shape)}, got {list(t.shape)}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but the inputs are on {like.device}")
        if t.dtype != like.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but the inputs are {like.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the inputs are on {device}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {t.dtype}")


def _shape_text(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"
