"""An OpenAI-compatible chat-completions server as the LLM of stage 1 (vLLM, SGLang, llama.cpp's
server, TGI, hosted APIs), with the standard library only.

* ``identity`` is ``openai:<model name>``: the served model's name names its answers in the
  cache, so serve different weights or quantisations under different names (vLLM:
  ``--served-model-name``). ``precision`` is ``"server"``.
* Requests are sent by ``concurrency`` worker threads in the order given (consecutive prompts
  share long prefixes, which a server's prefix cache turns into saved prefill); answers are
  yielded as they arrive (:meth:`OpenAIBackend.stream`), so the caller caches every answer it
  received even when a later request fails or the run is interrupted.
* Each request has a ``timeout``; connection errors, timeouts, HTTP 429 and 5xx are retried
  ``max_retries`` times with exponential backoff (``backoff`` s, doubling, at most
  :data:`MAX_BACKOFF_S`, or the server's ``Retry-After`` when shorter than that cap). Other
  HTTP errors (a wrong model name, a bad request) fail at once. A server that never answers
  raises :class:`LLMServerError` after ``backoff * (2**max_retries - 1)`` s of waits plus the
  attempts' own time.
* ``stop_at_newline``: servers only stop at fixed strings, and a stop at ``"\\n"`` would end an
  answer that begins with an empty line before it starts; so no stop is sent and the answer is
  cut at the end of its first non-empty line here (generation ends at EOS or ``max_tokens``).

The worker threads are daemons: an interrupted run exits without waiting for requests in
flight.

The request body and the answer's place in a response are shared with the batch files of
:mod:`llm4sbr.intent.requests_io`, so answers from a server and from a batch run of the same
model name and settings share their cache keys.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from .backend_base import first_line, generation_settings, new_stats

MAX_BACKOFF_S = 30.0
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
API_KEY_ENV = "OPENAI_API_KEY"
"""Environment variable whose value, when set, is sent as the bearer token."""


class LLMServerError(RuntimeError):
    """The server gave no usable answer: unreachable after the retries, an HTTP error that is
    not worth retrying, or a response without an answer."""


class OpenAIBackend:
    """Answers from ``{base_url}/chat/completions``.

    model: the served model name (required; it is the model's identity in the answer cache).
    base_url: e.g. ``http://127.0.0.1:8000/v1`` (None: this backend can only name requests and
    read answers, for the batch files of :mod:`llm4sbr.intent.requests_io`).
    max_new_tokens, do_sample, top_p, seed, stop_at_newline: as for the other backends
    (greedy: ``temperature`` 0). concurrency: requests in flight. timeout: seconds per request.
    max_retries, backoff: see the module docstring. api_key: bearer token (None: the
    :data:`API_KEY_ENV` environment variable, if set). extra_body: fields added to every request
    body, for settings a server takes beyond the OpenAI API (llama-cpp-python's server applies a
    ``repeat_penalty`` of 1.1 unless told ``{"repeat_penalty": 1.0}``; vLLM takes ``top_k``,
    ``repetition_penalty``, ...); they enter the settings, hence the cache key.
    """

    engine = "openai"
    prompt_order = "prefix"

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        top_p: float = 0.8,
        seed: int = 0,
        stop_at_newline: bool = True,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        api_key: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not model:
            raise ValueError(
                "backend 'openai' needs --llm-model NAME: the model name the server or batch engine "
                "serves (it names the answers in the cache)"
            )
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1 or max_new_tokens < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "need concurrency >= 1, max_new_tokens >= 1, max_retries >= 0, timeout > 0, backoff >= 0"
            )
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        host = urllib.parse.urlsplit(self.base_url or "").hostname or ""
        # A server on this machine is never reached through an HTTP proxy from the environment.
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))
        self.identity = f"openai:{model}"
        self.precision = "server"
        self.settings = generation_settings(max_new_tokens, do_sample, top_p, seed, stop_at_newline, "server")
        self.extra_body = dict(extra_body or {})
        if self.extra_body:
            self.settings["extra_body"] = self.extra_body
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        # The server computes the prompts; how much of them its prefix cache saved it does not
        # say in a portable way, so there is no ``prefill_tokens`` counter.
        self.stats = new_stats(prefill=False)

    # -- what a request and a response look like (shared with the batch files) ----------------

    def request_body(self, prompt: str) -> dict[str, Any]:
        """The chat-completions request body for ``prompt``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.settings["max_new_tokens"],
        }
        if self.settings["do_sample"]:
            body.update(temperature=1.0, top_p=self.settings["top_p"], seed=self.settings["seed"])
        else:
            body["temperature"] = 0
        body.update(self.extra_body)
        return body

    def answer_from_body(self, body: Any) -> str:
        """The raw answer in a chat-completions response body (cut at the end of its first
        non-empty line with ``stop_at_newline``); ValueError when there is none."""
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"no choices[0].message.content in the response ({exc!r})") from exc
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"choices[0].message.content is a {type(content).__name__}, not text")
        return first_line(content) if self.settings["stop_at_newline"] else content

    # -- HTTP ----------------------------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff * 2**attempt, MAX_BACKOFF_S)
        if retry_after:
            try:
                delay = min(max(delay, float(retry_after)), MAX_BACKOFF_S)
            except ValueError:
                pass
        return delay * (1 + 0.1 * random.random())

    def ask(self, prompt: str, stop: threading.Event | None = None) -> tuple[str, dict[str, Any]]:
        """The raw answer to one prompt and the response's ``usage`` (may be empty), with
        retries; :class:`LLMServerError` when there is no answer."""
        if self.base_url is None:
            raise ValueError("backend 'openai' needs --base-url to ask a server")
        stop = stop or threading.Event()
        body = self.request_body(prompt)
        started = time.perf_counter()
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                doc = self._post(body)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace").strip()
                last = f"HTTP {exc.code} {exc.reason}: {detail}"
                if exc.code not in RETRY_STATUS:
                    raise LLMServerError(f"{self.base_url}/chat/completions answered {last}") from exc
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, timeout
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except ValueError as exc:  # a body that is not JSON
                raise LLMServerError(f"{self.base_url} sent a response that is not JSON: {exc}") from exc
            else:
                try:
                    answer = self.answer_from_body(doc)
                except ValueError as exc:
                    raise LLMServerError(f"{self.base_url} sent no answer: {exc}") from exc
                usage = doc.get("usage") if isinstance(doc, dict) else None
                return answer, usage if isinstance(usage, dict) else {}
            if attempt == self.max_retries or stop.wait(self._delay(attempt, retry_after)):
                break
        raise LLMServerError(
            f"no answer from {self.base_url}/chat/completions after {attempt + 1} attempts in "
            f"{time.perf_counter() - started:.1f}s (last: {last}); is the server running and serving "
            f"{self.model!r}? (--max-retries and --request-timeout bound the wait)"
        )

    def stream(self, prompts: list[str]) -> Iterator[tuple[int, str]]:
        """``(index, raw answer)`` as answers arrive, ``concurrency`` requests in flight, taken in
        the order given. The first failure stops new requests; answers that already arrived are
        yielded before it is raised."""
        if not prompts:
            return
        if self.base_url is None:
            raise ValueError(
                f"backend 'openai' has no --base-url: {len(prompts)} prompts have no answer. Give "
                "--base-url of a server, or --export-requests FILE and run it on a batch engine"
            )
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(prompts)):
            todo.put(i)
        done: queue.SimpleQueue[tuple[int, str | None, dict | BaseException]] = queue.SimpleQueue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    answer, usage = self.ask(prompts[i], stop)
                    done.put((i, answer, usage))
                except BaseException as exc:  # handed to the consumer, which raises it
                    done.put((i, None, exc))
                    return

        for _ in range(min(self.concurrency, len(prompts))):
            threading.Thread(target=work, daemon=True, name="llm4sbr-openai").start()
        self.stats["calls"] += 1
        mark = time.perf_counter()
        failure: BaseException | None = None
        try:
            for _ in range(len(prompts)):
                i, answer, extra = done.get()
                now = time.perf_counter()
                self.stats["seconds"] += now - mark
                mark = now
                if answer is None:
                    failure = extra  # type: ignore[assignment]
                    break
                self._count(prompts[i], answer, extra)  # type: ignore[arg-type]
                yield i, answer
            if failure is not None:
                stop.set()
                while True:  # what arrived before the failure is kept
                    try:
                        i, answer, extra = done.get_nowait()
                    except queue.Empty:
                        break
                    if answer is not None:
                        self._count(prompts[i], answer, extra)  # type: ignore[arg-type]
                        yield i, answer
                raise failure
        finally:
            stop.set()

    def _count(self, prompt: str, answer: str, usage: dict[str, Any]) -> None:
        self.stats["prompts"] += 1
        self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.stats["new_tokens"] += int(usage.get("completion_tokens") or 0)

    def generate(self, prompts: list[str]) -> list[str]:
        """Raw answers, in order (see :meth:`stream`)."""
        answers: list[str | None] = [None] * len(prompts)
        for i, answer in self.stream(prompts):
            answers[i] = answer
        return answers  # type: ignore[return-value]
