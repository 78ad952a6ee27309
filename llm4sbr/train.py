"""Stage-2 training: Adam + StepLR, early stopping and model selection on the VALIDATION split,
then one evaluation of the selected checkpoint on test. Interrupted runs resume from
``last.pt``; every epoch appends a line to ``metrics.jsonl``."""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from llm4sbr.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from llm4sbr.config import TrainConfig, from_dict
from llm4sbr.data import SampleSet, SessionDataset, load_dataset, make_loader
from llm4sbr.metrics import RankAccumulator
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
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda")


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
) -> dict[str, float]:
    """Full-ranking hit/mrr/ndcg@{5,10,20} over every sample of ``samples``."""
    device = torch.device(device)
    model.eval()
    acc = RankAccumulator()
    loader = make_loader(samples, batch_size=batch_size, shuffle=False, max_len=max_len)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = _to_device(batch, device, intents)
        acc.add(model.full_sort_predict(batch).float(), batch["target"])
    return acc.compute()


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
    evaluate it once on test. Writes last.pt, best.pt, metrics.jsonl and result.json in ``out_dir``."""
    out = Path(out_dir)
    if (out / LAST).exists() and not (resume or overwrite):
        raise FileExistsError(f"{out} already holds a run: pass resume=True (--resume) or overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if dataset is None:
        dataset = load_dataset(config.data, config.preset, seed=config.seed, valid_fraction=config.valid_fraction)
    for split in ("train", "valid", "test"):
        if split not in dataset.splits or len(dataset.splits[split]) == 0:
            raise ValueError(f"dataset {dataset.name!r} has no {split!r} samples")
    intents = IntentLookup.load(config.intents, dataset) if config.model == "llm4sbr" and config.intents else None
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
    epoch_seconds = [h["seconds"] for h in state["history"]]
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        model.train()
        loader = make_loader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed * 100_003 + epoch,
            max_len=config.max_len,
            num_workers=config.num_workers,
        )
        start = time.perf_counter()
        total, count = torch.zeros((), device=device), 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            batch = _to_device(batch, device, intents)
            with _autocast(config, device):
                loss = model.calculate_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            count += 1
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        scheduler.step()
        train_loss = float(total) / max(count, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
        seconds = time.perf_counter() - start
        valid = evaluate(
            model,
            dataset.splits["valid"],
            batch_size=config.eval_batch_size,
            max_len=config.max_len,
            intents=intents,
            device=device,
            progress=progress,
            desc="valid",
        )
        score = valid[config.select_metric]
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            save_checkpoint(out / BEST, {**common, "model": model.state_dict(), "epoch": epoch, "valid": valid})
        else:
            state["bad_epochs"] += 1
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": seconds, "valid": valid}
        record["peak_memory_mib"] = peak_memory_mib(device)
        state["history"].append(record)
        epoch_seconds.append(seconds)
        state["epoch"] = epoch + 1
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
        atomic_write_text(out / LOG, "".join(json.dumps(h) + "\n" for h in state["history"]))
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {train_loss:.4f}  valid {config.select_metric} {score:.4f}"
                f"{'  *' if improved else ''}  ({seconds:.1f} s)"
            )

    best = load_checkpoint(out / BEST, map_location=device)
    model.load_state_dict(best["model"])
    test = evaluate(
        model,
        dataset.splits["test"],
        batch_size=config.eval_batch_size,
        max_len=config.max_len,
        intents=intents,
        device=device,
        progress=progress,
        desc="test",
    )
    result = TrainResult(
        best_epoch=state["best_epoch"] + 1,
        valid=best["valid"],
        test=test,
        epochs_run=state["epoch"],
        epoch_seconds=epoch_seconds,
        peak_memory_mib=peak_memory_mib(device),
        out_dir=str(out),
    )
    atomic_write_text(out / RESULT, json.dumps({**asdict(result), "config": asdict(config)}, indent=2))
    return result


def load_trained(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a ``best.pt``/``last.pt`` checkpoint: (model in eval mode, config, payload)."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    config = from_dict(TrainConfig, json.loads(ckpt["config"]))
    model = build_model(config, int(ckpt["n_items"]), int(ckpt["d_text"]) or None)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint} does not match its own config: {exc}") from exc
    return model.to(device).eval(), config, ckpt
