"""The whole method in one call, and multi-seed training: what ``llm4sbr run`` and
``llm4sbr train --seeds`` do, as a Python API.

:func:`run_pipeline`: stage 1 (LLM intents, cached and resumable) once, then for each seed
SRGNN and LLM4SBR (resumed when done before, retrained when what they depend on changed), the
intent predictor, and the test metrics of three paths (SRGNN, LLM4SBR with the stage-1 intents,
LLM4SBR with predicted intents); a summary table over the seeds.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4sbr.atomic import write_atomic
from llm4sbr.config import TrainConfig
from llm4sbr.data import SessionDataset, run_dataset
from llm4sbr.intent import (
    CONTROLS,
    IntentConfig,
    infer_intents,
    llm_sample_count,
    write_control_intents,
)
from llm4sbr.intent.predictor import PREDICTOR_FILE
from llm4sbr.training import (
    StaleRunError,
    TrainResult,
    evaluate_paths,
    train,
    train_intent_predictor,
)

METRIC_COLUMNS = ("hit@5", "hit@10", "hit@20", "mrr@5", "mrr@10", "mrr@20", "ndcg@10", "ndcg@20")
PATH_NAMES = {
    "srgnn": "SRGNN",
    "oracle": "LLM4SBR, stage-1 LLM intents",
    "predictor": "LLM4SBR, predicted intents (no LLM)",
}


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = METRIC_COLUMNS) -> str:
    """Markdown table of metrics in percent, one row per model."""
    head = "| model | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = [
        f"| {name} | " + " | ".join(f"{100 * m[c]:.2f}" for c in columns) + " |" for name, m in rows.items()
    ]
    return "\n".join([head, rule, *body])


def format_mean_std(runs: dict[str, list[dict[str, float]]], columns: Sequence[str] = METRIC_COLUMNS) -> str:
    """One markdown row per metric and one column per name in ``runs``: mean +- sample std of
    that name's runs, in percent."""
    lines = ["| metric | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for c in columns:
        cells = []
        for named in runs.values():
            values = [100 * r[c] for r in named]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {std:.2f}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_or_resume(
    config: TrainConfig, out: Path, dataset: SessionDataset, progress: bool = True
) -> TrainResult:
    """Resume the run in ``out`` (or skip it when finished); train it again from scratch when it
    was trained on another config, dataset or set of intents."""
    try:
        return train(config, out, dataset=dataset, resume=True, progress=progress)
    except StaleRunError as stale:
        print(f"{stale}: training it again")
        return train(config, out, dataset=dataset, overwrite=True, progress=progress)


def train_seeds(
    config: TrainConfig, seeds: Sequence[int], out: str | Path, progress: bool = True
) -> tuple[list[dict[str, Any]], str, int]:
    """One run of ``config`` per seed (the seed also carves the validation split) in
    ``out/seed<S>``, resumable; writes summary.json and summary.md (test mean +- std) in ``out``
    and returns (the runs, the markdown table, the number of test samples)."""
    out = Path(out)
    runs = []
    for seed in seeds:
        seeded = dataclasses.replace(config, seed=seed)
        dataset = run_dataset(seeded)
        result = train(seeded, out / f"seed{seed}", dataset=dataset, resume=True, progress=progress)
        print(f"seed {seed}: best epoch {result.best_epoch}, test hit@20 {100 * result.test['hit@20']:.2f}")
        runs.append({"seed": seed, **dataclasses.asdict(result)})
    table = format_mean_std({config.model: [r["test"] for r in runs]})
    summary = {"config": dataclasses.asdict(config), "runs": runs}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_atomic(out / "summary.md", table + "\n")
    return runs, table, len(dataset.splits["test"])


def _stage2(
    base: TrainConfig,
    dataset: SessionDataset,
    intents: Path,
    out: Path,
    progress: bool,
    controls: Sequence[str] = (),
) -> dict:
    """SRGNN and LLM4SBR on ``dataset``, the intent predictor and the three test paths of
    :func:`llm4sbr.training.evaluate_paths`, under ``out``; then LLM4SBR trained and tested on
    each control of ``controls`` (:mod:`llm4sbr.intent.controls`), path ``control_<kind>``."""
    steps = 4 + len(controls)
    results = {}
    for step, model in enumerate(("srgnn", "llm4sbr"), start=2):
        config = dataclasses.replace(base, model=model, intents=str(intents) if model == "llm4sbr" else None)
        print(f"[{step}/{steps}] training {model} (seed {base.seed}) -> {out / model}")
        results[model] = dataclasses.asdict(train_or_resume(config, out / model, dataset, progress))
    print(f"[4/{steps}] intent predictor for serving without an LLM (seed {base.seed})")
    best = out / "llm4sbr" / "best.pt"
    predictor = best.parent / PREDICTOR_FILE
    if not predictor.exists() or predictor.stat().st_mtime < best.stat().st_mtime:
        train_intent_predictor(best, dataset=dataset, progress=progress)
    results["paths"] = evaluate_paths(best, srgnn_checkpoint=out / "srgnn" / "best.pt", dataset=dataset)
    for step, kind in enumerate(controls, start=5):
        run = out / f"llm4sbr-{kind}"
        print(f"[{step}/{steps}] control: LLM4SBR on {kind} intents (seed {base.seed}) -> {run}")
        control = write_control_intents(intents, kind, run / "intents", seed=base.seed)
        config = dataclasses.replace(base, model="llm4sbr", intents=str(control))
        # Training already tested the selected epoch on the control intents.
        results["paths"][f"control_{kind}"] = train_or_resume(config, run / "model", dataset, progress).test
    return results


def path_names(controls: Sequence[str] = ()) -> dict[str, str]:
    """Table row names of the test paths, controls last."""
    return {**PATH_NAMES, **{f"control_{kind}": f"LLM4SBR, {kind} intents (control)" for kind in controls}}


def run_pipeline(
    train_config: TrainConfig,
    intent_config: IntentConfig,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    controls: Sequence[str] = (),
) -> dict[str, Any]:
    """Stage 1 on ``train_config.data`` / ``preset``, then stage 2 for ``train_config.seed`` (or
    once per seed of ``seeds``, each in ``out/seed<S>``). Writes ``out/summary.json`` and
    ``out/summary.md``; returns {"intents": stage-1 meta, "results": ..., "table": markdown,
    "heading": what the table shows}. Rerunning resumes where it stopped. With
    ``intent_config.llm_budget`` stage 1 asks the LLM for the budget's train and valid samples
    only (the same ones whatever the seed) and predicts the other samples' intents. Each of
    ``controls`` ("shuffled", "random") adds a row: LLM4SBR trained and tested on control intents
    (:mod:`llm4sbr.intent.controls`), so the table shows what the LLM's intents add."""
    out = Path(out)
    unknown = [kind for kind in controls if kind not in CONTROLS]
    if unknown:
        raise ValueError(f"controls must be among {CONTROLS}, got {unknown}")
    names = path_names(controls)
    if seeds and intent_config.limit is not None:
        raise ValueError("--limit cannot be combined with --seeds: each seed carves another validation split")
    first = seeds[0] if seeds else train_config.seed
    dataset = run_dataset(dataclasses.replace(train_config, seed=first))
    samples, to_llm = llm_sample_count(dataset, intent_config)
    asked = "all from the LLM" if to_llm == samples else f"{to_llm} from the LLM, the rest predicted"
    print(f"[1/4] intents for {samples} samples ({asked}) -> {out / 'intents'}")
    intents = infer_intents(dataset, intent_config, out / "intents", progress=progress)
    if not seeds:
        results = _stage2(train_config, dataset, intents.out_dir, out, progress, controls)
        table = format_table({name: results["paths"][k] for k, name in names.items()})
        heading = "test metrics (%)"
    else:
        # Stage 1 covers every sample, whatever the split: each seed reuses it.
        results = {}
        for seed in seeds:
            seeded = dataclasses.replace(train_config, seed=seed)
            split = dataset if seed == first else run_dataset(seeded)
            results[f"seed{seed}"] = _stage2(
                seeded, split, intents.out_dir, out / f"seed{seed}", progress, controls
            )
        table = format_mean_std(
            {name: [r["paths"][k] for r in results.values()] for k, name in names.items()}
        )
        heading = f"test metrics (%, mean ± std over seeds {list(seeds)})"
    summary = {"intents": intents.meta, "results": results}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    write_atomic(out / "summary.md", table + "\n")
    n_test = len(dataset.splits["test"])
    return {**summary, "table": table, "heading": f"{heading}, {n_test} test samples, selected on validation"}
