"""On-disk cache of LLM answers, content-addressed and resumable.

Each answer is keyed by a hash of (model identity, precision, prompt, generation settings), so a
changed model, quantisation or decoding setting never reuses a stale answer. Answers are written
one batch per shard file, atomically: killing the process loses at most the batch in flight, and
a rerun generates only the prompts whose keys are missing.

Shard format (JSON): ``{"format": 1, "entries": [{"key", "answer", "check"}, ...]}`` where
``check`` is a hash of key and answer. An unreadable shard is renamed to ``*.corrupt`` and an
entry whose check fails is dropped; both are reported with :class:`CacheCorruptionWarning` and
counted in :attr:`AnswerCache.corrupt`, and the affected prompts are generated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from llm4sbr.atomic import write_atomic

SHARD_FORMAT = 1


class CacheCorruptionWarning(UserWarning):
    """A cache shard or entry failed validation and will be regenerated."""


def answer_key(model: str, precision: str, prompt: str, settings: Mapping[str, object]) -> str:
    """sha256 hex digest of the canonical JSON of (model identity, precision, prompt, settings)."""
    payload = json.dumps(
        {"model": model, "precision": precision, "prompt": prompt, "settings": dict(settings)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _entry_check(key: str, answer: str) -> str:
    return hashlib.sha256(f"{key}\0{answer}".encode()).hexdigest()[:16]


class AnswerCache:
    """Answers under ``root`` (a folder, created if missing), loaded eagerly into memory.

    ``len(cache)`` counts valid entries; ``cache.get(key)`` returns the raw answer or None.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.corrupt = 0
        self._answers: dict[str, str] = {}
        for shard in sorted(self.root.glob("*.json")):
            self._load_shard(shard)

    def _report(self, message: str) -> None:
        self.corrupt += 1
        warnings.warn(
            f"answer cache {self.root}: {message}; it will be regenerated", CacheCorruptionWarning, 2
        )

    def _load_shard(self, shard: Path) -> None:
        try:
            doc = json.loads(shard.read_bytes())
            if doc.get("format") != SHARD_FORMAT or not isinstance(doc.get("entries"), list):
                raise ValueError(f"unknown shard format {doc.get('format')!r}")
            entries = [(e["key"], e["answer"], e["check"]) for e in doc["entries"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            shard.replace(shard.with_suffix(".corrupt"))
            self._report(f"unreadable shard {shard.name} ({exc}), moved to {shard.stem}.corrupt")
            return
        for key, answer, check in entries:
            if isinstance(key, str) and isinstance(answer, str) and check == _entry_check(key, answer):
                self._answers[key] = answer
            else:
                self._report(f"entry {str(key)[:16]}... in {shard.name} fails its check")

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> str | None:
        return self._answers.get(key)

    def put_many(self, keys: Sequence[str], answers: Sequence[str]) -> Path:
        """Store one batch as a new shard, atomically; returns the shard's path."""
        if len(keys) != len(answers):
            raise ValueError(f"{len(keys)} keys but {len(answers)} answers")
        entries = [
            {"key": k, "answer": a, "check": _entry_check(k, a)} for k, a in zip(keys, answers, strict=True)
        ]
        # Names sort in write order, so a later shard overrides an earlier one on load.
        shard = self.root / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        write_atomic(
            shard, json.dumps({"format": SHARD_FORMAT, "entries": entries}, ensure_ascii=False).encode()
        )
        self._answers.update(zip(keys, answers, strict=True))
        return shard
