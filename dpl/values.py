"""Lists, and how values print (LANGUAGE.md §5): integers bare, floats and complex numbers as Python's repr,
tensors as nested lists."""
from __future__ import annotations

import numpy as np

from . import backend as B
from .graph import raw


class List:
    """An immutable list of any values. `append` returns a new list that shares its predecessor's storage
    while that predecessor is the longest view of it, so appending T items costs O(T) in all."""

    __slots__ = ("store", "n")

    def __init__(self, items=(), store=None, n=None):
        self.store = list(items) if store is None else store
        self.n = len(self.store) if n is None else n

    def append(self, v) -> "List":
        if len(self.store) == self.n:  # nobody has appended to this view yet: extend its storage in place
            self.store.append(v)
            return List(store=self.store, n=self.n + 1)
        return List(self.store[:self.n] + [v])

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(self.store[:self.n])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return List(self.store[:self.n][i])
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.store[i % self.n]

    def describe(self):
        return f"a list of {self.n}"


def format_float(x) -> str:
    if isinstance(x, np.floating) and x.dtype != np.float64:
        # the shortest digits that read back as this float32/float16, spelled the way repr spells floats
        if not np.isfinite(x):
            return repr(float(x))
        return repr(float(np.format_float_scientific(x, unique=True)))
    return repr(float(x))


def format_complex(z) -> str:
    """As Python's repr: `(1+2j)`, `3j`, `(1.5-0j)`; complex64 parts with the shortest digits of a float32."""
    if isinstance(z, np.complexfloating) and z.dtype != np.complex128:
        z = complex(*(float(format_float(part)) if np.isfinite(part) else float(part) for part in (z.real, z.imag)))
    return repr(complex(z))


def _scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (complex, np.complexfloating)):
        return format_complex(x)
    return format_float(x)


def _nested(a) -> str:
    if a.ndim == 0:
        return _scalar(a[()])
    return "[" + ", ".join(_nested(row) for row in a) + "]"


def format_value(v) -> str:
    v = raw(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(format_value(x) for x in v) + ")"
    if isinstance(v, List):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, str):
        return v
    if v is None:
        return "none"
    if isinstance(v, (bool, int, float, complex, np.generic)):
        return _scalar(v)
    if hasattr(v, "dtype") and hasattr(v, "shape"):
        return _nested(np.asarray(B.to_host(v)))
    if hasattr(v, "describe"):
        return v.describe()
    return str(v)
