"""Data: loaders, session presets, splits, batching and session-graph builders.

``import llm4sbr.data`` imports neither numba nor recbole: ``build_session_graph_numba`` loads
the numba module on first access, and MovieLens-100k is located inside the recbole wheel
without importing it.
"""

from __future__ import annotations

from typing import Any

from .batching import (
    EpochShuffleSampler,
    SampleDataset,
    collate_sessions,
    collate_sessions_with_graph,
    make_loader,
)
from .dataset import SampleSet, SessionDataset, dataset_fingerprint
from .graph import SessionGraph, build_session_graph
from .loaders import (
    Interactions,
    dataset_from_srgnn_pickles,
    read_csv_interactions,
    read_csv_items,
    read_recbole_inter,
    read_recbole_items,
    read_srgnn_pickle,
    write_srgnn_pickle,
)
from .presets import PRESET_OPTIONS, PRESETS, build_dataset
from .sources import BUILTIN_SOURCES, ITEM_TABLE_SUFFIX, load_dataset, recbole_ml100k_dir, run_dataset

__all__ = [
    "BUILTIN_SOURCES",
    "ITEM_TABLE_SUFFIX",
    "PRESETS",
    "PRESET_OPTIONS",
    "EpochShuffleSampler",
    "Interactions",
    "SampleDataset",
    "SampleSet",
    "SessionDataset",
    "SessionGraph",
    "build_dataset",
    "build_session_graph",
    "build_session_graph_numba",
    "collate_sessions",
    "collate_sessions_with_graph",
    "dataset_fingerprint",
    "dataset_from_srgnn_pickles",
    "load_dataset",
    "make_loader",
    "read_csv_interactions",
    "read_csv_items",
    "read_recbole_inter",
    "read_recbole_items",
    "read_srgnn_pickle",
    "recbole_ml100k_dir",
    "run_dataset",
    "write_srgnn_pickle",
]


def __getattr__(name: str) -> Any:
    if name == "build_session_graph_numba":
        from .graph_numba import build_session_graph_numba

        return build_session_graph_numba
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
