"""dpl/dynamics.py beyond plain odeint: events, the adjoint method, per-row end times, `ts` against t1, sdeint."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import dpl
from conftest import numeric_grad
from dpl import record
from dpl.train import loss_and_grads

G = 9.81

EVENTS_SRC = """
fn fly(t, s) = s @ [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]] + [0.0, 0.0, 0.0, -9.81]
fn height(t, s) = s[..., 1]

# landing time and distance of a shot from height h at speed (vx, vy): one state [4] or a batch [B, 4]
fn land(s0, m) = odeint(fly, s0, 0.0, 10.0, steps = 40, method = m, event = height)
fn land_t(s0, m) = land(s0, m)[0]
fn land_x(s0, m) = land(s0, m)[1][..., 0]
fn land_loss(s0, u, w, m) {
    te, ye = land(s0, m)
    return sum(te * u) + sum(ye[..., 0] * w)
}

# with quadratic drag and wind, a parameter in the drag
param k: [] = 0.3
fn drag(t, s) {
    v = s[2:4] - [1.5, 0.0]
    speed = sqrt(sum(v ^ 2))
    return concat([s[2:4], -k * speed * v + [0.0, -9.81]])
}
fn drag_land(s0, t1) {
    te, ye = odeint(drag, s0, 0.0, t1, steps = 60, event = height)
    return te + 2.0 * ye[0] - 0.5 * ye[3]
}

# an event that depends on time too: the ball meets a rising floor
fn floor_hit(t, s) = s[..., 1] - 0.5 * t
fn meet(s0) = odeint(fly, s0, 0.0, 10.0, steps = 40, event = floor_hit)[0]

fn never(s0) = odeint(fly, s0, 0.0, 0.1, steps = 4, event = height)
fn bad_event(s0) = odeint(fly, s0, 0.0, 1.0, event = fn(t, s) = s)
fn event_and_grid(s0) = odeint(fly, s0, 0.0, 1.0, event = height, ts = [0.0, 1.0])
"""
EVENTS = dpl.loads(EVENTS_SRC, file="events.dpl")


def landing(s0):
    """Closed form: (time, distance) of a drag-free shot from (x, h) at (vx, vy)."""
    x, h, vx, vy = s0
    t = (vy + np.sqrt(vy ** 2 + 2 * G * h)) / G
    return t, x + vx * t


@pytest.mark.parametrize("m", ["rk4", "dopri5"])
@pytest.mark.parametrize("s0", [[0.0, 0.0, 3.0, 4.0], [1.0, 2.0, 2.0, -1.0]], ids=["from_ground", "from_height"])
def test_projectile_lands_at_the_closed_form_time(m, s0):
    s0 = np.array(s0)
    t, x = landing(s0)
    te, ye = EVENTS.call("land", s0, m)
    assert np.shape(te) == () and np.shape(ye) == (4,)
    assert float(te) == pytest.approx(t, rel=1e-12)
    np.testing.assert_allclose(ye, [x, 0.0, s0[2], s0[3] - G * t], rtol=1e-12, atol=1e-12)
    # gradients of the landing time and distance w.r.t. the launch state, against the closed form's
    for name, k in (("land_t", 0), ("land_x", 1)):
        got = EVENTS.grad(name, 0)(s0, m)
        want = numeric_grad(lambda v: landing(v)[k], s0)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    # d t/d vy = (1 + vy / √(vy² + 2gh)) / g, exactly
    assert EVENTS.grad("land_t", 0)(s0, m)[3] == pytest.approx(
        (1 + s0[3] / np.sqrt(s0[3] ** 2 + 2 * G * s0[1])) / G, rel=1e-10)


def test_a_batch_stops_each_trajectory_at_its_own_time():
    s0 = np.array([[0.0, 0.0, 3.0, 4.0], [0.0, 1.0, 1.0, 2.0], [2.0, 5.0, -1.0, 0.0]])
    te, ye = EVENTS.call("land", s0, "rk4")
    want = np.array([landing(r) for r in s0])
    assert te.shape == (3,) and ye.shape == (3, 4)
    assert len(set(np.round(want[:, 0], 6))) == 3
    np.testing.assert_allclose(te, want[:, 0], rtol=1e-12)
    np.testing.assert_allclose(ye[:, 0], want[:, 1], rtol=1e-12)
    np.testing.assert_allclose(ye[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(ye[:, 3], s0[:, 3] - G * want[:, 0], rtol=1e-12)   # each stopped where it landed
    u, w = np.array([0.3, -1.2, 0.7]), np.array([1.1, 0.4, -0.6])
    got = EVENTS.grad("land_loss", 0)(s0, u, w, "rk4")
    want_g = np.stack([numeric_grad(lambda v: u[i] * landing(v)[0] + w[i] * landing(v)[1], s0[i])
                       for i in range(3)])
    np.testing.assert_allclose(got, want_g, rtol=1e-7, atol=1e-9)


def test_event_with_drag_and_a_parameter_matches_finite_differences():
    s0, t1 = np.array([0.0, 0.5, 6.0, 5.0]), 5.0
    args = [s0, t1]
    fd = numeric_grad(lambda v: EVENTS.call("drag_land", v, t1), s0)
    np.testing.assert_allclose(EVENTS.grad("drag_land", 0)(*args), fd, rtol=1e-6, atol=1e-9)
    # t1 is the horizon: it moves the landing only through the step size h = (t1 − t0)/steps (a discretisation
    # effect, small), and the gradient is exactly that of the discrete scheme
    g1 = float(EVENTS.grad("drag_land", 1)(*args))
    assert abs(g1) < 1e-3 and g1 == pytest.approx(float(numeric_grad(lambda t: EVENTS.call("drag_land", s0, t), t1)),
                                                  rel=1e-5)
    interp = EVENTS.interp
    _, grads = loss_and_grads(interp, EVENTS.function("drag_land"), [s0, np.asarray(t1)], None)
    k0 = interp.params["k"].copy()

    def at_k(k):
        interp.params["k"] = k
        try:
            return EVENTS.call("drag_land", s0, t1)
        finally:
            interp.params["k"] = k0

    assert float(grads["k"]) == pytest.approx(float(numeric_grad(at_k, k0)), rel=1e-6)


def test_time_dependent_event():
    s0 = np.array([0.0, 1.0, 1.0, 3.0])
    # h + vy t − g t²/2 = t/2
    a, b, c = -G / 2, s0[3] - 0.5, s0[1]
    t = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert float(EVENTS.call("meet", s0)) == pytest.approx(t, rel=1e-12)
    fd = numeric_grad(lambda v: EVENTS.call("meet", v), s0)
    np.testing.assert_allclose(EVENTS.grad("meet", 0)(s0), fd, rtol=1e-7, atol=1e-9)


def test_event_errors_are_positioned():
    with pytest.raises(dpl.DplError, match=r"does not cross zero between t0 and t1") as e:
        EVENTS.call("never", np.array([0.0, 1.0, 0.0, 1.0]))
    line = EVENTS_SRC.splitlines().index(next(x for x in EVENTS_SRC.splitlines() if x.startswith("fn never")))
    assert f"events.dpl:{line + 1}:" in str(e.value)
    with pytest.raises(dpl.DplError, match=r"trajectory 1 \(of 2\)"):
        EVENTS.call("never", np.array([[0.0, 0.001, 0.0, -1.0], [0.0, 5.0, 0.0, 1.0]]))
    with pytest.raises(dpl.DplError, match=r"2 trajectories \(of 3; the first is 0\) do not reach"):
        EVENTS.call("never", np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.001, 0.0, -1.0], [0.0, 5.0, 0.0, 1.0]]))
    with pytest.raises(dpl.DplError, match=r"`event` function must return a number, got shape \[4\]"):
        EVENTS.call("bad_event", np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(dpl.DplError, match="takes neither `ts`"):
        EVENTS.call("event_and_grid", np.array([0.0, 1.0, 0.0, 1.0]))


def test_event_recordings_are_not_replayed():
    """Where an event happens is found from values: replaying the recording at other inputs would reuse a
    stale crossing, so the recording is tainted and every call records afresh (and stays right)."""
    interp, f = EVENTS.interp, EVENTS.function("land_t")
    for vy in (4.0, 5.0, 6.0, 7.0):
        s0 = np.array([0.0, 0.0, 3.0, vy])
        value, (g,), _ = record.gradients(interp, f, [s0, "rk4"], None, wrt_args=(0,))
        assert float(value) == pytest.approx(2 * vy / G, rel=1e-12)
        assert g[3] == pytest.approx(2 / G, rel=1e-10)
    entries = [e for e in interp.plans.values() if e.why and "event" in e.why]
    assert entries and not any(e.plans for e in entries)


# ---- the adjoint method ------------------------------------------------------------------------------------

ADJ = dpl.loads("""
module Dyn(n) {
    param W: [n, n] ~ normal(0.5)
    param b: [n] ~ normal(0.2)
    fn f(t, y) = tanh(y @ W + b) - 0.3 * sin(t) * y
}
d = Dyn(3)
fn loss(y0, t0, t1, u, m, adj) = sum(odeint(d.f, y0, t0, t1, steps = 200, method = m, rtol = 1e-10,
                                            atol = 1e-12, adjoint = adj) * u)
fn grid_loss(y0, ts, u, adj) = sum(odeint(d.f, y0, ts[0], ts[-1], steps = 50, ts = ts, adjoint = adj) * u)
fn second(y0, t1, u, adj) = sum(grad(loss, 1)(y0, 0.0, t1, u, "rk4", adj) ^ 2)

param rate: [] = 0.7
fn growth(t, y) = rate * y
fn growth_loss(y0, t1, n, adj) = sum(odeint(growth, y0, 0.0, t1, steps = n, adjoint = adj) ^ 2)

fn closure(y0, k) = sum(odeint(fn(t, y) = -k * y, y0, 0.0, 1.0, adjoint = true))
fn noisy(t, y) = -y + normal(0.0, 1.0, [])
fn random_f(y0) = sum(odeint(noisy, y0, 0.0, 1.0, adjoint = true))
""", file="adjoint.dpl")

RNG = np.random.default_rng(5)


def adjoint_grads(name, args):
    interp = ADJ.interp
    _, grads = loss_and_grads(interp, ADJ.function(name), args, None)
    return grads


@pytest.mark.parametrize("m", ["rk4", "dopri5"])
def test_adjoint_agrees_with_the_taped_solve(m):
    y0, u = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
    t0, t1 = 0.2, 1.4
    taped = [y0, t0, t1, u, m, False]
    adj = [y0, t0, t1, u, m, True]
    assert float(ADJ.call("loss", *adj)) == pytest.approx(float(ADJ.call("loss", *taped)), rel=1e-10)
    for k in range(3):
        np.testing.assert_allclose(ADJ.grad("loss", k)(*adj), ADJ.grad("loss", k)(*taped), rtol=1e-7, atol=1e-10)
    arrays = lambda a: [np.asarray(x) if not isinstance(x, (str, bool)) else x for x in a]
    g_tape, g_adj = adjoint_grads("loss", arrays(taped)), adjoint_grads("loss", arrays(adj))
    for name in ("d.W", "d.b"):
        assert np.any(g_adj[name] != 0)
        np.testing.assert_allclose(g_adj[name], g_tape[name], rtol=1e-7, atol=1e-10)


def test_adjoint_against_finite_differences():
    y0, u, t0, t1 = RNG.normal(size=3), RNG.normal(size=3), 0.1, 0.9
    args = [y0, t0, t1, u, "dopri5", True]
    for k in range(3):
        fd = numeric_grad(lambda x: ADJ.call("loss", *(args[:k] + [x] + args[k + 1:])), args[k])
        np.testing.assert_allclose(ADJ.grad("loss", k)(*args), fd, rtol=1e-6, atol=1e-9)
    interp = ADJ.interp
    grads = adjoint_grads("loss", [np.asarray(a) if not isinstance(a, (str, bool)) else a for a in args])
    for name in ("d.W", "d.b"):
        p0 = interp.params[name].copy()

        def at(p, name=name):
            interp.params[name] = p
            try:
                return ADJ.call("loss", *args)
            finally:
                interp.params[name] = p0

        np.testing.assert_allclose(grads[name], numeric_grad(at, p0), rtol=1e-6, atol=1e-9)


def test_adjoint_known_values():
    """y' = r y: y(t1) = y0 e^{r t1}; L = Σ y² has ∂L/∂y0 = 2 y0 e^{2rt1}, ∂L/∂t1 = 2r L, ∂L/∂r = 2 t1 L."""
    y0, t1 = np.array([0.5, -1.0]), 1.2
    L = float(np.sum((y0 * np.exp(0.7 * t1)) ** 2))
    args = [y0, t1, 400, True]
    assert float(ADJ.call("growth_loss", *args)) == pytest.approx(L, rel=1e-10)
    np.testing.assert_allclose(ADJ.grad("growth_loss", 0)(*args), 2 * y0 * np.exp(1.4 * t1), rtol=1e-9)
    assert float(ADJ.grad("growth_loss", 1)(*args)) == pytest.approx(1.4 * L, rel=1e-9)
    grads = adjoint_grads("growth_loss", [y0, np.asarray(t1), 400, True])
    assert float(grads["rate"]) == pytest.approx(2 * t1 * L, rel=1e-9)


def test_adjoint_over_a_grid_and_per_row_end_times():
    y0, ts = RNG.normal(size=(2, 3)), np.array([0.0, 0.3, 0.8, 1.1])
    u = RNG.normal(size=(4, 2, 3))
    for k in range(2):
        np.testing.assert_allclose(ADJ.grad("grid_loss", k)(y0, ts, u, True),
                                   ADJ.grad("grid_loss", k)(y0, ts, u, False), rtol=1e-7, atol=1e-10)
    t1 = np.array([[0.7], [1.5]])
    u = RNG.normal(size=(2, 3))
    for k in (0, 2):
        np.testing.assert_allclose(ADJ.grad("loss", k)(y0, 0.0, t1, u, "rk4", True),
                                   ADJ.grad("loss", k)(y0, 0.0, t1, u, "rk4", False), rtol=1e-7, atol=1e-10)


def test_adjoint_second_order():
    y0, u = RNG.normal(size=3), RNG.normal(size=3)
    np.testing.assert_allclose(ADJ.grad("second", 0)(y0, 0.8, u, True), ADJ.grad("second", 0)(y0, 0.8, u, False),
                               rtol=1e-6, atol=1e-10)


def test_adjoint_memory_is_flat_in_the_number_of_steps():
    def peak(n, adj):
        gc.collect()
        tracemalloc.start()
        try:
            adjoint_grads("growth_loss", [np.ones(256), np.asarray(1.0), n, adj])
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    saved, ADJ.interp.replay = ADJ.interp.replay, False  # no recordings kept for plans
    try:
        peak(100, True)
        taped = [peak(n, False) for n in (100, 400)]
        adj = [peak(n, True) for n in (800, 1600)]
    finally:
        ADJ.interp.replay = saved
    assert taped[1] > 3 * taped[0]          # the tape grows with the steps
    assert adj[1] < 1.3 * adj[0]            # the adjoint does not (what grows up to 800 steps is garbage that
                                            # the collector's thresholds bound)
    assert adj[1] < taped[1] / 4


def test_adjoint_errors():
    with pytest.raises(dpl.DplError, match="neither t, y nor a parameter"):
        ADJ.grad("closure", 1)(np.ones(2), 0.5)
    with pytest.raises(dpl.DplError, match="draws random numbers"):
        ADJ.call("random_f", np.ones(2))


def test_adjoint_recordings_are_not_replayed():
    interp, f = ADJ.interp, ADJ.function("growth_loss")
    for t1 in (1.0, 1.1, 1.2, 1.3):
        value, (g,), _ = record.gradients(interp, f, [np.array([1.0]), np.asarray(t1), 50, True], None,
                                          wrt_args=(1,))
        assert float(g) == pytest.approx(1.4 * np.exp(1.4 * t1), rel=1e-8)
    entries = [e for e in interp.plans.values() if e.why and "adjoint" in e.why]
    assert entries and not any(e.plans for e in entries)


# ---- per-row end times, ts against t1 ------------------------------------------------------------------------

ROWS = dpl.loads("""
fn growth(t, y) = 0.7 * y
fn sol(y0, t0, t1, m) = odeint(growth, y0, t0, t1, steps = 400, method = m, rtol = 1e-10, atol = 1e-12)
fn sol_loss(y0, t0, t1, u, m) = sum(sol(y0, t0, t1, m) * u)
fn forced(t, y) = -y + sin(3 * t)
fn forced_loss(y0, t1, u) = sum(odeint(forced, y0, 0.0, t1, steps = 100) * u)
fn on_grid(y0, t1) = odeint(growth, y0, 0.0, t1, ts = [0.0, 0.5, 1.0])
""", file="rows.dpl")


@pytest.mark.parametrize("m", ["euler", "rk4", "dopri5"])
def test_per_row_end_times(m):
    y0, t0 = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]]), 0.1
    t1 = np.array([[0.5], [1.5], [0.1]])     # the last row's interval is empty
    u = RNG.normal(size=(3, 2))
    exact = y0 * np.exp(0.7 * (t1 - t0))
    tol = 1e-2 if m == "euler" else 1e-9
    np.testing.assert_allclose(ROWS.call("sol", y0, t0, t1, m), exact, rtol=tol)
    g1 = ROWS.grad("sol_loss", 2)(y0, t0, t1, u, m)
    assert g1.shape == (3, 1)
    np.testing.assert_allclose(g1, (0.7 * exact * u).sum(1, keepdims=True), rtol=max(tol, 1e-7))
    # per-row start times too, and a time-dependent right-hand side against finite differences
    t0r = np.array([[0.0], [0.2], [-0.3]])
    np.testing.assert_allclose(ROWS.call("sol", y0, t0r, t1, m), y0 * np.exp(0.7 * (t1 - t0r)), rtol=tol)
    fd = numeric_grad(lambda t: ROWS.call("forced_loss", y0, t, u), t1)
    np.testing.assert_allclose(ROWS.grad("forced_loss", 1)(y0, t1, u), fd, rtol=1e-7, atol=1e-10)


def test_time_shapes_are_checked():
    with pytest.raises(dpl.DplError, match=r"`t1` must be a number or one per trajectory shaped \[3, 1\], "
                                           r"got shape \[3\]"):
        ROWS.call("sol", np.ones((3, 2)), 0.0, np.ones(3), "rk4")
    with pytest.raises(dpl.DplError, match=r"`t0` must be a number, got shape \[2\]"):
        ROWS.call("sol", np.ones(2), np.ones(2), 1.0, "rk4")


def test_ts_with_a_disagreeing_t1_is_an_error():
    np.testing.assert_allclose(ROWS.call("on_grid", np.ones(2), 1.0)[-1], np.exp(0.7) * np.ones(2), rtol=1e-9)
    with pytest.raises(dpl.DplError, match=r"t1 = 2 disagrees with the last time of `ts` \(1\)") as e:
        ROWS.call("on_grid", np.ones(2), 2.0)
    assert "rows.dpl:7:" in str(e.value)


# ---- sdeint -------------------------------------------------------------------------------------------------

SDE = dpl.loads("""
fn ou_drift(t, y) = 1.5 * (0.5 - y)
fn ou_noise(t, y) = 0.8 + 0.0 * y
fn ou(y0, n, m) = sdeint(ou_drift, ou_noise, y0, 0.0, 1.0, n, method = m)

fn gbm_drift(t, y) = 0.5 * y
fn gbm_noise(t, y) = 0.8 * y
fn gbm(y0, dW, n, m) = sdeint(gbm_drift, gbm_noise, y0, 0.0, 1.0, n, method = m, dW = dW)

param a: [] = 0.9
param c: [2] = [0.4, 0.7]
fn drift(t, y) = a * sin(y) - 0.2 * t * y
fn noise(t, y) = c * y / (1 + y ^ 2) + 0.1
fn nonlin(y0, dW, m) = sum(sdeint(drift, noise, y0, 0.0, 0.8, 10, method = m, dW = dW) ^ 2)
fn wrong_dW(y0) = sdeint(drift, noise, y0, 0.0, 1.0, 5, dW = zeros([4, 2]))
""", file="sde.dpl")


@pytest.mark.parametrize("m", ["euler_maruyama", "milstein"])
def test_ornstein_uhlenbeck_mean_and_variance(m):
    n_paths, y0, theta, mu, sigma = 20000, 2.0, 1.5, 0.5, 0.8
    y = SDE.call("ou", np.full(n_paths, y0), 200, m)
    mean = mu + (y0 - mu) * np.exp(-theta)
    var = sigma ** 2 / (2 * theta) * (1 - np.exp(-2 * theta))
    se_mean, se_var = np.sqrt(var / n_paths), var * np.sqrt(2 / n_paths)
    assert abs(y.mean() - mean) < 4 * se_mean + 0.005      # Euler's O(h) bias is about 0.002 at h = 1/200
    assert abs(y.var() - var) < 4 * se_var + 0.005


def test_strong_order_on_geometric_brownian_motion():
    rng = np.random.default_rng(11)
    paths, fine = 2000, 1024
    dw_fine = rng.normal(0.0, np.sqrt(1.0 / fine), (fine, paths))
    exact = np.exp((0.5 - 0.8 ** 2 / 2) + 0.8 * dw_fine.sum(0))
    levels = [16, 32, 64, 128]
    errs = {m: [] for m in ("euler_maruyama", "milstein")}
    for n in levels:
        dW = dw_fine.reshape(n, fine // n, paths).sum(1)
        for m in errs:
            errs[m].append(np.mean(np.abs(SDE.call("gbm", np.ones(paths), dW, n, m) - exact)))
    slope = {m: -np.polyfit(np.log(levels), np.log(e), 1)[0] for m, e in errs.items()}
    assert 0.35 < slope["euler_maruyama"] < 0.7
    assert 0.85 < slope["milstein"] < 1.2
    assert all(mi < em for mi, em in zip(errs["milstein"], errs["euler_maruyama"]))


@pytest.mark.parametrize("m", ["euler_maruyama", "milstein"])
def test_sdeint_gradients_with_given_increments(m):
    y0, dW = np.array([0.3, -1.1]), RNG.normal(0.0, 0.3, (10, 2))
    fd = numeric_grad(lambda v: SDE.call("nonlin", v, dW, m), y0)
    np.testing.assert_allclose(SDE.grad("nonlin", 0)(y0, dW, m), fd, rtol=1e-7, atol=1e-10)
    fd = numeric_grad(lambda w: SDE.call("nonlin", y0, w, m), dW)
    np.testing.assert_allclose(SDE.grad("nonlin", 1)(y0, dW, m), fd, rtol=1e-7, atol=1e-10)
    interp = SDE.interp
    _, grads = loss_and_grads(interp, SDE.function("nonlin"), [y0, dW, m], None)
    for name in ("a", "c"):
        p0 = interp.params[name].copy()

        def at(p, name=name):
            interp.params[name] = p
            try:
                return SDE.call("nonlin", y0, dW, m)
            finally:
                interp.params[name] = p0

        np.testing.assert_allclose(grads[name], numeric_grad(at, p0), rtol=1e-7, atol=1e-10)


def test_sdeint_replay_and_randomness():
    interp, f = SDE.interp, SDE.function("nonlin")
    dW = RNG.normal(0.0, 0.3, (10, 2))
    for x in (0.1, 0.2, 0.3, 0.4):
        y0 = np.array([x, -x])
        got = record.gradients(interp, f, [y0, dW, "milstein"], None, wrt_args=(0,))
        fd = numeric_grad(lambda v: SDE.call("nonlin", v, dW, "milstein"), y0)
        np.testing.assert_allclose(got[1][0], fd, rtol=1e-7, atol=1e-10)
    assert any(e.plans for e in interp.plans.values())        # given increments: replayed
    a = SDE.call("ou", np.zeros(3), 10, "euler_maruyama")
    b = SDE.call("ou", np.zeros(3), 10, "euler_maruyama")
    assert not np.array_equal(a, b)                            # fresh draws from the run's generator


def test_sdeint_errors():
    with pytest.raises(dpl.DplError, match=r"`dW` must hold one Brownian increment per step and state, shaped "
                                           r"\[5, 2\], got shape \[4, 2\]"):
        SDE.call("wrong_dW", np.ones(2))
    with pytest.raises(dpl.DplError, match="`method` must be \"euler_maruyama\" or \"milstein\""):
        SDE.call("ou", np.ones(2), 5, "heun")


def test_float32_stays_float32():
    prog = dpl.loads("""
fn fly(t, s) = s @ [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]] + [0.0, 0.0, 0.0, -9.81]
fn land(s0) = odeint(fly, s0, 0.0, 10.0, steps = 40, event = fn(t, s) = s[..., 1])
fn land_t(s0) = land(s0)[0]
fn decay(t, y) = -0.5 * y
fn adj(y0) = sum(odeint(decay, y0, 0.0, 1.0, steps = 20, adjoint = true))
fn noise(t, y) = 0.3 * y
fn sde(y0, m) = sum(sdeint(decay, noise, y0, 0.0, 1.0, 20, method = m))
fn rows(y0, t1) = sum(odeint(decay, y0, 0.0, t1, method = "dopri5"))
""", dtype="float32")
    s0 = np.array([[0, 0, 3, 4], [0, 1, 1, 2]], np.float32)
    t, y = prog.call("land", s0)
    assert t.dtype == y.dtype == np.float32
    np.testing.assert_allclose(t, [2 * 4 / G, landing([0, 1, 1, 2])[0]], rtol=1e-5)
    one = np.ones(3, np.float32)
    outs = [prog.grad("land_t", 0)(s0[0]), prog.call("adj", one), prog.grad("adj", 0)(one),
            prog.grad("rows", 1)(np.ones((2, 3), np.float32), np.array([[0.5], [1.0]], np.float32))]
    outs += [f(one, m) for m in ("euler_maruyama", "milstein") for f in (lambda *a: prog.call("sde", *a),
                                                                        prog.grad("sde", 0))]
    assert all(np.asarray(o).dtype == np.float32 for o in outs)
