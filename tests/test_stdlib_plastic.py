"""stdlib/plastic.dpl: the Hebbian plastic layer (Miconi et al. 2018) against a NumPy transcription of its two
equations, its initial values, gradients for w, α and η against central differences, and one-shot recall: a
pattern seen once is stored in the trace H (α = 1, w = 0), and a corrupted copy is pulled back towards it."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
from test_stdlib import assert_gradcheck, load_random
from conftest import check_grads

SRC = """
use plastic
net = Plastic(4)
fn run(xs) = net(xs)
fn step(y, H, x) = net.step(y, H, x)
fn loss(xs, t) = mse(net(xs)[-1], t)
fn trace(H, a, b, eta) = hebbian(H, a, b, eta)
"""


def np_plastic(p, xs):
    w, alpha, eta = p["net.w"], p["net.alpha"], p["net.eta"]
    y, H, out = np.zeros(xs.shape[1:]), np.zeros((xs.shape[1], w.shape[0], w.shape[0])), []
    for x in xs:
        y_new = np.tanh(np.einsum("bi,bij->bj", y, w + alpha * H) + x)
        H = eta * np.einsum("bi,bj->bij", y, y_new) + (1 - eta) * H
        y = y_new
        out.append(y)
    return np.stack(out), H


def load_with(tmp_path, src, params):
    path = tmp_path / "prog.dpl"
    path.write_text(src)
    return dpl.load(path, params=params)


@pytest.fixture(scope="module")
def plastic(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("plastic"), SRC, seed=41)


def test_initial_parameters_follow_the_paper():
    p = dpl.loads(SRC).params
    assert {k: np.shape(v) for k, v in p.items()} == {"net.w": (4, 4), "net.alpha": (4, 4), "net.eta": ()}
    assert float(p["net.eta"]) == 0.01
    assert 0 < np.abs(p["net.w"]).max() < 0.05 and 0 < np.abs(p["net.alpha"]).max() < 0.05


def test_plastic_matches_numpy(plastic, tmp_path):
    _, p = plastic
    p = dict(p, **{"net.eta": np.array(0.3)})  # load_random drew η from N(0, 0.5²); a rate in (0, 1) here
    prog = load_with(tmp_path, SRC, p)
    xs = np.random.default_rng(42).normal(size=(5, 2, 4))
    want, H = np_plastic(p, xs)
    got = prog.call("run", xs)
    assert got.shape == (5, 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    y, H1 = prog.call("step", want[-2], np.ones((2, 4, 4)), xs[-1])
    assert H1.shape == (2, 4, 4)
    y_want = np.tanh(want[-2] @ (p["net.w"] + p["net.alpha"]) + xs[-1])
    np.testing.assert_allclose(y, y_want, rtol=1e-12)
    np.testing.assert_allclose(H1, 0.3 * np.einsum("bi,bj->bij", want[-2], y_want) + 0.7, rtol=1e-12)


def test_hebbian_trace():
    prog = dpl.loads(SRC)
    a, b = np.array([1.0, -1.0]), np.array([0.5, 2.0])
    np.testing.assert_allclose(prog.call("trace", np.ones((2, 2)), a, b, 0.25), 0.25 * np.outer(a, b) + 0.75,
                               rtol=1e-15)


def test_plastic_gradients(plastic):
    """w, α and η all get gradients (η through the trace: it needs at least two steps)."""
    prog, p = plastic
    rng = np.random.default_rng(43)
    xs, t = rng.normal(size=(3, 2, 4)), rng.normal(size=(2, 4))
    check_grads(prog, "loss", [xs, t], [0])
    assert set(p) <= assert_gradcheck(prog, "loss", xs, t)


def test_one_shot_recall_through_the_trace(tmp_path):
    """With w = 0, α = 1, η = 0.5: show a ±1 pattern once (held for two steps, so y and y' both carry it), then
    a copy with a quarter of its bits flipped; the next state has the sign of the stored pattern everywhere.
    With α = 0 the same network only echoes the corrupted input."""
    n = 16
    rng = np.random.default_rng(44)
    pattern = rng.choice([-1.0, 1.0], size=n)
    probe = pattern.copy()
    probe[rng.choice(n, n // 4, replace=False)] *= -1
    xs = np.stack([pattern, pattern, probe * 0.5, np.zeros(n)])[:, None, :]
    src = "use plastic\nnet = Plastic(16)\nfn run(xs) = net(xs)\n"
    for alpha, recalls in ((1.0, True), (0.0, False)):
        prog = load_with(tmp_path, src, {"net.w": np.zeros((n, n)), "net.alpha": np.full((n, n), alpha),
                                      "net.eta": np.array(0.5)})
        ys = prog.call("run", xs)
        assert (np.sign(ys[-1, 0]) == pattern).all() == recalls
