"""attention / attend (LANGUAGE.md §9): scores, query blocks, batch dims, masks, stability, gradients."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
import conftest
from conftest import numeric_grad

RNG = np.random.default_rng(1)

PROG = dpl.loads("""
fn att(q, K, s) = attention(q, K, score = s)
fn att_m(q, K, s, m) = attention(q, K, score = s, mask = m)
fn out(q, K, V, s) = attend(q, K, V, score = s)
fn out_m(q, K, V, s, m) = attend(q, K, V, score = s, mask = m)
fn att_default(q, K) = attention(q, K)
fn out_default(q, K, V) = attend(q, K, V)

# scalar losses for gradient checks: <attend(...), u>
fn l_out(q, K, V, u, s) = sum(attend(q, K, V, score = s) * u)
fn l_out_m(q, K, V, u, s, m) = sum(attend(q, K, V, score = s, mask = m) * u)
fn l_att_m(q, K, u, s, m) = sum(attention(q, K, score = s, mask = m) * u)

# additive (Bahdanau) attention, score z . tanh(W [q; k]), once as a score fn ...
param W: [6, 5] ~ normal(0.7)
param z: [5] ~ normal(1.0)
fn additive(q, K) {
    Q = zeros([shape(K)[0], 1]) + reshape(q, [1, shape(q)[0]])      # q repeated for every key
    return tanh(concat([Q, K], axis = 1) @ W) @ z
}
fn by_fn(q, K, V) = attend(q, K, V, score = additive)
fn by_fn_m(q, K, V, m) = attend(q, K, V, score = additive, mask = m)
# ... and written out by hand
fn by_hand(q, K, V) {
    s = additive(q, K)
    a = softmax(s)
    return a @ V
}
fn l_by_fn(q, K, V, u) = sum(by_fn(q, K, V) * u)
fn l_by_hand(q, K, V, u) = sum(by_hand(q, K, V) * u)

# a bilinear score fn that also handles query blocks and batch dims
param Wb: [3, 3] ~ normal(1.0)
fn bilinear(q, K) = (q @ Wb) @ transpose(K, [0, 2, 1])
fn l_bil(q, K, V, u) = sum(attend(q, K, V, score = bilinear) * u)
fn bil_out(q, K, V) = attend(q, K, V, score = bilinear)
# for single queries [B, d] against keys [B, T, d]
fn bilinear1(q, K) = sum(reshape(q @ Wb, [shape(q)[0], 1, shape(q)[1]]) * K, axis = -1)
fn bil1_out(q, K, V) = attend(q, K, V, score = bilinear1)
fn l_bil1(q, K, V, u) = sum(bil1_out(q, K, V) * u)
# a score that ignores the query: one score per key, broadcast over the batch
fn key_only(q, K) = K[0, :, 0]
fn key_only_out(q, K, V) = attend(q, K, V, score = key_only)
fn short(q, K) = K[1:, 0]
fn short_out(q, K, V) = attend(q, K, V, score = short)

# Bahdanau with a decoder state q [2] and encoder states K [T, 3]: z . tanh(Wq q + Wk k)
param Wq: [2, 4] ~ normal(1.0)
param Wk: [3, 4] ~ normal(1.0)
param za: [4] ~ normal(1.0)
fn bahdanau(q, K) = tanh(q @ Wq + K @ Wk) @ za
fn l_bahdanau(q, K, V, u) = sum(attend(q, K, V, score = bahdanau) * u)

fn bad_score(q, K) = K[:, 0] > 0
fn use_bad_score(q, K) = attention(q, K, score = bad_score)
""", file="attention_test.dpl")

SCORES = ["dot", "scaled_dot", "cosine"]


def ref_scores(q, K, score):
    single = q.ndim < K.ndim
    qb = q[..., None, :] if single else q
    s = qb @ np.swapaxes(K, -1, -2)
    if score == "scaled_dot":
        s = s / np.sqrt(q.shape[-1])
    elif score == "cosine":
        nq = np.linalg.norm(qb, axis=-1)[..., :, None]
        nk = np.linalg.norm(K, axis=-1)[..., None, :]
        s = s / np.maximum(nq * nk, 1e-8)
    return s[..., 0, :] if single else s


def ref_weights(s, mask=None):
    if mask is None:
        mask = np.ones(s.shape, bool)
    mask = np.broadcast_to(mask, s.shape)
    shift = np.max(np.where(mask, s, -np.inf), axis=-1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    e = np.where(mask, np.exp(np.where(mask, s, 0.0) - shift), 0.0)
    tot = e.sum(-1, keepdims=True)
    return e / np.where(tot == 0, 1.0, tot)


def ref_attend(q, K, V, score, mask=None):
    a = ref_weights(ref_scores(q, K, score), mask)
    if q.ndim < K.ndim:
        return (a[..., None, :] @ V)[..., 0, :]
    return a @ V


def check_grads(name, args, argnums, rtol=1e-6, atol=1e-8):
    conftest.check_grads(PROG, name, args, argnums, rtol, atol)


# (q shape, K shape, V shape): single queries and query blocks, with and without batch dims
SHAPES = [
    ((4,), (5, 4), (5, 3)),              # one query
    ((2, 4), (2, 5, 4), (2, 5, 3)),      # batch of single queries
    ((3, 4), (5, 4), (5, 2)),            # block of 3 queries
    ((2, 3, 4), (2, 5, 4), (2, 5, 2)),   # batch of query blocks
    ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 2)),  # two batch dims
    ((2, 3, 4), (5, 4), (5, 2)),         # keys shared across the batch
]


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("shapes", SHAPES, ids=[str(s[0]) + "x" + str(s[1]) for s in SHAPES])
def test_values_match_numpy(score, shapes):
    q, K, V = (RNG.normal(size=s) for s in shapes)
    a = PROG.call("att", q, K, score)
    want_a = ref_weights(ref_scores(q, K, score))
    assert a.shape == want_a.shape
    np.testing.assert_allclose(a, want_a, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-13)
    o = PROG.call("out", q, K, V, score)
    want_o = ref_attend(q, K, V, score)
    assert o.shape == want_o.shape
    np.testing.assert_allclose(o, want_o, rtol=1e-12, atol=1e-14)


def test_score_formulas_directly():
    q, K = np.array([1.0, 2.0, 2.0, 0.0]), np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0]])
    dot = np.array([1.0, 14.0])
    for score, s in [("dot", dot), ("scaled_dot", dot / 2.0), ("cosine", dot / np.array([3.0, 15.0]))]:
        a = PROG.call("att", q, K, score)
        np.testing.assert_allclose(np.log(a[1] / a[0]), s[1] - s[0], rtol=1e-12)
    np.testing.assert_array_equal(PROG.call("att_default", q, K), PROG.call("att", q, K, "dot"))
    V = RNG.normal(size=(2, 3))
    np.testing.assert_array_equal(PROG.call("out_default", q, K, V), PROG.call("out", q, K, V, "dot"))


def test_cosine_with_zero_vectors_is_finite():
    q, K, V = np.zeros(3), np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), RNG.normal(size=(2, 2))
    a = PROG.call("att", q, K, "cosine")
    np.testing.assert_allclose(a, [0.5, 0.5], rtol=1e-15)
    for k in range(3):
        g = PROG.grad("l_out", k)(q, K, V, np.ones(2), "cosine")
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("shapes", SHAPES[:4], ids=[str(s[0]) + "x" + str(s[1]) for s in SHAPES[:4]])
def test_gradients_wrt_q_K_V(score, shapes):
    q, K, V = (RNG.normal(size=s) for s in shapes)
    u = RNG.normal(size=PROG.call("out", q, K, V, score).shape)
    check_grads("l_out", [q, K, V, u, score], [0, 1, 2])


def test_gradients_with_keys_shared_across_the_batch():
    q, K, V = (RNG.normal(size=s) for s in SHAPES[-1])
    u = RNG.normal(size=(2, 3, 2))
    check_grads("l_out", [q, K, V, u, "scaled_dot"], [0, 1, 2])


# ---- DPL score functions --------------------------------------------------------------------------

def test_additive_score_fn_matches_attention_written_by_hand():
    q, K, V = RNG.normal(size=3), RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    by_fn, by_hand = PROG.call("by_fn", q, K, V), PROG.call("by_hand", q, K, V)
    np.testing.assert_allclose(by_fn, by_hand, rtol=1e-13)
    # and both agree with numpy
    W, z = PROG.params["W"], PROG.params["z"]
    s = np.tanh(np.concatenate([np.tile(q, (4, 1)), K], axis=1) @ W) @ z
    np.testing.assert_allclose(by_fn, ref_weights(s) @ V, rtol=1e-13)
    u = RNG.normal(size=2)
    for k in range(3):
        np.testing.assert_allclose(PROG.grad("l_by_fn", k)(q, K, V, u), PROG.grad("l_by_hand", k)(q, K, V, u),
                                   rtol=1e-12, atol=1e-14)
    check_grads("l_by_fn", [q, K, V, u], [0, 1, 2])


def test_score_fn_may_take_queries_and_keys_of_different_sizes():
    q, K, V, u = RNG.normal(size=2), RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2)), RNG.normal(size=2)
    Wq, Wk, za = PROG.params["Wq"], PROG.params["Wk"], PROG.params["za"]
    s = np.tanh(q @ Wq + K @ Wk) @ za
    assert float(PROG.call("l_bahdanau", q, K, V, u)) == pytest.approx(float(ref_weights(s) @ V @ u), rel=1e-13)
    check_grads("l_bahdanau", [q, K, V, u], [0, 1, 2])


def test_score_fn_gradient_reaches_its_params():
    from dpl.train import loss_and_grads
    q, K, V, u = RNG.normal(size=3), RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2)), RNG.normal(size=2)
    interp = PROG.interp
    args = [np.asarray(a) for a in (q, K, V, u)]
    _, grads = loss_and_grads(interp, PROG.function("l_by_fn"), args, None)
    for name in ("W", "z"):
        p0 = interp.params[name].copy()

        def f(x, name=name):
            interp.params[name] = x
            try:
                return PROG.call("l_by_fn", q, K, V, u)
            finally:
                interp.params[name] = p0

        np.testing.assert_allclose(grads[name], numeric_grad(f, p0), rtol=1e-6, atol=1e-9)
        assert np.any(grads[name] != 0)


def test_score_fn_with_query_blocks_and_batch_dims():
    q, K, V = RNG.normal(size=(2, 3, 3)), RNG.normal(size=(2, 5, 3)), RNG.normal(size=(2, 5, 4))
    Wb = PROG.params["Wb"]
    s = (q @ Wb) @ np.swapaxes(K, -1, -2)
    np.testing.assert_allclose(PROG.call("bil_out", q, K, V), ref_weights(s) @ V, rtol=1e-12)
    check_grads("l_bil", [q, K, V, RNG.normal(size=(2, 3, 4))], [0, 1, 2])
    # single queries with a batch dim
    q1 = RNG.normal(size=(2, 3))
    s1 = np.einsum("bi,ij,btj->bt", q1, Wb, K)
    want = np.einsum("bt,btv->bv", ref_weights(s1), V)
    np.testing.assert_allclose(PROG.call("bil1_out", q1, K, V), want, rtol=1e-12)
    check_grads("l_bil1", [q1, K, V, RNG.normal(size=(2, 4))], [0, 1, 2])


def test_score_fn_returning_the_wrong_shape_is_an_error():
    q1, K, V = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 5, 3)), RNG.normal(size=(2, 5, 4))
    # `bilinear` is written for query blocks: on [2, 3] queries it returns [2, 2, 5] scores, not [2, 5]
    with pytest.raises(dpl.DplError, match=r"one score per key, shaped \[2, 5\], got shape \[2, 2, 5\]"):
        PROG.call("bil_out", q1, K, V)
    with pytest.raises(dpl.DplError, match=r"one score per key, shaped \[5\], got shape \[4\]"):
        PROG.call("short_out", q1[0], K[0], V[0])
    # scores that broadcast to one per key are accepted
    out = PROG.call("key_only_out", q1, K, V)
    a = ref_weights(K[0, :, 0])
    np.testing.assert_allclose(out, np.einsum("t,btv->bv", a, V), rtol=1e-12)


def test_score_fn_with_mask():
    q, K, V = RNG.normal(size=3), RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    m = np.array([True, False, True, False])
    a_out = PROG.call("by_fn_m", q, K, V, m)
    np.testing.assert_allclose(a_out, PROG.call("by_fn", q, K[m], V[m]), rtol=1e-13)


def test_score_fn_must_return_float_scores():
    with pytest.raises(dpl.DplError, match="score"):
        PROG.call("use_bad_score", np.ones(2), np.ones((3, 2)))


def test_bad_score_name_is_an_error():
    with pytest.raises(dpl.DplError, match="score"):
        PROG.call("att", np.ones(2), np.ones((3, 2)), "dotty")


# ---- masks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("score", SCORES)
def test_masked_weights_are_exactly_zero_and_rest_renormalised(score):
    q, K, V = RNG.normal(size=4), RNG.normal(size=(6, 4)), RNG.normal(size=(6, 3))
    m = np.array([True, False, True, True, False, True])
    a = PROG.call("att_m", q, K, score, m)
    assert np.all(a[~m] == 0.0)
    np.testing.assert_allclose(a[m], PROG.call("att", q, K[m], score), rtol=1e-13)
    np.testing.assert_allclose(a, ref_weights(ref_scores(q, K, score), m), rtol=1e-13, atol=0)
    np.testing.assert_allclose(PROG.call("out_m", q, K, V, score, m), PROG.call("out", q, K[m], V[m], score),
                               rtol=1e-13)


def test_mask_shapes_and_broadcasting():
    # a block of queries [B, Tq, d] with masks [B, Tq, T], [B, 1, T], [T] and [Tq, T]
    q, K, V = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 5, 4)), RNG.normal(size=(2, 5, 2))
    s = ref_scores(q, K, "dot")
    for mshape in [(2, 3, 5), (2, 1, 5), (5,), (3, 5)]:
        m = RNG.uniform(size=mshape) < 0.6
        m[..., 0] = True
        a = PROG.call("att_m", q, K, "dot", m)
        assert a.shape == (2, 3, 5)
        mb = np.broadcast_to(m, a.shape)
        assert np.all(a[~mb] == 0.0)
        np.testing.assert_allclose(a, ref_weights(s, m), rtol=1e-13)
        np.testing.assert_allclose(PROG.call("out_m", q, K, V, "dot", m), ref_attend(q, K, V, "dot", m),
                                   rtol=1e-12)
    # batched single queries [B, d] with a mask per batch row [B, T]
    q1 = RNG.normal(size=(2, 4))
    m = np.array([[True, True, False, False, True], [False, True, True, True, True]])
    np.testing.assert_allclose(PROG.call("out_m", q1, K, V, "dot", m), ref_attend(q1, K, V, "dot", m),
                               rtol=1e-12)


def test_mask_that_does_not_broadcast_is_an_error():
    with pytest.raises(dpl.DplError, match="mask"):
        PROG.call("att_m", np.ones(2), np.ones((3, 2)), "dot", np.array([True, False]))


def test_non_boolean_mask_is_an_error():
    with pytest.raises(dpl.DplError, match="mask"):
        PROG.call("att_m", np.ones(2), np.ones((3, 2)), "dot", np.array([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("score", SCORES)
def test_fully_masked_rows_give_zero_weights_zero_output_and_finite_gradients(score):
    q, K, V = RNG.normal(size=(3, 4)), RNG.normal(size=(5, 4)), RNG.normal(size=(5, 2))
    m = np.ones((3, 5), bool)
    m[1] = False                       # the middle query sees nothing
    m[2, :3] = False
    a = PROG.call("att_m", q, K, score, m)
    np.testing.assert_array_equal(a[1], np.zeros(5))
    o = PROG.call("out_m", q, K, V, score, m)
    np.testing.assert_array_equal(o[1], np.zeros(2))
    np.testing.assert_allclose(o, ref_attend(q, K, V, score, m), rtol=1e-12)
    u = RNG.normal(size=(3, 2))
    check_grads("l_out_m", [q, K, V, u, score, m], [0, 1, 2])
    g = PROG.grad("l_out_m", 0)(q, K, V, u, score, m)
    np.testing.assert_array_equal(g[1], np.zeros(4))
    # a single query with every key masked
    o1 = PROG.call("out_m", q[0], K, V, score, np.zeros(5, bool))
    assert o1.shape == (2,)
    np.testing.assert_array_equal(o1, np.zeros(2))


def test_masked_gradients_wrt_weights_vanish_on_masked_keys():
    q, K, V = RNG.normal(size=4), RNG.normal(size=(5, 4)), RNG.normal(size=(5, 3))
    m = np.array([True, False, True, False, True])
    u = RNG.normal(size=3)
    gK = PROG.grad("l_out_m", 1)(q, K, V, u, "dot", m)
    gV = PROG.grad("l_out_m", 2)(q, K, V, u, "dot", m)
    np.testing.assert_array_equal(gK[~m], 0.0)
    np.testing.assert_array_equal(gV[~m], 0.0)
    check_grads("l_att_m", [q, K, RNG.normal(size=5), "dot", m], [0, 1])


# ---- numerical stability --------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
def test_large_scores_are_stable(masked):
    q = np.array([1000.0, 0.0])
    K = np.array([[1.0, 0.0], [0.999, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    V = RNG.normal(size=(4, 2))
    m = np.array([True, True, True, not masked])
    a = PROG.call("att_m", q, K, "dot", m)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, ref_weights(q @ K.T, m), rtol=1e-12, atol=1e-300)
    assert a[0] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-12)
    u = np.ones(2)
    for k in range(3):
        assert np.all(np.isfinite(PROG.grad("l_out_m", k)(q, K, V, u, "dot", m)))
    check_grads("l_out_m", [q, K, V, u, "dot", m], [1, 2])
    # -1000 everywhere: all equal scores must still give uniform weights, not 0/0
    a = PROG.call("att", np.array([-1000.0, 0.0]), np.array([[1.0, 0.0], [1.0, 0.0]]), "dot")
    np.testing.assert_allclose(a, [0.5, 0.5], rtol=1e-15)


# ---- errors --------------------------------------------------------------------------------------

def test_shape_errors():
    with pytest.raises(dpl.DplError, match="query size"):
        PROG.call("att", np.ones(3), np.ones((4, 2)), "dot")
    with pytest.raises(dpl.DplError, match="V needs one row per key"):
        PROG.call("out", np.ones(2), np.ones((4, 2)), np.ones((3, 2)), "dot")
    with pytest.raises(dpl.DplError, match="attention needs"):
        PROG.call("att", np.ones(2), np.ones(2), "dot")
