"""stdlib/memory.dpl's end-to-end memory network and DNC: shapes, every formula of the DNC paper against a NumPy
transcription of it (allocation through the sorted free list, retention and usage, the temporal link matrix
and its forward/backward reads, one whole step of the model), properties of the link matrix, and gradients
against central differences on small sizes."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
from test_stdlib import assert_gradcheck, load_random, sigmoid, softmax
from conftest import check_grads

SRC = """
use memory
net = MemN2N(3, 5, 2, 2, 4)
lin = MemN2N(3, 5, 2, 0, 4)
dnc = DNC(3, 2, 6, 5, 4, 2)
fn net_out(xs, q) = net(xs, q)
fn net_p(xs, q) = net.weights(xs, q)
fn lin_out(xs, q) = lin(xs, q)
fn net_loss(xs, q, t) = mse(net(xs, q), t)
fn alloc(u) = allocation(u)
fn alloc_loss(u, v) = sum(allocation(u) * v)
fn ret(f, wr) = retention(f, wr)
fn use_(u, ww, psi) = usage(u, ww, psi)
fn link(L, ww, p) = link_update(L, ww, p)
fn prec(p, ww) = precedence(p, ww)
fn fwd(L, wr) = forward_weights(L, wr)
fn bwd(L, wr) = backward_weights(L, wr)
fn link_loss(L, ww, p, wr, v) = sum((forward_weights(link_update(L, ww, p), wr) + 2 * backward_weights(link_update(L, ww, p), wr)) * v)
fn dnc_out(xs) = dnc(xs)
fn dnc_steps(xs) {
    s = dnc.initial(shape(xs)[1])
    for x in xs {
        y, s = dnc.step(x, s)
    }
    return s
}
fn dnc_loss(xs, t) = mse(dnc(xs), t)
"""


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("memory"), SRC, seed=21)


# ---- NumPy transcriptions of the papers' formulas ------------------------------------------------------------

def np_memn2n(p, name, xs, q, hops):
    m = xs @ p[f"{name}.A"] + p[f"{name}.TA"]
    c = xs @ p[f"{name}.C"] + p[f"{name}.TC"]
    u, ps = q @ p[f"{name}.B"], []
    for _ in range(hops):
        pk = softmax(np.einsum("bnd,bd->bn", m, u))
        ps.append(pk)
        u = u + np.einsum("bn,bnd->bd", pk, c)
    return u @ p[f"{name}.W"] + p[f"{name}.b"], np.stack(ps, 1) if ps else None


def np_allocation(u):
    """a[φⱼ] = (1 − u[φⱼ]) Πᵢ₌₁ʲ⁻¹ u[φᵢ] (DNC paper, methods), one row at a time, with an explicit loop."""
    u = np.asarray(u, dtype=np.float64)
    a = np.zeros_like(u)
    for row in np.ndindex(u.shape[:-1]):
        phi = np.argsort(u[row], kind="stable")
        run = 1.0
        for j in phi:
            a[row + (j,)] = (1 - u[row + (j,)]) * run
            run *= u[row + (j,)]
    return a


def np_link(L, ww, p):
    n = ww.shape[-1]
    out = np.empty_like(L)
    for b in range(L.shape[0]):
        for i in range(n):
            for j in range(n):
                out[b, i, j] = 0.0 if i == j else (1 - ww[b, i] - ww[b, j]) * L[b, i, j] + ww[b, i] * p[b, j]
    return out


def np_cos_address(M, k, beta):
    """[B, R, N] weights of keys k [B, R, W] (or [B, W]) over M [B, N, W] with cosine similarity."""
    single = k.ndim == 2
    k = k[:, None] if single else k
    beta = beta[:, None] if single else beta
    cos = np.einsum("brw,bnw->brn", k, M) / np.maximum(
        np.linalg.norm(k, axis=-1)[:, :, None] * np.linalg.norm(M, axis=-1)[:, None, :], 1e-8)
    w = softmax(beta[..., None] * cos)
    return w[:, 0] if single else w


def np_dnc_step(p, x, s, N=5, W=4, R=2, H=6):
    h, c, M, u, L, prec, wr, ww, r = s
    z = np.concatenate([x, r.reshape(len(x), -1)], 1) @ p["dnc.ctrl.Wx"] + h @ p["dnc.ctrl.Wh"] + p["dnc.ctrl.b"]
    gi, gf, gg, go = np.split(z, 4, axis=1)
    c = sigmoid(gf) * c + sigmoid(gi) * np.tanh(gg)
    h = sigmoid(go) * np.tanh(c)
    xi = h @ p["dnc.Wxi"] + p["dnc.bxi"]
    sizes = [R * W, R, W, 1, W, W, R, 1, 1, 3 * R]
    kr, br, kw, bw, e, v, f, ga, gw, pi = np.split(xi, np.cumsum(sizes)[:-1], axis=1)
    oneplus = lambda t: 1 + np.logaddexp(0, t)  # noqa: E731
    kr, br, bw = kr.reshape(-1, R, W), oneplus(br), oneplus(bw[:, 0])
    e, f, ga, gw = sigmoid(e), sigmoid(f), sigmoid(ga), sigmoid(gw)
    pi = softmax(pi.reshape(-1, R, 3))
    psi = np.prod(1 - f[:, :, None] * wr, axis=1)
    u = (u + ww - u * ww) * psi
    ww = gw * (ga * np_allocation(u) + (1 - ga) * np_cos_address(M, kw, bw))
    M = M * (1 - ww[:, :, None] * e[:, None, :]) + ww[:, :, None] * v[:, None, :]
    L = np_link(L, ww, prec)
    prec = (1 - ww.sum(1, keepdims=True)) * prec + ww
    fw = np.einsum("bij,brj->bri", L, wr)
    bk = np.einsum("bji,brj->bri", L, wr)
    wr = pi[..., 0:1] * bk + pi[..., 1:2] * np_cos_address(M, kr, br) + pi[..., 2:3] * fw
    r = np.einsum("brn,bnw->brw", wr, M)
    y = h @ p["dnc.Wy"] + r.reshape(len(x), -1) @ p["dnc.Wr"] + p["dnc.by"]
    return y, (h, c, M, u, L, prec, wr, ww, r)


def np_dnc_initial(batch, N=5, W=4, R=2, H=6):
    z = np.zeros
    return (z((batch, H)), z((batch, H)), z((batch, N, W)), z((batch, N)), z((batch, N, N)), z((batch, N)),
            z((batch, R, N)), z((batch, N)), z((batch, R, W)))


# ---- the module's names and parameters -----------------------------------------------------------------------

def test_memory_defines_the_models(mem):
    prog, p = mem
    for name in ["MemN2N", "DNC", "allocation", "retention", "usage", "link_update", "precedence",
                 "forward_weights", "backward_weights", "MemoryHead"]:
        prog.function(name)
    shapes = {k: v.shape for k, v in p.items() if k.startswith("dnc.")}
    assert shapes == {"dnc.ctrl.Wx": (3 + 2 * 4, 24), "dnc.ctrl.Wh": (6, 24), "dnc.ctrl.b": (24,),
                      "dnc.Wxi": (6, 2 * 4 + 3 * 4 + 5 * 2 + 3), "dnc.bxi": (33,),
                      "dnc.Wy": (6, 2), "dnc.Wr": (8, 2), "dnc.by": (2,)}
    assert {k for k in p if k.startswith("lin.")} == {f"lin.{n}" for n in ["A", "B", "C", "TA", "TC", "W", "b"]}


# ---- end-to-end memory network -----------------------------------------------------------------------------

def test_memn2n_matches_numpy(mem):
    prog, p = mem
    rng = np.random.default_rng(22)
    xs, q = rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 3))
    want, want_p = np_memn2n(p, "net", xs, q, 2)
    got = prog.call("net_out", xs, q)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    ps = prog.call("net_p", xs, q)
    assert ps.shape == (3, 2, 4)
    np.testing.assert_allclose(ps, want_p, rtol=1e-12)
    np.testing.assert_allclose(ps.sum(-1), 1.0, rtol=1e-12)
    # no hops: the linear model q B W + b, which never looks at the memories
    lin = prog.call("lin_out", xs, q)
    np.testing.assert_allclose(lin, q @ p["lin.B"] @ p["lin.W"] + p["lin.b"], rtol=1e-12)
    np.testing.assert_array_equal(prog.call("lin_out", xs + 1.0, q), lin)


def test_memn2n_gradients(mem):
    prog, p = mem
    rng = np.random.default_rng(23)
    xs, q, t = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 2))
    check_grads(prog, "net_loss", [xs, q, t], [0, 1])
    assert {k for k in p if k.startswith("net.")} <= assert_gradcheck(prog, "net_loss", xs, q, t)


# ---- DNC: allocation, usage, links ---------------------------------------------------------------------------

def test_allocation_by_hand():
    """u = [0.5, 0.1, 0.9]: the free list is slots 1, 0, 2, so a = [(1 − .5)·.1, 1 − .1, (1 − .9)·.1·.5]."""
    prog = dpl.loads("use memory\nfn f(u) = allocation(u)\n")
    np.testing.assert_allclose(prog.call("f", np.array([0.5, 0.1, 0.9])), [0.05, 0.9, 0.005], rtol=1e-14)
    # a fully used memory allocates nothing; an unused one allocates the first slot of the list (stable)
    np.testing.assert_array_equal(prog.call("f", np.ones(4)), np.zeros(4))
    np.testing.assert_array_equal(prog.call("f", np.zeros(4)), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(prog.call("f", np.array([0.3])), [0.7])


@pytest.mark.parametrize("shape", [(6,), (2, 5), (2, 3, 7)])
def test_allocation_matches_the_paper(mem, shape):
    prog, _ = mem
    u = np.random.default_rng(24).uniform(size=shape)
    a = prog.call("alloc", u)
    np.testing.assert_allclose(a, np_allocation(u), rtol=1e-13, atol=1e-15)
    assert np.all(a >= 0) and np.all(a.sum(-1) <= 1 + 1e-12)
    # Σ a = 1 − Π u: the allocation hands out exactly what the usages leave free
    np.testing.assert_allclose(a.sum(-1), 1 - np.prod(u, -1), rtol=1e-12)


def test_allocation_gradient(mem):
    prog, _ = mem
    rng = np.random.default_rng(25)
    u, v = rng.uniform(0.05, 0.95, size=(2, 6)), rng.normal(size=(2, 6))
    check_grads(prog, "alloc_loss", [u, v], [0])


def test_retention_and_usage_match_the_paper(mem):
    prog, _ = mem
    rng = np.random.default_rng(26)
    f, wr = rng.uniform(size=(2, 3)), softmax(rng.normal(size=(2, 3, 5)))
    psi = prog.call("ret", f, wr)
    np.testing.assert_allclose(psi, np.prod(1 - f[:, :, None] * wr, axis=1), rtol=1e-13)
    u, ww = rng.uniform(size=(2, 5)), softmax(rng.normal(size=(2, 5)))
    np.testing.assert_allclose(prog.call("use_", u, ww, psi), (u + ww - u * ww) * psi, rtol=1e-13)
    # no free gate open: nothing is retained less; a written slot's usage rises
    np.testing.assert_array_equal(prog.call("ret", np.zeros((2, 3)), wr), np.ones((2, 5)))


def test_link_matrix_matches_the_paper(mem):
    prog, _ = mem
    rng = np.random.default_rng(27)
    L = rng.uniform(size=(2, 5, 5)) / 5
    ww, p = softmax(rng.normal(size=(2, 5))) * 0.8, softmax(rng.normal(size=(2, 5))) * 0.9
    got = prog.call("link", L, ww, p)
    np.testing.assert_allclose(got, np_link(L, ww, p), rtol=1e-13)
    np.testing.assert_allclose(prog.call("prec", p, ww), (1 - ww.sum(-1, keepdims=True)) * p + ww, rtol=1e-13)
    wr = softmax(rng.normal(size=(2, 3, 5)))
    np.testing.assert_allclose(prog.call("fwd", got, wr), np.einsum("bij,brj->bri", got, wr), rtol=1e-13)
    np.testing.assert_allclose(prog.call("bwd", got, wr), np.einsum("bji,brj->bri", got, wr), rtol=1e-13)


def test_link_matrix_records_the_order_of_writes(mem):
    """Writing slots 3, 0, 4 in turn (one-hot weightings) from an empty memory: L[0, 3] = L[4, 0] = 1 and no
    other link; forward from slot 3 reads slot 0, backward from slot 4 reads slot 0. Under soft weightings
    L keeps a zero diagonal, entries in [0, 1] and row and column sums at most 1."""
    prog, _ = mem
    L, p = np.zeros((1, 5, 5)), np.zeros((1, 5))
    for slot in (3, 0, 4):
        ww = np.eye(5)[None, slot]
        L = prog.call("link", L, ww, p)
        p = prog.call("prec", p, ww)
    want = np.zeros((5, 5))
    want[0, 3] = want[4, 0] = 1.0
    np.testing.assert_array_equal(L[0], want)
    np.testing.assert_array_equal(p, np.eye(5)[None, 4])
    np.testing.assert_array_equal(prog.call("fwd", L, np.eye(5)[None, None, 3]), np.eye(5)[None, None, 0])
    np.testing.assert_array_equal(prog.call("bwd", L, np.eye(5)[None, None, 4]), np.eye(5)[None, None, 0])
    rng = np.random.default_rng(28)
    L, p = np.zeros((3, 6, 6)), np.zeros((3, 6))
    for _ in range(12):
        ww = softmax(3 * rng.normal(size=(3, 6))) * rng.uniform(size=(3, 1))
        L = prog.call("link", L, ww, p)
        p = prog.call("prec", p, ww)
        assert np.all(np.diagonal(L, axis1=1, axis2=2) == 0)
        assert np.all(L >= 0) and np.all(L <= 1)
        assert np.all(L.sum(1) <= 1 + 1e-12) and np.all(L.sum(2) <= 1 + 1e-12)
        assert np.all(p >= 0) and np.all(p.sum(-1) <= 1 + 1e-12)


def test_link_gradients(mem):
    prog, _ = mem
    rng = np.random.default_rng(29)
    L = rng.uniform(size=(2, 4, 4)) / 4
    ww, p = softmax(rng.normal(size=(2, 4))), softmax(rng.normal(size=(2, 4)))
    wr, v = softmax(rng.normal(size=(2, 2, 4))), rng.normal(size=(2, 2, 4))
    check_grads(prog, "link_loss", [L, ww, p, wr, v], [0, 1, 2, 3])


# ---- DNC: the whole model -----------------------------------------------------------------------------------

def test_dnc_steps_match_numpy(mem):
    prog, p = mem
    xs = np.random.default_rng(30).normal(size=(4, 2, 3))
    s, ys = np_dnc_initial(2), []
    for x in xs:
        y, s = np_dnc_step(p, x, s)
        ys.append(y)
    got = prog.call("dnc_out", xs)
    assert got.shape == (4, 2, 2)
    np.testing.assert_allclose(got, np.stack(ys), rtol=1e-10, atol=1e-12)
    state = prog.call("dnc_steps", xs)
    assert [np.shape(v) for v in state] == [(2, 6), (2, 6), (2, 5, 4), (2, 5), (2, 5, 5), (2, 5), (2, 2, 5),
                                           (2, 5), (2, 2, 4)]
    for name, a, b in zip(["h", "c", "M", "u", "L", "p", "wr", "ww", "r"], state, s):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    # the weightings stay weightings (a forward or backward read may find less than one whole link)
    _, _, _, u, L, prec, wr, ww, _ = state
    assert np.all((u >= 0) & (u <= 1)) and np.all(ww.sum(-1) <= 1 + 1e-12)
    assert np.all(wr >= 0) and np.all(wr.sum(-1) <= 1 + 1e-12)
    assert np.all(np.diagonal(L, axis1=1, axis2=2) == 0)


def test_dnc_gradients(mem):
    """Every parameter and the input sequence, through content addressing, the sort of the allocation and
    the links, against central differences (3 steps, so the links and usage take part)."""
    prog, p = mem
    rng = np.random.default_rng(31)
    xs, t = rng.normal(size=(3, 2, 3)), rng.normal(size=(3, 2, 2))
    names = assert_gradcheck(prog, "dnc_loss", xs, t, tol=1e-5)
    assert {k for k in p if k.startswith("dnc.")} <= names


def test_float32_stays_float32():
    prog = dpl.loads(SRC, dtype="float32")
    rng = np.random.default_rng(32)
    assert prog.call("dnc_out", rng.normal(size=(3, 2, 3)).astype(np.float32)).dtype == np.float32
    xs, q = rng.normal(size=(2, 4, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    assert prog.call("net_out", xs, q).dtype == np.float32
    assert prog.call("alloc", rng.uniform(size=(2, 5)).astype(np.float32)).dtype == np.float32
