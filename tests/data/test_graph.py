"""Session-graph builders: hand-checked graphs, torch == numba == a plain-Python reference,
padding invariance; the packed graph is the padded graph without the padding; the numba packed
batch graph is the tensor-ops one."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llm4sbr.data import build_session_graph, build_session_graph_numba
from llm4sbr.data.graph import (
    PackedBatchGraph,
    PackedSessionGraph,
    build_packed_batch_graph,
    build_packed_session_graph,
    packed_step_matrices,
)


def reference_graph(session: list[int]) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """One session's graph straight from the definition (docs/method.md §3.1)."""
    nodes = sorted(set(session))
    index = {item: i for i, item in enumerate(nodes)}
    alias = [index[item] for item in session]
    edges = {(alias[i], alias[i + 1]) for i in range(len(session) - 1)}
    n = len(nodes)
    A_in = np.zeros((n, n), dtype=np.float32)
    A_out = np.zeros((n, n), dtype=np.float32)
    for u, v in edges:
        A_out[u, v] = np.float32(1) / np.float32(sum(1 for a, _ in edges if a == u))
        A_in[v, u] = np.float32(1) / np.float32(sum(1 for _, b in edges if b == v))
    return nodes, alias, A_in, A_out


def pad_batch(sessions: list[list[int]], extra: int = 0, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sessions) + extra
    item_seq = torch.full((len(sessions), length), fill, dtype=torch.long)
    for row, session in enumerate(sessions):
        item_seq[row, : len(session)] = torch.tensor(session)
    return item_seq, torch.tensor([len(s) for s in sessions])


def assert_matches_reference(graph: tuple, sessions: list[list[int]]) -> None:
    nodes, alias, A_in, A_out = (np.asarray(part) for part in graph)
    n_max = max(len(set(s)) for s in sessions)
    assert nodes.shape == (len(sessions), n_max)
    assert A_in.shape == A_out.shape == (len(sessions), n_max, n_max)
    for b, session in enumerate(sessions):
        ref_nodes, ref_alias, ref_in, ref_out = reference_graph(session)
        n, length = len(ref_nodes), len(session)
        assert nodes[b, :n].tolist() == ref_nodes and not nodes[b, n:].any()
        assert alias[b, :length].tolist() == ref_alias and not alias[b, length:].any()
        np.testing.assert_array_equal(A_in[b, :n, :n], ref_in)
        np.testing.assert_array_equal(A_out[b, :n, :n], ref_out)
        assert not A_in[b, n:].any() and not A_in[b, :, n:].any()
        assert not A_out[b, n:].any() and not A_out[b, :, n:].any()


def both_builders(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> tuple[tuple, tuple]:
    torch_graph = tuple(part.numpy() for part in build_session_graph(item_seq, item_seq_len))
    numba_graph = build_session_graph_numba(item_seq.numpy(), item_seq_len.numpy())
    return torch_graph, numba_graph


def test_hand_checked_session() -> None:
    item_seq, item_seq_len = pad_batch([[1, 2, 3, 2, 4], [5, 5, 5], [7]])
    expected_in = np.zeros((3, 4, 4), np.float32)
    expected_out = np.zeros((3, 4, 4), np.float32)
    # Session 0: nodes (1, 2, 3, 4); edges 1->2, 2->3, 3->2, 2->4.
    expected_out[0, 0, 1] = 1.0
    expected_out[0, 1, 2] = expected_out[0, 1, 3] = 0.5
    expected_out[0, 2, 1] = 1.0
    expected_in[0, 1, 0] = expected_in[0, 1, 2] = 0.5
    expected_in[0, 2, 1] = 1.0
    expected_in[0, 3, 1] = 1.0
    # Session 1: one node with a self-loop; session 2: one node, no edge.
    expected_in[1, 0, 0] = expected_out[1, 0, 0] = 1.0
    for nodes, alias, A_in, A_out in both_builders(item_seq, item_seq_len):
        assert nodes.tolist() == [[1, 2, 3, 4], [5, 0, 0, 0], [7, 0, 0, 0]]
        assert alias.tolist() == [[0, 1, 2, 1, 3], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
        np.testing.assert_array_equal(A_in, expected_in)
        np.testing.assert_array_equal(A_out, expected_out)


def test_repeated_pair_counts_once() -> None:
    item_seq, item_seq_len = pad_batch([[1, 2, 1, 2, 3]])
    for _, _, A_in, A_out in both_builders(item_seq, item_seq_len):
        # Edges 1->2 (twice), 2->1, 2->3: node 1 has out-degree 1, not 2.
        assert A_out[0, 0].tolist() == [0.0, 1.0, 0.0]
        assert A_out[0, 1].tolist() == [0.5, 0.0, 0.5]
        assert A_in[0, 1].tolist() == [1.0, 0.0, 0.0]


def test_types_shapes_and_dtype() -> None:
    item_seq, item_seq_len = pad_batch([[3, 1], [2, 2, 4]], extra=2)
    graph = build_session_graph(item_seq, item_seq_len, dtype=torch.float64)
    assert graph.nodes.dtype == graph.alias.dtype == torch.long
    assert graph.A_in.dtype == graph.A_out.dtype == torch.float64
    assert graph.nodes.shape == (2, 2) and graph.alias.shape == (2, 5) and graph.A_in.shape == (2, 2, 2)
    nodes, alias, A_in, A_out = build_session_graph_numba(item_seq.numpy(), item_seq_len.numpy())
    assert nodes.dtype == alias.dtype == np.int64 and A_in.dtype == A_out.dtype == np.float32


def test_empty_sessions_and_rejects_bad_shapes() -> None:
    item_seq = torch.zeros(2, 3, dtype=torch.long)
    lengths = torch.zeros(2, dtype=torch.long)
    for nodes, alias, A_in, _ in both_builders(item_seq, lengths):
        assert nodes.shape == (2, 1) and not nodes.any() and not alias.any() and not A_in.any()
    with pytest.raises(ValueError, match="item_seq_len"):
        build_session_graph(item_seq, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="item_seq"):
        build_session_graph(item_seq[0], lengths)
    with pytest.raises(ValueError, match="item_seq_len"):
        build_session_graph_numba(item_seq.numpy(), np.array([1, 4]))


sessions_strategy = st.lists(
    # A small item range makes repeats and consecutive repeats common.
    st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=9),
    min_size=1,
    max_size=6,
)


@given(sessions=sessions_strategy, extra=st.integers(0, 3), fill=st.integers(0, 9))
def test_builders_agree_with_reference(sessions: list[list[int]], extra: int, fill: int) -> None:
    # ``fill`` puts junk after each session's length: positions past the length are padding.
    item_seq, item_seq_len = pad_batch(sessions, extra=extra, fill=fill)
    torch_graph, numba_graph = both_builders(item_seq, item_seq_len)
    for part_torch, part_numba in zip(torch_graph, numba_graph, strict=True):
        np.testing.assert_array_equal(part_torch, part_numba)
    assert_matches_reference(torch_graph, sessions)


@given(sessions=sessions_strategy, extra=st.integers(1, 4))
def test_padding_and_batch_mates_do_not_change_a_graph(sessions: list[list[int]], extra: int) -> None:
    batch = build_session_graph(*pad_batch(sessions, extra=extra))
    for b, session in enumerate(sessions):
        alone = build_session_graph(*pad_batch([session]))
        n, length = alone.nodes.shape[1], len(session)
        assert torch.equal(batch.nodes[b, :n], alone.nodes[0])
        assert torch.equal(batch.alias[b, :length], alone.alias[0])
        assert torch.equal(batch.A_in[b, :n, :n], alone.A_in[0])
        assert torch.equal(batch.A_out[b, :n, :n], alone.A_out[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 30, (64,), generator=generator)
    item_seq = torch.randint(1, 20, (64, 30), generator=generator) * (torch.arange(30) < lengths[:, None])
    cpu = build_session_graph(item_seq, lengths)
    cuda = build_session_graph(item_seq.cuda(), lengths.cuda())
    for part_cpu, part_cuda in zip(cpu, cuda, strict=True):
        assert part_cuda.is_cuda
        assert torch.equal(part_cpu, part_cuda.cpu())


def dense_from_packed(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The padded (nodes, A_in, A_out) rebuilt from the packed graph."""
    packed = build_packed_session_graph(item_seq, item_seq_len)
    counts = torch.bincount(packed.session, minlength=len(item_seq_len))
    n = max(int(counts.max()), 1)
    slot = torch.arange(len(packed.nodes)) - (torch.cumsum(counts, 0) - counts)[packed.session]
    nodes = torch.zeros(len(item_seq_len), n, dtype=torch.long)
    nodes[packed.session, slot] = packed.nodes
    A_in = torch.zeros(len(item_seq_len), n, n)
    A_out = torch.zeros(len(item_seq_len), n, n)
    b = packed.session[packed.src]
    A_in[b, slot[packed.dst], slot[packed.src]] = packed.in_weight
    A_out[b, slot[packed.src], slot[packed.dst]] = packed.out_weight
    clicks = torch.zeros(len(item_seq_len), n).index_put_((packed.session, slot), packed.clicks)
    return nodes, A_in, A_out, clicks, slot[packed.last]


@given(
    sessions=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=7), min_size=1, max_size=5),
    extra=st.integers(0, 2),
)
def test_packed_graph_is_the_padded_graph_without_padding(sessions: list[list[int]], extra: int) -> None:
    item_seq, item_seq_len = pad_batch(sessions, extra)
    padded = build_session_graph(item_seq, item_seq_len)
    nodes, A_in, A_out, clicks, last = dense_from_packed(item_seq, item_seq_len)
    assert torch.equal(nodes, padded.nodes)
    assert torch.equal(A_in, padded.A_in) and torch.equal(A_out, padded.A_out)
    for b, session in enumerate(sessions):
        alias = padded.alias[b, : len(session)]
        assert torch.equal(clicks[b], torch.bincount(alias, minlength=nodes.shape[1]).float())
        assert last[b] == alias[-1]


def test_packed_graph_rejects_empty_sessions() -> None:
    with pytest.raises(ValueError, match="item_seq_len"):
        build_packed_session_graph(torch.tensor([[1, 2], [0, 0]]), torch.tensor([2, 0]))


def assert_same_packed_batch(a: PackedBatchGraph, b: PackedBatchGraph) -> None:
    for name, x, y in zip(PackedSessionGraph._fields, a.graph, b.graph, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert torch.equal(a.items, b.items) and torch.equal(a.item_of_node, b.item_of_node)
    for x, y in zip(a.step, b.step, strict=True):
        assert x.layout == y.layout == torch.sparse_csr and x.shape == y.shape
        assert x.values().dtype == y.values().dtype
        assert all(torch.equal(p, q) for p, q in zip(csr_parts(x), csr_parts(y), strict=True))


def csr_parts(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return matrix.crow_indices(), matrix.col_indices(), matrix.values()


@given(
    sessions=st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=12), min_size=1, max_size=6),
    extra=st.integers(0, 2),
    fill=st.integers(0, 9),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_numba_packed_batch_graph_is_the_tensor_ops_one(
    sessions: list[list[int]], extra: int, fill: int, dtype: torch.dtype
) -> None:
    """Bit for bit, the CSR parts of both step matrices included (junk after each session's
    length is padding)."""
    item_seq, item_seq_len = pad_batch(sessions, extra, fill)
    by_numba = build_packed_batch_graph(item_seq, item_seq_len, dtype, numba=True)
    assert_same_packed_batch(by_numba, build_packed_batch_graph(item_seq, item_seq_len, dtype, numba=False))
    # The later steps' matrices: one GEMM row per node, from float32 weights.
    graph, n_nodes = build_packed_session_graph(item_seq, item_seq_len), len(by_numba.graph.nodes)
    nodes = torch.arange(n_nodes)
    pairs = [packed_step_matrices(graph, nodes, n_nodes, dtype, numba=numba) for numba in (True, False)]
    for a, b in zip(*pairs, strict=True):
        assert a.shape == b.shape
        assert all(torch.equal(x, y) for x, y in zip(csr_parts(a), csr_parts(b), strict=True))


def test_numba_packed_batch_graph_of_an_empty_batch() -> None:
    item_seq, item_seq_len = torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    assert_same_packed_batch(
        build_packed_batch_graph(item_seq, item_seq_len, numba=True),
        build_packed_batch_graph(item_seq, item_seq_len, numba=False),
    )


def test_packed_batch_graph_builder_choice_and_bad_input() -> None:
    item_seq, item_seq_len = pad_batch([[3, 5, 3], [4]])
    # The default takes numba on CPU (it is installed with the test extras).
    assert_same_packed_batch(
        build_packed_batch_graph(item_seq, item_seq_len),
        build_packed_batch_graph(item_seq, item_seq_len, numba=True),
    )
    assert (
        build_packed_batch_graph(item_seq, item_seq_len, torch.bfloat16).graph.in_weight.dtype
        == torch.bfloat16
    )
    with pytest.raises(ValueError, match="float32 or float64"):
        build_packed_batch_graph(item_seq, item_seq_len, torch.bfloat16, numba=True)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=r"session 1 clicks an item id <= 0"):
            build_packed_batch_graph(*pad_batch([[3, 5], [4, bad, 2]]), numba=True)
    for numba in (True, False):
        with pytest.raises(ValueError, match="item_seq_len"):
            build_packed_batch_graph(item_seq, torch.tensor([3, 0]), numba=numba)
        with pytest.raises(ValueError, match="item_seq_len"):
            build_packed_batch_graph(item_seq, torch.tensor([4, 1]), numba=numba)
        with pytest.raises(ValueError, match="item_seq must be"):
            build_packed_batch_graph(item_seq[0], item_seq_len, numba=numba)


def test_load_numba_builder_loads_it_only_where_it_applies() -> None:
    script = (
        "import sys, torch\n"
        "from llm4sbr.data.graph import load_numba_builder\n"
        "load_numba_builder(torch.device('cpu'), torch.bfloat16)\n"
        "before = 'llm4sbr.data.graph_numba' in sys.modules\n"
        "load_numba_builder(torch.device('cpu'))\n"
        "print(before, 'llm4sbr.data.graph_numba' in sys.modules)\n"
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_a_failing_numba_builder_warns_and_falls_back_to_tensor_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba installed but unable to compile or cache (a read-only install, say): the default
    warns once and builds with tensor ops; numba=True still raises."""
    import llm4sbr.data.graph as graph_module
    import llm4sbr.data.graph_numba as graph_numba

    def broken(*args: object) -> None:
        raise RuntimeError("cannot cache function: no locator available")

    item_seq, item_seq_len = pad_batch([[3, 5, 3], [4]])
    monkeypatch.setattr(graph_numba, "build_packed_batch_graph_numba", broken)
    graph_module._numba_ready.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no locator available"):
            built = build_packed_batch_graph(item_seq, item_seq_len)
        assert_same_packed_batch(built, build_packed_batch_graph(item_seq, item_seq_len, numba=False))
        with pytest.raises(RuntimeError, match="no locator"):
            build_packed_batch_graph(item_seq, item_seq_len, numba=True)
    finally:
        graph_module._numba_ready.cache_clear()
