"""`dpl repl`: an interactive session that keeps one interpreter's definitions across inputs.

`Session` holds the state and executes one input at a time (statements, expressions whose values
it prints, and `:commands`); `interact` drives it with prompt-toolkit (multi-line blocks, history,
highlighting, completion) and `run_piped` reads a non-terminal stdin line by line without prompts.
"""
from __future__ import annotations

import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import ast as A
from . import backend as B
from . import graph
from .errors import DplError
from .graph import Box, Graph, raw
from .interp import Frame, Instance, Interpreter, _Return, describe_type, kind
from .record import record
from .parser import RESERVED, parse
from .resources import data_dir
from .values import format_display

HELP = """\
Statements run as typed; an expression prints its value. Blocks { ... } continue until braces balance.
  :help               this text
  :load FILE          run FILE's top level here (train blocks skipped)
  :reset              forget every definition, variable and parameter
  :params [FILE]      the parameters: name, shape, norm; with FILE (.npz) load their values from it
                      (those not yet declared are taken by their `param` declaration)
  :grad EXPR wrt NAME gradient of a scalar EXPR w.r.t. a parameter or a variable
  :graph EXPR [-o F]  the graph EXPR records (inputs: the float variables and parameters it reads);
                      -o F writes it (.dot, .json, .html, .svg ...)
  :type EXPR          shape and dtype of EXPR's value
  :time EXPR          best of 5 runs, in ms
  :set full           show tensors whole; :set summary (the default) shows `...` past 1000 elements
  :quit               leave (also Ctrl-D)"""

COMMANDS = ("help", "load", "reset", "params", "grad", "graph", "type", "time", "set", "quit")


def is_complete(text: str) -> bool:
    """An input is complete when its ( [ { outside strings and comments are closed."""
    depth = 0
    for m in re.finditer(r'#[^\n]*|"[^"\n]*"?|[(\[{]|[)\]}]', text):
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
    return depth <= 0


def stdlib_modules() -> list[str]:
    return sorted(p.stem for p in data_dir("stdlib").glob("*.dpl"))


def history_path() -> Path:
    """The history file in the user's data directory (platformdirs when installed)."""
    try:
        from platformdirs import user_data_dir
        return Path(user_data_dir("dpl")) / "history"
    except ImportError:
        return Path.home() / ".local" / "share" / "dpl" / "history"


def annotate(v, full: bool = False) -> str:
    """A value as `print` writes it, large tensors summarised unless `full` (values.format_display); tensors
    with an axis also get `  # dtype [shape]`."""
    r = raw(v)
    text = format_display(v, full)
    if kind(v) and np.ndim(r) > 0:
        text += f"  # {r.dtype} {list(np.shape(r))}"
    return text


class _Expr:
    """An expression as a callable for dpl.record: the float variables it reads (all, or only `variables`)
    become inputs of the recording, as they are read; parameters are inputs as in any recording."""

    def __init__(self, expr, variables=None):
        self.expr, self.variables = expr, variables
        self.inputs: dict[str, Box] = {}

    def dpl_call(self, interp, args, kwargs, span):
        trace, rec = graph.recording[-1], self

        class Globals(dict):
            def __getitem__(self, name):
                v = super().__getitem__(name)
                if type(v) is not Box and kind(v) == "f" and (rec.variables is None or name in rec.variables):
                    v = rec.inputs[name] = trace.input(v, name)
                    dict.__setitem__(self, name, v)
                return v

        saved = interp.globals
        interp.globals = Globals(saved)
        graph.set_span(None)  # an input's node has no source position of its own
        try:
            return interp.eval(self.expr, Frame(interp.globals, top=True))
        finally:
            interp.globals = saved


class Session:
    """One REPL session: an interpreter whose globals and parameters persist from input to input."""

    source = "<repl-{}>"  # how errors name the Nth input

    def __init__(self, seed: int = 0, dtype: str = "float64", out=None, err=None, debug: bool = False,
                 full: bool = False):
        from . import backend
        backend.use("cpu", dtype)
        np.seterr(all="ignore")  # inf and nan are values, as in `dpl run`
        self.seed, self.debug = seed, debug
        self.full = full  # show tensors whole (`--full`, `:set full`) instead of summarised
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.count = 0
        self.failed = False  # an input since the start ended in an error (the exit status of a piped run)
        self.reset()

    def reset(self) -> None:
        self.interp = Interpreter(mode="run", seed=self.seed, stdout=self.out)

    # ---- one input ----------------------------------------------------------------

    def execute(self, text: str) -> bool:
        """Run one complete input; errors are reported and the session goes on. False means quit."""
        if not text.strip():
            return True
        self.interp.steps = 0  # --max-steps bounds one input, not the session
        try:
            if text.lstrip().startswith(":"):
                return self.command(text.strip()[1:])
            self.run_source(text)
        except DplError as e:
            self._fail(e.format())
        except KeyboardInterrupt:
            self._fail("interrupted")
        except RecursionError:
            self._fail("dpl: error: the program nests too deeply (recursion)")
        except Exception as e:  # a bug in DPL, not in the input
            self._fail(f"dpl: internal error: {type(e).__name__}: {e}")
        return True

    def _fail(self, message: str) -> None:
        if self.debug:
            traceback.print_exc(file=self.err)
        print(message, file=self.err, flush=True)
        self.failed = True

    def run_source(self, text: str) -> None:
        """Statements run as in a file; a top-level expression's value is printed (unless it has none)."""
        self.count += 1
        program = parse(text, self.source.format(self.count))
        interp = self.interp
        if any(isinstance(s, (A.FnDef, A.ModuleDef)) for s in program.body):
            interp.hoist(program.body)
        for stmt in program.body:
            if isinstance(stmt, A.ExprStmt):
                graph.set_span(stmt.span)
                value = interp.eval(stmt.expr, interp.top)
                if value is not None:
                    print(annotate(value, self.full), file=self.out, flush=True)
            elif isinstance(interp.exec_stmt(stmt, interp.top), _Return):
                raise DplError("`return` outside a function", stmt.span)

    def load(self, path: str) -> None:
        self.interp.run_file(Path(path))

    # ---- :commands ----------------------------------------------------------------

    def command(self, line: str) -> bool:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("quit", "q", "exit"):
            return False
        handler = getattr(self, f"cmd_{name}", None) if name in COMMANDS else None
        if handler is None:
            raise DplError(f"unknown command `:{name}`; commands: {', '.join(':' + c for c in COMMANDS)}")
        handler(arg)
        return True

    def cmd_help(self, arg):
        print(HELP, file=self.out)

    def cmd_load(self, arg):
        if not arg:
            raise DplError("usage: :load FILE")
        self.load(arg)

    def cmd_reset(self, arg):
        self.reset()

    def cmd_params(self, arg):
        from rich.console import Console
        from rich.table import Table
        if arg:
            return self.load_params(arg)
        if not self.interp.params:
            print("no parameters", file=self.out)
            return
        table = Table("name", "shape", "norm")
        for name, value in self.interp.params.items():
            table.add_row(name, str(list(np.shape(value))), f"{float(np.linalg.norm(np.asarray(value))):.6g}")
        Console(file=self.out, highlight=False).print(table)

    def load_params(self, path: str) -> None:
        """Set the declared parameters the file names to its values (every shape must match, else nothing is
        set); keep the others for the `param` declarations still to come."""
        from .paramfile import load_params
        arrays = load_params(path)
        params = self.interp.params
        for name, a in arrays.items():
            if name in params and np.shape(a) != np.shape(params[name]):
                raise DplError(f"parameter `{name}` is {list(np.shape(params[name]))} but {path} has "
                               f"{list(np.shape(a))}; nothing was loaded")
        now = {n: a for n, a in arrays.items() if n in params}
        for name, a in now.items():
            params[name] = B.xp.asarray(a.astype(B.float_dtype) if a.dtype.kind == "f" else a)
        later = {n: a for n, a in arrays.items() if n not in params}
        self.interp.loaded_params.update(later)
        more = f"; {len(later)} more kept for their `param` declarations" if later else ""
        print(f"loaded {len(now)} parameter{'s' * (len(now) != 1)} from {path}{more}", file=self.out)

    def cmd_type(self, arg):
        v = self._eval(arg)
        r = raw(v)
        print(f"{r.dtype} {list(np.shape(r))}" if kind(v) else describe_type(v), file=self.out)

    def cmd_time(self, arg):
        expr = self._parse_expr(arg)
        run = lambda: self.interp.eval(expr, self.interp.top)  # noqa: E731
        t0 = time.perf_counter()
        run()
        number = max(1, min(1000, int(0.05 / max(time.perf_counter() - t0, 1e-9))))  # ~50 ms a run
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(number):
                run()
            best = min(best, (time.perf_counter() - t0) / number)
        print(f"{best * 1e3:.4g} ms (best of 5 runs of {number} loop{'s' * (number > 1)})", file=self.out)

    def cmd_grad(self, arg):
        """Box NAME as the one input that matters, evaluate EXPR, and run the backward pass."""
        from .autodiff import as_float, backward, zeros_like
        m = re.fullmatch(r"(.+?)\s+wrt\s+([A-Za-z_][\w.]*)", arg)
        if not m:
            raise DplError("usage: :grad EXPR wrt NAME")
        expr, name = self._parse_expr(m.group(1)), m.group(2)
        is_param = name in self.interp.params
        value = None if is_param else self.interp.globals.get(name)
        if not is_param and not kind(value):
            raise DplError(f"`{name}` is neither a parameter nor a tensor variable")
        if value is not None and kind(value) != "f":
            self.interp.globals[name] = as_float(value)  # grad treats integers as floats
        call = _Expr(expr, variables={name})
        try:
            rec = record(self.interp, call, [])
        finally:
            if value is not None:
                self.interp.globals[name] = value
        out, box = rec.out, {**rec.params, **call.inputs}.get(name)
        if kind(out) != "f" or np.ndim(raw(out)) != 0:
            raise DplError(f":grad needs an expression with a 0-d float value, got {describe_type(out)}")
        g = None
        if box is not None and type(out) is Box and out.trace is rec.trace:
            g = backward(rec.trace, out, [box])[0]
        wrt = self.interp.params[name] if is_param else value
        print(annotate(zeros_like(wrt) if g is None else raw(g), self.full), file=self.out)

    def cmd_graph(self, arg):
        m = re.fullmatch(r"(.+?)(?:\s+-o\s+(\S+))?", arg)
        if not arg or not m:
            raise DplError("usage: :graph EXPR [-o FILE]")
        expr, dest = self._parse_expr(m.group(1)), m.group(2)
        if dest:
            from .viz import check_graph_output
            check_graph_output(dest)  # a bad name or place is said before recording, and no empty file is left
        g, n_variables = self.record_graph(expr)
        if dest:
            for note in write_graph(g, Path(dest), n_variables):  # a large graph is drawn folded: say so
                print(note, file=self.out)
            print(f"wrote {dest} ({g.n} nodes, {g.l} inputs)", file=self.out)
        elif g.n:
            print(g.pretty(), file=self.out)
        else:
            print("(nothing recorded: the expression reads no parameter or float variable)", file=self.out)

    def cmd_set(self, arg):
        if arg not in ("full", "summary"):
            raise DplError(f"usage: :set full | :set summary (now {'full' if self.full else 'summary'})")
        self.full = arg == "full"

    # ---- helpers --------------------------------------------------------------------

    def record_graph(self, expr) -> tuple[Graph, int]:
        """The graph EXPR records and its number of variable inputs: the float variables it reads come first,
        then the parameters."""
        call = _Expr(expr)
        rec = record(self.interp, call, [])
        out = rec.out
        rec.trace.inputs.sort(key=lambda node: node.name not in call.inputs)
        return Graph(rec.trace, out if isinstance(out, tuple) else (out,)), len(call.inputs)

    def _parse_expr(self, text: str):
        if not text.strip():
            raise DplError("this command needs an expression")
        self.count += 1
        body = parse(text, self.source.format(self.count)).body
        if len(body) != 1 or not isinstance(body[0], A.ExprStmt):
            raise DplError("this command needs one expression, not a statement")
        return body[0].expr

    def _eval(self, text: str):
        return self.interp.eval(self._parse_expr(text), self.interp.top)

    def candidates(self, before: str) -> list[str]:
        """Completions for the word ending `before`: commands, stdlib modules after `use`, names, `inst.` members."""
        if re.fullmatch(r"\s*:\w*", before):
            word = before.strip()[1:]
            return [":" + c for c in COMMANDS if c.startswith(word)]
        m = re.search(r"\buse\s+(\w*)$", before)
        if m:
            return [s for s in stdlib_modules() if s.startswith(m.group(1))]
        m = re.search(r"([A-Za-z_]\w*)\.(\w*)$", before)
        if m:
            inst = self.interp.globals.get(m.group(1))
            if not isinstance(inst, Instance):
                return []
            members = set(inst.params) | set(inst.fns) | set(inst.values)
            return sorted(f"{m.group(1)}.{x}" for x in members if x.startswith(m.group(2)))
        word = re.search(r"[A-Za-z_]?\w*$", before).group()
        if not word:
            return []
        names = set(self.interp.globals) | set(self.interp.params) | set(self.interp.builtins) | RESERVED
        return sorted(n for n in names if n.startswith(word) and "." not in n)


def write_graph(g: Graph, path: Path, n_variables: int) -> list:
    """Any format dpl.viz writes (from the extension), written atomically; returns dpl.viz's notes."""
    from .viz import write_graph as viz_write_graph
    return viz_write_graph(as_recording(g, n_variables), str(path))


def as_recording(g: Graph, n_variables: int):
    """The graph of an expression as dpl.viz draws it."""
    from .viz import Recording
    # no DPL call owns the nodes; the variables (numbered first) are drawn as arguments, the rest as parameters
    return Recording(g, {}, {node.id: 0 for node in g.nodes}, n_variables)


# ---- front ends -------------------------------------------------------------------------

def run_piped(session: Session, lines) -> int:
    """Non-terminal stdin: join lines until brackets balance, run each input, print no prompts."""
    buf = ""
    for line in lines:
        buf += line if line.endswith("\n") else line + "\n"
        if is_complete(buf):
            text, buf = buf, ""
            if not session.execute(text):
                return 1 if session.failed else 0
    if buf.strip():
        session.execute(buf)  # an unbalanced tail: let the parser say what is missing
    return 1 if session.failed else 0


def make_prompt(session: Session, history=None, input=None, output=None):
    """A PromptSession: Enter submits once brackets balance (else a new line), DPL highlighting and completion."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer

    from .lexer import DplLexer

    class DplCompleter(Completer):
        def get_completions(self, document, complete_event):
            before = document.text_before_cursor
            word = re.search(r"[:\w.]*$", before).group()
            for c in session.candidates(before):
                yield Completion(c, start_position=-len(word))

    keys = KeyBindings()

    @keys.add("enter")
    def _(event):
        buf = event.current_buffer
        if is_complete(buf.text) or buf.text.lstrip().startswith(":"):
            buf.validate_and_handle()
        else:
            buf.insert_text("\n")

    if history is None:
        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(path))
    return PromptSession(message="dpl> ", multiline=True, prompt_continuation="...  ", key_bindings=keys,
                         history=history, lexer=PygmentsLexer(DplLexer), completer=DplCompleter(),
                         complete_while_typing=False, input=input, output=output)


def interact(session: Session, prompt=None) -> int:
    """The interactive loop: Ctrl-C drops the current input (or stops an evaluation), Ctrl-D leaves."""
    prompt = prompt or make_prompt(session)
    while True:
        try:
            text = prompt.prompt()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if not session.execute(text):
            return 0


def main(args) -> int:
    """`dpl repl [FILE] [--params P] [--seed N] [--dtype ...] [--full] [--debug]`."""
    session = Session(seed=args.seed, dtype=args.dtype, debug=args.debug, full=args.full)
    if args.params:
        session.load_params(args.params)  # before FILE, whose declarations take them
    if args.file:
        session.execute(f":load {args.file}")
    if not sys.stdin.isatty():
        return run_piped(session, sys.stdin)
    print("DPL REPL: :help for commands, Ctrl-D to leave", file=sys.stderr)
    return interact(session)
