"""Time one framework on one workload in this process and print one JSON line (run.py starts one of these
per framework and workload, so imports, jit caches and allocator state never leak between them).

    python benchmarks/bench.py FRAMEWORK WORKLOAD [--steps N] [--runs 2] [--threads N] [--profile OUT.prof]

FRAMEWORK: dpl, dpl-noreplay (dpl.replay.enabled = False: every step recorded afresh), dpl-cli
(`dpl train --metrics`), torch, torch-nn (lstm through torch.nn.LSTM), jax-jit, jax-nojit, numpy.
Each run starts from the initial parameters; every step is timed on its own (perf_counter around one
step, the loss read back as a Python float) and a run reports the median, the first and second steps,
and the peak memory of its steps (VmHWM after /proc/self/clear_refs, less the RSS before them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))

import workloads as W  # noqa: E402

FRAMEWORKS = ["dpl", "dpl-noreplay", "dpl-cli", "torch", "torch-nn", "jax-jit", "jax-nojit", "numpy"]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_limits = None


def thread_env(n: int) -> dict:
    """Environment that pins a fresh process to n threads (read at import: run.py sets it for bench.py)."""
    env = {k: str(n) for k in THREAD_VARS}
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "--xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def pin_threads(n: int) -> dict:
    """Pin this process to n threads, whatever the environment said: BLAS/OpenMP pools through threadpoolctl,
    torch's intra-op pool, and (set before jax is imported) XLA's Eigen pool. Returns what was seen."""
    global _limits
    if "jax" not in sys.modules:
        os.environ.update(thread_env(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return {"threads": n, "threadpoolctl": "not installed"}
    _limits = threadpool_limits(limits=n)
    return {"threads": n, "pools": sorted({f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()})}


def builder(framework: str):
    if framework in ("dpl", "dpl-noreplay"):
        import bench_dpl
        return bench_dpl.build, {"replay": framework == "dpl"}
    if framework in ("torch", "torch-nn"):
        import bench_torch
        return bench_torch.build, {}
    if framework in ("jax-jit", "jax-nojit"):
        import bench_jax
        return bench_jax.build, {"jit": framework == "jax-jit"}
    if framework == "numpy":
        import bench_numpy
        return bench_numpy.build, {}
    raise SystemExit(f"unknown framework {framework!r}; one of {', '.join(FRAMEWORKS)}")


def memory_kb() -> dict:
    """VmHWM and VmRSS of this process in kB, {} where /proc is unavailable."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmHWM", "VmRSS")}


def reset_peak() -> dict:
    """Reset the peak RSS to the current RSS (clear_refs 5) and return the RSS now; {} if that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return {}
    return memory_kb()


def one_run(build, opts, name: str, steps: int, prof=None) -> dict:
    """Build the workload afresh and time each step; `prof` (a cProfile.Profile) sees the steps only."""
    t0 = time.perf_counter()
    runner = build(name, steps, **opts)
    setup = time.perf_counter() - t0
    before = reset_peak()
    times, result = [], None
    if prof is not None:
        prof.enable()
    for _ in range(steps):
        t = time.perf_counter()
        result = runner.step()
        times.append(time.perf_counter() - t)
    if prof is not None:
        prof.disable()
    after = memory_kb()
    out = {"median_ms": 1000 * statistics.median(times), "first_ms": 1000 * times[0],
           "second_ms": 1000 * times[1] if steps > 1 else None,
           "mean_ms": 1000 * statistics.fmean(times), "total_s": sum(times), "setup_s": setup,
           "peak_mb": (after["VmHWM"] - before["VmRSS"]) / 1024 if before and after else None}
    if isinstance(result, tuple):  # taylor_sin: (value, derivative)
        out["final_loss"], out["final_grad"] = result
    else:
        out["final_loss"] = result
    out.update(runner.extra())
    return out


def versions(framework: str) -> dict:
    import numpy
    v = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    if framework.startswith("dpl"):
        v["dpl"] = sys.modules["dpl"].__version__
    if framework.startswith("torch"):
        import torch
        v["torch"] = torch.__version__
        v["torch_threads"] = torch.get_num_threads()
    if framework.startswith("jax"):
        import jax
        import jaxlib
        v["jax"], v["jaxlib"] = jax.__version__, jaxlib.__version__
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("framework", choices=FRAMEWORKS)
    ap.add_argument("workload", choices=W.NAMES + ["lstm_nn"])
    ap.add_argument("--steps", type=int, help="steps per run (default: WORKLOADS.md's count)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads for BLAS, OpenMP, torch and XLA (default 1)")
    ap.add_argument("--profile", help="write a cProfile of the last run's steps to this file")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    name = "lstm" if args.workload == "lstm_nn" else args.workload
    if (args.workload == "lstm_nn") != (args.framework == "torch-nn"):
        raise SystemExit("lstm_nn runs only as torch-nn, and torch-nn only runs lstm_nn")
    if args.framework == "numpy" and name == "pendulum":
        raise SystemExit("numpy has no pendulum (no hand-written gradient of the RK4 solve)")
    steps = args.steps or W.SPEC[name][0]
    runs = []
    if args.framework == "dpl-cli":
        import bench_dpl
        threads = pin_threads(args.threads)
        for _ in range(args.runs):
            runs.append(bench_dpl.cli_run(name, steps, dict(os.environ), args.threads))
        runs = [{"median_ms": r["ms_per_step"], "final_loss": r["final_loss"], "steps": r["steps"]} for r in runs]
    else:
        pin_threads(args.threads)  # XLA_FLAGS before jax is imported
        build, opts = builder(args.framework)
        threads = pin_threads(args.threads)  # again: the framework's own thread pools are loaded now
        wl = "lstm_nn" if args.framework == "torch-nn" else name
        for k in range(args.runs):
            if args.profile and k == args.runs - 1:
                import cProfile
                prof = cProfile.Profile()
                runs.append(one_run(build, opts, wl, steps, prof))
                prof.dump_stats(args.profile)
            else:
                runs.append(one_run(build, opts, wl, steps))
    print(json.dumps({"framework": args.framework, "workload": args.workload, "steps": steps, "runs": runs,
                      "versions": versions(args.framework), "threads": threads, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
