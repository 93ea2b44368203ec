"""dpl on Ray (docs/CLUSTER.md): `dpl train --workers N` equals single-process training, keeps checkpoints and
--resume; `dpl sweep` over a grid, random samples and seeds, with failed trials, ASHA, Ctrl-C and --resume.
One local Ray with 2 CPUs serves the tests that need it; they skip where ray is not installed (the others check
what dpl says without it, and that other commands never import it)."""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from dpl import checkpoint
from dpl.cli import main
from dpl.sweep import make_trials, parse_space, split_values
from test_train import npz

needs_ray = pytest.mark.usefixtures("local_ray")

# Two blocks, unequal shards (50 rows in batches of 15 split 8/7 and 3/2; batches of 7 split 4/3 and a last row
# alone), a parameter declared between the blocks, adam then sgd with momentum, prints around.
PROG = """\
param W1: [3, 8] ~ glorot
param b1: [8] ~ zeros
param W2: [8, 1] ~ glorot
xs = normal(0, 1, [50, 3])
ys = sin(xs[:, 0:1]) + 0.5 * xs[:, 1:2]
fn net(x) = tanh(x @ W1 + b1) @ W2
fn fit(x, y) = mean((net(x) - y) ^ 2)
train fit over xs, ys {
    optimizer = adam(lr = 0.01)
    epochs = 4
    batch = 15
}
print(fit(xs, ys))
param scale: [1] ~ ones
fn tuned(x, y) = mean((net(x) * scale - y) ^ 2)
train tuned over xs, ys {
    optimizer = sgd(lr = 0.05, momentum = 0.9)
    epochs = 3
    batch = 7
}
print("fit:", tuned(xs, ys))
"""

# What a sweep trains: `lr` and `hidden` are set per trial; hidden = -1 fails (a negative shape).
SWEPT = """\
lr = 0.05
hidden = 4
n = 2
param W1: [2, hidden] ~ glorot
param W2: [hidden, 1] ~ glorot
xs = normal(0, 1, [40, 2])
ys = xs[:, 0:1] - 0.5 * xs[:, 1:2]
fn fit(x, y) = mean((tanh(x @ W1) @ W2 - y) ^ 2)
train fit over xs, ys {
    optimizer = adam(lr = lr)
    epochs = n
    batch = 10
}
print("train mse:", fit(xs, ys))
"""


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train(tmp_path, name, *extra):
    out = tmp_path / f"{name}.npz"
    assert main(["train", str(tmp_path / "p.dpl"), "--quiet", "--out", str(out), "--metrics",
                 str(tmp_path / f"{name}.json"), *map(str, extra)]) == 0
    return npz(out), json.loads((tmp_path / f"{name}.json").read_text())


# ---- dpl train --workers ------------------------------------------------------------------------------------

@needs_ray
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_workers_equal_single_process(dtype, tol, tmp_path, capsys):
    (tmp_path / "p.dpl").write_text(PROG)
    ref, ref_m = train(tmp_path, "one", "--dtype", dtype)
    ref_out = capsys.readouterr().out
    got, m = train(tmp_path, "two", "--dtype", dtype, "--workers", 2)
    out = capsys.readouterr().out
    assert set(got) == {"W1", "b1", "W2", "scale"} and all(got[k].dtype == np.dtype(dtype) for k in got)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol, err_msg=k)
    assert m["steps"] == ref_m["steps"] == 16 + 24
    np.testing.assert_allclose(m["epoch_losses"], ref_m["epoch_losses"], rtol=tol)
    a, b = (float(o.split()[-1]) for o in (out.splitlines()[-1], ref_out.splitlines()[-1]))
    assert abs(a - b) < tol and out.splitlines()[-1].startswith("fit:")


@needs_ray
def test_workers_checkpoint_and_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second block writes the checkpoint; --resume with --workers ends as the run that was not
    interrupted, bit for bit."""
    import dpl.distributed
    (tmp_path / "p.dpl").write_text(PROG)
    ref, _ = train(tmp_path, "ref", "--workers", 2)
    real, calls = dpl.distributed.DataParallelTrainer.gradients, [0]

    def interrupt_at_20(self, *args):
        calls[0] += 1
        if calls[0] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)
    monkeypatch.setattr(dpl.distributed.DataParallelTrainer, "gradients", interrupt_at_20)
    out = tmp_path / "p.npz"
    args = ["train", str(tmp_path / "p.dpl"), "--quiet", "--out", str(out), "--workers", "2"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "checkpoint saved to" in err and "--workers 2 --quiet --resume" in err and not out.exists()
    meta, _ = checkpoint.read(tmp_path / "p.ckpt.npz")
    assert meta["report"]["steps"] == 20 and meta["block"] == 1 and meta["in_block"]
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    got = npz(out)
    assert all(np.array_equal(got[k], ref[k]) for k in ref)
    assert not (tmp_path / "p.ckpt.npz").exists()


@needs_ray
def test_workers_errors(tmp_path, capsys):
    (tmp_path / "p.dpl").write_text(PROG.replace("mean((net(x) - y) ^ 2)", "mean((net(x) - y[:, 0]) ^ 2)[0]"))
    assert main(["train", str(tmp_path / "p.dpl"), "--quiet", "--workers", "0"]) == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "p.dpl"), "--quiet", "--workers", "3"]) == 1
    assert "--workers 3 needs a CPU for each worker; the Ray cluster has 2" in capsys.readouterr().err
    # a user error inside a replica is reported as the program's error, with its position
    assert main(["train", str(tmp_path / "p.dpl"), "--quiet", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "p.dpl:7:" in err and "internal error" not in err and "Traceback" not in err


# ---- dpl sweep --------------------------------------------------------------------------------------------

def sweep(tmp_path, *extra):
    return main(["sweep", str(tmp_path / "s.dpl"), "--out", str(tmp_path / "out"), *map(str, extra)])


def results(tmp_path):
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [t["id"] for t in data["trials"]]
    return data, rows


@needs_ray
def test_sweep_grid_seeds_and_a_failing_trial(tmp_path, capsys):
    (tmp_path / "s.dpl").write_text(SWEPT)
    assert sweep(tmp_path, "--grid", "lr=1e-3,0.05", "hidden=-1,4", "--seeds", 2) == 0
    out, err = capsys.readouterr()
    data, rows = results(tmp_path)
    assert len(rows) == 8 and [(r["lr"], r["hidden"], r["seed"]) for r in rows[:3]] == \
        [("1e-3", "-1", "0"), ("1e-3", "-1", "1"), ("1e-3", "4", "0")]
    for t in data["trials"]:
        log = open(t["log"]).read()
        if t["config"]["hidden"] == "-1":  # recorded with its error; the others still ran
            assert t["status"] == "error" and "a shape cannot have negative sizes" in t["error"]
            assert "s.dpl:4:" in log and "params" not in t
        else:
            assert t["status"] == "ok" and t["epochs"] == 2 and t["metric"].startswith("train mse:")
            assert "epoch 2/2" in log and set(npz(t["params"])) == {"W1", "W2"}
    best = data["best"]
    ok = [t for t in data["trials"] if t["status"] == "ok"]
    lowest = min(ok, key=lambda t: t["loss"])
    assert best["config"] == {"lr": "0.05", "hidden": "4"} == lowest["config"] and best["seeds"] == 2
    assert best["params"] == lowest["params"]
    assert f"best configuration: lr=0.05 hidden=4 (mean loss of the last epoch {best['mean_loss']:.6g}" in out
    assert "4 trials failed" in err and "8/8 finished (4 failed)" in err


@needs_ray
def test_sweep_resume_runs_only_unfinished_trials(tmp_path, capsys):
    (tmp_path / "s.dpl").write_text(SWEPT)
    assert sweep(tmp_path, "--grid", "lr=0.01,0.05") == 0
    path = tmp_path / "out" / "results.json"
    data = json.loads(path.read_text())
    data["trials"][1]["status"] = "interrupted"  # as Ctrl-C leaves a running trial
    path.write_text(json.dumps(data))
    before = data["trials"][0]["seconds"]
    assert sweep(tmp_path, "--grid", "lr=0.01,0.05") == 1
    assert "already holds a sweep; --resume continues it" in capsys.readouterr().err
    assert sweep(tmp_path, "--grid", "lr=0.01,0.03", "--resume") == 1
    assert "was started with a different grid" in capsys.readouterr().err
    (tmp_path / "s.dpl").write_text(SWEPT + "print(1)\n")
    assert sweep(tmp_path, "--grid", "lr=0.01,0.05", "--resume") == 1
    assert "was started with a different program" in capsys.readouterr().err
    (tmp_path / "s.dpl").write_text(SWEPT)
    assert sweep(tmp_path, "--grid", "lr=0.01,0.05", "--resume") == 0
    data, _ = results(tmp_path)
    assert [t["status"] for t in data["trials"]] == ["ok", "ok"] and data["trials"][0]["seconds"] == before


@needs_ray
def test_sweep_ctrl_c_keeps_finished_trials(tmp_path, capsys):
    (tmp_path / "s.dpl").write_text(SWEPT)
    done = tmp_path / "out" / "trials" / "t0000" / "log.txt"

    def interrupt():  # once the short trial has finished, while the long one runs
        while not done.exists():
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    assert sweep(tmp_path, "--grid", "n=1,100000", "--workers", 2) == 130
    err = capsys.readouterr().err
    assert "sweep interrupted; 1 of 2 trials finished" in err and "--resume" in err
    data, _ = results(tmp_path)
    assert [t["status"] for t in data["trials"]] == ["ok", "interrupted"]


@needs_ray
def test_sweep_samples_and_asha(tmp_path, capsys):
    (tmp_path / "s.dpl").write_text(SWEPT)
    assert sweep(tmp_path, "--samples", 3, "--space", "lr=loguniform:1e-3:1e-1", "--grid", "hidden=3",
                 "--scheduler", "asha", "--epochs", 4) == 0
    data, rows = results(tmp_path)
    assert len(rows) == 3 and all(1e-3 <= float(r["lr"]) <= 1e-1 for r in rows)
    assert {t["status"] for t in data["trials"]} <= {"ok", "stopped"} and data["trials"][0]["status"] == "ok"
    assert all(t["epochs"] == 4 for t in data["trials"] if t["status"] == "ok")
    assert "best configuration: hidden=3 lr=" in capsys.readouterr().out


def test_sweep_argument_errors(tmp_path, capsys):
    (tmp_path / "s.dpl").write_text(SWEPT)
    for extra, message in [(["--grid", "lr"], "--grid takes NAME=VALUE,VALUE,..., got `lr`"),
                           (["--grid", "rate=1,2"], "--set rate: the program has no top-level assignment to `rate`"),
                           (["--space", "lr=loguniform:0:1"], "loguniform needs LOW > 0"),
                           (["--samples", "2"], "--samples draws from --space"),
                           ([], "a sweep needs --grid")]:
        assert sweep(tmp_path, *extra) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweep_values_and_samples():
    assert split_values('1e-3, [1, 2],"a,b"') == ["1e-3", "[1, 2]", '"a,b"']
    space = parse_space(["lr=loguniform:1e-4:1e-1", "k=randint:1:3", "p=uniform:0:1"])
    trials = make_trials({"h": ["16", "32"]}, space, samples=50, seeds=2)
    assert len(trials) == 200 and trials == make_trials({"h": ["16", "32"]}, space, 50, 2)
    lrs = [float(t["config"]["lr"]) for t in trials]
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-1 and min(lrs) < 1e-3 < max(lrs)  # spread over the decades
    assert {t["config"]["k"] for t in trials} == {"1", "2", "3"}


def test_without_ray_the_commands_say_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys
    (tmp_path / "p.dpl").write_text(PROG)
    (tmp_path / "s.dpl").write_text(SWEPT)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    assert main(["train", str(tmp_path / "p.dpl"), "--quiet", "--workers", "2"]) == 1
    assert "--workers needs Ray: pip install 'dpl[ray]'" in capsys.readouterr().err
    assert sweep(tmp_path, "--grid", "lr=0.1,0.2") == 1
    assert "dpl sweep needs Ray: pip install 'dpl[ray]'" in capsys.readouterr().err


def test_other_commands_do_not_import_ray(tmp_path):
    import subprocess
    import sys
    (tmp_path / "p.dpl").write_text(PROG)
    code = ("import sys; from dpl.cli import main; assert main(['train', 'p.dpl', '--quiet']) == 0; "
            "assert 'ray' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
