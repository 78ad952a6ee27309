"""Loaders: RecBole atomic files, CSV, SR-GNN pickles, and ``load_dataset`` source resolution."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import llm4sbr.data.loaders as loaders
import llm4sbr.data.sources as sources
from llm4sbr.data import (
    dataset_from_srgnn_pickles,
    load_dataset,
    read_csv_interactions,
    read_recbole_inter,
    read_recbole_items,
    read_srgnn_pickle,
    write_srgnn_pickle,
)
from llm4sbr.data.loaders import _session_groups


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_inter_columns_found_by_name(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "toy.inter",
        [
            "item_id:token\ttimestamp:float\trating:float\tuser_id:token",
            "10\t5.5\t3\t7",
            "11\t1\t4\t8",
        ],
    )
    inter = read_recbole_inter(path)
    assert inter.session.tolist() == ["7", "8"]
    assert inter.item.tolist() == ["10", "11"]
    assert inter.timestamp.tolist() == [5.5, 1.0]
    assert inter.row.tolist() == [0, 1]
    assert inter.name == "toy"


def test_inter_prefers_session_id(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.inter",
        ["user_id:token\tsession_id:token\titem_id:token\ttimestamp:float", "u\ts1\ti\t0"],
    )
    assert read_recbole_inter(path).session.tolist() == ["s1"]


@pytest.mark.parametrize("missing", ["item_id", "timestamp", "user_id"])
def test_inter_missing_column(tmp_path: Path, missing: str) -> None:
    columns = [c for c in ("user_id:token", "item_id:token", "timestamp:float") if not c.startswith(missing)]
    path = write_lines(tmp_path / "bad.inter", ["\t".join(columns), "\t".join("1" * len(columns))])
    with pytest.raises(ValueError, match=rf"bad\.inter.*{missing}"):
        read_recbole_inter(path)


def test_missing_files(tmp_path: Path) -> None:
    for reader in (read_recbole_inter, read_recbole_items, read_csv_interactions, read_srgnn_pickle):
        with pytest.raises(FileNotFoundError, match="nope"):
            reader(tmp_path / "nope")


def test_movielens_item_names(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "ml.item",
        [
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
            "1\tToy Story\t1995\tAnimation Children's Comedy",
            "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's",
            "5\tHeat (1995)\t1995\tAction",
            "267\tunkonwn\tunkonwn\tunknown",
            "9\tNo Genre\t2001\t",
        ],
    )
    assert read_recbole_items(path) == {
        "1": "Toy Story (1995) -- Animation|Children's|Comedy",
        "1412": "Land Before Time III: The Time of the Great Giving (1995) -- Animation|Children's",
        "5": "Heat (1995) -- Action",
        "267": "unkonwn -- unknown",
        "9": "No Genre (2001)",
    }


def test_other_item_files(tmp_path: Path) -> None:
    titled = write_lines(
        tmp_path / "a.item", ["item_id:token\tprice:float\ttitle:token_seq", "x\t1\tLipstick Red"]
    )
    assert read_recbole_items(titled) == {"x": "Lipstick Red"}
    named = write_lines(tmp_path / "b.item", ["name:token_seq\titem_id:token", "Soap\ty"])
    assert read_recbole_items(named) == {"y": "Soap"}
    untitled = write_lines(tmp_path / "c.item", ["item_id:token\tprice:float", "z\t2"])
    assert read_recbole_items(untitled) == {"z": ""}


def test_csv(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "clicks.csv", ["extra,timestamp,item_id,session_id", "q,2.5,a,s1", "r,1,b,s2"]
    )
    inter = read_csv_interactions(path)
    assert inter.session.tolist() == ["s1", "s2"]
    assert inter.item.tolist() == ["a", "b"]
    assert inter.timestamp.tolist() == [2.5, 1.0]
    bad = write_lines(tmp_path / "bad.csv", ["session_id,item_id", "s,a"])
    with pytest.raises(ValueError, match=r"bad\.csv.*timestamp"):
        read_csv_interactions(bad)
    text_time = write_lines(tmp_path / "t.csv", ["session_id,item_id,timestamp", "s,a,2020-01-01"])
    with pytest.raises(ValueError, match="timestamps must be numbers"):
        read_csv_interactions(text_time)
    short_row = write_lines(tmp_path / "s.csv", ["session_id,item_id,timestamp", "s,a,1", "s,b"])
    with pytest.raises(ValueError, match="row 2 has 2 fields"):
        read_csv_interactions(short_row)


def test_srgnn_pickle_round_trip_and_format(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    write_srgnn_pickle(path, [[1, 2], [1]], [3, 2])
    with open(path, "rb") as handle:
        assert pickle.load(handle) == ([[1, 2], [1]], [3, 2])
    assert read_srgnn_pickle(path) == ([[1, 2], [1]], [3, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]
    with pytest.raises(ValueError, match="targets"):
        write_srgnn_pickle(path, [[1]], [])
    with open(tmp_path / "odd.txt", "wb") as handle:
        pickle.dump({"not": "a pair"}, handle)
    with pytest.raises(ValueError, match="sequences, targets"):
        read_srgnn_pickle(tmp_path / "odd.txt")


def test_srgnn_pickle_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "test.txt"
    write_srgnn_pickle(path, [[1]], [2])

    def crash(obj: object, handle: object) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(loaders.pickle, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        write_srgnn_pickle(path, [[5, 6]], [7])
    monkeypatch.undo()
    assert read_srgnn_pickle(path) == ([[1]], [2])
    assert [p.name for p in tmp_path.iterdir()] == ["test.txt"]


def test_session_groups() -> None:
    # SR-GNN order (longest prefix first) for sessions [1,2,3,4], [5,6], [1,2,7]; then a length-2
    # session [1,2] followed by [1,2,9], whose first sample looks like an ascending step.
    descending = (
        [[1, 2, 3], [1, 2], [1], [5], [1, 2], [1], [1], [1, 2], [1]],
        [4, 3, 2, 6, 7, 2, 2, 9, 2],
    )
    assert _session_groups(*descending).tolist() == [0, 0, 0, 1, 2, 2, 3, 4, 4]
    ascending = ([[1], [1, 2], [1, 2, 3], [5], [1], [1, 2]], [2, 3, 4, 6, 2, 7])
    assert _session_groups(*ascending).tolist() == [0, 0, 0, 1, 2, 2]
    assert _session_groups([[1], [2]], [3, 4]).tolist() == [0, 1]


def test_dataset_from_srgnn_pickles(tmp_path: Path) -> None:
    sessions = [[1, 2, 3, 4], [2, 5, 6], [7, 1, 2], [3, 3, 4, 1], [5, 6, 2]]
    sequences, targets = [], []
    for session in sessions:  # SR-GNN's order: longest prefix first
        for cut in range(1, len(session)):
            sequences.append(session[:-cut])
            targets.append(session[-cut])
    write_srgnn_pickle(tmp_path / "train.txt", sequences, targets)
    write_srgnn_pickle(tmp_path / "test.txt", [[8, 1]], [2])
    dataset = dataset_from_srgnn_pickles(
        tmp_path / "train.txt", tmp_path / "test.txt", valid_fraction=0.4, seed=3
    )
    assert dataset.n_items == 8
    assert dataset.item_raw_ids == ["[PAD]", *map(str, range(1, 9))]
    train, valid, test = (dataset.splits[name] for name in ("train", "valid", "test"))
    assert test.sample_ids.tolist() == [len(targets)]
    assert test.prefix(0).tolist() == [8, 1] and test.targets.tolist() == [2]
    assert sorted(np.concatenate([train.sample_ids, valid.sample_ids]).tolist()) == list(range(len(targets)))
    groups = _session_groups(sequences, targets)
    valid_sessions = set(groups[valid.sample_ids].tolist())
    assert len(valid_sessions) == 2  # round(0.4 * 5)
    assert not valid_sessions & set(groups[train.sample_ids].tolist())
    for split in (train, valid):
        for i in range(len(split)):
            sample_id = split.sample_ids[i]
            assert split.prefix(i).tolist() == sequences[sample_id] and split.targets[i] == targets[sample_id]
    again = dataset_from_srgnn_pickles(
        tmp_path / "train.txt", tmp_path / "test.txt", valid_fraction=0.4, seed=3
    )
    assert np.array_equal(again.splits["valid"].sample_ids, valid.sample_ids)
    assert dataset.meta["samples"] == {"train": len(train), "valid": len(valid), "test": 1}


INTER_LINES = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    *[f"{user}\t{item}\t1\t{t}" for user in (1, 2) for t, item in enumerate((10, 11, 12))],
]


def test_load_dataset_paths(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    write_lines(folder / "toy.inter", INTER_LINES)
    write_lines(folder / "toy.item", ["item_id:token\ttitle:token_seq", "10\tTen"])
    dataset = load_dataset(folder, "leave-one-out")
    assert dataset.name == "toy"
    assert dataset.item_names == ["", "Ten", "", ""]
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 2, "valid": 0, "test": 2}
    assert load_dataset(folder / "toy.inter", "leave-one-out").meta == dataset.meta
    with pytest.raises(ValueError, match="preset"):
        load_dataset(folder)
    with pytest.raises(ValueError, match="unknown preset"):
        load_dataset(folder, "nope")
    with pytest.raises(TypeError, match="bucket_seconds"):
        load_dataset(folder, "leave-one-out", bucket_seconds=60)

    csv_path = write_lines(
        tmp_path / "c.csv", ["session_id,item_id,timestamp", *[f"s{t % 2},{t % 3},{t}" for t in range(12)]]
    )
    # The 12 clicks span 11 seconds: a 1-second test window leaves session s0 to train on.
    assert load_dataset(csv_path, min_item_count=1, test_days=1 / 86400).meta["preset"] == "srgnn"

    pickles = tmp_path / "pickles"
    pickles.mkdir()
    write_srgnn_pickle(pickles / "train.txt", [[1, 2], [1]], [3, 2])
    write_srgnn_pickle(pickles / "test.txt", [[2]], [1])
    assert load_dataset(pickles, valid_fraction=0.0).meta["samples"] == {"train": 2, "valid": 0, "test": 1}
    with pytest.raises(ValueError, match="SR-GNN pickles"):
        load_dataset(pickles, "srgnn")


def test_load_dataset_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="empty"):
        (tmp_path / "empty").mkdir()
        load_dataset(tmp_path / "empty", "movielens")
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_dataset("ml-100k")


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, llm4sbr.data; print(sorted({'numba', 'recbole'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
