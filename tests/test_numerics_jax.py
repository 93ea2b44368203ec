"""The builtins of test_numerics.py against JAX (values and first-order gradients on the same random inputs), where
JAX is installed; skipped otherwise. JAX is a reference only, never a dependency of DPL."""
from __future__ import annotations

import numpy as np
import pytest

from test_numerics import CASES, setup

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp, jsp = jax.numpy, jax.scipy.special
jla = jax.scipy.linalg

pytestmark = pytest.mark.optional


def sym(a):
    return (a + jnp.swapaxes(a, -1, -2)) / 2


def ords(o):
    return {"inf": jnp.inf, "-inf": -jnp.inf}.get(o, o)


JAX: dict = {
    "square": jnp.square, "reciprocal": jnp.reciprocal, "log1p": jnp.log1p, "expm1": jnp.expm1, "log2": jnp.log2,
    "log10": jnp.log10, "exp2": jnp.exp2, "sinh": jnp.sinh, "cosh": jnp.cosh, "arcsin": jnp.arcsin,
    "arccos": jnp.arccos, "arctan": jnp.arctan, "arcsinh": jnp.arcsinh, "arccosh": jnp.arccosh,
    "arctanh": jnp.arctanh, "sinc": jnp.sinc, "erf": jsp.erf, "erfc": jsp.erfc, "erfinv": jsp.erfinv,
    "lgamma": jsp.gammaln, "digamma": jsp.digamma, "gamma": jsp.gamma, "polygamma": lambda x: jsp.polygamma(2, x),
    "arctan2": jnp.arctan2, "hypot": jnp.hypot, "logaddexp": jnp.logaddexp,
    "sort": jnp.sort, "sort-axis0": lambda x: jnp.sort(x, axis=0),
    "topk-values": lambda x: jnp.swapaxes(jax.lax.top_k(jnp.swapaxes(x, 1, -1), 2)[0], 1, -1),
    "cumsum": lambda x: jnp.cumsum(x), "cumsum-axis": lambda x: jnp.cumsum(x, axis=1),
    "cumprod": lambda x: jnp.cumprod(x, axis=-1), "cumprod-zeros": lambda x: jnp.cumprod(x, axis=1),
    "prod": jnp.prod, "prod-zeros": lambda x: jnp.prod(x, axis=1),
    "prod-axes": lambda x: jnp.prod(x, axis=(0, 2), keepdims=True), "diff": jnp.diff,
    "diff-2": lambda x: jnp.diff(x, n=2, axis=0), "var": jnp.var, "var-ddof": lambda x: jnp.var(x, axis=1, ddof=1),
    "std": lambda x: jnp.std(x, axis=(0, 2), keepdims=True), "std-ddof": lambda x: jnp.std(x, ddof=1.5),
    "median-odd": jnp.median, "median-even": lambda x: jnp.median(x, axis=1),
    "quantile": lambda x: jnp.quantile(x, 0.3), "quantile-q": lambda x, q: jnp.quantile(x, q, axis=1),
    "flip": jnp.flip, "roll": lambda x: jnp.roll(x, 2), "roll-axes": lambda x: jnp.roll(x, (1, -2), axis=(0, 2)),
    "pad": lambda x: jnp.pad(x, ((1, 0), (2, 1))), "pad-reflect": lambda x: jnp.pad(x, ((1, 0), (0, 2), (3, 1)), "reflect"),
    "repeat-axis": lambda x: jnp.repeat(x, jnp.array([1, 0, 3]), axis=1, total_repeat_length=4),
    "tile": lambda x: jnp.tile(x, (2, 1, 3)), "tril": lambda x: jnp.tril(x, -1), "triu": lambda x: jnp.triu(x, 1),
    "diag-vector": lambda x: jnp.diag(x, -1), "diagonal": lambda x: jnp.diagonal(x, -1, 2, 0), "trace": jnp.trace,
    "outer": jnp.outer, "kron": jnp.kron, "tensordot-axes": lambda a, b: jnp.tensordot(a, b, ((0, 2), (1, 0))),
    "einsum-...ij,...jk": lambda a, b: jnp.einsum("...ij,...jk", a, b), "einsum-iij,j->i":
        lambda a, b: jnp.einsum("iij,j->i", a, b), "einsum-ijk,jl,k->il": lambda *xs: jnp.einsum("ijk,jl,k->il", *xs),
    "solve-batch": jnp.linalg.solve, "inv": jnp.linalg.inv, "det": jnp.linalg.det,
    "slogdet": lambda a: jnp.prod(jnp.stack(jnp.linalg.slogdet(a)), axis=0),
    "cholesky": lambda a: jnp.linalg.cholesky(sym(a)), "eigh-values": lambda a: jnp.linalg.eigh(a)[0],
    "eigh-vectors": lambda a: jnp.linalg.eigh(a)[1], "svdvals": lambda a: jnp.linalg.svd(a, compute_uv=False),
    "svd-tall": lambda a: jnp.linalg.svd(a, full_matrices=False)[0], "qr-wide": lambda a: jnp.linalg.qr(a)[1],
    "expm": jla.expm, "matrix_power": lambda a: jnp.linalg.matrix_power(a, 5),
    "solve_triangular": lambda a, b: jla.solve_triangular(a, b, lower=False),
    **{f: (lambda x, f=f: getattr(jnp, f)(x) * x) for f in ("sign", "floor", "ceil", "round")},
    "sinc-at-0": jnp.sinc, "argsort": lambda x: jnp.argsort(x, axis=1, stable=True),
    "topk-indices": lambda x: jax.lax.top_k(x, 3)[1],
    "split": lambda x: jnp.split(x, [1], axis=1)[1], "pad-value": lambda x, v: jnp.pad(x, 1) + v * (1 - jnp.pad(jnp.ones_like(x), 1)),  # jnp.pad: no gradient for v
    "eigvalsh": lambda a: jnp.linalg.eigvalsh(a),
    "svd-wide": lambda a: jnp.linalg.svd(a, full_matrices=False)[2] * 2 + jnp.sum(jnp.linalg.svd(a, compute_uv=False)),
    "qr-tall": lambda a: jnp.linalg.qr(a)[0] + jnp.sum(jnp.linalg.qr(a)[1]), "norm": jnp.linalg.norm,
    **{f"norm-vector-{o}": (lambda x, p=ords(o): jnp.linalg.norm(x, p, axis=1)) for o in (1, 3, 0.5, "inf", "-inf")},
    **{f"norm-batch-{o}": (lambda x, p=ords(o): jnp.linalg.norm(x, p, axis=(2, 0), keepdims=True))
       for o in ("fro", "nuc", 1, -1, 2, -2, "inf", "-inf")},
}


def test_every_reference_names_a_case():
    assert set(JAX) <= set(CASES)


@pytest.mark.parametrize("name", sorted(JAX))
def test_value_and_gradient_match_jax(name):
    c, r, args, prog = setup(name)
    ref = JAX[name]
    jargs = [jnp.asarray(a) for a in args]
    want = np.asarray(ref(*jargs))
    np.testing.assert_allclose(prog.call("F", *args), want, rtol=1e-9, atol=1e-12)
    assert np.asarray(prog.call("F", *args)).dtype.kind == want.dtype.kind
    cot = r.normal(size=want.shape)
    for k in c.wrt:
        jg = jax.grad(lambda *xs: jnp.sum(ref(*xs) * cot), argnums=k)(*jargs)
        np.testing.assert_allclose(prog.grad("f", k)(*args, cot), np.asarray(jg), rtol=1e-7, atol=1e-10,
                                   err_msg=f"{name}: gradient w.r.t. argument {k}")


# ---- complex numbers: real losses of a real x and a complex z, their values and gradients (JAX's convention) ----

COMPLEX_LOSSES = {
    "parseval": ("sum(abs(fft(x)) ^ 2) + sum(abs(fft(z, n = 6)))",
                 lambda x, z: jnp.sum(jnp.abs(jnp.fft.fft(x)) ** 2) + jnp.sum(jnp.abs(jnp.fft.fft(z, n=6)))),
    "phase": ("real(sum(exp(1j * x) * z)) + imag(sum(z * z / (x + 2j)))",
              lambda x, z: jnp.real(jnp.sum(jnp.exp(1j * x) * z)) + jnp.imag(jnp.sum(z * z / (x + 2j)))),
    "ifft": ("sum(abs(ifft(z * x, n = 3)) ^ 2) + real(sum(ifft(x) * conj(z)))",
             lambda x, z: jnp.sum(jnp.abs(jnp.fft.ifft(z * x, n=3)) ** 2) + jnp.real(jnp.sum(jnp.fft.ifft(x) * jnp.conj(z)))),
    "rfft-irfft": ("sum(irfft(z, n = 7) * x[0]) + sum(abs(rfft(x, n = 5))) + sum(irfft(rfft(x) * z[:3]))",
                   lambda x, z: jnp.sum(jnp.fft.irfft(z, n=7) * x[0]) + jnp.sum(jnp.abs(jnp.fft.rfft(x, n=5)))
                   + jnp.sum(jnp.fft.irfft(jnp.fft.rfft(x) * z[:3]))),
    "matmul-kron-einsum": ('abs(sum(kron(z[:2], x) @ conj(kron(x, z[:2])))) + sum(angle(z)) '
                           '+ real(einsum("i,i->", z, x * 1j))',
                           lambda x, z: jnp.abs(jnp.sum(jnp.kron(z[:2], x) @ jnp.conj(jnp.kron(x, z[:2]))))
                           + jnp.sum(jnp.angle(z)) + jnp.real(jnp.einsum("i,i->", z, x * 1j))),
    "mean-pow-log": ("abs(mean(z ^ 2 * log(z) + sqrt(z) * x)) + imag(mean(exp(z)))",
                     lambda x, z: jnp.abs(jnp.mean(z ** 2 * jnp.log(z) + jnp.sqrt(z) * x)) + jnp.imag(jnp.mean(jnp.exp(z)))),
}


@pytest.mark.parametrize("name", sorted(COMPLEX_LOSSES))
def test_complex_value_and_gradients_match_jax(name):
    import dpl
    body, ref = COMPLEX_LOSSES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.normal(size=4)
    z = rng.normal(size=4) + 1j * rng.normal(size=4)
    prog = dpl.loads(f"fn f(x, z) = {body}\n")
    np.testing.assert_allclose(prog.call("f", x, z), np.asarray(ref(jnp.asarray(x), jnp.asarray(z))), rtol=1e-12)
    for k in (0, 1):
        want = np.asarray(jax.grad(ref, argnums=k)(jnp.asarray(x), jnp.asarray(z)))
        got = prog.grad("f", k)(x, z)
        assert got.dtype == want.dtype, f"{name}: gradient w.r.t. argument {k}"  # real for x, complex for z
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{name}: gradient w.r.t. argument {k}")
