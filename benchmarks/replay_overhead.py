"""Replay's overhead per node on a graph of tiny scalar ops (issue 9's target: ≤ 2 µs per node, forward and
backward), against the same call recorded afresh (replay off).

    python benchmarks/replay_overhead.py [--iters 500] [--calls 200] [--json]

The graph is `chain(x)`: ITERS times x = sin(x) * 0.999 + 0.001 on a 0-d float64, so the numpy work per node
is as small as it gets and what is left is the cost of running the plan (or the interpreter). One call is
`grad(chain)(x)` at a new x each time; µs/node = median seconds per call / nodes in `prog.trace("chain", x)`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import dpl
import dpl.replay

SOURCE = """
fn chain(x) {
    for i in range(ITERS) {
        x = sin(x) * 0.999 + 0.001
    }
    return x
}
"""


def per_call(g, calls: int, x0: float) -> float:
    """Median seconds of one grad call, at a different x each call (a plan must not depend on it)."""
    times = []
    for k in range(calls):
        x = x0 + 1e-3 * k
        t = time.perf_counter()
        g(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(iters: int = 500, calls: int = 200) -> dict:
    prog = dpl.loads(SOURCE.replace("ITERS", str(iters)))
    graph = prog.trace("chain", 0.5)
    nodes = graph.n - graph.l
    out = {"iters": iters, "calls": calls, "nodes": nodes}
    for name, on in (("replay", True), ("record", False)):
        dpl.replay.enabled = on
        g = prog.grad("chain")
        for k in range(3):  # two recordings make the plan; the third call is the first replay
            g(0.3 + 0.01 * k)
        s = per_call(g, calls if on else max(calls // 10, 5), 0.4)
        out[f"{name}_us_per_call"] = 1e6 * s
        out[f"{name}_us_per_node"] = 1e6 * s / nodes
    dpl.replay.enabled = True
    out["speedup"] = out["record_us_per_node"] / out["replay_us_per_node"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=500, help="loop iterations in chain (default 500)")
    ap.add_argument("--calls", type=int, default=200, help="timed grad calls with replay (a tenth without)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    r = measure(args.iters, args.calls)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['nodes']} nodes: replayed {r['replay_us_per_node']:.2f} µs/node "
              f"({r['replay_us_per_call'] / 1000:.2f} ms/call), recorded afresh {r['record_us_per_node']:.2f} "
              f"µs/node ({r['record_us_per_call'] / 1000:.2f} ms/call): {r['speedup']:.1f}× (target ≤ 2 µs/node)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
