"""Control intents (shuffled, random) and the run rows that compare them with the LLM's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import tiny_dataset

from llm4sbr.cli import build_parser
from llm4sbr.config import TrainConfig
from llm4sbr.intent import (
    IntentConfig,
    control_intents,
    load_intents,
    save_intents,
    write_control_intents,
)


def vectors(n: int = 400, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.array([[1.0], [3.0]])  # the views differ in scale
    return (rng.normal(size=(n, 2, d)) * scale + 5.0).astype(np.float32)


def test_shuffled_is_a_permutation_of_whole_samples() -> None:
    real = vectors()
    shuffled = control_intents(real, "shuffled", seed=1)
    assert sorted(row.tobytes() for row in shuffled) == sorted(row.tobytes() for row in real)
    rows = {row.tobytes() for row in real}
    assert all(row.tobytes() in rows for row in shuffled)  # whole (long, short) pairs move together
    assert (shuffled != real).any(axis=(1, 2)).mean() > 0.9


def test_random_keeps_each_views_scale_but_not_the_content() -> None:
    real = vectors()
    noise = control_intents(real, "random", seed=1)
    assert noise.dtype == np.float32 and noise.shape == real.shape
    np.testing.assert_allclose(noise.mean(axis=0), real.mean(axis=0), atol=0.5)
    np.testing.assert_allclose(noise.std(axis=0), real.std(axis=0), rtol=0.2)
    correlation = np.corrcoef(noise[:, 1, 0], real[:, 1, 0])[0, 1]
    assert abs(correlation) < 0.2


@pytest.mark.parametrize("kind", ["shuffled", "random"])
def test_controls_are_seeded(kind) -> None:
    real = vectors()
    assert np.array_equal(control_intents(real, kind, 3), control_intents(real, kind, 3))
    assert not np.array_equal(control_intents(real, kind, 3), control_intents(real, kind, 4))


def test_unknown_control_is_refused() -> None:
    with pytest.raises(ValueError, match="control must be one of"):
        control_intents(vectors(), "zeros", 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--controls", "zeros"])


def test_written_control_covers_the_same_samples(tmp_path) -> None:
    real = vectors(n=10)
    ids = np.arange(100, 110)
    save_intents(tmp_path / "real", real, ids)
    out = write_control_intents(tmp_path / "real", "shuffled", tmp_path / "control", seed=2)
    got, got_ids = load_intents(out)
    assert np.array_equal(got_ids, ids)
    assert np.array_equal(np.asarray(got), control_intents(real, "shuffled", 2))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["control"] == "shuffled" and meta["control_seed"] == 2


def test_run_adds_a_row_per_control(tmp_path, monkeypatch) -> None:
    import llm4sbr.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_dataset", lambda config: tiny_dataset(n_sessions=60))
    train = TrainConfig(dim=8, epochs=1, batch_size=16, device="cpu")
    intents = IntentConfig(backend="fake", encoder="fake")
    summary = pipeline.run_pipeline(train, intents, tmp_path, progress=False, controls=("shuffled", "random"))
    assert "LLM4SBR, shuffled intents (control)" in summary["table"]
    assert "LLM4SBR, random intents (control)" in summary["table"]
    for kind in ("shuffled", "random"):
        assert set(summary["results"]["paths"][f"control_{kind}"]) >= {"hit@20", "mrr@20"}
        trained = json.loads((tmp_path / f"llm4sbr-{kind}" / "model" / "result.json").read_text())
        assert trained["test"] == summary["results"]["paths"][f"control_{kind}"]
        meta = json.loads((tmp_path / f"llm4sbr-{kind}" / "intents" / "meta.json").read_text())
        assert meta["control"] == kind
