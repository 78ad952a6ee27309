"""Training: the stage-2 loop with resume and early stopping (:mod:`.trainer`), distributed
setup (:mod:`.distributed`), full-ranking evaluation (:mod:`.evaluate`) and its metrics
(:mod:`.metrics`), and the intent predictor's distillation (:mod:`.predictor`).

Serving never imports this package.
"""

from llm4sbr.training.early_stopping import EarlyStopping
from llm4sbr.training.evaluate import evaluate, evaluate_paths, rank_metrics
from llm4sbr.training.predictor import PredictorResult, train_intent_predictor
from llm4sbr.training.trainer import StaleRunError, TrainResult, train

__all__ = [
    "EarlyStopping",
    "PredictorResult",
    "StaleRunError",
    "TrainResult",
    "evaluate",
    "evaluate_paths",
    "rank_metrics",
    "train",
    "train_intent_predictor",
]
