"""PyTorch eager on the workloads (float64, autograd, torch.optim.SGD / torch.optim.Adam defaults);
`lstm_nn` is the lstm workload through torch.nn.LSTM with the same weights (bias_hh frozen at 0)."""
from __future__ import annotations

import math

import torch

import workloads as W

torch.set_default_dtype(torch.float64)


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def cannon_distance(P, tt):
    h1 = torch.tanh(tt @ P["W1"] + P["b1"])
    h2 = torch.tanh(h1 @ P["W2"] + P["b2"])
    o = h2 @ P["W3"] + P["b3"]
    v = 10 * torch.sigmoid(o[:, 0])
    theta = math.pi / 2 * torch.sigmoid(o[:, 1])
    return v ** 2 * torch.sin(2 * theta) / 9.81


def lstm_pred(P, x):
    h = torch.zeros(32, 64)
    c = torch.zeros(32, 64)
    hs = []
    for i in range(50):
        z = x[i] @ P["Wx"] + h @ P["Wh"] + P["b"]
        c = torch.sigmoid(z[:, 64:128]) * c + torch.sigmoid(z[:, 0:64]) * torch.tanh(z[:, 128:192])
        h = torch.sigmoid(z[:, 192:256]) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs) @ P["Wy"] + P["by"]


def selfattn_out(P, x):
    Q, K, V = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
    A = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(64), dim=-1)
    return (A @ V) @ P["Wo"]


def memnet_pred(P, mem, q):
    m, c, u = mem @ P["A"], mem @ P["C"], q @ P["B"]
    p = torch.softmax((m @ u[:, :, None])[:, :, 0], dim=1)
    o = (p[:, None, :] @ c)[:, 0, :]
    return (o + u) @ P["W"]


def ode_final(P, h):
    def f(h):
        return torch.tanh(h @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"]
    dt = 0.01
    for _ in range(100):
        k1 = f(h)
        k2 = f(h + dt / 2 * k1)
        k3 = f(h + dt / 2 * k2)
        k4 = f(h + dt * k3)
        h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return h


def pendulum_path(a, c, y0, ts):
    """y at every ts: odeint's RK4 as DPL computes it (dpl/primitives.py `_fixed`), 10 steps per interval;
    the first interval [ts[0], ts[0]] is empty, so y(ts[0]) = y0."""
    def f(y):
        return torch.stack([y[1], -a * torch.sin(y[0]) - c * y[1]])
    ys, y = [y0], y0
    for i in range(1, len(ts)):
        h = (ts[i] - ts[i - 1]) / W.PENDULUM["steps"]
        for _ in range(W.PENDULUM["steps"]):
            k1 = f(y)
            k2 = f(y + h * (0.5 * k1))
            k3 = f(y + h * (0.5 * k2))
            k4 = f(y + h * (1.0 * k3))
            y = y + h * (1 / 6 * k1 + 1 / 3 * k2 + 1 / 3 * k3 + 1 / 6 * k4)
        ys.append(y)
    return torch.stack(ys)


def taylor_s(x):
    tt, sign = torch.zeros((), dtype=torch.float64), -1.0
    for i in range(1, 20):
        if i % 2 == 1:
            newterm = x ** i / math.factorial(i)
            if abs(newterm) < 1e-8:
                return tt
            sign = -sign
            tt = tt + sign * newterm
    return tt


class Runner:
    def __init__(self, name: str, steps: int):
        self.name, self.i = name, 0
        params, data = W.draw("lstm" if name == "lstm_nn" else name, steps)
        self.D = {k: t(v) if not isinstance(v, float) else v for k, v in data.items()}
        if name == "taylor_sin":
            return
        if name == "lstm_nn":
            lstm = torch.nn.LSTM(8, 64)
            with torch.no_grad():
                lstm.weight_ih_l0.copy_(t(params["Wx"].T))
                lstm.weight_hh_l0.copy_(t(params["Wh"].T))
                lstm.bias_ih_l0.copy_(t(params["b"]))
                lstm.bias_hh_l0.zero_()
            lstm.bias_hh_l0.requires_grad_(False)
            self.lstm = lstm
            self.P = {"Wy": t(params["Wy"], True), "by": t(params["by"], True)}
            plist = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, *self.P.values()]
        else:
            self.P = {k: t(v, True) for k, v in params.items()}
            plist = list(self.P.values())
        if name == "cannon":
            self.batches = list(self.D["targets"].unbind(0))
        if name == "pendulum":
            self.ts = data["ts"].tolist()
            with torch.no_grad():
                self.D["observed"] = pendulum_path(*map(t, W.PENDULUM["true"]), self.D["y0"], self.ts)
        _, opt, lr = W.SPEC["lstm" if name == "lstm_nn" else name]
        self.opt = torch.optim.Adam(plist, lr=lr) if opt == "adam" else torch.optim.SGD(plist, lr=lr)

    def loss(self):
        P, D, name = self.P, self.D, self.name
        if name == "cannon":
            tt = self.batches[self.i]
            return torch.mean((cannon_distance(P, tt) - tt[:, 0]) ** 2)
        if name == "lstm":
            return torch.mean((lstm_pred(P, D["x"]) - D["y"]) ** 2)
        if name == "lstm_nn":
            hs, _ = self.lstm(D["x"])
            return torch.mean((hs @ P["Wy"] + P["by"] - D["y"]) ** 2)
        if name == "selfattn":
            return torch.mean((selfattn_out(P, D["x"]) - D["y"]) ** 2)
        if name == "memnet":
            return torch.mean((memnet_pred(P, D["mem"], D["q"]) - D["y"]) ** 2)
        if name == "neural_ode":
            return torch.mean(torch.sum((ode_final(P, D["h0"]) - D["target"]) ** 2, dim=1))
        if name == "pendulum":
            return torch.mean((pendulum_path(P["a"], P["c"], D["y0"], self.ts) - D["observed"]) ** 2)
        raise KeyError(name)

    def step(self):
        if self.name == "taylor_sin":
            x = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
            v = taylor_s(x)
            (g,) = torch.autograd.grad(v, x)
            return v.item(), g.item()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        self.i += 1
        return loss.item()

    def extra(self) -> dict:
        if self.name == "cannon":
            with torch.no_grad():
                test = self.D["test"]
                return {"test_mae_m": torch.mean(torch.abs(cannon_distance(self.P, test) - test[:, 0])).item()}
        return {}


def build(name: str, steps: int, **_):
    return Runner(name, steps)
