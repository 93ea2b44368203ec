"""Reverse mode: walk a trace's nodes from n down to l+1, one VJP per node, adjoints in a dict."""
from __future__ import annotations

import numpy as np

from . import backend as B
from . import graph
from .graph import Box, Trace, raw
from .ops import add


class VjpError(Exception):
    """A rule returned the wrong shape: a bug in DPL, reported with the op's name."""


def depends(trace: Trace, wrt) -> set:
    """The nodes whose value depends on one of `wrt` (input nodes): the only ones an adjoint can reach them through."""
    live = {w.node for w in wrt}
    for node in trace.nodes:
        for _, p in node.parents:
            if p in live:
                live.add(node)
                break
    return live


def backward(trace: Trace, out: Box, wrt: list[Box], seed=None, log: list | None = None) -> list:
    """Adjoints ∂out/∂w for each input box in `wrt` (None where out does not depend on it).

    `log`, when given, receives (node, position, adjoint dtype) for every VJP that contributed, in order:
    replay compiles exactly that sequence."""
    adj = {out.node: B.xp.ones_like(raw(out.value)) if seed is None else seed}
    live = depends(trace, wrt)
    saved = graph.current_span
    try:
        for node in reversed(trace.nodes):
            g = adj.pop(node, None)
            if g is None or node.op.vjps is None:
                continue
            graph.set_span(node.span)
            for pos, parent in node.parents:
                if parent not in live:
                    continue
                gi = node.op.vjp(pos, g, node.value, node.args, node.attrs)
                if gi is None:
                    continue
                if log is not None:
                    log.append((node, pos, raw(gi).dtype))
                want = np.shape(raw(parent.value))
                if np.shape(raw(gi)) != want:
                    raise VjpError(f"vjp of `{node.op.name}` for argument {pos} has shape "
                                   f"{list(np.shape(raw(gi)))}, expected {list(want)}")
                adj[parent] = add(adj[parent], gi) if parent in adj else gi
    finally:
        graph.set_span(saved)
    return [adj.get(w.node) for w in wrt]


def as_float(x):
    """grad treats integer and boolean arguments as floats of the run's dtype (complex ones stay complex)."""
    r = raw(x)
    if getattr(r, "dtype", None) is not None and r.dtype.kind in "fc":
        return x
    from .ops import astype
    return astype(x, dtype=B.float_dtype) if type(x) is Box else B.xp.asarray(r, dtype=B.float_dtype)


def zeros_like(x):
    r = raw(x)
    complex_ = getattr(r, "dtype", None) is not None and r.dtype.kind == "c"
    return B.xp.zeros(np.shape(r), dtype=B.complex_dtype if complex_ else B.float_dtype)
