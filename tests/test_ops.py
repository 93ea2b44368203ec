"""Every op in dpl.ops.REGISTRY against a spec table: forward vs NumPy, VJP vs central finite
differences in float64, second order by differentiating the recorded backward pass, and the
derivatives at kinks that LANGUAGE.md §9 fixes."""
from __future__ import annotations

import dataclasses
import zlib
from typing import Callable

import numpy as np
import pytest
import scipy.special

import dpl  # noqa: F401  (imports every module that registers ops)
import dpl.builtins  # noqa: F401
import dpl.interp  # noqa: F401
import dpl.primitives  # noqa: F401
import scipy.sparse
from dpl import ops
from dpl.autodiff import backward
from dpl.graph import Box, Graph, Trace, raw
from conftest import numeric_grad
from frozen import frozen_constants

# ---- input domains: (rng, shape) -> float64 array ------------------------------------------------


def real(rng, s):
    return rng.normal(size=s)


def cplx(rng, s):  # complex128: the gradient is checked w.r.t. both parts (conftest.numeric_grad)
    return rng.normal(size=s) + 1j * rng.normal(size=s)


def pos(rng, s):
    return rng.uniform(0.5, 2.0, size=s)


def unit(rng, s):  # tan: well inside (-π/2, π/2)
    return rng.uniform(-1.2, 1.2, size=s)


def away0(rng, s):  # relu, abs: never at the kink
    return rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.2, 1.5, size=s)


def lo_bound(rng, s):
    return rng.uniform(-0.6, -0.4, size=s)


def hi_bound(rng, s):
    return rng.uniform(0.4, 0.6, size=s)


def divisor(rng, s):
    return rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.7, 2.0, size=s)


def wide(rng, s):
    return rng.uniform(-3.0, 3.0, size=s)


def boolean(rng, s):
    return rng.random(s) > 0.5


def ints(rng, s):
    return rng.integers(-3, 4, size=s)


# ---- validity of a sample: keep finite differences off the kinks -----------------------------------


def apart(x, y, **_):
    return np.all(np.abs(np.asarray(x) - np.asarray(y)) > 1e-2)


def clip_ok(x, lo, hi):
    return apart(x, lo) and apart(x, hi)


def mod_ok(x, y):
    frac = np.mod(np.asarray(x) / np.asarray(y), 1.0)
    return np.all((frac > 0.05) & (frac < 0.95))


def distinct(x, **_):
    v = np.sort(np.ravel(x))
    return v.size < 2 or np.min(np.diff(v)) > 1e-3


# ---- NumPy references for the ops with attributes -------------------------------------------------


def ref_sum_to(x, shape):
    lead = x.ndim - len(shape)
    r = x.sum(axis=tuple(range(lead))) if lead else x
    for i, d in enumerate(shape):
        if d == 1:
            r = r.sum(axis=i, keepdims=True)
    return r.reshape(shape)


def ref_scatter_add(x, key, shape):
    out = np.zeros(shape)
    np.add.at(out, key, x)
    return out


def ref_norm(x, axis=None, keepdims=False):
    return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))


def ref_masked_softmax(x, mask, axis):
    e = np.where(mask, np.exp(x - np.max(np.where(mask, x, -np.inf), axis=axis, keepdims=True)), 0.0)
    total = e.sum(axis=axis, keepdims=True)
    return e / np.where(total == 0, 1.0, total)


# ---- the spec table ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One op: arity (None: variadic), a domain per argument, the cases it is checked on
    (argument shapes, attrs), which arguments take a gradient (None: no VJP at all), whether
    second order is checked, a NumPy reference forward, and a validity test for samples."""

    arity: int | None
    domain: tuple
    cases: list
    wrt: tuple | str | None = (0,)
    second: bool = True
    ref: Callable | None = None
    valid: Callable | None = None
    xfail: dict = dataclasses.field(default_factory=dict)  # case index -> reason (a known bug)


UNARY_SHAPES = [((),), ((3,),), ((2, 3),), ((1, 3),), ((4, 2, 3),)]
BINARY_SHAPES = [((), ()), ((3,), (3,)), ((2, 3), (2, 3)), ((1, 3), (1, 3)), ((2, 3), (3,)), ((3,), (2, 3)),
                 ((2, 1), (1, 3)), ((2, 3), ()), ((), (2, 3)), ((4, 2, 3), (2, 1))]
COMPARE_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 3))]


def unary(domain, ref, **kw):
    return Row(1, (domain,), [(s, {}) for s in UNARY_SHAPES], ref=ref, **kw)


def binary(domains, ref, **kw):
    return Row(2, domains, [(s, {}) for s in BINARY_SHAPES], wrt=(0, 1), ref=ref, **kw)


def nodiff(arity, domain, ref, cases=None):
    cases = cases or [(s, {}) for s in (COMPARE_SHAPES if arity == 2 else UNARY_SHAPES)]
    return Row(arity, (domain,) * arity, cases, wrt=None, second=False, ref=ref)


def reduction(ref, valid=None, **kw):
    axes = [((2, 3), {}), ((2, 3), {"axis": 0}), ((2, 3), {"axis": 1}), ((2, 3), {"axis": -1, "keepdims": True}),
            ((2, 3), {"keepdims": True}), ((2, 3), {"axis": (0, 1)}), ((4, 2, 3), {"axis": (0, 2)}),
            ((4, 2, 3), {"axis": (2, 0), "keepdims": True}), ((), {}), ((3,), {"axis": 0, "keepdims": True}),
            ((1, 3), {"axis": 0}), ((4, 2, 3), {"axis": (-1, 0)}), ((4, 2, 3), {"axis": -2, "keepdims": True})]
    return Row(1, (real,), [((s,), a) for s, a in axes], ref=ref, valid=valid, **kw)


SPARSE = dpl.primitives.Sparse(scipy.sparse.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0],
                                                                 [0.0, -3.0, 0.5], [4.0, 0.0, 0.0]])))
MASK = np.array([[True, False, True], [False, False, True]])
IDX = np.array([0, 0, 2, 4, 0])

SPEC: dict[str, Row] = {
    # elementwise unary
    "neg": unary(real, np.negative),
    "exp": unary(real, np.exp),
    "log": unary(pos, np.log),
    "sin": unary(real, np.sin),
    "cos": unary(real, np.cos),
    "tan": unary(unit, np.tan),
    "tanh": unary(real, np.tanh),
    "sqrt": unary(pos, np.sqrt),
    "abs": unary(away0, np.abs),
    "relu": unary(away0, lambda x: np.maximum(x, 0)),
    "sigmoid": unary(real, scipy.special.expit),
    "softplus": unary(real, lambda x: np.logaddexp(0, x)),
    # elementwise binary
    "add": binary((real, real), np.add),
    "sub": binary((real, real), np.subtract),
    "mul": binary((real, real), np.multiply),
    "div": binary((real, divisor), np.divide),
    "mod": binary((wide, divisor), np.mod, valid=mod_ok),
    "pow": binary((pos, real), np.power),
    "maximum": binary((real, real), np.maximum, valid=apart),
    "minimum": binary((real, real), np.minimum, valid=apart),
    "where": Row(3, (boolean, real, real),
                 [(s, {}) for s in [((2, 3), (2, 3), (2, 3)), ((2, 3), (3,), ()), ((2, 1), (1, 3), (2, 3)),
                                    ((), (3,), (3,)), ((3,), (), ())]],
                 wrt=(1, 2), ref=np.where),
    "clip": Row(3, (wide, lo_bound, hi_bound),
                [(s, {}) for s in [((3,), (), ()), ((), (), ()), ((2, 3), (2, 3), (2, 3)), ((2, 3), (3,), (2, 1)),
                                   ((4, 2, 3), (), (3,))]],
                wrt=(0, 1, 2), ref=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), valid=clip_ok),
    # no derivative
    "lt": nodiff(2, real, np.less),
    "floordiv": nodiff(2, real, np.floor_divide),
    "stop_gradient": nodiff(1, real, lambda x: x),
    "le": nodiff(2, ints, np.less_equal),
    "gt": nodiff(2, real, np.greater),
    "ge": nodiff(2, ints, np.greater_equal),
    "eq": nodiff(2, ints, np.equal),
    "ne": nodiff(2, ints, np.not_equal),
    "and": nodiff(2, boolean, np.logical_and),
    "or": nodiff(2, boolean, np.logical_or),
    "not": nodiff(1, boolean, np.logical_not),
    "argmax": nodiff(1, real, np.argmax, [(((2, 3),), {}), (((2, 3),), {"axis": 1}), (((4, 2, 3),), {"axis": 0})]),
    "argmin": nodiff(1, real, np.argmin, [(((2, 3),), {}), (((2, 3),), {"axis": 0}), (((3,),), {"axis": -1})]),
    "int": nodiff(1, wide, lambda x: np.trunc(x).astype(np.int64)),
    "any": nodiff(1, boolean, np.any, [(((2, 3),), {}), (((2, 3),), {"axis": 1}), (((),), {})]),
    "all": nodiff(1, boolean, np.all, [(((2, 3),), {}), (((2, 3),), {"axis": 0}), (((),), {})]),
    "isfinite": nodiff(1, real, np.isfinite),
    "astype": Row(1, (real,), [(((2, 3),), {"dtype": np.dtype("float64")}), (((),), {"dtype": np.dtype("float64")})],
                  ref=lambda x, dtype: x.astype(dtype)),
    # linear algebra
    "matmul": Row(2, (real, real),
                  [(s, {}) for s in [((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)), ((2, 3), (3, 4)),
                                     ((4, 2, 3), (3, 5)), ((4, 2, 3), (1, 3, 5)), ((3,), (4, 3, 5)),
                                     ((4, 2, 3), (3,)), ((2, 1, 2, 3), (4, 3, 2)), ((1, 3), (3, 1))]],
                  wrt=(0, 1), ref=np.matmul),
    "spmm": Row(1, (real,), [(((3,),), {"A": SPARSE}), (((3, 2),), {"A": SPARSE}), (((4, 1),), {"A": SPARSE.T})],
                ref=lambda x, A: A.matrix.toarray() @ x),
    "swapaxes": Row(1, (real,), [(((2, 3),), {}), (((4, 2, 3),), {}), (((1, 3),), {})],
                    ref=lambda x: np.swapaxes(x, -1, -2)),
    # shapes
    "reshape": Row(1, (real,), [(((2, 3),), {"shape": (3, 2)}), (((2, 3),), {"shape": (6,)}),
                                (((),), {"shape": (1, 1)}), (((4, 2, 3),), {"shape": (4, -1)}),
                                (((6,),), {"shape": (2, 1, 3)})], ref=lambda x, shape: np.reshape(x, shape)),
    "transpose": Row(1, (real,), [(((2, 3),), {"perm": (1, 0)}), (((4, 2, 3),), {"perm": (2, 0, 1)}),
                                  (((4, 2, 3),), {"perm": (1, 2, 0)}), (((3,),), {"perm": (0,)}),
                                  (((),), {"perm": ()}), (((3, 3),), {"perm": (0, -1)}),
                                  (((4, 2, 3),), {"perm": (-1, 0, 1)}), (((4, 2, 3),), {"perm": (1, -1, -3)})],
                   ref=lambda x, perm: np.transpose(x, perm)),
    "broadcast_to": Row(1, (real,), [(((3,),), {"shape": (2, 3)}), (((2, 1),), {"shape": (2, 3)}),
                                     (((),), {"shape": (2, 3)}), (((1, 3),), {"shape": (4, 2, 3)}),
                                     (((2, 3),), {"shape": (2, 3)})],
                        ref=lambda x, shape: np.broadcast_to(x, shape)),
    "sum_to": Row(1, (real,), [(((2, 3),), {"shape": (3,)}), (((2, 3),), {"shape": (2, 1)}),
                               (((2, 3),), {"shape": ()}), (((4, 2, 3),), {"shape": (1, 3)}),
                               (((2, 3),), {"shape": (1, 3)}), (((2, 3),), {"shape": (2, 3)})], ref=ref_sum_to),
    "index": Row(1, (real,), [(((5,),), {"key": (slice(1, 3),)}), (((2, 3),), {"key": (slice(None), 0)}),
                              (((4,),), {"key": (-1,)}), (((5,),), {"key": IDX}),
                              (((3, 2),), {"key": (np.array([2, 0, 2]),)}), (((2, 3),), {"key": MASK}),
                              (((2, 3),), {"key": (np.array([0, 1, 1]), np.array([2, 2, 0]))}),
                              (((4, 3),), {"key": (slice(1, None), np.array([0, 0]))}),
                              (((2, 3),), {"key": (1,)}), (((4, 2, 3),), {"key": (slice(None), 1, slice(0, 3, 2))})],
                 ref=lambda x, key: x[key]),
    "scatter_add": Row(1, (real,), [(((2,),), {"key": (slice(1, 3),), "shape": (5,)}),
                                    (((5,),), {"key": IDX, "shape": (6,)}),
                                    (((2,),), {"key": (slice(None), 0), "shape": (2, 3)}),
                                    (((3,),), {"key": MASK, "shape": (2, 3)}),
                                    (((3, 2),), {"key": (np.array([1, 1, 0]),), "shape": (2, 2)})],
                       ref=ref_scatter_add),
    "concat": Row(None, (real,), [(((2, 3), (1, 3)), {"axis": 0}), (((2, 1), (2, 3)), {"axis": 1}),
                                  (((3,), (2,), (1,)), {"axis": 0}), (((2, 3), (2, 2)), {"axis": -1}),
                                  (((3,),), {"axis": 0}), (((4, 2, 3), (4, 1, 3)), {"axis": 1})],
                  wrt="all", ref=lambda *xs, axis: np.concatenate(xs, axis=axis)),
    "stack": Row(None, (real,), [(((3,), (3,)), {"axis": 0}), (((2, 3),) * 3, {"axis": 1}),
                                 (((2, 3), (2, 3)), {"axis": -1}), (((), ()), {"axis": 0}),
                                 (((1, 3),), {"axis": 0})],
                 wrt="all", ref=lambda *xs, axis: np.stack(xs, axis=axis)),
    # reductions
    "sum": reduction(np.sum),
    "max": reduction(np.max, valid=distinct),
    "min": reduction(np.min, valid=distinct),
    "logsumexp": reduction(scipy.special.logsumexp),
    "norm": reduction(ref_norm),
    "softmax": Row(1, (real,), [(((3,),), {"axis": -1}), (((2, 3),), {"axis": 0}), (((2, 3),), {"axis": 1}),
                                (((4, 2, 3),), {"axis": 1}), (((1, 3),), {"axis": -1}), (((4, 2, 3),), {"axis": -2})],
                   ref=scipy.special.softmax),
    "masked_softmax": Row(2, (real, boolean), [(((2, 3), (2, 3)), {"axis": -1}), (((4, 2, 3), (2, 3)), {"axis": -1}),
                                               (((4, 2, 3), (4, 1, 3)), {"axis": -1}), (((3,), (3,)), {"axis": 0}),
                                               (((2, 3), (2, 1)), {"axis": 0}), (((2, 3), ()), {"axis": 1})],
                          ref=ref_masked_softmax),
}

# ---- dpl/numerics.py (issue 11) ------------------------------------------------------------------


def inside1(rng, s):  # arcsin, arccos, arctanh, erfinv: inside (-1, 1)
    return rng.uniform(-0.9, 0.9, size=s)


def above1(rng, s):  # arccosh
    return rng.uniform(1.2, 3.0, size=s)


def off_int(rng, s):  # floor, ceil, round, sign: never at a jump
    return rng.integers(-3, 3, size=s) + rng.uniform(0.1, 0.4, size=s) * rng.choice([1, 2], size=s)


def pick2(rng, s):  # take_along/put_along indices: 0 or 1 (every axis has ≥ 2 entries), repeats included
    return rng.integers(0, 2, size=s)


def ref_put_along(x, idx, axis, shape):
    out = np.zeros(shape)
    key = [np.arange(n).reshape((-1,) + (1,) * (idx.ndim - 1 - d)) for d, n in enumerate(idx.shape)]
    key[axis % idx.ndim] = idx
    np.add.at(out, tuple(key), x)
    return out


SPEC.update({
    "sign": nodiff(1, off_int, np.sign),
    "floor": nodiff(1, off_int, np.floor),
    "ceil": nodiff(1, off_int, np.ceil),
    "round": nodiff(1, off_int, np.round),
    "log1p": unary(pos, np.log1p),
    "expm1": unary(real, np.expm1),
    "log2": unary(pos, np.log2),
    "log10": unary(pos, np.log10),
    "exp2": unary(real, np.exp2),
    "sinh": unary(real, np.sinh),
    "cosh": unary(real, np.cosh),
    "arcsin": unary(inside1, np.arcsin),
    "arccos": unary(inside1, np.arccos),
    "arctan": unary(wide, np.arctan),
    "arcsinh": unary(wide, np.arcsinh),
    "arccosh": unary(above1, np.arccosh),
    "arctanh": unary(inside1, np.arctanh),
    "erf": unary(real, scipy.special.erf),
    "erfc": unary(real, scipy.special.erfc),
    "erfinv": unary(inside1, scipy.special.erfinv),
    "lgamma": unary(pos, scipy.special.gammaln),
    "gamma": unary(pos, scipy.special.gamma),
    "polygamma": Row(1, (pos,), [(s, {"n": n}) for s in UNARY_SHAPES[:4] for n in (0, 1, 3)],
                     ref=lambda x, n: scipy.special.polygamma(n, x)),
    "arctan2": binary((real, divisor), np.arctan2),
    "hypot": binary((divisor, divisor), np.hypot),
    "logaddexp": binary((real, real), np.logaddexp),
    # sorting and scans
    "argsort": nodiff(1, real, lambda x, axis: np.argsort(x, axis=axis, kind="stable"),
                      [(((2, 3),), {"axis": -1}), (((4, 2, 3),), {"axis": 0}), (((5,),), {"axis": 0})]),
    "take_along": Row(2, (real, pick2), [(s, {"axis": a}) for s, a in [
        (((2, 3), (2, 3)), -1), (((2, 3), (2, 2)), 1), (((3, 2), (5, 2)), 0), (((4, 2, 3), (4, 2, 1)), 2),
        (((4,), (6,)), 0)]], ref=lambda x, idx, axis: np.take_along_axis(x, idx, axis=axis)),
    "put_along": Row(2, (real, pick2), [(s, {"axis": a, "shape": sh}) for s, a, sh in [
        (((2, 3), (2, 3)), -1, (2, 3)), (((2, 2), (2, 2)), 1, (2, 4)), (((5, 2), (5, 2)), 0, (2, 2)),
        (((6,), (6,)), 0, (3,))]], ref=ref_put_along),
    "cumsum": Row(1, (real,), [((s,), {"axis": a, "reverse": r}) for s, a in [((3,), 0), ((2, 3), 1), ((2, 3), 0),
                                                                          ((4, 2, 3), -2), ((1, 3), 0)]
                              for r in (False, True)],
                  ref=lambda x, axis, reverse: np.flip(np.cumsum(np.flip(x, axis), axis), axis) if reverse
                  else np.cumsum(x, axis=axis)),
    # einsum: the builtin hands it distinct letters per operand and no `...`
    "einsum": Row(None, (real,), [(shapes, {"spec": spec}) for spec, shapes in [
        ("ij,jk->ik", ((2, 3), (3, 4))), ("bij,bjk->bik", ((4, 2, 3), (4, 3, 2))), ("i,i->", ((3,), (3,))),
        ("ij->", ((2, 3),)), ("ij->ji", ((2, 3),)), ("i,j->ij", ((2,), (3,))), ("ij,jk->ij", ((2, 3), (3, 4))),
        ("ijk,jl,k->il", ((2, 3, 4), (3, 2), (4,))), ("abc,c->a", ((4, 2, 3), (3,)))]],
        wrt="all", ref=lambda *xs, spec: np.einsum(spec, *xs)),
})


# ---- dpl/linalg.py (issue 11): inputs far from singular, eigenvalues and singular values apart -----------------


def wellcond(rng, s):
    return rng.normal(size=s) + 3.0 * np.eye(s[-2], s[-1])


def symmetric(rng, s):
    a = rng.normal(size=s)
    return a + np.swapaxes(a, -1, -2)


def spd(rng, s):
    a = rng.normal(size=s)
    return a @ np.swapaxes(a, -1, -2) + s[-1] * np.eye(s[-1])


def gaps_apart(a, **_):
    w = np.linalg.eigvalsh((a + np.swapaxes(a, -1, -2)) / 2)
    return w.shape[-1] < 2 or np.min(np.diff(w, axis=-1)) > 0.3


def svals_apart(a, **_):
    sv = np.linalg.svd(a, compute_uv=False)
    return np.min(sv) > 0.3 and (sv.shape[-1] < 2 or np.min(-np.diff(sv, axis=-1)) > 0.3)


def sym_of(a):
    return (a + np.swapaxes(a, -1, -2)) / 2


SQUARE = [((3, 3),), ((4, 2, 2),), ((2, 1, 3, 3),), ((1, 1),)]
WIDE_TALL = [((3, 2),), ((2, 3),), ((4, 3, 2),), ((2, 2, 4),), ((3, 3),)]
RHS = [((3, 3), (3, 2)), ((4, 3, 3), (3, 1)), ((3, 3), (4, 3, 2)), ((2, 1, 2, 2), (3, 2, 2)), ((1, 1), (1, 1))]
SPEC.update({
    "solve": Row(2, (wellcond, real), [(sh, {}) for sh in RHS], wrt=(0, 1), ref=np.linalg.solve),
    "solve_triangular": Row(2, (wellcond, real), [(sh, {"lower": lo}) for sh in RHS for lo in (True, False)],
                            wrt=(0, 1), ref=lambda a, b, lower: np.linalg.solve(np.tril(a) if lower else np.triu(a), b)),
    "inv": Row(1, (wellcond,), [(sh, {}) for sh in SQUARE], ref=np.linalg.inv),
    "det": Row(1, (wellcond,), [(sh, {}) for sh in SQUARE], ref=np.linalg.det),
    "logabsdet": Row(1, (wellcond,), [(sh, {}) for sh in SQUARE], ref=lambda a: np.linalg.slogdet(a)[1]),
    "signdet": nodiff(1, real, lambda a: np.linalg.slogdet(a)[0], [(sh, {}) for sh in SQUARE]),
    "cholesky": Row(1, (spd,), [(sh, {}) for sh in SQUARE], ref=lambda a: np.linalg.cholesky(sym_of(a))),
    "eigh_values": Row(1, (symmetric,), [(sh, {}) for sh in SQUARE], valid=gaps_apart,
                       ref=lambda a: np.linalg.eigvalsh(sym_of(a))),
    "eigh_vectors": Row(1, (symmetric,), [(sh, {}) for sh in SQUARE], valid=gaps_apart,
                        ref=lambda a: np.linalg.eigh(sym_of(a))[1]),
    "svd_u": Row(1, (real,), [(sh, {}) for sh in WIDE_TALL], valid=svals_apart,
                 ref=lambda a: np.linalg.svd(a, full_matrices=False)[0]),
    "svd_s": Row(1, (real,), [(sh, {}) for sh in WIDE_TALL], valid=svals_apart,
                 ref=lambda a: np.linalg.svd(a, compute_uv=False)),
    "svd_vh": Row(1, (real,), [(sh, {}) for sh in WIDE_TALL], valid=svals_apart,
                  ref=lambda a: np.linalg.svd(a, full_matrices=False)[2]),
    "qr_q": Row(1, (wellcond,), [(sh, {}) for sh in [((3, 3),), ((4, 3, 3),)]] + [(sh, {}) for sh in [((3, 2),), ((2, 4, 2),)]],
                ref=lambda a: np.linalg.qr(a)[0]),
    "qr_r": Row(1, (wellcond,), [(sh, {}) for sh in [((3, 3),), ((4, 3, 3),)]] + [(sh, {}) for sh in [((3, 2),), ((2, 4, 2),)]],
                ref=lambda a: np.linalg.qr(a)[1]),
    "expm": Row(1, (real,), [(sh, {}) for sh in SQUARE], ref=lambda a: __import__("scipy.linalg").linalg.expm(a)),
})

# ---- dpl/ops.py and dpl/complexes.py: complex parts and the FFTs (issue 11), on complex inputs -------------------

FFT_CASES = [(((4,),), {"n": 4, "axis": 0}), (((5,),), {"n": 8, "axis": 0}), (((6,),), {"n": 3, "axis": 0}),
             (((2, 3),), {"n": 3, "axis": 1}), (((3, 2),), {"n": 5, "axis": 0}), (((2, 4, 3),), {"n": 4, "axis": 1}),
             (((1,),), {"n": 1, "axis": 0})]
IRFFT_CASES = [(((3,),), {"n": 4, "axis": 0}), (((3,),), {"n": 5, "axis": 0}), (((4,),), {"n": 4, "axis": 0}),
               (((2,),), {"n": 6, "axis": 0}), (((2, 3),), {"n": 4, "axis": 1}), (((3, 2),), {"n": 3, "axis": 0}),
               (((1,),), {"n": 1, "axis": 0})]
SPEC.update({
    "real": unary(cplx, np.real),
    "imag": unary(cplx, np.imag),
    "conj": unary(cplx, np.conj),
    "fft": Row(1, (cplx,), FFT_CASES, ref=lambda x, n, axis: np.fft.fft(x, n=n, axis=axis)),
    "ifft": Row(1, (cplx,), FFT_CASES, ref=lambda x, n, axis: np.fft.ifft(x, n=n, axis=axis)),
    "rfft": Row(1, (real,), FFT_CASES, ref=lambda x, n, axis: np.fft.rfft(x, n=n, axis=axis)),
    "irfft": Row(1, (cplx,), IRFFT_CASES, ref=lambda x, n, axis: np.fft.irfft(x, n=n, axis=axis)),
})

# ---- helpers ----------------------------------------------------------------------------------------


def case_id(name, shapes, attrs):
    sh = "+".join(str(tuple(s)).replace(" ", "") for s in shapes)
    at = ",".join(f"{k}={'arr' if hasattr(v, 'dtype') else v if isinstance(v, (int, tuple)) else type(v).__name__}"
                  for k, v in attrs.items())
    return f"{name}[{sh}]" + (f"{{{at}}}" if at else "")


def sample(name, i, draw=0):
    """The arguments of case i of `name`, seeded by the case (and `draw`, for another sample), redrawn until `valid`."""
    row = SPEC[name]
    shapes, attrs = row.cases[i]
    doms = row.domain * len(shapes) if row.arity is None else row.domain
    assert len(doms) == len(shapes), f"{name}: case {i} has {len(shapes)} shapes, arity {len(doms)}"
    rng = np.random.default_rng([zlib.crc32(case_id(name, shapes, attrs).encode()), draw])
    for _ in range(1000):
        args = [np.asarray(d(rng, s)) for d, s in zip(doms, shapes)]
        args = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args]
        if row.valid is None or row.valid(*args, **attrs):
            return args, attrs
    raise AssertionError(f"{name}: no valid sample for case {i}")


def wrt_of(name, nargs):
    wrt = SPEC[name].wrt
    return tuple(range(nargs)) if wrt == "all" else wrt


def first_order(op, args, wrt, attrs, cot):
    """Adjoints of sum(op(args) * cot) for the arguments in wrt, by dpl.autodiff.backward."""
    t = Trace()
    boxed = list(args)
    for i in wrt:
        boxed[i] = t.input(args[i])
    out = op(*boxed, **attrs)
    assert type(out) is Box and out.trace is t
    np.testing.assert_allclose(raw(out), op.fwd(*args, **attrs), rtol=1e-12, atol=1e-12)
    y = real_part(ops.sum_(ops.mul(out, cot)))
    grads = backward(t, y, [boxed[i] for i in wrt])
    assert len(grads) == len(wrt)
    res = []
    for i, g in zip(wrt, grads):
        g = np.zeros_like(args[i]) if g is None else np.asarray(raw(g))
        assert g.shape == np.shape(args[i]), f"adjoint of argument {i} has shape {g.shape}"
        want = np.result_type(args[i], np.float64)  # a real argument's adjoint is real, a complex one's complex
        assert g.dtype == want, f"adjoint of argument {i} has dtype {g.dtype}"
        res.append(g)
    return res


def real_part(y):
    """A complex result's loss is Re Σ cot·out (JAX's convention); a real one's Σ cot·out."""
    return ops.real(y) if raw(y).dtype.kind == "c" else y


def objective(op, args, i, attrs, cot):
    def f(xi):
        a = list(args)
        a[i] = xi
        return np.real(np.sum(op.fwd(*a, **attrs) * cot))
    return f


def cotangent(op, args, attrs, seed=1):
    out = op.fwd(*args, **attrs)
    rng = np.random.default_rng(seed)
    cot = rng.normal(size=np.shape(out))
    return cot + 1j * rng.normal(size=np.shape(out)) if np.iscomplexobj(out) else cot


def direction(rng, x):
    """A random tangent like x (complex for a complex x)."""
    v = rng.normal(size=np.shape(x))
    return v + 1j * rng.normal(size=np.shape(x)) if np.iscomplexobj(x) else v


def hvp(op, args, wrt, attrs, cot, vs):
    """∇ₓ⟨∇ₓ sum(op(x) * cot), v⟩: the inner backward pass is recorded by an outer trace and differentiated."""
    outer = Trace()
    ob = list(args)
    for i in wrt:
        ob[i] = outer.input(args[i])
    inner = Trace()
    ib = list(ob)
    for i in wrt:
        ib[i] = inner.input(ob[i])
    y = real_part(ops.sum_(ops.mul(op(*ib, **attrs), cot)))
    gs = backward(inner, y, [ib[i] for i in wrt])
    s = 0.0
    for g, v in zip(gs, vs):
        if g is not None:
            s = ops.add(s, real_part(ops.sum_(ops.mul(g, v))))
    if not (type(s) is Box and s.trace is outer):
        return [np.zeros_like(args[i]) for i in wrt]
    hs = backward(outer, s, [ob[i] for i in wrt])
    return [np.zeros_like(args[i]) if h is None else np.asarray(raw(h)) for i, h in zip(wrt, hs)]


ALL = [(name, i) for name, row in SPEC.items() for i in range(len(row.cases))]
DIFF = [(n, i) for n, i in ALL if SPEC[n].wrt is not None]
SECOND = [(n, i) for n, i in DIFF if SPEC[n].second]


def params(cases, grad=True):
    """pytest params with readable ids; cases of known bugs are strict xfails (for the gradient tests)."""
    out = []
    for n, i in cases:
        reason = SPEC[n].xfail.get(i) if grad else None
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(n, i, id=case_id(n, *SPEC[n].cases[i]), marks=marks))
    return out


# ---- the table and the registry agree -----------------------------------------------------------------


def test_every_registered_op_has_a_row_and_every_row_an_op():
    registered, specified = set(ops.REGISTRY), set(SPEC)
    assert registered - specified == set(), f"ops registered without a row in SPEC: {sorted(registered - specified)}"
    assert specified - registered == set(), f"rows in SPEC for ops never registered: {sorted(specified - registered)}"


@pytest.mark.parametrize("name", sorted(SPEC))
def test_row_matches_the_ops_vjps(name):
    """A row says which arguments take a gradient; the op's rule table must say the same."""
    op, row = ops.REGISTRY[name], SPEC[name]
    assert row.cases, f"{name}: no cases"
    if row.wrt is None:
        assert op.vjps is None, f"{name} has VJPs but its row says it has no derivative"
        return
    assert op.vjps is not None, f"{name} has no VJPs but its row says it is differentiable"
    if row.arity is None:
        assert callable(op.vjps)
        for shapes, _ in row.cases:
            assert all(op.vjps(i) is not None for i in range(len(shapes)))
    else:
        rules = op.vjps if not callable(op.vjps) else [op.vjps(i) for i in range(row.arity)]
        assert len(rules) == row.arity, f"{name}: {len(rules)} rules for arity {row.arity}"
        assert tuple(i for i, r in enumerate(rules) if r is not None) == tuple(row.wrt)


# ---- forward against NumPy ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,i", params(ALL, grad=False))
def test_forward_matches_numpy(name, i):
    args, attrs = sample(name, i)
    op, ref = ops.REGISTRY[name], SPEC[name].ref
    got = op(*args, **attrs)
    want = ref(*args, **attrs)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype.kind == np.asarray(want).dtype.kind
    as_number = np.result_type(np.asarray(want).dtype, float)  # complex results compared as complex
    np.testing.assert_allclose(np.asarray(got, dtype=as_number), np.asarray(want, dtype=as_number), rtol=1e-12,
                               atol=1e-12)
    # recorded in a trace, the value is the same
    t = Trace()
    boxed = [t.input(a) for a in args]
    np.testing.assert_array_equal(raw(op(*boxed, **attrs)), got)


# ---- first order: VJP against central finite differences -----------------------------------------------


@pytest.mark.parametrize("name,i", params(DIFF))
def test_vjp_matches_finite_differences(name, i):
    args, attrs = sample(name, i)
    op = ops.REGISTRY[name]
    wrt = wrt_of(name, len(args))
    cot = cotangent(op, args, attrs)
    grads = first_order(op, args, wrt, attrs, cot)
    for k, g in zip(wrt, grads):
        want = numeric_grad(objective(op, args, k, attrs, cot), args[k])
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7, err_msg=f"{name}: adjoint of argument {k}")


@pytest.mark.parametrize("name,i", params(DIFF))
def test_vjp_keeps_float32(name, i):
    """Under --dtype float32 every adjoint stays float32 (no float64 constant leaks into a rule)."""
    from dpl import backend
    args, attrs = sample(name, i)
    args = [a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.complex64) if a.dtype.kind == "c" else a
            for a in args]
    attrs = {k: (np.dtype("float32") if k == "dtype" else v) for k, v in attrs.items()}
    if name == "spmm":
        attrs["A"] = dpl.primitives.Sparse(attrs["A"].matrix.astype(np.float32))
    backend.use("cpu", "float32")
    op = ops.REGISTRY[name]
    wrt = wrt_of(name, len(args))
    t = Trace()
    boxed = list(args)
    for k in wrt:
        boxed[k] = t.input(args[k])
    out = op(*boxed, **attrs)
    assert raw(out).dtype in (np.float32, np.complex64), f"{name} forward gives {raw(out).dtype}"
    cot = cotangent(op, args, attrs)
    cot = cot.astype(np.complex64 if np.iscomplexobj(cot) else np.float32)
    grads = backward(t, real_part(ops.sum_(ops.mul(out, cot))), [boxed[k] for k in wrt])
    for k, g in zip(wrt, grads):
        if g is not None:
            want = np.complex64 if args[k].dtype.kind == "c" else np.float32
            assert np.asarray(raw(g)).dtype == want, f"{name}: adjoint of argument {k} is {raw(g).dtype}"


# ---- second order: differentiate the recorded backward pass --------------------------------------------


@pytest.mark.parametrize("name,i", params(SECOND))
def test_second_order_matches_finite_differences_of_the_vjp(name, i):
    args, attrs = sample(name, i)
    op = ops.REGISTRY[name]
    wrt = wrt_of(name, len(args))
    cot = cotangent(op, args, attrs)
    rng = np.random.default_rng(2)
    vs = [direction(rng, args[k]) for k in wrt]
    got = hvp(op, args, wrt, attrs, cot, vs)
    for n, k in enumerate(wrt):
        def s(xk, k=k):
            a = list(args)
            a[k] = xk
            return sum(np.real(np.sum(g * v)) for g, v in zip(first_order(op, a, wrt, attrs, cot), vs))
        want = numeric_grad(s, args[k], h=1e-5)
        np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: second order w.r.t. argument {k}")


def record_second_order(name, i):
    """args -> the Graph of y + ⟨∇y, v⟩, y = sum(op(args) * cot), every argument an input (the backward recorded)."""
    op, (_, attrs) = ops.REGISTRY[name], SPEC[name].cases[i]
    args, _ = sample(name, i)
    wrt = wrt_of(name, len(args))
    cot = cotangent(op, args, attrs)
    vs = [direction(np.random.default_rng(2), args[k]) for k in wrt]

    def record(args):
        outer = Trace()
        ob = [outer.input(a) for a in args]
        inner = Trace()
        ib = list(ob)
        for k in wrt:
            ib[k] = inner.input(ob[k])
        y = real_part(ops.sum_(ops.mul(op(*ib, **attrs), cot)))
        gs = backward(inner, y, [ib[k] for k in wrt])
        s = y.value  # recorded, so an adjoint that is a constant (relu's g·mask) is an argument of a node
        for g, v in zip(gs, vs):
            s = s if g is None else ops.add(s, real_part(ops.sum_(ops.mul(g, v))))
        return Graph(outer, [s])
    return record


@pytest.mark.parametrize("name,i", params(DIFF, grad=False))
def test_a_recorded_backward_pass_bakes_in_no_value_of_the_inputs(name, i):
    """Masks and conditions in VJPs are ops connected to x (issue 9 §2): recordings at two inputs differ
    only in values, never in a constant argument."""
    assert frozen_constants(record_second_order(name, i), sample(name, i)[0], sample(name, i, draw=1)[0]) == []


def test_the_frozen_constant_check_finds_a_mask_taken_from_raw_values(monkeypatch):
    monkeypatch.setattr(ops.relu, "vjps", [lambda g, ans, x: ops.mul(g, raw(x) > 0)])
    found = frozen_constants(record_second_order("relu", 2), sample("relu", 2)[0], sample("relu", 2, draw=1)[0])
    assert found == ["%5 = add: argument 1 is a constant that depends on the inputs"]  # ⟨g·mask, v⟩ is a constant


def test_second_order_of_tanh_is_recorded_and_exact():
    """d²/dx² tanh = -2 tanh (1 - tanh²): the gradient must be a Box of the outer trace, not a constant."""
    x = np.array([-1.0, 0.3, 2.0])
    outer = Trace()
    bx = outer.input(x)
    inner = Trace()
    ix = inner.input(bx)
    (g,) = backward(inner, ops.sum_(ops.tanh(ix)), [ix])
    assert type(g) is Box and g.trace is outer
    (h,) = backward(outer, ops.sum_(g), [bx])
    t = np.tanh(x)
    np.testing.assert_allclose(raw(g), 1 - t ** 2, rtol=1e-14)
    np.testing.assert_allclose(raw(h), -2 * t * (1 - t ** 2), rtol=1e-12)


# ---- edge cases fixed by LANGUAGE.md §9 ------------------------------------------------------------------


def grads_of(f, *xs, cot=None):
    """Adjoints of sum(f(*xs) * cot) (cot defaults to ones) for every x."""
    t = Trace()
    bs = [t.input(np.asarray(x, dtype=np.float64)) for x in xs]
    out = f(*bs)
    y = ops.sum_(out if cot is None else ops.mul(out, np.asarray(cot, dtype=np.float64)))
    return [None if g is None else np.asarray(raw(g)) for g in backward(t, y, bs)], raw(out)


def test_relu_derivative_at_zero_is_zero():
    (g,), _ = grads_of(ops.relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


def test_abs_derivative_at_zero_is_zero():
    (g,), _ = grads_of(ops.abs_, [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


def test_clip_passes_the_gradient_at_both_bounds_inclusive():
    (gx, glo, ghi), out = grads_of(ops.clip, [-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], -0.5, 0.5)
    np.testing.assert_array_equal(out, [-0.5, -0.5, 0.0, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(gx, [0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    assert glo == 1.0 and ghi == 2.0  # only the strictly clipped elements go to the bounds


def test_sqrt_derivative_at_zero_is_plus_inf():
    with np.errstate(divide="ignore"):
        (g,), _ = grads_of(ops.sqrt, [0.0, 4.0])
    assert g[0] == np.inf
    assert g[1] == 0.25


def test_pow_exponent_adjoint_is_zero_where_base_is_zero():
    with np.errstate(divide="ignore", invalid="ignore"):
        (gx, gy), out = grads_of(ops.power, [0.0, 2.0, 0.0, 3.0], [2.0, 3.0, 1.0, 0.5])
    np.testing.assert_array_equal(out, [0.0, 8.0, 0.0, np.sqrt(3.0)])
    np.testing.assert_allclose(gy, [0.0, 8.0 * np.log(2.0), 0.0, np.sqrt(3.0) * np.log(3.0)], rtol=1e-14)
    np.testing.assert_allclose(gx, [0.0, 12.0, 1.0, 0.5 / np.sqrt(3.0)], rtol=1e-14)


def test_pow_with_constant_exponent_is_finite_for_negative_base():
    """With y not traced, only x's adjoint is formed: no log of a negative base leaks NaN."""
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (gx,), _ = grads_of(lambda x: ops.power(x, np.float64(2.0)), [-3.0, 0.0, 1.5])
    np.testing.assert_allclose(gx, [-6.0, 0.0, 3.0])


def test_pow_exponent_adjoint_broadcast_and_zero_base():
    (gx, gy), _ = grads_of(ops.power, [[0.0, 2.0], [1.0, 0.0]], [3.0, 2.0])
    np.testing.assert_allclose(gy, [np.log(1.0), 4.0 * np.log(2.0)])  # column sums; the 0-bases add nothing
    np.testing.assert_allclose(gx, [[0.0, 4.0], [3.0, 0.0]])


def test_pow_second_order_is_finite_at_a_zero_base():
    """The masked log(0) must not leak NaN into second derivatives (0 · -inf in the unselected branch)."""
    x, y = np.array([0.0, 1.5]), np.array([2.0, 2.5])
    outer = Trace()
    bx, by = outer.input(x), outer.input(y)
    inner = Trace()
    ix, iy = inner.input(bx), inner.input(by)
    gx, gy = backward(inner, ops.sum_(ops.power(ix, iy)), [ix, iy])
    with np.errstate(divide="ignore", invalid="ignore"):
        hxx, hxy = (raw(h) for h in backward(outer, ops.sum_(gx), [bx, by]))
        hyx, hyy = (raw(h) for h in backward(outer, ops.sum_(gy), [bx, by]))
    a, b = x[1], y[1]
    np.testing.assert_allclose(hxx, [2.0, b * (b - 1) * a ** (b - 2)], rtol=1e-14)
    np.testing.assert_allclose(hxy, [0.0, a ** (b - 1) * (1 + b * np.log(a))], rtol=1e-14)
    np.testing.assert_allclose(hyx, [0.0, a ** (b - 1) * (1 + b * np.log(a))], rtol=1e-14)
    np.testing.assert_allclose(hyy, [0.0, a ** b * np.log(a) ** 2], rtol=1e-14)


def test_pow_with_exponent_zero_has_gradient_zero_at_a_zero_base():
    """d/dx x^0 = 0 everywhere, also at x = 0 where y x^(y-1) is 0 · ∞ (issue 15; JAX and PyTorch agree)."""
    with np.errstate(divide="raise", invalid="raise"):
        (gx,), _ = grads_of(lambda x: ops.power(x, np.float64(0.0)), [0.0, 2.0, -1.5])
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0])
    (gx, gy), _ = grads_of(ops.power, [0.0, 0.0, 2.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(gy, [0.0, 0.0, np.log(2.0)])


def second_derivatives(f, x, y):
    """(∂²f/∂x², ∂²f/∂x∂y) of sum(f(x, y)) by differentiating the recorded backward pass."""
    outer = Trace()
    bx, by = outer.input(np.asarray(x, dtype=float)), outer.input(np.asarray(y, dtype=float))
    inner = Trace()
    ix, iy = inner.input(bx), inner.input(by)
    gx, _ = backward(inner, ops.sum_(f(ix, iy)), [ix, iy])
    hxx, hxy = backward(outer, ops.sum_(gx), [bx, by])
    return raw(hxx), raw(hxy)


def test_pow_second_order_at_exponents_zero_and_one():
    """grad(grad(x ^ 1))(0) = 0, not NaN (issue 15); ∂²/∂x∂y x^y = x^(y-1)(1 + y log x) stays exact at y = 0."""
    with np.errstate(divide="raise", invalid="raise"):
        hxx, _ = second_derivatives(ops.power, [0.0, 3.0], [1.0, 1.0])
        np.testing.assert_array_equal(hxx, [0.0, 0.0])
        hxx, hxy = second_derivatives(ops.power, [0.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(hxx, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(hxy, [0.0, 0.5, 0.25], rtol=1e-15)  # 1/x, and 0 at the singular x = y = 0


def test_transpose_with_negative_axes_in_perm():
    """The VJP inverts the normalised perm (issue 15: the square case came back transposed)."""
    x, w = np.array([[0.5, -1.0], [2.0, 0.25]]), np.array([[1.0, 2.0], [3.0, 4.0]])
    (g,), _ = grads_of(lambda b: ops.transpose(b, perm=(0, -1)), x, cot=w)
    np.testing.assert_array_equal(g, w)
    (g,), _ = grads_of(lambda b: ops.transpose(b, perm=(-1, 0, 1)), np.zeros((2, 3, 4)), cot=np.ones((4, 2, 3)))
    assert g.shape == (2, 3, 4)


@pytest.mark.parametrize("shape,axis,want", [((0,), None, -np.inf), ((0, 3), 0, [-np.inf] * 3),
                                             ((3, 0), 1, [-np.inf] * 3), ((3, 0), 0, np.zeros((0,)))])
def test_logsumexp_of_nothing_is_minus_inf(shape, axis, want):
    with np.errstate(divide="ignore"):
        (g,), out = grads_of(lambda b: ops.logsumexp(b, axis=axis), np.zeros(shape))
    np.testing.assert_array_equal(out, want)
    assert g.shape == shape


@pytest.mark.parametrize("shape,axis", [((0,), 0), ((0, 3), 0), ((3, 0), 1), ((3, 0), 0), ((2, 0, 3), -2)])
def test_softmax_over_an_empty_axis_is_empty(shape, axis):
    (g,), out = grads_of(lambda b: ops.softmax(b, axis=axis), np.zeros(shape))
    assert out.shape == shape and g.shape == shape
    mask = np.ones(shape, dtype=bool)
    (g,), out = grads_of(lambda b: ops.masked_softmax(b, mask, axis=axis), np.zeros(shape))
    assert out.shape == shape and g.shape == shape


def test_masked_softmax_rows_fully_masked_are_zero_with_zero_gradient():
    x = np.array([[1000.0, -3.0, 2.0], [1.0, 2.0, 3.0]])
    mask = np.array([[False, False, False], [True, False, True]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (g,), out = grads_of(lambda b: ops.masked_softmax(b, mask, axis=-1), x, cot=[[1.0, 2.0, 3.0], [1.0, 5.0, -1.0]])
    p = np.exp(1.0) / (np.exp(1.0) + np.exp(3.0))
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.0], [p, 0.0, 1 - p]], rtol=1e-15)
    np.testing.assert_allclose(g, [[0.0, 0.0, 0.0], [2 * p * (1 - p), 0.0, -2 * p * (1 - p)]], rtol=1e-14)


@pytest.mark.parametrize("op,x,kw,want", [
    (ops.amax, [1.0, 3.0, 3.0], {}, [0.0, 0.5, 0.5]),
    (ops.amin, [2.0, 1.0, 1.0, 1.0], {}, [0.0, 1 / 3, 1 / 3, 1 / 3]),
    (ops.amax, [[1.0, 1.0], [2.0, 0.0]], {"axis": 1}, [[0.5, 0.5], [1.0, 0.0]]),
    (ops.amax, [[1.0, 1.0], [2.0, 0.0]], {"axis": 1, "keepdims": True}, [[0.5, 0.5], [1.0, 0.0]]),
    (ops.amin, [[1.0, 1.0], [1.0, 0.0]], {"axis": 0}, [[0.5, 0.0], [0.5, 1.0]]),
    (ops.amax, [[5.0, 1.0], [5.0, 5.0]], {"axis": (0, 1)}, [[1 / 3, 0.0], [1 / 3, 1 / 3]]),
    (ops.amax, [4.0, 4.0, 4.0, 4.0], {}, [0.25] * 4),
], ids=["max", "min", "max-axis1", "max-keepdims", "min-axis0", "max-axis-tuple", "max-all-tied"])
def test_tied_extrema_share_the_adjoint_equally(op, x, kw, want):
    (g,), _ = grads_of(lambda b: op(b, **kw), x)
    np.testing.assert_allclose(g, want, rtol=1e-15)


def test_tied_extrema_share_a_weighted_cotangent():
    (g,), _ = grads_of(lambda b: ops.amax(b, axis=1), [[2.0, 2.0, 1.0], [0.0, 3.0, 3.0]], cot=[4.0, -2.0])
    np.testing.assert_allclose(g, [[2.0, 2.0, 0.0], [0.0, -1.0, -1.0]])


@pytest.mark.parametrize("op", [ops.maximum, ops.minimum], ids=["maximum", "minimum"])
def test_tied_elementwise_extrema_share_the_adjoint_equally(op):
    (gx, gy), _ = grads_of(op, [1.0, 2.0, -1.0], [1.0, 0.0, 0.0])
    win = [0.5, 1.0, 0.0] if op is ops.maximum else [0.5, 0.0, 1.0]
    np.testing.assert_array_equal(gx, win)
    np.testing.assert_array_equal(gy, 1.0 - np.array(win))
    # broadcast: a scalar tied with two entries collects both halves
    (gx, gy), _ = grads_of(op, [0.0, 1.0, 0.0], 0.0)
    np.testing.assert_array_equal(gx, [0.5, 1.0 if op is ops.maximum else 0.0, 0.5])
    assert gy == (1.0 if op is ops.maximum else 2.0)


def test_max_of_a_value_with_itself_has_gradient_one():
    (g,), _ = grads_of(lambda b: ops.maximum(b, b), [1.0, -2.0])
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_index_with_repeated_integers_accumulates():
    (g,), out = grads_of(lambda b: ops.index(b, key=np.array([0, 0, 2, 0])), [1.0, 2.0, 3.0, 4.0],
                         cot=[1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_array_equal(out, [1.0, 1.0, 3.0, 1.0])
    np.testing.assert_array_equal(g, [1011.0, 0.0, 100.0, 0.0])


def test_index_with_repeated_coordinate_pairs_accumulates():
    key = (np.array([1, 1, 0]), np.array([0, 0, 1]))
    (g,), _ = grads_of(lambda b: ops.index(b, key=key), np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(g, [[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])


def test_index_with_repeated_rows_accumulates_whole_rows():
    (g,), _ = grads_of(lambda b: ops.index(b, key=np.array([2, 2, 2])), np.zeros((3, 2)), cot=np.ones((3, 2)))
    np.testing.assert_array_equal(g, [[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]])


def test_boolean_mask_index_scatters_back_to_the_selected_positions():
    x = np.arange(6.0).reshape(2, 3)
    mask = x % 2 == 1
    (g,), out = grads_of(lambda b: ops.index(b, key=mask), x, cot=[1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(g, [[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])


def test_boolean_row_mask():
    (g,), _ = grads_of(lambda b: ops.index(b, key=np.array([True, False, True])), np.ones((3, 2)))
    np.testing.assert_array_equal(g, [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])


def test_softmax_and_logsumexp_are_stable_for_large_inputs():
    x = np.array([1000.0, 1000.0, 999.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (g,), lse = grads_of(ops.logsumexp, x)
        cot = np.array([1.0, -1.0, 2.0])
        (gs,), sm = grads_of(lambda b: ops.softmax(b, axis=-1), x, cot=cot)
    p = np.exp(x - 1000.0) / np.exp(x - 1000.0).sum()
    np.testing.assert_allclose(lse, 1000.0 + np.log(2.0 + np.exp(-1.0)), rtol=1e-15)
    np.testing.assert_allclose(g, p, rtol=1e-12)  # exp(x - lse) at |x| = 1000 keeps ~13 digits
    np.testing.assert_allclose(sm, p, rtol=1e-14)
    np.testing.assert_allclose(gs, p * (cot - np.dot(cot, p)), rtol=1e-12, atol=1e-15)


def test_logsumexp_is_stable_for_large_negative_inputs_along_an_axis():
    x = np.array([[-1000.0, -1000.0], [1000.0, 0.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (g,), lse = grads_of(lambda b: ops.logsumexp(b, axis=1), x)
    np.testing.assert_allclose(lse, [-1000.0 + np.log(2.0), 1000.0], rtol=1e-15)
    np.testing.assert_allclose(g, [[0.5, 0.5], [1.0, 0.0]], atol=1e-300)


def test_softmax_second_order_is_finite_for_large_inputs():
    x = np.array([1000.0, 999.0, -1000.0])
    outer = Trace()
    bx = outer.input(x)
    inner = Trace()
    ix = inner.input(bx)
    (g,) = backward(inner, ops.logsumexp(ix), [ix])
    (h,) = backward(outer, ops.sum_(ops.mul(g, np.array([1.0, 0.0, 0.0]))), [bx])
    p = scipy.special.softmax(x)
    np.testing.assert_allclose(raw(h), p[0] * (np.eye(3)[0] - p), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("x", [1000.0, -1000.0])
def test_sigmoid_and_softplus_gradients_are_finite_for_large_inputs(x):
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (gs,), _ = grads_of(ops.sigmoid, x)
        (gp,), _ = grads_of(ops.softplus, x)
    assert gs == 0.0
    assert gp == (1.0 if x > 0 else 0.0)


def test_norm_at_zero_has_gradient_zero():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (g,), n = grads_of(ops.norm, np.zeros((2, 3)))
    assert n == 0.0
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_norm_along_an_axis_with_a_zero_row():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        (g,), n = grads_of(lambda b: ops.norm(b, axis=1), x)
    np.testing.assert_array_equal(n, [0.0, 5.0])
    np.testing.assert_allclose(g, [[0.0, 0.0], [0.6, 0.8]], rtol=1e-15)


def test_mod_gradients():
    (gx, gy), out = grads_of(ops.mod, [7.0, -7.0, 7.5], [2.0, 2.0, -2.0])
    np.testing.assert_array_equal(out, np.mod([7.0, -7.0, 7.5], [2.0, 2.0, -2.0]))
    np.testing.assert_array_equal(gx, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(gy, -np.floor(np.array([7.0, -7.0, 7.5]) / np.array([2.0, 2.0, -2.0])))


def test_astype_float32_adjoint_comes_back_as_the_source_dtype():
    t = Trace()
    bx = t.input(np.array([1.0, 2.0]))
    out = ops.astype(bx, dtype=np.float32)
    assert raw(out).dtype == np.float32
    (g,) = backward(t, ops.sum_(ops.mul(out, np.float32(3.0))), [bx])
    assert raw(g).dtype == np.float64
    np.testing.assert_array_equal(raw(g), [3.0, 3.0])


def test_astype_of_an_integer_input_takes_no_gradient():
    assert ops.astype.vjp(0, np.ones(2), np.ones(2), (np.array([1, 2]),), {"dtype": np.float64}) is None


def test_ops_on_plain_arrays_record_nothing():
    """Outside any trace an op is just its forward: no Box comes back."""
    out = ops.mul(np.array([1.0, 2.0]), 3.0)
    assert type(out) is not Box
    np.testing.assert_array_equal(out, [3.0, 6.0])


def test_an_input_the_output_does_not_use_gets_no_adjoint():
    t = Trace()
    bx, by = t.input(np.array(2.0)), t.input(np.array(5.0))
    gx, gy = backward(t, ops.mul(bx, bx), [bx, by])
    assert float(raw(gx)) == 4.0 and gy is None


def test_an_input_used_twice_accumulates():
    t = Trace()
    bx = t.input(np.array([1.0, 2.0]))
    y = ops.sum_(ops.add(ops.mul(bx, 3.0), ops.exp(bx)))
    (g,) = backward(t, y, [bx])
    np.testing.assert_allclose(raw(g), 3.0 + np.exp([1.0, 2.0]), rtol=1e-15)
