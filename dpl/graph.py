"""The recorded DAG ⟨n, l, E, f, v, α⟩: tracing boxes, the recorder, and the finished Graph.

A value being traced is a Box holding (value, trace, node). Applying an op to
boxes of the innermost trace records one Node there and runs the op on the
unboxed values, which may themselves be boxes of an outer trace: so the
backward pass of an inner trace, written in the same ops, is recorded by the
outer one and gradients of gradients come out exact (as in HIPS autograd).
"""
from __future__ import annotations

import itertools

import numpy as np

from . import limits

_levels = itertools.count()
current_span = None  # the interpreter sets this to the expression being evaluated


class Scope:
    """Where nodes are being recorded: a DPL call, a loop iteration or a soft-while step (tools group by it)."""

    __slots__ = ("kind", "name", "span", "parent", "seq")
    _seq = itertools.count(1)

    def __init__(self, kind, name, span, parent):
        self.kind, self.name, self.span, self.parent = kind, name, span, parent
        self.seq = next(Scope._seq)


current_scope: Scope | None = None  # the interpreter sets this on entering a call or an iteration


def enter_scope(kind, name, span) -> Scope | None:
    """Open a scope inside the current one; returns the one to restore."""
    global current_scope
    outer = current_scope
    current_scope = Scope(kind, name, span, outer)
    return outer


def leave_scope(outer) -> None:
    global current_scope
    current_scope = outer


def set_span(span):
    global current_span
    current_span = span


class Node:
    """One vertex: op (None for an input), its α (args, unboxed), v (value), parents as (position, Node)."""

    __slots__ = ("op", "args", "attrs", "parents", "value", "span", "name", "id", "scope")

    def __init__(self, op, args, attrs, parents, value, span, name=None):
        self.op, self.args, self.attrs, self.parents = op, args, attrs, parents
        self.value, self.span, self.name, self.id = value, span, name, None
        self.scope = current_scope


class Box:
    __slots__ = ("value", "trace", "node")

    def __init__(self, value, trace, node):
        self.value, self.trace, self.node = value, trace, node

    @property
    def shape(self):
        return raw(self).shape

    @property
    def dtype(self):
        return raw(self).dtype

    @property
    def ndim(self):
        return raw(self).ndim


class Trace:
    """A recording in progress: inputs first (however late they are read), then op nodes in execution order."""

    def __init__(self):
        self.level = next(_levels)
        self.inputs: list[Node] = []
        self.nodes: list[Node] = []
        # Control-flow decisions taken from traced values, as (node, value taken, span, position in
        # `nodes`). Replay re-runs the recording for new inputs of the same shapes while every guard
        # comes out the same; a failed guard means "record again".
        self.guards: list[tuple[Node, object, object, int]] = []
        self.tainted: str | None = None  # why this recording cannot be replayed (a random draw, a print...)

    def input(self, value, name=None) -> Box:
        node = Node(None, (), {}, (), value, current_span, name)
        self.inputs.append(node)
        return Box(value, self, node)

    def guard(self, box: Box, taken) -> None:
        self.guards.append((box.node, taken, current_span, len(self.nodes)))


recording: list[Trace] = []  # traces being recorded by dpl.record, innermost last
checking = False  # --detect-nan is checking every op: nothing is replayed


def guard(v, taken):
    """Keep a hard decision taken from v as a guard of every trace v belongs to (a branch inside `grad`
    is a decision of the outer recording too); returns `taken`."""
    while type(v) is Box:
        v.trace.guard(v, taken)
        v = v.value
    return taken


def taint(reason: str) -> None:
    """Something that a replay would not repeat happened (a random draw, a print, a file read): the
    recordings in progress compute from more than their inputs and must not be replayed."""
    for t in recording:
        if t.tainted is None:
            t.tainted = reason


def raw(v):
    """The plain array under any number of boxes."""
    while type(v) is Box:
        v = v.value
    return v


def apply(op, *args, **attrs):
    """Run `op` on args; record a node in the innermost trace that any arg belongs to."""
    trace = None
    for a in args:
        if type(a) is Box and (trace is None or a.trace.level > trace.level):
            trace = a.trace
    if trace is None:
        return op.fwd(*args, **attrs)
    vals = tuple(a.value if type(a) is Box and a.trace is trace else a for a in args)
    out = apply(op, *vals, **attrs)
    parents = tuple((i, a.node) for i, a in enumerate(args) if type(a) is Box and a.trace is trace)
    node = Node(op, vals, attrs, parents, out, current_span)
    trace.nodes.append(node)
    if len(trace.nodes) > limits.max_nodes:
        raise limits.too_many_nodes(current_span)
    return Box(out, trace, node)


class Graph:
    """A finished recording, numbered as in LANGUAGE.md §1: inputs 1..l, then the op nodes, every edge i < j."""

    def __init__(self, trace: Trace, outputs=()):
        self.nodes = trace.inputs + trace.nodes
        for i, node in enumerate(self.nodes, start=1):
            node.id = i
        self.n, self.l = len(self.nodes), len(trace.inputs)
        self.E = list(dict.fromkeys((p.id, node.id) for node in trace.nodes for _, p in node.parents))
        self.guards = trace.guards
        self.outputs = [o.node.id for o in outputs if type(o) is Box and o.trace is trace]

    def op(self, i: int) -> str:
        node = self.nodes[i - 1]
        return "input" if node.op is None else node.op.name

    def value(self, i: int):
        return raw(self.nodes[i - 1].value)

    def inputs_of(self, i: int) -> list[int]:
        return [p.id for _, p in self.nodes[i - 1].parents]

    def pretty(self) -> str:
        """One line per node: `id = op(inputs) shape @ line`; stable enough for golden files."""
        out = []
        for node in self.nodes:
            v = raw(node.value)
            shape = list(np.shape(v))
            where = f" @ {node.span.line}:{node.span.col}" if node.span else ""
            if node.op is None:
                out.append(f"%{node.id} = input {node.name or ''} {shape}{where}".replace("  ", " "))
            else:
                ins = ", ".join(f"%{p.id}" for _, p in node.parents)
                out.append(f"%{node.id} = {node.op.name}({ins}) {shape}{where}")
        return "\n".join(out)

    def to_networkx(self):
        import networkx as nx

        g = nx.DiGraph(n=self.n, l=self.l)
        for node in self.nodes:
            v = raw(node.value)
            g.add_node(node.id, op="input" if node.op is None else node.op.name,
                       shape=list(np.shape(v)), name=node.name or "",
                       line=node.span.line if node.span else 0, file=node.span.file if node.span else "")
        g.add_edges_from(self.E)
        return g
