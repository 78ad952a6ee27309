"""Intent localization (paper Eqs. 2-5): map a free-text LLM answer onto the item catalog.

For an answer embedding e and catalog embeddings e_1..e_n::

    sim_j = cos(e, e_j)
    I_r   = indices of the r largest sim_j
    h     = sum_{j in I_r} sim_j * e_j          (reduce="sum", the paper's Eq. 5)
    h     = (1/r) sum_{j in I_r} sim_j * e_j    (reduce="mean", the authors' code)

Each selected item is weighted by its own similarity (the released code pairs the top-r
embeddings with the similarities of the first r catalog rows, a bug not reproduced here).
r = 0 returns the answer embedding unchanged (the paper's Fig. 7 ablation). Negative cosines are
kept, as in both sources.
"""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("sum", "mean")
BLOCK_ELEMENTS = 1 << 22
"""Similarities held at once (16 MB of float32 plus 32 MB of argpartition indices), whatever
the catalog size: answers go in row blocks and the catalog in column chunks."""


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _top_r(sims: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and column indices of the r largest entries of each row of ``sims`` [m, c], r <= c."""
    top = np.argpartition(sims, sims.shape[1] - r, axis=1)[:, -r:]
    return np.take_along_axis(sims, top, axis=1), top


def top_r_similar(
    unit_rows: np.ndarray, catalog_unit: np.ndarray, r: int, column_chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """The r catalog rows most cosine-similar to each of ``unit_rows`` [m, d] (unit rows; the
    catalog [n, d] too) -> (similarities [m, r], catalog indices [m, r]), in no particular
    order. The catalog goes ``column_chunk`` rows at a time; each chunk's top r is merged into
    the running top r, so memory is O(m * (column_chunk + r)) for any n."""
    n = catalog_unit.shape[0]
    best_sims = best_idx = None
    for start in range(0, n, column_chunk):
        sims = unit_rows @ catalog_unit[start : start + column_chunk].T
        values, idx = _top_r(sims, min(r, sims.shape[1]))
        idx += start
        if best_sims is not None:
            values = np.concatenate([best_sims, values], axis=1)
            idx = np.concatenate([best_idx, idx], axis=1)
            if values.shape[1] > r:
                values, keep = _top_r(values, r)
                idx = np.take_along_axis(idx, keep, axis=1)
        best_sims, best_idx = values, idx
    return best_sims, best_idx


def localize(
    answer_emb: np.ndarray,
    catalog_emb: np.ndarray,
    r: int = 5,
    reduce: str = "sum",
    block_elements: int = BLOCK_ELEMENTS,
) -> np.ndarray:
    """Localized intent vectors.

    answer_emb: [m, d] answer embeddings. catalog_emb: [n, d] item-name embeddings. r: items
    per answer (clamped to n; 0 disables localization). reduce: "sum" or "mean".
    block_elements bounds the similarity block held in memory (answers x catalog items), so
    memory does not grow with the catalog. Returns [m, d] float32.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    if block_elements < 1:
        raise ValueError(f"block_elements must be >= 1, got {block_elements}")
    answer_emb = np.asarray(answer_emb, dtype=np.float32)
    if r == 0:
        return answer_emb.copy()
    catalog_emb = np.asarray(catalog_emb, dtype=np.float32)
    if answer_emb.ndim != 2 or catalog_emb.ndim != 2 or answer_emb.shape[1] != catalog_emb.shape[1]:
        raise ValueError(
            f"answer_emb [m, d] and catalog_emb [n, d] expected, got {answer_emb.shape}, {catalog_emb.shape}"
        )
    n = catalog_emb.shape[0]
    if n == 0:
        raise ValueError("localization with r > 0 needs a non-empty catalog")
    r = min(r, n)
    catalog_unit = _unit_rows(catalog_emb)
    column_chunk = min(n, max(r, block_elements // 64))
    rows = max(1, block_elements // column_chunk)
    out = np.empty_like(answer_emb)
    for start in range(0, answer_emb.shape[0], rows):
        block = _unit_rows(answer_emb[start : start + rows])
        weights, top = top_r_similar(block, catalog_unit, r, column_chunk)
        out[start : start + len(block)] = np.einsum("mr,mrd->md", weights, catalog_emb[top])
    if reduce == "mean":
        out /= r
    return out
