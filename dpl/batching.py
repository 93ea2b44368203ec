"""vmap by batching: record f on the first index, then run the recorded nodes once on the whole batch with every op
rewritten for a leading batch axis (the batched version is then one op per node, as fast as the builtins allow).
A recording that took a decision from its inputs, drew random numbers or used an op without a batching rule is
not batched: the caller runs f once per index instead. So is one whose batched last item differs from f run on
that item (a builtin that read a value outside the recording). Where f reads parameters under an outer recording,
those two single items stay in that recording too (unused by its backward pass)."""
from __future__ import annotations

import numpy as np

from . import ops
from .graph import Box, raw


class NotBatchable(Exception):
    """This recording cannot be run batched (the caller falls back to a loop)."""


def batched(interp, f, items, kwargs, span, n):
    """f mapped over axis 0 of the items that are not None in `items` (pairs (value, mapped)), stacked on axis 0."""
    from .record import record
    first = [raw(v)[0] if mapped else v for v, mapped in items]
    at = [k for k, (_, mapped) in enumerate(items) if mapped]
    state = interp.rng.bit_generator.state
    rec = record(interp, f, first, kwargs, span, box=at, names=["vmap"] * len(items), params=False)
    trace, out = rec.trace, rec.out
    if trace.guards or trace.tainted or interp.rng.bit_generator.state != state:
        raise NotBatchable
    env = {rec.args[k].node: items[k][0] for k in at}
    for node in trace.nodes:
        rule = RULES.get(node.op.name)
        if rule is None:
            raise NotBatchable
        args, lifted = list(node.args), [False] * len(node.args)
        for pos, parent in node.parents:
            args[pos], lifted[pos] = env[parent], True
        env[node] = rule(node.op, args, lifted, dict(node.attrs), n)
    outs = out if isinstance(out, tuple) else (out,)
    if not all(type(o) is Box and o.trace is trace for o in outs):
        raise NotBatchable  # a result that does not depend on the mapped arguments
    res = tuple(env[o.node] for o in outs)
    if n > 1 and not _agrees(interp, f, items, kwargs, span, res, isinstance(out, tuple)):
        raise NotBatchable
    return res if isinstance(out, tuple) else res[0]


def _agrees(interp, f, items, kwargs, span, res, is_tuple) -> bool:
    """The batch's last item against f run on it: a builtin that reads a value outside the recording (a
    constant there, though it depends on the item) makes them differ."""
    last = [raw(v)[-1] if mapped else v for v, mapped in items]
    state = interp.rng.bit_generator.state
    out = interp.call(f, last, kwargs, span)
    interp.rng.bit_generator.state = state
    outs = out if is_tuple else (out,)
    return all(np.shape(raw(a))[1:] == np.shape(raw(b)) and (
        np.allclose(raw(a)[-1], raw(b), rtol=1e-5, atol=1e-9, equal_nan=True) if np.asarray(raw(b)).dtype.kind == "f"
        else np.array_equal(raw(a)[-1], raw(b))) for a, b in zip(res, outs))


def _rank(v):
    """The rank of one item of a batched value."""
    return np.ndim(raw(v)) - 1


def _align(v, k):
    """(n, *s) -> (n, 1, ..., 1, *s) of rank 1 + k, so that the item aligns from the right like an unbatched value."""
    s = np.shape(raw(v))
    pad = k - (len(s) - 1)
    return v if pad == 0 else ops.reshape(v, shape=(s[0],) + (1,) * pad + s[1:])


def _elementwise(op, args, lifted, attrs, n):
    k = max(np.ndim(raw(a)) - b for a, b in zip(args, lifted))
    return op(*[_align(a, k) if b else a for a, b in zip(args, lifted)], **attrs)


def _shift(axis, rank):
    """An axis of one item as an axis of the batch (None: all of the item's axes)."""
    if axis is None:
        return tuple(range(1, rank + 1))
    if isinstance(axis, tuple):
        return tuple(_shift(a, rank) for a in axis)
    if not rank:
        raise NotBatchable
    return int(axis) % rank + 1


def _reduction(op, args, lifted, attrs, n):
    if not lifted[0] or any(lifted[1:]):
        raise NotBatchable
    if op.name in ("argmax", "argmin") and attrs.get("axis") is None:
        raise NotBatchable  # a flat index of each item
    attrs["axis"] = _shift(attrs.get("axis"), _rank(args[0]))
    return op(*args, **attrs)


def _matmul(op, args, lifted, attrs, n):
    a, b = args
    ra, rb = (np.ndim(raw(v)) - bt for v, bt in zip(args, lifted))
    if lifted[0] and lifted[1]:
        if ra < 2 or rb < 2:
            raise NotBatchable
        k = max(ra, rb)
        return op(_align(a, k), _align(b, k))
    if lifted[1] and rb == 1:  # a @ (n, m): each item a vector, made a column (n, m, 1), then dropped again
        if ra > 2:
            raise NotBatchable
        out = op(a, ops.reshape(b, shape=np.shape(raw(b)) + (1,)))
        return ops.reshape(out, shape=np.shape(raw(out))[:-1])
    if (lifted[1] and ra > 2) or (lifted[0] and rb > 2 and rb > ra):
        raise NotBatchable  # the other operand's own batch axes would meet the mapped axis
    return op(a, b)


def _shape_op(op, args, lifted, attrs, n):
    x = args[0]
    if op.name == "reshape":
        attrs["shape"] = (n,) + tuple(attrs["shape"])
    elif op.name == "transpose":
        r = _rank(x)
        attrs["perm"] = (0,) + tuple(int(p) % r + 1 for p in attrs["perm"])
    elif op.name == "broadcast_to":
        x = _align(x, len(attrs["shape"]))
        attrs["shape"] = (n,) + tuple(attrs["shape"])
    elif op.name == "sum_to":
        attrs["shape"] = (n,) + tuple(attrs["shape"])
    elif op.name == "swapaxes" and _rank(x) < 2:
        raise NotBatchable
    return op(x, *args[1:], **attrs)


def _index(op, args, lifted, attrs, n):
    key = attrs["key"] if isinstance(attrs["key"], tuple) else (attrs["key"],)
    arrays = [i for i, k in enumerate(key) if hasattr(k, "dtype")]
    if any(key[i].dtype.kind == "b" for i in arrays) or (arrays and arrays[-1] - arrays[0] + 1 != len(arrays)):
        raise NotBatchable  # masks, and array indices apart (NumPy would move their axes first)
    attrs["key"] = (slice(None),) + key
    return op(args[0], **attrs)


def _join(op, args, lifted, attrs, n):
    rank = max(_rank(a) for a, b in zip(args, lifted) if b)
    args = [a if b else ops.broadcast_to(a, shape=(n,) + np.shape(raw(a))) for a, b in zip(args, lifted)]
    attrs["axis"] = int(attrs["axis"]) % (rank + (op.name == "stack")) + 1
    return op(*args, **attrs)


def _softmax(op, args, lifted, attrs, n):
    if any(lifted[1:]):
        raise NotBatchable
    attrs["axis"] = _shift(attrs["axis"], _rank(args[0]))
    return op(*args, **attrs)


def _one_axis(op, args, lifted, attrs, n):
    """An op along one axis (counted from 0, as the FFTs take it): the same axis of each item."""
    attrs["axis"] += 1
    return op(*args, **attrs)


RULES = {name: _elementwise for name in (
    "neg", "exp", "log", "sin", "cos", "tan", "tanh", "sqrt", "abs", "relu", "sigmoid", "softplus", "add", "sub",
    "mul", "div", "mod", "floordiv", "pow", "maximum", "minimum", "where", "clip", "lt", "le", "gt", "ge", "eq",
    "ne", "and", "or", "not", "int", "astype", "stop_gradient")}
RULES.update({name: _reduction for name in ("sum", "max", "min", "norm", "logsumexp", "argmax", "argmin")})
RULES.update({name: _shape_op for name in ("reshape", "transpose", "broadcast_to", "sum_to", "swapaxes")})
RULES.update(matmul=_matmul, index=_index, concat=_join, stack=_join, softmax=_softmax)
RULES.update({name: _elementwise for name in ("real", "imag", "conj")})
RULES.update({name: _one_axis for name in ("fft", "ifft", "rfft", "irfft")})
