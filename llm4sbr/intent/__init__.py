"""Stage 1 of LLM4SBR: multi-view intent inference (paper section 2).

For every sample, a long-term and a short-term prompt built from its input prefix go to an LLM;
the answers are cached on disk, encoded by a local sentence encoder, localized onto the item
catalog and written as ``intents.npy`` [n_samples, 2, d_text] for stage 2. With an LLM budget
(:mod:`.budget`) only part of the train and valid samples go to the LLM and a predictor fills
the other rows.

``import llm4sbr.intent`` needs neither transformers, bitsandbytes nor llama-cpp-python; they are
imported when a real backend or encoder is used.
"""

from .backend_llamacpp import EngineUnavailable, LlamaCppBackend
from .backend_openai import LLMServerError, OpenAIBackend
from .backends import (
    BACKENDS,
    EngineFallbackWarning,
    FakeBackend,
    TransformersBackend,
    make_backend,
    postprocess_answer,
)
from .budget import BudgetPlan, budget_count, check_budget, plan_budget
from .cache import AnswerCache, CacheCorruptionWarning, answer_key
from .config import IntentConfig, add_arguments, config_from_args
from .controls import CONTROLS, control_intents, write_control_intents
from .encode import HashingEncoder, TextEncoder, make_encoder
from .infer import ImportProblemWarning, IntentResult, infer_intents, llm_sample_count
from .localize import localize
from .lookup import IntentLookup, item_intent_table
from .order import prefix_order
from .predictor import IntentExplainer, IntentPredictor, load_intent_predictor
from .prompts import VIEWS, build_prompt
from .requests_io import ImportReport, RequestsExported, export_requests, import_responses, read_responses
from .store import load_catalog, load_from_llm, load_intents, save_intents

__all__ = [
    "BACKENDS",
    "CONTROLS",
    "VIEWS",
    "control_intents",
    "write_control_intents",
    "AnswerCache",
    "BudgetPlan",
    "CacheCorruptionWarning",
    "EngineFallbackWarning",
    "EngineUnavailable",
    "FakeBackend",
    "HashingEncoder",
    "ImportProblemWarning",
    "ImportReport",
    "IntentConfig",
    "IntentExplainer",
    "IntentLookup",
    "IntentPredictor",
    "IntentResult",
    "LLMServerError",
    "LlamaCppBackend",
    "OpenAIBackend",
    "RequestsExported",
    "TextEncoder",
    "TransformersBackend",
    "add_arguments",
    "answer_key",
    "budget_count",
    "build_prompt",
    "check_budget",
    "config_from_args",
    "export_requests",
    "import_responses",
    "infer_intents",
    "item_intent_table",
    "llm_sample_count",
    "load_catalog",
    "load_from_llm",
    "load_intent_predictor",
    "load_intents",
    "localize",
    "make_backend",
    "make_encoder",
    "plan_budget",
    "postprocess_answer",
    "prefix_order",
    "read_responses",
    "save_intents",
]
