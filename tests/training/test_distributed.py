"""DistributedDataParallel training: two CPU processes (gloo, launched by torchrun) match one.

This file is also the torchrun worker script: ``python -m torch.distributed.run ... THIS_FILE OUT``.
"""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from fakes import tiny_dataset, write_log

from llm4sbr.checkpoint import load_checkpoint
from llm4sbr.cli import main
from llm4sbr.config import TrainConfig
from llm4sbr.data import make_loader
from llm4sbr.kernels import use_backend
from llm4sbr.models import load_trained
from llm4sbr.training import evaluate, train
from llm4sbr.training.distributed import shard_batches


def config() -> TrainConfig:
    return TrainConfig(
        data="tiny", dim=8, epochs=3, batch_size=8, eval_batch_size=4, patience=5, device="cpu"
    )


def dataset():
    """49 training samples, so the last global batch of 8 holds one sample (rank 1's share is
    empty); 10 valid and 11 test samples, so the test split does not divide between 2 ranks."""
    return tiny_dataset(n_sessions=70)


def worker(out: Path) -> None:
    """One torchrun process: train in an existing process group, then evaluate test both
    distributed and alone, and write what it saw to ``out/rank<r>.json``."""
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ds = dataset()
    with use_backend("torch"):
        result = train(config(), out / "run", dataset=ds, progress=False)
        model, _, _ = load_trained(out / "run" / "best.pt")
        gathered = evaluate(model, ds.splits["test"], batch_size=4, distributed=True)
        alone = evaluate(model, ds.splits["test"], batch_size=4)
    report = {"result": asdict(result), "gathered": gathered, "alone": alone}
    report["still_initialized"] = dist.is_initialized()
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [23, 21])  # last global batch of 3, of 1 (ranks with nothing to do)
def test_shards_cover_each_global_batch_once_with_weights_that_average_to_its_mean(n, world_size):
    batch_size, seed = 5, 7
    shares = [shard_batches(n, batch_size, seed, rank, world_size) for rank in range(world_size)]
    assert len({len(rank_shares) for rank_shares in shares}) == 1  # every rank takes every step
    order = np.random.default_rng([seed, 0]).permutation(n)
    for step, start in enumerate(range(0, n, batch_size)):
        expected = order[start : start + batch_size]
        parts = [rank_shares[step] for rank_shares in shares]
        np.testing.assert_array_equal(np.concatenate([p for p, w in parts if w > 0]), expected)
        # DDP averages: sum_r weight_r * mean_r(loss) / world_size is the global batch's mean.
        for positions, weight in parts:
            if weight == 0:
                np.testing.assert_array_equal(positions, expected[:1])
            else:
                assert weight == pytest.approx(len(positions) * world_size / len(expected))
        assert sum(w for _, w in parts) == pytest.approx(world_size)


def test_shards_of_one_process_are_make_loaders_batches():
    samples = tiny_dataset().splits["train"]
    loader = make_loader(samples, batch_size=8, shuffle=True, seed=11)
    expected = [batch["sample_id"].numpy() for batch in loader]
    shares = shard_batches(len(samples), 8, 11)
    assert [weight for _, weight in shares] == [1.0] * len(expected)
    for (positions, _), ids in zip(shares, expected, strict=True):
        np.testing.assert_array_equal(samples.sample_ids[positions], ids)


def torchrun_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    return env


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_torchrun_cli_exits_cleanly_and_reports_an_input_error_once(tmp_path):
    """Both ranks leave together (exit 0, no abort at teardown); a rerun into the same folder is
    refused, and the refusal is printed once, not once per rank."""
    data = write_log(tmp_path / "tiny")
    command = TORCHRUN + ["-m", "llm4sbr", "train", "--data", str(data), "--preset", "srgnn"]
    command += ["--out", str(tmp_path / "run"), "--epochs", "2", "--dim", "8", "--device", "cpu", "--quiet"]
    first = subprocess.run(command, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "terminate called" not in first.stderr
    assert first.stdout.count("checkpoint:") == 1  # rank 0 prints the results
    again = subprocess.run(command, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode != 0
    assert again.stderr.count("already holds a run") == 1, again.stderr[-3000:]


@pytest.mark.parametrize(("rank", "printed"), [("0", True), ("1", False)])
def test_only_rank_zero_prints_an_input_error(tmp_path, monkeypatch, capsys, rank, printed):
    monkeypatch.setenv("RANK", rank)
    assert main(["train", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "r")]) == 2
    assert ("nowhere.csv" in capsys.readouterr().err) is printed


def test_two_processes_train_like_one(tmp_path):
    env = torchrun_env()
    # The script imports the shared test helpers (tests/fakes.py).
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    command = TORCHRUN + [__file__, str(tmp_path / "ddp")]
    (tmp_path / "ddp").mkdir()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]

    with use_backend("torch"):
        single = train(config(), tmp_path / "single", dataset=dataset(), progress=False)

    # Every rank returns the run's metrics; the process group the caller made is left open.
    keys = ("best_epoch", "epochs_run", "valid", "test")
    assert [reports[0]["result"][k] for k in keys] == [reports[1]["result"][k] for k in keys]
    assert all(r["still_initialized"] for r in reports)
    # The test split (11 samples) is gathered from unequal shares: each sample counts once.
    for report in reports:
        assert report["gathered"] == pytest.approx(report["alone"], abs=1e-12)

    ddp_log = [json.loads(line) for line in (tmp_path / "ddp/run/metrics.jsonl").read_text().splitlines()]
    one_log = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert len(ddp_log) == len(one_log) == 3
    for two, one in zip(ddp_log, one_log, strict=True):
        assert two["valid"] == pytest.approx(one["valid"], abs=1e-6)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    ddp_result = reports[0]["result"]
    assert ddp_result["best_epoch"] == single.best_epoch
    assert ddp_result["test"] == pytest.approx(single.test, abs=1e-6)
    # The gradients were those of the global batch: the weights agree to rounding.
    two = load_checkpoint(tmp_path / "ddp/run/last.pt")["model"]
    one = load_checkpoint(tmp_path / "single/last.pt")["model"]
    assert max(float((two[k] - one[k]).abs().max()) for k in one) < 1e-5


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
