"""A/B of one SRGNN (or LLM4SBR) training epoch between another checkout of llm4sbr and this
one, run in alternation in fresh processes (RecBole's ml-100k leave-one-out split, 97,171
samples; LLM4SBR on random intent vectors [n, 2, 384], seed 0, the same on both sides).

    python -m bench.ab_epoch --other /path/to/old/checkout --threads 1 --repeats 2 [--model llm4sbr]

The other checkout is imported through PYTHONPATH (its ``kernels/`` folder must be reachable
as ``llm4sbr/kernels``: the script links it). Prints one JSON line per run with the epoch
seconds, the test hit@20 (equal bits mean the same training) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from .harness import importable_checkout

WORKER = r"""
import dataclasses, json, sys, tempfile
import numpy as np
import torch
threads, model = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
from llm4sbr.config import TrainConfig
try:
    from llm4sbr.training import train
    from llm4sbr.data import run_dataset
except ImportError:  # checkouts before the training/ package
    from llm4sbr.train import train, run_dataset
config = TrainConfig(model=model, preset="leave-one-out", epochs=1, threads=threads, device="cpu")
dataset = run_dataset(config)
with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as intents:
    if model == "llm4sbr":
        from llm4sbr.intent import save_intents
        ids = np.concatenate([s.sample_ids for s in dataset.splits.values()]).astype(np.int64)
        vectors = np.random.default_rng(0).standard_normal((len(ids), 2, 384), dtype=np.float32)
        save_intents(intents, vectors, ids, meta={"random": True})
        config = dataclasses.replace(config, intents=intents)
    result = train(config, out, dataset=dataset, progress=False)
print(json.dumps({"epoch_s": result.epoch_seconds[0], "test_hit20": result.test["hit@20"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="the other llm4sbr checkout")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", choices=("srgnn", "llm4sbr"), default="srgnn")
    args = parser.parse_args()
    other = importable_checkout(args.other)
    for threads in args.threads:
        for repeat in range(args.repeats):
            for side in ("other", "this"):
                env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
                if side == "other":
                    env["PYTHONPATH"] = str(other)
                load = os.getloadavg()[0]
                command = [sys.executable, "-c", WORKER, str(threads), args.model]
                done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
                lines = done.stdout.strip().splitlines()
                record = json.loads(lines[-1]) if lines else {"error": done.stderr[-2000:]}
                run = {"side": side, "model": args.model, "threads": threads, "repeat": repeat, "load": load}
                print(json.dumps({**run, **record}))


if __name__ == "__main__":
    main()
