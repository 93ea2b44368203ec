"""Runtime limits (issue 5): no user program may crash DPL with a Python traceback or hang it.

* `max_steps`: steps in total per interpreter: hard-loop iterations (`while`, `for`, `soft while`,
  `odeint` steps, fixed or dopri5) and DPL function calls (so recursion without loops is bounded too);
  a training step, a REPL input and a call from Python start their own count; `dpl run|train --max-steps N`.
* `max_nodes`: nodes of one recorded graph (a long loop inside `grad`, deeply nested `grad`s, a long
  `odeint` in a loss); `dpl run|train --max-nodes N`.
* `max_elements`: elements of one tensor a program may ask for (`zeros`, `ones`, `eye`, `range`,
  `arange`, `linspace`, `uniform`, `normal`, `one_hot`, `reshape`, `dense`, `adjacency`, parameters,
  tensor literals, broadcasting in operators and elementwise builtins, `@`, gathers `x[idx]`, attention
  scores, memory writes, `concat`, `stack`, `odeint` over a `ts` grid, arrays in .npy/.npz files read by
  `load` or `--params`, whose headers are checked before any data is read); checked before anything is
  allocated; `dpl run|train --max-elements N`. A MemoryError that still happens becomes a DplError.
* `MAX_NESTING`: how deeply expressions and blocks may nest (a syntax tree this deep still fits in
  Python's stack); checked by the parser.
* `deep_stack()`: Python's recursion limit raised to `RECURSION_LIMIT` while DPL parses, checks or
  runs, so that DPL's own limits (`max_depth` calls, `MAX_NESTING`) are met before Python's.

The three runtime limits are process-wide settings like the backend's dtype (`configure`); the
interpreter reads `max_steps` when it is created.
"""
from __future__ import annotations

import contextlib
import math
import sys

import numpy as np

from .errors import DplError

DEFAULT_MAX_STEPS = 10_000_000
DEFAULT_MAX_ELEMENTS = 2 ** 31
DEFAULT_MAX_NODES = 5_000_000  # some 2 GB of scalar nodes
MAX_NESTING = 1000
MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32  # NumPy's most axes of an array
RECURSION_LIMIT = 20_000  # what the CLI always set; lark's transformer overflows an 8 MiB C stack near 50000

max_steps = DEFAULT_MAX_STEPS
max_elements = DEFAULT_MAX_ELEMENTS
max_nodes = DEFAULT_MAX_NODES


def configure(max_steps: int | None = None, max_elements: int | None = None, max_nodes: int | None = None) -> None:
    """Set the limits; None means the default."""
    values = {"max_steps": (max_steps, DEFAULT_MAX_STEPS), "max_elements": (max_elements, DEFAULT_MAX_ELEMENTS),
              "max_nodes": (max_nodes, DEFAULT_MAX_NODES)}
    for name, (value, _) in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DplError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name, (value, default) in values.items():
        globals()[name] = default if value is None else value


def too_many_nodes(span) -> DplError:
    return DplError(f"the recorded graph has grown past {max_nodes} nodes (a very long loop or `odeint` inside "
                    f"`grad` or a loss, or `grad`s nested deeply?); raise --max-nodes if that is intended", span)


def seed_value(seed: int, what: str = "--seed") -> int:
    """A seed NumPy's generators take: a non-negative integer."""
    if seed < 0:
        raise DplError(f"{what} must be a non-negative integer, got {seed}")
    return seed


def check_elements(shape, what: str) -> None:
    """Refuse a tensor of `shape` with more than `max_elements` elements, before it is allocated."""
    shape = [int(d) for d in shape]
    n = math.prod(shape)
    if n > max_elements and min(shape) >= 0:  # a negative size is the operation's own error (or reshape's -1)
        raise DplError(f"{what}: a tensor of shape {shape} would have {n} elements, more than "
                       f"the limit of {max_elements}; raise --max-elements if that is intended")


def check_broadcast(shapes, what: str) -> None:
    """Refuse an elementwise operation whose operands broadcast to more than `max_elements` elements."""
    shapes = [tuple(s) for s in shapes]
    if len(set(shapes)) < 2:
        return
    try:
        out = broadcast_shape(shapes)
    except ValueError:
        return  # the operation itself reports the mismatch
    if math.prod(out) > max(math.prod(s) for s in shapes):
        check_elements(out, what)


def broadcast_shape(shapes) -> tuple:
    """np.broadcast_shapes in Python integers (no int64 overflow on absurd sizes)."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def index_shape(shape, key) -> tuple | None:
    """The shape of x[key] (up to the order of its axes) for NumPy indexing with ints, slices and integer or
    boolean arrays; None where the key does not fit the shape (the indexing reports that)."""
    dims, i, arrays, kept = list(shape), 0, [], []
    for k in key:
        if isinstance(k, slice):
            if i >= len(dims):
                return None
            kept.append(len(range(*k.indices(dims[i]))))
            i += 1
        elif getattr(k, "ndim", 0) == 0:
            i += 1
        elif k.dtype.kind == "b":
            arrays.append((int((k != 0).sum()),))
            i += k.ndim
        else:
            arrays.append(tuple(k.shape))
            i += 1
    try:
        gathered = broadcast_shape(arrays) if arrays else ()
    except ValueError:
        return None
    return gathered + tuple(kept) + tuple(dims[i:])


def loop_limit_error(what: str, span, ran: int, limit: int) -> DplError:
    """The error of a loop that took the program past `limit` steps in total (`ran` iterations its own)."""
    if ran > limit:
        msg = f"the `{what}` loop at {span} ran more than {limit} iterations"
    else:
        msg = (f"the `{what}` loop at {span} took the program past {limit} steps (loop iterations and function "
               f"calls; {ran} of them its own iterations)")
    return DplError(msg + "; raise --max-steps if that is intended", span)


def call_limit_error(name: str, span, limit: int) -> DplError:
    return DplError(f"the call of `{name}` took the program past {limit} steps (loop iterations and function "
                    f"calls; recursion that never ends, or grows exponentially?); raise --max-steps if that is "
                    f"intended", span)


@contextlib.contextmanager
def deep_stack():
    """Python's recursion limit at least RECURSION_LIMIT inside the block (restored after)."""
    old = sys.getrecursionlimit()
    if old >= RECURSION_LIMIT:
        yield
        return
    sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


TOO_DEEP = ("the program nests too deeply here: Python's stack ran out (deep recursion through DPL calls, or "
            "expressions nested very deeply)")
