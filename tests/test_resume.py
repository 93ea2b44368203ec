"""Training that survives (README "Command line"): --checkpoint-every, SIGINT/SIGTERM → checkpoint and exit
130/143, --resume continuing bit for bit, atomic writes that fail midway, --skip-nonfinite, --detect-nan saving
the last good step, progress output, determinism in float32 and of checkpoints."""
from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import dpl.train
from dpl import checkpoint
from dpl.cli import main
from test_train import leftovers, npz


# Two train blocks (adam with noise from the run's generator in the loss, then rmsprop), a partial last batch,
# random draws and a parameter declared between the blocks, prints everywhere: 6000 steps, a few seconds.
LONG = """\
param W1: [4, 16] ~ glorot
param b1: [16] ~ zeros
param W2: [16, 1] ~ glorot
xs = normal(0, 1, [200, 4])
ys = sin(xs[:, 0:1]) * xs[:, 1:2] + 0.1 * xs[:, 2:3]
fn net(x) = tanh(x @ W1 + b1) @ W2
fn fit(x, y) = mean((net(x) + 0.01 * normal(0, 1, [1]) - y) ^ 2)
print(fit(xs, ys))
train fit over xs, ys {
    optimizer = adam(lr = 0.01)
    epochs = 300
    batch = 16
}
print(fit(xs, ys))
print(normal(0, 1, [3]))
param scale: [1] ~ ones
fn tuned(x, y) = mean((net(x) * scale - y) ^ 2)
train tuned over xs, ys {
    optimizer = rmsprop(lr = 0.001)
    epochs = 300
    batch = 32
}
print(tuned(xs, ys))
print(scale)
"""


def dpl_cmd(*args):
    return [sys.executable, "-m", "dpl.cli", *map(str, args)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of LONG: its stdout, params bytes and metrics."""
    d = tmp_path_factory.mktemp("reference")
    (d / "long.dpl").write_text(LONG)
    r = subprocess.run(dpl_cmd("train", d / "long.dpl", "--quiet", "--out", d / "ref.npz", "--metrics",
                               d / "m.json"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not list(d.glob("*.ckpt.npz"))  # nothing asked for a checkpoint, none is left
    return {"stdout": r.stdout, "params": (d / "ref.npz").read_bytes(),
            "metrics": json.loads((d / "m.json").read_text())}


def start_and_signal(tmp_path, marker: str, signum, *extra):
    """Start `dpl train LONG --quiet`, wait for a stderr line starting with `marker`, send `signum`."""
    prog = tmp_path / "long.dpl"
    prog.write_text(LONG)
    # a shell's background job ignores SIGINT, and DPL keeps it ignored then: give the child the default
    p = subprocess.Popen(dpl_cmd("train", prog, "--quiet", "--out", tmp_path / "p.npz", *extra), cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in p.stderr:
        seen.append(line)
        if line.startswith(marker):
            p.send_signal(signum)
            break
    out, err = p.communicate(timeout=120)
    return p.returncode, "".join(seen) + err, prog


def resume_from_message(err: str, cwd) -> subprocess.CompletedProcess:
    """Run the command the message printed (`dpl` as this interpreter's `python -m dpl.cli`)."""
    line = next(x for x in err.splitlines() if x.startswith("dpl: resume with: "))
    words = shlex.split(line[len("dpl: resume with: "):])
    assert words[:2] == ["dpl", "train"] and words[-2] == "--resume"
    return subprocess.run(dpl_cmd(*words[1:]), cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("signum, code, marker, block", [
    (signal.SIGINT, 130, "train tuned: epoch 5/", 2),
    (signal.SIGTERM, 143, "train fit: epoch 5/", 1),
], ids=["sigint-in-block-2", "sigterm-in-block-1"])
def test_signal_checkpoints_and_resume_is_bit_identical(signum, code, marker, block, tmp_path, reference):
    rc, err, prog = start_and_signal(tmp_path, marker, signum)
    assert rc == code, err
    name = signal.Signals(signum).name
    ckpt = tmp_path / "p.ckpt.npz"
    assert f"dpl: interrupted by {name} after step " in err and f"(train block {block}, " in err
    assert f"checkpoint saved to {ckpt}" in err
    assert f"dpl: resume with: dpl train {prog} --out {tmp_path / 'p.npz'} --quiet --resume {ckpt}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "p.npz").exists()  # an interrupted run does not write half-trained parameters
    meta, groups = checkpoint.read(ckpt)
    assert meta["in_block"] and meta["block"] == block - 1 and len(meta["done"]) == block - 1
    assert 0 < meta["report"]["steps"] < reference["metrics"]["steps"]
    assert groups["opt.v"].keys() == groups["params"].keys()  # optimizer state per parameter
    if block == 1:
        assert set(groups["opt.m"]) == {"W1", "b1", "W2"}  # adam's first moments
    else:
        assert set(groups["done.0"]) == {"W1", "b1", "W2"} and "scale" in groups["params"]
    r = resume_from_message(err, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.npz").read_bytes() == reference["params"]
    assert r.stdout == reference["stdout"]  # the prints before, between and after the blocks too
    assert not ckpt.exists()  # the run is complete: nothing left to resume
    assert leftovers(tmp_path) == []


def test_resume_after_sigkill_from_periodic_checkpoint(tmp_path, reference):
    """SIGKILL cannot be caught: what survives is the last --checkpoint-every checkpoint, and it is enough."""
    rc, err, prog = start_and_signal(tmp_path, "train tuned: epoch 3/", signal.SIGKILL, "--checkpoint-every", 100)
    assert rc == -signal.SIGKILL
    ckpt = tmp_path / "p.ckpt.npz"
    meta, _ = checkpoint.read(ckpt)  # intact, although the process died at any point
    assert meta["report"]["steps"] % 100 == 0 and meta["report"]["steps"] >= 3900  # 300 * 13 steps in block 1
    r = subprocess.run(dpl_cmd("train", prog, "--quiet", "--out", tmp_path / "p.npz", "--checkpoint-every", 100,
                               "--resume", "--metrics", tmp_path / "m.json"),
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.npz").read_bytes() == reference["params"]
    assert r.stdout == reference["stdout"]
    m, ref = json.loads((tmp_path / "m.json").read_text()), reference["metrics"]
    for k in ("steps", "epochs", "final_loss", "epoch_losses", "skipped_steps"):
        assert m[k] == ref[k], k
    assert not ckpt.exists()


# ---- in-process: a signal at an exact step ----------------------------------------------------------------

SMALL = """\
param w: [3] ~ normal(0.5)
param b: [] ~ zeros
xs = normal(0, 1, [11, 3])
ys = xs @ [1.0, -2.0, 0.5] + 0.3
fn loss(x, y) = mean((x @ w + b - y) ^ 2) + 0.001 * sum(normal(0, 1, [1]))
train loss over xs, ys {
    optimizer = OPT
    epochs = 6
    batch = 4
}
print(w)
train loss over xs, ys {
    optimizer = sgd(lr = 0.01, momentum = 0.9)
    epochs = 2
}
print(b)
"""

OPTS = {"adam": "adam(lr = 0.05)", "sgd": "sgd(lr = 0.05)", "momentum": "sgd(lr = 0.02, momentum = 0.9)",
        "rmsprop": "rmsprop(lr = 0.01)"}


def signal_at(monkeypatch, steps: dict):
    """Send signals to this process during the given loss evaluations: {call number: [signal, ...]}."""
    real, calls = dpl.train.loss_and_grads, [0]

    def wrapped(*args):
        calls[0] += 1
        for s in steps.get(calls[0], ()):
            os.kill(os.getpid(), s)
        return real(*args)
    monkeypatch.setattr(dpl.train, "loss_and_grads", wrapped)


def small(tmp_path, opt="adam"):
    prog = tmp_path / "s.dpl"
    prog.write_text(SMALL.replace("OPT", OPTS[opt]))
    return prog


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("at", [1, 5, 17, 18, 20])  # the first step, mid-epoch, an epoch's end, each block's end
def test_resume_at_any_step_is_bit_identical(opt, dtype, at, tmp_path, monkeypatch, capsys):
    prog = small(tmp_path, opt)
    common = ["--quiet", "--dtype", dtype]
    assert main(["train", str(prog), "--out", str(tmp_path / "ref.npz"), *common,
                 "--metrics", str(tmp_path / "ref.json")]) == 0
    ref_out = capsys.readouterr().out
    common += ["--metrics", str(tmp_path / "m.json")]
    signal_at(monkeypatch, {at: [signal.SIGINT]})
    assert main(["train", str(prog), "--out", str(tmp_path / "p.npz"), *common]) == 130
    out, err = capsys.readouterr()
    assert "checkpoint saved to" in err and not (tmp_path / "p.npz").exists()
    meta, _ = checkpoint.read(tmp_path / "p.ckpt.npz")
    assert meta["report"]["steps"] == at
    monkeypatch.undo()
    assert main(["train", str(prog), "--out", str(tmp_path / "p.npz"), *common, "--resume"]) == 0
    assert ref_out.startswith(out)
    assert capsys.readouterr().out == ref_out  # rerun from the top: what it prints is as uninterrupted
    got, ref = npz(tmp_path / "p.npz"), npz(tmp_path / "ref.npz")
    assert set(got) == {"w", "b"} and all(got[k].dtype == np.dtype(dtype) for k in got)
    assert (tmp_path / "p.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()
    m, ref = (json.loads((tmp_path / f).read_text()) for f in ("m.json", "ref.json"))
    for key in ("final_loss", "epochs", "steps", "skipped_steps", "epoch_losses"):
        assert m[key] == ref[key], key  # the epoch means too, of the epoch the run stopped in
    assert [b["steps"] for b in m["blocks"]] == [18, 2]


def test_a_resumed_run_can_be_interrupted_again(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "ref.npz")]) == 0
    for at in (3, 4, 9):  # stop at steps 3, then 3 + 4 = 7, then 16 (block 2 begins at 19)
        signal_at(monkeypatch, {at: [signal.SIGINT]})
        assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz")]
                    + ["--resume"] * (at != 3)) == 130
        monkeypatch.undo()
    assert checkpoint.read(tmp_path / "p.ckpt.npz")[0]["report"]["steps"] == 16
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz"), "--resume"]) == 0
    assert (tmp_path / "p.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()


@pytest.mark.parametrize("nth, steps", [(1, 18), (2, 20)], ids=["between-blocks", "after-the-last"])
def test_signal_between_blocks_checkpoints_the_finished_ones(nth, steps, tmp_path, monkeypatch, capsys):
    """A signal while top-level code runs stops it at once; the checkpoint holds the finished blocks."""
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "ref.npz")]) == 0
    ref_out = capsys.readouterr().out

    class KillOnPrint:  # the nth print (after block nth) raises the signal
        prints = 0

        def write(self, text):
            self.prints += text.strip() != ""
            if self.prints == nth and text.strip():
                os.kill(os.getpid(), signal.SIGINT)
            return len(text)

        def flush(self):
            pass

    stdout = KillOnPrint()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz")]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"interrupted by SIGINT after train block {nth} (step {steps})" in err
    meta, groups = checkpoint.read(tmp_path / "p.ckpt.npz")
    assert meta["block"] == nth and not meta["in_block"] and "opt.m" not in groups
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz"), "--resume"]) == 0
    assert capsys.readouterr().out == ref_out  # finished blocks skipped, the prints after them as they were
    assert (tmp_path / "p.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()


def test_signal_before_training_has_nothing_to_resume(tmp_path, monkeypatch, capsys):
    prog = tmp_path / "b.dpl"
    prog.write_text("print(1)\nparam w: [] = 1.0\nfn loss() = w ^ 2\ntrain loss {\n    epochs = 2\n}\n")

    class KillOnPrint:
        def write(self, text):
            os.kill(os.getpid(), signal.SIGINT)
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", KillOnPrint())
    assert main(["train", str(prog), "--quiet"]) == 130
    monkeypatch.undo()
    assert "interrupted by SIGINT before any training; nothing to resume" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dpl"]


def test_second_signal_stops_at_once_without_a_new_checkpoint(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    signal_at(monkeypatch, {6: [signal.SIGINT, signal.SIGINT]})
    assert main(["train", str(prog), "--quiet", "--checkpoint-every", "4", "--out", str(tmp_path / "p.npz")]) == 130
    err = capsys.readouterr().err
    assert "stopped at once by a second SIGINT; no checkpoint was written now" in err
    assert "resume from it with: " in err
    assert checkpoint.read(tmp_path / "p.ckpt.npz")[0]["report"]["steps"] == 4  # the periodic one, untouched


def test_checkpoint_every_writes_optimizer_state_and_position(tmp_path, monkeypatch, capsys):
    """Block 1 takes 3 steps an epoch (11 rows, batch 4): the checkpoint after step 7 says epoch 3, step 2 is
    next, with adam's t = 7 and m, v per parameter; a completed run removes its checkpoint."""
    prog = small(tmp_path)
    written = []
    real_write = checkpoint.write

    def spy(path, meta, groups):
        real_write(path, meta, groups)
        written.append(checkpoint.read(path))
    monkeypatch.setattr(checkpoint, "write", spy)
    assert main(["train", str(prog), "--quiet", "--checkpoint-every", "7", "--out", str(tmp_path / "p.npz"),
                 "--checkpoint", str(tmp_path / "c.npz")]) == 0
    assert [m["report"]["steps"] for m, _ in written] == [7, 14]  # block 2 has 2 steps: 18, 20 -> no 21
    meta, groups = written[0]
    pos = meta["position"]
    assert (pos["epoch"], pos["step"], pos["t"]) == (2, 1, 7)  # counted from 0
    assert pos["config"]["optimizer"][0] == "adam" and set(groups["opt.m"]) == {"w", "b"}
    assert groups["pos"]["epoch_losses"].shape == (1,)
    assert not (tmp_path / "c.npz").exists() and leftovers(tmp_path) == []


def test_checkpoint_path_of_choice(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "ref.npz")]) == 0
    custom = tmp_path / "my.ckpt"
    signal_at(monkeypatch, {10: [signal.SIGINT]})
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz"), "--checkpoint", str(custom)]) == 130
    monkeypatch.undo()
    assert f"--checkpoint {custom} --quiet --resume {custom}" in capsys.readouterr().err
    assert custom.is_file() and not (tmp_path / "p.ckpt.npz").exists()
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz"), "--checkpoint", str(custom),
                 "--resume"]) == 0
    assert (tmp_path / "p.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()


@pytest.mark.parametrize("change, words", [
    (["--seed", "3"], "it was written with --seed 0, this run has --seed 3"),
    (["--dtype", "float32"], "it was written with --dtype float64, this run has --dtype float32"),
    (["--epochs", "9"], "it was written with no --epochs, this run has --epochs 9"),
    ("edit", "has changed since"),
])
def test_resume_refuses_another_run(change, words, tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    signal_at(monkeypatch, {5: [signal.SIGINT]})
    assert main(["train", str(prog), "--quiet"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    if change == "edit":
        prog.write_text(prog.read_text() + "print(1)\n")
        change = []
    assert main(["train", str(prog), "--quiet", "--resume", *change]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dpl: error: cannot resume from {tmp_path / 's.params.ckpt.npz'}: ") and words in err
    assert (tmp_path / "s.params.ckpt.npz").is_file()


@pytest.mark.parametrize("damage, words", [
    (lambda m: m.pop("done"), "the meta data lacks done"),
    (lambda m: m.update(rng={"bit_generator": "MT19937"}), "state must be for a PCG64"),
    (lambda m: m["position"].pop("shuffle_state"), "the position lacks shuffle_state"),
    (lambda m: m.update(block=3), "the finished blocks do not add up"),
    (lambda m: m["report"].update(steps="many"), "the report: `steps` is not an integer"),
    (lambda m: m["position"].update(t=1.5), "the position: `t` is not an integer"),
    (lambda m: m.update(fingerprint=[]), "the fingerprint is not a record"),
], ids=["no-done", "bad-generator", "no-shuffle-state", "blocks", "steps-text", "t-float", "fingerprint"])
def test_damaged_checkpoint_is_a_user_error(damage, words, tmp_path, monkeypatch, capsys):
    """A checkpoint may come from anywhere: a wrong structure is reported, never an internal error."""
    prog = small(tmp_path)
    signal_at(monkeypatch, {5: [signal.SIGINT]})
    assert main(["train", str(prog), "--quiet"]) == 130
    monkeypatch.undo()
    ckpt = tmp_path / "s.params.ckpt.npz"
    meta, groups = checkpoint.read(ckpt)
    damage(meta)
    checkpoint.write(ckpt, meta, groups)
    capsys.readouterr()
    code = main(["train", str(prog), "--quiet", "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"dpl: error: cannot read checkpoint {ckpt}: it is damaged (")
    assert words in err


def test_optimizer_state_that_does_not_fit_is_refused(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    signal_at(monkeypatch, {5: [signal.SIGINT]})
    assert main(["train", str(prog), "--quiet"]) == 130
    monkeypatch.undo()
    ckpt = tmp_path / "s.params.ckpt.npz"
    meta, groups = checkpoint.read(ckpt)
    groups["opt.v"]["w"] = np.zeros(4)
    checkpoint.write(ckpt, meta, groups)
    capsys.readouterr()
    assert main(["train", str(prog), "--quiet", "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}:6:7: cannot resume from {ckpt}: its adam state does not fit the parameters")


def test_resume_errors(tmp_path, capsys):
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--resume"]) == 1
    assert f"no such checkpoint: {tmp_path / 's.params.ckpt.npz'}" in capsys.readouterr().err
    params = tmp_path / "plain.npz"
    np.savez(params, w=np.zeros(3))
    assert main(["train", str(prog), "--quiet", "--resume", str(params)]) == 1
    assert "is not a dpl checkpoint" in capsys.readouterr().err
    assert main(["train", str(prog), "--quiet", "--checkpoint-every", "0"]) == 1
    assert "--checkpoint-every takes a number of steps" in capsys.readouterr().err


# ---- writes that fail midway ----------------------------------------------------------------------------------

def failing_savez(after: int):
    """np.savez that writes `after` bytes of garbage, then fails like a full disk."""
    def savez(f, **arrays):
        f.write(b"PK\x03\x04" + b"\0" * after)
        raise OSError(errno.ENOSPC, "No space left on device")
    return savez


def test_full_disk_keeps_the_old_params_file(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path)
    out = tmp_path / "p.npz"
    np.savez(out, w=np.ones(3), b=np.array(2.0))
    old = out.read_bytes()
    monkeypatch.setattr(np, "savez", failing_savez(5000))
    assert main(["train", str(prog), "--quiet", "--out", str(out), "--metrics", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}: No space left on device" in err and "internal error" not in err
    assert out.read_bytes() == old
    assert not (tmp_path / "m.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz", "s.dpl"]  # no temporary file left


def test_full_disk_keeps_the_old_checkpoint(tmp_path, monkeypatch, capsys):
    """A periodic checkpoint that fails warns and training goes on; a failed checkpoint on SIGINT says so;
    either way the last good checkpoint is still there, whole, and resumes exactly."""
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "ref.npz")]) == 0
    signal_at(monkeypatch, {12: [signal.SIGINT]})
    args = ["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz"), "--checkpoint-every", "5"]
    real = np.savez
    calls = [0]

    def savez_failing_after_the_first(f, **arrays):
        calls[0] += 1
        return (real if calls[0] == 1 else failing_savez(300))(f, **arrays)
    monkeypatch.setattr(np, "savez", savez_failing_after_the_first)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "warning: cannot write" in err and "No space left on device" in err  # step 10's checkpoint
    assert "interrupted by SIGINT, but the checkpoint could not be written" in err
    monkeypatch.undo()
    ckpt = tmp_path / "p.ckpt.npz"
    assert checkpoint.read(ckpt)[0]["report"]["steps"] == 5
    assert leftovers(tmp_path) == []
    assert main(args + ["--resume"]) == 0
    assert (tmp_path / "p.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()


# ---- non-finite steps -------------------------------------------------------------------------------------------

SKIP = """\
param w: [2] ~ zeros
xs = [[1.0, 2.0], [0.5, -1.0], [-1.0, 1.0], [2.0, 0.5], [-3.0, 1.0], [1.5, 1.5]]
fn loss(x) = sum((x @ w - 1.0) ^ 2) + sum(sqrt(x[:, 0] + 1.5))
train loss over xs {
    optimizer = adam(lr = 0.1)
    epochs = 3
    batch = 1
    shuffle = false
}
print(w)
"""


def test_skip_nonfinite_skips_and_counts(tmp_path, capsys):
    """sqrt(x0 + 1.5) is NaN for the fifth row only (x0 = -3), one step an epoch. Skipping a step leaves the
    parameters and adam's state (t included) alone, so it equals training without that row."""
    prog = tmp_path / "k.dpl"
    prog.write_text(SKIP)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "stop.npz")]) == 1
    assert "training stopped at epoch 1, step 5: the loss is nan" in capsys.readouterr().err
    assert main(["train", str(prog), "--quiet", "--skip-nonfinite", "--out", str(tmp_path / "k.npz"),
                 "--metrics", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert err.count(", 1 non-finite steps skipped") == 3  # one epoch line each
    assert "trained 18 steps (3 non-finite steps skipped)" in err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["skipped_steps"] == 3 and m["steps"] == 18 and m["blocks"][0]["skipped_steps"] == 3
    clean = tmp_path / "c.dpl"
    clean.write_text(SKIP.replace(", [-3.0, 1.0]", ""))
    assert main(["train", str(clean), "--quiet", "--out", str(tmp_path / "c.npz")]) == 0
    assert (tmp_path / "k.npz").read_bytes() == (tmp_path / "c.npz").read_bytes()


def test_skip_nonfinite_survives_a_resume(tmp_path, monkeypatch, capsys):
    """Stopped right after the skipped step 5: the resumed epoch still counts it."""
    prog = tmp_path / "k.dpl"
    prog.write_text(SKIP)
    args = ["train", str(prog), "--quiet", "--skip-nonfinite", "--out", str(tmp_path / "k.npz")]
    assert main(args + ["--out", str(tmp_path / "ref.npz")]) == 0
    capsys.readouterr()
    signal_at(monkeypatch, {5: [signal.SIGINT]})
    assert main(args) == 130
    assert "non-finite" not in capsys.readouterr().err  # the epoch is not over
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert err.count(", 1 non-finite steps skipped") == 3 and "(3 non-finite steps skipped)" in err
    assert (tmp_path / "k.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()


def test_detect_nan_in_train_saves_the_last_good_step(tmp_path, capsys):
    """log(w) with lr 2: step 1 at w = 1 moves w to -1, where step 2's forward pass makes NaN."""
    prog = tmp_path / "n.dpl"
    prog.write_text("param w: [] = 1.0\nfn loss() = log(w)\ntrain loss {\n    optimizer = sgd(lr = 2.0)\n"
                    "    epochs = 5\n}\n")
    out = tmp_path / "n.npz"
    np.savez(out, w=np.array(7.0))
    assert main(["train", str(prog), "--quiet", "--detect-nan", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"train loss: epoch 1/5, mean loss 0\n{prog}:2:13: --detect-nan: `log` produced NaN")
    assert "training stopped at epoch 2, step 2, the parameters from the last good step were saved" in err
    assert npz(out)["w"] == -1.0


# ---- progress ------------------------------------------------------------------------------------------------------

def test_quiet_prints_one_line_per_epoch_and_no_table(tmp_path, capsys):
    prog = small(tmp_path)
    assert main(["train", str(prog), "--quiet", "--out", str(tmp_path / "p.npz")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6 + 2 + 1
    assert all(re.fullmatch(r"train loss: epoch \d/\d, mean loss [-+.e\d]+", x) for x in lines[:8]), lines
    assert [x.split(",")[0] for x in lines[:8]] == [f"train loss: epoch {e}/6" for e in range(1, 7)] + \
        [f"train loss: epoch {e}/2" for e in (1, 2)]
    assert lines[8].startswith("trained 20 steps in ")


def test_progress_bar_and_summary_table(tmp_path, capsys):
    prog = small(tmp_path)
    assert main(["train", str(prog), "--out", str(tmp_path / "p.npz"), "--metrics", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert "━" in err and "steps/s" in err and "epoch 6/6" in err and "step 18/18" in err
    assert "training summary" in err
    rows = [x.split() for x in err.splitlines() if x.strip().startswith("loss (s.dpl:")]
    assert [(" ".join(r[2:-4]), r[-4], r[-3]) for r in rows] == [
        ("adam(lr=0.05)", "6", "18"), ("sgd(lr=0.01, momentum=0.9)", "2", "2")]
    blocks = json.loads((tmp_path / "m.json").read_text())["blocks"]
    assert [(b["loss"], b["optimizer"], b["epochs"], b["steps"]) for b in blocks] == [
        ("loss", "adam(lr=0.05)", 6, 18), ("loss", "sgd(lr=0.01, momentum=0.9)", 2, 2)]
    assert all(b["where"].startswith(str(prog)) and b["seconds"] >= 0 for b in blocks)


# ---- determinism -------------------------------------------------------------------------------------------------

def test_float32_runs_are_identical_and_follow_the_seed(tmp_path, capsys):
    prog = small(tmp_path, "momentum")
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main(["train", str(prog), "--quiet", "--dtype", "float32", "--seed", seed,
                     "--out", str(tmp_path / f"{name}.npz")]) == 0
    a, b, c = ((tmp_path / f"{n}.npz").read_bytes() for n in "abc")
    assert a == b != c
    assert npz(tmp_path / "a.npz")["w"].dtype == np.float32


def test_checkpoints_of_the_same_step_are_identical(tmp_path, monkeypatch, capsys):
    prog = small(tmp_path, "rmsprop")
    contents = []
    for name in ("a", "b"):
        signal_at(monkeypatch, {8: [signal.SIGINT]})
        assert main(["train", str(prog), "--quiet", "--dtype", "float32", "--checkpoint",
                     str(tmp_path / f"{name}.ckpt")]) == 130
        monkeypatch.undo()
        meta, groups = checkpoint.read(tmp_path / f"{name}.ckpt")
        meta["report"]["seconds"] = 0
        for b in meta["report"]["blocks"]:
            b["seconds"] = 0
        contents.append((meta, groups))
    (ma, ga), (mb, gb) = contents
    assert ma == mb
    assert ga.keys() == gb.keys() and all(ga[g].keys() == gb[g].keys() for g in ga)
    assert all(np.array_equal(ga[g][k], gb[g][k]) and ga[g][k].dtype == gb[g][k].dtype for g in ga for k in ga[g])
    assert ga["params"]["w"].dtype == np.float32


def test_set_bindings_are_part_of_the_resume_identity(tmp_path, monkeypatch, capsys):
    """A run trained with --set resumes only with the same bindings, and its resume command repeats them."""
    prog = tmp_path / "s.dpl"
    prog.write_text("scale = 1.0\n" + SMALL.replace("OPT", OPTS["adam"]).replace("+ 0.3", "+ scale"))
    assert main(["train", str(prog), "--quiet", "--set", "scale=2.0", "--out", str(tmp_path / "ref.npz")]) == 0
    signal_at(monkeypatch, {5: [signal.SIGINT]})
    assert main(["train", str(prog), "--quiet", "--set", "scale=2.0"]) == 130
    monkeypatch.undo()
    assert "--set scale=2.0 --quiet --resume" in capsys.readouterr().err
    assert main(["train", str(prog), "--quiet", "--resume"]) == 1
    assert "it was written with --set ['scale=2.0'], this run has --set []" in capsys.readouterr().err
    assert main(["train", str(prog), "--quiet", "--set", "scale=2.0", "--resume"]) == 0
    assert (tmp_path / "s.params.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()
