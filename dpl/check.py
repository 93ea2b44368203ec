"""`dpl check`: parse every file a program loads and resolve every name without running anything."""
from __future__ import annotations

from pathlib import Path

from . import ast as A
from .builtins import BUILTINS, CONSTANTS
from .errors import DplError, suggest
from .interp import assigned_names, read_source, stdlib_path
from .limits import deep_stack
from .parser import parse

_TRAIN_SETTINGS = {"optimizer", "epochs", "batch", "shuffle", "seed"}


def check_file(path) -> list[DplError]:
    """Every unknown name in the program and the files it uses or imports (flow-insensitively: no false alarms)."""
    programs: dict[Path, A.Program] = {}
    errors: list[DplError] = []
    with deep_stack():  # the parser bounds how deeply a program nests; Python's default stack is shallower
        _collect(Path(path), programs, errors, None, [])
        top: set[str] = set(BUILTINS) | set(CONSTANTS)
        for prog in programs.values():
            top |= _top_names(prog.body)
        for prog in programs.values():
            _check_body(prog.body, top, errors)
    return errors


def _collect(path: Path, programs, errors, span, loading: list):
    key = path.resolve()
    if key in loading:
        chain = " -> ".join(p.name for p in loading[loading.index(key):] + [key])
        errors.append(DplError(f"import cycle: {chain}", span))
        return
    if key in programs:
        return
    if not path.is_file():
        errors.append(DplError(f"cannot import `{path}`: no such file", span))
        return
    try:
        prog = programs[key] = parse(read_source(path), str(path))
    except DplError as e:
        errors.append(e)
        return
    loading.append(key)
    for stmt in prog.body:
        if isinstance(stmt, A.Use):
            try:
                _collect(stdlib_path(stmt.name, stmt.span), programs, errors, stmt.span, loading)
            except DplError as e:
                errors.append(e)
        elif isinstance(stmt, A.Import):
            p = Path(stmt.path)
            if p.suffix != ".dpl":
                errors.append(DplError(f"`import` loads DPL programs (.dpl files), not `{stmt.path}`", stmt.span))
                continue
            _collect(p if p.is_absolute() else path.parent / p, programs, errors, stmt.span, loading)
    loading.pop()


def _top_names(body) -> set[str]:
    names = set(assigned_names([s for s in body if not isinstance(s, A.Train)]))
    for s in body:
        if isinstance(s, (A.FnDef, A.ModuleDef, A.Param)):
            names.add(s.name)
    return names


def _check_body(body, top, errors):
    for s in body:
        if isinstance(s, A.FnDef):
            _check_fn(s, top, set(), errors)
        elif isinstance(s, A.ModuleDef):
            inner = set(s.params) | {x.name for x in s.body if isinstance(x, (A.Param, A.FnDef))} | \
                {x.target for x in s.body if isinstance(x, A.Assign)}
            for x in s.body:
                if isinstance(x, A.FnDef):
                    _check_fn(x, top, inner, errors)
                else:
                    _check_node(x, top | inner, errors)
        elif isinstance(s, A.Train):
            if s.loss not in top:
                errors.append(DplError(f"unknown name `{s.loss}`{suggest(s.loss, top)}", s.span))
            for e in s.over:
                _check_node(e, top, errors)
            for x in s.body:
                _check_node(x.value, top, errors)
        else:
            _check_node(s, top, errors)


def _check_fn(fn: A.FnDef, top, inner, errors):
    local = set(fn.params) | set(assigned_names(fn.body))
    for s in fn.body:
        _check_node(s, top | inner | local, errors)


def _check_node(node, scope, errors):
    if isinstance(node, A.Name):
        if node.id not in scope:
            errors.append(DplError(f"unknown name `{node.id}`{suggest(node.id, scope)}", node.span))
        return
    if isinstance(node, (A.FnDef, A.ModuleDef)):
        return
    if isinstance(node, A.Param):
        _check_node(node.shape, scope, errors)
        if not isinstance(node.init, A.Init):
            _check_node(node.init, scope, errors)
        else:
            for a in node.init.args:
                _check_node(a, scope, errors)
        return
    for value in vars(node).values():
        for child in (value if isinstance(value, tuple) else (value,)):
            if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], str):
                child = child[1]  # a keyword argument
            if isinstance(child, A.Node):
                _check_node(child, scope, errors)
