"""CSV item tables: ``load_dataset(log, items=table)``, the ``<log>.items.csv`` convention,
``TrainConfig.items`` through ``run_dataset``, and every refusal of a bad table."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm4sbr.config import TrainConfig
from llm4sbr.data import ITEM_TABLE_SUFFIX, load_dataset, read_csv_items, run_dataset

DAY = 86400.0
SRGNN = {"min_item_count": 1, "test_days": 1.0, "valid_fraction": 0.2}


def write_log(path: Path) -> Path:
    """Six sessions two days apart over items a, b, c, d (item z is never clicked)."""
    rows = [(f"s{s}", "abcd"[(s + k) % 4], 2 * DAY * s + 60.0 * k) for s in range(6) for k in range(4)]
    path.write_text("session_id,item_id,timestamp\n" + "".join(f"{s},{i},{t}\n" for s, i, t in rows))
    return path


def write_table(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TABLE = 'item_id,price,title\na,1,Lipstick Red\nb,2,"Soap, lavender"\nc,3,\nz,4,Never clicked\n\n'


def test_titles_become_item_names_and_the_report_counts_the_table(tmp_path: Path) -> None:
    log = write_log(tmp_path / "clicks.csv")
    table = write_table(tmp_path / "catalog.csv", TABLE)
    dataset = load_dataset(log, items=table, **SRGNN)
    names = dict(zip(dataset.item_raw_ids, dataset.item_names, strict=True))
    assert names == {"[PAD]": "", "a": "Lipstick Red", "b": "Soap, lavender", "c": "", "d": ""}
    assert dataset.report["item_table"] == {
        "source": str(table),
        "rows": 4,
        "named_items": 2,
        "unused_rows": 1,  # z is not in the log
    }
    # The samples do not depend on the table.
    plain = load_dataset(log, **SRGNN)
    assert plain.item_names == [""] * (plain.n_items + 1) and "item_table" not in plain.report
    for name, split in plain.splits.items():
        assert split.items.tolist() == dataset.splits[name].items.tolist()


def test_a_table_next_to_the_log_is_used_unless_another_is_given(tmp_path: Path) -> None:
    log = write_log(tmp_path / "clicks.csv")
    write_table(tmp_path / f"clicks{ITEM_TABLE_SUFFIX}", "item_id,name\na, Alpha \nd,Delta\n")
    dataset = load_dataset(log, **SRGNN)
    names = dict(zip(dataset.item_raw_ids, dataset.item_names, strict=True))
    assert names["a"] == "Alpha" and names["d"] == "Delta" and names["b"] == ""
    other = write_table(tmp_path / "other.csv", "item_id,item_name\nb,Beta\n")
    given = load_dataset(log, items=other, **SRGNN)
    names = dict(zip(given.item_raw_ids, given.item_names, strict=True))
    assert names["b"] == "Beta" and names["a"] == ""


def test_train_config_items_reaches_run_dataset(tmp_path: Path) -> None:
    log = write_log(tmp_path / "clicks.csv")
    table = write_table(tmp_path / "catalog.csv", TABLE)
    config = TrainConfig(data=str(log), items=str(table), valid_fraction=0.5)
    dataset = run_dataset(config)
    assert "Lipstick Red" in dataset.item_names
    assert dataset.report["item_table"]["source"] == str(table)


def test_a_table_replaces_the_names_of_a_recbole_item_file(tmp_path: Path) -> None:
    inter = tmp_path / "toy.inter"
    inter.write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{t}\n" for u in (1, 2) for t, i in enumerate("abcd"))
    )
    (tmp_path / "toy.item").write_text("item_id:token\ttitle:token_seq\na\tFrom the item file\n")
    assert "From the item file" in load_dataset(inter, "leave-one-out").item_names
    table = write_table(tmp_path / "catalog.csv", "item_id,title\na,From the table\n")
    names = load_dataset(inter, "leave-one-out", items=table).item_names
    assert "From the table" in names and "From the item file" not in names


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", r"catalog\.csv: empty file, expected a header with item_id and a title column"),
        ("id,title\na,A\n", r"catalog\.csv: missing required column 'item_id' \(header: \['id', 'title'\]\)"),
        ("item_id,price\na,1\n", r"catalog\.csv: missing required column 'title' or 'name' or 'item_name'"),
        (
            "item_id,title\na,A\nb,B\na,Again\nb,B\n",
            r"catalog\.csv: 2 row\(s\) repeat an earlier item id; item ids must be unique "
            r"\(first: 'a' at data rows 1 and 3\)",
        ),
        ("item_id,title\na,A\n,B\n", r"catalog\.csv: column 'item_id' is empty in 1 of 2 data rows"),
        (
            "item_id,title\na," + "x" * 200_000 + "\n",
            r"catalog\.csv: not readable as CSV \(line 2\): field larger",
        ),
    ],
)
def test_bad_tables_are_refused_before_the_log_is_read(tmp_path: Path, text: str, error: str) -> None:
    log = write_log(tmp_path / "clicks.csv")
    table = write_table(tmp_path / "catalog.csv", text)
    with pytest.raises(ValueError, match=error):
        read_csv_items(table)
    with pytest.raises(ValueError, match=error):
        load_dataset(log, items=table, **SRGNN)
    # The table is checked first: a bad table is named even when the log is bad too.
    (tmp_path / "empty.csv").write_text("session_id,item_id,timestamp\n")
    with pytest.raises(ValueError, match=error):
        load_dataset(tmp_path / "empty.csv", items=table)


def test_missing_or_non_utf8_tables(tmp_path: Path) -> None:
    log = write_log(tmp_path / "clicks.csv")
    with pytest.raises(FileNotFoundError, match=r"no such item table: .*nope\.csv"):
        load_dataset(log, items=tmp_path / "nope.csv")
    (tmp_path / "latin.csv").write_bytes(b"item_id,title\na,caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8 text"):
        read_csv_items(tmp_path / "latin.csv")
    short = write_table(tmp_path / "short.csv", "item_id,price,title\na,1\nb,2,Bee\n")
    assert read_csv_items(short) == {"a": "", "b": "Bee"}
