"""The columnar readers and the array-based sessionizing give exactly what the ``csv``-module
reader and a plain ``np.lexsort`` give: the same ids, timestamps (bit for bit), key order,
duplicates and samples, whatever the block size, and the same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llm4sbr.data.columnar as columnar
from llm4sbr.data import Interactions, SampleSet, build_dataset, read_csv_interactions, read_recbole_inter
from llm4sbr.data.columnar import Encoded
from llm4sbr.data.dataset import gather_segments
from llm4sbr.data.loaders import _csv_rows, _inter_rows
from llm4sbr.data.presets import _sorted_clicks, key_rank
from llm4sbr.data.splits import session_samples

RNG = np.random.default_rng(7)


def odd_log(n: int = 3000) -> list[tuple[str, str, str]]:
    """Rows mixing every id and timestamp form the fast reader treats specially: leading zeros,
    16-digit and 20-character ids, non-ASCII ids, negative, decimal, exponent and over-2**53
    timestamps, spaces (kept), ties."""
    rows = []
    for k in range(n):
        s, i, t = int(RNG.integers(0, 300)), int(RNG.integers(0, 90)), int(RNG.integers(0, 10**7))
        session = [str(s), f"{s:05d}", f"u{s}", str(10**15 + s)][k % 4 if s % 3 else 0]
        item = [str(i), f"item-{i:03d}-long-name", f"é{i}", str(123456789012 + i)][i % 4]
        time = [
            str(t),
            f"{t}.25",
            f"-{t}",
            f"{t}e-2",
            f"{t}.123456789012345678",
            f" {t} ",
            "-0",
            str(t // 3600 * 3600),
        ][k % 8]
        rows.append((session, item, time))
    return rows


def write(path: Path, rows: list[tuple[str, ...]], header: str, sep: str, end: str = "\n") -> Path:
    lines = [header, *(sep.join(row) for row in rows)]
    path.write_bytes((end.join(lines) + end).encode("utf-8"))
    return path


def same_interactions(a: Interactions, b: Interactions) -> None:
    assert np.asarray(a.session).tolist() == np.asarray(b.session).tolist()
    assert np.asarray(a.item).tolist() == np.asarray(b.item).tolist()
    assert a.timestamp.tobytes() == b.timestamp.tobytes()
    assert a.row.tolist() == b.row.tolist() and a.name == b.name


@pytest.mark.parametrize("block", [64, 4096, columnar.BLOCK_BYTES])
def test_columnar_csv_and_inter_readers_match_the_csv_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(columnar, "BLOCK_BYTES", block)
    rows = odd_log()
    # Windows line ends, an extra column first, the key after the item, blank lines.
    csv_rows = [("x", item, session, time) for session, item, time in rows]
    csv_path = write(tmp_path / "log.csv", csv_rows, "extra,item_id,session_id,timestamp", ",", "\r\n")
    csv_path.write_bytes(csv_path.read_bytes().replace(b"\r\n", b"\r\n\r\n", 5) + b"\n\n")
    fast = read_csv_interactions(csv_path)
    assert isinstance(fast.session, Encoded) and isinstance(fast.item, Encoded)
    same_interactions(fast, _csv_rows(csv_path))
    inter = write(tmp_path / "log.inter", rows, "session_id:token\titem_id:token\ttimestamp:float", "\t")
    fast = read_recbole_inter(inter)
    assert isinstance(fast.session, Encoded)
    same_interactions(fast, _inter_rows(inter))


def test_files_that_need_the_csv_module_are_read_with_it(tmp_path: Path) -> None:
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('session_id,item_id,timestamp\n"s,1",a,1\ns2,"b ""x""",2\n', encoding="utf-8")
    loaded = read_csv_interactions(quoted)
    assert not isinstance(loaded.session, Encoded)
    assert loaded.session.tolist() == ["s,1", "s2"] and loaded.item.tolist() == ["a", 'b "x"']
    # Invalid UTF-8 in an .inter file is replaced, and ids that then read the same are one id.
    inter = tmp_path / "bytes.inter"
    inter.write_bytes(b"user_id:token\titem_id:token\ttimestamp:float\nu\ta\xff\t1\nu\ta\xfe\t2\nv\tb\t3\n")
    fast = read_recbole_inter(inter)
    same_interactions(fast, _inter_rows(inter))
    assert len(fast.item.values) == 2


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["s,a,1", "s,b"], r"data row 2 has 2 fields, expected at least 3"),
        (
            ["s,a,1", "s,b,x1"],
            r"timestamps must be numbers \(seconds\): could not convert string to float: 'x1'",
        ),
        (
            ["s,a,1", "s,b,inf", "s,c,nan"],
            r"column 'timestamp' has 2 NaN/inf value\(s\) in 3 rows "
            r"\(first at data rows 2 \('inf'\), 3 \('nan'\)\)",
        ),
        (
            ["s,a,1", ",b,2", "t,,3"],
            r"column 'session_id' is empty in 1 of 3 data rows \(first at data rows 2\)",
        ),
        ([], r"0 data rows after the header"),
    ],
)
def test_columnar_errors_match_the_csv_module(tmp_path: Path, lines: list[str], error: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(["session_id,item_id,timestamp", *lines]) + "\n", encoding="utf-8")
    for reader in (read_csv_interactions, _csv_rows):
        with pytest.raises(ValueError, match=error):
            reader(path)


def test_encoded_columns_act_like_the_arrays_they_encode() -> None:
    values = np.array(["7", "10", "007", "x"])
    codes = np.array([1, 0, 1, 2, 3], dtype=np.int32)
    column = Encoded(codes, values)
    plain = values[codes]
    assert column.tolist() == plain.tolist() and len(column) == 5
    assert np.asarray(column).tolist() == plain.tolist()
    assert column[np.array([False, True, False, True, True])].tolist() == ["7", "007", "x"]
    assert key_rank(column).tolist() == key_rank(plain).tolist()
    numeric = Encoded(np.array([2, 0, 1, 0], dtype=np.int32), np.array(["3", "20", "100"]), ordered=True)
    assert key_rank(numeric).tolist() == key_rank(np.asarray(numeric)).tolist() == [2, 0, 1, 0]


@pytest.mark.parametrize("file_order", [True, False])
def test_sorted_clicks_match_lexsort_and_keep_the_earliest_duplicate(file_order: bool) -> None:
    n = 5000
    key = RNG.integers(0, 60, n)
    timestamp = RNG.integers(0, 40, n).astype(np.float64)
    timestamp[RNG.random(n) < 0.05] = -0.0
    item = RNG.integers(0, 5, n)
    row = np.arange(n) if file_order else RNG.permutation(n) * 3
    interactions = Interactions(key.astype(str), item.astype(str), timestamp, row, "t")
    clicks, dropped = _sorted_clicks(interactions, key, item)
    order = np.lexsort((row, timestamp, key))
    seen, keep = set(), []
    for position in order:
        click = (key[position], item[position], timestamp[position])
        keep.append(click not in seen)
        seen.add(click)
    expected = order[np.array(keep)]
    assert dropped == n - len(expected)
    assert clicks.key.tolist() == key[expected].tolist()
    assert clicks.item.tolist() == item[expected].tolist()
    assert clicks.timestamp.tobytes() == timestamp[expected].tobytes()


def test_samples_and_subsets_do_not_depend_on_the_gather_chunk() -> None:
    n = 400
    rows = Interactions(
        RNG.integers(0, 40, n).astype(str), RNG.integers(0, 9, n).astype(str),
        np.sort(RNG.integers(0, 40 * 86400, n)).astype(np.float64), np.arange(n), "t",
    )  # fmt: skip
    test = build_dataset(rows, None, "leave-one-out", max_history=4).splits["train"]
    items = RNG.integers(1, 50, 200)
    offsets = np.array([0, 3, 4, 20, 21, 90, 200])
    sessions = np.array([0, 2, 3, 5])
    first, stop = np.array([0, 0, 1, 0, 5, 2]), np.array([2, 0, 15, 0, 60, 100])
    ids = np.arange(6) * 1000
    for history in (None, 4):
        small = session_samples(items, offsets, sessions, first, stop, ids, history, chunk=3)
        whole = session_samples(items, offsets, sessions, first, stop, ids, history)
        for a, b in zip(
            (small.offsets, small.items, small.targets, small.sample_ids),
            (whole.offsets, whole.items, whole.targets, whole.sample_ids),
            strict=True,
        ):
            assert a.tolist() == b.tolist()
        assert whole.prefix(0).tolist() == items[:1].tolist() and whole.targets[0] == items[1]
        assert whole.sample_ids[:3].tolist() == [0, 1, 2000]
    index = RNG.permutation(len(test))[: len(test) // 2]
    loop = SampleSet.from_lists([test.prefix(i) for i in index], test.targets[index], test.sample_ids[index])
    for chunk in (1, 7, 1 << 20):
        offsets_, prefixes = gather_segments(
            test.items, test.offsets[:-1][index], test.offsets[1:][index], chunk
        )
        assert offsets_.tolist() == loop.offsets.tolist() and prefixes.tolist() == loop.items.tolist()
    assert test.subset(index).items.tolist() == loop.items.tolist()
