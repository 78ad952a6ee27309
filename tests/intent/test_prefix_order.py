"""The order in which stage 1 asks the LLM (llm4sbr.intent.order): shared prefixes adjacent,
groups shuffled so the early rate predicts the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fakes import MOVIE_NAMES, RecordingBackend
from test_intent_pipeline import small_dataset

from llm4sbr.intent import IntentConfig, infer_intents
from llm4sbr.intent.order import common_prefix_length, length_order, prefix_groups, prefix_order
from llm4sbr.intent.prompts import VIEWS, build_prompt

SESSIONS = [[1, 2, 3, 4], [5, 1, 2], [3, 3, 5], [2, 4]]


def session_prompts(max_items: int | None = None) -> list[str]:
    """Every augmented sample (prefix) of SESSIONS, both views, in session order."""
    return [
        build_prompt(MOVIE_NAMES, np.array(s[:k]), view, max_items)
        for s in SESSIONS
        for k in range(1, len(s) + 1)
        for view in VIEWS
    ]


def recomputed_chars(prompts: list[str], order: list[int]) -> int:
    """Characters after the prefix each prompt shares with the one before it (a stand-in for the
    tokens an engine with KV-cache reuse computes)."""
    total, previous = 0, ""
    for i in order:
        total += len(prompts[i]) - common_prefix_length(previous, prompts[i])
        previous = prompts[i]
    return total


def test_sorted_order_puts_views_and_a_sessions_samples_next_to_each_other() -> None:
    prompts = session_prompts()
    order = prefix_order(prompts, seed=None)
    assert sorted(order) == list(range(len(prompts)))
    assert [prompts[i] for i in order] == sorted(prompts)
    ordered = [prompts[i] for i in order]
    for a, b in zip(ordered[::2], ordered[1::2], strict=True):  # the two views of one sample
        assert a.rsplit("\n", 1)[0] == b.rsplit("\n", 1)[0]
        assert "long-term" in a and "short-term" in b
    # Session [1, 2, 3, 4]: its samples longest first, each sharing all its clicks with the one before.
    first = [p for p in ordered if p.split("\n")[1].startswith("1. Toy Story")][::2]
    assert [len(p.splitlines()) - 2 for p in first] == [4, 3, 2, 1]
    shuffled = np.random.default_rng(0).permutation(len(prompts)).tolist()
    assert recomputed_chars(prompts, order) < 0.6 * recomputed_chars(prompts, shuffled)
    assert recomputed_chars(prompts, order) <= recomputed_chars(prompts, list(range(len(prompts))))


def test_the_chat_template_does_not_change_the_order() -> None:
    prompts = session_prompts()
    templated = [
        f"<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n" for p in prompts
    ]
    assert sorted(range(len(prompts)), key=templated.__getitem__) == prefix_order(prompts, seed=None)


def test_groups_hold_prompts_sharing_the_first_item_and_stay_whole_when_shuffled() -> None:
    prompts = session_prompts()
    groups = prefix_groups(prompts)
    # No two sessions start with the same item: one group per session, all its samples and views.
    assert sorted(len(g) for g in groups) == [4, 6, 6, 8]
    more = prompts + [build_prompt(MOVIE_NAMES, np.array([1, 5]), view) for view in VIEWS]
    assert sorted(len(g) for g in prefix_groups(more)) == [4, 6, 6, 10]  # [1, 5] joins [1, 2, 3, 4]
    for group in groups:
        for a, b in zip(group, group[1:], strict=False):
            assert common_prefix_length(prompts[a], prompts[b]) > prompts[b].find(
                "\n", prompts[b].find("\n") + 1
            )
    shuffled = prefix_order(prompts, seed=0)
    assert shuffled == prefix_order(prompts, seed=0)  # deterministic
    assert sorted(shuffled) == list(range(len(prompts)))
    position = {i: k for k, i in enumerate(shuffled)}
    for group in groups:
        assert [position[i] for i in group] == list(
            range(position[group[0]], position[group[0]] + len(group))
        )
    # Only what consecutive groups shared beyond the first item line is lost.
    assert recomputed_chars(prompts, shuffled) <= recomputed_chars(
        prompts, prefix_order(prompts, None)
    ) + sum(len(p.split("\n")[1]) for p in prompts)


def test_shuffled_groups_spread_long_and_short_work_over_the_run() -> None:
    rng = np.random.default_rng(0)
    sessions = [rng.integers(1, len(MOVIE_NAMES), size=int(rng.integers(1, 12))) for _ in range(300)]
    names = [""] + [f"Movie {i}" for i in range(1, len(MOVIE_NAMES))]
    prompts = list(
        dict.fromkeys(
            build_prompt(names, s[:k], view) for s in sessions for k in range(1, len(s) + 1) for view in VIEWS
        )
    )
    order = prefix_order(prompts)
    costs = []
    previous = ""
    for i in order:
        costs.append(len(prompts[i]) - common_prefix_length(previous, prompts[i]))
        previous = prompts[i]
    quarter = len(costs) // 4
    first, rest = np.mean(costs[:quarter]), np.mean(costs[quarter:])
    assert abs(first - rest) < 0.25 * rest  # the early rate predicts the rest


def test_length_order_keeps_the_views_of_a_sample_together_longest_first() -> None:
    prompts = session_prompts()
    ordered = [prompts[i] for i in length_order(prompts)]
    stems = [p.rsplit("\n", 1)[0] for p in ordered]
    assert [len(s) for s in stems] == sorted((len(s) for s in stems), reverse=True)
    assert all(a == b for a, b in zip(stems[::2], stems[1::2], strict=True))


def test_infer_intents_asks_in_prefix_order(tmp_path: Path) -> None:
    backend = RecordingBackend()
    config = IntentConfig(backend="fake", encoder="fake", batch_size=3)
    infer_intents(small_dataset(), config, tmp_path, progress=False, backend=backend)
    assert len(set(backend.seen)) == len(backend.seen) == 16
    # The order depends on the set of prompts only, not on the order they came in.
    reference = sorted(backend.seen)
    assert backend.seen == [reference[i] for i in prefix_order(reference)]
