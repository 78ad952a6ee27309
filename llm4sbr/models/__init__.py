"""Stage-2 models: the SR-GNN session-graph encoder, the SRGNN baseline and LLM4SBR, their
common contract (:class:`SessionModel`) and the registry that builds and loads them."""

from llm4sbr.models.base import SessionModel
from llm4sbr.models.encoder import SessionGraphEncoder
from llm4sbr.models.llm4sbr import LLM4SBR
from llm4sbr.models.registry import build_model, load_trained
from llm4sbr.models.srgnn import SRGNN

__all__ = ["LLM4SBR", "SRGNN", "SessionGraphEncoder", "SessionModel", "build_model", "load_trained"]
