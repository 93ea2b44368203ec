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
    """∂f/∂x by central differences, one coordinate at a time (f: float64 array -> float)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        g[j] = (float(f(xp)) - float(f(xm))) / (2 * h)
    return g
