"""`dpl check`: parse every file a program loads and resolve every name without running anything."""
from __future__ import annotations

from pathlib import Path

from . import ast as A
from .builtins import BUILTINS, CONSTANTS
from .errors import DplError, suggest
from .interp import assigned_names, bind_args, read_source, stdlib_path
from .limits import deep_stack
from .parser import DECLARATION_WORD, parse


def check_file(path) -> list[DplError]:
    """Every unknown name in the program and the files it uses or imports (flow-insensitively: no false alarms)."""
    programs: dict[Path, A.Program] = {}
    imports: dict[Path, list] = {}  # each file's `use`/`import` statements: (statement, the file's key, what)
    errors: list[DplError] = []
    with deep_stack():  # the parser bounds how deeply a program nests; Python's default stack is shallower
        _collect(Path(path), programs, imports, errors, None, [])
        own = {key: _top_names(prog.body) for key, prog in programs.items()}
        sigs = _signatures(programs.values())
        for key, prog in programs.items():
            user = own[key] | _brought(key, own, imports, errors)
            aliases = {stmt.alias: (what, set(_exports(k, own, imports))) for stmt, k, what in imports.get(key, ())
                       if stmt.alias is not None and k in own}
            _Checker(errors, sigs, user, aliases).body(prog.body, user | set(BUILTINS) | set(CONSTANTS))
    return errors


def _exports(key, own, imports, seen=()) -> dict:
    """A file's public names, each with the file that defines it (its own, then those its imports bring)."""
    out = {}
    for stmt, k, _ in imports.get(key, ()):
        if stmt.alias is None and k in own and k not in seen:
            for name, origin in _exports(k, own, imports, seen + (key,)).items():
                out.setdefault(name, origin)
    out.update({n: key for n in own.get(key, ()) if not n.startswith("_")})
    return out


def _brought(key, own, imports, errors) -> set:
    """The names a file's unqualified imports bring in; one name from two files is an error, as at run time."""
    brought: dict[str, tuple] = {}
    for stmt, k, what in imports.get(key, ()):
        if stmt.alias is not None or k not in own:
            continue
        for name, origin in _exports(k, own, imports, (key,)).items():
            if name in own[key]:
                continue
            if name in brought and brought[name][1] != origin and brought[name][0] != what:
                errors.append(DplError(f"`{name}` is defined both by {brought[name][0]} and by {what}; load one "
                                       f"of them with a name, as `use nn as nn` or `import \"lib.dpl\" as lib`, "
                                       f"and write `nn.{name}`", stmt.span))
            brought.setdefault(name, (what, origin))
    return set(brought)


def _collect(path: Path, programs, imports, errors, span, loading: list):
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
    mine = imports[key] = []
    for stmt in prog.body:
        if isinstance(stmt, A.Use):
            try:
                p = stdlib_path(stmt.name, stmt.span)
            except DplError as e:
                errors.append(e)
                continue
            mine.append((stmt, p.resolve(), stmt.name))
            _collect(p, programs, imports, errors, stmt.span, loading)
        elif isinstance(stmt, A.Import):
            p = Path(stmt.path)
            if p.suffix != ".dpl":
                errors.append(DplError(f"`import` loads DPL programs (.dpl files), not `{stmt.path}`", stmt.span))
                continue
            p = p if p.is_absolute() else path.parent / p
            mine.append((stmt, p.resolve(), f'"{stmt.path}"'))
            _collect(p, programs, imports, errors, stmt.span, loading)
    loading.pop()


def _bound(body) -> set[str]:
    """Names a block binds, leaving out those whose every assignment reads the name first (`y += x` with no
    `y` before it can only read an outer `y`)."""
    reads_first = {}
    for target, value in _assignments(body):
        reads_first[target] = reads_first.get(target, True) and value is not None and _reads(value, target)
    return set(assigned_names(body)) - {n for n, r in reads_first.items() if r}


def _assignments(body):
    """(name, the expression assigned) of every binding in a block; None where nothing is read (a loop variable,
    `as steps`), so a name some statement binds without reading it stays bound (`a, u = s` then `u = u + 1`)."""
    for s in body:
        if isinstance(s, A.Assign):
            yield s.target, s.value
        elif isinstance(s, A.Unpack):
            yield from ((t, s.value) for t in s.targets)
        elif isinstance(s, A.For):
            yield s.var, None
        elif isinstance(s, A.SoftWhile) and s.steps:
            yield s.steps, None
        if not isinstance(s, (A.Assign, A.Unpack, A.FnDef, A.ModuleDef, A.Train)):
            for block in (getattr(s, "body", None), getattr(s, "orelse", None)):
                if isinstance(block, tuple):
                    yield from _assignments(block)


def _reads(node, name) -> bool:
    if isinstance(node, A.Name):
        return node.id == name
    if isinstance(node, (A.Lambda, A.FnDef)):
        return False  # read when called, not when assigned
    return any(_reads(c, name) for v in vars(node).values() for c in (v if isinstance(v, tuple) else (v,))
               if isinstance(c, A.Node)) or any(_reads(c[1], name) for v in vars(node).values()
                                               if isinstance(v, tuple) for c in v
                                               if isinstance(c, tuple) and len(c) == 2 and isinstance(c[1], A.Node))


def _top_names(body) -> set[str]:
    names = _bound([s for s in body if not isinstance(s, A.Train)]) | _fn_names(body)
    for s in body:
        if isinstance(s, (A.FnDef, A.ModuleDef, A.Param)):
            names.add(s.name)
        elif isinstance(s, (A.Use, A.Import)) and s.alias:
            names.add(s.alias)
    return names


def _fn_names(body) -> set[str]:
    """The `fn` declarations of a body and of the blocks in it (not of the functions declared there)."""
    out = set()
    for s in body:
        if isinstance(s, A.FnDef):
            out.add(s.name)
        for block in (getattr(s, "body", None), getattr(s, "orelse", None)):
            if isinstance(block, tuple) and not isinstance(s, (A.FnDef, A.ModuleDef, A.Train)):
                out |= _fn_names(block)
    return out


def _signatures(programs) -> dict:
    """Functions and modules declared once at top level and never rebound there (also `g = fn(x) = ...`
    assigned once): calls to them are checked."""
    count: dict[str, int] = {}
    decls = {}
    for prog in programs:
        for s in prog.body:
            if isinstance(s, (A.FnDef, A.ModuleDef)):
                decls[s.name] = s
        for name in list(assigned_names([s for s in prog.body if not isinstance(s, A.Train)])) + \
                [s.name for s in prog.body if isinstance(s, (A.FnDef, A.ModuleDef, A.Param))]:
            count[name] = count.get(name, 0) + 1
        for name, fn in _local_signatures([s for s in prog.body if not isinstance(s, A.Train)], ()).items():
            decls.setdefault(name, fn)
    return {name: d for name, d in decls.items() if count[name] == 1}


def _local_signatures(body, params) -> dict:
    """The functions of a body bound once and only once: a nested `fn g(...)` or `g = fn(...) = ...` that no
    parameter, other assignment or loop variable rebinds (so a call of `g` there can be checked)."""
    count: dict[str, int] = dict.fromkeys(params, 1)
    decls = {}

    def walk(stmts):
        for s in stmts:
            names = ()
            if isinstance(s, A.FnDef):
                names, decls[s.name] = (s.name,), s
            elif isinstance(s, A.Assign):
                names = (s.target,)
                if isinstance(s.value, A.Lambda):
                    decls[s.target] = s.value.fn
            elif isinstance(s, A.Unpack):
                names = s.targets
            elif isinstance(s, A.For):
                names = (s.var,)
            elif isinstance(s, A.SoftWhile) and s.steps:
                names = (s.steps,)
            for n in names:
                count[n] = count.get(n, 0) + 1
            if not isinstance(s, (A.FnDef, A.ModuleDef, A.Train)):
                for block in (getattr(s, "body", None), getattr(s, "orelse", None)):
                    if isinstance(block, tuple):
                        walk(block)
    walk(body)
    return {name: d for name, d in decls.items() if count[name] == 1}


class _Checker:
    """Resolves names scope by scope: a function sees its own locals, then those of the functions it is nested
    in, then the top level (and a module's functions, the module's names in between)."""

    def __init__(self, errors, sigs, user, aliases):
        self.errors, self.sigs, self.user, self.aliases = errors, sigs, user, aliases
        self.locals: list[set] = []  # the local names of the functions being checked, innermost last
        self.local_sigs: list[dict] = []  # for each of them, its nested functions bound once (_local_signatures)

    def error(self, msg, span):
        self.errors.append(DplError(msg, span))

    def body(self, body, top):
        for s in body:
            if isinstance(s, A.FnDef):
                self.fn(s, top, top)
            elif isinstance(s, A.ModuleDef):
                inner = set(s.params) | {x.name for x in s.body if isinstance(x, (A.Param, A.FnDef))} | \
                    {x.target for x in s.body if isinstance(x, A.Assign)}
                for _, d in s.defaults:
                    self.node(d, top | set(s.params), top, in_fn=False)
                self.locals.append(inner)
                self.local_sigs.append({})
                for x in s.body:
                    if isinstance(x, A.FnDef):
                        self.fn(x, top | inner, top)
                    else:
                        self.node(x, top | inner, top, in_fn=False)
                self.locals.pop()
                self.local_sigs.pop()
            elif isinstance(s, A.Train):
                head = s.loss.split(".")[0]
                if head not in top:
                    self.error(f"unknown name `{head}`{suggest(head, top)}", s.span)
                for e in s.over:
                    self.node(e, top, top, in_fn=False)
                for x in s.body:
                    self.node(x.value, top, top, in_fn=False)
            else:
                self.node(s, top, top, in_fn=False)

    def fn(self, fn: A.FnDef, scope, top):
        local = set(fn.params) | _bound(fn.body) | _fn_names(fn.body)
        for _, d in fn.defaults:
            self.node(d, scope | set(fn.params), top, in_fn=True)
        self.locals.append(local)
        self.local_sigs.append(_local_signatures(fn.body, fn.params))
        for s in fn.body:
            self.node(s, scope | local, top, in_fn=True)
        self.locals.pop()
        self.local_sigs.pop()

    def node(self, node, scope, top, in_fn):
        if isinstance(node, A.Name):
            if node.id not in scope:
                self.error(f"unknown name `{node.id}`{suggest(node.id, scope)}", node.span)
            return
        if isinstance(node, A.FnDef):
            return self.fn(node, scope, top)
        if isinstance(node, A.Lambda):
            return self.fn(node.fn, scope, top)
        if isinstance(node, (A.ModuleDef, A.Param, A.Use, A.Import, A.Train)) and in_fn:
            return self.error(f"`{DECLARATION_WORD[type(node)]}` declarations are allowed only at top level", node.span)
        if isinstance(node, A.ModuleDef):
            return
        if isinstance(node, A.Param):
            self.node(node.shape, scope, top, in_fn)
            for a in node.init.args if isinstance(node.init, A.Init) else (node.init,):
                self.node(a, scope, top, in_fn)
            return
        if isinstance(node, A.Call) and isinstance(node.func, A.Name):
            self.call(node, scope, top, in_fn)
        if isinstance(node, A.Attr) and isinstance(node.value, A.Name) and node.value.id in self.aliases \
                and not any(node.value.id in names for names in self.locals):
            what, names = self.aliases[node.value.id]
            if node.name not in names:
                self.error(f"{what} has no `{node.name}`{suggest(node.name, names)}", node.span)
        for value in vars(node).values():
            for child in (value if isinstance(value, tuple) else (value,)):
                if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], str):
                    child = child[1]  # a keyword argument
                if isinstance(child, A.Node):
                    self.node(child, scope, top, in_fn)

    def call(self, n: A.Call, scope, top, in_fn):
        """Arity and keywords of a call to a builtin or a top-level function that no local name shadows."""
        name = n.func.id
        kwargs = {k: None for k, _ in n.kwargs}
        decl = self.sigs.get(name)
        for names, sigs in zip(reversed(self.locals), reversed(self.local_sigs)):
            if name in names:  # a local or enclosing variable: checked if it is a function bound only once
                decl = sigs.get(name)
                if decl is None:
                    return
                break
        if decl is not None:
            if isinstance(decl, A.ModuleDef) and in_fn:
                self.error(f"module instances are created only in an assignment at top level or in a module "
                           f"body, as `name = {name}(...)`", n.span)
            try:
                shown = f"fn at line {decl.span.line}" if decl.name == "fn" else name  # as run time names it
                bind_args(shown, decl.params, [None] * len(n.args), kwargs, n.span, decl.defaults)
            except DplError as e:
                self.errors.append(e)
        elif name in BUILTINS and name not in self.user:
            try:
                BUILTINS[name].sig.bind(*[None] * len(n.args), **kwargs)
            except TypeError as e:
                b = BUILTINS[name]
                self.error(f"wrong arguments to `{name}`: {e}; usage: {b.usage()}", n.span)
