"""stdlib/rnn.dpl beyond the cells of tests/test_stdlib.py: `run` from a given state, and the bidirectional
wrappers against NumPy (and torch's bidirectional = true when installed); gradients against central differences."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import check_grads
from test_stdlib import assert_gradcheck, load_random, sigmoid

BI_SRC = """
use rnn
brnn = BiRNN(3, 4)
blstm = BiLSTM(3, 4)
bgru = BiGRU(3, 4)
lstm = LSTM(3, 4)
gru = GRU(3, 2)
fn run_rnn(xs) = brnn(xs)
fn run_lstm(xs) = blstm(xs)
fn run_gru(xs) = bgru(xs)
fn loss_rnn(xs, u) = sum(brnn(xs) * u)
fn loss_lstm(xs, u) = sum(blstm(xs) * u)
fn loss_gru(xs, u) = sum(bgru(xs) * u)
fn lstm_from(xs, h, c) = lstm.run(xs, h, c)
fn gru_from(xs, h) = gru.run(xs, h)
fn loss_from(xs, h, c) {
    hs, h2, c2 = lstm.run(xs, h, c)
    return sum(hs * hs) + sum(c2) + sum(h2)
}
"""


def np_rnn(p, pre, xs, h):
    out = []
    for x in xs:
        h = np.tanh(x @ p[pre + "Wx"] + h @ p[pre + "Wh"] + p[pre + "b"])
        out.append(h)
    return np.stack(out), h


def np_lstm(p, pre, xs, h, c):
    out = []
    for x in xs:
        i, f, g, o = np.split(x @ p[pre + "Wx"] + h @ p[pre + "Wh"] + p[pre + "b"], 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def np_gru(p, pre, xs, h):
    out = []
    for x in xs:
        (xr, xz, xn), (hr, hz, hn) = (np.split(x @ p[pre + "Wx"] + p[pre + "bx"], 3, axis=1),
                                      np.split(h @ p[pre + "Wh"] + p[pre + "bh"], 3, axis=1))
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        out.append(h)
    return np.stack(out), h


def np_bi(ref, p, pre, xs):
    zero = np.zeros((xs.shape[1], 4))
    extra = (zero,) if ref is np_lstm else ()
    fwd = ref(p, pre + "fwd.", xs, zero, *extra)[0]
    bwd = ref(p, pre + "bwd.", xs[::-1], zero, *extra)[0][::-1]
    return np.concatenate([fwd, bwd], axis=-1)


@pytest.fixture(scope="module")
def bi(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("bi"), BI_SRC, seed=31)


CELLS = [("rnn", "brnn.", np_rnn), ("lstm", "blstm.", np_lstm), ("gru", "bgru.", np_gru)]


@pytest.mark.parametrize("cell, pre, ref", CELLS, ids=[c[0] for c in CELLS])
def test_bidirectional_matches_numpy(bi, cell, pre, ref):
    prog, p = bi
    xs = np.random.default_rng(32).normal(size=(5, 2, 3))
    got = prog.call(f"run_{cell}", xs)
    assert got.shape == (5, 2, 8)
    np.testing.assert_allclose(got, np_bi(ref, p, pre, xs), rtol=1e-12, atol=1e-12)
    # the backward half at step 0 has read the whole sequence; the forward half only x₀
    np.testing.assert_allclose(prog.call(f"run_{cell}", xs[:1])[0, :, :4], got[0, :, :4], rtol=1e-12)
    assert not np.allclose(prog.call(f"run_{cell}", xs[:1])[0, :, 4:], got[0, :, 4:])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bidirectional_gradients(bi, cell):
    prog, p = bi
    rng = np.random.default_rng(33)
    xs, u = rng.normal(size=(2, 2, 3)), rng.normal(size=(2, 2, 8))
    check_grads(prog, f"loss_{cell}", [xs, u], [0])
    names = assert_gradcheck(prog, f"loss_{cell}", xs, u)
    assert {k for k in p if k.startswith(f"b{cell}.")} <= names


def test_run_continues_from_a_state(bi):
    prog, p = bi
    rng = np.random.default_rng(34)
    xs, h, c = rng.normal(size=(4, 2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    hs, h2, c2 = prog.call("lstm_from", xs, h, c)
    want_hs, want_h, want_c = np_lstm(p, "lstm.", xs, h, c)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12)
    np.testing.assert_allclose(h2, want_h, rtol=1e-12)
    np.testing.assert_allclose(c2, want_c, rtol=1e-12)
    # two halves run one after the other give the whole
    a = prog.call("lstm_from", xs[:2], h, c)
    b = prog.call("lstm_from", xs[2:], a[1], a[2])
    np.testing.assert_allclose(np.concatenate([a[0], b[0]]), hs, rtol=1e-12)
    g0 = rng.normal(size=(2, 2))
    ghs, gh = prog.call("gru_from", xs, g0)
    np.testing.assert_allclose(ghs, np_gru(p, "gru.", xs, g0)[0], rtol=1e-12)
    np.testing.assert_array_equal(gh, ghs[-1])
    # an empty sequence keeps the state
    e_hs, e_h, e_c = prog.call("lstm_from", xs[:0], h, c)
    assert e_hs.shape == (0, 2, 4)
    np.testing.assert_array_equal(e_h, h)
    check_grads(prog, "loss_from", [xs[:2], h, c], [0, 1, 2])


@pytest.mark.optional
def test_bilstm_matches_torch(bi):
    torch = pytest.importorskip("torch")
    prog, p = bi
    xs = np.random.default_rng(35).normal(size=(5, 2, 3))
    m = torch.nn.LSTM(3, 4, bidirectional=True).double()
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        for suffix, half in (("", "fwd"), ("_reverse", "bwd")):
            getattr(m, "weight_ih_l0" + suffix).copy_(t(p[f"blstm.{half}.Wx"].T))
            getattr(m, "weight_hh_l0" + suffix).copy_(t(p[f"blstm.{half}.Wh"].T))
            getattr(m, "bias_ih_l0" + suffix).copy_(t(p[f"blstm.{half}.b"]))
            getattr(m, "bias_hh_l0" + suffix).zero_()
        want = m(t(xs))[0].numpy()
    np.testing.assert_allclose(prog.call("run_lstm", xs), want, rtol=1e-10, atol=1e-12)
