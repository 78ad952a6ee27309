"""The ``llm4sbr`` command: a thin layer over the Python API.

llm4sbr train --model srgnn --data ml-100k          train + validate + test one model
llm4sbr evaluate --checkpoint runs/x/best.pt        re-evaluate a checkpoint
llm4sbr infer-intents --data ml-100k --out DIR      stage 1: LLM intents -> intents.npy
llm4sbr run --data ml-100k                          stage 1 + SRGNN + LLM4SBR + comparison table
llm4sbr train-predictor --checkpoint runs/x/best.pt intent predictor for serving without an LLM
llm4sbr recommend --checkpoint runs/x/best.pt 50 172 133   top-k next items, no LLM call
llm4sbr bench --suite kernels|train|serve|llm|all    latency and memory, tables and plots
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4sbr.atomic import write_atomic
from llm4sbr.config import TrainConfig, from_dict, load_yaml

METRIC_COLUMNS = ("hit@5", "hit@10", "hit@20", "mrr@5", "mrr@10", "mrr@20", "ndcg@10", "ndcg@20")


def _flag_type(annotation: Any):
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    if kind is bool:
        return lambda s: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[
            s.lower()
        ]
    return kind


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per dataclass field (default: unset, so YAML values and defaults apply)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (also settable in --config YAML)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_flag_type(hints[f.name]),
            default=argparse.SUPPRESS,
            help=f"default: {f.default!r}",
        )


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "config", None):
        return load_yaml(cls, args.config, overrides)
    return from_dict(cls, overrides)


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
    import statistics

    lines = ["| metric | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for c in columns:
        cells = []
        for named in runs.values():
            values = [100 * r[c] for r in named]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {std:.2f}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cmd_train(args: argparse.Namespace) -> int:
    from llm4sbr.train import distributed_env, train

    config = config_from_args(TrainConfig, args)
    if args.seeds:
        return _train_seeds(config, args)
    out = Path(args.out or f"runs/{config.model}-{Path(config.data).name}-seed{config.seed}")
    result = train(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if distributed_env().rank != 0:
        return 0
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run} "
        f"(selected on validation {config.select_metric})"
    )
    print(format_table({f"{config.model} valid": result.valid, f"{config.model} test": result.test}))
    print(f"checkpoint: {out / 'best.pt'}")
    return 0


def _train_seeds(config: TrainConfig, args: argparse.Namespace) -> int:
    """Train one run per seed into <out>/seed<S>, then report test mean +- std over the seeds."""
    from llm4sbr.train import run_dataset, train

    out = Path(args.out or f"runs/{config.model}-{Path(config.data).name}-seeds")
    runs = []
    for seed in args.seeds:
        seeded = dataclasses.replace(config, seed=seed)
        dataset = run_dataset(seeded)
        result = train(seeded, out / f"seed{seed}", dataset=dataset, resume=True, progress=not args.quiet)
        print(f"seed {seed}: best epoch {result.best_epoch}, test hit@20 {100 * result.test['hit@20']:.2f}")
        runs.append({"seed": seed, **dataclasses.asdict(result)})
    table = format_mean_std({config.model: [r["test"] for r in runs]})
    write_atomic(
        out / "summary.json", json.dumps({"config": dataclasses.asdict(config), "runs": runs}, indent=2)
    )
    write_atomic(out / "summary.md", table + "\n")
    n_test = len(dataset.splits["test"])
    print(
        f"\n{config.model} on {config.data}: test metrics (%, mean ± std) over seeds {args.seeds}, "
        f"{n_test} test samples"
    )
    print(table)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from llm4sbr.train import IntentLookup, evaluate, load_trained, resolve_device, run_dataset

    device = resolve_device(args.device)
    model, config, _ = load_trained(args.checkpoint, device)
    dataset = run_dataset(config)
    intents = IntentLookup.load(config.intents, dataset) if config.model == "llm4sbr" else None
    metrics = evaluate(
        model,
        dataset.splits[args.split],
        batch_size=config.eval_batch_size,
        max_len=config.max_len,
        intents=intents,
        device=device,
        progress=not args.quiet,
    )
    print(
        json.dumps(metrics, indent=2)
        if args.json
        else format_table({f"{config.model} {args.split}": metrics})
    )
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="ml-100k", help="'ml-100k' (bundled) or a path (default: ml-100k)")
    parser.add_argument("--preset", help="movielens | amazon | srgnn | leave-one-out (default: by source)")


def _cmd_infer_intents(args: argparse.Namespace) -> int:
    from llm4sbr.data import load_dataset
    from llm4sbr.intent import config_from_args as intent_config
    from llm4sbr.intent import infer_intents

    dataset = load_dataset(args.data, args.preset)
    result = infer_intents(dataset, intent_config(args), args.out, progress=not args.quiet)
    timing, counts = result.meta["timing"], result.meta["counts"]
    print(
        f"wrote {result.out_dir}/intents.npy {list(result.vectors.shape)}: {counts['generated']} prompts "
        f"generated, {counts['from_cache']} from cache, {timing['prompts_per_s']} prompts/s"
    )
    return 0


PATH_NAMES = {
    "srgnn": "SRGNN",
    "oracle": "LLM4SBR, stage-1 LLM intents",
    "predictor": "LLM4SBR, predicted intents (no LLM)",
}


def _stage2(args: argparse.Namespace, base: TrainConfig, dataset: Any, intents: Path, out: Path, seed: int):
    """SRGNN and LLM4SBR on ``dataset`` (resumed when done before), the intent predictor, and the
    three test paths of :func:`llm4sbr.serve.evaluate_paths`, under ``out``."""
    from llm4sbr.intent_predictor import PREDICTOR_FILE, train_intent_predictor
    from llm4sbr.serve import evaluate_paths
    from llm4sbr.train import train

    results = {}
    for step, model in enumerate(("srgnn", "llm4sbr"), start=2):
        config = dataclasses.replace(
            base,
            data=args.data,
            preset=args.preset,
            model=model,
            epochs=args.epochs or base.epochs,
            seed=seed,
            intents=str(intents) if model == "llm4sbr" else None,
        )
        print(f"[{step}/4] training {model} (seed {seed}) -> {out / model}")
        result = train(config, out / model, dataset=dataset, resume=True, progress=not args.quiet)
        results[model] = dataclasses.asdict(result)
    print(f"[4/4] intent predictor for serving without an LLM (seed {seed})")
    best = out / "llm4sbr" / "best.pt"
    predictor = best.parent / PREDICTOR_FILE
    if not predictor.exists() or predictor.stat().st_mtime < best.stat().st_mtime:
        train_intent_predictor(best, dataset=dataset, progress=not args.quiet)
    results["paths"] = evaluate_paths(best, srgnn_checkpoint=out / "srgnn" / "best.pt", dataset=dataset)
    return results


def _cmd_run(args: argparse.Namespace) -> int:
    from llm4sbr.intent import config_from_args as intent_config
    from llm4sbr.intent import infer_intents
    from llm4sbr.train import run_dataset

    out = Path(args.out or f"runs/{Path(args.data).name}")
    base = load_yaml(TrainConfig, args.train_config) if args.train_config else TrainConfig()
    seeds = args.seeds or [args.seed]
    if args.seeds and args.limit is not None:
        raise ValueError("--limit cannot be combined with --seeds: each seed carves another validation split")

    def split(seed: int) -> Any:
        return run_dataset(dataclasses.replace(base, data=args.data, preset=args.preset, seed=seed))

    dataset = split(seeds[0])
    print(f"[1/4] intents for {sum(len(s) for s in dataset.splits.values())} samples -> {out / 'intents'}")
    intents = infer_intents(dataset, intent_config(args), out / "intents", progress=not args.quiet)
    if not args.seeds:
        results = _stage2(args, base, dataset, intents.out_dir, out, args.seed)
        table = format_table({PATH_NAMES[k]: results["paths"][k] for k in PATH_NAMES})
        heading = "test metrics (%)"
    else:
        # Stage 1 covers every sample, whatever the split: each seed reuses it.
        results = {}
        for seed in seeds:
            seeded = dataset if seed == seeds[0] else split(seed)
            results[f"seed{seed}"] = _stage2(args, base, seeded, intents.out_dir, out / f"seed{seed}", seed)
        table = format_mean_std(
            {name: [r["paths"][k] for r in results.values()] for k, name in PATH_NAMES.items()}
        )
        heading = f"test metrics (%, mean ± std over seeds {seeds})"
    summary = {"intents": intents.meta, "results": results}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    write_atomic(out / "summary.md", table + "\n")
    print(f"\n{heading}, {len(dataset.splits['test'])} test samples, selected on validation:")
    print(table)
    return 0


def _cmd_train_predictor(args: argparse.Namespace) -> int:
    from llm4sbr.intent_predictor import train_intent_predictor

    result = train_intent_predictor(args.checkpoint, out=args.out, progress=not args.quiet)
    print(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from llm4sbr.serve import Recommender

    recommender = Recommender.load(args.checkpoint, device=args.device)
    for item, score in recommender.recommend(
        args.items, k=args.k, exclude_seen=args.exclude_seen, on_unknown=args.on_unknown
    ):
        print(f"{item}\t{score:.4f}")
    if args.explain:
        explained = recommender.explain(args.items, k=args.explain, on_unknown=args.on_unknown)
        for view, nearest in explained.items():
            items = "; ".join(f"{name} [{item}] {cosine:.2f}" for item, name, cosine in nearest)
            print(f"# {view}-term intent is nearest to: {items}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm4sbr",
        description="LLM4SBR session-based recommendation: intents from an LLM, SR-GNN with Triton kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train and evaluate one model (selection on the validation split)")
    p.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    p.add_argument("--out", help="run directory (default: runs/<model>-<data>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="start over even if --out holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--seeds", type=int, nargs="+", help="train once per seed (resumable) and report test mean +- std"
    )
    add_config_flags(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the test (or validation) split")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "train-predictor", help="distil an LLM4SBR run's stage-1 intents into a predictor for serving"
    )
    p.add_argument("--checkpoint", required=True, help="best.pt of an LLM4SBR run")
    p.add_argument("--out", help="default: intent_predictor.pt next to the checkpoint")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train_predictor)

    p = sub.add_parser("recommend", help="top-k next items for one session, no LLM call")
    p.add_argument("--checkpoint", required=True, help="best.pt (LLM4SBR needs its intent predictor)")
    p.add_argument("items", nargs="+", help="the session's raw item ids, oldest first")
    p.add_argument("-k", type=int, default=20)
    p.add_argument("--exclude-seen", action="store_true", help="never recommend an item of the session")
    p.add_argument("--on-unknown", choices=("raise", "skip"), default="raise")
    p.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="also print the N catalog items nearest each predicted intent (LLM4SBR only)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_recommend)

    from llm4sbr.bench import add_bench_arguments, cmd_bench

    p = sub.add_parser(
        "bench", help="latency and memory benchmarks -> JSON, CSV, tables and plots under --out"
    )
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    from llm4sbr.intent import add_arguments as add_intent_flags

    p = sub.add_parser("infer-intents", help="stage 1: LLM intents for every sample -> intents.npy")
    _add_data_flags(p)
    p.add_argument("--out", required=True, help="output folder (intents.npy, sample_ids.npy, meta.json)")
    p.add_argument("--quiet", action="store_true")
    add_intent_flags(p)
    p.set_defaults(func=_cmd_infer_intents)

    p = sub.add_parser(
        "run",
        help="the whole method: intents (cached) -> SRGNN and LLM4SBR -> test comparison table",
        description="Stage 1 then stage 2 for both models; rerunning resumes where it stopped.",
    )
    _add_data_flags(p)
    p.add_argument("--out", help="run folder (default: runs/<data>)")
    p.add_argument("--epochs", type=int, help="max training epochs (default: 30, or --train-config)")
    p.add_argument("--train-config", help="YAML of TrainConfig keys for both models")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="stage 2 once per seed (the seed also carves the validation split) under <out>/seed<S>, "
        "then mean ± std of every path; stage 1 runs once",
    )
    p.add_argument("--quiet", action="store_true")
    add_intent_flags(p)
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
        print(f"llm4sbr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
