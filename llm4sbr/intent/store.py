"""The stage-1 output folder, read by stage 2's ``--intents`` option.

* ``intents.npy``: [n_samples, 2, d_text] float32, axis 1 = (long, short) view.
* ``sample_ids.npy``: [n_samples] int64, the sample id of each row (join on id, never on order).
* ``from_llm.npy``: [n_samples] bool aligned with sample_ids.npy: True where the row's intents
  come from the LLM's answers, False where the LLM budget's predictor filled them
  (:mod:`llm4sbr.intent.budget`); all True without a budget. Folders written before it existed
  have none (:func:`load_from_llm` then returns None).
* ``answers.jsonl``: one ``{"sample_id", "long", "short"}`` line per row from the LLM, the
  post-processed answers (every row without a budget).
* ``catalog.npz``: ``ids`` [m] int64 model ids of the catalog items (those with a name) and
  ``vectors`` [m, d_text] float32 their encoded names, the space the intents are localized in
  (read by the intent predictor to explain predicted intents).
* ``meta.json``: models, precision, template hash, r, counts, timings, peak memory, and the
  shape and a hash of the ids, so :func:`load_intents` can tell a consistent folder from a mixed one.

Every file is written atomically. ``meta.json`` is removed before and written after the others,
so it marks a complete output, and a folder caught mid-rewrite fails :func:`load_intents`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from llm4sbr.atomic import atomic_writer, write_atomic

from .prompts import VIEWS

INTENTS_FILE = "intents.npy"
SAMPLE_IDS_FILE = "sample_ids.npy"
ANSWERS_FILE = "answers.jsonl"
FROM_LLM_FILE = "from_llm.npy"
META_FILE = "meta.json"
CATALOG_FILE = "catalog.npz"
FORMAT = 1


def ids_digest(sample_ids: np.ndarray) -> str:
    """sha256 of the ids as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(sample_ids, dtype="<i8").tobytes()).hexdigest()


def write_answers(out_dir: Path, sample_ids: np.ndarray, answers: list[tuple[str, str]]) -> None:
    """``answers.jsonl``: answers[i] = (long, short) post-processed answers of sample_ids[i]."""
    lines = [
        json.dumps({"sample_id": int(sid), VIEWS[0]: lt, VIEWS[1]: st}, ensure_ascii=False)
        for sid, (lt, st) in zip(sample_ids, answers, strict=True)
    ]
    write_atomic(out_dir / ANSWERS_FILE, "\n".join(lines) + "\n")


def begin_output(out_dir: Path) -> None:
    """Create ``out_dir`` and drop its meta.json, which :func:`write_meta` restores last, and
    its from_llm.npy, which only :func:`write_from_llm` writes (so no stale one stays)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    (out_dir / FROM_LLM_FILE).unlink(missing_ok=True)


def write_sample_ids(out_dir: Path, sample_ids: np.ndarray) -> None:
    with atomic_writer(out_dir / SAMPLE_IDS_FILE) as f:
        np.save(f, np.asarray(sample_ids, dtype=np.int64))


def write_from_llm(out_dir: Path, from_llm: np.ndarray) -> None:
    """``from_llm.npy``: [n_samples] bool, True for the rows whose intents the LLM answered."""
    with atomic_writer(out_dir / FROM_LLM_FILE) as f:
        np.save(f, np.asarray(from_llm, dtype=bool))


def load_from_llm(out_dir: str | os.PathLike) -> np.ndarray | None:
    """[n_samples] bool from ``from_llm.npy`` (aligned with :func:`load_intents`'s sample ids),
    or None when the folder has none. Raises ValueError for an unreadable file or one whose
    length is not the number of rows of sample_ids.npy."""
    out_dir = Path(out_dir)
    path = out_dir / FROM_LLM_FILE
    if not path.is_file():
        return None
    try:
        from_llm = np.load(path)
        n_rows = len(np.load(out_dir / SAMPLE_IDS_FILE, mmap_mode="r"))
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{out_dir}: unreadable array file ({exc})") from exc
    if from_llm.dtype != np.bool_ or from_llm.shape != (n_rows,):
        raise _fail(path, f"expected [{n_rows}] bool, got {from_llm.shape} {from_llm.dtype}")
    return from_llm


def write_intents(out_dir: Path, shape: tuple[int, int, int], blocks: Iterable[np.ndarray]) -> None:
    """Stream ``intents.npy`` of ``shape`` from consecutive row blocks [k, 2, d] (never the whole
    array in memory at once), atomically."""
    rows = 0
    with atomic_writer(out_dir / INTENTS_FILE) as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
        )
        for block in blocks:
            if block.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"intent block of shape {block.shape} does not fit {tuple(shape)}")
            f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"wrote {rows} intent rows, expected {shape[0]}")


def write_catalog(out_dir: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """``catalog.npz``: item model ids [m] and their encoded names [m, d_text]."""
    ids, vectors = np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or ids.shape != (len(vectors),):
        raise ValueError(f"catalog ids {ids.shape} and vectors {vectors.shape} do not match")
    with atomic_writer(out_dir / CATALOG_FILE) as f:
        np.savez(f, ids=ids, vectors=vectors)


def load_catalog(out_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids [m] int64, vectors [m, d_text] float32) from ``catalog.npz``, or None when the folder
    has none (folders written before it existed, or by :func:`save_intents`)."""
    path = Path(out_dir) / CATALOG_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            ids, vectors = data["ids"], data["vectors"]
    except (ValueError, OSError, KeyError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable catalog ({exc})") from exc
    if vectors.ndim != 2 or ids.shape != (len(vectors),) or ids.dtype.kind not in "iu":
        raise _fail(path, f"expected ids [m] and vectors [m, d], got {ids.shape} and {vectors.shape}")
    return ids.astype(np.int64), vectors.astype(np.float32)


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(out_dir / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def standard_meta(shape: tuple[int, ...], sample_ids: np.ndarray) -> dict[str, Any]:
    """The meta.json fields :func:`load_intents` validates."""
    return {
        "format": FORMAT,
        "shape": [int(s) for s in shape],
        "views": list(VIEWS),
        "sample_ids_sha256": ids_digest(sample_ids),
    }


def save_intents(
    out_dir: str | os.PathLike,
    vectors: np.ndarray,
    sample_ids: np.ndarray,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write an output folder from arrays (e.g. intents computed elsewhere, or fakes for tests).

    vectors: [n, 2, d_text] (cast to float32). sample_ids: [n] unique integers. meta: extra
    meta.json fields (the validated ones are always set here). Returns the folder.
    """
    out_dir = Path(out_dir)
    vectors = np.asarray(vectors, dtype=np.float32)
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    if vectors.ndim != 3 or vectors.shape[1] != len(VIEWS):
        raise ValueError(f"vectors must be [n, {len(VIEWS)}, d_text], got {vectors.shape}")
    if sample_ids.shape != (len(vectors),) or len(np.unique(sample_ids)) != len(sample_ids):
        raise ValueError(f"sample_ids must be {len(vectors)} unique ids, got shape {sample_ids.shape}")
    begin_output(out_dir)
    write_intents(out_dir, vectors.shape, [vectors])
    write_sample_ids(out_dir, sample_ids)
    write_meta(out_dir, {**(meta or {}), **standard_meta(vectors.shape, sample_ids)})
    return out_dir


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def load_intents(out_dir: str | os.PathLike) -> tuple[np.memmap, np.ndarray]:
    """Open a stage-1 output folder.

    Returns (vectors, sample_ids): vectors is a read-only memmap [n, 2, d_text] float32 and
    sample_ids [n] int64 labels its rows. Raises FileNotFoundError for a missing folder or
    file and ValueError for a corrupt meta.json or files that disagree with it or each other.
    """
    out_dir = Path(out_dir)
    for name in (META_FILE, INTENTS_FILE, SAMPLE_IDS_FILE):
        if not (out_dir / name).is_file():
            raise FileNotFoundError(
                f"{out_dir / name} is missing: run `llm4sbr infer-intents --out {out_dir}`"
            )
    meta_path = out_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        shape = tuple(int(s) for s in meta["shape"])
        digest = str(meta["sample_ids_sha256"])
        fmt = meta["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(meta_path, f"corrupt meta ({type(exc).__name__}: {exc})") from exc
    if fmt != FORMAT:
        raise _fail(meta_path, f"format {fmt!r} is not the supported {FORMAT}")
    try:
        vectors = np.load(out_dir / INTENTS_FILE, mmap_mode="r")
        sample_ids = np.load(out_dir / SAMPLE_IDS_FILE)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{out_dir}: unreadable array file ({exc})") from exc
    if vectors.dtype != np.float32 or vectors.ndim != 3 or vectors.shape[1] != len(VIEWS):
        raise _fail(
            out_dir / INTENTS_FILE,
            f"expected [n, {len(VIEWS)}, d] float32, got {vectors.shape} {vectors.dtype}",
        )
    if vectors.shape != shape:
        raise _fail(out_dir / INTENTS_FILE, f"shape {vectors.shape} does not match meta.json's {shape}")
    if sample_ids.ndim != 1 or sample_ids.dtype.kind not in "iu" or len(sample_ids) != shape[0]:
        raise _fail(
            out_dir / SAMPLE_IDS_FILE,
            f"expected [{shape[0]}] integers, got {sample_ids.shape} {sample_ids.dtype}",
        )
    if ids_digest(sample_ids) != digest:
        raise _fail(out_dir / SAMPLE_IDS_FILE, "ids do not match meta.json (files from different runs?)")
    if len(np.unique(sample_ids)) != len(sample_ids):
        raise _fail(out_dir / SAMPLE_IDS_FILE, "duplicate sample ids")
    return vectors, sample_ids.astype(np.int64, copy=False)
