"""The harness every suite shares: options, timer, memory probes, environment, results files.

Timing: wall clock per call with the device synchronised inside the timed callable; p20/p50/
p80/p99 over the rounds after warm-up. Peak memory: bytes allocated during one call above what
was allocated before it (CUDA allocator statistics; on CPU the profiler's allocation events);
for whole training runs the peak of a fresh process (resident set on CPU); for the LLM stage the
model's weights plus the working set of one generation call. Every result carries the device
name, versions, thread count, load average and configuration.

:func:`run_benchmarks` writes ``results.json`` (all suites run so far; a suite replaces its
earlier records), one CSV per suite, ``tables.md`` (the README's tables) and PNG plots.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import datetime
import importlib
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

SUITES = ("kernels", "train", "serve", "llm", "scale")
"""Suite names; suite ``s`` is ``run_<s>(options, device)`` in ``bench/<s>.py``."""
KERNELS = ("gnn_step", "attn_pool", "align_uniform_loss", "linear_cross_entropy")
PROVIDERS = ("triton", "torch", "compile")
MODES = ("forward", "backward", "full")


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
    in ``bench.llm.RANDOM_LLM_CONFIGS``; None picks "bundled" on CPU and smollm2-135m + qwen2-7b
    on CUDA. llm_max_prompt_items: the bundled runs' prompts show only the last N clicks (as
    ``infer-intents --max-prompt-items``; None shows all). llm_stream_prompts, llm_stream_items,
    llm_stream_threads: on CPU the default engine (llama.cpp) also answers that many prompts of
    the ``infer-intents`` stream at each number of clicks shown (None: all) and each thread count
    (0 prompts: not run). serve_checkpoint: a trained run's
    best.pt whose ``Recommender.recommend`` (and ``explain``) the serve suite also times on the
    run's test sessions, one at a time. scale_sizes: synthetic log sizes of the scale suite (names
    in ``bench.scale.SCALE_SIZES``), each loaded ``scale_repeats`` times with ``scale_preset``;
    scale_other: another llm4sbr checkout to load and train on the same logs with (a before/after A/B);
    scale_dir: where the logs are written and reused (None: a temporary folder).
    scale_train_threads, scale_train_samples: the thread counts at which SRGNN trains one epoch on
    that many of each log's training samples, ``scale_repeats`` times (none: no training), in each of
    scale_precisions ("fp32", "bf16": autocast). plots: write PNGs
    (needs matplotlib).
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
    llm_stream_prompts: int = 300
    llm_stream_items: tuple[int | None, ...] = (10, None)
    llm_stream_threads: tuple[int, ...] = (1, 2)
    scale_sizes: tuple[str, ...] = ("S", "M")
    scale_preset: str = "srgnn"
    scale_repeats: int = 1
    scale_other: str | None = None
    scale_dir: str | None = None
    scale_train_threads: tuple[int, ...] = (1, 2)
    scale_train_samples: int = 20_000
    scale_precisions: tuple[str, ...] = ("fp32",)
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
            llm_stream_prompts=0,
            scale_sizes=("tiny",),
            scale_train_threads=(1,),
            scale_train_samples=64,
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


def importable_checkout(checkout: str | os.PathLike) -> Path:
    """Another llm4sbr checkout as a PYTHONPATH entry: its top-level ``kernels/`` folder is
    linked as ``llm4sbr/kernels`` (what installing it would do), so its own kernels are imported
    and not those of the llm4sbr installed here. Returns the checkout's resolved path."""
    root = Path(checkout).resolve()
    link = root / "llm4sbr" / "kernels"
    if not link.exists():
        link.symlink_to(root / "kernels")
    return root


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


def status_mib(field: str) -> float | None:
    """A memory field of Linux's ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB, or
    None where it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024
    except (OSError, StopIteration):
        return None


def process_peak_mib(device: torch.device) -> float:
    """Peak memory of this process so far: the CUDA allocator's peak, or the peak resident set.
    The resident peak is Linux's ``VmHWM``, this process's own: ``getrusage``'s ``ru_maxrss``
    keeps the peak of the parent it was forked from, across ``exec`` too."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = status_mib("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return peak


def measure(case: Case, device: torch.device, options: BenchOptions, rounds: int) -> dict[str, Any]:
    """First-call seconds, :func:`summarize` of ``rounds`` timed calls and the peak memory of one."""
    first = time.perf_counter()
    case.run(*(case.setup() if case.setup else ()))
    first_s = time.perf_counter() - first
    stats = summarize(time_ms(case.run, rounds, max(options.warmup - 1, 0), case.setup, options.warmup_s))
    stats["first_call_s"] = first_s
    stats["peak_mib"] = peak_memory_mib(case.run, device, case.setup)
    return stats


def add_speedups(
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


def in_fresh_process(
    fn: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any], isolate: bool
) -> dict:
    """``fn(spec)``, in a spawned process when ``isolate`` (so its peak memory is its own). The
    process is not a daemon, so ``fn`` may start data-loader workers."""
    if not isolate:
        return fn(spec)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, spec).result()


def progress(label: str, record: dict[str, Any]) -> None:
    """One stderr line per measured (or skipped) record."""
    if "p50_ms" in record:
        note = (
            f"p50 {record['p50_ms']:.3f} ms  p99 {record['p99_ms']:.3f} ms  peak {record['peak_mib']:.1f} MiB"
        )
    elif "epoch_s" in record:
        note = f"{record['epoch_s']:.1f} s/epoch  peak {record.get('peak_mib', float('nan')):.0f} MiB"
    elif "prompts_per_s" in record:
        note = f"{record['prompts_per_s']:.3f} prompts/s  peak {record['peak_mib']:.0f} MiB"
    elif "samples_per_s" in record:
        note = f"{record['samples_per_s']:.0f} samples/s, epoch {record['epoch_estimate_s']:.0f} s"
    elif "load_s" in record:
        note = f"{record['load_s']:.1f} s  peak {record['peak_mib']:.0f} MiB"
        note += f"  {record['bytes_per_click']:.0f} B/click"
    else:
        note = record.get("skipped") or record.get("error") or ""
    print(f"[bench] {label}: {note}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch intra-op threads set to ``count`` (None: unchanged) for the block."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- output


def run_benchmarks(
    suites: Sequence[str], out_dir: str | Path | None = None, options: BenchOptions | None = None
) -> dict:
    """Run ``suites`` (names in :data:`SUITES`) and write the results under ``out_dir`` (default
    ``bench/results/<device>``): results.json merged with earlier suites, <suite>.csv, tables.md
    and the plots. Returns the merged results."""
    from .report import evaluate_targets, render_tables, write_plots

    options = options or BenchOptions()
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise ValueError(f"unknown suites {unknown}; choose from {SUITES}")
    device = options.resolved_device()
    out = Path(out_dir) if out_dir else Path("bench/results") / device_slug(device)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"suites": {}}
    with threads(options.threads):
        for suite in suites:
            runner = getattr(importlib.import_module(f"{__package__}.{suite}"), f"run_{suite}")
            started = environment(device)
            records = runner(options, device)
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
