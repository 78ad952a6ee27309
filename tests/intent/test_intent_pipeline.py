"""infer_intents end to end with the fake backend and the hashing encoder: outputs, resume,
limit, load_intents validation, config and lazy imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llm4sbr.data.dataset import SampleSet, SessionDataset
from llm4sbr.intent import (
    FakeBackend,
    HashingEncoder,
    IntentConfig,
    add_arguments,
    config_from_args,
    infer_intents,
    load_catalog,
    load_intents,
    localize,
    postprocess_answer,
    save_intents,
)
from llm4sbr.intent.prompts import VIEWS, build_prompt

N_ITEMS = 12


def small_dataset() -> SessionDataset:
    """Three splits, 9 samples, ids not in row order; one duplicated prefix (sample 4 == 1)."""
    names = [""] + [f"Movie {chr(64 + i)} ({1990 + i}) -- Drama|Genre{i % 3}" for i in range(1, N_ITEMS + 1)]
    names[7] = ""  # an item without a title stays out of the localization catalog
    splits = {
        "train": SampleSet.from_lists([[1, 2, 3], [4, 5], [6, 1, 2, 8]], [4, 6, 9], [10, 11, 12]),
        "valid": SampleSet.from_lists([[9, 10], [4, 5]], [11, 6], [20, 21]),
        "test": SampleSet.from_lists([[11], [12, 3], [2, 2, 2], [5, 9, 1]], [12, 4, 3, 10], [30, 31, 32, 33]),
    }
    return SessionDataset(
        "small", N_ITEMS, ["[PAD]"] + [str(i) for i in range(1, N_ITEMS + 1)], names, splits
    )


class RecordingBackend(FakeBackend):
    """FakeBackend that records every prompt it is asked for and can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.fail_on_call = fail_on_call
        self.seen: list[str] = []

    def generate(self, prompts: list[str]) -> list[str]:
        if self.stats["calls"] + 1 == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.seen += prompts
        return super().generate(prompts)


def run(tmp_path: Path, backend: FakeBackend | None = None, **overrides: object):
    config = IntentConfig(backend="fake", encoder="fake", batch_size=4, **overrides)
    return infer_intents(small_dataset(), config, tmp_path / "out", progress=False, backend=backend)


def test_outputs_cover_all_splits_and_match_a_manual_computation(tmp_path: Path) -> None:
    dataset = small_dataset()
    result = run(tmp_path)
    out = tmp_path / "out"
    vectors, ids = load_intents(out)
    assert vectors.shape == (9, 2, HashingEncoder().dim) and vectors.dtype == np.float32
    np.testing.assert_array_equal(ids, [10, 11, 12, 20, 21, 30, 31, 32, 33])
    np.testing.assert_array_equal(result.sample_ids, ids)

    encoder, fake = HashingEncoder(), FakeBackend()
    catalog_ids = [i for i in range(1, N_ITEMS + 1) if i != 7]
    catalog = encoder.encode([dataset.item_names[i] for i in catalog_ids])
    row = 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    for samples in dataset.splits.values():
        for i in range(len(samples)):
            for v, view in enumerate(VIEWS):
                answer = postprocess_answer(
                    fake.generate([build_prompt(dataset.item_names, samples.prefix(i), view)])[0]
                )
                assert answers[row][view] == answer and answers[row]["sample_id"] == samples.sample_ids[i]
                expected = localize(encoder.encode([answer]), catalog, r=5)[0]
                np.testing.assert_allclose(vectors[row, v], expected, rtol=1e-6, atol=1e-6)
            row += 1

    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["samples"] == 9 and meta["counts"]["prompts"] == 18
    assert meta["counts"]["unique_prompts"] == 16  # sample 21 repeats sample 11's prefix
    assert meta["counts"]["generated"] == 16 and meta["counts"]["from_cache"] == 0
    assert meta["counts"]["catalog_items"] == N_ITEMS - 1
    assert meta["splits"] == {"train": 3, "valid": 2, "test": 4}
    assert (meta["r"], meta["localize_reduce"], meta["max_prompt_items"]) == (5, "sum", None)
    for key in ("template_hash", "llm", "encoder", "timing", "peak_memory", "torch_threads", "generation"):
        assert key in meta
    assert meta["shape"] == [9, 2, HashingEncoder().dim]
    assert result.meta == meta

    written_ids, written_vectors = load_catalog(out)
    np.testing.assert_array_equal(written_ids, catalog_ids)
    np.testing.assert_array_equal(written_vectors, catalog)


def test_prompts_use_the_prefix_never_the_target(tmp_path: Path) -> None:
    backend = RecordingBackend()
    run(tmp_path, backend)
    dataset = small_dataset()
    expected = {
        build_prompt(dataset.item_names, s.prefix(i), view)
        for s in dataset.splits.values()
        for i in range(len(s))
        for view in VIEWS
    }
    assert set(backend.seen) == expected and len(backend.seen) == len(expected)
    train = dataset.splits["train"]
    first = [p for p in backend.seen if "\n1. Movie A (1991) -- Drama|Genre1_1\n2. Movie B" in p]
    assert first and all("_4\n" not in p and "Movie D" not in p for p in first)  # target 4 of sample 10
    assert all(len(p.splitlines()) == len(train.prefix(0)) + 2 for p in first)


def test_interrupted_run_resumes_generating_only_the_missing_prompts(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, RecordingBackend(fail_on_call=3))
    shards = list((tmp_path / "out" / "answer_cache").glob("*.json"))
    assert len(shards) == 2  # two batches of 4 survived the kill
    assert not (tmp_path / "out" / "meta.json").exists()

    resumed = RecordingBackend()
    result = run(tmp_path, resumed)
    assert resumed.stats["prompts"] == 16 - 8 and resumed.stats["calls"] == 2
    assert result.meta["counts"]["from_cache"] == 8
    # What all 16 answers cost survives the interruption (timing covers this call only).
    cost = result.meta["all_answers_generation"]
    assert (cost["prompts"], cost["shards"], cost["keys_without_stats"]) == (16, 4, 0)

    again = RecordingBackend()
    rerun = run(tmp_path, again)
    assert again.stats["calls"] == 0
    assert rerun.meta["all_answers_generation"]["prompts"] == 16
    fresh = run(tmp_path / "fresh")
    np.testing.assert_array_equal(np.asarray(rerun.vectors), np.asarray(fresh.vectors))


def test_corrupt_cache_entry_is_regenerated(tmp_path: Path) -> None:
    run(tmp_path)
    shard = sorted((tmp_path / "out" / "answer_cache").glob("*.json"))[0]
    shard.write_bytes(shard.read_bytes()[:10])
    backend = RecordingBackend()
    with pytest.warns(UserWarning, match="unreadable shard"):
        result = run(tmp_path, backend)
    assert backend.stats["prompts"] == 4
    assert result.meta["counts"]["corrupt_cache_entries"] == 1
    np.testing.assert_array_equal(np.asarray(result.vectors), np.asarray(run(tmp_path / "fresh").vectors))


def test_settings_change_invalidates_the_cache(tmp_path: Path) -> None:
    run(tmp_path)
    backend = RecordingBackend()
    backend.settings = {"max_new_tokens": 7}
    run(tmp_path, backend)
    assert backend.stats["prompts"] == 16


def test_limit_processes_the_first_samples_of_each_split(tmp_path: Path) -> None:
    result = run(tmp_path, limit=2)
    np.testing.assert_array_equal(result.sample_ids, [10, 11, 20, 21, 30, 31])
    assert result.vectors.shape[0] == 6
    assert result.meta["splits"] == {"train": 2, "valid": 2, "test": 2}
    assert result.meta["config"]["limit"] == 2


def test_r_zero_and_max_prompt_items(tmp_path: Path) -> None:
    backend = RecordingBackend()
    raw = run(tmp_path, backend, r=0, max_prompt_items=1)
    assert all(len(p.splitlines()) == 3 for p in backend.seen)
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    np.testing.assert_array_equal(raw.vectors[0, 0], HashingEncoder().encode([answers[0]["long"]])[0])


def test_load_intents_validation(tmp_path: Path) -> None:
    run(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="missing"):
        load_intents(tmp_path / "nowhere")

    meta_text = (out / "meta.json").read_text()
    (out / "meta.json").write_text(meta_text[:20])
    with pytest.raises(ValueError, match="corrupt meta"):
        load_intents(out)
    meta = json.loads(meta_text)
    (out / "meta.json").write_text(json.dumps({**meta, "shape": [9, 2, 5]}))
    with pytest.raises(ValueError, match="does not match meta"):
        load_intents(out)
    (out / "meta.json").write_text(meta_text)

    ids = np.load(out / "sample_ids.npy")
    np.save(out / "sample_ids.npy", ids[::-1])
    with pytest.raises(ValueError, match="ids do not match"):
        load_intents(out)
    np.save(out / "sample_ids.npy", ids[:-1])
    with pytest.raises(ValueError, match="expected \\[9\\] integers"):
        load_intents(out)
    np.save(out / "sample_ids.npy", ids)

    vectors = np.load(out / "intents.npy")
    np.save(out / "intents.npy", vectors.astype(np.float64))
    with pytest.raises(ValueError, match="float32"):
        load_intents(out)
    (out / "intents.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="unreadable"):
        load_intents(out)
    (out / "intents.npy").unlink()
    with pytest.raises(FileNotFoundError, match="intents.npy"):
        load_intents(out)


def test_duplicate_sample_ids_across_splits_are_rejected(tmp_path: Path) -> None:
    dataset = small_dataset()
    dataset.splits["test"] = SampleSet.from_lists([[1]], [2], [10])
    with pytest.raises(ValueError, match="not unique"):
        infer_intents(dataset, IntentConfig(backend="fake", encoder="fake"), tmp_path, progress=False)


def test_config_validation_and_cli_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        IntentConfig(backend="ollama")
    with pytest.raises(ValueError, match="precision"):
        IntentConfig(precision="2bit")
    with pytest.raises(ValueError, match="limit"):
        IntentConfig(limit=0)
    with pytest.raises(ValueError, match="r must"):
        IntentConfig(r=-1)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])) == IntentConfig()
    args = parser.parse_args(
        ["--backend", "fake", "--precision", "4bit", "--max-prompt-items", "20", "--r", "0"]
    )
    config = config_from_args(args)
    assert (config.backend, config.precision, config.max_prompt_items, config.r) == ("fake", "4bit", 20, 0)
    assert config_from_args(parser.parse_args(["--no-stop-at-newline"])).stop_at_newline is False


def test_import_needs_no_transformers_and_missing_transformers_is_explained() -> None:
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "import llm4sbr.intent as intent\n"
        "assert 'bitsandbytes' not in sys.modules\n"
        "try:\n"
        "    intent.make_encoder(None)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'llm4sbr[llm]'" in out.stdout


def test_save_intents_round_trip_and_validation(tmp_path: Path) -> None:
    vectors = np.arange(3 * 2 * 4, dtype=np.float64).reshape(3, 2, 4)
    out = save_intents(
        tmp_path / "saved", vectors, np.array([7, 3, 5]), meta={"backend": "test", "shape": "x"}
    )
    loaded, ids = load_intents(out)
    np.testing.assert_array_equal(loaded, vectors.astype(np.float32))
    np.testing.assert_array_equal(ids, [7, 3, 5])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backend"] == "test" and meta["shape"] == [3, 2, 4]
    with pytest.raises(ValueError, match="unique ids"):
        save_intents(tmp_path / "bad", vectors, np.array([1, 1, 2]))
    with pytest.raises(ValueError, match="vectors must be"):
        save_intents(tmp_path / "bad", vectors[:, 0], np.array([1, 2, 3]))


def test_unsupported_bitsandbytes_device_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm4sbr.intent.backends import _check_bitsandbytes

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match=r"pip install 'llm4sbr\[llm\]'"):
        _check_bitsandbytes("4bit", torch.device("cpu"))
    monkeypatch.undo()
    bnb = pytest.importorskip("bitsandbytes")

    def no_kernel(self: object, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("no 4-bit kernel for this device")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    with pytest.raises(RuntimeError, match="--precision 4bit is not supported on cpu by bitsandbytes .*fp32"):
        _check_bitsandbytes("4bit", torch.device("cpu"))


def test_a_rewrite_killed_midway_leaves_no_loadable_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(tmp_path)
    import llm4sbr.intent.infer as infer_module

    def killed(*args: object) -> None:
        raise KeyboardInterrupt("killed between intents.npy and sample_ids.npy")

    monkeypatch.setattr(infer_module, "write_sample_ids", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, limit=2)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_intents(tmp_path / "out")


def test_catalog_file_validation(tmp_path: Path) -> None:
    from llm4sbr.intent.store import CATALOG_FILE, write_catalog

    assert load_catalog(tmp_path) is None
    with pytest.raises(ValueError, match="do not match"):
        write_catalog(tmp_path, np.arange(3), np.zeros((2, 4)))
    (tmp_path / CATALOG_FILE).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="unreadable catalog"):
        load_catalog(tmp_path)
    np.savez(tmp_path / CATALOG_FILE, ids=np.arange(3), vectors=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expected ids"):
        load_catalog(tmp_path)
