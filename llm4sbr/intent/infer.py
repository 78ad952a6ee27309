"""Stage 1 end to end: samples -> prompts -> cached LLM answers -> localized intent vectors.

Samples are taken split by split in the dataset's split order; with ``config.limit`` only the
first ``limit`` samples of each split are processed and the output covers exactly those sample
ids (stage 2 must then restrict itself to them or fail on the missing ids).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset import SessionDataset
from .backends import Backend, make_backend, postprocess_answer
from .cache import STAT_FIELDS, AnswerCache, answer_key
from .config import IntentConfig
from .encode import Encoder, make_encoder
from .localize import localize
from .prompts import VIEWS, build_prompt, template_hash
from .store import (
    begin_output,
    load_intents,
    standard_meta,
    write_answers,
    write_catalog,
    write_intents,
    write_meta,
    write_sample_ids,
)

ROWS_PER_WRITE = 65536


@dataclass
class IntentResult:
    """What :func:`infer_intents` wrote: ``vectors`` [n, 2, d_text] (read-only memmap of
    intents.npy), ``sample_ids`` [n] labelling its rows, and the ``meta`` dict of meta.json."""

    out_dir: Path
    vectors: np.memmap
    sample_ids: np.ndarray
    meta: dict[str, Any]


def _selected_samples(
    dataset: SessionDataset, limit: int | None
) -> tuple[list[np.ndarray], np.ndarray, dict]:
    prefixes, ids, counts = [], [], {}
    for split, samples in dataset.splits.items():
        n = len(samples) if limit is None else min(limit, len(samples))
        prefixes += [samples.prefix(i) for i in range(n)]
        ids.append(samples.sample_ids[:n])
        counts[split] = n
    sample_ids = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    if len(np.unique(sample_ids)) != len(sample_ids):
        raise ValueError(f"dataset {dataset.name!r}: sample ids are not unique across splits")
    return prefixes, sample_ids, counts


def _peak_memory() -> dict[str, float | None]:
    try:
        import resource

        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb: float | None = round(rss_kb / (1 << 20 if platform.system() == "Darwin" else 1 << 10), 1)
    except ImportError:
        rss_mb = None
    cuda_mb = round(torch.cuda.max_memory_allocated() / (1 << 20), 1) if torch.cuda.is_available() else None
    return {"process_peak_rss_mb": rss_mb, "cuda_peak_allocated_mb": cuda_mb}


def _all_answers_cost(cache: AnswerCache, keys: list[str]) -> dict[str, float | None]:
    """What generating every answer of this run cost, in this call and in earlier interrupted
    ones (``timing`` covers this call only), from the cache shards' records."""
    cost = cache.generation_stats(keys)
    seconds = cost["seconds"]
    cost["prompts_per_s"] = round(cost["prompts"] / seconds, 3) if seconds else None
    return cost


def _generate_missing(
    prompts: list[str], keys: list[str], cache: AnswerCache, backend: Backend, batch_size: int, progress: bool
) -> int:
    """Generate the prompts whose key is not cached, one cache shard per batch. Longest first, and
    prompts that differ only in their last line (the views of a sample) stay adjacent, so a batch
    holds whole groups whose common prefix the backend can prefill once."""
    stems = [p.rsplit("\n", 1)[0] for p in prompts]
    missing = sorted(
        (i for i, k in enumerate(keys) if k not in cache), key=lambda i: (-len(stems[i]), stems[i])
    )
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(missing), unit="prompt", disable=not progress)
    with bar:
        for start in range(0, len(missing), batch_size):
            idx = missing[start : start + batch_size]
            before = dict(backend.stats)
            answers = backend.generate([prompts[i] for i in idx])
            cost = {name: backend.stats[name] - before[name] for name in STAT_FIELDS}
            cache.put_many([keys[i] for i in idx], answers, cost)
            bar.update(len(idx))
            seconds = backend.stats["seconds"]
            if seconds > 0:
                bar.set_postfix(tok_s=f"{backend.stats['new_tokens'] / seconds:.1f}", refresh=False)
    return len(missing)


def infer_intents(
    dataset: SessionDataset,
    config: IntentConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    backend: Backend | None = None,
    encoder: Encoder | None = None,
) -> IntentResult:
    """Run stage 1 and write ``out_dir`` (see :mod:`llm4sbr.intent.store` for the files).

    Two prompts (long, short view) per selected sample; answers come from the cache under
    ``config.cache_dir`` or are generated in batches and cached; post-processed answers are
    encoded, localized over the item catalog (items with a non-empty name) and written as
    intents.npy [n_samples, 2, d_text] float32 aligned with sample_ids.npy. ``backend`` and
    ``encoder`` override the ones the config names (tests inject fakes). Rerunning after an
    interruption regenerates only the answers that are not cached yet.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefixes, sample_ids, split_counts = _selected_samples(dataset, config.limit)
    prompts_per_sample = [
        [build_prompt(dataset.item_names, p, view, config.max_prompt_items) for view in VIEWS]
        for p in prefixes
    ]
    unique_prompts = list(dict.fromkeys(p for pair in prompts_per_sample for p in pair))

    if backend is None:
        backend = make_backend(
            config.backend,
            config.model,
            config.precision,
            config.device,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            seed=config.seed,
            stop_at_newline=config.stop_at_newline,
        )
    cache = AnswerCache(config.cache_dir or out_dir / "answer_cache")
    keys = [answer_key(backend.identity, backend.precision, p, backend.settings) for p in unique_prompts]
    generated = _generate_missing(unique_prompts, keys, cache, backend, config.batch_size, progress)
    answers_s = time.perf_counter() - started
    answers_cpu_s = time.process_time() - cpu_started

    answer_of = {p: postprocess_answer(cache.get(k)) for p, k in zip(unique_prompts, keys, strict=True)}
    answers = [(answer_of[lt], answer_of[st]) for lt, st in prompts_per_sample]
    encode_started = time.perf_counter()
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder or make_encoder(config.encoder, device)
    distinct_answers = list(dict.fromkeys(a for pair in answers for a in pair))
    catalog_ids = [i for i in range(1, dataset.n_items + 1) if dataset.item_names[i]]
    catalog = encoder.encode([dataset.item_names[i] for i in catalog_ids])
    answer_vectors = localize(
        encoder.encode(distinct_answers), catalog if config.r > 0 else None, config.r, config.localize_reduce
    )
    row_of = {a: i for i, a in enumerate(distinct_answers)}
    answer_rows = np.array([[row_of[lt], row_of[st]] for lt, st in answers], dtype=np.int64).reshape(-1, 2)
    shape = (len(sample_ids), len(VIEWS), encoder.dim)
    blocks = (
        answer_vectors[answer_rows[start : start + ROWS_PER_WRITE]]
        for start in range(0, len(answer_rows), ROWS_PER_WRITE)
    )
    begin_output(out_dir)
    write_intents(out_dir, shape, blocks)
    write_sample_ids(out_dir, sample_ids)
    write_answers(out_dir, sample_ids, answers)
    write_catalog(out_dir, np.asarray(catalog_ids, dtype=np.int64), catalog)
    encode_s = time.perf_counter() - encode_started
    total_s = time.perf_counter() - started

    stats = backend.stats
    seconds = stats["seconds"]

    def per_second(count: float) -> float | None:
        return round(count / seconds, 3) if seconds else None

    meta = {
        **standard_meta(shape, sample_ids),
        "dataset": dataset.name,
        "splits": split_counts,
        "config": asdict(config),
        "llm": {"backend": config.backend, "model": backend.identity, "precision": backend.precision},
        "generation": backend.settings,
        "encoder": encoder.identity,
        "template_hash": template_hash(),
        "max_prompt_items": config.max_prompt_items,
        "r": config.r,
        "localize_reduce": config.localize_reduce,
        "counts": {
            "samples": len(sample_ids),
            "prompts": 2 * len(sample_ids),
            "unique_prompts": len(unique_prompts),
            "generated": generated,
            "from_cache": len(unique_prompts) - generated,
            "corrupt_cache_entries": cache.corrupt,
            "distinct_answers": len(distinct_answers),
            "empty_answers": sum(a == "" for pair in answers for a in pair),
            "catalog_items": len(catalog_ids),
        },
        "timing": {
            "total_s": round(total_s, 3),
            "answers_s": round(answers_s, 3),
            "answers_process_cpu_s": round(answers_cpu_s, 3),
            "generation_s": round(seconds, 3),
            "encode_localize_s": round(encode_s, 3),
            "prompts_per_s": per_second(stats["prompts"]),
            "new_tokens_per_s": per_second(stats["new_tokens"]),
            "prompt_tokens_per_s": per_second(stats["prompt_tokens"]),
        },
        "tokens": {"prompt": int(stats["prompt_tokens"]), "new": int(stats["new_tokens"])},
        "all_answers_generation": _all_answers_cost(cache, keys),
        "peak_memory": _peak_memory(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    write_meta(out_dir, meta)
    vectors, ids = load_intents(out_dir)
    return IntentResult(out_dir, vectors, ids, meta)
