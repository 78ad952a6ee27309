"""Answers constrained to catalog item names (``--constrain-answers``).

A small LLM asked to "guess an item" often names no item of the catalog, and localization then
starts from whatever the sentence encoder makes of free text. With the constraint, decoding can
only spell one catalog name and stop: the names are tokenized once, their token sequences form a
trie, and at every step all tokens but the trie node's children get a logit of -inf (the EOS
tokens are allowed too where the tokens so far spell a complete name). Greedy decoding then picks
the model's favourite continuation among the names, token by token.

* **Canonical tokenization only.** Each name is a single path: the tokens the model's tokenizer
  gives for the name alone, with no BOS and no leading space, which is how it starts the
  assistant's reply after the chat template's ``assistant\\n``. Another tokenization of the same
  text (e.g. ``"T" "oy"`` against ``"Toy"``) is not allowed, so the model cannot wander between
  spellings.
* **Nested names.** Where a name is a prefix of another (in tokens), the node that ends the
  shorter name allows both EOS and the longer name's next token.
* **Length.** A name longer than ``max_new_tokens`` tokens could only be answered cut short,
  so :func:`build_trie` leaves it out (with a warning): every answer is a whole name.
* **Cache key.** :func:`catalog_tag` names the answer set in the backend's settings, so
  constrained answers never mix with free ones, and runs without the option keep their keys.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..data.dataset import SessionDataset

UNCONSTRAINABLE = (
    "constrained answers need the llama.cpp or transformers engine (backend smollm2, llamacpp or "
    "transformers): an OpenAI-compatible server or batch engine cannot apply the catalog's token mask"
)


class CatalogTrie:
    """A trie over token sequences, for decoding that may only spell one of them and then stop.

    token_sequences: one non-empty list of token ids per name (duplicates collapse). eos_ids:
    the tokens that end an answer; none may occur inside a sequence. Built once; :meth:`allowed`
    walks from the root (names are a few dozen tokens at most).
    """

    def __init__(self, token_sequences: Iterable[Sequence[int]], eos_ids: Iterable[int]) -> None:
        self.eos_ids = sorted({int(t) for t in eos_ids})
        if not self.eos_ids:
            raise ValueError("a catalog trie needs at least one EOS id")
        eos = set(self.eos_ids)
        children: list[dict[int, int]] = [{}]
        complete = [False]
        self.n_sequences = 0
        for seq in token_sequences:
            if len(seq) == 0:
                raise ValueError("a catalog name has no tokens")
            if eos.intersection(seq):
                raise ValueError(f"a catalog name's tokens {list(seq)} contain an EOS id {self.eos_ids}")
            node = 0
            for token in seq:
                nxt = children[node].get(int(token))
                if nxt is None:
                    nxt = len(children)
                    children[node][int(token)] = nxt
                    children.append({})
                    complete.append(False)
                node = nxt
            self.n_sequences += not complete[node]
            complete[node] = True
        if self.n_sequences == 0:
            raise ValueError("a catalog trie needs at least one name")
        self._children = children
        self._allowed = [
            sorted(kids) + (self.eos_ids if done else [])
            for kids, done in zip(children, complete, strict=True)
        ]

    def __len__(self) -> int:
        """Distinct sequences (names) in the trie."""
        return self.n_sequences

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Token ids allowed after ``generated`` (the answer's tokens so far, [t] ints), sorted:
        the next tokens of every sequence that starts with ``generated``, then the EOS ids when
        ``generated`` is a whole sequence. Empty when no sequence starts with ``generated``."""
        node = 0
        for token in generated:
            node = self._children[node].get(int(token), -1)
            if node < 0:
                return []
        return list(self._allowed[node])


def mask_logits(scores: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
    """A copy of ``scores`` ([V] or [B, V] float logits over the vocabulary) with every entry
    whose index along the last axis is not in ``allowed`` set to -inf."""
    out = np.full_like(scores, -np.inf)
    index = np.asarray(allowed, dtype=np.intp)
    out[..., index] = scores[..., index]
    return out


def catalog_names(dataset: SessionDataset) -> list[str]:
    """The distinct non-empty display names of items 1..n_items, in item-id order."""
    return list(dict.fromkeys(n for n in dataset.item_names[1 : dataset.n_items + 1] if n))


def catalog_tag(names: Iterable[str]) -> str:
    """``"catalog:<16 hex>"``: the sha256 of the distinct names, sorted and joined by newlines.
    The value of ``settings["answers"]`` of a constrained backend (it enters the cache key)."""
    text = "\n".join(sorted(set(names)))
    return "catalog:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def build_trie(
    names: Sequence[str],
    tokenize: Callable[[str], Sequence[int]],
    eos_ids: Iterable[int],
    max_tokens: int,
) -> CatalogTrie:
    """The trie of ``names`` as ``tokenize`` (a name -> its token ids, as the model would start
    its reply with it) gives them. Names of more than ``max_tokens`` tokens are left out, with a
    warning that says which ``max_new_tokens`` would keep them all."""
    sequences, too_long = [], []
    for name in dict.fromkeys(names):
        tokens = list(tokenize(name))
        (sequences if len(tokens) <= max_tokens else too_long).append(tokens)
    if too_long:
        warnings.warn(
            f"--constrain-answers: {len(too_long)} of {len(sequences) + len(too_long)} catalog names are "
            f"longer than max_new_tokens={max_tokens} tokens and cannot be answered; "
            f"--max-new-tokens {max(map(len, too_long))} keeps them all",
            stacklevel=2,
        )
    if not sequences:
        raise ValueError(f"--constrain-answers: no catalog name fits max_new_tokens={max_tokens}")
    return CatalogTrie(sequences, eos_ids)
