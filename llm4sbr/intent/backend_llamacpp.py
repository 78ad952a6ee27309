"""The llama.cpp engine (``llama-cpp-python``, the ``cpu-llm`` extra): 4-bit GGUF models on CPU.

* **Quantisation.** A GGUF file is requantised once to ``quant`` (default Q4_0 for the bundled
  SmolLM2-135M, whose shipped Q4_1 has no fast AVX512 path in llama.cpp; Q4_0 prefills about 2.4x
  faster on such a CPU) with ``llama_cpp.llama_model_quantize`` and kept in the user cache folder
  (:func:`cache_root`) under a name holding the source file's sha256, written atomically. A
  given file can also be used as it is (``quant=None``).
* **Identity.** ``<file>:llama.cpp:<quant>:<sha256 of the source, 16 hex>``; ``precision`` is the
  quantisation. Answers of this engine never mix with the transformers engine's in the cache.
* **KV cache reuse.** One ``Llama`` object answers the prompts one after the other and keeps
  the KV cache of the longest common token prefix with the previous prompt; with prompts in
  :mod:`llm4sbr.intent.order` this skips most of the prefill. ``stats["prefill_tokens"]``
  counts the tokens llama.cpp actually evaluated before each answer's first new token,
  ``stats["prompt_tokens"]`` the prompts' full lengths. ``reuse_prefix=False`` resets the cache
  before every prompt (tests). What the KV cache holds is always ``Llama.input_ids[:n_tokens]``,
  whichever decoding loop ran last.
* **Decoding** as the transformers engine: the model's own chat template (rendered with
  llama-cpp-python's Jinja2 formatter from the GGUF metadata), greedy unless ``do_sample``
  (temperature 1, top-p, a seed set before each prompt, so answers do not depend on the order),
  generation ended at EOS, at ``max_new_tokens`` or, with ``stop_at_newline``, at the end of
  the first non-empty line (the stored answer stops there). Greedy decoding (the default) runs
  its own loop over ``llama_decode``: the argmax of the last token's logits, read in place.
  ``Llama.generate`` spends about 10 ms per new token on top of the model (sampler chain,
  logits copies) on this project's 2-core machine, a third of a 135M model's decode step; the
  answers are the same token for token. Sampling goes through ``Llama.generate``.
* **Threads**: :func:`free_cores` unless given: more threads than free cores make llama.cpp
  slower, not faster.
* **Constrained answers** (``answer_names``): a logits processor masks every token that does not
  continue a catalog name (:mod:`.constrain`), names tokenized by llama.cpp's own tokenizer.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from llm4sbr.atomic import atomic_writer

from .backend_base import first_line, generation_settings, new_stats
from .constrain import CatalogTrie, build_trie, catalog_tag, mask_logits
from .hf import model_identity

CPU_LLM_HINT = "pip install 'llm4sbr[cpu-llm]'"
QUANTS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16")
"""Types a GGUF file can be requantised to (``llama_cpp.LLAMA_FTYPE_MOSTLY_<type>``)."""
CACHE_ENV = "LLM4SBR_CACHE_DIR"
N_CTX = 8192
"""Context window: the longest ml-100k prompt (110 clicks) is about 2,000 tokens."""


class EngineUnavailable(ImportError):
    """llama-cpp-python is missing, does not load, or could not prepare the model."""


def import_llama_cpp() -> ModuleType:
    """``llama_cpp``; :class:`EngineUnavailable` with the install hint when it does not import."""
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # OSError: the shared library does not load
        raise EngineUnavailable(
            f"the llama.cpp engine needs llama-cpp-python: {CPU_LLM_HINT} ({type(exc).__name__}: {exc})"
        ) from exc
    return llama_cpp


def cache_root() -> Path:
    """Where requantised models are kept: ``$LLM4SBR_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/llm4sbr``, else ``~/.cache/llm4sbr``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm4sbr"


def free_cores() -> int:
    """CPU cores this process may use minus the busy ones (the 1-minute load average, rounded
    down, so this process's own recent work does not count a core), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0
    return max(1, cores - busy)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def requantize(source: str | os.PathLike, quant: str, root: str | os.PathLike | None = None) -> Path:
    """``source`` requantised to ``quant``: ``<root>/<stem>.<sha256[:16]>.<quant>.gguf``, made on
    the first call (about a second for the 135M model) and reused after."""
    source = Path(source)
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, got {quant!r}")
    digest = file_sha256(source)[:16]
    folder = Path(root) if root is not None else cache_root() / "gguf"
    target = folder / f"{source.stem}.{digest}.{quant}.gguf"
    if target.is_file():
        return target
    llama_cpp = import_llama_cpp()
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.quantizing"
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
        params.allow_requantize = True
        params.nthread = free_cores()
        try:
            from llama_cpp._utils import suppress_stdout_stderr

            quiet: Any = suppress_stdout_stderr(disable=False)
        except ImportError:
            quiet = contextlib.nullcontext()
        with quiet:  # llama.cpp logs every tensor
            status = llama_cpp.llama_model_quantize(
                str(source).encode(), str(scratch).encode(), ctypes.byref(params)
            )
        if status != 0 or not scratch.is_file():
            raise EngineUnavailable(f"llama.cpp could not quantise {source} to {quant} (status {status})")
        with atomic_writer(target) as out, open(scratch, "rb") as data:
            shutil.copyfileobj(data, out, 1 << 22)
    finally:
        scratch.unlink(missing_ok=True)
    return target


class LlamaCppBackend:
    """A GGUF model through llama.cpp (see the module docstring).

    model_path: a .gguf file. quant: requantise to this type (:data:`QUANTS`) once, or None to
    use the file as it is. threads: llama.cpp threads (None: :func:`free_cores` when the model
    is loaded). n_ctx: context window. max_new_tokens, do_sample, top_p, seed, stop_at_newline:
    as for the transformers engine. reuse_prefix: keep the KV cache of the common prefix between
    consecutive prompts. cache_dir: folder of requantised files (None: :func:`cache_root`).
    answer_names: when given, every answer is exactly one of these names (:mod:`.constrain`;
    the trie is built when the model is loaded). llama_cpp is imported here, so a missing engine
    fails at construction; the model is loaded on the first answer, so a fully cached run never
    loads it.
    """

    engine = "llama.cpp"
    prompt_order = "prefix"

    def __init__(
        self,
        model_path: str | os.PathLike,
        quant: str | None = "Q4_0",
        threads: int | None = None,
        n_ctx: int = N_CTX,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        top_p: float = 0.8,
        seed: int = 0,
        stop_at_newline: bool = True,
        reuse_prefix: bool = True,
        cache_dir: str | os.PathLike | None = None,
        answer_names: Sequence[str] | None = None,
    ) -> None:
        if max_new_tokens < 1 or (threads is not None and threads < 1) or n_ctx < 64:
            raise ValueError(
                "max_new_tokens and threads must be >= 1 and n_ctx >= 64, "
                f"got {max_new_tokens}, {threads}, {n_ctx}"
            )
        source = Path(model_path)
        if not source.is_file() or source.suffix != ".gguf":
            raise FileNotFoundError(f"the llama.cpp engine needs a .gguf file, got {source}")
        self._llama_cpp = import_llama_cpp()
        if quant is None:
            self.model_path = source
            self.precision = "gguf"
            digest = model_identity(source).rsplit(":", 1)[1]
        else:
            try:
                self.model_path = requantize(source, quant, cache_dir)
            except EngineUnavailable:
                raise
            except (OSError, AttributeError, TypeError) as exc:
                raise EngineUnavailable(f"llama.cpp could not quantise {source} to {quant}: {exc}") from exc
            self.precision = quant
            digest = self.model_path.name.split(".")[-3]
        self.source = source
        self.identity = f"{source.name}:llama.cpp:{self.precision}:{digest}"
        self.threads = threads
        self.n_ctx = n_ctx
        self.reuse_prefix = reuse_prefix
        self.answer_names = None if answer_names is None else list(answer_names)
        answers = None if self.answer_names is None else catalog_tag(self.answer_names)
        self.settings = generation_settings(
            max_new_tokens, do_sample, top_p, seed, stop_at_newline, True, answers
        )
        self.stats = new_stats()
        self._llm: Any = None
        self._trie: CatalogTrie | None = None
        self._template: Any = None
        self._first_eval: int | None = None
        self.engine_seconds = 0.0
        """Seconds spent inside llama.cpp evaluating tokens (the rest of ``stats["seconds"]`` is
        this wrapper: templating, tokenizing, choosing tokens)."""

    def _load(self) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.threads = self.threads or free_cores()
        llm = self._llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_gpu_layers=0,
            seed=self.settings.get("seed", 0),
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            vocab = llm._model

            def text(token: int) -> str:
                return vocab.token_get_text(token) if token != -1 else ""

            self._template = Jinja2ChatFormatter(
                template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos())
            )
        evaluate = llm.eval

        def counting_eval(tokens: Any) -> None:
            if self._first_eval is None:
                self._first_eval = len(tokens)
            start = time.perf_counter()
            evaluate(tokens)
            self.engine_seconds += time.perf_counter() - start

        llm.eval = counting_eval  # generate() calls self.eval: the prompt first, then one token each
        self._llm = llm
        self._n_vocab = llm.n_vocab()
        if self.answer_names is not None:
            self._trie = build_trie(
                self.answer_names,
                lambda name: llm.tokenize(name.encode("utf-8"), add_bos=False, special=False),
                [llm.token_eos()],
                self.settings["max_new_tokens"],
            )

    def _constraint(self, n_prompt: int) -> Any:
        """The logits processor that keeps an answer on the catalog trie (None unconstrained).
        llama-cpp-python calls it with every token evaluated so far, the prompt's ``n_prompt``
        tokens first, and the logits of the next token ([n_vocab] float32)."""
        trie = self._trie
        if trie is None:
            return None

        def keep_to_catalog(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            return mask_logits(scores, trie.allowed(input_ids[n_prompt:].tolist()))

        return self._llama_cpp.LogitsProcessorList([keep_to_catalog])

    def chat_text(self, prompt: str) -> str:
        """``prompt`` in the model's chat template, ready for the assistant's answer."""
        if self._llm is None:
            self._load()
        if self._template is None:
            return prompt
        return self._template(messages=[{"role": "user", "content": prompt}]).prompt

    def tokens(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` in the chat template (special tokens parsed)."""
        return self._llm.tokenize(self.chat_text(prompt).encode("utf-8"), add_bos=True, special=True)

    def _answer(self, prompt: str) -> str:
        settings = self.settings
        start = time.perf_counter()
        tokens = self.tokens(prompt)
        if len(tokens) + settings["max_new_tokens"] > self.n_ctx:
            raise ValueError(
                f"a prompt of {len(tokens)} tokens does not fit the llama.cpp context of {self.n_ctx} "
                f"with {settings['max_new_tokens']} new tokens: show fewer clicks (--max-prompt-items)"
            )
        if settings["do_sample"]:
            new, computed = self._sampled(tokens)
        else:
            new, computed = self._greedy(tokens)
        text = self._llm.detokenize(new).decode("utf-8", errors="ignore")
        stats = self.stats
        stats["prompts"] += 1
        stats["prompt_tokens"] += len(tokens)
        stats["prefill_tokens"] += computed
        stats["new_tokens"] += len(new)
        stats["seconds"] += time.perf_counter() - start
        return first_line(text) if settings["stop_at_newline"] else text

    def _finished(self, new: list[int]) -> bool:
        """Whether an answer of tokens ``new`` (the latest one included) is complete."""
        settings = self.settings
        if len(new) >= settings["max_new_tokens"]:
            return True
        if not settings["stop_at_newline"]:
            return False
        text = self._llm.detokenize(new).decode("utf-8", errors="ignore")
        return first_line(text) != text

    def _keep_common_prefix(self, tokens: list[int]) -> int:
        """Drop from the KV cache everything after its common prefix with ``tokens`` (all of it
        without ``reuse_prefix``), keeping at least the last token of ``tokens`` to evaluate;
        the number of tokens kept."""
        llm, llama_cpp = self._llm, self._llama_cpp
        held = llm.input_ids[: llm.n_tokens]
        n = min(len(held), len(tokens) - 1) if self.reuse_prefix else 0
        differ = np.flatnonzero(held[:n] != np.asarray(tokens[:n]))
        common = int(differ[0]) if differ.size else n
        memory = llama_cpp.llama_get_memory(llm._ctx.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, -1, common, -1):
            llama_cpp.llama_memory_clear(memory, True)  # a model whose cache cannot be cut
            common = 0
        llm.n_tokens = common
        return common

    def _evaluate(self, tokens: Sequence[int]) -> np.ndarray:
        """Run ``tokens`` through the model after what the KV cache holds, ``n_batch`` at a time;
        the logits of the last one ([n_vocab] float32, llama.cpp's own buffer: valid until the
        next evaluation)."""
        llm, llama_cpp = self._llm, self._llama_cpp
        batch = llm._batch.batch
        for begin in range(0, len(tokens), llm.n_batch):
            chunk = tokens[begin : begin + llm.n_batch]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = llm.n_tokens + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = False
            batch.logits[len(chunk) - 1] = begin + len(chunk) == len(tokens)
            start = time.perf_counter()
            status = llama_cpp.llama_decode(llm._ctx.ctx, batch)
            self.engine_seconds += time.perf_counter() - start
            if status != 0:
                raise RuntimeError(f"llama.cpp could not evaluate a batch (llama_decode returned {status})")
            llm.input_ids[llm.n_tokens : llm.n_tokens + len(chunk)] = chunk
            llm.n_tokens += len(chunk)
        logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self._n_vocab,))

    def _greedy(self, tokens: list[int]) -> tuple[list[int], int]:
        """The greedy answer's tokens and the number of prompt tokens computed."""
        common = self._keep_common_prefix(tokens)
        logits = self._evaluate(tokens[common:])
        vocab = self._llm._model.vocab
        new: list[int] = []
        while True:
            if self._trie is not None:
                logits = mask_logits(logits, self._trie.allowed(new))
            token = int(np.argmax(logits))
            if self._llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            new.append(token)
            if self._finished(new):
                break
            logits = self._evaluate([token])
        return new, len(tokens) - common

    def _sampled(self, tokens: list[int]) -> tuple[list[int], int]:
        """A sampled answer's tokens (``Llama.generate``, seeded per prompt) and the number of
        prompt tokens computed."""
        llm, settings = self._llm, self.settings
        if not self.reuse_prefix:
            self._keep_common_prefix(tokens)
        llm.set_seed(settings["seed"])
        self._first_eval = None
        vocab = llm._model.vocab
        new: list[int] = []
        for token in llm.generate(
            tokens,
            top_k=0,
            top_p=settings["top_p"],
            min_p=0.0,
            temp=1.0,
            repeat_penalty=1.0,
            reset=True,
            logits_processor=self._constraint(len(tokens)),
        ):
            if self._llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            new.append(token)
            if self._finished(new):
                break
        return new, self._first_eval or 0

    def stream(self, prompts: list[str]) -> Iterator[tuple[int, str]]:
        """``(index, raw answer)`` one prompt after the other, in the order given."""
        if not prompts:
            return
        if self._llm is None:
            self._load()
        self.stats["calls"] += 1
        for i, prompt in enumerate(prompts):
            yield i, self._answer(prompt)

    def generate(self, prompts: list[str]) -> list[str]:
        """Raw answers, in order."""
        return [answer for _, answer in self.stream(prompts)]
