"""The LLM budget of stage 1 (llm4sbr.intent.budget): the budget value, the stratified nested
selection, and infer_intents asking the LLM for the selected train/valid samples only and
predicting the rest, with the fake backend and the hashing encoder."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import RecordingBackend, tiny_dataset
from hypothesis import example, given
from hypothesis import strategies as st

from llm4sbr.cli import build_parser
from llm4sbr.data.dataset import SampleSet, SessionDataset
from llm4sbr.intent import (
    FakeBackend,
    IntentConfig,
    add_arguments,
    budget_count,
    check_budget,
    config_from_args,
    infer_intents,
    llm_sample_count,
    load_from_llm,
    load_intents,
    plan_budget,
    save_intents,
)
from llm4sbr.intent.budget import RULE, fit_fill_predictor, holdout_split, strata_of, stratified_order
from llm4sbr.intent.lookup import IntentLookup
from llm4sbr.intent.prompts import VIEWS, build_prompt


def dataset() -> SessionDataset:
    """60 sessions, one sample each, ids 0..59: 42 train, 9 valid, 9 test."""
    return tiny_dataset(n_items=30, n_sessions=60)


def rows_of(ds: SessionDataset) -> list[tuple[str, int, np.ndarray]]:
    """(split, sample id, prefix) of every sample, in stage 1's row order."""
    return [
        (split, int(s.sample_ids[i]), s.prefix(i)) for split, s in ds.splits.items() for i in range(len(s))
    ]


def prompts_of(ds: SessionDataset, prefix: np.ndarray) -> set[str]:
    return {build_prompt(ds.item_names, prefix, view) for view in VIEWS}


def run(tmp_path: Path, budget: float | None, backend: FakeBackend | None = None, out: str = "out", **kw):
    config = IntentConfig(backend="fake", encoder="fake", batch_size=8, llm_budget=budget, **kw)
    return infer_intents(dataset(), config, tmp_path / out, progress=False, backend=backend or FakeBackend())


# --- the budget value ---------------------------------------------------------------------------


def test_budget_values_fractions_and_counts() -> None:
    assert check_budget(None) is None
    assert check_budget(0.25) == 0.25 and check_budget(1) == 1.0 and check_budget(7) == 7.0
    assert check_budget(3.0) == 3.0
    assert budget_count(1, 51) == 51 and budget_count(1.0, 51) == 51  # 1 is 100 %, not one sample
    assert budget_count(0.3, 51) == 15 and budget_count(0.5, 51) == 26  # 25.5 rounds up
    assert budget_count(0.001, 51) == 1  # at least one sample
    assert budget_count(2, 51) == 2 and budget_count(20, 51) == 20
    assert budget_count(500, 51) == 51  # a count above the pool takes the pool
    assert budget_count(0.5, 0) == 0


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, -3, math.nan, math.inf, 2.5, 1.0001, True, "0.5"])
def test_bad_budget_values_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="llm_budget"):
        check_budget(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="llm_budget"):
        IntentConfig(llm_budget=bad)  # type: ignore[arg-type]


def test_llm_budget_flag_parses_on_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in (["infer-intents", "--out", "x"], ["run"]):
        assert config_from_args(parser.parse_args(command)).llm_budget is None
        assert config_from_args(parser.parse_args([*command, "--llm-budget", "0.25"])).llm_budget == 0.25
        assert config_from_args(parser.parse_args([*command, "--llm-budget", "1000"])).llm_budget == 1000.0
        for bad in ("0", "-1", "nan", "2.5", "lots"):
            with pytest.raises(SystemExit) as exit_info:
                parser.parse_args([*command, "--llm-budget", bad])
            assert exit_info.value.code == 2
            assert "--llm-budget" in capsys.readouterr().err
    group_parser = argparse.ArgumentParser()
    add_arguments(group_parser)
    assert "--llm-budget" in group_parser.format_help()


def test_infer_intents_command_with_a_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import llm4sbr.data
    from llm4sbr.cli import main

    monkeypatch.setattr(llm4sbr.data, "load_dataset", lambda data, preset=None, items=None: dataset())
    flags = ["--backend", "fake", "--encoder", "fake", "--quiet", "--llm-budget", "20"]
    assert main(["infer-intents", "--out", str(tmp_path / "out"), *flags]) == 0
    assert "--llm-budget: 20 samples from the LLM, 40 predicted" in capsys.readouterr().out
    from_llm = load_from_llm(tmp_path / "out")
    assert from_llm is not None and from_llm.sum() == 20


# --- the selection rule -------------------------------------------------------------------------


def _quota_holds(strata: np.ndarray, order: np.ndarray) -> bool:
    """Every prefix of ``order`` holds floor..ceil of its proportional share of each stratum."""
    sizes = np.bincount(strata)
    n = len(strata)
    counts = np.zeros(len(sizes), dtype=np.int64)
    for m, position in enumerate(order, start=1):
        counts[strata[position]] += 1
        if ((counts < (m * sizes) // n) | (counts > -((-m * sizes) // n))).any():
            return False
    return True


@given(
    strata=st.lists(st.integers(0, 6), min_size=1, max_size=80),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_order_is_nested_deterministic_and_proportional(strata: list[int], seed: int, data) -> None:
    strata_array = np.array(strata, dtype=np.int64)
    full = stratified_order(strata_array, seed, len(strata))
    assert sorted(full.tolist()) == list(range(len(strata)))  # a permutation of the pool
    count = data.draw(st.integers(0, len(strata)))
    np.testing.assert_array_equal(stratified_order(strata_array, seed, count), full[:count])  # nested
    np.testing.assert_array_equal(stratified_order(strata_array, seed, len(strata)), full)  # deterministic
    assert _quota_holds(strata_array, full)


@given(sizes=st.lists(st.integers(1, 200), min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1))
@example(sizes=[12, 25, 4, 193, 162], seed=0)  # the largest-deficit greedy misses a quota here
def test_every_prefix_of_the_order_meets_its_quota(sizes: list[int], seed: int) -> None:
    strata = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    assert _quota_holds(strata, stratified_order(strata, seed, len(strata)))


def test_quota_check_detects_an_unstratified_order() -> None:
    strata = np.array([0] * 10 + [1] * 10)
    assert not _quota_holds(strata, np.arange(20))  # all of stratum 0 first
    assert _quota_holds(strata, stratified_order(strata, 0, 20))


def test_seed_changes_the_order_within_strata() -> None:
    strata = np.repeat(np.arange(4), 25)
    orders = {tuple(stratified_order(strata, seed, 20)) for seed in range(4)}
    assert len(orders) == 4


def test_strata_follow_log2_length_and_last_item_popularity_quartiles() -> None:
    lengths = np.array([1, 2, 3, 4, 7, 8, 15, 16])
    same_item = np.ones(8, dtype=np.int64)
    strata = strata_of(lengths, same_item, np.array([0, 5]))
    assert strata.tolist() == [0, 1, 1, 2, 2, 3, 3, 4]  # 1 | 2-3 | 4-7 | 8-15 | 16-31

    popularity = np.arange(9) * 10  # item i has popularity 10 i
    items = np.arange(1, 9)
    by_popularity = strata_of(np.full(8, 3), items, popularity)
    assert (np.diff(by_popularity) >= 0).all() and len(np.unique(by_popularity)) == 4  # quartiles
    assert len(set(strata_of(np.full(8, 3), np.ones(8, np.int64), popularity).tolist())) == 1  # ties


def _pool_and_test(ds: SessionDataset) -> tuple[SampleSet, np.ndarray]:
    parts = list(ds.splits.values())
    prefixes = [p.prefix(i) for p in parts for i in range(len(p))]
    samples = SampleSet.from_lists(
        prefixes, np.concatenate([p.targets for p in parts]), np.concatenate([p.sample_ids for p in parts])
    )
    in_pool = np.concatenate([np.full(len(s), name != "test") for name, s in ds.splits.items()])
    return samples, in_pool


def test_plan_selects_pool_rows_only_and_is_nested_over_budgets() -> None:
    ds = dataset()
    samples, in_pool = _pool_and_test(ds)
    previous = np.zeros(len(samples), dtype=bool)
    for budget in (0.1, 6, 0.3, 20, 0.75, 1):
        plan = plan_budget(samples, in_pool, ds.n_items, budget, seed=3)
        assert plan.selected == budget_count(budget, 51) and plan.pool == 51
        assert not (plan.from_llm & ~in_pool).any()  # never a test sample
        assert (plan.from_llm >= previous).all()  # a larger budget keeps the smaller one's samples
        previous = plan.from_llm
    assert previous[in_pool].all()
    other_seed = plan_budget(samples, in_pool, ds.n_items, 0.3, seed=4).from_llm
    assert not np.array_equal(other_seed, plan_budget(samples, in_pool, ds.n_items, 0.3, seed=3).from_llm)


def test_selection_does_not_depend_on_how_the_pool_is_split_or_ordered() -> None:
    """Each seed of `llm4sbr run --seeds` carves another valid split out of the same pool."""
    ds = dataset()
    samples, in_pool = _pool_and_test(ds)
    chosen = samples.sample_ids[plan_budget(samples, in_pool, ds.n_items, 0.4, seed=0).from_llm]
    shuffled = np.random.default_rng(1).permutation(len(samples))
    moved = samples.subset(shuffled)
    moved_plan = plan_budget(moved, in_pool[shuffled], ds.n_items, 0.4, seed=0)
    assert set(moved.sample_ids[moved_plan.from_llm].tolist()) == set(chosen.tolist())


def test_selection_is_stratified_by_length() -> None:
    """Short and long sessions are taken in proportion: a 20 % budget over a pool of 80 short
    and 20 long prefixes takes 16 short and 4 long ones."""
    prefixes = [[1, 2]] * 80 + [[1, 2, 3, 4, 5, 6, 7, 8]] * 20
    samples = SampleSet.from_lists(prefixes, [3] * 100, np.arange(100))
    plan = plan_budget(samples, np.ones(100, bool), 10, 0.2, seed=0)
    assert plan.from_llm[:80].sum() == 16 and plan.from_llm[80:].sum() == 4


@pytest.mark.parametrize("popular", [80, 20])
def test_selection_is_stratified_by_last_item_popularity(popular: int) -> None:
    """``popular`` samples end on item 1, the target of every one of them; the others end on
    item 2, nobody's target. A 20 % budget takes each group in proportion, whichever is larger."""
    prefixes = [[3, 1]] * popular + [[3, 2]] * (100 - popular)
    samples = SampleSet.from_lists(prefixes, [1] * popular + [4] * (100 - popular), np.arange(100))
    plan = plan_budget(samples, np.ones(100, bool), 10, 0.2, seed=0)
    assert plan.strata == 2
    assert plan.from_llm[:popular].sum() == popular // 5
    assert plan.from_llm[popular:].sum() == (100 - popular) // 5


def test_holdout_is_deterministic_disjoint_and_at_least_one() -> None:
    train, valid = holdout_split(2, 0)
    assert len(train) == 1 and len(valid) == 1
    train, valid = holdout_split(31, 5)
    assert len(valid) == 3 and sorted([*train, *valid]) == list(range(31))
    np.testing.assert_array_equal(holdout_split(31, 5)[1], valid)
    with pytest.raises(ValueError, match="at least 2"):
        holdout_split(1, 0)


# --- infer_intents under a budget -------------------------------------------------------------------


def test_only_the_selected_train_and_valid_samples_reach_the_llm(tmp_path: Path) -> None:
    ds = dataset()
    backend = RecordingBackend()
    result = run(tmp_path, 0.3, backend)
    out = tmp_path / "out"
    from_llm = load_from_llm(out)
    rows = rows_of(ds)
    assert from_llm is not None and from_llm.shape == (60,) and from_llm.sum() == 15
    np.testing.assert_array_equal(result.sample_ids, [sid for _, sid, _ in rows])
    assert all(split != "test" for (split, _, _), llm in zip(rows, from_llm, strict=True) if llm)

    asked = set().union(*(prompts_of(ds, p) for (_, _, p), llm in zip(rows, from_llm, strict=True) if llm))
    assert set(backend.seen) == asked and len(backend.seen) == len(asked)
    pool_prompts = set().union(*(prompts_of(ds, p) for split, _, p in rows if split != "test"))
    test_only = set().union(*(prompts_of(ds, p) for split, _, p in rows if split == "test")) - pool_prompts
    assert test_only and not test_only & set(backend.seen)

    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["sample_id"] for a in answers] == result.sample_ids[from_llm].tolist()


def test_llm_rows_match_a_full_run_and_the_other_rows_are_predicted(tmp_path: Path) -> None:
    budgeted = run(tmp_path, 0.3)
    full = run(tmp_path, None, out="full")
    from_llm = load_from_llm(tmp_path / "out")
    vectors, ids = load_intents(tmp_path / "out")
    assert vectors.shape == full.vectors.shape and np.isfinite(vectors).all()
    np.testing.assert_array_equal(ids, full.sample_ids)
    np.testing.assert_array_equal(vectors[from_llm], np.asarray(full.vectors)[from_llm])
    assert not np.array_equal(vectors[~from_llm], np.asarray(full.vectors)[~from_llm])
    IntentLookup(vectors, ids, dataset())  # stage 2 reads every sample
    assert budgeted.meta["counts"]["llm_samples"] == 15 and budgeted.meta["counts"]["prompts"] == 30

    full_from_llm = load_from_llm(tmp_path / "full")
    assert full_from_llm is not None and full_from_llm.all() and full.meta["budget"] is None


def test_meta_records_the_budget(tmp_path: Path) -> None:
    meta = run(tmp_path, 0.3).meta
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    budget = meta["budget"]
    assert budget["requested"] == 0.3 and budget["rule"] == RULE and budget["seed"] == 0
    assert (budget["pool"], budget["selected"]) == (51, 15) and budget["pool_splits"] == ["train", "valid"]
    from_llm = load_from_llm(tmp_path / "out")
    assert from_llm is not None
    filled = budget["filled_by_prediction"]
    assert filled["test"] == 9 and filled["total"] == 45 == int((~from_llm).sum())
    assert filled["train"] + filled["valid"] == 51 - 15
    assert filled["train"] == 42 - int(from_llm[:42].sum())
    predictor = budget["predictor"]
    assert (predictor["train_samples"], predictor["valid_samples"]) == (13, 2)
    for key in ("valid", "valid_baseline"):
        assert set(predictor[key]) == {"mse", "cosine_long", "cosine_short"}
        assert all(math.isfinite(v) for v in predictor[key].values())
    assert 1 <= predictor["best_epoch"] <= predictor["epochs_run"]


def test_a_larger_budget_asks_only_for_the_new_samples(tmp_path: Path) -> None:
    ds = dataset()
    first = RecordingBackend()
    run(tmp_path, 0.2, first)
    small = load_from_llm(tmp_path / "out")
    larger = RecordingBackend()
    result = run(tmp_path, 20, larger)
    large = load_from_llm(tmp_path / "out")
    assert small is not None and large is not None and large.sum() == 20
    assert (large >= small).all()
    rows = rows_of(ds)
    new = set().union(*(prompts_of(ds, p) for (_, _, p), n in zip(rows, large & ~small, strict=True) if n))
    assert set(larger.seen) == new - set(first.seen)
    assert result.meta["counts"]["from_cache"] == len(set(first.seen))


def test_rerun_asks_nothing_and_writes_the_same_intents(tmp_path: Path) -> None:
    first = run(tmp_path, 0.3)
    again = RecordingBackend()
    rerun = run(tmp_path, 0.3, again)
    assert again.stats["calls"] == 0
    np.testing.assert_array_equal(np.asarray(rerun.vectors), np.asarray(first.vectors))
    assert rerun.meta["budget"]["predictor"] == first.meta["budget"]["predictor"]


def test_whole_pool_budget_still_predicts_the_test_samples(tmp_path: Path) -> None:
    backend = RecordingBackend()
    result = run(tmp_path, 1, backend)
    from_llm = load_from_llm(tmp_path / "out")
    assert from_llm is not None and from_llm[:51].all() and not from_llm[51:].any()
    assert result.meta["budget"]["filled_by_prediction"] == {"train": 0, "valid": 0, "test": 9, "total": 9}


def test_a_budget_too_small_to_fill_fails_before_any_llm_call(tmp_path: Path) -> None:
    backend = RecordingBackend()
    with pytest.raises(ValueError, match="selects 1 of the 51 train\\+valid samples"):
        run(tmp_path, 0.001, backend)
    assert backend.stats["calls"] == 0 and not (tmp_path / "out" / "meta.json").exists()


def test_budget_respects_limit(tmp_path: Path) -> None:
    result = run(tmp_path, 0.5, limit=6)
    assert result.meta["budget"]["pool"] == 12 and result.meta["budget"]["selected"] == 6
    assert llm_sample_count(dataset(), IntentConfig(llm_budget=0.5, limit=6)) == (18, 6)
    assert llm_sample_count(dataset(), IntentConfig()) == (60, 60)


def test_from_llm_of_an_old_run_does_not_outlive_a_rewrite(tmp_path: Path) -> None:
    run(tmp_path, 0.3)
    vectors, ids = load_intents(tmp_path / "out")
    save_intents(tmp_path / "out", np.asarray(vectors), ids)
    assert load_from_llm(tmp_path / "out") is None
    np.save(tmp_path / "out" / "from_llm.npy", np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="expected \\[60\\] bool"):
        load_from_llm(tmp_path / "out")


def test_fill_predictor_refuses_non_finite_intents() -> None:
    samples = SampleSet.from_lists([[1, 2], [2, 3], [3, 4], [4, 5]], [3, 4, 5, 6], np.arange(4))
    vectors = np.full((4, 2, 8), np.nan, dtype=np.float32)
    with pytest.raises(FloatingPointError, match="the LLM samples' intent vectors"):
        fit_fill_predictor(samples, vectors, 6, seed=0)


def test_run_pipeline_prints_how_many_samples_go_to_the_llm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import llm4sbr.pipeline as pipeline
    from llm4sbr.config import TrainConfig

    seen: dict[str, Path] = {}

    def stage2(
        base: TrainConfig, ds: SessionDataset, intents: Path, out: Path, progress: bool, controls=()
    ) -> dict:
        seen["intents"] = intents
        metrics = dict.fromkeys(pipeline.METRIC_COLUMNS, 0.0)
        return {"paths": dict.fromkeys(pipeline.PATH_NAMES, metrics)}

    monkeypatch.setattr(pipeline, "run_dataset", lambda config: dataset())
    monkeypatch.setattr(pipeline, "_stage2", stage2)
    config = IntentConfig(backend="fake", encoder="fake", llm_budget=0.3)
    summary = pipeline.run_pipeline(TrainConfig(), config, tmp_path, progress=False)
    assert "intents for 60 samples (15 from the LLM, the rest predicted)" in capsys.readouterr().out
    assert summary["intents"]["budget"]["selected"] == 15
    from_llm = load_from_llm(seen["intents"])
    assert from_llm is not None and from_llm.sum() == 15


def test_predicted_intents_beat_noise(tmp_path: Path) -> None:
    """The fill starts from the LLM samples' per-item table: its held-out error is of the order
    of the mean's, not that of a randomly initialised network."""
    predictor = run(tmp_path, 0.5).meta["budget"]["predictor"]
    assert predictor["valid"]["mse"] < 2 * predictor["valid_baseline"]["mse"]


def test_fill_falls_back_to_the_mean_when_the_predictor_does_not_beat_it() -> None:
    """Intents unrelated to the session (noise): the held-out samples pick the mean, and every
    filled row is the training mean. Intents set by the last item: the predictor wins."""
    samples = dataset().splits["train"]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(samples), 2, 4)).astype(np.float32)
    fill = fit_fill_predictor(samples, noise, 30, seed=0)
    assert fill.record["fill"] == "mean"
    assert fill.record["valid"]["mse"] >= fill.record["valid_baseline"]["mse"]
    train_rows, _ = holdout_split(len(samples), 0)
    predicted = fill.predict(samples)
    mean = np.broadcast_to(noise[train_rows].mean(0), predicted.shape)
    np.testing.assert_allclose(predicted, mean, rtol=1e-6)

    table = rng.normal(size=(31, 2, 4)).astype(np.float32) * 3
    last = np.array([samples.prefix(i)[-1] for i in range(len(samples))])
    fill = fit_fill_predictor(samples, table[last], 30, seed=0)
    assert fill.record["fill"] == "predictor"
    assert fill.record["valid"]["mse"] < fill.record["valid_baseline"]["mse"]
