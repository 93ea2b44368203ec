"""Numerical checks: reverse-mode gradients against central finite differences (`dpl gradcheck`), and the
provenance of the first NaN or Inf (`--detect-nan`)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import backend as B
from . import graph as G
from .errors import DplError
from .graph import Box, raw
from .ops import Op


# ---- gradcheck ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str        # a parameter's name or `arg k (x)`
    shape: tuple
    analytic: np.ndarray
    numeric: np.ndarray
    out_shape: tuple = ()  # the result's shape; not () means the gradient is that of Σ w·y for a random w

    @property
    def error(self) -> float:
        """max |analytic − numeric| / max(1, max |analytic|, max |numeric|): relative, absolute below 1."""
        if self.analytic.size == 0:
            return 0.0
        scale = max(1.0, float(np.abs(self.analytic).max()), float(np.abs(self.numeric).max()))
        return float(np.abs(self.analytic - self.numeric).max()) / scale


def gradcheck(prog, fn_name: str, *args, eps: float = 1e-6) -> list[Row]:
    """Reverse-mode gradients of `fn_name(*args)` w.r.t. every float argument and every parameter it reads,
    next to central differences with step `eps`. A scalar result's gradient is checked as it is; a non-scalar
    result y through the random projection Σ w·y for a fixed w ~ N(0, 1) of y's shape. The random generator is reset before every evaluation, so `normal(...)` inside f is fixed."""
    from .autodiff import backward
    from .interp import kind, real_loss_hint
    from .record import record
    if B.float_dtype != np.float64 or B.xp is not np:
        raise DplError("gradcheck runs in float64 on the CPU (load the program with dtype='float64')")
    interp = prog.interp
    f = prog.function(fn_name)
    args = [np.array(a, dtype=np.float64) if kind(a) == "f" else a for a in prog._args(args)]
    wrt_args = [k for k, a in enumerate(args) if kind(a) == "f"]
    state = interp.rng.bit_generator.state

    def checked(out):
        if kind(out) != "f":
            raise DplError(f"gradcheck needs `{fn_name}` to return a float tensor{real_loss_hint(out)}")
        return out

    def run(call_args):
        interp.rng.bit_generator.state = state
        return checked(interp.call(f, call_args, {}, None))

    interp.rng.bit_generator.state = state
    rec = record(interp, f, args, box=wrt_args)
    trace, boxed, param_boxes, out = rec.trace, rec.args, rec.params, checked(rec.out)
    out_shape = np.shape(raw(out))
    weights = np.random.default_rng(0).standard_normal(out_shape) if out_shape else np.ones(())
    wrt = [boxed[k] for k in wrt_args] + list(param_boxes.values())
    if type(out) is Box and out.trace is trace:
        adjoints = backward(trace, out, wrt, seed=weights)
    else:
        adjoints = [None] * len(wrt)

    def objective() -> float:
        return float(np.sum(weights * raw(run(args))))

    fdef = f.fns.get("call") if hasattr(f, "fns") else getattr(f, "decl", None)
    names = list(getattr(fdef, "params", ()))
    targets = [(f"arg {k} ({names[k]})" if k < len(names) else f"arg {k}", args[k]) for k in wrt_args]
    targets += [(name, interp.params[name]) for name in param_boxes]
    rows = []
    for (name, x), adj in zip(targets, adjoints):
        numeric = np.zeros(x.shape)
        for j in np.ndindex(x.shape):  # perturb in place, restore exactly
            orig = x[j]
            x[j] = orig + eps
            up = objective()
            x[j] = orig - eps
            down = objective()
            x[j] = orig
            numeric[j] = (up - down) / (2 * eps)
        analytic = np.zeros(x.shape) if adj is None else np.asarray(raw(adj), dtype=np.float64)
        rows.append(Row(name, x.shape, analytic, numeric, out_shape))
    return rows


def gradcheck_command(prog, fn_name, args, tol: float) -> int:
    """Print the table of `dpl gradcheck`; 1 when an error is above `tol`."""
    from rich.console import Console
    from rich.table import Table
    rows = gradcheck(prog, fn_name, *args)
    if not rows:
        print(f"gradcheck: `{fn_name}` has no float argument and reads no parameter: nothing to check",
              file=sys.stderr)
        return 0
    out_shape = rows[0].out_shape
    table = Table(title=f"gradcheck {fn_name}: reverse mode vs central differences (float64)",
                  caption=f"`{fn_name}` returns shape {list(out_shape)}, not a scalar: these are the gradients of "
                          f"the random projection sum(w * {fn_name}(...)), w ~ N(0, 1) fixed" if out_shape else
                          f"`{fn_name}` returns a scalar: these are its plain gradients")
    for col in ("input", "shape", "max |grad|", "max |error|", "rel. error", ""):
        table.add_column(col, justify="left" if col in ("input", "shape") else "right")
    bad = 0
    for r in rows:
        ok = r.error <= tol
        bad += not ok
        table.add_row(r.name, str(list(r.shape)), f"{np.abs(r.analytic).max(initial=0):.3e}",
                      f"{np.abs(r.analytic - r.numeric).max(initial=0):.3e}", f"{r.error:.3e}",
                      "[green]ok[/]" if ok else "[bold red]FAIL[/]")
    Console(width=max(100, Console().width)).print(table)
    if bad:
        print(f"gradcheck: {bad} of {len(rows)} gradients differ by more than {tol:g}", file=sys.stderr)
    else:
        print(f"gradcheck: all {len(rows)} gradients agree within {tol:g}", file=sys.stderr)
    return 1 if bad else 0


# ---- --detect-nan ------------------------------------------------------------------------------------------

def _ranges(values) -> str:
    parts = []
    for v in values:
        r = raw(v)
        if getattr(r, "dtype", None) is None or r.dtype.kind not in "fiub":
            continue
        a = np.asarray(B.to_host(r), dtype=np.float64)
        finite = a[np.isfinite(a)]
        span = f"[{finite.min():.6g}, {finite.max():.6g}]" if finite.size else "no finite values" if a.size else \
            "empty"
        bad = a.size - finite.size
        parts.append(f"{span}{f' with {bad} NaN/Inf' if bad else ''} (shape {list(a.shape)})")
    return ", ".join(parts) or "none"


def _check(op, value, inputs, phase: str, adjoint=None) -> None:
    r = raw(value)
    if getattr(r, "dtype", None) is None or r.dtype.kind not in "fc" or bool(B.xp.isfinite(r).all()):
        return
    a = np.asarray(B.to_host(r))
    what = [w for w, n in (("NaN", np.isnan(a).sum()), ("+Inf", np.isposinf(a).sum()),
                           ("-Inf", np.isneginf(a).sum())) if n]
    count = int((~np.isfinite(a)).sum())
    msg = (f"--detect-nan: `{op.name}` produced {' and '.join(what)} ({count} of {a.size} values) in the {phase} "
           f"pass; inputs: {_ranges(inputs)}")
    if adjoint is not None:
        msg += f"; incoming adjoint: {_ranges([adjoint])}"
    raise NonFiniteError(msg, G.current_span)


class NonFiniteError(DplError):
    """--detect-nan found a NaN or Inf (`dpl train` then saves the parameters of the last good step)."""


@contextmanager
def detect_nan(enabled: bool = True):
    """Stop at the first op whose result is NaN or ±Inf, forward or backward, with a DplError at the DPL
    expression that ran it.

    While active, `Op.__call__` (every primitive goes through it, traced or not) and `Op.vjp` (one call per
    node and argument in every backward pass) are swapped for checking versions; the original functions are
    put back on exit. Off, nothing is swapped, so it costs nothing. Ops that a VJP rule runs internally are
    not checked one by one: the adjoint the rule returns is, and is reported at the node being differentiated.
    """
    if not enabled:
        yield
        return
    call, vjp = Op.__call__, Op.vjp
    in_vjp = [0]

    def checked_call(op, *args, **attrs):
        out = call(op, *args, **attrs)
        if not in_vjp[0]:
            _check(op, out, args, "forward")
        return out

    def checked_vjp(op, i, g, ans, args, attrs):
        in_vjp[0] += 1
        try:
            gi = vjp(op, i, g, ans, args, attrs)
        finally:
            in_vjp[0] -= 1
        if gi is not None:
            _check(op, gi, args, "backward", g)
        return gi

    Op.__call__, Op.vjp = checked_call, checked_vjp
    G.checking = True  # a replayed plan would run the ops unchecked
    try:
        yield
    finally:
        Op.__call__, Op.vjp = call, vjp
        G.checking = False
