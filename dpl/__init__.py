"""DPL: a small language for differentiable programs.

    prog = dpl.load("model.dpl")          # runs the top-level statements (train blocks skipped)
    graph = prog.trace("f", x)            # the recorded DAG ⟨n, l, E, f, v, α⟩ of one call
    prog.call("f", x); prog.grad("f")(x)
"""
from __future__ import annotations

import os
import sys

if sys.argv and os.path.basename(sys.argv[0]) in ("dpl", "dpl.exe"):  # the `dpl` command is starting
    import signal

    # Ctrl-C is held back while the command imports numpy, scipy and the rest (a KeyboardInterrupt inside their
    # C import code comes out as an ImportError); cli.main lets it through once they are loaded.
    _held_interrupts: list = []
    signal.signal(signal.SIGINT, lambda signum, frame: _held_interrupts.append(signum))

    def _quiet_interrupt(kind, value, tb, default=sys.excepthook):
        """Ctrl-C before cli.main catches it (while numpy and the rest are imported): no traceback."""
        if not issubclass(kind, KeyboardInterrupt):
            return default(kind, value, tb)
        sys.stderr.write("dpl: interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    sys.excepthook = _quiet_interrupt

import io  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .errors import DplError, Span  # noqa: E402
from .graph import Graph, raw  # noqa: E402

__all__ = ["load", "loads", "Program", "DplError", "Span", "Graph"]
__version__ = "0.1.0"


class Program:
    """A loaded DPL program: its interpreter state, callable by function name from Python."""

    def __init__(self, interp):
        self.interp = interp

    @property
    def params(self) -> dict:
        return {k: np.asarray(v) for k, v in self.interp.params.items()}

    def function(self, name: str):
        f = self.interp.lookup_optional(name, self.interp.top)
        if f is None:
            raise DplError(f"the program has no function `{name}`")
        return f

    def _args(self, args):
        """The arguments of a call from Python as DPL values; the call has the whole --max-steps budget."""
        from . import backend as B
        self.interp.steps = 0
        out = []
        for a in args:
            if isinstance(a, (list, tuple, float, int, bool, complex, np.ndarray, np.generic)):
                a = np.asarray(a)
                a = a.astype(B.float_dtype) if a.dtype.kind == "f" else a.astype(B.complex_dtype) \
                    if a.dtype.kind == "c" else a
            out.append(a)
        return out

    def call(self, name: str, *args):
        """Call a DPL function; tensors come back as numpy arrays."""
        out = self.interp.call(self.function(name), self._args(args), {}, None)
        return _unbox(out)

    def trace(self, name: str, *args) -> Graph:
        """Record one call: arguments and the parameters it reads are the inputs 1..l."""
        from . import graph as G
        from .record import record
        G.set_span(None)
        rec = record(self.interp, self.function(name), self._args(args))
        out = rec.out
        graph = Graph(rec.trace, out if isinstance(out, tuple) else (out,))
        graph.result = _unbox(out)
        return graph

    def grad(self, name: str, argnum: int = 0):
        from .builtins import GradFn
        g = GradFn(self.function(name), argnum, False)
        return lambda *args: _unbox(g.dpl_call(self.interp, self._args(args), {}, None))


def _unbox(v):
    if isinstance(v, tuple):
        return tuple(_unbox(x) for x in v)
    v = raw(v)
    return np.asarray(v) if hasattr(v, "dtype") else v


def _interpreter(seed, dtype, stdout, params=None):
    """An interpreter in `dpl run` mode on the CPU with the given float dtype."""
    from . import backend
    from .interp import Interpreter
    backend.use("cpu", dtype)
    np.seterr(all="ignore")
    return Interpreter(mode="run", seed=seed, stdout=stdout, loaded_params=params)


def load(path, seed: int = 0, dtype: str = "float64", stdout=None, params=None) -> Program:
    """Load and run a program's top level like `dpl run` (train blocks skipped). `params`: a dict of arrays
    (names it lacks keep their initializers), or the path of a params file, which must match as `--params`."""
    if isinstance(params, (str, os.PathLike)):
        from .paramfile import load_params
        params = load_params(params)
    interp = _interpreter(seed, dtype, stdout or sys.stdout, params)
    interp.run_file(Path(path))
    interp.loaded_params.check()
    return Program(interp)


def loads(source: str, file: str = "<string>", seed: int = 0, dtype: str = "float64", stdout=None) -> Program:
    """Like load, from source text (the file name is used in error messages and relative paths);
    its prints are kept in a StringIO unless `stdout` is given."""
    from .parser import parse
    interp = _interpreter(seed, dtype, io.StringIO() if stdout is None else stdout)
    interp.run_program(parse(source, file), Path(file) if Path(file).exists() else None)
    return Program(interp)
