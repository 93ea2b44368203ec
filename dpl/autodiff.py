"""Reverse mode: walk a trace's nodes from n down to l+1, one VJP per node, adjoints in a dict."""
from __future__ import annotations

import numpy as np

from . import backend as B
from . import graph
from .graph import Box, Trace, raw
from .ops import add


class VjpError(Exception):
    """A rule returned the wrong shape: a bug in DPL, reported with the op's name."""


def backward(trace: Trace, out: Box, wrt: list[Box], seed=None) -> list:
    """Adjoints ∂out/∂w for each input box in `wrt` (None where out does not depend on it)."""
    adj = {out.node: B.xp.ones_like(raw(out.value)) if seed is None else seed}
    saved = graph.current_span
    try:
        for node in reversed(trace.nodes):
            g = adj.pop(node, None)
            if g is None or node.op.vjps is None:
                continue
            graph.set_span(node.span)
            for pos, parent in node.parents:
                gi = node.op.vjp(pos, g, node.value, node.args, node.attrs)
                if gi is None:
                    continue
                want = np.shape(raw(parent.value))
                if np.shape(raw(gi)) != want:
                    raise VjpError(f"vjp of `{node.op.name}` for argument {pos} has shape "
                                   f"{list(np.shape(raw(gi)))}, expected {list(want)}")
                adj[parent] = add(adj[parent], gi) if parent in adj else gi
    finally:
        graph.set_span(saved)
    return [adj.get(w.node) for w in wrt]


def as_float(x):
    """grad treats integer and boolean arguments as floats of the run's dtype."""
    r = raw(x)
    if getattr(r, "dtype", None) is not None and r.dtype.kind == "f":
        return x
    from .ops import astype
    return astype(x, dtype=B.float_dtype) if type(x) is Box else B.xp.asarray(r, dtype=B.float_dtype)


def zeros_like(x):
    return B.xp.zeros(np.shape(raw(x)), dtype=B.float_dtype)
