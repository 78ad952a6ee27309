"""The openai backend over real HTTP on 127.0.0.1: a stub server scripted to fail (500, 429, 400,
hangs), a closed port, and llama-cpp-python's OpenAI-compatible server running the bundled model."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fakes import MOVIE_NAMES
from test_intent_pipeline import small_dataset

from llm4sbr.intent import (
    AnswerCache,
    FakeBackend,
    IntentConfig,
    LLMServerError,
    OpenAIBackend,
    infer_intents,
    postprocess_answer,
)
from llm4sbr.intent.prompts import VIEWS, build_prompt

Reply = tuple[int, dict | str, dict[str, str]]


class Stub:
    """A chat-completions server on 127.0.0.1 whose replies come from ``script(n, body)`` (n: the
    request's number, from 1); records every request body and the most requests in flight."""

    def __init__(self, script: Callable[[int, dict], Reply]) -> None:
        self.script = script
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.bodies.append(body)
                    n = len(stub.bodies)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, doc, headers = stub.script(n, body)
                finally:
                    # Counted out before the reply is sent: once the client has its reply it
                    # may send its next request while this handler is still finishing.
                    with stub.lock:
                        stub.in_flight -= 1
                data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[[Callable[[int, dict], Reply]], Stub]]:
    started: list[Stub] = []

    def start(script: Callable[[int, dict], Reply]) -> Stub:
        started.append(Stub(script))
        return started[-1]

    yield start
    for s in started:
        s.close()


def completion(content: str) -> dict:
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 5},
    }


def fake_answer(body: dict) -> Reply:
    return 200, completion(FakeBackend().generate([body["messages"][0]["content"]])[0] + "\nand more"), {}


def prompts(n: int = 4) -> list[str]:
    prefixes = [[1, 5], [2, 4, 2], [3], [4, 1]]
    return [build_prompt(MOVIE_NAMES, np.array(p), view) for p in prefixes for view in VIEWS][:n]


def test_retries_500_and_429_then_answers(stub) -> None:
    def script(n: int, body: dict) -> Reply:
        if n == 1:
            return 500, {"error": {"message": "overloaded"}}, {}
        if n == 2:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        return 200, completion("1. Heat (1995)_4\nbecause"), {}

    server = stub(script)
    backend = OpenAIBackend("smol", server.url, max_new_tokens=7, backoff=0.01)
    assert backend.generate(prompts(1)) == ["1. Heat (1995)_4"]  # cut at the end of the first line
    assert len(server.bodies) == 3
    assert server.bodies[0] == {
        "model": "smol",
        "messages": [{"role": "user", "content": prompts(1)[0]}],
        "max_tokens": 7,
        "temperature": 0,
    }
    assert backend.stats["prompts"] == 1 and backend.stats["prompt_tokens"] == 40
    assert "prefill_tokens" not in backend.stats  # the server does not say what it recomputed


def test_client_errors_fail_at_once_with_the_servers_message(stub) -> None:
    server = stub(lambda n, body: (404, {"error": {"message": "model 'smol' does not exist"}}, {}))
    backend = OpenAIBackend("smol", server.url, backoff=0.01)
    with pytest.raises(LLMServerError, match="HTTP 404.*model 'smol' does not exist"):
        backend.generate(prompts(1))
    assert len(server.bodies) == 1


def test_a_closed_port_fails_clearly_after_bounded_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend("smol", f"http://127.0.0.1:{port}/v1", max_retries=3, backoff=0.05, timeout=2)
    start = time.perf_counter()
    with pytest.raises(LLMServerError, match=r"no answer from .* after 4 attempts .*is the server running"):
        backend.generate(prompts(2))
    assert time.perf_counter() - start < 5  # 0.05 + 0.1 + 0.2 s of backoff, +10% jitter


def test_a_hanging_server_times_out(stub) -> None:
    def script(n: int, body: dict) -> Reply:
        time.sleep(1.0)
        return fake_answer(body)

    server = stub(script)
    backend = OpenAIBackend("smol", server.url, timeout=0.2, max_retries=1, backoff=0.01)
    start = time.perf_counter()
    with pytest.raises(LLMServerError, match="after 2 attempts.*timed out"):
        backend.generate(prompts(1))
    assert time.perf_counter() - start < 2


def test_concurrency_is_bounded_and_answers_keep_their_prompts(stub) -> None:
    def script(n: int, body: dict) -> Reply:
        time.sleep(0.05)
        return fake_answer(body)

    server = stub(script)
    backend = OpenAIBackend("smol", server.url, concurrency=3)
    batch = prompts(8)
    answers = backend.generate(batch)
    assert answers == [FakeBackend().generate([p])[0] for p in batch]
    assert 1 < server.max_in_flight <= 3


def test_a_failing_run_keeps_every_answer_received_and_resumes(stub, tmp_path: Path) -> None:
    dataset = small_dataset()
    doomed = build_prompt(dataset.item_names, dataset.splits["test"].prefix(3), "short")

    def script(n: int, body: dict) -> Reply:
        if body["messages"][0]["content"] == doomed:
            time.sleep(0.3)  # the others arrive first
            return 400, {"error": {"message": "prompt rejected"}}, {}
        return fake_answer(body)

    server = stub(script)
    config = IntentConfig(
        backend="openai",
        model="smol",
        base_url=server.url,
        encoder="fake",
        batch_size=100,  # one shard for everything: only the flush on failure writes it
        concurrency=2,
        max_retries=0,
    )
    with pytest.raises(LLMServerError, match="prompt rejected"):
        infer_intents(dataset, config, tmp_path, progress=False)
    kept = len(AnswerCache(tmp_path / "answer_cache"))
    assert kept >= 13  # 16 prompts: all but the failed one and the few requests in flight with it

    healthy = stub(lambda n, body: fake_answer(body))
    config.base_url = healthy.url
    result = infer_intents(dataset, config, tmp_path, progress=False)
    assert result.meta["counts"]["generated"] == 16 - kept and len(healthy.bodies) == 16 - kept
    assert result.meta["llm"]["engine"] == "openai" and result.meta["tokens"]["prefill_computed"] is None
    rerun = infer_intents(dataset, config, tmp_path, progress=False)
    assert rerun.meta["counts"]["generated"] == 0 and len(healthy.bodies) == 16 - kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in SERVER_MODULES),
    reason="needs llama-cpp-python with its [server] extra: pip install 'llm4sbr[cpu-llm]'",
)
def test_against_the_real_llama_cpp_server(tmp_path: Path) -> None:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the Q4_0 model: the same
    greedy answers as the in-process llama.cpp engine, cached, resumable."""
    from llm4sbr.intent import LlamaCppBackend
    from llm4sbr.intent.hf import bundled_smollm2

    local = LlamaCppBackend(bundled_smollm2(), "Q4_0", threads=1, max_new_tokens=12, cache_dir=tmp_path)
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(local.model_path),
        "--model_alias", "smollm2-q4_0", "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "1", "--n_threads_batch", "1",
        "--n_ctx", "2048", "--chat_format", "chat_template.default",
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"}
    )
    try:
        backend = OpenAIBackend(
            "smollm2-q4_0",
            f"http://127.0.0.1:{port}/v1",
            max_new_tokens=12,
            concurrency=1,
            backoff=0.5,
            extra_body={"repeat_penalty": 1.0},  # this server's default is 1.1
        )
        deadline = time.monotonic() + 120
        while True:  # wait until the server answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"the llama.cpp server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        batch = prompts(4)
        over_http = backend.generate(batch)
        in_process = local.generate(batch)
        assert [postprocess_answer(a) for a in over_http] == [postprocess_answer(a) for a in in_process]
        assert all(over_http) and backend.stats["prompt_tokens"] > 4 * 40

        config = IntentConfig(
            backend="openai",
            model="smollm2-q4_0",
            base_url=backend.base_url,
            encoder="fake",
            max_new_tokens=12,
            concurrency=1,
            limit=1,
        )
        result = infer_intents(small_dataset(), config, tmp_path / "out", progress=False)
        assert result.meta["counts"]["generated"] == result.meta["counts"]["unique_prompts"] == 6
        assert result.meta["counts"]["empty_answers"] == 0
        again = infer_intents(small_dataset(), config, tmp_path / "out", progress=False)
        assert again.meta["counts"]["generated"] == 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
