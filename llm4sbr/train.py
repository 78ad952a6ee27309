"""Stage-2 training: Adam + StepLR, early stopping and model selection on the VALIDATION split,
then one evaluation of the selected checkpoint on test. Interrupted runs resume from
``last.pt``; every epoch appends a line to ``metrics.jsonl``.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1 in the environment) :func:`train` runs
DistributedDataParallel: gloo on CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).
``config.batch_size`` stays the global batch: every rank takes its share of each global batch
of the same seeded per-epoch permutation, with loss weights that make the averaged gradient the
gradient of the global batch's mean loss, so an SRGNN run follows the single-process run up to
floating-point rounding (LLM4SBR's uniformity term is computed per rank, over its share of the
batch). Validation and test are split across ranks and their target ranks all-gathered, so
every sample counts exactly once. Only rank 0 writes files; every rank reads best.pt (and
last.pt when resuming) from ``out_dir``, which must be on a filesystem all ranks see.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from llm4sbr.atomic import write_atomic
from llm4sbr.checkpoint import load_checkpoint, save_checkpoint
from llm4sbr.config import TrainConfig, from_dict
from llm4sbr.data import (
    EpochShuffleSampler,
    SampleDataset,
    SampleSet,
    SessionDataset,
    collate_sessions,
    load_dataset,
    make_loader,
)
from llm4sbr.metrics import RankAccumulator, metrics_from_ranks
from llm4sbr.models import LLM4SBR, SRGNN

LAST, BEST, LOG, RESULT = "last.pt", "best.pt", "metrics.jsonl", "result.json"


class IntentLookup:
    """Stage-1 intent vectors indexed by sample id: ``lookup(sample_id [B]) -> [B, 2, d_text]``."""

    def __init__(self, vectors: np.ndarray, sample_ids: np.ndarray, dataset: SessionDataset) -> None:
        if vectors.ndim != 3 or vectors.shape[1] != 2 or len(vectors) != len(sample_ids):
            raise ValueError(
                f"intent vectors must be [n_samples, 2, d_text] with one sample id per row, got "
                f"{list(vectors.shape)} vectors and {len(sample_ids)} ids"
            )
        needed = np.concatenate([s.sample_ids for s in dataset.splits.values()])
        size = int(max(needed.max(initial=0), np.max(sample_ids, initial=0))) + 1
        row = np.full(size, -1, dtype=np.int64)
        row[np.asarray(sample_ids, dtype=np.int64)] = np.arange(len(sample_ids))
        missing = needed[row[needed] < 0]
        if len(missing):
            raise ValueError(
                f"the intents cover {len(needed) - len(missing)} of the dataset's {len(needed)} samples "
                f"(first missing sample ids: {missing[:5].tolist()}); rerun infer-intents on this dataset"
            )
        self.d_text = int(vectors.shape[2])
        self.table = torch.zeros(size, 2, self.d_text, dtype=torch.float32)
        self.table[torch.from_numpy(needed)] = torch.from_numpy(np.asarray(vectors[row[needed]], np.float32))

    @classmethod
    def load(cls, directory: str | Path, dataset: SessionDataset) -> IntentLookup:
        from llm4sbr.intent import load_intents

        vectors, sample_ids = load_intents(directory)
        return cls(vectors, sample_ids, dataset)

    def __call__(self, sample_id: torch.Tensor) -> torch.Tensor:
        return self.table[sample_id]


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    epoch_seconds: list[float] = field(default_factory=list)
    peak_memory_mib: float = 0.0
    out_dir: str = ""


class DistributedEnv(NamedTuple):
    """This process's place in a torchrun job; (0, 1, 0) for a plain single-process run."""

    rank: int
    world_size: int
    local_rank: int


def distributed_env() -> DistributedEnv:
    """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment."""
    env = os.environ
    return DistributedEnv(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[DistributedEnv]:
    """Join torchrun's process group for one training run (a no-op for a single process) and
    leave it afterwards if this run created it; a group the caller initialised is used as is."""
    env = distributed_env()
    created = env.world_size > 1 and not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        env = DistributedEnv(dist.get_rank(), dist.get_world_size(), env.local_rank)
    try:
        yield env
    finally:
        if created:
            dist.destroy_process_group()


def shard_batches(
    n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[np.ndarray, float]]:
    """This rank's share of every global batch of one epoch, as (sample positions, loss weight).

    The epoch order is the permutation ``make_loader(..., shuffle=True, seed=seed)`` draws, cut
    into global batches of ``batch_size``. Global batch g (n_g samples) is split into
    ``world_size`` near-equal parts and rank r takes part r (n_r samples) with weight
    ``n_r * world_size / n_g``: DDP averages the ranks' gradients, so the weighted per-rank
    mean losses give the gradient of the global batch's mean loss. A rank whose part is empty
    (a last batch smaller than ``world_size``) reuses the batch's first sample with weight 0,
    so every rank takes every optimizer step. With one process: make_loader's batches, weight 1.
    """
    order = np.fromiter(iter(EpochShuffleSampler(n, seed)), dtype=np.int64, count=n)
    shares = []
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        part = np.array_split(batch, world_size)[rank]
        if len(part):
            shares.append((part, len(part) * world_size / len(batch)))
        else:
            shares.append((batch[:1], 0.0))
    return shares


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available")
    return device


def build_model(config: TrainConfig, n_items: int, d_text: int | None = None) -> nn.Module:
    common = dict(dim=config.dim, steps=config.steps, readout=config.readout)
    if config.model == "srgnn":
        return SRGNN(n_items, **common)
    if d_text is None:
        raise ValueError("model 'llm4sbr' needs intent vectors: pass --intents DIR (from infer-intents)")
    return LLM4SBR(
        n_items,
        d_text,
        tau=config.tau,
        reduce_views=config.reduce_views,
        uniformity_t=config.uniformity_t,
        concat_order=config.concat_order,
        **common,
    )


def run_dataset(config: TrainConfig) -> SessionDataset:
    """The dataset a run of ``config`` trains on: its data and preset, with the validation split
    carved by its seed and valid_fraction."""
    return load_dataset(config.data, config.preset, seed=config.seed, valid_fraction=config.valid_fraction)


def dataset_fingerprint(dataset: SessionDataset) -> str:
    """Changes whenever the items or samples of any split change."""
    digest = hashlib.sha256(f"{dataset.n_items}".encode())
    for name in sorted(dataset.splits):
        s = dataset.splits[name]
        for array in (s.offsets, s.items, s.targets, s.sample_ids):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, intents: IntentLookup | None) -> dict:
    if intents is not None:
        batch["intent"] = intents(batch["sample_id"])
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


def _all_gather_ranks(local: torch.Tensor, sizes: list[int], device: torch.device) -> torch.Tensor:
    """Concatenate every rank's target ranks in rank order; ``sizes[r]`` is rank r's count
    (all_gather needs equal shapes, so each part is padded to the largest and cut back)."""
    padded = torch.zeros(max(sizes), dtype=torch.long, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).cpu()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    samples: SampleSet,
    *,
    batch_size: int = 500,
    max_len: int | None = None,
    intents: IntentLookup | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    distributed: bool = False,
) -> dict[str, float]:
    """Full-ranking hit/mrr/ndcg@{5,10,20} over every sample of ``samples``.

    With ``distributed`` (inside an initialised process group, called on every rank) each rank
    ranks a contiguous 1/world_size of the samples and the ranks are all-gathered, so every
    sample counts exactly once; every rank returns the same metrics.
    """
    device = torch.device(device)
    model.eval()
    if distributed:
        parts = np.array_split(np.arange(len(samples)), dist.get_world_size())
        samples = samples.subset(parts[dist.get_rank()])
    acc = RankAccumulator()
    loader = make_loader(samples, batch_size=batch_size, shuffle=False, max_len=max_len)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = _to_device(batch, device, intents)
        acc.add(model.full_sort_predict(batch).float(), batch["target"])
    if not distributed:
        return acc.compute()
    return metrics_from_ranks(_all_gather_ranks(acc.ranks, [len(p) for p in parts], device))


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
    device = resolve_device(config.device)
    if device.type == "cuda" and distributed_env().world_size > 1:
        device = torch.device("cuda", distributed_env().local_rank)
        torch.cuda.set_device(device)
    with _process_group(device) as env:
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
        torch.set_num_threads(config.threads)
    if dataset is None:
        dataset = run_dataset(config)
    for split in ("train", "valid", "test"):
        if split not in dataset.splits or len(dataset.splits[split]) == 0:
            raise ValueError(f"dataset {dataset.name!r} has no {split!r} samples")
    intents = (
        IntentLookup.load(config.intents, dataset) if config.model == "llm4sbr" and config.intents else None
    )
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.n_items, intents.d_text if intents else None).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    fingerprint = dataset_fingerprint(dataset)
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}

    if resume and (out / LAST).exists():
        ckpt = load_checkpoint(out / LAST, map_location=device)
        saved = from_dict(TrainConfig, json.loads(ckpt["config"]))
        if asdict(saved) != asdict(config) or ckpt["fingerprint"] != fingerprint:
            raise ValueError(f"cannot resume {out}: its config or dataset differs from this run's")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        state = {k: ckpt[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs")}
        state["history"] = json.loads(ckpt["history"])

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
    epoch_seconds = [h["seconds"] for h in state["history"]]

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

    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        model.train()
        shares = shard_batches(
            len(train_set), config.batch_size, config.seed * 100_003 + epoch, env.rank, env.world_size
        )
        loader = DataLoader(
            SampleDataset(train_set, config.max_len),
            batch_sampler=[positions.tolist() for positions, _ in shares],
            num_workers=config.num_workers,
            collate_fn=collate_sessions,
        )
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for step, (batch, (_, weight)) in enumerate(zip(bar, shares, strict=True)):
            batch = _to_device(batch, device, intents)
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
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            if main_process:
                save_checkpoint(
                    out / BEST, {**common, "model": model.state_dict(), "epoch": epoch, "valid": valid}
                )
        else:
            state["bad_epochs"] += 1
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": seconds, "valid": valid}
        record["peak_memory_mib"] = peak_memory_mib(device)
        state["history"].append(record)
        epoch_seconds.append(seconds)
        state["epoch"] = epoch + 1
        if main_process:
            save_checkpoint(
                out / LAST,
                {
                    **common,
                    **{k: state[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs")},
                    "history": json.dumps(state["history"]),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                },
            )
            write_atomic(out / LOG, "".join(json.dumps(h) + "\n" for h in state["history"]))
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {train_loss:.4f}  valid {config.select_metric} {score:.4f}"
                f"{'  *' if improved else ''}  ({seconds:.1f} s)"
            )

    if distributed:
        dist.barrier()
    best = load_checkpoint(out / BEST, map_location=device)
    model.load_state_dict(best["model"])
    test = evaluate_split("test")
    result = TrainResult(
        best_epoch=state["best_epoch"] + 1,
        valid=best["valid"],
        test=test,
        epochs_run=state["epoch"],
        epoch_seconds=epoch_seconds,
        peak_memory_mib=peak_memory_mib(device),
        out_dir=str(out),
    )
    if main_process:
        write_atomic(out / RESULT, json.dumps({**asdict(result), "config": asdict(config)}, indent=2))
    return result


def load_trained(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a ``best.pt``/``last.pt`` checkpoint: (model in eval mode, config, payload)."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    config = from_dict(TrainConfig, json.loads(ckpt["config"]))
    model = build_model(config, int(ckpt["n_items"]), int(ckpt["d_text"]) or None)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint} does not match its own config: {exc}") from exc
    return model.to(device).eval(), config, ckpt
