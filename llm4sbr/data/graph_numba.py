"""SR-GNN session graphs with numba: the padded graphs for data-loader workers (same definition
as :func:`llm4sbr.data.graph.build_session_graph`; see that module for the graph) and the packed
batch graph of :func:`llm4sbr.data.graph.build_packed_batch_graph` (the same arrays bit for bit).

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


@njit(cache=True)
def _fill_packed_graph(
    item_seq: np.ndarray,
    item_seq_len: np.ndarray,
    nodes: np.ndarray,
    session: np.ndarray,
    clicks: np.ndarray,
    last: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
) -> tuple[int, int]:
    """Fill the packed graph's node and edge arrays (sized for the worst case) -> (T, E), or
    (-1, b) when session b clicks an item id <= 0 (0 is padding)."""
    n_nodes = 0
    n_edges = 0
    for b in range(item_seq.shape[0]):
        length = item_seq_len[b]
        clicked = item_seq[b, :length]
        ordered = np.sort(clicked)
        if ordered[0] <= 0:
            return -1, b
        first = n_nodes
        for i in range(length):
            if i == 0 or ordered[i] != ordered[i - 1]:
                nodes[n_nodes] = ordered[i]
                session[n_nodes] = b
                clicks[n_nodes] = 0.0
                n_nodes += 1
        count = n_nodes - first
        local = np.searchsorted(nodes[first:n_nodes], clicked)
        for i in range(length):
            clicks[first + local[i]] += 1.0
        last[b] = first + local[length - 1]
        # Edges as keys u * count + v, sorted per session: sessions' nodes are consecutive, so
        # the batch's edges come out sorted by (src, dst), as torch.unique gives them.
        keys = np.sort(local[:-1] * count + local[1:])
        for i in range(keys.shape[0]):
            if i == 0 or keys[i] != keys[i - 1]:
                src[n_edges] = first + keys[i] // count
                dst[n_edges] = first + keys[i] % count
                n_edges += 1
    return n_nodes, n_edges


@njit(cache=True)
def _fill_step_matrices(
    src: np.ndarray,
    dst: np.ndarray,
    in_weight: np.ndarray,
    out_weight: np.ndarray,
    row_of_node: np.ndarray,
    n_rows: int,
    crow: np.ndarray,
    col: np.ndarray,
    values: np.ndarray,
    crow_t: np.ndarray,
    col_t: np.ndarray,
    values_t: np.ndarray,
) -> None:
    """The step matrix S [4T, 9R] and its transpose as sorted CSR parts (see
    ``llm4sbr.kernels.packed_step_matrix`` for the layout)."""
    n_nodes = row_of_node.shape[0]
    n_edges = src.shape[0]
    degree = np.zeros(n_nodes, dtype=np.int64)
    for k in range(n_edges):
        degree[src[k]] += 1
        degree[dst[k]] += 1
    # Block r first: row v holds the in parts of v's in-edges (column 9 row(u)), the out parts of
    # its out-edges (9 row(w) + 3) and its own hh part (9 row(v) + 6), sorted by column.
    crow[0] = 0
    for v in range(n_nodes):
        crow[v + 1] = crow[v] + degree[v] + 1
    fill = crow[:n_nodes].copy()
    for k in range(n_edges):
        u, v = src[k], dst[k]
        col[fill[v]] = 9 * row_of_node[u]
        values[fill[v]] = in_weight[k]
        fill[v] += 1
        col[fill[u]] = 9 * row_of_node[v] + 3
        values[fill[u]] = out_weight[k]
        fill[u] += 1
    for v in range(n_nodes):
        col[fill[v]] = 9 * row_of_node[v] + 6
        values[fill[v]] = 1.0
        # Insertion sort of the row by column: rows hold a node's few neighbours.
        for i in range(crow[v] + 1, crow[v + 1]):
            c, x = col[i], values[i]
            j = i - 1
            while j >= crow[v] and col[j] > c:
                col[j + 1] = col[j]
                values[j + 1] = values[j]
                j -= 1
            col[j + 1] = c
            values[j + 1] = x
    # Blocks z (columns + 1), i_n (the edge parts only, + 2) and h_n (the own part, + 2): the
    # same order, as the column shifts keep it.
    nnz = crow[n_nodes]
    i = nnz
    for v in range(n_nodes):
        crow[n_nodes + v + 1] = crow[v + 1] + nnz
        for j in range(crow[v], crow[v + 1]):
            col[i] = col[j] + 1
            values[i] = values[j]
            i += 1
    for v in range(n_nodes):
        crow[2 * n_nodes + v + 1] = crow[2 * n_nodes + v] + degree[v]
        for j in range(crow[v], crow[v + 1]):
            if col[j] % 9 != 6:
                col[i] = col[j] + 2
                values[i] = values[j]
                i += 1
    for v in range(n_nodes):
        crow[3 * n_nodes + v + 1] = crow[3 * n_nodes + v] + 1
        col[i] = 9 * row_of_node[v] + 8
        values[i] = 1.0
        i += 1
    # The transpose by counting sort over columns; visiting S's rows in order sorts each row of S^T.
    crow_t[:] = 0
    for i in range(col.shape[0]):
        crow_t[col[i] + 1] += 1
    for r in range(9 * n_rows):
        crow_t[r + 1] += crow_t[r]
    fill_t = crow_t[:-1].copy()
    for r in range(4 * n_nodes):
        for i in range(crow[r], crow[r + 1]):
            c = col[i]
            col_t[fill_t[c]] = r
            values_t[fill_t[c]] = values[i]
            fill_t[c] += 1


def build_packed_batch_graph_numba(item_seq: np.ndarray, item_seq_len: np.ndarray, dtype: np.dtype) -> dict:
    """The parts of ``llm4sbr.data.graph.build_packed_batch_graph`` on the CPU, as numpy arrays
    by field name (``graph.PackedSessionGraph``'s fields, ``items``, ``item_of_node``, and
    ``step`` and ``step_t``, each (crow, col, values)); weights and values in ``dtype``
    (float32 or float64). item_seq [B, L] integer item ids; item_seq_len [B], each in 1..L;
    every clicked item id must be >= 1 (0 is padding)."""
    item_seq = np.ascontiguousarray(item_seq, dtype=np.int64)
    item_seq_len = np.ascontiguousarray(item_seq_len, dtype=np.int64)
    dtype = np.dtype(dtype)
    batch, length = item_seq.shape
    most = int(item_seq_len.sum())
    nodes = np.empty(most, dtype=np.int64)
    session = np.empty(most, dtype=np.int64)
    clicks = np.empty(most, dtype=dtype)
    last = np.empty(batch, dtype=np.int64)
    src = np.empty(max(most - batch, 0), dtype=np.int64)
    dst = np.empty_like(src)
    n_nodes, n_edges = _fill_packed_graph(item_seq, item_seq_len, nodes, session, clicks, last, src, dst)
    if n_nodes < 0:
        raise ValueError(f"session {n_edges} clicks an item id <= 0 within its length (0 is padding)")
    nodes, session, clicks = nodes[:n_nodes], session[:n_nodes], clicks[:n_nodes]
    src, dst = src[:n_edges], dst[:n_edges]
    in_weight = (1.0 / np.bincount(dst, minlength=n_nodes)[dst]).astype(dtype)
    out_weight = (1.0 / np.bincount(src, minlength=n_nodes)[src]).astype(dtype)
    items, item_of_node = np.unique(nodes, return_inverse=True)
    step, step_t = step_matrices_numba(src, dst, in_weight, out_weight, item_of_node, items.shape[0])
    return {
        "nodes": nodes,
        "session": session,
        "clicks": clicks,
        "last": last,
        "src": src,
        "dst": dst,
        "in_weight": in_weight,
        "out_weight": out_weight,
        "items": items,
        "item_of_node": item_of_node,
        "step": step,
        "step_t": step_t,
    }


def step_matrices_numba(
    src: np.ndarray,
    dst: np.ndarray,
    in_weight: np.ndarray,
    out_weight: np.ndarray,
    row_of_node: np.ndarray,
    n_rows: int,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``llm4sbr.kernels.packed_step_matrix``'s S [4T, 9R] and S^T [9R, 4T] as CSR parts (crow,
    col, values), values in in_weight's dtype: src, dst [E] and row_of_node [T] int64, in_weight
    and out_weight [E] float32 or float64, n_rows R. Edge positions must be distinct."""
    n_nodes, nnz = row_of_node.shape[0], 3 * (2 * src.shape[0] + row_of_node.shape[0])
    dtype = in_weight.dtype
    step = (np.empty(4 * n_nodes + 1, np.int64), np.empty(nnz, np.int64), np.empty(nnz, dtype))
    step_t = (np.empty(9 * n_rows + 1, np.int64), np.empty(nnz, np.int64), np.empty(nnz, dtype))
    _fill_step_matrices(src, dst, in_weight, out_weight.astype(dtype), row_of_node, n_rows, *step, *step_t)
    return step, step_t
