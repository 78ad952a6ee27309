"""The intent predictor: a session's (long, short) intent vectors without an LLM call.

LLM4SBR needs two stage-1 vectors per session, which come from an LLM run offline over the
dataset's sessions; a session seen for the first time at serving time has none. The predictor is
a small model distilled from the stage-1 vectors of the TRAINING split (selected on the
validation split; test intents are never read):

    e_j     = E[item_j]                                  learned item vectors [dim], j over the clicks
    f       = [mean_j e_j ; e_last]                      [2 dim]
    predict = head(f).view(2, d_text) + cache            [2, d_text] = (long, short)
    cache   = (mean_j C_long[item_j], C_short[item_last])      (optional per-item intent cache)

``C_long[i]`` is the mean long-term intent over the clicks on item i in training prefixes and
``C_short[i]`` the mean short-term intent of the training samples whose last click is i; items
without such samples get the mean over all training samples. The cache alone is a
non-parametric predictor; the learned term corrects it. Loss: mean squared error.

:func:`train_intent_predictor` writes ``intent_predictor.pt`` next to an LLM4SBR checkpoint,
where :class:`llm4sbr.serve.Recommender` finds it. When the stage-1 folder holds the encoded
catalog (``catalog.npz``), the file keeps it and the item names, and :class:`IntentExplainer`
names the catalog items nearest (cosine) to a session's predicted intents.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llm4sbr.checkpoint import load_checkpoint, save_checkpoint
from llm4sbr.data import SampleSet, SessionDataset, make_loader
from llm4sbr.intent.prompts import VIEWS
from llm4sbr.intent.store import load_catalog
from llm4sbr.train import IntentLookup, load_trained, run_dataset

PREDICTOR_FILE = "intent_predictor.pt"
KIND = "intent-predictor"


@dataclass
class PredictorConfig:
    """Training settings of the intent predictor.

    dim: item vector size; None takes the LLM4SBR model's size and starts from its item
    embeddings. item_cache: add the per-item intent cache (see the module doc). Early stopping
    on the validation mean squared error after ``patience`` epochs without improvement.
    """

    dim: int | None = None
    item_cache: bool = True
    epochs: int = 30
    patience: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    l2: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"predictor {name} must be >= 1, got {getattr(self, name)}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"predictor dim must be None or >= 1, got {self.dim}")


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


class IntentPredictor(nn.Module):
    """Predicts the stage-1 intents of sessions: ``forward(item_seq [B, L], item_seq_len [B]) ->
    [B, 2, d_text]`` with axis 1 = (long, short) view. Items are 1..n_items, 0 is padding.

    ``item_cache`` [n_items + 1, 2, d_text] (see :func:`item_intent_cache`) or None.
    """

    def __init__(self, n_items: int, d_text: int, dim: int, item_cache: torch.Tensor | None = None) -> None:
        super().__init__()
        if item_cache is not None and tuple(item_cache.shape) != (n_items + 1, 2, d_text):
            raise ValueError(
                f"item_cache must have shape [{n_items + 1}, 2, {d_text}], got {list(item_cache.shape)}"
            )
        self.n_items = n_items
        self.d_text = d_text
        self.embedding = nn.Embedding(n_items + 1, dim)
        self.head = nn.Linear(2 * dim, 2 * d_text)
        self.register_buffer("item_cache", item_cache)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        batch = item_seq.shape[0]
        dtype = self.embedding.weight.dtype
        valid = torch.arange(item_seq.shape[1], device=item_seq.device) < item_seq_len[:, None]
        # Click counts per item [B, n_items + 1] turn the pooled means into GEMMs against the
        # tables (no [B, L, d] gather; the model's scores are [B, n_items] anyway).
        counts = torch.zeros(batch, self.n_items + 1, dtype=dtype, device=item_seq.device)
        counts.scatter_add_(1, item_seq, valid.to(dtype))
        counts = counts / item_seq_len[:, None].to(dtype)
        last_item = item_seq[torch.arange(batch, device=item_seq.device), item_seq_len - 1]
        features = torch.cat([counts @ self.embedding.weight, self.embedding(last_item)], dim=-1)
        predicted = self.head(features).view(batch, 2, self.d_text)
        if self.item_cache is None:
            return predicted
        cache = torch.stack([counts @ self.item_cache[:, 0], self.item_cache[last_item, 1]], dim=1)
        return predicted + cache


class IntentExplainer:
    """Names the catalog items nearest (cosine) to the predicted (long, short) intents of sessions.

    ``catalog_ids`` [m] model ids of the items stage 1 localized onto, ``catalog_vectors``
    [m, d_text] their encoded names (stage 1's ``catalog.npz``), ``names[i]`` the name of model
    item i.
    """

    def __init__(
        self,
        predictor: IntentPredictor,
        catalog_ids: torch.Tensor,
        catalog_vectors: torch.Tensor,
        names: list[str],
    ) -> None:
        if catalog_vectors.ndim != 2 or catalog_vectors.shape[1] != predictor.d_text:
            raise ValueError(
                f"catalog vectors must be [m, {predictor.d_text}], got {list(catalog_vectors.shape)}"
            )
        if catalog_ids.shape != catalog_vectors.shape[:1]:
            raise ValueError(f"{len(catalog_ids)} catalog ids for {len(catalog_vectors)} vectors")
        self.predictor = predictor
        self.catalog_ids = catalog_ids
        self.unit_catalog = F.normalize(catalog_vectors.float(), dim=-1)
        self.names = names

    @torch.inference_mode()
    def explain(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int = 3
    ) -> list[dict[str, list[tuple[int, float]]]]:
        """Per session: {"long": [(model id, cosine)] * k, "short": ...}, nearest first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        intents = F.normalize(self.predictor(item_seq, item_seq_len).float(), dim=-1)
        cosine, rows = (intents @ self.unit_catalog.T).topk(min(k, len(self.catalog_ids)), dim=-1)
        ids = self.catalog_ids[rows]
        return [
            {
                view: list(zip(ids[b, v].tolist(), cosine[b, v].tolist(), strict=True))
                for v, view in enumerate(VIEWS)
            }
            for b in range(len(item_seq))
        ]


def item_intent_cache(samples: SampleSet, intents: IntentLookup, n_items: int) -> torch.Tensor:
    """The per-item intent cache of the module doc from ``samples`` (the training split) ->
    [n_items + 1, 2, d_text] float32."""
    vectors = intents(torch.from_numpy(samples.sample_ids)).double()
    mean = vectors.mean(0)
    clicks_per_sample = torch.from_numpy(samples.lengths())
    clicked = torch.from_numpy(samples.items)
    last = torch.from_numpy(samples.items[samples.offsets[1:] - 1])
    cache = mean.expand(n_items + 1, 2, -1).clone()
    for view, items, rows in (
        (0, clicked, vectors[:, 0].repeat_interleave(clicks_per_sample, dim=0)),
        (1, last, vectors[:, 1]),
    ):
        total = torch.zeros(n_items + 1, vectors.shape[-1], dtype=torch.float64).index_add_(0, items, rows)
        ones = torch.ones(len(items), dtype=torch.float64)
        count = torch.zeros(n_items + 1, dtype=torch.float64).index_add_(0, items, ones)
        seen = count > 0
        cache[seen, view] = total[seen] / count[seen, None]
    return cache.float()


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


def check_catalog(payload: dict, dataset: SessionDataset, checkpoint: str | Path) -> None:
    """Raise ValueError unless ``dataset`` has the items of the checkpoint ``payload``."""
    if json.loads(payload["items"]) != dataset.item_raw_ids:
        raise ValueError(f"the dataset's items differ from those {checkpoint} was trained on")


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
    fit_splits = replace(dataset, splits={name: dataset.splits[name] for name in ("train", "valid")})
    lookup = IntentLookup.load(intents, fit_splits)
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
    cache = item_intent_cache(train_set, lookup, dataset.n_items) if config.item_cache else None
    dim = config.dim or train_config.dim
    predictor = IntentPredictor(dataset.n_items, lookup.d_text, dim, cache)
    if config.dim is None:
        predictor.embedding.weight.data.copy_(model.encoder.embedding.weight.data)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.lr, weight_decay=config.l2)
    valid_target = lookup(torch.from_numpy(valid_set.sample_ids))
    train_mean = lookup(torch.from_numpy(train_set.sample_ids)).mean(0)
    baseline = _intent_metrics(train_mean.expand_as(valid_target), valid_target)

    best_state, best = copy.deepcopy(predictor.state_dict()), {"mse": math.inf}
    best_epoch, bad_epochs, epoch = -1, 0, 0
    while epoch < config.epochs and bad_epochs < config.patience:
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
        if valid["mse"] < best["mse"]:
            best_state, best, best_epoch, bad_epochs = copy.deepcopy(predictor.state_dict()), valid, epoch, 0
        else:
            bad_epochs += 1
        epoch += 1
        if progress:
            tqdm.write(
                f"predictor epoch {epoch}: valid mse {valid['mse']:.5f} (baseline {baseline['mse']:.5f})"
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
            "best_epoch": best_epoch,
        },
    )
    return PredictorResult(str(path), best_epoch + 1, epoch, best, baseline)


def load_intent_predictor(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[IntentPredictor, dict]:
    """Rebuild a saved predictor: (predictor in eval mode, payload with ``items``, ``config``, ``valid``)."""
    payload = load_checkpoint(path, map_location=device)
    if payload.get("kind") != KIND:
        raise ValueError(f"{path} is not an intent predictor (train one with train_intent_predictor)")
    n_items, d_text = int(payload["n_items"]), int(payload["d_text"])
    cache = torch.zeros(n_items + 1, 2, d_text) if payload["item_cache"] else None
    predictor = IntentPredictor(n_items, d_text, int(payload["dim"]), cache)
    predictor.load_state_dict(payload["model"])
    return predictor.to(device).eval(), payload


def load_explainer(predictor: IntentPredictor, payload: dict) -> IntentExplainer | None:
    """The explainer a saved predictor carries (None: its stage-1 folder had no catalog)."""
    if "catalog_vectors" not in payload:
        return None
    return IntentExplainer(
        predictor, payload["catalog_ids"], payload["catalog_vectors"], json.loads(payload["item_names"])
    )
