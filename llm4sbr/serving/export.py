"""Export of the inference path with ``torch.export``: reference ops only, no Triton, no LLM.

    rec = Recommender.load("runs/llm4sbr/best.pt")
    export_recommender(rec, "runs/llm4sbr/serving.pt2")      # checked against eager before it returns
    load_exported("runs/llm4sbr/serving.pt2").recommend(["50", "172"], k=10)

The program maps ``(item_seq [B, L], item_seq_len [B], graph_nodes [B, N], graph_alias [B, L],
graph_A_in [B, N, N], graph_A_out [B, N, N]) -> scores [B, n_items + 1]`` with B, L and N
dynamic. The session graph is an input because its node count N is data-dependent (the number
of distinct items), which ``torch.export`` cannot trace; :func:`load_exported` builds it with
:func:`~llm4sbr.data.graph.build_session_graph` before calling the program. The item catalog and
``max_len`` travel inside the ``.pt2`` file, so the loaded program serves raw item ids.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from llm4sbr.data.graph import SessionGraph, build_session_graph
from llm4sbr.kernels import use_backend
from llm4sbr.serving.recommender import Recommender, ServingModel

FORMAT = "llm4sbr-export-v1"
META_FILE = "llm4sbr.json"
MAX_DIM = 1 << 20


class _GraphInputs(nn.Module):
    """A :class:`ServingModel` whose session graph comes in as six plain tensors."""

    def __init__(self, serving: ServingModel) -> None:
        super().__init__()
        self.serving = serving

    def forward(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        graph_nodes: torch.Tensor,
        graph_alias: torch.Tensor,
        graph_A_in: torch.Tensor,
        graph_A_out: torch.Tensor,
    ) -> torch.Tensor:
        graph = SessionGraph(graph_nodes, graph_alias, graph_A_in, graph_A_out)
        return self.serving(item_seq, item_seq_len, graph)


class ExportedScorer:
    """``(item_seq [B, L], item_seq_len [B]) -> scores [B, n_items + 1]`` through an exported program."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.module = program.module()

    def __call__(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        return self.module(item_seq, item_seq_len, *build_session_graph(item_seq, item_seq_len))


def _example_sessions(n_items: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight sessions of lengths 1..8 with repeated items, right-padded -> ([8, 8], [8])."""
    lengths = torch.arange(1, 9)
    item_seq = torch.randint(1, n_items + 1, (8, 8), generator=generator)
    item_seq[:, 1::3] = item_seq[:, 0:1]
    item_seq[torch.arange(8)[None, :] >= lengths[:, None]] = 0
    return item_seq, lengths


def export_recommender(
    recommender: Recommender, path: str | Path, *, rtol: float = 1e-4, atol: float = 1e-5
) -> Path:
    """Export ``recommender``'s model (and intent predictor) to ``path`` (a ``.pt2`` file).

    Traced on CPU with the reference kernels. Before returning, the saved file is loaded again
    and its scores compared with the eager model's (its default CPU path, which may differ from
    the traced one in rounding) on sessions it was not traced on; a score further than
    ``atol + rtol * |eager|`` raises RuntimeError.
    """
    serving = recommender.scorer
    if not isinstance(serving, ServingModel):
        raise ValueError("only a Recommender over a ServingModel (Recommender.load) can be exported")
    serving = copy.deepcopy(serving).cpu().eval()
    wrapper = _GraphInputs(serving)
    generator = torch.Generator().manual_seed(0)
    item_seq, item_seq_len = _example_sessions(serving.n_items, generator)
    batch, length, nodes = (torch.export.Dim(name, min=1, max=MAX_DIM) for name in ("B", "L", "N"))
    shapes = (
        {0: batch, 1: length},
        {0: batch},
        {0: batch, 1: nodes},
        {0: batch, 1: length},
        {0: batch, 1: nodes, 2: nodes},
        {0: batch, 1: nodes, 2: nodes},
    )
    with use_backend("torch"), torch.no_grad():
        graph = build_session_graph(item_seq, item_seq_len)
        program = torch.export.export(wrapper, (item_seq, item_seq_len, *graph), dynamic_shapes=shapes)
    meta = {"format": FORMAT, "items": recommender.item_ids, "max_len": recommender.max_len}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={META_FILE: json.dumps(meta)})

    check_seq = torch.randint(1, serving.n_items + 1, (3, 11), generator=generator)
    check_len = torch.tensor([11, 1, 6])
    check_seq[2, 6:] = 0
    with use_backend("torch"), torch.no_grad():
        eager = serving(check_seq, check_len)
    exported = load_exported(path).scores(check_seq, check_len)
    excess = (exported[:, 1:] - eager[:, 1:]).abs() - rtol * eager[:, 1:].abs()
    if not bool((excess <= atol).all()):
        worst = float((exported[:, 1:] - eager[:, 1:]).abs().max())
        raise RuntimeError(
            f"the exported program's scores differ from the eager model's by up to {worst:.3g}"
        )
    return path


def load_exported(path: str | Path) -> Recommender:
    """A CPU :class:`Recommender` over the program that :func:`export_recommender` saved."""
    extra_files = {META_FILE: ""}
    program = torch.export.load(Path(path), extra_files=extra_files)
    meta = json.loads(extra_files[META_FILE] or "{}")
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} was not written by llm4sbr.serving.export (no {META_FILE} of format {FORMAT})"
        )
    return Recommender(ExportedScorer(program), meta["items"], max_len=meta["max_len"])
