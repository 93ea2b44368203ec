"""Replay: a recorded call compiled into a plan that runs its kernels without the interpreter.

A plan is straight-line Python generated from one recording: the forward kernels of the nodes the
result and the guards need, each guard checked right after its node, then exactly the VJP calls the
recording's backward pass made, in the same order, adjoints summed as it summed them, and every value
deleted after its last use. The same functions run on the same values in the same order, so a replay
gives bit for bit what a fresh recording at those inputs gives; a guard that comes out differently
raises Miss and the caller records again.

A recording becomes a plan only after a second recording of the same call signature matched it node
for node, constants included: a constant that differs between two inputs was taken from a value (a
raw() leak) and would be wrong in a replay, so such a signature is never replayed.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import backend as B
from .graph import Box


enabled = True  # `--no-replay` turns it off for a run
MAX_PLANS = 8  # plans kept per call signature (one per path through its hard decisions)
MAX_MISSES = 4  # recordings that could not become a plan before replay gives up on a signature
MAX_SIGNATURES = 64  # call signatures with plans (or a recording waiting to become one) per interpreter


class Miss(Exception):
    """The plan does not apply to these inputs (a guard, a parameter shape, a rebound name): record."""


def function_key(f):
    """What identifies a callee across calls (a module's functions are bound afresh on every lookup)."""
    from .interp import Function
    if type(f) is Function:  # a closure made afresh is another function: its variables may differ
        return ("fn", _Same(f.decl), _Same(f.instance), _Same(f.env))
    return _Same(f)


def signature(args) -> tuple:
    """Shapes and dtypes of the tensor arguments; other arguments by identity."""
    out = []
    for a in args:
        dt = getattr(a, "dtype", None)
        out.append((a.shape, dt) if dt is not None else _Same(a))
    return tuple(out)


class _Same:
    """A key that matches only the very same object (which it keeps alive, so its id is not reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return type(other) is _Same and other.obj is self.obj


class Entry:
    """The plans of one call signature, and the last recording waiting for a second one to confirm it."""

    def __init__(self):
        self.plans: list[Plan] = []
        self.candidate = None
        self.misses = 0
        self.gave_up = False
        self.why = None  # the last reason a recording could not become a plan

    def consider(self, rec, wrt, log, wrt_params) -> None:
        if rec.trace.tainted:
            self._miss(f"it has {rec.trace.tainted}")
            return
        prev, self.candidate = self.candidate, Skeleton(rec)
        if prev is None:
            return
        why = prev.mismatch(self.candidate)
        if why is None:
            self.plans.insert(0, Plan(rec, wrt, log, wrt_params))
            del self.plans[MAX_PLANS:]
            self.candidate = None
        elif why.startswith("constant"):  # taken from a value: never replayable
            self.why, self.gave_up, self.candidate = why, True, None
        elif not self.plans:
            self._miss(why)

    def _miss(self, why):
        self.why = why
        self.misses += 1
        if self.misses >= MAX_MISSES:
            self.gave_up, self.candidate = True, None


def _same(a, b) -> bool:
    """Equal as constants of a recording: arrays by dtype, shape and contents; containers item by item."""
    if a is b:
        return True
    ta = type(a)
    if ta is not type(b):
        return False
    if ta in (tuple, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if ta is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.kind in "fc":
            return bool(B.xp.array_equal(a, b, equal_nan=True))
        return bool(B.xp.array_equal(a, b))
    if ta is slice:
        return a == b
    if ta is float:
        return a == b or (a != a and b != b)
    try:
        return bool(a == b)
    except Exception:  # objects without a usable ==: only identity counts
        return False


class Skeleton:
    """What two recordings of a call must share for a plan: inputs, names read, and per node its op, edges,
    attributes and constant arguments; values are left out (a recording waiting for its twin holds only this)."""

    def __init__(self, rec):
        trace = rec.trace
        self.inputs = [n.name for n in trace.inputs]
        self.reads = rec.reads
        index = {n: i for i, n in enumerate(trace.inputs + trace.nodes)}
        self.nodes = []
        for n in trace.nodes:
            parents = tuple((p, index[q]) for p, q in n.parents)
            at = {p for p, _ in n.parents}
            self.nodes.append((n.op, parents, n.attrs, [(k, a) for k, a in enumerate(n.args) if k not in at]))
        self.guards = [(index[g], at, taken) for g, taken, _, at in trace.guards]

    def mismatch(self, other) -> str | None:
        """Why the two recordings differ (None: the same nodes, edges, attributes, constants and guards)."""
        if (len(self.nodes), len(self.guards), self.inputs) != (len(other.nodes), len(other.guards), other.inputs):
            return "a different path"
        a, b = self.reads, other.reads
        if a.keys() != b.keys() or any(a[k][2] is not b[k][2] for k in a):
            return "a name it reads bound to another value"
        for (op, pa, aa, ca), (op2, pb, ab, cb) in zip(self.nodes, other.nodes):
            if op is not op2 or pa != pb:
                return "a different path"
            if not _same(aa, ab):
                return f"constant attributes of `{op.name}` that change with the inputs"
            for (k, x), (_, y) in zip(ca, cb):
                if not _same(x, y):
                    return f"constant argument {k} of `{op.name}` that changes with the inputs"
        for (i, p, x), (j, q, y) in zip(self.guards, other.guards):
            if i != j or p != q or not _same(x, y):
                return "a different path"
        return None


class Plan:
    """One recording compiled: `run` feeds new argument and parameter values through its kernels."""

    def __init__(self, rec, wrt, log, wrt_params):
        B.keep_freed_memory()
        trace = rec.trace
        self.steps = rec.steps
        self.reads = list(rec.reads.values())
        arg_of = {b.node: k for k, b in enumerate(rec.args) if type(b) is Box and b.trace is trace}
        param_of = {b.node: name for name, b in rec.params.items()}
        self.sources = [("arg", arg_of[n]) if n in arg_of else ("param", param_of[n]) for n in trace.inputs]
        self.param_checks = [(name, np.shape(n.value), n.value.dtype) for n in trace.inputs
                             if (name := param_of.get(n)) is not None]
        self.param_names = list(rec.params) if wrt_params else []
        self.n_wrt_args = len(wrt) - len(self.param_names)
        out = rec.out
        self.fn, self.source = _compile(trace, out.node if type(out) is Box and out.trace is trace else None,
                                        out, [w.node for w in wrt], log)

    def run(self, interp, args):
        params = interp.params
        for name, shp, dt in self.param_checks:
            p = params[name]
            if p.shape != shp or p.dtype != dt:
                raise Miss
        for scope, name, v in self.reads:
            if scope.get(name) is not v:
                raise Miss
        if interp.steps + self.steps > interp.max_steps:
            raise Miss  # recording again reports the limit where it is reached
        ins = [args[k] if kind == "arg" else params[k] for kind, k in self.sources]
        try:
            value, adj = self.fn(*ins)
        except Miss:
            raise
        except Exception:  # e.g. a guard on an index now out of range: recording reports it properly
            raise Miss from None
        interp.steps += self.steps
        n = self.n_wrt_args
        return value, list(adj[:n]), dict(zip(self.param_names, adj[n:]))


# Kernels written inline instead of calling the op: exactly the numpy calls that the op's forward
# (dpl/ops.py) makes, so the values are the same bit for bit; shapes are known when the plan is built.
_FWD = {"add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
        "exp": "EXP({0})", "log": "LOG({0})", "sin": "SIN({0})", "cos": "COS({0})", "tanh": "TANH({0})",
        "sqrt": "SQRT({0})", "matmul": "MATMUL({0}, {1})", "abs": "ABS({0})", "relu": "MAXIMUM({0}, 0)"}


# The inline VJPs that always make a new array (a view, `g` itself or a rule's result may be shared).
_FRESH = ("(", "SUM_TO(", "SCATTER(", "MATMUL(")


def _vjp_inline(node, pos, g, ans, A, put):
    """The VJP rule of ops.py for (node, pos) as one expression, or None to call the rule itself.
    Mirrors the rules exactly: the same ufuncs on the same operands, unbroadcast where it sums."""
    name = node.op.name
    sa = np.shape(node.value)

    def sx(k):
        return np.shape(node.args[k])

    def unbroadcast(expr, k):  # every expression below has the shape of ans
        return expr if sa == sx(k) else f"SUM_TO({expr}, shape={put(sx(k))})"

    if name == "add":
        return unbroadcast(g, pos)
    if name == "sub":
        return unbroadcast(g if pos == 0 else f"(-{g})", pos)
    if name == "mul":
        return unbroadcast(f"({g} * {A[1 - pos]})", pos)
    if name == "div":
        return unbroadcast(f"({g} / {A[1]})" if pos == 0 else f"(-({g} * ({ans} / {A[1]})))", pos)
    one = {"neg": f"(-{g})", "exp": f"({g} * {ans})", "log": f"({g} / {A[0]})", "sin": f"({g} * COS({A[0]}))",
           "cos": f"(-({g} * SIN({A[0]})))", "tanh": f"({g} * (1.0 - {ans} * {ans}))",
           "sqrt": f"({g} / (2.0 * {ans}))", "abs": f"({g} * SIGN({A[0]}))", "relu": f"({g} * GREATER({A[0]}, 0))",
           "sigmoid": f"({g} * ({ans} * (1.0 - {ans})))", "softplus": f"({g} * SIGMOID({A[0]}))"}.get(name)
    if one is not None:
        return one
    if name == "pow" and pos == 0 and A[1].startswith("k") and not np.any(np.equal(node.args[1], 0)):
        # _pow_dx with a constant exponent without zeros: its plain formula, y - 1 computed once
        return unbroadcast(f"({g} * ({A[1]} * POWER({A[0]}, {put(node.args[1] - 1)})))", 0)
    if name == "matmul" and len(sx(0)) > 1 and len(sx(1)) > 1:  # _matmul_vjp without the 1-d cases
        a, b = A
        if pos == 0:
            shp = np.broadcast_shapes(sa[:-2], sx(1)[:-2]) + (sa[-2], sx(1)[-2])
            expr = f"MATMUL({g}, SWAPAXES({b}, -1, -2))"
        else:
            shp = np.broadcast_shapes(sx(0)[:-2], sa[:-2]) + (sx(0)[-1], sa[-1])
            expr = f"MATMUL(SWAPAXES({a}, -1, -2), {g})"
        return expr if shp == sx(pos) else f"SUM_TO({expr}, shape={put(sx(pos))})"
    if name == "index":
        return f"SCATTER({g}, key={put(node.attrs['key'])}, shape={put(sx(0))})"
    if name == "sum":
        from .ops import _keep_shape
        axis, keepdims = node.attrs.get("axis"), node.attrs.get("keepdims", False)
        if not keepdims:
            g = f"RESHAPE({g}, {put(_keep_shape(sx(0), axis))})"
        return f"BROADCAST_TO({g}, {put(sx(0))})"
    if name == "stack":
        ax = node.attrs["axis"] % len(sa)
        return f"{g}[{put((slice(None),) * ax + (pos,))}]"
    return None


def _complex(node) -> bool:
    """Whether a node's value or an argument is complex (its adjoints may need ops.real_adjoint)."""
    return any(getattr(v, "dtype", None) is not None and v.dtype.kind == "c" for v in (node.value, *node.args))


def _namespace():
    from . import ops
    xp = B.xp
    return {"Miss": Miss, "ONES": xp.ones_like, "array_equal": np.array_equal, "to_host": B.to_host,
            "EXP": xp.exp, "LOG": xp.log, "SIN": xp.sin, "COS": xp.cos, "TANH": xp.tanh, "SQRT": xp.sqrt,
            "ABS": xp.abs, "MAXIMUM": xp.maximum, "MATMUL": xp.matmul, "POWER": xp.power, "SIGN": xp.sign,
            "GREATER": xp.greater, "SIGMOID": ops.sigmoid.fwd, "SWAPAXES": xp.swapaxes, "RESHAPE": xp.reshape,
            "BROADCAST_TO": xp.broadcast_to,
            "SUM_TO": ops.sum_to.fwd, "SCATTER": ops.scatter_add.fwd, "REAL_ADJOINT": ops.real_adjoint}


def _compile(trace, out_node, out_value, wrt_nodes, log):
    """Generate and compile the plan's Python source; returns (function, source)."""
    ns = _namespace()
    const_names = (f"k{i}" for i in itertools.count())

    def put(value) -> str:
        name = next(const_names)
        ns[name] = value
        return name

    slot = {}
    for i, n in enumerate(trace.inputs):
        slot[n] = i
    for i, n in enumerate(trace.nodes, start=len(trace.inputs)):
        slot[n] = i
    guards_at: dict = {}
    for k, (node, taken, _, _) in enumerate(trace.guards):
        guards_at.setdefault(node, []).append((k, taken))
    # the nodes the result, the guards and the backward pass need
    need = set()
    stack = [n for n in guards_at] + ([out_node] if out_node is not None else [])
    while stack:
        n = stack.pop()
        if n in need or n.op is None:
            continue
        need.add(n)
        stack.extend(p for _, p in n.parents)

    stmts: list[tuple[str, set, set]] = []  # (line, names defined, names used)
    operands = {}

    def args_of(node):
        """The node's arguments as names (slots or constants), its attributes as `key=name`, the slots used."""
        if node not in operands:
            parents = dict(node.parents)
            names, used = [], set()
            for k, a in enumerate(node.args):
                if k in parents:
                    names.append(f"v{slot[parents[k]]}")
                    used.add(names[-1])
                else:
                    names.append(put(a))
            attrs = [f"{key}={put(a)}" for key, a in node.attrs.items()]
            operands[node] = names, attrs, used
        return operands[node]

    for node in trace.inputs + trace.nodes:
        j = slot[node]
        if node.op is not None:
            if node not in need:
                continue
            names, attrs, used = args_of(node)
            inline = _FWD.get(node.op.name)
            if inline is not None and not attrs:
                text = inline.format(*names)
            elif node.op.name == "index":
                text = f"{names[0]}[{put(node.attrs['key'])}]"
            else:
                ns[f"F{j}"] = node.op.fwd
                text = f"F{j}({', '.join(names + attrs)})"
            stmts.append((f"v{j} = {text}", {f"v{j}"}, used))
        for k, taken in guards_at.get(node, ()):
            if type(taken) is bool:
                stmts.append((f"if {'not ' if taken else ''}v{j}: raise Miss", set(), {f"v{j}"}))
            elif type(taken) is int:
                stmts.append((f"if int(v{j}) != {taken}: raise Miss", set(), {f"v{j}"}))
            else:
                stmts.append((f"if not array_equal(to_host(v{j}), {put(taken)}): raise Miss", set(), {f"v{j}"}))

    if out_node is not None:
        o = slot[out_node]
        stmts.append((f"g{o} = ONES(v{o})", {f"g{o}"}, {f"v{o}"}))
        have = {out_node}
        dtypes, owned = {}, {f"g{o}"}  # adjoints held by nothing else: `+=` on them is `q = q + t` in place
        for node, pos, dtype in log:
            j = slot[node]
            parent = node.parents[[p for p, _ in node.parents].index(pos)][1]
            names, attrs, used = args_of(node)
            mixed = _complex(node)  # its VJPs go through ops.real_adjoint, as in the backward pass
            call = None if mixed else _vjp_inline(node, pos, f"g{j}", f"v{j}", names, put)
            if call is None:
                rule = node.op.vjps(pos) if callable(node.op.vjps) else node.op.vjps[pos]
                ns[f"R{j}_{pos}"] = rule
                call = f"R{j}_{pos}(g{j}, v{j}, {', '.join(names + attrs)})"
                if mixed:
                    call = f"REAL_ADJOINT({call}, {names[pos]})"
            used = used | {f"g{j}", f"v{j}"}
            q = f"g{slot[parent]}"
            if parent in have:
                if q in owned and np.result_type(dtypes[q], dtype) == dtypes[q]:
                    stmts.append((f"{q} += {call}", {q}, used | {q}))
                else:
                    stmts.append((f"{q} = {q} + {call}", {q}, used | {q}))
                    owned.add(q)
                    dtypes[q] = np.result_type(dtypes[q], dtype)
            else:
                have.add(parent)
                dtypes[q] = dtype
                if call.startswith(_FRESH):
                    owned.add(q)
                stmts.append((f"{q} = {call}", {q}, used))
        results = [f"g{slot[w]}" if w in have else "None" for w in wrt_nodes]
        value = f"v{o}"
    else:
        results = ["None"] * len(wrt_nodes)
        value = put(out_value)
    sources = _sources(stmts, len(trace.inputs), value, results)
    for text in sources:  # one at a time: the compiler holds a whole module's syntax tree at once
        exec(compile(text, "<dpl plan>", "exec"), ns)
    return ns["plan"], "\n".join(sources)


CHUNK = 1000  # statements per compiled function: CPython's compiler needs about 4 KB per statement at once


def _sources(stmts, n_inputs, value, results) -> list[str]:
    """The plan's Python source: the statements with each name deleted after its last use. A long plan is
    cut into functions of CHUNK statements that pass the values still needed on through a dict."""
    keep = {value} | set(results)
    last: dict[str, int] = {}
    for i, (_, defs, used) in enumerate(stmts):
        for name in used | defs:
            last[name] = i
    dies: dict[int, list] = {}
    for name, i in last.items():
        if name not in keep:
            dies.setdefault(i, []).append(name)
    inputs = [f"v{i}" for i in range(n_inputs)]

    def ret(fetch=str):
        return f"    return {fetch(value)}, ({', '.join(map(fetch, results))}{',' if len(results) == 1 else ''})"

    def body(lo, hi, local, lines):
        for i in range(lo, hi):
            lines.append("    " + stmts[i][0])
            local |= stmts[i][1]
            if i in dies:
                lines.append(f"    del {', '.join(sorted(dies[i]))}")
                local -= set(dies[i])

    if len(stmts) <= CHUNK:
        lines = [f"def plan({', '.join(inputs)}):"]
        body(0, len(stmts), set(), lines)
        return ["\n".join(lines + [ret()]) + "\n"]
    chunks = []
    for c, lo in enumerate(range(0, len(stmts), CHUNK)):
        hi = min(lo + CHUNK, len(stmts))
        need, seen = set(), set()
        for _, defs, used in stmts[lo:hi]:  # read before this chunk assigns them: handed over in V
            need |= used - seen
            seen |= used | defs
        lines = [f"def chunk{c}(V):"] + [f"    {n} = V.pop({n!r})" for n in sorted(need)]
        local = set(need)
        body(lo, hi, local, lines)
        lines += [f"    V[{n!r}] = {n}" for n in sorted(local) if last[n] >= hi or n in keep]
        chunks.append("\n".join(lines) + "\n")

    def fetch(n):
        return f"V[{n!r}]" if n.startswith(("v", "g")) else n
    entry = [f"def plan({', '.join(inputs)}):", f"    V = {{{', '.join(f'{n!r}: {n}' for n in inputs)}}}"]
    entry += [f"    chunk{c}(V)" for c in range(len(chunks))]
    entry.append(ret(fetch))
    return chunks + ["\n".join(entry) + "\n"]
