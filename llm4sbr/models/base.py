"""The contract every stage-2 model meets, so training, evaluation and serving need no
per-model branches.

A model is a :class:`SessionModel`: it owns a :class:`SessionGraphEncoder` (whose tied item
embeddings score the candidates), maps a batch to a session representation [B, d] in
``forward``, and says through ``uses_intents`` whether batches must carry ``intent``
[B, 2, d_text]. Scores over the catalog are laid out with column = item id: column 0 (padding)
is -inf.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from llm4sbr.data.graph import PackedBatchGraph, SessionGraph, packed_batch_from_dict
from llm4sbr.kernels import linear_cross_entropy
from llm4sbr.models.encoder import SessionGraphEncoder

GRAPH_KEYS = ("graph_nodes", "graph_alias", "graph_A_in", "graph_A_out")


def graph_from_batch(batch: dict[str, torch.Tensor]) -> SessionGraph | PackedBatchGraph | None:
    """The session graph prebuilt by data-loader workers (padded or packed), if the batch
    carries one."""
    if GRAPH_KEYS[0] not in batch:
        return packed_batch_from_dict(batch)
    return SessionGraph(*(batch[k] for k in GRAPH_KEYS))


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 for losses (autocast); float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class SessionModel(nn.Module):
    """Base of SRGNN and LLM4SBR. Batches hold ``item_seq`` [B, L] (right-padded with 0),
    ``item_seq_len`` [B], ``target`` [B] in 1..n_items for losses, ``item_id`` [B] for
    :meth:`predict`, optional prebuilt graph tensors (``GRAPH_KEYS``) and, when
    ``uses_intents``, ``intent`` [B, 2, d_text]."""

    uses_intents: ClassVar[bool] = False
    encoder: SessionGraphEncoder

    @property
    def n_items(self) -> int:
        return self.encoder.n_items

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(local [B, d], global [B, d]) views of the batch's sessions."""
        return self.encoder(batch["item_seq"], batch["item_seq_len"], graph_from_batch(batch))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Session representation [B, d]."""
        raise NotImplementedError

    def recommendation_loss(self, session: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy of ``batch["target"]`` over every item (docs/method.md §3.5),
        by the fused scoring head: the [B, n_items] logits and their gradient are never held
        whole, so memory does not grow with batch x catalog. Under autocast the item table
        takes the session's dtype, as the unfused matmul would."""
        table = self.encoder.embedding.weight.to(session.dtype)  # row 0, padding, is no class
        return linear_cross_entropy(session, table, batch["target"], first_class=1)

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch (a scalar)."""
        return self.recommendation_loss(self.forward(batch), batch)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Score of ``batch["item_id"]`` [B] (in 1..n_items) for each session -> [B]."""
        return (self.forward(batch) * self.encoder.embedding(batch["item_id"])).sum(dim=-1)

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores over every item -> [B, n_items + 1], column = item id, column 0 (padding) = -inf."""
        # Scoring the padding row too and overwriting it avoids a copy of the [B, n_items] scores.
        scores = self.forward(batch) @ self.encoder.embedding.weight.T
        scores[:, 0] = float("-inf")
        return scores
