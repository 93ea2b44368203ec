"""DPL: a small language for differentiable programs.

    prog = dpl.load("model.dpl")          # runs the top-level statements (train blocks skipped)
    graph = prog.trace("f", x)            # the recorded DAG ⟨n, l, E, f, v, α⟩ of one call
    prog.call("f", x); prog.grad("f")(x); prog["xs"]
    metrics = prog.train(); prog.save_params("model.params.npz")
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

__all__ = ["load", "loads", "Program", "FunctionValue", "DplError", "Span", "Graph"]
__version__ = "0.1.0"


class Program:
    """A loaded DPL program: its interpreter state, callable by function name from Python; its top-level values
    read as `prog["name"]` (numpy arrays out), trained by `prog.train(...)`, saved by `prog.save_params(path)`."""

    def __init__(self, interp, origin=None):
        self.interp = interp
        self._origin = origin  # how it was loaded: (program AST, path, seed, dtype, stdout, params), for train()

    @property
    def params(self) -> dict:
        return {k: np.asarray(v) for k, v in self.interp.params.items()}

    def function(self, name: str):
        f = self.interp.lookup_optional(name, self.interp.top)
        if f is None:
            raise DplError(f"the program has no function `{name}`")
        return f

    # ---- top-level values -----------------------------------------------------------------------------

    def __getitem__(self, name: str):
        """A top-level value by name (`prog["xs"]`, `prog["enc.W"]` for a member of a module instance): tensors
        as numpy arrays, strings as str, tuples and lists as Python tuples and lists, functions as callables."""
        v = self._lookup(name)
        if v is _MISSING:
            from .errors import suggest
            raise KeyError(f"the program has no top-level value `{name}`{suggest(name, self.interp.globals)}")
        return self._to_python(v, name)

    def get(self, name: str, default=None):
        """prog[name], or `default` when the program binds no such name."""
        v = self._lookup(name)
        return default if v is _MISSING else self._to_python(v, name)

    def __contains__(self, name: str) -> bool:
        return self._lookup(name) is not _MISSING

    @property
    def values(self) -> dict:
        """Every top-level name bound to data (tensors, numbers, strings, and lists and tuples of them; not
        functions, modules or instances), as prog[name] gives it; parameters declared at top level included."""
        out = {}
        for name in self.interp.globals:
            v = self._lookup(name)
            if _is_data(v):
                out[name] = self._to_python(v, name)
        return out

    def _lookup(self, name: str):
        if name.split(".")[0] not in self.interp.globals:  # top-level names only, not the builtins
            return _MISSING
        v = self.interp.lookup_optional(name, self.interp.top)
        return _MISSING if v is None and "." in name else v

    def _to_python(self, v, name: str):
        from .interp import Instance, ModuleValue, Namespace
        from .values import List
        if isinstance(v, tuple):
            return tuple(self._to_python(x, name) for x in v)
        if isinstance(v, List):
            return [self._to_python(x, name) for x in v]
        if isinstance(v, (Instance, ModuleValue, Namespace)):
            raise TypeError(f"`{name}` is {v.describe()}, which has no Python value; read its members by their "
                            f"dotted names, as prog[\"{name}.W\"], or call its functions with prog.call")
        if _is_data(v) or v is None:
            return _unbox(v)
        return FunctionValue(self, v)

    # ---- calls ------------------------------------------------------------------------------------------

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
            elif isinstance(a, FunctionValue):
                a = a.value
            out.append(a)
        return out

    def _invoke(self, f, args, kwargs):
        values = self._args(list(args) + list(kwargs.values()))
        out = self.interp.call(f, values[:len(args)], dict(zip(kwargs, values[len(args):])), None)
        return self._to_python(out, getattr(f, "name", "the result"))

    def call(self, name: str, *args, **kwargs):
        """Call a DPL function (keyword arguments are DPL's); tensors come back as numpy arrays, tuples and
        lists as Python tuples and lists."""
        return self._invoke(self.function(name), args, kwargs)

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
        return lambda *args: self._to_python(g.dpl_call(self.interp, self._args(args), {}, None), name)

    # ---- training and saving ------------------------------------------------------------------------

    def train(self, loss: str | None = None, *over, epochs: int | None = None, batch: int | None = None,
              optimizer: str | None = None, shuffle: bool | None = None, seed: int | None = None,
              progress: bool = False) -> dict:
        """Train the parameters and return the metrics `dpl train --metrics` writes (final_loss, epochs, steps,
        skipped_steps, wall_seconds, epoch_losses, blocks) with `step_losses` (the loss of every step) added.

        `prog.train()` runs the program again from the top as `dpl train` does: parameters start from their
        initializers (or the params it was loaded with), every train block trains, and the values after them
        are those of the trained program. `prog.train("loss", xs, ys, epochs = 20, batch = 32,
        optimizer = "adam(lr = 0.01)")` trains the current parameters as the block `train loss over xs, ys
        { ... }` would, without running anything else: `over` items are arrays or DPL expressions (strings) of
        the program's top level, `optimizer` is a DPL expression; settings left out take their defaults."""
        from .train import Trainer, TrainReport
        report = TrainReport()
        trainer = Trainer(report=report, progress=progress)
        if loss is None:
            if over or any(v is not None for v in (epochs, batch, optimizer, shuffle, seed)):
                raise DplError("prog.train() with no loss runs the program's own train blocks and takes no other "
                               "arguments; name the loss to train with your own data and settings")
            self._rerun(trainer)
        else:
            self._train_block(trainer, loss, over, {"epochs": epochs, "batch": batch, "optimizer": optimizer,
                                                    "shuffle": shuffle, "seed": seed})
        return dict(report.metrics(), step_losses=list(report.step_losses))

    def _rerun(self, trainer) -> None:
        from . import backend
        from .interp import Interpreter
        from .paramfile import LoadedParams
        if self._origin is None:
            raise DplError("this program was not loaded by dpl.load or dpl.loads, so it cannot be run again")
        program, path, seed, dtype, stdout, (arrays, source, partial) = self._origin
        backend.use("cpu", dtype)
        interp = Interpreter(mode="train", seed=seed, stdout=stdout, trainer=trainer,
                             loaded_params=LoadedParams(dict(arrays), source=source, partial=partial))
        interp.run_program(program, path)
        interp.loaded_params.check()
        interp.mode, interp.trainer = "run", None  # later calls from Python run as under `dpl run`
        self.interp = interp

    def _train_block(self, trainer, loss, over, settings) -> None:
        """The equivalent `train` block, written out and parsed, so that its errors point into it."""
        from .interp import Frame
        from .parser import parse
        data, names = {}, []
        for k, item in enumerate(over):
            if isinstance(item, str):
                names.append(item)
            else:
                names.append(f"_over{k}")
                data[f"_over{k}"] = self._args([item])[0]
        if isinstance(settings["optimizer"], str) and settings["optimizer"].strip() in ("sgd", "adam", "rmsprop"):
            settings["optimizer"] = settings["optimizer"].strip() + "()"  # a bare name: that optimizer's defaults
        lines = [f"train {loss}" + (f" over {', '.join(names)}" if names else "") + " {"]
        for key, value in settings.items():
            if value is not None:
                text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else \
                    repr(value.item() if isinstance(value, np.generic) else value)
                lines.append(f"    {key} = {text}")
        (stmt,) = parse("\n".join(lines + ["}"]), "<prog.train>").body
        self.interp.steps = 0
        trainer(self.interp, stmt, Frame(data, name="<prog.train>"))

    def save_params(self, path) -> Path:
        """Write the parameters as `dpl train --out` does (.npz keyed by name, atomically: temporary file and
        rename, so a failure leaves the previous file); returns the path written."""
        from .paramfile import prepare_output, save_params
        prepare_output(path, "")
        save_params(path, self.interp.params)
        return Path(path)


_MISSING = object()


class FunctionValue:
    """A DPL function value (a `fn`, a closure, grad(f), a builtin) as a Python callable: arguments and
    results converted as by Program.call."""

    def __init__(self, program: Program, value):
        self.program, self.value = program, value

    def __call__(self, *args, **kwargs):
        return self.program._invoke(self.value, args, kwargs)

    def __repr__(self):
        return f"<dpl {self.value.describe()}>" if hasattr(self.value, "describe") else f"<dpl {self.value!r}>"


def _is_data(v) -> bool:
    """Tensors, numbers, strings, and tuples and lists of them."""
    from .interp import is_tensor
    from .values import List
    if isinstance(v, (tuple, List)):
        return all(_is_data(x) for x in v)
    return isinstance(v, str) or is_tensor(v)


def _unbox(v):
    from .values import List
    if isinstance(v, (tuple, List)):
        return type(v)(_unbox(x) for x in v) if isinstance(v, tuple) else [_unbox(x) for x in v]
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
    from .interp import read_source
    from .paramfile import LoadedParams, load_params
    params = load_params(params) if isinstance(params, (str, os.PathLike)) else LoadedParams.of(params)
    kept = (dict(params), params.source, params.partial)  # before the run takes its entries: for train()
    stdout = stdout or sys.stdout
    interp = _interpreter(seed, dtype, stdout, params)
    from .parser import parse
    path = Path(path)
    program = parse(read_source(path), str(path))
    interp.run_program(program, path)
    interp.loaded_params.check()
    return Program(interp, (program, path, seed, dtype, stdout, kept))


def loads(source: str, file: str = "<string>", seed: int = 0, dtype: str = "float64", stdout=None) -> Program:
    """Like load, from source text (the file name is used in error messages and relative paths);
    its prints are kept in a StringIO unless `stdout` is given."""
    from .parser import parse
    stdout = io.StringIO() if stdout is None else stdout
    interp = _interpreter(seed, dtype, stdout)
    program, path = parse(source, file), Path(file) if Path(file).exists() else None
    interp.run_program(program, path)
    return Program(interp, (program, path, seed, dtype, stdout, ({}, None, False)))


def __getattr__(name):
    """`dpl.Session` (dpl/notebook.py) is imported when first used: plain `import dpl` stays light."""
    if name == "Session":
        from .notebook import Session
        return Session
    raise AttributeError(f"module 'dpl' has no attribute '{name}'")


def load_ipython_extension(ipython):
    """`%load_ext dpl`: the %%dpl magics (dpl/notebook.py; pip install 'dpl[notebook]')."""
    from .notebook import load_ipython_extension as load
    load(ipython)
