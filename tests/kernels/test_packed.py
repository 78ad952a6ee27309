"""Packed ops (kernels/packed.py) against the dense references: gnn_step_packed vs gnn_step_ref and
attn_pool_packed vs attn_pool_ref on the same sessions, forward and every gradient, within the
kernels' error budget; gradcheck in float64; padding and session-permutation invariants; the
input checks.

Batches come from the data package's builders: ``build_session_graph`` gives the dense [B, N, N]
graphs of the references, ``build_packed_session_graph`` the packed graph of the same sessions.
Packed nodes are the dense node slots without the padding, session after session, so node v is
slot ``v - first[session[v]]`` of its session.

Everything runs on the test device (LLM4SBR_TEST_DEVICE), the graph builders included.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from budget import assert_within_budget
from hypothesis import given
from hypothesis import strategies as st
from kernel_device import DEVICE, ON_CUDA, cuda_only, to_device

from llm4sbr.data.graph import PackedSessionGraph, build_packed_session_graph, build_session_graph
from llm4sbr.kernels import (
    attn_pool_packed,
    attn_pool_ref,
    gnn_step_packed,
    gnn_step_ref,
    packed_step_matrix,
)
from llm4sbr.kernels.packed import csr_times_dense, sparse_csr

PARAM_NAMES = (
    "edge_in_w",
    "edge_in_b",
    "edge_out_w",
    "edge_out_b",
    "b_iah",
    "b_oah",
    "w_ih",
    "b_ih",
    "w_hh",
    "b_hh",
)
POOL_NAMES = ("q_last", "w2", "b2", "w3")
NORMALIZE = ("none", "softmax")
N_ITEMS = 12

# Repeated items, a repeated pair, self-loops, sessions of length 1 and a long one.
SESSIONS = [[3, 5, 3, 5, 7], [4], [9, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [6, 6], [8]]


def pad(sessions: list[list[int]], extra: int = 0, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded item_seq [B, L] (padding = ``fill``) and item_seq_len [B], on the test device."""
    length = max(len(s) for s in sessions) + extra
    item_seq = torch.full((len(sessions), length), fill, dtype=torch.long)
    for row, session in enumerate(sessions):
        item_seq[row, : len(session)] = torch.tensor(session)
    return to_device(item_seq), to_device(torch.tensor([len(s) for s in sessions]))


def packed_graph(sessions: list[list[int]], extra: int = 0, fill: int = 0) -> PackedSessionGraph:
    return build_packed_session_graph(*pad(sessions, extra, fill), dtype=torch.float64)


def slots(graph: PackedSessionGraph, batch: int) -> torch.Tensor:
    """[T]: the dense node slot of each packed node within its session."""
    counts = torch.bincount(graph.session, minlength=batch)
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(len(graph.nodes), device=DEVICE) - first[graph.session]


def gnn_params(d: int, seed: int) -> list[torch.Tensor]:
    """gnn_step's 10 weights in float64, drawn like SR-GNN's U(-1/sqrt(d), 1/sqrt(d))."""
    gen = torch.Generator().manual_seed(seed)
    stdv = 1.0 / math.sqrt(d)
    shapes = [(d, d), (d,), (d, d), (d,), (d,), (d,), (3 * d, 2 * d), (3 * d,), (3 * d, d), (3 * d,)]
    return [to_device((torch.rand(*s, generator=gen, dtype=torch.float64) * 2 - 1) * stdv) for s in shapes]


def pool_params(batch: int, d: int, seed: int) -> list[torch.Tensor]:
    """q_last [B, d], w2 [d, d], b2 [d], w3 [d] in float64."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(batch, d, generator=gen, dtype=torch.float64),
        torch.randn(d, d, generator=gen, dtype=torch.float64) / math.sqrt(d),
        torch.randn(d, generator=gen, dtype=torch.float64) * 0.1,
        torch.randn(d, generator=gen, dtype=torch.float64),
    ]
    return [to_device(p) for p in params]


def leaves(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    return [t.detach().to(dtype).requires_grad_() for t in tensors]


def packed_step(graph: PackedSessionGraph, table: torch.Tensor, params: list[torch.Tensor], distinct: bool):
    """One gnn_step_packed on node states ``table[graph.nodes]``. ``distinct``: the GEMM rows are
    the batch's distinct items (the encoder's first step); else rows = h (its later steps)."""
    if distinct:
        items, row_of_node = torch.unique(graph.nodes, return_inverse=True)
        rows = table[items]
        h = rows[row_of_node]
    else:
        h = rows = table[graph.nodes]
        row_of_node = torch.arange(len(graph.nodes), device=DEVICE)
    step_matrix = packed_step_matrix(
        graph.src, graph.dst, graph.in_weight, graph.out_weight, row_of_node, rows.shape[0], h.dtype
    )
    return gnn_step_packed(rows, h, step_matrix, *params)


def dense_step(sessions: list[list[int]], table: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """gnn_step_ref on the dense graphs of ``sessions``, node states ``table[nodes]``, returned at
    the packed nodes' slots -> [T, d]."""
    item_seq, item_seq_len = pad(sessions)
    dense = build_session_graph(item_seq, item_seq_len, dtype=table.dtype)
    out = gnn_step_ref(table[dense.nodes], dense.A_in, dense.A_out, *params)
    graph = build_packed_session_graph(item_seq, item_seq_len)
    return out[graph.session, slots(graph, len(sessions))]


def step_and_grads(fn, table: torch.Tensor, params: list[torch.Tensor], grad_out: torch.Tensor):
    """fn(table, params) -> out [T, d]; returns (out, [d table, d each param])."""
    out = fn(table, params)
    return out, torch.autograd.grad(out, [table, *params], grad_out.to(out.dtype))


def check_gnn_step_against_reference(sessions: list[list[int]], d: int, distinct: bool, seed: int) -> None:
    """Packed in float32 vs the dense reference in float32 and float64: h' and the gradients of
    the item table (through h and the GEMM rows) and of all 10 weights."""
    graph = packed_graph(sessions)
    gen = torch.Generator().manual_seed(seed)
    table64 = to_device(torch.randn(N_ITEMS + 1, d, generator=gen, dtype=torch.float64))
    params64 = gnn_params(d, seed=seed)
    grad_out = to_device(torch.randn(len(graph.nodes), d, generator=gen, dtype=torch.float64))

    def packed(table, params):
        return packed_step(graph, table, params, distinct)

    def dense(table, params):
        return dense_step(sessions, table, params)

    runs = []
    for fn, dtype in ((packed, torch.float32), (dense, torch.float32), (dense, torch.float64)):
        table, *params = leaves([table64, *params64], dtype)
        runs.append(step_and_grads(fn, table, params, grad_out))
    (out_p, grads_p), (out_32, grads_32), (out_64, grads_64) = runs
    assert out_p.dtype == torch.float32
    assert_within_budget("h'", out_p, out_32, out_64)
    for name, g_p, g_32, g_64 in zip(("table", *PARAM_NAMES), grads_p, grads_32, grads_64, strict=True):
        assert g_p.dtype == torch.float32, name
        assert_within_budget(f"d {name}", g_p, g_32, g_64)


@pytest.mark.parametrize("distinct", [True, False], ids=["distinct-item-rows", "node-rows"])
@pytest.mark.parametrize("d", [1, 7, 32])
def test_gnn_step_packed_within_budget_of_the_reference(d: int, distinct: bool) -> None:
    check_gnn_step_against_reference(SESSIONS, d, distinct, seed=d)


@pytest.mark.parametrize("distinct", [True, False], ids=["distinct-item-rows", "node-rows"])
def test_gnn_step_packed_single_clicks_and_repeats_only(distinct: bool) -> None:
    """Only sessions without edges between distinct items: single clicks (no edges: A = 0)
    and one item clicked again and again (a self-loop of weight 1)."""
    check_gnn_step_against_reference([[4], [7, 7, 7], [1], [7]], 5, distinct, seed=3)


def test_distinct_item_rows_equal_node_rows_to_float64_rounding() -> None:
    """The encoder's first step (GEMM over distinct items) and its later steps' form (GEMM over
    nodes) are the same function when h = table[items]."""
    graph = packed_graph(SESSIONS)
    table = to_device(
        torch.randn(N_ITEMS + 1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    )
    params = gnn_params(6, seed=1)
    torch.testing.assert_close(
        packed_step(graph, table, params, distinct=True),
        packed_step(graph, table, params, distinct=False),
        rtol=1e-12,
        atol=1e-12,
    )


def test_step_matrix_layout() -> None:
    """S [4T, 9R] has one block of T rows per gate input (r, z, i_n, h_n): a node's r and z rows
    pick its in-neighbours' in parts with A_in weights, its out-neighbours' out parts with A_out
    weights and its own hh part with 1; its i_n row the same without the hh part; its h_n row
    its own hh part. Product parts are rows 9q + 3k + g of P (k: in, out, hh; g: r, z, n). The
    second matrix is the transpose."""
    graph = packed_graph([[3, 5, 3, 7], [4]])  # nodes 0: 3, 1: 5, 2: 7, 3: 4; edges 0->1, 1->0, 0->2
    T = 4
    S, S_t = packed_step_matrix(
        graph.src,
        graph.dst,
        graph.in_weight,
        graph.out_weight,
        torch.arange(T, device=DEVICE),
        T,
        torch.float64,
    )
    assert S.layout == S_t.layout == torch.sparse_csr
    A_in = {(1, 0): 1.0, (0, 1): 1.0, (2, 0): 1.0}  # (v, u): 1 / indeg(v)
    A_out = {(0, 1): 0.5, (1, 0): 1.0, (0, 2): 0.5}  # (u, v): 1 / outdeg(u)
    expected = torch.zeros(4 * T, 9 * T, dtype=torch.float64, device=DEVICE)
    for g in range(3):
        for (v, u), weight in A_in.items():
            expected[g * T + v, 9 * u + g] = weight
        for (u, v), weight in A_out.items():
            expected[g * T + u, 9 * v + 3 + g] = weight
    for v in range(T):
        expected[v, 9 * v + 6] = expected[T + v, 9 * v + 7] = expected[3 * T + v, 9 * v + 8] = 1.0
    assert torch.equal(S.to_dense(), expected)
    assert torch.equal(S_t.to_dense(), expected.T)
    for matrix in (S, S_t):  # a valid CSR matrix: columns ascending within each row
        crow, col = matrix.crow_indices(), matrix.col_indices()
        for row in range(matrix.shape[0]):
            assert bool((col[crow[row] : crow[row + 1]].diff() > 0).all())


def test_sparse_csr_builds_without_warnings() -> None:
    # torch warns on every CSR construction (beta state; torch 2.11 also "invariant checks are
    # implicitly disabled" despite check_invariants=False): once per step would flood a log.
    crow, col = to_device(torch.tensor([0, 1, 2])), to_device(torch.tensor([1, 0]))
    values = to_device(torch.tensor([2.0, 3.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matrix = sparse_csr(crow, col, values, (2, 2))
    assert torch.equal(matrix.to_dense().cpu(), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@given(
    rows=st.integers(0, 6),
    cols=st.integers(0, 6),
    width=st.integers(1, 5),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_csr_times_dense_equals_the_dense_product(
    rows: int, cols: int, width: int, density: float, seed: int
) -> None:
    """The sparse product the packed step runs (embedding_bag sums) equals the dense matmul in
    float64, empty rows (zeros) and empty matrices included."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    dense *= torch.rand(rows, cols, generator=gen, dtype=torch.float64) < density
    x = torch.randn(cols, width, generator=gen, dtype=torch.float64)
    dense, x = to_device(dense), to_device(x)
    out = csr_times_dense(dense.to_sparse_csr(), x)
    assert out.shape == (rows, width)
    torch.testing.assert_close(out, dense @ x, rtol=1e-12, atol=1e-12)


def node_inputs(sessions: list[list[int]], d: int, seed: int) -> tuple[PackedSessionGraph, torch.Tensor]:
    """The packed graph of ``sessions`` and random node states h [T, d] in float64."""
    graph = packed_graph(sessions)
    gen = torch.Generator().manual_seed(seed)
    return graph, to_device(torch.randn(len(graph.nodes), d, generator=gen, dtype=torch.float64))


def dense_pool(
    sessions: list[list[int]], h: torch.Tensor, params: list[torch.Tensor], normalize: str
) -> torch.Tensor:
    """attn_pool_ref on the clicks of ``sessions``: click i of session b has the state of its
    packed node. h [T, d] -> [B, d]."""
    item_seq, item_seq_len = pad(sessions)
    dense = build_session_graph(item_seq, item_seq_len)
    counts = to_device(torch.tensor([len(set(s)) for s in sessions]))
    first = torch.cumsum(counts, 0) - counts
    mask = torch.arange(item_seq.shape[1], device=DEVICE)[None, :] < item_seq_len[:, None]
    seq_hidden = h[first[:, None] + dense.alias]  # padding clicks read node first[b] and are masked
    return attn_pool_ref(seq_hidden, mask, *params, normalize)


def packed_pool(graph: PackedSessionGraph, h: torch.Tensor, params: list[torch.Tensor], normalize: str):
    return attn_pool_packed(h, graph.session, graph.clicks, *params, normalize)


def pool_and_grads(fn, h: torch.Tensor, params: list[torch.Tensor], normalize: str, grad_out: torch.Tensor):
    out = fn(h, params, normalize)
    return out, torch.autograd.grad(out, [h, *params], grad_out.to(out.dtype))


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("d", [1, 7, 32])
def test_attn_pool_packed_within_budget_of_the_reference(d: int, normalize: str) -> None:
    graph, h64 = node_inputs(SESSIONS, d, seed=d)
    params64 = pool_params(len(SESSIONS), d, seed=d + 1)
    grad_out = torch.randn(len(SESSIONS), d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    grad_out = to_device(grad_out)

    def packed(h, params, normalize):
        return packed_pool(graph, h, params, normalize)

    def dense(h, params, normalize):
        return dense_pool(SESSIONS, h, params, normalize)

    runs = []
    for fn, dtype in ((packed, torch.float32), (dense, torch.float32), (dense, torch.float64)):
        h, *params = leaves([h64, *params64], dtype)
        runs.append(pool_and_grads(fn, h, params, normalize, grad_out))
    (out_p, grads_p), (out_32, grads_32), (out_64, grads_64) = runs
    # As in test_attn_pool.py: with normalize="none" the weights e are unnormalised sums over d.
    atol = 2e-6 * max(1.0, out_64.abs().max().item())
    assert out_p.dtype == torch.float32
    assert_within_budget("out", out_p, out_32, out_64, atol=atol)
    for name, g_p, g_32, g_64 in zip(("h", *POOL_NAMES), grads_p, grads_32, grads_64, strict=True):
        assert g_p.dtype == torch.float32, name
        assert_within_budget(f"d {name}", g_p, g_32, g_64, atol=2e-6 * max(1.0, g_64.abs().max().item()))


def test_length_one_session_pools_its_only_node() -> None:
    """A single click: the softmax weight is 1, so global = h of the click; with "none" it is e h."""
    graph, h = node_inputs([[5]], 4, seed=0)
    params = pool_params(1, 4, seed=0)
    torch.testing.assert_close(packed_pool(graph, h, params, "softmax"), h, rtol=1e-12, atol=1e-12)
    e = torch.sigmoid(h @ params[1].T + params[2] + params[0]) @ params[3]
    torch.testing.assert_close(packed_pool(graph, h, params, "none"), e[:, None] * h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("distinct", [True, False], ids=["distinct-item-rows", "node-rows"])
def test_gradcheck_gnn_step_packed_float64(distinct: bool) -> None:
    # Rows and h enter as separate leaves: the op is a function of both.
    graph = packed_graph([[1, 2, 1], [3], [2, 2]])
    if distinct:
        items, row_of_node = torch.unique(graph.nodes, return_inverse=True)
        n_rows = len(items)
    else:
        n_rows, row_of_node = len(graph.nodes), torch.arange(len(graph.nodes), device=DEVICE)
    step_matrix = packed_step_matrix(
        graph.src, graph.dst, graph.in_weight, graph.out_weight, row_of_node, n_rows, torch.float64
    )
    gen = torch.Generator().manual_seed(0)
    rows = to_device(torch.randn(n_rows, 2, generator=gen, dtype=torch.float64))
    h = to_device(torch.randn(len(graph.nodes), 2, generator=gen, dtype=torch.float64))
    inputs = leaves([rows, h, *gnn_params(2, seed=0)], torch.float64)

    def step(rows, h, *params):
        return gnn_step_packed(rows, h, step_matrix, *params)

    assert torch.autograd.gradcheck(step, inputs)


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_gradcheck_attn_pool_packed_float64(normalize: str) -> None:
    graph, h = node_inputs([[1, 2, 1], [3], [2, 2, 4]], 3, seed=2)
    inputs = leaves([h, *pool_params(3, 3, seed=2)], torch.float64)

    def pool(h, *params):
        return packed_pool(graph, h, list(params), normalize)

    assert torch.autograd.gradcheck(pool, inputs)


def assert_same_result(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-identical on CPU. On CUDA, index_add_ (the pooled sums) adds with atomics in no fixed
    order, so the same sums may round differently: equal to float64 rounding there."""
    if ON_CUDA:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(a, b)


def packed_forward(graph: PackedSessionGraph, table: torch.Tensor, seed: int, normalize: str):
    """Two packed steps (distinct item rows, then node rows) and the pool, as in the encoder ->
    (h [T, d], global [B, d])."""
    d = table.shape[1]
    params = gnn_params(d, seed)
    h = packed_step(graph, table, params, distinct=True)
    step_matrix = packed_step_matrix(
        graph.src,
        graph.dst,
        graph.in_weight,
        graph.out_weight,
        torch.arange(len(h), device=DEVICE),
        len(h),
        h.dtype,
    )
    h = gnn_step_packed(h, h, step_matrix, *params)
    batch = int(graph.session.max()) + 1
    q_last = h[graph.last] @ gnn_params(d, seed + 1)[0].T
    return h, packed_pool(graph, h, [q_last, *pool_params(batch, d, seed)[1:]], normalize)


sessions_strategy = st.lists(
    st.lists(st.integers(1, N_ITEMS), min_size=1, max_size=6), min_size=1, max_size=4
)


@given(
    sessions=sessions_strategy,
    extra=st.integers(0, 3),
    fill=st.integers(0, N_ITEMS),
    normalize=st.sampled_from(NORMALIZE),
    seed=st.integers(0, 2**16),
)
def test_padding_never_changes_a_result(
    sessions: list[list[int]], extra: int, fill: int, normalize: str, seed: int
) -> None:
    """Extra padding columns holding any item give the same packed graph and bit-identical results."""
    table = to_device(
        torch.randn(N_ITEMS + 1, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    h_a, out_a = packed_forward(packed_graph(sessions), table, seed, normalize)
    h_b, out_b = packed_forward(packed_graph(sessions, extra, fill), table, seed, normalize)
    assert_same_result(h_a, h_b)
    assert_same_result(out_a, out_b)


@given(
    sessions=sessions_strategy,
    normalize=st.sampled_from(NORMALIZE),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_permuting_sessions_permutes_the_output(
    sessions: list[list[int]], normalize: str, seed: int, data: st.DataObject
) -> None:
    """Session b' of the permuted batch is session perm[b'] of the original: its nodes' states
    and its pooled vector are those of perm[b'] (q_last comes from each session's last node, so
    it moves with the session)."""
    perm = data.draw(st.permutations(range(len(sessions))))
    table = to_device(
        torch.randn(N_ITEMS + 1, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    graph = packed_graph(sessions)
    permuted = packed_graph([sessions[p] for p in perm])
    h, out = packed_forward(graph, table, seed, normalize)
    h_perm, out_perm = packed_forward(permuted, table, seed, normalize)
    for new, old in enumerate(perm):
        torch.testing.assert_close(
            h_perm[permuted.session == new], h[graph.session == old], rtol=1e-12, atol=1e-12
        )
    torch.testing.assert_close(out_perm, out[list(perm)], rtol=1e-12, atol=1e-12)


def gnn_args(d: int = 3) -> dict[str, object]:
    """Valid gnn_step_packed arguments by name (node rows: R = T)."""
    graph, h = node_inputs(SESSIONS, d, seed=0)
    n = len(graph.nodes)
    step_matrix = packed_step_matrix(
        graph.src,
        graph.dst,
        graph.in_weight,
        graph.out_weight,
        torch.arange(n, device=DEVICE),
        n,
        torch.float64,
    )
    return {
        "rows": h,
        "h": h,
        "step_matrix": step_matrix,
        **dict(zip(PARAM_NAMES, gnn_params(d, 0), strict=True)),
    }


def pool_args(d: int = 3) -> dict[str, object]:
    """Valid attn_pool_packed arguments by name (normalize not included)."""
    graph, h = node_inputs(SESSIONS, d, seed=0)
    params = pool_params(len(SESSIONS), d, seed=0)
    return {
        "h": h,
        "session": graph.session,
        "clicks": graph.clicks,
        **dict(zip(POOL_NAMES, params, strict=True)),
    }


def step_matrix_args() -> dict[str, object]:
    """Valid packed_step_matrix arguments by name."""
    graph = packed_graph(SESSIONS)
    n = len(graph.nodes)
    return {
        "src": graph.src,
        "dst": graph.dst,
        "in_weight": graph.in_weight,
        "out_weight": graph.out_weight,
        "row_of_node": torch.arange(n, device=DEVICE),
        "n_rows": n,
        "dtype": torch.float64,
    }


def meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, device="meta")


GNN_BAD = [
    ("h rank", "h", lambda a: a["h"][0]),
    ("h not a tensor", "h", lambda a: a["h"].tolist()),
    ("rows width", "rows", lambda a: a["rows"][:, :2]),
    ("rows dtype", "rows", lambda a: a["rows"].float()),
    ("step_matrix not a pair", "step_matrix", lambda a: a["step_matrix"][0]),
    (
        "step_matrix rows",
        r"step_matrix\[0\]",
        lambda a: (a["step_matrix"][0].to_dense()[1:], a["step_matrix"][1]),
    ),
    ("step_matrix transpose", r"step_matrix\[1\]", lambda a: (a["step_matrix"][0], a["step_matrix"][0])),
    ("step_matrix dtype", r"step_matrix\[0\]", lambda a: (a["step_matrix"][0].float(), a["step_matrix"][1])),
    ("edge_in_w shape", "edge_in_w", lambda a: a["edge_in_w"][:2]),
    ("edge_in_b dtype", "edge_in_b", lambda a: a["edge_in_b"].float()),
    ("edge_out_w device", "edge_out_w", lambda a: meta(a["edge_out_w"])),
    ("edge_out_b shape", "edge_out_b", lambda a: a["edge_out_b"][:1]),
    ("b_iah shape", "b_iah", lambda a: a["b_iah"][None]),
    ("b_oah device", "b_oah", lambda a: meta(a["b_oah"])),
    ("w_ih shape", "w_ih", lambda a: a["w_ih"].T),
    ("b_ih dtype", "b_ih", lambda a: a["b_ih"].float()),
    ("w_hh shape", "w_hh", lambda a: a["w_hh"][:, :2]),
    ("b_hh device", "b_hh", lambda a: meta(a["b_hh"])),
]


@pytest.mark.parametrize(("case", "name", "corrupt"), GNN_BAD, ids=[c[0] for c in GNN_BAD])
def test_gnn_step_packed_bad_input_names_the_argument(case: str, name: str, corrupt) -> None:
    args = gnn_args()
    args[case.split()[0]] = corrupt(args)
    with pytest.raises(ValueError, match=rf"^{name} "):
        gnn_step_packed(*args.values())


POOL_BAD = [
    ("h rank", "h", lambda a: a["h"][None]),
    ("session dtype", "session", lambda a: a["session"].double()),
    ("session shape", "session", lambda a: a["session"][1:]),
    ("session device", "session", lambda a: meta(a["session"])),
    ("clicks shape", "clicks", lambda a: a["clicks"][:, None]),
    ("clicks device", "clicks", lambda a: meta(a["clicks"])),
    ("q_last width", "q_last", lambda a: a["q_last"][:, :2]),
    ("q_last dtype", "q_last", lambda a: a["q_last"].float()),
    ("w2 shape", "w2", lambda a: a["w2"][:2]),
    ("b2 device", "b2", lambda a: meta(a["b2"])),
    ("w3 rank", "w3", lambda a: a["w3"][:, None]),
]


@pytest.mark.parametrize(("case", "name", "corrupt"), POOL_BAD, ids=[c[0] for c in POOL_BAD])
def test_attn_pool_packed_bad_input_names_the_argument(case: str, name: str, corrupt) -> None:
    args = pool_args()
    args[case.split()[0]] = corrupt(args)
    with pytest.raises(ValueError, match=rf"^{name} "):
        attn_pool_packed(*args.values())


@pytest.mark.parametrize("normalize", ["max", "Softmax", "", None])
def test_attn_pool_packed_unknown_normalize_raises(normalize: object) -> None:
    with pytest.raises(ValueError, match="^normalize"):
        attn_pool_packed(*pool_args().values(), normalize)


STEP_MATRIX_BAD = [
    ("src dtype", lambda a: a["src"].double()),
    ("src rank", lambda a: a["src"][None]),
    ("dst shape", lambda a: a["dst"][1:]),
    ("dst device", lambda a: meta(a["dst"])),
    ("in_weight shape", lambda a: a["in_weight"][:1]),
    ("out_weight device", lambda a: meta(a["out_weight"])),
    ("row_of_node dtype", lambda a: a["row_of_node"].int()),
    ("n_rows negative", lambda a: -1),
    ("n_rows not an int", lambda a: 3.0),
    ("dtype not floating", lambda a: torch.long),
]


@pytest.mark.parametrize(("case", "corrupt"), STEP_MATRIX_BAD, ids=[c[0] for c in STEP_MATRIX_BAD])
def test_packed_step_matrix_bad_input_names_the_argument(case: str, corrupt) -> None:
    args = step_matrix_args()
    name = case.split()[0]
    args[name] = corrupt(args)
    with pytest.raises(ValueError, match=rf"^{name} "):
        packed_step_matrix(*args.values())


@cuda_only
@pytest.mark.parametrize(
    ("op", "name"),
    [("pool", "session"), ("pool", "clicks"), ("pool", "w2"), ("gnn", "rows"), ("gnn", "w_ih")],
)
def test_cpu_tensor_among_cuda_inputs_names_the_argument(op: str, name: str) -> None:
    args = pool_args() if op == "pool" else gnn_args()
    args[name] = args[name].cpu()
    fn = attn_pool_packed if op == "pool" else gnn_step_packed
    with pytest.raises(ValueError, match=rf"^{name} is on cpu"):
        fn(*args.values())
