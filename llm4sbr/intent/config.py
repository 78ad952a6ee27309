"""Settings of the intent stage, and their command-line form for ``llm4sbr infer-intents``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from .backend_llamacpp import QUANTS
from .backends import BACKENDS, PRECISIONS
from .budget import check_budget, parse_budget
from .constrain import UNCONSTRAINABLE
from .localize import REDUCTIONS

GGUF_QUANTS = (*QUANTS, "none")


@dataclass
class IntentConfig:
    """Everything that shapes stage 1.

    backend: "smollm2" (the bundled SmolLM2-135M-Instruct GGUF: 4-bit on llama.cpp on CPU when
    llama-cpp-python is installed, else transformers), "llamacpp" (``model`` is a .gguf file,
    default the bundled one), "transformers" (``model`` is a local folder or .gguf file), "openai"
    (``model`` is the name an OpenAI-compatible server or batch engine serves) or "fake" (tests).
    precision: transformers engine only: "4bit", "8bit", "bf16", "fp16" or "fp32"; None picks 4bit
    on CUDA and fp32 on CPU. batch_size: prompts per generation batch of the transformers engine,
    and answers per cache write (all engines). max_new_tokens: generation cap. max_prompt_items:
    show only the last N clicks of a prefix (None shows all, as the paper). r: catalog items per
    localized intent (0 keeps the raw answer embedding). localize_reduce: "sum" (paper) or "mean"
    (authors' code). encoder: local encoder folder, None for the bundled all-MiniLM-L6-v2, "fake"
    for the hashing stand-in. limit: process only the first N samples of each split (the outputs
    then cover exactly those samples). cache_dir: answer cache (None: ``<out_dir>/answer_cache``).
    seed: sampling seed (used only when do_sample). device: torch device (None: CUDA when
    available). do_sample: sample with top_p 0.8 instead of greedy decoding. stop_at_newline: stop
    each answer at the end of its first non-empty line.
    gguf_quant: llama.cpp: requantise the GGUF once to this type ("none": use the file as it is;
    None: Q4_0 for the bundled model, the file as it is otherwise). threads: llama.cpp threads
    (None: the free cores). base_url: the openai backend's server, e.g. http://127.0.0.1:8000/v1.
    concurrency, request_timeout, max_retries: its requests in flight, seconds per request and
    retries (exponential backoff) on connection errors, 429 and 5xx. export_requests: write the
    prompts without a cached answer as an OpenAI batch-format JSONL file and stop.
    import_responses: put the answers of a batch engine's output file into the cache first.
    Both need backend "openai" (its model name and settings name the answers).
    llm_budget: None asks the LLM for every sample; otherwise only for part of the train and
    valid samples, a fraction in (0, 1] (1 = all of them) or an integer count > 1, chosen by a
    stratified, nested rule seeded with ``seed``; the other samples' intents (test included) are
    predicted from those (:mod:`llm4sbr.intent.budget`).
    constrain_answers: every answer is exactly one catalog item name (:mod:`llm4sbr.intent.constrain`;
    the llama.cpp and transformers engines only).
    """

    backend: str = "smollm2"
    model: str | None = None
    precision: str | None = None
    batch_size: int = 16
    max_new_tokens: int = 32
    max_prompt_items: int | None = None
    r: int = 5
    localize_reduce: str = "sum"
    encoder: str | None = None
    limit: int | None = None
    cache_dir: str | None = None
    seed: int = 0
    device: str | None = None
    do_sample: bool = False
    stop_at_newline: bool = True
    gguf_quant: str | None = None
    threads: int | None = None
    base_url: str | None = None
    concurrency: int = 8
    request_timeout: float = 120.0
    max_retries: int = 5
    export_requests: str | None = None
    import_responses: str | None = None
    llm_budget: float | None = None
    constrain_answers: bool = False

    def __post_init__(self) -> None:
        self.llm_budget = check_budget(self.llm_budget)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.localize_reduce not in REDUCTIONS:
            raise ValueError(f"localize_reduce must be one of {REDUCTIONS}, got {self.localize_reduce!r}")
        if self.gguf_quant is not None and self.gguf_quant not in GGUF_QUANTS:
            raise ValueError(f"gguf_quant must be one of {GGUF_QUANTS}, got {self.gguf_quant!r}")
        if self.backend in ("llamacpp", "openai") and self.precision is not None:
            raise ValueError(
                f"precision is for the transformers engine, not backend {self.backend!r}"
                + (" (llama.cpp takes gguf_quant)" if self.backend == "llamacpp" else "")
            )
        if self.backend == "openai" and not self.model:
            raise ValueError("backend 'openai' needs the served model's name (--llm-model NAME)")
        if self.constrain_answers and self.backend == "openai":
            raise ValueError(f"--constrain-answers: {UNCONSTRAINABLE}")
        if (self.export_requests or self.import_responses) and self.backend != "openai":
            raise ValueError(
                "--export-requests and --import-responses need --backend openai --llm-model NAME: "
                "the batch engine's model name and the settings name the answers in the cache"
            )
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0, got {self.request_timeout}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("batch_size", "max_new_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_prompt_items", "limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")
        if self.r < 0:
            raise ValueError(f"r must be >= 0, got {self.r}")


# IntentConfig fields whose flags carry an ``llm-`` prefix, so that --seed, --batch-size,
# --device and --model mean the training options wherever both sets of flags appear.
PREFIXED = ("model", "batch_size", "seed", "device", "threads", "concurrency")


def _flag(name: str) -> str:
    return "--" + ("llm_" + name if name in PREFIXED else name).replace("_", "-")


def _budget_argument(text: str) -> float:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the stage-1 options (all but ``--data`` and ``--out``) to ``parser``, as a group."""
    d = IntentConfig()
    group = parser.add_argument_group("stage 1 (LLM intents)")

    def add(name: str, help: str, **kwargs: object) -> None:
        dest = "llm_" + name if name in PREFIXED else name
        group.add_argument(_flag(name), dest=dest, default=getattr(d, name), help=help, **kwargs)

    add(
        "backend",
        "LLM engine: the bundled SmolLM2-135M (4-bit llama.cpp on CPU when installed), a GGUF on "
        "llama.cpp, a transformers model, an OpenAI-compatible server or batch files, or a test fake",
        choices=BACKENDS,
    )
    add(
        "model",
        "model folder or .gguf file (transformers), .gguf file (llamacpp) or served model name (openai)",
    )
    add("precision", "transformers weights: default 4bit on CUDA, fp32 on CPU", choices=PRECISIONS)
    add(
        "gguf_quant",
        "llama.cpp: requantise the GGUF once to this type (default Q4_0 for the bundled model; "
        "'none' uses the file as it is)",
        choices=GGUF_QUANTS,
    )
    add("threads", "llama.cpp threads (default: the free cores)", type=int)
    add("base_url", "openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    add("concurrency", f"openai backend: requests in flight (default {d.concurrency})", type=int)
    add(
        "request_timeout",
        f"openai backend: seconds per request (default {d.request_timeout:g})",
        type=float,
    )
    add(
        "max_retries",
        f"openai backend: retries with exponential backoff (default {d.max_retries})",
        type=int,
    )
    add(
        "export_requests",
        "write the prompts without a cached answer as OpenAI batch requests (JSONL) and stop",
        metavar="FILE.jsonl",
    )
    add(
        "import_responses",
        "cache the answers of a batch engine's output file (JSONL) before generating",
        metavar="FILE.jsonl",
    )
    add(
        "batch_size",
        f"prompts per transformers batch; answers per cache write (default {d.batch_size})",
        type=int,
    )
    add("max_new_tokens", f"generation cap per answer (default {d.max_new_tokens})", type=int)
    add("max_prompt_items", "show only the last N clicks in a prompt (default: all, as the paper)", type=int)
    add("r", f"catalog items per localized intent; 0 keeps the raw answer (default {d.r})", type=int)
    add("localize_reduce", "combine the top-r items: sum (paper) or mean (code)", choices=REDUCTIONS)
    add("encoder", "sentence-encoder folder (default: bundled all-MiniLM-L6-v2; 'fake' for tests)")
    add("limit", "process only the first N samples of each split", type=int)
    add("cache_dir", "answer cache folder (default: <out>/answer_cache)")
    add(
        "seed",
        f"sampling seed, used with --do-sample; also seeds --llm-budget's selection and fill "
        f"(default {d.seed})",
        type=int,
    )
    add("device", "torch device of the LLM (default: CUDA when available)")
    group.add_argument(
        "--llm-budget",
        dest="llm_budget",
        type=_budget_argument,
        default=d.llm_budget,
        metavar="B",
        help="ask the LLM only for part of the train+valid samples: a fraction in (0, 1] (1 = all) "
        "or an integer count > 1, stratified by prefix length and last-item popularity, nested "
        "(a larger budget keeps the smaller one's samples); the other samples' intents, test "
        "included, are predicted from those; from_llm.npy marks the LLM rows (default: every "
        "sample goes to the LLM)",
    )
    group.add_argument(
        "--do-sample", action="store_true", help="sample (top_p 0.8) instead of greedy decoding"
    )
    group.add_argument(
        "--constrain-answers",
        action="store_true",
        help="llama.cpp and transformers engines: every answer is exactly one catalog item name "
        "(decoding masked to the names' token trie)",
    )
    group.add_argument(
        "--no-stop-at-newline",
        dest="stop_at_newline",
        action="store_false",
        help="generate up to --max-new-tokens instead of stopping at the first line",
    )


def config_from_args(args: argparse.Namespace) -> IntentConfig:
    """An :class:`IntentConfig` from parsed :func:`add_arguments` options."""
    return IntentConfig(
        **{
            f.name: getattr(args, "llm_" + f.name if f.name in PREFIXED else f.name)
            for f in fields(IntentConfig)
        }
    )
