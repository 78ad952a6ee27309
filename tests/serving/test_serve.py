"""Serving without an LLM: the intent predictor, Recommender.recommend and the three-path evaluation."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from fakes import fake_intents, tiny_dataset

import llm4sbr
from llm4sbr.config import PredictorConfig, TrainConfig
from llm4sbr.intent.predictor import PREDICTOR_FILE, IntentPredictor, load_intent_predictor
from llm4sbr.intent.store import (
    FORMAT,
    INTENTS_FILE,
    ids_digest,
    write_catalog,
    write_meta,
    write_sample_ids,
)
from llm4sbr.kernels import use_backend
from llm4sbr.models import load_trained
from llm4sbr.serving import Recommender, ServingModel, UnknownItemError
from llm4sbr.training import evaluate_paths, train, train_intent_predictor

D_TEXT = 12  # fake_intents' width


pytestmark = pytest.mark.usefixtures("reference_path")


def write_intents(out, dataset, splits=("train", "valid", "test")):
    """A stage-1 output folder holding the fake intents of ``splits``."""
    vectors, ids = fake_intents(dataset)
    wanted = np.concatenate([dataset.splits[s].sample_ids for s in splits])
    keep = np.isin(ids, wanted)
    vectors, ids = vectors[keep], ids[keep]
    out.mkdir(parents=True)
    np.save(out / INTENTS_FILE, vectors)
    write_sample_ids(out, ids)
    write_meta(out, {"format": FORMAT, "shape": list(vectors.shape), "sample_ids_sha256": ids_digest(ids)})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An LLM4SBR run (fake intents) with its intent predictor, and an SRGNN run, on tiny_dataset."""
    root = tmp_path_factory.mktemp("serve")
    ds = tiny_dataset()
    intents = write_intents(root / "intents", ds)
    base = dict(data="tiny", dim=8, epochs=3, batch_size=8, eval_batch_size=16, device="cpu")
    with use_backend("torch"):
        llm = train(
            TrainConfig(model="llm4sbr", intents=str(intents), **base),
            root / "llm",
            dataset=ds,
            progress=False,
        )
        srgnn = train(TrainConfig(**base), root / "srgnn", dataset=ds, progress=False)
        fit_only = write_intents(root / "fit-intents", ds, splits=("train", "valid"))
        catalog = np.random.default_rng(1).normal(size=(ds.n_items - 1, D_TEXT)).astype(np.float32)
        write_catalog(fit_only, np.arange(2, ds.n_items + 1), catalog)  # item 1 has no name
        predictor = train_intent_predictor(
            root / "llm" / "best.pt",
            config=PredictorConfig(epochs=40, lr=0.01),
            dataset=ds,
            intents=fit_only,
            progress=False,
        )
    return {"root": root, "ds": ds, "intents": intents, "llm": llm, "srgnn": srgnn, "predictor": predictor}


def test_predictor_pools_valid_clicks_only():
    torch.manual_seed(0)
    predictor = IntentPredictor(10, 4, 3, torch.randn(11, 2, 4)).eval()
    item_seq = torch.tensor([[3, 5, 5, 0], [3, 5, 5, 9]])
    out = predictor(item_seq, torch.tensor([3, 3]))
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out[0], out[1])


def test_predictor_is_trained_without_test_intents_and_beats_the_mean(runs):
    result = runs["predictor"]
    assert result.path == str(runs["root"] / "llm" / PREDICTOR_FILE)
    assert result.valid["mse"] < 0.7 * result.valid_baseline["mse"]
    predictor, payload = load_intent_predictor(result.path)
    assert payload["valid"] == result.valid
    assert predictor.item_cache is not None and predictor.d_text == 12


def test_predictor_refuses_an_srgnn_run(runs):
    with pytest.raises(ValueError, match="uses no intents"):
        train_intent_predictor(runs["root"] / "srgnn" / "best.pt", dataset=runs["ds"], progress=False)


def test_recommend_returns_the_models_top_k_in_raw_ids(runs):
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    top = rec.recommend(["raw4", "raw5", "raw5", "raw6"], k=5)
    model, _, _ = load_trained(runs["root"] / "llm" / "best.pt")
    predictor, _ = load_intent_predictor(runs["predictor"].path)
    item_seq, item_seq_len = torch.tensor([[4, 5, 5, 6]]), torch.tensor([4])
    with torch.no_grad():
        intent = predictor(item_seq, item_seq_len)
        scores = model.full_sort_predict(
            {"item_seq": item_seq, "item_seq_len": item_seq_len, "intent": intent}
        )[0]
    values, items = scores.topk(5)
    assert [raw for raw, _ in top] == [f"raw{i}" for i in items.tolist()]
    assert [s for _, s in top] == pytest.approx(values.tolist())


def test_unknown_items_raise_or_are_skipped(runs):
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    with pytest.raises(UnknownItemError, match=r"\['nope', '\[PAD\]'\].*on_unknown='skip'"):
        rec.recommend(["raw1", "nope", "[PAD]"])
    assert rec.recommend(["raw1", "nope", "raw2"], on_unknown="skip") == rec.recommend(["raw1", "raw2"])
    with pytest.raises(ValueError, match="no known items"):
        rec.recommend(["nope"], on_unknown="skip")
    with pytest.raises(ValueError, match="on_unknown"):
        rec.recommend(["raw1"], on_unknown="ignore")


def test_a_string_is_not_a_session(runs):
    """ "172" would otherwise be read as the session ['1', '7', '2']."""
    rec = Recommender.load(runs["root"] / "srgnn" / "best.pt")
    for bad in ("raw1", b"raw1"):
        with pytest.raises(TypeError, match="not the string"):
            rec.recommend(bad)
        with pytest.raises(TypeError, match="not the string"):
            rec.recommend_batch([["raw1"], bad])


def test_exclude_seen_k_and_batching(runs):
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    session = ["raw3", "raw4", "raw4"]
    everything = rec.recommend(session, k=1000)
    assert len(everything) == rec.n_items == 30
    assert [s for _, s in everything] == sorted((s for _, s in everything), reverse=True)
    unseen = rec.recommend(session, k=1000, exclude_seen=True)
    assert [r for r, _ in unseen] == [r for r, _ in everything if r not in session]
    assert rec.recommend(session, k=3) == everything[:3]
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend(session, k=0)
    sessions = [session, ["raw9"], ["raw1", "raw2", "raw3", "raw4", "raw5", "raw6"]]
    batched = rec.recommend_batch(sessions, k=4)
    for one, many in zip(sessions, batched, strict=True):
        assert [r for r, _ in many] == [r for r, _ in rec.recommend(one, k=4)]
        assert [s for _, s in many] == pytest.approx([s for _, s in rec.recommend(one, k=4)], abs=1e-6)


def test_max_len_keeps_the_most_recent_clicks(runs):
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    short = Recommender(rec.scorer, rec.item_ids, max_len=2)
    assert short.recommend(["raw1", "raw2", "raw3"], k=5) == rec.recommend(["raw2", "raw3"], k=5)


def test_srgnn_serves_without_a_predictor_and_llm4sbr_needs_one(runs, tmp_path):
    rec = Recommender.load(runs["root"] / "srgnn" / "best.pt")
    assert len(rec.recommend(["raw1", "raw2"], k=3)) == 3
    with pytest.raises(FileNotFoundError, match="llm4sbr train-predictor --checkpoint"):
        Recommender.load(runs["root"] / "llm" / "best.pt", predictor=tmp_path / "missing.pt")
    model, _, _ = load_trained(runs["root"] / "llm" / "best.pt")
    with pytest.raises(ValueError, match="needs an intent predictor"):
        ServingModel(model)


def test_three_paths_on_test(runs):
    paths = evaluate_paths(
        runs["root"] / "llm" / "best.pt",
        srgnn_checkpoint=runs["root"] / "srgnn" / "best.pt",
        dataset=runs["ds"],
        batch_size=4,
    )
    assert set(paths) == {"predictor", "oracle", "srgnn"}
    assert paths["oracle"] == pytest.approx(runs["llm"].test)
    assert paths["srgnn"] == pytest.approx(runs["srgnn"].test)
    # The predictor path is the Recommender's: rank each test target among its full ranking.
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    test = runs["ds"].splits["test"]
    ranks = []
    for i in range(len(test)):
        ranking = [r for r, _ in rec.recommend([f"raw{j}" for j in test.prefix(i)], k=1000)]
        ranks.append(ranking.index(f"raw{test.targets[i]}") + 1)
    assert paths["predictor"]["hit@10"] == pytest.approx(np.mean(np.array(ranks) <= 10))
    assert paths["predictor"]["mrr@20"] == pytest.approx(np.mean([1 / r if r <= 20 else 0 for r in ranks]))


def test_recommender_is_exported_lazily():
    assert llm4sbr.Recommender is Recommender
    code = "import sys, llm4sbr; assert 'llm4sbr.serving' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serving_imports_no_training_cli_or_benchmark_code(runs):
    """Loading a Recommender and recommending (an LLM4SBR run with its predictor) pulls in
    neither the training loop, nor the CLI or pipeline, nor the benchmarks."""
    code = (
        "import sys, llm4sbr\n"
        f"rec = llm4sbr.Recommender.load({str(runs['root'] / 'llm' / 'best.pt')!r})\n"
        "rec.recommend(['raw1', 'raw2'], k=3)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "llm4sbr.serving.recommender" in loaded
    forbidden = [
        m
        for m in loaded
        if m.startswith(("llm4sbr.train", "llm4sbr.cli", "llm4sbr.pipeline", "llm4sbr.bench", "bench."))
        or m == "bench"
    ]
    assert forbidden == []


def test_explain_names_the_catalog_items_nearest_each_predicted_intent(runs):
    rec = Recommender.load(runs["root"] / "llm" / "best.pt")
    explained = rec.explain(["raw4", "raw5", "raw6"], k=3)
    predictor, _ = load_intent_predictor(runs["predictor"].path)
    with torch.no_grad():
        intent = predictor(torch.tensor([[4, 5, 6]]), torch.tensor([3]))[0]
    catalog_ids, catalog = torch.arange(2, runs["ds"].n_items + 1), rec.explainer.unit_catalog
    for v, view in enumerate(("long", "short")):
        cosine = torch.nn.functional.cosine_similarity(intent[v][None], catalog, dim=-1)
        values, rows = cosine.topk(3)
        expected = [f"raw{i}" for i in catalog_ids[rows].tolist()]
        assert [item for item, _, _ in explained[view]] == expected
        assert [c for _, _, c in explained[view]] == pytest.approx(values.tolist(), abs=1e-5)
        names = [runs["ds"].item_names[i] for i in catalog_ids[rows].tolist()]
        assert [name for _, name, _ in explained[view]] == names
    with pytest.raises(UnknownItemError):
        rec.explain(["no-such-item"])


def test_explain_needs_an_llm4sbr_run_with_a_catalog(runs):
    with pytest.raises(ValueError, match="no intent explanations"):
        Recommender.load(runs["root"] / "srgnn" / "best.pt").explain(["raw4"])
