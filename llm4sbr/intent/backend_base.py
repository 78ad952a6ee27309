"""What every LLM engine of stage 1 provides, and the helpers they share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Backend(Protocol):
    """What the intent pipeline needs from an LLM.

    ``identity`` and ``precision`` name the model exactly (engine and quantisation included);
    ``settings`` holds every generation setting that can change an answer. All three enter the
    cache key. ``stats`` counts prompts, prompt tokens (each prompt's full length), new tokens,
    ``generate`` calls and generation seconds, and, where the engine knows it, ``prefill_tokens``:
    the prompt tokens it actually computed (fewer where a shared prefix's KV cache was reused).

    Optional: ``stream(prompts)`` yields ``(index, answer)`` pairs as answers arrive, in any
    order, so the caller caches each one at once; ``prompt_order`` ("prefix" or "length") says
    how the caller should order the prompts (:mod:`llm4sbr.intent.order`; default "prefix").
    """

    identity: str
    precision: str
    settings: dict[str, Any]
    stats: dict[str, float]

    def generate(self, prompts: list[str]) -> list[str]:
        """One raw answer per prompt, in order."""
        ...


def new_stats(prefill: bool = True) -> dict[str, float]:
    """Zeroed counters of a backend (``prefill_tokens`` only where the engine can count it)."""
    stats = {"prompts": 0, "prompt_tokens": 0, "new_tokens": 0, "seconds": 0.0, "calls": 0}
    if prefill:
        stats["prefill_tokens"] = 0
    return stats


def generation_settings(
    max_new_tokens: int,
    do_sample: bool,
    top_p: float,
    seed: int,
    stop_at_newline: bool,
    chat_template: bool | str,
    answers: str | None = None,
) -> dict[str, Any]:
    """The ``settings`` of a backend: what can change an answer, hence what enters the cache key.
    Greedy decoding leaves ``top_p`` and ``seed`` out, so they do not split the cache; ``answers``
    (:func:`llm4sbr.intent.constrain.catalog_tag` of constrained answers) is left out when None,
    so unconstrained keys are what they were before the option existed."""
    settings: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "stop_at_newline": stop_at_newline,
        "chat_template": chat_template,
    }
    if do_sample:
        settings.update(top_p=top_p, seed=seed)
    if answers is not None:
        settings["answers"] = answers
    return settings


def first_line(text: str) -> str:
    """``text`` up to the end of its first non-empty line (without that newline): what an
    answer stopped at the first line keeps. Text without such a line is returned unchanged."""
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    return text if end < 0 else text[:end]


def batched_stream(backend: Backend, prompts: list[str], batch_size: int) -> Iterator[tuple[int, str]]:
    """``(index, answer)`` for ``prompts``: the backend's own ``stream`` when it has one,
    otherwise its ``generate`` on consecutive batches of ``batch_size``."""
    stream = getattr(backend, "stream", None)
    if stream is not None:
        yield from stream(prompts)
        return
    for start in range(0, len(prompts), batch_size):
        answers = backend.generate(prompts[start : start + batch_size])
        yield from enumerate(answers, start)
