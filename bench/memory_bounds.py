"""Peak memory of full-ranking evaluation and of intent localization against a large catalog,
each in a fresh process, with the memory bounds on and off (what issue-sized catalogs cost).

    python -m bench.memory_bounds --items 400000

Evaluation: an untrained SRGNN (d = 100) ranks 500 random sessions of 5 clicks against every
item, batch 500; "bounded" is the package as it is, "unbounded" lifts the score bound
(``SCORE_ELEMENTS``) so the batch's [500, n_items + 1] scores are held at once. Localization:
4,096 random answers (d = 384) against a random catalog of ``--items`` rows, r = 5, with the
default block bound and with one block per 4,096 answers (the old layout). Prints one JSON line
per case: peak RSS above the process's RSS after setup (MiB), seconds, threads, load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

WORKER = r"""
import importlib, json, os, resource, sys, time
import numpy as np, torch
case, bound, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rng = np.random.default_rng(0)
if case == "evaluate":
    from llm4sbr.config import TrainConfig
    from llm4sbr.data.dataset import SampleSet
    from llm4sbr.models import build_model
    from llm4sbr.training import evaluate
    if bound == "unbounded":
        importlib.import_module("llm4sbr.training.evaluate").SCORE_ELEMENTS = 1 << 40
    B, L = 500, 5
    model = build_model(TrainConfig(model="srgnn", dim=100), n).eval()
    samples = SampleSet(np.arange(0, B * L + 1, L, dtype=np.int64), rng.integers(1, n + 1, B * L),
                        rng.integers(1, n + 1, B), np.arange(B, dtype=np.int64))
    evaluate(model, samples.subset(np.arange(2)), batch_size=B)
    run = lambda: evaluate(model, samples, batch_size=B)
else:
    from llm4sbr.intent import localize
    catalog = rng.standard_normal((n, 384), dtype=np.float32)
    answers = rng.standard_normal((4096, 384), dtype=np.float32)
    kwargs = {} if bound == "bounded" else {"block_elements": 4096 * n}
    run = lambda: localize(answers, catalog, r=5, **kwargs)
base = max(rss_mib(), peak_mib())
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
print(json.dumps({"case": case, "bound": bound, "items": n,
                  "peak_above_setup_mib": round(peak_mib() - base, 1), "seconds": round(seconds, 2),
                  "threads": 1, "load_average": os.getloadavg()}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400_000, help="catalog size (default 400000)")
    parser.add_argument(
        "--cases", nargs="+", default=["evaluate", "localize"], choices=["evaluate", "localize"]
    )
    args = parser.parse_args(argv)
    for case in args.cases:
        for bound in ("bounded", "unbounded"):
            done = subprocess.run(
                [sys.executable, "-c", WORKER, case, bound, str(args.items)],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
