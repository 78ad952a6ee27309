"""Stage 1 through OpenAI batch files: --export-requests, a batch engine's output,
--import-responses, with unknown, duplicate, missing ids, malformed lines and failed requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_intent_pipeline import small_dataset

from llm4sbr.intent import (
    FakeBackend,
    ImportProblemWarning,
    IntentConfig,
    OpenAIBackend,
    RequestsExported,
    answer_key,
    infer_intents,
    postprocess_answer,
    read_responses,
)

MODEL = "Qwen/Qwen2.5-7B-Instruct"


def config(tmp_path: Path, **overrides: object) -> IntentConfig:
    return IntentConfig(
        backend="openai",
        model=MODEL,
        encoder="fake",
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        **overrides,
    )


def export(tmp_path: Path, name: str = "requests.jsonl", **overrides: object) -> list[dict]:
    path = tmp_path / name
    with pytest.raises(RequestsExported) as stopped:
        infer_intents(
            small_dataset(), config(tmp_path, export_requests=str(path), **overrides), tmp_path / "out", False
        )
    assert stopped.value.code == 0 and stopped.value.path == path  # SystemExit(0): the CLI exits cleanly
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert stopped.value.count == len(lines)
    return lines


def engine_output(requests: list[dict]) -> list[dict]:
    """What vLLM's run_batch writes for these requests, answering like FakeBackend (with a
    second line after the answer, which stop_at_newline cuts off)."""
    fake = FakeBackend()
    return [
        {
            "id": f"vllm-{n}",
            "custom_id": r["custom_id"],
            "response": {
                "status_code": 200,
                "request_id": f"vllm-batch-{n}",
                "body": {
                    "object": "chat.completion",
                    "model": r["body"]["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": fake.generate([r["body"]["messages"][0]["content"]])[0]
                                + "\nBecause",
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
                },
            },
            "error": None,
        }
        for n, r in enumerate(requests)
    ]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_export_writes_openai_batch_requests_keyed_by_the_answer_cache(tmp_path: Path) -> None:
    lines = export(tmp_path)
    assert len(lines) == 16  # unique prompts of the small dataset
    backend = OpenAIBackend(MODEL)
    dataset = small_dataset()
    for line in lines:
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        body = line["body"]
        assert body == {
            "model": MODEL,
            "messages": [{"role": "user", "content": body["messages"][0]["content"]}],
            "max_tokens": 32,
            "temperature": 0,
        }
        prompt = body["messages"][0]["content"]
        assert line["custom_id"] == answer_key(backend.identity, "server", prompt, backend.settings)
        assert prompt.startswith("The order in which users click") and dataset.item_names[1] not in ("",)
    assert len({line["custom_id"] for line in lines}) == 16
    assert not (tmp_path / "out" / "meta.json").exists()  # the run stopped after the export
    sampled = export(tmp_path, "sampled.jsonl", do_sample=True, seed=3)
    assert sampled[0]["body"]["temperature"] == 1.0 and sampled[0]["body"]["seed"] == 3
    assert {line["custom_id"] for line in sampled}.isdisjoint(line["custom_id"] for line in lines)


def test_round_trip_fills_the_cache_and_a_rerun_needs_no_engine(tmp_path: Path) -> None:
    requests = export(tmp_path)
    responses = write_jsonl(tmp_path / "responses.jsonl", engine_output(requests))
    result = infer_intents(
        small_dataset(), config(tmp_path, import_responses=str(responses)), tmp_path / "out", progress=False
    )
    assert result.meta["counts"]["generated"] == 0 and result.meta["counts"]["from_cache"] == 16
    assert result.meta["import"]["accepted"] == 16 and result.meta["import"]["missing_ids"] == 0
    assert result.meta["llm"]["model"] == f"openai:{MODEL}"
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    fake = FakeBackend()
    by_prompt = {r["body"]["messages"][0]["content"]: r for r in requests}
    for row in answers:
        assert row["long"] and "Because" not in row["long"]
    for prompt in by_prompt:
        assert postprocess_answer(fake.generate([prompt])[0]) in {
            row[v] for row in answers for v in ("long", "short")
        }

    rerun = infer_intents(small_dataset(), config(tmp_path), tmp_path / "out2", progress=False)
    assert rerun.meta["counts"]["generated"] == 0
    np.testing.assert_array_equal(np.asarray(rerun.vectors), np.asarray(result.vectors))
    # Importing the same file again writes nothing new.
    again = infer_intents(
        small_dataset(), config(tmp_path, import_responses=str(responses)), tmp_path / "out3", progress=False
    )
    assert again.meta["import"]["already_cached"] == 16 and again.meta["import"]["accepted"] == 16


def test_problems_are_reported_never_accepted_and_missing_ids_stop_the_run(tmp_path: Path) -> None:
    requests = export(tmp_path)
    rows: list[object] = engine_output(requests)
    ok = rows[:10]
    unknown = {**rows[10], "custom_id": "f" * 64}
    duplicate = [rows[11], json.loads(json.dumps(rows[11]))]
    duplicate[1]["response"]["body"]["choices"][0]["message"]["content"] = "another answer"
    failed_error = {
        "custom_id": requests[12]["custom_id"],
        "response": None,
        "error": {"code": "x", "message": "boom"},
    }
    failed_status = json.loads(json.dumps(rows[13]))
    failed_status["response"] = {"status_code": 500, "body": {"error": {"message": "engine died"}}}
    no_choices = json.loads(json.dumps(rows[14]))
    no_choices["response"]["body"] = {"choices": []}
    malformed = ["{not json", json.dumps({"response": rows[0]["response"]}), json.dumps([1, 2])]
    # requests[15] has no line at all: missing.
    path = write_jsonl(
        tmp_path / "responses.jsonl",
        [*ok, unknown, *duplicate, failed_error, failed_status, no_choices, *malformed, ""],
    )
    with pytest.warns(ImportProblemWarning) as caught, pytest.raises(ValueError) as stopped:
        infer_intents(small_dataset(), config(tmp_path, import_responses=str(path)), tmp_path / "out", False)
    warning = str(caught[0].message)
    assert "10 answers accepted" in warning
    assert (
        f"1 unknown ids, not asked by this run (another export, model name or setting?) (first: {'f' * 64})"
        in warning
    )
    assert (
        f"1 ids on more than one line, all their lines rejected (first: {requests[11]['custom_id']})"
        in warning
    )
    assert (
        "4 malformed lines (first: 16, 17, 18, 19)" in warning
    )  # no choices, not JSON, no custom_id, a list
    assert "2 failed requests" in warning and "boom" in warning and "engine died" in warning
    message = str(stopped.value)
    assert "6 of 16 prompts have no answer after --import-responses" in message
    assert "--export-requests" in message and "--base-url" in message
    assert not (tmp_path / "out" / "meta.json").exists()

    # The accepted answers are cached: a second export holds only the 6 prompts without one.
    remaining = export(tmp_path, "remaining.jsonl")
    assert {r["custom_id"] for r in remaining} == {requests[i]["custom_id"] for i in range(11, 16)} | {
        requests[10]["custom_id"]
    }
    result = infer_intents(
        small_dataset(),
        config(tmp_path, import_responses=str(write_jsonl(tmp_path / "r2.jsonl", engine_output(remaining)))),
        tmp_path / "out",
        progress=False,
    )
    assert result.meta["counts"]["from_cache"] == 16 and result.meta["import"]["accepted"] == 6
    # The duplicated id got the engine's answer of the second run, not either of the rejected ones.
    assert "another answer" not in (tmp_path / "out" / "answers.jsonl").read_text()


def test_import_then_export_of_what_is_still_missing(tmp_path: Path) -> None:
    requests = export(tmp_path)
    partial = write_jsonl(tmp_path / "partial.jsonl", engine_output(requests[:5]))
    with pytest.raises(RequestsExported) as stopped:
        infer_intents(
            small_dataset(),
            config(tmp_path, import_responses=str(partial), export_requests=str(tmp_path / "rest.jsonl")),
            tmp_path / "out",
            progress=False,
        )
    assert stopped.value.count == 11
    assert "11 batch requests (5 of 16 prompts have cached answers)" in str(stopped.value)


def test_read_responses_reports_first_ids_and_missing(tmp_path: Path) -> None:
    backend = OpenAIBackend("m")
    wanted = ["a", "b", "c"]
    ok = {
        "custom_id": "a",
        "response": {"status_code": 200, "body": {"choices": [{"message": {"content": "x"}}]}},
    }
    answers, report = read_responses(write_jsonl(tmp_path / "r.jsonl", [ok]), wanted, backend)
    assert answers == {"a": "x"} and report.missing_ids == ["b", "c"] and report.problems == 0
    assert report.as_meta()["first"]["missing_ids"] == ["b", "c"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_responses(tmp_path / "nowhere.jsonl", wanted, backend)


def test_batch_files_need_the_openai_backend_and_a_model_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need --backend openai --llm-model NAME"):
        IntentConfig(backend="fake", export_requests=str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match="needs the served model's name"):
        IntentConfig(backend="openai", import_responses=str(tmp_path / "x.jsonl"))


def test_openai_backend_without_server_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 prompts have no answer.*--base-url.*--export-requests"):
        infer_intents(small_dataset(), config(tmp_path), tmp_path / "out", progress=False)
