"""stdlib/*.dpl: every module loads; the recurrent cells, multi-head attention, the memory head and the ODE
helpers against NumPy references (and PyTorch when installed); gradients against central differences;
examples/lstm_sine.dpl trains and beats its baseline."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import dpl
from conftest import check_grads
from dpl.gradcheck import gradcheck

ROOT = pathlib.Path(__file__).resolve().parent.parent
STDLIB = sorted((ROOT / "stdlib").glob("*.dpl"))

# what each stdlib module must define at top level (functions and modules)
EXPECTED = {
    "nn": ["Dense", "MLP", "gelu", "log_softmax"],
    "rnn": ["RNN", "LSTM", "GRU"],
    "attention": ["MultiHeadAttention", "scaled_dot_attention", "attention_weights", "positional_encoding",
                  "causal_mask", "key_mask"],
    "memory": ["MemoryHead", "read_weighted", "interpolate", "content_weights", "uniform_weights", "oneplus"],
    "ode": ["ODEFunc", "Oscillator", "harmonic", "harmonic_energy", "trajectory", "trajectory_loss"],
}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def load_random(tmp_path, source, seed=0, scale=0.5):
    """Load `source` with every parameter drawn from N(0, scale²), so biases are not zero; returns (prog, params)."""
    path = tmp_path / "prog.dpl"
    path.write_text(source)
    shapes = {k: v.shape for k, v in dpl.load(path).params.items()}
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0.0, scale, s) for k, s in sorted(shapes.items())}
    prog = dpl.load(path, params=dict(params))
    for k, v in params.items():
        np.testing.assert_array_equal(prog.params[k], v)
    return prog, params


def assert_gradcheck(prog, name, *args, tol=1e-6):
    """Every float argument and every parameter the call reads: reverse mode against central differences."""
    rows = gradcheck(prog, name, *args)
    assert rows
    bad = {r.name: r.error for r in rows if not r.error < tol}
    assert not bad, bad
    return {r.name for r in rows}


# ---- loading ----------------------------------------------------------------------------------------------

def test_stdlib_has_the_modules():
    assert {p.stem for p in STDLIB} >= set(EXPECTED)


@pytest.mark.parametrize("path", STDLIB, ids=[p.stem for p in STDLIB])
def test_stdlib_module_loads(path):
    prog = dpl.loads(f"use {path.stem}\nuse {path.stem}\n")  # a second `use` is a no-op
    for name in EXPECTED.get(path.stem, []):
        prog.function(name)
    r = subprocess.run([sys.executable, "-m", "dpl.cli", "check", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_stdlib_modules_load_together():
    prog = dpl.loads("\n".join(f"use {p.stem}" for p in STDLIB))
    for names in EXPECTED.values():
        for name in names:
            prog.function(name)


# ---- recurrent cells ---------------------------------------------------------------------------------------

RNN_SRC = """
use rnn
rnn = RNN(3, 4)
lstm = LSTM(3, 4)
gru = GRU(3, 4)
fn run_rnn(xs) = rnn(xs)
fn run_lstm(xs) = lstm(xs)
fn run_gru(xs) = gru(xs)
fn lstm_step(x, h, c) = lstm.step(x, h, c)
fn gru_step(x, h) = gru.step(x, h)
fn rnn_step(x, h) = rnn.step(x, h)
fn loss_rnn(xs, u) = sum(rnn(xs) * u)
fn loss_lstm(xs, u) = sum(lstm(xs) * u)
fn loss_gru(xs, u) = sum(gru(xs) * u)
fn loss_lstm_step(x, h, c, u) {
    h, c = lstm.step(x, h, c)
    return sum(h * u) + sum(c * c * u)
}
"""


def np_rnn(p, xs):
    h, out = np.zeros((xs.shape[1], p["rnn.Wh"].shape[0])), []
    for x in xs:
        h = np.tanh(x @ p["rnn.Wx"] + h @ p["rnn.Wh"] + p["rnn.b"])
        out.append(h)
    return np.stack(out)


def np_lstm_step(p, x, h, c):
    z = x @ p["lstm.Wx"] + h @ p["lstm.Wh"] + p["lstm.b"]
    i, f, g, o = np.split(z, 4, axis=1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def np_lstm(p, xs):
    h = c = np.zeros((xs.shape[1], p["lstm.Wh"].shape[0]))
    out = []
    for x in xs:
        h, c = np_lstm_step(p, x, h, c)
        out.append(h)
    return np.stack(out)


def np_gru_step(p, x, h):
    gx, gh = x @ p["gru.Wx"] + p["gru.bx"], h @ p["gru.Wh"] + p["gru.bh"]
    (xr, xz, xn), (hr, hz, hn) = np.split(gx, 3, axis=1), np.split(gh, 3, axis=1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def np_gru(p, xs):
    h, out = np.zeros((xs.shape[1], p["gru.Wh"].shape[0])), []
    for x in xs:
        h = np_gru_step(p, x, h)
        out.append(h)
    return np.stack(out)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("rnn"), RNN_SRC, seed=1)


def test_rnn_parameter_shapes():
    p = dpl.loads(RNN_SRC).params
    assert {k: v.shape for k, v in p.items()} == {
        "rnn.Wx": (3, 4), "rnn.Wh": (4, 4), "rnn.b": (4,),
        "lstm.Wx": (3, 16), "lstm.Wh": (4, 16), "lstm.b": (16,),
        "gru.Wx": (3, 12), "gru.Wh": (4, 12), "gru.bx": (12,), "gru.bh": (12,)}
    assert not p["lstm.b"].any() and np.abs(p["lstm.Wx"]).max() <= np.sqrt(6 / 19)  # zeros, glorot


@pytest.mark.parametrize("cell, ref", [("rnn", np_rnn), ("lstm", np_lstm), ("gru", np_gru)])
def test_recurrent_forward_matches_numpy(cells, cell, ref):
    prog, params = cells
    xs = np.random.default_rng(2).normal(size=(6, 2, 3))
    got = prog.call(f"run_{cell}", xs)
    assert got.shape == (6, 2, 4)
    np.testing.assert_allclose(got, ref(params, xs), rtol=1e-12, atol=1e-12)
    # the sequence length is free: a prefix of the sequence gives the prefix of the states
    np.testing.assert_allclose(prog.call(f"run_{cell}", xs[:2]), got[:2], rtol=1e-12, atol=1e-12)


def test_recurrent_steps_match_numpy(cells):
    prog, params = cells
    rng = np.random.default_rng(3)
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    h2, c2 = prog.call("lstm_step", x, h, c)
    want_h, want_c = np_lstm_step(params, x, h, c)
    np.testing.assert_allclose(h2, want_h, rtol=1e-12)
    np.testing.assert_allclose(c2, want_c, rtol=1e-12)
    np.testing.assert_allclose(prog.call("gru_step", x, h), np_gru_step(params, x, h), rtol=1e-12)
    np.testing.assert_allclose(prog.call("rnn_step", x, h),
                               np.tanh(x @ params["rnn.Wx"] + h @ params["rnn.Wh"] + params["rnn.b"]), rtol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_gradients(cells, cell):
    """w.r.t. the input sequence (central differences of prog.call) and, through gradcheck, every parameter."""
    prog, params = cells
    rng = np.random.default_rng(4)
    xs, u = rng.normal(size=(3, 2, 3)), rng.normal(size=(3, 2, 4))
    check_grads(prog, f"loss_{cell}", [xs, u], [0])
    names = assert_gradcheck(prog, f"loss_{cell}", xs, u)
    assert {k for k in params if k.startswith(cell + ".")} <= names


def test_lstm_step_gradients(cells):
    prog, _ = cells
    rng = np.random.default_rng(5)
    args = [rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))]
    check_grads(prog, "loss_lstm_step", args, [0, 1, 2])


@pytest.mark.optional
def test_lstm_and_gru_match_torch(cells):
    """torch.nn.LSTM / GRU with the documented weight mapping compute the same states."""
    torch = pytest.importorskip("torch")
    prog, p = cells
    xs = np.random.default_rng(6).normal(size=(5, 2, 3))
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    lstm = torch.nn.LSTM(3, 4).double()
    gru = torch.nn.GRU(3, 4).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(t(p["lstm.Wx"].T))
        lstm.weight_hh_l0.copy_(t(p["lstm.Wh"].T))
        lstm.bias_ih_l0.copy_(t(p["lstm.b"]))
        lstm.bias_hh_l0.zero_()
        gru.weight_ih_l0.copy_(t(p["gru.Wx"].T))
        gru.weight_hh_l0.copy_(t(p["gru.Wh"].T))
        gru.bias_ih_l0.copy_(t(p["gru.bx"]))
        gru.bias_hh_l0.copy_(t(p["gru.bh"]))
        want_lstm = lstm(t(xs))[0].numpy()
        want_gru = gru(t(xs))[0].numpy()
    np.testing.assert_allclose(prog.call("run_lstm", xs), want_lstm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(prog.call("run_gru", xs), want_gru, rtol=1e-10, atol=1e-12)


# ---- attention -------------------------------------------------------------------------------------------

ATT_SRC = """
use attention
mha = MultiHeadAttention(6, 2)
fn self_att(x) = mha(x)
fn masked(x, m) = mha.masked(x, m)
fn cross(x, ctx, m) = mha.cross(x, ctx, m)
fn weights(x, ctx, m) = mha.weights(x, ctx, m)
fn causal(x) = mha.masked(x, causal_mask(shape(x)[1]))
fn padded(x, ctx, valid) = mha.cross(x, ctx, key_mask(valid))
fn loss_cross(x, ctx, u) = sum(mha.cross(x, ctx, causal_mask(3)) * u)
fn sdpa(Q, K, V, m) = scaled_dot_attention(Q, K, V, m)
fn pe(T, d) = positional_encoding(T, d)
fn cm(T) = causal_mask(T)
"""


def np_mha(p, x, ctx, mask=None, heads=2):
    """Reference multi-head attention; mask broadcasts against [B, heads, Tq, Tk], true = may attend."""
    def split(a):
        B, T, d = a.shape
        return a.reshape(B, T, heads, d // heads).transpose(0, 2, 1, 3)
    Q, K, V = (split(a @ p[f"mha.W{n}"] + p[f"mha.b{n}"]) for n, a in (("q", x), ("k", ctx), ("v", ctx)))
    s = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = softmax(s)
    o = (w @ V).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    return o @ p["mha.Wo"] + p["mha.bo"], w


@pytest.fixture(scope="module")
def att(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("att"), ATT_SRC, seed=7)


def test_multihead_attention_matches_numpy(att):
    prog, p = att
    rng = np.random.default_rng(8)
    x, ctx = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 5, 6))
    np.testing.assert_allclose(prog.call("self_att", x), np_mha(p, x, x)[0], rtol=1e-12, atol=1e-12)
    tril = np.tril(np.ones((4, 4), bool))
    np.testing.assert_allclose(prog.call("causal", x), np_mha(p, x, x, tril)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prog.call("masked", x, tril), prog.call("causal", x), rtol=0, atol=0)
    m3 = rng.uniform(size=(2, 4, 5)) < 0.7
    m3[:, :, 0] = True
    want_out, want_w = np_mha(p, x, ctx, m3[:, None])
    np.testing.assert_allclose(prog.call("cross", x, ctx, m3), want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prog.call("weights", x, ctx, m3), want_w, rtol=1e-12, atol=1e-12)


def test_masked_key_gets_zero_weight(att):
    prog, p = att
    rng = np.random.default_rng(9)
    x, ctx = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 5, 6))
    valid = np.ones((2, 5), bool)
    valid[0, 1] = valid[0, 4] = valid[1, 2] = False
    w = prog.call("weights", x, ctx, valid[:, None, :].repeat(3, axis=1))
    assert w.shape == (2, 2, 3, 5)
    assert np.all(w[0, :, :, [1, 4]] == 0) and np.all(w[1, :, :, 2] == 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    out = prog.call("padded", x, ctx, valid)
    np.testing.assert_allclose(out, np_mha(p, x, ctx, valid[:, None, None, :])[0], rtol=1e-12, atol=1e-12)
    # what a masked key holds cannot change the output at all
    ctx2 = ctx.copy()
    ctx2[0, 1] += 100.0
    ctx2[1, 2] -= 50.0
    np.testing.assert_array_equal(prog.call("padded", x, ctx2, valid), out)
    # a query that may attend to nothing reads zeros: the output is the projection's bias alone
    none = valid.copy()
    none[1] = False
    np.testing.assert_allclose(prog.call("padded", x, ctx, none)[1], np.broadcast_to(p["mha.bo"], (3, 6)),
                               rtol=0, atol=1e-15)


def test_attention_gradients(att):
    prog, p = att
    rng = np.random.default_rng(10)
    x, ctx, u = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 6))
    check_grads(prog, "loss_cross", [x, ctx, u], [0, 1])
    names = assert_gradcheck(prog, "loss_cross", x, ctx, u)
    assert set(p) <= names


def test_scaled_dot_attention_and_positional_encoding(att):
    prog, _ = att
    rng = np.random.default_rng(11)
    Q, K, V = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 2))
    want = softmax(Q @ np.swapaxes(K, 1, 2) / 2.0) @ V
    np.testing.assert_allclose(prog.call("sdpa", Q, K, V, True), want, rtol=1e-12)
    np.testing.assert_array_equal(prog.call("cm", 4), np.tril(np.ones((4, 4), bool)))
    T, d = 7, 6
    pos, i = np.arange(T)[:, None], np.arange(d // 2)[None, :]
    angle = pos / 10000 ** (2 * i / d)
    want_pe = np.zeros((T, d))
    want_pe[:, 0::2], want_pe[:, 1::2] = np.sin(angle), np.cos(angle)
    np.testing.assert_allclose(prog.call("pe", T, d), want_pe, rtol=1e-12, atol=1e-15)
    assert prog.call("pe", 3, 5).shape == (3, 5)


@pytest.mark.optional
def test_multihead_attention_matches_torch(att):
    """torch.nn.MultiheadAttention with the documented weight mapping computes the same output."""
    torch = pytest.importorskip("torch")
    prog, p = att
    rng = np.random.default_rng(12)
    x, ctx = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 5, 6))
    valid = np.ones((2, 5), bool)
    valid[0, 3] = False
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    m = torch.nn.MultiheadAttention(6, 2, batch_first=True).double()
    with torch.no_grad():
        m.in_proj_weight.copy_(t(np.concatenate([p["mha.Wq"], p["mha.Wk"], p["mha.Wv"]], axis=1).T))
        m.in_proj_bias.copy_(t(np.concatenate([p["mha.bq"], p["mha.bk"], p["mha.bv"]])))
        m.out_proj.weight.copy_(t(p["mha.Wo"].T))
        m.out_proj.bias.copy_(t(p["mha.bo"]))
        want = m(t(x), t(ctx), t(ctx), key_padding_mask=torch.tensor(~valid), need_weights=False)[0].numpy()
    np.testing.assert_allclose(prog.call("padded", x, ctx, valid), want, rtol=1e-10, atol=1e-12)


# ---- memory ------------------------------------------------------------------------------------------------

MEM_SRC = """
use memory
head = MemoryHead(4, 3)
fn read_from(M, h, w) = head.read_from(M, h, w)
fn write_to(M, h, w) = head.write_to(M, h, w)
fn write_then_read_at(M, w, h) = read_weighted(head.write_at(M, w, h), w)
fn add_vector(h) = head.add(h)
fn start(M) = uniform_weights(M)
fn content_roundtrip(M, k, v) {
    w = content_weights(M, k, 50.0, 1.0, uniform_weights(M))
    M2 = write(M, w, ones(shape(v)), v)
    return read(M2, v, 1000.0)
}
fn loss_step(M, h, w0, u) {
    M2, w = head.write_to(M, h, w0)
    r, w2 = head.read_from(M2, h, w)
    return sum(r * u) + sum(w2 * w2)
}
"""


def np_cos_address(M, k, beta):
    dots = np.einsum("bnw,bw->bn", M, k)
    cos = dots / np.maximum(np.sqrt((k ** 2).sum(-1))[:, None] * np.sqrt((M ** 2).sum(-1)), 1e-8)  # LANGUAGE.md §9
    return softmax(beta[:, None] * cos)


def np_head(p, M, h, w_prev):
    e = h @ p["head.Wh"] + p["head.bh"]
    W = M.shape[-1]
    key, beta, g = e[:, :W], 1 + np.logaddexp(0, e[:, W]), sigmoid(e[:, W + 1:W + 2])
    erase, add = sigmoid(e[:, W + 2:2 * W + 2]), np.tanh(e[:, 2 * W + 2:])
    w = g * np_cos_address(M, key, beta) + (1 - g) * w_prev
    return w, erase, add


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("mem"), MEM_SRC, seed=13, scale=1.0)


def test_memory_head_matches_numpy(mem):
    prog, p = mem
    rng = np.random.default_rng(14)
    M, h = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4))
    w0 = prog.call("start", M)
    np.testing.assert_array_equal(w0, np.full((2, 5), 0.2))
    w, erase, add = np_head(p, M, h, w0)
    r, got_w = prog.call("read_from", M, h, w0)
    np.testing.assert_allclose(got_w, w, rtol=1e-12)
    np.testing.assert_allclose(got_w.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(r, np.einsum("bn,bnw->bw", w, M), rtol=1e-12)
    M2, got_w = prog.call("write_to", M, h, w0)
    np.testing.assert_allclose(got_w, w, rtol=1e-12)
    want = M * (1 - w[:, :, None] * erase[:, None, :]) + w[:, :, None] * add[:, None, :]
    np.testing.assert_allclose(M2, want, rtol=1e-12)


def test_memory_write_then_read_returns_what_was_written(mem):
    prog, _ = mem
    rng = np.random.default_rng(15)
    h = rng.normal(size=(2, 4))
    # through the head: an empty memory, a write at one slot, a read of that slot
    w = np.zeros((2, 5))
    w[0, 1] = w[1, 3] = 1.0
    written = prog.call("write_then_read_at", np.zeros((2, 5, 3)), w, h)
    np.testing.assert_allclose(written, prog.call("add_vector", h), rtol=1e-15)
    assert np.abs(written).min() > 1e-3
    # by content: write v where the key points (erasing the slot), then read with v as the key
    M = np.zeros((2, 4, 3))
    M[:, 0, 0] = M[:, 1, 1] = M[:, 2, 2] = M[:, 3] = 1.0
    k = M[:, 2].copy()
    v = rng.normal(size=(2, 3))
    np.testing.assert_allclose(prog.call("content_roundtrip", M, k, v), v, atol=1e-6)


def test_memory_gradients(mem):
    prog, p = mem
    rng = np.random.default_rng(16)
    M, h, u = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    w0 = softmax(rng.normal(size=(2, 4)))
    check_grads(prog, "loss_step", [M, h, w0, u], [0, 1, 2])
    assert set(p) <= assert_gradcheck(prog, "loss_step", M, h, w0, u)


# ---- ODE helpers -------------------------------------------------------------------------------------------

ODE_SRC = """
use ode
osc = Oscillator(4.0, 1.0)
dyn = ODEFunc(2, 5)
fn energy_after(y0, n, method) = osc.energy(odeint(osc, y0, 0.0, 1.0, steps = n, method = method))
fn unit_after(y0, n) = harmonic_energy(odeint(harmonic, y0, 0.0, 1.0, steps = n), 1.0, 1.0)
fn traj(y0, ts) = trajectory(harmonic, y0, ts, 20)
fn fit(y0, ts, ys) = trajectory_loss(harmonic, y0, ts, ys)
fn learned(y0, ts, ys) = trajectory_loss(dyn.f, y0, ts, ys)
fn field(t, y) = dyn(t, y)
"""


@pytest.fixture(scope="module")
def ode(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("ode"), ODE_SRC, seed=17)


@pytest.mark.parametrize("n", [1, 4, 10])
def test_rk4_energy_of_the_oscillator(ode, n):
    """For y' = A y with eigenvalues ±iω, one RK4 step multiplies the energy by
    |R(iωh)|² = 1 − (ωh)⁶/72 + (ωh)⁸/576 exactly, and one Euler step by 1 + (ωh)²."""
    prog, _ = ode
    y0 = np.array([[0.7, -0.3], [1.0, 2.0]])
    e0 = 0.5 * y0[:, 1] ** 2 + 0.5 * 4.0 * y0[:, 0] ** 2
    wh = 2.0 / n  # ω = √(k/m) = 2
    rk4 = e0 * (1 - wh ** 6 / 72 + wh ** 8 / 576) ** n
    np.testing.assert_allclose(prog.call("energy_after", y0, n, "rk4"), rk4, rtol=1e-12)
    np.testing.assert_allclose(prog.call("energy_after", y0, n, "euler"), e0 * (1 + wh ** 2) ** n, rtol=1e-12)
    h = 1.0 / n
    np.testing.assert_allclose(prog.call("unit_after", y0[0], n),
                               0.5 * (y0[0] ** 2).sum() * (1 - h ** 6 / 72 + h ** 8 / 576) ** n, rtol=1e-12)


def test_trajectory_and_its_loss(ode):
    prog, p = ode
    y0, ts = np.array([[1.0, 0.0], [0.5, 0.5]]), np.linspace(0.0, 2.0, 5)
    c, s = np.cos(ts)[:, None], np.sin(ts)[:, None]
    exact = np.stack([y0[:, 0] * c + y0[:, 1] * s, -y0[:, 0] * s + y0[:, 1] * c], axis=-1)  # q = cos, p = −sin
    got = prog.call("traj", y0, ts)
    assert got.shape == (5, 2, 2)
    np.testing.assert_allclose(got, exact, atol=1e-7)
    assert prog.call("fit", y0, ts, exact) < 1e-12
    assert prog.call("fit", y0, ts, exact + 0.1) == pytest.approx(0.01, rel=1e-4)
    # the learned field is the MLP, and the loss is differentiable in y0, the observations and its parameters
    y = np.random.default_rng(18).normal(size=(3, 2))
    want = np.tanh(y @ p["dyn.W1"] + p["dyn.b1"]) @ p["dyn.W2"] + p["dyn.b2"]
    np.testing.assert_allclose(prog.call("field", 0.0, y), want, rtol=1e-12)
    ts, ys = np.array([0.0, 0.3, 0.6]), np.random.default_rng(19).normal(size=(3, 2, 2))
    assert set(p) <= assert_gradcheck(prog, "learned", y0, ts, ys)


# ---- the example ------------------------------------------------------------------------------------------

def test_lstm_sine_example_trains(tmp_path):
    """Shortened: the loss falls epoch by epoch and the trained LSTM already beats repeating the last value."""
    out, metrics = tmp_path / "p.npz", tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "dpl.cli", "train", ROOT / "examples" / "lstm_sine.dpl", "--quiet",
                        "--epochs", "4", "--out", out, "--metrics", metrics],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    losses = json.loads(metrics.read_text())["epoch_losses"]
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:]))
    (l1, model), (l2, baseline) = (line.rsplit(" ", 1) for line in r.stdout.splitlines())
    assert l1 == "test mse" and l2.startswith("baseline")
    assert float(model) < float(baseline) / 2
    assert out.is_file()
