import json

import numpy as np
import pytest
import torch
from fakes import fake_intents, tiny_dataset

import llm4sbr.training.trainer as train_module
from llm4sbr.checkpoint import load_checkpoint
from llm4sbr.config import TrainConfig
from llm4sbr.intent.lookup import IntentLookup
from llm4sbr.kernels import use_backend
from llm4sbr.models import load_trained
from llm4sbr.training import StaleRunError, evaluate, train

pytestmark = pytest.mark.usefixtures("reference_path")


def config(**kw):
    base = dict(data="tiny", dim=8, epochs=3, batch_size=8, eval_batch_size=16, patience=5, device="cpu")
    return TrainConfig(**{**base, **kw})


def write_intents(tmp_path, dataset, keep=None):
    from llm4sbr.intent import save_intents

    vectors, ids = fake_intents(dataset)
    if keep is not None:
        vectors, ids = vectors[keep], ids[keep]
    out = tmp_path / "intents"
    save_intents(out, vectors, ids, meta={"backend": "fake-for-tests"})
    return out


def test_srgnn_trains_selects_on_validation_and_tests_once(tmp_path, monkeypatch):
    ds = tiny_dataset()
    calls = []
    real_evaluate = train_module.evaluate

    def spy(model, samples, **kw):
        calls.append(kw.get("desc"))
        return real_evaluate(model, samples, **kw)

    monkeypatch.setattr(train_module, "evaluate", spy)
    result = train(config(), tmp_path / "run", dataset=ds, progress=False)
    assert calls == ["valid", "valid", "valid", "test"]
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    best = max(log, key=lambda r: r["valid"]["mrr@20"])
    assert result.best_epoch == best["epoch"]
    assert result.valid == best["valid"]
    assert set(result.test) >= {"hit@20", "mrr@20", "ndcg@20"}
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test"] == result.test
    # best.pt loads with weights_only and reproduces the test metrics.
    model, cfg, _ = load_trained(tmp_path / "run" / "best.pt")
    assert evaluate(model, ds.splits["test"], batch_size=16) == pytest.approx(result.test)


def test_early_stopping_on_patience(tmp_path, monkeypatch):
    flat = {f"{m}@{k}": 0.5 for m in ("hit", "mrr", "ndcg") for k in (5, 10, 20)}
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: dict(flat))
    result = train(config(epochs=10, patience=2), tmp_path / "run", dataset=tiny_dataset(), progress=False)
    assert result.epochs_run == 3 and result.best_epoch == 1


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    ds = tiny_dataset()
    full = train(config(), tmp_path / "full", dataset=ds, progress=False)

    real_evaluate = train_module.evaluate
    seen = []

    def crash_on_second_validation(model, samples, **kw):
        seen.append(kw.get("desc"))
        if seen.count("valid") == 2:
            raise KeyboardInterrupt
        return real_evaluate(model, samples, **kw)

    monkeypatch.setattr(train_module, "evaluate", crash_on_second_validation)
    with pytest.raises(KeyboardInterrupt):
        train(config(), tmp_path / "cut", dataset=ds, progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_module, "evaluate", real_evaluate)
    with pytest.raises(FileExistsError, match="resume"):
        train(config(), tmp_path / "cut", dataset=ds, progress=False)
    resumed = train(config(), tmp_path / "cut", dataset=ds, resume=True, progress=False)
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path):
    ds = tiny_dataset()
    train(config(epochs=1), tmp_path / "run", dataset=ds, progress=False)
    with pytest.raises(StaleRunError, match="config, dataset or intents differ"):
        train(config(epochs=1, lr=0.01), tmp_path / "run", dataset=ds, resume=True, progress=False)


def test_a_run_on_other_intents_is_never_reused(tmp_path, monkeypatch):
    """Same config and data, other intent vectors (e.g. a quick check with the fake backend in
    the same folder): resuming refuses, the pipeline trains again, and the checkpoint records
    where the intents are as an absolute path."""
    from llm4sbr.pipeline import train_or_resume

    ds = tiny_dataset()
    first = write_intents(tmp_path / "a", ds)
    monkeypatch.chdir(tmp_path)
    relative = config(model="llm4sbr", epochs=1, intents="a/intents")
    train(relative, tmp_path / "run", dataset=ds, progress=False)
    saved = json.loads(load_checkpoint(tmp_path / "run" / "best.pt")["config"])
    assert saved["intents"] == str(first.resolve())

    vectors, ids = fake_intents(ds)
    other = tmp_path / "b" / "intents"
    from llm4sbr.intent import save_intents

    save_intents(other, vectors + 1.0, ids, meta={"backend": "other"})
    retrained = config(model="llm4sbr", epochs=1, intents=str(other))
    with pytest.raises(StaleRunError):
        train(retrained, tmp_path / "run", dataset=ds, resume=True, progress=False)
    before = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    train_or_resume(retrained, tmp_path / "run", ds, progress=False)
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns > before
    assert json.loads(load_checkpoint(tmp_path / "run" / "last.pt")["config"])["intents"] == str(other)


def test_corrupt_checkpoint_is_reported(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_trained(path)
    with pytest.raises(FileNotFoundError):
        load_trained(tmp_path / "missing.pt")


class _Payload:
    """Not a tensor, number or string: a checkpoint holding it is refused, never unpickled."""


def test_a_checkpoint_with_objects_is_refused_without_advising_unsafe_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "llm4sbr-checkpoint-v1", "model": _Payload()}, path)
    with pytest.raises(ValueError, match="never unpickles") as error:
        load_trained(path)
    assert "weights_only=False" not in str(error.value)


def test_llm4sbr_trains_with_intents(tmp_path):
    ds = tiny_dataset()
    intents = write_intents(tmp_path, ds)
    result = train(
        config(model="llm4sbr", intents=str(intents), epochs=2), tmp_path / "run", dataset=ds, progress=False
    )
    assert 0.0 <= result.test["hit@20"] <= 1.0
    model, cfg, _ = load_trained(tmp_path / "run" / "best.pt")
    assert cfg.model == "llm4sbr" and model.d_text == 12


def test_llm4sbr_without_intents_or_with_missing_samples_fails_clearly(tmp_path):
    ds = tiny_dataset()
    with pytest.raises(ValueError, match="--intents"):
        train(config(model="llm4sbr"), tmp_path / "a", dataset=ds, progress=False)
    partial = write_intents(tmp_path, ds, keep=np.arange(10))
    with pytest.raises(ValueError, match="cover 10 of"):
        train(config(model="llm4sbr", intents=str(partial)), tmp_path / "b", dataset=ds, progress=False)


def test_intent_lookup_gathers_by_sample_id_not_row_order():
    ds = tiny_dataset()
    vectors, ids = fake_intents(ds)
    perm = np.random.default_rng(0).permutation(len(ids))
    lookup = IntentLookup(vectors[perm], ids[perm], ds)
    sample = torch.tensor([ids[3], ids[0]])
    assert torch.equal(lookup(sample), torch.from_numpy(vectors[[3, 0]]))


@pytest.mark.parametrize("model", ["srgnn", "llm4sbr"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bf16_autocast_training_step(tmp_path, model, backend):
    ds = tiny_dataset()
    intents = str(write_intents(tmp_path, ds)) if model == "llm4sbr" else None
    with use_backend(backend):
        result = train(
            config(model=model, intents=intents, bf16=True, epochs=1, batch_size=16),
            tmp_path / "run",
            dataset=ds,
            progress=False,
        )
    log = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(log["train_loss"]) and 0.0 <= result.test["hit@20"] <= 1.0


def test_threads_beyond_the_cores_are_clamped_with_a_warning(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match=f"only {cores} cores"):
            train(
                config(epochs=1, threads=cores + 3), tmp_path / "run", dataset=tiny_dataset(), progress=False
            )
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)


def test_loader_workers_building_packed_graphs_train_exactly_like_the_main_process(tmp_path, monkeypatch):
    from llm4sbr.models.encoder import SessionGraphEncoder

    monkeypatch.setattr(SessionGraphEncoder, "uses_packed_path", lambda self, device: True)
    built_in_workers = []
    real = train_module.make_loader

    def spy(*args, **kw):
        built_in_workers.append(kw.get("with_packed_graph", False))
        return real(*args, **kw)

    monkeypatch.setattr(train_module, "make_loader", spy)
    ds = tiny_dataset()
    results = [
        train(config(epochs=2, num_workers=workers), tmp_path / f"w{workers}", dataset=ds, progress=False)
        for workers in (0, 1)
    ]
    assert built_in_workers == [False, False, True, True]
    assert results[0].valid == results[1].valid and results[0].test == results[1].test
    states = [load_checkpoint(tmp_path / f"w{w}" / "last.pt")["model"] for w in (0, 1)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
