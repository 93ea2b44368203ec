"""stdlib/nn.dpl: LayerNorm, Dropout, Embedding and the "torch" initialisation against NumPy and closed
forms, gradients against central differences; the builtins they rest on (`training()`, `error`,
`show_attention`, string comparison)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import dpl
from conftest import check_grads
from dpl.errors import DplError
from test_stdlib import assert_gradcheck, load_random

ROOT = pathlib.Path(__file__).resolve().parent.parent

NN_SRC = """
use nn
ln = LayerNorm(5)
emb = Embedding(6, 3)
drop = Dropout(0.25)
fn norm(x) = ln(x)
fn loss_norm(x, u) = sum(ln(x) * u)
fn lookup(ids) = emb(ids)
fn loss_lookup(ids, u) = sum(emb(ids) * u)
fn dropped(x) = drop(x)
fn loss_dropped(x, u) = sum(drop(x) * u)
"""


@pytest.fixture(scope="module")
def nn(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("nn"), NN_SRC, seed=21)


def np_layer_norm(x, gain, bias, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gain + bias


def test_layer_norm_matches_numpy_and_gradients(nn):
    prog, p = nn
    rng = np.random.default_rng(22)
    x = rng.normal(2.0, 3.0, size=(2, 3, 5))
    got = prog.call("norm", x)
    np.testing.assert_allclose(got, np_layer_norm(x, p["ln.gain"], p["ln.bias"]), rtol=1e-12, atol=1e-12)
    # with the initial gain 1 and bias 0 every row has mean 0 and variance var/(var + eps)
    fresh = dpl.loads("use nn\nln = LayerNorm(5)\nfn f(x) = ln(x)")
    y = fresh.call("f", x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), x.var(-1) / (x.var(-1) + 1e-5), rtol=1e-12)
    u = rng.normal(size=x.shape)
    check_grads(prog, "loss_norm", [x, u], [0])
    assert {"ln.gain", "ln.bias"} <= assert_gradcheck(prog, "loss_norm", x, u)


@pytest.mark.optional
def test_layer_norm_matches_torch(nn):
    torch = pytest.importorskip("torch")
    prog, p = nn
    x = np.random.default_rng(23).normal(size=(4, 5))
    m = torch.nn.LayerNorm(5).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(p["ln.gain"]))
        m.bias.copy_(torch.tensor(p["ln.bias"]))
        want = m(torch.tensor(x)).numpy()
    np.testing.assert_allclose(prog.call("norm", x), want, rtol=1e-10, atol=1e-12)


def test_embedding_gathers_rows_and_accumulates_gradients(nn):
    prog, p = nn
    ids = np.array([[0, 5, 2], [2, 2, 1]])
    np.testing.assert_array_equal(prog.call("lookup", ids), p["emb.E"][ids])
    u = np.random.default_rng(24).normal(size=(2, 3, 3))
    assert "emb.E" in assert_gradcheck(prog, "loss_lookup", ids, u)
    # row 2 is read three times: its adjoint is the sum of the three seeds
    interp = prog.interp
    from dpl.record import gradients
    _, _, adj = gradients(interp, prog.function("loss_lookup"), [ids, u], None, wrt_params=True)
    np.testing.assert_allclose(adj["emb.E"][2], u[0, 2] + u[1, 0] + u[1, 1], rtol=1e-12)
    np.testing.assert_array_equal(adj["emb.E"][3], 0)
    # the table starts as N(0, 1), as torch.nn.Embedding
    E = dpl.loads("use nn\nemb = Embedding(400, 100)").params["emb.E"]
    assert abs(E.mean()) < 0.01 and abs(E.std() - 1) < 0.01


def test_dropout_is_the_identity_outside_training(nn):
    prog, _ = nn
    x = np.random.default_rng(25).normal(size=(3, 4))
    np.testing.assert_array_equal(prog.call("dropped", x), x)
    u = np.ones_like(x)
    np.testing.assert_array_equal(prog.grad("loss_dropped", 0)(x, u), u)


def test_dropout_in_training_drops_scales_and_differentiates(nn):
    prog, _ = nn
    interp = prog.interp
    x = np.random.default_rng(26).normal(size=(200, 50)) + 3.0
    interp.training = True
    try:
        y = prog.call("dropped", x)
        kept = y != 0
        assert abs(kept.mean() - 0.75) < 0.02
        np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-15)
        # each draw is fixed while gradcheck evaluates, so the mask's gradient 1/(1 − p) is checked
        xs, u = x[:3, :4], np.random.default_rng(27).normal(size=(3, 4))
        assert_gradcheck(prog, "loss_dropped", xs, u)
    finally:
        interp.training = False


def test_dropout_rejects_a_bad_probability():
    prog = dpl.loads("use nn\nfn f(x) = dropout(x, 1.0)")
    with pytest.raises(DplError, match=r"dropout: p must lie in \[0, 1\), got 1.0"):
        prog.call("f", np.ones(3))


TRAINING_SRC = """use nn
print("before", training())
fn loss(x) {
    print("inside", training(), mean(float(dropout(ones([20000]), 0.4) == 0.0)))
    return sum(x * x)
}
train loss over ones([4, 2]) { epochs = 1
    batch = 2 }
print("after", training())
"""


@pytest.mark.parametrize("command", ["train", "run"])
def test_training_is_true_only_inside_a_train_blocks_loss(tmp_path, command):
    path = tmp_path / "t.dpl"
    path.write_text(TRAINING_SRC)
    r = subprocess.run([sys.executable, "-m", "dpl.cli", command, path, *(["--quiet", "--out", tmp_path / "p.npz"]
                        if command == "train" else [])], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "before false" and lines[-1] == "after false"
    inside = lines[1:-1]
    assert len(inside) == (2 if command == "train" else 0)
    for line in inside:
        word, flag, frac = line.split()
        assert word == "inside" and flag == "true" and abs(float(frac) - 0.4) < 0.02


def test_training_flag_keeps_replay_plans_apart(tmp_path):
    """A plan recorded inside training is not replayed outside it (the flag is part of the plan's key)."""
    prog = dpl.loads("fn f(x) {\n if training() { return sum(x * 2.0) }\n return sum(x)\n}")
    x = np.ones(3)
    outside = [prog.grad("f", 0)(x) for _ in range(3)]
    prog.interp.training = True
    try:
        inside = [prog.grad("f", 0)(x) for _ in range(3)]
    finally:
        prog.interp.training = False
    again = prog.grad("f", 0)(x)
    for g in outside + [again]:
        np.testing.assert_array_equal(g, 1.0)
    for g in inside:
        np.testing.assert_array_equal(g, 2.0)


# ---- initialisation -----------------------------------------------------------------------------------------

def test_default_init_is_unchanged():
    """Dense, MLP and the cells draw exactly what `~ glorot` and `~ zeros` drew before `init` existed."""
    new = dpl.loads("use nn\nd = Dense(3, 4)", seed=5).params
    old = dpl.loads("param W: [3, 4] ~ glorot\nparam b: [4] ~ zeros", seed=5).params
    np.testing.assert_array_equal(new["d.W"], old["W"])
    np.testing.assert_array_equal(new["d.b"], old["b"])
    new = dpl.loads("use rnn\nl = LSTM(3, 4)", seed=6).params
    old = dpl.loads("param Wx: [3, 16] ~ glorot\nparam Wh: [4, 16] ~ glorot\nparam b: [16] ~ zeros", seed=6).params
    for k in old:
        np.testing.assert_array_equal(new["l." + k], old[k])


def test_torch_init_bounds_and_spread():
    """U(±1/√fan_in) for Linear; U(±1/√H) for every cell weight, and b_ih + b_hh for a cell's one bias."""
    p = dpl.loads('use nn\nuse rnn\nd = Dense(400, 300, init = "torch")\nl = LSTM(50, 100, init = "torch")\n'
                  'g = GRU(50, 100, init = "torch")\nm = MLP(400, 30, 2, init = "torch")').params
    for name, k in [("d.W", 1 / 20), ("d.b", 1 / 20), ("l.Wx", 0.1), ("l.Wh", 0.1), ("g.Wx", 0.1), ("g.bx", 0.1),
                    ("g.bh", 0.1), ("m.W1", 1 / 20), ("m.b1", 1 / 20), ("m.W2", 1 / np.sqrt(30))]:
        v = p[name]
        assert np.abs(v).max() <= k and np.abs(v).max() > 0.9 * k, name
        if v.size > 1000:
            assert abs(v.std() - k / np.sqrt(3)) < 0.03 * k, name
    b = p["l.b"]  # the sum of two U(±k): spread √2 k/√3, beyond k at times
    assert np.abs(b).max() <= 0.2 and abs(b.std() - 0.1 * np.sqrt(2 / 3)) < 0.01


def test_unknown_init_is_an_error():
    with pytest.raises(DplError, match='init must be "glorot" or "torch", got xavier') as ei:
        dpl.loads('use nn\nd = Dense(2, 2, init = "xavier")')
    assert ei.value.format().splitlines()[-1] == "  in Dense, called from <string>:2:5"  # the user's line


# ---- the builtins under them ------------------------------------------------------------------------------

def test_strings_compare_with_equality():
    prog = dpl.loads('fn f(a, b) = a == b\nfn g(a, b) = a != b')
    assert prog.call("f", "x", "x") and not prog.call("f", "x", "y") and not prog.call("f", "x", 1.0)
    assert prog.call("g", "x", 1.0) and not prog.call("g", "x", "x")
    with pytest.raises(DplError, match="needs numbers or tensors, got a string"):
        dpl.loads('fn h(a) = a < "x"').call("h", "y")


def test_error_stops_with_its_message_at_the_call(tmp_path):
    path = tmp_path / "e.dpl"
    path.write_text('fn f(n) {\n    if n > 2 { error("n is too large:", n) }\n    return n\n}\nprint(f(1))\nf(3)\n')
    r = subprocess.run([sys.executable, "-m", "dpl.cli", "run", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == "1\n"
    assert f"{path}:2:16: n is too large: 3" in r.stderr and "called from" in r.stderr


def test_show_attention_passes_its_weights_to_the_maps():
    prog = dpl.loads("fn f(w) = show_attention(w) * 2.0")
    w = np.arange(6.0).reshape(2, 3)
    prog.interp.attention_log.clear()
    np.testing.assert_array_equal(prog.call("f", w), 2 * w)
    ((span, logged),) = prog.interp.attention_log
    np.testing.assert_array_equal(logged, w)
    assert span.line == 1


def test_layers_keep_float32():
    prog = dpl.loads("use nn\nln = LayerNorm(3)\nd = Dense(3, 2, init = \"torch\")\ne = Embedding(4, 3)\n"
                     "fn f(x) = d(dropout(ln(x), 0.5))\nfn g(ids) = e(ids)", dtype="float32")
    assert {v.dtype for v in prog.params.values()} == {np.dtype(np.float32)}
    x = np.ones((2, 3), np.float32)
    prog.interp.training = True
    try:
        assert prog.call("f", x).dtype == np.float32
    finally:
        prog.interp.training = False
    assert prog.call("f", x).dtype == np.float32 and prog.call("g", np.array([0, 3])).dtype == np.float32
