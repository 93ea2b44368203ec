"""The one array namespace: every op calls `backend.xp` (numpy, or cupy with --device gpu)."""
from __future__ import annotations

import numpy

xp = numpy
float_dtype = numpy.dtype("float64")
device = "cpu"


def use(device_name: str = "cpu", dtype: str = "float64") -> None:
    """Select the array module and the run's float dtype; cupy is imported only here, on request."""
    global xp, float_dtype, device
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
