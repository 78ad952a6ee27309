"""Per-batch model cases: one Adam training step or one full-ranking inference batch of SRGNN and
LLM4SBR per encoder path (:data:`MODEL_PATHS`). The ``train`` suite times the training step,
the ``serve`` suite the inference batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .harness import BenchOptions, Case, add_speedups, measure, progress, synchronize
from .kernels import provider_skip_reason, random_sessions

MODELS = ("srgnn", "llm4sbr")
MODEL_PATHS = ("triton", "torch", "packed")
"""Encoder paths: padded with the Triton kernels, padded with the kernels' references, packed."""
PATH_BACKENDS = {"triton": "triton", "torch": "torch", "packed": "auto"}


def path_skip_reason(path: str, device: torch.device) -> str | None:
    """Why the encoder ``path`` cannot be benchmarked on ``device`` (None: it can)."""
    if path == "triton":
        return provider_skip_reason("triton", device)
    return None


def model_batch(
    batch_size: int, max_len: int, n_items: int, d_text: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch of :func:`random_sessions` with targets and random intent vectors [B, 2, d_text]."""
    g = torch.Generator().manual_seed(seed)
    item_seq, lengths = random_sessions(batch_size, max_len, n_items, g)
    batch = {
        "item_seq": item_seq,
        "item_seq_len": lengths,
        "target": torch.randint(1, n_items + 1, (batch_size,), generator=g),
        "intent": torch.randn(batch_size, 2, d_text, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def model_case(
    model_name: str,
    path: str,
    op: str,
    device: torch.device,
    *,
    batch_size: int,
    max_len: int,
    n_items: int,
    dim: int,
    d_text: int,
    seed: int = 0,
) -> Case:
    """One Adam training step (``op="train_step"``) or one full-ranking inference batch
    (``op="full_sort"``) of ``model_name`` (the package defaults: steps 1, readout "none",
    tau 0.1) on the encoder ``path``."""
    from llm4sbr.config import TrainConfig
    from llm4sbr.kernels import use_backend
    from llm4sbr.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model(TrainConfig(model=model_name, dim=dim), n_items, d_text).to(device)
    model.encoder.packed = path == "packed"
    batch = model_batch(batch_size, max_len, n_items, d_text, device, seed)
    backend = PATH_BACKENDS[path]
    if op == "train_step":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)

        def run() -> None:
            with use_backend(backend):
                loss = model.calculate_loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            synchronize(device)

    elif op == "full_sort":
        model.eval()

        def run() -> None:
            with use_backend(backend), torch.inference_mode():
                model.full_sort_predict(batch)
            synchronize(device)

    else:
        raise ValueError(f"op must be 'train_step' or 'full_sort', got {op!r}")
    return Case(run)


def model_records(
    options: BenchOptions, device: torch.device, op: str, batch_sizes: Sequence[int], rounds: int
) -> list[dict[str, Any]]:
    """One record per (model, batch size, path) of :func:`model_case` ``op``, with its speed-up
    over the ``torch`` path."""
    records = []
    for model_name in MODELS:
        for batch_size in batch_sizes:
            for path in MODEL_PATHS:
                record: dict[str, Any] = {"model": model_name, "path": path, "op": op, "batch": batch_size}
                reason = path_skip_reason(path, device)
                if reason is None:
                    case = model_case(
                        model_name, path, op, device, batch_size=batch_size, max_len=options.max_len,
                        n_items=options.n_items, dim=options.dim, d_text=options.d_text,
                    )  # fmt: skip
                    record.update(measure(case, device, options, rounds))
                    record["sessions_per_s"] = batch_size / record["p50_ms"] * 1e3
                else:
                    record["skipped"] = reason
                records.append(record)
                progress(f"{op} {model_name} {path} batch {batch_size}", record)
    add_speedups(records, ("model", "op", "batch"), "path", ("torch",))
    return records
