"""Differentiable building blocks of LANGUAGE.md §9: attention, content-addressed memory, sparse graphs (ODEs: dynamics.py).

Each is composed from the primitive ops (so its VJP is exact and differentiates
again); only sparse @ dense is an op of its own.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import ops
from .builtins import builtin, floats, integer, tensor
from .errors import DplError
from .graph import raw
from .interp import describe_type, is_function, kind
from .limits import broadcast_shape, check_elements

# ---- attention ----------------------------------------------------------------------------


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
    if is_function(score):
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
    if np.shape(raw(q))[-1] != np.shape(raw(K))[-1] and not is_function(score):  # a score fn may mix sizes
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


from . import dynamics  # noqa: E402,F401  (registers odeint and sdeint)
