"""The intent predictor: a session's (long, short) intent vectors without an LLM call.

LLM4SBR needs two stage-1 vectors per session, which come from an LLM run offline over the
dataset's sessions; a session seen for the first time at serving time has none. The predictor is
a small model distilled from the stage-1 vectors of the TRAINING split (selected on the
validation split; test intents are never read):

    e_j     = E[item_j]                                  learned item vectors [dim], j over the clicks
    f       = [mean_j e_j ; e_last]                      [2 dim]
    predict = head(f).view(2, d_text) + cache            [2, d_text] = (long, short)
    cache   = (mean_j C_long[item_j], C_short[item_last])      (optional per-item intent table,
                                                               llm4sbr.intent.lookup)

``C_long[i]`` is the mean long-term intent over the clicks on item i in training prefixes and
``C_short[i]`` the mean short-term intent of the training samples whose last click is i; items
without such samples get the mean over all training samples. The cache alone is a
non-parametric predictor; the learned term corrects it. Loss: mean squared error.

:func:`llm4sbr.training.train_intent_predictor` writes ``intent_predictor.pt`` next to an LLM4SBR checkpoint,
where :class:`llm4sbr.serving.Recommender` finds it. When the stage-1 folder holds the encoded
catalog (``catalog.npz``), the file keeps it and the item names, and :class:`IntentExplainer`
names the catalog items nearest (cosine) to a session's predicted intents.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llm4sbr.checkpoint import load_checkpoint
from llm4sbr.intent.prompts import VIEWS

PREDICTOR_FILE = "intent_predictor.pt"
KIND = "intent-predictor"


class IntentPredictor(nn.Module):
    """Predicts the stage-1 intents of sessions: ``forward(item_seq [B, L], item_seq_len [B]) ->
    [B, 2, d_text]`` with axis 1 = (long, short) view. Items are 1..n_items, 0 is padding.

    ``item_cache`` [n_items + 1, 2, d_text] (see :func:`llm4sbr.intent.lookup.item_intent_table`) or None.
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
