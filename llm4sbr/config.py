"""Typed configuration: one dataclass per job, loaded from YAML, overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


@dataclass
class TrainConfig:
    """Everything that defines a stage-2 training run (defaults: paper-spec 6)."""

    # data
    data: str = "ml-100k"
    preset: str | None = None
    valid_fraction: float = 0.1
    max_len: int | None = None
    # model
    model: str = "srgnn"
    dim: int = 100
    steps: int = 1
    readout: str = "none"
    tau: float = 0.1
    reduce_views: str = "mean"
    concat_order: str = "paper"
    uniformity_t: float = 2.0
    intents: str | None = None
    # optimisation
    lr: float = 1e-3
    l2: float = 1e-5
    lr_step: int = 3
    lr_gamma: float = 0.1
    batch_size: int = 100
    eval_batch_size: int = 500
    epochs: int = 30
    patience: int = 5
    select_metric: str = "mrr@20"
    seed: int = 0
    # runtime
    device: str = "auto"
    bf16: bool = False
    num_workers: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "model": (self.model in ("srgnn", "llm4sbr"), "'srgnn' or 'llm4sbr'"),
            "readout": (self.readout in ("none", "softmax"), "'none' or 'softmax'"),
            "reduce_views": (self.reduce_views in ("mean", "sum"), "'mean' or 'sum'"),
            "concat_order": (self.concat_order in ("paper", "code"), "'paper' or 'code'"),
            "valid_fraction": (0.0 < self.valid_fraction < 1.0, "in (0, 1)"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "patience": (self.patience >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "dim": (self.dim >= 1, ">= 1"),
            "steps": (self.steps >= 1, ">= 1"),
            "tau": (self.tau >= 0, ">= 0"),
            "max_len": (self.max_len is None or self.max_len >= 1, "None or >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"config {name} must be {expected}, got {getattr(self, name)!r}")
        metric, _, k = self.select_metric.partition("@")
        if metric not in ("hit", "mrr", "ndcg") or not k.isdigit():
            raise ValueError(f"select_metric must look like 'mrr@20', got {self.select_metric!r}")


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


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)
