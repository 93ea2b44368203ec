"""User errors (LANGUAGE.md §10): `FILE:LINE:COL: message`, the source line and a caret, no traceback.

Messages and positions are pinned exactly: through the Python API (dpl.loads / dpl.load raising
DplError, e.format(), e.span) and through the `dpl` command in a subprocess.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dpl
from dpl.cli import main as cli_main
from dpl.errors import DplError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.dpl"))


def _dpl_command():
    exe = Path(sys.executable).parent / "dpl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dpl.cli"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Relative file names in messages, and no stray file named like the test program."""
    monkeypatch.chdir(tmp_path)


def error_of(src: str, file: str = "prog.dpl") -> DplError:
    with pytest.raises(DplError) as ei:
        dpl.loads(textwrap.dedent(src), file=file)
    return ei.value


def where(e: DplError):
    return (e.span.file, e.span.line, e.span.col)


def expect(src: str, formatted: str, file: str = "prog.dpl") -> DplError:
    """The error of `src` formats exactly as `formatted` (dedented, without the trailing newline)."""
    e = error_of(src, file)
    assert e.format() == textwrap.dedent(formatted).strip("\n")
    assert str(e) == e.format()
    return e


# ---- syntax errors say what was expected ------------------------------------------------------------

def test_syntax_error_unclosed_paren_at_end_of_file():
    e = expect("x = (1 +\n", """
        prog.dpl:1:9: syntax error: unexpected end of file; expected an expression
            x = (1 +
                    ^
        prog.dpl:1:5: this `(` is never closed
            x = (1 +
                ^""")
    assert where(e) == ("prog.dpl", 1, 9)


def test_syntax_error_missing_close_paren_found_on_next_line():
    e = expect("y = f(1, 2\nz = 3\n", """
        prog.dpl:2:1: syntax error: unexpected `z`; expected an operator, `,`, `.`, `(`, `)` or `[`
            z = 3
            ^""")
    assert where(e) == ("prog.dpl", 2, 1)


def test_syntax_error_two_operators():
    expect("x = 3 +* 4\n", """
        prog.dpl:1:8: syntax error: unexpected `*`; expected an expression
            x = 3 +* 4
                   ^""")


def test_syntax_error_unclosed_block():
    expect("fn f(x) {\n  return x\n", """
        prog.dpl:2:11: syntax error: unexpected end of file; expected a statement or `}`
              return x
                      ^
        prog.dpl:1:9: this `{` is never closed
            fn f(x) {
                    ^""")


def test_unclosed_brace_points_at_the_innermost_open_one():
    # braces inside strings and comments do not count; the `if` block is the one left open
    e = expect("""\
        fn f(x) {   # {
            if x > 0 {
                print("}")
            }
            while x > 0 {
                x = x - 1

        print(f(1))
        """, """
        prog.dpl:8:12: syntax error: unexpected end of file; expected a statement or `}`
            print(f(1))
                       ^
        prog.dpl:5:17: this `{` is never closed
                while x > 0 {
                            ^""")
    assert where(e) == ("prog.dpl", 8, 12) and e.notes[0][0].line == 5


@pytest.mark.parametrize("src, formatted", [
    ("def f(x) = x\n", """
        prog.dpl:1:1: syntax error: `def` is not DPL (did you mean `fn`?)
            def f(x) = x
            ^^^"""),
    ("y = 1\ndef f(x):\n    return x\n", """
        prog.dpl:2:1: syntax error: `def` is not DPL (did you mean `fn`?)
            def f(x):
            ^^^"""),
    ("f = lambda x: x + 1\n", """
        prog.dpl:1:5: syntax error: `lambda` is not DPL (did you mean `fn(x) = ...`?)
            f = lambda x: x + 1
                ^^^^^^"""),
    ("b = 1 > 0 && 2 > 1\n", """
        prog.dpl:1:11: syntax error: unexpected `&&` (did you mean `and`?)
            b = 1 > 0 && 2 > 1
                      ^^"""),
    ("b = 1 > 0 || 2 > 1\n", """
        prog.dpl:1:11: syntax error: unexpected `||` (did you mean `or`?)
            b = 1 > 0 || 2 > 1
                      ^^"""),
    ("b = 1 > 0 | 2 > 1\n", """
        prog.dpl:1:11: syntax error: unexpected character `|` (did you mean `or`?)
            b = 1 > 0 | 2 > 1
                      ^"""),
    ("b = True\n", """
        prog.dpl:1:5: unknown name `True` (did you mean `true`?)
            b = True
                ^^^^"""),
    ("fn f(x) = x and False\nprint(f(true))\n", """
        prog.dpl:1:17: unknown name `False` (did you mean `false`?)
            fn f(x) = x and False
                            ^^^^^
          in f, called from prog.dpl:2:7"""),
    ("x = None\n", """
        prog.dpl:1:5: unknown name `None` (DPL has no `None`: a function without `return` gives no value)
            x = None
                ^^^^"""),
])
def test_words_of_other_languages_get_a_hint(src, formatted):
    expect(src, formatted)


def test_syntax_error_param_without_colon():
    expect("param W [2, 3] ~ zeros\n", """
        prog.dpl:1:9: syntax error: unexpected `[`; expected `:`
            param W [2, 3] ~ zeros
                    ^""")


def test_syntax_error_for_without_in():
    expect("for i range(3) { }\n", """
        prog.dpl:1:7: syntax error: unexpected `range`; expected `in`
            for i range(3) { }
                  ^""")


def test_syntax_error_lists_only_what_can_really_follow():
    # after a complete if statement at top level, `}` cannot follow (LALR lookahead noise must not show)
    e = error_of("if x > 0 { y = 1 } y = 2\n")
    assert e.message == "syntax error: unexpected `y`; expected the end of the file, `else` or a newline"
    e = error_of("x = a < b < c\n")
    assert "`as`" not in e.message and "`:`" not in e.message and "`}`" not in e.message


def test_syntax_error_unexpected_character():
    expect("x = 1 $ 2\n", """
        prog.dpl:1:7: syntax error: unexpected character `$`
            x = 1 $ 2
                  ^""")


def test_syntax_error_is_reported_before_anything_runs():
    out = []

    class Out:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    with pytest.raises(DplError):
        dpl.loads('print("ran")\nx = (\n', file="prog.dpl", stdout=Out())
    assert "".join(out) == ""


def test_reserved_word_as_a_name():
    expect("for = 3\n", """
        prog.dpl:1:5: syntax error: unexpected `=`; expected a name
            for = 3
                ^""")
    expect("in = 3\n", """
        prog.dpl:1:1: `in` is a reserved word and cannot be used as a name
            in = 3
            ^^""")
    expect("x = 1\ny = x + while\n", """
        prog.dpl:2:9: `while` is a reserved word and cannot be used as a name
            y = x + while
                    ^^^^^""")


# ---- unknown names ----------------------------------------------------------------------------------

def test_unknown_name_with_suggestion():
    e = expect("velocity = 1.0\ny = velocty * 2\n", """
        prog.dpl:2:5: unknown name `velocty` (did you mean `velocity`?)
            y = velocty * 2
                ^^^^^^^""")
    assert e.span.end_col == 12


def test_unknown_name_suggests_a_builtin():
    expect("y = sigmod(1.0)\n", """
        prog.dpl:1:5: unknown name `sigmod` (did you mean `sigmoid`?)
            y = sigmod(1.0)
                ^^^^^^""")


def test_unknown_name_without_a_close_match():
    expect("y = qqqq + 1\n", """
        prog.dpl:1:5: unknown name `qqqq`
            y = qqqq + 1
                ^^^^""")


def test_unknown_name_inside_a_function_shows_the_call():
    e = expect("""\
        fn f(x) {
          total = x
          return totl
        }
        y = f(1.0)
        """, """
        prog.dpl:3:10: unknown name `totl` (did you mean `total`?)
              return totl
                     ^^^^
          in f, called from prog.dpl:5:5""")
    assert [(s.line, s.col) for s, *_ in e.chain] == [(5, 5)]


def test_call_chain_lists_call_sites_innermost_first():
    e = error_of("""\
        fn f(x) {
          return g(x)
        }
        fn g(x) = x @ x
        z = f(1.0)
        """)
    assert e.message == "`@` needs operands with at least one axis, got shapes [] @ []"
    assert where(e) == ("prog.dpl", 4, 13)
    lines = e.format().splitlines()
    assert lines[1:3] == ["    fn g(x) = x @ x", "                ^"]
    assert [(s.line, s.col) for s, *_ in e.chain] == [(2, 10), (5, 5)]
    assert lines[3:] == ["  in g, called from prog.dpl:2:10", "  in f, called from prog.dpl:5:5"]


def test_unknown_module_member_with_suggestion():
    expect("""\
        module Scaler(n) {
          param scale: [n] ~ ones
        }
        s = Scaler(2)
        y = s.scal
        """, """
        prog.dpl:5:7: `s` (Scaler) has no `scal` (did you mean `scale`?)
            y = s.scal
                  ^^^^""")


# ---- wrong arity --------------------------------------------------------------------------------------

def test_user_fn_too_few_arguments():
    expect("fn f(x, y) = x + y\nz = f(1)\n", """
        prog.dpl:2:5: `f` takes 2 arguments (x, y), missing `y`
            z = f(1)
                ^""")


def test_user_fn_too_many_arguments():
    expect("fn f(x) = x\nz = f(1, 2)\n", """
        prog.dpl:2:5: `f` takes 1 argument (x), got 2
            z = f(1, 2)
                ^""")


def test_user_fn_unknown_keyword_with_suggestion():
    expect("fn f(x, scale) = x * scale\nz = f(1, scal = 2)\n", """
        prog.dpl:2:5: `f` has no parameter `scal` (did you mean `scale`?)
            z = f(1, scal = 2)
                ^""")


def test_user_fn_argument_given_twice():
    expect("fn f(x, y) = x\nz = f(1, x = 2)\n", """
        prog.dpl:2:5: `f` got two values for `x`
            z = f(1, x = 2)
                ^""")


def test_module_instantiation_arity():
    expect("module D(n) {\n  param W: [n] ~ zeros\n}\nd = D()\n", """
        prog.dpl:4:5: `D` takes 1 argument (n), missing `n`
            d = D()
                ^""")


def test_builtin_too_many_arguments():
    expect("z = tanh(1.0, 2.0)\n", """
        prog.dpl:1:5: wrong arguments to `tanh`: too many positional arguments; usage: tanh(x)
            z = tanh(1.0, 2.0)
                ^^^^""")


@pytest.mark.parametrize("name", ["exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "softplus", "sqrt",
                                  "abs"])
def test_unary_builtins_take_one_argument(name):
    e = error_of(f"z = {name}(1.0, 2.0)\n")
    assert e.message == f"wrong arguments to `{name}`: too many positional arguments; usage: {name}(x)"
    assert where(e) == ("prog.dpl", 1, 5)


def test_builtin_too_few_arguments():
    expect("z = clip(1.0, 2.0)\n", """
        prog.dpl:1:5: wrong arguments to `clip`: missing a required argument: 'hi'; usage: clip(x, lo, hi)
            z = clip(1.0, 2.0)
                ^^^^""")


def test_builtin_unknown_keyword():
    expect("z = sum([1.0], axis = 0, keepdim = true)\n", """
        prog.dpl:1:5: wrong arguments to `sum`: got an unexpected keyword argument 'keepdim'; usage: sum(x, axis = none, keepdims = false)
            z = sum([1.0], axis = 0, keepdim = true)
                ^^^""")


def test_grad_function_arity_points_at_the_call():
    e = error_of("fn f(x) = sum(x)\ny = grad(f)(1.0, 2.0)\n")
    assert e.message == "`f` takes 1 argument (x), got 2"
    assert where(e) == ("prog.dpl", 2, 5)


def test_max_with_three_positional_arguments():
    e = error_of("y = max(1, 2, 3)\n")
    assert e.message.startswith("wrong arguments to `max`")


def test_type_descriptions_in_messages():
    e = error_of("y = grad(1.5)\n")
    assert e.message == "`grad` takes a function, got a float scalar"
    e = error_of('y = "s"\nz = y.W\n')
    assert e.message == "`.W`: only module instances have attributes, got a string"


def test_type_descriptions_use_the_right_article():
    e = error_of("m = 1\ny = m.W\n")
    assert e.message == "`.W`: only module instances have attributes, got an integer scalar"


# ---- shape mismatches show both shapes ----------------------------------------------------------------

def test_matmul_inner_size_mismatch():
    expect("a = ones([2, 3])\nb = ones([4, 5])\nc = a @ b\n", """
        prog.dpl:3:7: shape mismatch in `@`: [2, 3] @ [4, 5] (inner sizes 3 and 4 differ)
            c = a @ b
                  ^""")


def test_matmul_vector_mismatch():
    e = error_of("x = [1, 2] @ [[1], [2], [3]]\n")
    assert e.message == "shape mismatch in `@`: [2] @ [3, 1] (inner sizes 2 and 3 differ)"
    assert where(e) == ("prog.dpl", 1, 12)


def test_matmul_batch_mismatch():
    expect("a = ones([2, 3, 4])\nb = ones([5, 4, 2])\nc = a @ b\n", """
        prog.dpl:3:7: shape mismatch in `@`: batch dimensions of [2, 3, 4] @ [5, 4, 2] do not broadcast
            c = a @ b
                  ^""")


def test_matmul_of_scalars():
    e = error_of("y = zeros([2]) @ 1.0\n")
    assert e.message == "`@` needs operands with at least one axis, got shapes [2] @ []"
    assert where(e) == ("prog.dpl", 1, 16)


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "%", "^"])
def test_elementwise_mismatch(op):
    e = error_of(f"a = ones([2, 3])\nb = ones([4, 5])\nc = a {op} b\n")
    assert e.message == f"shape mismatch in `{op}`: shapes [2, 3] and [4, 5] do not broadcast"
    assert where(e) == ("prog.dpl", 3, 7)
    assert e.format().splitlines()[1:] == [f"    c = a {op} b", "          ^"]


def test_elementwise_mismatch_inside_a_function_is_placed_in_the_function():
    expect("fn f(a, b) = a * b\nz = f(ones([3]), ones([4]))\n", """
        prog.dpl:1:16: shape mismatch in `*`: shapes [3] and [4] do not broadcast
            fn f(a, b) = a * b
                           ^
          in f, called from prog.dpl:2:5""")


def test_mismatch_inside_a_traced_function_keeps_its_position():
    prog = dpl.loads("fn f(x) = x + [1.0, 2.0, 3.0]\n", file="prog.dpl")
    with pytest.raises(DplError) as ei:
        prog.grad("f")([1.0, 2.0])
    assert ei.value.message == "shape mismatch in `+`: shapes [2] and [3] do not broadcast"
    assert where(ei.value) == ("prog.dpl", 1, 13)


# ---- hard control flow on a tensor suggests soft control flow ----------------------------------------

def test_hard_if_on_a_tensor():
    expect("a = ones([3])\nif a > 0 {\n  a = a - 1\n}\n", """
        prog.dpl:2:4: `if` condition must be a scalar boolean, got a boolean tensor of shape [3]; a hard `if` needs one true/false value: reduce it (any(...), all(...)) or use `soft if` to branch differentiably on a tensor
            if a > 0 {
               ^""")


def test_hard_while_on_a_tensor():
    expect("a = ones([3])\nwhile a > 0 { a = a - 1 }\n", """
        prog.dpl:2:7: `while` condition must be a scalar boolean, got a boolean tensor of shape [3]; a hard `while` needs one true/false value: reduce it (any(...), all(...)) or use `soft while` to branch differentiably on a tensor
            while a > 0 { a = a - 1 }
                  ^""")


def test_hard_if_on_a_float_inside_a_function():
    e = error_of("fn f(x) {\n  if sigmoid(x) { return x }\n  return -x\n}\ny = f(0.5)\n")
    assert e.message.startswith("`if` condition must be a scalar boolean, got a float scalar;")
    assert "soft if" in e.message
    assert where(e) == ("prog.dpl", 2, 6)


# ---- files: imports, cycles, stdlib, encodings ------------------------------------------------------

def test_missing_import_file(tmp_path):
    (tmp_path / "main.dpl").write_text('x = 1\nimport "lib/missing.dpl"\n')
    with pytest.raises(DplError) as ei:
        dpl.load(tmp_path / "main.dpl")
    e = ei.value
    main = str(tmp_path / "main.dpl")
    assert e.format() == (f"{main}:2:8: cannot import `{tmp_path / 'lib/missing.dpl'}`: no such file\n"
                          f'    import "lib/missing.dpl"\n'
                          f"           ^^^^^^^^^^^^^^^^^")


def test_missing_import_file_relative_paths(tmp_path):
    Path("main.dpl").write_text('import "missing.dpl"\n')
    with pytest.raises(DplError) as ei:
        dpl.load("main.dpl")
    assert ei.value.format() == ('main.dpl:1:8: cannot import `missing.dpl`: no such file\n'
                                 '    import "missing.dpl"\n'
                                 '           ^^^^^^^^^^^^^')


def test_import_cycle():
    Path("a.dpl").write_text('import "b.dpl"\nx = 1\n')
    Path("b.dpl").write_text('y = 2\nimport "a.dpl"\n')
    with pytest.raises(DplError) as ei:
        dpl.load("a.dpl")
    assert ei.value.format() == ('b.dpl:2:8: import cycle: a.dpl -> b.dpl -> a.dpl\n'
                                 '    import "a.dpl"\n'
                                 '           ^^^^^^^')


def test_self_import_is_a_cycle():
    Path("a.dpl").write_text('import "a.dpl"\n')
    with pytest.raises(DplError) as ei:
        dpl.load("a.dpl")
    assert ei.value.message == "import cycle: a.dpl -> a.dpl"
    assert where(ei.value) == ("a.dpl", 1, 8)


def test_imported_file_errors_are_placed_in_that_file():
    Path("lib.dpl").write_text("fn f(x) = x @ x\n")
    Path("main.dpl").write_text('import "lib.dpl"\ny = f(ones([2, 3]))\n')
    with pytest.raises(DplError) as ei:
        dpl.load("main.dpl")
    assert ei.value.format() == ("lib.dpl:1:13: shape mismatch in `@`: [2, 3] @ [2, 3] (inner sizes 3 and 2 differ)\n"
                                 "    fn f(x) = x @ x\n"
                                 "                ^\n"
                                 "  in f, called from main.dpl:2:5")


def test_unknown_stdlib_module():
    expect("use nnn\n", """
        prog.dpl:1:5: no stdlib module `nnn` (did you mean `nn`?); available: attention, graph, memory, nn, ode, physics, plastic, quantum, rnn
            use nnn
                ^^^""")


def test_non_utf8_file_position():
    Path("bad.dpl").write_bytes(b'x = 1\ny = "caf\xe9"\n')
    with pytest.raises(DplError) as ei:
        dpl.load("bad.dpl")
    e = ei.value
    assert e.message == "the file is not valid UTF-8 text"
    assert where(e) == ("bad.dpl", 2, 9)
    assert e.format().splitlines()[0] == "bad.dpl:2:9: the file is not valid UTF-8 text"


def test_non_utf8_file_shows_the_line():
    Path("bad.dpl").write_bytes(b'x = 1\ny = "caf\xe9"\n')
    with pytest.raises(DplError) as ei:
        dpl.load("bad.dpl")
    assert len(ei.value.format().splitlines()) == 3
    assert ei.value.format().splitlines()[2] == "            ^"


def test_missing_program_file():
    with pytest.raises(DplError) as ei:
        dpl.load("nope.dpl")
    assert ei.value.span is None
    assert ei.value.format() == "dpl: error: no such file: nope.dpl"


# ---- `return` where it cannot be --------------------------------------------------------------------

def test_return_at_top_level():
    expect("x = 1\nreturn x\n", """
        prog.dpl:2:1: `return` outside a function
            return x
            ^^^^^^^^""")


def test_return_at_top_level_in_a_branch_not_taken():
    e = error_of("x = 1\nif false {\n  return x\n}\n")
    assert (e.message, where(e)) == ("`return` outside a function", ("prog.dpl", 3, 3))


def test_return_inside_soft_if():
    expect("fn f(x) {\n  soft if 0.5 { return x }\n  return x\n}\n", """
        prog.dpl:2:17: `return` is not allowed inside `soft if`
              soft if 0.5 { return x }
                            ^^^^^^^^""")


def test_return_inside_soft_while():
    e = error_of("fn f(x) {\n  soft while 0.5 max 3 {\n    x = x + 1\n    return x\n  }\n  return x\n}\n")
    assert (e.message, where(e)) == ("`return` is not allowed inside `soft while`", ("prog.dpl", 4, 5))


# ---- error formatting --------------------------------------------------------------------------------

def test_caret_under_a_wide_span():
    e = error_of("x = 1\n  y = unknown_thing\n")
    assert e.format().splitlines() == ["prog.dpl:2:7: unknown name `unknown_thing`",
                                       "      y = unknown_thing",
                                       "          ^^^^^^^^^^^^^"]


def test_caret_under_a_tab_indented_line():
    e = error_of("x = 1\n\ty = unknown_thing\n")
    assert e.format().splitlines() == ["prog.dpl:2:6: unknown name `unknown_thing`",
                                       "        y = unknown_thing",
                                       "            ^^^^^^^^^^^^^"]


def test_error_spans_are_objects_with_file_line_col():
    e = error_of("x = 1\ny = x @ x\n")
    assert (e.span.file, e.span.line, e.span.col, e.span.end_col) == ("prog.dpl", 2, 7, 8)
    assert str(e.span) == "prog.dpl:2:7"


# ---- the command line ----------------------------------------------------------------------------------

def run_cli(*args, cwd):
    return subprocess.run(_dpl_command() + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("src, first_line", [
    ("fn f(x) = x\nprint(f(1, 2))\n", "prog.dpl:2:7: `f` takes 1 argument (x), got 2"),
    ("x = (1 +\n", "prog.dpl:1:9: syntax error: unexpected end of file; expected an expression"),
    ('import "gone.dpl"\n', "prog.dpl:1:8: cannot import `gone.dpl`: no such file"),
    ("use nnn\n", "prog.dpl:1:5: no stdlib module `nnn` (did you mean `nn`?); "
                  "available: attention, graph, memory, nn, ode, physics, plastic, quantum, rnn"),
])
def test_cli_run_reports_file_line_col(tmp_path, src, first_line):
    (tmp_path / "prog.dpl").write_text(src)
    r = run_cli("run", "prog.dpl", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == first_line
    assert lines[2].strip() == "^" * len(lines[2].strip()) and lines[2].strip()
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_run_debug_shows_the_traceback(tmp_path):
    (tmp_path / "prog.dpl").write_text("fn f(x) = x\nprint(f(1, 2))\n")
    r = run_cli("run", "--debug", "prog.dpl", cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().splitlines()[-3] == "prog.dpl:2:7: `f` takes 1 argument (x), got 2"


def test_cli_run_prints_output_before_a_runtime_error(tmp_path):
    (tmp_path / "prog.dpl").write_text('print("before")\nx = ones([2]) @ ones([3])\n')
    r = run_cli("run", "prog.dpl", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, "before\n")
    assert r.stderr.splitlines()[0] == "prog.dpl:2:15: shape mismatch in `@`: [2] @ [3] (inner sizes 2 and 3 differ)"


def test_cli_check_reports_unknown_names_without_running(tmp_path):
    (tmp_path / "prog.dpl").write_text('print("ran")\nfn f(x) = x + offset\ny = f(1)\nz = velocty\n')
    r = run_cli("check", "prog.dpl", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""                  # the print before the error did not run
    assert r.stderr.splitlines() == ["prog.dpl:2:15: unknown name `offset`",
                                     "    fn f(x) = x + offset",
                                     "                  ^^^^^^",
                                     "prog.dpl:4:5: unknown name `velocty`",
                                     "    z = velocty",
                                     "        ^^^^^^^"]


def test_cli_run_checks_names_before_running(tmp_path):
    (tmp_path / "prog.dpl").write_text('print("ran")\ny = velocity + 1\n')
    assert cli_main(["run", str(tmp_path / "prog.dpl")]) == 1


def test_cli_check_in_process(tmp_path, capsys):
    (tmp_path / "prog.dpl").write_text('print("ran")\nvelocity = 2\ny = velocty + 1\n')
    assert cli_main(["check", str(tmp_path / "prog.dpl")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == f"{tmp_path / 'prog.dpl'}:3:5: unknown name `velocty` (did you mean `velocity`?)"
    (tmp_path / "ok.dpl").write_text("velocity = 2\nprint(velocity)\n")
    assert cli_main(["check", str(tmp_path / "ok.dpl")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == f"{tmp_path / 'ok.dpl'}: ok\n"


def test_cli_check_syntax_error_and_missing_file(tmp_path, capsys):
    (tmp_path / "prog.dpl").write_text("x = = 1\n")
    assert cli_main(["check", str(tmp_path / "prog.dpl")]) == 1
    assert capsys.readouterr().err.splitlines()[0].endswith(
        "prog.dpl:1:5: syntax error: unexpected `=`; expected an expression")
    assert cli_main(["check", str(tmp_path / "nope.dpl")]) == 1
    assert capsys.readouterr().err == f"dpl: error: no such file: {tmp_path / 'nope.dpl'}\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_cli_check_accepts_the_examples(example, capsys):
    assert cli_main(["check", str(example)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == f"{example}: ok\n"


def test_cli_check_examples_subprocess():
    assert EXAMPLES, "no examples found"
    r = run_cli("check", str(EXAMPLES[0]), cwd=ROOT)
    assert r.returncode == 0 and r.stdout == ""


# ---- issue 10: closures, lists, sub-instances -------------------------------------------------------------

def test_error_inside_a_closure_shows_the_call_chain():
    e = error_of("""\
        fn outer(x) {
            fn inner(y) = y @ x
            return inner([1.0, 2.0])
        }
        outer(ones([3, 1]))
        """)
    lines = e.format().splitlines()
    assert lines[:3] == ["prog.dpl:2:21: shape mismatch in `@`: [2] @ [3, 1] (inner sizes 2 and 3 differ)",
                         "        fn inner(y) = y @ x", "                        ^"]
    assert lines[3:] == ["  in inner, called from prog.dpl:3:12", "  in outer, called from prog.dpl:5:1"]


def test_error_inside_a_sub_instance_names_its_path():
    e = error_of("""\
        module Lin(n) {
            param W: [n, n] ~ ones
            fn call(x) = x @ W
        }
        module Two() {
            enc = Lin(2)
            fn call(x) = enc(x)
        }
        m = Two()
        m(ones([3]))
        """)
    assert e.format().splitlines()[0] == "prog.dpl:3:20: shape mismatch in `@`: [3] @ [2, 2] (inner sizes 3 and 2 differ)"
    assert e.format().splitlines()[-2:] == ["  in m.enc.call, called from prog.dpl:7:18",
                                            "  in m.call, called from prog.dpl:10:1"]
