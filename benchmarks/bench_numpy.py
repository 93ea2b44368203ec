"""NumPy with gradients written by hand, float64: the same forward passes as the other frameworks and their
backward passes derived on paper (checked against finite differences by `python bench_numpy.py`).
Plain code: new temporaries every step, no buffer reuse (see WORKLOADS.md on glibc's malloc)."""
from __future__ import annotations

import math

import numpy as np

import workloads as W


def sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709 gives 0, as it should
        return 1.0 / (1.0 + np.exp(-x))


def cannon(P, t, test=False):
    h1 = np.tanh(t @ P["W1"] + P["b1"])
    h2 = np.tanh(h1 @ P["W2"] + P["b2"])
    o = h2 @ P["W3"] + P["b3"]
    s0, s1 = sigmoid(o[:, 0]), sigmoid(o[:, 1])
    v, theta = 10 * s0, math.pi / 2 * s1
    sin2 = np.sin(2 * theta)
    d = v ** 2 * sin2 / 9.81
    if test:
        return np.mean(np.abs(d - t[:, 0]))
    r = d - t[:, 0]
    loss = np.mean(r ** 2)
    dd = 2 * r / r.size
    dv = dd * 2 * v * sin2 / 9.81
    dtheta = dd * v ** 2 * 2 * np.cos(2 * theta) / 9.81
    do = np.stack([dv * 10 * s0 * (1 - s0), dtheta * math.pi / 2 * s1 * (1 - s1)], axis=1)
    da2 = (do @ P["W3"].T) * (1 - h2 ** 2)
    da1 = (da2 @ P["W2"].T) * (1 - h1 ** 2)
    G = {"W1": t.T @ da1, "b1": da1.sum(0), "W2": h1.T @ da2, "b2": da2.sum(0),
         "W3": h2.T @ do, "b3": do.sum(0)}
    return loss, G


def lstm(P, x, y):
    T, B, H = 50, 32, 64
    h, c = np.zeros((B, H)), np.zeros((B, H))
    hs, cs, gates = [h], [c], []
    for t in range(T):
        z = x[t] @ P["Wx"] + h @ P["Wh"] + P["b"]
        i, f, o = sigmoid(z[:, 0:H]), sigmoid(z[:, H:2 * H]), sigmoid(z[:, 3 * H:4 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        c = f * c + i * g
        tc = np.tanh(c)
        h = o * tc
        hs.append(h)
        cs.append(c)
        gates.append((i, f, g, o, tc))
    Hs = np.stack(hs[1:])
    pred = Hs @ P["Wy"] + P["by"]
    r = pred - y
    loss = np.mean(r ** 2)
    dpred = 2 * r / r.size
    G = {"Wy": Hs.reshape(-1, H).T @ dpred.reshape(-1, 1), "by": dpred.sum((0, 1))}
    dHs = dpred @ P["Wy"].T
    dWx, dWh, db = np.zeros_like(P["Wx"]), np.zeros_like(P["Wh"]), np.zeros_like(P["b"])
    dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
    WhT = P["Wh"].T
    for t in reversed(range(T)):
        i, f, g, o, tc = gates[t]
        dh = dHs[t] + dh_next
        dc = dh * o * (1 - tc ** 2) + dc_next
        dz = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f), dc * i * (1 - g ** 2),
                             dh * tc * o * (1 - o)], axis=1)
        dWx += x[t].T @ dz
        dWh += hs[t].T @ dz
        db += dz.sum(0)
        dh_next = dz @ WhT
        dc_next = dc * f
    G.update(Wx=dWx, Wh=dWh, b=db)
    return loss, G


def selfattn(P, x, y):
    d = 64
    Q, K, V = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
    S = Q @ K.transpose(0, 2, 1) / math.sqrt(d)
    S = S - S.max(-1, keepdims=True)
    A = np.exp(S)
    A /= A.sum(-1, keepdims=True)
    AV = A @ V
    out = AV @ P["Wo"]
    r = out - y
    loss = np.mean(r ** 2)
    dout = 2 * r / r.size
    dAV = dout @ P["Wo"].T
    dA = dAV @ V.transpose(0, 2, 1)
    dV = A.transpose(0, 2, 1) @ dAV
    dS = A * (dA - (dA * A).sum(-1, keepdims=True)) / math.sqrt(d)
    dQ = dS @ K
    dK = dS.transpose(0, 2, 1) @ Q
    xf = x.reshape(-1, d).T
    G = {"Wq": xf @ dQ.reshape(-1, d), "Wk": xf @ dK.reshape(-1, d), "Wv": xf @ dV.reshape(-1, d),
         "Wo": AV.reshape(-1, d).T @ dout.reshape(-1, d)}
    return loss, G


def memnet(P, mem, q, y):
    m, c, u = mem @ P["A"], mem @ P["C"], q @ P["B"]
    sc = (m @ u[:, :, None])[:, :, 0]
    sc = sc - sc.max(1, keepdims=True)
    p = np.exp(sc)
    p /= p.sum(1, keepdims=True)
    o = (p[:, None, :] @ c)[:, 0, :]
    z = o + u
    pred = z @ P["W"]
    r = pred - y
    loss = np.mean(r ** 2)
    dpred = 2 * r / r.size
    dz = dpred @ P["W"].T
    dp = (c @ dz[:, :, None])[:, :, 0]
    dc = p[:, :, None] * dz[:, None, :]
    dsc = p * (dp - (dp * p).sum(1, keepdims=True))
    dm = dsc[:, :, None] * u[:, None, :]
    du = dz + (dsc[:, None, :] @ m)[:, 0, :]
    memf = mem.reshape(-1, 8).T
    G = {"A": memf @ dm.reshape(-1, 32), "B": q.T @ du, "C": memf @ dc.reshape(-1, 32), "W": z.T @ dpred}
    return loss, G


def neural_ode(P, h0, target):
    W1, b1, W2, b2 = P["W1"], P["b1"], P["W2"], P["b2"]
    dt = 0.01
    h, tape = h0, []
    for _ in range(100):
        y1 = h
        a1 = np.tanh(y1 @ W1 + b1)
        k1 = a1 @ W2 + b2
        y2 = h + dt / 2 * k1
        a2 = np.tanh(y2 @ W1 + b1)
        k2 = a2 @ W2 + b2
        y3 = h + dt / 2 * k2
        a3 = np.tanh(y3 @ W1 + b1)
        k3 = a3 @ W2 + b2
        y4 = h + dt * k3
        a4 = np.tanh(y4 @ W1 + b1)
        k4 = a4 @ W2 + b2
        tape.append(((y1, a1), (y2, a2), (y3, a3), (y4, a4)))
        h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    r = h - target
    loss = np.sum(r ** 2) / r.shape[0]
    gh = 2 * r / r.shape[0]
    G = {k: np.zeros_like(v) for k, v in P.items()}
    W1T, W2T = W1.T, W2.T

    def f_vjp(y, a, dk):
        G["W2"] += a.T @ dk
        G["b2"] += dk.sum(0)
        da = (dk @ W2T) * (1 - a ** 2)
        G["W1"] += y.T @ da
        G["b1"] += da.sum(0)
        return da @ W1T

    for (y1, a1), (y2, a2), (y3, a3), (y4, a4) in reversed(tape):
        dh = gh
        dk1, dk2, dk3, dk4 = dt / 6 * gh, dt / 3 * gh, dt / 3 * gh, dt / 6 * gh
        dy = f_vjp(y4, a4, dk4)
        dh = dh + dy
        dk3 = dk3 + dt * dy
        dy = f_vjp(y3, a3, dk3)
        dh = dh + dy
        dk2 = dk2 + dt / 2 * dy
        dy = f_vjp(y2, a2, dk2)
        dh = dh + dy
        dk1 = dk1 + dt / 2 * dy
        gh = dh + f_vjp(y1, a1, dk1)
    return loss, G


def taylor_value_and_grad(x: float) -> tuple[float, float]:
    """s(x) and s'(x), the derivative accumulated alongside the value (plain floats)."""
    t, dt, sign = 0.0, 0.0, -1.0
    for i in range(1, 20):
        if i % 2 == 1:
            fact = math.factorial(i)
            newterm = x ** i / fact
            if abs(newterm) < 1e-8:
                return t, dt
            sign = -sign
            t = t + sign * newterm
            dt = dt + sign * (i * x ** (i - 1) / fact)
    return t, dt


FUNCS = {"cannon": cannon, "lstm": lstm, "selfattn": selfattn, "memnet": memnet, "neural_ode": neural_ode}
DATA = {"lstm": ["x", "y"], "selfattn": ["x", "y"], "memnet": ["mem", "q", "y"], "neural_ode": ["h0", "target"]}


class Runner:
    def __init__(self, name: str, steps: int):
        self.name, self.i = name, 0
        self.P, self.D = W.draw(name, steps)
        if name != "taylor_sin":
            _, self.opt, self.lr = W.SPEC[name]
            self.m = {k: 0.0 for k in self.P}
            self.v = {k: 0.0 for k in self.P}

    def step(self):
        name, P = self.name, self.P
        if name == "taylor_sin":
            return taylor_value_and_grad(self.D["x"])
        if name == "cannon":
            loss, G = cannon(P, self.D["targets"][self.i])
        else:
            loss, G = FUNCS[name](P, *(self.D[k] for k in DATA[name]))
        self.i += 1
        lr = self.lr
        if self.opt == "sgd":
            for k, g in G.items():
                P[k] = P[k] - lr * g
        else:
            t = self.i
            for k, g in G.items():
                m = self.m[k] = 0.9 * self.m[k] + 0.1 * g
                v = self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
                P[k] = P[k] - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        return float(loss)

    def extra(self) -> dict:
        if self.name == "cannon":
            return {"test_mae_m": float(cannon(self.P, self.D["test"], test=True))}
        return {}


def build(name: str, steps: int, **_):
    return Runner(name, steps)


def _gradcheck() -> None:
    """Each hand-written gradient against central differences on a few random coordinates."""
    rng = np.random.default_rng(5)
    for name, fn in FUNCS.items():
        P, D = W.draw(name, 2)
        args = [D["targets"][0]] if name == "cannon" else [D[k] for k in DATA[name]]
        _, G = fn(P, *args)
        worst = 0.0
        for k in P:
            for _ in range(3):
                idx = tuple(rng.integers(0, n) for n in P[k].shape)
                eps = 1e-6
                old = P[k][idx]
                P[k][idx] = old + eps
                lp = fn(P, *args)[0]
                P[k][idx] = old - eps
                lm = fn(P, *args)[0]
                P[k][idx] = old
                fd = (lp - lm) / (2 * eps)
                worst = max(worst, abs(fd - G[k][idx]) / max(1.0, abs(fd)))
        print(f"{name}: max relative error {worst:.2e}")
    v, d = taylor_value_and_grad(1.0)
    print(f"taylor_sin: s(1) = {v!r}, s'(1) = {d!r}")


if __name__ == "__main__":
    _gradcheck()
