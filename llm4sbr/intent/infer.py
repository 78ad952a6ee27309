"""Stage 1 end to end: samples -> prompts -> cached LLM answers -> localized intent vectors.

Samples are taken split by split in the dataset's split order; with ``config.limit`` only the
first ``limit`` samples of each split are processed and the output covers exactly those sample
ids (stage 2 must then restrict itself to them or fail on the missing ids).

Prompts without a cached answer go to the backend in the order it wants
(:mod:`llm4sbr.intent.order`: shared prefixes adjacent for llama.cpp and servers, lengths
together for transformers' padded batches), and every ``batch_size`` answers are cached as one
shard as they arrive.

Batch files (backend "openai"): with ``config.export_requests`` the prompts without a cached
answer are written as OpenAI batch requests and the run stops (:class:`RequestsExported`, exit
status 0). With ``config.import_responses`` the answers of a batch engine's output file are
cached first (:mod:`llm4sbr.intent.requests_io`; rejected lines are reported with a
:class:`ImportProblemWarning` and in meta.json). Prompts still without an answer are then
asked from ``config.base_url``; without a server the run stops with a ValueError that counts
them and says to export them again (a second export holds only those).

LLM budget (``config.llm_budget``, :mod:`llm4sbr.intent.budget`): only the selected train and
valid samples are prompted (the batch files, too, hold only theirs); after their answers are
encoded and localized, a predictor trained on their vectors fills every other row, and
``from_llm.npy`` and meta.json's ``budget`` record say which rows came from where.

Constrained answers (``config.constrain_answers``, :mod:`llm4sbr.intent.constrain`): the backend
may only answer catalog names; such an answer is used as it is (post-processing would strip the
leading quote of ``'Til There Was You``). Constrained or not, meta.json counts the answers that
are exactly a catalog name (``catalog_answers``, ``catalog_answer_share``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset import SampleSet, SessionDataset
from .backend_base import batched_stream
from .backend_openai import OpenAIBackend
from .backends import Backend, make_backend, postprocess_answer
from .budget import MIN_LLM_SAMPLES, POOL_SPLITS, BudgetPlan, FillPredictor, fit_fill_predictor, plan_budget
from .cache import OPTIONAL_STAT_FIELDS, STAT_FIELDS, AnswerCache, answer_key
from .config import IntentConfig
from .constrain import catalog_names, catalog_tag
from .encode import Encoder, make_encoder
from .localize import localize
from .order import order_prompts
from .prompts import VIEWS, build_prompt, template_hash
from .requests_io import RequestsExported, export_requests, import_responses
from .store import (
    begin_output,
    load_intents,
    standard_meta,
    write_answers,
    write_catalog,
    write_from_llm,
    write_intents,
    write_meta,
    write_sample_ids,
)

ROWS_PER_WRITE = 65536


class ImportProblemWarning(UserWarning):
    """A responses file had lines that were not accepted (see :mod:`llm4sbr.intent.requests_io`)."""


@dataclass
class IntentResult:
    """What :func:`infer_intents` wrote: ``vectors`` [n, 2, d_text] (read-only memmap of
    intents.npy), ``sample_ids`` [n] labelling its rows, and the ``meta`` dict of meta.json."""

    out_dir: Path
    vectors: np.memmap
    sample_ids: np.ndarray
    meta: dict[str, Any]


@dataclass
class _Rows:
    """The samples stage 1 processes, split by split: ``samples`` (every row, in output order),
    ``in_pool`` [n] bool (rows of the budget's pool splits) and ``split_counts``."""

    samples: SampleSet
    in_pool: np.ndarray
    split_counts: dict[str, int]


def _concat(parts: list[SampleSet]) -> SampleSet:
    """The samples of ``parts``, one after the other, as one SampleSet."""
    offsets, items, base = [np.zeros(1, np.int64)], [], 0
    for part in parts:
        start = int(part.offsets[0])
        offsets.append(part.offsets[1:] - start + base)
        items.append(part.items[start : part.offsets[-1]])
        base += int(part.offsets[-1]) - start
    return SampleSet(
        np.concatenate(offsets).astype(np.int64),
        np.concatenate(items).astype(np.int64) if items else np.zeros(0, np.int64),
        np.concatenate([p.targets for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
        np.concatenate([p.sample_ids for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
    )


def _selected_samples(dataset: SessionDataset, limit: int | None) -> _Rows:
    parts, in_pool, counts = [], [], {}
    for split, samples in dataset.splits.items():
        n = len(samples) if limit is None else min(limit, len(samples))
        parts.append(samples if n == len(samples) else samples.subset(np.arange(n)))
        in_pool.append(np.full(n, split in POOL_SPLITS))
        counts[split] = n
    rows = _concat(parts)
    if len(np.unique(rows.sample_ids)) != len(rows.sample_ids):
        raise ValueError(f"dataset {dataset.name!r}: sample ids are not unique across splits")
    pool = np.concatenate(in_pool) if in_pool else np.zeros(0, bool)
    return _Rows(rows, pool, counts)


def _plan(rows: _Rows, n_items: int, config: IntentConfig) -> BudgetPlan | None:
    """The LLM budget's selection (None without a budget); refuses a budget that leaves rows to
    fill with fewer LLM samples than the fill predictor needs, before any LLM call."""
    if config.llm_budget is None:
        return None
    plan = plan_budget(rows.samples, rows.in_pool, n_items, config.llm_budget, config.seed)
    to_fill = len(rows.samples) - plan.selected
    if to_fill and plan.selected < MIN_LLM_SAMPLES:
        raise ValueError(
            f"--llm-budget {config.llm_budget:g} selects {plan.selected} of the {plan.pool} train+valid "
            f"samples; predicting the other {to_fill} samples' intents needs at least {MIN_LLM_SAMPLES} "
            "from the LLM"
        )
    return plan


def llm_sample_count(dataset: SessionDataset, config: IntentConfig) -> tuple[int, int]:
    """(samples stage 1 writes, samples whose prompts go to the LLM) for ``dataset`` and
    ``config``; the two are equal without an LLM budget."""
    rows = _selected_samples(dataset, config.limit)
    plan = _plan(rows, dataset.n_items, config)
    return len(rows.samples), len(rows.samples) if plan is None else plan.selected


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


def _missing_in_order(prompts: list[str], keys: list[str], cache: AnswerCache, backend: Backend) -> list[int]:
    """Indices of the prompts whose key is not cached, in the order the backend wants."""
    missing = [i for i, k in enumerate(keys) if k not in cache]
    order = order_prompts([prompts[i] for i in missing], getattr(backend, "prompt_order", "prefix"))
    return [missing[j] for j in order]


def _cost(backend: Backend, before: dict[str, float]) -> dict[str, float]:
    fields = STAT_FIELDS + tuple(f for f in OPTIONAL_STAT_FIELDS if f in backend.stats)
    return {name: backend.stats[name] - before.get(name, 0) for name in fields}


def _generate_missing(
    prompts: list[str], keys: list[str], cache: AnswerCache, backend: Backend, batch_size: int, progress: bool
) -> int:
    """Generate the prompts whose key is not cached, in :func:`_missing_in_order`, and cache the
    answers as they arrive, one shard per ``batch_size`` answers. Answers received before an
    error or an interruption are cached before it propagates."""
    missing = _missing_in_order(prompts, keys, cache, backend)
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(missing), unit="prompt", disable=not progress)
    pending_keys: list[str] = []
    pending_answers: list[str] = []
    before = dict(backend.stats)

    def flush() -> None:
        nonlocal before
        if pending_keys:
            cache.put_many(pending_keys, pending_answers, _cost(backend, before))
            bar.update(len(pending_keys))
            pending_keys.clear()
            pending_answers.clear()
        before = dict(backend.stats)
        seconds = backend.stats["seconds"]
        if seconds > 0:
            postfix = {"tok_s": f"{backend.stats['new_tokens'] / seconds:.1f}"}
            if backend.stats.get("prompt_tokens") and "prefill_tokens" in backend.stats:
                postfix["prefill"] = f"{backend.stats['prefill_tokens'] / backend.stats['prompt_tokens']:.0%}"
            bar.set_postfix(postfix, refresh=False)

    with bar:
        try:
            for j, answer in batched_stream(backend, [prompts[i] for i in missing], batch_size):
                pending_keys.append(keys[missing[j]])
                pending_answers.append(answer)
                if len(pending_keys) >= batch_size:
                    flush()
        finally:
            flush()
    return len(missing)


def _run_batch_files(
    config: IntentConfig, prompts: list[str], keys: list[str], cache: AnswerCache, backend: Backend
) -> dict[str, Any] | None:
    """``--import-responses`` then ``--export-requests`` (see the module docstring); returns the
    import's record for meta.json (None without an import)."""
    if not isinstance(backend, OpenAIBackend):
        raise ValueError("--export-requests and --import-responses need --backend openai")
    record = None
    if config.import_responses:
        report = import_responses(config.import_responses, keys, cache, backend)
        if report.problems:
            warnings.warn(f"--import-responses {report.summary()}", ImportProblemWarning, stacklevel=3)
        record = report.as_meta()
        missing = len(report.missing_ids)
        if missing and backend.base_url is None and not config.export_requests:
            first = ", ".join(report.missing_ids[:3])
            raise ValueError(
                f"{missing} of {len(prompts)} prompts have no answer after --import-responses "
                f"{config.import_responses} (first ids: {first}, ...). Write them to a new batch file with "
                "--export-requests FILE and run it, or give --base-url of a server to ask it for them"
            )
    if config.export_requests:
        missing = _missing_in_order(prompts, keys, cache, backend)
        count = export_requests(
            config.export_requests, [prompts[i] for i in missing], [keys[i] for i in missing], backend
        )
        message = (
            f"wrote {count} batch requests ({len(prompts) - count} of {len(prompts)} prompts have cached "
            f"answers) to {config.export_requests}; run them on a batch engine, then rerun with "
            "--import-responses OUTPUT.jsonl instead of --export-requests"
        )
        print(message, file=sys.stderr)
        raise RequestsExported(Path(config.export_requests), count, message)
    return record


def _intent_blocks(
    samples: SampleSet,
    from_llm: np.ndarray,
    answer_vectors: np.ndarray,
    answer_rows: np.ndarray,
    fill: FillPredictor | None,
) -> Iterator[np.ndarray]:
    """intents.npy's rows in blocks of at most ROWS_PER_WRITE [k, 2, d_text]: row i is
    ``answer_vectors[answer_rows[j]]`` for the j-th row with ``from_llm`` [n] True, else the
    ``fill`` predictor's prediction for ``samples`` row i."""
    llm_index = np.cumsum(from_llm) - 1
    for start in range(0, len(from_llm), ROWS_PER_WRITE):
        stop = min(start + ROWS_PER_WRITE, len(from_llm))
        mine = from_llm[start:stop]
        block = np.empty((stop - start, 2, answer_vectors.shape[1]), dtype=np.float32)
        block[mine] = answer_vectors[answer_rows[llm_index[start:stop][mine]]]
        if not mine.all():
            assert fill is not None
            block[~mine] = fill.predict(samples.subset(start + np.flatnonzero(~mine)))
        yield block


def _budget_record(plan: BudgetPlan | None, fill: FillPredictor | None, rows: _Rows) -> dict[str, Any] | None:
    """meta.json's ``budget``: the selection (:meth:`BudgetPlan.record`), the rows filled by
    prediction per split and the fill predictor's record (None when nothing was filled)."""
    if plan is None:
        return None
    filled, start = {}, 0
    for split, count in rows.split_counts.items():
        filled[split] = int((~plan.from_llm[start : start + count]).sum())
        start += count
    return {
        **plan.record(),
        "filled_by_prediction": {**filled, "total": sum(filled.values())},
        "predictor": None if fill is None else fill.record,
    }


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
    interruption regenerates only the answers that are not cached yet. With
    ``config.export_requests`` it writes the batch file and raises :class:`RequestsExported`
    (a ``SystemExit`` with status 0) instead of returning.

    With ``config.llm_budget`` only the budget's train and valid samples are prompted; the
    other rows of intents.npy are predicted (see the module doc), from_llm.npy [n_samples] bool
    marks the LLM rows and answers.jsonl holds those rows only.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _selected_samples(dataset, config.limit)
    samples, sample_ids, split_counts = rows.samples, rows.samples.sample_ids, rows.split_counts
    plan = _plan(rows, dataset.n_items, config)
    from_llm = np.ones(len(samples), dtype=bool) if plan is None else plan.from_llm
    llm_rows = np.flatnonzero(from_llm)
    prompts_per_sample = [
        [build_prompt(dataset.item_names, samples.prefix(i), view, config.max_prompt_items) for view in VIEWS]
        for i in llm_rows
    ]
    unique_prompts = list(dict.fromkeys(p for pair in prompts_per_sample for p in pair))
    names = catalog_names(dataset)

    if backend is None:
        backend = make_backend(
            config.backend,
            config.model,
            config.precision,
            config.device,
            threads=config.threads,
            gguf_quant=config.gguf_quant,
            base_url=config.base_url,
            concurrency=config.concurrency,
            request_timeout=config.request_timeout,
            max_retries=config.max_retries,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            seed=config.seed,
            stop_at_newline=config.stop_at_newline,
            answer_names=names if config.constrain_answers else None,
        )
    if config.constrain_answers and backend.settings.get("answers") != catalog_tag(names):
        raise ValueError("constrain_answers is set but the given backend is not constrained to this catalog")
    cache = AnswerCache(config.cache_dir or out_dir / "answer_cache")
    keys = [answer_key(backend.identity, backend.precision, p, backend.settings) for p in unique_prompts]
    imported = None
    if config.export_requests or config.import_responses:
        imported = _run_batch_files(config, unique_prompts, keys, cache, backend)
    generated = _generate_missing(unique_prompts, keys, cache, backend, config.batch_size, progress)
    answers_s = time.perf_counter() - started
    answers_cpu_s = time.process_time() - cpu_started

    name_set = set(names)

    def clean(raw: str) -> str:
        return raw if config.constrain_answers and raw in name_set else postprocess_answer(raw)

    answer_of = {p: clean(cache.get(k)) for p, k in zip(unique_prompts, keys, strict=True)}
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
    fill, fill_train_s = None, 0.0
    if not from_llm.all():
        fill_started = time.perf_counter()
        fill = fit_fill_predictor(
            samples.subset(llm_rows), answer_vectors[answer_rows], dataset.n_items, config.seed, progress
        )
        fill_train_s = time.perf_counter() - fill_started
    begin_output(out_dir)
    write_intents(out_dir, shape, _intent_blocks(samples, from_llm, answer_vectors, answer_rows, fill))
    write_sample_ids(out_dir, sample_ids)
    write_from_llm(out_dir, from_llm)
    write_answers(out_dir, sample_ids[llm_rows], answers)
    write_catalog(out_dir, np.asarray(catalog_ids, dtype=np.int64), catalog)
    encode_s = time.perf_counter() - encode_started - fill_train_s
    total_s = time.perf_counter() - started

    stats = backend.stats
    seconds = stats["seconds"]
    n_answers = 2 * len(answers)
    catalog_answers = sum(a in name_set for pair in answers for a in pair)

    def per_second(count: float | None) -> float | None:
        return round(count / seconds, 3) if seconds and count is not None else None

    meta = {
        **standard_meta(shape, sample_ids),
        "dataset": dataset.name,
        "splits": split_counts,
        "config": asdict(config),
        "llm": {
            "backend": config.backend,
            "engine": getattr(backend, "engine", type(backend).__name__),
            "model": backend.identity,
            "precision": backend.precision,
            "threads": getattr(backend, "threads", None),
            "prompt_order": getattr(backend, "prompt_order", "prefix"),
        },
        "generation": backend.settings,
        "encoder": encoder.identity,
        "template_hash": template_hash(),
        "max_prompt_items": config.max_prompt_items,
        "r": config.r,
        "localize_reduce": config.localize_reduce,
        "counts": {
            "samples": len(sample_ids),
            "llm_samples": len(llm_rows),
            "prompts": 2 * len(llm_rows),
            "unique_prompts": len(unique_prompts),
            "generated": generated,
            "from_cache": len(unique_prompts) - generated,
            "corrupt_cache_entries": cache.corrupt,
            "distinct_answers": len(distinct_answers),
            "empty_answers": sum(a == "" for pair in answers for a in pair),
            "catalog_answers": catalog_answers,
            "catalog_answer_share": round(catalog_answers / n_answers, 4) if n_answers else None,
            "catalog_items": len(catalog_ids),
        },
        "timing": {
            "total_s": round(total_s, 3),
            "answers_s": round(answers_s, 3),
            "answers_process_cpu_s": round(answers_cpu_s, 3),
            "generation_s": round(seconds, 3),
            "encode_localize_s": round(encode_s, 3),
            "fill_train_s": round(fill_train_s, 3),
            "prompts_per_s": per_second(stats["prompts"]),
            "new_tokens_per_s": per_second(stats["new_tokens"]),
            "prompt_tokens_per_s": per_second(stats["prompt_tokens"]),
            "prefill_tokens_per_s": per_second(stats.get("prefill_tokens")),
        },
        "tokens": {
            "prompt": int(stats["prompt_tokens"]),
            "prefill_computed": int(stats["prefill_tokens"]) if "prefill_tokens" in stats else None,
            "new": int(stats["new_tokens"]),
        },
        "import": imported,
        "budget": _budget_record(plan, fill, rows),
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
