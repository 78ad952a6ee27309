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


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def localize(
    answer_emb: np.ndarray, catalog_emb: np.ndarray, r: int = 5, reduce: str = "sum", chunk_rows: int = 4096
) -> np.ndarray:
    """Localized intent vectors.

    answer_emb: [m, d] answer embeddings. catalog_emb: [n, d] item-name embeddings. r: items
    per answer (clamped to n; 0 disables localization). reduce: "sum" or "mean". chunk_rows
    bounds the [chunk_rows, n] similarity block held in memory. Returns [m, d] float32.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
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
    out = np.empty_like(answer_emb)
    for start in range(0, answer_emb.shape[0], chunk_rows):
        block = _unit_rows(answer_emb[start : start + chunk_rows])
        sims = block @ catalog_unit.T
        top = np.argpartition(-sims, r - 1, axis=1)[:, :r]
        weights = np.take_along_axis(sims, top, axis=1)
        out[start : start + len(block)] = np.einsum("mr,mrd->md", weights, catalog_emb[top])
    if reduce == "mean":
        out /= r
    return out
