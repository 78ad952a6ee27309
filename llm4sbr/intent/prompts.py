"""The multi-view prompts of LLM4SBR (docs/method.md §2.2).

A prompt is built from a sample's input prefix only (never its target)::

    The order in which users click on items is as follows:
    1. {name_1}_{id_1}
    ...
    N. {name_N}_{id_N}
    Please guess an item that the user is interested in in the long-term. (Only output ...)

where the last line is :data:`TASK` in full, on one line. The short-term view replaces
``long-term`` with ``short-term``. Ids are model ids (1..n_items).
``max_items`` shows only the most recent ``max_items`` clicks (the paper shows all of them): prefill
cost grows linearly with the number of items shown and dominates generation time on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

VIEWS: tuple[str, ...] = ("long", "short")
"""The two views, in the order of axis 1 of ``intents.npy``."""

HEADER = "The order in which users click on items is as follows:"
TASK = (
    "Please guess an item that the user is interested in in the {view}-term."
    " (Only output the item name without any explanation.)"
)


def render_item(name: str, item_id: int) -> str:
    """``{name}_{id}``, as in the paper's ``Misery (1990) -- Horror_316``."""
    return f"{name}_{int(item_id)}"


def build_prompt(
    item_names: Sequence[str], prefix: np.ndarray, view: str, max_items: int | None = None
) -> str:
    """The prompt for one sample and view.

    item_names: display names indexed by model id (index 0 is padding). prefix: [L] model ids,
    oldest click first. view: "long" or "short". max_items: keep only the last ``max_items``
    clicks (None keeps all). Returns the prompt without any chat template.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be None or >= 1, got {max_items}")
    shown = prefix if max_items is None else prefix[-max_items:]
    if len(shown) == 0:
        raise ValueError("a prompt needs a non-empty prefix")
    lines = [HEADER]
    lines += [f"{k}. {render_item(item_names[i], i)}" for k, i in enumerate(shown.tolist(), start=1)]
    lines.append(TASK.format(view=view))
    return "\n".join(lines)


def template_hash() -> str:
    """A short hash of the template text, recorded in ``meta.json`` so outputs of different
    template versions are never mixed up."""
    text = "\n".join([HEADER, "{k}. {name}_{id}", TASK])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
