"""Runtime limits and data files (issue 5): a program that recurses too deeply, loops forever or asks for an
enormous tensor, and a data file that is missing or malformed, each end in a clear DplError at the construct
that failed (messages pinned with FILE:LINE:COL), never in a Python traceback, a hang or an allocation; and a
DPL program cannot reach beyond DPL (no builtin writes files or runs commands; `import` loads only .dpl files).
"""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest

from dpl import limits
from dpl.builtins import BUILTINS, Builtin
from dpl.check import check_file
from dpl.cli import main as cli_main
from dpl.errors import DplError
from dpl.interp import Interpreter
from dpl.parser import parse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Relative file names in messages; the limits back at their defaults after every test."""
    monkeypatch.chdir(tmp_path)
    limits.configure()
    yield
    limits.configure()


def error_of(src: str, file: str = "prog.dpl", **interp) -> DplError:
    """The DplError of running `src` (dedented) as FILE with an Interpreter in "run" mode."""
    Path(file).write_text(textwrap.dedent(src))
    with pytest.raises(DplError) as ei:
        Interpreter(mode="run", stdout=io.StringIO(), **interp).run_file(Path(file))
    return ei.value


def first(src: str, **kw) -> str:
    return error_of(src, **kw).format().splitlines()[0]


def run(src: str, file: str = "prog.dpl", **interp) -> str:
    Path(file).write_text(textwrap.dedent(src))
    out = io.StringIO()
    Interpreter(mode="run", stdout=out, **interp).run_file(Path(file))
    return out.getvalue()


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- recursion: DPL's own limit, and Python's stack ----------------------------------------------------

def test_recursion_without_base_case_is_reported_at_the_call():
    e = error_of("fn f(n) = f(n + 1)\nprint(f(0))\n")
    assert e.format().splitlines() == [
        "prog.dpl:1:11: recursion deeper than 400 calls in `f` (a recursive function without a base case?)",
        "    fn f(n) = f(n + 1)",
        "              ^",
        "  in f, called from prog.dpl:1:11 (400 times)",
        "  in f, called from prog.dpl:2:7",
    ]


def test_recursion_limit_is_met_before_pythons_in_process():
    """400 DPL calls need more Python frames than the default recursion limit: DPL raises it while it runs."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        src = "fn f(n) {\n    if n == 0 { return 0 }\n    return 1 + f(n - 1)\n}\nprint(f(390))\n"
        assert run(src) == "390\n"
        assert sys.getrecursionlimit() == 1000  # restored
    finally:
        sys.setrecursionlimit(old)


def test_pythons_stack_running_out_is_a_dpl_error_with_the_chain():
    """With DPL's own limit lifted, Python's stack runs out first: a DplError at the call, not RecursionError."""
    e = error_of("fn f(n) = f(n)\nprint(f(0))\n", max_depth=10 ** 9)
    lines = e.format().splitlines()
    assert lines[0] == f"prog.dpl:1:11: {limits.TOO_DEEP}"
    assert lines[1:3] == ["    fn f(n) = f(n)", "              ^"]
    assert lines[3].startswith("  in f, called from prog.dpl:1:11 (") and lines[3].endswith(" times)")
    assert lines[4] == "  in f, called from prog.dpl:2:7"


def test_pythons_stack_running_out_through_grad():
    e = error_of("fn f(x) = grad(f)(x)\nprint(f(1.0))\n", max_depth=10 ** 9)
    assert e.format().splitlines()[0] == f"prog.dpl:1:11: {limits.TOO_DEEP}"


def test_deep_nesting_is_a_syntax_level_error():
    src = "x = 1\ny = " + "[" * 2000 + "1" + "]" * 2000 + "\n"
    assert first(src) == ("prog.dpl:2:1003: this nests too deeply: more than 1000 levels of brackets, blocks, "
                          "calls and operators; split it up with intermediate variables or functions")


def test_nesting_check_counts_levels():
    ok = "x = " + "-" * 997 + "1\n"
    assert parse(ok, "p.dpl")
    with pytest.raises(DplError) as ei:
        parse("x = " + "-" * 998 + "1\n", "p.dpl")
    assert str(ei.value.span) == "p.dpl:1:1003"  # the literal 1, the 1001st level


def test_deep_nesting_in_dpl_check(capsys):
    Path("prog.dpl").write_text("y = " + "not " * 5000 + "true\n")
    code, out, err = cli(capsys, "check", "prog.dpl")
    assert code == 1 and out == ""
    assert err.splitlines()[0].startswith("prog.dpl:1:3997: this nests too deeply")


# ---- loops: --max-steps ----------------------------------------------------------------------------------

def test_while_that_never_ends(capsys):
    Path("prog.dpl").write_text("x = 0\nwhile true {\n    x = x + 1\n}\n")
    code, out, err = cli(capsys, "run", "prog.dpl", "--max-steps", "1000")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "prog.dpl:2:1: the `while` loop at prog.dpl:2:1 ran more than 1000 iterations; raise --max-steps if that "
        "is intended",
        "    while true {",
        "    ^",
    ]


def test_while_that_never_ends_inside_a_function_names_the_loop_and_the_call():
    e = error_of("fn spin(x) {\n    while x > 0 {\n        x = x + 1\n    }\n    return x\n}\nprint(spin(1))\n",
                 max_steps=500)
    assert e.format().splitlines() == [
        "prog.dpl:2:5: the `while` loop at prog.dpl:2:5 took the program past 500 steps (loop iterations and "
        "function calls; 500 of them its own iterations); raise --max-steps if that is intended",
        "        while x > 0 {",
        "        ^",
        "  in spin, called from prog.dpl:7:7",
    ]


def test_steps_count_exactly():
    src = "k = 0\nwhile k < 100 {\n    k = k + 1\n}\nprint(k)\n"
    assert run(src, max_steps=100) == "100\n"
    assert first(src, max_steps=99) == ("prog.dpl:2:1: the `while` loop at prog.dpl:2:1 ran more than 99 "
                                        "iterations; raise --max-steps if that is intended")


def test_for_loops_count_too():
    assert first("s = 0\nfor i in range(5000) {\n    s = s + i\n}\n", max_steps=1000) == (
        "prog.dpl:2:1: the `for` loop at prog.dpl:2:1 ran more than 1000 iterations; raise --max-steps if that is "
        "intended")


def test_steps_are_counted_across_loops():
    src = ("s = 0\nfor i in range(600) {\n    s = s + 1\n}\n"
           "fn g(n) {\n    k = 0\n    while k < n {\n        k = k + 1\n    }\n    return k\n}\nprint(g(600))\n")
    assert first(src, max_steps=1000) == (
        "prog.dpl:7:5: the `while` loop at prog.dpl:7:5 took the program past 1000 steps (loop iterations and "
        "function calls; 400 of them its own iterations); raise --max-steps if that is intended")
    assert run(src, max_steps=1201) == "600\n"  # 600 + 600 iterations and the call of g
    assert first(src, max_steps=1200).startswith("prog.dpl:7:5: the `while` loop at prog.dpl:7:5 took the program")


def test_soft_while_counts_its_iterations_before_running_them():
    start = time.perf_counter()
    assert first("x = 1.0\nsoft while 0.5 max 1000000000000 {\n    x = x * 0.5\n}\n", max_steps=1000) == (
        "prog.dpl:2:1: the `soft while` loop at prog.dpl:2:1 would run 1000000000000 iterations, more than the "
        "limit of 1000 steps (loop iterations and function calls); raise --max-steps if that is intended")
    assert time.perf_counter() - start < 1


def test_odeint_steps_count():
    src = "fn decay(t, y) = -y\nprint(odeint(decay, 1.0, 0.0, 1.0, steps = 99999999999))\n"
    assert first(src) == ("prog.dpl:2:7: `odeint` would take 99999999999 steps, more than the limit of 10000000 "
                          "steps (loop iterations and function calls); raise --max-steps if that is intended")
    src = "fn decay(t, y) = -y\nfor i in range(3) { }\nprint(odeint(decay, 1.0, 0.0, 1.0, steps = 100))\n"
    assert first(src, max_steps=50) == ("prog.dpl:3:7: `odeint` would take 100 steps after the 3 already run, more "
                                        "than the limit of 50 steps (loop iterations and function calls); raise "
                                        "--max-steps if that is intended")


def test_default_limits():
    assert limits.DEFAULT_MAX_STEPS == 10_000_000 and limits.DEFAULT_MAX_ELEMENTS == 2 ** 31
    assert Interpreter().max_steps == 10_000_000
    limits.configure(max_steps=7)
    assert Interpreter().max_steps == 7 and Interpreter(max_steps=9).max_steps == 9


def test_max_steps_on_dpl_train(capsys):
    Path("prog.dpl").write_text(textwrap.dedent("""\
        param w: [] = 1.0
        fn loss() {
            k = 0
            while k < 10 {
                k = k + 1
            }
            return (w - 2.0) ^ 2
        }
        train loss {
            optimizer = sgd(lr = 0.1)
            epochs = 100
        }
        """))
    code, out, err = cli(capsys, "train", "prog.dpl", "--quiet", "--max-steps", "10", "--out", "p.npz")
    assert code == 1
    assert "prog.dpl:4:5: the `while` loop at prog.dpl:4:5 took the program past 10 steps (loop iterations and " \
           "function calls; 10 of them its own iterations); raise --max-steps if that is intended" in err.splitlines()
    assert not Path("p.npz").exists()
    # each training step has the budget: 100 steps of 11 (the call of loss and 10 iterations) pass with 11
    code, out, err = cli(capsys, "train", "prog.dpl", "--quiet", "--max-steps", "11", "--out", "p.npz")
    assert code == 0, err


@pytest.mark.parametrize("option", ["--max-steps", "--max-elements"])
def test_limit_options_must_be_positive(option, capsys):
    Path("prog.dpl").write_text("print(1)\n")
    code, out, err = cli(capsys, "run", "prog.dpl", option, "0")
    assert (code, out, err) == (1, "", f"dpl: error: {option} must be a positive integer, got 0\n")


def test_cli_options_do_not_stick(capsys):
    Path("prog.dpl").write_text("print(1)\n")
    assert cli(capsys, "run", "prog.dpl", "--max-steps", "5", "--max-elements", "5")[0] == 0
    assert (limits.max_steps, limits.max_elements) == (5, 5)
    assert cli(capsys, "run", "prog.dpl")[0] == 0
    assert (limits.max_steps, limits.max_elements) == (10_000_000, 2 ** 31)


def test_max_steps_subprocess(tmp_path):
    """The real command: exit 1, the message, no traceback, and quickly."""
    Path("prog.dpl").write_text("while true { }\n")
    r = subprocess.run([sys.executable, "-m", "dpl.cli", "run", "prog.dpl", "--max-steps", "2000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[0] == ("prog.dpl:1:1: the `while` loop at prog.dpl:1:1 ran more than 2000 "
                                        "iterations; raise --max-steps if that is intended")
    assert "Traceback" not in r.stderr


# ---- memory: --max-elements ---------------------------------------------------------------------------------

def _too_big(what, shape):
    n = int(np.prod(shape, dtype=object))
    return (f"{what}: a tensor of shape {list(shape)} would have {n} elements, more than the limit of 2147483648; "
            f"raise --max-elements if that is intended")


TRILLION = [1000000, 1000000]


@pytest.mark.parametrize("expr, col, what, shape", [
    ("zeros([1000000, 1000000])", 5, "`zeros`", TRILLION),
    ("ones([1000000000000])", 5, "`ones`", [10 ** 12]),
    ("uniform(0, 1, [1000000, 1000000])", 5, "`uniform`", TRILLION),
    ("normal(0, 1, [1000000, 1000000])", 5, "`normal`", TRILLION),
    ("eye(1000000)", 5, "`eye`", TRILLION),
    ("range(1000000000000)", 5, "`range`", [10 ** 12]),
    ("arange(1000000000000)", 5, "`arange`", [10 ** 12]),
    ("arange(0, 1000000000000, 1)", 5, "`arange`", [10 ** 12]),
    ("arange(0.0, 1000000.0, 0.000001)", 5, "`arange`", [10 ** 12]),
    ("linspace(0, 1, 1000000000000)", 5, "`linspace`", [10 ** 12]),
    ("reshape(zeros([2]), [1000000, 1000000])", 5, "`reshape`", TRILLION),
    ("one_hot(range(1000000), 1000000)", 5, "`one_hot`", TRILLION),
    ("zeros([1000000, 1]) + zeros([1, 1000000])", 25, "`+`", TRILLION),
    ("zeros([1000000, 1]) * ones([1000000])", 25, "`*`", TRILLION),
    ("zeros([1000000, 1]) < zeros([1000000])", 25, "`<`", TRILLION),
    ("(zeros([1000000, 1]) > 0) and (zeros([1000000]) > 0)", 31, "`and`", TRILLION),
    ("zeros([1000000, 1]) @ zeros([1, 1000000])", 25, "`@`", TRILLION),
    ("where(zeros([1000000, 1]) > 0, 1.0, zeros([1000000]))", 5, "`where`", TRILLION),
    ("max(zeros([1000000, 1]), zeros([1000000]))", 5, "`max`", TRILLION),
    ("clip(zeros([1000000, 1]), zeros([1000000]), 1.0)", 5, "`clip`", TRILLION),
    ("mse(zeros([1000000, 1]), zeros([1000000]))", 5, "`mse`", TRILLION),
    ("blend(0.5, zeros([1000000, 1]), zeros([1000000]))", 5, "`blend`", TRILLION),
    ("dense(csr([1.0], [0], [0, 1], [1, 1000000000000]))", 5, "`dense`", [1, 10 ** 12]),
    ("adjacency([[0], [1]], 1000000000000)", 5, "`adjacency`", [10 ** 12]),
    ("zeros([2, 1000000])[int(zeros([1000000]))]", 5, "indexing", TRILLION),
    ("zeros([1000, 3000])[int(zeros([1000000])), 0:3000]", 5, "indexing", [1000000, 3000]),
    ("attention(zeros([1000000, 4]), zeros([1000000, 4]))", 5, "the attention scores", TRILLION),
    ("attend(zeros([1000000, 4]), zeros([1000000, 4]), zeros([1000000, 4]))", 5, "the attention scores", TRILLION),
    ("write(zeros([1000000, 1]), zeros([1000000]), zeros([1000000]), zeros([1000000]))", 5, "`write`", TRILLION),
])
def test_huge_tensors_fail_at_once_naming_the_shape(expr, col, what, shape):
    start = time.perf_counter()
    assert first(f"x = {expr}\n") == f"prog.dpl:1:{col}: {_too_big(what, shape)}"
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("decl, col", [("~ zeros", 10), ("~ glorot", 10), ("~ normal(1.0)", 10), ("= 0.0", 10)])
def test_huge_parameters(decl, col):
    assert first(f"param W: [1000000, 1000000] {decl}\n") == \
        f"prog.dpl:1:{col}: {_too_big('parameter `W`', TRILLION)}"


def test_huge_parameter_of_a_module_instance():
    src = "module Big(n) {\n    param W: [n, n] ~ zeros\n}\nb = Big(1000000)\n"
    assert first(src) == f"prog.dpl:2:14: {_too_big('parameter `b.W`', TRILLION)}"


def test_huge_soft_if_blend():
    src = "y = zeros([1000000, 1])\nsoft if 0.5 { y = zeros([1000000]) }\n"
    assert first(src) == f"prog.dpl:2:1: {_too_big('`soft if`', TRILLION)}"


def test_huge_tensor_literal():
    src = "x = ones([1000000])\ny = [x, x, x]\n"
    limits.configure(max_elements=2_000_000)
    assert first(src) == ("prog.dpl:2:5: a tensor literal: a tensor of shape [3, 1000000] would have 3000000 "
                          "elements, more than the limit of 2000000; raise --max-elements if that is intended")


def test_negative_sizes_are_not_mistaken_for_huge_ones():
    assert first("x = zeros([-1000000, -1000000])\n") == "prog.dpl:1:5: `zeros`: negative dimensions are not allowed"
    assert run("print(shape(reshape(zeros([6]), [-1, 2])))\n") == "[3, 2]\n"


def test_nothing_is_allocated_before_the_limit_says_no():
    """A 4000 x 4000 float64 request (128 MB) under a limit of 1000 elements allocates next to nothing."""
    limits.configure(max_elements=1000)
    Path("prog.dpl").write_text("x = ones([4000, 4000])\n")
    prog = parse(Path("prog.dpl").read_text(), "prog.dpl")
    tracemalloc.start()
    try:
        with pytest.raises(DplError):
            Interpreter(mode="run", stdout=io.StringIO()).run_program(prog)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20
    limits.configure(max_elements=16_000_000)  # the same request within the limit does allocate (the probe works)
    tracemalloc.start()
    try:
        Interpreter(mode="run", stdout=io.StringIO()).run_program(prog)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak >= 4000 * 4000 * 8


def test_max_elements_option(capsys):
    Path("prog.dpl").write_text("x = zeros([20, 20])\nprint(sum(x))\n")
    code, out, err = cli(capsys, "run", "prog.dpl", "--max-elements", "399")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == ("prog.dpl:1:5: `zeros`: a tensor of shape [20, 20] would have 400 elements, more "
                                   "than the limit of 399; raise --max-elements if that is intended")
    assert cli(capsys, "run", "prog.dpl", "--max-elements", "400") == (0, "0.0\n", "")


def test_out_of_memory_is_a_dpl_error(monkeypatch):
    """Whatever allocation the limits miss, MemoryError becomes a DplError at the construct that asked."""
    from dpl import builtins

    def exhausted(*a, **k):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)")
    monkeypatch.setattr(builtins.B.xp, "ones", exhausted)
    assert first("x = 1\ny = ones([2])\n") == ("prog.dpl:2:5: `ones`: Unable to allocate 7.28 TiB for an array with "
                                              "shape (1000000, 1000000)")


# ---- data files --------------------------------------------------------------------------------------------

def _write(name: str, data) -> None:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_bytes(data if isinstance(data, bytes) else data.encode())


def load_error(call: str) -> str:
    return first(f"x = 1\ny = {call}\n")


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", "", "`load`: data/empty.csv holds no numbers"),
    ("blank.csv", "\n\n# only a comment\n", "`load`: data/blank.csv holds no numbers"),
    ("ragged.csv", "1,2,3\n4,5,6\n7,8\n", "`load`: data/ragged.csv line 3 has 2 values, but line 1 has 3; every "
                                          "row needs the same number of columns"),
    ("ragged2.csv", "# x, y\n1\n2,3\n", "`load`: data/ragged2.csv line 3 has 2 values, but line 2 has 1; every row "
                                        "needs the same number of columns"),
    ("text.csv", "1,2\n3,abc\n", "`load`: data/text.csv line 2, column 2: `abc` is not a number"),
    ("header.csv", "x,y\n1,2\n", "`load`: data/header.csv line 1, column 1: `x` is not a number (a header line? "
                                 "load(..., header = true) reads the rows below it)"),
    ("hole.csv", "1,2\n3,\n", "`load`: data/hole.csv line 2, column 2: an empty cell is not a number"),
    ("semicolons.csv", "1;2\n", "`load`: data/semicolons.csv line 1, column 1: `1;2` is not a number"),
    ("latin1.csv", b"1,2\n3,\xe94\n", "`load`: data/latin1.csv line 2 is not UTF-8 text"),
])
def test_load_csv_problems_name_the_file_and_line(name, content, message):
    _write(f"data/{name}", content)
    assert load_error(f'load("data/{name}")') == f"prog.dpl:2:5: {message}"


def test_load_csv_that_is_fine():
    _write("data/ok.csv", "# a comment\n1, 2\n\n3,4.5\nnan,inf\n")
    assert run('print(load("data/ok.csv"))\n') == "[[1.0, 2.0], [3.0, 4.5], [nan, inf]]\n"


def test_load_numpy_problems():
    np.save("a.npy", np.arange(3.0))
    np.savez("z.npz", weights=np.ones(2), bias=np.zeros(1))
    _write("fake.npy", "1,2,3\n")
    _write("fake.npz", "not a zip\n")
    _write("empty.npy", b"")
    _write("broken.npz", b"PK\x03\x04 and then garbage")
    Path("truncated.npy").write_bytes(Path("a.npy").read_bytes()[:-8])
    np.save("strings.npy", np.array(["a", "b"]))
    np.save("objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    Path("folder.npy").mkdir()
    _write("a.txt", "1,2\n")
    cases = {
        'load("missing.csv")': "`load`: no such file: missing.csv",
        'load("data/missing.npz", "w")': "`load`: no such file: data/missing.npz",
        'load("folder.npy")': "`load`: folder.npy is not a file",
        'load("z.npz", "weight")': "`load`: z.npz has no array `weight`; it has `weights`, `bias`",
        'load("z.npz")': '`load` of an .npz file needs the array\'s key: load("z.npz", "name")',
        'load("z.npz", 1)': "`load`: the key of an array in an .npz file is a string, got an integer scalar",
        'load("a.npy", "weights")': '`load`: only .npz files hold arrays by key; load("a.npy") takes no key',
        'load("fake.npy")': "`load`: fake.npy is not a NumPy .npy file",
        'load("empty.npy")': "`load`: empty.npy is not a NumPy .npy file (it is empty)",
        'load("fake.npz", "w")': "`load`: fake.npz is not a NumPy .npz file (a zip archive of .npy files)",
        'load("broken.npz", "w")': "`load`: cannot read broken.npz: File is not a zip file",
        'load("truncated.npy")': "`load`: cannot read truncated.npy: it is truncated (16 of 24 bytes)",
        'load("strings.npy")': "`load`: strings.npy holds <U1 values; DPL loads numbers and booleans",
        'load("objects.npy")': "`load`: cannot read objects.npy: it holds Python objects (pickled), which DPL "
                               "does not read",
        'load("a.txt")': "`load` reads .csv, .npy and .npz files, not `.txt`",
        'load(3)': "`load` takes a file name string, got an integer scalar",
    }
    got = {call: load_error(call) for call in cases}
    assert got == {call: f"prog.dpl:2:5: {msg}" for call, msg in cases.items()}
    assert run('print(load("a.npy"), load("z.npz", "bias"))\n') == "[0.0, 1.0, 2.0] [0.0]\n"


def test_load_paths_are_relative_to_the_program():
    _write("lib/data/x.csv", "1,2\n3\n")
    _write("lib/m.dpl", 'fn get() = load("data/x.csv")\n')
    Path("prog.dpl").write_text('import "lib/m.dpl"\ny = get()\n')
    e = error_of(Path("prog.dpl").read_text())
    assert e.format().splitlines()[0] == ("lib/m.dpl:1:12: `load`: lib/data/x.csv line 2 has 1 value, but line 1 "
                                          "has 2; every row needs the same number of columns")


def test_train_over_tensors_of_different_lengths(capsys):
    Path("prog.dpl").write_text(textwrap.dedent("""\
        param w: [1] = 0.0
        fn loss(x, y) = mean((x * w - y) ^ 2)
        xs = ones([10, 1])
        ys = ones([9, 1])
        train loss over xs, ys {
            epochs = 1
        }
        """))
    code, out, err = cli(capsys, "train", "prog.dpl", "--quiet", "--out", "p.npz")
    assert code == 1
    assert err.splitlines()[0] == ("prog.dpl:5:21: `train ... over`: every tensor needs the same first dimension; "
                                   "10 rows in the first but 9 here")


# ---- no way out of DPL ---------------------------------------------------------------------------------------

EXPECTED_BUILTINS = {
    # math and reductions
    "exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "softplus", "sqrt", "abs", "max", "min", "clip",
    "where", "sum", "mean", "logsumexp", "norm", "softmax", "argmax", "argmin", "any", "all",
    # casts and shapes
    "float", "int", "reshape", "transpose", "concat", "stack", "shape", "len", "zeros", "ones", "eye", "range",
    "arange", "linspace", "one_hot",
    # losses, random numbers, data (read-only), output to stdout
    "mse", "cross_entropy", "uniform", "normal", "load", "load_header", "print",
    # differentiation, soft control flow, optimizers
    "grad", "value_and_grad", "blend", "sgd", "adam", "rmsprop",
    # attention, memory, ODEs, sparse graphs
    "attend", "attention", "read", "address", "write", "odeint", "csr", "adjacency", "dense",
    # stochastic dynamics (dpl/dynamics.py, issue 11)
    "sdeint",
    # NumPy/SciPy functions (dpl/numerics.py, dpl/linalg.py)
    "sign", "floor", "ceil", "round", "square", "reciprocal", "log1p", "expm1", "log2", "log10", "exp2", "sinh",
    "cosh", "arcsin", "arccos", "arctan", "arctan2", "arcsinh", "arccosh", "arctanh", "hypot", "logaddexp", "sinc",
    "erf", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "gamma",
    "sort", "argsort", "topk", "cumsum", "cumprod", "prod", "diff", "var", "std", "median", "quantile",
    "split", "flip", "roll", "pad", "repeat", "tile", "tril", "triu", "diag", "diagonal", "trace", "outer", "kron",
    "tensordot", "einsum",
    "solve", "solve_triangular", "inv", "det", "slogdet", "cholesky", "eigh", "eigvalsh", "svd", "svdvals", "qr",
    "expm", "matrix_power",
    # lists and function transforms (issue 10)
    "append", "jacobian", "hessian", "jvp", "vjp", "stop_gradient", "vmap",
    # complex numbers (dpl/complexes.py)
    "real", "imag", "conj", "angle", "fft", "ifft", "rfft", "irfft",
    # the stdlib's DNC unsorts its free list with it (issue 12)
    "take_along_axis",
    # for the stdlib's layers (issue 12): a flag, an error raised from DPL code, weights passed to `dpl attention`
    "training", "error", "show_attention",
}
# Python names whose use would let a builtin reach outside DPL (files written, processes, imports, code).
FORBIDDEN = {"system", "popen", "Popen", "subprocess", "check_output", "spawn", "fork", "remove", "unlink", "rmdir",
             "rmtree", "rename", "write_bytes", "write_text", "save", "savez", "savez_compressed", "tofile", "mkdir",
             "makedirs", "exec", "eval", "__import__", "import_module", "socket", "urlopen", "pickle", "dump",
             "chmod", "symlink_to", "environ", "putenv"}


def test_the_builtin_table_is_exactly_this():
    """A new builtin makes this fail on purpose: check that it neither writes files nor runs anything, then add
    it here. `write` is the differentiable memory write (M, w, erase, add), not a file operation."""
    assert set(BUILTINS) == EXPECTED_BUILTINS


def _names_used(fn, seen=None) -> set[str]:
    """The global and attribute names a function's code uses, and those of the DPL functions it calls."""
    seen = set() if seen is None else seen
    if fn in seen:
        return set()
    seen.add(fn)
    names, codes = set(), [fn.__code__]
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    for n in list(names):
        callee = fn.__globals__.get(n)
        if isinstance(callee, types.FunctionType) and callee.__module__.startswith("dpl."):
            names |= _names_used(callee, seen)
    return names


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_no_builtin_writes_files_or_runs_commands(name):
    b = BUILTINS[name]
    assert isinstance(b, Builtin)
    used = _names_used(b.fn)
    assert not used & FORBIDDEN, f"`{name}` uses {sorted(used & FORBIDDEN)}"
    if name not in ("load", "load_header"):  # the builtins that open files: they read .csv/.npy/.npz, no pickles
        assert "open" not in used, f"`{name}` opens files"


def test_the_scan_sees_a_forbidden_name():
    """The scan above can fail: a builtin that would save a file is caught."""
    def leaky(x):
        np.save("out.npy", x)
    assert "save" in _names_used(leaky) & FORBIDDEN


def test_write_is_the_memory_write():
    out = run("M = zeros([2, 2])\nprint(write(M, [1.0, 0.0], [0.0, 0.0], [1.0, 2.0]))\n")
    assert out == "[[1.0, 2.0], [0.0, 0.0]]\n"
    assert sorted(p.name for p in Path(".").iterdir()) == ["prog.dpl"]  # nothing written


@pytest.mark.parametrize("target", ["helper.py", "helper", "helper.txt", "helper.DPL", "../helper.pyc"])
def test_import_takes_only_dpl_files(target):
    Path("helper.py").write_text("x = 1\n")   # valid DPL and valid Python alike
    Path("helper").write_text("x = 1\n")
    Path("helper.txt").write_text("x = 1\n")
    Path("helper.DPL").write_text("x = 1\n")
    src = f'import "{target}"\nprint(x)\n'
    expected = f"prog.dpl:1:8: `import` loads DPL programs (.dpl files), not `{target}`"
    assert first(src) == expected
    Path("prog.dpl").write_text(src)
    assert check_file(Path("prog.dpl"))[0].format().splitlines()[0] == expected


def test_import_of_a_dpl_file_still_works():
    Path("helper.dpl").write_text("x = 41\n")
    assert run('import "helper.dpl"\nprint(x + 1)\n') == "42\n"


def test_use_takes_only_stdlib_modules():
    assert first("use os\n") == ("prog.dpl:1:5: no stdlib module `os`; available: "
                                 + ", ".join(sorted(p.stem for p in (ROOT / "stdlib").glob("*.dpl"))))


def test_dpl_programs_have_no_python_escape_hatches():
    for name in ["open", "exec", "eval", "system", "__import__", "os", "subprocess", "save", "write_file"]:
        assert first(f"x = {name}\n").startswith(f"prog.dpl:1:5: unknown name `{name}`")


# ---- CSV files with a header line ------------------------------------------------------------------------

def test_load_csv_with_a_header_and_its_column_names():
    _write("data/h.csv", '\ufeff# measured\nx, "speed (m/s)",t\n\n1,2,3\n# a comment\n4,5,6\n')
    _write("data/one.csv", "y\n1\n2\n")
    assert run("""
        d = load("data/h.csv", header = true)
        names = load_header("data/h.csv")
        print(d, shape(d))
        print(names, len(names), names[1])
        print(load("data/h.csv", columns = "t"), load("data/h.csv", columns = ["t", "x"]))
        print(load("data/one.csv", header = true), load("data/one.csv", columns = ["y"]))
        for n in names { print(n) }
    """) == ("[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]] [2, 3]\n[x, speed (m/s), t] 3 speed (m/s)\n"
             "[3.0, 6.0] [[3.0, 1.0], [6.0, 4.0]]\n[1.0, 2.0] [[1.0], [2.0]]\nx\nspeed (m/s)\nt\n")


@pytest.mark.parametrize("name, content, call, message", [
    ("w.csv", "a,b\n1,2,3\n", 'load("data/w.csv", header = true)',
     "`load`: data/w.csv has 3 columns of numbers, but its header (line 1) names 2: `a`, `b`"),
    ("only.csv", "a,b\n", 'load("data/only.csv", header = true)',
     "`load`: data/only.csv holds no numbers below its header (line 1)"),
    ("none.csv", "# nothing\n\n", 'load("data/none.csv", header = true)',
     "`load`: data/none.csv has no header line (it holds nothing but blank lines and comments)"),
    ("text.csv", "a,b\n1,2\n3,x\n", 'load("data/text.csv", header = true)',
     "`load`: data/text.csv line 3, column 2: `x` is not a number"),
    ("two.csv", "a,b\nc,d\n1,2\n", 'load("data/two.csv", header = true)',
     "`load`: data/two.csv line 2, column 1: `c` is not a number"),
    ("n.csv", "age,height\n1,2\n", 'load("data/n.csv", columns = "agee")',
     "`load`: data/n.csv has no column `agee` (did you mean `age`?); its header names `age`, `height`"),
    ("d.csv", "a,a\n1,2\n", 'load("data/d.csv", columns = "a")',
     "`load`: data/d.csv has 2 columns named `a`; pick one by its position instead, as "
     "load(..., header = true)[:, k]"),
    ("n.csv", "age,height\n1,2\n", 'load("data/n.csv", columns = [0, 1])',
     "`load`: `columns` takes a column name or a list of names, got an integer tensor of shape [2]"),
    ("n.csv", "age,height\n1,2\n", 'load("data/n.csv", columns = ["age", 1])',
     "`load`: `columns` takes a column name or a list of names, got an integer scalar"),
    ("n.csv", "age,height\n1,2\n", 'load("data/n.csv", header = 1)', "`header` must be true or false, got an "
                                                                      "integer scalar"),
    ("a.npy", b"", 'load("data/a.npy", header = true)',
     "`load`: only .csv files have a header line; load(\"data/a.npy\") takes no `header`"),
    ("n.csv", "age,height\n1,2\n", 'load_header("data/n.npy")', "`load_header`: no such file: data/n.npy"),
    ("n.txt", "age\n", 'load_header("data/n.txt")', "`load_header` reads the header line of a .csv file, not `.txt`"),
    ("latin1.csv", b"\xe9,b\n1,2\n", 'load_header("data/latin1.csv")',
     "`load_header`: data/latin1.csv line 1 is not UTF-8 text"),
])
def test_load_csv_header_problems(name, content, call, message):
    _write(f"data/{name}", content)
    assert load_error(call) == f"prog.dpl:2:5: {message}"


def test_load_csv_with_a_header_keeps_max_elements():
    _write("data/h.csv", "x,y\n1,2\n3,4\n")
    limits.configure(max_elements=3)
    assert load_error('load("data/h.csv", header = true)') == (
        "prog.dpl:2:5: `load` of data/h.csv: a tensor of shape [2, 2] would have 4 elements, more than the limit of "
        "3; raise --max-elements if that is intended")


def test_load_csv_is_counted_before_it_is_parsed(monkeypatch):
    """A CSV that may hold more numbers than --max-elements is counted line by line first: np.loadtxt, which
    would hold them all, never runs."""
    _write("data/big.csv", "# a comment, with commas, here\n" + "1,2,3\n" * 5 + "\n")
    _write("data/col.csv", "1\n" * 7)
    calls = []
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: calls.append(a))
    limits.configure(max_elements=10)
    assert load_error('load("data/big.csv")') == (
        "prog.dpl:2:5: `load` of data/big.csv: a tensor of shape [5, 3] would have 15 elements, more than the limit "
        "of 10; raise --max-elements if that is intended")
    limits.configure(max_elements=6)
    assert "a tensor of shape [7] would have 7 elements" in load_error('load("data/col.csv")')
    assert calls == []
