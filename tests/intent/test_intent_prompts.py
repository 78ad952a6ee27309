"""Prompt text (paper section 2.2) and answer post-processing."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import MOVIE_NAMES

from llm4sbr.intent import build_prompt, postprocess_answer
from llm4sbr.intent.prompts import template_hash

NAMES = MOVIE_NAMES


def test_long_term_prompt_is_exact() -> None:
    prompt = build_prompt(NAMES, np.array([3, 1, 3]), "long")
    assert prompt == (
        "The order in which users click on items is as follows:\n"
        "1. Misery (1990) -- Horror_3\n"
        "2. Toy Story (1995) -- Animation|Children's|Comedy_1\n"
        "3. Misery (1990) -- Horror_3\n"
        "Please guess an item that the user is interested in in the long-term. "
        "(Only output the item name without any explanation.)"
    )


def test_short_term_prompt_differs_only_in_the_qualifier() -> None:
    prefix = np.array([2, 4])
    long, short = build_prompt(NAMES, prefix, "long"), build_prompt(NAMES, prefix, "short")
    assert short == long.replace("in the long-term.", "in the short-term.")
    assert short.splitlines()[-1] == (
        "Please guess an item that the user is interested in in the short-term. "
        "(Only output the item name without any explanation.)"
    )


def test_max_items_keeps_the_most_recent_clicks_renumbered() -> None:
    prompt = build_prompt(NAMES, np.array([1, 2, 3, 4]), "short", max_items=2)
    assert prompt.splitlines()[1:3] == [
        "1. Misery (1990) -- Horror_3",
        "2. Heat (1995) -- Action|Crime|Thriller_4",
    ]
    assert build_prompt(NAMES, np.array([1, 2]), "long", max_items=5) == build_prompt(
        NAMES, np.array([1, 2]), "long"
    )


@pytest.mark.parametrize(
    ("prefix", "view", "max_items"),
    [(np.array([1]), "medium", None), (np.array([], np.int64), "long", None), (np.array([1]), "long", 0)],
)
def test_invalid_prompt_arguments_raise(prefix: np.ndarray, view: str, max_items: int | None) -> None:
    with pytest.raises(ValueError):
        build_prompt(NAMES, prefix, view, max_items)


def test_template_hash_is_stable() -> None:
    assert template_hash() == template_hash()
    assert len(template_hash()) == 16


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Heat (1995) -- Action|Crime|Thriller_4", "Heat (1995) -- Action|Crime|Thriller"),
        ("1. Misery (1990) -- Horror_3\n2. Heat_4", "Misery (1990) -- Horror"),
        ("\n\n  3) GoldenEye (1995)_2.  \nBecause...", "GoldenEye (1995)"),
        ('"Toy Story (1995)"', "Toy Story (1995)"),
        ("- **Heat (1995)_4**", "Heat (1995)"),
        ("Apollo 13 (1995)", "Apollo 13 (1995)"),
        ("2001: A Space Odyssey (1968)", "2001: A Space Odyssey (1968)"),
        ("Item_12_34", "Item_12"),
        ('The item is a movie called "Heat (1995) -- Action_4".', "Heat (1995) -- Action"),
        ('The user is interested in the item named "Dance with Wolves (199', "Dance with Wolves (199"),
        ('Answer: "Babe (1995)" and "Heat (1995)"', "Babe (1995)"),
        ('Fan 12" Oscillating_7', 'Fan 12" Oscillating'),
        ("", ""),
        ("   \n  ", ""),
    ],
)
def test_postprocess_answer(raw: str, expected: str) -> None:
    assert postprocess_answer(raw) == expected
