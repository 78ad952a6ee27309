"""On-disk cache of LLM answers, content-addressed and resumable.

Each answer is keyed by a hash of (model identity, precision, prompt, generation settings), so a
changed model, quantisation or decoding setting never reuses a stale answer. Answers are written
one batch per shard file, atomically: killing the process loses at most the batch in flight, and
a rerun generates only the prompts whose keys are missing.

Shard format (JSON): ``{"format": 1, "entries": [{"key", "answer", "check"}, ...], "stats": {}}``
where ``check`` is a hash of key and answer and the optional ``stats`` hold what generating the
batch cost (seconds, prompts, prompt and new tokens, and the prefill tokens the engine actually
computed where it counts them), so a resumed run can still report what all of its answers cost
(:meth:`AnswerCache.generation_stats`). An unreadable shard is renamed to
``*.corrupt`` and an entry whose check fails is dropped; both are reported with
:class:`CacheCorruptionWarning` and counted in :attr:`AnswerCache.corrupt`, and the affected
prompts are generated again.
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
STAT_FIELDS = ("seconds", "prompts", "prompt_tokens", "new_tokens")
OPTIONAL_STAT_FIELDS = ("prefill_tokens",)
"""Recorded when the engine counts them (llama.cpp, transformers); absent in older shards."""


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
        self._shard_stats: list[tuple[frozenset[str], dict[str, float]]] = []
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
            stats = doc.get("stats")
            if stats is not None:
                stats = {name: float(stats[name]) for name in STAT_FIELDS} | {
                    name: float(stats[name]) for name in OPTIONAL_STAT_FIELDS if name in stats
                }
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            shard.replace(shard.with_suffix(".corrupt"))
            self._report(f"unreadable shard {shard.name} ({exc}), moved to {shard.stem}.corrupt")
            return
        for key, answer, check in entries:
            if isinstance(key, str) and isinstance(answer, str) and check == _entry_check(key, answer):
                self._answers[key] = answer
            else:
                self._report(f"entry {str(key)[:16]}... in {shard.name} fails its check")
        if stats is not None:
            self._shard_stats.append((frozenset(key for key, _, _ in entries), stats))

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> str | None:
        return self._answers.get(key)

    def put_many(
        self, keys: Sequence[str], answers: Sequence[str], stats: Mapping[str, float] | None = None
    ) -> Path:
        """Store one batch as a new shard, atomically, with what generating it cost (``stats``:
        :data:`STAT_FIELDS` and any of :data:`OPTIONAL_STAT_FIELDS`, or None); returns the
        shard's path."""
        if len(keys) != len(answers):
            raise ValueError(f"{len(keys)} keys but {len(answers)} answers")
        doc: dict[str, object] = {"format": SHARD_FORMAT}
        entries = [
            {"key": k, "answer": a, "check": _entry_check(k, a)} for k, a in zip(keys, answers, strict=True)
        ]
        # Names sort in write order, so a later shard overrides an earlier one on load.
        shard = self.root / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        doc["entries"] = entries
        if stats is not None:
            doc["stats"] = {name: float(stats[name]) for name in STAT_FIELDS} | {
                name: float(stats[name]) for name in OPTIONAL_STAT_FIELDS if name in stats
            }
            self._shard_stats.append((frozenset(keys), doc["stats"]))
        write_atomic(shard, json.dumps(doc, ensure_ascii=False))
        self._answers.update(zip(keys, answers, strict=True))
        return shard

    def generation_stats(self, keys: Sequence[str]) -> dict[str, float | None]:
        """What generating ``keys`` cost, summed over the shards that hold any of them
        (:data:`STAT_FIELDS` plus ``shards``; shards written without stats are not counted,
        and ``keys_without_stats`` says how many of ``keys`` are only in such shards or absent).
        ``prefill_tokens`` sums the shards that recorded it (None when none did)."""
        wanted = set(keys)
        totals: dict[str, float | None] = dict.fromkeys(STAT_FIELDS, 0.0) | {"shards": 0}
        totals |= dict.fromkeys(OPTIONAL_STAT_FIELDS)
        covered: set[str] = set()
        for shard_keys, stats in self._shard_stats:
            if shard_keys & wanted:
                totals["shards"] += 1
                covered |= shard_keys & wanted
                for name in STAT_FIELDS:
                    totals[name] += stats[name]
                for name in OPTIONAL_STAT_FIELDS:
                    if name in stats:
                        totals[name] = (totals[name] or 0.0) + stats[name]
        totals["keys_without_stats"] = len(wanted - covered)
        return totals
