"""The ``llm4sbr`` command: argument parsing only; the work is in the Python API.

llm4sbr train --model srgnn --data ml-100k          train + validate + test one model
llm4sbr evaluate --checkpoint runs/x/best.pt        re-evaluate a checkpoint
llm4sbr infer-intents --data ml-100k --out DIR      stage 1: LLM intents -> intents.npy
llm4sbr run --data ml-100k                          stage 1 + SRGNN + LLM4SBR + comparison table
llm4sbr train-predictor --checkpoint runs/x/best.pt intent predictor for serving without an LLM
llm4sbr recommend --checkpoint runs/x/best.pt 50 172 133   top-k next items, no LLM call
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4sbr.config import TrainConfig, from_dict, load_yaml


def _flag_type(annotation: Any):
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    if kind is bool:
        return lambda s: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[
            s.lower()
        ]
    return kind


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = (), title: str | None = None
) -> None:
    """One ``--flag`` per dataclass field, with its description, choices and default (left unset
    when not given, so YAML values and the dataclass defaults apply)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} (also settable in --config YAML)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_flag_type(hints[f.name]),
            choices=f.metadata.get("choices"),
            default=argparse.SUPPRESS,
            help=f"{f.metadata.get('help', '')} (default: {f.default!r})",
        )


def config_from_args(cls: type, args: argparse.Namespace, config_file: str | None = None) -> Any:
    """``cls`` from a YAML file (``config_file``, else ``args.config``) overridden by the flags
    of :func:`add_config_flags`."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    path = config_file or getattr(args, "config", None)
    if path:
        return load_yaml(cls, path, overrides)
    return from_dict(cls, overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from llm4sbr.pipeline import format_table, train_seeds
    from llm4sbr.training import train
    from llm4sbr.training.distributed import distributed_env

    config = config_from_args(TrainConfig, args)
    if args.seeds:
        out = Path(args.out or f"runs/{config.model}-{Path(config.data).name}-seeds")
        _, table, n_test = train_seeds(config, args.seeds, out, progress=not args.quiet)
        print(
            f"\n{config.model} on {config.data}: test metrics (%, mean ± std) over seeds {args.seeds}, "
            f"{n_test} test samples"
        )
        print(table)
        return 0
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from llm4sbr.data import run_dataset
    from llm4sbr.intent.lookup import IntentLookup
    from llm4sbr.models import load_trained
    from llm4sbr.pipeline import format_table
    from llm4sbr.training import evaluate
    from llm4sbr.training.distributed import resolve_device

    device = resolve_device(args.device)
    model, config, _ = load_trained(args.checkpoint, device)
    dataset = run_dataset(config)
    intents = IntentLookup.load(config.intents, dataset) if model.uses_intents else None
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
    from llm4sbr.data import PRESETS

    parser.add_argument("--data", default="ml-100k", help="'ml-100k' (bundled) or a path (default: ml-100k)")
    parser.add_argument("--preset", choices=PRESETS, help="session preset (default: by source)")
    parser.add_argument(
        "--items", help="CSV of item_id,title for a CSV log (default: <log>.items.csv next to it, if any)"
    )


def _cmd_infer_intents(args: argparse.Namespace) -> int:
    from llm4sbr.data import load_dataset
    from llm4sbr.intent import config_from_args as intent_config
    from llm4sbr.intent import infer_intents

    dataset = load_dataset(args.data, args.preset, items=args.items)
    result = infer_intents(dataset, intent_config(args), args.out, progress=not args.quiet)
    timing, counts = result.meta["timing"], result.meta["counts"]
    print(
        f"wrote {result.out_dir}/intents.npy {list(result.vectors.shape)}: {counts['generated']} prompts "
        f"generated, {counts['from_cache']} from cache, {timing['prompts_per_s']} prompts/s"
    )
    if result.meta["budget"] is not None:
        filled = result.meta["budget"]["filled_by_prediction"]["total"]
        llm = counts["llm_samples"]
        print(f"--llm-budget: {llm} samples from the LLM, {filled} predicted (from_llm.npy)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from llm4sbr.intent import config_from_args as intent_config
    from llm4sbr.pipeline import run_pipeline

    train_config = config_from_args(TrainConfig, args, config_file=args.train_config)
    train_config = dataclasses.replace(train_config, data=args.data, preset=args.preset, items=args.items)
    out = Path(args.out or f"runs/{Path(args.data).name}")
    summary = run_pipeline(
        train_config,
        intent_config(args),
        out,
        seeds=args.seeds,
        progress=not args.quiet,
        controls=args.controls,
    )
    print(f"\n{summary['heading']}:")
    print(summary["table"])
    return 0


def _cmd_train_predictor(args: argparse.Namespace) -> int:
    from llm4sbr.training import train_intent_predictor

    result = train_intent_predictor(args.checkpoint, out=args.out, progress=not args.quiet)
    print(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from llm4sbr.serving import Recommender

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


RESUME_HINTS = {
    "train": "Finished epochs are saved in last.pt: rerun with --resume to continue.",
    "run": "Cached answers and finished epochs are kept: rerun the same command to continue.",
    "infer-intents": "Cached answers are kept: rerun the same command to continue.",
    "train-predictor": "Nothing was written: rerun the same command.",
    "evaluate": "Nothing was written.",
    "recommend": "Nothing was written.",
}


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
    p.add_argument("--split", choices=("test", "valid"), default="test", help="split to rank (default: test)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "train-predictor", help="distil an LLM4SBR run's stage-1 intents into a predictor for serving"
    )
    p.add_argument("--checkpoint", required=True, help="best.pt of an LLM4SBR run")
    p.add_argument("--out", help="default: intent_predictor.pt next to the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train_predictor)

    p = sub.add_parser("recommend", help="top-k next items for one session, no LLM call")
    p.add_argument("--checkpoint", required=True, help="best.pt (LLM4SBR needs its intent predictor)")
    p.add_argument("items", nargs="+", help="the session's raw item ids, oldest first")
    p.add_argument("-k", type=int, default=20, help="how many items to recommend (default: 20)")
    p.add_argument("--exclude-seen", action="store_true", help="never recommend an item of the session")
    p.add_argument(
        "--on-unknown",
        choices=("raise", "skip"),
        default="raise",
        help="an item id the model was not trained on: fail (default) or ignore it",
    )
    p.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="also print the N catalog items nearest each predicted intent (LLM4SBR only)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_cmd_recommend)

    from llm4sbr.intent import add_arguments as add_intent_flags

    p = sub.add_parser("infer-intents", help="stage 1: LLM intents for every sample -> intents.npy")
    _add_data_flags(p)
    p.add_argument("--out", required=True, help="output folder (intents.npy, sample_ids.npy, meta.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_intent_flags(p)
    p.set_defaults(func=_cmd_infer_intents)

    p = sub.add_parser(
        "run",
        help="the whole method: intents (cached) -> SRGNN and LLM4SBR -> test comparison table",
        description="Stage 1 then stage 2 for both models; rerunning resumes where it stopped.",
    )
    _add_data_flags(p)
    p.add_argument("--out", help="run folder (default: runs/<data>)")
    p.add_argument("--train-config", help="YAML of TrainConfig keys for both models; flags override it")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="stage 2 once per seed (the seed also carves the validation split) under <out>/seed<S>, "
        "then mean ± std of every path; stage 1 runs once",
    )
    p.add_argument(
        "--controls",
        nargs="+",
        choices=("shuffled", "random"),
        default=[],
        help="also train and test LLM4SBR on control intents (stage-1 vectors shuffled across samples, "
        "or Gaussian noise of their scale): the gap to the real intents is what the LLM adds",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_intent_flags(p)
    add_config_flags(
        p,
        TrainConfig,
        skip=("data", "preset", "items", "model", "intents"),
        title="stage 2 (both models' training)",
    )
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, FloatingPointError) as exc:
        return _input_error(args.command, exc)
    except MemoryError as exc:
        from llm4sbr.data.columnar import InsufficientMemoryError  # a log refused before reading it

        if not isinstance(exc, InsufficientMemoryError):
            raise
        return _input_error(args.command, exc)
    except KeyboardInterrupt:
        if _reports_errors():
            print(f"\nllm4sbr {args.command}: interrupted. {RESUME_HINTS[args.command]}", file=sys.stderr)
        return 130


def _input_error(command: str, exc: BaseException) -> int:
    if _reports_errors():
        print(f"llm4sbr {command}: error: {exc}", file=sys.stderr)
    return 2


def _reports_errors() -> bool:
    """Whether this process prints an input error or an interruption: under torchrun every rank
    checks the same flags and files (and gets the same Ctrl-C), so only rank 0 says it once;
    torchrun reports every rank's exit status."""
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
