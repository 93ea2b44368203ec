"""The builtin reference, docs/BUILTINS.md, generated from the registry's signatures and docstrings so that it
cannot drift from the code: `python -m dpl.reference > docs/BUILTINS.md` writes it, and tests/test_reference.py
fails when the committed file differs from what this prints."""
from __future__ import annotations

import inspect
import sys

from .builtins import BUILTINS, CONSTANTS

REGENERATE = "python -m dpl.reference > docs/BUILTINS.md"

# the module that registers a builtin gives its section; one added elsewhere gets a section named by its module
SECTIONS = {"dpl.builtins": "The builtins of the language contract (LANGUAGE.md §9)",
            "dpl.primitives": "Attention, memory, ODEs and sparse graphs",
            "dpl.numerics": "NumPy and SciPy functions",
            "dpl.linalg": "Linear algebra (batched over leading axes)"}


def default(v) -> str:
    """A default value as DPL writes it (`none`, `true`, `"rk4"`, 1e-06)."""
    if v is None or isinstance(v, bool):
        return {None: "none", True: "true", False: "false"}[v]
    return f'"{v}"' if isinstance(v, str) else repr(v)


def signature(b) -> str:
    """`name(a, b = 1, *, axis = none)`: every parameter with its default; those after `*` by name only."""
    parts, named_only = [], False
    for p in b.sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"{p.name}, ...")
            continue
        if p.kind is p.KEYWORD_ONLY and not named_only:
            parts.append("*")
            named_only = True
        parts.append(p.name if p.default is p.empty else f"{p.name} = {default(p.default)}")
    return f"{b.name}({', '.join(parts)})"


def description(b) -> str:
    """The builtin's docstring as one line of a Markdown table cell."""
    return " ".join(inspect.cleandoc(b.fn.__doc__ or "").split()).replace("|", "\\|")


def table() -> str:
    """docs/BUILTINS.md: one section per registering module, one row per builtin, alphabetical."""
    groups: dict[str, list] = {}
    for b in BUILTINS.values():
        groups.setdefault(b.fn.__module__, []).append(b)
    order = [m for m in SECTIONS if m in groups] + sorted(m for m in groups if m not in SECTIONS)
    out = ["# DPL builtins", "",
           f"Generated from the builtin registry (`dpl/builtins.py`'s `builtin` decorator) by `{REGENERATE}`;",
           "do not edit it by hand: tests/test_reference.py fails when it and the code disagree.",
           "Options are keyword arguments (`sum(x, axis = 1)`), shown with their defaults; parameters after `*`",
           "are given by name only. The language itself is described in [LANGUAGE.md](LANGUAGE.md).", "",
           "Constants: " + ", ".join(f"`{name}`" for name in sorted(CONSTANTS)) + "."]
    for module in order:
        out += ["", f"## {SECTIONS.get(module, module)}", "", "| builtin | what it does |", "| --- | --- |"]
        out += [f"| `{signature(b)}` | {description(b)} |" for b in sorted(groups[module], key=lambda b: b.name)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(table().encode())
