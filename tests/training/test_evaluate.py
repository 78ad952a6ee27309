"""The evaluation loop: batches bounded in batch x catalog give the same metrics."""

import importlib

import torch
from fakes import tiny_dataset

from llm4sbr.config import TrainConfig
from llm4sbr.models import build_model
from llm4sbr.training import evaluate

evaluate_module = importlib.import_module("llm4sbr.training.evaluate")


def test_score_memory_bound_shrinks_batches_without_changing_metrics(monkeypatch):
    dataset = tiny_dataset(n_items=30, n_sessions=80)
    torch.manual_seed(0)
    model = build_model(TrainConfig(model="srgnn", dim=8), dataset.n_items)
    samples = dataset.splits["test"]
    whole = evaluate(model, samples, batch_size=500)

    widths = []
    predict = model.full_sort_predict

    def recording(batch):
        scores = predict(batch)
        widths.append(scores.numel())
        return scores

    monkeypatch.setattr(model, "full_sort_predict", recording)
    monkeypatch.setattr(evaluate_module, "SCORE_ELEMENTS", 3 * (dataset.n_items + 1))
    bounded = evaluate(model, samples, batch_size=500)
    assert max(widths) <= 3 * (dataset.n_items + 1)
    assert len(widths) == -(-len(samples) // 3)
    assert bounded == whole
