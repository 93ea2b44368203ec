"""Where DPL's time goes on one workload: cProfile of the training steps (not loading), grouped by module,
the top functions, and the number of recorded nodes per step.

    python benchmarks/profile_dpl.py neural_ode [--steps 10] [--top 20]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
import dpl  # noqa: F401
import dpl.train  # noqa: E402

sys.path.append(str(HERE))
import bench_dpl  # noqa: E402
import workloads as W  # noqa: E402


def group(filename: str, func: str) -> str:
    if "/dpl/" in filename and "/benchmarks/" not in filename:
        return "dpl/" + filename.rsplit("/dpl/", 1)[1]
    if "numpy" in filename or "numpy" in func:
        return "numpy (Python wrappers and C functions)"
    if filename == "~":
        return "other built-ins (" + func.split(" ")[-1].strip("{}<>'") + ")" if "method" in func else \
            "other built-ins"
    return "other: " + Path(filename).name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=W.NAMES)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)

    nodes = []
    real_backward = dpl.train.backward

    def counting_backward(trace, out, wrt, seed=None):
        nodes.append(len(trace.nodes))
        return real_backward(trace, out, wrt, seed)

    runner = bench_dpl.build(args.workload, args.steps)
    runner.step()  # warm
    t = time.perf_counter()
    for _ in range(args.steps):
        runner.step()
    plain = (time.perf_counter() - t) / args.steps
    dpl.train.backward = counting_backward
    runner = bench_dpl.build(args.workload, args.steps)
    runner.step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        runner.step()
    prof.disable()
    dpl.train.backward = real_backward

    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    print(f"{args.workload}: {1000 * plain:.2f} ms/step unprofiled, {1000 * total / args.steps:.2f} ms/step "
          f"under cProfile ({args.steps} steps)")
    if nodes:
        print(f"nodes recorded per step (forward trace): {nodes[-1]}; "
              f"{1e6 * plain / nodes[-1]:.1f} µs per forward node, forward + backward + update included")
    by = defaultdict(float)
    for (filename, _, func), v in st.stats.items():
        by[group(filename, func)] += v[2]
    print("\nown time (tottime) by module:")
    for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {100 * v / total:5.1f}%  {k}")
    print(f"\ntop {args.top} functions by own time:")
    st.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
