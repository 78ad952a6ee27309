"""Stage-2 models: the SR-GNN session-graph encoder, the SRGNN baseline and LLM4SBR."""

from llm4sbr.models.encoder import SessionGraphEncoder
from llm4sbr.models.llm4sbr import LLM4SBR
from llm4sbr.models.srgnn import SRGNN

__all__ = ["LLM4SBR", "SRGNN", "SessionGraphEncoder"]
