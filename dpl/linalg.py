"""Linear algebra batched over leading axes: the decompositions as primitives whose VJPs are written in ops
(so they differentiate again), and the builtins `solve inv det slogdet cholesky solve_triangular eigh svd
qr norm matrix_power expm` (issue 11).

A decomposition with several results is one primitive per result (`svd_u`, `svd_s`, `svd_vh`): a graph node
holds one array. Each VJP asks for the other results through the same ops, so a recorded backward pass
recomputes them. `cholesky` and `eigh` read the symmetric part (A + Aᵀ)/2, as JAX does, so their gradient
is the symmetric one and agrees with finite differences in any direction.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import ops
from .builtins import builtin, floats, integer, tensor
from .errors import DplError
from .graph import raw
from .interp import describe_type
from .builtins import _keep, axis_arg, check_axis, flag
from .ops import add, defop, div, matmul, mul, neg, reshape, sub, swapaxes, unbroadcast, where


def _T(x):
    return swapaxes(x)


def _sym(x):
    return mul(add(x, _T(x)), 0.5)


def _sym_raw(a):
    return (a + B.xp.swapaxes(a, -1, -2)) / 2


def _tri_mask(a, lower, k=0):
    n = np.shape(raw(a))[-1]
    m = np.tri(n, n, k, dtype=bool) if lower else ~np.tri(n, n, -1 - k, dtype=bool)
    return B.xp.asarray(m)


def _zero(x):
    return B.xp.zeros((), dtype=raw(x).dtype)


def _tri(x, lower, k=0):
    """The lower (or upper) triangle of the last two axes, zeros elsewhere (a constant mask of the shape)."""
    return where(_tri_mask(x, lower, k), x, _zero(x))


def _eye_mask(x):
    return B.xp.asarray(np.eye(np.shape(raw(x))[-1], dtype=bool))


def _as_matrix_last(v):
    """[..., n] -> [..., n, 1] and [..., 1, n]."""
    s = ops.shape(v)
    return reshape(v, shape=s + (1,)), reshape(v, shape=s[:-1] + (1, s[-1]))


def _expand2(v):
    """A batch of scalars [...] as [..., 1, 1]."""
    return reshape(v, shape=ops.shape(v) + (1, 1))


# ---- solves and inverses ---------------------------------------------------------------------------------------


def _solve_vjp_a(g, ans, a, b):
    gb = solve(_T(a), g)
    return unbroadcast(neg(matmul(gb, _T(ans))), ops.shape(a))


solve = defop("solve", [_solve_vjp_a, lambda g, ans, a, b: unbroadcast(solve(_T(a), g), ops.shape(b))]
              )(lambda a, b: B.xp.linalg.solve(a, b))
inv = defop("inv", [lambda g, ans, a: neg(matmul(_T(ans), matmul(g, _T(ans))))])(lambda a: B.xp.linalg.inv(a))
det = defop("det", [lambda g, ans, a: mul(_expand2(mul(g, ans)), _T(inv(a)))])(lambda a: B.xp.linalg.det(a))
logabsdet = defop("logabsdet", [lambda g, ans, a: mul(_expand2(g), _T(inv(a)))]
                  )(lambda a: B.xp.linalg.slogdet(a)[1])
signdet = defop("signdet")(lambda a: B.xp.linalg.slogdet(a)[0])


def _trisolve_vjp_a(g, ans, a, b, lower):
    gb = solve_triangular(_T(a), g, lower=not lower)
    return unbroadcast(_tri(neg(matmul(gb, _T(ans))), lower), ops.shape(a))


@defop("solve_triangular", [_trisolve_vjp_a,
                            lambda g, ans, a, b, lower: unbroadcast(solve_triangular(_T(a), g, lower=not lower),
                                                                    ops.shape(b))])
def solve_triangular(a, b, lower):
    """x with tri(a) x = b, reading only a's lower (or upper) triangle."""
    return B.xp.linalg.solve(B.xp.where(_tri_mask(a, lower), a, 0), b)


# ---- Cholesky ------------------------------------------------------------------------------------------------


def _cholesky_vjp(g, ans, a):
    """Murray (2016): S = L⁻ᵀ Φ(Lᵀ Ḡ) L⁻¹ with Φ the lower triangle, diagonal halved; Ā = sym(S)."""
    L = ans
    p = _tri(matmul(_T(L), _tri(g, True)), True)
    p = sub(p, mul(where(_eye_mask(p), p, _zero(p)), 0.5))
    y = solve_triangular(_T(L), p, lower=False)               # L⁻ᵀ P
    s = _T(solve_triangular(_T(L), _T(y), lower=False))       # L⁻ᵀ P L⁻¹
    return _sym(s)


cholesky = defop("cholesky", [_cholesky_vjp])(lambda a: B.xp.linalg.cholesky(_sym_raw(a)))

# ---- symmetric eigenproblem ---------------------------------------------------------------------------------------


def _eigh_values_vjp(g, ans, a):
    v = eigh_vectors(a)
    return _sym(matmul(mul(v, reshape(g, shape=ops.shape(g)[:-1] + (1, ops.shape(g)[-1]))), _T(v)))


def _gaps_inverse(w, square):
    """F[i, j] = 1 / (w_j − w_i) off the diagonal and 0 on it (w_j² − w_i² for `square`); inf where two
    eigenvalues (singular values) coincide."""
    col, row = _as_matrix_last(mul(w, w) if square else w)
    d = sub(row, col)
    eye = _eye_mask(d)
    return where(eye, _zero(d), div(1.0, where(eye, B.xp.ones((), dtype=raw(d).dtype), d)))


def _eigh_vectors_vjp(g, ans, a):
    v, w = ans, eigh_values(a)
    inner = mul(_gaps_inverse(w, False), matmul(_T(v), g))
    return _sym(matmul(v, matmul(inner, _T(v))))


eigh_values = defop("eigh_values", [_eigh_values_vjp])(lambda a: B.xp.linalg.eigh(_sym_raw(a))[0])
eigh_vectors = defop("eigh_vectors", [_eigh_vectors_vjp])(lambda a: B.xp.linalg.eigh(_sym_raw(a))[1])

# ---- singular value decomposition ------------------------------------------------------------------------------------


def _skew(x):
    return sub(x, _T(x))


def _svd_vjp(a, gu, gs, gvh):
    """PyTorch's svd_backward (real, reduced): one formula for the adjoints of U, s and Vh (None: not used)."""
    u, vh = svd_u(a), svd_vh(a)
    m, n = ops.shape(a)[-2:]
    k = min(m, n)
    inner = None
    if gu is not None or gvh is not None:
        s = svd_s(a)
        s_col, s_row = _as_matrix_last(s)
        f = _gaps_inverse(s, True)                                       # 1 / (s_j² − s_i²)
        skew_u = 0.0 if gu is None else _skew(matmul(_T(u), gu))
        skew_v = 0.0 if gvh is None else _skew(matmul(vh, _T(gvh)))
        inner = mul(add(mul(skew_u, s_row), mul(s_col, skew_v)), f)
    if gs is not None:
        d = mul(B.xp.eye(k, dtype=raw(a).dtype), reshape(gs, shape=ops.shape(gs)[:-1] + (1, k)))   # diag(s̄)
        inner = d if inner is None else add(inner, d)
    ga = matmul(u, matmul(inner, vh))
    if m > k and gu is not None:                                         # (I − UUᵀ) gU S⁻¹ Vᵀ
        gus = div(gu, s_row)
        ga = add(ga, matmul(sub(gus, matmul(u, matmul(_T(u), gus))), vh))
    if n > k and gvh is not None:                                        # U S⁻¹ gVh (I − VVᵀ)
        sgv = div(gvh, s_col)
        ga = add(ga, matmul(u, sub(sgv, matmul(matmul(sgv, _T(vh)), vh))))
    return ga


svd_u = defop("svd_u", [lambda g, ans, a: _svd_vjp(a, g, None, None)]
              )(lambda a: B.xp.linalg.svd(a, full_matrices=False)[0])
svd_s = defop("svd_s", [lambda g, ans, a: _svd_vjp(a, None, g, None)]
              )(lambda a: B.xp.linalg.svd(a, compute_uv=False))
svd_vh = defop("svd_vh", [lambda g, ans, a: _svd_vjp(a, None, None, g)]
               )(lambda a: B.xp.linalg.svd(a, full_matrices=False)[2])

# ---- QR (reduced, m ≥ n; the builtin composes m < n from it) --------------------------------------------------------------


def _qr_vjp(a, gq, gr):
    """Ā = (Q̄ + Q copyltu(M)) R⁻ᵀ with M = R R̄ᵀ − Q̄ᵀ Q (Walter & Lehmann; Liao et al. 2019)."""
    q, r = qr_q(a), qr_r(a)
    m = 0.0
    if gr is not None:
        m = matmul(r, _T(gr))
    if gq is not None:
        m = sub(m, matmul(_T(gq), q))
    low = _tri(m, True, -1)
    copyltu = add(add(low, _T(low)), where(_eye_mask(m), m, _zero(m)))
    x = matmul(q, copyltu) if gq is None else add(gq, matmul(q, copyltu))
    return _T(solve_triangular(r, _T(x), lower=False))                  # X R⁻ᵀ


qr_q = defop("qr_q", [lambda g, ans, a: _qr_vjp(a, g, None)])(lambda a: B.xp.linalg.qr(a)[0])
qr_r = defop("qr_r", [lambda g, ans, a: _qr_vjp(a, None, g)])(lambda a: B.xp.linalg.qr(a)[1])

# ---- matrix exponential ---------------------------------------------------------------------------------------------


def _expm_impl(a):
    if B.xp is np:
        import scipy.linalg as sl
    else:  # pragma: no cover - GPU only
        import cupyx.scipy.linalg as sl
    return B.xp.asarray(sl.expm(a)).astype(a.dtype, copy=False)


def _expm_vjp(g, ans, a):
    """The adjoint of the Fréchet derivative: the upper right block of expm([[Aᵀ, G], [0, Aᵀ]])."""
    at = _T(a)
    n = ops.shape(a)[-1]
    shp = tuple(np.broadcast_shapes(ops.shape(a), ops.shape(g)))
    at_b = ops.broadcast_to(at, shape=shp)
    top = ops.concat(at_b, g, axis=-1)
    bottom = ops.concat(B.xp.zeros(shp, dtype=raw(a).dtype), at_b, axis=-1)
    big = expm(ops.concat(top, bottom, axis=-2))
    return ops.index(big, key=(Ellipsis, slice(0, n), slice(n, 2 * n)))


expm = defop("expm", [_expm_vjp])(_expm_impl)

# ---- builtins ---------------------------------------------------------------------------------------------------------


def _square(a, what, name="A"):
    a = floats(a, name)
    s = np.shape(raw(a))
    if len(s) < 2 or s[-1] != s[-2]:
        raise DplError(f"`{what}` needs square matrices [..., n, n], got {describe_type(a)}")
    return a


def _matrices(a, what, name="A"):
    a = floats(a, name)
    if np.ndim(raw(a)) < 2:
        raise DplError(f"`{what}` needs matrices [..., m, n], got {describe_type(a)}")
    return a


def _rhs(a, b, what):
    """b as matrices [..., n, k] (a vector [n] becomes [n, 1], as np.linalg.solve does for a 1-d b)."""
    b = floats(b, "b")
    n = np.shape(raw(a))[-1]
    vector = np.ndim(raw(b)) == 1
    sb = np.shape(raw(b))
    if not sb or (vector and sb[0] != n) or (not vector and sb[-2] != n):
        raise DplError(f"`{what}`: b must be [{n}] or [..., {n}, k] for A of shape {list(np.shape(raw(a)))}, "
                       f"got shape {list(sb)}")
    try:
        np.broadcast_shapes(np.shape(raw(a))[:-2], sb[:-2])
    except ValueError:
        raise DplError(f"`{what}`: the batch axes of A {list(np.shape(raw(a)))} and b {list(sb)} do not broadcast") \
            from None
    return (reshape(b, shape=(n, 1)) if vector else b), vector


def _unrhs(x, vector):
    return reshape(x, shape=ops.shape(x)[:-1]) if vector else x


def linalg_builtin(fn):
    """A builtin named like fn; np.linalg.LinAlgError is a ValueError, which the builtin reports at its call."""
    return builtin(fn.__name__.rstrip("_"))(fn)


@linalg_builtin
def solve_(A, b):
    """x with A x = b (b [n] or [..., n, k], as NumPy 2), batched over leading axes."""
    A = _square(A, "solve")
    b, vector = _rhs(A, b, "solve")
    return _unrhs(solve(A, b), vector)


@linalg_builtin
def solve_triangular_(A, b, lower=True):
    """x with A x = b, reading only the lower (default) or upper triangle of A."""
    A = _square(A, "solve_triangular")
    b, vector = _rhs(A, b, "solve_triangular")
    lower = lower if isinstance(lower, bool) else flag(lower, "lower")
    return _unrhs(solve_triangular(A, b, lower=lower), vector)


@linalg_builtin
def inv_(A):
    """The inverse of A (batched); A must be invertible."""
    return inv(_square(A, "inv"))


@linalg_builtin
def det_(A):
    """The determinant of A (batched)."""
    return det(_square(A, "det"))


@linalg_builtin
def slogdet(A):
    """(sign, log|det A|) of A (batched); the gradient goes to log|det A|."""
    A = _square(A, "slogdet")
    return signdet(A), logabsdet(A)


@linalg_builtin
def cholesky_(A):
    """The lower Cholesky factor L of A = L Lᵀ, from A's symmetric part; A must be positive definite."""
    return cholesky(_square(A, "cholesky"))


@linalg_builtin
def eigh(A):
    """(w, V) of a symmetric A: ascending eigenvalues and eigenvectors as columns (from A's symmetric part)."""
    A = _square(A, "eigh")
    return eigh_values(A), eigh_vectors(A)


@linalg_builtin
def eigvalsh(A):
    """The ascending eigenvalues of a symmetric A (from its symmetric part)."""
    return eigh_values(_square(A, "eigvalsh"))


@linalg_builtin
def svd(A):
    """The reduced (U, s, Vh) with A = U diag(s) Vh, s descending."""
    A = _matrices(A, "svd")
    return svd_u(A), svd_s(A), svd_vh(A)


@linalg_builtin
def svdvals(A):
    """The singular values of A, descending."""
    return svd_s(_matrices(A, "svdvals"))


@linalg_builtin
def qr(A):
    """Reduced QR; for a wide A = [X | Y] it is Q R_X = X and R = [R_X | Qᵀ Y], so one primitive serves both."""
    A = _matrices(A, "qr")
    m, n = np.shape(raw(A))[-2:]
    if m >= n:
        return qr_q(A), qr_r(A)
    x = ops.index(A, key=(Ellipsis, slice(0, m)))
    y = ops.index(A, key=(Ellipsis, slice(m, n)))
    q = qr_q(x)
    return q, ops.concat(qr_r(x), matmul(_T(q), y), axis=-1)


@linalg_builtin
def expm_(A):
    """The matrix exponential of A (batched); it differentiates again."""
    return expm(_square(A, "expm"))


@linalg_builtin
def matrix_power(A, n):
    """A to the integer power n (n < 0 inverts first, n = 0 gives the identity)."""
    A, n = _square(A, "matrix_power"), integer(n, "n")
    if n == 0:
        shp = np.shape(raw(A))
        return B.xp.broadcast_to(B.xp.eye(shp[-1], dtype=raw(A).dtype), shp).copy()
    if n < 0:
        A, n = inv(A), -n
    out = None
    while n:  # square and multiply
        if n & 1:
            out = A if out is None else matmul(out, A)
        n >>= 1
        if n:
            A = matmul(A, A)
    return out


# ---- norm ---------------------------------------------------------------------------------------------------------------


def _ord(ord_):
    if ord_ is None or isinstance(ord_, str):
        if ord_ in (None, "fro", "nuc"):
            return ord_
        if ord_ in ("inf", "-inf"):
            return float(ord_)
        raise DplError(f'`ord` must be a number, "inf", "-inf", "fro" or "nuc", got "{ord_}"')
    r = raw(tensor(ord_, "ord"))
    if np.ndim(r) != 0 or r.dtype.kind not in "iuf":
        raise DplError(f"`ord` must be a number, got {describe_type(ord_)}")
    return float(r)


def _vector_norm(x, p, axis, keepdims):
    a = ops.abs_(x)
    if p == 2:
        return ops.norm(x, axis=axis, keepdims=keepdims)
    if p == math.inf:
        return ops.amax(a, axis=axis, keepdims=keepdims)
    if p == -math.inf:
        return ops.amin(a, axis=axis, keepdims=keepdims)
    if p == 0:
        return ops.sum_(ops.astype(ops.ne(x, 0.0), dtype=raw(x).dtype), axis=axis, keepdims=keepdims)
    if p == 1:
        return ops.sum_(a, axis=axis, keepdims=keepdims)
    return ops.power(ops.sum_(ops.power(a, p), axis=axis, keepdims=keepdims), 1.0 / p)


def _matrix_norm(x, p, axes, keepdims):
    r, c = axes
    nd = np.ndim(raw(x))
    if p == "fro":
        return ops.norm(x, axis=axes, keepdims=keepdims)
    if p in ("nuc", 2.0, -2.0):
        rest = tuple(d for d in range(nd) if d not in axes)
        s = svd_s(ops.transpose(x, perm=rest + (r, c)))
        out = (ops.sum_(s, axis=-1) if p == "nuc" else ops.amax(s, axis=-1) if p == 2.0 else ops.amin(s, axis=-1))
    elif p in (1.0, -1.0, math.inf, -math.inf):
        summed, over = (r, c) if abs(p) == 1 else (c, r)     # 1: largest column sum; inf: largest row sum
        sums = ops.sum_(ops.abs_(x), axis=summed, keepdims=True)
        out = (ops.amax if p > 0 else ops.amin)(sums, axis=over, keepdims=True)
        out = reshape(out, shape=tuple(n for d, n in enumerate(np.shape(raw(out))) if d not in axes))
    else:
        raise DplError(f"`norm`: ord {p:g} is not a matrix norm (use 1, -1, 2, -2, inf, -inf, \"fro\" or \"nuc\")")
    if keepdims:
        out = reshape(out, shape=tuple(1 if d in axes else n for d, n in enumerate(np.shape(raw(x)))))
    return out


@builtin()
def norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: a vector norm over one axis, a matrix norm over two, the 2-norm of all entries by default."""
    x = floats(x)
    p, keepdims = _ord(ord), _keep(keepdims)
    nd = np.ndim(raw(x))
    axes = axis_arg(axis)
    if axes is None:
        if p is None:
            return ops.norm(x, keepdims=keepdims)
        if nd not in (1, 2):
            raise DplError(f"`norm` with `ord` and no `axis` needs a vector or a matrix, got {describe_type(x)}")
        axes = tuple(range(nd))
    axes = check_axis(x, axes)
    axes = tuple(a % nd for a in (axes if isinstance(axes, tuple) else (axes,)))
    if len(axes) == 1:
        if isinstance(p, str):
            raise DplError(f'`norm`: ord "{p}" is a matrix norm; give two axes')
        return _vector_norm(x, 2.0 if p is None else p, axes[0], keepdims)
    if len(axes) != 2 or axes[0] == axes[1]:
        raise DplError(f"`norm` takes one axis (a vector norm) or two (a matrix norm), got {list(axes)}")
    return _matrix_norm(x, "fro" if p is None else p, axes, keepdims)
