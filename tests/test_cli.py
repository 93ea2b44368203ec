"""The `dpl` command (README "Command line", LANGUAGE.md §5, §8, §10), driven through a subprocess."""
from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HELLO = EXAMPLES / "hello.dpl"
TAYLOR = EXAMPLES / "taylor_sin.dpl"


def dpl(*args, cwd=None):
    """Run `dpl ARGS` with this interpreter; cwd defaults to a place that is not the repository."""
    return subprocess.run([sys.executable, "-m", "dpl.cli", *map(str, args)], cwd=cwd or ROOT / "tests",
                          capture_output=True, text=True, timeout=120)


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


RANDOM = """\
print(normal(0, 1, [3]))
print(uniform(0, 1, [2]))
param W: [2, 2] ~ glorot
print(W)
"""

# A tiny trainable program: a top-level param and a module instance `enc`.
TRAINABLE = """\
param w: [2] ~ zeros
module Dense(n_in, n_out) {
    param W: [n_in, n_out] ~ glorot
    param b: [n_out] ~ zeros
    fn call(x) = x @ W + b
}
enc = Dense(2, 1)
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
Y = [1.0, 2.0, 3.0, 4.0]
fn loss(x, y) = mean((x @ w + enc(x)[:, 0] - y) ^ 2)
train loss over X, Y {
    optimizer = sgd(lr = 0.05)
    epochs = 20
    shuffle = false
}
print(w)
print(enc.W)
"""

ERROR = """\
fn inner(x) = x @ [[1.0, 2.0, 3.0]]
fn outer(x) = inner(x)
print(1.5)
print(outer([[1.0, 2.0]]))
"""


def floats(line: str) -> np.ndarray:
    """A printed tensor (nested [a, b] lists of floats) as an array."""
    return np.array(eval(line.replace("nan", "float('nan')").replace("inf", "float('inf')")), dtype=float)


# ---- dpl run ---------------------------------------------------------------------------------------


def test_run_hello():
    r = dpl("run", HELLO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "10.0\n7.0\n"
    assert r.stderr == ""


def test_run_taylor_sin_gradient_matches_cos():
    r = dpl("run", TAYLOR)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    s, sin1 = map(float, lines[0].split())
    g, cos1 = map(float, lines[1].split())
    assert sin1 == math.sin(1.0) and cos1 == math.cos(1.0)
    assert abs(s - math.sin(1.0)) < 1e-7
    assert abs(g - math.cos(1.0)) < 1e-7
    assert g != cos1  # the series is truncated: the gradient is of the program, not of sin
    assert lines[2] == "true"


def test_run_skips_train_blocks(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    r = dpl("run", prog)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "[0.0, 0.0]"  # untrained
    assert not (tmp_path / "t.params.npz").exists()


def test_run_stdout_is_only_print_output(tmp_path):
    prog = write(tmp_path / "p.dpl", 'fn pair() {\n    return 1, 2.0\n}\n'
                 'print("a", 1, 2.5, [true, false], pair())\nprint(-0.0, 1e-08, 1e16)\n')
    r = dpl("run", prog)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a 1 2.5 [true, false] (1, 2.0)\n-0.0 1e-08 1e+16\n"
    assert r.stderr == ""


# ---- exit codes and errors ---------------------------------------------------------------------


def test_runtime_error_exit_1_with_position_and_chain(tmp_path):
    prog = write(tmp_path / "err.dpl", ERROR)
    r = dpl("run", prog)
    assert r.returncode == 1
    assert r.stdout == "1.5\n"  # what ran before the error was printed, and only that
    first, source, caret, *rest = r.stderr.splitlines()
    assert first.startswith(f"{prog}:1:17: ")
    assert "shape" in first
    assert source.strip() == "fn inner(x) = x @ [[1.0, 2.0, 3.0]]"
    assert caret.strip() == "^" and caret.index("^") == source.index("@")
    chain = "\n".join(rest)
    assert f"{prog}:2:" in chain and f"{prog}:4:" in chain  # called from outer, called from the top level
    assert "Traceback" not in r.stderr


def test_syntax_error_exit_1(tmp_path):
    prog = write(tmp_path / "syn.dpl", "print(1)\nx = (2 +\n")
    r = dpl("run", prog)
    assert r.returncode == 1
    assert r.stdout == ""  # a syntax error stops the program before anything runs
    assert r.stderr.startswith(f"{prog}:")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("verb", ["run", "train", "check"])
def test_missing_file(verb, tmp_path):
    r = dpl(verb, tmp_path / "nope.dpl")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "nope.dpl" in r.stderr and "no such file" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_usage_error_is_not_success():
    r = dpl("run")
    assert r.returncode not in (0, 1)
    assert "usage" in r.stderr
    assert dpl("frobnicate", HELLO).returncode not in (0, 1)


# ---- --debug ---------------------------------------------------------------------------------------


def test_debug_shows_traceback_only_on_error(tmp_path):
    ok = dpl("run", HELLO, "--debug")
    assert ok.returncode == 0 and ok.stdout == "10.0\n7.0\n"
    assert "Traceback" not in ok.stderr
    prog = write(tmp_path / "err.dpl", ERROR)
    plain = dpl("run", prog)
    debug = dpl("run", prog, "--debug")
    assert plain.returncode == debug.returncode == 1
    assert "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr
    assert f"{prog}:1:17: " in debug.stderr  # the DPL message is still there


# ---- dpl check ---------------------------------------------------------------------------------------


def test_check_ok_runs_nothing(tmp_path):
    r = dpl("check", HELLO)
    assert r.returncode == 0
    assert r.stdout == ""  # nothing printed: the program was not run
    assert "ok" in r.stderr
    # a program whose error only shows when it runs passes `check` and prints nothing
    prog = write(tmp_path / "late.dpl", ERROR)
    r = dpl("check", prog)
    assert r.returncode == 0 and r.stdout == ""


def test_check_unknown_name(tmp_path):
    prog = write(tmp_path / "u.dpl", "print(1)\nfn f(x) = x + y_unknown\n")
    r = dpl("check", prog)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"{prog}:2:15: ")
    assert "y_unknown" in r.stderr


def test_check_syntax_error(tmp_path):
    prog = write(tmp_path / "s.dpl", "fn f(x) = x +\n")
    r = dpl("check", prog)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"{prog}:1:")


# ---- --seed ------------------------------------------------------------------------------------------


def test_seed_changes_random_draws(tmp_path):
    prog = write(tmp_path / "r.dpl", RANDOM)
    default, s0, s0_again, s1 = (dpl("run", prog, *a) for a in ([], ["--seed", "0"], ["--seed", "0"],
                                                                  ["--seed", "1"]))
    for r in (default, s0, s0_again, s1):
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == 3
    assert default.stdout == s0.stdout == s0_again.stdout  # the default seed is 0, and runs repeat
    for a, b in zip(s0.stdout.splitlines(), s1.stdout.splitlines()):
        assert a != b  # normal, uniform and the glorot initializer all follow the seed
    u = floats(s1.stdout.splitlines()[1])
    assert ((0 <= u) & (u < 1)).all()


# ---- --dtype -------------------------------------------------------------------------------------------


def test_dtype_float32_prints_shortest_float32(tmp_path):
    prog = write(tmp_path / "f.dpl", "print(0.1 + 0.2)\nprint(1.0 / 3.0)\nprint([0.1, 2.0] * 3)\nprint(1 / 3)\n")
    r64 = dpl("run", prog)
    r32 = dpl("run", prog, "--dtype", "float32")
    assert r64.returncode == 0 and r32.returncode == 0, r64.stderr + r32.stderr
    assert r64.stdout == "0.30000000000000004\n0.3333333333333333\n[0.30000000000000004, 6.0]\n0.3333333333333333\n"
    assert r32.stdout == "0.3\n0.33333334\n[0.3, 6.0]\n0.33333334\n"
    explicit = dpl("run", prog, "--dtype", "float64")
    assert explicit.stdout == r64.stdout


def test_dtype_float32_random_draws_print_as_float32(tmp_path):
    prog = write(tmp_path / "r.dpl", "print(uniform(0, 1, [4]))\n")
    r = dpl("run", prog, "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    for tok in r.stdout.strip("[]\n").split(", "):
        x = np.float32(tok)
        assert tok == repr(float(np.format_float_scientific(x, unique=True)))  # shortest float32 digits
        assert len(tok) <= 12


def test_bad_dtype_is_rejected():
    r = dpl("run", HELLO, "--dtype", "float16")
    assert r.returncode != 0 and r.stdout == ""


# ---- dpl train and --params ----------------------------------------------------------------------------


def test_train_stdout_only_prints_progress_on_stderr(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    r = dpl("train", prog)  # with the progress bar
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2  # the two prints, nothing else
    assert floats(lines[0]).shape == (2,) and floats(lines[1]).shape == (2, 1)
    assert "trained 20 steps" in r.stderr
    assert (tmp_path / "t.params.npz").is_file()  # default output: FILE's stem + .params.npz
    q = dpl("train", prog, "--quiet", "--out", tmp_path / "q.npz")
    assert q.returncode == 0 and q.stdout == r.stdout
    assert "━" not in q.stderr


@pytest.mark.parametrize("example", [HELLO, TAYLOR], ids=["hello", "taylor_sin"])
def test_train_and_check_on_programs_without_train_blocks(example, tmp_path):
    """`dpl train` runs the program like `dpl run` and saves an empty parameter file; `dpl check` passes."""
    ran = dpl("run", example)
    out = tmp_path / "p.npz"
    r = dpl("train", example, "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ran.stdout
    assert "0 steps" in r.stderr
    with np.load(out) as z:
        assert z.files == []
    c = dpl("check", example)
    assert c.returncode == 0 and c.stdout == ""
    assert str(example) in c.stderr and "ok" in c.stderr


def test_params_loads_trained_parameters(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    out = tmp_path / "trained.npz"
    untrained = dpl("run", prog)
    trained = dpl("train", prog, "--quiet", "--out", out)
    loaded = dpl("run", prog, "--params", out)
    for r in (untrained, trained, loaded):
        assert r.returncode == 0, r.stderr
    assert loaded.stdout != untrained.stdout
    assert loaded.stdout == trained.stdout  # statements after train and a later run agree exactly
    with np.load(out) as z:
        w, W = z["w"], z["enc.W"]
    lw, lW = (floats(s) for s in loaded.stdout.splitlines())
    assert np.array_equal(lw, w) and np.array_equal(lW, W)
    assert "warning" not in loaded.stderr


def test_params_errors(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    missing = dpl("run", prog, "--params", tmp_path / "none.npz")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "none.npz" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    r = dpl("run", prog, "--params", bad)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, w=np.zeros(3))
    r = dpl("run", prog, "--params", wrong)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"{prog}:1:") and "`w`" in r.stderr  # the declaration, with both shapes
    assert "[2]" in r.stderr and "[3]" in r.stderr


def test_params_with_unknown_entries_warns_with_partial(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    extra = tmp_path / "extra.npz"
    np.savez(extra, w=np.array([5.0, 6.0]), stray=np.ones(2))
    r = dpl("run", prog, "--params", extra, "--partial")  # without --partial: an error (test_params_loading.py)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "[5.0, 6.0]"
    assert "stray" in r.stderr and "warning" in r.stderr


def test_params_partial_file_keeps_other_initializers(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    part = tmp_path / "part.npz"
    np.savez(part, w=np.array([5.0, 6.0]))
    base = dpl("run", prog)
    r = dpl("run", prog, "--params", part, "--partial")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[5.0, 6.0]", base.stdout.splitlines()[1]]


@pytest.mark.parametrize("command", ["run", "train"])
def test_threads_must_be_positive(command, tmp_path):
    r = dpl(command, HELLO, "--threads", "0", "--out" if command == "train" else "--seed",
            tmp_path / "o.npz" if command == "train" else "0")
    assert (r.returncode, r.stderr) == (1, "dpl: error: --threads must be at least 1, got 0\n")
    assert dpl(command, TAYLOR, "--threads", "2", *(["--out", tmp_path / "t.npz"] if command == "train" else [])
               ).returncode == 0


def test_resume_before_the_program_file_for_train_and_sweep():
    """train's --resume takes an optional path, so a .dpl after it is the program; sweep's is a plain flag."""
    from dpl.cli import _resume_before_program, build_parser
    train = build_parser().parse_args(_resume_before_program(["train", "--resume", "p.dpl"]))
    assert (train.file, train.resume) == ("p.dpl", "")
    sweep = build_parser().parse_args(_resume_before_program(["sweep", "--resume", "p.dpl", "--grid", "lr=1"]))
    assert (sweep.file, sweep.resume) == ("p.dpl", True)
