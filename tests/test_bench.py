"""The benchmark harness (llm4sbr.bench) and the CPU fast path it measures.

* a smoke run of every suite on tiny shapes writes results, CSVs, tables and plots;
* the measuring helpers (percentiles, peak memory) are right on known inputs;
* the packed encoder path equals the padded reference path to float64 rounding (outputs, loss
  and every gradient), and the packed graph is the padded graph without the padding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fakes import tiny_dataset
from hypothesis import given
from hypothesis import strategies as st

from llm4sbr.bench import (
    BenchOptions,
    Shape,
    kernel_case,
    peak_memory_mib,
    render_tables,
    run_benchmarks,
    samples_fingerprint,
    summarize,
)
from llm4sbr.data.graph import build_packed_session_graph, build_session_graph
from llm4sbr.kernels import use_backend
from llm4sbr.models import LLM4SBR, SRGNN

N_ITEMS, D_TEXT = 19, 5


def sessions_batch(sessions: list[list[int]], extra: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    length = max(len(s) for s in sessions) + extra
    item_seq = torch.zeros(len(sessions), length, dtype=torch.long)
    for row, session in enumerate(sessions):
        item_seq[row, : len(session)] = torch.tensor(session)
    g = torch.Generator().manual_seed(seed)
    return {
        "item_seq": item_seq,
        "item_seq_len": torch.tensor([len(s) for s in sessions]),
        "target": torch.randint(1, N_ITEMS + 1, (len(sessions),), generator=g),
        "intent": torch.randn(len(sessions), 2, D_TEXT, generator=g, dtype=torch.float64),
    }


# Repeated items, a repeated pair, a self-loop, a length-1 session and a long one.
SESSIONS = [[3, 5, 3, 5, 7], [4], [9, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [6, 6]]


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
    assert len(kernels) == 3 * 3 * 2  # kernels x modes x (triton, torch)
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
    assert render_tables(saved) == (tmp_path / "tables.md").read_text()

    # A second suite run keeps the first's records and replaces only its own.
    run_benchmarks(["serve"], tmp_path, BenchOptions.tiny(plots=False))
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["suites"]["kernels"] == saved["suites"]["kernels"]


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
    for kernel in ("gnn_step", "attn_pool", "align_uniform_loss"):
        case = kernel_case(kernel, "torch", mode, Shape(2, 3, 4), torch.device("cpu"))
        for _ in range(2):  # a backward case gets a fresh forward from its setup each time
            case.run(*(case.setup() if case.setup else ()))


def test_samples_fingerprint_ignores_order_only() -> None:
    a = samples_fingerprint([["1", "2"], ["3"]], ["4", "5"])
    assert a == samples_fingerprint([["3"], ["1", "2"]], ["5", "4"])
    assert a != samples_fingerprint([["1", "2"], ["3"]], ["5", "4"])
    assert a != samples_fingerprint([["12"], ["3"]], ["4", "5"])


def dense_from_packed(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The padded (nodes, A_in, A_out) rebuilt from the packed graph."""
    packed = build_packed_session_graph(item_seq, item_seq_len)
    counts = torch.bincount(packed.session, minlength=len(item_seq_len))
    n = max(int(counts.max()), 1)
    slot = torch.arange(len(packed.nodes)) - (torch.cumsum(counts, 0) - counts)[packed.session]
    nodes = torch.zeros(len(item_seq_len), n, dtype=torch.long)
    nodes[packed.session, slot] = packed.nodes
    A_in = torch.zeros(len(item_seq_len), n, n)
    A_out = torch.zeros(len(item_seq_len), n, n)
    b = packed.session[packed.src]
    A_in[b, slot[packed.dst], slot[packed.src]] = packed.in_weight
    A_out[b, slot[packed.src], slot[packed.dst]] = packed.out_weight
    clicks = torch.zeros(len(item_seq_len), n).index_put_((packed.session, slot), packed.clicks)
    return nodes, A_in, A_out, clicks, slot[packed.last]


@given(
    sessions=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=7), min_size=1, max_size=5),
    extra=st.integers(0, 2),
)
def test_packed_graph_is_the_padded_graph_without_padding(sessions: list[list[int]], extra: int) -> None:
    batch = sessions_batch(sessions, extra)
    padded = build_session_graph(batch["item_seq"], batch["item_seq_len"])
    nodes, A_in, A_out, clicks, last = dense_from_packed(batch["item_seq"], batch["item_seq_len"])
    assert torch.equal(nodes, padded.nodes)
    assert torch.equal(A_in, padded.A_in) and torch.equal(A_out, padded.A_out)
    for b, session in enumerate(sessions):
        alias = padded.alias[b, : len(session)]
        assert torch.equal(clicks[b], torch.bincount(alias, minlength=nodes.shape[1]).float())
        assert last[b] == alias[-1]


def test_packed_graph_rejects_empty_sessions() -> None:
    with pytest.raises(ValueError, match="item_seq_len"):
        build_packed_session_graph(torch.tensor([[1, 2], [0, 0]]), torch.tensor([2, 0]))


def outputs_and_grads(model: torch.nn.Module, batch: dict, packed: bool) -> tuple[torch.Tensor, ...]:
    model.encoder.packed = packed
    model.zero_grad()
    with use_backend("torch"):
        loss = model.calculate_loss(batch)
        loss.backward()
        scores = model.full_sort_predict(batch)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return loss.detach(), scores.detach(), grads


@pytest.mark.parametrize("readout", ["none", "softmax"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("model_class", [SRGNN, LLM4SBR])
def test_packed_path_equals_the_padded_reference_to_float64_rounding(
    model_class, steps: int, readout: str
) -> None:
    torch.manual_seed(0)
    args = (N_ITEMS, D_TEXT) if model_class is LLM4SBR else (N_ITEMS,)
    model = model_class(*args, dim=6, steps=steps, readout=readout).double()
    batch = sessions_batch(SESSIONS, extra=2)
    reference = outputs_and_grads(model, batch, packed=False)
    packed = outputs_and_grads(model, batch, packed=True)
    for name, ref, new in zip(("loss", "scores", "gradients"), reference, packed, strict=True):
        finite = torch.isfinite(ref)
        assert torch.equal(finite, torch.isfinite(new)), name
        assert torch.allclose(new[finite], ref[finite], rtol=1e-12, atol=1e-12), name
    assert reference[2].abs().sum() > 0


def test_default_path_is_packed_only_where_triton_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = SRGNN(N_ITEMS, dim=4).encoder
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert encoder.uses_packed_path(cpu)
    with use_backend("torch"):
        assert not encoder.uses_packed_path(cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not encoder.uses_packed_path(cpu)
    encoder.packed = True
    assert encoder.uses_packed_path(cpu)


def test_packed_path_trains_like_the_reference() -> None:
    """Three Adam steps on each path from the same start end at the same parameters."""
    batch = sessions_batch(SESSIONS)
    finals = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = SRGNN(N_ITEMS, dim=6).double()
        model.encoder.packed = packed
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        with use_backend("torch"):
            for _ in range(3):
                optimizer.zero_grad()
                model.calculate_loss(batch).backward()
                optimizer.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert np.allclose(finals[0].numpy(), finals[1].numpy(), rtol=1e-10, atol=1e-10)
