"""DPL on the workloads: benchmarks/programs/NAME.dpl loaded with dpl.load, driven step by step from Python
with dpl.train.loss_and_grads and a plain SGD/Adam update on interp.params (the update of WORKLOADS.md).
`build(..., replay=False)` turns replay off (dpl.replay.enabled), so every step is recorded afresh."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import dpl
import dpl.replay
from dpl.graph import raw
from dpl.train import loss_and_grads

import workloads as W

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
DATA_NAMES = {"cannon": ["targets"], "lstm": ["x", "y"], "selfattn": ["x", "y"], "taylor_sin": [],
              "memnet": ["mem", "q", "y"], "neural_ode": ["h0", "target"], "pendulum": ["y0", "ts"]}


def check_draws(name: str, interp) -> None:
    """The program's parameters and data must be exactly what WORKLOADS.md's draw order gives."""
    params, data = W.draw(name)
    if list(interp.params) != list(params):
        raise AssertionError(f"{name}: DPL declares {list(interp.params)}, expected {list(params)}")
    for k, v in params.items():
        if not np.array_equal(np.asarray(interp.params[k]), v):
            raise AssertionError(f"{name}: DPL's initial {k} differs from the WORKLOADS.md draw")
    for k in DATA_NAMES[name]:
        got = np.asarray(raw(interp.globals[k]))
        if got.shape != data[k].shape or not np.allclose(got, data[k], rtol=0, atol=1e-15):
            raise AssertionError(f"{name}: DPL's data `{k}` differs from the WORKLOADS.md draw "
                                 f"(max |diff| {np.max(np.abs(got - data[k])) if got.shape == data[k].shape else 'shape'})")


class Runner:
    def __init__(self, name: str, steps: int):
        self.name = name
        self.prog = dpl.load(PROGRAMS / f"{name}.dpl", stdout=io.StringIO())
        self.interp = interp = self.prog.interp
        check_draws(name, interp)
        self.i = 0
        if name == "taylor_sin":
            self.fn, self.x = self.prog.function("step"), np.asarray(1.0)
            return
        self.loss = self.prog.function("loss")
        _, self.opt, self.lr = W.SPEC[name]
        self.m = {k: 0.0 for k in interp.params}
        self.v = {k: 0.0 for k in interp.params}
        self.targets = interp.globals.get("targets")

    def step(self):
        interp = self.interp
        if self.name == "taylor_sin":
            v, g = interp.call(self.fn, [self.x], {}, None)
            return float(raw(v)), float(raw(g))
        args = [self.targets[self.i]] if self.name == "cannon" else []
        self.i += 1
        loss, grads = loss_and_grads(interp, self.loss, args, None)
        params, lr = interp.params, self.lr
        if self.opt == "sgd":
            for k, g in grads.items():
                params[k] = params[k] - lr * g
        else:  # Adam as torch.optim.Adam's defaults: β = (0.9, 0.999), ε = 1e-8, bias corrected
            t = self.i
            for k, g in grads.items():
                m = self.m[k] = 0.9 * self.m[k] + 0.1 * g
                v = self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
                params[k] = params[k] - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        return loss

    def extra(self) -> dict:
        if self.name == "cannon":
            _, data = W.draw("cannon", 1)
            return {"test_mae_m": float(self.prog.call("test_mae", data["test"]))}
        return {}


def build(name: str, steps: int, replay: bool = True, **_):
    dpl.replay.enabled = replay
    return Runner(name, steps)


def cli_run(name: str, steps: int, env=None, threads: int = 1) -> dict:
    """`dpl train benchmarks/programs/NAME.dpl --quiet --metrics M` in a subprocess: ms/step is the train block's
    seconds over its steps (a mean, progress and finiteness checks included), final loss from --metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics, out = Path(tmp) / "m.json", Path(tmp) / "p.npz"
        cmd = [sys.executable, "-m", "dpl.cli", "train", str(PROGRAMS / f"{name}.dpl"), "--quiet",
               "--metrics", str(metrics), "--out", str(out), "--threads", str(threads)]
        if name != "cannon":
            cmd += ["--epochs", str(steps)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"dpl train failed ({r.returncode}): {r.stderr[-2000:]}")
        m = json.loads(metrics.read_text())
    block = m["blocks"][0]
    return {"ms_per_step": 1000 * block["seconds"] / block["steps"], "steps": block["steps"],
            "final_loss": block["final_loss"]}
