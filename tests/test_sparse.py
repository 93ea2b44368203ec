"""Sparse matrices (LANGUAGE.md §9): csr, adjacency, sparse @ dense and its gradient; the GCN example."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as ssp

import dpl
import conftest
from conftest import numeric_grad

RNG = np.random.default_rng(4)
ROOT = Path(__file__).resolve().parents[1]

PROG = dpl.loads("""
fn mm(A, X) = A @ X
fn mk_csr(d, i, p, s) = csr(d, i, p, s)
fn csr_mm(d, i, p, s, X) = csr(d, i, p, s) @ X
fn adj(e, n, loops, norm) = adjacency(e, n, self_loops = loops, normalize = norm)
fn adj_default(e, n) = adjacency(e, n)
fn adj_dense(e, n, loops, norm) = adjacency(e, n, self_loops = loops, normalize = norm) @ eye(n)

# a fixed graph for the gradient checks
G = adjacency([[0, 0, 1, 3, 2], [1, 2, 2, 4, 4]], 5)
S = csr([1.0, -2.0, 0.5, 3.0, 1.5], [0, 3, 1, 2, 4], [0, 2, 3, 3, 5], [4, 5])
fn lin(X, U) = sum((G @ X) * U)
fn rect(X, U) = sum((S @ X) * U)
fn two_hops(X, U) = sum(relu(G @ (G @ X)) * U)
fn row_ops(X) {
    H = G @ X
    return sum(H[1] ^ 2) + mean(softmax(H, axis = 1)[:, 0]) + sum(max(H, axis = 0)) + logsumexp(H[2:4])
}
fn vec_ops(x) {
    h = S @ x
    return sum(h ^ 3) + h[2] * h[0]
}
fn inner(X) = sum(sin(G @ X))
fn second(X, U) = sum(grad(inner)(X) * U)    # differentiates the VJP of sparse @ dense
fn inner_rect(X) = sum(sin(S @ X))
fn second_rect(X, U) = sum(grad(inner_rect)(X) * U)   # needs (Sᵀ)ᵀ = S, not Sᵀ
""", file="sparse_test.dpl")


def random_csr(m, n, density=0.3):
    A = ssp.random(m, n, density=density, format="csr", random_state=RNG.integers(1 << 30))
    A.data = RNG.normal(size=A.nnz)
    return A


def parts(A):
    return A.data, A.indices.astype(np.int64), A.indptr.astype(np.int64), np.array(A.shape)


def dense_adjacency(edges, n, self_loops, normalize):
    A = np.zeros((n, n))
    for i, j in edges.T:
        A[i, j] = A[j, i] = 1.0
    if self_loops:
        A[np.arange(n), np.arange(n)] = 1.0
    deg = A.sum(1)
    with np.errstate(divide="ignore"):
        if normalize == "sym":
            d = np.where(deg > 0, deg ** -0.5, 0.0)
            return d[:, None] * A * d[None, :]
        if normalize == "row":
            return np.where(deg > 0, 1 / deg, 0.0)[:, None] * A
    return A


def check_grads(name, args, argnums, rtol=1e-6, atol=1e-8):
    conftest.check_grads(PROG, name, args, argnums, rtol, atol)


# ---- csr -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 4), (3, 7), (1, 1)])
def test_csr_matches_scipy(shape):
    A = random_csr(*shape, density=0.5)
    for X in (RNG.normal(size=shape[1]), RNG.normal(size=(shape[1], 3))):
        got = PROG.call("csr_mm", *parts(A), X)
        assert got.shape == (A @ X).shape
        np.testing.assert_allclose(got, A @ X, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(PROG.call("csr_mm", *parts(A), np.eye(shape[1])), A.toarray(), rtol=1e-15)


def test_csr_with_integer_data_is_float_and_empty_rows_are_zero():
    got = PROG.call("csr_mm", np.array([1, 2]), np.array([0, 2]), np.array([0, 1, 1, 2]), np.array([3, 3]),
                    np.eye(3))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 0, 0], [0, 0, 2]])


def test_csr_duplicate_entries_add_up_like_scipy():
    d, i, p = np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0]), np.array([0, 2, 3])
    want = ssp.csr_matrix((d, i, p), shape=(2, 2)).toarray()
    np.testing.assert_array_equal(PROG.call("csr_mm", d, i, p, np.array([2, 2]), np.eye(2)), want)
    assert want[0, 1] == 3.0


def test_csr_errors():
    with pytest.raises(dpl.DplError, match="`csr`"):   # indptr says 3 entries, only 2 given
        PROG.call("mk_csr", np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 1, 3]), np.array([2, 2]))
    with pytest.raises(dpl.DplError, match="`csr`"):   # a column out of range
        PROG.call("mk_csr", np.array([1.0]), np.array([5]), np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(dpl.DplError, match="2 sizes"):
        PROG.call("mk_csr", np.array([1.0]), np.array([0]), np.array([0, 1]), np.array([1, 1, 1]))


# ---- adjacency ----------------------------------------------------------------------------------------

EDGES = np.array([[0, 1, 1, 2, 0, 4, 3],
                  [1, 0, 2, 3, 1, 3, 5]])   # (0,1) three times in both directions; node 6 is isolated


@pytest.mark.parametrize("norm", ["sym", "row", "none"])
@pytest.mark.parametrize("loops", [True, False])
def test_adjacency_matches_dense_construction(norm, loops):
    n = 7
    got = PROG.call("adj_dense", EDGES, n, loops, norm)
    want = dense_adjacency(EDGES, n, loops, norm)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, got.T if norm != "row" else got, rtol=1e-15)


def test_adjacency_sym_is_gcn_propagation_matrix():
    n = 6
    A = np.zeros((n, n))
    A[EDGES[0], EDGES[1]] = 1
    A = np.maximum(A, A.T) + np.eye(n)
    D = np.diag(A.sum(1) ** -0.5)
    got = PROG.call("adj_dense", EDGES[:, EDGES.max(0) < n], n, True, "sym")
    np.testing.assert_allclose(got, D @ A @ D, rtol=1e-15)
    # the default is self loops and "sym"
    np.testing.assert_allclose(PROG.call("mm", PROG.call("adj_default", EDGES, 7), np.eye(7)),
                               dense_adjacency(EDGES, 7, True, "sym"), rtol=1e-15)


def test_adjacency_merges_duplicates_and_existing_self_loops():
    e = np.array([[0, 1, 0, 2], [1, 0, 1, 2]])     # (0,1) three times, an explicit self loop on 2
    none = PROG.call("adj_dense", e, 3, True, "none")
    np.testing.assert_array_equal(none, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(PROG.call("adj_dense", e, 3, False, "none"), [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    row = PROG.call("adj_dense", e, 3, True, "row")
    np.testing.assert_allclose(row.sum(1), 1.0, rtol=1e-15)


def test_adjacency_with_no_edges():
    e = np.zeros((2, 0), dtype=np.int64)
    np.testing.assert_array_equal(PROG.call("adj_dense", e, 3, True, "sym"), np.eye(3))
    np.testing.assert_array_equal(PROG.call("adj_dense", e, 3, False, "sym"), np.zeros((3, 3)))


def test_adjacency_errors():
    with pytest.raises(dpl.DplError, match="outside 0..2"):
        PROG.call("adj", np.array([[0], [3]]), 3, True, "sym")
    with pytest.raises(dpl.DplError, match=r"\[2, E\] integer"):
        PROG.call("adj", np.array([[0.0], [1.0]]), 3, True, "sym")
    with pytest.raises(dpl.DplError, match=r"\[2, E\] integer"):
        PROG.call("adj", np.array([[0, 1, 2]]), 3, True, "sym")
    with pytest.raises(dpl.DplError, match="`normalize`"):
        PROG.call("adj", np.array([[0], [1]]), 3, True, "col")


# ---- sparse @ dense and its gradient -----------------------------------------------------------------

def test_sparse_matmul_gradients_2d_and_1d():
    X, U = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    check_grads("lin", [X, U], [0])
    Gd = dense_adjacency(np.array([[0, 0, 1, 3, 2], [1, 2, 2, 4, 4]]), 5, True, "sym")
    np.testing.assert_allclose(PROG.grad("lin")(X, U), Gd.T @ U, rtol=1e-14)
    x, u = RNG.normal(size=5), RNG.normal(size=5)
    check_grads("lin", [x, u], [0])
    # a rectangular matrix: the adjoint goes through Aᵀ
    Sd = ssp.csr_matrix((np.array([1.0, -2.0, 0.5, 3.0, 1.5]), np.array([0, 3, 1, 2, 4]),
                         np.array([0, 2, 3, 3, 5])), shape=(4, 5)).toarray()
    U4 = RNG.normal(size=(4, 2))
    np.testing.assert_allclose(PROG.grad("rect")(RNG.normal(size=(5, 2)), U4), Sd.T @ U4, rtol=1e-14)
    check_grads("rect", [RNG.normal(size=(5, 2)), U4], [0])
    check_grads("rect", [RNG.normal(size=5), RNG.normal(size=4)], [0])


def test_sparse_matmul_gradients_through_row_and_reduction_ops():
    check_grads("two_hops", [RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))], [0])
    check_grads("row_ops", [RNG.normal(size=(5, 3))], [0])
    check_grads("vec_ops", [RNG.normal(size=5)], [0])


def test_sparse_matmul_second_order():
    check_grads("second", [RNG.normal(size=(5, 2)), RNG.normal(size=(5, 2))], [0])
    check_grads("second_rect", [RNG.normal(size=(5, 2)), RNG.normal(size=(5, 2))], [0, 1])
    check_grads("second_rect", [RNG.normal(size=5), RNG.normal(size=5)], [0, 1])


def test_sparse_matmul_float32():
    p32 = dpl.loads("S = csr([1.0, 2.0], [0, 1], [0, 1, 2], [2, 2])\nfn f(x) = S @ x", dtype="float32")
    out = p32.call("f", np.array([1.0, 3.0]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.0, 6.0])


def test_sparse_matmul_shape_mismatch():
    with pytest.raises(dpl.DplError, match=r"shape mismatch in `@`: sparse \[5, 5\] @ \[4, 2\]"):
        PROG.call("lin", np.ones((4, 2)), np.ones((5, 2)))
    with pytest.raises(dpl.DplError, match="shape mismatch in `@`"):
        PROG.call("lin", np.ones((5, 2, 2)), np.ones((5, 2, 2)))
    with pytest.raises(dpl.DplError, match="shape mismatch in `@`") as e:
        PROG.call("rect", np.ones(4), np.ones(4))
    assert (e.value.span.line, e.value.span.col) == (13, 24)    # the `@` of rect


# ---- the GCN example ---------------------------------------------------------------------------------

def test_gcn_cora_example_trains(tmp_path):
    """examples/gcn_cora.dpl: a two-layer GCN on Cora (published: 81.5%); the full 200 epochs take seconds."""
    example = ROOT / "examples" / "gcn_cora.dpl"
    dpl_cli = Path(sys.executable).with_name("dpl")
    cmd = [str(dpl_cli)] if dpl_cli.exists() else [sys.executable, "-m", "dpl.cli"]
    start = time.perf_counter()
    out = subprocess.run(cmd + ["train", str(example), "--quiet", "--out", str(tmp_path / "gcn.params.npz")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    acc = float(out.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"0\.\d+", out.stdout.strip())
    assert acc >= 0.78, f"test accuracy {acc}"
    assert elapsed < 60, f"took {elapsed:.1f} s"
    assert (tmp_path / "gcn.params.npz").is_file()
