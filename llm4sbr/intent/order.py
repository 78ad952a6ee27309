"""The order in which stage 1 asks the LLM: consecutive prompts share long token prefixes.

An engine that keeps its KV cache between calls (llama.cpp here, vLLM's prefix cache on a
server) computes only the tokens after the prefix a prompt shares with the one before it. Sorted
lexicographically, the prompts of :mod:`llm4sbr.intent.prompts` line up like this:

* all of them start with the same chat header and instruction line;
* the augmented samples of one session (its prefixes [a], [a, b], [a, b, c], ...) share their
  earlier clicks, and the sort puts them next to each other, longest first (an item line's
  number sorts before the "Please" of the task line);
* the two views of a sample differ only in the word ``long``/``short`` of the last line, so they
  are adjacent and the second one costs the end of the task line.

The chat template adds the same text before and after every prompt and no prompt is a prefix
of another (each ends with the task line), so sorting the prompts sorts their templated text.

Sorted order alone would make a progress bar lie: rates change along the run (a long session's
first prompt costs hundreds of tokens, its other samples a few dozen; sessions that start with
the same item cluster). So the sorted list is cut into groups (runs of prompts that share the
header and their whole first item line: a session's samples, with those of other sessions that
start with the same item) and the groups are
visited in a seeded random order: the first minutes of a run are a sample of the whole run and
its rate predicts the rest. Only what consecutive groups would have shared beyond the header is
lost (the header stays shared: every prompt starts with it).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

ORDER_SEED = 0


def common_prefix_length(a: str, b: str) -> int:
    """Number of leading characters ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return len(os.path.commonprefix([a, b]))


def prefix_groups(prompts: Sequence[str]) -> list[list[int]]:
    """Indices of ``prompts`` sorted lexicographically, cut into groups: a group starts where a
    prompt does not share its first two lines (the header and the first item) and the newline
    after them with the prompt before it in sorted order."""
    order = sorted(range(len(prompts)), key=prompts.__getitem__)
    groups: list[list[int]] = []
    previous = None
    for i in order:
        prompt = prompts[i]
        if previous is not None:
            second_newline = prompt.find("\n", prompt.find("\n") + 1)
            boundary = second_newline if second_newline >= 0 else len(prompt)
            if common_prefix_length(previous, prompt) > boundary:
                groups[-1].append(i)
                previous = prompt
                continue
        groups.append([i])
        previous = prompt
    return groups


def prefix_order(prompts: Sequence[str], seed: int | None = ORDER_SEED) -> list[int]:
    """A permutation of ``range(len(prompts))``: the :func:`prefix_groups`, each in sorted order,
    the groups shuffled with ``seed`` (None keeps the fully sorted order)."""
    groups = prefix_groups(prompts)
    if seed is not None:
        random.Random(seed).shuffle(groups)
    return [i for group in groups for i in group]


def length_order(prompts: Sequence[str]) -> list[int]:
    """Longest first, prompts that differ only in their last line (the views of one sample)
    adjacent: what a padded-batch engine (transformers) wants."""
    stems = [p.rsplit("\n", 1)[0] for p in prompts]
    return sorted(range(len(prompts)), key=lambda i: (-len(stems[i]), stems[i], prompts[i]))


def order_prompts(prompts: Sequence[str], kind: str = "prefix") -> list[int]:
    """The processing order of ``prompts`` for an engine that wants ``kind`` ("prefix" or
    "length")."""
    if kind == "prefix":
        return prefix_order(prompts)
    if kind == "length":
        return length_order(prompts)
    raise ValueError(f"prompt order must be 'prefix' or 'length', got {kind!r}")
