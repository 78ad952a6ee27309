"""Typed configuration: one dataclass per job, loaded from YAML, overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


MODELS = ("srgnn", "llm4sbr")
READOUTS = ("none", "softmax")
REDUCE_VIEWS = ("mean", "sum")
CONCAT_ORDERS = ("paper", "code")
METRICS = ("hit", "mrr", "ndcg")


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with the one-line description (and choices) that ``--help`` shows."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Everything that defines a stage-2 training run (defaults: docs/method.md §6). These are
    the package's only defaults for these knobs: the models and the CLI read them from here."""

    # data
    data: str = option("ml-100k", "'ml-100k' (bundled) or a path to RecBole, SR-GNN or CSV files")
    preset: str | None = option(None, "session preset (llm4sbr.data.PRESETS; None: by source)")
    items: str | None = option(
        None, "CSV item table (item_id, title) naming the items (None: <log>.items.csv next to a CSV log)"
    )
    valid_fraction: float = option(0.1, "share of training sessions carved out for validation")
    max_len: int | None = option(None, "keep only the last N clicks of a session (None: all)")
    # model
    model: str = option("srgnn", "model to train", MODELS)
    dim: int = option(100, "hidden size d")
    steps: int = option(1, "gated-GNN propagation steps")
    readout: str = option("none", "attention weights: SR-GNN's raw scores or a masked softmax", READOUTS)
    tau: float = option(0.1, "weight of the alignment + uniformity loss (0 switches it off)")
    reduce_views: str = option(
        "mean", "combine the two views' AU losses (paper: mean, code: sum)", REDUCE_VIEWS
    )
    concat_order: str = option(
        "paper", "fusion input order: [local; global] (paper) or reversed", CONCAT_ORDERS
    )
    uniformity_t: float = option(2.0, "temperature t of the uniformity loss")
    intents: str | None = option(None, "stage-1 output folder (llm4sbr infer-intents); needed by llm4sbr")
    # optimisation
    lr: float = option(1e-3, "Adam learning rate")
    l2: float = option(1e-5, "Adam weight decay")
    lr_step: int = option(3, "epochs between learning-rate decays")
    lr_gamma: float = option(0.1, "learning-rate decay factor")
    batch_size: int = option(100, "training batch size (global, across processes)")
    eval_batch_size: int = option(500, "evaluation batch size")
    epochs: int = option(30, "maximum training epochs")
    patience: int = option(5, "stop after this many epochs without a better validation score")
    select_metric: str = option("mrr@20", "validation metric that selects the epoch (hit@K, mrr@K, ndcg@K)")
    seed: int = option(0, "seed of initialisation, shuffling and the validation carve")
    # runtime
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    bf16: bool = option(
        False,
        "bf16 autocast for the dense layers and the scoring head (the graph ops stay fp32); "
        "faster on GPUs and on CPUs with AVX512-BF16 or AMX, many times slower on other CPUs",
    )
    num_workers: int = option(
        0, "data-loader worker processes; on the CPU packed path they also build the session graphs"
    )
    threads: int | None = option(None, "torch CPU threads (None: torch's choice)")

    def __post_init__(self) -> None:
        checks = {
            "model": (self.model in MODELS, f"one of {MODELS}"),
            "readout": (self.readout in READOUTS, f"one of {READOUTS}"),
            "reduce_views": (self.reduce_views in REDUCE_VIEWS, f"one of {REDUCE_VIEWS}"),
            "concat_order": (self.concat_order in CONCAT_ORDERS, f"one of {CONCAT_ORDERS}"),
            "valid_fraction": (0.0 < self.valid_fraction < 1.0, "in (0, 1)"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "patience": (self.patience >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "eval_batch_size": (self.eval_batch_size >= 1, ">= 1"),
            "dim": (self.dim >= 1, ">= 1"),
            "steps": (self.steps >= 1, ">= 1"),
            "tau": (self.tau >= 0, ">= 0"),
            "uniformity_t": (self.uniformity_t > 0, "> 0"),
            "lr": (self.lr > 0, "> 0"),
            "l2": (self.l2 >= 0, ">= 0"),
            "lr_step": (self.lr_step >= 1, ">= 1"),
            "lr_gamma": (0 < self.lr_gamma <= 1, "in (0, 1]"),
            "max_len": (self.max_len is None or self.max_len >= 1, "None or >= 1"),
            "num_workers": (self.num_workers >= 0, ">= 0"),
            "threads": (self.threads is None or self.threads >= 1, "None or >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"config {name} must be {expected}, got {getattr(self, name)!r}")
        metric, _, k = self.select_metric.partition("@")
        if metric not in METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(
                f"select_metric must be hit@K, mrr@K or ndcg@K with K >= 1, got {self.select_metric!r}"
            )


@dataclass
class PredictorConfig:
    """Training settings of the intent predictor (:mod:`llm4sbr.intent.predictor`)."""

    dim: int | None = option(
        None, "item vector size; None takes the LLM4SBR model's and starts from its embeddings"
    )
    item_cache: bool = option(True, "add the per-item intent table to the learned prediction")
    epochs: int = option(30, "maximum epochs")
    patience: int = option(3, "stop after this many epochs without a lower validation MSE")
    batch_size: int = option(256, "training batch size")
    lr: float = option(1e-3, "Adam learning rate")
    l2: float = option(0.0, "Adam weight decay")
    seed: int = option(0, "seed of initialisation and shuffling")

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"predictor {name} must be >= 1, got {getattr(self, name)}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"predictor dim must be None or >= 1, got {self.dim}")
        if self.lr <= 0 or self.l2 < 0:
            raise ValueError(f"predictor lr must be > 0 and l2 >= 0, got {self.lr} and {self.l2}")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a simple annotation (int, float, bool, str, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not (
        isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
    ):
        raise ValueError(f"config {name} must be {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(fields)}")
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def load_yaml(cls: type[C], path: str | Path, overrides: dict[str, Any] | None = None) -> C:
    """Read ``cls`` from a YAML mapping at ``path``, then apply ``overrides`` (e.g. CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a YAML mapping of config keys")
    return from_dict(cls, {**values, **(overrides or {})})
