"""The benchmarks (``bench/``, run as ``python -m bench``): a smoke run of every suite on tiny
shapes writes results, CSVs, tables and plots; the measuring helpers (percentiles, peak memory,
sample fingerprints) are right on known inputs; the random-intent control folder loads."""

from __future__ import annotations

import json
import re

import pytest
import torch
from fakes import tiny_dataset

from bench.harness import BenchOptions, Shape, peak_memory_mib, run_benchmarks, summarize
from bench.kernels import kernel_case
from bench.llm import real_prompts
from bench.report import evaluate_targets, render_tables
from bench.serve import recommend_records
from bench.train import packed_epoch_flops, samples_fingerprint, write_random_intents
from llm4sbr.config import TrainConfig
from llm4sbr.intent import load_intents
from llm4sbr.training import train


def test_smoke_run_writes_every_output(tmp_path) -> None:
    options = BenchOptions.tiny(dataset=tiny_dataset())
    results = run_benchmarks(["kernels", "serve", "train", "llm"], tmp_path, options)
    for name in ("results.json", "kernels.csv", "serve.csv", "train.csv", "llm.csv", "tables.md"):
        assert (tmp_path / name).is_file(), name
    for name in ("kernels_speed.png", "kernels_memory.png", "train_epoch.png", "serve_latency.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["suites"].keys() == results["suites"].keys() == {"kernels", "serve", "train", "llm"}
    assert saved["suites"]["kernels"]["environment"]["device_name"]

    kernels = saved["suites"]["kernels"]["records"]
    assert len(kernels) == 4 * 3 * 2  # kernels x modes x (triton, torch)
    for r in kernels:
        if r["provider"] == "torch":
            assert 0 < r["p20_ms"] <= r["p50_ms"] <= r["p80_ms"] <= r["p99_ms"] and r["peak_mib"] >= 0
        else:
            assert "CUDA" in r["skipped"]
    epochs = {r["setup"]: r for r in saved["suites"]["train"]["records"] if r["op"] == "epoch"}
    assert epochs["llm4sbr SRGNN"]["epoch_s"] > 0 and epochs["llm4sbr LLM4SBR"]["epoch_s"] > 0
    assert epochs["llm4sbr SRGNN"]["train_samples"] == len(options.dataset.splits["train"])
    assert "not found" in epochs["RecBole SRGNN, anomaly detection off"]["skipped"]
    assert saved["suites"]["llm"]["records"][0]["prompts_per_s"] > 0
    statuses = {t["target"]: t["status"] for t in saved["targets"]}
    assert statuses["LLM4SBR epoch <= 1.3x our SRGNN epoch"] in ("met", "missed")
    assert statuses["kernel targets (GPU)"] == "not measured"
    assert statuses["bf16 autocast: test hit@20 within noise of fp32"] in ("met", "missed")
    assert statuses["bf16 autocast epoch faster than fp32 (CPU)"] in ("met", "missed")
    floor = next(r for r in saved["suites"]["train"]["records"] if r["op"] == "floor")
    assert floor["bf16_gemm_gflops"] > 0 and epochs["llm4sbr SRGNN, bf16 autocast"]["test_samples"] > 0
    assert render_tables(saved) == (tmp_path / "tables.md").read_text()

    # A second suite run keeps the first's records and replaces only its own.
    run_benchmarks(["serve"], tmp_path, BenchOptions.tiny(plots=False))
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["suites"]["kernels"] == saved["suites"]["kernels"]


def test_bf16_quality_target_uses_two_standard_errors_of_a_difference() -> None:
    def judged(bf16_hit: float) -> dict:
        epoch = {"op": "epoch", "epochs": 1, "test_samples": 1000}
        records = [
            {**epoch, "setup": "llm4sbr SRGNN", "epoch_s": 10.0, "test_hit@20": 0.5},
            {**epoch, "setup": "llm4sbr SRGNN, bf16 autocast", "epoch_s": 50.0, "test_hit@20": bf16_hit},
            {"op": "floor", "gemm_gflops": 100.0, "bf16_gemm_gflops": 12.0},
        ]
        train = {"records": records, "environment": {"device": "cpu", "cpu_bf16": False}}
        return {t["target"]: t for t in evaluate_targets({"train": train})}

    quality = "bf16 autocast: test hit@20 within noise of fp32"
    # Two standard errors: 2 sqrt(2 * 0.25 / 1000) = 0.0447.
    assert judged(0.46)[quality]["status"] == "met"
    assert judged(0.45)[quality]["status"] == "missed"
    speed = judged(0.5)["bf16 autocast epoch faster than fp32 (CPU)"]
    assert speed["status"] == "missed" and "GEMM 12 GFLOP/s in bf16 vs 100 in fp32" in speed["detail"]


def test_summarize_percentiles() -> None:
    stats = summarize([float(x) for x in range(1, 101)])
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["min_ms"] == 1.0 and stats["rounds"] == 100


def test_cpu_peak_memory_counts_only_what_the_call_allocates() -> None:
    kept = torch.ones(1 << 20)  # allocated before the call: not counted

    def two_live_buffers() -> None:
        a = torch.empty(1 << 20)  # 4 MiB
        b = torch.empty(1 << 19)  # 2 MiB, while a is alive
        del a, b

    assert peak_memory_mib(two_live_buffers, torch.device("cpu")) == pytest.approx(6.0, abs=0.1)
    assert kept.sum() > 0


@pytest.mark.parametrize("mode", ["forward", "backward", "full"])
def test_kernel_cases_run_each_mode_of_the_reference(mode: str) -> None:
    for kernel in ("gnn_step", "attn_pool", "align_uniform_loss", "linear_cross_entropy"):
        case = kernel_case(kernel, "torch", mode, Shape(2, 3, 4), torch.device("cpu"))
        for _ in range(2):  # a backward case gets a fresh forward from its setup each time
            case.run(*(case.setup() if case.setup else ()))


def test_samples_fingerprint_ignores_order_only() -> None:
    a = samples_fingerprint([["1", "2"], ["3"]], ["4", "5"])
    assert a == samples_fingerprint([["3"], ["1", "2"]], ["5", "4"])
    assert a != samples_fingerprint([["1", "2"], ["3"]], ["5", "4"])
    assert a != samples_fingerprint([["12"], ["3"]], ["4", "5"])


def test_packed_epoch_flops_count_the_packed_algorithm() -> None:
    """One batch of every training sample: R distinct items, T distinct (session, item) nodes and
    E distinct transitions counted by hand from the prefixes, in the docstring's formula."""
    dataset, dim = tiny_dataset(), 4
    train = dataset.splits["train"]
    prefixes = [train.prefix(i).tolist() for i in range(len(train))]
    items = len({item for prefix in prefixes for item in prefix})
    nodes = sum(len(set(prefix)) for prefix in prefixes)
    edges = sum(len(set(zip(prefix[:-1], prefix[1:], strict=True))) for prefix in prefixes)
    macs = 9 * items * dim**2 + 3 * dim * (2 * edges + nodes) + nodes * (dim**2 + dim)
    macs += len(prefixes) * (3 * dim**2 + dim * dataset.n_items)
    assert packed_epoch_flops(dataset, dim, batch_size=len(train)) == 6 * macs


def test_llm_prompts_show_the_last_max_prompt_items_clicks() -> None:
    def clicks(prompt: str) -> list[str]:
        return [line.split(". ", 1)[1] for line in prompt.splitlines() if re.match(r"\d+\. ", line)]

    full, cut = real_prompts(4), real_prompts(4, max_items=2)
    assert max(len(clicks(p)) for p in full) > 2
    for whole, last in zip(full, cut, strict=True):
        assert clicks(last) == clicks(whole)[-2:]


def test_random_intents_are_a_loadable_stage1_folder(tmp_path) -> None:
    dataset = tiny_dataset()
    out = write_random_intents(dataset, tmp_path / "random", d_text=4)
    vectors, sample_ids = load_intents(out)
    n = sum(len(s.sample_ids) for s in dataset.splits.values())
    assert vectors.shape == (n, 2, 4) and sorted(sample_ids.tolist()) == sorted(set(sample_ids.tolist()))
    assert json.loads((out / "meta.json").read_text())["random"] is True


def test_serve_suite_times_recommend_of_a_trained_run(tmp_path) -> None:
    dataset = tiny_dataset()
    config = TrainConfig(data="tiny", dim=8, epochs=1, batch_size=8, eval_batch_size=16, device="cpu")
    train(config, tmp_path / "run", dataset=dataset, progress=False)
    options = BenchOptions.tiny(serve_checkpoint=str(tmp_path / "run" / "best.pt"), dataset=dataset)
    records = recommend_records(options, torch.device("cpu"))
    assert [r["path"] for r in records] == ["Recommender.recommend"]  # an SRGNN run has no explainer
    for record in records:
        assert record["rounds"] == options.serve_rounds and 0 < record["p50_ms"] <= record["p99_ms"]
