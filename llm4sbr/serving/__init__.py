"""Serving: next-item recommendations with no LLM call (:mod:`.recommender`) and a
``torch.export`` program of the inference path (:mod:`.export`). Imports no training code."""

from llm4sbr.serving.recommender import (
    Recommender,
    ServingModel,
    UnknownItemError,
    load_serving_model,
)

__all__ = ["Recommender", "ServingModel", "UnknownItemError", "load_serving_model"]
