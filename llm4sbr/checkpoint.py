"""Checkpoints: tensors plus JSON strings, written atomically, loadable with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from llm4sbr.atomic import write_atomic

FORMAT = "llm4sbr-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically save a dict of tensors, numbers, strings and containers of them."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; a missing, truncated or foreign file
    raises FileNotFoundError / ValueError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        if "weights_only" in str(exc):
            # torch's advice here (weights_only=False) would unpickle arbitrary objects: never.
            detail = "it holds objects other than tensors, numbers and strings, which llm4sbr never unpickles"
        else:
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise ValueError(f"corrupt or unreadable checkpoint {path}: {detail}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an llm4sbr checkpoint (expected format {FORMAT!r})")
    return payload
