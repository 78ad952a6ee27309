"""The one early-stopping rule of the package (stage-2 training and the intent predictor)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Track a validation score epoch by epoch; stop after ``patience`` epochs without a better one.

    ``mode`` "max" (metrics such as mrr@20) or "min" (losses). ``best_epoch`` counts from 0
    (-1 before the first epoch); the state round-trips through :meth:`state_dict` for resuming.
    """

    patience: int
    mode: str = "max"
    best_score: float = math.nan
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if math.isnan(self.best_score):
            self.best_score = -math.inf if self.mode == "max" else math.inf

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def step(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s score; True when it is the best so far (strictly better)."""
        improved = score > self.best_score if self.mode == "max" else score < self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict[str, float | int]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
