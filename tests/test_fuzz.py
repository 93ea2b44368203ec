"""Fuzzing the front end and the runtime (issue 5): whatever bytes a user hands to `dpl run`, DPL ends in
success or in a DplError with a position, never in another exception, and never takes more than a few
seconds.

Every input is written to a file and run the way `dpl run` runs it (read, parse, `check_file`, then the
Interpreter in "run" mode with its output captured), inside this process, under a wall-clock alarm.
The inputs:

* random token sequences over DPL's vocabulary (keywords, operators, punctuation, builtins, literals);
* mutations of every example, stdlib module and conformance program: deleted, duplicated and swapped
  tokens, swapped operators, inserted tokens, other names and numbers, truncation, non-UTF-8 bytes,
  enormous literals (1e999999, 400-digit integers, huge shapes), deep nesting (up to 10000 parentheses,
  brackets, blocks, calls), inserted statements that run into a limit (`while true { }`, a huge tensor,
  endless recursion, importing a .py file, loading a missing file);
* random bytes; every builtin called with arguments of every kind;
* fixed deep-nesting and huge-literal programs whose messages are pinned;
* the regression corpus tests/fuzz/*.dpl: inputs that once failed, each with the first line it must
  report in NAME.expect (`ok` for a program that runs).

The runs use small limits (FUZZ_MAX_STEPS loop iterations, FUZZ_MAX_ELEMENTS elements per tensor) so that
no input can be slow for a legitimate reason. The Hypothesis tests run a fixed, derandomized set of
examples by default (about 2500 in all, some 20 s); DPL_FUZZ_EXAMPLES=N runs N random examples per test (per seed program for the
mutations). A failure prints the input; add it to tests/fuzz/ (NAME.dpl, NAME.expect) once fixed.
"""
from __future__ import annotations

import io
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpl import limits
from dpl.builtins import BUILTINS
from dpl.check import check_file
from dpl.errors import DplError
from dpl.interp import Interpreter
from dpl.parser import RESERVED

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "examples").glob("*.dpl")) + sorted((ROOT / "stdlib").glob("*.dpl")) \
    + sorted((ROOT / "tests" / "conformance").glob("*.dpl")) \
    + sorted((ROOT / "tests" / "fuzz" / "seeds").glob("*.dpl"))  # issue 10's constructs
CORPUS = sorted((ROOT / "tests" / "fuzz").glob("*.dpl"))

TIME_LIMIT = 5.0          # seconds per input (typical: 10 ms)
FUZZ_MAX_STEPS = 20_000   # loop iterations: `while true {}` fails in a fraction of a second
FUZZ_MAX_ELEMENTS = 10 ** 6  # elements per tensor: a mutated shape cannot make a run slow
NAME = "fuzz.dpl"

EXAMPLES = int(os.environ.get("DPL_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default: int):
    return settings(max_examples=EXAMPLES or default, derandomize=not EXAMPLES, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


# ---- running an input as `dpl run` does ------------------------------------------------------------------

class FuzzTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` inside DPL can swallow it."""


ALARM = hasattr(signal, "setitimer")  # Unix: a hang is interrupted; elsewhere only the time taken is checked


def _alarm(signum, frame):
    raise FuzzTimeout(f"no result in {TIME_LIMIT} s")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory for the inputs, with examples/data beside them so that `load("data/...")` works."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "data").symlink_to(ROOT / "examples" / "data")
    return d


@pytest.fixture(autouse=True)
def _fuzz_limits():
    limits.configure(max_steps=FUZZ_MAX_STEPS, max_elements=FUZZ_MAX_ELEMENTS)
    yield
    limits.configure()


def run_like_cli(data: bytes, work: Path):
    """Run `data` as the program FILE of `dpl run FILE`: its printed output, or the DplError it reports."""
    (work / NAME).write_bytes(data)
    path = Path(NAME)  # relative, as in `cd work && dpl run fuzz.dpl`
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(work)
    if ALARM:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        with np.errstate(all="ignore"):  # as the CLI's np.seterr(all="ignore")
            errors = check_file(path)
            if errors:
                raise errors[0]
            Interpreter(mode="run", seed=0, stdout=out).run_file(path)
    except DplError as e:
        return e
    finally:
        if ALARM:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    return out.getvalue()


POSITION = re.compile(r"^(.+):(\d+):(\d+): \S")


def assert_clean(data: bytes, work: Path):
    """The property: success, or a DplError with a position that formats as FILE:LINE:COL: message."""
    start = time.perf_counter()
    result = run_like_cli(data, work)
    assert time.perf_counter() - start < TIME_LIMIT
    if isinstance(result, DplError):
        assert result.span is not None, f"a DplError without a position: {result.message}"
        assert result.span.line >= 1 and result.span.col >= 1, result.span
        first = result.format().splitlines()[0]
        m = POSITION.match(first)
        assert m and (m[1], int(m[2]), int(m[3])) == (result.span.file, result.span.line, result.span.col), first
    return result


def first_line(result) -> str:
    return "ok" if isinstance(result, str) else result.format().splitlines()[0]


# ---- the vocabulary and the mutations ---------------------------------------------------------------------

TOKEN = re.compile(rb'#[^\n]*|"(?:[^"\\\n]|\\.)*"|(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+'
                   rb'|[A-Za-z_][A-Za-z0-9_]*|\*\*|<=|>=|==|!=|\.\.\.|//|[-+*/]='
                   rb'|[-+*/%^@<>=~(){}\[\],:;.]|\r?\n|[ \t]+|.', re.S)
OPERATORS = [b"+", b"-", b"*", b"/", b"%", b"^", b"**", b"@", b"<", b"<=", b">", b">=", b"==", b"!=",
             b"and", b"or", b"not", b"=", b"~", b"//", b"+=", b"-=", b"*=", b"/=", b"..."]
PUNCTUATION = [b"(", b")", b"[", b"]", b"{", b"}", b",", b":", b";", b".", b"\n", b"fn(", b"(x,)"]
KEYWORDS = sorted(w.encode() for w in RESERVED | {"max", "as", "over"})
LITERALS = [b"0", b"1", b"2", b"-1", b"3.5", b".5", b"1e-8", b"2.0", b'"s"', b'"data/cora.npz"', b'"x.csv"',
            b'"fuzz.dpl"', b'"nn.dpl"', b"x", b"y", b"f", b"W", b"nn", b"steps", b"pi", b"e"]
NAMES = sorted(n.encode() for n in BUILTINS)
VOCAB = OPERATORS + PUNCTUATION + KEYWORDS + LITERALS + NAMES
STATEMENTS = [b"while true { }", b"while 1 < 2 { x = 1 }", b"for i in range(99999999999) { }",
              b"for i in zeros([100000]) { y = i }", b"soft while 0.5 max 99999999999 { }",
              b"z = zeros([99999, 99999])", b"z = ones([100000, 1]) * ones([100000])", b"fn r(n) = r(n + 1)",
              b"q = r(0)", b"z = odeint(f, 1.0, 0.0, 1.0, steps = 99999999999)", b'import "fuzz.py"',
              b'import "fuzz.dpl"', b'z = load("missing.csv")', b'z = load("data/cora.npz", "nope")', b"use nope",
              b"print(" + b"[" * 70 + b"1" + b"]" * 70 + b")", b"x = " + b"-" * 2000 + b"1",
              b"xs = []\nwhile true { xs = append(xs, xs) }",
              b"fn r2(n) {\n fn s(m) = r2(m + 1)\n return s(n)\n}\nq = r2(0)",
              b"k = fn(x) = k(x)\nq = k(1)", b"z = concat(append([], zeros([99999])), axis = 0) * ones([99999, 1])"]
NUMBERS = [b"0", b"1", b"2", b"-1", b"0.0", b"-0.5", b"1e308", b"1e-320", b"64", b"65", b"3.5", b"-2"]
HUGE = [b"1e999999", b"-1e999999", b"1e-999999", b"9" * 400, b"1" + b"0" * 19, b"9223372036854775807",
        b"9223372036854775808", b"2147483648", b"99999999999", b"[1000000, 1000000]", b"[99999, 99999, 99999]",
        b"0" * 5000 + b"1", b"1." + b"5" * 5000]
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x00", b"\r", b"\x1b[2J",
             b"\xef\xbb\xbf", "é".encode(), "∇".encode()]
NESTS = [(b"(", b")"), (b"[", b"]"), (b"-", b""), (b"not ", b""), (b"{", b"}"), (b"if true {", b"}"),
         (b"f(", b")"), (b"x[", b"]"), (b"1 + ", b""), (b"2 ^ ", b""), (b"soft if p {", b"}")]
DEPTHS = [2, 10, 64, 65, 100, 999, 1000, 1001, 10000]


def tokens(src: bytes) -> list[bytes]:
    return TOKEN.findall(src)


@st.composite
def mutated(draw, src: bytes) -> bytes:
    toks = tokens(src) or [b""]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(toks) - 1))
        how = draw(st.sampled_from(["delete", "duplicate", "swap", "operator", "insert", "name", "number",
                                    "huge", "truncate", "bytes", "nest", "statement"]))
        if how == "delete":
            del toks[i]
        elif how == "duplicate":
            toks.insert(i, toks[i])
        elif how == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif how == "operator":
            ops = [k for k, t in enumerate(toks) if t in OPERATORS]
            if ops:
                toks[draw(st.sampled_from(ops))] = draw(st.sampled_from(OPERATORS))
        elif how == "insert":
            toks.insert(i, draw(st.sampled_from(VOCAB)))
        elif how == "statement":  # one that runs into a limit, at the start of a line
            lines = [k for k, t in enumerate(toks) if t.endswith(b"\n")]
            k = draw(st.sampled_from(lines)) + 1 if lines else 0
            toks.insert(k, draw(st.sampled_from(STATEMENTS)) + b"\n")
        elif how == "name":  # another name of the program or a builtin where a name was
            names = [k for k, t in enumerate(toks) if t[:1].isalpha() or t[:1] == b"_"]
            if names:
                toks[draw(st.sampled_from(names))] = draw(st.sampled_from(sorted(set(toks[k] for k in names))
                                                                          + NAMES))
        elif how == "number":
            numbers = [k for k, t in enumerate(toks) if t[:1].isdigit()]
            if numbers:
                toks[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBERS))
        elif how == "huge":
            numbers = [k for k, t in enumerate(toks) if t[:1].isdigit() or t[:1] == b"["]
            if numbers:
                toks[draw(st.sampled_from(numbers))] = draw(st.sampled_from(HUGE))
            else:
                toks.insert(i, draw(st.sampled_from(HUGE)))
        elif how == "truncate":
            text = b"".join(toks)
            toks = [text[:draw(st.integers(0, len(text)))]]
        elif how == "bytes":
            toks.insert(i, draw(st.sampled_from(BAD_BYTES)))
        else:
            opening, closing = draw(st.sampled_from(NESTS))
            n = draw(st.sampled_from(DEPTHS))
            j = draw(st.integers(i, len(toks)))
            toks[i:j] = [opening * n, *toks[i:j], closing * n]
        if not toks:
            toks = [b""]
    return b"".join(toks)


# ---- the seeds themselves run cleanly under the fuzzing limits ------------------------------------------

def test_seeds_are_there():
    names = {p.name for p in SEEDS}
    assert {"hello.dpl", "cannon.dpl", "nn.dpl", "001-arithmetic.dpl", "014-error-shape.dpl"} <= names


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_seed_runs_under_fuzz_limits(seed, work):
    """Unmutated, every seed runs (or fails as its .err says) within the limits the fuzzer uses."""
    result = assert_clean(seed.read_bytes(), work)
    err = seed.with_suffix(".err")
    if err.exists():  # FILE:LINE:
        line = int(err.read_text().strip().split(":")[1])
        assert isinstance(result, DplError) and result.span.line == line
    else:
        assert isinstance(result, str), first_line(result)


# ---- property tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_mutated_programs(seed, work):
    src = seed.read_bytes()

    @fuzz_settings(default=60)
    @given(mutated(src))
    def check(data):
        assert_clean(data, work)
    check()


@fuzz_settings(default=400)
@given(st.lists(st.tuples(st.sampled_from(VOCAB), st.sampled_from([b" ", b"", b"\n", b" ", b"; "])),
                max_size=40))
def test_random_token_sequences(work, parts):
    assert_clean(b"".join(t + sep for t, sep in parts), work)


@fuzz_settings(default=100)
@given(st.binary(max_size=200))
def test_random_bytes(work, data):
    assert_clean(data, work)


@fuzz_settings(default=100)
@given(st.sampled_from(NESTS), st.sampled_from(DEPTHS), st.sampled_from([b"1", b"x", b"[1.0]", b"", b"true"]))
def test_deep_nesting(work, nest, depth, inner):
    opening, closing = nest
    prefix = b"fn f(x) = x\np = 0.5\nx = [1.0]\n"
    assert_clean(prefix + b"y = " + opening * depth + inner + closing * depth + b"\nprint(y)\n", work)


ARGUMENTS = ["1.0", "2", "-1", "0", "true", '"s"', "[1.0, 2.0]", "[[1.0, 2.0], [3.0, 4.0]]", "[]", "[0, 1]",
             "[true, false]", "zeros([0, 2])", "zeros([2, 0])", "[[[1.0]]]", "[[0, 1], [1, 0]]", "[2, 3]", "1e308",
             "-0.5", "1e999999", "range(3)", "f", "g", "t", "A", "inst", "print", "grad(f)", "nn",
             "xs", "[1.0, [2.0, 3.0]]", "(1.0, 2)", "fn(x) = x * 2.0", "outer", "outer.inner", "clo"]
PRELUDE = ("fn f(x) = x\nfn g(a, b) = a\nfn pair() { return 1.0, 2.0 }\nt = pair()\n"
           "A = adjacency([[0], [1]], 2)\nmodule M(n) {\n    param W: [n] ~ zeros\n    fn call(x) = x * W\n}\n"
           "inst = M(2)\nnn = 3\nxs = append(append([], ones([2])), zeros([3]))\n"
           "module O() {\n    inner = M(2)\n    fn call(x) = inner(x)\n}\nouter = O()\n"
           "fn mk(k) {\n    fn c(x) = x * k\n    return c\n}\nclo = mk(2.0)\n")


@fuzz_settings(default=300)
@given(st.sampled_from(sorted(BUILTINS)), st.data())
def test_builtins_with_odd_arguments(work, name, data):
    """Every builtin called with arguments of every kind: the right number of them, or one more, plus options."""
    params = list(BUILTINS[name].sig.parameters.values())
    required = [p for p in params if p.default is p.empty and p.kind is not p.VAR_POSITIONAL]
    n = len(required) + data.draw(st.sampled_from([0, 0, 0, 1, -1]))
    args = [data.draw(st.sampled_from(ARGUMENTS)) for _ in range(max(n, 0))]
    for p in params:
        if p.default is not p.empty and data.draw(st.booleans()):
            args.append(f"{p.name} = {data.draw(st.sampled_from(ARGUMENTS))}")
    assert_clean(f"{PRELUDE}r = {name}({', '.join(args)})\nprint(r)\n".encode(), work)


# ---- fixed inputs with pinned messages -------------------------------------------------------------------

NESTING = ("this nests too deeply: more than 1000 levels of brackets, blocks, calls and operators; split it up "
           "with intermediate variables or functions")


@pytest.mark.parametrize("src, expected", [
    # parentheses leave no trace in the syntax tree: 10000 of them are fine
    (b"x = " + b"(" * 10000 + b"1" + b")" * 10000 + b"\nprint(x)\n", "ok"),
    (b"x = " + b"[" * 10000 + b"1" + b"]" * 10000 + b"\n", f"{NAME}:1:1003: {NESTING}"),
    (b"x = " + b"-" * 10000 + b"1\n", f"{NAME}:1:1003: {NESTING}"),
    (b"x = " + b"not " * 10000 + b"true\n", f"{NAME}:1:3997: {NESTING}"),
    (b"if true " + b"{ if true " * 10000 + b"{}" + b"}" * 10000 + b"\n", f"{NAME}:1:4999: {NESTING}"),
    (b"fn f(x) = x\nx = " + b"f(" * 10000 + b"1" + b")" * 10000 + b"\n", f"{NAME}:2:1003: {NESTING}"),
    (b"x = " + b" + ".join([b"1"] * 10000) + b"\n", f"{NAME}:1:36013: {NESTING}"),
    (b"x = [1]\ny = x" + b"[0]" * 10000 + b"\n", f"{NAME}:2:27013: {NESTING}"),
    # 999 levels still parse and run
    (b"x = " + b"-" * 997 + b"1\nprint(x)\n", "ok"),
    (b"x = " + b"[" * 64 + b"1" + b"]" * 64 + b"\nprint(len(shape(x)))\n", "ok"),
    (b"x = " + b"[" * 65 + b"1" + b"]" * 65 + b"\n",
     f"{NAME}:1:5: a tensor literal nested more than 64 levels deep: tensors have at most 64 axes"),
])
def test_deep_nesting_messages(src, expected, work):
    assert first_line(assert_clean(src, work)) == expected


def test_nesting_below_the_limit_in_a_deep_recursion(work):
    """Expressions 900 levels deep in a function that recurses 300 times: fine while the nesting unwinds before
    the call; Python's stack runs out when every call sits inside the whole nesting (a DplError, no crash)."""
    outside = b"fn f(n) {\n  if n == 0 { return 0.0 }\n  return f(n - 1) + " + b"-" * 900 + b"1.0\n}\nprint(f(300))\n"
    assert run_like_cli(outside, work) == "300.0\n"
    inside = (b"fn f(n) {\n  if n == 0 { return 0.0 }\n  return " + b"-(" * 900 + b"f(n - 1)" + b")" * 900
              + b"\n}\nprint(f(300))\n")
    e = assert_clean(inside, work)
    assert first_line(e) == f"{NAME}:3:3: {limits.TOO_DEEP}"
    assert e.format().splitlines()[-1] == f"  in f, called from {NAME}:5:7"


@pytest.mark.parametrize("src, expected", [
    (b"print(1e999999, -1e999999, 1e-999999)\n", "ok"),
    (b"x = " + b"9" * 400 + b"\n", f"{NAME}:1:5: integer literal 999999999999...9999 (400 digits) does not fit "
                                    f"in 64 bits (at most 9223372036854775807); write a float such as 1e30 instead"),
    (b"x = 9223372036854775808\n", f"{NAME}:1:5: integer literal 9223372036854775808 does not fit in 64 bits "
                                    f"(at most 9223372036854775807); write a float such as 1e30 instead"),
    (b"print(9223372036854775807, " + b"0" * 5000 + b"7)\n", "ok"),
    (b"x = zeros([" + b"9" * 30 + b"])\n", f"{NAME}:1:12: integer literal 999999999999...9999 (30 digits) does "
                                           f"not fit in 64 bits (at most 9223372036854775807); write a float such "
                                           f"as 1e30 instead"),
    (b"x = zeros([1000000, 1000000])\n", f"{NAME}:1:5: `zeros`: a tensor of shape [1000000, 1000000] would have "
                                         f"1000000000000 elements, more than the limit of {FUZZ_MAX_ELEMENTS}; "
                                         f"raise --max-elements if that is intended"),
    (b"print(1." + b"5" * 5000 + b")\n", "ok"),
])
def test_enormous_literals(src, expected, work):
    assert first_line(assert_clean(src, work)) == expected


@pytest.mark.parametrize("data, expected", [
    (b"x = 1\nprint(\xff)\n", f"{NAME}:2:7: the file is not valid UTF-8 text"),
    (b"\xef\xbb\xbfprint(1)\n", f"{NAME}:1:1: syntax error: unexpected character `\ufeff`"),
    (b"print(1)\x00\n", f"{NAME}:1:9: syntax error: unexpected character `\x00`"),
    (b"print(\"\xc3\xa9\")\n", "ok"),
    (b"x = 1 \xe2\x88\x87 2\n", f"{NAME}:1:7: syntax error: unexpected character `\u2207`"),
])
def test_bytes_that_are_not_dpl(data, expected, work):
    assert first_line(assert_clean(data, work)) == expected


@pytest.mark.skipif(not ALARM, reason="needs signal.setitimer")
def test_the_harness_catches_a_hang(work, monkeypatch):
    """The property can fail: a program that outlives the alarm is reported, not waited for."""
    monkeypatch.setattr(limits, "max_steps", 10 ** 12)
    monkeypatch.setattr(sys.modules[__name__], "TIME_LIMIT", 0.2)
    with pytest.raises(FuzzTimeout):
        run_like_cli(b"while true {}\n", work)


# ---- the regression corpus ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CORPUS, ids=[p.name for p in CORPUS])
def test_regression_corpus(case, work):
    """Each input that once crashed or hung DPL now runs or fails with the message in NAME.expect."""
    expected = case.with_suffix(".expect").read_text().strip()
    assert first_line(assert_clean(case.read_bytes(), work)) == expected


def test_regression_corpus_is_there():
    assert len(CORPUS) >= 8
    assert all(p.with_suffix(".expect").exists() for p in CORPUS)
