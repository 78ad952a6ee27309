"""Model benchmarks: one training step (batch 100) and one full-ranking inference batch (256) of
SRGNN and LLM4SBR, n_items 1,682 and d = 100 (MovieLens-100k sizes), per encoder path:
``triton`` (padded, Triton kernels; CUDA only), ``torch`` (padded, the kernels' references) and
``packed`` (the CPU fast path; see ``llm4sbr.models.encoder``)."""

from __future__ import annotations

import pytest
import torch

from bench.harness import peak_memory_mib
from bench.model import MODEL_PATHS, MODELS, model_case, path_skip_reason

BATCH = {"train_step": 100, "full_sort": 256}


@pytest.mark.parametrize("path", MODEL_PATHS)
@pytest.mark.parametrize("op", tuple(BATCH))
@pytest.mark.parametrize("model", MODELS)
def test_model(
    benchmark, model: str, op: str, path: str, device: torch.device, rounds: int, machine: dict
) -> None:
    reason = path_skip_reason(path, device)
    if reason:
        pytest.skip(reason)
    case = model_case(
        model, path, op, device, batch_size=BATCH[op], max_len=50, n_items=1682, dim=100, d_text=384
    )
    case.run()
    benchmark.group = f"{model} {op} (batch {BATCH[op]})"
    benchmark.extra_info.update(machine)
    benchmark.extra_info.update(batch=BATCH[op], peak_mib=peak_memory_mib(case.run, device))
    benchmark.pedantic(case.run, rounds=rounds, warmup_rounds=2, iterations=1)
