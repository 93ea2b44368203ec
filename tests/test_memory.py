"""Content-addressed memory (LANGUAGE.md §9): address, read, write — values, heads, batches, gradients."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
import conftest
from conftest import numeric_grad

RNG = np.random.default_rng(2)

PROG = dpl.loads("""
fn addr(M, k, b) = address(M, k, b)
fn rd(M, k, b) = read(M, k, b)
fn wr(M, w, e, a) = write(M, w, e, a)
fn l_addr(M, k, b, u) = sum(address(M, k, b) * u)
fn l_read(M, k, b, u) = sum(read(M, k, b) * u)
fn l_write(M, w, e, a, u) = sum(write(M, w, e, a) * u)

fn write_then_read(M, w, v, b) = read(write(M, w, ones(shape(v)), v), v, b)

# memory as a value updated in a loop: content-addressed writes, then a read
fn controller(M0, keys, erases, adds, q, u) {
    M = M0
    for i in range(shape(keys)[0]) {
        w = address(M, keys[i], 4.0)
        M = write(M, w, sigmoid(erases[i]), adds[i])
    }
    return sum(read(M, q, 3.0) * u)
}
""", file="memory_test.dpl")


def ref_cos(M, k):
    """cos(key, M_i) for key [..., W] or [..., R, W] (then [..., R, N]): k·Mᵢ / max(‖k‖‖Mᵢ‖, 1e-8) (LANGUAGE.md §9)."""
    single = k.ndim < M.ndim
    kb = k[..., None, :] if single else k
    dots = kb @ np.swapaxes(M, -1, -2)
    nk, nm = np.sqrt((kb ** 2).sum(-1)), np.sqrt((M ** 2).sum(-1))
    c = dots / np.maximum(nk[..., :, None] * nm[..., None, :], 1e-8)
    return c[..., 0, :] if single else c


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_address(M, k, beta):
    beta = np.asarray(beta, dtype=float)
    b = beta if beta.ndim == 0 else beta[..., None]
    return softmax(b * ref_cos(M, k))


def ref_read(M, k, beta):
    a = ref_address(M, k, beta)
    if k.ndim < M.ndim:
        return (a[..., None, :] @ M)[..., 0, :]
    return a @ M


def ref_write(M, w, e, a):
    return M * (1 - w[..., :, None] * e[..., None, :]) + w[..., :, None] * a[..., None, :]


def check_grads(name, args, argnums, rtol=1e-6, atol=1e-8):
    conftest.check_grads(PROG, name, args, argnums, rtol, atol)


# (M, key, beta) shapes: one key, R heads, batches of both
CASES = [
    ((5, 3), (3,), ()),
    ((5, 3), (2, 3), ()),            # 2 read heads sharing one beta
    ((5, 3), (2, 3), (2,)),          # 2 read heads, one beta each
    ((4, 5, 3), (4, 3), (4,)),       # a batch of memories, one key and beta each
    ((4, 5, 3), (4, 2, 3), (4, 2)),  # a batch of memories with 2 heads each
    ((2, 4, 5, 3), (2, 4, 3), ()),   # two batch dims, one shared beta
]
IDS = [f"M{c[0]}-k{c[1]}-b{c[2]}" for c in CASES]


def make(case):
    sm, sk, sb = case
    return RNG.normal(size=sm), RNG.normal(size=sk), RNG.uniform(0.5, 3.0, size=sb)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_address_and_read_match_numpy(case):
    M, k, b = make(case)
    a = PROG.call("addr", M, k, b)
    want = ref_address(M, k, b)
    assert a.shape == want.shape
    np.testing.assert_allclose(a, want, rtol=1e-12)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-13)
    r = PROG.call("rd", M, k, b)
    assert r.shape == a.shape[:-1] + (M.shape[-1],)
    np.testing.assert_allclose(r, ref_read(M, k, b), rtol=1e-12, atol=1e-14)


def test_read_is_alpha_transpose_M():
    M, k = RNG.normal(size=(6, 4)), RNG.normal(size=4)
    a = PROG.call("addr", M, k, 2.5)
    np.testing.assert_allclose(PROG.call("rd", M, k, 2.5), a @ M, rtol=1e-14)


def test_beta_zero_is_uniform_and_large_beta_is_sharp():
    M = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(PROG.call("addr", M, np.array([0.3, 0.9]), 0.0), np.full(3, 1 / 3), rtol=1e-15)
    a = PROG.call("addr", M, np.array([2.0, 0.0]), 50.0)
    np.testing.assert_allclose(a, [1.0, 0.0, 0.0], atol=1e-20)
    assert np.all(np.isfinite(PROG.call("addr", M, np.array([2.0, 0.0]), 1e6)))


def test_heads_are_independent_reads():
    M, k, b = RNG.normal(size=(5, 3)), RNG.normal(size=(3, 3)), np.array([0.5, 1.0, 4.0])
    r = PROG.call("rd", M, k, b)
    for h in range(3):
        np.testing.assert_allclose(r[h], PROG.call("rd", M, k[h], b[h]), rtol=1e-12)


@pytest.mark.parametrize("case", CASES[:5], ids=IDS[:5])
def test_address_and_read_gradients(case):
    M, k, b = make(case)
    u = RNG.normal(size=ref_address(M, k, b).shape)
    check_grads("l_addr", [M, k, b, u], [0, 1, 2])
    u = RNG.normal(size=ref_read(M, k, b).shape)
    check_grads("l_read", [M, k, b, u], [0, 1, 2])


# (M, w, erase, add) shapes
WCASES = [((5, 3), (5,), (3,), (3,)), ((2, 5, 3), (2, 5), (2, 3), (2, 3)), ((2, 5, 3), (2, 5), (3,), (2, 3))]


@pytest.mark.parametrize("case", WCASES, ids=[str(c[0]) + str(c[2]) for c in WCASES])
def test_write_matches_numpy_and_differentiates(case):
    M = RNG.normal(size=case[0])
    w = softmax(RNG.normal(size=case[1]))
    e = RNG.uniform(size=case[2])
    a = RNG.normal(size=case[3])
    out = PROG.call("wr", M, w, e, a)
    np.testing.assert_allclose(out, ref_write(M, w, e, a), rtol=1e-14, atol=1e-15)
    check_grads("l_write", [M, w, e, a, RNG.normal(size=out.shape)], [0, 1, 2, 3])


def test_write_with_one_hot_weight_and_full_erase_clears_exactly_that_row():
    M = RNG.normal(size=(4, 3))
    w = np.array([0.0, 0.0, 1.0, 0.0])
    cleared = PROG.call("wr", M, w, np.ones(3), np.zeros(3))
    np.testing.assert_array_equal(cleared[2], 0.0)
    np.testing.assert_array_equal(np.delete(cleared, 2, 0), np.delete(M, 2, 0))
    v = np.array([7.0, -1.0, 0.5])
    replaced = PROG.call("wr", M, w, np.ones(3), v)
    np.testing.assert_array_equal(replaced[2], v)
    # erase one column only
    part = PROG.call("wr", M, w, np.array([0.0, 1.0, 0.0]), np.zeros(3))
    np.testing.assert_array_equal(part[2], [M[2, 0], 0.0, M[2, 2]])


def test_write_then_sharp_read_returns_what_was_written():
    M = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    v = np.array([-1.0, 0.2, 0.1])           # cos(v, row) <= 0.2 for every other row
    w = np.array([0.0, 0.0, 1.0, 0.0])
    r = PROG.call("write_then_read", M, w, v, 100.0)
    np.testing.assert_allclose(r, v, atol=1e-30 + 1e-15)
    # batched: each memory gets its own write and read
    Mb = np.stack([M, M[::-1]])
    vb = np.stack([v, -v])
    wb = np.stack([w, np.array([0.0, 0.0, 0.0, 1.0])])
    np.testing.assert_allclose(PROG.call("write_then_read", Mb, wb, vb, 100.0), vb, atol=1e-15)


def test_zero_key_and_zero_row_stay_finite():
    M = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    k0 = np.zeros(3)
    a = PROG.call("addr", M, k0, 5.0)
    np.testing.assert_allclose(a, np.full(3, 1 / 3), rtol=1e-14)      # zero key: uniform
    a = PROG.call("addr", M, np.array([1.0, 2.0, 3.0]), 5.0)
    assert np.all(np.isfinite(a)) and a[0] > 0
    u = RNG.normal(size=3)
    for key in (k0, np.array([1.0, 2.0, 3.0])):
        for i in range(3):
            g = PROG.grad("l_read", i)(M, key, 5.0, u)
            assert np.all(np.isfinite(g)), (key, i)
    # (not wrt the zero row itself: there the guarded norm bends on a 1e-4 scale, too close for differences)
    check_grads("l_read", [M, np.array([1.0, 2.0, 3.0]), 5.0, u], [1, 2])


def test_a_row_of_small_norm_has_the_contracts_cosine():
    """No ε inside the norms (issue 15): a tiny row parallel to the key has cosine 1, as attention's cosine."""
    M = np.array([[1e-5, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(PROG.call("addr", M, np.array([1.0, 0.0]), 1.0), [np.e / (np.e + 1), 1 / (np.e + 1)],
                               rtol=1e-14)
    # below max(‖k‖‖Mᵢ‖, 1e-8) = 1e-8 the cosine is k·Mᵢ / 1e-8
    a = PROG.call("addr", np.array([[1e-9, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]), 1.0)
    np.testing.assert_allclose(a, softmax(np.array([0.1, 0.0])), rtol=1e-14)


def test_memory_updated_in_a_loop_differentiates():
    M0 = RNG.normal(size=(4, 3))
    keys, erases, adds = RNG.normal(size=(3, 3)), RNG.normal(size=(3, 3)), RNG.normal(size=(3, 3))
    q, u = RNG.normal(size=3), RNG.normal(size=3)
    # numpy rerun of the same controller
    M = M0.copy()
    for i in range(3):
        w = ref_address(M, keys[i], 4.0)
        M = ref_write(M, w, 1 / (1 + np.exp(-erases[i])), adds[i])
    want = float(ref_read(M, q, 3.0) @ u)
    assert float(PROG.call("controller", M0, keys, erases, adds, q, u)) == pytest.approx(want, rel=1e-7)
    check_grads("controller", [M0, keys, erases, adds, q, u], [0, 1, 2, 3, 4])


def test_shape_errors():
    with pytest.raises(dpl.DplError, match="address needs"):
        PROG.call("addr", np.ones((4, 3)), np.ones(2), 1.0)
    with pytest.raises(dpl.DplError, match="address needs"):
        PROG.call("rd", np.ones(3), np.ones(3), 1.0)
