"""The ``scale`` suite: seconds and peak memory of ``load_dataset(csv, preset)`` (reading the log,
sessionizing, the preset's filters and the prefix samples) on synthetic click logs shaped like
Diginetica, in a fresh interpreter per run; then our SRGNN's training samples/s on each log at
each thread count (:func:`measure_training`), and the epoch time at that rate.

:func:`make_log` writes the logs: Zipf item popularity, log-normal session lengths (mean about
4.2 clicks), 15% immediate re-clicks of the previous item, sessions starting uniformly over 150
days with exponential gaps between clicks, rows in time order (as a click log is appended).
Sizes (:data:`SCALE_SIZES`): ``S`` 50k sessions over 10k items, ``M`` 780k over 43k (3.3M
clicks), ``L`` 6M over 30k (25M clicks; several GB of memory before the columnar loader).

Peak memory is the child's own peak resident set (see :data:`WORKER`); ``bytes_per_click`` is
that peak minus the peak after ``import llm4sbr.data`` (torch included), over the log's rows.
With ``scale_other`` the same runs are made with another checkout of llm4sbr on the child's
PYTHONPATH (a before/after A/B, alternating sides); ``fingerprint`` equal on both sides means
both built the same samples.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .harness import BenchOptions, importable_checkout, progress

SCALE_SIZES = {
    "tiny": (2_000, 500),
    "S": (50_000, 10_000),
    "M": (780_000, 43_000),
    "L": (6_000_000, 30_000),
}
"""Size name -> (sessions, items) of the synthetic log."""

LOG_VERSION = 1
"""Part of the log file names: bump when :func:`make_log` changes what it writes."""

DAY = 86400
START = 1_451_606_400
"""2016-01-01 00:00 UTC, the first possible session start (seconds)."""

WORKER = r"""
import json, resource, sys, time
from llm4sbr.data import dataset_fingerprint, load_dataset

def high_water_kib():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

path, preset = sys.argv[1], sys.argv[2]
base = high_water_kib()
start = time.perf_counter()
dataset = load_dataset(path, preset)
seconds = time.perf_counter() - start
peak = high_water_kib()
print(json.dumps({
    "seconds": seconds, "base_kib": base, "peak_kib": peak, "rows": dataset.report["rows"],
    "samples": dataset.meta["samples"], "items": dataset.n_items,
    "fingerprint": dataset_fingerprint(dataset),
}))
"""
"""The child: load + preset timed, its peak resident set (KiB) before and after. The peak is the
process's own high-water mark (Linux ``VmHWM``): ``getrusage``'s ``ru_maxrss`` also counts the
resident set of the parent that forked it (the bench process, torch loaded), which would hide
a small load's peak; ``ru_maxrss`` serves where there is no ``/proc``."""


def _clicks(n_sessions: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session ids, item ids, timestamps) [n_clicks] int64 of :func:`make_log`, in time order."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, np.rint(rng.lognormal(1.15, 0.75, n_sessions))).astype(np.int64)
    n = int(lengths.sum())
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    first = np.zeros(n, dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    # Zipf popularity over a shuffled catalog, so that popular items are not the small ids.
    cdf = np.cumsum(1.0 / np.arange(1, n_items + 1))
    fresh = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), n_items - 1)
    item_ids = rng.permutation(n_items).astype(np.int64) + 1
    # A re-click repeats the previous item; runs of re-clicks repeat the last fresh pick.
    reclick = ~first & (rng.random(n) < 0.15)
    source = np.maximum.accumulate(np.where(reclick, 0, np.arange(n, dtype=np.int64)))
    item = item_ids[fresh[source]]
    gaps = np.rint(rng.exponential(90.0, n)).astype(np.int64)
    gaps[first] = 0
    run = np.cumsum(gaps)
    within = run - np.repeat(run[first], lengths)
    starts = START + rng.integers(0, 150 * DAY, n_sessions)
    timestamp = np.repeat(starts, lengths) + within
    session_ids = rng.permutation(n_sessions).astype(np.int64) + 1
    order = np.argsort(timestamp, kind="stable")
    return session_ids[session[order]], item[order], timestamp[order]


def _csv_rows(columns: list[np.ndarray]) -> bytes:
    """The CSV text of non-negative integer ``columns`` (each [n] int64): one row per index,
    comma-separated, newline-terminated, formatted with array operations."""
    powers = 10 ** np.arange(1, 19, dtype=np.int64)
    digits = [1 + np.searchsorted(powers, column, side="right") for column in columns]
    widths = sum(digits) + len(columns)
    ends = np.cumsum(widths)
    out = np.full(int(ends[-1]), ord(","), dtype=np.uint8)
    out[ends - 1] = ord("\n")
    start = ends - widths
    for column, width in zip(columns, digits, strict=True):
        value = column.copy()
        for k in range(int(width.max())):
            # Digit k from the right of every value that has one.
            has = width > k
            out[(start + width - 1 - k)[has]] = (value[has] % 10 + ord("0")).astype(np.uint8)
            value //= 10
        start = start + width + 1
    return out.tobytes()


def make_log(
    n_sessions: int, n_items: int, seed: int, out_dir: str | os.PathLike | None = None, chunk: int = 1 << 20
) -> Path:
    """Write a synthetic Diginetica-shaped click log (see the module docstring) as CSV with the
    header ``session_id,item_id,timestamp`` (integer ids from 1, integer seconds) and return its
    path, ``<out_dir>/clicks-v<LOG_VERSION>-<sessions>-<items>-<seed>.csv`` (``out_dir``
    defaults to the system's temporary folder). A file already there is reused: the same
    arguments always write the same bytes. ``chunk`` rows are formatted at a time."""
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"clicks-v{LOG_VERSION}-{n_sessions}-{n_items}-{seed}.csv"
    if path.is_file():
        return path
    session, item, timestamp = _clicks(n_sessions, n_items, seed)
    partial = path.with_name(f".{path.name}.tmp")
    with open(partial, "wb") as handle:
        handle.write(b"session_id,item_id,timestamp\n")
        for lo in range(0, len(session), chunk):
            handle.write(
                _csv_rows([session[lo : lo + chunk], item[lo : lo + chunk], timestamp[lo : lo + chunk]])
            )
    os.replace(partial, path)
    return path


TRAIN_WORKER = r"""
import dataclasses, json, sys, tempfile
import numpy as np
import torch
from llm4sbr.config import TrainConfig
from llm4sbr.data import load_dataset
from llm4sbr.training import train

path, preset, device, precision = sys.argv[1], sys.argv[2], sys.argv[5], sys.argv[6]
threads, n_samples = int(sys.argv[3]), int(sys.argv[4])
dataset = load_dataset(path, preset)
rng = np.random.default_rng(0)
train_set = dataset.splits["train"]
picked = {"train": rng.permutation(len(train_set))[:n_samples]}
for split in ("valid", "test"):
    picked[split] = np.arange(min(len(dataset.splits[split]), 500))
part = dataclasses.replace(dataset, splits={k: dataset.splits[k].subset(v) for k, v in picked.items()})
config = TrainConfig(
    data=path, preset=preset, model="srgnn", epochs=1, threads=threads, device=device,
    bf16=precision == "bf16",
)
with tempfile.TemporaryDirectory() as out:
    result = train(config, out, dataset=part, progress=False)
print(json.dumps({
    "seconds": result.epoch_seconds[0], "measured_samples": len(picked["train"]),
    "train_samples": len(train_set), "items": dataset.n_items, "threads": torch.get_num_threads(),
    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "precision": precision,
    "test_hit@20": result.test["hit@20"], "test_samples": len(picked["test"]),
}))
"""
"""The training child: one epoch of our SRGNN (defaults: d = 100, batch 100) on a random
``n_samples`` of the log's training samples on ``device`` (cpu or cuda), in ``precision`` (fp32,
or bf16: the ``bf16`` config, autocast for the dense layers and the scoring head); evaluation on
500 samples, not timed."""


def _child_env(checkout: str | None) -> dict[str, str]:
    """The environment of a measuring child: llm4sbr imported from ``checkout`` (default: this
    repository)."""
    root = importable_checkout(checkout) if checkout else Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(root)}


def measure_training(
    path: str | os.PathLike,
    preset: str,
    threads: int,
    n_samples: int,
    checkout: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Training samples/s of our SRGNN on the log on ``device`` (cpu or cuda) at ``threads`` torch
    threads in ``precision`` (fp32 or bf16), in a fresh interpreter that imports llm4sbr from
    ``checkout`` (default: this repository), and the full epoch's seconds at that rate; or
    ``{"error": ...}``."""
    env = _child_env(checkout)
    command = [
        sys.executable,
        "-c",
        TRAIN_WORKER,
        str(Path(path).resolve()),
        preset,
        str(threads),
        str(n_samples),
        device,
        precision,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    child = json.loads(lines[-1])
    rate = child["measured_samples"] / child["seconds"]
    return {**child, "samples_per_s": rate, "epoch_estimate_s": child["train_samples"] / rate}


def measure_load(path: str | os.PathLike, preset: str = "srgnn", checkout: str | None = None) -> dict:
    """One ``load_dataset(path, preset)`` in a fresh interpreter that imports llm4sbr from
    ``checkout`` (default: this repository): seconds, peak and baseline resident set (MiB),
    bytes of peak per log row, samples per split, items and the dataset fingerprint; or
    ``{"error": ...}`` with the child's stderr."""
    env = _child_env(checkout)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(Path(path).resolve()), preset],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    child = json.loads(lines[-1])
    peak, base = child["peak_kib"] * 1024, child["base_kib"] * 1024
    return {
        "load_s": child["seconds"],
        "peak_mib": peak / 2**20,
        "base_mib": base / 2**20,
        "bytes_per_click": (peak - base) / child["rows"],
        "clicks": child["rows"],
        "samples": sum(child["samples"].values()),
        "train_samples": child["samples"]["train"],
        "items": child["items"],
        "fingerprint": child["fingerprint"],
    }


def run_scale(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """For each size in ``options.scale_sizes``: write (or reuse) its log, then time
    ``load_dataset(log, options.scale_preset)`` ``options.scale_repeats`` times per side (this
    checkout, and ``options.scale_other`` first when given), then train one epoch on a sample
    of it ``options.scale_repeats`` times at each of ``options.scale_train_threads`` in each of
    ``options.scale_precisions``, the sides
    alternating in the same order; each in a fresh process. Loading runs on the CPU, training on
    ``device``."""
    sides = [("other", options.scale_other)] if options.scale_other else []
    sides.append(("this", None))
    records = []
    with tempfile.TemporaryDirectory(prefix="llm4sbr-scale-") as tmp:
        folder = options.scale_dir or tmp
        for size in options.scale_sizes:
            n_sessions, n_items = SCALE_SIZES[size]
            path = make_log(n_sessions, n_items, seed=0, out_dir=folder)
            for repeat in range(options.scale_repeats):
                for side, checkout in sides:
                    record: dict[str, Any] = {
                        "log": size, "sessions": n_sessions, "catalog": n_items, "side": side,
                        "checkout": checkout or "this", "preset": options.scale_preset, "repeat": repeat,
                        "log_mib": path.stat().st_size / 2**20,
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                    }  # fmt: skip
                    record.update(measure_load(path, options.scale_preset, checkout))
                    records.append(record)
                    progress(f"scale {size} {side}", record)
            runs = itertools.product(
                options.scale_precisions, options.scale_train_threads, range(options.scale_repeats)
            )
            for precision, threads, repeat in runs:
                for side, checkout in sides:
                    record = {
                        "op": "train", "log": size, "sessions": n_sessions, "catalog": n_items,
                        "side": side, "checkout": checkout or "this", "preset": options.scale_preset,
                        "repeat": repeat, "load_average": [round(x, 2) for x in os.getloadavg()],
                    }  # fmt: skip
                    record.update(
                        measure_training(
                            path,
                            options.scale_preset,
                            threads,
                            options.scale_train_samples,
                            checkout,
                            device.type,
                            precision,
                        )
                    )
                    records.append(record)
                    progress(f"scale {size} {side} training at {threads} threads, {precision}", record)
    return records
