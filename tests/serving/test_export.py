"""torch.export of the inference path: reloaded, it scores and recommends like the eager model."""

import pytest
import torch

from llm4sbr.data.graph import build_session_graph
from llm4sbr.intent.predictor import IntentPredictor
from llm4sbr.kernels import use_backend
from llm4sbr.models import LLM4SBR, SRGNN
from llm4sbr.serving import Recommender, ServingModel
from llm4sbr.serving.export import ExportedScorer, export_recommender, load_exported

N_ITEMS = 13
ITEMS = ["[PAD]"] + [f"m{i}" for i in range(1, N_ITEMS + 1)]


pytestmark = pytest.mark.usefixtures("reference_path")


def llm4sbr_recommender(max_len=None) -> Recommender:
    torch.manual_seed(0)
    model = LLM4SBR(N_ITEMS, d_text=6, dim=8, readout="softmax").eval()
    predictor = IntentPredictor(N_ITEMS, 6, 5, torch.randn(N_ITEMS + 1, 2, 6)).eval()
    return Recommender(ServingModel(model, predictor), ITEMS, max_len=max_len)


def sessions():
    """Batches the program was not traced on: batch 1, length 1, repeats, L longer than the trace's."""
    long = torch.tensor([[1, 2, 3, 2, 5, 6, 7, 7, 7, 8, 9, 10, 11, 12, 13]])
    yield long, torch.tensor([15])
    yield torch.tensor([[4]]), torch.tensor([1])
    batch = torch.tensor([[3, 3, 3, 0, 0], [1, 2, 1, 2, 1], [9, 0, 0, 0, 0], [13, 12, 11, 10, 0]])
    yield batch, torch.tensor([3, 5, 1, 4])


@pytest.mark.parametrize("kind", ["llm4sbr", "srgnn"])
def test_exported_program_matches_eager_scores(tmp_path, kind):
    if kind == "llm4sbr":
        rec = llm4sbr_recommender()
    else:
        torch.manual_seed(1)
        rec = Recommender(ServingModel(SRGNN(N_ITEMS, dim=8).eval()), ITEMS)
    path = export_recommender(rec, tmp_path / "serving.pt2")
    exported = load_exported(path)
    for item_seq, item_seq_len in sessions():
        eager, graph = rec.scores(item_seq, item_seq_len), build_session_graph(item_seq, item_seq_len)
        same_graph = rec.scorer(item_seq, item_seq_len, graph)
        traced = exported.scores(item_seq, item_seq_len)
        assert traced.shape == (len(item_seq), N_ITEMS + 1) and bool(torch.isneginf(traced[:, 0]).all())
        torch.testing.assert_close(traced, same_graph, rtol=0, atol=1e-6)  # the padded path, as traced
        torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)
    session = ["m3", "m4", "m4", "m9"]
    assert [r for r, _ in exported.recommend(session, k=5)] == [r for r, _ in rec.recommend(session, k=5)]


def test_the_program_holds_reference_ops_even_where_triton_would_run(tmp_path):
    with use_backend("auto"):  # TRITON_INTERPRET=1 in tests: eager calls would take the Triton path
        path = export_recommender(llm4sbr_recommender(), tmp_path / "serving.pt2")
    program = torch.export.load(path)
    namespaces = {
        node.target.namespace
        for node in program.graph.nodes
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
    }
    assert namespaces == {"aten"}


def test_catalog_and_max_len_travel_with_the_program(tmp_path):
    rec = llm4sbr_recommender(max_len=3)
    exported = load_exported(export_recommender(rec, tmp_path / "serving.pt2"))
    assert exported.item_ids == ITEMS and exported.max_len == 3
    session = ["m1", "m2", "m5", "m6", "m7"]
    top = exported.recommend(session, k=4, exclude_seen=True)
    expected = [(r, s) for r, s in llm4sbr_recommender().recommend(session[-3:], k=20) if r not in session][
        :4
    ]
    assert [r for r, _ in top] == [r for r, _ in expected]
    assert [s for _, s in top] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="unknown item ids"):
        exported.recommend(["m1", "x"])


def test_a_program_that_disagrees_with_eager_is_refused(tmp_path, monkeypatch):
    real_call = ExportedScorer.__call__
    monkeypatch.setattr(ExportedScorer, "__call__", lambda self, s, n: real_call(self, s, n) * 1.01)
    with pytest.raises(RuntimeError, match="differ"):
        export_recommender(llm4sbr_recommender(), tmp_path / "serving.pt2")


def test_only_llm4sbr_exports_are_loaded(tmp_path):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x + 1

    torch.export.save(torch.export.export(Plain(), (torch.ones(2),)), tmp_path / "plain.pt2")
    with pytest.raises(ValueError, match="not written by llm4sbr.serving.export"):
        load_exported(tmp_path / "plain.pt2")
    with pytest.raises(ValueError, match="ServingModel"):
        export_recommender(Recommender(lambda s, n: s, ITEMS), tmp_path / "x.pt2")
