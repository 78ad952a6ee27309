"""Stage 1 through files: OpenAI batch-format requests out, a batch engine's responses in.

Any engine that reads the OpenAI batch format can answer the prompts: vLLM's ``run_batch``, Ray
Data LLM, hosted batch APIs. :func:`export_requests` writes one line per prompt::

    {"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": NAME, "messages": [{"role": "user", "content": PROMPT}],
              "max_tokens": N, "temperature": 0}}

where ``KEY`` is the prompt's answer-cache key and the body is exactly what the ``openai``
backend sends (:meth:`OpenAIBackend.request_body`), so answers from a batch run and from a
server of the same model name and settings are interchangeable. :func:`read_responses` reads
the engine's output, one line per request::

    {"custom_id": KEY, "response": {"status_code": 200, "body": {"choices": [{"message":
     {"content": ANSWER}}], ...}}, "error": null}

and checks every line. An answer is accepted only from a well-formed line with status 200, no
error, an id this run asked for, and an id that occurs once in the file. Everything else is
counted and reported with its first ids or line numbers, never cached: unknown ids (another
export, model name or setting), ids that occur more than once (which of the answers would be
the right one?), malformed lines, and requests the engine failed. Prompts without an accepted
answer stay missing (what :func:`llm4sbr.intent.infer_intents` then does with them is
documented there).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4sbr.atomic import atomic_writer

from .backend_openai import OpenAIBackend
from .cache import AnswerCache

URL = "/v1/chat/completions"
SHOWN = 5
"""How many ids or line numbers a report lists per problem."""


class RequestsExported(SystemExit):
    """Raised by ``infer_intents`` after ``--export-requests`` wrote its file: the run stops
    there on purpose (exit status 0). ``path``: the file; ``count``: requests in it."""

    def __init__(self, path: Path, count: int, message: str) -> None:
        super().__init__(0)
        self.path, self.count, self.message = path, count, message

    def __str__(self) -> str:
        return self.message


def export_requests(
    path: str | os.PathLike, prompts: Sequence[str], keys: Sequence[str], backend: OpenAIBackend
) -> int:
    """Write one batch request per prompt to ``path`` (JSON lines, atomically); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        for prompt, key in zip(prompts, keys, strict=True):
            line = {"custom_id": key, "method": "POST", "url": URL, "body": backend.request_body(prompt)}
            f.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return len(prompts)


@dataclass
class ImportReport:
    """What :func:`read_responses` found in a responses file. Lists hold every problem; the
    summary and :meth:`as_meta` show the first :data:`SHOWN` of each."""

    path: str
    lines: int = 0
    accepted: int = 0
    already_cached: int = 0
    unknown_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    malformed_lines: list[int] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Lines or ids that were not accepted (missing ids not included)."""
        return len(self.unknown_ids) + len(self.duplicate_ids) + len(self.malformed_lines) + len(self.errors)

    def summary(self) -> str:
        """One paragraph: counts and the first ids of each problem."""

        def first(items: Sequence[object]) -> str:
            shown = ", ".join(str(x) for x in items[:SHOWN])
            return f" (first: {shown}{', ...' if len(items) > SHOWN else ''})"

        parts = [
            f"{self.path}: {self.lines} lines, {self.accepted} answers accepted"
            + (f", {self.already_cached} already cached" if self.already_cached else "")
        ]
        if self.unknown_ids:
            parts.append(
                f"{len(self.unknown_ids)} unknown ids, not asked by this run (another export, "
                f"model name or setting?){first(self.unknown_ids)}"
            )
        if self.duplicate_ids:
            parts.append(
                f"{len(self.duplicate_ids)} ids on more than one line, all their lines rejected"
                f"{first(self.duplicate_ids)}"
            )
        if self.malformed_lines:
            parts.append(f"{len(self.malformed_lines)} malformed lines{first(self.malformed_lines)}")
        if self.errors:
            parts.append(f"{len(self.errors)} failed requests{first([f'{k}: {m}' for k, m in self.errors])}")
        if self.missing_ids:
            parts.append(f"{len(self.missing_ids)} prompts without an answer{first(self.missing_ids)}")
        return "; ".join(parts)

    def as_meta(self) -> dict[str, Any]:
        """Counts and first ids, for meta.json."""
        return {
            "path": self.path,
            "lines": self.lines,
            "accepted": self.accepted,
            "already_cached": self.already_cached,
            "unknown_ids": len(self.unknown_ids),
            "duplicate_ids": len(self.duplicate_ids),
            "malformed_lines": len(self.malformed_lines),
            "errors": len(self.errors),
            "missing_ids": len(self.missing_ids),
            "first": {
                "unknown_ids": self.unknown_ids[:SHOWN],
                "duplicate_ids": self.duplicate_ids[:SHOWN],
                "malformed_lines": self.malformed_lines[:SHOWN],
                "errors": [k for k, _ in self.errors[:SHOWN]],
                "missing_ids": self.missing_ids[:SHOWN],
            },
        }


def _error_message(doc: dict[str, Any]) -> str | None:
    """Why the engine failed this request, or None when it did not."""
    error = doc.get("error")
    if error:
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or error)[:200]
        return str(error)[:200]
    status = doc["response"].get("status_code")
    if status != 200:
        body = doc["response"].get("body")
        detail = body.get("error", body) if isinstance(body, dict) else body
        return f"status {status}: {str(detail)[:200]}"
    return None


def read_responses(
    path: str | os.PathLike, wanted: Sequence[str], backend: OpenAIBackend
) -> tuple[dict[str, str], ImportReport]:
    """The accepted raw answers in the responses file ``path`` by cache key, and the report.

    wanted: the cache keys this run asked for (every other id is unknown). The answer is read
    from the response body as the ``openai`` backend reads it (:meth:`OpenAIBackend.answer_from_body`).
    ``missing_ids`` lists the wanted keys without an accepted answer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--import-responses: {path} does not exist")
    report = ImportReport(str(path))
    wanted_set = set(wanted)
    parsed: list[tuple[int, str, str | None, str | None]] = []  # line, id, answer, error
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            report.lines += 1
            try:
                doc = json.loads(raw)
                key = doc["custom_id"]
                if not isinstance(key, str) or not isinstance(doc.get("response") or {}, dict):
                    raise TypeError("custom_id is not text or response is not an object")
                if doc.get("response") is None and not doc.get("error"):
                    raise KeyError("neither response nor error")
            except (ValueError, KeyError, TypeError):
                report.malformed_lines.append(number)
                continue
            error = _error_message(doc) if doc.get("error") or doc.get("response") else None
            answer = None
            if error is None:
                try:
                    answer = backend.answer_from_body(doc["response"].get("body"))
                except ValueError:
                    report.malformed_lines.append(number)
                    continue
            parsed.append((number, key, answer, error))
    counts = Counter(key for _, key, _, _ in parsed)
    answers: dict[str, str] = {}
    for _, key, answer, error in parsed:
        if key not in wanted_set:
            report.unknown_ids.append(key)
        elif counts[key] > 1:
            if key not in report.duplicate_ids:
                report.duplicate_ids.append(key)
        elif error is not None:
            report.errors.append((key, error))
        else:
            answers[key] = answer  # type: ignore[assignment]
    report.accepted = len(answers)
    report.missing_ids = [k for k in dict.fromkeys(wanted) if k not in answers]
    return answers, report


def import_responses(
    path: str | os.PathLike, keys: Sequence[str], cache: AnswerCache, backend: OpenAIBackend
) -> ImportReport:
    """Put the accepted answers of the responses file ``path`` into ``cache`` (one shard, without
    generation cost: the batch engine's time is not known here) and return the report, whose
    ``missing_ids`` are the ``keys`` still without an answer in the cache afterwards. Answers
    for keys that are cached already are not written again (``already_cached``)."""
    answers, report = read_responses(path, keys, backend)
    new = {k: a for k, a in answers.items() if k not in cache}
    report.already_cached = len(answers) - len(new)
    if new:
        cache.put_many(list(new), list(new.values()))
    report.missing_ids = [k for k in dict.fromkeys(keys) if k not in cache]
    return report
