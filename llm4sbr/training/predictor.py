"""Training of the intent predictor (:mod:`llm4sbr.intent.predictor`): distilled from the
stage-1 intents of an LLM4SBR run's TRAINING split, selected on the validation split's mean
squared error (test intents are never read).

:func:`fit_intent_predictor` is the one training loop (early stopping on the validation MSE);
:func:`train_intent_predictor` uses it for distillation from an LLM4SBR run, and stage 1's LLM
budget (:mod:`llm4sbr.intent.budget`) to fill the intents of the samples the LLM did not see."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llm4sbr.checkpoint import save_checkpoint
from llm4sbr.config import PredictorConfig
from llm4sbr.data import SampleSet, SessionDataset, make_loader, run_dataset
from llm4sbr.intent.lookup import IntentLookup, item_intent_table
from llm4sbr.intent.predictor import KIND, PREDICTOR_FILE, IntentPredictor
from llm4sbr.intent.store import load_catalog
from llm4sbr.models.registry import check_catalog, load_trained
from llm4sbr.training.early_stopping import EarlyStopping


@dataclass
class PredictorResult:
    """What :func:`train_intent_predictor` wrote and how well the selected epoch predicts on valid.

    ``valid`` holds ``mse`` (the selection metric) and ``cosine_long`` / ``cosine_short`` (mean
    cosine similarity to the stage-1 vectors per view); ``valid_baseline`` the same metrics of
    predicting the training mean for every session.
    """

    path: str
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    valid_baseline: dict[str, float]


def _intent_metrics(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """predicted, target [N, 2, d_text] -> mse and per-view mean cosine similarity."""
    cosine = F.cosine_similarity(predicted, target, dim=-1).mean(0)
    return {
        "mse": float(F.mse_loss(predicted, target)),
        "cosine_long": float(cosine[0]),
        "cosine_short": float(cosine[1]),
    }


@torch.no_grad()
def predict_intents(
    predictor: IntentPredictor, samples: SampleSet, *, max_len: int | None = None, batch_size: int = 1024
) -> torch.Tensor:
    """Predicted intents of every sample of ``samples``, in order -> [len(samples), 2, d_text]."""
    predictor.eval()
    device = predictor.embedding.weight.device
    out = [
        predictor(batch["item_seq"].to(device), batch["item_seq_len"].to(device)).cpu()
        for batch in make_loader(samples, batch_size=batch_size, max_len=max_len)
    ]
    return torch.cat(out) if out else torch.zeros(0, 2, predictor.d_text)


@dataclass
class FitResult:
    """What :func:`fit_intent_predictor` selected: ``predictor`` holds the weights of
    ``best_epoch`` (from 0) and is in eval mode; ``valid`` and ``valid_baseline`` as in
    :class:`PredictorResult`."""

    predictor: IntentPredictor
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    valid_baseline: dict[str, float]


def _by_row(samples: SampleSet) -> SampleSet:
    """``samples`` with sample ids 0..n-1, so a batch's ``sample_id`` indexes aligned targets."""
    return replace(samples, sample_ids=np.arange(len(samples), dtype=np.int64))


def fit_intent_predictor(
    train_samples: SampleSet,
    train_targets: torch.Tensor,
    valid_samples: SampleSet,
    valid_targets: torch.Tensor,
    n_items: int,
    config: PredictorConfig,
    *,
    init_embedding: torch.Tensor | None = None,
    zero_head: bool = False,
    max_len: int | None = None,
    what: str = "the intent vectors",
    progress: bool = True,
) -> FitResult:
    """Train an :class:`IntentPredictor` to predict ``train_targets`` [len(train_samples), 2,
    d_text] (aligned with ``train_samples``) with mean squared error, and keep the epoch with the
    lowest MSE on ``valid_samples`` / ``valid_targets`` [len(valid_samples), 2, d_text].

    Seeded with ``config.seed`` (initialisation and shuffling); at most ``config.epochs``
    epochs, stopping after ``config.patience`` without a lower validation MSE. With
    ``config.item_cache`` the per-item table of the training samples
    (:func:`~llm4sbr.intent.lookup.item_intent_table`) is the predictor's cache.
    ``init_embedding`` [n_items + 1, dim] starts the item vectors (their size is then its
    width); without it they are random of size ``config.dim``. ``zero_head`` starts the learned
    term at zero, so training starts from the item cache's prediction (random item vectors
    through a random head predict noise larger than the intents). ``max_len`` truncates prefixes.
    Raises FloatingPointError, naming ``what``, when the validation MSE is never finite.
    """
    d_text = int(train_targets.shape[-1])
    for name, samples, targets in (
        ("train", train_samples, train_targets),
        ("valid", valid_samples, valid_targets),
    ):
        if tuple(targets.shape) != (len(samples), 2, d_text):
            raise ValueError(
                f"{name} targets must be [{len(samples)}, 2, {d_text}], got {list(targets.shape)}"
            )
    if init_embedding is not None:
        dim = int(init_embedding.shape[1])
    elif config.dim is not None:
        dim = config.dim
    else:
        raise ValueError("the intent predictor needs config.dim or init_embedding")
    train_set = _by_row(train_samples)
    torch.manual_seed(config.seed)
    cache = item_intent_table(train_samples, train_targets, n_items)[0] if config.item_cache else None
    predictor = IntentPredictor(n_items, d_text, dim, cache)
    if init_embedding is not None:
        predictor.embedding.weight.data.copy_(init_embedding)
    if zero_head:
        nn.init.zeros_(predictor.head.weight)
        nn.init.zeros_(predictor.head.bias)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.lr, weight_decay=config.l2)
    baseline = _intent_metrics(train_targets.mean(0).expand_as(valid_targets), valid_targets)

    best_state, best = copy.deepcopy(predictor.state_dict()), {}
    stopping = EarlyStopping(config.patience, mode="min")
    epoch = 0
    while epoch < config.epochs and not stopping.should_stop:
        predictor.train()
        loader = make_loader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed * 100_003 + epoch,
            max_len=max_len,
        )
        for batch in tqdm(loader, desc=f"predictor epoch {epoch + 1}", disable=not progress, leave=False):
            predicted = predictor(batch["item_seq"], batch["item_seq_len"])
            loss = F.mse_loss(predicted, train_targets[batch["sample_id"]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        predicted = predict_intents(predictor, valid_samples, max_len=max_len)
        valid = _intent_metrics(predicted, valid_targets)
        if stopping.step(epoch, valid["mse"]):
            best_state, best = copy.deepcopy(predictor.state_dict()), valid
        epoch += 1
        if progress:
            tqdm.write(
                f"predictor epoch {epoch}: valid mse {valid['mse']:.5f} (baseline {baseline['mse']:.5f})"
            )

    if stopping.best_epoch < 0:
        raise FloatingPointError(
            f"the intent predictor's validation MSE was never finite (last: {valid['mse']}); "
            f"check {what} for NaN or inf"
        )
    predictor.load_state_dict(best_state)
    return FitResult(predictor.eval(), best_state, stopping.best_epoch, epoch, best, baseline)


def train_intent_predictor(
    checkpoint: str | Path,
    *,
    config: PredictorConfig | None = None,
    out: str | Path | None = None,
    dataset: SessionDataset | None = None,
    intents: str | Path | None = None,
    progress: bool = True,
) -> PredictorResult:
    """Distil the stage-1 intents of an LLM4SBR run into an :class:`IntentPredictor`.

    ``checkpoint``: the run's best.pt. ``dataset`` (default: rebuilt from the run's config) must
    have the checkpoint's items; ``intents`` (default: the run's ``intents`` folder) is a stage-1
    output folder covering the train and valid samples. Trains on train, keeps the epoch with
    the lowest valid MSE and saves it to ``out`` (default: ``intent_predictor.pt`` next to the
    checkpoint).
    """
    config = config or PredictorConfig()
    model, train_config, payload = load_trained(checkpoint)
    if not payload["d_text"]:
        raise ValueError(f"{checkpoint} is a {train_config.model} model, which uses no intents")
    if dataset is None:
        dataset = run_dataset(train_config)
    check_catalog(payload, dataset, checkpoint)
    intents = intents or train_config.intents
    if intents is None:
        raise ValueError(f"{checkpoint} names no intents folder: pass intents=DIR")
    lookup = IntentLookup.load(intents, dataset, splits=("train", "valid"))
    if lookup.d_text != model.d_text:
        raise ValueError(f"the intents have d_text {lookup.d_text}, the model {model.d_text}")
    catalog = load_catalog(intents)
    explanation = {}
    if catalog is not None:
        if catalog[1].shape[1] != lookup.d_text:
            raise ValueError(f"{intents}: catalog vectors have d {catalog[1].shape[1]}, not {lookup.d_text}")
        explanation = {
            "catalog_ids": torch.from_numpy(catalog[0]),
            "catalog_vectors": torch.from_numpy(catalog[1]),
            "item_names": json.dumps(list(dataset.item_names)),
        }

    train_set, valid_set = dataset.splits["train"], dataset.splits["valid"]
    fit = fit_intent_predictor(
        train_set,
        lookup(torch.from_numpy(train_set.sample_ids)),
        valid_set,
        lookup(torch.from_numpy(valid_set.sample_ids)),
        dataset.n_items,
        config,
        init_embedding=model.encoder.embedding.weight.data if config.dim is None else None,
        max_len=train_config.max_len,
        what=f"the stage-1 intents in {intents}",
        progress=progress,
    )
    path = Path(out) if out is not None else Path(checkpoint).parent / PREDICTOR_FILE
    save_checkpoint(
        path,
        {
            **explanation,
            "kind": KIND,
            "config": json.dumps(asdict(config)),
            "n_items": dataset.n_items,
            "d_text": lookup.d_text,
            "dim": int(fit.predictor.embedding.weight.shape[1]),
            "item_cache": config.item_cache,
            "items": payload["items"],
            "model": fit.best_state,
            "valid": fit.valid,
            "best_epoch": fit.best_epoch,
        },
    )
    return PredictorResult(str(path), fit.best_epoch + 1, fit.epochs_run, fit.valid, fit.valid_baseline)
