"""The LLM budget of stage 1: which samples go to the LLM, and the predictor that fills the rest.

Asking the LLM for every sample costs two generations per sample, which a CPU cannot afford on
a large dataset. With ``--llm-budget B`` only part of the *pool* goes to the LLM; every other
sample gets intents predicted from the ones the LLM answered.

Budget value (:func:`check_budget`, :func:`budget_count`): a value in (0, 1] is a fraction of
the pool (``1`` and ``1.0`` mean the whole pool), rounded to the nearest count and at least one
sample; an integer greater than 1 is a number of samples, capped at the pool size. Zero,
negative, NaN, infinite and non-integer values above 1 are refused.

Pool: the samples of the ``train`` and ``valid`` splits (as stage 1 processes them, so after
``--limit``). Test samples never go to the LLM under a budget. Several seeds carve different
validation splits out of the same training sessions, so train ∪ valid, and everything below,
does not depend on the seed that carved them.

Selection rule :data:`RULE` (:func:`stratified_order`), deterministic given ``seed``
(``--llm-seed``):

1. Pool samples are sorted by sample id (so the split they sit in does not matter).
2. Each sample gets a stratum: (length bucket, popularity bucket). Length bucket:
   ``floor(log2(prefix length))`` (1, 2-3, 4-7, 8-15, ... clicks). Popularity bucket: the
   popularity of the prefix's last item is the number of pool samples whose target is that item
   (its clicks in the training sessions, each session's first click aside); the bucket is the
   quartile of that value's mid-rank among the pool samples, ``floor(4 F)`` with ``F =
   (samples with a lower value + samples with the same value / 2) / pool size``: equal values
   share a bucket, and a large block of ties (e.g. many rarely clicked items) cannot swallow
   the other values' buckets (at most 4 buckets).
3. Within a stratum, samples are ranked by one random permutation of the pool drawn from
   ``numpy.random.default_rng(seed)``.
4. Strata are interleaved by Balinski and Young's quota method: the n-th sample of the order
   comes from the stratum with the largest ``size / (taken + 1)`` among the strata that have
   taken fewer than ``n * size / pool`` so far (ties: the lowest stratum index). Every prefix
   of the order then holds between floor and ceil of ``n * size / pool`` samples of each stratum.

A budget of N takes the first N samples of this order, so with the same pool and seed the
selection of a smaller budget is a subset of the selection of a larger one, and a larger budget
asks the LLM only for the samples the smaller one did not (the others are in the answer cache).

Fill (:func:`fit_fill_predictor`): an :class:`~llm4sbr.intent.predictor.IntentPredictor` is
trained on the LLM samples' intent vectors, with :data:`HOLDOUT_FRACTION` of them (at least
one, drawn with ``seed``) held out to select the epoch, and predicts the vectors of every other
sample (the rest of the pool and the test samples). It uses the ``PredictorConfig`` defaults,
seeded with ``seed``; its item vectors, of size ``PredictorConfig.dim`` (or the LLM4SBR model's
default ``TrainConfig.dim`` when that is None), start random, and its learned term starts at
zero, so training starts from the per-item intent table of the LLM samples. The held-out
samples also decide between the predictor and the plainest fill, the mean intent of the
training LLM samples: when the predictor's held-out MSE is not below the mean's, every other
sample gets the mean (meta.json's ``fill`` says which).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm4sbr.config import PredictorConfig, TrainConfig
from llm4sbr.data.dataset import SampleSet

from .predictor import IntentPredictor

RULE = "length-log2 x last-item-popularity-quartile strata, quota-method interleave (v1)"
POOL_SPLITS = ("train", "valid")
POPULARITY_BUCKETS = 4
HOLDOUT_FRACTION = 0.1
MIN_LLM_SAMPLES = 2


def check_budget(value: float | None) -> float | None:
    """``value`` as a budget (None: no budget), or ValueError saying what a budget may be."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"llm_budget must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"llm_budget must be a fraction in (0, 1] of the train+valid samples or a sample count > 1, "
            f"got {value}"
        )
    if value > 1 and not value.is_integer():
        raise ValueError(
            f"llm_budget above 1 is a number of samples and must be an integer, got {value} "
            "(a fraction must be <= 1)"
        )
    return value


def parse_budget(text: str) -> float:
    """The ``--llm-budget`` argument: a fraction in (0, 1] or an integer count > 1."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"llm_budget must be a number, got {text!r}") from None
    check_budget(value)
    return value


def budget_count(budget: float, pool_size: int) -> int:
    """How many pool samples a (checked) budget selects: a fraction in (0, 1] of ``pool_size``
    rounded to the nearest integer and at least 1, or a count > 1 capped at ``pool_size``."""
    if pool_size == 0:
        return 0
    if budget <= 1:
        return min(pool_size, max(1, math.floor(budget * pool_size + 0.5)))
    return min(pool_size, int(budget))


def strata_of(lengths: np.ndarray, last_items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Stratum index [n] int64 of each pool sample (rule step 2).

    lengths [n] prefix lengths (>= 1); last_items [n] the prefixes' last item ids; popularity
    [n_items + 1] per-item counts. Indices are dense: 0 .. n_strata - 1 in (length bucket,
    popularity bucket) order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("every prefix needs at least one click")
    length_bucket = np.frexp(lengths.astype(np.float64))[1].astype(np.int64) - 1
    value = np.asarray(popularity, dtype=np.int64)[np.asarray(last_items, dtype=np.int64)]
    _, which, ties = np.unique(value, return_inverse=True, return_counts=True)
    mid_rank = (np.cumsum(ties) - ties + ties / 2) / len(value)
    popularity_bucket = np.minimum(
        np.floor(POPULARITY_BUCKETS * mid_rank[which.reshape(-1)]).astype(np.int64), POPULARITY_BUCKETS - 1
    )
    key = length_bucket * POPULARITY_BUCKETS + popularity_bucket
    return np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)


def stratified_order(strata: np.ndarray, seed: int, count: int) -> np.ndarray:
    """The first ``count`` positions [count] int64 of the rule's order over samples whose
    stratum is ``strata`` [n] (rule steps 3 and 4; positions index ``strata``, whose samples
    must already be sorted by sample id). Every prefix of a longer order is the shorter one."""
    strata = np.asarray(strata, dtype=np.int64)
    n = len(strata)
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, {n}], got {count}")
    rank = np.random.default_rng(seed).permutation(n)
    by_stratum = np.lexsort((rank, strata))
    sizes = np.bincount(strata)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    taken = np.zeros(len(sizes), dtype=np.int64)
    order = np.empty(count, dtype=np.int64)
    for step in range(count):
        eligible = taken * n < (step + 1) * sizes
        priority = np.where(eligible, sizes / (taken + 1), -1.0)
        stratum = int(np.argmax(priority))
        order[step] = by_stratum[starts[stratum] + taken[stratum]]
        taken[stratum] += 1
    return order


@dataclass(frozen=True)
class BudgetPlan:
    """Which rows of a stage-1 run go to the LLM.

    ``from_llm`` [n_rows] bool: the selected rows (always inside the pool). ``in_pool`` [n_rows]
    bool: the rows of the pool splits. ``requested``: the budget as given; ``seed``: the
    selection's seed; ``strata``: non-empty strata of the pool.
    """

    requested: float
    seed: int
    from_llm: np.ndarray
    in_pool: np.ndarray
    strata: int

    @property
    def selected(self) -> int:
        return int(self.from_llm.sum())

    @property
    def pool(self) -> int:
        return int(self.in_pool.sum())

    def record(self) -> dict[str, Any]:
        """The selection's part of meta.json's ``budget`` record."""
        return {
            "requested": self.requested,
            "rule": RULE,
            "seed": self.seed,
            "pool_splits": list(POOL_SPLITS),
            "pool": self.pool,
            "strata": self.strata,
            "selected": self.selected,
        }


def plan_budget(
    samples: SampleSet, in_pool: np.ndarray, n_items: int, budget: float, seed: int
) -> BudgetPlan:
    """Select the rows of ``samples`` (every row of a stage-1 run, in its order) that go to the
    LLM under ``budget``, among the rows where ``in_pool`` [len(samples)] is True (see the
    module doc for the rule)."""
    if check_budget(budget) is None:
        raise ValueError("plan_budget needs a budget, got None")
    budget = float(budget)
    in_pool = np.asarray(in_pool, dtype=bool)
    if in_pool.shape != (len(samples),):
        raise ValueError(f"in_pool must be [{len(samples)}] bool, got shape {in_pool.shape}")
    pool_rows = np.flatnonzero(in_pool)
    pool_rows = pool_rows[np.argsort(samples.sample_ids[pool_rows], kind="stable")]
    lengths = samples.lengths()[pool_rows]
    last_items = samples.items[samples.offsets[pool_rows + 1] - 1]
    popularity = np.bincount(samples.targets[pool_rows], minlength=n_items + 1)
    strata = strata_of(lengths, last_items, popularity)
    order = stratified_order(strata, seed, budget_count(budget, len(pool_rows)))
    from_llm = np.zeros(len(samples), dtype=bool)
    from_llm[pool_rows[order]] = True
    n_strata = len(np.unique(strata))
    return BudgetPlan(budget, seed, from_llm, in_pool, n_strata)


def holdout_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) positions in 0..count-1 of the fill predictor's training samples:
    :data:`HOLDOUT_FRACTION` of them (rounded, at least 1) held out, drawn with ``seed``;
    both sorted."""
    if count < MIN_LLM_SAMPLES:
        raise ValueError(f"the fill predictor needs at least {MIN_LLM_SAMPLES} LLM samples, got {count}")
    held = max(1, round(HOLDOUT_FRACTION * count))
    permutation = np.random.default_rng(seed).permutation(count)
    return np.sort(permutation[held:]), np.sort(permutation[:held])


def fill_predictor_config(seed: int) -> PredictorConfig:
    """``PredictorConfig`` defaults seeded with ``seed`` and with a concrete ``dim`` (the
    LLM4SBR model's default when the predictor's is None, as there is no model to copy)."""
    config = PredictorConfig()
    dim = config.dim if config.dim is not None else TrainConfig().dim
    return dataclasses.replace(config, seed=seed, dim=dim)


@dataclass
class FillPredictor:
    """The trained fill predictor and its meta.json record: ``train_samples``,
    ``valid_samples``, ``dim``, ``item_cache``, ``zero_head``, ``best_epoch`` (from 1),
    ``epochs_run``, and ``valid`` and ``valid_baseline`` (mse and per-view cosine of the selected
    epoch and of the training mean on the held-out samples), and ``fill``: "predictor", or
    "mean" when the predictor did not beat the training mean on the held-out samples."""

    predictor: IntentPredictor
    record: dict[str, Any]
    mean: np.ndarray | None = None
    """[2, d_text]: the fill for every sample when the mean won on the held-out samples."""

    def predict(self, samples: SampleSet) -> np.ndarray:
        """Intents of ``samples`` -> [len(samples), 2, d_text] float32."""
        if self.mean is not None:
            return np.broadcast_to(self.mean, (len(samples), *self.mean.shape)).astype(np.float32)
        from llm4sbr.training.predictor import predict_intents

        return predict_intents(self.predictor, samples).numpy().astype(np.float32, copy=False)


def fit_fill_predictor(
    samples: SampleSet, vectors: np.ndarray, n_items: int, seed: int, progress: bool = False
) -> FillPredictor:
    """Train the fill predictor on ``samples`` (the LLM rows) and their intents ``vectors``
    [len(samples), 2, d_text] (see the module doc)."""
    # llm4sbr.training imports llm4sbr.intent, so it is imported when a fill is needed.
    from llm4sbr.training.predictor import fit_intent_predictor

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 3 or vectors.shape[:2] != (len(samples), 2):
        raise ValueError(f"vectors must be [{len(samples)}, 2, d_text], got {vectors.shape}")
    train_rows, valid_rows = holdout_split(len(samples), seed)
    config = fill_predictor_config(seed)
    fit = fit_intent_predictor(
        samples.subset(train_rows),
        torch.from_numpy(vectors[train_rows]),
        samples.subset(valid_rows),
        torch.from_numpy(vectors[valid_rows]),
        n_items,
        config,
        zero_head=True,
        what="the LLM samples' intent vectors",
        progress=progress,
    )
    record = {
        "train_samples": len(train_rows),
        "valid_samples": len(valid_rows),
        "dim": config.dim,
        "item_cache": config.item_cache,
        "zero_head": True,
        "best_epoch": fit.best_epoch + 1,
        "epochs_run": fit.epochs_run,
        "valid": fit.valid,
        "valid_baseline": fit.valid_baseline,
    }
    if fit.valid["mse"] < fit.valid_baseline["mse"]:
        return FillPredictor(fit.predictor, {**record, "fill": "predictor"})
    return FillPredictor(fit.predictor, {**record, "fill": "mean"}, vectors[train_rows].mean(axis=0))
