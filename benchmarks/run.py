"""Run DPL and its peers on the six workloads of shared/benchmarks/WORKLOADS.md and write RESULTS.md.

    python benchmarks/run.py                 # every workload, every framework, WORKLOADS.md's step counts
    python benchmarks/run.py --quick         # a smoke run with few steps (numbers not comparable)
    python benchmarks/run.py --only lstm,memnet --frameworks dpl,torch

Each framework runs each workload in its own subprocess (benchmarks/bench.py) with the same python as this
script: use one that has torch and jax too (the peers' venv, which also has DPL installed); a framework
whose package is missing is reported as not installed. Before each workload the 1-minute load average
is checked and, above --max-load, waited for; the loads seen are recorded in the results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from workloads import NAMES as WORKLOADS, QUICK_STEPS as QUICK, SPEC

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = {w: spec[0] for w, spec in SPEC.items()}
FRAMEWORKS = ["dpl", "dpl-cli", "torch", "jax-jit", "jax-nojit", "numpy"]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2 ** 20)}
NEEDS = {"torch": "torch", "torch-nn": "torch", "jax-jit": "jax", "jax-nojit": "jax", "dpl": "dpl",
         "dpl-cli": "dpl", "numpy": "numpy"}


def load1() -> float:
    return os.getloadavg()[0]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (/proc/stat: all but idle and iowait)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def others_now(window: float = 3.0) -> float:
    """Cores kept busy by other processes, sampled while this one sleeps."""
    b = busy_seconds()
    time.sleep(window)
    return (busy_seconds() - b) / window


def wait_for_idle(max_load: float, retries: int, wait: float, log) -> tuple[float, float, bool]:
    """Wait while the machine is busy: (1-minute load, cores busy with others, idle?).

    The load average decays over minutes, so right after our own runs it stays near 1 on an idle machine;
    above max_load, a 3-second sample of /proc/stat while we sleep tells whether others are running."""
    for k in range(retries + 1):
        now = load1()
        if now <= max_load:
            return now, 0.0, True
        others = others_now()
        if others <= 0.25:
            log(f"  load {now:.2f} > {max_load} but other processes use only {others:.2f} cores (the "
                f"load average's tail of our own runs): measuring")
            return now, others, True
        if k < retries:
            log(f"  load {now:.2f} > {max_load}, others use {others:.2f} cores: waiting {wait:.0f} s "
                f"({k + 1}/{retries})")
            time.sleep(wait)
    log(f"  load still {now:.2f}, others {others:.2f} cores: measuring under load")
    return now, others, False


def installed(framework: str) -> bool:
    mod = NEEDS[framework]
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, cwd="/")
    return r.returncode == 0


def bench(framework: str, workload: str, steps: int, runs: int, env: dict, timeout: float) -> dict:
    """One bench.py subprocess; `others_cores` is the CPU other processes used meanwhile (cores, on average)."""
    cmd = [sys.executable, str(HERE / "bench.py"), framework, workload, "--steps", str(steps), "--runs", str(runs)]
    b0, c0, t0 = busy_seconds(), children_cpu(), time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    others = max(0.0, ((busy_seconds() - b0) - (children_cpu() - c0)) / (time.perf_counter() - t0))
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1], "others_cores": others}
    return dict(json.loads(r.stdout.strip().splitlines()[-1]), others_cores=others)


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dpl", "stdlib", "grammar"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (dpl/ has uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ---- the report --------------------------------------------------------------------------------

def ms(r: dict | None) -> float | None:
    """The median over runs of each run's median ms per step."""
    if not r or "runs" not in r:
        return None
    return statistics.median(x["median_ms"] for x in r["runs"])


def fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    return " / ".join(fmt_ms(x["median_ms"]) for x in r["runs"])


def ratio(a: dict | None, b: dict | None) -> str:
    x, y = ms(a), ms(b)
    return f"{x / y:.2g}×" if x and y else "—"


def report(res: dict) -> str:
    fws = res["frameworks"]
    R = res["results"]
    meta = res["meta"]
    out = [f"# DPL benchmark results{' (--quick: a smoke run, not a measurement)' if meta['quick'] else ''}", ""]
    out += [f"Workloads as defined in `shared/benchmarks/WORKLOADS.md`; written by `python benchmarks/run.py"
            f"{' ' + ' '.join(meta['argv']) if meta['argv'] else ''}`.", ""]
    out += ["| | |", "|---|---|",
            f"| date | {meta['date']} |",
            f"| machine | {meta['nproc']} cores ({meta['cpu']}), {meta['platform']} |",
            f"| load (1 min) before / after | {meta['load_start']:.2f} / {meta['load_end']:.2f} |",
            f"| uptime at start | `{meta['uptime_start']}` |",
            f"| uptime at end | `{meta['uptime_end']}` |",
            f"| DPL | {meta['versions'].get('dpl', '?')}, commit {meta['git']} |",
            "| versions | " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "dpl") + " |",
            f"| environment | {meta['env_note']} |", ""]
    if meta["under_load"]:
        out += [f"**Measured under load**: {', '.join(meta['under_load'])}: other processes were busy on this "
                f"{meta['nproc']}-core machine (after the retries, or during the runs: see the load table at "
                f"the end), so those rows are distorted.", ""]
    out += ["## Milliseconds per step", "",
            "Median ms per step of each of two runs (`run 1 / run 2`; every step timed on its own, loss read "
            "back as a float). Ratios use the median of the two. `dpl` drives the program from Python "
            "(`dpl.train.loss_and_grads` + the update); `dpl train` is the CLI on the same program "
            "(mean ms per step from `--metrics`, progress and finiteness checks included).", ""]
    cols = [f for f in FRAMEWORKS if f in fws]
    head = ["workload", "steps"] + [{"dpl-cli": "dpl train"}.get(f, f) for f in cols] + ["DPL/torch", "DPL/jax-jit"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in res["workloads"]:
        row = R.get(w, {})
        out.append("| " + " | ".join([w, str(res["steps"][w])] + [cell(row.get(f)) for f in cols] +
                                     [ratio(row.get("dpl"), row.get("torch")),
                                      ratio(row.get("dpl"), row.get("jax-jit"))]) + " |")
    if "lstm_nn" in R:
        r = R["lstm_nn"].get("torch-nn")
        out.append("| lstm_nn (torch.nn.LSTM) | " + str(res["steps"]["lstm"]) + " | " +
                   " | ".join(cell(r) if f == "torch" else "" for f in cols) + " | " +
                   ratio(R.get("lstm", {}).get("dpl"), r) + " | |")
    out += ["", "## Final losses", "",
            "The loss of the last step (before its update); taylor_sin: s(1) and s′(1). Identical data "
            "and initial parameters, so they should agree to many digits.", ""]
    out += ["| workload | " + " | ".join({"dpl-cli": "dpl train"}.get(f, f) for f in cols) + " | max rel. spread |",
            "|" + "---|" * (len(cols) + 2)]
    for w in res["workloads"]:
        row = R.get(w, {})
        vals, cells = [], []
        for f in cols:
            r = row.get(f)
            if not r or "runs" not in r:
                cells.append("—" if r is None else "error")
                continue
            last = r["runs"][-1]
            if r.get("steps") != res["steps"][w] and f == "dpl-cli":
                cells.append(f"({last['final_loss']:.10g} after {r['steps']} steps)")
                continue
            if w == "taylor_sin":
                cells.append(f"{last['final_loss']:.12g}, {last['final_grad']:.12g}")
            else:
                cells.append(f"{last['final_loss']:.12g}")
            vals.append(last["final_loss"])
        spread = (max(vals) - min(vals)) / abs(statistics.median(vals)) if len(vals) > 1 else float("nan")
        out.append(f"| {w} | " + " | ".join(cells) + f" | {spread:.1e} |")
    if "lstm_nn" in R and "runs" in R["lstm_nn"].get("torch-nn", {}):
        out.append(f"| lstm_nn | torch.nn.LSTM: {R['lstm_nn']['torch-nn']['runs'][-1]['final_loss']:.12g} |" +
                   " |" * len(cols))
    extra = []
    cannon = R.get("cannon", {})
    maes = {f: r["runs"][-1]["test_mae_m"] for f, r in cannon.items() if r and "runs" in r and
            "test_mae_m" in r["runs"][-1]}
    if maes:
        extra.append("* cannon, mean landing error on the 1000 test targets after training (m): " +
                     ", ".join(f"{f} {v:.6g}" for f, v in maes.items()))
    for w in res["workloads"]:
        r = R.get(w, {}).get("jax-jit")
        if r and "runs" in r:
            extra.append(f"* jax-jit first step (tracing + compilation), {w}: " +
                         " / ".join(f"{x['first_ms'] / 1000:.2f} s" for x in r["runs"]))
    firsts = []
    for w in res["workloads"]:
        r = R.get(w, {}).get("dpl")
        if r and "runs" in r:
            firsts.append(f"{w} {' / '.join(fmt_ms(x['first_ms']) for x in r['runs'])}")
    if firsts:
        extra.append("* DPL first step (ms; it records and differentiates afresh every step, so there is no "
                     "compilation; the first step pays for cold caches and allocation): " + ", ".join(firsts))
    if extra:
        out += ["", "## Notes", ""] + extra
    if res.get("malloc"):
        out += ["", "## With glibc's malloc thresholds raised", "",
                "The same, with " + " ".join(f"`{k}={v}`" for k, v in MALLOC_ENV.items()) +
                " for the subprocesses (WORKLOADS.md's note: large temporaries are otherwise handed back to "
                "the OS and faulted in again every step). Reported, not applied to the table above.", "",
                "| workload | " + " | ".join(res["malloc_frameworks"]) + " | DPL/torch (both raised) |",
                "|" + "---|" * (len(res["malloc_frameworks"]) + 2)]
        for w in res["workloads"]:
            row = res["malloc"].get(w, {})
            out.append(f"| {w} | " + " | ".join(cell(row.get(f)) for f in res["malloc_frameworks"]) +
                       f" | {ratio(row.get('dpl'), row.get('torch'))} |")
    out += ["", "## Load during the measurements", "",
            "1-minute load average before and after each workload (our own runs keep it near 1 on an idle "
            "2-core machine), and the most CPU that *other* processes used while one of its frameworks ran "
            "(busy time in /proc/stat minus our subprocesses' own CPU time, in cores).", "",
            "| workload | load before | load after | others' CPU (cores, max over frameworks) |",
            "|---|---|---|---|"]
    out += [f"| {w} | {a:.2f} | {b:.2f} | {o:.2f} |" for w, (a, b, o) in res["loads"].items()]
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps per workload: a smoke run")
    ap.add_argument("--only", help="comma-separated workloads (default: all six)")
    ap.add_argument("--frameworks", help=f"comma-separated, from {','.join(FRAMEWORKS)} (default: all)")
    ap.add_argument("--no-torch-nn", action="store_true", help="skip lstm through torch.nn.LSTM")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the Markdown report (raw JSON beside it)")
    ap.add_argument("--max-load", type=float, default=1.0, help="wait while the 1-minute load is above this")
    ap.add_argument("--load-retries", type=int, default=5)
    ap.add_argument("--load-wait", type=float, default=60.0, help="seconds between load checks")
    ap.add_argument("--malloc", action="store_true",
                    help="also run dpl and numpy with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ raised")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per framework and workload")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    workloads = args.only.split(",") if args.only else WORKLOADS
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; one of {', '.join(WORKLOADS)}")
    wanted = args.frameworks.split(",") if args.frameworks else FRAMEWORKS
    for f in wanted:
        if f not in FRAMEWORKS:
            ap.error(f"unknown framework {f!r}; one of {', '.join(FRAMEWORKS)}")
    missing = [f for f in wanted if not installed(f)]
    for f in missing:
        log(f"{f}: `import {NEEDS[f]}` fails under {sys.executable}; skipped")
    fws = [f for f in wanted if f not in missing]
    steps = {w: (QUICK if args.quick else STEPS)[w] for w in workloads}
    env = dict(os.environ)
    for k in MALLOC_ENV:
        env.pop(k, None)  # the main table always runs with glibc's defaults
    preset = {k: os.environ[k] for k in os.environ if k.startswith("MALLOC_")}

    meta = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu": cpu_model(), "platform": platform.platform(), "uptime_start": uptime(), "git": git_rev(),
            "quick": args.quick, "argv": argv, "max_load": args.max_load, "under_load": [],
            "env_note": "glibc malloc defaults (MALLOC_* unset in the subprocesses)" +
                        (f"; the caller had {preset} set, removed" if preset else ""),
            "versions": {}}
    meta["load_start"] = load1()
    log(meta["uptime_start"])
    results, loads = {}, {}
    for w in workloads:
        log(f"{w} ({steps[w]} steps x {args.runs} runs)")
        before, _, idle = wait_for_idle(args.max_load, args.load_retries, args.load_wait, log)
        if not idle:
            meta["under_load"].append(w)
        row = results[w] = {}
        for f in fws:
            if f == "dpl-cli" and (w == "taylor_sin" or (w == "cannon" and args.quick)):
                continue  # taylor_sin has no train block; cannon's always runs all 2000 batches
            t0 = time.perf_counter()
            r = row[f] = bench(f, w, steps[w], args.runs, env, args.timeout)
            if "versions" in r:
                meta["versions"].update(r["versions"])
            log(f"  {f:10s} {cell(r):>20s} ms/step   loss {r['runs'][-1]['final_loss'] if 'runs' in r else r}"
                f"   ({time.perf_counter() - t0:.0f} s, others {r.get('others_cores', 0):.2f} cores)")
        if w == "lstm" and "torch" in fws and not args.no_torch_nn:
            r = bench("torch-nn", "lstm_nn", steps[w], args.runs, env, args.timeout)
            results["lstm_nn"] = {"torch-nn": r}
            log(f"  {'torch-nn':10s} {cell(r):>20s} ms/step")
        others = max((r.get("others_cores", 0.0) for r in row.values()), default=0.0)
        if others > 0.25 and w not in meta["under_load"]:
            meta["under_load"].append(w)
        loads[w] = (before, load1(), others)
    res = {"meta": meta, "workloads": workloads, "frameworks": fws, "steps": steps, "results": results,
           "loads": loads}
    if args.malloc:
        mfws = [f for f in ("dpl", "numpy", "torch") if f in fws]
        res["malloc"], res["malloc_frameworks"] = {}, mfws
        menv = dict(env, **MALLOC_ENV)
        for w in workloads:
            log(f"{w} with {MALLOC_ENV}")
            _, _, idle = wait_for_idle(args.max_load, args.load_retries, args.load_wait, log)
            if not idle:
                meta["under_load"].append(f"{w} (malloc)")
            res["malloc"][w] = {f: bench(f, w, steps[w], args.runs, menv, args.timeout) for f in mfws}
            log("  " + ", ".join(f"{f} {cell(r)}" for f, r in res["malloc"][w].items()))
    meta["load_end"], meta["uptime_end"] = load1(), uptime()
    log(meta["uptime_end"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(res) + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
