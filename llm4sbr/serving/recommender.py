"""Serving: next-item recommendations for a session in the user's raw item ids, with no LLM call.

    rec = Recommender.load("runs/llm4sbr/best.pt")           # finds intent_predictor.pt beside it
    rec.recommend(["50", "172", "133"], k=20)                 # -> [(item_id, score), ...] best first
    rec.explain(["50", "172", "133"])                         # catalog items nearest each intent

A model that uses intents (LLM4SBR) gets those of a new session from the intent predictor
(:mod:`llm4sbr.intent.predictor`, trained by :func:`llm4sbr.training.train_intent_predictor`
after training); an SRGNN checkpoint needs none. Nothing here imports the training code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from llm4sbr.data.graph import SessionGraph
from llm4sbr.intent.predictor import (
    PREDICTOR_FILE,
    IntentExplainer,
    IntentPredictor,
    load_explainer,
    load_intent_predictor,
)
from llm4sbr.models.base import GRAPH_KEYS, SessionModel
from llm4sbr.models.registry import load_trained

UNKNOWN_POLICIES = ("raise", "skip")
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class UnknownItemError(ValueError):
    """A session holds item ids the model was not trained on; ``unknown`` lists them."""

    def __init__(self, unknown: list, n_items: int) -> None:
        self.unknown = unknown
        super().__init__(
            f"unknown item ids {unknown[:10]}{' ...' if len(unknown) > 10 else ''} (not among the "
            f"{n_items} items the model was trained on); pass on_unknown='skip' to ignore them"
        )


class ServingModel(nn.Module):
    """The inference path as one module: ``forward(item_seq [B, L], item_seq_len [B], graph=None)
    -> scores [B, n_items + 1]`` (column = item id; column 0, padding, is -inf).

    ``predictor`` supplies the intents of an LLM4SBR model and must be None for SRGNN.
    ``graph`` is a prebuilt :class:`SessionGraph` (built inside the model when None).
    """

    def __init__(self, model: SessionModel, predictor: IntentPredictor | None = None) -> None:
        super().__init__()
        uses_intents = model.uses_intents
        if uses_intents and predictor is None:
            raise ValueError(
                f"a {type(model).__name__} model needs an intent predictor (train_intent_predictor)"
            )
        if not uses_intents and predictor is not None:
            raise ValueError("this model uses no intents: pass no intent predictor")
        if predictor is not None and (predictor.n_items, predictor.d_text) != (model.n_items, model.d_text):
            raise ValueError(
                f"the predictor has {predictor.n_items} items and d_text {predictor.d_text}, "
                f"the model {model.n_items} and {model.d_text}"
            )
        self.model = model
        self.predictor = predictor

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def forward(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, graph: SessionGraph | None = None
    ) -> torch.Tensor:
        batch = {"item_seq": item_seq, "item_seq_len": item_seq_len}
        if graph is not None:
            batch.update(zip(GRAPH_KEYS, graph, strict=True))
        if self.predictor is not None:
            batch["intent"] = self.predictor(item_seq, item_seq_len)
        return self.model.full_sort_predict(batch)


def _predictor_path(checkpoint: str | Path, predictor: str | Path | None) -> Path:
    path = Path(predictor) if predictor is not None else Path(checkpoint).parent / PREDICTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"intent predictor not found: {path}; train it with "
            f"`llm4sbr train-predictor --checkpoint {checkpoint}`"
        )
    return path


def load_serving_model(
    checkpoint: str | Path, predictor: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[ServingModel, dict, IntentExplainer | None]:
    """(ServingModel in eval mode, checkpoint payload, intent explainer or None) of a run's
    best.pt; an LLM4SBR run loads ``predictor`` (default: intent_predictor.pt beside the
    checkpoint)."""
    model, _, payload = load_trained(checkpoint, device)
    intent_predictor = explainer = None
    if model.uses_intents:
        path = _predictor_path(checkpoint, predictor)
        intent_predictor, predictor_payload = load_intent_predictor(path, device)
        if predictor_payload["items"] != payload["items"]:
            raise ValueError(f"{path} was trained for another item catalog than {checkpoint}")
        explainer = load_explainer(intent_predictor, predictor_payload)
    return ServingModel(model, intent_predictor).eval(), payload, explainer


class Recommender:
    """Top-k next items of sessions given in raw item ids.

    ``scorer(item_seq [B, L], item_seq_len [B]) -> [B, n_items + 1]`` scores model item ids (a
    :class:`ServingModel` or an exported program, see :mod:`llm4sbr.serving.export`); ``item_ids[i]`` is
    the raw id of model item i (index 0 is padding); sessions keep their ``max_len`` most recent
    clicks (None: all), as in training. ``explainer`` (an LLM4SBR run whose stage-1 folder held
    the encoded catalog) backs :meth:`explain`.
    """

    def __init__(
        self,
        scorer: Scorer,
        item_ids: Sequence[str],
        *,
        max_len: int | None = None,
        device: str | torch.device = "cpu",
        explainer: IntentExplainer | None = None,
    ) -> None:
        self.scorer = scorer
        self.explainer = explainer
        self.item_ids = list(item_ids)
        self.model_ids = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}
        self.max_len = max_len
        self.device = torch.device(device)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        predictor: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> Recommender:
        """From a run's best.pt (and, for LLM4SBR, its intent predictor: ``predictor`` or
        intent_predictor.pt beside the checkpoint)."""
        serving, payload, explainer = load_serving_model(checkpoint, predictor, device)
        max_len = json.loads(payload["config"]).get("max_len")
        items = json.loads(payload["items"])
        return cls(serving, items, max_len=max_len, device=device, explainer=explainer)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def to_model_ids(self, session: Sequence[str | int], on_unknown: str = "raise") -> list[int]:
        """Raw ids (str, or int compared as str) -> model ids, oldest click first."""
        if isinstance(session, (str, bytes)):
            raise TypeError(
                f"a session is a sequence of item ids, not the string {session!r}: pass [{session!r}]"
            )
        if on_unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"on_unknown must be one of {UNKNOWN_POLICIES}, got {on_unknown!r}")
        ids = [self.model_ids.get(str(raw), 0) for raw in session]
        unknown = [raw for raw, i in zip(session, ids, strict=True) if i == 0]
        if unknown and on_unknown == "raise":
            raise UnknownItemError(unknown, self.n_items)
        known = [i for i in ids if i > 0]
        if not known:
            raise ValueError(f"the session has no known items (got {len(ids)} clicks)")
        return known

    def encode(self, sessions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-id sessions -> (item_seq [B, L] right-padded with 0, item_seq_len [B]) on the device."""
        kept = [s[-self.max_len :] if self.max_len else s for s in sessions]
        lengths = torch.tensor([len(s) for s in kept], dtype=torch.long)
        item_seq = torch.zeros(len(kept), int(lengths.max()), dtype=torch.long)
        for row, s in enumerate(kept):
            item_seq[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return item_seq.to(self.device), lengths.to(self.device)

    @torch.inference_mode()
    def scores(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Scores of every item for model-id sessions: [B, L], [B] -> [B, n_items + 1]."""
        return self.scorer(item_seq, item_seq_len)

    def recommend(
        self,
        session_item_ids: Sequence[str | int],
        k: int = 20,
        exclude_seen: bool = False,
        on_unknown: str = "raise",
    ) -> list[tuple[str, float]]:
        """The ``k`` best next items of one session as (raw item id, score), best first.

        Unknown ids raise :class:`UnknownItemError`, or are dropped with ``on_unknown="skip"``;
        ``exclude_seen`` leaves out the session's own items. Fewer than ``k`` pairs come back
        only when the catalog has fewer candidates.
        """
        return self.recommend_batch([session_item_ids], k, exclude_seen, on_unknown)[0]

    def recommend_batch(
        self,
        sessions: Sequence[Sequence[str | int]],
        k: int = 20,
        exclude_seen: bool = False,
        on_unknown: str = "raise",
    ) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for several sessions scored as one batch."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not sessions:
            return []
        model_sessions = [self.to_model_ids(s, on_unknown) for s in sessions]
        with torch.inference_mode():
            scores = self.scorer(*self.encode(model_sessions)).float()
            if exclude_seen:
                for row, items in enumerate(model_sessions):
                    scores[row, items] = -math.inf
            top_scores, top_items = scores.topk(min(k, self.n_items), dim=1)
        return [
            [(self.item_ids[i], s) for i, s in zip(items, values, strict=True) if s != -math.inf]
            for items, values in zip(top_items.tolist(), top_scores.tolist(), strict=True)
        ]

    def explain(
        self, session_item_ids: Sequence[str | int], k: int = 3, on_unknown: str = "raise"
    ) -> dict[str, list[tuple[str, str, float]]]:
        """Why the model recommends what it does: for the session's predicted long-term and
        short-term intents (no LLM call), the ``k`` catalog items whose encoded names are
        nearest (cosine), as {"long": [(raw item id, name, cosine)], "short": [...]}."""
        if self.explainer is None:
            raise ValueError(
                "no intent explanations here: they need an LLM4SBR checkpoint whose intent "
                "predictor was trained from a stage-1 folder holding catalog.npz (llm4sbr "
                "infer-intents writes it; rerun it, then train_intent_predictor)"
            )
        session = self.to_model_ids(session_item_ids, on_unknown)
        explained = self.explainer.explain(*self.encode([session]), k=k)[0]
        names = self.explainer.names
        return {
            view: [(self.item_ids[i], names[i], cosine) for i, cosine in nearest]
            for view, nearest in explained.items()
        }
