"""The six workloads of shared/benchmarks/WORKLOADS.md, and issue 9's `pendulum`, as data: sizes, step counts,
optimizers, and the parameters and data drawn from np.random.default_rng(0) in the order listed there
(parameters first; pendulum draws nothing: its observations come from an ODE solve each peer does itself).

Every peer implementation (torch, jax, numpy) starts from `draw(name, steps)`; the DPL programs in
benchmarks/programs/ draw the same arrays themselves and bench_dpl.py checks that they agree bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

# name -> (steps, optimizer, lr); taylor_sin has no parameters and no update
SPEC = {
    "cannon": (2000, "adam", 1e-2),
    "lstm": (100, "sgd", 0.1),
    "selfattn": (200, "sgd", 0.5),
    "taylor_sin": (2000, None, None),
    "memnet": (500, "sgd", 0.01),
    "neural_ode": (40, "sgd", 0.1),
    "pendulum": (30, "adam", 0.05),
}
QUICK_STEPS = {"cannon": 200, "lstm": 5, "selfattn": 20, "taylor_sin": 200, "memnet": 50, "neural_ode": 3,
               "pendulum": 5}
NAMES = list(SPEC)

# parameter names in draw order (biases included where they sit; they draw nothing)
PARAMS = {
    "cannon": ["W1", "b1", "W2", "b2", "W3", "b3"],
    "lstm": ["Wx", "Wh", "b", "Wy", "by"],
    "selfattn": ["Wq", "Wk", "Wv", "Wo"],
    "taylor_sin": [],
    "memnet": ["A", "B", "C", "W"],
    "neural_ode": ["W1", "b1", "W2", "b2"],
    "pendulum": ["a", "c"],
}

# pendulum: y'' = -a sin(y) - c y', fitted to observations at ts from the true (a, c) by RK4, 10 steps per interval
PENDULUM = {"true": (9.81, 0.3), "steps": 10}


def glorot(rng, n_in, n_out):
    a = math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-a, a, (n_in, n_out))


def draw(name: str, steps: int | None = None) -> tuple[dict, dict]:
    """(params, data) as float64 numpy arrays, drawn as WORKLOADS.md lists them."""
    rng = np.random.default_rng(0)
    z = np.zeros
    if name == "cannon":
        steps = SPEC[name][0] if steps is None else steps
        p = {"W1": glorot(rng, 1, 32), "b1": z(32), "W2": glorot(rng, 32, 32), "b2": z(32),
             "W3": glorot(rng, 32, 2), "b3": z(2)}
        d = {"targets": rng.uniform(1, 10, (steps, 256, 1)),
             "test": np.random.default_rng(1).uniform(1, 10, (1000, 1))}
    elif name == "lstm":
        p = {"Wx": glorot(rng, 8, 256), "Wh": glorot(rng, 64, 256), "b": z(256),
             "Wy": glorot(rng, 64, 1), "by": z(1)}
        d = {"x": rng.standard_normal((50, 32, 8)), "y": rng.standard_normal((50, 32, 1))}
    elif name == "selfattn":
        p = {k: glorot(rng, 64, 64) for k in ("Wq", "Wk", "Wv", "Wo")}
        d = {"x": rng.standard_normal((16, 128, 64)), "y": rng.standard_normal((16, 128, 64))}
    elif name == "taylor_sin":
        p, d = {}, {"x": 1.0}
    elif name == "memnet":
        p = {k: glorot(rng, 8, 32) for k in ("A", "B", "C")}
        p["W"] = glorot(rng, 32, 1)
        s = 0.1 * np.cumsum(rng.standard_normal((64, 109)), axis=1)
        idx = np.arange(100)[:, None] + np.arange(8)[None, :]
        d = {"mem": s[:, idx], "q": s[:, 100:108], "y": s[:, 108:109]}
    elif name == "neural_ode":
        p = {"W1": glorot(rng, 2, 32), "b1": z(32), "W2": glorot(rng, 32, 2), "b2": z(2)}
        h0 = rng.standard_normal((64, 2))
        c, s = math.cos(1.0), math.sin(1.0)
        d = {"h0": h0, "target": h0 @ np.array([[c, s], [-s, c]])}
    elif name == "pendulum":
        p = {"a": np.asarray(5.0), "c": np.asarray(0.1)}
        d = {"y0": np.array([1.0, 0.0]), "ts": np.linspace(0.0, 4.0, 21)}
    else:
        raise KeyError(name)
    return p, d

