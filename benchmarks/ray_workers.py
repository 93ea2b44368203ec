"""`dpl train --workers 2` on this machine (issue 13): the speed-up over one process on an MLP whose steps are
big enough to share, and the communication overhead per step against the size of the gradients.

    python benchmarks/ray_workers.py [--json FILE]     (needs pip install 'dpl[ray]')

Both run `dpl train` in this process against one local Ray (2 CPUs), so Ray's start (~10 s) is paid once and
left out. ms/step is the median time of the minibatch gradient (Trainer.gradients: in one process, or sent to the
replicas and averaged) over the steps after the first, whose time includes starting the actors and running the
program up to the train block in each (reported apart, as setup); the optimizer step, the same either way, is
not in it. The overhead is measured on a loss that costs
almost nothing (mean(W ^ 2) over P parameters): ms/step with --workers 2 minus ms/step in one process. Per step
the driver puts the P parameters once in the object store and each of the 2 replicas sends back P gradients,
so 3 × 8P bytes cross process boundaries (all on this one machine: shared memory, no network)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MLP = """\
param W1: [64, 256] ~ glorot
param b1: [256] ~ zeros
param W2: [256, 256] ~ glorot
param b2: [256] ~ zeros
param W3: [256, 1] ~ glorot
xs = normal(0, 1, [8192, 64])
ys = sin(xs[:, 0:1]) + xs[:, 1:2] * xs[:, 2:3]
fn net(x) = tanh(tanh(x @ W1 + b1) @ W2 + b2) @ W3
fn fit(x, y) = mean((net(x) - y) ^ 2)
train fit over xs, ys {
    optimizer = adam(lr = 0.001)
    epochs = EPOCHS
    batch = 2048
}
"""

TINY = """\
param W: [P] ~ glorot
xs = zeros([64, 1])
fn fit(x) = mean(W ^ 2) + mean(x)
train fit over xs {
    optimizer = sgd(lr = 0.01)
    epochs = 60
    batch = 64
}
"""


def ms_per_step(d: Path, source: str, *extra) -> tuple[float, float]:
    """(median ms of a minibatch gradient after the first, ms of the first) under `dpl train` on `source`."""
    import dpl.distributed
    import dpl.train
    from dpl.cli import main
    times = []

    def timed(real):
        def gradients(*args):
            t = time.perf_counter()
            try:
                return real(*args)
            finally:
                times.append(1000 * (time.perf_counter() - t))
        return gradients
    kinds = (dpl.train.Trainer, dpl.distributed.DataParallelTrainer)
    reals = [k.gradients for k in kinds]
    for k, real in zip(kinds, reals):
        k.gradients = timed(real)
    try:
        (d / "p.dpl").write_text(source)
        with contextlib.redirect_stderr(io.StringIO()):  # dpl's line per epoch
            assert main(["train", str(d / "p.dpl"), "--quiet", "--out", str(d / "p.npz"), *map(str, extra)]) == 0
    finally:
        for k, real in zip(kinds, reals):
            k.gradients = real
    return statistics.median(times[1:]), times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the MLP (4 steps each)")
    args = ap.parse_args()
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        mlp = MLP.replace("EPOCHS", str(args.epochs))
        ms_per_step(d, mlp.replace(f"epochs = {args.epochs}", "epochs = 1"))  # warm up (imports, BLAS)
        one = ms_per_step(d, mlp)
        two = ms_per_step(d, mlp, "--workers", 2)
        out["mlp"] = {"steps": 4 * args.epochs, "one_ms": one[0], "two_ms": two[0], "speedup": one[0] / two[0],
                      "two_setup_ms": two[1]}
        print(f"MLP 64-256-256-1, batch 2048: one process {one[0]:.1f} ms/step, --workers 2 {two[0]:.1f} ms/step "
              f"(speed-up {one[0] / two[0]:.2f}×; setup of the replicas {two[1]:.0f} ms)", file=sys.stderr)
        out["overhead"] = []
        for p in (100, 10_000, 100_000, 1_000_000):
            prog = TINY.replace("P", str(p))
            a = ms_per_step(d, prog)[0]
            b = ms_per_step(d, prog, "--workers", 2)[0]
            row = {"params": p, "mb_per_step": 3 * 8 * p / 1e6, "one_ms": a, "two_ms": b, "overhead_ms": b - a}
            out["overhead"].append(row)
            print(f"P = {p:>9,}: {row['mb_per_step']:7.3f} MB/step, one process {a:7.2f} ms, --workers 2 "
                  f"{b:7.2f} ms, overhead {b - a:7.2f} ms/step", file=sys.stderr)
    out["load_after"] = os.getloadavg()
    ray.shutdown()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
