"""The one array namespace: every op calls `backend.xp` (numpy, or cupy with --device gpu)."""
from __future__ import annotations

import ctypes
import os

import numpy

xp = numpy
float_dtype = numpy.dtype("float64")
complex_dtype = numpy.dtype("complex128")  # follows float_dtype: complex64 under --dtype float32
device = "cpu"


def use(device_name: str = "cpu", dtype: str = "float64") -> None:
    """Select the array module and the run's float dtype; cupy is imported only here, on request."""
    global xp, float_dtype, complex_dtype, device
    if device_name == "gpu":
        try:
            import cupy
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise RuntimeError("--device gpu needs CuPy: pip install 'dpl[gpu]'") from e
        xp = cupy
    elif device_name == "cpu":
        xp = numpy
    else:
        raise ValueError(f"unknown device {device_name!r} (cpu or gpu)")
    device = device_name
    float_dtype = numpy.dtype(dtype)
    complex_dtype = numpy.result_type(float_dtype, numpy.complex64)


def special():
    """scipy.special, or cupyx.scipy.special on the GPU (imported only then)."""
    if xp is numpy:
        import scipy.special as sp
    else:  # pragma: no cover - GPU only
        import cupyx.scipy.special as sp
    return sp


def to_host(a):
    """A numpy array for printing and saving (the only place data leaves the device)."""
    return a.get() if hasattr(a, "get") and xp is not numpy else numpy.asarray(a)


def limit_threads(n: int) -> None:
    """BLAS threads for the rest of the process (threadpoolctl): on a shared machine, more threads than
    the matrices need slow small-matrix models down several times."""
    from threadpoolctl import threadpool_limits
    global _limits
    _limits = threadpool_limits(limits=n)


_limits = None
_malloc_set = False


def keep_freed_memory() -> None:
    """Once per process: raise glibc's mmap and trim thresholds (32 MB, 256 MB), so the large arrays a replay
    plan frees are reused by the next step instead of being unmapped and faulted in again (that cost memnet
    a third of its step; WORKLOADS.md). Left alone where the user set MALLOC_*_ or the libc is not glibc."""
    global _malloc_set
    if _malloc_set:
        return
    _malloc_set = True
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2 ** 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 2 ** 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its own policy stands
        pass
