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
from .builtins import builtin, floats, tensor
from .errors import DplError
from .graph import raw
from .interp import describe_type, kind
from .limits import check_broadcast
from .ops import add, defop, div, exp, log, mul, neg, sqrt, sub


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

sign = defop("sign")(lambda x: B.xp.sign(x))
floor = defop("floor")(lambda x: B.xp.floor(x))
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
    return lambda x: op(floats(x))


for _op in (sign, floor, ceil, log1p, expm1, log2, log10, exp2, sinh, cosh, arcsin, arccos, arctan,
            arcsinh, arccosh, arctanh, erf, erfc, erfinv, lgamma, gamma):
    builtin(_op.name)(_unary(_op))
builtin("round")(_unary(round_))


def _binary(op):
    def fn(a, b):
        a, b = floats(a), floats(b)
        check_broadcast((np.shape(raw(a)), np.shape(raw(b))), f"`{op.name}`")
        return op(a, b)
    return fn


for _op in (arctan2, hypot, logaddexp):
    builtin(_op.name)(_binary(_op))


@builtin()
def square(x):
    x = floats(x)
    return mul(x, x)


@builtin()
def reciprocal(x):
    return div(1.0, floats(x))


@builtin()
def digamma(x):
    return polygamma(floats(x), n=0)


@builtin("polygamma")
def polygamma_(n, x):
    from .builtins import integer
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
