"""Reports of a results folder: the issue's targets, the markdown tables (the README's
"Performance" tables, ``tables.md``) and the PNG plots."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .harness import KERNELS, MODES, PROVIDERS, SHAPES

TARGET_SHAPE = "large"
"""The kernel shape the GPU kernel targets are judged at."""
STREAM_TARGETS = ((10, 10.0), ("all", 3.5))
"""(clicks shown, prompts/s): stage 1's speed targets for the default engine at 2 threads."""


def evaluate_targets(suites: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each "met", "missed" or "not measured" with the numbers behind it."""
    targets = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "not measured" if ok is None else ("met" if ok else "missed")
        targets.append({"target": name, "status": status, "detail": detail})

    train = suites.get("train", {})
    device = train.get("environment", {}).get("device")
    epochs = {r["setup"]: r for r in train.get("records", []) if r.get("op") == "epoch" and "epoch_s" in r}
    floor = next((r for r in train.get("records", []) if r.get("op") == "floor"), {})
    ours = epochs.get("llm4sbr SRGNN", {}).get("epoch_s")
    peer = epochs.get("RecBole SRGNN, anomaly detection off", {}).get("epoch_s")
    factor = 10.0 if device == "cuda" else 4.0
    if train:
        ratio = peer / ours if ours and peer else None
        add(
            f"our SRGNN epoch >= {factor:g}x faster than RecBole SRGNN ({device})",
            None if ratio is None else ratio >= factor,
            "not run"
            if ratio is None
            else f"{ours:.1f} s vs {peer:.1f} s: {ratio:.2f}x (anomaly detection off)",
        )
        over = floor.get("ours_over_packed_floor")
        if device == "cpu":
            add(
                "our SRGNN epoch within 1.5x of the packed algorithm's FLOP floor (CPU)",
                None if over is None else over <= 1.5,
                "not run"
                if over is None
                else f"{ours:.1f} s = {over:.2f}x the floor {floor['packed_floor_epoch_s']:.1f} s "
                f"({floor['packed_tflop']:.2f} TFLOP at {floor['gemm_gflops']:.0f} GFLOP/s)",
            )
        llm = epochs.get("llm4sbr LLM4SBR", {}).get("epoch_s")
        add(
            "LLM4SBR epoch <= 1.3x our SRGNN epoch",
            None if not (llm and ours) else llm <= 1.3 * ours,
            "not run" if not (llm and ours) else f"{llm:.1f} s vs {ours:.1f} s: {llm / ours:.2f}x",
        )
        _bf16_targets(add, train, epochs, floor)
    kernels = suites.get("kernels", {})
    if kernels.get("environment", {}).get("device") == "cuda":
        full = [r for r in kernels["records"] if r["mode"] == "full" and r["shape"] == TARGET_SHAPE]
        by = {(r["kernel"], r["provider"]): r for r in full}
        for kernel in KERNELS:
            tri, ref, comp = (by.get((kernel, p), {}) for p in PROVIDERS)
            if "p50_ms" not in tri or "p50_ms" not in ref:
                add(f"{kernel}: GPU full fwd+bwd targets", None, "not run")
                continue
            vs_ref = ref["p50_ms"] / tri["p50_ms"]
            vs_comp = comp["p50_ms"] / tri["p50_ms"] if "p50_ms" in comp else None
            ok = vs_ref >= 2 and (vs_comp is None or vs_comp >= 1) and tri["peak_mib"] <= ref["peak_mib"]
            add(
                f"{kernel}: GPU full fwd+bwd >= 2x eager, >= torch.compile, memory <= eager ({TARGET_SHAPE})",
                ok,
                f"{vs_ref:.2f}x eager, {'n/a' if vs_comp is None else f'{vs_comp:.2f}x'} compile, "
                f"{tri['peak_mib']:.1f} vs {ref['peak_mib']:.1f} MiB",
            )
    else:
        add("kernel targets (GPU)", None, "owed: needs a CUDA device")
    llm = suites.get("llm", {})
    if llm.get("environment", {}).get("device") == "cuda":
        for model in {r["model"] for r in llm["records"]}:
            peak = {r["precision"]: r.get("peak_mib") for r in llm["records"] if r["model"] == model}
            if peak.get("4bit") and peak.get("bf16"):
                share = peak["4bit"] / peak["bf16"]
                add(f"{model}: 4-bit peak <= 40% of bf16 (GPU)", share <= 0.4, f"{100 * share:.0f}%")
            else:
                add(f"{model}: 4-bit peak <= 40% of bf16 (GPU)", None, "a precision did not run")
    else:
        add("LLM 4-bit peak <= 40% of bf16 (GPU)", None, "owed: needs a CUDA device")
    streams = [r for r in llm.get("records", []) if r.get("batch") == "stream"]
    for items, wanted in STREAM_TARGETS:
        run = next((r for r in streams if r["prompt_items"] == items and r.get("threads") == 2), {})
        rate = run.get("prompts_per_s")
        add(
            f"stage 1 default engine, {items} clicks shown: >= {wanted:g} prompts/s at 2 threads",
            None if rate is None else rate >= wanted,
            "not run"
            if rate is None
            else f"{rate:.2f} prompts/s, {100 * run.get('in_llama_cpp_share', float('nan')):.0f}% of the "
            f"time inside llama.cpp ({run['computed_tokens_per_prompt']:.0f} prompt tokens computed "
            f"and {run['new_tokens_per_prompt']:.1f} new per prompt; at llama.cpp's rates on a "
            f"256-token prompt that work takes as long as {run['engine_floor_prompts_per_s']:.2f} prompts/s)",
        )
    if "scale" in suites:
        runs = [
            r
            for r in suites["scale"]["records"]
            if r.get("side") == "this" and r.get("preset") == "srgnn" and "load_s" in r
        ]
        for size, seconds, peak_bytes, per_click in SCALE_TARGETS:
            mine = [r for r in runs if r["log"] == size]
            if not mine:
                add(f"scale {size}: load + srgnn preset targets", None, "not run")
                continue
            fastest = min(mine, key=lambda r: r["load_s"])
            best = fastest["load_s"]
            peak = max(r["peak_mib"] for r in mine) * 2**20
            worst = max(r["bytes_per_click"] for r in mine)
            limits = [f"<= {seconds:g} s"]
            limits += [f"<= {peak_bytes / 1e9:g} GB peak"] if peak_bytes else []
            limits += [f"<= {per_click:g} bytes per click"] if per_click else []
            ok = (
                best <= seconds
                and (not peak_bytes or peak <= peak_bytes)
                and (not per_click or worst <= per_click)
            )
            add(
                f"scale {size}: load + srgnn preset {', '.join(limits)}",
                ok,
                f"{best:.1f} s (fastest of {len(mine)}, load average {fastest['load_average'][0]}), "
                f"peak {peak / 1e9:.2f} GB, {worst:.0f} bytes per click",
            )
        trained = [r for r in suites["scale"]["records"] if r.get("op") == "train" and r.get("log") == "M"]
        trained = [r for r in trained if "epoch_estimate_s" in r and r.get("side", "this") == "this"]
        in_bf16 = [r for r in trained if r.get("precision") == "bf16"]
        trained = [r for r in trained if r.get("precision", "fp32") == "fp32"]
        on_gpu = [r for r in trained if r.get("device", "cpu") != "cpu"]
        at_two = [r for r in trained if r.get("device", "cpu") == "cpu" and r.get("threads") == 2]
        add(
            "scale M: SRGNN training epoch <= 10 min at 2 threads (fp32)",
            at_two[0]["epoch_estimate_s"] <= 600 if at_two else None,
            f"{at_two[0]['epoch_estimate_s']:.0f} s ({at_two[0]['samples_per_s']:.0f} samples/s over "
            f"{at_two[0]['measured_samples']} of {at_two[0]['train_samples']} samples)"
            if at_two
            else "not run",
        )
        bf16_at_two = [r for r in in_bf16 if r.get("device", "cpu") == "cpu" and r.get("threads") == 2]
        if bf16_at_two and at_two:
            fp32, bf16 = at_two[0], bf16_at_two[0]
            add(
                "scale M: SRGNN epoch faster in bf16 than in fp32 at 2 threads (CPU)",
                bf16["epoch_estimate_s"] < fp32["epoch_estimate_s"],
                f"{bf16['epoch_estimate_s']:.0f} s vs {fp32['epoch_estimate_s']:.0f} s "
                f"({bf16['samples_per_s']:.0f} vs {fp32['samples_per_s']:.0f} samples/s; test hit@20 "
                f"{_fmt(bf16.get('test_hit@20'))} vs {_fmt(fp32.get('test_hit@20'))} on "
                f"{bf16.get('test_samples', '?')} samples); {_bf16_hardware(suites['scale'])}",
            )
        if on_gpu:
            gpu = on_gpu[0]
            add(
                "scale M: SRGNN epoch on a GPU <= RecBole's published 88.6 s (Diginetica, TITAN RTX)",
                gpu["epoch_estimate_s"] <= RECBOLE_DIGINETICA_EPOCH_S,
                f"{gpu['epoch_estimate_s']:.0f} s on {gpu['device']} ({gpu['samples_per_s']:.0f} "
                f"samples/s over {gpu['measured_samples']} of {gpu['train_samples']} samples, batch 100)",
            )
    return targets


def _bf16_hardware(suite: dict[str, Any]) -> str:
    """What the suite's CPU offers bf16 GEMMs, from its environment record."""
    has = suite.get("environment", {}).get("cpu_bf16")
    if has is None:
        return "bf16 instructions of the CPU not recorded"
    return "the CPU has AVX512-BF16 or AMX" if has else "the CPU has neither AVX512-BF16 nor AMX"


def _bf16_targets(
    add: Callable[[str, bool | None, str], None], train: dict[str, Any], epochs: dict, floor: dict
) -> None:
    """bf16 autocast against fp32 on the same samples, seed and epochs: test hit@20 within two
    standard errors of the difference of two hit rates over the test samples (sqrt(2 p (1 - p) /
    n) each, p the fp32 rate), and, on CPU, the epoch time."""
    fp32, bf16 = epochs.get("llm4sbr SRGNN", {}), epochs.get("llm4sbr SRGNN, bf16 autocast", {})
    if not (fp32 and bf16):
        add("bf16 autocast: test hit@20 within noise of fp32", None, "not run")
        return
    p, n = fp32.get("test_hit@20"), fp32.get("test_samples")
    q = bf16.get("test_hit@20")
    if p is None or q is None or not n:
        add("bf16 autocast: test hit@20 within noise of fp32", None, "no test metrics recorded")
    else:
        noise = 2 * math.sqrt(2 * p * (1 - p) / n)
        add(
            "bf16 autocast: test hit@20 within noise of fp32",
            abs(q - p) <= noise,
            f"{q:.4f} vs {p:.4f} (|difference| {abs(q - p):.4f}, two standard errors {noise:.4f} over "
            f"{n} test samples) after {bf16['epochs']} epoch(s), same samples and seed",
        )
    if train.get("environment", {}).get("device") == "cpu":
        rates = ""
        if "gemm_gflops" in floor and "bf16_gemm_gflops" in floor:
            bf16_rate, fp32_rate = floor["bf16_gemm_gflops"], floor["gemm_gflops"]
            rates = f"; GEMM {bf16_rate:.3g} GFLOP/s in bf16 vs {fp32_rate:.3g} in fp32"
        add(
            "bf16 autocast epoch faster than fp32 (CPU)",
            bf16["epoch_s"] < fp32["epoch_s"],
            f"{bf16['epoch_s']:.1f} s vs {fp32['epoch_s']:.1f} s{rates}; {_bf16_hardware(train)}",
        )


RECBOLE_DIGINETICA_EPOCH_S = 88.6
"""RecBole's published SRGNN training epoch on Diginetica, seconds on one TITAN RTX (RecBole's
session-based benchmark table); the reference the issue tracker set for our GPU M epoch."""


SCALE_TARGETS = (("M", 5.0, 0, 100.0), ("L", 40.0, 3e9, 0))
"""(size, seconds, peak bytes, peak bytes per click) the scale issue asks for; 0 means no limit."""


# ----------------------------------------------------------------------------- tables


def _fmt(value: Any) -> str:
    """Floats with 3 to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_line(suite: dict[str, Any]) -> str:
    env = suite["environment"]
    versions = f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}"
    return (
        f"Machine: {env['device_name']}, {env['threads']} torch threads, load average "
        f"{env['load_average'][0]} at start ({env['time_utc']}); {versions}."
    )


def _records_table(
    records: Sequence[dict[str, Any]],
    labels: Sequence[str],
    values: Sequence[str],
    omit_skipped: bool = False,
) -> str:
    """One row per record: the ``labels`` keys, then the ``values`` keys, or the reason it was
    not measured; with ``omit_skipped`` skipped records become one note under the table."""
    rows, skipped = [], {}
    for r in records:
        if omit_skipped and "skipped" in r:
            skipped[r["skipped"]] = skipped.get(r["skipped"], 0) + 1
            continue
        measured = any(k in r for k in values)
        reason = r.get("skipped") or r.get("error") or "-"
        rows.append([r.get(k) for k in labels] + ([r.get(k) for k in values] if measured else [reason]))
    width = len(labels) + len(values)
    head = [HEADERS.get(k, k) for k in (*labels, *values)]
    return _table(head, [row + ["-"] * (width - len(row)) for row in rows]) + _skipped_note(skipped)


def _skipped_note(skipped: dict[str, int]) -> str:
    return "".join(f"\n\nNot run ({n} cases): {reason}." for reason, n in skipped.items())


def _kernel_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per (kernel, mode, shape) with each measured provider's p50 and peak memory."""
    providers = [p for p in PROVIDERS if any(r["provider"] == p and "p50_ms" in r for r in records)]
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    skipped: dict[str, int] = {}
    for r in records:
        groups.setdefault((r["kernel"], r["mode"], r["shape"], r["size"]), {})[r["provider"]] = r
        if "skipped" in r:
            skipped[f"{r['provider']}: {r['skipped']}"] = (
                skipped.get(f"{r['provider']}: {r['skipped']}", 0) + 1
            )
    head = ["kernel", "mode", "shape", "B x L x d"]
    head += [f"{p} p50 ms" for p in providers] + [f"{p} peak MiB" for p in providers]
    rows = [
        [*key]
        + [by.get(p, {}).get("p50_ms") for p in providers]
        + [by.get(p, {}).get("peak_mib") for p in providers]
        for key, by in groups.items()
    ]
    return _table(head, rows) + _skipped_note(skipped)


HEADERS = {
    "p50_ms": "p50 ms", "p99_ms": "p99 ms", "peak_mib": "peak MiB", "sessions_per_s": "sessions/s",
    "speedup_vs_torch": "x torch", "speedup_vs_compile": "x compile", "epoch_s": "s/epoch",
    "test_hit@20": "test hit@20", "test_mrr@20": "test mrr@20", "train_samples": "train samples",
    "prompts_per_s": "prompts/s", "mean_prompt_tokens": "prompt tokens", "weights_mib": "weights MiB",
    "generation_mib": "generation MiB", "size": "B x L x d", "samples_sha256": "samples sha256",
    "load_s": "load + preset s", "bytes_per_click": "peak bytes/click", "log_mib": "log MiB",
}  # fmt: skip


def render_tables(results: dict[str, Any]) -> str:
    """Markdown tables of every suite in ``results`` (the README's "Performance" tables)."""
    parts = []
    suites = results.get("suites", {})
    if "train" in suites:
        suite = suites["train"]
        epochs = [r for r in suite["records"] if r.get("op") == "epoch"]
        parts.append("### Training epoch (MovieLens-100k leave-one-out)\n\n" + _machine_line(suite))
        values = [
            "epoch_s",
            "epochs",
            "peak_mib",
            "test_hit@20",
            "test_mrr@20",
            "train_samples",
            "samples_sha256",
        ]
        parts.append(_records_table(epochs, ["setup"], values))
        floor = next((r for r in suite["records"] if r.get("op") == "floor"), None)
        if floor:
            parts.append(_floor_sentence(floor))
        steps = [r for r in suite["records"] if r.get("op") == "train_step"]
        parts.append(
            "Training step:\n\n" + _records_table(steps, STEP_LABELS, STEP_VALUES, omit_skipped=True)
        )
    if "serve" in suites:
        suite = suites["serve"]
        parts.append("### Serving: full_sort_predict latency\n\n" + _machine_line(suite))
        parts.append(_records_table(suite["records"], STEP_LABELS, STEP_VALUES, omit_skipped=True))
    if "kernels" in suites:
        suite = suites["kernels"]
        parts.append("### Kernels\n\n" + _machine_line(suite))
        parts.append(_kernel_table(suite["records"]))
    if "llm" in suites:
        suite = suites["llm"]
        parts.append("### LLM stage (intent generation)\n\n" + _machine_line(suite))
        values = [
            "prompts_per_s", "in_llama_cpp_share", "engine_floor_prompts_per_s", "mean_prompt_tokens",
            "computed_tokens_per_prompt", "new_tokens_per_prompt", "weights_mib", "generation_mib",
            "peak_mib",
        ]  # fmt: skip
        labels = ["model", "weights", "precision", "batch", "prompt_items", "threads"]
        parts.append(_records_table(suite["records"], labels, values))
    if "scale" in suites:
        suite = suites["scale"]
        parts.append(
            "### Loading at scale: `load_dataset(csv)` + preset on synthetic Diginetica-shaped logs\n\n"
            + _machine_line(suite)
        )
        loads = [r for r in suite["records"] if r.get("op") != "train"]
        labels = ["log", "side", "preset", "clicks", "samples"]
        values = ["load_s", "peak_mib", "bytes_per_click", "log_mib", "load_average", "fingerprint"]
        parts.append(_records_table(loads, labels, values))
        training = [r for r in suite["records"] if r.get("op") == "train"]
        if training:
            sides = ["side"] if any("side" in r for r in training) else []  # A/B runs have two
            devices = ["device"] if any("device" in r for r in training) else []
            precisions = ["precision"] if any("precision" in r for r in training) else []
            labels = ["log", *sides, *devices, *precisions, "threads", "items", "train_samples"]
            labels.append("measured_samples")
            values = ["samples_per_s", "epoch_estimate_s", "load_average"]
            values += ["test_hit@20"] if any("test_hit@20" in r for r in training) else []
            parts.append("Our SRGNN training on those logs:\n\n" + _records_table(training, labels, values))
    if results.get("targets"):
        parts.append("### Targets\n\n" + _table(["target", "status", "numbers"], [
            [t["target"], t["status"], t["detail"]] for t in results["targets"]
        ]))  # fmt: skip
    return "\n\n".join(parts) + "\n"


STEP_LABELS = ("model", "path", "batch")
STEP_VALUES = ("p50_ms", "p99_ms", "peak_mib", "sessions_per_s", "speedup_vs_torch")


def _floor_sentence(floor: dict[str, Any]) -> str:
    text = (
        f"fp32 GEMM rate on this machine: {floor['gemm_gflops']:.0f} GFLOP/s measured. At that rate "
        f"the padded algorithm's dense FLOPs take {floor['floor_epoch_s']:.1f} s per SRGNN epoch "
        f"({floor['folded_floor_epoch_s']:.1f} s with the edge linears folded)"
    )
    if "packed_floor_epoch_s" in floor:
        text += (
            f"; the packed algorithm that runs on CPU computes {floor['packed_tflop']:.2f} TFLOP per epoch, "
            f"a floor of {floor['packed_floor_epoch_s']:.1f} s"
        )
    text += "."
    if "ours_over_packed_floor" in floor:
        text += f" Our SRGNN epoch is {floor['ours_over_packed_floor']:.2f}x the packed floor."
    return text


# ----------------------------------------------------------------------------- plots


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots: kernel speed vs shape per provider, kernel memory bars, epoch-time bars,
    serving latency bars. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    suites = results.get("suites", {})
    kernels = [r for r in suites.get("kernels", {}).get("records", []) if "p50_ms" in r]
    if kernels:
        fig, axes = plt.subplots(
            len(KERNELS), len(MODES), figsize=(4 * len(MODES), 3 * len(KERNELS)), squeeze=False
        )
        for i, kernel in enumerate(KERNELS):
            for j, mode in enumerate(MODES):
                ax = axes[i][j]
                for provider in PROVIDERS:
                    pts = [
                        r
                        for r in kernels
                        if (r["kernel"], r["mode"], r["provider"]) == (kernel, mode, provider)
                    ]
                    if pts:
                        ax.plot(
                            [r["shape"] for r in pts], [r["p50_ms"] for r in pts], marker="o", label=provider
                        )
                ax.set_title(f"{kernel} {mode}", fontsize=9)
                ax.set_yscale("log")
                ax.set_ylabel("p50 ms")
                ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out / "kernels_speed.png"))
        full = [r for r in kernels if r["mode"] == "full"]
        labels = sorted(
            {(r["kernel"], r["shape"]) for r in full},
            key=lambda k: (k[0], list(SHAPES).index(k[1]) if k[1] in SHAPES else 0),
        )
        fig, ax = plt.subplots(figsize=(max(6, len(labels)), 4))
        width = 0.8 / len(PROVIDERS)
        for k, provider in enumerate(PROVIDERS):
            values = [
                next(
                    (
                        r["peak_mib"]
                        for r in full
                        if (r["kernel"], r["shape"], r["provider"]) == (*lab, provider)
                    ),
                    0,
                )
                for lab in labels
            ]
            ax.bar([x + k * width for x in range(len(labels))], values, width, label=provider)
        ax.set_xticks([x + width for x in range(len(labels))], [f"{a}\n{b}" for a, b in labels], fontsize=7)
        ax.set_ylabel("peak MiB (forward + backward)")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "kernels_memory.png"))
    epochs = [
        r for r in suites.get("train", {}).get("records", []) if r.get("op") == "epoch" and "epoch_s" in r
    ]
    if epochs:
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(epochs) + 1.5))
        ax.barh([r["setup"] for r in epochs], [r["epoch_s"] for r in epochs])
        floor = next((r for r in suites["train"]["records"] if r.get("op") == "floor"), None)
        if floor:
            ax.axvline(floor["floor_epoch_s"], color="k", linestyle="--", label="dense fp32 floor")
            ax.legend()
        ax.set_xlabel("seconds per training epoch")
        fig.tight_layout()
        written.append(_save(fig, out / "train_epoch.png"))
    serve = [r for r in suites.get("serve", {}).get("records", []) if "p50_ms" in r]
    if serve:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(serve) + 1.5))
        names = [f"{r['model']} {r['path']} b{r['batch']}" for r in serve]
        ax.barh(names, [r["p99_ms"] for r in serve], label="p99", alpha=0.5)
        ax.barh(names, [r["p50_ms"] for r in serve], label="p50")
        ax.set_xscale("log")
        ax.set_xlabel("ms per full_sort_predict batch")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "serve_latency.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
