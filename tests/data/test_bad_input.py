"""Bad input is refused at load time with a ValueError that says what is wrong (the bad-input
catalogue): crafted SR-GNN pickles, NaN timestamps, header-only logs, logs whose sessions all
have one click, filters that leave nothing, exact duplicate rows."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from llm4sbr.data import (
    PRESETS,
    Interactions,
    build_dataset,
    dataset_from_srgnn_pickles,
    load_dataset,
    read_csv_interactions,
    read_recbole_inter,
    read_srgnn_pickle,
    write_srgnn_pickle,
)

DAY = 86400.0
# Options under which GOOD_ROWS survive every preset's filters with samples in every split.
LENIENT = {
    "movielens": {"min_item_count": 1, "train_fraction": 0.5},
    "amazon": {"k_core": 0, "train_fraction": 0.5},
    "srgnn": {"min_item_count": 1, "test_days": 1.0},
    "leave-one-out": {},
}


def good_rows() -> list[tuple[str, str, float]]:
    """Six users, five clicks each a minute apart, two days between users; items cycle over 4."""
    return [
        (f"u{user}", f"i{(user + t) % 4}", 2 * DAY * user + 60.0 * t) for user in range(6) for t in range(5)
    ]


def write_csv(path: Path, rows: list[tuple[object, object, object]]) -> Path:
    lines = ["session_id,item_id,timestamp", *(f"{s},{i},{t}" for s, i, t in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clicks(rows: list[tuple[object, str, float]], name: str = "toy") -> Interactions:
    return Interactions(
        session=np.array([str(s) for s, _, _ in rows]),
        item=np.array([i for _, i, _ in rows]),
        timestamp=np.array([t for _, _, t in rows], dtype=np.float64),
        row=np.arange(len(rows), dtype=np.int64),
        name=name,
    )


def signature(dataset) -> tuple:
    splits = {
        name: (s.offsets.tolist(), s.items.tolist(), s.targets.tolist(), s.sample_ids.tolist())
        for name, s in dataset.splits.items()
    }
    return dataset.n_items, dataset.item_raw_ids, splits, json.dumps(dataset.meta, sort_keys=True)


# 1. SR-GNN pickles cannot run code -------------------------------------------------------------


class ShellPayload:
    """Unpickles to ``os.system("touch <target>")``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch '{self.target}'",)


class ExecPayload:
    """Unpickles to ``exec(...)`` of code that writes ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return exec, (f"open({str(self.target)!r}, 'w').write('pwned')",)


def crafted_folder(tmp_path: Path, payload: object, where: str) -> Path:
    folder = tmp_path / "srgnn"
    folder.mkdir()
    write_srgnn_pickle(folder / "test.txt", [[1]], [2])
    data = payload if where == "whole" else ([[1, 2]], [payload])
    (folder / "train.txt").write_bytes(pickle.dumps(data))
    return folder


@pytest.mark.parametrize("entry", ["read_srgnn_pickle", "dataset_from_srgnn_pickles", "load_dataset"])
@pytest.mark.parametrize(
    ("payload", "refused"), [(ShellPayload, r"(posix|nt|os)\.system"), (ExecPayload, r"builtins\.exec")]
)
@pytest.mark.parametrize("where", ["whole", "inside the pair"])
def test_crafted_srgnn_pickle_is_refused_before_it_runs(
    tmp_path: Path, entry: str, payload: type, refused: str, where: str
) -> None:
    target = tmp_path / "pwned"
    folder = crafted_folder(tmp_path, payload(target), where)
    calls = {
        "read_srgnn_pickle": lambda: read_srgnn_pickle(folder / "train.txt"),
        "dataset_from_srgnn_pickles": lambda: dataset_from_srgnn_pickles(
            folder / "train.txt", folder / "test.txt"
        ),
        "load_dataset": lambda: load_dataset(folder),
    }
    with pytest.raises(ValueError, match=rf"train\.txt: refused to load the global {refused}"):
        calls[entry]()
    assert not target.exists(), "the pickle's payload ran"


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_srgnn_pickle_with_numpy_integers_loads_as_ints(tmp_path: Path, protocol: int) -> None:
    data = ([[np.int64(1), np.int32(2)], (np.uint16(3),)], [np.int64(4), np.int8(1)])
    (tmp_path / "train.txt").write_bytes(pickle.dumps(data, protocol=protocol))
    sequences, targets = read_srgnn_pickle(tmp_path / "train.txt")
    assert (sequences, targets) == ([[1, 2], [3]], [4, 1])
    assert all(type(v) is int for v in [*sequences[0], *sequences[1], *targets])


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (np.array([1, 2]), r"numpy\.(_core|core)\.multiarray\._reconstruct"),
        (np.float64(1.5), r"numpy\.dtype\('f8'\)"),
        ({1, 2}, None),  # protocol 5 pickles sets natively: refused as content, not as a global
    ],
)
def test_srgnn_pickle_refuses_other_numpy_objects(tmp_path: Path, payload: object, refused: str) -> None:
    (tmp_path / "train.txt").write_bytes(pickle.dumps(([[1, 2]], [payload])))
    with pytest.raises(
        ValueError,
        match=rf"train\.txt: {'refused to load the global ' + refused if refused else 'targets holds'}",
    ):
        read_srgnn_pickle(tmp_path / "train.txt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", r"not a readable pickle"),
        (pickle.dumps(([[1, 2]], [3]))[:-5], r"not a readable pickle"),
        (pickle.dumps(([[1, 2]], [3.5])), r"targets holds 3\.5 \(float\); item ids must be integers"),
        (pickle.dumps(([[1, "2"]], [3])), r"sequence 0 holds '2' \(str\)"),
        (pickle.dumps(([[1], []], [3, 4])), r"sequence 1 is empty"),
        (pickle.dumps(([[1], 7], [3, 4])), r"sequence 1 must be a list of integer item ids, got int"),
        (pickle.dumps(([[True]], [3])), r"sequence 0 holds True \(bool\)"),
        (pickle.dumps(([[1]], [3, 4])), r"expected a pickled \(sequences, targets\) pair"),
    ],
)
def test_malformed_srgnn_pickles_name_the_file_and_problem(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "train.txt").write_bytes(content)
    with pytest.raises(ValueError, match=rf"train\.txt: .*{message}"):
        read_srgnn_pickle(tmp_path / "train.txt")


def test_srgnn_pickle_of_shared_lists_is_not_expanded(tmp_path: Path) -> None:
    shared = list(range(1, 1001))
    (tmp_path / "train.txt").write_bytes(pickle.dumps(([shared] * 5000, [1] * 5000)))
    with pytest.raises(
        ValueError, match=r"train\.txt: its 5000 sequences hold 5000000 item ids in \d+ bytes"
    ):
        read_srgnn_pickle(tmp_path / "train.txt")


def test_srgnn_pickle_folder_problems_name_the_file(tmp_path: Path) -> None:
    write_srgnn_pickle(tmp_path / "train.txt", [], [])
    write_srgnn_pickle(tmp_path / "test.txt", [[1]], [2])
    with pytest.raises(ValueError, match=r"train\.txt: holds 0 samples"):
        load_dataset(tmp_path)
    write_srgnn_pickle(tmp_path / "train.txt", [[1]], [2])
    write_srgnn_pickle(tmp_path / "test.txt", [[0]], [2])
    with pytest.raises(
        ValueError, match=r"test\.txt: SR-GNN item ids must be >= 1 \(0 is padding\), found 0"
    ):
        load_dataset(tmp_path)
    # One train session, and a valid_fraction that rounds it into valid: nothing left to train on.
    write_srgnn_pickle(tmp_path / "test.txt", [[1]], [2])
    with pytest.raises(
        ValueError, match=r"train\.txt: no train samples left: the validation carve took all 1"
    ):
        load_dataset(tmp_path, valid_fraction=0.6)
    with pytest.warns(UserWarning, match=r"valid split is empty: round\(valid_fraction=0\.1 \* 1 train"):
        dataset = load_dataset(tmp_path)
    assert dataset.report["empty_splits"] == {"valid": "round(valid_fraction=0.1 * 1 train sessions) = 0"}


# 2. NaN / infinite timestamps ------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_nan_timestamps_are_refused_by_every_preset(tmp_path: Path, preset: str) -> None:
    rows = good_rows()
    rows[3] = (rows[3][0], rows[3][1], "nan")
    rows[7] = (rows[7][0], rows[7][1], "-inf")
    path = write_csv(tmp_path / "clicks.csv", rows)
    pattern = (
        r"clicks\.csv: column 'timestamp' has 2 NaN/inf value\(s\) in 30 rows "
        r"\(first at data rows 4 \('nan'\), 8 \('-inf'\)\)"
    )
    with pytest.raises(ValueError, match=pattern):
        load_dataset(path, preset, **LENIENT[preset])
    # Interactions built in code are checked by the preset itself.
    values = [(s, i, float(t)) for s, i, t in rows]
    with pytest.raises(ValueError, match=r"toy: column 'timestamp' has 2 NaN/inf .*rows 4 \('nan'\), 8"):
        build_dataset(clicks(values), None, preset, **LENIENT[preset])


def test_nan_timestamps_in_recbole_files(tmp_path: Path) -> None:
    path = tmp_path / "t.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\ta\t1\n1\tb\tNaN\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.inter: column 'timestamp' has 1 NaN/inf .*rows 2 \('NaN'\)"):
        read_recbole_inter(path)


# 3. Logs that cannot make a sample say why -----------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_header_only_csv(tmp_path: Path, preset: str) -> None:
    path = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(ValueError, match=r"empty\.csv: 0 data rows after the header"):
        load_dataset(path, preset)
    (tmp_path / "blank.csv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank\.csv: empty file"):
        load_dataset(tmp_path / "blank.csv", preset)
    with pytest.raises(ValueError, match=r"0 rows \(clicks\)"):
        build_dataset(clicks([]), None, preset)


def test_header_only_inter(tmp_path: Path) -> None:
    path = tmp_path / "e.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"e\.inter: 0 data rows after the header"):
        load_dataset(path, "leave-one-out")


@pytest.mark.parametrize("preset", PRESETS)
def test_single_click_sessions(tmp_path: Path, preset: str) -> None:
    rows = [(f"s{k}", f"i{k % 2}", 3600.0 * k) for k in range(7)]
    path = write_csv(tmp_path / "single.csv", rows)
    with pytest.raises(
        ValueError,
        match=r"no sessions left to make samples: all 7 sessions .* have a single click; "
        r"sessions need >= 2 clicks to make a sample",
    ):
        load_dataset(path, preset, **LENIENT[preset])


def test_filters_that_drop_everything_say_how_much_each_dropped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", good_rows())
    # Each item is clicked 7 or 8 times in all, so min_item_count=9 drops every session.
    with pytest.raises(ValueError) as error:
        load_dataset(path, "movielens", min_item_count=9)
    message = str(error.value)
    assert "movielens preset on 'g': no sessions left" in message
    assert "30 rows -> 6 sessions by (session key, 600-second time bucket) (0 of a single click)" in message
    assert "sessions holding an item seen fewer than min_item_count=9 times: dropped 6 sessions" in message
    with pytest.raises(ValueError, match=r"k-core k_core=6 .*: dropped 6 sessions, 30 clicks, 4 items"):
        load_dataset(path, "amazon", k_core=6)
    with pytest.raises(ValueError, match=r"min_item_count=9 times, then sessions .*dropped 6 sessions"):
        load_dataset(path, "srgnn", min_item_count=9)


def test_srgnn_without_train_sessions_says_the_window_holds_them_all(tmp_path: Path) -> None:
    # A log whose timestamps span minutes: the default 7-day test window holds every session.
    rows = [(f"s{s}", f"i{(s + t) % 3}", 60.0 * (5 * s + t)) for s in range(4) for t in range(3)]
    with pytest.raises(
        ValueError,
        match=r"srgnn preset on 'short': no train samples: all 4 sessions left are dated within the "
        r"last test_days=7\.0 days .*span 0\.0104 days",
    ):
        load_dataset(write_csv(tmp_path / "short.csv", rows), "srgnn", min_item_count=1)


def test_srgnn_whose_test_items_are_unseen_says_so(tmp_path: Path) -> None:
    rows = [("a", "x", 0.0), ("a", "y", 1.0), ("b", "new", 9 * DAY), ("b", "newer", 9 * DAY + 1)]
    with pytest.raises(
        ValueError, match=r"no test samples: the 1 sessions dated within .* items seen in train"
    ):
        load_dataset(write_csv(tmp_path / "t.csv", rows), "srgnn", min_item_count=1)


def test_leave_one_out_without_test_users(tmp_path: Path) -> None:
    rows = [(f"u{u}", f"i{t}", float(t)) for u in range(3) for t in range(2)]
    with pytest.raises(ValueError, match=r"no test samples: no user has 3 or more clicks"):
        load_dataset(write_csv(tmp_path / "two.csv", rows), "leave-one-out")


def test_carve_that_takes_every_train_session(tmp_path: Path) -> None:
    rows = [(f"u{u}", f"i{t}", float(t)) for u in range(2) for t in range(3)]
    with pytest.raises(ValueError, match=r"no train samples: the validation carve took all 1 train sessions"):
        load_dataset(
            write_csv(tmp_path / "c.csv", rows), "amazon", k_core=0, train_fraction=0.5, valid_fraction=0.6
        )
    with pytest.raises(ValueError, match=r"no train samples: int\(2 sessions \* train_fraction=0\.1\) = 0"):
        load_dataset(write_csv(tmp_path / "c.csv", rows), "amazon", k_core=0, train_fraction=0.1)


def test_empty_valid_split_is_recorded_and_warned_unless_asked_for(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", good_rows())
    with pytest.warns(UserWarning, match=r"the valid split is empty: round\(valid_fraction=0\.1 \* 3 train"):
        dataset = load_dataset(path, "amazon", **LENIENT["amazon"])
    assert dataset.report["empty_splits"] == {"valid": "round(valid_fraction=0.1 * 3 train sessions) = 0"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asked = load_dataset(path, "amazon", valid_fraction=0.0, k_core=0, train_fraction=1.0)
    assert asked.report["empty_splits"] == {
        "valid": "valid_fraction=0",
        "test": "train_fraction=1 puts every session in train",
    }


def test_bad_ids_and_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", [("s", "a", 1), ("s", "", 2), ("", "b", 3)])
    with pytest.raises(
        ValueError, match=r"e\.csv: column 'session_id' is empty in 1 of 3 data rows \(first at data rows 3\)"
    ):
        read_csv_interactions(path)
    (tmp_path / "latin.csv").write_bytes(b"session_id,item_id,timestamp\ns,caf\xe9,1\n")
    with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8 text"):
        read_csv_interactions(tmp_path / "latin.csv")


def test_option_errors_come_before_data_errors() -> None:
    with pytest.raises(ValueError, match="valid_fraction"):
        build_dataset(clicks([]), None, "srgnn", valid_fraction=1.0)
    with pytest.raises(ValueError, match="train_fraction"):
        build_dataset(clicks([]), None, "amazon", train_fraction=0.0)
    with pytest.raises(ValueError, match="bucket_seconds must be > 0"):
        build_dataset(clicks(good_rows()), None, "movielens", bucket_seconds=0)


# 4. Exact duplicate rows -----------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_exact_duplicates_are_dropped_and_counted(tmp_path: Path, preset: str) -> None:
    rows = good_rows()
    clean = load_dataset(
        write_csv(tmp_path / "clean.csv", rows), preset, valid_fraction=0.0, **LENIENT[preset]
    )
    # Duplicate three rows: one right after itself, two at the end of the file.
    dirty_rows = rows[:5] + [rows[4]] + rows[5:] + [rows[0], rows[17]]
    dirty = load_dataset(
        write_csv(tmp_path / "clean.csv", dirty_rows), preset, valid_fraction=0.0, **LENIENT[preset]
    )
    assert signature(dirty) == signature(clean)
    assert dirty.report["rows"] == 33 and dirty.report["duplicates_dropped"] == 3
    assert clean.report["rows"] == 30 and clean.report["duplicates_dropped"] == 0
    # A re-click of the same item at another time is a click, not a duplicate.
    reclick = rows + [(rows[4][0], rows[4][1], rows[4][2] + 1.0)]
    again = load_dataset(
        write_csv(tmp_path / "clean.csv", reclick), preset, valid_fraction=0.0, **LENIENT[preset]
    )
    assert again.report["duplicates_dropped"] == 0 and again.meta["clicks"] == clean.meta["clicks"] + 1


def test_report_on_good_data_is_json_and_counts_each_filter(tmp_path: Path) -> None:
    rows = good_rows() + [("lonely", "i0", 5.0)]
    dataset = load_dataset(
        write_csv(tmp_path / "g.csv", rows), "srgnn", valid_fraction=0.0, **LENIENT["srgnn"]
    )
    report = json.loads(json.dumps(dataset.report))
    assert report["rows"] == 31 and report["duplicates_dropped"] == 0
    assert report["grouped"] == {
        "sessions": 7,
        "clicks": 31,
        "items": 4,
        "single_click_sessions": 1,
        "keyed_by": "session key",
    }
    assert report["filters"][0] == {
        "filter": "sessions of a single click",
        "sessions_dropped": 1,
        "clicks_dropped": 1,
        "items_dropped": 0,
    }
    assert report["kept"] == {"sessions": 6, "clicks": 30, "items": 4}
    assert report["kept"]["sessions"] == dataset.meta["sessions"]["total"]
    assert report["empty_splits"] == {"valid": "valid_fraction=0"}


def test_a_log_that_does_not_fit_memory_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import llm4sbr.data.columnar as columnar
    from llm4sbr.cli import main

    rows = [(f"s{k // 6}", str(k % 7 + 1), float(k)) for k in range(300)]
    path = write_csv(tmp_path / "big.csv", rows)
    need = 300 * columnar.PEAK_BYTES_PER_CLICK
    monkeypatch.setattr(columnar, "available_memory", lambda: need - 1)
    with pytest.raises(columnar.InsufficientMemoryError, match=r"big\.csv: 300 clicks need about .* GiB"):
        load_dataset(path, "amazon")
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "big.csv: 300 clicks need about" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(columnar, "available_memory", lambda: need)
    assert len(load_dataset(path, "amazon").splits["train"]) > 0


def test_available_memory_is_known_on_linux() -> None:
    import llm4sbr.data.columnar as columnar

    available = columnar.available_memory()
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo")
    assert available is not None and 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
