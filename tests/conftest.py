"""Shared test helpers: a float64 CPU backend for every test, and central finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from dpl import backend


@pytest.fixture(autouse=True)
def _float64_cpu_backend():
    """`dpl.loads(..., dtype="float32")` switches the process-wide dtype; give every test float64 again."""
    backend.use("cpu", "float64")
    yield
    backend.use("cpu", "float64")


def numeric_grad(f, x, h=1e-6):
    """∂f/∂x by central differences, one coordinate at a time (f: float64 array -> float). For a complex x,
    ∂f/∂Re x − i ∂f/∂Im x: the gradient JAX's `grad` (and DPL) gives for a real f of a complex input."""
    if np.iscomplexobj(x):
        x = np.asarray(x, dtype=np.complex128)
        return (numeric_grad(lambda r: f(r + 1j * x.imag), x.real, h)
                - 1j * numeric_grad(lambda i: f(x.real + 1j * i), x.imag, h))
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        g[j] = (float(f(xp)) - float(f(xm))) / (2 * h)
    return g


def check_grads(prog, name, args, argnums, rtol=1e-6, atol=1e-8):
    """prog.grad(name, k) against central differences of prog.call for every k in argnums (finite, right shape)."""
    args = [a if isinstance(a, str) or np.asarray(a).dtype.kind == "b" else np.asarray(a, dtype=np.float64)
            for a in args]
    for k in argnums:
        got = prog.grad(name, k)(*args)

        def f(x, k=k):
            a = list(args)
            a[k] = x
            return prog.call(name, *a)

        want = numeric_grad(f, args[k])
        assert np.shape(got) == np.shape(args[k]), (name, k)
        assert np.all(np.isfinite(got)), (name, k)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{name} argnum {k}")
