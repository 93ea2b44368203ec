"""odeint (LANGUAGE.md §9): accuracy, convergence order, energy, `ts` grids, module dynamics, gradients, errors."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
from conftest import numeric_grad
from dpl.train import loss_and_grads

RNG = np.random.default_rng(3)

PROG = dpl.loads("""
param a: [] = 0.7
fn growth(t, y) = a * y
fn sol(y0, t0, t1, m, n) = odeint(growth, y0, t0, t1, steps = n, method = m)
fn sol_packed(y0, times) = sum(odeint(growth, y0, times[0], times[1], steps = 1000))   # rk4 by default
fn adaptive(y0, t0, t1, r) = odeint(growth, y0, t0, t1, method = "dopri5", rtol = r, atol = 1e-14)
fn adaptive_loss(y0, t0, t1) = adaptive(y0, t0, t1, 1e-8)

# the rate as an argument: carried in the state with d(rate)/dt = 0
fn growth_aug(t, z) = stack([z[1] * z[0], 0.0 * z[1]])
fn sol_arg(y0, rate, t0, t1, m) = odeint(growth_aug, stack([y0, rate]), t0, t1, steps = 200, method = m)[0]

# explicit time dependence
fn forced(t, y) = -y + sin(3 * t)
fn forced_sol(y0, t0, t1, m, n) = sum(odeint(forced, y0, t0, t1, steps = n, method = m))

fn oscillator(t, y) = stack([y[1], -y[0]])
fn energy(y0, t1, m, n) {
    y = odeint(oscillator, y0, 0.0, t1, steps = n, method = m)
    return sum(y ^ 2) / 2
}

fn grid(y0, t0, ts, m) = odeint(growth, y0, t0, ts[-1], steps = 200, method = m, ts = ts)
fn grid_loss(y0, t0, ts, u, m) = sum(grid(y0, t0, ts, m) * u)

module Dyn(n) {
    param W: [n, n] ~ normal(0.4)
    param b: [n] ~ normal(0.1)
    fn f(t, y) = tanh(y @ W + b) - 0.1 * t * y
}
d = Dyn(3)
fn dyn_loss(y0, t1, u, m) = sum(odeint(d.f, y0, 0.0, t1, steps = 20, method = m) * u)

fn three(t, y) = [1.0, 2.0, 3.0]
fn wrong_shape(y0) = odeint(three, y0, 0.0, 1.0)
fn const_int(t, y) = 1
fn int_state(y0) = odeint(const_int, y0, 0, 2, steps = 3)
fn not_fn(y0) = odeint(3.0, y0, 0.0, 1.0)
fn bad_grid(y0) = odeint(growth, y0, 0.0, 1.0, ts = [[0.5, 1.0]])
""", file="odeint_test.dpl")

A = 0.7
FIXED = ["euler", "midpoint", "rk4"]


def exact(y0, t0, t1, a=A):
    return y0 * np.exp(a * (t1 - t0))


def param_grad(name, args, pname="a"):
    args = [x if isinstance(x, str) else np.asarray(x) for x in args]
    _, grads = loss_and_grads(PROG.interp, PROG.function(name), args, None)
    return grads[pname]


def test_exponential_rk4_value_and_derivatives():
    y0, t0, t1 = np.array([[1.0, -2.0], [0.5, 3.0]]), 0.2, 1.5
    y = PROG.call("sol", y0, t0, t1, "rk4", 1000)
    assert np.shape(y) == np.shape(y0)
    np.testing.assert_allclose(y, exact(y0, t0, t1), rtol=1e-12)
    e = exact(y0, t0, t1).sum()
    times = np.array([t0, t1])
    g_y0 = PROG.grad("sol_packed", 0)(y0, times)
    g_t = PROG.grad("sol_packed", 1)(y0, times)
    np.testing.assert_allclose(g_y0, np.exp(A * (t1 - t0)) * np.ones_like(y0), rtol=1e-6)
    np.testing.assert_allclose(g_t, [-A * e, A * e], rtol=1e-6)
    assert float(param_grad("sol_packed", [y0, times])) == pytest.approx((t1 - t0) * e, rel=1e-6)


@pytest.mark.parametrize("m", ["rk4", "dopri5"])
def test_exponential_rate_as_an_argument(m):
    y0, rate, t0, t1 = 0.8, -1.3, 0.0, 2.0
    tol = 1e-9 if m == "rk4" else 1e-5
    assert float(PROG.call("sol_arg", y0, rate, t0, t1, m)) == pytest.approx(exact(y0, t0, t1, rate), rel=tol)
    g = PROG.grad("sol_arg", 1)(y0, rate, t0, t1, m)
    assert float(g) == pytest.approx((t1 - t0) * exact(y0, t0, t1, rate), rel=max(tol, 1e-6))


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_dopri5_meets_the_requested_tolerance(rtol):
    y0, t0, t1 = np.array([1.3, -0.4]), 0.2, 3.0
    y = PROG.call("adaptive", y0, t0, t1, rtol)
    want = exact(y0, t0, t1)
    assert np.all(np.abs(y - want) <= 10 * rtol * np.abs(want))
    assert np.all(np.abs(y - want) > 0)   # it really is adaptive, not exact


def test_dopri5_derivatives_wrt_y0_t0_t1_and_param():
    y0, t0, t1 = 1.3, 0.2, 1.5
    e = exact(y0, t0, t1)
    g = [float(PROG.grad("adaptive_loss", k)(y0, t0, t1)) for k in range(3)]
    assert g[0] == pytest.approx(e / y0, rel=1e-6)
    assert g[1] == pytest.approx(-A * e, rel=1e-6)
    assert g[2] == pytest.approx(A * e, rel=1e-6)
    assert float(param_grad("adaptive_loss", [y0, t0, t1])) == pytest.approx((t1 - t0) * e, rel=1e-6)


@pytest.mark.parametrize("m", FIXED + ["dopri5"])
def test_time_dependent_right_hand_side_gradients(m):
    args = [np.array([0.4, -1.0]), 0.3, 1.7, m, 50]
    y0, t0, t1 = args[:3]
    # exact solution of y' = -y + sin 3t
    def sol(y0, t0, t1):
        p = lambda t: (np.sin(3 * t) - 3 * np.cos(3 * t)) / 10
        return ((y0 - p(t0)) * np.exp(-(t1 - t0)) + p(t1)).sum()
    tol = {"euler": 1e-1, "midpoint": 1e-3, "rk4": 1e-6, "dopri5": 1e-5}[m]
    assert float(PROG.call("forced_sol", *args)) == pytest.approx(sol(y0, t0, t1), rel=tol)
    for k, want in enumerate([np.exp(-(t1 - t0)) * np.ones(2),
                              numeric_grad(lambda t: sol(y0, t, t1), t0),
                              numeric_grad(lambda t: sol(y0, t0, t), t1)]):
        np.testing.assert_allclose(PROG.grad("forced_sol", k)(*args), want, rtol=tol)
    if m != "dopri5":  # the fixed-step map itself is smooth: match its differences tightly
        for k in range(3):
            fd = numeric_grad(lambda x: PROG.call("forced_sol", *(args[:k] + [x] + args[k + 1:])), args[k])
            np.testing.assert_allclose(PROG.grad("forced_sol", k)(*args), fd, rtol=1e-7)


@pytest.mark.parametrize("m,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_convergence_order(m, order):
    y0, t0, t1 = 1.0, 0.0, 1.0
    errs = [abs(float(PROG.call("sol", y0, t0, t1, m, n)) - exact(y0, t0, t1)) for n in (20, 40, 80)]
    for coarse, fine in zip(errs, errs[1:]):
        assert coarse / fine == pytest.approx(2 ** order, rel=0.1)
    # the same order for the derivative w.r.t. y0
    gerrs = [abs(float(PROG.grad("sol", 0)(y0, t0, t1, m, n)) - np.exp(A)) for n in (20, 40)]
    assert gerrs[0] / gerrs[1] == pytest.approx(2 ** order, rel=0.1)


@pytest.mark.parametrize("m,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_harmonic_oscillator_energy_to_the_methods_order(m, order):
    y0, T = np.array([1.0, 0.0]), 2 * np.pi
    drift = []
    for n in (50, 100):
        h = T / n
        dE = abs(float(PROG.call("energy", y0, T, m, n)) - 0.5)
        assert dE <= 2 * T * h ** order        # |ΔE| = O(h^p) over a fixed time
        drift.append(dE)
    assert drift[0] / drift[1] >= 0.9 * 2 ** order
    # dopri5 keeps it to its tolerance
    E = PROG.call("energy", y0, T, "dopri5", 10)
    assert abs(float(E) - 0.5) < 1e-5


def test_backward_in_time():
    for m in FIXED + ["dopri5"]:
        y = PROG.call("sol", 2.0, 1.0, -0.5, m, 400)
        tol = {"euler": 1e-2, "midpoint": 1e-5, "dopri5": 1e-5}.get(m, 1e-8)
        assert float(y) == pytest.approx(exact(2.0, 1.0, -0.5), rel=tol)


def test_empty_interval_returns_y0():
    for m in FIXED + ["dopri5"]:
        assert float(PROG.call("sol", 2.0, 0.5, 0.5, m, 10)) == 2.0
        # and y(t1) still moves with t1 at rate f(t0, y0)
        assert float(PROG.grad("sol", 2)(2.0, 0.5, 0.5, m, 10)) == pytest.approx(A * 2.0, rel=1e-12)


@pytest.mark.parametrize("m", ["rk4", "dopri5"])
def test_ts_grid_returns_the_stacked_states(m):
    y0, t0 = np.array([1.0, -2.0]), 0.0
    ts = np.array([0.0, 0.25, 1.0, 1.5])
    ys = PROG.call("grid", y0, t0, ts, m)
    assert ys.shape == (4, 2)
    np.testing.assert_array_equal(ys[0], y0)                  # ts[0] = t0: y0 itself
    np.testing.assert_allclose(ys, exact(y0[None, :], t0, ts[:, None]), rtol=1e-7)
    # grid not starting at t0
    ts2 = np.array([0.5, 0.75])
    ys2 = PROG.call("grid", y0, t0, ts2, m)
    np.testing.assert_allclose(ys2, exact(y0[None, :], t0, ts2[:, None]), rtol=1e-7)


@pytest.mark.parametrize("m", ["rk4", "dopri5"])
@pytest.mark.parametrize("ts", [[0.0, 0.25, 1.0], [0.5, 0.75, 1.2]], ids=["from_t0", "after_t0"])
def test_ts_grid_gradients(m, ts):
    y0, t0, ts = np.array([1.0, -2.0]), 0.0, np.array(ts)
    u = RNG.normal(size=(3, 2))
    ys = exact(y0[None, :], t0, ts[:, None])
    g = [PROG.grad("grid_loss", k)(y0, t0, ts, u, m) for k in range(3)]
    np.testing.assert_allclose(g[0], (u * ys / y0).sum(0), rtol=1e-6)
    assert float(g[1]) == pytest.approx(-A * (u * ys).sum(), rel=1e-6)           # moving the start
    np.testing.assert_allclose(g[2], A * (u * ys).sum(1), rtol=1e-6)             # moving each output time


@pytest.mark.parametrize("m", FIXED + ["dopri5"])
def test_module_method_with_params_as_dynamics(m):
    y0, t1, u = RNG.normal(size=(2, 3)), 0.9, RNG.normal(size=(2, 3))
    args = [y0, t1, u, m]
    rtol = 1e-4 if m == "dopri5" else 1e-6   # adaptive steps move with the input: differences are rough
    for k in range(2):
        fd = numeric_grad(lambda x: PROG.call("dyn_loss", *(args[:k] + [x] + args[k + 1:])), args[k])
        np.testing.assert_allclose(PROG.grad("dyn_loss", k)(*args), fd, rtol=rtol, atol=1e-9)
    interp = PROG.interp
    _, grads = loss_and_grads(interp, PROG.function("dyn_loss"), [np.asarray(x) for x in args[:3]] + [m], None)
    for name in ("d.W", "d.b"):
        p0 = interp.params[name].copy()

        def f(x, name=name):
            interp.params[name] = x
            try:
                return PROG.call("dyn_loss", *args)
            finally:
                interp.params[name] = p0

        assert np.any(grads[name] != 0)
        np.testing.assert_allclose(grads[name], numeric_grad(f, p0), rtol=rtol, atol=1e-9)


def test_integer_state_and_times_become_floats():
    y = PROG.call("int_state", 2)
    assert y.dtype == np.float64 and float(y) == pytest.approx(4.0, rel=1e-14)


def test_errors():
    with pytest.raises(dpl.DplError, match="`method` must be one of"):
        PROG.call("sol", 1.0, 0.0, 1.0, "rk5", 10)
    with pytest.raises(dpl.DplError, match="`steps` must be at least 1"):
        PROG.call("sol", 1.0, 0.0, 1.0, "rk4", 0)
    with pytest.raises(dpl.DplError, match="steps.*must be an integer"):
        PROG.call("sol", 1.0, 0.0, 1.0, "rk4", 2.5)
    with pytest.raises(dpl.DplError, match=r"shaped like y \[2\], got shape \[3\]"):
        PROG.call("wrong_shape", np.ones(2))
    with pytest.raises(dpl.DplError, match="integrates a function"):
        PROG.call("not_fn", 1.0)
    with pytest.raises(dpl.DplError, match="`ts` must be a 1-d grid"):
        PROG.call("bad_grid", 1.0)
