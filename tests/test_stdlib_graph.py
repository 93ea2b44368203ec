"""stdlib/graph.dpl: graph convolution, the two-layer GCN, graph attention restricted to neighbours by a mask
(single graphs and batches, concatenated and averaged heads) and the readouts, against NumPy references;
gradients against central differences; a sparse adjacency gives what the dense one gives."""
from __future__ import annotations

import numpy as np
import pytest

from test_stdlib import assert_gradcheck, load_random, softmax
from conftest import check_grads

SRC = """
use graph
conv = GraphConv(3, 4)
gcn = GCN(3, 5, 2)
gat = GAT(3, 4, heads = 2)
gm = GAT(3, 4, heads = 2, concat_heads = false)
fn conv_out(A, X) = conv(A, X)
fn gcn_out(A, X) = gcn(A, X)
fn gcn_sparse(edges, X) = gcn(adjacency(edges, shape(X)[0]), X)
fn gat_out(X, m) = gat(X, m)
fn gat_mean(X, m) = gm(X, m)
fn gat_w(X, m) = gat.weights(X, m)
fn mask_of(edges, n) = edge_mask(edges, n)
fn norm_adj(A) = normalize_adjacency(A)
fn ro(H, m) = (mean_readout(H, m), sum_readout(H, m), max_readout(H, m))
fn ro_all(H) = (mean_readout(H), sum_readout(H), max_readout(H))
fn loss(A, X, m, t) = mse(gat(gcn(A, X) @ [[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], m), t)
fn ro_loss(H, m, u) = sum(mean_readout(H, m) * u) + sum(max_readout(H, m) * u) + sum(sum_readout(H, m) * u)
"""

EDGES = np.array([[0, 1, 2, 0], [1, 2, 3, 3]])


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("graph"), SRC, seed=51)


def dense_sym(edges, n):
    A = np.zeros((n, n))
    A[edges[0], edges[1]] = A[edges[1], edges[0]] = 1.0
    A += np.eye(n)
    d = 1 / np.sqrt(A.sum(1))
    return A * d[:, None] * d[None, :]


def np_gat(p, name, X, mask, heads, concat=True):
    h = (X @ p[f"{name}.W"]).reshape(X.shape[:-1] + (heads, -1))
    h = np.moveaxis(h, -2, -3)                                                  # [..., heads, n, F]
    e = (h * p[f"{name}.a_dst"][:, None, :]).sum(-1)[..., :, None] + (h * p[f"{name}.a_src"][:, None, :]).sum(-1)[..., None, :]
    e = np.where(e > 0, e, 0.2 * e)
    alpha = softmax(np.where(np.expand_dims(mask, -3), e, -np.inf))
    o = alpha @ h
    out = np.moveaxis(o, -3, -2).reshape(X.shape[:-1] + (-1,)) if concat else o.mean(-3)
    return out + p[f"{name}.b"], alpha


def test_graph_conv_and_gcn_match_numpy(graph):
    prog, p = graph
    rng = np.random.default_rng(52)
    X, A = rng.normal(size=(4, 3)), dense_sym(EDGES, 4)
    A01 = np.zeros((4, 4))
    A01[EDGES[0], EDGES[1]] = A01[EDGES[1], EDGES[0]] = 1.0
    np.testing.assert_allclose(prog.call("norm_adj", A01), A, rtol=1e-12)
    np.testing.assert_allclose(prog.call("conv_out", A, X), A @ X @ p["conv.W"] + p["conv.b"], rtol=1e-12)
    want = A @ np.maximum(A @ X @ p["gcn.W1"], 0) @ p["gcn.W2"]
    np.testing.assert_allclose(prog.call("gcn_out", A, X), want, rtol=1e-12)
    np.testing.assert_allclose(prog.call("gcn_sparse", EDGES, X), want, rtol=1e-12)
    # a batch of graphs with dense adjacencies [B, n, n]
    XB, AB = rng.normal(size=(2, 4, 3)), np.stack([A, dense_sym(EDGES[:, :2], 4)])
    np.testing.assert_allclose(prog.call("conv_out", AB, XB), AB @ XB @ p["conv.W"] + p["conv.b"], rtol=1e-12)


def test_edge_mask():
    from dpl import loads
    m = loads("use graph\nfn f(e, n) = edge_mask(e, n)\n").call("f", EDGES, 5)
    want = np.eye(5, dtype=bool)
    want[EDGES[0], EDGES[1]] = want[EDGES[1], EDGES[0]] = True
    np.testing.assert_array_equal(m, want)


def test_gat_matches_numpy_and_attends_only_to_neighbours(graph):
    prog, p = graph
    rng = np.random.default_rng(53)
    X = rng.normal(size=(5, 3))
    mask = prog.call("mask_of", EDGES, 5)
    want, alpha = np_gat(p, "gat", X, mask, 2)
    got = prog.call("gat_out", X, mask)
    assert got.shape == (5, 8)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    w = prog.call("gat_w", X, mask)
    assert w.shape == (2, 5, 5)
    np.testing.assert_allclose(w, alpha, rtol=1e-12)
    assert np.all(w[:, ~mask] == 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w[:, 4, 4], 1.0)                   # node 4 has no neighbours but itself
    # what a non-neighbour holds cannot change a node's output
    X2 = X.copy()
    X2[3] += 10.0
    np.testing.assert_array_equal(prog.call("gat_out", X2, mask)[1], got[1])
    # averaged heads, and a batch of graphs with one mask each
    np.testing.assert_allclose(prog.call("gat_mean", X, mask), np_gat(p, "gm", X, mask, 2, concat=False)[0],
                               rtol=1e-12)
    XB, MB = rng.normal(size=(2, 5, 3)), np.stack([mask, np.eye(5, dtype=bool) | mask.T[::-1, ::-1]])
    np.testing.assert_allclose(prog.call("gat_out", XB, MB), np_gat(p, "gat", XB, MB, 2)[0], rtol=1e-12)


def test_readouts(graph):
    prog, _ = graph
    H = np.random.default_rng(54).normal(size=(2, 4, 3))
    m = np.array([[True, False, True, True], [True, True, False, False]])
    mean, total, top = prog.call("ro", H, m)
    for b in range(2):
        np.testing.assert_allclose(mean[b], H[b, m[b]].mean(0), rtol=1e-12)
        np.testing.assert_allclose(total[b], H[b, m[b]].sum(0), rtol=1e-12)
        np.testing.assert_allclose(top[b], H[b, m[b]].max(0), rtol=1e-12)
    for got, want in zip(prog.call("ro_all", H), (H.mean(1), H.sum(1), H.max(1))):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_graph_gradients(graph):
    prog, p = graph
    rng = np.random.default_rng(55)
    X, A = rng.normal(size=(5, 3)), dense_sym(EDGES, 5)
    mask, t = prog.call("mask_of", EDGES, 5), rng.normal(size=(5, 8))
    check_grads(prog, "loss", [A, X, mask, t], [0, 1])
    names = assert_gradcheck(prog, "loss", A, X, mask, t)
    assert {k for k in p if k.startswith(("gcn.", "gat."))} <= names
    H, m, u = rng.normal(size=(2, 4, 3)), np.array([[True, False, True, True]] * 2), rng.normal(size=(2, 3))
    check_grads(prog, "ro_loss", [H, m, u], [0])
