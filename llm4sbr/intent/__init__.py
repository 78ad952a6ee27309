"""Stage 1 of LLM4SBR: multi-view intent inference (paper section 2).

For every sample, a long-term and a short-term prompt built from its input prefix go to an LLM;
the answers are cached on disk, encoded by a local sentence encoder, localized onto the item
catalog and written as ``intents.npy`` [n_samples, 2, d_text] for stage 2. With an LLM budget
(:mod:`.budget`) only part of the train and valid samples go to the LLM and a predictor fills
the other rows.

``import llm4sbr.intent`` needs neither transformers, bitsandbytes nor llama-cpp-python; they are
imported when a real backend or encoder is used. The names below are imported from their modules
on first use, so code that needs one module (serving needs :mod:`.predictor`) loads only that.
"""

from __future__ import annotations

import importlib
from typing import Any

# Eager: the function shares its module's name, and importing the module would otherwise leave the
# module, not the function, as this package's attribute.
from .localize import localize as localize

_EXPORTS: dict[str, tuple[str, ...]] = {
    "backend_llamacpp": ("EngineUnavailable", "LlamaCppBackend"),
    "backend_openai": ("LLMServerError", "OpenAIBackend"),
    "backends": (
        "BACKENDS",
        "EngineFallbackWarning",
        "FakeBackend",
        "TransformersBackend",
        "make_backend",
        "postprocess_answer",
    ),
    "budget": ("BudgetPlan", "budget_count", "check_budget", "plan_budget"),
    "cache": ("AnswerCache", "CacheCorruptionWarning", "answer_key"),
    "config": ("IntentConfig", "add_arguments", "config_from_args"),
    "controls": ("CONTROLS", "control_intents", "write_control_intents"),
    "encode": ("HashingEncoder", "TextEncoder", "make_encoder"),
    "infer": ("ImportProblemWarning", "IntentResult", "infer_intents", "llm_sample_count"),
    "lookup": ("IntentLookup", "item_intent_table"),
    "order": ("prefix_order",),
    "predictor": ("IntentExplainer", "IntentPredictor", "load_intent_predictor"),
    "prompts": ("VIEWS", "build_prompt"),
    "requests_io": (
        "ImportReport",
        "RequestsExported",
        "export_requests",
        "import_responses",
        "read_responses",
    ),
    "store": ("load_catalog", "load_from_llm", "load_intents", "save_intents"),
}
"""Each public name's module."""
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_MODULE_OF, "localize"])


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
