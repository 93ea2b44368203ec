"""The op registry: each primitive's forward and its VJPs side by side.

Forwards call the array namespace `B.xp`. VJPs are written in these same ops
(never raw xp on adjoints), so a backward pass that is itself being traced is
recorded and differentiates again. Masks and conditions are computed with ops
too (gt, eq, sign, floor: no derivative), so in a recorded backward pass they
are nodes connected to x and a replay at new inputs recomputes them; only
shapes and dtypes are read with `raw`. On plain arrays the same ops just run.
"""
from __future__ import annotations

import numpy as np

from . import backend as B
from .graph import Box, apply, raw

REGISTRY: dict[str, "Op"] = {}


class Op:
    """A primitive: `fwd(*args, **attrs)` and `vjps[i](g, ans, *args, **attrs)` for argument i.

    `vjps` is None for ops with no derivative (comparisons, argmax); an entry
    None marks an argument that takes no gradient (a condition, an index).
    """

    __slots__ = ("name", "fwd", "vjps")

    def __init__(self, name, fwd, vjps):
        if name in REGISTRY:  # two modules defining one name would silently replace each other's op
            raise ValueError(f"op `{name}` is registered twice")
        self.name, self.fwd, self.vjps = name, fwd, vjps
        REGISTRY[name] = self

    def __call__(self, *args, **attrs):
        return apply(self, *args, **attrs)

    def vjp(self, i, g, ans, args, attrs):
        rule = self.vjps(i) if callable(self.vjps) else self.vjps[i]
        return None if rule is None else real_adjoint(rule(g, ans, *args, **attrs), args[i])

    def __repr__(self):
        return f"<op {self.name}>"


def defop(name, vjps=None):
    def wrap(fwd):
        return Op(name, fwd, vjps)
    return wrap


def real_adjoint(gi, x):
    """The adjoint of a real argument is real: a complex adjoint (from a complex result the argument was
    promoted into) is projected on its real part, as JAX's convert_element_type transposes (LANGUAGE.md,
    complex numbers). Every VJP goes through here, in a backward pass and in a replay plan alike."""
    dt = getattr(raw(gi), "dtype", None)
    return real(gi) if dt is not None and dt.kind == "c" and raw(x).dtype.kind != "c" else gi


def shape(v):
    v = raw(v)
    s = getattr(v, "shape", None)  # arrays and numpy scalars; np.shape's dispatch costs more than most ops
    return np.shape(v) if s is None else s


def unbroadcast(g, target_shape):
    """Sum an adjoint down to the shape of the operand that was broadcast."""
    return g if shape(g) == tuple(target_shape) else sum_to(g, shape=tuple(target_shape))


def _keep_shape(xshape, axis):
    """The shape a reduction over `axis` has with keepdims=True."""
    if axis is None:
        return (1,) * len(xshape)
    axes = {a % len(xshape) for a in (axis if isinstance(axis, tuple) else (axis,))}
    return tuple(1 if i in axes else d for i, d in enumerate(xshape))


def _expand(g, x, axis, keepdims):
    """An adjoint of a reduction, reshaped and broadcast back to x's shape."""
    if not keepdims:
        g = reshape(g, shape=_keep_shape(shape(x), axis))
    return broadcast_to(g, shape=shape(x))


# ---- elementwise unary ---------------------------------------------------------

neg = defop("neg", [lambda g, ans, x: neg(g)])(lambda x: B.xp.negative(x))
exp = defop("exp", [lambda g, ans, x: mul(g, ans)])(lambda x: B.xp.exp(x))
log = defop("log", [lambda g, ans, x: div(g, x)])(lambda x: B.xp.log(x))
sin = defop("sin", [lambda g, ans, x: mul(g, cos(x))])(lambda x: B.xp.sin(x))
cos = defop("cos", [lambda g, ans, x: neg(mul(g, sin(x)))])(lambda x: B.xp.cos(x))
tan = defop("tan", [lambda g, ans, x: mul(g, add(1.0, mul(ans, ans)))])(lambda x: B.xp.tan(x))
tanh = defop("tanh", [lambda g, ans, x: mul(g, sub(1.0, mul(ans, ans)))])(lambda x: B.xp.tanh(x))
sqrt = defop("sqrt", [lambda g, ans, x: div(g, mul(2.0, ans))])(lambda x: B.xp.sqrt(x))
abs_ = defop("abs", [lambda g, ans, x: mul(g, sign(x))])(lambda x: B.xp.abs(x))
relu = defop("relu", [lambda g, ans, x: mul(g, gt(x, 0))])(lambda x: B.xp.maximum(x, 0))


@defop("sigmoid", [lambda g, ans, x: mul(g, mul(ans, sub(1.0, ans)))])
def sigmoid(x):
    return B.special().expit(x)  # stable for any x, in one pass


softplus = defop("softplus", [lambda g, ans, x: mul(g, sigmoid(x))])(lambda x: B.xp.logaddexp(0, x))


# ---- elementwise binary --------------------------------------------------------

add = defop("add", [lambda g, ans, x, y: unbroadcast(g, shape(x)),
                    lambda g, ans, x, y: unbroadcast(g, shape(y))])(lambda x, y: x + y)
sub = defop("sub", [lambda g, ans, x, y: unbroadcast(g, shape(x)),
                    lambda g, ans, x, y: unbroadcast(neg(g), shape(y))])(lambda x, y: x - y)
mul = defop("mul", [lambda g, ans, x, y: unbroadcast(mul(g, y), shape(x)),
                    lambda g, ans, x, y: unbroadcast(mul(g, x), shape(y))])(lambda x, y: x * y)
div = defop("div", [lambda g, ans, x, y: unbroadcast(div(g, y), shape(x)),
                    lambda g, ans, x, y: unbroadcast(neg(mul(g, div(ans, y))), shape(y))])(lambda x, y: x / y)
mod = defop("mod", [lambda g, ans, x, y: unbroadcast(g, shape(x)),
                    lambda g, ans, x, y: unbroadcast(neg(mul(g, floor(div(x, y)))), shape(y))]
            )(lambda x, y: B.xp.mod(x, y))
stop_gradient = defop("stop_gradient")(lambda x: x)  # an identity through which no adjoint flows
floordiv = defop("floordiv")(lambda x, y: B.xp.floor_divide(x, y))  # piecewise constant: no adjoint


def _pow_dx(g, ans, x, y):
    """∂/∂x of x^y = y x^(y-1), taken as 0 at x = y = 0 (x^0 = 1 is constant; the formula is 0 · ∞ there).

    With x replaced by 1 at those points the formula stays finite, so no NaN reaches higher orders. An
    exponent that is no traced value here is a constant of any recording: when it has no zero (x ^ 2, the
    common case) the mask is left out.
    """
    if type(y) is not Box and bool(y.all() if hasattr(y, "all") else y != 0):
        return unbroadcast(mul(g, mul(y, power(x, sub(y, 1)))), shape(x))
    bad = logical_and(eq(x, 0), eq(y, 0))
    safe_x = where(bad, 1.0, x)
    return unbroadcast(where(bad, 0.0, mul(g, mul(y, power(safe_x, sub(y, 1))))), shape(x))


def _pow_dy(g, ans, x, y):
    """∂/∂y of x^y = x^y log x, taken as 0 where x = 0 (LANGUAGE.md §9)."""
    zero = eq(x, 0)
    safe_x = where(zero, 1.0, x)
    return unbroadcast(where(zero, 0.0, mul(g, mul(ans, log(safe_x)))), shape(y))


power = defop("pow", [_pow_dx, _pow_dy])(lambda x, y: B.xp.power(x, y))


def _tie_share(g, x, y):
    """g where x wins, g/2 where tied, 0 where it loses: ties share the adjoint equally (g's dtype is kept)."""
    return where(gt(x, y), g, where(eq(x, y), mul(0.5, g), 0.0))


maximum = defop("maximum", [lambda g, ans, x, y: unbroadcast(_tie_share(g, x, y), shape(x)),
                            lambda g, ans, x, y: unbroadcast(_tie_share(g, y, x), shape(y))]
                )(lambda x, y: B.xp.maximum(x, y))
minimum = defop("minimum", [lambda g, ans, x, y: unbroadcast(_tie_share(g, y, x), shape(x)),
                            lambda g, ans, x, y: unbroadcast(_tie_share(g, x, y), shape(y))]
                )(lambda x, y: B.xp.minimum(x, y))

where = defop("where", [None,
                        lambda g, ans, c, x, y: unbroadcast(where(c, g, 0.0), shape(x)),
                        lambda g, ans, c, x, y: unbroadcast(where(c, 0.0, g), shape(y))]
              )(lambda c, x, y: B.xp.where(c, x, y))


clip = defop("clip", [lambda g, ans, x, lo, hi: unbroadcast(mul(g, logical_and(ge(x, lo), le(x, hi))), shape(x)),
                      lambda g, ans, x, lo, hi: unbroadcast(mul(g, lt(x, lo)), shape(lo)),
                      lambda g, ans, x, lo, hi: unbroadcast(mul(g, gt(x, hi)), shape(hi))]
             )(lambda x, lo, hi: B.xp.minimum(B.xp.maximum(x, lo), hi))

# ---- not differentiable: comparisons, logic, integer results ----------------------

lt = defop("lt")(lambda x, y: B.xp.less(x, y))
le = defop("le")(lambda x, y: B.xp.less_equal(x, y))
gt = defop("gt")(lambda x, y: B.xp.greater(x, y))
ge = defop("ge")(lambda x, y: B.xp.greater_equal(x, y))
eq = defop("eq")(lambda x, y: B.xp.equal(x, y))
ne = defop("ne")(lambda x, y: B.xp.not_equal(x, y))
logical_and = defop("and")(lambda x, y: B.xp.logical_and(x, y))
logical_or = defop("or")(lambda x, y: B.xp.logical_or(x, y))
logical_not = defop("not")(lambda x: B.xp.logical_not(x))
any_ = defop("any")(lambda x, axis=None: B.xp.any(x, axis=axis))
all_ = defop("all")(lambda x, axis=None: B.xp.all(x, axis=axis))
argmax = defop("argmax")(lambda x, axis=None: B.xp.argmax(x, axis=axis))
argmin = defop("argmin")(lambda x, axis=None: B.xp.argmin(x, axis=axis))
sign = defop("sign")(lambda x: B.xp.sign(x))
floor = defop("floor")(lambda x: B.xp.floor(x))
isfinite = defop("isfinite")(lambda x: B.xp.isfinite(x))
floor_int = defop("int")(lambda x: B.xp.trunc(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64))


def _cast_vjp(g, ans, x, dtype):
    if raw(x).dtype.kind != "f":
        return None
    g = real(g) if raw(g).dtype.kind == "c" else g  # float -> complex: the real part flows back
    return astype(g, dtype=raw(x).dtype)


astype = defop("astype", [_cast_vjp])(lambda x, dtype: B.xp.asarray(x).astype(dtype))

# ---- complex parts (JAX's convention: a VJP is the transpose of the R-linear map under Re(ḡ·dz)) --------------

real = defop("real", [lambda g, ans, x: astype(g, dtype=raw(x).dtype) if raw(x).dtype.kind == "c" else g]
            )(lambda x: B.xp.real(x))
imag = defop("imag", [lambda g, ans, x: mul(g, -1j)])(lambda x: B.xp.imag(x))
conj = defop("conj", [lambda g, ans, x: conj(g)])(lambda x: B.xp.conj(x))

# ---- linear algebra ----------------------------------------------------------------


def _matmul_vjp(i):
    def rule(g, ans, a, b):
        sa, sb = shape(a), shape(b)
        a2 = reshape(a, shape=(1,) + sa) if len(sa) == 1 else a
        b2 = reshape(b, shape=sb + (1,)) if len(sb) == 1 else b
        # put back the axes matmul dropped for a 1-D operand (m after the batch dims, then n before it)
        gs = shape(g) + (1,) if len(sb) == 1 else shape(g)
        gs = gs[:-1] + (1,) + gs[-1:] if len(sa) == 1 else gs
        g2 = reshape(g, shape=gs) if len(sa) == 1 or len(sb) == 1 else g
        if i == 0:
            ga = matmul(g2, swapaxes(b2))
            return unbroadcast(ga, sa) if len(sa) > 1 else reshape(sum_to(ga, shape=(1,) + sa), shape=sa)
        gb = matmul(swapaxes(a2), g2)
        return unbroadcast(gb, sb) if len(sb) > 1 else reshape(sum_to(gb, shape=sb + (1,)), shape=sb)
    return rule


matmul = defop("matmul", [_matmul_vjp(0), _matmul_vjp(1)])(lambda a, b: B.xp.matmul(a, b))
swapaxes = defop("swapaxes", [lambda g, ans, x: swapaxes(g)])(lambda x: B.xp.swapaxes(x, -1, -2))

# ---- shape ---------------------------------------------------------------------------

reshape = defop("reshape", [lambda g, ans, x, shape: reshape(g, shape=np.shape(raw(x)))]
                )(lambda x, shape: B.xp.reshape(x, shape))
transpose = defop("transpose", [lambda g, ans, x, perm: transpose(g, perm=_inverse(perm))]
                  )(lambda x, perm: B.xp.transpose(x, perm))


def _inverse(perm):
    """The permutation that undoes `perm`, whose axes may count from the end as in np.transpose."""
    return tuple(np.argsort([p % len(perm) for p in perm]))
broadcast_to = defop("broadcast_to", [lambda g, ans, x, shape: sum_to(g, shape=np.shape(raw(x)))]
                     )(lambda x, shape: B.xp.broadcast_to(x, shape))


@defop("sum_to", [lambda g, ans, x, shape: broadcast_to(g, shape=np.shape(raw(x)))])
def sum_to(x, shape):
    """Sum x down to a shape it was broadcast from (the inverse of broadcast_to)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    return B.xp.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else x.reshape(shape)


def _has_array(key):
    return any(hasattr(k, "dtype") for k in key)


@defop("index", [lambda g, ans, x, key: scatter_add(g, key=key, shape=np.shape(raw(x)))])
def index(x, key):
    return x[key]


@defop("scatter_add", [lambda g, ans, x, key, shape: index(g, key=key)])
def scatter_add(x, key, shape):
    """Adjoint of indexing: repeated indices accumulate (np.add.at; cupyx.scatter_add on GPU)."""
    out = B.xp.zeros(shape, dtype=x.dtype)
    if not _has_array(key):
        out[key] += x
    elif B.xp is np:
        np.add.at(out, key, x)
    else:  # pragma: no cover - GPU only
        import cupyx
        cupyx.scatter_add(out, key, x)
    return out


def _split(axis, i):
    def rule(g, ans, *xs, axis=axis):
        ax = axis % np.ndim(raw(ans))
        start = sum(np.shape(raw(x))[ax] for x in xs[:i])
        key = (slice(None),) * ax + (slice(start, start + np.shape(raw(xs[i]))[ax]),)
        return index(g, key=key)
    return rule


concat = defop("concat", lambda i: _split(None, i))(lambda *xs, axis: B.xp.concatenate(xs, axis=axis))


def _unstack(i):
    def rule(g, ans, *xs, axis):
        ax = axis % np.ndim(raw(ans))
        return index(g, key=(slice(None),) * ax + (i,))
    return rule


stack = defop("stack", lambda i: _unstack(i))(lambda *xs, axis: B.xp.stack(xs, axis=axis))

# ---- reductions ------------------------------------------------------------------------

sum_ = defop("sum", [lambda g, ans, x, axis=None, keepdims=False: _expand(g, x, axis, keepdims)]
             )(lambda x, axis=None, keepdims=False: B.xp.sum(x, axis=axis, keepdims=keepdims))


def _extremum_vjp(g, ans, x, axis=None, keepdims=False):
    """Tied extrema share the adjoint equally."""
    hit = astype(eq(x, ans if keepdims else reshape(ans, shape=_keep_shape(shape(x), axis))), dtype=raw(x).dtype)
    return mul(_expand(g, x, axis, keepdims), div(hit, sum_(hit, axis=axis, keepdims=True)))


amax = defop("max", [_extremum_vjp])(lambda x, axis=None, keepdims=False: B.xp.max(x, axis=axis, keepdims=keepdims))
amin = defop("min", [_extremum_vjp])(lambda x, axis=None, keepdims=False: B.xp.min(x, axis=axis, keepdims=keepdims))


@defop("logsumexp", [lambda g, ans, x, axis=None, keepdims=False:
                     mul(_expand(g, x, axis, keepdims), exp(sub(x, _expand(ans, x, axis, keepdims))))])
def logsumexp(x, axis=None, keepdims=False):
    m = _shift(x, axis)
    m = B.xp.where(B.xp.isfinite(m), m, 0)
    out = B.xp.log(B.xp.sum(B.xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else out.reshape(np.shape(B.xp.sum(x, axis=axis)))


def _shift(x, axis):
    """The max over axis (kept), -inf over an empty axis: logsumexp of nothing is -inf, softmax of it empty."""
    if x.size == 0:
        return B.xp.full(_keep_shape(x.shape, axis), -B.xp.inf, dtype=x.dtype)
    return B.xp.max(x, axis=axis, keepdims=True)


def _softmax_vjp(g, ans, x, *mask, axis):
    return mul(ans, sub(g, sum_(mul(g, ans), axis=axis, keepdims=True)))


@defop("softmax", [_softmax_vjp])
def softmax(x, axis):
    e = B.xp.exp(x - _shift(x, axis))
    return e / B.xp.sum(e, axis=axis, keepdims=True)


@defop("masked_softmax", [_softmax_vjp, None])
def masked_softmax(x, mask, axis):
    """Softmax over the entries where mask is true; the others are exactly 0, and so is a fully masked row.

    One op (as softmax) so that the shift is no constant of the recording and the adjoint is the closed form;
    `where` keeps every inf away from a 0 in both passes.
    """
    shift = B.xp.max(B.xp.where(mask, x, -B.xp.inf), axis=axis, keepdims=True) if x.size else 0.0
    shift = B.xp.where(B.xp.isfinite(shift), shift, 0.0)
    e = B.xp.where(mask, B.xp.exp(B.xp.where(mask, x, shift) - shift), 0.0)
    total = B.xp.sum(e, axis=axis, keepdims=True)
    return e / B.xp.where(total == 0, 1.0, total)


def _norm_vjp(g, ans, x, axis=None, keepdims=False):
    """x/‖x‖, taken as 0 at a zero norm (x is 0 there too)."""
    n = _expand(ans, x, axis, keepdims)
    return mul(_expand(g, x, axis, keepdims), div(x, where(eq(n, 0), 1.0, n)))


norm = defop("norm", [_norm_vjp])(
    lambda x, axis=None, keepdims=False: B.xp.sqrt(B.xp.sum(x * x, axis=axis, keepdims=keepdims)))
