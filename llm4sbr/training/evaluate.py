"""Full-ranking evaluation: every sample of a split ranked against every item, one loop for
training's validation and test passes and for the comparison of serving paths.

Metrics are hit/mrr/ndcg@{5,10,20} with pessimistic ties (docs/method.md §4.3, and
:mod:`llm4sbr.training.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llm4sbr.config import TrainConfig, from_dict
from llm4sbr.data import SampleSet, SessionDataset, make_loader, run_dataset
from llm4sbr.intent.lookup import IntentLookup
from llm4sbr.models.base import SessionModel
from llm4sbr.models.registry import check_catalog, load_trained
from llm4sbr.training.distributed import all_gather_ranks, rank_share
from llm4sbr.training.metrics import RankAccumulator, metrics_from_ranks

Batch = dict[str, torch.Tensor]


SCORE_ELEMENTS = 1 << 25
"""Scores one evaluation batch may hold: [B, n_items + 1] float32 within 128 MiB."""


def batch_to(batch: Batch, device: torch.device, intents: IntentLookup | None = None) -> Batch:
    """Move a loader batch to ``device``, adding its samples' stage-1 ``intent`` when given."""
    if intents is not None:
        batch["intent"] = intents(batch["sample_id"])
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def rank_metrics(
    scores_of: Callable[[Batch], torch.Tensor],
    samples: SampleSet,
    *,
    batch_size: int = 500,
    max_len: int | None = None,
    intents: IntentLookup | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    distributed: bool = False,
    n_items: int | None = None,
) -> dict[str, float]:
    """Rank each sample's target among the scores ``scores_of(batch) -> [B, n_items + 1]``
    (column = item id, column 0 = -inf) and return hit/mrr/ndcg@{5,10,20} over every sample.

    With ``n_items`` given, batches shrink so that one batch's scores stay within
    :data:`SCORE_ELEMENTS` (128 MiB of float32): memory does not grow with batch x catalog,
    and the metrics do not change (each sample's rank depends on its own scores only).

    With ``distributed`` (inside an initialised process group, called on every rank) each rank
    ranks a contiguous 1/world_size of the samples and the ranks are all-gathered, so every
    sample counts exactly once; every rank returns the same metrics.
    """
    device = torch.device(device)
    n = len(samples)
    if distributed:
        samples = samples.subset(rank_share(n))
    accumulator = RankAccumulator()
    if n_items is not None:
        batch_size = max(1, min(batch_size, SCORE_ELEMENTS // (n_items + 1)))
    loader = make_loader(samples, batch_size=batch_size, shuffle=False, max_len=max_len)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = batch_to(batch, device, intents)
        accumulator.add(scores_of(batch).float(), batch["target"])
    if not distributed:
        return accumulator.compute()
    return metrics_from_ranks(all_gather_ranks(accumulator.ranks, n, device))


def evaluate(model: SessionModel, samples: SampleSet, **options: object) -> dict[str, float]:
    """:func:`rank_metrics` of ``model.full_sort_predict`` (the model is put in eval mode);
    ``options`` as rank_metrics takes them (``intents`` for a model that uses intents)."""
    model.eval()
    return rank_metrics(model.full_sort_predict, samples, n_items=model.n_items, **options)


def evaluate_paths(
    checkpoint: str | Path,
    *,
    srgnn_checkpoint: str | Path | None = None,
    predictor: str | Path | None = None,
    dataset: SessionDataset | None = None,
    intents: str | Path | None = None,
    split: str = "test",
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Full-ranking hit/mrr/ndcg@{5,10,20} on ``split`` of an LLM4SBR run along three paths:

    * ``"predictor"``: intents from the intent predictor (the serving path, no LLM);
    * ``"oracle"``: the stage-1 LLM intents of the split's samples (``intents``, default the
      run's intents folder);
    * ``"srgnn"``: the SRGNN run ``srgnn_checkpoint`` (only when given).

    ``dataset`` defaults to the run's dataset rebuilt from its config.
    """
    from llm4sbr.serving.recommender import load_serving_model

    serving, payload, _ = load_serving_model(checkpoint, predictor, device)
    if serving.predictor is None:
        raise ValueError(f"{checkpoint} is not an LLM4SBR run: there are no intent paths to compare")
    config = from_dict(TrainConfig, json.loads(payload["config"]))
    if dataset is None:
        dataset = run_dataset(config)
    check_catalog(payload, dataset, checkpoint)
    samples = dataset.splits[split]
    common = dict(batch_size=batch_size, max_len=config.max_len, device=device)
    results = {
        "predictor": rank_metrics(
            lambda b: serving(b["item_seq"], b["item_seq_len"]), samples, n_items=dataset.n_items, **common
        )
    }
    lookup = IntentLookup.load(intents or config.intents, dataset)
    results["oracle"] = evaluate(serving.model, samples, intents=lookup, **common)
    if srgnn_checkpoint is not None:
        srgnn, _, srgnn_payload = load_trained(srgnn_checkpoint, device)
        check_catalog(srgnn_payload, dataset, srgnn_checkpoint)
        results["srgnn"] = evaluate(srgnn, samples, **common)
    return results
