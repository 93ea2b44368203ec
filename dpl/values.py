"""How values print (LANGUAGE.md §5): integers bare, floats as Python's repr, tensors as nested lists."""
from __future__ import annotations

import numpy as np

from . import backend as B
from .graph import raw


def format_float(x) -> str:
    if isinstance(x, np.floating) and x.dtype != np.float64:
        # the shortest digits that read back as this float32/float16, spelled the way repr spells floats
        if not np.isfinite(x):
            return repr(float(x))
        return repr(float(np.format_float_scientific(x, unique=True)))
    return repr(float(x))


def _scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return format_float(x)


def _nested(a) -> str:
    if a.ndim == 0:
        return _scalar(a[()])
    return "[" + ", ".join(_nested(row) for row in a) + "]"


def format_value(v) -> str:
    v = raw(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    if isinstance(v, str):
        return v
    if v is None:
        return "none"
    if isinstance(v, (bool, int, float, np.generic)):
        return _scalar(v)
    if hasattr(v, "dtype") and hasattr(v, "shape"):
        return _nested(np.asarray(B.to_host(v)))
    if hasattr(v, "describe"):
        return v.describe()
    return str(v)
