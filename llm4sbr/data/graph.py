"""SR-GNN session graphs built with batched tensor ops (docs/method.md §3.1).

For each session b (the first ``item_seq_len[b]`` clicks of ``item_seq[b]``):

* ``nodes[b]``: the sorted unique items of the session, right-padded with 0 to N, the largest
  unique count in the batch;
* ``alias[b, i]``: the node index of click i (0 at padded positions);
* edge u -> v for each pair of consecutive clicks (a repeated pair counts once; self-loops are
  kept); ``A_in[b, v, u] = 1 / indeg(v)`` and ``A_out[b, u, v] = 1 / outdeg(u)`` for every edge
  u -> v, 0 elsewhere, so a node without incoming (outgoing) edges has a zero row in A_in (A_out).

Positions at or after ``item_seq_len[b]`` are padding whatever they hold, so padding never
changes a session's graph. :func:`build_session_graph` runs on CPU or CUDA without a Python loop
over sessions; the numba twin for data-loader workers is
``llm4sbr.data.graph_numba.build_session_graph_numba`` (same definition, numpy arrays).

:func:`build_packed_session_graph` gives the same graphs without padding: the batch as one graph
over its T distinct (session, item) nodes with edge lists instead of [B, N, N] matrices, for the
encoder's packed path (no work on padding nodes, and no N x N products).
:func:`build_packed_batch_graph` adds what the packed path's first step needs besides the
weights (the batch's distinct items and the sparse step matrix), so that data-loader workers can
build it while the main process computes; :func:`packed_batch_to_dict` and
:func:`packed_batch_from_dict` carry it in a batch dict. On CPU it runs numba's twin
(``llm4sbr.data.graph_numba.build_packed_batch_graph_numba``) when numba is installed: the same
tensors, built in one pass instead of a few dozen tensor ops.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import numpy as np
import torch

from llm4sbr.kernels import packed_step_matrix
from llm4sbr.kernels.packed import sparse_csr

PACKED_PREFIX = "packed_"
"""Batch keys of a prebuilt :class:`PackedBatchGraph` start with this."""


class SessionGraph(NamedTuple):
    """nodes [B, N] long, alias [B, L] long, A_in [B, N, N] and A_out [B, N, N] floating."""

    nodes: torch.Tensor
    alias: torch.Tensor
    A_in: torch.Tensor
    A_out: torch.Tensor


class PackedSessionGraph(NamedTuple):
    """A batch's session graphs as one graph over its T distinct (session, item) nodes.

    nodes [T] long: the item of each node; session after session, items ascending within one
    (the order of :class:`SessionGraph`'s node slots). session [T] long: the batch row of each node.
    clicks [T] floating: how many clicks of its session the node stands for. last [B] long: the
    node of each session's last click. src, dst [E] long: the edges u -> v of all sessions (a
    repeated pair once). in_weight [E] = 1 / indeg(dst) and out_weight [E] = 1 / outdeg(src),
    floating: ``A_in[v, u] = in_weight`` and ``A_out[u, v] = out_weight`` for each edge.
    """

    nodes: torch.Tensor
    session: torch.Tensor
    clicks: torch.Tensor
    last: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    in_weight: torch.Tensor
    out_weight: torch.Tensor


class PackedBatchGraph(NamedTuple):
    """A batch's :class:`PackedSessionGraph` with the inputs of the packed path's first step.

    graph: the packed graph (T nodes). items [R] long: the batch's distinct items, ascending.
    item_of_node [T] long: each node's row in ``items``. step: the first step's (S [4T, 9R],
    S^T [9R, 4T]) sparse CSR matrices of :func:`llm4sbr.kernels.packed_step_matrix`.
    """

    graph: PackedSessionGraph
    items: torch.Tensor
    item_of_node: torch.Tensor
    step: tuple[torch.Tensor, torch.Tensor]


def _check_batch(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> None:
    if item_seq.dim() != 2:
        raise ValueError(f"item_seq must be [B, L], got shape {tuple(item_seq.shape)}")
    if item_seq_len.shape != item_seq.shape[:1]:
        raise ValueError(
            f"item_seq_len must be [B] = [{item_seq.shape[0]}], got shape {tuple(item_seq_len.shape)}"
        )


def _check_packed_batch(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> None:
    _check_batch(item_seq, item_seq_len)
    length = item_seq.shape[1]
    if bool(((item_seq_len < 1) | (item_seq_len > length)).any()):
        raise ValueError(f"item_seq_len must lie in [1, {length}] for a packed graph")


def _sorted_runs(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each session's clicks sorted, padding (0) first. Returns ``valid`` [B, L] (click, not
    padding), ``sorted_items`` and ``order`` [B, L] (the stable sort of the masked items),
    ``starts_run`` [B, L] (True where a new distinct item starts in sorted order) and ``rank``
    [B, L] (node index within the session of each sorted position, -1 for padding)."""
    length = item_seq.shape[1]
    positions = torch.arange(length, device=item_seq.device)
    valid = positions.unsqueeze(0) < item_seq_len.to(item_seq.device).unsqueeze(1)
    seq = torch.where(valid, item_seq.long(), 0)
    sorted_items, order = seq.sort(dim=1, stable=True)
    starts_run = (sorted_items != 0) & ((sorted_items != sorted_items.roll(1, dims=1)) | (positions == 0))
    rank = starts_run.cumsum(dim=1) - 1
    return valid, sorted_items, order, starts_run, rank


def build_session_graph(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, dtype: torch.dtype = torch.float32
) -> SessionGraph:
    """Build the session graphs of a right-padded batch.

    item_seq [B, L] integer item ids (1..n_items, 0 = padding); item_seq_len [B] valid lengths.
    Returns :class:`SessionGraph` on ``item_seq.device``, adjacency in ``dtype``. N is at least 1
    (a batch of empty sessions gets one all-zero node column). The only host sync is reading N
    (one ``.max()``), which the output shapes need.
    """
    _check_batch(item_seq, item_seq_len)
    batch, length = item_seq.shape
    device = item_seq.device
    valid, sorted_items, order, starts_run, rank = _sorted_runs(item_seq, item_seq_len)
    n_nodes = max(int(starts_run.sum(dim=1).max()) if batch else 0, 1)

    # Scatter each run's first item to its node slot; non-run positions go to a spare column.
    nodes = torch.zeros(batch, length + 1, dtype=torch.long, device=device)
    nodes.scatter_(1, torch.where(starts_run, rank, length), sorted_items)
    nodes = nodes[:, :n_nodes].contiguous()

    # ``order`` is a permutation per row, so scattering the ranks back inverts the sort; padding
    # (rank -1) gets node 0.
    alias = torch.zeros(batch, length, dtype=torch.long, device=device)
    alias.scatter_(1, order, rank.clamp(min=0))

    # Edges as keys u * N + v; sorting them per row puts repeats of a pair next to each other.
    slots = n_nodes * n_nodes
    edge_valid = valid[:, 1:]
    edge_key = torch.where(edge_valid, alias[:, :-1] * n_nodes + alias[:, 1:], slots)
    edge_key, _ = edge_key.sort(dim=1)
    first = torch.arange(length, device=device)[:-1] == 0
    new_edge = (edge_key < slots) & ((edge_key != edge_key.roll(1, dims=1)) | first)
    source = torch.div(edge_key, n_nodes, rounding_mode="floor")
    target = torch.where(new_edge, edge_key - source * n_nodes, n_nodes)
    source = torch.where(new_edge, source, n_nodes)
    edge_weight = new_edge.to(dtype)
    out_degree = torch.zeros(batch, n_nodes + 1, dtype=dtype, device=device)
    out_degree.scatter_add_(1, source, edge_weight)
    in_degree = torch.zeros(batch, n_nodes + 1, dtype=dtype, device=device)
    in_degree.scatter_add_(1, target, edge_weight)

    row_base = torch.arange(batch, device=device).unsqueeze(1) * slots
    unused = batch * slots
    out_slot = torch.where(new_edge, row_base + source * n_nodes + target, unused)
    in_slot = torch.where(new_edge, row_base + target * n_nodes + source, unused)
    A_out = torch.zeros(batch * slots + 1, dtype=dtype, device=device)
    A_out.scatter_(0, out_slot.reshape(-1), out_degree.gather(1, source).reciprocal().reshape(-1))
    A_in = torch.zeros(batch * slots + 1, dtype=dtype, device=device)
    A_in.scatter_(0, in_slot.reshape(-1), in_degree.gather(1, target).reciprocal().reshape(-1))
    shape = (batch, n_nodes, n_nodes)
    return SessionGraph(nodes, alias, A_in[:-1].view(shape), A_out[:-1].view(shape))


def build_packed_session_graph(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, dtype: torch.dtype = torch.float32
) -> PackedSessionGraph:
    """Build the session graphs of a right-padded batch without padding.

    item_seq [B, L] integer item ids (1..n_items, 0 = padding); item_seq_len [B] valid lengths,
    each in 1..L. Returns :class:`PackedSessionGraph` on ``item_seq.device``, weights in
    ``dtype``; the graphs are those of :func:`build_session_graph`. Host syncs: the length check
    and the node and edge counts.
    """
    _check_packed_batch(item_seq, item_seq_len)
    batch, length = item_seq.shape
    device = item_seq.device
    item_seq_len = item_seq_len.to(device)
    valid, sorted_items, order, starts_run, rank = _sorted_runs(item_seq, item_seq_len)
    node_counts = starts_run.sum(dim=1)
    first_node = node_counts.cumsum(dim=0) - node_counts
    nodes = sorted_items[starts_run]  # row-major: session after session, ascending items
    n_nodes = nodes.shape[0]
    session = torch.repeat_interleave(torch.arange(batch, device=device), node_counts)

    # Node of each click: the within-session rank scattered back through the sort, plus the
    # session's first node (padding clicks get a valid index but are never used).
    node_of_click = torch.zeros(batch, length, dtype=torch.long, device=device)
    node_of_click.scatter_(1, order, rank.clamp(min=0))
    node_of_click += first_node.unsqueeze(1)
    clicks = torch.bincount(node_of_click[valid], minlength=n_nodes).to(dtype)
    last = node_of_click.gather(1, (item_seq_len - 1).long().unsqueeze(1)).squeeze(1)

    edge_valid = valid[:, 1:]
    key = node_of_click[:, :-1][edge_valid] * n_nodes + node_of_click[:, 1:][edge_valid]
    key = torch.unique(key)  # sorted, so edges come grouped by source
    src = torch.div(key, n_nodes, rounding_mode="floor")
    dst = key - src * n_nodes
    out_degree = torch.bincount(src, minlength=n_nodes).to(dtype)
    in_degree = torch.bincount(dst, minlength=n_nodes).to(dtype)
    return PackedSessionGraph(
        nodes, session, clicks, last, src, dst, in_degree[dst].reciprocal(), out_degree[src].reciprocal()
    )


def build_packed_batch_graph(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    numba: bool | None = None,
) -> PackedBatchGraph:
    """:func:`build_packed_session_graph` plus the batch's distinct items and the first step's
    sparse matrices (in ``dtype``): every index operation of the packed path, none of its math.

    ``numba``: build it with the numba builder (``llm4sbr.data.graph_numba``; CPU tensors,
    float32 or float64), which gives the same tensors bit for bit in a fraction of the time of
    the tensor ops (a few dozen small ops per batch); False: with tensor ops, on any device; None
    (default): numba where it can run and is installed (if it is installed but fails to compile
    or load, a RuntimeWarning once, then tensor ops). The numba builder also rejects clicked item
    ids <= 0 (0 is padding).
    """
    if use_numba_builder(item_seq.device, dtype, numba):
        _check_packed_batch(item_seq, item_seq_len)
        return _build_packed_batch_graph_numba(item_seq, item_seq_len, dtype)
    graph = build_packed_session_graph(item_seq, item_seq_len, dtype)  # checks the batch too
    items, item_of_node = torch.unique(graph.nodes, return_inverse=True)
    step = packed_step_matrices(graph, item_of_node, items.shape[0], dtype, numba=False)
    return PackedBatchGraph(graph, items, item_of_node, step)


def packed_step_matrices(
    graph: PackedSessionGraph,
    row_of_node: torch.Tensor,
    n_rows: int,
    dtype: torch.dtype,
    numba: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`llm4sbr.kernels.packed_step_matrix` of ``graph``'s edges (row_of_node [T] long, R =
    n_rows; values in ``dtype``), built by numba or tensor ops as ``numba`` chooses (see
    :func:`build_packed_batch_graph`): the encoder's later steps take it with one GEMM row per node."""
    if not use_numba_builder(row_of_node.device, dtype, numba):
        return packed_step_matrix(
            graph.src, graph.dst, graph.in_weight, graph.out_weight, row_of_node, n_rows, dtype
        )
    from .graph_numba import step_matrices_numba

    weights = (graph.in_weight.to(dtype).numpy(), graph.out_weight.to(dtype).numpy())
    parts = step_matrices_numba(graph.src.numpy(), graph.dst.numpy(), *weights, row_of_node.numpy(), n_rows)
    return _sparse_pair(parts, row_of_node.shape[0], n_rows)


def use_numba_builder(device: torch.device, dtype: torch.dtype, numba: bool | None) -> bool:
    """Resolve a ``numba`` choice (see :func:`build_packed_batch_graph`) for ``device`` and
    ``dtype``: None -> whether numba applies, is installed and works; True where it does not
    apply -> ValueError."""
    applies = torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64)
    if numba is None:
        return applies and _numba_ready()
    if numba and not applies:
        raise ValueError(f"the numba builder needs CPU tensors and float32 or float64, got {device}, {dtype}")
    return numba


@functools.cache
def _numba_ready() -> bool:
    """Whether numba is installed and its packed-graph builder runs here: imported and compiled
    (or loaded from numba's disk cache) on a one-click batch, once per process. A builder that
    fails (numba unable to compile or to cache, say) warns and leaves the choice to tensor ops."""
    try:
        from .graph_numba import build_packed_batch_graph_numba
    except ImportError:  # numba is not installed
        return False
    try:
        build_packed_batch_graph_numba(np.ones((1, 1), np.int64), np.ones(1, np.int64), np.float32)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional accelerator
        warnings.warn(
            f"numba is installed but its packed-graph builder failed ({exc!r}); "
            "building packed graphs with tensor ops instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def load_numba_builder(device: torch.device, dtype: torch.dtype = torch.float32) -> None:
    """Import and compile (or load from numba's disk cache) the numba packed-graph builder now,
    if :func:`build_packed_batch_graph` will use it for ``device`` and ``dtype``: a few seconds
    once per process that the first batch would otherwise pay."""
    if use_numba_builder(device, dtype, None):
        build_packed_batch_graph(torch.ones(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), dtype)


def _sparse_pair(parts: tuple, n_nodes: int, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step matrices from numpy CSR parts ((crow, col, values) of S and of S^T)."""
    shape = (4 * n_nodes, 9 * n_rows)
    return tuple(
        sparse_csr(*(torch.from_numpy(part) for part in matrix), size)
        for matrix, size in zip(parts, (shape, shape[::-1]), strict=True)
    )


def _build_packed_batch_graph_numba(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, dtype: torch.dtype
) -> PackedBatchGraph:
    from .graph_numba import build_packed_batch_graph_numba

    parts = build_packed_batch_graph_numba(
        item_seq.numpy(), item_seq_len.cpu().numpy(), torch.empty(0, dtype=dtype).numpy().dtype
    )
    graph = PackedSessionGraph(*(torch.from_numpy(parts[name]) for name in PackedSessionGraph._fields))
    items = torch.from_numpy(parts["items"])
    step = _sparse_pair((parts["step"], parts["step_t"]), graph.nodes.shape[0], items.shape[0])
    return PackedBatchGraph(graph, items, torch.from_numpy(parts["item_of_node"]), step)


def packed_batch_to_dict(packed: PackedBatchGraph) -> dict[str, torch.Tensor]:
    """``packed`` as batch entries (keys start with :data:`PACKED_PREFIX`)."""
    out = {PACKED_PREFIX + name: value for name, value in packed.graph._asdict().items()}
    out[PACKED_PREFIX + "items"] = packed.items
    out[PACKED_PREFIX + "item_of_node"] = packed.item_of_node
    # Sparse tensors as their parts, rebuilt by sparse_csr: unpickling one from a worker would
    # warn that invariant checks are off.
    for name, matrix in zip(("step", "step_t"), packed.step, strict=True):
        out[f"{PACKED_PREFIX}{name}_crow"] = matrix.crow_indices()
        out[f"{PACKED_PREFIX}{name}_col"] = matrix.col_indices()
        out[f"{PACKED_PREFIX}{name}_values"] = matrix.values()
    return out


def packed_batch_from_dict(batch: dict[str, torch.Tensor]) -> PackedBatchGraph | None:
    """The :class:`PackedBatchGraph` a batch carries (see :func:`packed_batch_to_dict`), or None."""
    if PACKED_PREFIX + "nodes" not in batch:
        return None
    graph = PackedSessionGraph(*(batch[PACKED_PREFIX + name] for name in PackedSessionGraph._fields))
    items = batch[PACKED_PREFIX + "items"]
    shape = (4 * graph.nodes.shape[0], 9 * items.shape[0])
    step = tuple(
        sparse_csr(*(batch[f"{PACKED_PREFIX}{name}_{part}"] for part in ("crow", "col", "values")), size)
        for name, size in (("step", shape), ("step_t", shape[::-1]))
    )
    return PackedBatchGraph(graph, items, batch[PACKED_PREFIX + "item_of_node"], step)
