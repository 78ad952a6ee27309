"""Stage-2 training: Adam + StepLR, early stopping and model selection on the VALIDATION split,
then one evaluation of the selected checkpoint on test. Interrupted runs resume from
``last.pt``; every epoch appends a line to ``metrics.jsonl``.

Under torchrun with several processes training runs DistributedDataParallel (see
:mod:`llm4sbr.training.distributed`): an SRGNN run follows the single-process run up to
floating-point rounding (LLM4SBR's uniformity term is computed per rank, over its share of the
batch). Only rank 0 writes files; every rank reads best.pt (and last.pt when resuming) from
``out_dir``, which must be on a filesystem all ranks see.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from llm4sbr.atomic import write_atomic
from llm4sbr.checkpoint import load_checkpoint, save_checkpoint
from llm4sbr.config import TrainConfig, from_dict
from llm4sbr.data import SessionDataset, dataset_fingerprint, make_loader, run_dataset
from llm4sbr.data.graph import load_numba_builder
from llm4sbr.intent.lookup import IntentLookup
from llm4sbr.models.registry import MODEL_CLASSES, build_model
from llm4sbr.training.distributed import DistributedEnv, process_group, resolve_device, shard_batches
from llm4sbr.training.early_stopping import EarlyStopping
from llm4sbr.training.evaluate import batch_to, evaluate
from llm4sbr.training.host_memory import retain_freed_memory

LAST, BEST, LOG, RESULT = "last.pt", "best.pt", "metrics.jsonl", "result.json"


class StaleRunError(ValueError):
    """``out_dir`` holds a run of another config, dataset or set of intents: it cannot resume."""


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    epoch_seconds: list[float] = field(default_factory=list)
    peak_memory_mib: float = 0.0
    out_dir: str = ""


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _clamp_threads(threads: int) -> int:
    """``threads``, or the cores this process may use when it asks for more (with a warning:
    oversubscribed OpenMP threads run many times slower)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads > available:
        warnings.warn(
            f"threads={threads} but only {available} cores are available: using {available}", stacklevel=3
        )
        return available
    return threads


def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


class _LossOf(nn.Module):
    """``model.calculate_loss`` as ``forward``: DistributedDataParallel synchronises gradients
    only for what runs through the wrapped module's forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.calculate_loss(batch)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    dataset: SessionDataset | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.model``, select the epoch with the best validation ``config.select_metric``,
    evaluate it once on test. Writes last.pt, best.pt, metrics.jsonl and result.json in ``out_dir``.

    Launched by torchrun with several processes, trains with DistributedDataParallel (see the
    module doc); every rank returns the same result."""
    if config.intents is not None:
        # Stored absolute, so a checkpoint finds its intents from any working directory.
        config = replace(config, intents=str(Path(config.intents).resolve()))
    device = resolve_device(config.device)
    with process_group(device) as env:
        return _train(config, Path(out_dir), device, env, dataset, resume, overwrite, progress)


def _train(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    env: DistributedEnv,
    dataset: SessionDataset | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> TrainResult:
    if (out / LAST).exists() and not (resume or overwrite):
        raise FileExistsError(f"{out} already holds a run: pass resume=True (--resume) or overwrite=True")
    main_process = env.rank == 0
    progress = progress and main_process
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(_clamp_threads(config.threads))
    if device.type == "cpu":
        retain_freed_memory()  # no page faults for the memory each step frees and takes again
    if dataset is None:
        dataset = run_dataset(config)
    for split in ("train", "valid", "test"):
        if split not in dataset.splits or len(dataset.splits[split]) == 0:
            why = dataset.report.get("empty_splits", {}).get(split)
            raise ValueError(
                f"dataset {dataset.name!r} has no {split!r} samples" + (f": {why}" if why else "")
            )
    uses_intents = MODEL_CLASSES[config.model].uses_intents
    intents = IntentLookup.load(config.intents, dataset) if uses_intents and config.intents else None
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.n_items, intents.d_text if intents else None).to(device)
    # fused: one kernel over all parameters instead of about ten ops per parameter tensor.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    # What the run depends on beyond its config: the samples and the intents they get.
    fingerprint = dataset_fingerprint(dataset) + (f"-{intents.digest}" if intents else "")
    stopping = EarlyStopping(config.patience, mode="max")
    epoch, history = 0, []

    if resume and (out / LAST).exists():
        ckpt = load_checkpoint(out / LAST, map_location=device)
        saved = from_dict(TrainConfig, json.loads(ckpt["config"]))
        if asdict(saved) != asdict(config) or ckpt["fingerprint"] != fingerprint:
            raise StaleRunError(
                f"cannot resume {out}: its config, dataset or intents differ from this run's "
                f"(pass overwrite=True / --overwrite to train it again)"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        stopping.load_state_dict(ckpt)
        epoch, history = int(ckpt["epoch"]), json.loads(ckpt["history"])

    common = {"config": json.dumps(asdict(config)), "fingerprint": fingerprint, "n_items": dataset.n_items}
    common["d_text"] = intents.d_text if intents else 0
    common["items"] = json.dumps(dataset.item_raw_ids)
    train_set = dataset.splits["train"]
    distributed = env.world_size > 1
    batch_loss = _LossOf(model)
    if distributed:
        batch_loss = DistributedDataParallel(
            batch_loss, device_ids=[device.index] if device.type == "cuda" else None
        )
    epoch_seconds = [h["seconds"] for h in history]
    # Workers build the packed graphs while this process computes (the padded path builds its
    # graphs on the device, in forward).
    packed_in_workers = config.num_workers > 0 and model.encoder.uses_packed_path(device)
    if model.encoder.uses_packed_path(device):
        # numba's import and compiled-code load, once, before the first epoch's clock (forked
        # loader workers inherit them).
        load_numba_builder(device, model.encoder.embedding.weight.dtype)

    def evaluate_split(split: str) -> dict[str, float]:
        return evaluate(
            model,
            dataset.splits[split],
            batch_size=config.eval_batch_size,
            max_len=config.max_len,
            intents=intents,
            device=device,
            progress=progress,
            desc=split,
            distributed=distributed,
        )

    while epoch < config.epochs and not stopping.should_stop:
        model.train()
        shares = shard_batches(
            len(train_set), config.batch_size, config.seed * 100_003 + epoch, env.rank, env.world_size
        )
        loader = make_loader(
            train_set,
            max_len=config.max_len,
            num_workers=config.num_workers,
            batches=[positions.tolist() for positions, _ in shares],
            with_packed_graph=packed_in_workers,
        )
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for step, (batch, (_, weight)) in enumerate(zip(bar, shares, strict=True)):
            batch = batch_to(batch, device, intents)
            with _autocast(config, device):
                loss = batch_loss(batch) * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        scheduler.step()
        if distributed:
            dist.all_reduce(total)
        train_loss = float(total) / env.world_size / max(len(shares), 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
        seconds = time.perf_counter() - start
        valid = evaluate_split("valid")
        score = valid[config.select_metric]
        improved = stopping.step(epoch, score)
        if improved and main_process:
            save_checkpoint(
                out / BEST, {**common, "model": model.state_dict(), "epoch": epoch, "valid": valid}
            )
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": seconds, "valid": valid}
        record["peak_memory_mib"] = peak_memory_mib(device)
        history.append(record)
        epoch_seconds.append(seconds)
        epoch += 1
        if main_process:
            save_checkpoint(
                out / LAST,
                {
                    **common,
                    "epoch": epoch,
                    **stopping.state_dict(),
                    "history": json.dumps(history),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                },
            )
            write_atomic(out / LOG, "".join(json.dumps(h) + "\n" for h in history))
        if progress:
            tqdm.write(
                f"epoch {epoch}: loss {train_loss:.4f}  valid {config.select_metric} {score:.4f}"
                f"{'  *' if improved else ''}  ({seconds:.1f} s)"
            )

    if main_process:
        # Also after a resume that had nothing left to train: the process that wrote the last
        # epoch's last.pt may have died before its log line.
        write_atomic(out / LOG, "".join(json.dumps(h) + "\n" for h in history))
    if distributed:
        dist.barrier()
    best = load_checkpoint(out / BEST, map_location=device)
    model.load_state_dict(best["model"])
    test = evaluate_split("test")
    result = TrainResult(
        best_epoch=stopping.best_epoch + 1,
        valid=best["valid"],
        test=test,
        epochs_run=epoch,
        epoch_seconds=epoch_seconds,
        peak_memory_mib=peak_memory_mib(device),
        out_dir=str(out),
    )
    if main_process:
        write_atomic(out / RESULT, json.dumps({**asdict(result), "config": asdict(config)}, indent=2))
    return result
