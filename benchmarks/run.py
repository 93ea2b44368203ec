"""Run DPL and its peers on the six workloads of shared/benchmarks/WORKLOADS.md and issue 9's pendulum, with 1
and 2 threads, measure replay's overhead per node, and write RESULTS.md.

    python benchmarks/run.py                 # every workload, every framework, WORKLOADS.md's step counts
    python benchmarks/run.py --quick         # a smoke run with few steps (numbers not comparable)
    python benchmarks/run.py --only lstm,memnet --frameworks dpl,torch --threads 1

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

from bench import THREAD_VARS, thread_env
from workloads import NAMES as WORKLOADS, QUICK_STEPS as QUICK, SPEC

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = {w: spec[0] for w, spec in SPEC.items()}
FRAMEWORKS = ["dpl", "dpl-noreplay", "dpl-cli", "torch", "jax-jit", "jax-nojit", "numpy"]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2 ** 20)}
NEEDS = {"torch": "torch", "torch-nn": "torch", "jax-jit": "jax", "jax-nojit": "jax", "dpl": "dpl",
         "dpl-noreplay": "dpl", "dpl-cli": "dpl", "numpy": "numpy"}
NOT_WRITTEN = {("numpy", "pendulum"): "no hand-written gradient of the RK4 solve",
               ("jax-nojit", "pendulum"): "op by op, one step took 38 s"}


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


def bench(framework: str, workload: str, steps: int, runs: int, env: dict, timeout: float, threads: int = 1) -> dict:
    """One bench.py subprocess pinned to `threads`; `others_cores` is the CPU other processes used meanwhile
    (cores, on average)."""
    cmd = [sys.executable, str(HERE / "bench.py"), framework, workload, "--steps", str(steps), "--runs", str(runs),
           "--threads", str(threads)]
    env = dict(env, **thread_env(threads))
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

def ms(r: dict | None, key: str = "median_ms") -> float | None:
    """The median over runs of each run's `key` (by default its median ms per step)."""
    if not r or "runs" not in r or any(x.get(key) is None for x in r["runs"]):
        return None
    return statistics.median(x[key] for x in r["runs"])


def fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def cell(r: dict | None, key: str = "median_ms") -> str:
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    return " / ".join("—" if x.get(key) is None else fmt_ms(x[key]) for x in r["runs"])


def ratio(a: dict | None, b: dict | None, key: str = "median_ms") -> str:
    x, y = ms(a, key), ms(b, key)
    return f"{x / y:.2g}×" if x and y else "—"


def first_ratio(r: dict | None) -> str:
    x, y = ms(r, "first_ms"), ms(r)
    return f"{x / y:.2g}×" if x and y else "—"


def first_run(r: dict | None) -> dict | None:
    return dict(r, runs=r["runs"][:1]) if r and "runs" in r else r


def threads_name(t) -> str:
    return f"{t} thread{'s' if int(t) > 1 else ''}"


def report(res: dict) -> str:
    fws = res["frameworks"]
    threads = [str(t) for t in res["threads"]]
    R = res["results"][threads[0]]  # losses, first steps, memory: from the first thread count
    meta = res["meta"]
    out = [f"# DPL benchmark results{' (--quick: a smoke run, not a measurement)' if meta['quick'] else ''}", ""]
    out += [f"Workloads as defined in `shared/benchmarks/WORKLOADS.md` (and `pendulum`, issue 9's odeint fit: "
            f"`benchmarks/programs/pendulum.dpl`); written by `python benchmarks/run.py"
            f"{' ' + ' '.join(meta['argv']) if meta['argv'] else ''}`.", ""]
    out += ["| | |", "|---|---|",
            f"| date | {meta['date']} |",
            f"| machine | {meta['nproc']} cores ({meta['cpu']}), {meta['platform']} |",
            f"| load (1 min) before / after | {meta['load_start']:.2f} / {meta['load_end']:.2f} |",
            f"| uptime at start | `{meta['uptime_start']}` |",
            f"| uptime at end | `{meta['uptime_end']}` |",
            f"| DPL | {meta['versions'].get('dpl', '?')}, commit {meta['git']} |",
            "| versions | " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "dpl") + " |",
            f"| environment | {meta['env_note']} |",
            f"| threads | {', '.join(threads)}: each subprocess pinned with {'/'.join(THREAD_VARS)}, threadpoolctl, "
            f"`torch.set_num_threads` and, for 1, `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false` |", ""]
    if meta["under_load"]:
        out += [f"**Measured under load**: {', '.join(meta['under_load'])}: other processes were busy on this "
                f"{meta['nproc']}-core machine (after the retries, or during the runs: see the load table at "
                f"the end), so those rows are distorted.", ""]
    out += ["## Milliseconds per step", "",
            "Median ms per step of each of two runs (`run 1 / run 2`; every step timed on its own, loss read "
            "back as a float). Ratios use the median of the two. `dpl` drives the program from Python "
            "(`dpl.train.loss_and_grads` + the update), with replay; `dpl-noreplay` is the same with "
            "`dpl.replay.enabled = False` (every step recorded and differentiated afresh, as before replay), and "
            "*replay speed-up* is dpl-noreplay / dpl; `dpl train` is the CLI on the same program "
            "(mean ms per step from `--metrics`, progress and finiteness checks included).", ""]
    cols = [f for f in FRAMEWORKS if f in fws]
    name = {"dpl-cli": "dpl train"}.get
    for t in threads:
        Rt = res["results"][t]
        head = ["workload", "steps"] + [name(f, f) for f in cols] + ["DPL/torch", "DPL/jax-jit", "replay speed-up"]
        out += [f"### {threads_name(t)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for w in res["workloads"]:
            row = Rt.get(w, {})
            out.append("| " + " | ".join([w, str(res["steps"][w])] + [cell(row.get(f)) for f in cols] +
                                         [ratio(row.get("dpl"), row.get("torch")),
                                          ratio(row.get("dpl"), row.get("jax-jit")),
                                          ratio(row.get("dpl-noreplay"), row.get("dpl"))]) + " |")
        if "lstm_nn" in Rt:
            r = Rt["lstm_nn"].get("torch-nn")
            out.append("| lstm_nn (torch.nn.LSTM) | " + str(res["steps"]["lstm"]) + " | " +
                       " | ".join(cell(r) if f == "torch" else "" for f in cols) + " | " +
                       ratio(Rt.get("lstm", {}).get("dpl"), r) + " | | |")
        out.append("")
    if len(threads) > 1:
        a, b = threads[0], threads[-1]
        out += ["## Threads", "",
                f"ms per step with {threads_name(b)} over ms per step with {threads_name(a)} (below 1: the extra "
                f"threads help).", "",
                "| workload | " + " | ".join(name(f, f) for f in cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for w in res["workloads"]:
            out.append(f"| {w} | " + " | ".join(ratio(res["results"][b].get(w, {}).get(f),
                                                        res["results"][a].get(w, {}).get(f)) for f in cols) + " |")
        out.append("")
    out += ["## Final losses", "",
            f"The loss of the last step (before its update), {threads_name(threads[0])}; taylor_sin: s(1) and s′(1). "
            "Identical data and initial parameters, so they should agree to many digits.", ""]
    out += ["| workload | " + " | ".join(name(f, f) for f in cols) + " | max rel. spread |",
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
    if "dpl" in cols or "jax-jit" in cols:
        out += ["", "## First steps", "",
                "DPL's first step records and differentiates; the second records again and, when the two "
                "recordings match, compiles the plan that later steps replay. Target: first ≤ 5× steady. "
                "jax-jit's first step is its tracing and compilation. Per run (`run 1 / run 2`), ms; the ratio "
                "uses the medians.", "",
                "| workload | threads | DPL first | DPL second | DPL steady | DPL first/steady | "
                "jax-jit first (compile) | jax-jit steady |", "|---|---|---|---|---|---|---|---|"]
        for w in res["workloads"]:
            for t in threads:
                d, j = res["results"][t].get(w, {}).get("dpl"), res["results"][t].get(w, {}).get("jax-jit")
                out.append(f"| {w} | {t} | {cell(d, 'first_ms')} | {cell(d, 'second_ms')} | {cell(d)} | "
                           f"{first_ratio(d)} | {cell(j, 'first_ms')} | "
                           f"{cell(j)} |")
    mcols = [f for f in cols if f != "dpl-cli"]
    out += ["", "## Peak memory of the steps (MiB)", "",
            f"The process's peak RSS during the steps of its first run less its RSS before them "
            f"(`/proc/self/clear_refs` then `VmHWM`), {threads_name(threads[0])}: what the steps allocate beyond "
            f"the parameters and data. (A second run in the same process reuses heap the first one freed, so "
            f"its figure is low; it is in RESULTS.json.) `—` where /proc is unavailable. Target: DPL ≤ torch.", "",
            "| workload | " + " | ".join(mcols) + " | DPL/torch |", "|" + "---|" * (len(mcols) + 2)]
    for w in res["workloads"]:
        row = {f: first_run(r) for f, r in R.get(w, {}).items()}
        out.append(f"| {w} | " + " | ".join(cell(row.get(f), "peak_mb") for f in mcols) +
                   f" | {ratio(row.get('dpl'), row.get('torch'), 'peak_mb')} |")
    ov = res.get("overhead")
    if ov:
        out += ["", "## Replay overhead per node", ""]
        if "error" in ov:
            out.append(f"`benchmarks/replay_overhead.py` failed: {ov['error']}")
        else:
            out += ["`benchmarks/replay_overhead.py`: `grad(chain)(x)` at a new x per call, where chain runs "
                    f"{ov['iters']} times `x = sin(x) * 0.999 + 0.001` on a scalar ({ov['nodes']} nodes); median "
                    f"time of a call (forward and backward) over the nodes. Target: ≤ 2 µs per node.", "",
                    "| | µs per call | µs per node |", "|---|---|---|",
                    f"| replayed plan | {ov['replay_us_per_call']:.0f} | {ov['replay_us_per_node']:.2f} |",
                    f"| recorded afresh (replay off) | {ov['record_us_per_call']:.0f} | "
                    f"{ov['record_us_per_node']:.2f} |"]
    extra = []
    cannon = R.get("cannon", {})
    maes = {f: r["runs"][-1]["test_mae_m"] for f, r in cannon.items() if r and "runs" in r and
            "test_mae_m" in r["runs"][-1]}
    if maes:
        extra.append("* cannon, mean landing error on the 1000 test targets after training (m): " +
                     ", ".join(f"{f} {v:.6g}" for f, v in maes.items()))
    extra += [f"* not run: {f} on {w} ({why})" for (f, w), why in NOT_WRITTEN.items()
              if f in fws and w in res["workloads"]]
    if extra:
        out += ["", "## Notes", ""] + extra
    if res.get("malloc"):
        out += ["", "## With glibc's malloc thresholds raised", "",
                "The same, with " + " ".join(f"`{k}={v}`" for k, v in MALLOC_ENV.items()) +
                f" for the subprocesses, {threads_name(threads[0])} (WORKLOADS.md's note: large temporaries are "
                "otherwise handed back to the OS and faulted in again every step). Reported, not applied to the "
                "tables above.", "",
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
    ap.add_argument("--only", help="comma-separated workloads (default: all seven)")
    ap.add_argument("--frameworks", help=f"comma-separated, from {','.join(FRAMEWORKS)} (default: all)")
    ap.add_argument("--no-torch-nn", action="store_true", help="skip lstm through torch.nn.LSTM")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, each a table (default 1,2)")
    ap.add_argument("--no-overhead", action="store_true", help="skip benchmarks/replay_overhead.py")
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
    threads = [int(t) for t in args.threads.split(",")]
    if not threads or min(threads) < 1:
        ap.error("--threads wants thread counts of at least 1, e.g. 1,2")
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
    results, loads = {str(t): {} for t in threads}, {}
    for w in workloads:
        log(f"{w} ({steps[w]} steps x {args.runs} runs)")
        before, _, idle = wait_for_idle(args.max_load, args.load_retries, args.load_wait, log)
        if not idle:
            meta["under_load"].append(w)
        seen = []
        for t in threads:
            row = results[str(t)][w] = {}
            for f in fws:
                if (f == "dpl-cli" and (w == "taylor_sin" or (w == "cannon" and args.quick))) or (f, w) in NOT_WRITTEN:
                    continue  # taylor_sin has no train block; cannon's always runs all 2000 batches
                t0 = time.perf_counter()
                r = row[f] = bench(f, w, steps[w], args.runs, env, args.timeout, t)
                if "versions" in r:
                    meta["versions"].update(r["versions"])
                log(f"  {t}t {f:12s} {cell(r):>20s} ms/step   loss "
                    f"{r['runs'][-1]['final_loss'] if 'runs' in r else r}"
                    f"   ({time.perf_counter() - t0:.0f} s, others {r.get('others_cores', 0):.2f} cores)")
            if w == "lstm" and "torch" in fws and not args.no_torch_nn:
                r = bench("torch-nn", "lstm_nn", steps[w], args.runs, env, args.timeout, t)
                results[str(t)]["lstm_nn"] = {"torch-nn": r}
                log(f"  {t}t {'torch-nn':12s} {cell(r):>20s} ms/step")
            seen += row.values()
        others = max((r.get("others_cores", 0.0) for r in seen), default=0.0)
        if others > 0.25 and w not in meta["under_load"]:
            meta["under_load"].append(w)
        loads[w] = (before, load1(), others)
    res = {"meta": meta, "workloads": workloads, "frameworks": fws, "threads": threads, "steps": steps,
           "results": results, "loads": loads}
    if not args.no_overhead:
        log("replay overhead (benchmarks/replay_overhead.py, 1 thread)")
        r = subprocess.run([sys.executable, str(HERE / "replay_overhead.py"), "--json"], capture_output=True,
                           text=True, env=dict(env, **thread_env(1)), timeout=args.timeout)
        res["overhead"] = (json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else
                           {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]})
        log(f"  {res['overhead']}")
    if args.malloc:
        mfws = [f for f in ("dpl", "numpy", "torch") if f in fws]
        res["malloc"], res["malloc_frameworks"] = {}, mfws
        menv = dict(env, **MALLOC_ENV)
        for w in workloads:
            log(f"{w} with {MALLOC_ENV}")
            _, _, idle = wait_for_idle(args.max_load, args.load_retries, args.load_wait, log)
            if not idle:
                meta["under_load"].append(f"{w} (malloc)")
            res["malloc"][w] = {f: bench(f, w, steps[w], args.runs, menv, args.timeout, threads[0])
                                for f in mfws if (f, w) not in NOT_WRITTEN}
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
