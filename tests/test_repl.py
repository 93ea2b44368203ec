"""`dpl repl`: the session (definitions persist, blocks, :commands, errors), piped stdin, prompt-toolkit, the lexer."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpl.repl import Session, annotate, history_path, interact, is_complete, make_prompt, run_piped

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repl():
    """A session writing to buffers; `repl(text)` runs one input and returns what it printed to stdout."""
    out, err = io.StringIO(), io.StringIO()
    s = Session(out=out, err=err)

    def run(text):
        start = out.tell()
        s.execute(text)
        return out.getvalue()[start:]
    run.session, run.err = s, err
    return run


def cli_repl(stdin: str, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "dpl.cli", "repl", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=60)


# ---- the session ----------------------------------------------------------------------

def test_definitions_persist_across_inputs(repl):
    repl("k = 2")
    repl("fn f(x) = x * k")
    assert repl("f(3)") == "6\n"
    repl("k = 10")  # a function sees the top-level bindings at the time of the call
    assert repl("f(3)") == "30\n"
    repl("param b: [] = 0.5")
    repl("use nn")
    repl("enc = Dense(2, 3)")
    assert repl("shape(enc.W)") == "[2, 3]  # int64 [2]\n"
    assert repl("b + 1") == "1.5\n"
    assert set(repl.session.interp.params) == {"b", "enc.W", "enc.b"}


def test_expression_values_print_with_dtype_and_shape(repl):
    assert repl("1 + 2") == "3\n"
    assert repl("[1.0, 2.0]") == "[1.0, 2.0]  # float64 [2]\n"
    assert repl("[true, false]") == "[true, false]  # bool [2]\n"
    assert repl('"hi"') == "hi\n"
    assert repl("print(1, 2)") == "1 2\n"  # print's own line; its missing value is not printed
    assert repl("x = 5") == ""
    assert annotate(2.5) == "2.5"


def test_declarations_in_one_input_are_hoisted(repl):
    assert repl("y = g(2)\nfn g(x) = x + 1\ny") == "3\n"


def test_multiline_input_completes_when_brackets_balance():
    assert is_complete("x = 1")
    assert not is_complete("fn f(x) {")
    assert not is_complete("y = [1,\n2")
    assert is_complete("fn f(x) {\n  return x\n}")
    assert is_complete('s = "{"  # and a comment {')
    assert not is_complete('if true { s = "}"')
    assert is_complete("}")  # too many closers: the parser reports it


def test_errors_are_reported_and_the_session_goes_on(repl):
    assert repl("foo") == ""
    assert "<repl-1>:1:1: unknown name `foo`" in repl.err.getvalue()
    assert "    foo\n    ^^^" in repl.err.getvalue()
    repl("fn h(x) = x @ [1.0, 2.0]")
    repl("h([1.0, 2.0, 3.0])")
    err = repl.err.getvalue()
    assert "shape mismatch in `@`" in err and "fn h(x) = x @ [1.0, 2.0]" in err and "called from" in err
    repl("y = (1 +")
    assert "syntax error" in repl.err.getvalue()
    assert repl("h([1.0, 1.0])") == "3.0\n"
    assert repl.session.failed


def test_literals_of_earlier_inputs_never_leak_into_later_ones(repl):
    """The interpreter caches literals by id(node), and ids of freed ASTs come back."""
    repl("use nn")
    got = [repl(f"{i} + 0") for i in range(60)]
    assert got == [f"{i}\n" for i in range(60)]


def test_ctrl_c_during_an_evaluation_cancels_only_that_input(repl, monkeypatch):
    def interrupted(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(repl.session.interp, "eval", interrupted)
    assert repl("1 + 1") == ""
    assert "interrupted" in repl.err.getvalue()
    monkeypatch.undo()
    assert repl("1 + 1") == "2\n"


# ---- :commands ------------------------------------------------------------------------

def test_help_quit_and_unknown_commands(repl):
    assert ":grad EXPR wrt NAME" in repl(":help")
    assert repl.session.execute(":quit") is False
    assert repl.session.execute(":q") is False
    repl(":frobnicate")
    assert "unknown command `:frobnicate`" in repl.err.getvalue()


def test_load_runs_a_file_and_skips_its_train_blocks(repl, tmp_path):
    prog = tmp_path / "m.dpl"
    prog.write_text("param w: [] = 1.0\nfn loss() = (w - 3.0) ^ 2\n"
                    "train loss { optimizer = sgd(lr = 0.1)\n epochs = 5 }\nprint(w)\n")
    assert repl(f":load {prog}") == "1.0\n"
    assert repl("loss()") == "4.0\n"
    repl(f":load {tmp_path / 'missing.dpl'}")
    assert "no such file" in repl.err.getvalue()


def test_reset_forgets_everything(repl):
    repl("x = 1")
    repl("param p: [2] ~ zeros")
    repl(":reset")
    assert repl.session.interp.params == {}
    repl("x")
    assert "unknown name `x`" in repl.err.getvalue()


def test_params_table(repl):
    assert "no parameters" in repl(":params")
    repl("param W: [2, 3] = 2.0")
    repl("param b: [3] ~ zeros")
    table = repl(":params")
    for cell in ("name", "shape", "norm", "W", "[2, 3]", "4.89898", "b", "[3]"):
        assert cell in table


def test_grad_wrt_a_parameter_and_a_variable(repl):
    repl("param W: [2] = [1.0, 2.0]")
    assert repl(":grad sum(W ^ 2) wrt W") == "[2.0, 4.0]  # float64 [2]\n"
    repl("x = 3")  # an integer variable is treated as a float, and stays an integer afterwards
    repl("fn f(t) = t ^ 3 * sum(W)")
    assert repl(":grad f(x) wrt x") == "81.0\n"
    assert repl("x") == "3\n"
    assert repl(":grad 2.0 * 2.0 wrt x") == "0.0\n"  # does not depend on it
    use_nn = repl("use nn\nenc = Dense(2, 1)")
    assert use_nn == ""
    assert repl(":grad sum(enc([[1.0, 2.0]])) wrt enc.b") == "[1.0]  # float64 [1]\n"
    for bad, message in ((":grad W wrt W", "0-d float"), (":grad sum(W) wrt nope", "neither a parameter"),
                         (":grad sum(W)", "usage: :grad")):
        repl(bad)
        assert message in repl.err.getvalue()


def test_graph_prints_and_writes_the_recording(repl, tmp_path, monkeypatch):
    repl("param W: [2, 2] ~ ones")
    repl("v = [1.0, 2.0]")
    repl("n = 4")  # integer variables stay constants
    text = repl(":graph sum(v @ W) * n")
    lines = text.splitlines()
    assert lines[0].startswith("%1 = input v [2]") and lines[1].startswith("%2 = input W [2, 2]")
    assert "matmul(%1, %2) [2]" in text and "sum(%3) []" in text and len(lines) == 5
    assert repl("v") == "[1.0, 2.0]  # float64 [2]\n"  # the variable is unboxed again
    assert "nothing recorded" in repl(":graph 1 + 2")
    out = tmp_path / "g.json"
    assert "wrote" in repl(f":graph sum(v @ W) -o {out}")
    data = json.loads(out.read_text())
    assert len(data["nodes"]) == 4
    dot = tmp_path / "g.dot"
    repl(f":graph sum(v @ W) -o {dot}")
    assert "digraph" in dot.read_text() and "->" in dot.read_text()
    repl(f":graph sum(v) -o {tmp_path / 'g.xyz'}")
    assert "g.xyz" in repl.err.getvalue() and not (tmp_path / "g.xyz").exists()


def test_type_and_time(repl):
    repl("x = [[1, 2, 3]]")
    assert repl(":type x") == "int64 [1, 3]\n"
    assert repl(":type x * 1.5") == "float64 [1, 3]\n"
    repl("fn pair() {\n  return 1, 2\n}")
    assert repl(":type pair()") == "a tuple of 2\n"
    timing = repl(":time sum(x * x)")
    assert timing.endswith("loops)\n") or timing.endswith("loop)\n")
    assert float(timing.split()[0]) > 0 and " ms (best of 5 runs of " in timing
    repl(":type x = 1")
    assert "one expression, not a statement" in repl.err.getvalue()


# ---- completion -----------------------------------------------------------------------

def test_completion_candidates(repl):
    repl("param weight: [2] ~ zeros")
    repl("width = 3")
    repl("use nn")
    repl("enc = Dense(2, 3)")
    s = repl.session
    assert s.candidates("y = w") == ["weight", "where", "while", "width", "write"]  # params, keywords, variables, builtins
    assert "tanh" in s.candidates("ta") and "train" in s.candidates("tr")  # builtins and keywords
    assert "Dense" in s.candidates("De") and "leaky_relu" in s.candidates("leaky")  # from `use nn`
    assert s.candidates("use n") == ["nn"]
    assert s.candidates(":gr") == [":grad", ":graph"]
    assert s.candidates("enc.") == ["enc.W", "enc.b", "enc.call", "enc.init", "enc.n_in", "enc.n_out"]
    assert s.candidates("y = enc.c") == ["enc.call"]
    assert s.candidates("1 + ") == []


def test_prompt_completer_replaces_the_word_being_typed(repl):
    from prompt_toolkit.document import Document
    from prompt_toolkit.output import DummyOutput
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    with create_pipe_input() as inp:
        prompt = make_prompt(repl.session, history=InMemoryHistory(), input=inp, output=DummyOutput())
        got = list(prompt.completer.get_completions(Document("y = sigm"), None))
    assert [(c.text, c.start_position) for c in got] == [("sigmoid", -4)]


# ---- front ends -----------------------------------------------------------------------

def test_interactive_session_through_prompt_toolkit(repl, tmp_path):
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    hist = tmp_path / "history"
    with create_pipe_input() as inp:
        prompt = make_prompt(repl.session, history=FileHistory(str(hist)), input=inp, output=DummyOutput())
        inp.send_text("x = 2\r")
        inp.send_text("fn f(y) {\r  return y * x\r}\r")  # Enter inside braces continues the input
        inp.send_text("unfinished(\x03")  # Ctrl-C drops the current input
        inp.send_text("f(4)\r")
        inp.send_text("nope\r")
        inp.send_text("[1.0]\r")
        inp.send_text("\x04")  # Ctrl-D leaves
        assert interact(repl.session, prompt) == 0
    assert repl.session.out.getvalue() == "8\n[1.0]  # float64 [1]\n"
    assert "unknown name `nope`" in repl.err.getvalue() and "unfinished" not in repl.err.getvalue()
    assert "fn f(y) {\n+  return y * x\n+}" in hist.read_text()  # one history entry for the whole block


def test_interactive_quit_command(repl):
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    with create_pipe_input() as inp:
        prompt = make_prompt(repl.session, history=InMemoryHistory(), input=inp, output=DummyOutput())
        inp.send_text(":quit\r1 + 1\r")
        assert interact(repl.session, prompt) == 0
    assert repl.session.out.getvalue() == ""


def test_run_piped_joins_block_lines(repl):
    lines = io.StringIO("fn f(x) {\n  if x > 0 { return x }\n  return -x\n}\nf(-3)\n:quit\nf(1)\n")
    assert run_piped(repl.session, lines) == 0
    assert repl.session.out.getvalue() == "3\n"


def test_history_lives_in_a_dpl_data_directory():
    path = history_path()
    assert path.name == "history" and path.parent.name == "dpl"


def test_piped_stdin_prints_no_prompt():
    assert cli_repl("print(1+2)\n").stdout == "3\n"
    r = cli_repl("1 + 2\nx = [1, 2]\nfor i in range(2) {\n  print(x[i])\n}\nx * 2\n")
    assert (r.stdout, r.stderr, r.returncode) == ("3\n1\n2\n[2, 4]  # int64 [2]\n", "", 0)
    r = cli_repl("oops\nprint(1)\n")
    assert r.stdout == "1\n" and "<repl-1>:1:1: unknown name `oops`" in r.stderr and r.returncode == 1


def test_file_argument_is_loaded_first(tmp_path):
    prog = tmp_path / "p.dpl"
    prog.write_text("fn sq(x) = x * x\nprint(\"loaded\")\n")
    r = cli_repl("sq(7)\n", str(prog), "--dtype", "float32")
    assert (r.stdout, r.returncode) == ("loaded\n49\n", 0)
    assert cli_repl("sq(1.5)\n", str(prog), "--dtype", "float32").stdout == "loaded\n2.25\n"


# ---- the lexer ------------------------------------------------------------------------

def test_lexer_tokens():
    from pygments.token import Comment, Keyword, Name, Number, Operator, String
    from dpl.lexer import DplLexer
    src = 'fn f(x) = x ^ 2 + 1e-8 * .5  # c\nuse nn\nif true and y { print("a b") }\n'
    toks = [(t, v) for t, v in DplLexer().get_tokens(src) if v.strip()]
    for expected in ((Keyword.Declaration, "fn"), (Name.Function, "f"), (Number.Integer, "2"),
                     (Number.Float, "1e-8"), (Number.Float, ".5"), (Comment.Single, "# c"),
                     (Keyword.Namespace, "use"), (Keyword, "if"), (Keyword.Constant, "true"),
                     (Operator.Word, "and"), (Name.Builtin, "print"), (String.Double, '"a b"'),
                     (Operator, "^"), (Name, "y")):
        assert expected in toks
    assert (Name.Builtin, "max") in list(DplLexer().get_tokens("max(a, b)"))  # `max` is a name outside clauses


def test_lexer_is_found_by_pygments_once_installed():
    from importlib import metadata
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    try:
        eps = metadata.entry_points(group="pygments.lexers")
    except Exception:  # pragma: no cover
        eps = []
    if not any(ep.value == "dpl.lexer:DplLexer" for ep in eps):
        pytest.skip("dpl is not installed with its entry points (pip install -e .)")
    assert get_lexer_by_name("dpl").name == "DPL"
    assert get_lexer_for_filename("model.dpl").name == "DPL"


# ---- summarised display ------------------------------------------------------------------------

def test_large_tensors_are_summarised_as_numpy_does_and_print_stays_full(repl):
    text = repl("arange(2000)")
    assert text == "[   0,    1,    2, ..., 1997, 1998, 1999]  # int64 [2000]\n"
    assert repl("reshape(arange(2000) * 1.0, [40, 50])") == (
        "[[   0.0,    1.0,    2.0, ...,   47.0,   48.0,   49.0],\n"
        " [  50.0,   51.0,   52.0, ...,   97.0,   98.0,   99.0],\n"
        " [ 100.0,  101.0,  102.0, ...,  147.0,  148.0,  149.0],\n"
        " ...,\n"
        " [1850.0, 1851.0, 1852.0, ..., 1897.0, 1898.0, 1899.0],\n"
        " [1900.0, 1901.0, 1902.0, ..., 1947.0, 1948.0, 1949.0],\n"
        " [1950.0, 1951.0, 1952.0, ..., 1997.0, 1998.0, 1999.0]]  # float64 [40, 50]\n")
    three = repl("reshape(arange(2000), [20, 10, 10])").splitlines()
    assert three[:2] == ["[[[   0,    1,    2, ...,    7,    8,    9],", "  [  10,   11,   12, ...,   17,   18,   19],"]
    assert three[7:9] == ["", " [[ 100,  101,  102, ...,  107,  108,  109],"]  # a blank line between blocks
    assert " ...,\n\n [[1700," in "\n".join(three)
    printed = repl("print(arange(2000))")  # print keeps the contract's one-line full form
    assert printed == "[" + ", ".join(map(str, range(2000))) + "]\n"
    assert repl("(arange(1001),)").startswith("([   0,    1,    2, ...,  998,  999, 1000],)")


def test_small_tensors_stay_on_one_line_and_wide_ones_put_rows_on_lines(repl):
    assert repl("[[1.0, 2.0], [3.0, 4.0]]") == "[[1.0, 2.0], [3.0, 4.0]]  # float64 [2, 2]\n"
    assert repl("reshape(arange(12) / 3, [2, 6])") == (
        "[[               0.0, 0.3333333333333333, 0.6666666666666666,\n"
        "                 1.0, 1.3333333333333333, 1.6666666666666667],\n"
        " [               2.0, 2.3333333333333335, 2.6666666666666665,\n"
        "                 3.0, 3.3333333333333335, 3.6666666666666665]]  # float64 [2, 6]\n")
    assert len(repl("arange(1000)").splitlines()) > 1  # not summarised (1000 is NumPy's threshold), wrapped
    assert "..." not in repl("arange(1000)")


def test_set_full_and_summary_and_the_full_flag(repl):
    assert "..." in repl("arange(2000)")
    assert repl(":set full") == ""
    full = repl("arange(2000)")
    assert "..." not in full and "1234," in full
    repl("x = arange(1500) * 1.0")
    assert "..." not in repl(":grad sum(x ^ 2) wrt x")  # :grad shows its gradient the same way
    repl(":set summary")
    assert "..." in repl("arange(2000)")
    repl(":set")
    assert "usage: :set full | :set summary (now summary)" in repl.err.getvalue()
    r = cli_repl("arange(2000)\n", "--full")
    assert r.returncode == 0 and "..." not in r.stdout and "1999]" in r.stdout
    assert "..." in cli_repl("arange(2000)\n").stdout
