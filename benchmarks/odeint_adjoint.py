"""Memory and time of a gradient through `odeint`: the taped solve against `adjoint = true` (Chen et al. 2018),
for a growing number of RK4 steps.

    python benchmarks/odeint_adjoint.py [--steps 100 200 400 800 1600] [--repeat 3] [--json]

The model is a neural ODE dy/dt = tanh(y W1 + b1) W2 + b2 on a batch [32, 8] with 32 hidden units, over
t ∈ [0, 1]; one measurement is the loss mean(y(1)²) and its gradient w.r.t. every parameter (what a training
step computes), with replay off (both would be recorded anyway: the adjoint's recording is tainted). Peak
memory is tracemalloc's peak during the call (numpy's arrays included), after a garbage collection; time is
the median of `--repeat` calls, measured without tracemalloc.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc

import numpy as np

import dpl
from dpl.train import loss_and_grads

SOURCE = """
param W1: [8, 32] ~ glorot
param b1: [32] ~ zeros
param W2: [32, 8] ~ glorot
param b2: [8] ~ zeros
fn f(t, y) = tanh(y @ W1 + b1) @ W2 + b2
fn loss(y0, n, adj) = mean(odeint(f, y0, 0.0, 1.0, steps = n, adjoint = adj) ^ 2)
"""


def measure(prog, y0, n, adjoint, repeat):
    interp, fn = prog.interp, prog.function("loss")

    def call():
        return loss_and_grads(interp, fn, [y0, n, adjoint], None)

    gc.collect()
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return peak / 2 ** 20, statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    prog = dpl.loads(SOURCE, file="odeint_adjoint.dpl")
    prog.interp.replay = False
    prog.interp.max_steps = 10 ** 9
    y0 = np.random.default_rng(0).normal(size=(32, 8))
    rows = []
    for n in args.steps:
        taped = measure(prog, y0, n, False, args.repeat)
        adj = measure(prog, y0, n, True, args.repeat)
        rows.append({"steps": n, "taped_mib": taped[0], "adjoint_mib": adj[0],
                     "taped_s": taped[1], "adjoint_s": adj[1]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| RK4 steps | taped: peak MiB | adjoint: peak MiB | taped: s | adjoint: s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['steps']} | {r['taped_mib']:.1f} | {r['adjoint_mib']:.2f} | {r['taped_s']:.2f} | "
              f"{r['adjoint_s']:.2f} |")


if __name__ == "__main__":
    main()
