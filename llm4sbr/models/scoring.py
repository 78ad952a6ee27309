"""Scoring helpers shared by SRGNN and LLM4SBR: full-ranking score layout and prebuilt graphs."""

from __future__ import annotations

import torch

from llm4sbr.data.graph import SessionGraph
from llm4sbr.models.encoder import SessionGraphEncoder

GRAPH_KEYS = ("graph_nodes", "graph_alias", "graph_A_in", "graph_A_out")


def graph_from_batch(batch: dict[str, torch.Tensor]) -> SessionGraph | None:
    """The session graph prebuilt by data-loader workers, if the batch carries one."""
    if GRAPH_KEYS[0] not in batch:
        return None
    return SessionGraph(*(batch[k] for k in GRAPH_KEYS))


def full_sort_scores(logits: torch.Tensor) -> torch.Tensor:
    """[B, n_items] logits -> [B, n_items + 1] with column 0 (padding) = -inf, so column = item id."""
    pad = torch.full((logits.shape[0], 1), float("-inf"), dtype=logits.dtype, device=logits.device)
    return torch.cat([pad, logits], dim=1)


def pick_scores(session: torch.Tensor, encoder: SessionGraphEncoder, item_id: torch.Tensor) -> torch.Tensor:
    """Score of one candidate per session: session [B, d], item_id [B] in 1..n_items -> [B]."""
    return (session * encoder.embedding(item_id)).sum(dim=-1)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 for losses (autocast); float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
