"""stdlib/physics.dpl: closed forms (drag-free flight, the pendulum's period), conserved energies, and gradients of
landing distances w.r.t. launch parameters against finite differences."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import dpl
from conftest import numeric_grad

G = 9.81

PROG = dpl.loads("""
use physics
free = Projectile(0.0, 0.0)
windy = Projectile(0.02, 3.0)
fn free_land(speed, angle, h) = free.land(shot(speed, angle, h), 30.0)
fn free_distance(speed, angle, h) = free.distance(shot(speed, angle, h), 30.0)
fn windy_distance(speed, angle, h) = windy.distance(shot(speed, angle, h), 30.0)
fn flight(speed, angle, k, wind) = projectile_land(k, wind, shot(speed, angle, 1.0), 30.0)[1][..., 0]

pend = Pendulum(1.5, 0.0)
damped = Pendulum(1.5, 0.3)
fn swing_energy(y0, n) = pend.energy(odeint(pend, y0, 0.0, 10.0, steps = n, ts = linspace(0.0, 10.0, 11)))
fn damped_energy(y0) = damped.energy(odeint(damped, y0, 0.0, 10.0, steps = 50, ts = linspace(0.0, 10.0, 11)))
fn quarter(angle) = pend.quarter_period(angle)

tb = Trebuchet(100.0, 1.0, 3.0, 0.6, 2.0)
fn released(phi0, release) = tb.swing(phi0, release)
fn arm_energy(y) = tb.energy(y)
fn throw(phi0, release, k, wind) = tb.throw(phi0, release, k, wind)
""", file="physics_test.dpl")


def closed_form(speed, angle, h):
    vx, vh = speed * np.cos(angle), speed * np.sin(angle)
    t = (vh + np.sqrt(vh ** 2 + 2 * G * h)) / G
    return t, vx * t


def test_drag_free_flight_is_the_closed_form():
    speed, angle, h = np.array([30.0, 12.0, 5.0]), np.array([0.6, 1.1, 0.2]), np.array([1.0, 0.0, 4.0])
    t, s = PROG.call("free_land", speed, angle, h)
    want_t, want_x = closed_form(speed, angle, h)
    np.testing.assert_allclose(t, want_t, rtol=1e-12)
    np.testing.assert_allclose(s[:, 0], want_x, rtol=1e-12)
    np.testing.assert_allclose(s[:, 1], 0.0, atol=1e-10)
    for k in range(3):  # the landing distance's gradient w.r.t. speed, angle and height: the closed form's
        got = PROG.grad("free_distance", k)(speed[0], angle[0], h[0])
        args = [speed[0], angle[0], h[0]]
        want = numeric_grad(lambda x: closed_form(*(args[:k] + [x] + args[k + 1:]))[1], args[k])
        assert float(got) == pytest.approx(float(want), rel=1e-7)
    # at 45° from the ground the range is v²/g, and it is stationary in the angle
    assert float(PROG.call("free_distance", 20.0, np.pi / 4, 0.0)) == pytest.approx(400 / G, rel=1e-12)
    assert abs(float(PROG.grad("free_distance", 1)(20.0, np.pi / 4, 0.0))) < 1e-9


def test_drag_and_wind_gradients_match_finite_differences():
    args = [25.0, 0.7, 0.03, -4.0]
    for k in range(4):
        fd = numeric_grad(lambda x: PROG.call("flight", *(args[:k] + [x] + args[k + 1:])), args[k])
        assert float(PROG.grad("flight", k)(*args)) == pytest.approx(float(fd), rel=1e-6)
    still = float(PROG.call("flight", 25.0, 0.7, 0.0, 0.0))
    assert float(PROG.call("flight", 25.0, 0.7, 0.03, 0.0)) < still              # drag shortens the shot
    assert float(PROG.call("flight", 25.0, 0.7, 0.03, 5.0)) > float(PROG.call("flight", 25.0, 0.7, 0.03, 0.0))
    assert PROG.grad("flight", 3)(*args) > 0                                        # more tailwind, further
    # a batch of shots lands each where it would alone
    speeds, angles = np.array([25.0, 15.0]), np.array([0.7, 0.3])
    batch = PROG.call("windy_distance", speeds, angles, np.ones(2))
    np.testing.assert_allclose(batch, [PROG.call("windy_distance", v, a, 1.0) for v, a in zip(speeds, angles)],
                               rtol=1e-8)   # one step size serves the batch: equal to the tolerance


def test_pendulum_energy_is_conserved_to_the_methods_order():
    y0 = np.array([[2.0, 0.0], [0.3, -1.0]])
    errs = []
    for n in (50, 100):
        E = PROG.call("swing_energy", y0, n)
        errs.append(np.abs(E - E[0]).max() / np.abs(E[0]).max())
    assert errs[1] < 1e-6 and errs[0] / errs[1] > 0.9 * 2 ** 4    # RK4's h⁴ over a fixed time
    E = PROG.call("damped_energy", y0)
    assert np.all(np.diff(E, axis=0) < 0)                             # damping only takes energy out


def test_pendulum_quarter_period_is_the_elliptic_closed_form():
    angles = np.array([0.1, 1.0, 2.5])
    exact = np.sqrt(1.5 / G) * scipy.special.ellipk(np.sin(angles / 2) ** 2)    # T/4 = √(L/g) K(sin²(θ₀/2))
    np.testing.assert_allclose(PROG.call("quarter", angles), exact, rtol=1e-9)
    fd = numeric_grad(lambda a: np.sqrt(1.5 / G) * scipy.special.ellipk(np.sin(a / 2) ** 2), 1.0)
    assert float(PROG.grad("quarter", 0)(1.0)) == pytest.approx(float(fd), rel=1e-6)


def test_trebuchet_swing_conserves_energy_and_releases_at_the_angle():
    t, y = PROG.call("released", -0.8, np.array([0.5, 0.9, 1.2]))
    np.testing.assert_allclose(y[:, 0], [0.5, 0.9, 1.2], atol=1e-12)
    assert np.all(np.diff(t) > 0) and np.all(y[:, 1] > 0)
    E0 = PROG.call("arm_energy", np.array([-0.8, 0.0]))
    np.testing.assert_allclose(PROG.call("arm_energy", y), E0, rtol=1e-9)


def test_trebuchet_landing_gradients_match_finite_differences():
    args = [-0.8, 0.9, 0.01, 2.0]
    for k in range(4):
        fd = numeric_grad(lambda x: PROG.call("throw", *(args[:k] + [x] + args[k + 1:])), args[k])
        assert float(PROG.grad("throw", k)(*args)) == pytest.approx(float(fd), rel=1e-6)
