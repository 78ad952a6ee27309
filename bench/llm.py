"""The ``llm`` suite: stage-1 generation prompts/s and peak memory per precision.

On CPU the bundled SmolLM2-135M with real prompts through :func:`llm4sbr.intent.make_backend`:
the default engine (llama.cpp, Q4_0) on the stream of prompts ``infer-intents`` sends it, in its
order, at each thread count and number of clicks shown (the stage-1 speed targets), and the
transformers engine per precision on a batch of prompts; on CUDA models built from their
configuration with random weights (cost does not depend on the weights' values), bf16 against
bitsandbytes NF4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .harness import (
    BenchOptions,
    in_fresh_process,
    peak_memory_mib,
    process_peak_mib,
    progress,
    status_mib,
    synchronize,
)

RANDOM_LLM_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
        rope_theta=100000.0, tie_word_embeddings=True,
    ),
    "qwen2-7b": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
        rope_theta=1000000.0, tie_word_embeddings=False,
    ),
    "tiny": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=2048,
    ),
}  # fmt: skip
"""Architectures for the random-weight LLM runs: SmolLM2-135M (the CPU default) and a 7B
Qwen2-style model (the paper used Qwen-7B-Chat); ``tiny`` is for smoke tests."""
PROMPT_TOKENS = (256, 640)
"""Token lengths of the random-weight runs' prompts, uniform in this range: the real long-term
prompts on MovieLens sessions average about 448 tokens with the chat template."""


def real_prompts(count: int, max_items: int | None = None, seed: int = 0) -> list[str]:
    """Long-term prompts of ``count`` random MovieLens-100k test samples (the default ``movielens``
    preset, whose stage-1 runs these are), showing the last ``max_items`` clicks (None: all)."""
    from llm4sbr.data import load_dataset
    from llm4sbr.intent import build_prompt

    dataset = load_dataset("ml-100k")
    test = dataset.splits["test"]
    rows = np.random.default_rng(seed).choice(len(test), size=min(count, len(test)), replace=False)
    return [build_prompt(dataset.item_names, test.prefix(int(i)), "long", max_items) for i in rows]


def stream_prompts(count: int, max_items: int | None) -> list[str]:
    """The first ``count`` prompts ``infer-intents --data ml-100k --llm-budget 1`` sends a
    prefix-ordered engine: both views of every train and valid sample, distinct, in
    :func:`llm4sbr.intent.prefix_order` (session groups in a seeded random order, so any
    leading part is a sample of the whole run)."""
    from llm4sbr.data import load_dataset
    from llm4sbr.intent import VIEWS, build_prompt, prefix_order

    dataset = load_dataset("ml-100k")
    prompts = list(
        dict.fromkeys(
            build_prompt(dataset.item_names, samples.prefix(i), view, max_items)
            for split in ("train", "valid")
            for samples in (dataset.splits[split],)
            for i in range(len(samples))
            for view in VIEWS
        )
    )
    return [prompts[i] for i in prefix_order(prompts)[:count]]


def _engine_rates(backend: Any) -> dict[str, float]:
    """llama.cpp's own speed on this machine with ``backend``'s model and threads: prompt tokens
    per second evaluating 256 tokens at once (the cache cleared), and milliseconds per token
    evaluating one at a time (a decode step)."""
    llm = backend._llm
    tokens = (backend.tokens("The order in which users click on items is as follows:\n" * 40) * 2)[:288]
    backend._keep_common_prefix([0])  # clears the KV cache
    start = time.perf_counter()
    backend._evaluate(tokens[:256])
    prefill = 256 / (time.perf_counter() - start)
    start = time.perf_counter()
    for token in tokens[256:]:
        backend._evaluate([token])
    decode_ms = 1000 * (time.perf_counter() - start) / 32
    llm.reset()
    return {"engine_prefill_tok_s": prefill, "engine_decode_ms": decode_ms}


def _llm_stream_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The default stage-1 engine (llama.cpp, the bundled model requantised to Q4_0) on
    :func:`stream_prompts`, one after the other as ``infer-intents`` runs them. The engine floor
    estimates what llama.cpp alone needs for the same work: the prompt tokens computed at its
    prefill rate on a 256-token prompt plus one decode step per new token (long prompts' attention
    costs more than that); ``in_llama_cpp_share`` is the measured share of the time spent inside
    llama.cpp's evaluation calls. ``peak_mib``: the process's peak resident
    memory above what it held before the engine was made (model, KV cache, buffers)."""
    from llm4sbr.intent import make_backend

    prompts = stream_prompts(spec["prompts"], spec["max_prompt_items"])
    baseline_mib = status_mib("VmRSS") or 0.0
    try:
        backend = make_backend("smollm2", threads=spec["threads"], max_new_tokens=spec["max_new_tokens"])
        start = time.perf_counter()
        backend.generate(["The order in which users click on items is as follows:"])
    except (RuntimeError, ImportError) as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    if type(backend).__name__ != "LlamaCppBackend":
        return {"skipped": "llama-cpp-python is not installed (the cpu-llm extra)"}
    load_s = time.perf_counter() - start
    rates = _engine_rates(backend)
    before, engine_before = dict(backend.stats), backend.engine_seconds
    start = time.perf_counter()
    backend.generate(prompts)
    seconds = time.perf_counter() - start
    engine_seconds = backend.engine_seconds - engine_before
    stats = {
        k: backend.stats[k] - before[k] for k in ("prompts", "prompt_tokens", "prefill_tokens", "new_tokens")
    }
    floor_s = (
        stats["prefill_tokens"] / rates["engine_prefill_tok_s"]
        + stats["new_tokens"] * rates["engine_decode_ms"] / 1000
    )
    return {
        "load_s": load_s,
        "prompts": len(prompts),
        "mean_prompt_tokens": stats["prompt_tokens"] / len(prompts),
        "computed_tokens_per_prompt": stats["prefill_tokens"] / len(prompts),
        "computed_share": stats["prefill_tokens"] / stats["prompt_tokens"],
        "new_tokens_per_prompt": stats["new_tokens"] / len(prompts),
        "generate_s": seconds,
        "prompts_per_s": len(prompts) / seconds,
        **rates,
        "engine_floor_prompts_per_s": len(prompts) / floor_s,
        "in_llama_cpp_share": engine_seconds / seconds,
        "weights_mib": backend._llm._model.size() / 2**20,
        "peak_mib": process_peak_mib(torch.device("cpu")) - baseline_mib,
        "threads": backend.threads,
    }


def _generation_seconds(
    generate: Callable[[Any], object], batches: Sequence[Any], device: torch.device
) -> float:
    seconds = 0.0
    for batch in batches:
        start = time.perf_counter()
        generate(batch)
        synchronize(device)
        seconds += time.perf_counter() - start
    return seconds


def _memory_record(
    generate: Callable[[], object], device: torch.device, weights_mib: float
) -> dict[str, float]:
    """``generation_mib``: allocated at the peak of one generation call above the loaded model;
    ``peak_mib``: weights + that."""
    generation = peak_memory_mib(generate, device)
    return {"weights_mib": weights_mib, "generation_mib": generation, "peak_mib": weights_mib + generation}


def _llm_bundled_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The bundled SmolLM2 through the package's backend at one precision, on real prompts."""
    from llm4sbr.intent import make_backend

    torch.set_num_threads(spec["threads"])
    prompts = sorted(real_prompts(spec["prompts"], spec["max_prompt_items"]), key=len, reverse=True)
    backend = make_backend(
        "smollm2", precision=spec["precision"], device=spec["device"],
        batch_size=spec["batch_size"], max_new_tokens=spec["max_new_tokens"],
    )  # fmt: skip
    start = time.perf_counter()
    try:
        backend.generate(["The order in which users click on items is as follows:\n1. Heat (1995)_1"])
    except (RuntimeError, ImportError) as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    load_s = time.perf_counter() - start
    device = torch.device(spec["device"])
    before = dict(backend.stats)
    batches = [prompts[i : i + spec["batch_size"]] for i in range(0, len(prompts), spec["batch_size"])]
    seconds = _generation_seconds(backend.generate, batches, device)
    stats = {k: backend.stats[k] - before[k] for k in ("prompts", "prompt_tokens", "new_tokens")}
    weights = backend._model.get_memory_footprint() / 2**20
    return {
        "load_s": load_s,
        "prompts": len(prompts),
        "mean_prompt_tokens": stats["prompt_tokens"] / stats["prompts"],
        "new_tokens_per_prompt": stats["new_tokens"] / stats["prompts"],
        "generate_s": seconds,
        "prompts_per_s": len(prompts) / seconds,
        **_memory_record(lambda: backend.generate(batches[0]), device, weights),
        "process_peak_mib": process_peak_mib(device),
        "threads": torch.get_num_threads(),
    }


def _llm_random_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """A model built from ``spec["config"]`` with random weights on ``spec["device"]`` in fp32 or
    bf16, or quantised to NF4 as the package's backend does it; greedy generation of exactly
    ``max_new_tokens`` for random prompts of :data:`PROMPT_TOKENS` lengths."""
    from llm4sbr.intent.backends import _check_bitsandbytes, _quantize_in_place
    from llm4sbr.intent.hf import import_transformers

    torch.set_num_threads(spec["threads"])
    transformers = import_transformers()
    device = torch.device(spec["device"])
    precision = spec["precision"]
    if precision not in ("fp32", "bf16", "4bit"):
        return {"skipped": f"random-weight runs take fp32, bf16 or 4bit, not {precision}"}
    try:
        bnb = _check_bitsandbytes(precision, device) if precision == "4bit" else None
    except (RuntimeError, ImportError) as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    values = dict(spec["config"])
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    if bnb is not None:
        _quantize_in_place(model, bnb, precision, device)
    model.eval()
    synchronize(device)
    load_s = time.perf_counter() - start
    weights = model.get_memory_footprint() / 2**20

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(PROMPT_TOKENS[0], PROMPT_TOKENS[1] + 1, (spec["prompts"],), generator=g)
    lengths = lengths.sort(descending=True).values
    batches = []
    for begin in range(0, spec["prompts"], spec["batch_size"]):
        part = lengths[begin : begin + spec["batch_size"]]
        width = int(part.max())
        ids = torch.randint(3, config.vocab_size, (len(part), width), generator=g)
        mask = (torch.arange(width)[None, :] >= (width - part)[:, None]).long()  # left padding
        batches.append((ids.to(device), mask.to(device)))
    settings = dict(max_new_tokens=spec["max_new_tokens"], min_new_tokens=spec["max_new_tokens"])

    @torch.inference_mode()
    def generate(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        model.generate(
            input_ids=batch[0], attention_mask=batch[1], do_sample=False, pad_token_id=0, **settings
        )

    seconds = _generation_seconds(generate, batches, device)
    return {
        "load_s": load_s,
        "prompts": spec["prompts"],
        "mean_prompt_tokens": float(lengths.float().mean()),
        "new_tokens_per_prompt": spec["max_new_tokens"],
        "generate_s": seconds,
        "prompts_per_s": spec["prompts"] / seconds,
        **_memory_record(lambda: generate(batches[0]), device, weights),
        "process_peak_mib": process_peak_mib(device),
        "threads": torch.get_num_threads(),
    }


def run_llm(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """Prompts/s and peak memory per (model, precision); see :func:`_llm_bundled_worker` and
    :func:`_llm_random_worker`."""
    models = options.llm_models or (("bundled",) if device.type == "cpu" else ("smollm2-135m", "qwen2-7b"))
    records = []
    if device.type == "cpu" and "bundled" in models and options.llm_stream_prompts:
        for items in options.llm_stream_items:
            for threads in options.llm_stream_threads:
                spec = {
                    "prompts": options.llm_stream_prompts, "max_prompt_items": items,
                    "threads": threads, "max_new_tokens": options.llm_max_new_tokens,
                }  # fmt: skip
                record = {
                    "model": "SmolLM2-135M-Instruct (bundled GGUF)", "precision": "Q4_0 (llama.cpp)",
                    "weights": "real", "batch": "stream", "prompt_items": items or "all",
                }  # fmt: skip
                record.update(in_fresh_process(_llm_stream_worker, spec, options.isolate))
                records.append(record)
                progress(f"llm stream, {items or 'all'} clicks, {threads} threads", record)
    for model in models:
        precisions = (
            options.llm_precisions if model == "bundled" or device.type == "cpu" else ("bf16", "4bit")
        )
        for precision in precisions:
            spec = {
                "precision": precision, "device": device.type, "prompts": options.llm_prompts,
                "batch_size": options.llm_batch_size, "max_new_tokens": options.llm_max_new_tokens,
                "max_prompt_items": options.llm_max_prompt_items, "threads": torch.get_num_threads(),
            }  # fmt: skip
            record: dict[str, Any] = {
                "model": "SmolLM2-135M-Instruct (bundled GGUF)" if model == "bundled" else model
            }
            record["precision"] = precision
            record["weights"] = "real" if model == "bundled" else "random"
            record["batch"] = options.llm_batch_size
            record["prompt_items"] = (options.llm_max_prompt_items or "all") if model == "bundled" else "-"
            if model == "bundled":
                record.update(in_fresh_process(_llm_bundled_worker, spec, options.isolate))
            else:
                spec["config"] = RANDOM_LLM_CONFIGS[model]
                record.update(in_fresh_process(_llm_random_worker, spec, options.isolate))
            records.append(record)
            progress(f"llm {record['model']} {precision}", record)
    return records
