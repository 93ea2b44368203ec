"""Lists, and how values print (LANGUAGE.md §5): integers bare, floats as Python's repr, tensors as nested lists."""
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
    if isinstance(v, tuple):  # a 1-tuple as Python writes it, so it does not read as a bracketed value
        return "(" + ", ".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, List):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
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
