"""Models by name: build one from a :class:`~llm4sbr.config.TrainConfig`, rebuild one from a
checkpoint written by training. Serving and training both come through here."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llm4sbr.checkpoint import load_checkpoint
from llm4sbr.config import TrainConfig, from_dict
from llm4sbr.data.dataset import SessionDataset
from llm4sbr.models.base import SessionModel
from llm4sbr.models.llm4sbr import LLM4SBR
from llm4sbr.models.srgnn import SRGNN

MODEL_CLASSES: dict[str, type[SessionModel]] = {"srgnn": SRGNN, "llm4sbr": LLM4SBR}


def build_model(config: TrainConfig, n_items: int, d_text: int | None = None) -> SessionModel:
    """A freshly initialised ``config.model`` over ``n_items`` items; models that use intents
    need their size ``d_text``."""
    common = dict(dim=config.dim, steps=config.steps, readout=config.readout)
    cls = MODEL_CLASSES[config.model]
    if not cls.uses_intents:
        return cls(n_items, **common)
    if d_text is None:
        raise ValueError(
            f"model {config.model!r} needs intent vectors: pass --intents DIR (from infer-intents)"
        )
    return cls(
        n_items,
        d_text,
        tau=config.tau,
        reduce_views=config.reduce_views,
        uniformity_t=config.uniformity_t,
        concat_order=config.concat_order,
        **common,
    )


def load_trained(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[SessionModel, TrainConfig, dict]:
    """Rebuild the model of a ``best.pt``/``last.pt`` checkpoint: (model in eval mode, config, payload)."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    config = from_dict(TrainConfig, json.loads(ckpt["config"]))
    model = build_model(config, int(ckpt["n_items"]), int(ckpt["d_text"]) or None)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint} does not match its own config: {exc}") from exc
    return model.to(device).eval(), config, ckpt


def check_catalog(payload: dict, dataset: SessionDataset, checkpoint: str | Path) -> None:
    """Raise ValueError unless ``dataset`` has the items of the checkpoint ``payload``."""
    if json.loads(payload["items"]) != dataset.item_raw_ids:
        raise ValueError(f"the dataset's items differ from those {checkpoint} was trained on")
