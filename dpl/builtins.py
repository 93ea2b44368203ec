"""Builtins of LANGUAGE.md §9: thin wrappers that check arguments and compose ops."""
from __future__ import annotations

import csv
import inspect
import math
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import backend as B
from . import autodiff, graph, limits, ops, record
from .errors import DplError
from .graph import Box, raw
from .interp import NUMERIC_ERRORS, describe_type, is_float_scalar, is_tensor, kind, real_loss_hint, to_float
from .limits import check_broadcast, check_elements
from .values import List

BUILTINS: dict[str, object] = {}


class Builtin:
    """A builtin function: arity checked against its Python signature, errors placed at the call. One that is
    not `complex_ok` (dpl/complexes.py lists those that are) refuses complex arguments rather than drop
    their imaginary part or fail inside NumPy."""

    complex_ok = False

    def __init__(self, name, fn, context=False, takes_list=False):
        self.name, self.fn, self.context, self.takes_list = name, fn, context, takes_list
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[2 if context else 0:]
        self.sig = sig.replace(parameters=params)

    def usage(self) -> str:
        parts = []
        for p in self.sig.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                parts.append(f"{p.name}, ...")
            elif p.default is p.empty:
                parts.append(p.name)
            else:
                words = ((None, "none"), (True, "true"), (False, "false"))  # by identity: 0.0 == False
                d = f'"{p.default}"' if isinstance(p.default, str) else \
                    next((w for v, w in words if p.default is v), p.default)
                parts.append(f"{p.name} = {d}")
        return f"{self.name}({', '.join(parts)})"

    def __call__(self, interp, args, kwargs, span):
        if not self.complex_ok:
            for a in (*args, *kwargs.values()):
                dt = getattr(raw(a), "dtype", None)
                if dt is not None and dt.kind == "c":
                    raise DplError(f"`{self.name}` is not defined for complex numbers, got {describe_type(a)}; "
                                   f"take real(z), imag(z), abs(z) or angle(z) first", span)
        try:
            return self.fn(interp, span, *args, **kwargs) if self.context else self.fn(*args, **kwargs)
        except DplError as e:
            raise e.at(span)
        except NUMERIC_ERRORS as e:
            if isinstance(e, TypeError):  # the arguments are checked against the signature only when a call fails
                try:
                    self.sig.bind(*args, **kwargs)
                except TypeError as bad:
                    raise DplError(f"wrong arguments to `{self.name}`: {bad}; usage: {self.usage()}", span) from None
            raise DplError(f"`{self.name}`: {e}", span) from None

    def describe(self):
        return f"<builtin {self.name}>"


def builtin(name=None, context=False, takes_list=False):
    def wrap(fn):
        BUILTINS[name or fn.__name__.rstrip("_")] = Builtin(name or fn.__name__.rstrip("_"), fn, context, takes_list)
        return fn
    return wrap


# ---- argument helpers ---------------------------------------------------------------------

def tensor(x, what="argument"):
    if not is_tensor(x):
        raise DplError(f"{what} must be a number or tensor, got {describe_type(x)}")
    return x


def floats(x, what="argument"):
    tensor(x, what)
    return to_float(x)


def real_floats(x, what="argument"):
    """floats(x), refusing a complex x (a probability, a weight): nothing drops an imaginary part silently."""
    x = floats(x, what)
    if kind(x) == "c":
        raise DplError(f"{what} must be real, got {describe_type(x)}; take real(...) or abs(...) of it")
    return x


def integer(x, what) -> int:
    if type(x) is int:
        return x
    if type(x) is Box:  # a hard decision taken from a traced value: keep it as a guard
        graph.guard(x, int(raw(x)))
    r = raw(x)
    if isinstance(r, (bool, np.bool_)) or kind(r) not in ("i", "u") or np.ndim(r) != 0:
        hint = "; use int(...) to convert" if kind(r) == "f" else ""
        raise DplError(f"{what} must be an integer, got {describe_type(x)}{hint}")
    return int(r)


def axis_arg(axis):
    """None, an integer, or a list of integers (for reductions)."""
    if axis is None:
        return None
    r = raw(axis)
    if kind(r) in ("i", "u") and np.ndim(r) == 0:
        return int(r)
    if kind(r) in ("i", "u") and np.ndim(r) == 1:
        return tuple(int(a) for a in B.to_host(r))
    raise DplError(f"`axis` must be an integer or a list of integers, got {describe_type(axis)}")


def flag(v, what) -> bool:
    if kind(v) != "b" or np.ndim(raw(v)) != 0:
        raise DplError(f"`{what}` must be true or false, got {describe_type(v)}")
    return bool(raw(v))


def new_shape(v, what: str) -> tuple:
    """A shape argument of a builtin that creates a tensor of that shape (refused if too large)."""
    shp = shape_arg(v)
    check_elements(shp, what)
    return shp


def shape_arg(v, what="shape") -> tuple:
    r = raw(v)
    if kind(r) in ("i", "u") and np.ndim(r) == 0:
        return (int(r),)
    if is_tensor(r) and np.ndim(r) == 1 and (kind(r) in ("i", "u") or np.size(r) == 0):
        return tuple(int(d) for d in B.to_host(r))
    raise DplError(f"`{what}` must be a list of integers like [2, 3], got {describe_type(v)}")


def check_axis(x, axis):
    nd = np.ndim(raw(x))
    for a in (axis if isinstance(axis, tuple) else () if axis is None else (axis,)):
        if not -nd <= a < max(nd, 1):
            raise DplError(f"axis {a} is out of range for a tensor of shape {list(np.shape(raw(x)))}")
    return axis


# ---- math ----------------------------------------------------------------------------------

def _unary(op):
    def fn(x):
        """The elementwise function its name says (exp log sin cos tan tanh sigmoid relu softplus sqrt); integers
        become floats."""
        return op(floats(x))
    return fn


for _op in (ops.exp, ops.log, ops.sin, ops.cos, ops.tan, ops.tanh, ops.sigmoid, ops.relu, ops.softplus, ops.sqrt):
    builtin(_op.name)(_unary(_op))


def _promote(a, b):
    tensor(a), tensor(b)
    return (to_float(a), to_float(b)) if "f" in (kind(a), kind(b)) else (a, b)


def _extremum(name, pairwise, reduce):
    def fn(x, y=None, *, axis=None, keepdims=False):
        """With one tensor its largest (max) or smallest (min) entry, over `axis` if given; with two, elementwise."""
        if y is not None:
            if axis is not None:
                raise DplError(f"`{name}` with two tensors is elementwise and takes no `axis`")
            check_broadcast((np.shape(raw(x)), np.shape(raw(y))), f"`{name}`")
            return pairwise(*_promote(x, y))
        return reduce(tensor(x), axis=check_axis(x, axis_arg(axis)), keepdims=flag(keepdims, "keepdims")
                      if not isinstance(keepdims, bool) else keepdims)
    builtin(name)(fn)


_extremum("max", ops.maximum, ops.amax)
_extremum("min", ops.minimum, ops.amin)


@builtin()
def clip(x, lo, hi):
    """x limited to [lo, hi] elementwise; the gradient passes where lo ≤ x ≤ hi."""
    x, lo, hi = floats(x), floats(lo), floats(hi)
    check_broadcast([np.shape(raw(v)) for v in (x, lo, hi)], "`clip`")
    return ops.clip(x, lo, hi)


@builtin()
def where(cond, a, b):
    """a where `cond` is true, else b, elementwise (all three broadcast); no gradient to `cond`."""
    if kind(cond) != "b":
        raise DplError(f"`where` needs a boolean condition, got {describe_type(cond)}")
    a, b = _promote(a, b)
    check_broadcast([np.shape(raw(v)) for v in (cond, a, b)], "`where`")
    return ops.where(cond, a, b)  # a traced condition stays a parent: replay recomputes it


# ---- reductions ---------------------------------------------------------------------------------

def _keep(k):
    return k if isinstance(k, bool) else flag(k, "keepdims")


@builtin("sum")
def sum_(x, axis=None, keepdims=False):
    """The sum of all entries (0-d), or over `axis` (an integer or a list); `keepdims` keeps the summed axes as 1."""
    return ops.sum_(tensor(x), axis=check_axis(x, axis_arg(axis)), keepdims=_keep(keepdims))


def mean_of(x, axis=None, keepdims=False):
    x = floats(x)
    shp = np.shape(raw(x))
    axes = range(len(shp)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    count = math.prod(shp[a] for a in axes)
    return ops.div(ops.sum_(x, axis=axis, keepdims=keepdims), float(count))


@builtin()
def mean(x, axis=None, keepdims=False):
    """The mean of all entries, or over `axis` (an integer or a list), as `sum`."""
    return mean_of(x, check_axis(x, axis_arg(axis)), _keep(keepdims))


@builtin()
def logsumexp(x, axis=None, keepdims=False):
    """log Σ exp(x), stable (the largest entry is taken out first), over all entries or over `axis`."""
    return ops.logsumexp(floats(x), axis=check_axis(x, axis_arg(axis)), keepdims=_keep(keepdims))


@builtin()
def softmax(x, axis=-1):
    """exp(x) / Σ exp(x) along `axis` (default the last), stable."""
    return ops.softmax(floats(x), axis=check_axis(x, axis_arg(axis)))


@builtin()
def argmax(x, axis=None):
    """The integer index of the largest entry: a flat index without `axis`; not differentiable."""
    return ops.argmax(tensor(x), axis=check_axis(x, axis_arg(axis)))


@builtin()
def argmin(x, axis=None):
    """The integer index of the smallest entry: a flat index without `axis`; not differentiable."""
    return ops.argmin(tensor(x), axis=check_axis(x, axis_arg(axis)))


@builtin("any")
def any_(x, axis=None):
    """Whether any entry is true (or nonzero), over all entries or over `axis`."""
    return ops.any_(tensor(x), axis=axis_arg(axis))  # recorded, so a hard `if` on it is guarded


@builtin("all")
def all_(x, axis=None):
    """Whether every entry is true (or nonzero), over all entries or over `axis`."""
    return ops.all_(tensor(x), axis=axis_arg(axis))


# ---- casts and shapes ----------------------------------------------------------------------------

@builtin("float")
def float_(x):
    """x in the run's float dtype (booleans and integers converted)."""
    return to_float(tensor(x))


@builtin("int")
def int_(x):
    """x as integers, truncated toward zero; not differentiable."""
    return ops.floor_int(tensor(x))


@builtin()
def reshape(x, shape):
    """x with a new shape of the same number of entries (one size may be -1: inferred)."""
    shp = new_shape(shape, "`reshape`")
    return ops.reshape(tensor(x), shape=shp)


@builtin()
def transpose(x, perm=None):
    """x with its axes reversed, or permuted as `perm` says (as np.transpose)."""
    nd = np.ndim(raw(tensor(x)))
    p = tuple(range(nd))[::-1] if perm is None else shape_arg(perm, "perm")
    if sorted(a % nd if nd else a for a in p) != list(range(nd)):
        raise DplError(f"`perm` {list(p)} is not a permutation of the {nd} axes")
    return ops.transpose(x, perm=p)


def _joinable(xs, what):
    if not isinstance(xs, List):
        raise DplError(f"`{what}` takes a list of tensors: {what}([a, b], axis = 0) or {what}(xs, axis = 0), "
                       f"got {describe_type(xs)}")
    if not xs:
        raise DplError(f"`{what}` needs at least one tensor")
    xs = [tensor(x, f"an item of the list given to `{what}`") for x in xs]
    kinds = {kind(x) for x in xs}
    return [to_float(x) for x in xs] if kinds & {"f", "c"} else xs


@builtin(takes_list=True)
def concat(xs, axis=0):
    """The tensors of the list `xs` joined along an existing `axis` (default 0)."""
    xs = _joinable(xs, "concat")
    check_elements((sum(math.prod(np.shape(raw(x))) for x in xs),), "`concat`")  # what the result would hold
    return ops.concat(*xs, axis=integer(axis, "axis"))


@builtin(takes_list=True)
def stack(xs, axis=0):
    """The equally shaped tensors of the list `xs` stacked along a new `axis` (default 0)."""
    xs = _joinable(xs, "stack")
    check_elements((len(xs),) + np.shape(raw(xs[0])), "`stack`")
    return ops.stack(*xs, axis=integer(axis, "axis"))


@builtin()
def shape(x):
    """The shape of x as a 1-d integer tensor."""
    return np.array(np.shape(raw(tensor(x))), dtype=np.int64)


@builtin("len")
def len_(x):
    """The number of items of a list or tuple, the letters of a string, or the size of a tensor's first axis."""
    if isinstance(x, (tuple, List, str)):
        return np.int64(len(x))
    r = raw(tensor(x))
    if np.ndim(r) == 0:
        raise DplError("`len` of a scalar")
    return np.int64(np.shape(r)[0])


@builtin()
def zeros(shape):
    """A tensor of zeros of the given shape (a list of sizes, or one size), in the run's float dtype."""
    return B.xp.zeros(new_shape(shape, "`zeros`"), dtype=B.float_dtype)


@builtin()
def ones(shape):
    """A tensor of ones of the given shape (a list of sizes, or one size), in the run's float dtype."""
    return B.xp.ones(new_shape(shape, "`ones`"), dtype=B.float_dtype)


@builtin()
def eye(n):
    """The n × n identity matrix in the run's float dtype."""
    n = integer(n, "n")
    check_elements((n, n), "`eye`")
    return B.xp.eye(n, dtype=B.float_dtype)


def _range_args(a, b, step):
    vals = [integer(v, "range bound") for v in (a, b, step) if v is not None]
    if len(vals) == 3 and vals[2] == 0:
        raise DplError("`range` step cannot be 0")
    return vals


@builtin("range")
def range_(a, b=None, step=None):
    """The integers a, a + step, ... below b (`range(n)`: 0 … n − 1), as an integer tensor."""
    vals = _range_args(a, b, step)
    check_elements((len(range(*vals)),), "`range`")
    return B.xp.arange(*vals, dtype=np.int64)


@builtin()
def arange(a, b=None, step=None):
    """As `range`, but floats when any bound is a float (as np.arange)."""
    vals = [raw(tensor(v)) for v in (a, b, step) if v is not None]
    if any(kind(v) == "f" for v in vals):
        vals = [float(v) for v in vals]
        lo, hi, step = (0.0, vals[0], 1.0) if len(vals) == 1 else (*vals, 1.0) if len(vals) == 2 else vals
        if step and all(map(math.isfinite, (lo, hi, step))):
            check_elements((max(0, math.ceil((hi - lo) / step)),), "`arange`")
        return B.xp.arange(*vals, dtype=B.float_dtype)
    vals = [int(v) for v in vals]
    if len(vals) < 3 or vals[2]:
        check_elements((len(range(*vals)),), "`arange`")
    return B.xp.arange(*vals, dtype=np.int64)


@builtin()
def linspace(a, b, n):
    """n evenly spaced floats from a to b, both included."""
    n = integer(n, "n")
    check_elements((n,), "`linspace`")
    return B.xp.linspace(float(raw(tensor(a))), float(raw(tensor(b))), n, dtype=B.float_dtype)


@builtin()
def one_hot(labels, n):
    """Integer labels as one-hot float rows of length n (a new last axis)."""
    lab = raw(tensor(labels))
    if kind(lab) not in ("i", "u"):
        raise DplError(f"`one_hot` needs integer labels, got {describe_type(labels)}")
    n = integer(n, "n")
    check_elements(np.shape(lab) + (n,), "`one_hot`")
    return _one_hot(tensor(labels), n)


def _one_hot(labels, n):
    """Rows of the identity picked by integer labels, through recorded ops: a replay at other labels
    computes it afresh instead of keeping the recorded one."""
    column = ops.reshape(labels, shape=np.shape(raw(labels)) + (1,))
    return ops.astype(ops.eq(column, B.xp.arange(n)), dtype=B.float_dtype)


# ---- losses ---------------------------------------------------------------------------------------

@builtin()
def mse(a, b):
    """The mean of (a − b)² over all entries."""
    a, b = floats(a), floats(b)
    check_broadcast((np.shape(raw(a)), np.shape(raw(b))), "`mse`")
    d = ops.sub(a, b)
    return mean_of(ops.mul(d, d))


@builtin()
def cross_entropy(logits, labels):
    """The mean over all rows of −log softmax(logits)[label], integer labels over the last axis."""
    logits = floats(logits, "logits")
    lab = raw(tensor(labels, "labels"))
    if kind(lab) not in ("i", "u"):
        raise DplError(f"`cross_entropy` needs integer labels, got {describe_type(labels)}")
    shp = np.shape(raw(logits))
    if not shp or np.shape(lab) != shp[:-1]:
        raise DplError(f"`cross_entropy`: labels of shape {list(np.shape(lab))} do not match logits of shape "
                       f"{list(shp)} (labels index the last axis)")
    labels = tensor(labels, "labels")
    inside = ops.all_(ops.logical_and(ops.ge(labels, 0), ops.lt(labels, shp[-1])))
    if not graph.guard(inside, bool(raw(inside))):  # a replay at labels out of range records and says so
        raise DplError(f"`cross_entropy`: labels must lie in 0..{shp[-1] - 1}")
    picked = ops.sum_(ops.mul(logits, _one_hot(labels, shp[-1])), axis=-1)
    return mean_of(ops.sub(ops.logsumexp(logits, axis=-1), picked))


# ---- random -------------------------------------------------------------------------------------------

@builtin(context=True)
def uniform(interp, span, lo, hi, shape):
    """Random floats uniform in [lo, hi) of the given shape, seeded by --seed (a recording that draws is not
    replayed)."""
    graph.taint("a random draw (`uniform`) inside it")
    return B.xp.asarray(interp.rng.uniform(float(raw(lo)), float(raw(hi)), new_shape(shape, "`uniform`")),
                        dtype=B.float_dtype)


@builtin(context=True)
def normal(interp, span, mean, std, shape):
    """Random floats from N(mean, std²) of the given shape, seeded by --seed (a recording that draws is not
    replayed)."""
    graph.taint("a random draw (`normal`) inside it")
    return B.xp.asarray(interp.rng.normal(float(raw(mean)), float(raw(std)), new_shape(shape, "`normal`")),
                        dtype=B.float_dtype)


def initialize(name, args, shape, rng, span):
    """Parameter initializers (§7), drawn from the run's seeded generator."""
    def need(n):
        if len(args) != n:
            raise DplError(f"initializer `{name}` takes {n} argument{'s' * (n != 1)}, got {len(args)}", span)
    if name in ("zeros", "ones", "glorot", "orthogonal"):
        need(0)
    if name == "zeros":
        return np.zeros(shape)
    if name == "ones":
        return np.ones(shape)
    if name == "normal":
        need(1)
        return rng.normal(0.0, float(args[0]), shape)
    if name == "uniform":
        need(2)
        return rng.uniform(float(args[0]), float(args[1]), shape)
    if name == "glorot":
        fan_in, fan_out = (shape[-2] if len(shape) > 1 else shape[0] if shape else 1), (shape[-1] if shape else 1)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        a = math.sqrt(6.0 / ((fan_in + fan_out) * receptive))
        return rng.uniform(-a, a, shape)
    if name == "orthogonal":
        if len(shape) < 2:
            raise DplError("`orthogonal` needs a parameter with at least 2 axes", span)
        rows, cols = math.prod(shape[:-1]), shape[-1]
        q, r = np.linalg.qr(rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols))))
        q = q * np.sign(np.diag(r))
        return (q if rows >= cols else q.T).reshape(shape)
    from .errors import suggest
    known = ["zeros", "ones", "normal", "uniform", "glorot", "orthogonal"]
    raise DplError(f"unknown initializer `{name}`{suggest(name, known)}; one of {', '.join(known)}", span)


# ---- data ---------------------------------------------------------------------------------------------

_FILE_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _check_magic(path: Path, suffix: str) -> None:
    """np.load guesses the format from the content (and would take any other file for a pickle): say so instead."""
    with open(path, "rb") as f:
        head = f.read(6)
    if suffix == ".npy" and head != b"\x93NUMPY":
        raise DplError(f"`load`: {path} is not a NumPy .npy file" + (" (it is empty)" if not head else ""))
    if suffix == ".npz" and head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DplError(f"`load`: {path} is not a NumPy .npz file (a zip archive of .npy files)"
                       + (" (it is empty)" if not head else ""))


def _load_csv(path: Path, header: bool = False, columns=None):
    """Numbers separated by commas, one row per line (blank lines and `#` comments skipped), below a header
    line of column names with `header`, of which `columns` (a name or a list of names) picks some; a file that
    np.loadtxt cannot read is read again line by line to say which line is wrong."""
    at, names = _csv_header(path) if header or columns is not None else (0, None)
    if (path.stat().st_size + 1) // 2 > limits.max_elements:  # it could hold more numbers than allowed: count
        check_elements(_csv_shape(path, at, names is not None), f"`load` of {path}")  # before np.loadtxt allocates
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": an error below
            data = np.loadtxt(path, delimiter=",", ndmin=1 if names is None else 2, skiprows=at)
    except ValueError as e:
        _csv_problem(path, at)
        raise DplError(f"`load`: cannot read {path}: {e}") from None
    if data.size == 0:
        raise DplError(f"`load`: {path} holds no numbers" + (f" below its header (line {at})" if at else ""))
    check_elements(data.shape, f"`load` of {path}")
    if names is None:
        return data
    if data.shape[1] != len(names):
        raise DplError(f"`load`: {path} has {data.shape[1]} column{'s' * (data.shape[1] != 1)} of numbers, but its "
                       f"header (line {at}) names {len(names)}: {', '.join(f'`{n}`' for n in names)}")
    if columns is None:  # the shape `load` gives without a header: one row or one column is 1-D
        return data.reshape(-1) if 1 in data.shape else data
    picked = [_column(path, names, c) for c in ([columns] if isinstance(columns, str) else columns)]
    return data[:, picked[0]] if isinstance(columns, str) else data[:, picked]


def _csv_shape(path: Path, skip: int, two_d: bool) -> tuple:
    """The shape np.loadtxt would give the numbers below line `skip` (rows × the first row's width), counted
    line by line without holding them."""
    rows = width = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if number > skip and text:
                rows, width = rows + 1, width or text.count(",") + 1
    if two_d or (rows > 1 and width > 1):
        return rows, width
    return (rows * width,)


def _csv_header(path: Path, what: str = "load") -> tuple[int, list[str]]:
    """The line number and the column names of a CSV file's header: its first line that is not blank or a
    comment (cells as the csv module reads them, so names may be quoted; spaces around them dropped)."""
    with open(path, "rb") as f:
        for number, raw_line in enumerate(f, start=1):
            line = _utf8(path, number, raw_line, what).lstrip("\ufeff")  # a spreadsheet's byte order mark
            text = line.split("#", 1)[0]
            if text.strip():
                return number, [c.strip() for c in next(csv.reader([text], skipinitialspace=True))]
    raise DplError(f"`{what}`: {path} has no header line (it holds nothing but blank lines and comments)")


def _column(path: Path, names: list, name) -> int:
    if not isinstance(name, str):
        raise DplError(f"`load`: `columns` takes a column name or a list of names, got {describe_type(name)}")
    if name not in names:
        from .errors import suggest
        raise DplError(f"`load`: {path} has no column `{name}`{suggest(name, names)}; its header names "
                       f"{', '.join(f'`{n}`' for n in names)}")
    if names.count(name) > 1:
        raise DplError(f"`load`: {path} has {names.count(name)} columns named `{name}`; pick one by its position "
                       f"instead, as load(..., header = true)[:, k]")
    return names.index(name)


def _utf8(path: Path, number: int, raw_line: bytes, what: str = "load") -> str:
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError:
        raise DplError(f"`{what}`: {path} line {number} is not UTF-8 text") from None


def _csv_problem(path: Path, skip: int = 0) -> None:
    """Raise a DplError naming the first line of a CSV file (below line `skip`, its header) that is not a row
    of numbers like the others."""
    width = first = None
    with open(path, "rb") as f:
        for number, raw_line in enumerate(f, start=1):
            if number <= skip:
                continue
            line = _utf8(path, number, raw_line)
            cells = line.split("#", 1)[0].strip()
            if not cells:
                continue
            cells = cells.split(",")
            for column, cell in enumerate(cells, start=1):
                try:
                    float(cell)
                except ValueError:
                    cell = cell.strip()
                    what = f"`{cell if len(cell) <= 20 else cell[:20] + '...'}` is" if cell else "an empty cell is"
                    hint = " (a header line? load(..., header = true) reads the rows below it)" \
                        if first is None and not skip and any(map(str.isalpha, cell)) else ""
                    raise DplError(f"`load`: {path} line {number}, column {column}: {what} not a "
                                   f"number{hint}") from None
            if width is None:
                width, first = len(cells), number
            elif len(cells) != width:
                raise DplError(f"`load`: {path} line {number} has {len(cells)} value{'s' * (len(cells) != 1)}, "
                               f"but line {first} has {width}; every row needs the same number of columns")


def _data_file(interp, span, file, what: str) -> Path:
    """The path of a data file named relative to the program's file; what it holds is part of a checkpoint's
    identity (a changed file stops --resume), and reading it keeps the recording from being replayed."""
    graph.taint(f"a file read (`{what}`) inside it")
    if not isinstance(file, str):
        raise DplError(f"`{what}` takes a file name string, got {describe_type(file)}")
    path = Path(file)
    if not path.is_absolute():
        path = Path(span.file).parent / path
    if not path.is_file():
        raise DplError(f"`{what}`: no such file: {path}" if not path.exists() else f"`{what}`: {path} is not a file")
    return path


@builtin(context=True)
def load(interp, span, file, key=None, header=False, columns=None):
    """A tensor from a .csv, .npy or an .npz file (`key`: the array's name); a CSV file's first line names its
    columns with `header = true`, and `columns = "name"` or `["a", "b"]` picks columns by those names."""
    path = _data_file(interp, span, file, "load")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npy", ".npz"):
        raise DplError(f"`load` reads .csv, .npy and .npz files, not `{path.suffix or path.name}`")
    header = flag(header, "header")
    if columns is not None and not isinstance(columns, (str, List)):
        raise DplError(f"`load`: `columns` takes a column name or a list of names, got {describe_type(columns)}")
    if (header or columns is not None) and suffix != ".csv":
        raise DplError(f"`load`: only .csv files have a header line; load(\"{file}\") takes no "
                       f"`{'header' if header else 'columns'}`")
    if key is not None and suffix != ".npz":
        raise DplError(f"`load`: only .npz files hold arrays by key; load(\"{file}\") takes no key")
    if key is not None and not isinstance(key, str):
        raise DplError(f"`load`: the key of an array in an .npz file is a string, got {describe_type(key)}")
    if suffix == ".npz" and key is None:
        raise DplError(f"`load` of an .npz file needs the array's key: load(\"{file}\", \"name\")")
    from .checkpoint import digest
    try:
        interp.data_files[path.resolve()] = digest(path)  # in a checkpoint's identity: a changed file stops --resume
        if suffix == ".csv":
            data = _load_csv(path, header, columns)
        else:
            _check_magic(path, suffix)
            from .paramfile import read_npy, read_npz
            if suffix == ".npy":
                with open(path, "rb") as f:
                    data = read_npy(f, f"`load` of {path}")
            else:
                try:
                    found = read_npz(path, "", keys=[key])
                except DplError as e:
                    raise DplError(f"`load`: {e.message}") from None
                if key not in found:
                    with zipfile.ZipFile(path) as z:
                        names = [n.removesuffix(".npy") for n in z.namelist()]
                    raise DplError(f"`load`: {path} has no array `{key}`; it has "
                                   f"{', '.join(f'`{k}`' for k in names) or 'none'}")
                data = found[key]
    except _FILE_ERRORS as e:
        raise DplError(f"`load`: cannot read {path}: {e or type(e).__name__}") from None
    if data.dtype.kind not in "biuf":
        raise DplError(f"`load`: {path} holds {data.dtype} values; DPL loads numbers and booleans")
    if data.dtype.kind == "f":
        data = data.astype(B.float_dtype)
    return B.xp.asarray(data)


@builtin(context=True)
def load_header(interp, span, file):
    """The column names in a CSV file's header line, as a list of strings (`load(file, header = true)` reads
    the numbers below it)."""
    path = _data_file(interp, span, file, "load_header")
    if path.suffix.lower() != ".csv":
        raise DplError(f"`load_header` reads the header line of a .csv file, not `{path.suffix or path.name}`")
    from .checkpoint import digest
    try:
        interp.data_files[path.resolve()] = digest(path)
        return List(_csv_header(path, "load_header")[1])
    except OSError as e:
        raise DplError(f"`load_header`: cannot read {path}: {e or type(e).__name__}") from None


# ---- output -------------------------------------------------------------------------------------------

@builtin("print", context=True)
def print_(interp, span, *values):
    """Prints the values on one line, separated by spaces."""
    from .values import format_value
    graph.taint("`print` inside it")
    interp.stdout.write(" ".join(format_value(v) for v in values) + "\n")
    interp.stdout.flush()


# ---- differentiation ----------------------------------------------------------------------------------

class GradFn:
    """The function x ↦ ∂f/∂x (with the value too for value_and_grad): a fresh trace per call."""

    def __init__(self, f, argnum, with_value):
        self.f, self.argnum, self.with_value = f, argnum, with_value

    def describe(self):
        return f"<{'value_and_grad' if self.with_value else 'grad'} of {getattr(self.f, 'describe', lambda: '?')()}>"

    def dpl_call(self, interp, args, kwargs, span):
        k = self.argnum
        if k >= len(args):
            raise DplError(f"grad with argnum = {k} needs at least {k + 1} positional arguments, got {len(args)}",
                           span)
        x = tensor(args[k], "the differentiated argument")

        def check(out):
            if not is_float_scalar(out):
                hint = real_loss_hint(out) or "; for a tensor result, jacobian(f) gives every derivative"
                raise DplError(f"grad needs a function returning a 0-d float value, got {describe_type(out)}{hint}",
                               span)
        value, (g,), _ = record.gradients(interp, self.f, list(args), span, wrt_args=(k,), check=check, kwargs=kwargs)
        g = autodiff.zeros_like(x) if g is None else g
        return (value, g) if self.with_value else g


def _grad_args(f, argnum):
    from .interp import Function, Instance
    if not (isinstance(f, (Function, Instance, Builtin)) or hasattr(f, "dpl_call")):
        raise DplError(f"`grad` takes a function, got {describe_type(f)}")
    if isinstance(argnum, (List, tuple)) or is_tensor(argnum) and np.ndim(raw(argnum)) == 1:
        return [integer(k, "argnum") for k in (raw(argnum) if is_tensor(argnum) else argnum)]
    return integer(argnum, "argnum")


def _grad(f, argnum, with_value):
    k = _grad_args(f, argnum)
    if isinstance(k, list):
        return GradTuple([GradFn(f, j, with_value) for j in k], with_value)
    return GradFn(f, k, with_value)


@builtin(takes_list=True)
def grad(f, argnum=0):
    """The function x ↦ ∂f/∂x of a function returning a 0-d float; `argnum` picks the argument (a list: a tuple of
    gradients)."""
    return _grad(f, argnum, False)


@builtin(takes_list=True)
def value_and_grad(f, argnum=0):
    """As `grad`, but the function returns (f(x), ∂f/∂x)."""
    return _grad(f, argnum, True)


# ---- lists and function transforms (docs/LANGUAGE.md §12) ---------------------------------------------

@builtin(takes_list=True)
def append(xs, v):
    """The list `xs` with v added at the end (lists are values: `xs = append(xs, v)`)."""
    if not isinstance(xs, List):
        raise DplError(f"`append` adds to a list, got {describe_type(xs)}; start one with `xs = []`")
    return xs.append(v)


def _function(f, what):
    from .interp import Function, Instance
    if not (isinstance(f, (Function, Instance, Builtin)) or hasattr(f, "dpl_call")):
        raise DplError(f"`{what}` takes a function, got {describe_type(f)}")
    return f


def _traced_call(interp, f, args, kwargs, k, span, what):
    """f(*args) with argument k an input of a fresh trace: (trace, its input box, the float result)."""
    from .autodiff import as_float
    if k >= len(args):
        raise DplError(f"`{what}` with argnum = {k} needs at least {k + 1} positional arguments, got {len(args)}",
                       span)
    args = list(args)
    args[k] = as_float(tensor(args[k], "the differentiated argument"))
    rec = record.record(interp, f, args, kwargs, span, box=[k], params=False)
    trace, bx, out = rec.trace, rec.args[k], rec.out
    if not is_tensor(out) or kind(out) != "f":
        raise DplError(f"`{what}` needs a function returning a float tensor, got {describe_type(out)}"
                       f"{real_loss_hint(out)}", span)
    return trace, bx, out


def _pullback(trace, bx, out, seed):
    """seedᵀ · ∂out/∂x, recorded wherever the seed or x belong to an outer trace (so it differentiates again)."""
    from .autodiff import backward, zeros_like
    g = backward(trace, out, [bx], seed=seed)[0] if type(out) is Box and out.trace is trace else None
    return zeros_like(bx) if g is None else g


class JacobianFn:
    """x ↦ ∂f/∂x, shaped f(x).shape + x.shape: one backward pass per element of f(x)."""

    def __init__(self, f, argnum, what="jacobian"):
        self.f, self.argnum, self.what = f, argnum, what

    def describe(self):
        return f"<{self.what} of {getattr(self.f, 'describe', lambda: '?')()}>"

    def dpl_call(self, interp, args, kwargs, span):
        trace, bx, out = _traced_call(interp, self.f, args, kwargs, self.argnum, span, self.what)
        oshape, xshape = np.shape(raw(out)), np.shape(raw(bx))
        n = int(np.prod(oshape))
        check_elements(oshape + xshape, f"`{self.what}`")
        interp.add_steps(n, f"`{self.what}` of a function with {n} outputs runs {n} backward passes", span)
        rows = []
        for i in range(n):
            e = B.xp.zeros(n, dtype=raw(out).dtype)
            e[i] = 1
            rows.append(_pullback(trace, bx, out, e.reshape(oshape)))
        if not rows:
            return B.xp.zeros(oshape + xshape, dtype=B.float_dtype)
        return ops.reshape(ops.stack(*rows, axis=0), shape=oshape + xshape)


@builtin()
def jacobian(f, argnum=0):
    """The function x ↦ ∂f/∂x, shaped f(x).shape + x.shape (one backward pass per output entry)."""
    return JacobianFn(_function(f, "jacobian"), integer(argnum, "argnum"))


@builtin()
def hessian(f, argnum=0):
    """The function x ↦ the Jacobian of ∂f/∂x (f returns a 0-d float), shaped x.shape + x.shape."""
    k = integer(argnum, "argnum")
    return JacobianFn(GradFn(_function(f, "hessian"), k, False), k, "hessian")


@builtin(context=True)
def vjp(interp, span, f, x, v):
    """vᵀ · ∂f/∂x at x, shaped like x."""
    trace, bx, out = _traced_call(interp, _function(f, "vjp"), [x], {}, 0, span, "vjp")
    v = _like(v, out, "f(x)")
    return _pullback(trace, bx, out, v)


@builtin(context=True)
def jvp(interp, span, f, x, v):
    """∂f/∂x · v at x, shaped like f(x): the derivative in u of ⟨uᵀ ∂f/∂x, v⟩ (a VJP, linear in u)."""
    from .autodiff import backward, zeros_like
    trace, bx, out = _traced_call(interp, _function(f, "jvp"), [x], {}, 0, span, "jvp")
    v = _like(v, bx, "x")
    utrace = graph.Trace()  # u only: the double VJP's variable, not a recorded call
    u = utrace.input(B.xp.zeros(np.shape(raw(out)), dtype=raw(out).dtype), "u")
    s = ops.sum_(ops.mul(_pullback(trace, bx, out, u), v))
    g = backward(utrace, s, [u])[0] if type(s) is Box and s.trace is utrace else None
    return zeros_like(out) if g is None else g


def _like(v, ref, what):
    v = floats(v, "v")
    if np.shape(raw(v)) != np.shape(raw(ref)):
        raise DplError(f"`v` has shape {list(np.shape(raw(v)))}, but {what} has shape {list(np.shape(raw(ref)))}")
    return v


@builtin()
def stop_gradient(x):
    """x itself, with no gradient flowing back through it."""
    return ops.stop_gradient(tensor(x))


class VmapFn:
    """f mapped over an axis of its arguments, the results stacked along axis 0 (a loop over the axis)."""

    def __init__(self, f, in_axes):
        self.f, self.in_axes = f, in_axes

    def describe(self):
        return f"<vmap of {getattr(self.f, 'describe', lambda: '?')()}>"

    def dpl_call(self, interp, args, kwargs, span):
        axes = self.in_axes if isinstance(self.in_axes, list) else [self.in_axes] * len(args)
        if len(axes) != len(args):
            raise DplError(f"`vmap`: in_axes gives {len(axes)} axes for {len(args)} arguments", span)
        sizes = set()
        for a, ax in zip(args, axes):
            if ax is not None:
                shp = np.shape(raw(tensor(a, "a mapped argument")))
                if not -len(shp) <= ax < len(shp):
                    raise DplError(f"`vmap`: axis {ax} is out of range for an argument of shape {list(shp)}", span)
                sizes.add(shp[ax])
        if len(sizes) != 1:
            raise DplError(f"`vmap`: the mapped axes must have one size, got {sorted(sizes) or 'none mapped'}", span)
        (n,) = sizes
        if n:
            from .batching import NotBatchable, batched
            front = [(a if ax is None else _to_front(a, ax), ax is not None) for a, ax in zip(args, axes)]
            try:
                return batched(interp, self.f, front, kwargs, span, n)
            except NotBatchable:
                pass
        interp.add_steps(n, f"`vmap` over an axis of {n}", span)
        outs = []
        for i in range(n):
            item = [a if ax is None else ops.index(a, key=(slice(None),) * (ax % np.ndim(raw(a))) + (i,))
                    for a, ax in zip(args, axes)]
            outs.append(interp.call(self.f, item, kwargs, span))
        if not outs:
            raise DplError("`vmap` over an axis of size 0", span)
        if isinstance(outs[0], tuple):
            return tuple(_stack_results([o[j] for o in outs]) for j in range(len(outs[0])))
        return _stack_results(outs)


def _to_front(a, ax):
    nd = np.ndim(raw(a))
    ax %= nd
    return a if ax == 0 else ops.transpose(a, perm=(ax,) + tuple(i for i in range(nd) if i != ax))


def _stack_results(xs):
    for x in xs:
        tensor(x, "a result of the mapped function")
    return ops.stack(*[to_float(x) for x in xs], axis=0) if "f" in {kind(x) for x in xs} else ops.stack(*xs, axis=0)


@builtin(takes_list=True)
def vmap(f, in_axes=0):
    """vmap(f) maps over axis 0 of every argument; in_axes = [0, "none"] gives one axis per argument."""
    if isinstance(in_axes, (List, tuple)):
        axes = [None if isinstance(a, str) and a == "none" else integer(a, "an entry of in_axes") for a in in_axes]
    elif is_tensor(in_axes) and np.ndim(raw(in_axes)) == 1:
        axes = [integer(a, "an entry of in_axes") for a in raw(in_axes)]
    else:
        axes = integer(in_axes, "in_axes")
    return VmapFn(_function(f, "vmap"), axes)


class GradTuple:
    """grad(f, argnum = [0, 1]): the tuple of gradients w.r.t. each listed argument."""

    def __init__(self, grads, with_value):
        self.grads, self.with_value = grads, with_value

    def describe(self):
        return self.grads[0].describe()

    def dpl_call(self, interp, args, kwargs, span):
        gs = tuple(g.dpl_call(interp, args, kwargs, span) for g in self.grads)
        return (gs[0][0], tuple(g for _, g in gs)) if self.with_value else gs


# ---- soft control flow (LANGUAGE.md §6) -----------------------------------------------------------------

def blend(p, a, b, span=None):
    """p·a + (1 − p)·b, p broadcasting; integers become floats."""
    try:
        p = real_floats(p, "the `soft if` probability" if span else "p")
        a, b = (floats(v, "a value blended by `soft if`" if span else "argument") for v in (a, b))
        check_broadcast([np.shape(raw(v)) for v in (p, a, b)], "`soft if`" if span else "`blend`")
        return ops.add(ops.mul(p, a), ops.mul(ops.sub(1.0, p), b))
    except DplError as e:
        raise e.at(span)
    except NUMERIC_ERRORS:
        if span is None:
            raise  # the builtin `blend` reports it at its call
        raise DplError(f"`soft if` cannot blend values of shapes {list(np.shape(raw(a)))} and "
                       f"{list(np.shape(raw(b)))} with p of shape {list(np.shape(raw(p)))}: they do not broadcast",
                       span) from None


@builtin("blend")
def blend_(p, a, b):
    """p·a + (1 − p)·b with p broadcasting: what `soft if` computes; integers become floats."""
    return blend(p, a, b)


def soft_while_weights(cs, span):
    """w₀ = 1 − c₁, wₖ = c₁⋯cₖ(1 − cₖ₊₁), w_N = c₁⋯c_N."""
    weights, run = [], 1.0
    try:
        for c in cs:
            c = real_floats(c, "the `soft while` probability")
            weights.append(ops.mul(run, ops.sub(1.0, c)))
            run = ops.mul(run, c)
    except DplError as e:
        raise e.at(span)
    except NUMERIC_ERRORS:
        raise DplError("the `soft while` probability changed its shape between iterations", span) from None
    weights.append(run)
    return weights


def _decided(mask):
    """The value of a mask a hard decision is taken on; when traced it is kept as a guard (a replay must see it)."""
    if type(mask) is Box:
        mask.trace.guard(mask, B.to_host(raw(mask)))
    return raw(mask)


def expectation(weights, values, span):
    """Σ wₖ vₖ. A state that overflowed where its weight is exactly 0 is unused: it is left out (when the
    weight is 0 everywhere: no zero adjoint may meet its inf) or masked to 0, so it cannot turn the result
    into NaN; finite states always count, so the gradient w.r.t. a probability that is exactly 0 or 1 stays
    right. Masks are ops and the decisions guards, so a replay at new inputs recomputes or checks them."""
    total = None
    try:
        for w, v in zip(weights, values):
            v = floats(v, "a `soft while` state variable")
            finite = ops.isfinite(v)
            if not _decided(finite).all():
                used = ops.ne(w, 0)
                if not _decided(used).any():
                    continue
                v = ops.where(ops.logical_or(finite, used), v, 0.0)
            term = ops.mul(w, v)
            total = term if total is None else ops.add(total, term)
        return total if total is not None else ops.mul(0.0, floats(values[0]))
    except DplError as e:
        raise e.at(span)
    except NUMERIC_ERRORS:
        shapes = " and ".join(dict.fromkeys(str(list(np.shape(raw(v)))) for v in values))
        raise DplError(f"`soft while` cannot average a state of shapes {shapes} with weights of shape "
                       f"{list(np.shape(raw(weights[0])))}: they do not broadcast", span) from None


# ---- optimizers, as values for the `train` block ------------------------------------------------------

class OptimizerSpec:
    def __init__(self, kind, **hyper):
        self.kind, self.hyper = kind, hyper

    def describe(self):
        return f"<{self.kind} optimizer>"


def _hyper(v, what):
    r = raw(v)
    if not is_tensor(r) or np.ndim(r) != 0 or kind(r) == "b":
        raise DplError(f"`{what}` must be a number, got {describe_type(v)}")
    return float(r)


@builtin()
def sgd(lr, momentum=0.0):
    """Stochastic gradient descent for a `train` block: step size lr, with `momentum` (default 0)."""
    return OptimizerSpec("sgd", lr=_hyper(lr, "lr"), momentum=_hyper(momentum, "momentum"))


@builtin()
def adam(lr=0.001, betas=None, eps=1e-8):
    """Adam for a `train` block: step lr, moment decays `betas` (default [0.9, 0.999]) and ε = eps."""
    b = (0.9, 0.999) if betas is None else _betas(betas)
    return OptimizerSpec("adam", lr=_hyper(lr, "lr"), betas=b, eps=_hyper(eps, "eps"))


def _betas(v) -> tuple:
    r = raw(v)
    if not is_tensor(r) or np.shape(r) != (2,) or kind(r) not in ("i", "u", "f"):
        raise DplError(f"`betas` must be two numbers, as [0.9, 0.999], got {describe_type(v)}")
    b = tuple(float(x) for x in B.to_host(r))
    if not all(0 <= x < 1 for x in b):
        raise DplError(f"`betas` must each lie in [0, 1), got {list(b)}")
    return b


@builtin()
def rmsprop(lr=0.01, alpha=0.99, eps=1e-8):
    """RMSProp for a `train` block: step lr, squared-gradient decay `alpha`, ε = eps."""
    return OptimizerSpec("rmsprop", lr=_hyper(lr, "lr"), alpha=_hyper(alpha, "alpha"), eps=_hyper(eps, "eps"))


# ---- training mode, attention maps, errors raised from DPL code (for the stdlib's layers) ---------------

@builtin(context=True)
def training(interp, span):
    """True while a `train` block computes its loss (so Dropout drops), false everywhere else (`dpl run`, the
    statements after a block, `grad` outside training). Plans are kept apart by this flag (dpl.record)."""
    return np.bool_(interp.training)


@builtin(context=True)
def show_attention(interp, span, weights):
    """`weights` unchanged; they join the maps `dpl attention` draws (e.g. one weight vector per step, stacked)."""
    interp.record_attention(span, tensor(weights, "weights"))
    return weights


@builtin(context=True)
def error(interp, span, *values):
    """Stop with a DplError at the call: its pieces printed as `print` does, separated by spaces."""
    from .values import format_value
    raise DplError(" ".join(format_value(v) for v in values) or "error", span)


CONSTANTS = {"pi": math.pi, "e": math.e}  # made tensors of the run's float dtype by the interpreter


from . import primitives  # noqa: E402,F401  (registers attention, memory, odeint and sparse builtins)
from . import linalg, numerics  # noqa: E402,F401  (the NumPy/SciPy functions of issue 11; linalg's norm replaces §9's)
from . import complexes  # noqa: E402,F401  (complex numbers and the FFTs; after the others: it marks which take complex)
