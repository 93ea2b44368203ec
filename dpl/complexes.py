"""Complex tensors (issue 11): their parts, the modulus and the FFTs, with VJPs in JAX's convention.

A VJP is the transpose of the op's derivative as an R-linear map under the pairing Re(ḡ · dz): a
holomorphic op's rule is g · f′(z) (no conjugate), conj's is conj(g), real's is g, imag's is -i g, and
the adjoint of a real argument is the real part of what flows back (ops.real_adjoint). So a real loss's
gradient w.r.t. a real input is real, and w.r.t. a complex input z it is ∂L/∂Re z − i ∂L/∂Im z, the
value JAX's `grad` gives (docs/LANGUAGE.md, complex numbers).
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import ops
from .builtins import BUILTINS, builtin, floats, integer, tensor
from .errors import DplError
from .graph import raw
from .interp import describe_type, kind
from .numerics import _along, arctan2, hypot, one_axis
from .ops import defop, mul

# ---- parts -----------------------------------------------------------------------------------------------


@builtin()
def real(x):
    """The real part of each element (a real tensor; a real input is returned as it is)."""
    return ops.real(tensor(x))


@builtin()
def imag(x):
    """The imaginary part of each element (a real tensor; zeros for a real input)."""
    return ops.imag(tensor(x))


@builtin()
def conj(x):
    """The complex conjugate of each element."""
    return ops.conj(tensor(x))


@builtin()
def angle(x):
    """The argument of z in (-π, π], as np.angle: arctan2(imag, real), so its gradient is exact (0 at z = 0)."""
    x = floats(x)
    return arctan2(ops.imag(x), ops.real(x))


@builtin("abs")
def abs_(x):
    """|x|; of a complex z the modulus hypot(Re z, Im z), whose gradient is conj(z)/|z| (0 at z = 0)."""
    x = tensor(x)
    return hypot(ops.real(x), ops.imag(x)) if kind(x) == "c" else ops.abs_(x)


# ---- FFTs along one axis (numpy.fft: unnormalised forward, 1/n on the inverse) -----------------------------


def _resize(x, m, axis):
    """x cut to, or zero-padded at the end to, length m along `axis` (what numpy.fft does with `n`)."""
    shp = ops.shape(x)
    k = shp[axis]
    if k == m:
        return x
    if k > m:
        return ops.index(x, key=_along(axis, len(shp), slice(0, m)))
    pad = B.xp.zeros(shp[:axis] + (m - k,) + shp[axis + 1:], dtype=raw(x).dtype)
    return ops.concat(x, pad, axis=axis)


def _irfft_vjp(g, ans, y, n, axis):
    """ȳ = conj(c/n · rfft(g)) with c = 1 for the zero (and, n even, the Nyquist) frequency and 2 for the
    others, whose conjugates irfft adds in; numpy reads only the real part of those one or two entries."""
    c = np.full(n // 2 + 1, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    nd = len(ops.shape(g))
    w = B.xp.asarray((c / n).reshape((-1,) + (1,) * (nd - 1 - axis)), dtype=raw(g).dtype)
    return _resize(ops.conj(mul(rfft(g, n=n, axis=axis), w)), ops.shape(y)[axis], axis)


fft = defop("fft", [lambda g, ans, x, n, axis: _resize(fft(g, n=n, axis=axis), ops.shape(x)[axis], axis)]
            )(lambda x, n, axis: B.xp.fft.fft(x, n=n, axis=axis))
ifft = defop("ifft", [lambda g, ans, x, n, axis: _resize(ifft(g, n=n, axis=axis), ops.shape(x)[axis], axis)]
             )(lambda x, n, axis: B.xp.fft.ifft(x, n=n, axis=axis))
# rfft's adjoint: fft of g zero-padded to n (the frequencies rfft leaves out), real part (x is real)
rfft = defop("rfft", [lambda g, ans, x, n, axis: _resize(fft(g, n=n, axis=axis), ops.shape(x)[axis], axis)]
             )(lambda x, n, axis: B.xp.fft.rfft(x, n=n, axis=axis))
irfft = defop("irfft", [_irfft_vjp])(lambda y, n, axis: B.xp.fft.irfft(y, n=n, axis=axis))


def _fft_args(x, n, axis, what, default_n=None):
    """(x as floats or complex, n, axis ≥ 0) checked, as numpy.fft takes them."""
    x = floats(x)
    if np.ndim(raw(x)) == 0:
        raise DplError(f"`{what}` needs a tensor with at least one axis, got {describe_type(x)}")
    ax = one_axis(x, axis)
    size = np.shape(raw(x))[ax]
    n = (default_n(size) if default_n else size) if n is None else integer(n, "n")
    if n < 1:
        raise DplError(f"`{what}`: n must be at least 1, got {n}")
    return x, n, ax


_NORMS = ("backward", "ortho", "forward")


def _normed(y, n, norm, inverse, what):
    """numpy.fft's `norm`: the primitives compute "backward" (1/n on the inverse); the others rescale it."""
    if not (isinstance(norm, str) and norm in _NORMS):
        got = f'"{norm}"' if isinstance(norm, str) else describe_type(norm)
        raise DplError(f'`{what}`: norm must be "backward", "ortho" or "forward", got {got}')
    if norm == "backward":
        return y
    scale = math.sqrt(n) if norm == "ortho" else float(n)
    return mul(y, scale if inverse else 1.0 / scale)


@builtin("fft")
def fft_(x, n=None, axis=-1, norm="backward"):
    """The discrete Fourier transform along `axis` (numpy.fft.fft: `n` pads or crops; norm "backward",
    "ortho" or "forward")."""
    x, n, ax = _fft_args(x, n, axis, "fft")
    return _normed(fft(x, n=n, axis=ax), n, norm, False, "fft")


@builtin("ifft")
def ifft_(x, n=None, axis=-1, norm="backward"):
    """The inverse discrete Fourier transform along `axis` (numpy.fft.ifft; `n` and `norm` as fft)."""
    x, n, ax = _fft_args(x, n, axis, "ifft")
    return _normed(ifft(x, n=n, axis=ax), n, norm, True, "ifft")


@builtin("rfft")
def rfft_(x, n=None, axis=-1, norm="backward"):
    """The Fourier transform of a real tensor along `axis`: its n // 2 + 1 non-negative frequencies
    (numpy.fft.rfft; `n` and `norm` as fft)."""
    if kind(x) == "c":
        raise DplError(f"`rfft` takes a real tensor, got {describe_type(x)}; fft transforms complex ones")
    x, n, ax = _fft_args(x, n, axis, "rfft")
    return _normed(rfft(x, n=n, axis=ax), n, norm, False, "rfft")


@builtin("irfft")
def irfft_(x, n=None, axis=-1, norm="backward"):
    """The inverse of rfft: n real outputs (default 2·(m − 1) for m inputs, as NumPy)."""
    x, n, ax = _fft_args(x, n, axis, "irfft", default_n=lambda m: 2 * (m - 1))
    return _normed(irfft(x, n=n, axis=ax), n, norm, True, "irfft")


# ---- which builtins take complex tensors (every other one refuses them at the call) ---------------------------

COMPLEX_OK = (
    "real", "imag", "conj", "angle", "abs", "fft", "ifft", "rfft", "irfft",
    "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "square", "reciprocal",
    "sum", "mean", "print", "shape", "len", "reshape", "transpose", "concat", "stack", "append", "where",
    "stop_gradient", "kron", "einsum", "outer", "tensordot", "trace", "diagonal", "diag", "flip", "roll",
    "split", "tile", "repeat", "tril", "triu",
)
for _name in COMPLEX_OK:
    BUILTINS[_name].complex_ok = True
