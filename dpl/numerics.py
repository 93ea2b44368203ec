"""NumPy/SciPy functions beyond LANGUAGE.md §9: new primitives with their VJPs, and the builtins (issue 11).

A function that is a composition of ops (square, sinc, var, cumprod, kron, ...)
is composed here rather than made a primitive, so its gradient is exact to any
order for free. VJPs are written in ops; masks a rule needs are computed by
recorded ops (`lt`, `eq`, ...) on its arguments, never from `raw` values.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import ops
from .builtins import _keep, axis_arg, builtin, check_axis, floats, integer, mean_of, tensor
from .errors import DplError
from .graph import raw
from .interp import describe_type, kind
from .limits import check_broadcast, check_elements
from .ops import add, defop, div, exp, mul, neg, sqrt, sub


def _special():
    """scipy.special, or cupyx.scipy.special on the GPU (imported only then)."""
    if B.xp is np:
        import scipy.special as sp
    else:  # pragma: no cover - GPU only
        import cupyx.scipy.special as sp
    return sp


def _like(out, x):
    """A result in x's float dtype (some scipy.special functions compute float32 input in float64)."""
    return B.xp.asarray(out).astype(B.xp.asarray(x).dtype, copy=False)


# ---- elementwise: no derivative (piecewise constant; the adjoint is 0 where it exists) -------------------

sign, floor = ops.sign, ops.floor  # registered in ops, whose VJP masks use them
ceil = defop("ceil")(lambda x: B.xp.ceil(x))
round_ = defop("round")(lambda x: B.xp.round(x))  # half to even, as NumPy

# ---- elementwise unary -------------------------------------------------------------------------------------

_LN2, _LN10 = math.log(2.0), math.log(10.0)
_TWO_OVER_SQRT_PI, _SQRT_PI_OVER_2 = 2.0 / math.sqrt(math.pi), math.sqrt(math.pi) / 2.0

log1p = defop("log1p", [lambda g, ans, x: div(g, add(x, 1.0))])(lambda x: B.xp.log1p(x))
expm1 = defop("expm1", [lambda g, ans, x: mul(g, add(ans, 1.0))])(lambda x: B.xp.expm1(x))
log2 = defop("log2", [lambda g, ans, x: div(g, mul(x, _LN2))])(lambda x: B.xp.log2(x))
log10 = defop("log10", [lambda g, ans, x: div(g, mul(x, _LN10))])(lambda x: B.xp.log10(x))
exp2 = defop("exp2", [lambda g, ans, x: mul(g, mul(ans, _LN2))])(lambda x: B.xp.exp2(x))
sinh = defop("sinh", [lambda g, ans, x: mul(g, cosh(x))])(lambda x: B.xp.sinh(x))
cosh = defop("cosh", [lambda g, ans, x: mul(g, sinh(x))])(lambda x: B.xp.cosh(x))
arcsin = defop("arcsin", [lambda g, ans, x: div(g, sqrt(sub(1.0, mul(x, x))))])(lambda x: B.xp.arcsin(x))
arccos = defop("arccos", [lambda g, ans, x: neg(div(g, sqrt(sub(1.0, mul(x, x)))))])(lambda x: B.xp.arccos(x))
arctan = defop("arctan", [lambda g, ans, x: div(g, add(mul(x, x), 1.0))])(lambda x: B.xp.arctan(x))
arcsinh = defop("arcsinh", [lambda g, ans, x: div(g, sqrt(add(mul(x, x), 1.0)))])(lambda x: B.xp.arcsinh(x))
arccosh = defop("arccosh", [lambda g, ans, x: div(g, sqrt(sub(mul(x, x), 1.0)))])(lambda x: B.xp.arccosh(x))
arctanh = defop("arctanh", [lambda g, ans, x: div(g, sub(1.0, mul(x, x)))])(lambda x: B.xp.arctanh(x))

erf = defop("erf", [lambda g, ans, x: mul(g, mul(_TWO_OVER_SQRT_PI, exp(neg(mul(x, x)))))]
            )(lambda x: _like(_special().erf(x), x))
erfc = defop("erfc", [lambda g, ans, x: mul(g, mul(-_TWO_OVER_SQRT_PI, exp(neg(mul(x, x)))))]
             )(lambda x: _like(_special().erfc(x), x))
erfinv = defop("erfinv", [lambda g, ans, x: mul(g, mul(_SQRT_PI_OVER_2, exp(mul(ans, ans))))]
               )(lambda x: _like(_special().erfinv(x), x))


@defop("polygamma", [lambda g, ans, x, n: mul(g, polygamma(x, n=n + 1))])
def polygamma(x, n):
    """ψ⁽ⁿ⁾(x); n = 0 is the digamma function. Its derivative is the next one, so every order is exact."""
    sp = _special()
    return _like(sp.digamma(x) if n == 0 else sp.polygamma(n, x), x)


lgamma = defop("lgamma", [lambda g, ans, x: mul(g, polygamma(x, n=0))])(lambda x: _like(_special().gammaln(x), x))
gamma = defop("gamma", [lambda g, ans, x: mul(g, mul(ans, polygamma(x, n=0)))])(lambda x: _like(_special().gamma(x), x))

# ---- elementwise binary --------------------------------------------------------------------------------------


def _arctan2_vjp(i):
    def rule(g, ans, y, x):
        r2 = add(mul(x, x), mul(y, y))
        return ops.unbroadcast(div(mul(g, x if i == 0 else neg(y)), r2), ops.shape(y if i == 0 else x))
    return rule


arctan2 = defop("arctan2", [_arctan2_vjp(0), _arctan2_vjp(1)])(lambda y, x: B.xp.arctan2(y, x))


def _hypot_vjp(i):
    def rule(g, ans, x, y):
        """x/h and y/h, taken as 0 where h = 0 (x and y are 0 there too, as for `norm`)."""
        zero = ops.eq(ans, 0.0)
        return ops.unbroadcast(mul(g, div(x if i == 0 else y, ops.where(zero, 1.0, ans))), ops.shape(x if i == 0 else y))
    return rule


hypot = defop("hypot", [_hypot_vjp(0), _hypot_vjp(1)])(lambda x, y: B.xp.hypot(x, y))


def _logaddexp_vjp(i):
    def rule(g, ans, x, y):
        return ops.unbroadcast(mul(g, exp(sub(x if i == 0 else y, ans))), ops.shape(x if i == 0 else y))
    return rule


logaddexp = defop("logaddexp", [_logaddexp_vjp(0), _logaddexp_vjp(1)])(lambda x, y: B.xp.logaddexp(x, y))

# ---- builtins: elementwise ------------------------------------------------------------------------------------


def _unary(op):
    def fn(x):
        """The elementwise function its name says, as NumPy or scipy.special has it, on floats."""
        return op(floats(x))
    return fn


for _op in (sign, floor, ceil, log1p, expm1, log2, log10, exp2, sinh, cosh, arcsin, arccos, arctan,
            arcsinh, arccosh, arctanh, erf, erfc, erfinv, lgamma, gamma):
    builtin(_op.name)(_unary(_op))
builtin("round")(_unary(round_))


def _binary(op):
    def fn(a, b):
        """The two-argument function its name says (arctan2(y, x), hypot(x, y), logaddexp(x, y)), elementwise on
        floats, broadcasting."""
        a, b = floats(a), floats(b)
        check_broadcast((np.shape(raw(a)), np.shape(raw(b))), f"`{op.name}`")
        return op(a, b)
    return fn


for _op in (arctan2, hypot, logaddexp):
    builtin(_op.name)(_binary(_op))


@builtin()
def square(x):
    """x² elementwise."""
    x = floats(x)
    return mul(x, x)


@builtin()
def reciprocal(x):
    """1 / x elementwise, on floats."""
    return div(1.0, floats(x))


@builtin()
def digamma(x):
    """ψ(x) = Γ′(x)/Γ(x) elementwise, as scipy.special.digamma."""
    return polygamma(floats(x), n=0)


@builtin("polygamma")
def polygamma_(n, x):
    """The n-th derivative of digamma at x (integer n ≥ 0), as scipy.special.polygamma."""
    n = integer(n, "n")
    if n < 0:
        raise DplError(f"`polygamma` needs an order n ≥ 0, got {n}")
    return polygamma(floats(x), n=n)


_SINC_SMALL = 1e-3  # below it the Taylor series to x⁴ is exact in float64 (next term ~ (πx)⁶/5040)


@builtin()
def sinc(x):
    """sin(πx)/(πx) as np.sinc; near 0 its Taylor series, so every derivative at 0 is right."""
    x = floats(x)
    small = ops.lt(ops.abs_(x), _SINC_SMALL)
    px = mul(math.pi, ops.where(small, 1.0, x))
    u = mul(mul(math.pi, x), mul(math.pi, x))
    series = add(sub(1.0, div(u, 6.0)), div(mul(u, u), 120.0))
    return ops.where(small, series, div(ops.sin(px), px))


# ---- sorting and scans ------------------------------------------------------------------------------------------

argsort = defop("argsort")(lambda x, axis: B.xp.argsort(x, axis=axis, kind="stable"))


def _along_key(idx, axis):
    """The fancy-index key that addresses idx's entries along `axis` (the other axes index themselves)."""
    nd = idx.ndim
    ax = axis % nd
    return tuple(idx if d == ax else B.xp.arange(idx.shape[d]).reshape((-1,) + (1,) * (nd - 1 - d))
                 for d in range(nd))


take_along = defop("take_along", [lambda g, ans, x, idx, axis: put_along(g, idx, axis=axis, shape=ops.shape(x)), None]
                   )(lambda x, idx, axis: B.xp.take_along_axis(x, idx, axis=axis))


@defop("put_along", [lambda g, ans, x, idx, axis, shape: take_along(g, idx, axis=axis), None])
def put_along(x, idx, axis, shape):
    """Adjoint of take_along: x's entries added into zeros of `shape` at idx along `axis` (repeats accumulate)."""
    out = B.xp.zeros(shape, dtype=x.dtype)
    key = _along_key(idx, axis)
    if B.xp is np:
        np.add.at(out, key, x)
    else:  # pragma: no cover - GPU only
        import cupyx
        cupyx.scatter_add(out, key, x)
    return out


@defop("cumsum", [lambda g, ans, x, axis, reverse=False: cumsum(g, axis=axis, reverse=not reverse)])
def cumsum(x, axis, reverse=False):
    """Running sums along `axis`; reversed, from the end (the adjoint of the forward one)."""
    if reverse:
        return B.xp.flip(B.xp.cumsum(B.xp.flip(x, axis), axis=axis), axis)
    return B.xp.cumsum(x, axis=axis)


def _along(ax, nd, key):
    """An index key that applies `key` to axis ax of an nd-dimensional tensor."""
    return (slice(None),) * (ax % nd) + (key,)


def _ones(x, shape):
    return B.xp.ones(shape, dtype=raw(x).dtype)


def cumprod_of(x, ax):
    """Running products by doubling (Hillis–Steele): log₂ n multiplications and no division, so the gradient
    is exact where x has zeros."""
    shp = np.shape(raw(x))
    nd, n, k, y = len(shp), shp[ax], 1, x
    while k < n:
        pad = _ones(x, shp[:ax] + (k,) + shp[ax + 1:])
        y = mul(y, ops.concat(pad, ops.index(y, key=_along(ax, nd, slice(0, n - k))), axis=ax))
        k *= 2
    return y


def _to_last(x, axis):
    """x with the axes reduced over moved to the end and merged into one; also the kept shape (keepdims)."""
    shp = np.shape(raw(x))
    nd = len(shp)
    axes = tuple(range(nd)) if axis is None else tuple(a % nd for a in (axis if isinstance(axis, tuple) else (axis,)))
    rest = tuple(d for d in range(nd) if d not in axes)
    if rest + axes != tuple(range(nd)):
        x = ops.transpose(x, perm=rest + axes)
    x = ops.reshape(x, shape=tuple(shp[d] for d in rest) + (math.prod(shp[a] for a in axes),))
    return x, tuple(1 if d in axes else shp[d] for d in range(nd))


def prod_of(x, axis=None, keepdims=False):
    """Products by pairwise multiplication (a tree of depth log₂ n, no division)."""
    y, kept = _to_last(x, axis)
    while np.shape(raw(y))[-1] > 1:
        shp = np.shape(raw(y))
        if shp[-1] % 2:
            y = ops.concat(y, _ones(x, shp[:-1] + (1,)), axis=-1)
        nd = len(shp)
        y = mul(ops.index(y, key=_along(-1, nd, slice(0, None, 2))), ops.index(y, key=_along(-1, nd, slice(1, None, 2))))
    shp = np.shape(raw(y))
    y = ops.reshape(y, shape=shp[:-1]) if shp[-1] == 1 else _ones(x, shp[:-1])  # the product of nothing is 1
    return ops.reshape(y, shape=kept) if keepdims else y


# ---- builtins: sorting and scans ----------------------------------------------------------------------------------

def one_axis(x, axis, what="axis"):
    """An integer axis of x (negative counts from the end), checked."""
    a = integer(axis, what)
    nd = np.ndim(raw(x))
    if not -max(nd, 1) <= a < max(nd, 1):
        raise DplError(f"`{what}` {a} is out of range for a tensor of shape {list(np.shape(raw(x)))}")
    return a % max(nd, 1)


def _flat_or(x, axis):
    """(x, axis): x flattened with axis 0 when axis is left out or "none" (NumPy's axis=None; spelled as vmap's
    in_axes spells it, DPL having no none value), else x and the checked axis."""
    if axis is None or axis == "none":
        return ops.reshape(x, shape=(-1,)), 0
    return x, one_axis(x, axis)


def _sortable(x, what):
    x = tensor(x)
    if kind(x) == "b":
        raise DplError(f"`{what}` needs numbers, got {describe_type(x)}")
    if np.ndim(raw(x)) == 0:
        raise DplError(f"`{what}` needs a tensor with at least one axis, got {describe_type(x)}")
    return x


@builtin()
def sort(x, axis=-1):
    """x sorted along `axis` (default the last), stable; the gradient goes back through the permutation."""
    x, ax = _flat_or(_sortable(x, "sort"), axis)
    return take_along(x, argsort(x, axis=ax), axis=ax)


@builtin("argsort")
def argsort_(x, axis=-1):
    """The integer indices that sort x along `axis` (default the last), stable."""
    x, ax = _flat_or(_sortable(x, "argsort"), axis)
    return argsort(x, axis=ax)


@builtin()
def take_along_axis(x, idx, axis=-1):
    """x's entries at the integer indices idx along `axis` (np.take_along_axis): undoes a sort when idx is
    argsort of the sorting permutation; the gradient scatters back, repeated indices accumulating."""
    x, idx = tensor(x), tensor(idx)
    if kind(idx) not in ("i", "u"):
        raise DplError(f"`take_along_axis` needs integer indices, got {describe_type(idx)}")
    ax = one_axis(x, axis)
    sx, si = np.shape(raw(x)), np.shape(raw(idx))
    if np.ndim(raw(x)) == 0 or len(si) != len(sx):
        raise DplError(f"`take_along_axis`: x {list(sx)} and idx {list(si)} need the same number of axes (at least 1)")
    try:
        out = tuple(si[d] if d == ax else np.broadcast_shapes((sx[d],), (si[d],))[0] for d in range(len(sx)))
    except ValueError:
        raise DplError(f"`take_along_axis`: idx {list(si)} does not fit x {list(sx)} on the axes other than {ax}") from None
    n, r = sx[ax], raw(idx)
    if r.size and (int(r.min()) < -n or int(r.max()) >= n):
        raise DplError(f"`take_along_axis`: an index is out of range for axis {ax} of size {n}")
    check_elements(out, "`take_along_axis`")
    if out != sx:
        x = ops.broadcast_to(x, shape=tuple(out[d] if d != ax else sx[d] for d in range(len(sx))))
    if out != si:
        idx = ops.broadcast_to(idx, shape=out)
    return take_along(x, idx, axis=ax)


@builtin()
def topk(x, k, axis=-1):
    """(values, indices) of the k largest entries along axis, largest first; ties keep the earlier index first."""
    x = _sortable(x, "topk")
    ax, k = one_axis(x, axis), integer(k, "k")
    n = np.shape(raw(x))[ax]
    if not 1 <= k <= n:
        raise DplError(f"`topk`: k must lie in 1..{n} (the size of axis {ax}), got {k}")
    idx = ops.index(argsort(neg(x), axis=ax), key=_along(ax, np.ndim(raw(x)), slice(0, k)))
    return take_along(x, idx, axis=ax), idx


@builtin("cumsum")
def cumsum_(x, axis=None):
    """Running sums along `axis` (without one: over the flattened tensor)."""
    x, ax = _flat_or(_sortable(x, "cumsum"), axis)
    return cumsum(x, axis=ax)


@builtin()
def cumprod(x, axis=None):
    """Running products along `axis` (without one: over the flattened tensor); exact gradients at zeros."""
    x, ax = _flat_or(_sortable(x, "cumprod"), axis)
    return cumprod_of(x, ax)


@builtin()
def prod(x, axis=None, keepdims=False):
    """The product of all entries, or over `axis`, as `sum`; exact gradients at zeros."""
    x = tensor(x)
    if kind(x) == "b":
        raise DplError(f"`prod` needs numbers, got {describe_type(x)}")
    return prod_of(x, check_axis(x, axis_arg(axis)), _keep(keepdims))


@builtin()
def diff(x, n=1, axis=-1):
    """The n-th discrete difference along `axis` (default the last), as np.diff."""
    x = _sortable(x, "diff")
    ax, n = one_axis(x, axis), integer(n, "n")
    if n < 0:
        raise DplError(f"`diff`: the order n must be ≥ 0, got {n}")
    nd = np.ndim(raw(x))
    for _ in range(n):
        x = sub(ops.index(x, key=_along(ax, nd, slice(1, None))), ops.index(x, key=_along(ax, nd, slice(None, -1))))
    return x


# ---- statistics ------------------------------------------------------------------------------------------------


def _count(x, axis):
    shp = np.shape(raw(x))
    return math.prod(shp) if axis is None else math.prod(shp[a] for a in (axis if isinstance(axis, tuple) else (axis,)))


def var_of(x, axis=None, ddof=0, keepdims=False):
    d = sub(x, mean_of(x, axis, keepdims=True))
    return div(ops.sum_(mul(d, d), axis=axis, keepdims=keepdims), float(_count(x, axis) - ddof))


def _ddof(x, axis, ddof):
    r = raw(tensor(ddof, "ddof"))
    if np.ndim(r) != 0 or kind(r) == "b":
        raise DplError(f"`ddof` must be a number, got {describe_type(ddof)}")
    if _count(x, axis) - float(r) <= 0:
        raise DplError(f"`ddof` = {float(r):g} leaves no degrees of freedom for {_count(x, axis)} elements")
    return float(r)


@builtin()
def var(x, axis=None, ddof=0, keepdims=False):
    """The variance over all entries or `axis`, dividing by N − ddof."""
    x = floats(x)
    axis = check_axis(x, axis_arg(axis))
    return var_of(x, axis, _ddof(x, axis, ddof), _keep(keepdims))


@builtin()
def std(x, axis=None, ddof=0, keepdims=False):
    """The standard deviation over all entries or `axis`, dividing by N − ddof."""
    x = floats(x)
    axis = check_axis(x, axis_arg(axis))
    return sqrt(var_of(x, axis, _ddof(x, axis, ddof), _keep(keepdims)))


def quantile_of(x, q, axis=None, keepdims=False):
    """NumPy's linear interpolation between the two sorted neighbours of position q·(n − 1); the gradient
    goes to those two neighbours (through the sort's permutation) and to q."""
    y, kept = _to_last(x, axis)
    shp = np.shape(raw(y))
    n, nd = shp[-1], len(shp)
    s = take_along(y, argsort(y, axis=-1), axis=-1)
    pos = mul(q, float(n - 1))                                       # [] or [m]
    lo = ops.floor_int(pos)
    hi = ops.minimum(add(lo, 1), n - 1)
    frac = sub(pos, ops.astype(lo, dtype=raw(x).dtype))
    m = np.shape(raw(q))
    idx_shape = shp[:-1] + (m[0] if m else 1,)

    def pick(i):
        i = ops.broadcast_to(ops.reshape(i, shape=(1,) * (nd - 1) + (-1,)), shape=idx_shape)
        return take_along(s, i, axis=-1)
    out = add(pick(lo), mul(sub(pick(hi), pick(lo)), frac))          # [..., m or 1]
    if not m:
        return ops.reshape(out, shape=kept if keepdims else shp[:-1])
    out = ops.transpose(out, perm=(nd - 1,) + tuple(range(nd - 1)))  # q's axis first, as NumPy
    return ops.reshape(out, shape=m + kept) if keepdims else out


def _quantile(x, q, axis, keepdims, what):
    x = floats(x)
    if np.size(raw(x)) == 0:
        raise DplError(f"`{what}` of an empty tensor")
    q = floats(q, "q")
    rq = raw(q)
    if np.ndim(rq) > 1:
        raise DplError(f"`q` must be a number or a 1-d tensor, got {describe_type(q)}")
    if not bool(B.xp.all((rq >= 0) & (rq <= 1))):
        raise DplError("`q` must lie in [0, 1]")
    return quantile_of(x, ops.astype(q, dtype=raw(x).dtype), check_axis(x, axis_arg(axis)), _keep(keepdims))


@builtin()
def quantile(x, q, axis=None, keepdims=False):
    """The q-quantile(s) (q in [0, 1], a number or 1-d) with linear interpolation, as np.quantile."""
    return _quantile(x, q, axis, keepdims, "quantile")


@builtin()
def median(x, axis=None, keepdims=False):
    """The median over all entries or `axis` (the mean of the two middle entries for an even count)."""
    return _quantile(x, B.xp.asarray(0.5, dtype=B.float_dtype), axis, keepdims, "median")


# ---- shapes ------------------------------------------------------------------------------------------------------

def _axes(x, axis):
    """All axes for none, else the checked axes of an integer or a list, as a tuple of non-negative ints."""
    nd = np.ndim(raw(x))
    a = axis_arg(axis)
    if a is None:
        return tuple(range(nd))
    check_axis(x, a)
    return tuple(sorted({i % max(nd, 1) for i in (a if isinstance(a, tuple) else (a,))}))


def _ints(v, what):
    """An integer, or a 1-d list of integers, as a tuple."""
    r = raw(v)
    if kind(r) in ("i", "u") and np.ndim(r) <= 1:
        return tuple(int(i) for i in np.ravel(B.to_host(r)))
    raise DplError(f"`{what}` must be an integer or a list of integers, got {describe_type(v)}")


def _gather(x, ax, idx):
    """x's entries along axis ax at the constant positions idx (a shape-derived constant, not data)."""
    return ops.index(x, key=_along(ax, np.ndim(raw(x)), B.xp.asarray(idx, dtype=np.int64)))


@builtin()
def split(x, sizes, axis=0):
    """A tuple of parts of x along `axis`: `sizes` a list of part sizes or a number of equal parts."""
    x = tensor(x)
    ax = one_axis(x, axis)
    n = np.shape(raw(x))[ax]
    s = _ints(sizes, "sizes")
    if np.ndim(raw(sizes)) == 0:
        if s[0] <= 0 or n % s[0]:
            raise DplError(f"`split`: {s[0]} equal parts do not divide an axis of size {n}")
        s = (n // s[0],) * s[0]
    if any(k < 0 for k in s) or sum(s) != n:
        raise DplError(f"`split`: sizes {list(s)} must be ≥ 0 and add up to the axis size {n}")
    starts = np.cumsum((0,) + s)
    nd = np.ndim(raw(x))
    return tuple(ops.index(x, key=_along(ax, nd, slice(int(a), int(b)))) for a, b in zip(starts[:-1], starts[1:]))


@builtin()
def flip(x, axis=None):
    """x reversed along `axis` (without one: along every axis)."""
    x = tensor(x)
    axes = _axes(x, axis)
    if not axes:
        return x
    return ops.index(x, key=tuple(slice(None, None, -1) if d in axes else slice(None) for d in range(max(axes) + 1)))


@builtin()
def roll(x, shift, axis=None):
    """x shifted cyclically by `shift` along `axis` (without one: over the flattened tensor)."""
    x = tensor(x)
    shifts = _ints(shift, "shift")
    if axis is None:
        if len(shifts) != 1:
            raise DplError("`roll` without `axis` takes one shift")
        shp = np.shape(raw(x))
        flat = ops.reshape(x, shape=(-1,))
        return ops.reshape(_gather(flat, 0, np.roll(np.arange(math.prod(shp)), shifts[0])), shape=shp)
    axes = [one_axis(x, a) for a in _ints(axis, "axis")]
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(shifts) != len(axes):
        raise DplError(f"`roll`: {len(shifts)} shifts for {len(axes)} axes")
    for s, a in zip(shifts, axes):
        x = _gather(x, a, np.roll(np.arange(np.shape(raw(x))[a]), s))
    return x


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


@builtin()
def pad(x, width, mode="constant", value=0.0):
    """np.pad: width is n, [before, after] or one [before, after] per axis; "constant" pads with `value`
    (differentiable), the other modes repeat x's own entries."""
    x = floats(x)
    nd = np.ndim(raw(x))
    w = np.asarray(B.to_host(raw(tensor(width, "width"))))
    if w.dtype.kind not in "iu" or w.ndim > 2 or (w.ndim == 2 and w.shape != (nd, 2)) or (w.ndim == 1 and w.size != 2):
        raise DplError(f"`pad`: width must be n, [before, after] or [[before, after], ...] with one pair per axis "
                       f"({nd}), got {describe_type(width)}")
    if (w < 0).any():
        raise DplError("`pad`: widths must be ≥ 0")
    w = np.broadcast_to(w, (nd, 2))
    if mode not in _PAD_MODES:
        raise DplError(f"`pad`: mode must be one of {', '.join(repr(m) for m in _PAD_MODES)}, got "
                       f"{describe_type(mode)}")
    v = floats(value, "value")
    if np.ndim(raw(v)) != 0:
        raise DplError(f"`pad`: value must be a number, got {describe_type(value)}")
    check_elements([n + int(b) + int(a) for n, (b, a) in zip(np.shape(raw(x)), w)], "`pad`")
    for ax in range(nd):
        before, after = (int(i) for i in w[ax])
        shp = np.shape(raw(x))
        if not before and not after:
            continue
        if mode == "constant":
            parts = [ops.add(B.xp.zeros(shp[:ax] + (k,) + shp[ax + 1:], dtype=raw(x).dtype), v) if k else None
                     for k in (before, after)]
            x = ops.concat(*[p for p in (parts[0], x, parts[1]) if p is not None], axis=ax)
        else:
            if shp[ax] == 0:
                raise DplError(f"`pad`: mode {mode!r} cannot pad an empty axis")
            x = _gather(x, ax, np.pad(np.arange(shp[ax]), (before, after), mode=mode))
    return x


@builtin()
def repeat(x, repeats, axis=None):
    """Each entry repeated `repeats` times along `axis` (without one: of the flattened tensor)."""
    x = tensor(x)
    if axis is None:
        x, ax = ops.reshape(x, shape=(-1,)), 0
    else:
        ax = one_axis(x, axis)
    n = np.shape(raw(x))[ax]
    r = _ints(repeats, "repeats")
    if len(r) not in (1, n) or any(k < 0 for k in r):
        raise DplError(f"`repeat`: repeats must be ≥ 0, one count or one per entry ({n}), got {list(r)}")
    shp = np.shape(raw(x))
    check_elements(shp[:ax] + (sum(r) if len(r) == n else n * r[0],) + shp[ax + 1:], "`repeat`")
    return _gather(x, ax, np.repeat(np.arange(n), r if len(r) == n else r[0]))


@builtin()
def tile(x, reps):
    """x tiled `reps` times along each axis, as np.tile."""
    x = tensor(x)
    r = _ints(reps, "reps")
    if any(k < 0 for k in r):
        raise DplError(f"`tile`: reps must be ≥ 0, got {list(r)}")
    shp = np.shape(raw(x))
    nd = max(len(shp), len(r))
    shp, r = (1,) * (nd - len(shp)) + shp, (1,) * (nd - len(r)) + r
    check_elements([k * n for k, n in zip(r, shp)], "`tile`")
    x = ops.reshape(x, shape=tuple(d for n in shp for d in (1, n)))      # a size-1 axis before each axis
    x = ops.broadcast_to(x, shape=tuple(d for k, n in zip(r, shp) for d in (k, n)))
    return ops.reshape(x, shape=tuple(k * n for k, n in zip(r, shp)))


def _matrix(x, what):
    x = tensor(x)
    if np.ndim(raw(x)) < 2:
        raise DplError(f"`{what}` needs a tensor with at least 2 axes, got {describe_type(x)}")
    return x


def _triangle(x, k, upper):
    n, m = np.shape(raw(x))[-2:]
    mask = np.tri(n, m, k - 1 if upper else k, dtype=bool)
    keep = B.xp.asarray(~mask if upper else mask)
    return ops.where(keep, x, B.xp.zeros((), dtype=raw(x).dtype))


@builtin()
def tril(x, k=0):
    """The lower triangle of the last two axes, from diagonal k up (the rest 0)."""
    return _triangle(_matrix(x, "tril"), integer(k, "k"), False)


@builtin()
def triu(x, k=0):
    """The upper triangle of the last two axes, from diagonal k up (the rest 0)."""
    return _triangle(_matrix(x, "triu"), integer(k, "k"), True)


def diagonal_of(x, offset=0, axis1=-2, axis2=-1):
    """The diagonal of axes axis1, axis2 as the last axis (NumPy's layout), gathered at constant positions."""
    nd = np.ndim(raw(x))
    a1, a2 = axis1 % nd, axis2 % nd
    rest = tuple(d for d in range(nd) if d not in (a1, a2))
    x = ops.transpose(x, perm=rest + (a1, a2)) if rest + (a1, a2) != tuple(range(nd)) else x
    n, m = np.shape(raw(x))[-2:]
    length = max(0, min(n, m - offset) if offset >= 0 else min(n + offset, m))
    rows = B.xp.arange(length) + max(0, -offset)
    return ops.index(x, key=(slice(None),) * len(rest) + (rows, rows + offset))


@builtin()
def diagonal(x, offset=0, axis1=0, axis2=1):
    """The diagonal `offset` of the axes axis1 and axis2, as the new last axis."""
    x = _matrix(x, "diagonal")
    a1, a2 = one_axis(x, axis1, "axis1"), one_axis(x, axis2, "axis2")
    if a1 == a2:
        raise DplError("`diagonal`: axis1 and axis2 must differ")
    return diagonal_of(x, integer(offset, "offset"), a1, a2)


@builtin()
def diag(x, k=0):
    """As np.diag: the k-th diagonal of a matrix, or a square matrix with a vector on its k-th diagonal."""
    x, k = tensor(x), integer(k, "k")
    if np.ndim(raw(x)) == 2:
        return diagonal_of(x, k)
    if np.ndim(raw(x)) != 1:
        raise DplError(f"`diag` takes a vector or a matrix, got {describe_type(x)}")
    n = np.shape(raw(x))[0]
    check_elements((n + abs(k), n + abs(k)), "`diag`")
    rows = B.xp.arange(n) + max(0, -k)
    return ops.scatter_add(x, key=(rows, rows + k), shape=(n + abs(k), n + abs(k)))


@builtin()
def trace(x, offset=0, axis1=0, axis2=1):
    """The sum of the diagonal `offset` of the axes axis1 and axis2."""
    return ops.sum_(diagonal(x, offset, axis1, axis2), axis=-1)


@builtin()
def outer(a, b):
    """The outer product of a and b (flattened)."""
    a, b = _promote_all([a, b], "outer")
    check_elements((np.size(raw(a)), np.size(raw(b))), "`outer`")
    return mul(ops.reshape(a, shape=(-1, 1)), ops.reshape(b, shape=(1, -1)))


def _promote_all(xs, what):
    """Tensors of numbers, all floats (or complex) if any is (integers alone stay integers)."""
    xs = [tensor(x) for x in xs]
    if any(kind(x) == "b" for x in xs):
        raise DplError(f"`{what}` needs numbers, got a boolean tensor")
    return [ops.astype(x, dtype=B.float_dtype) if kind(x) not in "fc" else x for x in xs] \
        if any(kind(x) in "fc" for x in xs) else xs


@builtin()
def kron(a, b):
    """The Kronecker product of a and b."""
    a, b = _promote_all([a, b], "kron")
    sa, sb = np.shape(raw(a)), np.shape(raw(b))
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    check_elements([m * n for m, n in zip(sa, sb)], "`kron`")
    a = ops.reshape(a, shape=tuple(d for n in sa for d in (n, 1)))
    b = ops.reshape(b, shape=tuple(d for n in sb for d in (1, n)))
    return ops.reshape(mul(a, b), shape=tuple(m * n for m, n in zip(sa, sb)))


@builtin()
def tensordot(a, b, axes=2):
    """Sums over the last `axes` axes of a and the first of b, or over [[axes of a], [axes of b]]."""
    a, b = _promote_all([a, b], "tensordot")
    sa, sb = np.shape(raw(a)), np.shape(raw(b))
    r = np.asarray(B.to_host(raw(tensor(axes, "axes"))))
    if r.dtype.kind not in "iu" or not (r.ndim == 0 or (r.ndim == 2 and r.shape[0] == 2)):
        raise DplError(f"`tensordot`: axes must be n or [[axes of a], [axes of b]], got {describe_type(axes)}")
    if r.ndim == 0:
        if not 0 <= int(r) <= min(len(sa), len(sb)):
            raise DplError(f"`tensordot`: cannot contract {int(r)} axes of shapes {list(sa)} and {list(sb)}")
        xa, xb = tuple(range(len(sa) - int(r), len(sa))), tuple(range(int(r)))
    else:
        xa, xb = (tuple(one_axis(v, int(i)) for i in row) for v, row in ((a, r[0]), (b, r[1])))
    if [sa[i] for i in xa] != [sb[i] for i in xb] or len(set(xa)) < len(xa) or len(set(xb)) < len(xb):
        raise DplError(f"`tensordot`: axes {list(xa)} of {list(sa)} do not match axes {list(xb)} of {list(sb)}")
    fa = tuple(d for d in range(len(sa)) if d not in xa)
    fb = tuple(d for d in range(len(sb)) if d not in xb)
    check_elements([sa[i] for i in fa] + [sb[i] for i in fb], "`tensordot`")
    k = math.prod(sa[i] for i in xa)
    a2 = ops.reshape(ops.transpose(a, perm=fa + xa), shape=(math.prod(sa[i] for i in fa), k))
    b2 = ops.reshape(ops.transpose(b, perm=xb + fb), shape=(k, math.prod(sb[i] for i in fb)))
    return ops.reshape(ops.matmul(a2, b2), shape=tuple(sa[i] for i in fa) + tuple(sb[i] for i in fb))


# ---- einsum --------------------------------------------------------------------------------------------------


def _einsum_terms(spec):
    ins, out = spec.split("->")
    return ins.split(","), out


def _einsum_vjp(i):
    def rule(g, ans, *xs, spec):
        """Operand i's adjoint is an einsum of g with the other operands; letters only operand i has are
        summed in the forward pass, so its adjoint is broadcast along them."""
        ins, out = _einsum_terms(spec)
        others = [t for j, t in enumerate(ins) if j != i]
        have = set(out).union(*others)
        keep = "".join(c for c in ins[i] if c in have)
        gi = einsum(g, *(x for j, x in enumerate(xs) if j != i), spec=",".join([out] + others) + "->" + keep)
        if keep == ins[i]:
            return gi
        shp = ops.shape(xs[i])
        gi = ops.reshape(gi, shape=tuple(n if c in have else 1 for c, n in zip(ins[i], shp)))
        return ops.broadcast_to(gi, shape=shp)
    return rule


einsum = defop("einsum", _einsum_vjp)(
    lambda *xs, spec: B.xp.einsum(spec, *xs, **({"optimize": True} if len(xs) > 2 and B.xp is np else {})))


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@builtin("einsum")
def einsum_(spec, *operands):
    """np.einsum: explicit (`->`) or implicit output, `...` for broadcast batch axes, a letter repeated in one
    operand takes its diagonal. The primitive sees distinct letters per operand and no `...`."""
    if not isinstance(spec, str):
        raise DplError(f"`einsum` takes a subscripts string first, got {describe_type(spec)}")
    if not operands:
        raise DplError("`einsum` needs at least one operand")
    xs = _promote_all(operands, "einsum")
    s = spec.replace(" ", "")
    lhs, arrow, out = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise DplError(f"`einsum`: {spec!r} has {len(terms)} operand term{'s' * (len(terms) != 1)}, "
                       f"got {len(xs)} operand{'s' * (len(xs) != 1)}")
    for t in terms + [out]:
        bad = set(t.replace("...", "", 1)) - set(_LETTERS)
        if bad or t.count("...") > 1:
            raise DplError(f"`einsum`: bad subscripts {spec!r} (letters, at most one `...` per term)")
    free = [c for c in _LETTERS if c not in s]
    ell_nd = 0
    for t, x in zip(terms, xs):
        named = len(t.replace("...", ""))
        nd = np.ndim(raw(x))
        if ("..." in t and nd < named) or ("..." not in t and nd != named):
            raise DplError(f"`einsum`: term {t!r} does not fit an operand of shape {list(np.shape(raw(x)))}")
        if "..." in t:
            ell_nd = max(ell_nd, nd - named)
    ell = "".join(free[:ell_nd])
    # an operand's `...` stands for the last of the batch letters (its axes align to the right, as broadcasting)
    terms = [t.replace("...", ell[ell_nd - (np.ndim(raw(x)) - len(t) + 3):]) for t, x in zip(terms, xs)]
    letters = "".join(terms)
    if arrow:
        if "..." not in out and ell:
            raise DplError(f"`einsum`: {spec!r} has `...` in an operand but not in the output")
        out = out.replace("...", ell)
        if len(set(out)) < len(out) or set(out) - set(letters):
            raise DplError(f"`einsum`: output {out!r} repeats a letter or names one no operand has")
    else:
        out = ell + "".join(sorted(c for c in set(letters) - set(ell) if letters.count(c) == 1))
    sizes = {}
    for t, x in zip(terms, xs):
        for c, n in zip(t, np.shape(raw(x))):
            if c in ell and n == 1:
                continue
            if sizes.setdefault(c, n) != n:
                if c in ell:
                    raise DplError(f"`einsum`: the `...` axes of the operands do not broadcast "
                                   f"({', '.join(str(list(np.shape(raw(x)))) for x in xs)})")
                raise DplError(f"`einsum`: {c!r} has size {sizes[c]} in one place and {n} in another")
    check_elements([sizes.get(c, 1) for c in out], "`einsum`")
    ready, ready_terms = [], []
    for t, x in zip(terms, xs):
        while len(set(t)) < len(t):  # a repeated letter: take the diagonal of its first two axes
            c = next(c for c in t if t.count(c) > 1)
            i, j = t.index(c), t.index(c, t.index(c) + 1)
            x = diagonal_of(x, 0, i, j)
            t = "".join(d for k, d in enumerate(t) if k not in (i, j)) + c
        drop = [k for k, c in enumerate(t) if c in ell and np.shape(raw(x))[k] == 1 and sizes.get(c, 1) != 1]
        if drop:  # a broadcast batch axis: leave it out of this operand
            x = ops.reshape(x, shape=tuple(n for k, n in enumerate(np.shape(raw(x))) if k not in drop))
            t = "".join(c for k, c in enumerate(t) if k not in drop)
        ready.append(x)
        ready_terms.append(t)
    return einsum(*ready, spec=",".join(ready_terms) + "->" + out)
