"""Fuzzing the command line and the files it reads (issue 8): every flag of every command with odd values,
every train-block setting with odd values, and damaged parameter and checkpoint files end in success, a
DplError (exit 1) or argparse's usage error (exit 2 with `usage:`), never in an internal error (exit 2,
"please report it") or a traceback. Runs in this process with a fixed, derandomized set of examples (some
540, 30 s in all); DPL_FUZZ_EXAMPLES=N runs N random examples per test instead.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpl.train
from dpl import limits
from dpl.cli import main as cli_main
from dpl.paramfile import read_npz, write_npz

EXAMPLES = int(os.environ.get("DPL_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default: int):
    return settings(max_examples=EXAMPLES or default, derandomize=not EXAMPLES, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


PROG = """\
param w: [2] ~ zeros
module Lin(n) {
    param W: [n, 1] ~ glorot
    fn call(x) = x @ W
}
lin = Lin(2)
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
Y = [1.0, 2.0, 3.0, 4.0]
fn loss(x, y) = mean((x @ w + lin(x)[:, 0] - y) ^ 2)
fn attend_once(q) = attend(q, [[1.0, 0.0], [0.0, 1.0]], [[1.0], [2.0]])
train loss over X, Y {
    optimizer = adam(lr = 0.1)
    epochs = 2
    batch = 2
}
train loss over X, Y {
    SETTINGS
}
print(w)
"""
BLOCK2 = "optimizer = sgd(lr = 0.1, momentum = 0.5)\n    epochs = 2\n    batch = 1"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """prog.dpl, good.npz (its parameters) and good.ckpt.npz (a checkpoint inside its second train block)."""
    d = tmp_path_factory.mktemp("fuzzcli")
    old = os.getcwd()
    os.chdir(d)
    limits.configure()
    try:
        Path("prog.dpl").write_text(PROG.replace("SETTINGS", BLOCK2))
        assert quiet(["train", "prog.dpl", "--quiet", "--out", "good.npz"])[0] == 0
        real = dpl.train.Session.after_step

        def after_step(self, interp, state):  # a Ctrl-C at step 7, in the second block
            if self.report.steps == 7:
                self.signal = signal.SIGINT
            return real(self, interp, state)
        dpl.train.Session.after_step = after_step
        try:
            assert quiet(["train", "prog.dpl", "--quiet", "--out", "x.npz", "--checkpoint", "good.ckpt.npz"])[0] \
                == 130
        finally:
            dpl.train.Session.after_step = real
        yield d
    finally:
        os.chdir(old)
        limits.configure()


def quiet(argv) -> tuple[int, str, bool]:
    """Run `dpl ARGV` here: (exit status, stderr, whether argparse refused the arguments); stdin is empty."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            mock.patch("sys.stdin", io.StringIO("")):
        try:
            return cli_main(argv), err.getvalue(), False
        except SystemExit as e:
            return e.code, err.getvalue(), True
        finally:
            limits.configure()


def no_internal_error(argv) -> None:
    code, err, usage = quiet(argv)
    assert "please report it" not in err and "Traceback" not in err, (argv, err)
    assert code in ((2,) if usage else (0, 1)), (argv, code, err)
    if usage:
        assert "usage:" in err, (argv, err)


def reset(workdir: Path) -> None:
    """Only the fixture's files, prog.dpl as written there."""
    for p in workdir.iterdir():
        if p.name not in ("good.npz", "good.ckpt.npz"):
            p.unlink() if not p.is_dir() or p.is_symlink() else os.rmdir(p)
    (workdir / "prog.dpl").write_text(PROG.replace("SETTINGS", BLOCK2))


# ---- every flag --------------------------------------------------------------------------------------------

NUMBERS = ["-1", "0", "1", "2", "3", "-0", "1.5", "1e9", "99999999999999999999", "-99999999999999999999", "abc", ""]
PATHS = ["p.npz", "prog.dpl", "good.npz", "good.ckpt.npz", "c.npz", ".", "..", "nowhere/x.npz", "m.json",
         "g.png", "g.json", "x.bmp", "sub", "link", "dangling", "", "-", "p.npz/"]
FLAGS = {
    "common": {"--seed": NUMBERS, "--dtype": ["float64", "float32", "float16"], "--device": ["cpu", "gpu", "tpu"],
               "--max-steps": NUMBERS, "--max-elements": NUMBERS},
    "train": {"--out": PATHS, "--epochs": NUMBERS, "--params": PATHS, "--partial": None, "--metrics": PATHS,
              "--quiet": None, "--checkpoint-every": NUMBERS, "--checkpoint": PATHS, "--resume": PATHS + [None],
              "--skip-nonfinite": None, "--detect-nan": None, "--plot": PATHS},
    "run": {"--params": PATHS, "--partial": None, "--detect-nan": None},
    "repl": {"--params": PATHS, "--seed": NUMBERS, "--dtype": ["float64", "float32", "float16"]},
    "inspect": {"--fn": ["loss", "attend_once", "nope", "w", "lin", ""],
                "--args": ["[[1.0, 0.0]]", "[1.0]", "[1.0, 0.0]", "1 +", "x", "print(1)", '"s"'],
                "--params": PATHS, "--seed": NUMBERS, "-o": PATHS, "--tol": NUMBERS, "--collapse": None,
                "--format": ["tuple", "dot"], "--max-nodes-drawn": NUMBERS,
                "--layout-timeout": NUMBERS + ["inf", "nan"]},
}
COMMANDS = {"train": ["common", "train"], "run": ["common", "run"], "graph": ["inspect"], "gradcheck": ["inspect"],
            "attention": ["inspect"], "check": [], "repl": ["repl"]}
INSPECT_ONLY = {"graph": {"--collapse", "--format", "-o", "--max-nodes-drawn", "--layout-timeout"}, "attention": {"-o"},
                "gradcheck": {"--tol"}}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    options = {flag: values for group in COMMANDS[command] for flag, values in FLAGS[group].items()
               if command not in INSPECT_ONLY or flag not in set().union(*INSPECT_ONLY.values())
               or flag in INSPECT_ONLY[command]}
    argv = [command, draw(st.sampled_from(["prog.dpl", "prog.dpl", "prog.dpl", "missing.dpl", "good.npz", "."]))]
    if command in ("graph", "gradcheck", "attention"):
        argv += ["--fn", "loss"]
    for flag in draw(st.lists(st.sampled_from(sorted(options)), max_size=5, unique=True)) if options else []:
        values = options[flag]
        if values is None:
            argv.append(flag)
        elif flag == "--args":
            argv += [flag, *draw(st.lists(st.sampled_from(values), max_size=3))]
        else:
            value = draw(st.sampled_from(values))
            argv += [flag] if value is None else [flag, value]
    if command == "train" and "--quiet" not in argv:
        argv.append("--quiet")
    if command == "train" and "--epochs" not in argv:  # every run short
        argv += ["--epochs", "1"]
    return argv


@fuzz_settings(default=150)
@given(argv=command_lines())
def test_every_flag_ends_without_an_internal_error(workdir, argv):
    reset(workdir)
    os.mkdir("sub")
    os.symlink("p.npz", "link")
    os.symlink("nowhere/at/all.npz", "dangling")
    no_internal_error(argv)


# ---- every train-block setting ---------------------------------------------------------------------------

VALUES = ["-1", "0", "1", "2", "2.5", "-0.5", "1e300", "-1e300", "0.0 / 0.0", "1.0 / 0.0", "[1, 2]", "[0.9]",
          "[0.9, 0.999]", '"s"', "true", "false", "[]", "99999999999999999999", "w", "loss", "lin",
          "int(2.0)", "X"]
OPTIMIZERS = ["sgd(lr = {0})", "sgd(lr = 0.1, momentum = {0})", "adam(lr = {0})", "adam(betas = {0})",
              "adam(eps = {0})", "rmsprop(lr = {0})", "rmsprop(alpha = {0})", "{0}", "sgd()", "adam(lr = 0.1, 3)"]
SETTINGS = {"optimizer": None, "epochs": ["-1", "0", "1", "2", "2.5", '"s"', "true", "[1]", "int(2.0)"],
            "batch": VALUES, "shuffle": VALUES, "seed": VALUES, "epoch": VALUES, "lr": VALUES}


@st.composite
def train_blocks(draw):
    lines = []
    for name in draw(st.lists(st.sampled_from(sorted(SETTINGS)), max_size=4)):
        if name == "optimizer":
            value = draw(st.sampled_from(OPTIMIZERS)).format(draw(st.sampled_from(VALUES)))
        else:
            value = draw(st.sampled_from(SETTINGS[name]))
        lines.append(f"{name} = {value}")
    return "\n    ".join(lines)


@fuzz_settings(default=150)
@given(block=train_blocks(), extra=st.sampled_from([[], ["--skip-nonfinite"], ["--detect-nan"],
                                                    ["--checkpoint-every", "1"], ["--dtype", "float32"]]))
def test_every_train_setting_ends_without_an_internal_error(workdir, block, extra):
    reset(workdir)
    Path("prog.dpl").write_text(PROG.replace("SETTINGS", block))
    no_internal_error(["train", "prog.dpl", "--quiet", "--out", "p.npz", *extra])


# ---- damaged files -------------------------------------------------------------------------------------------

ODD_ARRAYS = [np.zeros(0), np.zeros((2, 2)), np.array(["ab"]), np.array([1, 2]), np.array(3.0),
              np.zeros(2, dtype=np.float32), np.array([True, False]), np.zeros(2, dtype=complex), np.zeros(5),
              np.zeros((2, 1)), np.array([np.nan, np.inf]), np.zeros(3, dtype=np.uint8),
              np.zeros(2, dtype=[("a", "f8")])]


@st.composite
def damaged_bytes(draw, data: bytes):
    """Truncated, overwritten or extended file content."""
    how = draw(st.sampled_from(["truncate", "flip", "append", "empty"]))
    if how == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    return b""


def with_member(path, arrays: dict, text_member: bool) -> None:
    write_npz(path, arrays)
    if text_member:
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("notes.txt", b"not an array")


@fuzz_settings(default=120)
@given(data=st.data(), kind=st.sampled_from(["bytes", "arrays"]), how=st.sampled_from(["run", "train", "load"]))
def test_damaged_params_end_without_an_internal_error(workdir, data, kind, how):
    reset(workdir)
    good = read_npz("good.npz")
    if kind == "bytes":
        Path("p.npz").write_bytes(data.draw(damaged_bytes(Path("good.npz").read_bytes())))
    else:
        arrays = dict(good)
        for name in data.draw(st.lists(st.sampled_from(sorted(good) + ["zz", "lin.W", "w.npy"]), min_size=1,
                                       max_size=3)):
            if data.draw(st.booleans()):
                arrays.pop(name, None)
            else:
                arrays[name] = data.draw(st.sampled_from(ODD_ARRAYS))
        with_member("p.npz", arrays, data.draw(st.booleans()))
    if how == "load":
        Path("prog.dpl").write_text('print(load("p.npz", "w"), load("p.npz", "notes.txt"))\n')
        no_internal_error(["run", "prog.dpl"])
    else:
        argv = ["run", "prog.dpl", "--params", "p.npz"]
        if how == "train":
            argv[0:1] = ["train"]
            argv += ["--quiet", "--out", "o.npz"]
        no_internal_error(argv + (["--partial"] if data.draw(st.booleans()) else []))


def json_values():
    return st.sampled_from([-1, 0, 1, 7, 10 ** 6, 2 ** 70, -(2 ** 70), 1.5, -0.5, float("nan"), "x", "", None,
                            True, False, [], {}, [1], [[]], {"a": 1}, "loss", "adam(lr=0.1)"])


def leaves(d, path=()):
    yield path
    if isinstance(d, dict):
        for k, v in d.items():
            yield from leaves(v, path + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from leaves(v, path + (i,))


@fuzz_settings(default=120)
@given(data=st.data(), kind=st.sampled_from(["meta", "meta", "arrays", "bytes"]))
def test_damaged_checkpoints_end_without_an_internal_error(workdir, data, kind):
    reset(workdir)
    good = read_npz("good.ckpt.npz", "checkpoint")
    meta = json.loads(bytes(good["__checkpoint__"]).decode())
    arrays = dict(good)
    if kind == "meta":
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from([p for p in leaves(meta) if p]))
            parent = meta
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent, dict) and data.draw(st.booleans()):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = data.draw(json_values())
        arrays["__checkpoint__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        write_npz("c.npz", arrays)
    elif kind == "arrays":
        for name in data.draw(st.lists(st.sampled_from(sorted(arrays) + ["params/zz", "opt.m/w", "done.1/w",
                                                                         "junk"]), min_size=1, max_size=3)):
            if data.draw(st.booleans()):
                arrays.pop(name, None)
            else:
                arrays[name] = data.draw(st.sampled_from(ODD_ARRAYS))
        with_member("c.npz", arrays, data.draw(st.booleans()))
    else:
        Path("c.npz").write_bytes(data.draw(damaged_bytes(Path("good.ckpt.npz").read_bytes())))
    Path("prog.dpl").write_text(PROG.replace("SETTINGS", BLOCK2))
    no_internal_error(["train", "prog.dpl", "--out", "x.npz", "--checkpoint", "c.npz", "--resume",
                       "--metrics", "m.json", *(["--quiet"] if data.draw(st.booleans()) else [])])
    no_internal_error(["run", "prog.dpl", "--params", "c.npz"])
