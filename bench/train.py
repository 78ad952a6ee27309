"""The ``train`` suite: one training step per model and encoder path, then whole epochs on
MovieLens-100k leave-one-out (RecBole's split: 97,171 training samples, batch 100, d = 100): our
SRGNN and LLM4SBR through :func:`llm4sbr.training.train`, our SRGNN on the padded reference path
(and with the Triton kernels on CUDA) and under bf16 autocast (its test metrics against fp32's
on the same samples and seed, and the machine's bf16 GEMM rate beside the fp32 one), and
RecBole's own SRGNN as shipped and with its global anomaly detection off
(``bench/recbole_peer.py`` in RecBole's virtual environment). Epoch seconds,
peak memory, test hit@20 / mrr@20, and our time as a multiple of the floors at the GEMM rate
measured on the machine (the packed algorithm's FLOPs, and the padded one's for reference).

LLM4SBR trains on random intent vectors (:func:`write_random_intents`): stage-2 cost does not
depend on their values, and the real LLM stage takes hours for 97k samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .harness import BenchOptions, in_fresh_process, process_peak_mib, progress, synchronize, time_ms
from .model import model_records


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
    """A stage-1 output folder of random intent vectors [n, 2, d_text] for every sample of
    ``dataset`` (meta.json says ``"random": true``): the control runs of the README's ablation,
    and the train suite's LLM4SBR intents."""
    from llm4sbr.intent import save_intents

    sample_ids = np.concatenate([s.sample_ids for s in dataset.splits.values()]).astype(np.int64)
    vectors = np.random.default_rng(seed).standard_normal((len(sample_ids), 2, d_text), dtype=np.float32)
    return save_intents(out_dir, vectors, sample_ids, meta={"random": True})


def _train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run of our package (in a fresh process when isolated): epoch seconds, test
    metrics and peak memory. ``spec``: config (TrainConfig fields), backend, dataset (None: the
    config's own)."""
    from llm4sbr.config import TrainConfig, from_dict
    from llm4sbr.data import run_dataset
    from llm4sbr.kernels import use_backend
    from llm4sbr.training import train

    config = from_dict(TrainConfig, spec["config"])
    dataset = spec["dataset"] or run_dataset(config)
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
        "test_samples": len(dataset.splits["test"]),
        "samples_fingerprint": split_fingerprint(dataset),
        "threads": torch.get_num_threads(),
    }


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
    device: torch.device,
    size: tuple[int, int, int] = (4096, 256, 1024),
    rounds: int = 10,
    dtype: torch.dtype = torch.float32,
    budget_s: float = 2.0,
) -> float:
    """Best GEMM rate of this device in ``dtype``, GFLOP/s, on an M x K x N product shaped like
    the model's (many rows, a few hundred columns): the fastest of up to ``rounds`` calls, fewer
    where they would take over ``budget_s`` (an emulated dtype, such as bf16 on a CPU without
    bf16 instructions, runs a call for seconds)."""
    m, k, n = size
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)

    def run() -> None:
        a @ b
        synchronize(device)

    first = time_ms(run, 1, 1)[0]
    more = max(1, min(rounds, int(budget_s * 1e3 / first)) - 1)
    return 2 * m * k * n / (min(first, *time_ms(run, more, 0)) * 1e-3) / 1e9


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


def packed_epoch_flops(dataset: Any, dim: int, batch_size: int, seed: int = 0) -> float:
    """FLOPs of one SRGNN training epoch on the packed path, the algorithm that runs on CPU
    (forward x 3 for forward + backward), counted on the first epoch's batches. Per batch of B
    sessions with R distinct items, T nodes and E edges, in multiply-adds: the folded step GEMM
    9 d^2 per distinct item, the sparse step product d per non-zero of S (6E + 3T), the readout's
    projection d^2 and score d per node, W1, the fusion and the scores 3 d^2 + d n_items per session."""
    from llm4sbr.data import make_loader
    from llm4sbr.data.graph import build_packed_session_graph

    macs = 0
    for batch in make_loader(dataset.splits["train"], batch_size=batch_size, shuffle=True, seed=seed):
        graph = build_packed_session_graph(batch["item_seq"], batch["item_seq_len"])
        sessions, nodes, edges = len(batch["target"]), len(graph.nodes), len(graph.src)
        items = len(torch.unique(graph.nodes))
        macs += 9 * items * dim * dim + 3 * dim * (2 * edges + nodes) + nodes * (dim * dim + dim)
        macs += sessions * (3 * dim * dim + dim * dataset.n_items)
    return 3 * 2 * macs


def run_train(options: BenchOptions, device: torch.device) -> list[dict[str, Any]]:
    """Training steps per model and path, then epochs of ours and RecBole's (see module doc)."""
    from llm4sbr.config import TrainConfig
    from llm4sbr.data import run_dataset

    records = model_records(options, device, "train_step", (options.train_batch,), options.rounds)
    base = {
        "data": options.data, "preset": options.preset, "batch_size": options.train_batch,
        "dim": options.dim, "epochs": options.epochs, "patience": options.epochs, "lr": 1e-3, "l2": 1e-5,
        "device": device.type, "threads": torch.get_num_threads(), "seed": 0,
    }  # fmt: skip
    runs = [
        ("llm4sbr SRGNN", "srgnn", "auto", options.epochs, {}),
        ("llm4sbr SRGNN, 1 loader worker", "srgnn", "auto", options.epochs, {"num_workers": 1}),
        ("llm4sbr SRGNN, padded reference path", "srgnn", "torch", options.reference_epochs, {}),
        ("llm4sbr LLM4SBR", "llm4sbr", "auto", options.epochs, {}),
        ("llm4sbr SRGNN, bf16 autocast", "srgnn", "auto", options.epochs, {"bf16": True}),
    ]
    if device.type == "cuda":
        runs.insert(1, ("llm4sbr SRGNN, Triton kernels", "srgnn", "triton", options.epochs, {}))
    dataset = options.dataset or run_dataset(TrainConfig(**base))
    with tempfile.TemporaryDirectory(prefix="llm4sbr-bench-intents-") as intents:
        write_random_intents(dataset, Path(intents), options.d_text)
        for name, model, backend, epochs, overrides in runs:
            config = {**base, "model": model, "epochs": epochs, "patience": epochs, **overrides}
            if model == "llm4sbr":
                config["intents"] = intents
            spec = {"config": config, "backend": backend, "dataset": options.dataset}
            record: dict[str, Any] = {"op": "epoch", "setup": name, "model": model, "backend": backend}
            record.update(in_fresh_process(_train_worker, spec, options.isolate))
            records.append(_epoch_summary(record))
            progress(f"epoch {name}", record)
    for anomaly, label in ((True, "as shipped"), (False, "anomaly detection off")):
        epochs = options.epochs if not anomaly else options.reference_epochs
        record = {"op": "epoch", "setup": f"RecBole SRGNN, {label}", "model": "recbole-srgnn"}
        record.update(_recbole_run(options, device, anomaly, epochs))
        records.append(_epoch_summary(record))
        progress(f"epoch {record['setup']}", record)
    records.append(_floor_record(dataset, options, device, records))
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


def _floor_record(
    dataset: Any, options: BenchOptions, device: torch.device, records: list[dict[str, Any]]
) -> dict:
    """The GEMM-rate floors of one SRGNN epoch on this device (the padded algorithm's dense
    FLOPs, folded or not, and the packed algorithm's), the ratios the targets use, and the bf16
    GEMM rate beside the fp32 one."""
    gflops = gemm_gflops(device)
    dim = options.dim
    floor = srgnn_epoch_flops(dataset, dim, folded=False) / (gflops * 1e9)
    folded = srgnn_epoch_flops(dataset, dim, folded=True) / (gflops * 1e9)
    packed_flops = packed_epoch_flops(dataset, dim, options.train_batch)
    packed = packed_flops / (gflops * 1e9)
    by_setup = {r["setup"]: r for r in records if r.get("op") == "epoch"}
    ours = by_setup.get("llm4sbr SRGNN", {}).get("epoch_s")
    out: dict[str, Any] = {
        "op": "floor",
        "setup": "dense fp32 GEMM floor",
        "gemm_gflops": gflops,
        "bf16_gemm_gflops": gemm_gflops(device, dtype=torch.bfloat16),
        "floor_epoch_s": floor,
        "folded_floor_epoch_s": folded,
        "packed_tflop": packed_flops / 1e12,
        "packed_floor_epoch_s": packed,
    }
    if ours:
        out["ours_over_packed_floor"] = ours / packed
        out["ours_over_floor"] = ours / floor
        out["ours_over_folded_floor"] = ours / folded
    return out
