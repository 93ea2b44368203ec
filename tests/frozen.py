"""Replay's rule as a test helper: a recording holds no constant computed from its inputs.

Record one computation at two inputs (same shapes, same hard decisions) and compare the two graphs node by
node: every argument that is not a parent (not an edge of the graph) and every attribute must be identical.
One that differs was computed from an input outside the graph (a `raw()` value baked in), so a plan
recorded at the first input and replayed at the second would reuse a stale value.
"""
from __future__ import annotations

import numpy as np

from dpl.graph import Graph, raw


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "dtype") or hasattr(b, "dtype"):
        a, b = raw(a), raw(b)
        return (np.shape(a) == np.shape(b) and getattr(a, "dtype", None) == getattr(b, "dtype", None)
                and np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind in "fc"))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def structure(graph: Graph) -> list:
    """What must agree for two recordings to be comparable: each node's op and the positions of its parents."""
    return [(n.op.name if n.op else "input", tuple(p for p, _ in n.parents),
             tuple(p.id for _, p in n.parents)) for n in graph.nodes]


def frozen_constants(record, inputs_a, inputs_b) -> list[str]:
    """The constants of `record(inputs)` (a Graph) that differ between the two inputs: each one is a bug."""
    ga, gb = record(inputs_a), record(inputs_b)
    sa, sb = structure(ga), structure(gb)
    if sa != sb:
        first = next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))
        raise AssertionError(f"the recordings differ in structure from node %{first + 1} on (choose inputs that "
                             f"take the same decisions): {sa[first:first + 1]} vs {sb[first:first + 1]}")
    found = []
    for na, nb in zip(ga.nodes, gb.nodes):
        if na.op is None:
            continue
        edges = {p for p, _ in na.parents}
        for i, (x, y) in enumerate(zip(na.args, nb.args)):
            if i not in edges and not _same(x, y):
                found.append(f"%{na.id} = {na.op.name}: argument {i} is a constant that depends on the inputs")
        for k in na.attrs:
            if not _same(na.attrs[k], nb.attrs[k]):
                found.append(f"%{na.id} = {na.op.name}: attribute `{k}` depends on the inputs")
    return found
