"""Where a training step's time goes: ``torch.profiler`` over one short epoch of our SRGNN on a
synthetic click log of the ``scale`` suite (:func:`bench.scale.make_log`), on the CPU or a GPU.

    python -m bench.profile_train --size M --samples 20000 --device cuda --out profile-train-M.txt

Trains one epoch on a random ``--samples`` of the log's training samples (batch 100, d = 100,
the package defaults; evaluation on 500 samples) and writes the epoch's seconds per batch and
the ops of the whole ``train`` call (model setup and that evaluation included) that took the
most self time (on CUDA: device time, and host time beside it), so that
the gap between a training step alone and a whole epoch's batch can be placed. The profiler
adds its own overhead to every op: compare shares, not absolute times, with other runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from .harness import environment
from .scale import SCALE_SIZES, make_log


def profile_training(
    size: str, n_samples: int, device: str, threads: int, log_dir: str | None = None, rows: int = 40
) -> str:
    """The report: one line of epoch timing, then the top ``rows`` ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    from llm4sbr.config import TrainConfig
    from llm4sbr.data import load_dataset
    from llm4sbr.training import train

    n_sessions, n_items = SCALE_SIZES[size]
    path = make_log(n_sessions, n_items, seed=0, out_dir=log_dir)
    dataset = load_dataset(path, "srgnn")
    picked = {"train": np.random.default_rng(0).permutation(len(dataset.splits["train"]))[:n_samples]}
    for split in ("valid", "test"):
        picked[split] = np.arange(min(len(dataset.splits[split]), 500))
    part = dataclasses.replace(dataset, splits={k: dataset.splits[k].subset(v) for k, v in picked.items()})
    config = TrainConfig(data=str(path), model="srgnn", epochs=1, threads=threads, device=device)
    on_cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    torch.set_num_threads(threads)
    env = environment(torch.device(device))
    with tempfile.TemporaryDirectory() as out, profile(activities=activities) as prof:
        result = train(config, out, dataset=part, progress=False)
    batches = -(-len(picked["train"]) // config.batch_size)
    seconds = result.epoch_seconds[0]
    head = (
        f"log {size} ({dataset.n_items} items), {len(picked['train'])} training samples, "
        f"{env['device_name']}, {threads} threads: epoch {seconds:.2f} s under the profiler, "
        f"{seconds / batches * 1e3:.2f} ms per batch of {config.batch_size}\n"
        f"torch {env['torch']}, CUDA {env['cuda']}, llm4sbr {env['llm4sbr']}, "
        f"load average {env['load_average']} at the start, {env['time_utc']}\n\n"
    )
    sort_by = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    return head + prof.key_averages().table(sort_by=sort_by, row_limit=rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SCALE_SIZES), default="M", help="synthetic log (default M)")
    parser.add_argument("--samples", type=int, default=20_000, help="training samples profiled")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--log-dir", help="where the log is written and reused (default: temporary)")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    report = profile_training(args.size, args.samples, args.device, args.threads, args.log_dir)
    print(report, end="")
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
