"""Training of the intent predictor (:mod:`llm4sbr.intent.predictor`): distilled from the
stage-1 intents of an LLM4SBR run's TRAINING split, selected on the validation split's mean
squared error (test intents are never read)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
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
def _predict_split(
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
    torch.manual_seed(config.seed)
    cache = None
    if config.item_cache:
        cache, _ = item_intent_table(
            train_set, lookup(torch.from_numpy(train_set.sample_ids)), dataset.n_items
        )
    dim = config.dim or train_config.dim
    predictor = IntentPredictor(dataset.n_items, lookup.d_text, dim, cache)
    if config.dim is None:
        predictor.embedding.weight.data.copy_(model.encoder.embedding.weight.data)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.lr, weight_decay=config.l2)
    valid_target = lookup(torch.from_numpy(valid_set.sample_ids))
    train_mean = lookup(torch.from_numpy(train_set.sample_ids)).mean(0)
    baseline = _intent_metrics(train_mean.expand_as(valid_target), valid_target)

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
            max_len=train_config.max_len,
        )
        for batch in tqdm(loader, desc=f"predictor epoch {epoch + 1}", disable=not progress, leave=False):
            loss = F.mse_loss(predictor(batch["item_seq"], batch["item_seq_len"]), lookup(batch["sample_id"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        predicted = _predict_split(predictor, valid_set, max_len=train_config.max_len)
        valid = _intent_metrics(predicted, valid_target)
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
            f"check the stage-1 intents in {intents} for NaN or inf"
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
            "dim": dim,
            "item_cache": config.item_cache,
            "items": payload["items"],
            "model": best_state,
            "valid": best,
            "best_epoch": stopping.best_epoch,
        },
    )
    return PredictorResult(str(path), stopping.best_epoch + 1, epoch, best, baseline)
