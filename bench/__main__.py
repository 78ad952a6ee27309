"""``python -m bench``: run benchmark suites into a results folder, or print a folder's tables.

Run from the repository root:

    python -m bench --suite kernels|train|serve|llm|scale|all [--out bench/results/<device>] ...
    python -m bench --tables bench/results/cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from llm4sbr.data import PRESETS

from .harness import PROVIDERS, SHAPES, SUITES, BenchOptions, run_benchmarks
from .llm import RANDOM_LLM_CONFIGS
from .report import evaluate_targets, render_tables
from .scale import SCALE_SIZES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Latency and memory benchmarks -> JSON, CSV, tables and plots."
    )
    parser.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which benchmarks (default: all)"
    )
    parser.add_argument("--out", help="results folder (default: bench/results/<device>)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument(
        "--shapes", nargs="+", choices=tuple(SHAPES), default=list(SHAPES), help="kernel shapes"
    )
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per run (default 2)")
    parser.add_argument("--recbole-python", default=".venv-recbole/bin/python", help="RecBole's interpreter")
    parser.add_argument("--recbole-script", default="bench/recbole_peer.py")
    parser.add_argument(
        "--serve-checkpoint", help="also time Recommender.recommend of this trained run (best.pt)"
    )
    parser.add_argument("--llm-models", nargs="+", help=f"bundled or {', '.join(RANDOM_LLM_CONFIGS)}")
    parser.add_argument("--llm-prompts", type=int, default=8, help="prompts per LLM measurement")
    parser.add_argument("--llm-batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument(
        "--llm-max-prompt-items", type=int, help="bundled LLM prompts show the last N clicks (default: all)"
    )
    parser.add_argument(
        "--llm-precisions",
        nargs="*",
        default=["fp32", "bf16", "4bit"],
        help="transformers-engine precisions of the bundled LLM's batch runs (none: skip them)",
    )
    parser.add_argument(
        "--llm-stream-prompts",
        type=int,
        default=300,
        help="prompts of the infer-intents stream the default engine (llama.cpp) answers per run (0: skip)",
    )
    parser.add_argument(
        "--llm-stream-items",
        nargs="+",
        default=["10", "all"],
        help="clicks shown in the stream runs' prompts: numbers or 'all'",
    )
    parser.add_argument(
        "--llm-stream-threads",
        nargs="+",
        type=int,
        default=[1, 2],
        help="llama.cpp threads of the stream runs",
    )
    parser.add_argument(
        "--scale-sizes",
        nargs="+",
        choices=tuple(SCALE_SIZES),
        default=["S", "M"],
        help="synthetic click logs the scale suite loads (L: 25M clicks; the row-based loader needed 9 GB)",
    )
    parser.add_argument(
        "--scale-preset", choices=PRESETS, default="srgnn", help="preset the scale suite applies"
    )
    parser.add_argument(
        "--scale-repeats", type=int, default=1, help="loads and training runs per size, threads and checkout"
    )
    parser.add_argument(
        "--scale-train-threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="thread counts at which the scale suite times SRGNN training on each log (none: skip)",
    )
    parser.add_argument(
        "--scale-train-samples",
        type=int,
        default=20_000,
        help="training samples timed per log and thread count",
    )
    parser.add_argument(
        "--scale-precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        default=["fp32"],
        help="precisions the scale suite trains in (bf16: autocast for the dense layers and the "
        "scoring head; fast only on CPUs with AVX512-BF16 or AMX, and on GPUs)",
    )
    parser.add_argument(
        "--scale-other", help="another llm4sbr checkout to load and train on the same logs with (A/B)"
    )
    parser.add_argument(
        "--scale-dir", help="folder for the synthetic logs, reused across runs (default: temporary)"
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--tables",
        metavar="RESULTS_DIR",
        help="only print the markdown tables of a results folder (targets judged by this code)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tables:
        results = json.loads((Path(args.tables) / "results.json").read_text())
        results["targets"] = evaluate_targets(results.get("suites", {}))  # as today's code judges them
        print(render_tables(results), end="")
        return 0
    options = BenchOptions(
        device=args.device, shapes=tuple(args.shapes), providers=tuple(args.providers), rounds=args.rounds,
        threads=args.threads, epochs=args.epochs, recbole_python=args.recbole_python,
        recbole_script=args.recbole_script, llm_models=tuple(args.llm_models) if args.llm_models else None,
        llm_prompts=args.llm_prompts, llm_batch_size=args.llm_batch_size,
        llm_max_prompt_items=args.llm_max_prompt_items, llm_precisions=tuple(args.llm_precisions),
        llm_stream_prompts=args.llm_stream_prompts,
        llm_stream_items=tuple(None if v == "all" else int(v) for v in args.llm_stream_items),
        llm_stream_threads=tuple(args.llm_stream_threads), serve_checkpoint=args.serve_checkpoint,
        scale_sizes=tuple(args.scale_sizes), scale_preset=args.scale_preset, scale_repeats=args.scale_repeats,
        scale_other=args.scale_other, scale_dir=args.scale_dir, plots=not args.no_plots,
        scale_train_threads=tuple(args.scale_train_threads), scale_train_samples=args.scale_train_samples,
        scale_precisions=tuple(args.scale_precisions),
    )  # fmt: skip
    suites = SUITES if args.suite == "all" else (args.suite,)
    results = run_benchmarks(suites, args.out, options)
    print(render_tables(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
