"""JAX on the workloads, float64 (jax_enable_x64): one training step = value_and_grad + the update,
under jax.jit (`jax-jit`) or run op by op (`jax-nojit`). Loops are Python loops, unrolled by jit.
taylor_sin under jit runs the early return rewritten as a mask (WORKLOADS.md §4)."""
from __future__ import annotations

import functools
import math

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import workloads as W  # noqa: E402


def cannon_distance(P, t):
    h1 = jnp.tanh(t @ P["W1"] + P["b1"])
    h2 = jnp.tanh(h1 @ P["W2"] + P["b2"])
    o = h2 @ P["W3"] + P["b3"]
    v = 10 * jax.nn.sigmoid(o[:, 0])
    theta = math.pi / 2 * jax.nn.sigmoid(o[:, 1])
    return v ** 2 * jnp.sin(2 * theta) / 9.81


def cannon_loss(P, t):
    return jnp.mean((cannon_distance(P, t) - t[:, 0]) ** 2)


def lstm_loss(P, x, y):
    h = jnp.zeros((32, 64))
    c = jnp.zeros((32, 64))
    hs = []
    for i in range(50):
        z = x[i] @ P["Wx"] + h @ P["Wh"] + P["b"]
        c = jax.nn.sigmoid(z[:, 64:128]) * c + jax.nn.sigmoid(z[:, 0:64]) * jnp.tanh(z[:, 128:192])
        h = jax.nn.sigmoid(z[:, 192:256]) * jnp.tanh(c)
        hs.append(h)
    pred = jnp.stack(hs) @ P["Wy"] + P["by"]
    return jnp.mean((pred - y) ** 2)


def selfattn_loss(P, x, y):
    Q, K, V = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
    A = jax.nn.softmax(Q @ jnp.swapaxes(K, 1, 2) / math.sqrt(64), axis=-1)
    return jnp.mean(((A @ V) @ P["Wo"] - y) ** 2)


def memnet_loss(P, mem, q, y):
    m, c, u = mem @ P["A"], mem @ P["C"], q @ P["B"]
    p = jax.nn.softmax((m @ u[:, :, None])[:, :, 0], axis=1)
    o = (p[:, None, :] @ c)[:, 0, :]
    return jnp.mean(((o + u) @ P["W"] - y) ** 2)


def ode_loss(P, h, target):
    def f(h):
        return jnp.tanh(h @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"]
    dt = 0.01
    for _ in range(100):
        k1 = f(h)
        k2 = f(h + dt / 2 * k1)
        k3 = f(h + dt / 2 * k2)
        k4 = f(h + dt * k3)
        h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return jnp.mean(jnp.sum((h - target) ** 2, axis=1))


def pendulum_path(a, c, y0, ts, scan=False):
    """odeint's RK4 as DPL computes it (as bench_torch.pendulum_path). With `scan` (under jit) the 10 steps of
    an interval and the 20 intervals are lax.scan loops: jit of the 200 unrolled steps had not finished
    compiling after 4 CPU minutes and 6.7 GB."""
    def f(y):
        return jnp.stack([y[1], -a * jnp.sin(y[0]) - c * y[1]])

    def rk4(y, h):
        k1 = f(y)
        k2 = f(y + h * (0.5 * k1))
        k3 = f(y + h * (0.5 * k2))
        k4 = f(y + h * (1.0 * k3))
        return y + h * (1 / 6 * k1 + 1 / 3 * k2 + 1 / 3 * k3 + 1 / 6 * k4)

    n = W.PENDULUM["steps"]
    hs = [(ts[i] - ts[i - 1]) / n for i in range(1, len(ts))]
    if scan:
        def interval(y, h):
            y, _ = jax.lax.scan(lambda y, _: (rk4(y, h), None), y, None, length=n)
            return y, y
        _, ys = jax.lax.scan(interval, y0, jnp.asarray(hs))
        return jnp.concatenate([y0[None], ys])
    ys, y = [y0], y0
    for h in hs:
        for _ in range(n):
            y = rk4(y, h)
        ys.append(y)
    return jnp.stack(ys)


PENDULUM_TS = W.draw("pendulum")[1]["ts"].tolist()


def pendulum_loss(P, y0, observed, scan=False):
    return jnp.mean((pendulum_path(P["a"], P["c"], y0, PENDULUM_TS, scan) - observed) ** 2)


def taylor_s(x):
    """The program as written: Python control flow with a data-dependent early return (no jit)."""
    t, sign = 0.0, -1.0
    for i in range(1, 20):
        if i % 2 == 1:
            newterm = x ** i / math.factorial(i)
            if abs(newterm) < 1e-8:
                return t
            sign = -sign
            t = t + sign * newterm
    return t


def taylor_s_masked(x):
    """The early return as a mask, so jit can trace it: same value and gradient."""
    t, sign, done = jnp.zeros_like(x), -1.0, jnp.zeros((), dtype=bool)
    for i in range(1, 20):
        if i % 2 == 1:
            newterm = x ** i / math.factorial(i)
            done = done | (jnp.abs(newterm) < 1e-8)
            sign = -sign
            t = jnp.where(done, t, t + sign * newterm)
    return t


LOSSES = {"cannon": cannon_loss, "lstm": lstm_loss, "selfattn": selfattn_loss, "memnet": memnet_loss,
          "neural_ode": ode_loss, "pendulum": pendulum_loss}
DATA = {"lstm": ["x", "y"], "selfattn": ["x", "y"], "memnet": ["mem", "q", "y"], "neural_ode": ["h0", "target"]}


def sgd_step(loss, lr):
    def step(P, *data):
        value, g = jax.value_and_grad(loss)(P, *data)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, P, g), value
    return step


def adam_step(loss, lr, b1=0.9, b2=0.999, eps=1e-8):
    def step(P, m, v, t, *data):
        value, g = jax.value_and_grad(loss)(P, *data)
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        P = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps), P, m, v)
        return P, m, v, value
    return step


class Runner:
    def __init__(self, name: str, steps: int, jit: bool):
        self.name, self.i = name, 0
        wrap = jax.jit if jit else (lambda f: f)
        params, data = W.draw(name, steps)
        if name == "taylor_sin":
            self.x = jnp.asarray(1.0)
            self.vg = wrap(jax.value_and_grad(taylor_s_masked if jit else taylor_s))
            return
        self.P = {k: jnp.asarray(v) for k, v in params.items()}
        _, opt, lr = W.SPEC[name]
        loss = LOSSES[name]
        if name == "pendulum" and jit:
            loss = functools.partial(pendulum_loss, scan=True)
        if opt == "adam":
            self.fn = wrap(adam_step(loss, lr))
            self.m = jax.tree_util.tree_map(jnp.zeros_like, self.P)
            self.v = jax.tree_util.tree_map(jnp.zeros_like, self.P)
        else:
            self.fn = wrap(sgd_step(loss, lr))
        if name == "cannon":
            self.batches = [jnp.asarray(b) for b in data["targets"]]
            self.test = jnp.asarray(data["test"])
        elif name == "pendulum":
            y0 = jnp.asarray(data["y0"])
            self.data = [y0, pendulum_path(*map(jnp.float64, W.PENDULUM["true"]), y0, PENDULUM_TS)]
        else:
            self.data = [jnp.asarray(data[k]) for k in DATA[name]]

    def step(self):
        if self.name == "taylor_sin":
            v, g = self.vg(self.x)
            return float(v), float(g)
        if self.name in ("cannon", "pendulum"):  # Adam
            self.i += 1
            data = [self.batches[self.i - 1]] if self.name == "cannon" else self.data
            self.P, self.m, self.v, loss = self.fn(self.P, self.m, self.v, jnp.float64(self.i), *data)
        else:
            self.P, loss = self.fn(self.P, *self.data)
        return float(loss)

    def extra(self) -> dict:
        if self.name == "cannon":
            return {"test_mae_m": float(jnp.mean(jnp.abs(cannon_distance(self.P, self.test) - self.test[:, 0])))}
        return {}


def build(name: str, steps: int, jit: bool = True, **_):
    return Runner(name, steps, jit)
