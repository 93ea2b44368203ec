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
    if isinstance(v, tuple):  # a 1-tuple as Python writes it, so it does not read as a bracketed value
        return "(" + ", ".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
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


# ---- the REPL's display: as `print` writes values, large tensors summarised as NumPy does ------------------

SUMMARY_THRESHOLD, EDGE_ITEMS, LINE_WIDTH = 1000, 3, 75  # NumPy's threshold, edgeitems and linewidth


def format_display(v, full: bool = False) -> str:
    """A value as the REPL shows it: as `print` writes it, except that a tensor of more than 1000 elements is
    summarised with `...` (unless `full`) and one that does not fit on a line puts each row on its own line,
    elements aligned, as NumPy prints arrays. `print` itself keeps the contract's one-line full form."""
    v = raw(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(format_display(x, full) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, List):
        return "[" + ", ".join(format_display(x, full) for x in v) + "]"
    if not (hasattr(v, "dtype") and hasattr(v, "shape")) or np.ndim(v) == 0:
        return format_value(v)
    a = np.asarray(B.to_host(v))
    summarise = not full and a.size > SUMMARY_THRESHOLD
    if not summarise:
        text = _nested(a)
        if len(text) <= LINE_WIDTH:
            return text
    return _rows(a, summarise)


def _shown(n: int, summarise: bool) -> list:
    """The indices shown along an axis of n; None stands for the `...` in between."""
    if summarise and n > 2 * EDGE_ITEMS:
        return list(range(EDGE_ITEMS)) + [None] + list(range(n - EDGE_ITEMS, n))
    return list(range(n))


def _rows(a, summarise: bool) -> str:
    """NumPy's layout: rows on their own lines (a blank line more per axis beyond 2), long rows wrapped."""
    def leaves(x):
        if x.ndim == 1:
            return [_scalar(x[i]) for i in _shown(len(x), summarise) if i is not None]
        return [s for i in _shown(len(x), summarise) if i is not None for s in leaves(x[i])]
    width = max((len(s) for s in leaves(a)), default=0)

    def block(x, indent):
        idx = _shown(len(x), summarise)
        if x.ndim > 1:
            sep = ",\n" + "\n" * (x.ndim - 2) + indent + " "
            return "[" + sep.join("..." if i is None else block(x[i], indent + " ") for i in idx) + "]"
        items = ["..." if i is None else _scalar(x[i]).rjust(width) for i in idx]
        lines, line = [], ""
        for k, item in enumerate(items):
            piece = item + ("," if k + 1 < len(items) else "")
            if line and len(indent) + 1 + len(line) + 1 + len(piece) > LINE_WIDTH:
                lines.append(line)
                line = piece
            else:
                line = f"{line} {piece}" if line else piece
        lines.append(line)
        return "[" + ("\n" + indent + " ").join(lines) + "]"
    return block(a, "")
