"""DPL against JAX in float64 (issue 15): every op of dpl.ops.REGISTRY beside its jax.numpy twin, and random
DPL programs beside their JAX twins, comparing values, gradients and Hessian-vector products.

JAX is only a reference: `pip install -e '.[test-jax]'`; without it these tests skip, except the registry
check. A fixed, derandomised set of programs runs by default; DPL_DIFF_EXAMPLES=N runs N of them (and
DPL_DIFF_SEED=S another set). Where JAX gives NaN or another value and DPL chooses otherwise by its
contract, CONVENTIONS pins both (docs/LANGUAGE.md, Additions: "Derivatives at kinks and edges").
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import pytest

import dpl
from dpl import ops

import test_ops as T  # the spec table: every op's argument cases and samplers

try:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover - the test-jax extra is optional
    jax = jnp = None

_no_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed (pip install -e '.[test-jax]')")


def needs_jax(test):
    return pytest.mark.optional(_no_jax(test))


RTOL, ATOL = 1e-9, 1e-11  # float64; XLA's and NumPy's exp, tanh, ... differ in the last bits

# ---- every op's JAX twin, or why it has none -------------------------------------------------------------


def _sum_to(x, shape):
    lead = x.ndim - len(shape)
    x = jnp.sum(x, axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and x.shape[i] != 1)
    return (jnp.sum(x, axis=axes, keepdims=True) if axes else x).reshape(shape)


def _masked_softmax(x, mask, axis):
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    e = jnp.where(mask, jnp.exp(jnp.where(mask, x, shift) - shift), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total == 0, 1.0, total)


TWINS: dict[str, Callable | str] = {
    "neg": lambda x: -x, "exp": lambda x: jnp.exp(x), "log": lambda x: jnp.log(x), "sin": lambda x: jnp.sin(x),
    "cos": lambda x: jnp.cos(x), "tan": lambda x: jnp.tan(x), "tanh": lambda x: jnp.tanh(x),
    "sqrt": lambda x: jnp.sqrt(x), "abs": lambda x: jnp.abs(x), "relu": lambda x: jax.nn.relu(x),
    "sigmoid": lambda x: jax.nn.sigmoid(x), "softplus": lambda x: jax.nn.softplus(x),
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y,
    "mod": lambda x, y: jnp.mod(x, y), "pow": lambda x, y: jnp.power(x, y),
    "maximum": lambda x, y: jnp.maximum(x, y), "minimum": lambda x, y: jnp.minimum(x, y),
    "where": lambda c, x, y: jnp.where(c, x, y),
    "clip": lambda x, lo, hi: jnp.minimum(jnp.maximum(x, lo), hi),
    "lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y, "ge": lambda x, y: x >= y,
    "eq": lambda x, y: x == y, "ne": lambda x, y: x != y,
    "and": lambda x, y: jnp.logical_and(x, y), "or": lambda x, y: jnp.logical_or(x, y),
    "not": lambda x: jnp.logical_not(x),
    "argmax": lambda x, axis=None: jnp.argmax(x, axis=axis), "argmin": lambda x, axis=None: jnp.argmin(x, axis=axis),
    "int": lambda x: jnp.trunc(x).astype(jnp.int64), "sign": lambda x: jnp.sign(x),
    "floor": lambda x: jnp.floor(x), "isfinite": lambda x: jnp.isfinite(x),
    "astype": lambda x, dtype: x.astype(dtype),
    "matmul": lambda a, b: jnp.matmul(a, b), "swapaxes": lambda x: jnp.swapaxes(x, -1, -2),
    "spmm": lambda x, A: jnp.asarray(A.matrix.toarray()) @ x,
    "reshape": lambda x, shape: jnp.reshape(x, shape), "transpose": lambda x, perm: jnp.transpose(x, perm),
    "broadcast_to": lambda x, shape: jnp.broadcast_to(x, shape), "sum_to": _sum_to,
    "index": lambda x, key: x[key], "scatter_add": lambda x, key, shape: jnp.zeros(shape).at[key].add(x),
    "concat": lambda *xs, axis: jnp.concatenate(xs, axis=axis), "stack": lambda *xs, axis: jnp.stack(xs, axis=axis),
    "sum": lambda x, axis=None, keepdims=False: jnp.sum(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis=None, keepdims=False: jnp.max(x, axis=axis, keepdims=keepdims),
    "min": lambda x, axis=None, keepdims=False: jnp.min(x, axis=axis, keepdims=keepdims),
    "logsumexp": lambda x, axis=None, keepdims=False: jax.scipy.special.logsumexp(x, axis=axis, keepdims=keepdims),
    "norm": lambda x, axis=None, keepdims=False: jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims)),
    "softmax": lambda x, axis: jax.nn.softmax(x, axis=axis),
    "masked_softmax": _masked_softmax,
    "any": lambda x, axis=None: jnp.any(x, axis=axis), "all": lambda x, axis=None: jnp.all(x, axis=axis),
    "ceil": lambda x: jnp.ceil(x), "round": lambda x: jnp.round(x),
    "floordiv": lambda x, y: jnp.floor_divide(x, y), "stop_gradient": lambda x: jax.lax.stop_gradient(x),
    "arcsin": lambda x: jnp.arcsin(x), "arccos": lambda x: jnp.arccos(x), "arctan": lambda x: jnp.arctan(x),
    "arcsinh": lambda x: jnp.arcsinh(x), "arccosh": lambda x: jnp.arccosh(x), "arctanh": lambda x: jnp.arctanh(x),
    "sinh": lambda x: jnp.sinh(x), "cosh": lambda x: jnp.cosh(x), "arctan2": lambda y, x: jnp.arctan2(y, x),
    "hypot": lambda x, y: jnp.hypot(x, y), "logaddexp": lambda x, y: jnp.logaddexp(x, y),
    "exp2": lambda x: jnp.exp2(x), "expm1": lambda x: jnp.expm1(x), "log1p": lambda x: jnp.log1p(x),
    "log2": lambda x: jnp.log2(x), "log10": lambda x: jnp.log10(x),
    "erf": lambda x: jax.scipy.special.erf(x), "erfc": lambda x: jax.scipy.special.erfc(x),
    "erfinv": lambda x: jax.scipy.special.erfinv(x), "lgamma": lambda x: jax.scipy.special.gammaln(x),
    "gamma": lambda x: jnp.exp(jax.scipy.special.gammaln(x)) * jnp.sign(jax.scipy.special.gamma(x)),
    "polygamma": lambda x, n: jax.scipy.special.polygamma(n, x),
    "argsort": lambda x, axis: jnp.argsort(x, axis=axis, stable=True),
    "cumsum": lambda x, axis, reverse=False: (jnp.flip(jnp.cumsum(jnp.flip(x, axis), axis), axis) if reverse
                                              else jnp.cumsum(x, axis)),
    "take_along": lambda x, idx, axis: jnp.take_along_axis(x, idx, axis=axis),
    "put_along": "the adjoint of take_along (a scatter-add into a shape), checked through take_along's VJP and "
                 "at the builtin level in tests/test_numerics_jax.py",
    "einsum": lambda *xs, spec: jnp.einsum(spec, *xs),
    "real": lambda x: jnp.real(x), "imag": lambda x: jnp.imag(x), "conj": lambda x: jnp.conj(x),
    "fft": lambda x, n, axis: jnp.fft.fft(x, n=n, axis=axis), "ifft": lambda x, n, axis: jnp.fft.ifft(x, n=n, axis=axis),
    "rfft": lambda x, n, axis: jnp.fft.rfft(x, n=n, axis=axis),
    "irfft": lambda x, n, axis: jnp.fft.irfft(x, n=n, axis=axis),
    "solve": lambda a, b: jnp.linalg.solve(a, b), "inv": lambda a: jnp.linalg.inv(a),
    "det": lambda a: jnp.linalg.det(a), "expm": lambda a: jax.scipy.linalg.expm(a),
    "signdet": lambda a: jnp.linalg.slogdet(a)[0], "logabsdet": lambda a: jnp.linalg.slogdet(a)[1],
    **{name: "one output of a decomposition whose sign or basis conventions are the library's own; the builtin "
             "is compared with JAX through invariant quantities in tests/test_numerics_jax.py"
       for name in ("cholesky", "eigh_values", "eigh_vectors", "qr_q", "qr_r", "svd_s", "svd_u", "svd_vh",
                    "solve_triangular")},
}


def test_every_op_has_a_jax_twin_or_a_reason():
    """A new op needs a row in TWINS: a jax.numpy function with the op's signature, or a string saying why not."""
    missing = sorted(set(ops.REGISTRY) - set(TWINS))
    assert not missing, (f"ops with no JAX twin in tests/test_differential_jax.py TWINS: {missing}; add a jax.numpy "
                         f"function with the op's signature (args, then attrs as keywords) or a string giving the "
                         f"reason there is none")
    stale = sorted(set(TWINS) - set(ops.REGISTRY))
    assert not stale, f"TWINS rows for ops that are not registered: {stale}"
    for name, twin in TWINS.items():
        assert callable(twin) or (isinstance(twin, str) and twin.strip()), f"{name}: a twin or a reason"


# ---- op by op, on the spec table's cases ----------------------------------------------------------------------


def _jax_args(args):
    return [jnp.asarray(a) for a in args]


def jax_reference(twin, args, wrt, attrs, cot, vs=None):
    """JAX's value, adjoints of sum(twin(args) * cot) for the arguments in wrt and, given vs, the Hessian-vector
    products ∇⟨adjoints, v⟩ (as test_ops.hvp computes them for DPL): one compilation instead of one per op."""
    argnums = tuple(range(len(wrt)))

    def value(*ws):
        a = _jax_args(args)
        for k, w in zip(wrt, ws):
            a[k] = w
        return twin(*a, **attrs)

    def loss(*ws):  # Re: a complex result's loss, as test_ops.real_part takes it
        return jnp.real(jnp.sum(value(*ws) * cot))

    def inner(*ws):
        return jnp.real(sum(jnp.sum(g * v) for g, v in zip(jax.grad(loss, argnums=argnums)(*ws), vs)))

    def everything(*ws):
        out = (value(*ws), jax.grad(loss, argnums=argnums)(*ws))
        return out + (jax.grad(inner, argnums=argnums)(*ws),) if vs is not None else out
    return jax.tree_util.tree_map(np.asarray, jax.jit(everything)(*[jnp.asarray(args[k]) for k in wrt]))


def close(got, want, what, rtol=RTOL, atol=ATOL):
    as_number = complex if np.iscomplexobj(want) or np.iscomplexobj(got) else float
    np.testing.assert_allclose(np.asarray(got, dtype=as_number), np.asarray(want, dtype=as_number), rtol=rtol,
                               atol=atol, err_msg=what)


# By default an op's first and last case (the last rows of the table hold its edge cases: negative axes and
# perms); every case once DPL_DIFF_EXAMPLES is set. JAX compiles each new shape, so this is the slow part.
EVERY_CASE = "DPL_DIFF_EXAMPLES" in os.environ
OP_CASES = [pytest.param(n, i, id=T.case_id(n, *T.SPEC[n].cases[i])) for n, i in T.ALL
            if callable(TWINS.get(n)) and (EVERY_CASE or i in (0, len(T.SPEC[n].cases) - 1))]


@needs_jax
@pytest.mark.parametrize("name,i", OP_CASES)
def test_op_agrees_with_its_jax_twin(name, i):
    args, attrs = T.sample(name, i)
    op, twin = ops.REGISTRY[name], TWINS[name]
    got = op.fwd(*args, **attrs)
    if T.SPEC[name].wrt is None:
        want = np.asarray(twin(*_jax_args(args), **attrs))
        assert np.shape(got) == want.shape and np.asarray(got).dtype.kind == want.dtype.kind, name
        close(got, want, f"{name}: value")
        return
    wrt = T.wrt_of(name, len(args))
    cot = T.cotangent(op, args, attrs)
    vs = [T.direction(np.random.default_rng(2), args[k]) for k in wrt] if T.SPEC[name].second else None
    want, *jax_derivatives = jax_reference(twin, args, wrt, attrs, cot, vs)
    assert np.shape(got) == want.shape and np.asarray(got).dtype.kind == want.dtype.kind, name
    close(got, want, f"{name}: value")
    for k, g, w in zip(wrt, T.first_order(op, args, wrt, attrs, cot), jax_derivatives[0]):
        close(g, w, f"{name}: adjoint of argument {k}")
    if vs is not None:
        for k, h, w in zip(wrt, T.hvp(op, args, wrt, attrs, cot, vs), jax_derivatives[1]):
            close(h, w, f"{name}: Hessian-vector product w.r.t. argument {k}", rtol=1e-8, atol=1e-10)


# ---- the conventions: where JAX gives NaN or another value, DPL's contract decides ------------------------------


@dataclasses.dataclass
class Convention:
    dpl: str          # a DPL expression of x, differentiated at `at`
    jax: Callable     # its JAX twin
    at: list
    want: list        # DPL's derivative (LANGUAGE.md)
    jax_gives: list   # JAX's (checked, so a change in JAX is noticed)
    grad2: bool = False  # the second derivative instead of the first


CONVENTIONS = {
    "abs'(0) = 0": Convention("sum(abs(x))", lambda x: jnp.sum(jnp.abs(x)), [0.0, -2.0], [0.0, -1.0], [1.0, -1.0]),
    "norm'(0) = 0": Convention("norm(x)", lambda x: jnp.sqrt(jnp.sum(x * x)), [0.0, 0.0], [0.0, 0.0],
                               [np.nan, np.nan]),
    "(x ^ 0.0)' = 0 at x = 0": Convention("sum(x ^ 0.0)", lambda x: jnp.sum(x ** 0.0), [0.0, 2.0], [0.0, 0.0],
                                          [np.nan, 0.0]),
    "(x ^ 1.0)'' = 0 at x = 0": Convention("sum(x ^ 1.0)", lambda x: jnp.sum(x ** 1.0), [0.0, 2.0], [0.0, 0.0],
                                           [np.nan, 0.0], grad2=True),
    "clip passes the gradient at both bounds": Convention(
        "sum(clip(x, -0.5, 0.5))", lambda x: jnp.sum(jnp.clip(x, -0.5, 0.5)), [-0.5, 0.5, 0.7], [1.0, 1.0, 0.0],
        [0.5, 0.5, 0.0]),
    # where they agree, pinned too: ties share equally, relu'(0) = 0, sqrt'(0) = inf, pow's y-adjoint at x = 0
    "max ties share equally": Convention("max(x)", lambda x: jnp.max(x), [1.0, 3.0, 3.0], [0.0, 0.5, 0.5],
                                         [0.0, 0.5, 0.5]),
    "elementwise max ties share equally": Convention("sum(max(x, 0.0))", lambda x: jnp.sum(jnp.maximum(x, 0.0)),
                                                     [0.0, 1.0], [0.5, 1.0], [0.5, 1.0]),
    "relu'(0) = 0": Convention("sum(relu(x))", lambda x: jnp.sum(jax.nn.relu(x)), [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]),
    "sqrt'(0) = inf": Convention("sum(sqrt(x))", lambda x: jnp.sum(jnp.sqrt(x)), [0.0, 4.0], [np.inf, 0.25],
                                 [np.inf, 0.25]),
    "(0 ^ y) w.r.t. y = 0": Convention("sum(0.0 ^ x)", lambda x: jnp.sum(0.0 ** x), [2.0, 0.5], [0.0, 0.0],
                                       [0.0, 0.0]),
}


@needs_jax
@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_conventions_where_dpl_and_jax_may_differ(name):
    c = CONVENTIONS[name]
    prog = dpl.loads(f"fn f(x) = {c.dpl}\nfn g(x) = sum(grad(f)(x))")
    x = np.array(c.at)
    with np.errstate(all="ignore"):
        got = prog.grad("g" if c.grad2 else "f")(x)
        jf = jax.grad(c.jax) if not c.grad2 else jax.grad(lambda x: jnp.sum(jax.grad(c.jax)(x)))
        jgot = np.asarray(jf(jnp.asarray(x)))
    np.testing.assert_array_equal(got, c.want, err_msg=f"DPL: {name}")
    np.testing.assert_array_equal(jgot, c.jax_gives, err_msg=f"JAX's value changed: {name}")


# ---- random programs -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class E:
    """An expression both ways: DPL source, a JAX function of the input, its shape, whether it is positive."""
    src: str
    jx: Callable
    shape: tuple
    pos: bool = False


def _lit(v) -> str:
    return repr(float(v)) if v >= 0 else f"(-{repr(float(-v))})"


def _tensor_lit(a) -> str:
    a = np.asarray(a)
    if a.ndim == 0:
        return repr(bool(a)).lower() if a.dtype.kind == "b" else repr(float(a))
    return "[" + ", ".join(_tensor_lit(r) for r in a) + "]"


class Generator:
    """Random DPL expressions over one input x with their jax.numpy twins. Each rule can be asked for one op
    by its registry name (SURFACE), so the examples can be made to reach every op a program can name."""

    def __init__(self, rng, shape):
        self.rng, self.shape = rng, shape
        self.ops_used: set[str] = set()

    def pick(self, names, name):
        name = str(self.rng.choice(names)) if name is None else name
        self.ops_used.add(name)
        return name

    def const(self, shape=None):
        shape = self.shape if shape is None else shape
        a = np.round(self.rng.normal(size=shape), 3)
        src = _lit(float(a)) if a.ndim == 0 else _tensor_lit(a)
        return E(src, lambda x, a=a: jnp.asarray(a), shape)

    def leaf(self):
        r = self.rng.random()
        if r < 0.6:
            return E("x", lambda x: x, self.shape)
        if r < 0.8 or not self.shape:
            return self.const(())
        return self.const(self.shape[-1:] if self.rng.random() < 0.5 else self.shape)

    def positive(self, e):
        """e itself if known positive, else softplus(e) + 0.25 (for log, sqrt, division, a power's base)."""
        if e.pos:
            return e
        self.ops_used.update(("softplus", "add"))
        return E(f"(softplus({e.src}) + 0.25)", lambda x, f=e.jx: jax.nn.softplus(f(x)) + 0.25, e.shape, True)

    def expr(self, depth, name=None):
        if name is not None:
            rule, kw = SURFACE[name]
            return getattr(self, rule)(max(depth, 1), **kw)
        if depth == 0:
            return self.leaf()
        rules = ["unary", "unary", "binary", "binary", "select", "reduce", "shape_op", "linalg", "integer"]
        return getattr(self, rules[self.rng.integers(len(rules))])(depth)

    def full(self, depth, name=None):
        """An expression of the input's full shape (broadcast up if it came out smaller)."""
        e = self.expr(depth, name)
        if e.shape != self.shape:
            self.ops_used.update(("add", "mul"))
            e = E(f"({e.src} + 0.0 * x)", lambda x, f=e.jx: f(x) + 0.0 * x, self.shape, e.pos)
        return e

    def unary(self, depth, name=None):
        a = self.expr(depth - 1)
        name = self.pick(["neg", "exp", "log", "sin", "cos", "tan", "tanh", "sqrt", "abs", "relu", "sigmoid",
                          "softplus"], name)
        if name == "neg":
            return E(f"(-{a.src})", lambda x, f=a.jx: -f(x), a.shape)
        if name in ("log", "sqrt"):
            a = self.positive(a)
        if name in ("exp", "tan"):  # far from overflow and poles
            self.ops_used.add("tanh")
            a = E(f"tanh({a.src})", lambda x, f=a.jx: jnp.tanh(f(x)), a.shape)
        return E(f"{name}({a.src})", lambda x, f=a.jx, t=TWINS[name]: t(f(x)), a.shape,
                 name in ("exp", "sqrt", "sigmoid", "softplus"))

    def binary(self, depth, name=None):
        a, b = self.expr(depth - 1), self.expr(depth - 1)
        name = self.pick(["add", "sub", "mul", "div", "mod", "pow", "pow", "maximum", "minimum"], name)
        shape = np.broadcast_shapes(a.shape, b.shape)
        if name in ("div", "mod"):
            b = self.positive(b)
        if name == "pow":
            a = self.positive(a)
            if self.rng.random() < 0.5:  # a constant exponent, as x ^ 2 (sometimes 0 or 1)
                c = float(self.rng.choice([0.0, 1.0, 2.0, 3.0, 0.5, -1.5, 1.7]))
                return E(f"({a.src} ^ {_lit(c)})", lambda x, f=a.jx, c=c: f(x) ** c, a.shape, True)
            self.ops_used.add("tanh")
            b = E(f"tanh({b.src})", lambda x, f=b.jx: jnp.tanh(f(x)), b.shape)
        if name in ("maximum", "minimum"):
            builtin = "max" if name == "maximum" else "min"
            return E(f"{builtin}({a.src}, {b.src})", lambda x, f=a.jx, g=b.jx, t=TWINS[name]: t(f(x), g(x)), shape)
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "pow": "^"}[name]
        return E(f"({a.src} {sym} {b.src})", lambda x, f=a.jx, g=b.jx, t=TWINS[name]: t(f(x), g(x)), shape,
                 name == "pow" or (name in ("add", "mul", "div") and a.pos and b.pos))

    def select(self, depth, name=None, cmp=None, logic=None):
        name = self.pick(["where", "where", "clip"], name)
        a, b, c, d = (self.expr(depth - 1) for _ in range(4))
        if name == "clip":
            lo = round(float(self.rng.uniform(-1.0, 0.0)), 3)
            hi = round(lo + float(self.rng.uniform(0.2, 2.0)), 3)
            return E(f"clip({a.src}, {_lit(lo)}, {_lit(hi)})",
                     lambda x, f=a.jx: jnp.minimum(jnp.maximum(f(x), lo), hi), a.shape)
        cmp = self.pick(["lt", "le", "gt", "ge", "ne"], cmp)
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "!="}[cmp]
        cond_src, cond = f"{a.src} {sym} {b.src}", (lambda x, f=a.jx, g=b.jx, t=TWINS[cmp]: t(f(x), g(x)))
        if logic is not None or self.rng.random() < 0.3:
            logic = self.pick(["and", "or"], logic)
            self.ops_used.update(("not", "gt"))
            cond_src = f"({cond_src}) {logic} not ({c.src} > 0.3)"
            cond = (lambda x, c0=cond, f=c.jx, t=TWINS[logic]: t(c0(x), jnp.logical_not(f(x) > 0.3)))
        return E(f"where({cond_src}, {c.src}, {d.src})", lambda x, k=cond, f=c.jx, g=d.jx: jnp.where(k(x), f(x), g(x)),
                 np.broadcast_shapes(a.shape, b.shape, c.shape, d.shape))

    def reduce(self, depth, name=None):
        a = self.full(depth - 1)
        nd = len(a.shape)
        name = self.pick(["sum", "mean", "max", "min", "logsumexp", "norm", "softmax"][:7 if nd else 6], name)
        axis = int(self.rng.integers(-nd, nd)) if nd else None
        if name == "softmax":
            return E(f"softmax({a.src}, axis = {axis})", lambda x, f=a.jx: jax.nn.softmax(f(x), axis=axis), a.shape,
                     True)
        self.ops_used.add("sum" if name == "mean" else name)
        twin = (lambda y, axis, keepdims: jnp.mean(y, axis=axis, keepdims=keepdims)) if name == "mean" else TWINS[name]
        if axis is None or self.rng.random() < 0.3:
            return E(f"{name}({a.src})", lambda x, f=a.jx, t=twin: t(f(x), axis=None, keepdims=False), (),
                     name == "norm")
        shape = tuple(1 if i == axis % nd else d for i, d in enumerate(a.shape))
        return E(f"{name}({a.src}, axis = {axis}, keepdims = true)",
                 lambda x, f=a.jx, t=twin: t(f(x), axis=axis, keepdims=True), shape)

    def shape_op(self, depth, name=None):
        a, b = self.full(depth - 1), self.full(depth - 1)
        s, nd = self.shape, len(self.shape)
        if nd == 0:
            return a
        name = self.pick(["transpose", "reshape", "concat", "stack", "index"], name)
        if name == "transpose":
            if nd < 2 or self.rng.random() < 0.2:
                return E(f"transpose(transpose({a.src}))", lambda x, f=a.jx: f(x).T.T, s)
            # a permutation that keeps the shape (the last two axes are equal), negative axes included
            perm = [[*range(nd - 2), -1, -2], [*range(nd - 2), nd - 1, -2], [*range(nd - 1), -1]][self.rng.integers(3)]
            return E(f"transpose({a.src}, {perm})", lambda x, f=a.jx: jnp.transpose(f(x), perm), s)
        if name == "reshape":
            return E(f"reshape(reshape({a.src}, [-1]), {list(s)})", lambda x, f=a.jx: f(x).reshape(-1).reshape(s), s)
        if name == "concat":
            k = int(self.rng.integers(-nd, nd))
            self.ops_used.add("index")
            key = "".join(":, " for _ in range(k % nd)) + f"1:{1 + s[k]}"
            jkey = (slice(None),) * (k % nd) + (slice(1, 1 + s[k]),)
            return E(f"concat([{a.src}, {b.src}], axis = {k})[{key}]",
                     lambda x, f=a.jx, g=b.jx: jnp.concatenate([f(x), g(x)], axis=k)[jkey], s)
        if name == "stack":
            k = int(self.rng.integers(-nd - 1, nd + 1))
            self.ops_used.add("sum")
            return E(f"sum(stack([{a.src}, {b.src}, {a.src}], axis = {k}), axis = {k})",
                     lambda x, f=a.jx, g=b.jx: jnp.sum(jnp.stack([f(x), g(x), f(x)], axis=k), axis=k), s)
        idx = [int(i) for i in self.rng.integers(0, s[0], size=s[0])]  # repeated rows accumulate
        return E(f"{a.src}[{idx}]", lambda x, f=a.jx: f(x)[np.array(idx)], s)

    def linalg(self, depth, name=None):
        s = self.shape
        if not s:
            return self.binary(depth)
        a, b = self.full(depth - 1), self.full(depth - 1)
        name = self.pick(["matmul", "matmul", "masked_softmax"] if len(s) > 1 else ["matmul"], name)
        self.ops_used.add("matmul")
        if len(s) < 2:
            return E(f"(({a.src} @ {b.src}) * {a.src})", lambda x, f=a.jx, g=b.jx: (f(x) @ g(x)) * f(x), s)
        if name == "matmul":
            return E(f"({a.src} @ {b.src})", lambda x, f=a.jx, g=b.jx: f(x) @ g(x), s)
        c = self.full(depth - 1)
        mask = self.rng.random(s[-2:]) < 0.7
        return E(f"attend({a.src}, {b.src}, {c.src}, mask = {_tensor_lit(mask)})",
                 lambda x, f=a.jx, g=b.jx, h=c.jx: _masked_softmax(f(x) @ jnp.swapaxes(g(x), -1, -2), mask, -1) @ h(x),
                 s)

    def integer(self, depth, name=None):
        a, b = self.expr(depth - 1), self.full(depth - 1)
        name = self.pick(["int", "argmax", "argmin", "astype"], name)
        self.ops_used.add("astype")
        if name == "int":
            return E(f"(float(int({a.src} * 3.0)) * {b.src})",
                     lambda x, f=a.jx, g=b.jx: jnp.trunc(f(x) * 3.0) * g(x), b.shape)
        if name in ("argmax", "argmin"):
            return E(f"(float({name}({a.src})) * {b.src})",
                     lambda x, f=a.jx, g=b.jx, t=TWINS[name]: t(f(x)).astype(float) * g(x), b.shape)
        self.ops_used.add("gt")
        return E(f"(float({a.src} > 0.2) * {b.src})", lambda x, f=a.jx, g=b.jx: (f(x) > 0.2).astype(float) * g(x),
                 b.shape)


# The ops a program can name, as (rule, its arguments): each example's terms start from the next ones in turn,
# so the default examples reach them all. The rest (swapaxes, sum_to, scatter_add, ...) are only reached
# inside other ops and their VJPs; test_op_agrees_with_its_jax_twin checks them one by one.
SURFACE = {**{n: ("unary", {"name": n}) for n in ["neg", "exp", "log", "sin", "cos", "tan", "tanh", "sqrt", "abs",
                                                  "relu", "sigmoid", "softplus"]},
           **{n: ("binary", {"name": n}) for n in ["add", "sub", "mul", "div", "mod", "pow", "maximum", "minimum"]},
           "where": ("select", {"name": "where"}), "clip": ("select", {"name": "clip"}),
           **{n: ("select", {"name": "where", "cmp": n}) for n in ["lt", "le", "gt", "ge", "ne"]},
           **{n: ("select", {"name": "where", "logic": n}) for n in ["and", "or"]},
           "not": ("select", {"name": "where", "logic": "and"}),  # `not` comes with either
           **{n: ("reduce", {"name": n}) for n in ["sum", "max", "min", "logsumexp", "norm", "softmax"]},
           **{n: ("shape_op", {"name": n}) for n in ["transpose", "reshape", "concat", "stack", "index"]},
           **{n: ("linalg", {"name": n}) for n in ["matmul", "masked_softmax"]},
           **{n: ("integer", {"name": n}) for n in ["int", "argmax", "argmin", "astype"]}}
SHAPES = [(), (3,), (3, 3), (2, 3, 3)]
NEED_AXES = ["softmax", "reshape", "concat", "stack", "index", "matmul"]  # as roots: not of a 0-d input
TERMS = 3


def draw(seed: int, attempt: int):
    """Attempt `attempt` at example `seed`: (DPL source, JAX loss, x, v, ops used); the loss sums TERMS
    expressions, whose root ops are the next ones of SURFACE for this seed."""
    rng = np.random.default_rng([seed, attempt])
    names = list(SURFACE)
    roots = [names[(seed * TERMS + j) % len(names)] for j in range(TERMS)]
    least = 2 if {"masked_softmax", "transpose"} & set(roots) else 1 if set(NEED_AXES) & set(roots) else 0
    shape = SHAPES[rng.integers(least, len(SHAPES))]
    gen = Generator(rng, shape)
    terms = [gen.full(int(rng.integers(1, 3)), name) for name in roots]
    w, v = np.round(rng.normal(size=shape), 3), rng.normal(size=shape)
    x = rng.normal(size=shape)
    src = (f"W = {_tensor_lit(w)}\nV = {_tensor_lit(v)}\n"
           f"fn f(x) = sum(({' + '.join(t.src for t in terms)}) * W)\nfn hv(x) = sum(grad(f)(x) * V)\n")

    def loss(x):
        return jnp.sum(sum(t.jx(x) for t in terms) * w)
    return src, loss, x, v, gen.ops_used


def random_program(seed: int):
    """(DPL source, JAX's value, gradient and HVP, x) for example `seed`: drawn until JAX finds all finite and
    moderate (the generator keeps exp and tan bounded, log and sqrt positive; this catches the rest)."""
    for attempt in range(100):
        src, loss, x, v, _ = draw(seed, attempt)

        def all_three(x):
            return loss(x), jax.grad(loss)(x), jax.grad(lambda x: jnp.sum(jax.grad(loss)(x) * v))(x)
        want = [np.asarray(a) for a in jax.jit(all_three)(jnp.asarray(x))]  # one compilation, not one per op
        if all(np.all(np.isfinite(a)) and np.all(np.abs(a) < 1e6) for a in want):
            return src, want, x
    raise AssertionError(f"example {seed}: no finite program in 100 draws")


N_EXAMPLES = int(os.environ.get("DPL_DIFF_EXAMPLES", "20"))
SEED = int(os.environ.get("DPL_DIFF_SEED", "0"))


@needs_jax
@pytest.mark.parametrize("k", range(N_EXAMPLES))
def test_random_program_agrees_with_jax(k):
    src, (value, g, hvp), x = random_program(SEED * 1_000_003 + k)
    prog = dpl.loads(src)
    what = f"\n--- example {k} (DPL_DIFF_SEED={SEED}) ---\n{src}"
    close(prog.call("f", x), value, "value" + what)
    close(prog.grad("f")(x), g, "gradient" + what, rtol=1e-8, atol=1e-10)
    close(prog.grad("hv")(x), hvp, "Hessian-vector product" + what, rtol=1e-7, atol=1e-9)


def test_random_programs_reach_the_ops_with_surface_syntax():
    """The default examples' first draws use every op a program can name; the others are checked op by op."""
    used = set()
    for k in range(N_EXAMPLES):
        used |= draw(SEED * 1_000_003 + k, 0)[4]
    assert set(SURFACE) - used == set()
    assert set(SURFACE) <= set(TWINS)
