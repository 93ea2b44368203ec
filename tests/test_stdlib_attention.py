"""stdlib/attention.dpl beyond multi-head attention (tests/test_stdlib.py): additive and Luong attention, the
Transformer encoder block, DA-RNN and Seq2Seq against NumPy references; gradients against central differences."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import check_grads
from test_stdlib import assert_gradcheck, load_random, np_mha, softmax
from test_stdlib_nn import np_layer_norm
from test_stdlib_rnn import np_lstm

ATT_SRC = """
use attention
add = Additive(3, 4, 5)
lg = LuongGeneral(3, 4)
tb = TransformerEncoderBlock(6, 2, 8)
fn additive(q, K, V, m) = add(q, K, V, m)
fn additive_weights(q, K, m) = add.weights(q, K, m)
fn dot(q, K, V) = luong_dot(q, K, V)
fn general(q, K, V, m) = lg(q, K, V, m)
fn general_weights(q, K) = lg.weights(q, K)
fn block(x) = tb(x)
fn causal_block(x) = tb.masked(x, causal_mask(shape(x)[1]))
fn loss_additive(q, K, V, u) = sum(add(q, K, V) * u)
fn loss_general(q, K, V, u) = sum(lg(q, K, V) * u)
fn loss_block(x, u) = sum(tb(x) * u)
"""


@pytest.fixture(scope="module")
def att(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("att2"), ATT_SRC, seed=41)


def np_additive(p, q, K, mask=None):
    W, v = p["add.W"], p["add.v"][:, 0]
    qw, kw = q @ W[:3], K @ W[3:]
    if q.ndim < K.ndim:
        e = np.tanh(qw[:, None, :] + kw) @ v                      # [B, Tk]
    else:
        e = np.tanh(qw[:, :, None, :] + kw[:, None, :, :]) @ v    # [B, Tq, Tk]
    if mask is not None:
        e = np.where(mask, e, -np.inf)
    return softmax(e)


def test_additive_attention_matches_numpy(att):
    prog, p = att
    rng = np.random.default_rng(42)
    q, Q = rng.normal(size=(2, 3)), rng.normal(size=(2, 6, 3))
    K, V = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 2))
    valid = np.ones((2, 5), bool)
    valid[0, 2] = valid[1, 4] = False
    w = np_additive(p, q, K, valid)
    np.testing.assert_allclose(prog.call("additive_weights", q, K, valid), w, rtol=1e-12)
    np.testing.assert_allclose(prog.call("additive", q, K, V, valid), np.einsum("bt,btd->bd", w, V), rtol=1e-12)
    W = np_additive(p, Q, K, valid[:, None, :])
    assert W.shape == (2, 6, 5) and np.all(W[0, :, 2] == 0)
    np.testing.assert_allclose(prog.call("additive_weights", Q, K, valid[:, None, :]), W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(prog.call("additive", Q, K, V, valid[:, None, :]), W @ V, rtol=1e-12)
    u = rng.normal(size=(2, 6, 2))
    check_grads(prog, "loss_additive", [Q, K, V, u], [0, 1, 2])
    assert {"add.W", "add.v"} <= assert_gradcheck(prog, "loss_additive", Q[:, :2], K[:, :3], V[:, :3], u[:, :2])


def test_luong_attention_matches_numpy(att):
    prog, p = att
    rng = np.random.default_rng(43)
    Q, K, V = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 2))
    np.testing.assert_allclose(prog.call("dot", Q, K, V), softmax(Q @ K.transpose(0, 2, 1)) @ V, rtol=1e-12)
    q = rng.normal(size=(2, 3))
    w = softmax(np.einsum("bi,ij,btj->bt", q, p["lg.W"], K))
    np.testing.assert_allclose(prog.call("general_weights", q, K), w, rtol=1e-12)
    np.testing.assert_allclose(prog.call("general", q, K, V, True), np.einsum("bt,btd->bd", w, V), rtol=1e-12)
    Qg = rng.normal(size=(2, 6, 3))
    np.testing.assert_allclose(prog.call("general_weights", Qg, K),
                               softmax(Qg @ p["lg.W"] @ K.transpose(0, 2, 1)), rtol=1e-12)
    u = rng.normal(size=(2, 6, 2))
    check_grads(prog, "loss_general", [Qg, K, V, u], [0, 1, 2])
    assert "lg.W" in assert_gradcheck(prog, "loss_general", Qg[:, :2], K[:, :3], V[:, :3], u[:, :2])


def np_block(p, x, mask=None):
    mha = {k[len("tb."):]: v for k, v in p.items() if k.startswith("tb.mha.")}
    x = np_layer_norm(x + np_mha(mha, x, x, mask)[0], p["tb.ln1.gain"], p["tb.ln1.bias"])
    ff = np.maximum(x @ p["tb.ff1.W"] + p["tb.ff1.b"], 0) @ p["tb.ff2.W"] + p["tb.ff2.b"]
    return np_layer_norm(x + ff, p["tb.ln2.gain"], p["tb.ln2.bias"])


def test_transformer_encoder_block_matches_numpy(att):
    prog, p = att
    rng = np.random.default_rng(44)
    x = rng.normal(size=(2, 4, 6))
    np.testing.assert_allclose(prog.call("block", x), np_block(p, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(prog.call("causal_block", x), np_block(p, x, np.tril(np.ones((4, 4), bool))),
                               rtol=1e-10, atol=1e-12)
    u = rng.normal(size=(2, 3, 6))
    check_grads(prog, "loss_block", [x[:, :3], u], [0])
    assert {k for k in p if k.startswith("tb.")} <= assert_gradcheck(prog, "loss_block", x[:, :3], u)


@pytest.mark.optional
def test_transformer_encoder_block_matches_torch(att):
    torch = pytest.importorskip("torch")
    prog, p = att
    x = np.random.default_rng(45).normal(size=(2, 4, 6))
    m = torch.nn.TransformerEncoderLayer(6, 2, 8, dropout=0.0, batch_first=True).double().eval()
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        m.self_attn.in_proj_weight.copy_(t(np.concatenate([p["tb.mha.Wq"], p["tb.mha.Wk"], p["tb.mha.Wv"]], 1).T))
        m.self_attn.in_proj_bias.copy_(t(np.concatenate([p["tb.mha.bq"], p["tb.mha.bk"], p["tb.mha.bv"]])))
        m.self_attn.out_proj.weight.copy_(t(p["tb.mha.Wo"].T))
        m.self_attn.out_proj.bias.copy_(t(p["tb.mha.bo"]))
        m.linear1.weight.copy_(t(p["tb.ff1.W"].T))
        m.linear1.bias.copy_(t(p["tb.ff1.b"]))
        m.linear2.weight.copy_(t(p["tb.ff2.W"].T))
        m.linear2.bias.copy_(t(p["tb.ff2.b"]))
        for n in ("1", "2"):
            getattr(m, "norm" + n).weight.copy_(t(p[f"tb.ln{n}.gain"]))
            getattr(m, "norm" + n).bias.copy_(t(p[f"tb.ln{n}.bias"]))
        want = m(t(x)).numpy()
    np.testing.assert_allclose(prog.call("block", x), want, rtol=1e-9, atol=1e-11)


# ---- DA-RNN -----------------------------------------------------------------------------------------------

DARNN_SRC = """
use attention
da = DARNN(3, 4, 5, 2)
fn predict(x, y) = da(x, y)
fn maps(x, y) = da.maps(x, y)
fn loss(x, y, target) = mse(da(x, y), target)
"""


def np_darnn(p, x, y):
    """Qin et al. (2017) eqs. 8-22 as written in the module's header."""
    B, T, n = x.shape
    lstm = {k[len("da."):]: v for k, v in p.items() if k.startswith("da.")}
    m, q = p["da.enc.Wh"].shape[0], p["da.dec.Wh"].shape[0]
    h = s = np.zeros((B, m))
    hs, alphas = [], []
    ux = x.transpose(0, 2, 1) @ p["da.Ue"]
    for t in range(T):
        a = softmax((np.tanh((np.concatenate([h, s], -1) @ p["da.We"])[:, None, :] + ux) @ p["da.ve"])[..., 0])
        _, h, s = np_lstm(lstm, "enc.", (a * x[:, t])[None], h, s)
        hs.append(h)
        alphas.append(a)
    H = np.stack(hs, 1)
    d = s = np.zeros((B, q))
    uh, betas = H @ p["da.Ud"], []
    for t in range(T):
        b = softmax((np.tanh((np.concatenate([d, s], -1) @ p["da.Wd"])[:, None, :] + uh) @ p["da.vd"])[..., 0])
        c = np.einsum("bt,btm->bm", b, H)
        yt = np.concatenate([y[:, t:t + 1], c], -1) @ p["da.wt"] + p["da.bt"]
        _, d, s = np_lstm(lstm, "dec.", yt[None], d, s)
        betas.append(b)
    pred = ((np.concatenate([d, c], -1) @ p["da.Wy"] + p["da.bw"]) @ p["da.vy"] + p["da.bv"])[:, 0]
    return pred, np.stack(alphas, 1), np.stack(betas, 1)


@pytest.fixture(scope="module")
def darnn(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("darnn"), DARNN_SRC, seed=46)


def test_darnn_matches_numpy(darnn):
    prog, p = darnn
    rng = np.random.default_rng(47)
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4))
    pred, alphas, betas = np_darnn(p, x, y)
    np.testing.assert_allclose(prog.call("predict", x, y), pred, rtol=1e-12)
    prog.interp.attention_log.clear()
    a, b = prog.call("maps", x, y)
    assert a.shape == (2, 4, 3) and b.shape == (2, 4, 4)
    np.testing.assert_allclose(a, alphas, rtol=1e-12)
    np.testing.assert_allclose(b, betas, rtol=1e-12)
    np.testing.assert_allclose(a.sum(-1), 1, rtol=1e-12)
    assert [np.shape(w) for _, w in prog.interp.attention_log] == [(2, 4, 3), (2, 4, 4)]  # what `dpl attention` draws


def test_darnn_gradients(darnn):
    prog, p = darnn
    rng = np.random.default_rng(48)
    x, y, target = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4)), rng.normal(size=2)
    check_grads(prog, "loss", [x, y, target], [0, 1])
    assert set(p) <= assert_gradcheck(prog, "loss", x, y, target)


# ---- Seq2Seq ----------------------------------------------------------------------------------------------

S2S_SRC = """
use attention
s2s = Seq2Seq(7, 3, 4)
plain = Seq2Seq(7, 3, 4, with_attention = false)
fn logits(src, tgt, valid) = s2s.logits(src, tgt, valid)
fn greedy(src, valid, T) = s2s.greedy(src, valid, 6, T)
fn plain_logits(src, tgt, valid) = plain.logits(src, tgt, valid)
fn plain_greedy(src, valid, T) = plain.greedy(src, valid, 6, T)
fn weights(src, tgt, valid) = s2s.weights(src, tgt, valid)
fn loss(src, tgt, valid, out) = cross_entropy(s2s.logits(src, tgt, valid), out)
fn plain_loss(src, tgt, valid, out) = cross_entropy(plain.logits(src, tgt, valid), out)
"""


@pytest.fixture(scope="module")
def s2s(tmp_path_factory):
    return load_random(tmp_path_factory.mktemp("s2s"), S2S_SRC, seed=49)


def np_seq2seq(p, pre, src, tgt, valid, attention):
    E, F = p[pre + "src_emb.E"], p[pre + "tgt_emb.E"]
    lstm = {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)}
    zero = np.zeros((src.shape[0], 4))
    hs, h, c = np_lstm(lstm, "enc.", E[src].transpose(1, 0, 2), zero, zero)
    D = np_lstm(lstm, "dec.", F[tgt].transpose(1, 0, 2), h, c)[0].transpose(1, 0, 2)
    Hs = hs.transpose(1, 0, 2)
    if attention:
        s = np.where(valid[:, None, :], D @ p[pre + "att.W"] @ Hs.transpose(0, 2, 1), -np.inf)
        ctx = softmax(s) @ Hs
    else:
        ctx = np.broadcast_to(h[:, None, :], D.shape)
    o = np.tanh(np.concatenate([ctx, D], -1) @ p[pre + "combine.W"] + p[pre + "combine.b"])
    return o @ p[pre + "out.W"] + p[pre + "out.b"]


def test_seq2seq_matches_numpy_and_greedy_decoding_agrees(s2s):
    prog, p = s2s
    rng = np.random.default_rng(50)
    src, tgt = rng.integers(0, 6, size=(3, 5)), rng.integers(0, 7, size=(3, 4))
    valid = np.ones((3, 5), bool)
    valid[1, 3:] = valid[2, 4:] = False
    for name, pre, attention in (("logits", "s2s.", True), ("plain_logits", "plain.", False)):
        np.testing.assert_allclose(prog.call(name, src, tgt, valid), np_seq2seq(p, pre, src, tgt, valid, attention),
                                   rtol=1e-12, atol=1e-12)
        # greedy decoding is teacher forcing on its own outputs: each token is the argmax there
        ys = prog.call(name.replace("logits", "greedy"), src, valid, 4)
        fed = np.concatenate([np.full((3, 1), 6), ys[:, :-1]], axis=1)
        np.testing.assert_array_equal(prog.call(name, src, fed, valid).argmax(-1), ys)
    w = prog.call("weights", src, tgt, valid)
    assert w.shape == (3, 4, 5) and np.all(w[1, :, 3:] == 0)
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-12)


def test_seq2seq_gradients(s2s):
    prog, p = s2s
    rng = np.random.default_rng(51)
    src, tgt, out = rng.integers(0, 6, size=(2, 3)), rng.integers(0, 7, size=(2, 2)), rng.integers(0, 7, size=(2, 2))
    valid = np.array([[True, True, True], [True, True, False]])
    assert {k for k in p if k.startswith("s2s.")} <= assert_gradcheck(prog, "loss", src, tgt, valid, out)
    assert {k for k in p if k.startswith("plain.") and ".att." not in k} <= \
        assert_gradcheck(prog, "plain_loss", src, tgt, valid, out)

