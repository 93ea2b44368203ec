"""`dpl sweep`: train a program over many `--set` configurations and seeds, each trial a `dpl train` run on Ray
(a Ray task, or a Ray Tune trial under `--scheduler asha`), with a live table and results in DIR.

A trial runs `dpl train --quiet` as a subprocess of its Ray worker: the program's output, dpl's per-epoch lines
and its errors come back as text whatever goes wrong inside (a crash of the trial cannot take the worker or the
sweep with it), and a trial that is cancelled takes its process with it. The worker streams the lines to a
small actor (the board) that the driver reads twice a second; the finished trial's parameters file comes back
as bytes, so DIR need only exist where the sweep was started."""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .errors import DplError
from .paramfile import write_atomic

EPOCH_LINE = re.compile(r"^train (\S+): epoch (\d+)/(\d+), mean loss (\S+)")
ERROR_LINE = re.compile(r"^(dpl: .*error: |\S.*:\d+:\d+: )")  # the first line of a DplError or internal error
DISTRIBUTIONS = ("uniform", "loguniform", "randint")
FINISHED = ("ok", "error", "stopped")  # what --resume does not run again


# ---- the trials -------------------------------------------------------------------------------------------

def split_values(text: str) -> list[str]:
    """`1e-3,1e-2` or `[1, 2],[3, 4]`: the comma-separated literals of one --grid entry (commas inside
    brackets and strings belong to the literal)."""
    out, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        values = split_values(values) if sep else []
        if not name.isidentifier() or not values or not all(values):
            raise DplError(f"--grid takes NAME=VALUE,VALUE,..., got `{item}`")
        grid[name] = values
    return grid


def parse_space(items: list[str]) -> dict[str, tuple]:
    """`lr=loguniform:1e-4:1e-1`: NAME -> (distribution, low, high)."""
    space = {}
    for item in items:
        name, _, rest = item.partition("=")
        parts = rest.split(":")
        try:
            dist, low, high = parts[0], float(parts[1]), float(parts[2])
            ok = name.isidentifier() and len(parts) == 3 and dist in DISTRIBUTIONS and low < high and \
                (dist != "loguniform" or low > 0) and (dist != "randint" or low == int(low) and high == int(high))
        except (IndexError, ValueError):
            ok = False
        if not ok:
            raise DplError(f"--space takes NAME=DISTRIBUTION:LOW:HIGH with LOW < HIGH, the distribution one of "
                           f"{', '.join(DISTRIBUTIONS)} (loguniform needs LOW > 0, randint integers), got `{item}`")
        space[name] = (dist, low, high)
    return space


def draw(space: dict, rng) -> dict[str, str]:
    """One sample of the space, as --set literals (randint includes HIGH)."""
    out = {}
    for name, (dist, low, high) in space.items():
        if dist == "uniform":
            out[name] = repr(float(rng.uniform(low, high)))
        elif dist == "loguniform":
            out[name] = repr(float(math.exp(rng.uniform(math.log(low), math.log(high)))))
        else:
            out[name] = str(int(rng.integers(int(low), int(high) + 1)))
    return out


def make_trials(grid: dict, space: dict, samples: int, seeds: int) -> list[dict]:
    """Every grid point for each of `samples` draws of the space, each with seeds 0..seeds-1 (the draws come
    from a fixed generator, so the same arguments make the same trials)."""
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(samples):
        drawn = draw(space, rng)
        for point in itertools.product(*grid.values()):
            config = dict(zip(grid, point), **drawn)
            for seed in range(seeds):
                trials.append({"id": f"t{len(trials):04d}", "config": config, "seed": seed, "status": "pending"})
    return trials


def train_command(file: str, trial: dict, epochs, out_dir: str) -> list[str]:
    cmd = [sys.executable, "-m", "dpl.cli", "train", file, "--quiet", "--seed", str(trial["seed"]),
           "--out", os.path.join(out_dir, "params.npz"), "--metrics", os.path.join(out_dir, "metrics.json")]
    for name, value in trial["config"].items():
        cmd += ["--set", f"{name}={value}"]
    return cmd + (["--epochs", str(epochs)] if epochs is not None else [])


def _die_with_parent():
    """In the trial's process: SIGKILL it when the Ray worker that started it goes (a cancelled trial)."""
    import ctypes
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux; elsewhere the call fails quietly)
    except (OSError, AttributeError):
        pass


def run_trial(trial: dict, file: str, cwd: str, epochs, board, report=None) -> dict:
    """Run one trial's `dpl train` and stream its lines to the board; `report(epoch, loss)` (Ray Tune's) is
    called after each epoch. Returns the result, with the parameters file as bytes."""
    tid, start = trial["id"], time.time()
    lines, epoch, loss = [], 0, math.nan
    with tempfile.TemporaryDirectory(prefix=f"dpl-{tid}-") as tmp:
        proc = subprocess.Popen(train_command(file, trial, epochs, tmp), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=_die_with_parent)
        stdout = []
        reader = threading.Thread(target=lambda: stdout.extend(_relay(proc.stdout, tid, "out", board, lines)),
                                  daemon=True)
        reader.start()
        for line in proc.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            m = EPOCH_LINE.match(line)
            if m:
                epoch, loss = epoch + 1, float(m.group(4))
                board.push.remote(tid, "epoch", (epoch, loss, line))
                if report is not None:
                    report(epoch, loss)
            else:
                board.push.remote(tid, "line", line)
        code = proc.wait()
        reader.join()
        result = {"status": "ok" if code == 0 else "error", "epochs": epoch, "metric": stdout[-1] if stdout else "",
                  "seconds": round(time.time() - start, 3), "log": "\n".join(lines) + "\n"}
        if code == 0:
            with open(os.path.join(tmp, "metrics.json")) as f:
                metrics = json.load(f)
            result["loss"] = metrics["epoch_losses"][-1] if metrics["epoch_losses"] else metrics["final_loss"]
            with open(os.path.join(tmp, "params.npz"), "rb") as f:
                result["params"] = f.read()
        else:
            errors = [x for x in lines if ERROR_LINE.match(x)] or [x for x in lines if x.strip()][-1:]
            result.update(loss=loss if epoch else None, error=(errors or [f"exit status {code}"])[0].strip())
    return result


def _relay(stream, tid, kind, board, lines):
    """The program's output lines, each passed to the board and kept in the log."""
    for line in stream:
        line = line.rstrip("\n")
        lines.append(line)
        board.push.remote(tid, kind, line)
        yield line


class Board:
    """A Ray actor that the trials push their lines to and the driver drains."""

    def __init__(self):
        self.events = []

    def push(self, tid, kind, payload):
        self.events.append((tid, kind, payload))

    def drain(self):
        out, self.events = self.events, []
        return out


# ---- the sweep ------------------------------------------------------------------------------------------

class Sweep:
    """The trials of one sweep, what is known of each, and DIR's results files."""

    def __init__(self, args, path: Path):
        from .checkpoint import digest
        from .interp import check_overrides, parse_overrides, read_source
        from .parser import parse
        self.path, self.out = path, Path(args.out or path.with_name(path.stem + ".sweep"))
        grid, space = parse_grid(args.grid), parse_space(args.space)
        if args.samples is not None and args.samples < 1 or args.seeds < 1:
            raise DplError("--samples and --seeds must be at least 1")
        if args.samples is not None and not space:
            raise DplError("--samples draws from --space: name a NAME=DISTRIBUTION:LOW:HIGH with it")
        if not grid and not space:
            raise DplError("a sweep needs --grid NAME=V1,V2,... or --space NAME=DISTRIBUTION:LOW:HIGH")
        both = set(grid) & set(space)
        if both:
            raise DplError(f"`{sorted(both)[0]}` is in both --grid and --space")
        program = parse(read_source(path), str(path))
        first = {n: v[0] for n, v in grid.items()} | {n: repr(lo) for n, (_, lo, _) in space.items()}
        check_overrides(parse_overrides([f"{n}={v}" for n, v in first.items()]), program)
        for n, values in grid.items():
            parse_overrides([f"{n}={v}" for v in values])
        self.spec = {"file": str(path.resolve()), "program": digest(path), "grid": grid,
                     "space": {n: list(d) for n, d in space.items()}, "samples": args.samples or 1,
                     "seeds": args.seeds, "scheduler": args.scheduler, "epochs": args.epochs}
        self.names = list(grid) + list(space)
        self.live: dict[str, dict] = {}  # running trials: epoch, loss, metric, log lines
        results = self.out / "results.json"
        if args.resume:
            if not results.is_file():
                raise DplError(f"--resume: {results} does not exist (no sweep to continue there)")
            try:
                saved = json.loads(results.read_text())
                before, self.trials = saved["sweep"], saved["trials"]
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise DplError(f"--resume: cannot read {results}: {e}") from None
            if before != self.spec:
                changed = [k for k in self.spec if before.get(k) != self.spec[k]]
                raise DplError(f"--resume: the sweep in {self.out} was started with a different {', '.join(changed)} "
                               f"(`program`: the file's content); run it with the same arguments and program, or "
                               f"choose another --out")
        else:
            if results.exists():
                raise DplError(f"{self.out} already holds a sweep; --resume continues it, --out names another "
                               f"directory")
            self.trials = make_trials(grid, space, args.samples or 1, args.seeds)
        self.by_id = {t["id"]: t for t in self.trials}
        try:
            (self.out / "trials").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DplError(f"cannot create {self.out / 'trials'}: {e.strerror}") from None

    def pending(self) -> list[dict]:
        return [t for t in self.trials if t["status"] not in FINISHED]

    def started(self, tid):
        self.by_id[tid]["status"] = "running"
        self.live.setdefault(tid, {"epoch": 0, "loss": None, "metric": "", "lines": []})

    def event(self, tid, kind, payload) -> None:
        self.started(tid)
        live = self.live[tid]
        if kind == "epoch":
            live["epoch"], live["loss"], line = payload
            live["lines"].append(line)
        else:
            live["lines"].append(payload)
            if kind == "out":
                live["metric"] = payload

    def finish(self, tid, result: dict) -> None:
        """Record a finished trial: its parameters and log files, then results.json and .csv (atomically)."""
        t = self.by_id[tid]
        live = self.live.pop(tid, {"lines": [], "epoch": 0, "loss": None, "metric": ""})
        d = self.out / "trials" / tid
        d.mkdir(exist_ok=True)
        log = result.pop("log", None)
        write_atomic(d / "log.txt", (log if log is not None else "\n".join(live["lines"]) + "\n").encode())
        t["log"] = str(d / "log.txt")
        params = result.pop("params", None)
        if params is not None:
            write_atomic(d / "params.npz", params)
            t["params"] = str(d / "params.npz")
        t.update({"epochs": live["epoch"], "loss": live["loss"], "metric": live["metric"]}, **result)
        self.save()

    def interrupted(self) -> None:
        for t in self.trials:
            if t["status"] == "running":
                t["status"] = "interrupted"
        self.save()

    def best(self) -> dict | None:
        """The configuration of lowest mean loss (of the last epoch) over its seeds (finished trials only), with the
        parameters file of its best seed."""
        groups: dict[str, list] = {}
        for t in self.trials:
            if t["status"] == "ok" and t.get("loss") is not None and math.isfinite(t["loss"]):
                groups.setdefault(json.dumps(t["config"], sort_keys=True), []).append(t)
        if not groups:
            return None
        key = min(groups, key=lambda k: (np.mean([t["loss"] for t in groups[k]]), k))
        ts = groups[key]
        top = min(ts, key=lambda t: t["loss"])
        losses = [t["loss"] for t in ts]
        return {"config": ts[0]["config"], "mean_loss": float(np.mean(losses)), "std_loss": float(np.std(losses)),
                "seeds": len(ts), "trial": top["id"], "params": top.get("params")}

    def save(self) -> None:
        keys = ["id", "status", "seed", "epochs", "loss", "metric", "seconds", "params", "log", "error"]
        write_atomic(self.out / "results.json", json.dumps({"sweep": self.spec, "trials": self.trials,
                                                            "best": self.best()}, indent=1).encode())
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(keys[:2] + self.names + keys[2:])
        for t in self.trials:
            w.writerow([t.get("id"), t.get("status")] + [t["config"].get(n, "") for n in self.names] +
                       ["" if t.get(k) is None else t.get(k) for k in keys[2:]])
        write_atomic(self.out / "results.csv", text.getvalue().encode())

    def table(self):
        """The live table: running trials, then the latest finished ones."""
        from rich import box
        from rich.table import Table
        done = [t for t in self.trials if t["status"] in FINISHED]
        running = [t for t in self.trials if t["status"] == "running"]
        failed = sum(t["status"] == "error" for t in done)
        title = (f"sweep {self.path.name}: {len(done)}/{len(self.trials)} finished"
                 f"{f' ({failed} failed)' if failed else ''}, {len(running)} running")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ["trial", "status"] + self.names + ["seed", "epoch", "loss", "metric"]:
            table.add_column(col, no_wrap=True, min_width=len(col), max_width=40 if col == "metric" else None)
        for t in running + done[-max(3, 20 - len(running)):]:
            live = self.live.get(t["id"], t)
            loss = live.get("loss") if t["status"] == "running" else t.get("loss")
            status = t["status"] if t["status"] != "error" else "[red]error[/red]"
            table.add_row(t["id"], status, *[t["config"].get(n, "") for n in self.names], str(t["seed"]),
                          str(live.get("epoch", 0) if t["status"] == "running" else t.get("epochs", "")),
                          "-" if loss is None else f"{loss:.4g}", live.get("metric", "") or "")
        return table


def sweep_command(args, path: Path) -> int:
    """`dpl sweep`: run the pending trials, show them live, write DIR/results.*; Ctrl-C keeps what finished."""
    from rich.console import Console
    if args.workers is not None and args.workers < 1:
        raise DplError(f"--workers must be at least 1, got {args.workers}")
    sweep = Sweep(args, path)
    pending = sweep.pending()
    if pending:
        try:
            _run(args, sweep, pending)
        except KeyboardInterrupt:
            return 130
    else:
        Console(stderr=True).print(sweep.table())
    return _conclude(sweep)


def _run(args, sweep, pending) -> None:
    """The pending trials on Ray under the live table; KeyboardInterrupt after recording what finished."""
    from rich.console import Console
    from rich.live import Live
    from .distributed import start_ray
    ray = start_ray(args.address)
    board = ray.remote(num_cpus=0)(Board).remote()
    workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    run = _run_tune if args.scheduler == "asha" else _run_tasks
    with Live(sweep.table(), console=Console(stderr=True), refresh_per_second=2, transient=False) as live:
        try:
            run(ray, sweep, pending, workers, board, live)
        except KeyboardInterrupt:
            sweep.interrupted()
            live.update(sweep.table())
            live.stop()
            done = sum(t["status"] in FINISHED for t in sweep.trials)
            print(f"dpl: sweep interrupted; {done} of {len(sweep.trials)} trials finished, kept in "
                  f"{sweep.out / 'results.json'}; continue with: {resume_command(args)}", file=sys.stderr)
            raise
        finally:
            ray.kill(board)
        live.update(sweep.table())


def _conclude(sweep) -> int:
    """Name the results files and the best configuration with its parameters."""
    best = sweep.best()
    errors = sum(t["status"] == "error" for t in sweep.trials)
    print(f"results: {sweep.out / 'results.csv'}, {sweep.out / 'results.json'}"
          f"{f'; {errors} trials failed (their errors are in the results and logs)' if errors else ''}",
          file=sys.stderr)
    if best is None:
        print("no trial finished with a finite loss", file=sys.stderr)
        return 1
    spread = f" ± {best['std_loss']:.3g} over {best['seeds']} seeds" if best["seeds"] > 1 else ""
    print(f"best configuration: {' '.join(f'{k}={v}' for k, v in best['config'].items())} (mean loss of the last "
          f"epoch {best['mean_loss']:.6g}{spread}); parameters: {best['params']}")
    return 0


def resume_command(args) -> str:
    parts = ["dpl", "sweep", args.file, "--grid", *args.grid] if args.grid else ["dpl", "sweep", args.file]
    if args.space:
        parts += ["--space", *args.space]
    for flag, value in (("--samples", args.samples), ("--seeds", args.seeds if args.seeds != 1 else None),
                        ("--scheduler", args.scheduler), ("--workers", args.workers), ("--address", args.address),
                        ("--out", args.out), ("--epochs", args.epochs)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts + ["--resume"])


def _poll(ray, sweep, board, live) -> None:
    for tid, kind, payload in ray.get(board.drain.remote()):
        if sweep.by_id[tid]["status"] not in FINISHED:
            sweep.event(tid, kind, payload)
    live.update(sweep.table())


def _run_tasks(ray, sweep, pending, workers, board, live) -> None:
    """Each trial a Ray task, at most `workers` at once; a task that dies is a failed trial."""
    task = ray.remote(num_cpus=1, max_retries=0)(run_trial)
    cwd, file = os.getcwd(), str(sweep.path.resolve())
    queue, running = list(pending), {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                t = queue.pop(0)
                running[task.remote(t, file, cwd, sweep.spec["epochs"], board)] = t["id"]
                sweep.started(t["id"])
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            _poll(ray, sweep, board, live)
            for ref in ready:
                tid = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    result = {"status": "error", "error": f"the Ray task failed: {type(e).__name__}: "
                                                          f"{str(e).strip().splitlines()[-1]}"}
                sweep.finish(tid, result)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _run_tune(ray, sweep, pending, workers, board, live) -> None:
    """The trials under Ray Tune with ASHA, on the per-epoch mean losses; a trial ASHA stops is 'stopped'."""
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.stopper import Stopper
    except ImportError:
        raise DplError("--scheduler asha needs Ray Tune: pip install 'dpl[ray]'") from None
    if not pending:
        return
    cwd, file, epochs = os.getcwd(), str(sweep.path.resolve()), sweep.spec["epochs"]

    def trainable(config):
        t = config["trial"]
        result = run_trial(t, file, cwd, epochs, board, lambda e, loss: tune.report({"loss": loss, "epoch": e}))
        board.push.remote(t["id"], "done", result)  # a failed trial is recorded from here, not by Tune

    class Interrupt(Stopper):
        flag = False

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return self.flag

    stopper = Interrupt()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(pending)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", max_concurrent_trials=workers,
                                    scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=1,
                                                           max_t=10 ** 6)),  # no cap on the epochs
        run_config=tune.RunConfig(storage_path=str((sweep.out / "tune").resolve()), verbose=0, stop=stopper,
                                  name=time.strftime("asha-%Y%m%d-%H%M%S")))  # a resumed sweep: a new one
    outcome = {}

    def run():
        with contextlib.redirect_stdout(io.StringIO()):  # Tune's own report (paths, TensorBoard): the table is ours
            outcome["grid"] = tuner.fit()
    fit = threading.Thread(target=run, daemon=True)
    fit.start()
    try:
        while fit.is_alive():
            fit.join(0.5)
            for tid, kind, payload in ray.get(board.drain.remote()):
                if kind == "done":
                    sweep.finish(tid, payload)
                elif sweep.by_id[tid]["status"] not in FINISHED:
                    sweep.event(tid, kind, payload)
            live.update(sweep.table())
    except KeyboardInterrupt:
        stopper.flag = True
        fit.join(30)
        raise
    _poll(ray, sweep, board, live)
    for r in outcome["grid"]:
        tid = r.config["trial"]["id"]
        if sweep.by_id[tid]["status"] in FINISHED:
            continue
        if r.error is not None:
            sweep.finish(tid, {"status": "error", "error": str(r.error).strip().splitlines()[-1]})
        else:
            sweep.finish(tid, {"status": "stopped", "error": None})
