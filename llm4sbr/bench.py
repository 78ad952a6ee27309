"""Benchmarks: the setups behind ``pytest bench --benchmark-only`` and ``llm4sbr bench``.

One harness, one timer and one result format for every comparison:

* ``kernels``: gnn_step, attn_pool and align_uniform_loss for the providers ``triton`` (CUDA only),
  ``torch`` (the op's ``_ref``, what runs where Triton cannot) and ``compile`` (``torch.compile``
  of the ref), in the modes ``forward`` (the training forward: inputs require grad), ``backward``
  (the gradients only; the forward runs untimed before each call) and ``full`` (both), over
  :data:`SHAPES`.
* ``train``: one training step per model and encoder path (:data:`MODEL_PATHS`), then whole
  epochs on MovieLens-100k leave-one-out (RecBole's split: 97,171 training samples, batch 100,
  d = 100): our SRGNN and LLM4SBR through :func:`llm4sbr.train.train`, our SRGNN on the padded
  reference path, and RecBole's own SRGNN as shipped and with its global anomaly detection off
  (``bench/recbole_peer.py`` in RecBole's virtual environment). Epoch seconds, peak memory, test
  hit@20 / mrr@20, and our time as a multiple of the dense-GEMM floor measured on the machine.
* ``serve``: ``full_sort_predict`` latency at batch 1 and 256 per model and path.
* ``llm``: stage-1 generation prompts/s and peak memory per precision: on CPU the bundled
  SmolLM2-135M with real prompts through :func:`llm4sbr.intent.make_backend`; on CUDA models built
  from their configuration with random weights (cost does not depend on the weights' values),
  bf16 against bitsandbytes NF4.

Timing: wall clock per call with the device synchronised inside the timed callable; p20/p50/
p80/p99 over the rounds after warm-up. Peak memory: bytes allocated during one call above what
was allocated before it (CUDA allocator statistics; on CPU the profiler's allocation events);
for whole training runs the peak of a fresh process (resident set on CPU); for the LLM stage the
model's weights plus the working set of one generation call. Every result carries the device
name, versions, thread count, load average and configuration.

``run_benchmarks`` writes ``results.json`` (all suites run so far; a suite replaces its earlier
records), one CSV per suite, ``tables.md`` (the README's tables) and PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

SUITES = ("kernels", "train", "serve", "llm")
KERNELS = ("gnn_step", "attn_pool", "align_uniform_loss")
PROVIDERS = ("triton", "torch", "compile")
MODES = ("forward", "backward", "full")
MODELS = ("srgnn", "llm4sbr")
MODEL_PATHS = ("triton", "torch", "packed")
"""Encoder paths: padded with the Triton kernels, padded with the kernels' references, packed."""
PATH_BACKENDS = {"triton": "triton", "torch": "torch", "packed": "auto"}


class Shape(NamedTuple):
    """Kernel problem size: B sessions, L positions (= nodes for gnn_step), d features."""

    B: int
    L: int
    d: int


SHAPES = {
    "small": Shape(100, 20, 100),
    "train": Shape(100, 50, 100),
    "medium": Shape(512, 50, 128),
    "large": Shape(2048, 50, 256),
}
TARGET_SHAPE = "large"
ISSUE_FLOOR_SECONDS = 28.0
"""The stage-2 issue's dense fp32 floor for one SRGNN epoch on the 2-core CPU (about 3.1 TFLOP at
about 110 GFLOP/s); the train suite also measures its own."""

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


@dataclass
class BenchOptions:
    """What to run. Sizes default to the real workloads; :meth:`tiny` makes a seconds-long run.

    device: "auto" (CUDA when available), "cpu" or "cuda". shapes: names in :data:`SHAPES` (or
    extra ``custom_shapes``). rounds: timed calls per measurement, after at least ``warmup``
    untimed calls and ``warmup_s`` seconds of them. threads: torch intra-op threads (None keeps
    torch's default). n_items, dim, max_len, d_text, train_batch: the model benchmarks' catalog,
    width, session cap, text width and batch. data / preset / dataset: the training data
    (``dataset`` overrides both with a prebuilt SessionDataset). epochs: epochs per training run
    (the padded reference path and RecBole as shipped get ``reference_epochs``). recbole_python /
    recbole_script: RecBole's interpreter and the peer script (None or missing files: the peer
    is skipped and says why). isolate: run each training and LLM measurement in a fresh process
    so its peak memory is its own. llm_models: "bundled" (SmolLM2 GGUF, real prompts) or names
    in :data:`RANDOM_LLM_CONFIGS`; None picks "bundled" on CPU and smollm2-135m + qwen2-7b on
    CUDA. llm_max_prompt_items: the bundled runs' prompts show only the last N clicks (as
    ``infer-intents --max-prompt-items``; None shows all). serve_checkpoint: a trained run's
    best.pt whose ``Recommender.recommend`` (and ``explain``) the serve suite also times on the
    run's test sessions, one at a time. plots: write PNGs (needs matplotlib).
    """

    device: str = "auto"
    shapes: tuple[str, ...] = tuple(SHAPES)
    custom_shapes: dict[str, Shape] = field(default_factory=dict)
    kernels: tuple[str, ...] = KERNELS
    providers: tuple[str, ...] = PROVIDERS
    modes: tuple[str, ...] = MODES
    rounds: int = 20
    warmup: int = 3
    warmup_s: float = 1.0
    threads: int | None = None
    n_items: int = 1682
    dim: int = 100
    max_len: int = 50
    d_text: int = 384
    train_batch: int = 100
    serve_batches: tuple[int, ...] = (1, 256)
    serve_rounds: int = 100
    serve_checkpoint: str | None = None
    data: str = "ml-100k"
    preset: str = "leave-one-out"
    dataset: Any = None
    epochs: int = 2
    reference_epochs: int = 1
    recbole_python: str | None = ".venv-recbole/bin/python"
    recbole_script: str | None = "bench/recbole_peer.py"
    isolate: bool = True
    llm_models: tuple[str, ...] | None = None
    llm_precisions: tuple[str, ...] = ("fp32", "bf16", "4bit")
    llm_prompts: int = 8
    llm_batch_size: int = 8
    llm_max_new_tokens: int = 32
    llm_max_prompt_items: int | None = None
    plots: bool = True

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchOptions:
        """Tiny shapes, few rounds, no compile, no RecBole, the tiny random LLM: a smoke run."""
        values: dict[str, Any] = dict(
            shapes=("tiny",),
            custom_shapes={"tiny": Shape(3, 5, 8)},
            providers=("triton", "torch"),
            rounds=2,
            warmup=1,
            warmup_s=0.0,
            n_items=40,
            dim=8,
            max_len=6,
            d_text=12,
            train_batch=4,
            serve_batches=(1, 3),
            serve_rounds=2,
            epochs=1,
            reference_epochs=1,
            recbole_python=None,
            isolate=False,
            llm_models=("tiny",),
            llm_precisions=("fp32",),
            llm_prompts=2,
            llm_batch_size=2,
            llm_max_new_tokens=2,
        )
        values.update(overrides)
        return cls(**values)

    def shape(self, name: str) -> Shape:
        return self.custom_shapes[name] if name in self.custom_shapes else SHAPES[name]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the prebuilt dataset by name only)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dataset"}
        out["custom_shapes"] = {k: list(v) for k, v in self.custom_shapes.items()}
        out["dataset"] = getattr(self.dataset, "name", None)
        return out


# ----------------------------------------------------------------------------- environment


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} logical cores)"


def device_slug(device: torch.device) -> str:
    """Folder name for a device's results: ``cpu`` or ``cuda-<gpu name>``."""
    if device.type != "cuda":
        return "cpu"
    name = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(device).lower())
    return "cuda-" + "-".join(part for part in name.split("-") if part)


def environment(device: torch.device) -> dict[str, Any]:
    """Device, versions, threads and machine load at the time of a measurement."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from llm4sbr import __version__

    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu": device_name(torch.device("cpu")),
        "cpu_bf16": " avx512_bf16 " in flags or " amx_bf16 " in flags,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "llm4sbr": __version__,
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case(NamedTuple):
    """One benchmark case: only ``run(*setup())`` is timed and measured (``setup`` prepares each
    call untimed, e.g. the forward whose backward is measured); ``run`` synchronises its device
    before returning."""

    run: Callable[..., None]
    setup: Callable[[], tuple] | None = None


def time_ms(
    fn: Callable[..., object],
    rounds: int,
    warmup: int,
    setup: Callable[[], tuple] | None = None,
    warmup_s: float = 0.0,
) -> list[float]:
    """Milliseconds of each of ``rounds`` calls ``fn(*setup())`` after untimed warm-up calls: at
    least ``warmup`` of them and ``warmup_s`` seconds (the first steps of a process are slower
    while the allocator grows). ``fn`` must synchronise its device before returning."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        fn(*(setup() if setup else ()))
        done += 1
    times = []
    for _ in range(rounds):
        args = setup() if setup else ()
        start = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times_ms: Sequence[float]) -> dict[str, float]:
    """p20/p50/p80/p99, mean and min of a list of milliseconds."""
    values = np.asarray(times_ms, dtype=np.float64)
    p20, p50, p80, p99 = np.percentile(values, [20, 50, 80, 99])
    return {
        "p20_ms": float(p20),
        "p50_ms": float(p50),
        "p80_ms": float(p80),
        "p99_ms": float(p99),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "rounds": len(values),
    }


def peak_memory_mib(
    fn: Callable[..., object], device: torch.device, setup: Callable[[], tuple] | None = None
) -> float:
    """MiB allocated at the peak of one call ``fn(*setup())`` above what was allocated before it
    (on CPU, frees of memory allocated before the call are not subtracted)."""
    args = setup() if setup else ()
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(*args)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*args)
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def process_peak_mib(device: torch.device) -> float:
    """Peak memory of this process so far: the CUDA allocator's peak, or the peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _measure(case: Case, device: torch.device, options: BenchOptions, rounds: int) -> dict[str, Any]:
    first = time.perf_counter()
    case.run(*(case.setup() if case.setup else ()))
    first_s = time.perf_counter() - first
    stats = summarize(time_ms(case.run, rounds, max(options.warmup - 1, 0), case.setup, options.warmup_s))
    stats["first_call_s"] = first_s
    stats["peak_mib"] = peak_memory_mib(case.run, device, case.setup)
    return stats


# ----------------------------------------------------------------------------- kernels


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
    two views of [B, d]."""
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
                        record.update(_measure(case, device, options, options.rounds))
                        record["sessions_per_s"] = shape.B / record["p50_ms"] * 1e3
                    else:
                        record["skipped"] = reason
                    records.append(record)
                    _progress(f"kernels {kernel} {provider} {mode} {shape_name}", record)
    _add_speedups(records, ("kernel", "mode", "shape"), "provider", ("torch", "compile"))
    return records


def _add_speedups(
    records: list[dict[str, Any]], key: tuple[str, ...], variant: str, baselines: tuple[str, ...]
) -> None:
    """``speedup_vs_<baseline>`` = baseline p50 / this p50, within groups of equal ``key``."""
    groups: dict[tuple, dict[str, float]] = {}
    for r in records:
        if "p50_ms" in r:
            groups.setdefault(tuple(r[k] for k in key), {})[r[variant]] = r["p50_ms"]
    for r in records:
        group = groups.get(tuple(r[k] for k in key), {})
        for base in baselines:
            if "p50_ms" in r and base in group and r[variant] != base:
                r[f"speedup_vs_{base}"] = group[base] / r["p50_ms"]


# ----------------------------------------------------------------------------- models


def path_skip_reason(path: str, device: torch.device) -> str | None:
    if path == "triton":
        return provider_skip_reason("triton", device)
    return None


def build_model(name: str, n_items: int, dim: int, d_text: int) -> nn.Module:
    """SRGNN or LLM4SBR with the package defaults (steps 1, readout "none", tau 0.1)."""
    from llm4sbr.models import LLM4SBR, SRGNN

    if name == "srgnn":
        return SRGNN(n_items, dim=dim)
    if name == "llm4sbr":
        return LLM4SBR(n_items, d_text, dim=dim)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


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
    (``op="full_sort"``) of ``model_name`` on the encoder ``path``."""
    from llm4sbr.kernels import use_backend

    torch.manual_seed(seed)
    model = build_model(model_name, n_items, dim, d_text).to(device)
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


def _model_records(
    options: BenchOptions, device: torch.device, op: str, batch_sizes: Sequence[int], rounds: int
) -> list[dict[str, Any]]:
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
                    record.update(_measure(case, device, options, rounds))
                    record["sessions_per_s"] = batch_size / record["p50_ms"] * 1e3
                else:
                    record["skipped"] = reason
                records.append(record)
                _progress(f"{op} {model_name} {path} batch {batch_size}", record)
    _add_speedups(records, ("model", "op", "batch"), "path", ("torch",))
    return records


def run_serve(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """``full_sort_predict`` latency per model, path and batch size (intents given, as when
    they are cached or predicted; no LLM call), then :func:`_recommend_records`."""
    records = _model_records(options, device, "full_sort", options.serve_batches, options.serve_rounds)
    if options.serve_checkpoint:
        records += _recommend_records(options, device)
    return records


def _recommend_records(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """Latency of ``Recommender.recommend(session, k=20)`` (and ``explain(session, k=3)`` when the
    run has an explainer) of ``options.serve_checkpoint``, one call per test session of the run in
    raw item ids, cycling through them: the serving path a user calls, with no LLM call."""
    from llm4sbr.checkpoint import load_checkpoint
    from llm4sbr.config import TrainConfig, from_dict
    from llm4sbr.serve import Recommender
    from llm4sbr.train import run_dataset

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
        _progress(f"serve {path}", record)
    return records


# ----------------------------------------------------------------------------- training epochs


def samples_fingerprint(prefixes: Sequence[Sequence[str]], targets: Sequence[str]) -> str:
    """sha256 of the sorted ``"raw prefix ids > raw target"`` lines: equal for two pipelines that
    train on the same samples whatever their item numbering and order. ``bench/recbole_peer.py``
    computes the same on RecBole's side."""
    lines = sorted(" ".join(p) + " > " + t for p, t in zip(prefixes, targets, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_fingerprint(dataset: Any, split: str = "train") -> str:
    """:func:`samples_fingerprint` of one split of a SessionDataset, in raw item ids."""
    raw = np.asarray(dataset.item_raw_ids, dtype=object)
    samples = dataset.splits[split]
    prefixes = [raw[samples.prefix(i)].tolist() for i in range(len(samples))]
    return samples_fingerprint(prefixes, raw[samples.targets].tolist())


def write_random_intents(dataset: Any, out_dir: Path, d_text: int, seed: int = 0) -> Path:
    """A stage-1 output folder of random intent vectors for every sample of ``dataset``: stage-2
    cost does not depend on their values, and the real LLM stage takes hours for 97k samples."""
    from llm4sbr.intent.store import INTENTS_FILE, ids_digest, write_meta, write_sample_ids

    sample_ids = np.concatenate([s.sample_ids for s in dataset.splits.values()]).astype(np.int64)
    vectors = np.random.default_rng(seed).standard_normal((len(sample_ids), 2, d_text), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / INTENTS_FILE, vectors)
    write_sample_ids(out_dir, sample_ids)
    write_meta(
        out_dir,
        {
            "format": 1,
            "shape": list(vectors.shape),
            "sample_ids_sha256": ids_digest(sample_ids),
            "random": True,
        },
    )
    return out_dir


def _train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run of our package (in a fresh process when isolated): epoch seconds, test
    metrics and peak memory. ``spec``: config (TrainConfig fields), backend, dataset (None: load
    ``config.data``)."""
    from llm4sbr.config import TrainConfig, from_dict
    from llm4sbr.data import load_dataset
    from llm4sbr.kernels import use_backend
    from llm4sbr.train import train

    config = from_dict(TrainConfig, spec["config"])
    dataset = spec["dataset"] or load_dataset(config.data, config.preset)
    with tempfile.TemporaryDirectory(prefix="llm4sbr-bench-") as tmp:
        device = torch.device("cuda" if config.device == "cuda" else "cpu")
        with use_backend(spec["backend"]):
            result = train(config, Path(tmp) / "run", dataset=dataset, overwrite=True, progress=False)
        peak = process_peak_mib(device)
    return {
        "epoch_seconds": result.epoch_seconds,
        "test": result.test,
        "peak_mib": peak,
        "train_samples": len(dataset.splits["train"]),
        "samples_fingerprint": split_fingerprint(dataset),
        "threads": torch.get_num_threads(),
    }


def _in_fresh_process(
    fn: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any], isolate: bool
) -> dict:
    if not isolate:
        return fn(spec)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, (spec,))


def _recbole_run(options: BenchOptions, device: torch.device, anomaly: bool, epochs: int) -> dict[str, Any]:
    python, script = options.recbole_python, options.recbole_script
    if not python or not Path(python).is_file():
        return {"skipped": f"RecBole's interpreter {python!r} not found (see bench/recbole_peer.py)"}
    if not script or not Path(script).is_file():
        return {"skipped": f"peer script {script!r} not found"}
    with tempfile.TemporaryDirectory(prefix="llm4sbr-recbole-") as tmp:
        out = Path(tmp) / "result.json"
        command = [
            python, script, "--epochs", str(epochs), "--anomaly", "on" if anomaly else "off",
            "--device", device.type, "--batch-size", str(options.train_batch), "--dim", str(options.dim),
            "--threads", str(torch.get_num_threads()), "--out", str(out),
        ]  # fmt: skip
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not out.is_file():
            return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
        return json.loads(out.read_text())


def gemm_gflops(
    device: torch.device, size: tuple[int, int, int] = (4096, 256, 1024), rounds: int = 10
) -> float:
    """Best fp32 GEMM rate of this device, GFLOP/s, on an M x K x N product shaped like the
    model's (many rows, a few hundred columns)."""
    m, k, n = size
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)

    def run() -> None:
        a @ b
        synchronize(device)

    return 2 * m * k * n / (min(time_ms(run, rounds, 2)) * 1e-3) / 1e9


def srgnn_epoch_flops(dataset: Any, dim: int, folded: bool) -> float:
    """Dense FLOPs of one SRGNN training epoch (forward x 3 for forward + backward): per node
    11 d^2 multiply-adds of gnn_step (9 d^2 folded), per click d^2 of the attention projection,
    per sample 3 d^2 (W1 and the fusion) and d n_items (the scores)."""
    train = dataset.splits["train"]
    nodes = sum(len(np.unique(train.prefix(i))) for i in range(len(train)))
    clicks = int(train.lengths().sum())
    per_node = (9 if folded else 11) * dim * dim
    macs = nodes * per_node + clicks * dim * dim + len(train) * (3 * dim * dim + dim * dataset.n_items)
    return 3 * 2 * macs


def run_train(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """Training steps per model and path, then epochs of ours and RecBole's (see module doc)."""
    from llm4sbr.data import load_dataset

    records = _model_records(options, device, "train_step", (options.train_batch,), options.rounds)
    base = {
        "data": options.data, "preset": options.preset, "batch_size": options.train_batch,
        "dim": options.dim, "epochs": options.epochs, "patience": options.epochs, "lr": 1e-3, "l2": 1e-5,
        "device": device.type, "threads": torch.get_num_threads(), "seed": 0,
    }  # fmt: skip
    runs = [
        ("llm4sbr SRGNN", "srgnn", "auto", options.epochs),
        ("llm4sbr SRGNN, padded reference path", "srgnn", "torch", options.reference_epochs),
        ("llm4sbr LLM4SBR", "llm4sbr", "auto", options.epochs),
    ]
    if device.type == "cuda":
        runs.insert(1, ("llm4sbr SRGNN, Triton kernels", "srgnn", "triton", options.epochs))
    dataset = options.dataset or load_dataset(options.data, options.preset)
    with tempfile.TemporaryDirectory(prefix="llm4sbr-bench-intents-") as intents:
        write_random_intents(dataset, Path(intents), options.d_text)
        for name, model, backend, epochs in runs:
            config = {**base, "model": model, "epochs": epochs, "patience": epochs}
            if model == "llm4sbr":
                config["intents"] = intents
            spec = {"config": config, "backend": backend, "dataset": options.dataset}
            record: dict[str, Any] = {"op": "epoch", "setup": name, "model": model, "backend": backend}
            record.update(_in_fresh_process(_train_worker, spec, options.isolate))
            records.append(_epoch_summary(record))
            _progress(f"epoch {name}", record)
    for anomaly, label in ((True, "as shipped"), (False, "anomaly detection off")):
        epochs = options.epochs if not anomaly else options.reference_epochs
        record = {"op": "epoch", "setup": f"RecBole SRGNN, {label}", "model": "recbole-srgnn"}
        record.update(_recbole_run(options, device, anomaly, epochs))
        records.append(_epoch_summary(record))
        _progress(f"epoch {record['setup']}", record)
    records.append(_floor_record(dataset, options.dim, device, records))
    return records


def _epoch_summary(record: dict[str, Any]) -> dict[str, Any]:
    seconds = record.get("epoch_seconds")
    if seconds:
        record["epoch_s"] = float(np.mean(seconds))
        record["epochs"] = len(seconds)
        record["epoch_s_min"] = float(np.min(seconds))
        test = record.get("test", {})
        record["test_hit@20"] = test.get("hit@20")
        record["test_mrr@20"] = test.get("mrr@20")
        record["samples_sha256"] = record.get("samples_fingerprint", "")[:12]
    return record


def _floor_record(dataset: Any, dim: int, device: torch.device, records: list[dict[str, Any]]) -> dict:
    """The dense-GEMM floor of one SRGNN epoch on this device and the ratios the targets use."""
    gflops = gemm_gflops(device)
    floor = srgnn_epoch_flops(dataset, dim, folded=False) / (gflops * 1e9)
    folded = srgnn_epoch_flops(dataset, dim, folded=True) / (gflops * 1e9)
    by_setup = {r["setup"]: r for r in records if r.get("op") == "epoch"}
    ours = by_setup.get("llm4sbr SRGNN", {}).get("epoch_s")
    out: dict[str, Any] = {
        "op": "floor",
        "setup": "dense fp32 GEMM floor",
        "gemm_gflops": gflops,
        "floor_epoch_s": floor,
        "folded_floor_epoch_s": folded,
        "issue_floor_epoch_s": ISSUE_FLOOR_SECONDS,
    }
    if ours:
        out["ours_over_floor"] = ours / floor
        out["ours_over_folded_floor"] = ours / folded
        out["ours_over_issue_floor"] = ours / ISSUE_FLOOR_SECONDS
    return out


# ----------------------------------------------------------------------------- LLM stage


def _real_prompts(count: int, max_items: int | None = None, seed: int = 0) -> list[str]:
    """Long-term prompts of ``count`` random MovieLens-100k test samples (the default ``movielens``
    preset, whose stage-1 runs these are), showing the last ``max_items`` clicks (None: all)."""
    from llm4sbr.data import load_dataset
    from llm4sbr.intent.prompts import build_prompt

    dataset = load_dataset("ml-100k")
    test = dataset.splits["test"]
    rows = np.random.default_rng(seed).choice(len(test), size=min(count, len(test)), replace=False)
    return [build_prompt(dataset.item_names, test.prefix(int(i)), "long", max_items) for i in rows]


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
    prompts = sorted(_real_prompts(spec["prompts"], spec["max_prompt_items"]), key=len, reverse=True)
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
                record.update(_in_fresh_process(_llm_bundled_worker, spec, options.isolate))
            else:
                spec["config"] = RANDOM_LLM_CONFIGS[model]
                record.update(_in_fresh_process(_llm_random_worker, spec, options.isolate))
            records.append(record)
            _progress(f"llm {record['model']} {precision}", record)
    return records


# ----------------------------------------------------------------------------- targets


def evaluate_targets(suites: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each "met", "missed" or "not measured" with the numbers behind it."""
    targets = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "not measured" if ok is None else ("met" if ok else "missed")
        targets.append({"target": name, "status": status, "detail": detail})

    train = suites.get("train", {})
    device = train.get("environment", {}).get("device")
    epochs = {r["setup"]: r for r in train.get("records", []) if r.get("op") == "epoch" and "epoch_s" in r}
    floor = next((r for r in train.get("records", []) if r.get("op") == "floor"), {})
    ours = epochs.get("llm4sbr SRGNN", {}).get("epoch_s")
    peer = epochs.get("RecBole SRGNN, anomaly detection off", {}).get("epoch_s")
    factor = 10.0 if device == "cuda" else 3.0
    if train:
        ratio = peer / ours if ours and peer else None
        add(
            f"our SRGNN epoch >= {factor:g}x faster than RecBole SRGNN ({device})",
            None if ratio is None else ratio >= factor,
            "not run"
            if ratio is None
            else f"{ours:.1f} s vs {peer:.1f} s: {ratio:.2f}x (anomaly detection off)",
        )
        over = floor.get("ours_over_floor")
        if device == "cpu":
            add(
                "our SRGNN epoch within 1.2x of the dense fp32 floor (CPU)",
                None if over is None else over <= 1.2,
                "not run"
                if over is None
                else f"{ours:.1f} s = {over:.2f}x the measured floor {floor['floor_epoch_s']:.1f} s "
                f"({floor['ours_over_issue_floor']:.2f}x the issue's {ISSUE_FLOOR_SECONDS:g} s)",
            )
        llm = epochs.get("llm4sbr LLM4SBR", {}).get("epoch_s")
        add(
            "LLM4SBR epoch <= 1.3x our SRGNN epoch",
            None if not (llm and ours) else llm <= 1.3 * ours,
            "not run" if not (llm and ours) else f"{llm:.1f} s vs {ours:.1f} s: {llm / ours:.2f}x",
        )
    kernels = suites.get("kernels", {})
    if kernels.get("environment", {}).get("device") == "cuda":
        full = [r for r in kernels["records"] if r["mode"] == "full" and r["shape"] == TARGET_SHAPE]
        by = {(r["kernel"], r["provider"]): r for r in full}
        for kernel in KERNELS:
            tri, ref, comp = (by.get((kernel, p), {}) for p in PROVIDERS)
            if "p50_ms" not in tri or "p50_ms" not in ref:
                add(f"{kernel}: GPU full fwd+bwd targets", None, "not run")
                continue
            vs_ref = ref["p50_ms"] / tri["p50_ms"]
            vs_comp = comp["p50_ms"] / tri["p50_ms"] if "p50_ms" in comp else None
            ok = vs_ref >= 2 and (vs_comp is None or vs_comp >= 1) and tri["peak_mib"] <= ref["peak_mib"]
            add(
                f"{kernel}: GPU full fwd+bwd >= 2x eager, >= torch.compile, memory <= eager ({TARGET_SHAPE})",
                ok,
                f"{vs_ref:.2f}x eager, {'n/a' if vs_comp is None else f'{vs_comp:.2f}x'} compile, "
                f"{tri['peak_mib']:.1f} vs {ref['peak_mib']:.1f} MiB",
            )
    else:
        add("kernel targets (GPU)", None, "owed: needs a CUDA device")
    llm = suites.get("llm", {})
    if llm.get("environment", {}).get("device") == "cuda":
        for model in {r["model"] for r in llm["records"]}:
            peak = {r["precision"]: r.get("peak_mib") for r in llm["records"] if r["model"] == model}
            if peak.get("4bit") and peak.get("bf16"):
                share = peak["4bit"] / peak["bf16"]
                add(f"{model}: 4-bit peak <= 40% of bf16 (GPU)", share <= 0.4, f"{100 * share:.0f}%")
            else:
                add(f"{model}: 4-bit peak <= 40% of bf16 (GPU)", None, "a precision did not run")
    else:
        add("LLM 4-bit peak <= 40% of bf16 (GPU)", None, "owed: needs a CUDA device")
    return targets


# ----------------------------------------------------------------------------- output


SUITE_RUNNERS: dict[str, Callable[[BenchOptions, torch.device], list[dict[str, Any]]]] = {
    "kernels": run_kernels,
    "train": run_train,
    "serve": run_serve,
    "llm": run_llm,
}


def _progress(label: str, record: dict[str, Any]) -> None:
    if "p50_ms" in record:
        note = (
            f"p50 {record['p50_ms']:.3f} ms  p99 {record['p99_ms']:.3f} ms  peak {record['peak_mib']:.1f} MiB"
        )
    elif "epoch_s" in record:
        note = f"{record['epoch_s']:.1f} s/epoch  peak {record.get('peak_mib', float('nan')):.0f} MiB"
    elif "prompts_per_s" in record:
        note = f"{record['prompts_per_s']:.3f} prompts/s  peak {record['peak_mib']:.0f} MiB"
    else:
        note = record.get("skipped") or record.get("error") or ""
    print(f"[bench] {label}: {note}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_benchmarks(
    suites: Sequence[str], out_dir: str | Path | None = None, options: BenchOptions | None = None
) -> dict:
    """Run ``suites`` (names in :data:`SUITES`) and write the results under ``out_dir`` (default
    ``bench/results/<device>``): results.json merged with earlier suites, <suite>.csv, tables.md
    and the plots. Returns the merged results."""
    options = options or BenchOptions()
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise ValueError(f"unknown suites {unknown}; choose from {SUITES}")
    device = options.resolved_device()
    out = Path(out_dir) if out_dir else Path("bench/results") / device_slug(device)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"suites": {}}
    with _threads(options.threads):
        for suite in suites:
            started = environment(device)
            records = SUITE_RUNNERS[suite](options, device)
            results["suites"][suite] = {
                "environment": started,
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "options": options.as_dict(),
                "records": records,
            }
            results["targets"] = evaluate_targets(results["suites"])
            results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
            write_csv(out / f"{suite}.csv", records)
    (out / "tables.md").write_text(render_tables(results))
    if options.plots:
        write_plots(results, out)
    return results


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Records as CSV; the union of their keys is the header, lists and dicts as JSON."""
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()}
            )


def _fmt(value: Any) -> str:
    """Floats with 3 to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_line(suite: dict[str, Any]) -> str:
    env = suite["environment"]
    versions = f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}"
    return (
        f"Machine: {env['device_name']}, {env['threads']} torch threads, load average "
        f"{env['load_average'][0]} at start ({env['time_utc']}); {versions}."
    )


def _records_table(
    records: Sequence[dict[str, Any]],
    labels: Sequence[str],
    values: Sequence[str],
    omit_skipped: bool = False,
) -> str:
    """One row per record: the ``labels`` keys, then the ``values`` keys, or the reason it was
    not measured; with ``omit_skipped`` skipped records become one note under the table."""
    rows, skipped = [], {}
    for r in records:
        if omit_skipped and "skipped" in r:
            skipped[r["skipped"]] = skipped.get(r["skipped"], 0) + 1
            continue
        measured = any(k in r for k in values)
        reason = r.get("skipped") or r.get("error") or "-"
        rows.append([r.get(k) for k in labels] + ([r.get(k) for k in values] if measured else [reason]))
    width = len(labels) + len(values)
    head = [HEADERS.get(k, k) for k in (*labels, *values)]
    return _table(head, [row + ["-"] * (width - len(row)) for row in rows]) + _skipped_note(skipped)


def _skipped_note(skipped: dict[str, int]) -> str:
    return "".join(f"\n\nNot run ({n} cases): {reason}." for reason, n in skipped.items())


def _kernel_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per (kernel, mode, shape) with each measured provider's p50 and peak memory."""
    providers = [p for p in PROVIDERS if any(r["provider"] == p and "p50_ms" in r for r in records)]
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    skipped: dict[str, int] = {}
    for r in records:
        groups.setdefault((r["kernel"], r["mode"], r["shape"], r["size"]), {})[r["provider"]] = r
        if "skipped" in r:
            skipped[f"{r['provider']}: {r['skipped']}"] = (
                skipped.get(f"{r['provider']}: {r['skipped']}", 0) + 1
            )
    head = ["kernel", "mode", "shape", "B x L x d"]
    head += [f"{p} p50 ms" for p in providers] + [f"{p} peak MiB" for p in providers]
    rows = [
        [*key]
        + [by.get(p, {}).get("p50_ms") for p in providers]
        + [by.get(p, {}).get("peak_mib") for p in providers]
        for key, by in groups.items()
    ]
    return _table(head, rows) + _skipped_note(skipped)


HEADERS = {
    "p50_ms": "p50 ms", "p99_ms": "p99 ms", "peak_mib": "peak MiB", "sessions_per_s": "sessions/s",
    "speedup_vs_torch": "x torch", "speedup_vs_compile": "x compile", "epoch_s": "s/epoch",
    "test_hit@20": "test hit@20", "test_mrr@20": "test mrr@20", "train_samples": "train samples",
    "prompts_per_s": "prompts/s", "mean_prompt_tokens": "prompt tokens", "weights_mib": "weights MiB",
    "generation_mib": "generation MiB", "size": "B x L x d", "samples_sha256": "samples sha256",
}  # fmt: skip


def render_tables(results: dict[str, Any]) -> str:
    """Markdown tables of every suite in ``results`` (the README's "Performance" tables)."""
    parts = []
    suites = results.get("suites", {})
    if "train" in suites:
        suite = suites["train"]
        epochs = [r for r in suite["records"] if r.get("op") == "epoch"]
        parts.append("### Training epoch (MovieLens-100k leave-one-out)\n\n" + _machine_line(suite))
        values = [
            "epoch_s",
            "epochs",
            "peak_mib",
            "test_hit@20",
            "test_mrr@20",
            "train_samples",
            "samples_sha256",
        ]
        parts.append(_records_table(epochs, ["setup"], values))
        floor = next((r for r in suite["records"] if r.get("op") == "floor"), None)
        if floor:
            parts.append(_floor_sentence(floor))
        steps = [r for r in suite["records"] if r.get("op") == "train_step"]
        parts.append(
            "Training step:\n\n" + _records_table(steps, STEP_LABELS, STEP_VALUES, omit_skipped=True)
        )
    if "serve" in suites:
        suite = suites["serve"]
        parts.append("### Serving: full_sort_predict latency\n\n" + _machine_line(suite))
        parts.append(_records_table(suite["records"], STEP_LABELS, STEP_VALUES, omit_skipped=True))
    if "kernels" in suites:
        suite = suites["kernels"]
        parts.append("### Kernels\n\n" + _machine_line(suite))
        parts.append(_kernel_table(suite["records"]))
    if "llm" in suites:
        suite = suites["llm"]
        parts.append("### LLM stage (intent generation)\n\n" + _machine_line(suite))
        values = ["prompts_per_s", "mean_prompt_tokens", "weights_mib", "generation_mib", "peak_mib"]
        labels = ["model", "weights", "precision", "batch", "prompt_items"]
        parts.append(_records_table(suite["records"], labels, values))
    if results.get("targets"):
        parts.append("### Targets\n\n" + _table(["target", "status", "numbers"], [
            [t["target"], t["status"], t["detail"]] for t in results["targets"]
        ]))  # fmt: skip
    return "\n\n".join(parts) + "\n"


STEP_LABELS = ("model", "path", "batch")
STEP_VALUES = ("p50_ms", "p99_ms", "peak_mib", "sessions_per_s", "speedup_vs_torch")


def _floor_sentence(floor: dict[str, Any]) -> str:
    text = (
        f"Dense fp32 GEMM floor on this machine: {floor['gemm_gflops']:.0f} GFLOP/s measured, so "
        f"{floor['floor_epoch_s']:.1f} s per SRGNN epoch ({floor['folded_floor_epoch_s']:.1f} s with the "
        f"edge linears folded); the issue estimated {ISSUE_FLOOR_SECONDS:g} s."
    )
    if "ours_over_floor" in floor:
        text += (
            f" Our SRGNN epoch is {floor['ours_over_floor']:.2f}x the measured floor and "
            f"{floor['ours_over_issue_floor']:.2f}x the issue's."
        )
    return text


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots: kernel speed vs shape per provider, kernel memory bars, epoch-time bars,
    serving latency bars. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    suites = results.get("suites", {})
    kernels = [r for r in suites.get("kernels", {}).get("records", []) if "p50_ms" in r]
    if kernels:
        fig, axes = plt.subplots(
            len(KERNELS), len(MODES), figsize=(4 * len(MODES), 3 * len(KERNELS)), squeeze=False
        )
        for i, kernel in enumerate(KERNELS):
            for j, mode in enumerate(MODES):
                ax = axes[i][j]
                for provider in PROVIDERS:
                    pts = [
                        r
                        for r in kernels
                        if (r["kernel"], r["mode"], r["provider"]) == (kernel, mode, provider)
                    ]
                    if pts:
                        ax.plot(
                            [r["shape"] for r in pts], [r["p50_ms"] for r in pts], marker="o", label=provider
                        )
                ax.set_title(f"{kernel} {mode}", fontsize=9)
                ax.set_yscale("log")
                ax.set_ylabel("p50 ms")
                ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out / "kernels_speed.png"))
        full = [r for r in kernels if r["mode"] == "full"]
        labels = sorted(
            {(r["kernel"], r["shape"]) for r in full},
            key=lambda k: (k[0], list(SHAPES).index(k[1]) if k[1] in SHAPES else 0),
        )
        fig, ax = plt.subplots(figsize=(max(6, len(labels)), 4))
        width = 0.8 / len(PROVIDERS)
        for k, provider in enumerate(PROVIDERS):
            values = [
                next(
                    (
                        r["peak_mib"]
                        for r in full
                        if (r["kernel"], r["shape"], r["provider"]) == (*lab, provider)
                    ),
                    0,
                )
                for lab in labels
            ]
            ax.bar([x + k * width for x in range(len(labels))], values, width, label=provider)
        ax.set_xticks([x + width for x in range(len(labels))], [f"{a}\n{b}" for a, b in labels], fontsize=7)
        ax.set_ylabel("peak MiB (forward + backward)")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "kernels_memory.png"))
    epochs = [
        r for r in suites.get("train", {}).get("records", []) if r.get("op") == "epoch" and "epoch_s" in r
    ]
    if epochs:
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(epochs) + 1.5))
        ax.barh([r["setup"] for r in epochs], [r["epoch_s"] for r in epochs])
        floor = next((r for r in suites["train"]["records"] if r.get("op") == "floor"), None)
        if floor:
            ax.axvline(floor["floor_epoch_s"], color="k", linestyle="--", label="dense fp32 floor")
            ax.legend()
        ax.set_xlabel("seconds per training epoch")
        fig.tight_layout()
        written.append(_save(fig, out / "train_epoch.png"))
    serve = [r for r in suites.get("serve", {}).get("records", []) if "p50_ms" in r]
    if serve:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(serve) + 1.5))
        names = [f"{r['model']} {r['path']} b{r['batch']}" for r in serve]
        ax.barh(names, [r["p99_ms"] for r in serve], label="p99", alpha=0.5)
        ax.barh(names, [r["p50_ms"] for r in serve], label="p50")
        ax.set_xscale("log")
        ax.set_xlabel("ms per full_sort_predict batch")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "serve_latency.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``llm4sbr bench`` flags."""
    parser.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which benchmarks (default: all)"
    )
    parser.add_argument("--out", help="results folder (default: bench/results/<device>)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument(
        "--shapes", nargs="+", choices=tuple(SHAPES), default=list(SHAPES), help="kernel shapes"
    )
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per run (default 2)")
    parser.add_argument("--recbole-python", default=".venv-recbole/bin/python", help="RecBole's interpreter")
    parser.add_argument("--recbole-script", default="bench/recbole_peer.py")
    parser.add_argument(
        "--serve-checkpoint", help="also time Recommender.recommend of this trained run (best.pt)"
    )
    parser.add_argument("--llm-models", nargs="+", help=f"bundled or {', '.join(RANDOM_LLM_CONFIGS)}")
    parser.add_argument("--llm-prompts", type=int, default=8, help="prompts per LLM measurement")
    parser.add_argument("--llm-batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument(
        "--llm-max-prompt-items", type=int, help="bundled LLM prompts show the last N clicks (default: all)"
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--tables", metavar="RESULTS_DIR", help="only print the markdown tables of a results folder"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``llm4sbr bench`` from parsed :func:`add_bench_arguments` flags."""
    if args.tables:
        print(render_tables(json.loads((Path(args.tables) / "results.json").read_text())), end="")
        return 0
    options = BenchOptions(
        device=args.device, shapes=tuple(args.shapes), providers=tuple(args.providers), rounds=args.rounds,
        threads=args.threads, epochs=args.epochs, recbole_python=args.recbole_python,
        recbole_script=args.recbole_script, llm_models=tuple(args.llm_models) if args.llm_models else None,
        llm_prompts=args.llm_prompts, llm_batch_size=args.llm_batch_size,
        llm_max_prompt_items=args.llm_max_prompt_items, serve_checkpoint=args.serve_checkpoint,
        plots=not args.no_plots,
    )  # fmt: skip
    suites = SUITES if args.suite == "all" else (args.suite,)
    results = run_benchmarks(suites, args.out, options)
    print(render_tables(results), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm4sbr.bench", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    return cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
