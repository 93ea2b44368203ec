"""Soft control flow (LANGUAGE.md §6): `soft if` / `blend` and `soft while`, values and gradients."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
from conftest import check_grads, numeric_grad

RNG = np.random.default_rng(0)



# ---- soft if ------------------------------------------------------------------------------------

SOFT_IF = dpl.loads("""
fn branches(p, x) {
    y = x
    z = 2 * x
    w = x + 10
    soft if p {
        y = sin(x)
        z = y * 3          # sees the branch's own y
        v = 1.0            # new in both branches: fine
    } else {
        y = cos(x)
        v = 2.0
    }
    return y, z, w, v
}
fn hard(p, x) {
    y = x
    z = 2 * x
    w = x + 10
    if p > 0.5 {
        y = sin(x)
        z = y * 3
        v = 1.0
    } else {
        y = cos(x)
        v = 2.0
    }
    return y, z, w, v
}
fn only_else(p, x) {
    y = x
    soft if p { } else { y = x ^ 2 }
    return y
}
fn no_else(p, x) {
    y = x
    soft if p { y = exp(x) }
    return y
}
fn loss(p, x) {
    y, z, w, v = branches(p, x)
    return sum(y * z + v)
}
fn nothing(p, x) {
    k = 3
    soft if p { t = k } else { t = k }
    return k
}
fn ints(p) {
    k = 1
    j = 5
    soft if p { k = 3 } else { j = 7 }
    return k, j
}
fn new_one_branch(p) {
    soft if p { y = 1.0 }
    return y
}
fn new_else_branch(p) {
    soft if p { } else { y = 1.0 }
    return y
}
fn vec(p, x) {
    y = x
    soft if p { y = 2 * x } else { y = -x }
    return y
}
fn vec_loss(p, x, u) = sum(vec(p, x) * u)
fn nested_fn(p, q, x) {
    y = x
    soft if p { y = inner(q, x) } else { y = x * 3 }
    return y
}
fn inner(q, x) {
    a = x
    soft if q { a = sin(x) } else { a = cos(x) }
    return a
}
fn in_loop(p, x) {
    h = x
    for i in range(3) {
        soft if p { h = h * 2 + i } else { h = h - 1 }
    }
    return h
}
fn in_soft_while(c, p, x) {
    h = x
    soft while c max 3 {
        soft if p { h = h * 1.5 } else { h = h + 1 }
    }
    return h
}
fn blend_fn(p, a, b) = sum(blend(p, a, b))
""", file="soft_if.dpl")


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_soft_if_at_zero_and_one_is_the_hard_branch(p):
    for x in [0.3, -1.7]:
        soft = SOFT_IF.call("branches", p, x)
        hard = SOFT_IF.call("hard", p, x)
        for s, h in zip(soft, hard):
            assert float(s) == float(h)


def test_soft_if_blend_rule_for_both_one_and_neither_branch():
    p, x = 0.3, 0.8
    y, z, w, v = SOFT_IF.call("branches", p, x)
    np.testing.assert_allclose(y, p * np.sin(x) + (1 - p) * np.cos(x), rtol=1e-14)   # both
    np.testing.assert_allclose(z, p * 3 * np.sin(x) + (1 - p) * 2 * x, rtol=1e-14)   # then-branch only
    np.testing.assert_allclose(v, p * 1.0 + (1 - p) * 2.0, rtol=1e-14)               # new in both
    assert float(w) == x + 10                                                         # neither
    np.testing.assert_allclose(SOFT_IF.call("only_else", p, x), p * x + (1 - p) * x ** 2, rtol=1e-14)
    np.testing.assert_allclose(SOFT_IF.call("no_else", p, x), p * np.exp(x) + (1 - p) * x, rtol=1e-14)


def test_soft_if_variable_in_neither_branch_is_unchanged():
    k = SOFT_IF.call("nothing", 0.25, 1.0)
    assert k.dtype.kind == "i" and int(k) == 3


def test_soft_if_blended_ints_become_floats():
    k, j = SOFT_IF.call("ints", 0.25)
    assert k.dtype == np.float64 and j.dtype == np.float64
    assert float(k) == 0.25 * 3 + 0.75 * 1
    assert float(j) == 0.25 * 5 + 0.75 * 7
    prog32 = dpl.loads("fn ints(p) {\n k = 1\n soft if p { k = 2 }\n return k\n}", dtype="float32")
    k32 = prog32.call("ints", 0.5)
    assert k32.dtype == np.float32 and float(k32) == 1.5


@pytest.mark.parametrize("fn", ["new_one_branch", "new_else_branch"])
def test_soft_if_new_in_one_branch_only_is_an_error(fn):
    with pytest.raises(dpl.DplError, match="only one branch") as e:
        SOFT_IF.call(fn, 0.5)
    assert e.value.span.file == "soft_if.dpl" and "soft if p" in str(e.value)   # points at the statement


def test_soft_if_return_inside_is_an_error():
    with pytest.raises(dpl.DplError, match="return") as e:   # found when parsed or when run
        dpl.loads("fn returns(p) {\n    soft if p { return 1.0 }\n    return 0.0\n}").call("returns", 0.5)
    assert e.value.span.line == 2


def test_soft_if_p_broadcasts_against_a_vector_variable():
    x = np.array([1.0, -2.0, 3.0])
    # scalar p, vector variable
    np.testing.assert_allclose(SOFT_IF.call("vec", 0.25, x), 0.25 * 2 * x + 0.75 * -x, rtol=1e-14)
    # vector p, one per element
    p = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(SOFT_IF.call("vec", p, x), p * 2 * x + (1 - p) * -x, rtol=1e-14)
    # p [2, 1] against x [3] gives [2, 3]
    p2 = np.array([[0.2], [0.9]])
    out = SOFT_IF.call("vec", p2, x)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, p2 * 2 * x + (1 - p2) * -x, rtol=1e-14)
    # vector p against a scalar variable: the variable becomes a vector
    out = SOFT_IF.call("vec", p, 2.0)
    np.testing.assert_allclose(out, p * 4.0 + (1 - p) * -2.0, rtol=1e-14)


def test_soft_if_nested_in_functions_loops_and_soft_while():
    p, q, x = 0.3, 0.6, 0.7
    np.testing.assert_allclose(SOFT_IF.call("nested_fn", p, q, x),
                               p * (q * np.sin(x) + (1 - q) * np.cos(x)) + (1 - p) * 3 * x, rtol=1e-14)
    h = x
    for i in range(3):
        h = p * (2 * h + i) + (1 - p) * (h - 1)
    np.testing.assert_allclose(SOFT_IF.call("in_loop", p, x), h, rtol=1e-14)
    c = 0.8
    s = [x]
    for _ in range(3):
        s.append(p * 1.5 * s[-1] + (1 - p) * (s[-1] + 1))
    w = [1 - c, c * (1 - c), c * c * (1 - c), c ** 3]
    np.testing.assert_allclose(SOFT_IF.call("in_soft_while", c, p, x), np.dot(w, s), rtol=1e-14)


def test_soft_if_around_a_soft_while_with_body_locals():
    prog = dpl.loads("""
fn f(p, x) {
    h = x
    soft if p {
        soft while 0.5 max 2 {
            t = h * 2          # local to the loop body: not a variable of the branch
            h = t + 1
        }
    } else { h = h - 1 }
    return h
}
""", file="soft_nested.dpl")
    p, x = 0.3, 1.0
    loop = 0.5 * x + 0.25 * (2 * x + 1) + 0.25 * (2 * (2 * x + 1) + 1)
    np.testing.assert_allclose(prog.call("f", p, x), p * loop + (1 - p) * (x - 1), rtol=1e-14)


def test_soft_if_gradients_wrt_p_and_branch_values():
    check_grads(SOFT_IF, "loss", [0.35, 0.9], [0, 1])
    check_grads(SOFT_IF, "loss", [np.array([0.2, 0.7]), np.array([0.9, -0.4])], [0, 1])
    u = RNG.normal(size=(2, 3))
    check_grads(SOFT_IF, "vec_loss", [RNG.uniform(size=(2, 1)), RNG.normal(size=3), u], [0, 1])
    check_grads(SOFT_IF, "nested_fn", [0.3, 0.6, 0.7], [0, 1, 2])
    check_grads(SOFT_IF, "in_loop", [0.4, 0.7], [0, 1])
    check_grads(SOFT_IF, "in_soft_while", [0.8, 0.3, 0.7], [0, 1, 2])


def test_soft_if_gradient_wrt_p_is_the_branch_difference():
    x = 0.9
    g = SOFT_IF.grad("no_else", 0)(0.4, x)
    assert float(g) == pytest.approx(np.exp(x) - x, rel=1e-14)


def test_blend_builtin_values_broadcasting_and_gradients():
    p, a, b = np.array([0.1, 0.6]), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array(-1.0)
    got = dpl.loads("fn f(p, a, b) = blend(p, a, b)").call("f", p, a, b)
    np.testing.assert_allclose(got, p * a + (1 - p) * b, rtol=1e-14)
    assert dpl.loads("fn f() = blend(0.5, 1, 3)").call("f").dtype == np.float64
    check_grads(SOFT_IF, "blend_fn", [p, a, np.array([0.5, -2.0])], [0, 1, 2])


# ---- soft while ---------------------------------------------------------------------------------

SOFT_WHILE = dpl.loads("""
# e is a one-hot "which iteration" vector, so its expectation is the weight vector
fn weights(cs) {
    n = len(cs)
    e = one_hot(0, n + 1)
    i = 0
    soft while cs[i] max n as steps {
        e = concat([zeros([1]), e[0:n]])
        i = i + 1
    }
    return e, steps, i
}
fn steps_of(cs) {
    e, s, i = weights(cs)
    return s
}
fn counter(cs) {
    k = 0.0
    soft while cs[int(k)] max len(cs) as steps { k = k + 1 }
    return k, steps
}
fn hard(x, n) {
    h = x
    v = [1.0, 2.0]
    for i in range(n) {
        h = sin(h) + 2 * h
        v = v * h
    }
    return h, v
}
fn soft_all_one(x) {
    h = x
    v = [1.0, 2.0]
    soft while 1.0 max 4 {
        h = sin(h) + 2 * h
        v = v * h
    }
    return h, v
}
fn overflow(x) {
    h = x
    soft while 0.0 max 3 { h = exp(h * 1000) }
    return h
}
fn overflow_sig(a, x) {
    h = x
    soft while sigmoid(a) max 2 { h = exp(h * 1000) }
    return h
}
fn model(a, b, x) {
    h = x
    soft while sigmoid(a * h + 1) max 4 as steps { h = h * b + sin(h) }
    return h, steps
}
fn model_h(a, b, x) {
    h, steps = model(a, b, x)
    return sum(h)
}
fn model_steps(a, b, x) {
    h, steps = model(a, b, x)
    return sum(steps)
}
fn with_c(c, x) {
    h = x
    soft while c max 3 { h = h * 2 + 1 }
    return h
}
fn local_to_body(x) {
    h = x
    soft while 0.5 max 2 { t = h + 1
                           h = t * 2 }
    return t
}
fn max_float(x) {
    h = x
    soft while 0.5 max 2.0 { h = h + 1 }
    return h
}
fn max_zero(x) {
    h = x
    soft while 0.5 max 0 { h = h + 1 }
    return h
}
fn max_neg(x) {
    h = x
    soft while 0.5 max -3 { h = h + 1 }
    return h
}
fn max_vec(x) {
    h = x
    soft while 0.5 max [2, 3] { h = h + 1 }
    return h
}
fn max_one(x) {
    h = x
    soft while 0.25 max 1 as steps { h = h + 1 }
    return h, steps
}
""", file="soft_while.dpl")


def reference_weights(c):
    """§6: w0 = 1 − c1, wk = c1⋯ck (1 − c_{k+1}), wN = c1⋯cN."""
    n = len(c)
    w = np.empty(n + 1)
    for k in range(n + 1):
        run = np.prod(c[:k])
        w[k] = run * (1 - c[k]) if k < n else run
    return w


@pytest.mark.parametrize("cs", [[0.3, 0.9, 0.5, 0.2], [0.0, 0.5, 0.5], [1.0, 1.0, 0.4, 0.7, 1.0], [0.5]])
def test_soft_while_weights_match_the_formula(cs):
    cs = np.array(cs)
    w, steps, i = SOFT_WHILE.call("weights", cs)
    want = reference_weights(cs)
    np.testing.assert_allclose(w, want, rtol=1e-14, atol=1e-16)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert float(steps) == pytest.approx(np.dot(np.arange(len(cs) + 1), want), rel=1e-14)
    assert float(i) == pytest.approx(float(steps), rel=1e-14)   # the int counter, blended to a float
    k, steps2 = SOFT_WHILE.call("counter", np.append(cs, 0.0))
    assert float(steps2) == pytest.approx(float(k), rel=1e-14)


def test_soft_while_steps_gradient():
    cs = np.array([0.3, 0.9, 0.5, 0.2])

    def steps(c):
        return float(SOFT_WHILE.call("weights", c)[1])

    np.testing.assert_allclose(SOFT_WHILE.grad("steps_of")(cs), numeric_grad(steps, cs), rtol=1e-7, atol=1e-9)


def test_soft_while_all_ones_is_the_hard_loop():
    for x in [0.3, -1.1]:
        h_soft, v_soft = SOFT_WHILE.call("soft_all_one", x)
        h_hard, v_hard = SOFT_WHILE.call("hard", x, 4)
        assert float(h_soft) == float(h_hard)
        np.testing.assert_array_equal(v_soft, v_hard)
        assert h_soft.shape == () and v_soft.shape == (2,)


def test_soft_while_max_one():
    h, steps = SOFT_WHILE.call("max_one", 2.0)
    assert float(h) == pytest.approx(0.75 * 2.0 + 0.25 * 3.0, rel=1e-15)
    assert float(steps) == pytest.approx(0.25, rel=1e-15)


def test_soft_while_unused_overflow_gives_the_initial_state():
    for x in [1.0, 2.0, -0.5]:
        h = SOFT_WHILE.call("overflow", x)
        assert np.isfinite(h) and float(h) == x
        g = SOFT_WHILE.grad("overflow")(x)
        assert np.isfinite(g) and float(g) == 1.0
    # c1 = sigmoid(-1000) is exactly 0 in float64
    h = SOFT_WHILE.call("overflow_sig", -1000.0, 1.0)
    assert float(h) == 1.0
    assert float(SOFT_WHILE.grad("overflow_sig", 1)(-1000.0, 1.0)) == 1.0
    # elementwise: an exact-zero probability masks only its own entry
    out = SOFT_WHILE.call("overflow_sig", np.array([-1000.0, 0.0]), np.array([1.0, -1.0]))
    assert out[0] == 1.0
    assert out[1] == pytest.approx(0.5 * -1.0 + 0.25 * np.exp(-1000.0) + 0.25 * 1.0, rel=1e-15)


def test_soft_while_gradients_wrt_p_params_and_body_params():
    check_grads(SOFT_WHILE, "model_h", [0.7, 0.9, 0.4], [0, 1, 2])
    check_grads(SOFT_WHILE, "model_steps", [0.7, 0.9, 0.4], [0, 1, 2])
    # a batch of states, each with its own stopping probability
    args = [np.array([0.7, -0.3, 1.2]), np.array([0.9, 1.1, 0.5]), np.array([0.4, -0.8, 0.1])]
    check_grads(SOFT_WHILE, "model_h", args, [0, 1, 2])
    check_grads(SOFT_WHILE, "model_steps", args, [0, 1, 2])


def test_soft_while_gradient_wrt_a_constant_probability():
    c, x = 0.6, 0.5
    check_grads(SOFT_WHILE, "with_c", [c, x], [0, 1])
    s = [x, 2 * x + 1, 4 * x + 3, 8 * x + 7]
    dw = [-1, 1 - 2 * c, 2 * c - 3 * c ** 2, 3 * c ** 2]
    assert float(SOFT_WHILE.grad("with_c", 0)(c, x)) == pytest.approx(np.dot(dw, s), rel=1e-12)


def test_soft_while_gradient_wrt_probability_at_exactly_zero():
    x = 0.5
    g = float(SOFT_WHILE.grad("with_c", 0)(0.0, x))
    # s = (1-c) s0 + c(1-c) s1 + ..., so ds/dc at 0 = s1 - s0 (one-sided differences agree)
    assert g == pytest.approx((2 * x + 1) - x, rel=1e-9)


def test_soft_while_variables_first_assigned_in_body_are_local():
    with pytest.raises(dpl.DplError, match="unknown name `t`"):
        SOFT_WHILE.call("local_to_body", 1.0)


def test_soft_while_return_inside_is_an_error():
    with pytest.raises(dpl.DplError, match="return") as e:
        dpl.loads("fn f(h) {\n    soft while 0.5 max 2 { return h }\n    return h\n}").call("f", 1.0)
    assert e.value.span.line == 2


@pytest.mark.parametrize("fn", ["max_float", "max_zero", "max_neg", "max_vec"])
def test_soft_while_max_must_be_an_integer_at_least_one(fn):
    with pytest.raises(dpl.DplError, match="integer ≥ 1"):
        SOFT_WHILE.call(fn, 1.0)
