"""The transformers engine: any local Hugging Face model folder or GGUF file.

On CUDA the default precision is 4-bit NF4 (bitsandbytes, double quantisation, bf16 compute); on
CPU it is fp32. Chat template applied, greedy by default, prompts de-duplicated and sorted by
token count into left-padded batches (padding every batch to its longest prompt is what made
naive batching slower than one prompt at a time), generation stopped per prompt at the end of
the first non-empty line or at EOS. The views of one sample differ only in their last line, so
their common token prefix is prefilled once and its KV cache reused for each view. With
``answer_names``, ``prefix_allowed_tokens_fn`` keeps every answer on the catalog names' token
trie (:mod:`.constrain`), names tokenized by the model's own tokenizer.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .backend_base import generation_settings, new_stats
from .constrain import CatalogTrie, build_trie, catalog_tag
from .hf import import_transformers, model_identity

PRECISIONS = ("4bit", "8bit", "bf16", "fp16", "fp32")


def _check_bitsandbytes(precision: str, device: torch.device) -> Any:
    """Import bitsandbytes and run a tiny quantised layer on ``device``; raise a RuntimeError that
    says what is unsupported instead of failing deep inside model loading."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ImportError(
            f"--precision {precision} needs bitsandbytes: pip install 'llm4sbr[llm]' ({exc})"
        ) from exc
    try:
        layer = _quantized_linear(bnb, torch.nn.Linear(64, 64), precision).to(device)
        layer(
            torch.zeros(1, 64, device=device, dtype=torch.bfloat16 if precision == "4bit" else torch.float16)
        )
    except Exception as exc:
        raise RuntimeError(
            f"--precision {precision} is not supported on {device.type} by bitsandbytes {bnb.__version__} "
            f"({type(exc).__name__}: {exc}); use --precision fp32 or bf16 on this device"
        ) from exc
    return bnb


def _quantized_linear(bnb: Any, linear: torch.nn.Linear, precision: str) -> torch.nn.Module:
    """A bitsandbytes copy of ``linear`` (NF4 with double quantisation, or LLM.int8); the weights
    are quantised when the layer is moved to its device."""
    has_bias = linear.bias is not None
    if precision == "4bit":
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=torch.bfloat16,
            compress_statistics=True,
            quant_type="nf4",
        )
        layer.weight = bnb.nn.Params4bit(
            linear.weight.data.float(), requires_grad=False, compress_statistics=True, quant_type="nf4"
        )
    else:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False
        )
        layer.weight = bnb.nn.Int8Params(
            linear.weight.data.half(), requires_grad=False, has_fp16_weights=False
        )
    if has_bias:
        layer.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer


def _quantize_in_place(model: torch.nn.Module, bnb: Any, precision: str, device: torch.device) -> None:
    """Swap every ``nn.Linear`` except the output head for its bitsandbytes copy. Used for GGUF
    files, which transformers refuses to load together with a ``BitsAndBytesConfig``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name != "lm_head":
                setattr(parent, name, _quantized_linear(bnb, child, precision).to(device))


class TransformersBackend:
    """A local causal LM through transformers (see the module docstring for the behaviour).

    model_path: a model folder or a ``.gguf`` file. precision: one of :data:`PRECISIONS` (None: 4bit
    on CUDA, fp32 otherwise). device: torch device string (None: CUDA when available).
    batch_size: prompts per forward pass. max_new_tokens: generation cap. do_sample, top_p, seed:
    sampling (greedy when do_sample is False; then top_p and seed do not enter the settings).
    stop_at_newline: end a prompt's generation at the end of its first non-empty line.
    answer_names: when given, every answer is exactly one of these names (:mod:`.constrain`).
    The model is loaded on the first :meth:`generate` call, so a fully cached run never loads it.
    """

    engine = "transformers"
    prompt_order = "length"
    """Padded batches want prompts of similar length together (see :mod:`.order`)."""

    def __init__(
        self,
        model_path: str | Path,
        precision: str | None = None,
        device: str | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        top_p: float = 0.8,
        seed: int = 0,
        stop_at_newline: bool = True,
        answer_names: Sequence[str] | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision or ("4bit" if self.device.type == "cuda" else "fp32")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(
                f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}"
            )
        self.model_path = Path(model_path)
        self.identity = model_identity(self.model_path)
        self.batch_size = batch_size
        self.answer_names = None if answer_names is None else list(answer_names)
        answers = None if self.answer_names is None else catalog_tag(self.answer_names)
        self.settings = generation_settings(
            max_new_tokens, do_sample, top_p, seed, stop_at_newline, True, answers
        )
        self.stats = new_stats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._trie: CatalogTrie | None = None

    def _load(self) -> None:
        transformers = import_transformers()
        if self.model_path.is_file():
            folder, source = self.model_path.parent, {"gguf_file": self.model_path.name}
        else:
            folder, source = self.model_path, {}
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, **source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        quantized = self.precision in ("4bit", "8bit")
        bnb = _check_bitsandbytes(self.precision, self.device) if quantized else None
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(self.precision)
        if quantized and not source:
            if self.precision == "4bit":
                qconfig = transformers.BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.bfloat16,
                )
            else:
                qconfig = transformers.BitsAndBytesConfig(load_in_8bit=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, quantization_config=qconfig, device_map={"": str(self.device)}
            )
        else:
            # A GGUF file is dequantised to fp32 before bitsandbytes re-quantises it.
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, dtype=dtype or torch.float32, **source
            )
            if quantized:
                _quantize_in_place(model, bnb, self.precision, self.device)
            model = model.to(self.device)
        self._model = model.eval()
        self._tokenizer = tokenizer
        self._transformers = transformers
        if self.answer_names is not None:
            self._trie = build_trie(
                self.answer_names,
                lambda name: tokenizer(name, add_special_tokens=False)["input_ids"],
                [tokenizer.eos_token_id],
                self.settings["max_new_tokens"],
            )

    def _chat(self, prompt: str) -> str:
        if self._tokenizer.chat_template is None:
            return prompt
        return self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _stopping_criteria(self, prompt_len: int) -> Any:
        tokenizer = self._tokenizer

        class FirstLineDone(self._transformers.StoppingCriteria):
            """Per row: done once the generated text has a non-empty line followed by a newline."""

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
                done = [bool(t.strip()) and "\n" in t.lstrip() for t in texts]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return self._transformers.StoppingCriteriaList([FirstLineDone()])

    def _allowed_tokens(self, prompt_len: int) -> Callable[[int, torch.Tensor], list[int]] | None:
        """``prefix_allowed_tokens_fn`` of ``model.generate`` (None unconstrained): row b's
        ``input_ids`` [prompt_len + t] are its left-padded prompt, then its t new tokens."""
        trie = self._trie
        if trie is None:
            return None
        eos = trie.eos_ids

        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            generated = input_ids[prompt_len:].tolist()
            # A row that has ended gets padding until the whole batch ends; what is allowed
            # there is discarded, but transformers refuses an empty list.
            if any(t in eos for t in generated):
                return eos
            return trie.allowed(generated)

        return allowed

    def _cache_kwarg(self) -> str:
        # transformers 5 renamed `past_key_values` to `cache`.
        return "cache" if "cache" in inspect.signature(self._model.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def _generate_group_batch(
        self, token_ids: list[list[int]], groups: list[list[int]], shared: list[int]
    ) -> dict[int, str]:
        """Answers for ``groups`` (lists of indices into ``token_ids``; every group has the same number of
        members and the j-th members have equal suffix lengths). Each group's first ``shared[k]`` tokens
        are prefilled once, left-padded across groups; the cache is then continued once per member."""
        pad_id = self._tokenizer.pad_token_id
        width = max(shared)
        prefix = torch.full((len(groups), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(groups), width), dtype=torch.long)
        for row, (members, n) in enumerate(zip(groups, shared, strict=True)):
            prefix[row, width - n :] = torch.tensor(token_ids[members[0]][:n])
            mask[row, width - n :] = 1
        prefix, mask = prefix.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache_kwarg = self._cache_kwarg()
        out = self._model.base_model(
            input_ids=prefix, attention_mask=mask, position_ids=positions, use_cache=True
        )
        prefix_cache = getattr(out, cache_kwarg)
        self.stats["prefill_tokens"] += sum(shared)
        config = self._transformers.GenerationConfig(
            max_new_tokens=self.settings["max_new_tokens"],
            do_sample=self.settings["do_sample"],
            top_p=self.settings.get("top_p"),
            top_k=None,
            temperature=None,
            pad_token_id=pad_id,
            eos_token_id=self._tokenizer.eos_token_id,
        )
        answers: dict[int, str] = {}
        n_members = len(groups[0])
        for j in range(n_members):
            suffix = torch.tensor(
                [token_ids[members[j]][n:] for members, n in zip(groups, shared, strict=True)],
                device=self.device,
            )
            input_ids = torch.cat([prefix, suffix], dim=1)
            attention_mask = torch.cat([mask, torch.ones_like(suffix)], dim=1)
            cache = prefix_cache if j == n_members - 1 else copy.deepcopy(prefix_cache)
            if self.settings["do_sample"]:
                torch.manual_seed(self.settings["seed"])
            stopping = (
                self._stopping_criteria(input_ids.shape[1]) if self.settings["stop_at_newline"] else None
            )
            generated = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                stopping_criteria=stopping,
                prefix_allowed_tokens_fn=self._allowed_tokens(input_ids.shape[1]),
                **{cache_kwarg: cache},
            )
            new = generated[:, input_ids.shape[1] :]
            self.stats["prompt_tokens"] += int(attention_mask.sum())
            self.stats["prefill_tokens"] += int(suffix.numel())
            self.stats["new_tokens"] += int((new != pad_id).sum())
            for members, text in zip(
                groups, self._tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                answers[members[j]] = text
        return answers

    def generate(self, prompts: list[str]) -> list[str]:
        """Raw answers, in order.

        Duplicates are generated once. Prompts that differ only in their last line (the views of
        one sample) form a group whose common token prefix is prefilled once, which roughly halves
        the prefill work for two views. Groups are sorted by suffix shape and prefix length and
        batched up to ``batch_size`` prompts (``batch_size // group size`` prefill rows), so
        batches pad little.
        """
        if self._model is None:
            self._load()
        start = time.perf_counter()
        unique = list(dict.fromkeys(prompts))
        token_ids = self._tokenizer([self._chat(p) for p in unique], add_special_tokens=False)["input_ids"]
        by_stem: dict[str, list[int]] = {}
        for i, prompt in enumerate(unique):
            by_stem.setdefault(prompt.rsplit("\n", 1)[0], []).append(i)
        plans = []
        for members in by_stem.values():
            seqs = [token_ids[i] for i in members]
            n = min(len(s) for s in seqs) - 1
            n = next((k for k in range(n) if any(s[k] != seqs[0][k] for s in seqs)), n)
            plans.append((tuple(len(s) - n for s in seqs), -n, members))
        plans.sort(key=lambda plan: plan[:2])
        answers: dict[int, str] = {}
        begin = 0
        while begin < len(plans):
            shape = plans[begin][0]
            groups_per_batch = max(1, self.batch_size // len(shape))
            end = begin + 1
            while end < len(plans) and end - begin < groups_per_batch and plans[end][0] == shape:
                end += 1
            batch = plans[begin:end]
            answers.update(
                self._generate_group_batch(token_ids, [p[2] for p in batch], [-p[1] for p in batch])
            )
            begin = end
        self.stats["calls"] += 1
        self.stats["prompts"] += len(unique)
        self.stats["seconds"] += time.perf_counter() - start
        by_prompt = {unique[i]: answer for i, answer in answers.items()}
        return [by_prompt[p] for p in prompts]
