"""DPL from Jupyter and from Python: `dpl.Session`, the REPL's session in which train blocks train and whose
values cross into NumPy, and the `%load_ext dpl` magics that show its values, graphs and figures inline.

IPython is imported only when the extension is loaded (`pip install 'dpl[notebook]'`); `Session` needs none.
"""
from __future__ import annotations

import functools
import html
import io
import re
import sys
import time

import numpy as np

from . import backend as B
from .errors import DplError, suggest
from .graph import raw
from .interp import Instance, describe_type, kind
from .parser import RESERVED
from .repl import Session as ReplSession, as_recording
from .train import TrainReport, Trainer, _Display, progress_bar


class Session(ReplSession):
    """One DPL session driven from Python: inputs run as in `dpl repl` (definitions persist, an expression's
    value is printed), but `train` blocks train, as under `dpl train`; values go to and from NumPy.

    `progress`: None (quiet), "bar" (the `dpl train` bar on stderr) or "notebook" (an inline bar, shown once
    a train block has run for `progress_after` seconds)."""

    def __init__(self, seed: int = 0, dtype: str = "float64", progress: str | None = None, out=None, err=None,
                 progress_after: float = 1.0):
        if progress not in (None, "bar", "notebook"):
            raise ValueError(f"progress is None, 'bar' or 'notebook', not {progress!r}")
        self.progress, self.progress_after = progress, progress_after
        self.report: TrainReport | None = None  # what the last input that trained did
        super().__init__(seed=seed, dtype=dtype, out=out, err=err)

    def reset(self) -> None:
        super().reset()
        self.interp.mode = "train"
        self.report = None

    # ---- running DPL --------------------------------------------------------------------

    def run(self, text: str) -> None:
        """Run one input (statements, expressions, `:commands`) training at each train block; a DplError is
        raised, not printed. The attention weights kept are this input's, the loss curve the last training's."""
        interp = self.interp
        interp.steps = 0  # --max-steps bounds one input, not the session
        interp.attention_log.clear()
        report = TrainReport()
        display = functools.partial(NotebookBar, after=self.progress_after) if self.progress == "notebook" else None
        interp.trainer = Trainer(report=report, progress=self.progress is not None, display=display)
        try:
            if text.lstrip().startswith(":"):
                self.command(text.strip()[1:])
            else:
                self.run_source(text)
        except RecursionError:
            raise DplError("the program nests too deeply (recursion)") from None
        finally:
            interp.trainer = None  # the inherited `execute` runs inputs as the REPL does, train blocks skipped
            if report.blocks:
                self.report = report
        if report.blocks:
            print(f"trained {report.steps} steps in {report.seconds:.2f} s, final loss {report.final_loss:.6g}",
                  file=self.out, flush=True)

    def eval(self, text: str):
        """The value of one DPL expression, tensors as NumPy arrays."""
        from . import _unbox
        self.interp.steps = 0
        return _unbox(self._eval(text))

    # ---- values to and from NumPy -------------------------------------------------------

    def get(self, name: str | None = None):
        """A top-level value as NumPy (tensors as arrays, tuples of them as tuples); a module instance as the
        dict of its parameters; without a name, every parameter by its full name. Arrays are copies."""
        params = self.interp.params
        if name is None:
            return {n: _host(v) for n, v in params.items()}
        if name in params:
            return _host(params[name])
        v = self.interp.lookup_optional(name, self.interp.top)
        if v is None:
            known = set(self.interp.globals) | set(params)
            raise DplError(f"no top-level name `{name}`{suggest(name, known)}")
        if isinstance(v, Instance):
            return {local: _host(params[full]) for local, full in v.params.items()}
        return _to_python(name, v)

    def set(self, name: str, value) -> None:
        """Bind `name` at the top level to a NumPy array (floats in the session's dtype) or a string; a declared
        parameter's value is replaced instead, and must keep its shape."""
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name) or name in RESERVED:
            raise DplError(f"`{name}` is not a name DPL can bind")
        if isinstance(value, str):
            v = value
        else:
            a = np.asarray(value)
            if a.dtype.kind not in "fiub":
                raise DplError(f"cannot bind `{name}` to a {type(value).__name__} (dtype {a.dtype}): DPL takes "
                               f"arrays of numbers or booleans, and strings")
            v = B.xp.asarray(a.astype(B.float_dtype) if a.dtype.kind == "f" else a.astype(np.int64)
                             if a.dtype.kind in "iu" else a)
        params = self.interp.params
        if name in params:
            if kind(v) not in ("f", "i") or np.shape(v) != np.shape(params[name]):
                raise DplError(f"parameter `{name}` is a float tensor of shape {list(np.shape(params[name]))}; "
                               f"got {describe_type(v)}")
            params[name] = B.xp.asarray(raw(v), dtype=B.float_dtype)
        elif "." in name:
            raise DplError(f"no parameter `{name}`{suggest(name, params)}; only top-level names can be bound")
        else:
            self.interp.globals[name] = v

    # ---- pictures -----------------------------------------------------------------------

    def graph(self, text: str):
        """The graph one DPL expression records, as dpl.viz draws it (viz.to_dot, viz.to_html)."""
        g, n_variables = self.record_graph(self._parse_expr(text))
        return as_recording(g, n_variables)

    def loss_figure(self):
        """The loss curve (every step, every epoch's mean) of the last input that trained, a matplotlib Figure."""
        from .viz import loss_figure
        if self.report is None:
            raise DplError("nothing has been trained in this session yet, so there is no loss curve")
        return loss_figure(self.report)

    def attention_figure(self, text: str | None = None):
        """Heatmaps of the attention weights of the last input, or of evaluating `text`, a matplotlib Figure."""
        from .viz import attention_figure
        if text is not None and text.strip():
            self.interp.attention_log.clear()
            self._eval(text)
        if not self.interp.attention_log:
            raise DplError("no attend/attention call ran " + ("in that expression" if text else "in the last input")
                           + ", so there are no weights to draw")
        return attention_figure(self.interp.attention_log)[0]


def _host(v) -> np.ndarray:
    return np.array(B.to_host(raw(v)))


def _to_python(name, v):
    if isinstance(v, tuple):
        return tuple(_to_python(name, x) for x in v)
    if kind(v):
        return _host(v)
    if isinstance(v, str):
        return v
    raise DplError(f"`{name}` is {describe_type(v)}, which has no NumPy form; tensors, tuples of them, strings "
                   f"and module instances (as their parameters) do")


class NotebookBar(_Display):
    """`dpl train`'s progress bar, drawn by rich as HTML into one notebook output that each update replaces
    (no widgets needed); it appears once the block has trained for `after` seconds, so short blocks stay quiet."""

    def __init__(self, mode, name, epochs, steps_per_epoch, done, after: float = 1.0):
        from rich.console import Console
        self.mode, self.name, self.epochs, self.running = mode, name, epochs, None
        self.console = Console(file=io.StringIO(), record=True, width=120, color_system="truecolor",
                               force_jupyter=False)  # drawn here, shown by display()
        self.bar, self.task = progress_bar(name, epochs, steps_per_epoch, done, self.console, auto_refresh=False)
        self.start, self.after, self.shown, self.handle = time.perf_counter(), after, 0.0, None

    def advance(self, epoch, loss):
        super().advance(epoch, loss)
        now = time.perf_counter()
        if now - self.start >= self.after and now - self.shown >= 0.1:
            self.show()

    def show(self):
        from IPython.display import HTML, display
        self.shown = time.perf_counter()
        self.console.print(self.bar.get_renderable())
        page = HTML(self.console.export_html(inline_styles=True, code_format='<pre style="margin:0">{code}</pre>'))
        if self.handle is None:
            self.handle = display(page, display_id=True)
        else:
            self.handle.update(page)

    def close(self):
        if self.handle is not None:
            self.show()


# ---- the IPython extension ------------------------------------------------------------------------------

class CellError(Exception):
    """A DPL error in a cell: IPython shows the lines `_render_traceback_` gives (position and caret) in place
    of a Python traceback, and the cell counts as failed."""

    def _render_traceback_(self):
        return str(self).splitlines()


class _Stream:
    """sys.stdout or sys.stderr as it is at each write (IPython swaps them to capture a cell's output)."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        return getattr(getattr(sys, self.name), attr)


def _shown(f):
    """A magic whose DPL errors become CellErrors (messages as the REPL prints them, no Python traceback)."""
    @functools.wraps(f)
    def magic(*args):
        try:
            return f(*args)
        except DplError as e:
            raise CellError(e.format()) from None
        except KeyboardInterrupt:
            raise CellError("interrupted") from None
    return magic


def _png(fig):
    from IPython.display import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image(data=buf.getvalue(), format="png")


class Magics:
    """%%dpl, %dpl, %dpl_graph, %dpl_attention, %dpl_get, %dpl_set on one Session."""

    def __init__(self, shell, session: Session):
        self.shell, self.session = shell, session

    def register(self) -> None:
        for name, kind_ in (("dpl", "line_cell"), ("dpl_graph", "line"), ("dpl_attention", "line"),
                            ("dpl_get", "line"), ("dpl_set", "line")):
            self.shell.register_magic_function(getattr(self, name), kind_, name)

    @_shown
    def dpl(self, line, cell=None):
        """%dpl EXPR_OR_STATEMENT, or a %%dpl cell: run DPL; a train block's loss curve is shown inline."""
        from IPython.display import display
        if cell is None:
            text = line
        elif line.strip():
            raise DplError(f"%%dpl takes no arguments, got `{line.strip()}`")
        else:
            text = "\n" + cell  # line numbers in errors count the %%dpl line, as the notebook does
        before = self.session.report
        try:
            self.session.run(text)
        finally:  # the curve of what trained before an error or an interrupt too
            report = self.session.report
            if report is not before and report.step_losses:
                display(_png(self.session.loss_figure()))

    @_shown
    def dpl_graph(self, line):
        """%dpl_graph EXPR: the graph EXPR records, as SVG (Graphviz) or as the zoomable HTML view without it."""
        from IPython.display import HTML, SVG, display
        from . import viz
        rec = self.session.graph(line)
        if not rec.graph.n:
            print("(nothing recorded: the expression reads no parameter or float variable)")
            return
        d = viz.drawing(rec, max_drawn=viz.MAX_DRAWN)  # a large graph folded, as `dpl graph` draws it
        if d.folded:
            print(d.folded)
        svg = None
        if viz.find_dot() and len(d.items) <= viz.DOT_PAGE_LIMIT:
            try:
                svg = viz.render(viz.to_dot(rec, d), "svg")
            except viz.LayoutTimeout as e:
                print(f"{e.message}; laid out without it")
        if svg is not None:
            display(SVG(svg))
        else:
            page, _ = viz.to_html(rec, d, title=line.strip())
            display(HTML(f'<div><iframe srcdoc="{html.escape(page, quote=True)}" '
                         f'style="width:100%;height:480px;border:0"></iframe></div>'))  # its own page: ids, script

    @_shown
    def dpl_attention(self, line):
        """%dpl_attention [EXPR]: heatmaps of the attention weights of EXPR, or of the last DPL input."""
        from IPython.display import display
        display(_png(self.session.attention_figure(line or None)))

    @_shown
    def dpl_get(self, line):
        """%dpl_get [NAME]: a top-level value as NumPy, a module instance's parameters, or every parameter."""
        return self.session.get(line.strip() or None)

    def dpl_set(self, line):
        """%dpl_set NAME = PYTHON_EXPR: bind NAME in DPL to the value of a Python expression."""
        m = re.fullmatch(r"\s*([\w.]+)\s*=(.+)", line, re.S)
        if not m:
            raise CellError("usage: %dpl_set NAME = python_expr")
        value = self.shell.ev(m.group(2).strip())  # a Python error here is Python's, with its traceback
        _shown(self.session.set)(m.group(1), value)


def load_ipython_extension(ipython) -> None:
    """`%load_ext dpl`: one Session for the notebook, its progress bar inline when the front end is Jupyter."""
    from rich.console import Console
    jupyter = Console().is_jupyter
    session = Session(progress="notebook" if jupyter else "bar", out=_Stream("stdout"), err=_Stream("stderr"))
    session.source = "<cell-{}>"  # errors name the Nth DPL cell or line magic
    Magics(ipython, session).register()
