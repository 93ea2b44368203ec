"""Differentiable building blocks of LANGUAGE.md §9: attention, content-addressed memory, ODE solvers, sparse graphs.

Each is composed from the primitive ops (so its VJP is exact and differentiates
again); only sparse @ dense is an op of its own.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import graph, ops
from .builtins import builtin, floats, integer, tensor
from .errors import DplError
from .graph import raw
from .interp import Function, Instance, describe_type, kind
from .limits import broadcast_shape, check_elements

# ---- attention ----------------------------------------------------------------------------


def _is_function(v):
    return isinstance(v, (Function, Instance)) or hasattr(v, "dpl_call")


def _cosine(dots, na, nb):
    """a·b / max(‖a‖‖b‖, 1e-8) as LANGUAGE.md §9 fixes it: a zero vector has cosine 0 with everything, and
    (the norm's adjoint being 0 at 0) only the dot product carries a gradient there."""
    return ops.div(dots, ops.maximum(ops.mul(na, nb), 1e-8))


def _scores(interp, span, q, K, score, single):
    """One score per key: [..., T] for a single query, [..., Tq, T] for a block of queries."""
    sq, sk = np.shape(raw(q)), np.shape(raw(K))
    try:
        scores = (broadcast_shape((sq[:-1], sk[:-2])) + sk[-2:-1] if single
                  else broadcast_shape((sq[:-2], sk[:-2])) + (sq[-2], sk[-2]))
    except ValueError:
        scores = None  # reported below
    if scores is not None:
        check_elements(scores, "the attention scores")
    if _is_function(score):
        s = interp.call(score, [q, K], {}, span)
        if kind(s) != "f":
            raise DplError(f"the `score` function must return float scores, got {describe_type(s)}")
        sq, sk = np.shape(raw(q)), np.shape(raw(K))
        try:
            want = (np.broadcast_shapes(sq[:-1], sk[:-2]) + sk[-2:-1] if single
                    else np.broadcast_shapes(sq[:-2], sk[:-2]) + (sq[-2], sk[-2]))
        except ValueError:
            raise DplError(f"the batch dimensions of q {list(sq)} and K {list(sk)} do not broadcast") from None
        try:
            ok = np.broadcast_shapes(np.shape(raw(s)), want) == want
        except ValueError:
            ok = False
        if not ok:  # a wrong shape would otherwise broadcast silently against the weights or V
            raise DplError(f"the `score` function must return one score per key, shaped {list(want)}, "
                           f"got shape {list(np.shape(raw(s)))}")
        s = floats(s)
        return s if np.shape(raw(s)) == want else ops.broadcast_to(s, shape=want)
    if score not in ("dot", "scaled_dot", "cosine"):
        raise DplError(f'`score` must be "dot", "scaled_dot", "cosine" or a function, got {describe_type(score)}')
    qb = ops.reshape(q, shape=np.shape(raw(q))[:-1] + (1, np.shape(raw(q))[-1])) if single else q
    s = ops.matmul(qb, ops.swapaxes(K))  # [..., Tq, T]
    d = np.shape(raw(q))[-1]
    if score == "scaled_dot":
        s = ops.div(s, math.sqrt(d))
    elif score == "cosine":
        nq = ops.norm(qb, axis=-1, keepdims=True)                        # [..., Tq, 1]
        nk = ops.swapaxes(ops.norm(K, axis=-1, keepdims=True))           # [..., 1, T]
        s = _cosine(s, nq, nk)
    if single:
        s = ops.reshape(s, shape=np.shape(raw(s))[:-2] + np.shape(raw(s))[-1:])
    return s


def masked_softmax(s, mask):
    """Softmax over the last axis where mask is true; masked weights are exactly 0 and a fully masked row is 0."""
    if mask is None:
        return ops.softmax(s, axis=-1)
    if kind(mask) != "b":
        raise DplError(f"`mask` must be boolean (true = may attend), got {describe_type(mask)}")
    sm, ss = np.shape(raw(mask)), np.shape(raw(s))
    try:
        fits = np.broadcast_shapes(sm, ss) == ss
    except ValueError:
        fits = False
    if not fits:
        raise DplError(f"`mask` of shape {list(sm)} does not broadcast against the scores of shape {list(ss)}")
    return ops.masked_softmax(s, mask, axis=-1)


def _attention(interp, span, q, K, score, mask):
    q, K = floats(q, "q"), floats(K, "K")
    nq, nk = np.ndim(raw(q)), np.ndim(raw(K))
    if nq < 1 or nk < 2:
        raise DplError(f"attention needs q [..., d] or [..., Tq, d] and K [..., T, d], got shapes "
                       f"{list(np.shape(raw(q)))} and {list(np.shape(raw(K)))}")
    if np.shape(raw(q))[-1] != np.shape(raw(K))[-1] and not _is_function(score):  # a score fn may mix sizes
        raise DplError(f"the query size {np.shape(raw(q))[-1]} differs from the key size {np.shape(raw(K))[-1]}")
    single = nq < nk
    alpha = masked_softmax(_scores(interp, span, q, K, score, single), mask)
    interp.record_attention(span, alpha)
    return alpha, single


@builtin(context=True)
def attention(interp, span, q, K, score="dot", mask=None):
    """The weights α = softmax(score(q, Kᵢ)) over the keys; `score` "dot", "scaled_dot", "cosine" or a function;
    `mask` true where a key may be attended."""
    return _attention(interp, span, q, K, score, mask)[0]


@builtin(context=True)
def attend(interp, span, q, K, V, score="dot", mask=None):
    """Σᵢ αᵢ Vᵢ with α = attention(q, K, score, mask); a fully masked row gives zeros."""
    alpha, single = _attention(interp, span, q, K, score, mask)
    V = floats(V, "V")
    if np.shape(raw(V))[-2:-1] != np.shape(raw(K))[-2:-1]:
        raise DplError(f"V needs one row per key: K has shape {list(np.shape(raw(K)))}, V {list(np.shape(raw(V)))}")
    return _weighted_rows(alpha, V, single)


def _weighted_rows(alpha, V, single):
    """Σᵢ αᵢ Vᵢ for weights [..., T] (single) or [..., Tq, T] (block) and rows V [..., T, dv]."""
    if not single:
        return ops.matmul(alpha, V)
    sa = np.shape(raw(alpha))
    out = ops.matmul(ops.reshape(alpha, shape=sa[:-1] + (1, sa[-1])), V)
    so = np.shape(raw(out))
    return ops.reshape(out, shape=so[:-2] + so[-1:])


# ---- memory ------------------------------------------------------------------------------------


def _address(M, key, beta):
    M, key, beta = floats(M, "M"), floats(key, "key"), floats(beta, "beta")
    nm, nkey = np.ndim(raw(M)), np.ndim(raw(key))
    if nm < 2 or nkey < 1 or np.shape(raw(M))[-1] != np.shape(raw(key))[-1]:
        raise DplError(f"address needs M [..., N, W] and key [..., W] or [..., R, W], got shapes "
                       f"{list(np.shape(raw(M)))} and {list(np.shape(raw(key)))}")
    single = nkey < nm
    kb = ops.reshape(key, shape=np.shape(raw(key))[:-1] + (1, np.shape(raw(key))[-1])) if single else key
    dots = ops.matmul(kb, ops.swapaxes(M))                                 # [..., R, N]
    nk = ops.norm(kb, axis=-1, keepdims=True)                              # [..., R, 1]
    nm_ = ops.swapaxes(ops.norm(M, axis=-1, keepdims=True))                # [..., 1, N]
    cos = _cosine(dots, nk, nm_)
    b = beta
    if np.ndim(raw(beta)):  # [...] for one key, [..., R] for R heads: one sharpness per row of scores
        b = ops.reshape(beta, shape=np.shape(raw(beta)) + ((1, 1) if single else (1,)))
    alpha = ops.softmax(ops.mul(b, cos), axis=-1)
    if single:
        alpha = ops.reshape(alpha, shape=np.shape(raw(alpha))[:-2] + np.shape(raw(alpha))[-1:])
    return alpha, single


@builtin()
def address(M, key, beta):
    """Content-based weights α = softmax(beta · cos(key, Mᵢ)) over the rows of memory M."""
    return _address(M, key, beta)[0]


@builtin("read")
def read_(M, key, beta):
    """αᵀM: the rows of memory M weighted by address(M, key, beta)."""
    alpha, single = _address(M, key, beta)
    return _weighted_rows(alpha, floats(M), single)


@builtin()
def write(M, w, erase, add):
    """M ∘ (1 − w eraseᵀ) + w addᵀ: w weights M's rows, erase and add its columns."""
    M, w, erase, add = floats(M, "M"), floats(w, "w"), floats(erase, "erase"), floats(add, "add")
    sw, se = np.shape(raw(w)), np.shape(raw(erase))
    sa, sm = np.shape(raw(add)), np.shape(raw(M))
    if se and sa:  # the outer products w eraseᵀ and w addᵀ and their blend with M: checked before computing them
        try:
            out = broadcast_shape((sm, broadcast_shape((sw + (1,), se[:-1] + (1, se[-1]), sa[:-1] + (1, sa[-1])))))
        except ValueError:
            raise DplError(f"`write`: w {list(sw)} weights the rows of M {list(sm)} and erase {list(se)} and add "
                           f"{list(sa)} its columns, but these shapes do not fit together") from None
        check_elements(out, "`write`")
    wc = ops.reshape(w, shape=sw + (1,))                    # [..., N, 1]
    er = ops.reshape(erase, shape=se[:-1] + (1, se[-1]))    # [..., 1, W]
    sa = np.shape(raw(add))
    ad = ops.reshape(add, shape=sa[:-1] + (1, sa[-1]))
    return ops.add(ops.mul(M, ops.sub(1.0, ops.mul(wc, er))), ops.mul(wc, ad))


# ---- ODE solvers --------------------------------------------------------------------------------

_TABLEAUS = {
    "euler": ([], [1.0], [0.0]),
    "midpoint": ([[0.5]], [0.0, 1.0], [0.0, 0.5]),
    "rk4": ([[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0.0, 0.5, 0.5, 1.0]),
}

# Dormand–Prince 5(4): a, b (5th order), b* (4th order), c
_DP_A = [[1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
         [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
         [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
         [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
_DP_B = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
_DP_E = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]  # b - b*
_DP_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]


def _combo(y, h, coeffs, ks):
    acc = None
    for c, k in zip(coeffs, ks):
        if c:
            term = ops.mul(c, k)
            acc = term if acc is None else ops.add(acc, term)
    return y if acc is None else ops.add(y, ops.mul(h, acc))


class _Rhs:
    def __init__(self, interp, span, f, shape):
        self.interp, self.span, self.f, self.shape = interp, span, f, shape

    def __call__(self, t, y):
        dy = self.interp.call(self.f, [t, y], {}, self.span)
        if kind(dy) != "f" and kind(dy) not in ("i", "u"):
            raise DplError(f"the ODE function must return dy/dt shaped like y, got {describe_type(dy)}")
        dy = floats(dy)
        if np.shape(raw(dy)) != self.shape:
            try:
                ok = np.broadcast_shapes(np.shape(raw(dy)), self.shape) == self.shape
            except ValueError:
                ok = False
            if not ok:
                raise DplError(f"the ODE function must return dy/dt shaped like y {list(self.shape)}, "
                               f"got shape {list(np.shape(raw(dy)))}")
            dy = ops.broadcast_to(dy, shape=self.shape)
        return dy


def _fixed(rhs, y, t0, t1, steps, method):
    a, b, c = _TABLEAUS[method]
    h = ops.div(ops.sub(t1, t0), float(steps))
    for n in range(steps):
        t = ops.add(t0, ops.mul(h, float(n)))
        ks = [rhs(t, y)]
        for row, ci in zip(a, c[1:]):
            ks.append(rhs(ops.add(t, ops.mul(ci, h)), _combo(y, h, row, ks)))
        y = _combo(y, h, b, ks)
    return y


def _dopri5(interp, span, rhs, y, t0, t1, steps, rtol, atol, max_steps=100000):
    """Adaptive Dormand–Prince: step sizes are hard decisions on values; gradients flow through accepted steps.

    The steps are chosen as fractions of the interval, and the traced times and
    step sizes are those fractions of the traced t1 − t0, so y(t1) is
    differentiable w.r.t. t0 and t1 as well.
    """
    graph.taint("`odeint` with dopri5, whose step sizes are chosen from values")
    span_t = float(raw(t1)) - float(raw(t0))
    if span_t == 0:
        return y
    stretch = ops.div(ops.sub(t1, t0), span_t)  # 1 in value; carries the dependence on t0 and t1
    h = span_t / max(steps, 1)
    t_done = 0.0  # elapsed time is tracked as a float; the traced time is t0 + stretch · elapsed
    taken = 0
    while abs(t_done) < abs(span_t) * (1 - 1e-12):
        if taken > max_steps:
            raise DplError(f"dopri5 took more than {max_steps} steps; loosen rtol/atol")
        interp.add_steps(1, f"`odeint` with dopri5 would take its step {taken + 1}", span)
        h = min(abs(h), abs(span_t - t_done)) * np.sign(span_t)
        t, ht = ops.add(t0, ops.mul(stretch, t_done)), ops.mul(stretch, h)
        ks = [rhs(t, y)]
        for row, ci in zip(_DP_A, _DP_C[1:]):
            ks.append(rhs(ops.add(t, ops.mul(ci, ht)), _combo(y, ht, row, ks)))
        y_new = _combo(y, ht, _DP_B, ks)
        err = h * sum(e * raw(k) for e, k in zip(_DP_E, ks) if e)  # on values: no nodes for the estimate
        scale = atol + rtol * np.maximum(np.abs(B.to_host(raw(y))), np.abs(B.to_host(raw(y_new))))
        ratio = float(np.sqrt(np.mean((np.asarray(B.to_host(err)) / scale) ** 2))) if np.size(scale) else 0.0
        taken += 1
        if ratio <= 1.0:
            y, t_done = y_new, t_done + h
        factor = 0.9 * (1.0 / ratio) ** 0.2 if ratio > 0 else 5.0
        h = h * min(5.0, max(0.2, factor))
    return y


@builtin(context=True)
def odeint(interp, span, f, y0, t0, t1, steps=100, method="rk4", rtol=1e-6, atol=1e-9, ts=None):
    """y(t1) of dy/dt = f(t, y), y(t0) = y0, differentiable w.r.t. y0, t0, t1 and what f reads. `method` "rk4",
    "midpoint" or "euler" takes `steps` fixed steps; "dopri5" (adaptive Dormand–Prince) starts from `steps` and
    keeps the error within `atol` + `rtol`·|y|. With `ts` (a 1-d grid of times, integrated from t0) it returns y at
    each of them, stacked along a new first axis, and t1 is not used."""
    if not isinstance(f, (Function, Instance)) and not hasattr(f, "dpl_call"):
        raise DplError(f"`odeint` integrates a function f(t, y), got {describe_type(f)}")
    y0, t0, t1 = floats(y0, "y0"), floats(t0, "t0"), floats(t1, "t1")
    steps = integer(steps, "steps")
    if steps < 1:
        raise DplError("`steps` must be at least 1")
    methods = sorted(_TABLEAUS) + ["dopri5"]
    if method not in methods:
        raise DplError(f"`method` must be one of {', '.join(repr(m) for m in methods)}, got {describe_type(method)}")
    rhs = _Rhs(interp, span, f, np.shape(raw(y0)))

    def solve(y, a, b):
        same = ops.eq(a, b)
        if graph.guard(same, bool(raw(same))):
            # an empty interval: y itself in value, with the first-order dependence on a and b kept
            return ops.add(y, ops.mul(ops.sub(b, a), rhs(a, y)))
        if method == "dopri5":
            return _dopri5(interp, span, rhs, y, a, b, steps, float(raw(floats(rtol))), float(raw(floats(atol))))
        interp.add_steps(steps, f"`odeint` would take {steps} steps", span)  # counted before they are taken
        return _fixed(rhs, y, a, b, steps, method)

    if ts is None:
        return solve(y0, t0, t1)
    grid = floats(ts, "ts")
    if np.ndim(raw(grid)) != 1 or np.shape(raw(grid))[0] < 1:
        raise DplError(f"`ts` must be a 1-d grid of times, got {describe_type(ts)}")
    check_elements(np.shape(raw(grid)) + np.shape(raw(y0)), "`odeint` over `ts`")  # the states it returns
    ys, y = [], y0
    prev = ops.index(grid, key=(0,))
    y = solve(y, t0, prev)
    ys.append(y)
    for i in range(1, np.shape(raw(grid))[0]):
        cur = ops.index(grid, key=(i,))
        y = solve(y, prev, cur)
        ys.append(y)
        prev = cur
    return ops.stack(*ys, axis=0)


# ---- sparse matrices ------------------------------------------------------------------------------

class Sparse:
    """A sparse matrix value (scipy.sparse CSR on CPU, cupyx.scipy.sparse on GPU); only `A @ X` is traced."""

    def __init__(self, matrix):
        self.matrix = matrix
        self._t = None

    @property
    def shape(self):
        return self.matrix.shape

    @property
    def T(self) -> "Sparse":
        """The transpose, built once; its own transpose is this matrix again."""
        if self._t is None:
            self._t = Sparse(self.matrix.T.tocsr())
            self._t._t = self
        return self._t

    def describe(self):
        return f"<sparse {self.shape[0]}x{self.shape[1]}, {self.matrix.nnz} nonzeros>"


def _sparse_module():
    if B.xp is np:
        import scipy.sparse as sp
        return sp
    import cupyx.scipy.sparse as sp  # pragma: no cover - GPU only
    return sp


# the adjoint of A @ x is Aᵀ @ g: an spmm again, so the backward pass differentiates too (A is always a Sparse)
spmm = ops.defop("spmm", [lambda g, ans, x, A: spmm(g, A=A.T)])(lambda x, A: B.xp.asarray(A.matrix @ x))


def sparse_matmul(A: Sparse, X):
    X = floats(X, "the right operand of `@`")
    sx = np.shape(raw(X))
    if len(sx) not in (1, 2) or sx[0] != A.shape[1]:
        raise DplError(f"shape mismatch in `@`: sparse {list(A.shape)} @ {list(sx)} (the right operand must be "
                       f"[{A.shape[1]}] or [{A.shape[1]}, k])")
    return spmm(X, A=A)


def _check_csr(data, indices, indptr, shp) -> None:
    """Refuse CSR parts that do not describe a matrix: scipy checks only some of this, and reads out of bounds
    (a crash) on an `indptr` that decreases where no entries are left."""
    data, indices, indptr = (np.asarray(B.to_host(a)) for a in (data, indices, indptr))
    for name, a in (("indices", indices), ("indptr", indptr)):
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise DplError(f"`csr`: `{name}` must be a 1-d integer tensor, got {a.dtype.name} of shape "
                           f"{list(a.shape)}")
    if data.ndim != 1 or data.shape != indices.shape:
        raise DplError(f"`csr`: `data` and `indices` must be 1-d of one length, got shapes {list(data.shape)} and "
                       f"{list(indices.shape)}")
    rows, cols = shp
    if rows < 0 or cols < 0:
        raise DplError(f"`csr`: a shape cannot have negative sizes: {list(shp)}")
    if indptr.shape[0] != rows + 1:
        raise DplError(f"`csr`: `indptr` must have rows + 1 = {rows + 1} entries, got {indptr.shape[0]}")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0] or (np.diff(indptr) < 0).any():
        raise DplError(f"`csr`: `indptr` must rise from 0 to the number of entries ({indices.shape[0]}) "
                       f"without decreasing")
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        raise DplError(f"`csr`: `indices` must lie in 0..{cols - 1}")


@builtin()
def csr(data, indices, indptr, shape):
    """A sparse matrix from CSR parts (data, column indices, row pointers, [rows, cols]) as scipy.sparse takes them."""
    from .builtins import shape_arg
    sp = _sparse_module()
    shp = shape_arg(shape)
    if len(shp) != 2:
        raise DplError(f"`csr` builds a matrix: shape must have 2 sizes, got {list(shp)}")
    _check_csr(raw(floats(data)), raw(tensor(indices)), raw(tensor(indptr)), shp)
    try:
        m = sp.csr_matrix((raw(floats(data)), raw(tensor(indices)), raw(tensor(indptr))), shape=shp)
        m.check_format(full_check=True) if hasattr(m, "check_format") else None
    except (ValueError, TypeError) as e:
        raise DplError(f"`csr`: {e}") from None
    return Sparse(m.astype(B.float_dtype))


@builtin()
def adjacency(edges, n, self_loops=True, normalize="sym"):
    """The sparse n × n matrix of an undirected graph from [2, E] integer edges; `normalize` "sym" (D^-½ A D^-½),
    "row" or "none"."""
    from .builtins import flag
    sp = _sparse_module()
    e = np.asarray(B.to_host(raw(tensor(edges, "edges"))))
    n = integer(n, "n")
    check_elements((n,), "`adjacency`")  # its degree vector; the matrix itself is sparse
    if e.dtype.kind not in "iu" or e.ndim != 2 or e.shape[0] != 2:
        raise DplError(f"`edges` must be a [2, E] integer tensor, got {describe_type(edges)}")
    if e.size and (e.min() < 0 or e.max() >= n):
        raise DplError(f"`edges` refer to nodes outside 0..{n - 1}")
    if normalize not in ("sym", "row", "none"):
        raise DplError(f'`normalize` must be "sym", "row" or "none", got {describe_type(normalize)}')
    import scipy.sparse as ssp
    a = ssp.coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)                      # undirected, duplicates merged
    if self_loops if isinstance(self_loops, bool) else flag(self_loops, "self_loops"):
        a = ((a + ssp.eye(n, format="csr")) > 0).astype(np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        if normalize == "sym":
            d = np.where(deg > 0, deg ** -0.5, 0.0)
            a = ssp.diags(d) @ a @ ssp.diags(d)
        elif normalize == "row":
            a = ssp.diags(np.where(deg > 0, 1.0 / deg, 0.0)) @ a
    a = a.tocsr().astype(B.float_dtype)
    return Sparse(a if B.xp is np else sp.csr_matrix(a))


@builtin()
def dense(A):
    """A sparse matrix as a dense tensor."""
    if not isinstance(A, Sparse):
        raise DplError(f"`dense` takes a sparse matrix, got {describe_type(A)}")
    check_elements(A.shape, "`dense`")
    return B.xp.asarray(A.matrix.toarray())
