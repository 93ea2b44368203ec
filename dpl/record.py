"""The one recording entry point: new trace → box the inputs and parameters → call → check → backward.

Everything that records a call goes through `record` (the Python API, `grad`, training steps,
gradcheck, the REPL, `dpl graph`); everything that also wants gradients goes through `gradients`,
which is where replay hooks in: a call whose recording has been seen twice with the same structure
is compiled into a `replay.Plan` and later calls with inputs of the same shapes run the plan instead
of the interpreter (docs/DESIGN.md, "Replay").
"""
from __future__ import annotations

from contextlib import nullcontext

from . import graph, replay
from .autodiff import as_float, backward
from .graph import Box, Trace
from .interp import Frame, is_tensor


class Recording:
    """One recorded call: its trace, result, arguments (boxed where traced) and the parameters it read."""

    __slots__ = ("trace", "out", "args", "params", "reads", "steps")

    def __init__(self, trace, out, args, params, reads, steps):
        self.trace, self.out, self.args, self.params, self.reads, self.steps = trace, out, args, params, reads, steps


def record(interp, f, args, kwargs=None, span=None, *, box=None, names=None, params=True) -> Recording:
    """Call f(*args) in a new trace. Arguments at positions `box` (default: every tensor) and, with
    `params`, every parameter the call reads are its inputs; they are numbered in that order."""
    trace = Trace()
    box = [k for k, a in enumerate(args) if is_tensor(a)] if box is None else box
    boxed = list(args)
    for k in box:
        boxed[k] = trace.input(boxed[k], names[k] if names and k < len(names) else f"arg{k}")
    outermost = interp.reads is None and not graph.recording
    reads = {} if outermost else interp.reads
    steps = interp.steps
    graph.recording.append(trace)
    saved_reads, interp.reads = interp.reads, reads
    if outermost:
        interp.reads_before = next(Frame._seq)
    try:
        with interp.tracing_params(trace) if params else nullcontext({}) as pboxes:
            out = interp.call(f, boxed, kwargs or {}, span)
    finally:
        graph.recording.pop()
        interp.reads = saved_reads
    return Recording(trace, out, boxed, dict(pboxes), reads, interp.steps - steps)


def gradients(interp, f, args, span, *, wrt_args=(), wrt_params=False, check=None, kwargs=None):
    """f(*args) and its adjoints w.r.t. the arguments `wrt_args` (floats) and, with `wrt_params`, every
    parameter it reads: (value, [adjoint per wrt arg], {param: adjoint}); None where there is no path.
    `check(out)` refuses a result that cannot be differentiated (it raises).

    Replayed from a plan when one fits; recorded otherwise (and inside another recording, whose
    trace must see every operation)."""
    args = [as_float(a) if k in wrt_args else a for k, a in enumerate(args)]
    replayable = (interp.replay and replay.enabled and not graph.recording and interp.param_trace is None
                  and not graph.checking and not kwargs and not any(type(a) is Box for a in args))
    if not replayable:
        return differentiate(interp, f, args, span, wrt_args, wrt_params, check, kwargs, log=False)[0]
    key = (replay.function_key(f), tuple(wrt_args), wrt_params, replay.signature(args), interp.training)
    entry = interp.plans.get(key)
    if entry is None:
        if len(interp.plans) >= replay.MAX_SIGNATURES:  # e.g. a new closure every call: forget the oldest
            del interp.plans[next(iter(interp.plans))]
        entry = interp.plans[key] = replay.Entry()
    for plan in entry.plans:
        try:
            return plan.run(interp, args)
        except replay.Miss:
            continue
    result, rec, wrt, log = differentiate(interp, f, args, span, wrt_args, wrt_params, check, kwargs,
                                          log=not entry.gave_up)
    if log is not None:
        entry.consider(rec, wrt, log, wrt_params)
    return result


def differentiate(interp, f, args, span, wrt_args, wrt_params, check, kwargs=None, log=True):
    """Record f(*args) and run its backward pass: (result as `gradients` gives it, recording, wrt boxes, the
    backward's log of VJP calls for a plan, or None). With `log`, every tensor argument and every
    parameter read is an input, as a plan needs; otherwise only what is differentiated is."""
    box = [k for k, a in enumerate(args) if is_tensor(a)] if log else list(wrt_args)
    # Parameters are inputs when they are differentiated, or when a plan must read them afresh; inside
    # another recording they stay that recording's inputs, so its gradients still flow through them.
    rec = record(interp, f, args, kwargs, span, box=box, params=wrt_params or interp.param_trace is None)
    out = rec.out
    if check is not None:
        check(out)
    trace = rec.trace
    wrt = [rec.args[k] for k in wrt_args] + (list(rec.params.values()) if wrt_params else [])
    log = [] if log else None
    if type(out) is Box and out.trace is trace:
        adj = backward(trace, out, wrt, log=log)
        value = out.value
    else:
        adj, value = [None] * len(wrt), out
    n = len(wrt_args)
    return (value, adj[:n], dict(zip(rec.params, adj[n:])) if wrt_params else {}), rec, wrt, log
