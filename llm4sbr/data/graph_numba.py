"""SR-GNN session graphs with numba, for data-loader workers (same definition as
:func:`llm4sbr.data.graph.build_session_graph`; see that module for the graph).

This module imports numba; ``llm4sbr.data`` imports it only when a numba graph is asked for.
The kernels are compiled on first use (about a second) and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as exc:
    raise ImportError("the numba session-graph builder needs numba: pip install 'llm4sbr[numba]'") from exc


@njit(cache=True)
def _count_nodes(item_seq: np.ndarray, item_seq_len: np.ndarray) -> np.ndarray:
    counts = np.zeros(item_seq.shape[0], dtype=np.int64)
    for b in range(item_seq.shape[0]):
        session = np.sort(item_seq[b, : item_seq_len[b]])
        for i in range(session.shape[0]):
            if session[i] != 0 and (i == 0 or session[i] != session[i - 1]):
                counts[b] += 1
    return counts


@njit(cache=True)
def _fill_graphs(
    item_seq: np.ndarray,
    item_seq_len: np.ndarray,
    nodes: np.ndarray,
    alias: np.ndarray,
    A_in: np.ndarray,
    A_out: np.ndarray,
) -> None:
    n_nodes = nodes.shape[1]
    adjacency = np.zeros((n_nodes, n_nodes), dtype=np.float32)
    for b in range(item_seq.shape[0]):
        length = item_seq_len[b]
        session = np.sort(item_seq[b, :length])
        count = 0
        for i in range(length):
            if session[i] != 0 and (i == 0 or session[i] != session[i - 1]):
                nodes[b, count] = session[i]
                count += 1
        for i in range(length):
            alias[b, i] = np.searchsorted(nodes[b, :count], item_seq[b, i])
        adjacency[:, :] = 0.0
        for i in range(length - 1):
            adjacency[alias[b, i], alias[b, i + 1]] = 1.0
        for u in range(count):
            out_degree = np.float32(0.0)
            in_degree = np.float32(0.0)
            for v in range(count):
                out_degree += adjacency[u, v]
                in_degree += adjacency[v, u]
            for v in range(count):
                if adjacency[u, v] != 0.0:
                    A_out[b, u, v] = np.float32(1.0) / out_degree
                if adjacency[v, u] != 0.0:
                    A_in[b, u, v] = np.float32(1.0) / in_degree


def build_session_graph_numba(
    item_seq: np.ndarray, item_seq_len: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build the session graphs of a right-padded batch on the CPU.

    item_seq [B, L] integer item ids (0 = padding); item_seq_len [B] valid lengths (clicks at or
    after the length are ignored). Returns ``(nodes [B, N] int64, alias [B, L] int64,
    A_in [B, N, N] float32, A_out [B, N, N] float32)``, N = max(1, largest unique count).
    """
    item_seq = np.ascontiguousarray(item_seq, dtype=np.int64)
    item_seq_len = np.ascontiguousarray(item_seq_len, dtype=np.int64)
    if item_seq.ndim != 2:
        raise ValueError(f"item_seq must be [B, L], got shape {item_seq.shape}")
    if item_seq_len.shape != item_seq.shape[:1]:
        raise ValueError(f"item_seq_len must be [B] = [{item_seq.shape[0]}], got shape {item_seq_len.shape}")
    if ((item_seq_len < 0) | (item_seq_len > item_seq.shape[1])).any():
        raise ValueError(f"item_seq_len must lie in [0, {item_seq.shape[1]}]")
    batch, length = item_seq.shape
    n_nodes = max(int(_count_nodes(item_seq, item_seq_len).max()) if batch else 0, 1)
    nodes = np.zeros((batch, n_nodes), dtype=np.int64)
    alias = np.zeros((batch, length), dtype=np.int64)
    A_in = np.zeros((batch, n_nodes, n_nodes), dtype=np.float32)
    A_out = np.zeros((batch, n_nodes, n_nodes), dtype=np.float32)
    _fill_graphs(item_seq, item_seq_len, nodes, alias, A_in, A_out)
    return nodes, alias, A_in, A_out
