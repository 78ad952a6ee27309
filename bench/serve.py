"""The ``serve`` suite: ``full_sort_predict`` latency at batch 1 and 256 per model and encoder
path, and optionally ``Recommender.recommend`` / ``explain`` of a trained run."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import torch

from .harness import BenchOptions, peak_memory_mib, progress, summarize, time_ms
from .model import model_records


def run_serve(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """``full_sort_predict`` latency per model, path and batch size (intents given, as when
    they are cached or predicted; no LLM call), then :func:`recommend_records`."""
    records = model_records(options, device, "full_sort", options.serve_batches, options.serve_rounds)
    if options.serve_checkpoint:
        records += recommend_records(options, device)
    return records


def recommend_records(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """Latency of ``Recommender.recommend(session, k=20)`` (and ``explain(session, k=3)`` when the
    run has an explainer) of ``options.serve_checkpoint``, one call per test session of the run in
    raw item ids, cycling through them: the serving path a user calls, with no LLM call."""
    from llm4sbr.checkpoint import load_checkpoint
    from llm4sbr.config import TrainConfig, from_dict
    from llm4sbr.data import run_dataset
    from llm4sbr.serving import Recommender

    config = from_dict(TrainConfig, json.loads(load_checkpoint(options.serve_checkpoint)["config"]))
    dataset = options.dataset or run_dataset(config)
    rec = Recommender.load(options.serve_checkpoint, device=device)
    test = dataset.splits["test"]
    raw = np.asarray(dataset.item_raw_ids, dtype=object)
    sessions = itertools.cycle([raw[test.prefix(i)].tolist() for i in range(len(test))])
    calls = {"Recommender.recommend": lambda session: rec.recommend(session, k=20)}
    if rec.explainer is not None:
        calls["Recommender.explain"] = lambda session: rec.explain(session, k=3)
    records = []
    for path, call in calls.items():
        times = time_ms(
            call, options.serve_rounds, options.warmup, lambda: (next(sessions),), options.warmup_s
        )
        record = {"model": f"{config.model} ({config.data} test sessions)", "path": path, "batch": 1}
        record.update(summarize(times))
        record["peak_mib"] = peak_memory_mib(lambda call=call: call(next(sessions)), device)
        record["sessions_per_s"] = 1e3 / record["p50_ms"]
        records.append(record)
        progress(f"serve {path}", record)
    return records
