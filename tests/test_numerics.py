"""The NumPy/SciPy functions of dpl/numerics.py as DPL builtins: values against NumPy/SciPy, gradients against
central finite differences to second order (broadcast and batch shapes), float32 kept, positioned errors.

The primitives among them are checked op by op in test_ops.py as well; here every builtin, composed or not,
is checked through a real program. A case is (the body of F, its arguments, a NumPy reference, which
arguments take a gradient). The program around it is

    fn F(a0, a1) = BODY
    fn f(a0, a1, cot) = sum(F(a0, a1) * cot)                  # first order: grad(f)
    fn s0(a0, a1, cot, v) = sum(grad(f, argnum = 0)(a0, a1, cot) * v)   # second order: grad(s0)
"""
from __future__ import annotations

import dataclasses
import textwrap
import zlib
from typing import Callable

import numpy as np
import pytest
import scipy.special

import dpl
from conftest import check_grads
from dpl.errors import DplError


@dataclasses.dataclass
class Case:
    body: str                     # an expression in a0, a1, ..., or a block `{ ... }`
    args: Callable                # rng -> list of arguments (float64 arrays, or integer arrays/ints taking no gradient)
    ref: Callable                 # NumPy/SciPy reference of F
    wrt: tuple = (0,)
    second: bool = True
    rtol: float = 1e-6


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def normal(*shape):
    return lambda r: r.normal(size=shape)


def within(lo, hi, *shape):
    return lambda r: r.uniform(lo, hi, size=shape)


def off_int(*shape):  # never near a jump of floor/ceil/round
    return lambda r: r.integers(-3, 3, size=shape) + r.uniform(0.1, 0.4, size=shape) * r.choice([1, 2], size=shape)


def pair(a, b):
    return lambda r: [a(r), b(r)]


def one(a):
    return lambda r: [a(r)]


CASES: dict[str, Case] = {}


def case(name, body, args, ref, **kw):
    assert name not in CASES
    CASES[name] = Case(body, args, ref, **kw)


# ---- 1. elementwise ---------------------------------------------------------------------------------------

for fname, dom, ref in [
    ("sign", off_int, np.sign), ("floor", off_int, np.floor), ("ceil", off_int, np.ceil),
    ("round", off_int, np.round),
]:
    case(fname, f"{fname}(a0) * a0", one(dom(2, 3)), lambda x, ref=ref: ref(x) * x)
sp = scipy.special
for fname, lo, hi, ref in [
    ("square", -2, 2, np.square), ("reciprocal", 0.5, 2, np.reciprocal), ("log1p", -0.5, 2, np.log1p),
    ("expm1", -2, 2, np.expm1), ("log2", 0.5, 3, np.log2), ("log10", 0.5, 3, np.log10),
    ("exp2", -2, 2, np.exp2), ("sinh", -2, 2, np.sinh), ("cosh", -2, 2, np.cosh),
    ("arcsin", -0.9, 0.9, np.arcsin), ("arccos", -0.9, 0.9, np.arccos), ("arctan", -3, 3, np.arctan),
    ("arcsinh", -3, 3, np.arcsinh), ("arccosh", 1.2, 3, np.arccosh), ("arctanh", -0.9, 0.9, np.arctanh),
    ("sinc", -2, 2, np.sinc), ("erf", -2, 2, sp.erf), ("erfc", -2, 2, sp.erfc), ("erfinv", -0.9, 0.9, sp.erfinv),
    ("lgamma", 0.3, 4, sp.gammaln), ("digamma", 0.3, 4, sp.digamma), ("gamma", 0.3, 4, sp.gamma),
]:
    case(fname, f"{fname}(a0)", one(within(lo, hi, 4, 2, 3)), ref)
case("sinc-at-0", "sinc(a0)", lambda r: [np.array([0.0, 1e-4, -3e-4, 0.3])], np.sinc)
case("polygamma", "polygamma(2, a0)", one(within(0.5, 3, 2, 3)), lambda x: sp.polygamma(2, x))
for fname, ref in [("arctan2", np.arctan2), ("hypot", np.hypot), ("logaddexp", np.logaddexp)]:
    case(fname, f"{fname}(a0, a1)", pair(normal(2, 3), normal(3)), ref, wrt=(0, 1))
    case(fname + "-bcast", f"{fname}(a0, a1)", pair(normal(2, 1), normal(1, 3)), ref, wrt=(0, 1))


# ---- 2. sorting and scans -----------------------------------------------------------------------------------


def block(*lines):
    return "{\n" + "\n".join(lines) + "\n}"


def np_topk(x, k, axis=-1):
    idx = np.take(np.argsort(-x, axis=axis, kind="stable"), np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx


ZEROS = np.array([[2.0, 0.0, 3.0, 0.5, -1.5], [0.0, 0.0, 1.5, 2.0, 0.7], [1.2, -0.8, 0.0, 1.1, 0.9]])
case("sort", "sort(a0)", one(normal(4, 2, 3)), lambda x: np.sort(x, axis=-1))
case("sort-axis0", "sort(a0, axis = 0)", one(normal(4, 3)), lambda x: np.sort(x, axis=0))
case("argsort", "argsort(a0, axis = 1)", one(normal(2, 5, 3)), lambda x: np.argsort(x, axis=1), wrt=())
case("argsort-stable", "argsort(a0)", lambda r: [np.array([2, 1, 2, 0, 1, 2])],
     lambda x: np.argsort(x, kind="stable"), wrt=())
case("take_along_axis", "take_along_axis(a0, argsort(a1, axis = 1) % 3 - 1, axis = 1)",  # repeats and -1
     pair(normal(2, 4, 3), normal(2, 6, 3)),
     lambda x, a: np.take_along_axis(x, np.argsort(a, axis=1, kind="stable") % 3 - 1, axis=1))
case("take_along_axis-unsort", block("i = argsort(a0)", "return take_along_axis(sort(a0), argsort(i)) * a0"),
     one(normal(3, 5)), lambda x: x * x)
case("take_along_axis-bcast", "take_along_axis(a0, [[3, 0, 0, 2, 1, 3]])", one(normal(3, 4)),
     lambda x: np.take_along_axis(x, np.broadcast_to([[3, 0, 0, 2, 1, 3]], (3, 6)), axis=-1))
case("topk-values", block("v, i = topk(a0, 2, axis = 1)", "return v"), one(normal(4, 3, 2)),
     lambda x: np_topk(x, 2, 1)[0])
case("topk-indices", block("v, i = topk(a0, 3)", "return i"), lambda r: [np.array([1.0, 3.0, 3.0, 0.0, 2.0])],
     lambda x: np.array([1, 2, 4]), wrt=())
case("cumsum", "cumsum(a0)", one(normal(2, 3)), np.cumsum)
case("cumsum-axis", "cumsum(a0, axis = 1)", one(normal(4, 2, 3)), lambda x: np.cumsum(x, axis=1))
case("cumprod", "cumprod(a0, axis = -1)", one(normal(2, 7)), lambda x: np.cumprod(x, axis=-1))
case("cumprod-zeros", "cumprod(a0, axis = 1)", lambda r: [ZEROS], lambda x: np.cumprod(x, axis=1))
case("cumprod-flat", "cumprod(a0)", one(normal(2, 3)), np.cumprod)
case("prod", "prod(a0)", one(normal(2, 3)), np.prod)
case("prod-zeros", "prod(a0, axis = 1)", lambda r: [ZEROS], lambda x: np.prod(x, axis=1))
case("prod-axes", "prod(a0, axis = [0, 2], keepdims = true)", one(normal(3, 2, 5)),
     lambda x: np.prod(x, axis=(0, 2), keepdims=True))
case("diff", "diff(a0)", one(normal(4, 2, 5)), np.diff)
case("diff-2", "diff(a0, n = 2, axis = 0)", one(normal(5, 3)), lambda x: np.diff(x, n=2, axis=0))

# ---- 3. statistics -----------------------------------------------------------------------------------------

case("var", "var(a0)", one(normal(2, 3)), np.var)
case("var-ddof", "var(a0, axis = 1, ddof = 1)", one(normal(4, 2, 5)), lambda x: np.var(x, axis=1, ddof=1))
case("std", "std(a0, axis = [0, 2], keepdims = true)", one(normal(3, 2, 4)),
     lambda x: np.std(x, axis=(0, 2), keepdims=True))
case("std-ddof", "std(a0, ddof = 1.5)", one(normal(6)), lambda x: np.std(x, ddof=1.5))
case("median-odd", "median(a0)", one(normal(5)), np.median)
case("median-even", "median(a0, axis = 1)", one(normal(3, 4)), lambda x: np.median(x, axis=1))
case("median-keepdims", "median(a0, axis = 0, keepdims = true)", one(normal(4, 2, 3)),
     lambda x: np.median(x, axis=0, keepdims=True))
case("quantile", "quantile(a0, 0.3)", one(normal(2, 5)), lambda x: np.quantile(x, 0.3))
case("quantile-q", "quantile(a0, a1, axis = 1)", lambda r: [r.normal(size=(3, 5, 2)), np.array([0.13, 0.61, 0.9])],
     lambda x, q: np.quantile(x, q, axis=1), wrt=(0, 1))
case("quantile-keepdims", "quantile(a0, [0.25, 1.0], axis = -1, keepdims = true)", one(normal(2, 4)),
     lambda x: np.quantile(x, [0.25, 1.0], axis=-1, keepdims=True))


# ---- 4. shapes -------------------------------------------------------------------------------------------------

case("split", block("p, q = split(a0, [1, 2], axis = 1)", "return q"), one(normal(2, 3)), lambda x: x[:, 1:])
case("split-equal", block("p, q = split(a0, 2)", "return p * q"), one(normal(4, 3)), lambda x: x[:2] * x[2:])
case("split-empty", block("p, q, r = split(a0, [2, 0, 1], axis = -1)", "return concat([r, p], axis = 1)"),
     one(normal(2, 3)), lambda x: np.concatenate([x[:, 2:], x[:, :2]], axis=1))
case("flip", "flip(a0)", one(normal(4, 2, 3)), np.flip)
case("flip-axes", "flip(a0, axis = [0, 2])", one(normal(4, 2, 3)), lambda x: np.flip(x, axis=(0, 2)))
case("roll", "roll(a0, 2)", one(normal(2, 3)), lambda x: np.roll(x, 2))
case("roll-axes", "roll(a0, [1, -2], axis = [0, 2])", one(normal(4, 2, 3)), lambda x: np.roll(x, [1, -2], axis=[0, 2]))
case("pad", "pad(a0, [[1, 0], [2, 1]])", one(normal(2, 3)), lambda x: np.pad(x, [[1, 0], [2, 1]]))
case("pad-value", "pad(a0, 1, value = a1)", pair(normal(2, 3), normal()),
     lambda x, v: np.pad(x, 1, constant_values=v), wrt=(0, 1))
for mode in ("edge", "reflect", "symmetric", "wrap"):
    case(f"pad-{mode}", f'pad(a0, [[1, 0], [0, 2], [3, 1]], mode = "{mode}")', one(normal(4, 2, 3)),
         lambda x, mode=mode: np.pad(x, [[1, 0], [0, 2], [3, 1]], mode=mode))
case("repeat", "repeat(a0, 2)", one(normal(2, 3)), lambda x: np.repeat(x, 2))
case("repeat-axis", "repeat(a0, [1, 0, 3], axis = 1)", one(normal(2, 3)), lambda x: np.repeat(x, [1, 0, 3], axis=1))
case("tile", "tile(a0, [2, 1, 3])", one(normal(2, 3)), lambda x: np.tile(x, [2, 1, 3]))
case("tile-batch", "tile(a0, 2)", one(normal(4, 2, 3)), lambda x: np.tile(x, 2))
case("tril", "tril(a0, k = -1)", one(normal(4, 3, 3)), lambda x: np.tril(x, -1))
case("triu", "triu(a0, k = 1)", one(normal(2, 3, 4)), lambda x: np.triu(x, 1))
case("diag-vector", "diag(a0, k = -1)", one(normal(3)), lambda x: np.diag(x, -1))
case("diag-matrix", "diag(a0, k = 1)", one(normal(3, 4)), lambda x: np.diag(x, 1))
case("diagonal", "diagonal(a0, offset = -1, axis1 = 2, axis2 = 0)", one(normal(4, 2, 3)),
     lambda x: np.diagonal(x, -1, 2, 0))
case("trace", "trace(a0)", one(normal(3, 3)), np.trace)
case("trace-batch", "trace(a0, axis1 = 1, axis2 = 2)", one(normal(4, 3, 3)), lambda x: np.trace(x, axis1=1, axis2=2))
case("outer", "outer(a0, a1)", pair(normal(2, 3), normal(4)), np.outer, wrt=(0, 1))
case("kron", "kron(a0, a1)", pair(normal(2, 3), normal(2, 2)), np.kron, wrt=(0, 1))
case("kron-ndim", "kron(a0, a1)", pair(normal(3), normal(2, 2)), np.kron, wrt=(0, 1))
case("tensordot", "tensordot(a0, a1, axes = 1)", pair(normal(2, 3), normal(3, 4)),
     lambda a, b: np.tensordot(a, b, 1), wrt=(0, 1))
case("tensordot-axes", "tensordot(a0, a1, axes = [[0, 2], [1, 0]])", pair(normal(3, 2, 4), normal(4, 3, 5)),
     lambda a, b: np.tensordot(a, b, [[0, 2], [1, 0]]), wrt=(0, 1))
for spec, shapes in [("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(4, 2, 3), (4, 3, 2)]),
                     ("...ij,...jk", [(4, 2, 3), (1, 3, 2)]), ("...ij,jk->...ik", [(2, 3), (3, 2)]),
                     ("ii->i", [(3, 3)]), ("ii", [(3, 3)]), ("iij,j->i", [(3, 3, 2), (2,)]),
                     ("i,i->", [(3,), (3,)]), ("ij->", [(2, 3)]), ("ji", [(2, 3)]), ("i,j", [(2,), (3,)]),
                     ("ijk,jl,k->il", [(2, 3, 4), (3, 2), (4,)]), ("ij,ij->ij", [(2, 3), (2, 3)]),
                     ("bi,bi->b", [(4, 3), (4, 3)]), ("ij,j", [(2, 3), (3,)])]:
    names = ", ".join(f"a{i}" for i in range(len(shapes)))
    case(f"einsum-{spec}", f'einsum("{spec}", {names})',
         lambda r, shapes=shapes: [r.normal(size=s) for s in shapes],
         lambda *xs, spec=spec: np.einsum(spec, *xs), wrt=tuple(range(len(shapes))))


# ---- 5. linear algebra -----------------------------------------------------------------------------------------

import scipy.linalg  # noqa: E402


def wellcond(*shape):
    return lambda r: r.normal(size=shape) + 3.0 * np.eye(shape[-2], shape[-1])


def spd(*shape):
    def draw(r):
        a = r.normal(size=shape)
        return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])
    return draw


def sym_of(a):
    return (a + np.swapaxes(a, -1, -2)) / 2


case("solve-vector", "solve(a0, a1)", pair(wellcond(3, 3), normal(3)), np.linalg.solve, wrt=(0, 1))
case("solve-batch", "solve(a0, a1)", pair(wellcond(4, 3, 3), normal(3, 2)), np.linalg.solve, wrt=(0, 1))
case("solve_triangular", "solve_triangular(a0, a1, lower = false)", pair(wellcond(2, 3, 3), normal(2, 3, 2)),
     lambda a, b: np.linalg.solve(np.triu(a), b), wrt=(0, 1))
case("solve_triangular-vector", "solve_triangular(a0, a1)", pair(wellcond(3, 3), normal(3)),
     lambda a, b: scipy.linalg.solve_triangular(a, b, lower=True), wrt=(0, 1))
case("inv", "inv(a0)", one(wellcond(4, 3, 3)), np.linalg.inv)
case("det", "det(a0)", one(wellcond(4, 3, 3)), np.linalg.det)
case("slogdet", block("s, l = slogdet(a0)", "return s * l"), one(lambda r: r.normal(size=(4, 3, 3))),
     lambda a: np.prod(np.linalg.slogdet(a), axis=0))
case("cholesky", "cholesky(a0)", one(spd(2, 3, 3)), lambda a: np.linalg.cholesky(sym_of(a)))
case("eigh-values", block("w, V = eigh(a0)", "return w"), one(normal(2, 3, 3)),
     lambda a: np.linalg.eigh(sym_of(a))[0])
case("eigh-vectors", block("w, V = eigh(a0)", "return V"), one(normal(2, 3, 3)),
     lambda a: np.linalg.eigh(sym_of(a))[1])
case("eigvalsh", "eigvalsh(a0)", one(normal(3, 3)), lambda a: np.linalg.eigvalsh(sym_of(a)))
case("svd-tall", block("U, s, Vh = svd(a0)", "return U"), one(normal(2, 4, 3)),
     lambda a: np.linalg.svd(a, full_matrices=False)[0])
case("svd-wide", block("U, s, Vh = svd(a0)", "return Vh * 2.0 + sum(s)"), one(normal(2, 4)),
     lambda a: np.linalg.svd(a, full_matrices=False)[2] * 2 + np.linalg.svd(a)[1].sum())
case("svdvals", "svdvals(a0)", one(normal(4, 3, 2)), lambda a: np.linalg.svd(a, compute_uv=False))
case("qr-tall", block("Q, R = qr(a0)", "return Q + sum(R)"), one(normal(2, 4, 3)),
     lambda a: np.linalg.qr(a)[0] + np.linalg.qr(a)[1].sum())
case("qr-wide", block("Q, R = qr(a0)", "return R"), one(wellcond(2, 4)), lambda a: np.linalg.qr(a)[1])
case("expm", "expm(a0)", one(normal(2, 3, 3)), scipy.linalg.expm)
case("matrix_power", "matrix_power(a0, 5)", one(lambda r: r.normal(size=(2, 3, 3)) / 2),
     lambda a: np.linalg.matrix_power(a, 5))
case("matrix_power-negative", "matrix_power(a0, -2)", one(wellcond(3, 3)), lambda a: np.linalg.matrix_power(a, -2))
case("matrix_power-0", "matrix_power(a0, 0) * a0", one(normal(2, 3, 3)), lambda a: a * np.eye(3))
case("norm", "norm(a0)", one(normal(4, 2, 3)), np.linalg.norm)
for o in (1, 3, 0.5, "inf", "-inf"):
    ref_ord = {"inf": np.inf, "-inf": -np.inf}.get(o, o)
    arg = f'"{o}"' if isinstance(o, str) else o
    case(f"norm-vector-{o}", f"norm(a0, {arg}, axis = 1)", one(normal(4, 5, 3)),
         lambda x, p=ref_ord: np.linalg.norm(x, p, axis=1))
case("norm-vector-0", "norm(a0, 0)", lambda r: [np.array([1.0, 0.0, -2.0])], lambda x: np.linalg.norm(x, 0), wrt=())
for o in ("fro", "nuc", 1, -1, 2, -2, "inf", "-inf"):
    ref_ord = {"inf": np.inf, "-inf": -np.inf}.get(o, o)
    arg = f'"{o}"' if isinstance(o, str) else o
    case(f"norm-matrix-{o}", f"norm(a0, {arg})", one(normal(3, 4)), lambda x, p=ref_ord: np.linalg.norm(x, p))
    case(f"norm-batch-{o}", f"norm(a0, {arg}, axis = [2, 0], keepdims = true)", one(normal(3, 2, 4)),
         lambda x, p=ref_ord: np.linalg.norm(x, p, axis=(2, 0), keepdims=True))


# ---- the checks ----------------------------------------------------------------------------------------------


def source(c: Case, nargs: int) -> str:
    names = ", ".join(f"a{i}" for i in range(nargs))
    body = c.body if c.body.lstrip().startswith("{") else f"= {c.body}"
    lines = [f"fn F({names}) {body}", f"fn f({names}, cot) = sum(F({names}) * cot)"]
    for k in c.wrt:
        lines.append(f"fn s{k}({names}, cot, v) = sum(grad(f, argnum = {k})({names}, cot) * v)")
    return "\n".join(lines) + "\n"


def setup(name, dtype="float64"):
    c = CASES[name]
    r = rng_for(name)
    args = c.args(r)
    prog = dpl.loads(source(c, len(args)), dtype=dtype)
    return c, r, args, prog


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_matches_numpy(name):
    c, _, args, prog = setup(name)
    got = prog.call("F", *args)
    want = c.ref(*args)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_finite_differences_to_second_order(name):
    c, r, args, prog = setup(name)
    cot = r.normal(size=np.shape(c.ref(*args)))
    check_grads(prog, "f", args + [cot], c.wrt, rtol=c.rtol)
    if c.second:
        for k in c.wrt:
            v = r.normal(size=np.shape(args[k]))
            check_grads(prog, f"s{k}", args + [cot, v], (k,), rtol=max(c.rtol, 1e-5), atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_stays_float32(name):
    c, r, args, prog = setup(name, "float32")
    args = [a.astype(np.float32) if np.asarray(a).dtype.kind == "f" else a for a in args]
    out = prog.call("F", *args)
    if np.asarray(out).dtype.kind == "f":
        assert np.asarray(out).dtype == np.float32
    cot = r.normal(size=np.shape(out)).astype(np.float32)
    for k in c.wrt:
        g = prog.grad("f", k)(*args, cot)
        assert g.dtype == np.float32, f"adjoint of argument {k} is {g.dtype}"


# ---- known values and edges ------------------------------------------------------------------------------------


def run(src):
    out = []

    class W:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass
    dpl.loads(textwrap.dedent(src), stdout=W())
    return "".join(out)


def error_of(src):
    with pytest.raises(DplError) as ei:
        dpl.loads(textwrap.dedent(src), file="prog.dpl")
    return ei.value


def test_sinc_second_derivative_at_zero_is_minus_pi_squared_over_three():
    assert float(run("print(grad(grad(sinc))(0.0))")) == pytest.approx(-np.pi ** 2 / 3, rel=1e-12)


def test_piecewise_constant_functions_pass_no_gradient():
    assert run("fn h(x) = floor(x) + ceil(x) + round(x) + sign(x)\nprint(grad(h)(2.5), h(2.5))") == "0.0 8.0\n"  # 2 + 3 + 2 (half to even) + 1


def test_hypot_gradient_at_the_origin_is_zero():
    assert run("fn h(x) = hypot(x, 0.0)\nprint(grad(h)(0.0))") == "0.0\n"


def test_logaddexp_is_stable_for_large_inputs():
    value, slope = run("fn h(x) = logaddexp(x, 1000.0)\nprint(logaddexp(1000.0, 1000.0), grad(h)(1000.0))").split()
    assert float(value) == 1000.0 + np.log(2.0) and float(slope) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("src,msg,col", [
    ("x = arctan2([1.0, 2.0], [1.0, 2.0, 3.0])", "`arctan2`", 5),
    ("x = polygamma(-1, 2.0)", "`polygamma` needs an order n ≥ 0, got -1", 5),
    ('x = erf("a")', "argument must be a number or tensor, got a string", 5),
    ("x = topk([1.0, 2.0], 3)", "`topk`: k must lie in 1..2 (the size of axis 0), got 3", 5),
    ("x = sort(2.0)", "`sort` needs a tensor with at least one axis, got a float scalar", 5),
    ("x = take_along_axis([1.0, 2.0], [0.0])", "`take_along_axis` needs integer indices, got a float tensor", 5),
    ("x = take_along_axis([1.0, 2.0], [[0]])", "`take_along_axis`: x [2] and idx [1, 1] need the same number of axes", 5),
    ("x = take_along_axis([1.0, 2.0], [2])", "`take_along_axis`: an index is out of range for axis 0 of size 2", 5),
    ("x = take_along_axis([[1.0, 2.0], [3.0, 4.0]], [[0], [0], [0]], axis = 1)",
     "`take_along_axis`: idx [3, 1] does not fit x [2, 2]", 5),
    ("x = cumsum([1.0], axis = 1)", "`axis` 1 is out of range for a tensor of shape [1]", 5),
    ("x = diff([1.0, 2.0], n = -1)", "`diff`: the order n must be ≥ 0, got -1", 5),
    ("y = 1\nx = var([1.0, 2.0], ddof = 2)", "`ddof` = 2 leaves no degrees of freedom for 2 elements", 5),
    ("x = quantile([1.0, 2.0], 1.5)", "`q` must lie in [0, 1]", 5),
    ("x = median([[1.0, 2.0]], axis = 2)", "axis 2 is out of range for a tensor of shape [1, 2]", 5),
    ("a, b = split([1.0, 2.0, 3.0], [1, 1])", "`split`: sizes [1, 1] must be ≥ 0 and add up to the axis size 3", 8),
    ("a, b = split([1.0, 2.0, 3.0], 2)", "`split`: 2 equal parts do not divide an axis of size 3", 8),
    ('x = pad([1.0], 1, mode = "mirror")', "`pad`: mode must be one of", 5),
    ("x = pad([[1.0]], [[1, 2]])", "`pad`: width must be n, [before, after]", 5),
    ("x = repeat([1.0, 2.0], [1, 2, 3])", "`repeat`: repeats must be ≥ 0, one count or one per entry (2)", 5),
    ("x = tril([1.0, 2.0])", "`tril` needs a tensor with at least 2 axes, got a float tensor of shape [2]", 5),
    ("x = diag(eye(2) * ones([2, 2, 2]))", "`diag` takes a vector or a matrix", 5),
    ("x = tensordot(eye(2), eye(3), axes = 1)", "`tensordot`: axes [1] of [2, 2] do not match axes [0] of [3, 3]", 5),
    ('x = einsum("ij,jk", eye(2))', "`einsum`: 'ij,jk' has 2 operand terms, got 1 operand", 5),
    ('x = einsum("ij,jk", eye(2), ones([3, 2]))', "`einsum`: 'j' has size 2 in one place and 3 in another", 5),
    ('x = einsum("...i,...i", ones([2, 3]), ones([4, 3]))', "`einsum`: the `...` axes of the operands do not broadcast "
     "([2, 3], [4, 3])", 5),
    ("x = kron([true], [1.0])", "`kron` needs numbers, got a boolean tensor", 5),
    ('x = einsum("ijk", eye(2))', "`einsum`: term 'ijk' does not fit an operand of shape [2, 2]", 5),
    ('x = einsum("ij->k", eye(2))', "`einsum`: output 'k' repeats a letter or names one no operand has", 5),
    ('x = einsum("i$", eye(2))', "`einsum`: bad subscripts", 5),
    ('x = einsum("...i->i", ones([2, 3]))', "has `...` in an operand but not in the output", 5),
    ("x = solve(ones([2, 3]), [1.0, 2.0])", "`solve` needs square matrices [..., n, n], got a float tensor of shape [2, 3]",
     5),
    ("x = solve(eye(2), [1.0, 2.0, 3.0])", "`solve`: b must be [2] or [..., 2, k] for A of shape [2, 2], got shape [3]",
     5),
    ("x = solve(ones([2, 2]), [1.0, 2.0])", "`solve`: Singular matrix", 5),
    ("x = cholesky(-eye(2))", "`cholesky`: Matrix is not positive definite", 5),
    ("x = svd([1.0, 2.0])", "`svd` needs matrices [..., m, n], got a float tensor of shape [2]", 5),
    ('x = norm(eye(2), "max")', '`ord` must be a number, "inf", "-inf", "fro" or "nuc", got "max"', 5),
    ('x = norm([1.0, 2.0], "nuc")', '`norm`: ord "nuc" is a matrix norm; give two axes', 5),
    ("x = norm(eye(2), 3)", "`norm`: ord 3 is not a matrix norm", 5),
    ("x = norm(ones([2, 2, 2]), 1)", "`norm` with `ord` and no `axis` needs a vector or a matrix", 5),
    ("x = norm(ones([2, 2, 2]), axis = [0, 1, 2])", "`norm` takes one axis (a vector norm) or two (a matrix norm)", 5),
])
def test_argument_errors_are_positioned(src, msg, col):
    e = error_of(src)
    assert msg in e.message and (e.span.line, e.span.col) == (src.count("\n") + 1, col)


def test_eigenvalue_gradient_is_defined_at_a_degenerate_spectrum():
    """∂ sum(w) / ∂A = I even where eigenvalues coincide (only the eigenvector rule divides by gaps)."""
    assert run("fn f(A) = sum(eigvalsh(A) * [1.0, 1.0])\nprint(grad(f)(eye(2)))") == "[[1.0, 0.0], [0.0, 1.0]]\n"


def test_prod_and_cumprod_gradients_where_entries_are_zero():
    out = run("""
        fn p(x) = prod(x)
        fn c(x) = sum(cumprod(x) * [1.0, 10.0, 100.0])
        print(grad(p)([2.0, 0.0, 3.0]), grad(p)([0.0, 0.0, 3.0]), grad(c)([2.0, 0.0, 3.0]))
    """)
    # ∂ prod / ∂xᵢ is the product of the others; c = x0 + 10 x0 x1 + 100 x0 x1 x2
    assert out == "[0.0, 6.0, 0.0] [0.0, 0.0, 0.0] [1.0, 620.0, 0.0]\n"


def test_sort_gradient_follows_the_permutation():
    out = run("""
        fn f(x) = sum(sort(x) * [1.0, 2.0, 3.0])
        print(grad(f)([3.0, 1.0, 2.0]))
    """)
    assert out == "[3.0, 1.0, 2.0]\n"


def test_quantile_gradient_interpolates_between_the_sorted_neighbours():
    out = run("""
        fn f(x) = quantile(x, 0.3)
        print(quantile([4.0, 1.0, 3.0, 2.0], 0.3), grad(f)([4.0, 1.0, 3.0, 2.0]))
    """)
    # position 0.3 · 3 = 0.9 between the sorted 1.0 (index 1) and 2.0 (index 3)
    value, g = out.split(" ", 1)
    assert float(value) == pytest.approx(1.9)
    np.testing.assert_allclose(eval(g), [0.0, 0.1, 0.0, 0.9], rtol=1e-12)


@pytest.mark.parametrize("src", ["x = outer(ones([100000]), ones([100000]))", "x = tile([1.0], 100000000000)",
                                 "x = repeat([1.0, 2.0], 100000000000)", "x = pad([1.0], 100000000000)",
                                 "x = kron(ones([100000]), ones([100000]))", "x = diag(ones([100000]))",
                                 'x = einsum("i,j", ones([100000]), ones([100000]))',
                                 "x = tensordot(ones([100000]), ones([100000]), axes = 0)"])
def test_large_results_are_refused_before_they_are_allocated(src):
    e = error_of(src)
    assert "raise --max-elements if that is intended" in e.message and (e.span.line, e.span.col) == (1, 5)


def test_new_names_are_known_to_dpl_check(tmp_path):
    from dpl.check import check_file
    f = tmp_path / "p.dpl"
    f.write_text("x = einsum(\"ii\", eye(2)) + trace(eye(2)) + sum(sort([2.0, 1.0])) + norm(eye(2), \"nuc\")\n"
                 "w, V = eigh(eye(2))\nprint(x, expm(eye(2)), erfinv(0.5), quantile([1.0], 0.5))\n")
    assert check_file(f) == []
