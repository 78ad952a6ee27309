"""Answer cache: keys, atomic batch shards, corruption handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4sbr.atomic import atomic_writer
from llm4sbr.intent import AnswerCache, CacheCorruptionWarning, answer_key

SETTINGS = {"max_new_tokens": 32, "do_sample": False}


def test_key_depends_on_every_component() -> None:
    base = answer_key("m:1", "fp32", "prompt", SETTINGS)
    assert base == answer_key("m:1", "fp32", "prompt", dict(reversed(list(SETTINGS.items()))))
    variants = [
        answer_key("m:2", "fp32", "prompt", SETTINGS),
        answer_key("m:1", "4bit", "prompt", SETTINGS),
        answer_key("m:1", "fp32", "prompt ", SETTINGS),
        answer_key("m:1", "fp32", "prompt", {**SETTINGS, "max_new_tokens": 16}),
    ]
    assert len({base, *variants}) == 5
    assert len(base) == 64 and int(base, 16) >= 0


def test_batches_persist_one_shard_each(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    cache.put_many(["k1", "k2"], ["a1", "a2"])
    cache.put_many(["k3"], ["a3\nsecond line"])
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".json"]
    reloaded = AnswerCache(tmp_path)
    assert len(reloaded) == 3 and reloaded.corrupt == 0
    assert reloaded.get("k3") == "a3\nsecond line" and reloaded.get("missing") is None
    assert "k1" in reloaded


def test_later_shard_wins(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    cache.put_many(["k"], ["old"])
    cache.put_many(["k"], ["new"])
    assert AnswerCache(tmp_path).get("k") == "new"


def test_put_many_rejects_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 keys but 1 answers"):
        AnswerCache(tmp_path).put_many(["a", "b"], ["x"])


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_truncated_shard_is_reported_quarantined_and_dropped(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    good = cache.put_many(["k1"], ["a1"])
    bad = cache.put_many(["k2", "k3"], ["a2", "a3"])
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.warns(CacheCorruptionWarning, match="unreadable shard"):
        reloaded = AnswerCache(tmp_path)
    assert reloaded.corrupt == 1
    assert reloaded.get("k1") == "a1" and "k2" not in reloaded and "k3" not in reloaded
    assert bad.with_suffix(".corrupt").exists() and not bad.exists() and good.exists()


def test_tampered_entry_is_reported_and_dropped(tmp_path: Path) -> None:
    shard = AnswerCache(tmp_path).put_many(["k1", "k2"], ["a1", "a2"])
    doc = json.loads(shard.read_text())
    doc["entries"][1]["answer"] = "bit flip"
    shard.write_text(json.dumps(doc))
    with pytest.warns(CacheCorruptionWarning, match="fails its check"):
        reloaded = AnswerCache(tmp_path)
    assert reloaded.corrupt == 1 and reloaded.get("k1") == "a1" and "k2" not in reloaded


@pytest.mark.parametrize(
    "content", [b"", b"[1, 2]", b'{"format": 99, "entries": []}', b'{"format": 1, "entries": [{}]}']
)
def test_malformed_shards_are_corrupt(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "0001.json").write_bytes(content)
    with pytest.warns(CacheCorruptionWarning):
        assert len(AnswerCache(tmp_path)) == 0


def test_generation_stats_sum_the_shards_holding_the_keys(tmp_path: Path) -> None:
    cost = {"seconds": 2.0, "prompts": 2, "prompt_tokens": 100, "new_tokens": 10}
    cache = AnswerCache(tmp_path)
    cache.put_many(["k1", "k2"], ["a1", "a2"], cost)
    cache.put_many(["k3"], ["a3"], {**cost, "seconds": 1.0, "prompts": 1})
    cache.put_many(["k4"], ["a4"])  # written without stats
    for loaded in (cache, AnswerCache(tmp_path)):
        assert loaded.generation_stats(["k1", "k3", "k4", "k9"]) == {
            "seconds": 3.0, "prompts": 3.0, "prompt_tokens": 200.0, "new_tokens": 20.0,
            "shards": 2, "keys_without_stats": 2, "prefill_tokens": None,
        }  # fmt: skip
        assert loaded.generation_stats(["k2"])["shards"] == 1
        assert loaded.generation_stats([])["prompts"] == 0


def test_prefill_tokens_are_summed_where_shards_recorded_them(tmp_path: Path) -> None:
    cost = {"seconds": 1.0, "prompts": 2, "prompt_tokens": 100, "new_tokens": 10}
    cache = AnswerCache(tmp_path)
    cache.put_many(["k1", "k2"], ["a1", "a2"], {**cost, "prefill_tokens": 30})
    cache.put_many(["k3"], ["a3"], cost)  # an engine that does not count prefill
    for loaded in (cache, AnswerCache(tmp_path)):
        assert loaded.corrupt == 0
        assert loaded.generation_stats(["k1", "k3"])["prefill_tokens"] == 30.0
        assert loaded.generation_stats(["k3"])["prefill_tokens"] is None
