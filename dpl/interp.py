"""The interpreter: walks the AST define-by-run, executes hard control flow, records ops on traced values."""
from __future__ import annotations

import itertools
import sys
import traceback
from pathlib import Path

import numpy as np

from . import ast as A
from . import backend as B
from . import graph, limits, ops
from .errors import SOURCES, DplError, Span, suggest
from .graph import Box, Trace, raw
from .parser import DECLARATION_WORD, RESERVED, parse
from .resources import data_dir
from .values import List


# ---- runtime values --------------------------------------------------------------

class Function:
    """A user `fn`, bound to a module instance when it is one of its functions; a nested or anonymous one
    closes over the frame it was declared in (`env`), whose variables it reads as they are when called."""

    __slots__ = ("decl", "instance", "env", "globals")

    def __init__(self, decl: A.FnDef, instance=None, env=None, globals_=None):
        self.decl, self.instance, self.env = decl, instance, env
        # the top-level names of the file it is declared in (None: the main program's)
        self.globals = globals_ if globals_ is not None or instance is None else instance.globals

    @property
    def name(self):
        name = self.decl.name
        if name == "fn":  # anonymous: `fn` is reserved, so no declared function has this name
            name = f"fn at line {self.decl.span.line}" if self.decl.span else "fn"
        return f"{self.instance.name}.{name}" if self.instance else name

    def describe(self):
        return f"<fn {self.name}>"


class ModuleValue:
    __slots__ = ("decl", "globals")

    def __init__(self, decl, globals_=None):
        self.decl, self.globals = decl, globals_

    def describe(self):
        return f"<module {self.decl.name}>"


class Instance:
    """A module instance: its arguments, constants, parameters (`name.W`) and functions."""

    def __init__(self, name: str, decl: A.ModuleDef, globals_=None):
        self.name, self.decl, self.globals = name, decl, globals_
        self.values: dict = {}   # module arguments and constants
        self.params: dict[str, str] = {}  # local name -> full parameter name
        self.fns: dict[str, A.FnDef] = {}

    def describe(self):
        return f"<{self.decl.name} instance {self.name}>"


class Namespace:
    """`use nn as nn`, `import "x.dpl" as x`: a file's top-level names, read as `nn.Dense`."""

    __slots__ = ("name", "globals")

    def __init__(self, name, globals_):
        self.name, self.globals = name, globals_

    def describe(self):
        return f"<names of {self.name}>"


class ParamRef:
    """A top-level binding that reads a parameter (boxed when a trace is recording parameters)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class Frame:
    """One function call's locals; `parent` is the frame of the function it is nested in, `globals` the
    top-level names of the file its code is written in (None: the main program's)."""

    __slots__ = ("locals", "instance", "name", "top", "parent", "globals", "seq")
    _seq = itertools.count()

    def __init__(self, locals_, instance=None, name="<top level>", top=False, parent=None, globals_=None):
        self.locals, self.instance, self.name, self.top, self.parent = locals_, instance, name, top, parent
        self.globals = globals_
        self.seq = next(Frame._seq)  # replay tells the frames a recording made from those it only reads

    def branch(self, locals_):
        """A frame for a soft branch or soft-loop step: other locals, the same surroundings."""
        return Frame(locals_, self.instance, self.name, False, self.parent, self.globals)


class _Return:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


_ARITH = {"+": ops.add, "-": ops.sub, "*": ops.mul, "/": ops.div, "//": ops.floordiv, "%": ops.mod, "^": ops.power,
          "@": ops.matmul}
_COMPARE = {"<": ops.lt, "<=": ops.le, ">": ops.gt, ">=": ops.ge, "==": ops.eq, "!=": ops.ne}
MAX_INSTANCE_DEPTH = 100  # dots in an instance's name: a module that owns itself stops here
NUMERIC_ERRORS = (ValueError, TypeError, IndexError, ZeroDivisionError, FloatingPointError, OverflowError, MemoryError)


def kind(v) -> str:
    """'f', 'c', 'i', 'b' (or 'u') for tensors; '' for anything else."""
    r = raw(v)
    dt = getattr(r, "dtype", None)
    if dt is None and isinstance(r, (bool, int, float)):  # Python defaults of builtins
        dt = np.asarray(r).dtype
    return dt.kind if dt is not None else ""


def is_tensor(v) -> bool:
    return kind(v) != ""


def to_float(v):
    """Integers and booleans to the run's float dtype; floats and complex numbers unchanged."""
    return v if kind(v) in ("f", "c") else ops.astype(v, dtype=B.float_dtype)


def is_function(v) -> bool:
    """What a builtin that takes a function (odeint, sdeint, attention scores) can call."""
    return isinstance(v, (Function, Instance)) or hasattr(v, "dpl_call")


def is_float_scalar(v) -> bool:
    """What grad and train differentiate: a 0-d real float."""
    return is_tensor(v) and np.ndim(raw(v)) == 0 and kind(v) == "f"


def real_loss_hint(out) -> str:
    """What to say where a 0-d float was wanted and a complex value came: a loss must be real."""
    return "; a complex value has no gradient to descend: take real(...) or abs(...) of it" if kind(out) == "c" else ""


def shape_str(v) -> str:
    return str(list(np.shape(raw(v))))


def describe_type(v) -> str:
    if is_tensor(v):
        r = raw(v)
        what = {"f": "float", "c": "complex", "i": "integer", "u": "integer", "b": "boolean"}.get(r.dtype.kind,
                                                                                                 str(r.dtype))
        article = "an" if what[0] in "aeiou" else "a"
        return f"{article} {what} scalar" if r.ndim == 0 else f"{article} {what} tensor of shape {list(r.shape)}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)}"
    if isinstance(v, List):
        shapes = sorted({np.shape(raw(x)) for x in v if is_tensor(x)})
        if len(v) and len(shapes) > 1 and all(is_tensor(x) for x in v):
            return (f"a list of {len(v)} (brackets around tensors of different shapes "
                    f"{' and '.join(str(list(s)) for s in shapes[:3])} make a list, not a tensor)")
        return v.describe()
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "nothing (a function that did not return a value)"
    return getattr(v, "describe", lambda: type(v).__name__)()


def assigned_names(stmts) -> list[str]:
    """Names a block assigns (including nested blocks), in order of first assignment."""
    out: dict[str, None] = {}

    def walk(body):
        for s in body:
            if isinstance(s, A.Assign):
                out[s.target] = None
            elif isinstance(s, A.Unpack):
                out.update(dict.fromkeys(s.targets))
            elif isinstance(s, A.For):
                out[s.var] = None
                walk(s.body)
            elif isinstance(s, (A.If, A.SoftIf)):
                walk(s.body)
                walk(s.orelse)
            elif isinstance(s, A.While):
                walk(s.body)
            elif isinstance(s, A.SoftWhile):
                walk(s.body)
                if s.steps:
                    out[s.steps] = None
    walk(stmts)
    return list(out)


class Interpreter:
    """Runs DPL programs. mode "run" skips `train` blocks; "train" hands them to `trainer`."""

    def __init__(self, mode="run", seed=0, stdout=None, loaded_params=None, trainer=None, max_depth=400,
                 max_steps=None, overrides=None):
        from .builtins import BUILTINS, CONSTANTS
        self.builtins = dict(BUILTINS, **{k: B.float_dtype.type(v) for k, v in CONSTANTS.items()})
        self.mode = mode
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stdout = stdout or sys.stdout
        self.globals: dict = {}
        self.params: dict[str, object] = {}
        from .paramfile import LoadedParams
        self.loaded_params = LoadedParams.of(loaded_params)
        self.param_trace: Trace | None = None
        self.param_boxes: dict[str, Box] = {}
        self.trainer = trainer
        self.loaded_files: set[Path] = set()
        self.data_files: dict[Path, str] = {}  # files read by load(), with the sha256 of what was read
        self.loading: list[Path] = []
        self.depth, self.max_depth = 0, max_depth
        self.steps, self.max_steps = 0, limits.max_steps if max_steps is None else max_steps  # iterations, calls
        self.top = Frame(self.globals, top=True)
        self._const: dict[int, tuple] = {}  # literal values by AST node
        self._nested: dict[int, tuple] = {}  # the `fn` declarations directly in each function body
        self.owner: tuple | None = None  # (name, frame, value) of the assignment whose module calls make instances
        self.instance_counts: dict[str, int] = {}
        self.overrides = parse_overrides(overrides or [])  # `--set NAME=VALUE`: name -> literal AST
        self.main_file: str | None = None
        self._own: dict[str, set] = {}  # the names each file declares or assigns at top level
        self.files: dict[Path, dict] = {}  # the top-level names of each file loaded by `use` or `import`
        self.brought: dict[int, dict] = {}  # id(importer's names) -> {name: the file that brought it}
        self.attention_log: list[tuple[Span, object]] = []  # (call site, weights) of recent attend/attention
        # names read while a replayable recording runs from scopes older than it (dpl.record): (dict, name, value)
        self.reads: dict | None = None
        self.reads_before = 0  # frames numbered from here on belong to the recording
        self.replay = True  # --no-replay turns it off
        self.plans: dict = {}  # replay plans by function and argument signature (dpl.record)
        self.training = False  # true while a train block computes its loss: the builtin `training()`

    def record_attention(self, span, alpha) -> None:
        """Keep the weights of each attend/attention call with its source line (the last 256 calls)."""
        self.attention_log.append((span, raw(alpha)))
        del self.attention_log[:-256]

    # ---- files ----------------------------------------------------------------------

    def run_file(self, path, text=None) -> None:
        path = Path(path)
        if text is None:
            text = read_source(path)
        self.run_program(parse(text, str(path)), path)

    def run_program(self, program: A.Program, path: Path | None = None, names: dict | None = None) -> None:
        """Run a file's statements; an imported file (`names` given) in its own top-level scope."""
        if self.main_file is None:
            self.main_file = program.file
            check_overrides(self.overrides, program)
        key = path.resolve() if path else None
        if key:
            self.loaded_files.add(key)
            self.loading.append(key)
        top = self.top if names is None else Frame(names, top=True, globals_=names)
        body = program.body
        self._own[program.file] = set(assigned_names([s for s in body if not isinstance(s, A.Train)])) | \
            {s.name for s in body if isinstance(s, (A.FnDef, A.ModuleDef, A.Param))}
        try:
            with limits.deep_stack():
                self.hoist(program.body, names)
                for stmt in program.body:  # the parser has rejected `return` outside functions
                    try:
                        self.exec_stmt(stmt, top)
                    except (RecursionError, MemoryError) as e:  # no DPL call around it to report it
                        raise too_deep_or_big(e, stmt.span) from None
        finally:
            if key:
                self.loading.pop()

    def hoist(self, body, names=None) -> None:
        """`fn` and `module` declarations are visible throughout their file."""
        target = self.globals if names is None else names
        for stmt in body:
            if isinstance(stmt, A.FnDef):
                target[stmt.name] = Function(stmt, globals_=names)
            elif isinstance(stmt, A.ModuleDef):
                target[stmt.name] = ModuleValue(stmt, names)

    def load_dpl(self, path: Path, span: Span) -> dict:
        """The top-level names of the file at `path`, running it the first time it is loaded."""
        key = path.resolve()
        if key in self.loading:
            chain = " -> ".join(p.name for p in self.loading[self.loading.index(key):] + [key])
            raise DplError(f"import cycle: {chain}", span)
        if key in self.files:
            return self.files[key]
        if not path.is_file():
            raise DplError(f"cannot import `{path}`: no such file", span)
        names = self.files[key] = {}
        self.run_program(parse(read_source(path), str(path)), path, names)
        return names

    def bring_in(self, names: dict, what: str, frame, span) -> None:
        """`use`/`import` without `as`: the file's public names (not starting with `_`) join the importer's
        top level, except the names the importer declares or assigns itself; the same name from two files
        is an error."""
        target = frame.locals
        own = self._own.get(span.file, ())
        brought = self.brought.setdefault(id(target), {})
        for name, v in names.items():
            if name.startswith("_") or name in own:
                continue
            if name in brought and brought[name][0] != what and target.get(name) is not v:
                raise DplError(f"`{name}` is defined both by {brought[name][0]} and by {what}; load one of them "
                               f"with a name, as `use nn as nn` or `import \"lib.dpl\" as lib`, and write `nn.{name}`",
                               span)
            brought.setdefault(name, (what, v))
            target[name] = v



    # ---- parameters -----------------------------------------------------------------

    def read_param(self, name: str):
        t = self.param_trace
        if t is None:
            return self.params[name]
        box = self.param_boxes.get(name)
        if box is None:
            saved = graph.current_span
            box = self.param_boxes[name] = t.input(self.params[name], name)
            graph.set_span(saved)
        return box

    def tracing_params(self, trace: Trace | None):
        """Context: parameters read while it is active become inputs of `trace`."""
        interp = self

        class _Ctx:
            def __enter__(self):
                self.saved = (interp.param_trace, interp.param_boxes)
                interp.param_trace, interp.param_boxes = trace, {}
                return interp.param_boxes

            def __exit__(self, *exc):
                interp.param_trace, interp.param_boxes = self.saved
        return _Ctx()

    def create_param(self, stmt: A.Param, frame: Frame, full_name: str):
        from .builtins import initialize
        shp = self.eval_shape(stmt.shape, frame)
        try:
            limits.check_elements(shp, f"parameter `{full_name}`")
        except DplError as e:
            raise e.at(stmt.shape.span)
        if isinstance(stmt.init, A.Init):
            args = [raw(self.eval(a, frame)) for a in stmt.init.args]
            for a, node in zip(args, stmt.init.args):
                if kind(a) == "c":
                    raise DplError(f"parameter `{full_name}` must be real, but initializer `{stmt.init.name}` got "
                                   f"{describe_type(a)}", node.span)
            value = initialize(stmt.init.name, args, shp, self.rng, stmt.init.span)
        else:
            value = raw(self.eval(stmt.init, frame))
            if not is_tensor(value):
                raise DplError(f"parameter `{full_name}` needs a tensor value, got {describe_type(value)}",
                               stmt.init.span)
            if kind(value) == "c":
                raise DplError(f"parameter `{full_name}` must be real, got {describe_type(value)}; parameters "
                               f"stay real: declare the real and imaginary parts as two parameters and build "
                               f"the complex value from them (a + 1j * b)", stmt.init.span)
            if np.shape(value) != shp:
                try:
                    value = B.xp.broadcast_to(value, shp)
                except ValueError:
                    raise DplError(f"parameter `{full_name}` is declared {list(shp)} but its value has shape "
                                   f"{list(np.shape(value))}", stmt.init.span) from None
        value = B.xp.array(value, dtype=B.float_dtype)
        loaded = self.loaded_params.take(full_name, shp, stmt.span)  # a shape that differs is an error here
        if loaded is not None:
            value = B.xp.asarray(loaded, dtype=B.float_dtype)
        self.params[full_name] = value

    def eval_shape(self, node, frame) -> tuple:
        v = raw(self.eval(node, frame))
        if type(v) is List and not v.n:  # `[]`: the empty list is the shape of a scalar
            return ()
        r = np.asarray(B.to_host(v)) if is_tensor(v) else None
        if r is None or r.ndim > 1 or (r.size and r.dtype.kind not in "iu"):
            raise DplError(f"a shape is a list of integers like [2, 3], got {describe_type(v)}", node.span)
        if (r < 0).any():
            raise DplError(f"a shape cannot have negative sizes: {r.tolist()}", node.span)
        return tuple(int(d) for d in r.reshape(-1))

    # ---- statements -----------------------------------------------------------------

    def exec_block(self, body, frame):
        for stmt in body:
            r = self.exec_stmt(stmt, frame)
            if r is not None:
                return r
        return None

    def exec_stmt(self, stmt, frame):
        graph.set_span(stmt.span)
        return self._exec[type(stmt)](self, stmt, frame)

    def _assign(self, s: A.Assign, frame):
        if frame.top:
            value = s.value
            if s.target in self.overrides and s.span.file == self.main_file:
                value = self.overrides.pop(s.target)  # the first top-level assignment binds the --set value
            frame.locals[s.target] = self.eval_owning(s.target, value, frame)
        else:
            frame.locals[s.target] = self.eval(s.value, frame)

    def eval_owning(self, name: str, node, frame):
        """The value of `name = node` at top level or in a module body, where calling a module creates an
        instance: `name` itself for `name = M(...)`, `name.0`, `name.1`, ... for calls inside the expression."""
        saved, self.owner = self.owner, (name, frame, node)
        try:
            return self.eval(node, frame)
        finally:
            self.owner = saved

    def _unpack(self, s: A.Unpack, frame):
        v = self.eval(s.value, frame)
        if not isinstance(v, tuple) or len(v) != len(s.targets):
            raise DplError(f"cannot unpack {describe_type(v)} into {len(s.targets)} names", s.value.span)
        for name, x in zip(s.targets, v):
            frame.locals[name] = x

    def _return(self, s: A.Return, frame):
        return _Return(None if s.value is None else self.eval(s.value, frame))

    def _expr_stmt(self, s: A.ExprStmt, frame):
        self.eval(s.expr, frame)

    def condition(self, node, frame, what: str) -> bool:
        """A hard decision: a scalar boolean; kept as a guard of the trace it came from."""
        v = self.eval(node, frame)
        r = raw(v)
        if kind(v) != "b" or np.ndim(r) != 0:
            soft = "soft while" if what == "while" else "soft if"
            hint = (f"; a hard `{what}` needs one true/false value: reduce it (any(...), all(...)) "
                    f"or use `{soft}` to branch differentiably on a tensor") if is_tensor(v) else ""
            raise DplError(f"`{what}` condition must be a scalar boolean, got {describe_type(v)}{hint}",
                           start_span(node))
        return graph.guard(v, bool(r))

    def _if(self, s: A.If, frame):
        return self.exec_block(s.body if self.condition(s.cond, frame, "if") else s.orelse, frame)

    def _for(self, s: A.For, frame):
        it = self.eval(s.iter, frame)
        if isinstance(it, (List, tuple, str)):  # a string: its characters (a Pauli string "XZ", say)
            items = iter(it)
        elif not is_tensor(it) or np.ndim(raw(it)) == 0:
            raise DplError(f"`for` iterates over range(...), a list, a tuple, a string or the first axis of a tensor, "
                           f"got {describe_type(it)}", s.iter.span)
        else:
            r = raw(it)
            items = iter(r) if type(it) is not Box else [ops.index(it, key=(i,)) for i in range(len(r))]
        outer = graph.current_scope
        try:
            for k, x in enumerate(items):
                self.begin_iteration("for", s.span, k, f"for {s.var}: iteration {k}", outer)
                frame.locals[s.var] = x
                out = self.exec_block(s.body, frame)
                if out is not None:
                    return out
        finally:
            graph.leave_scope(outer)

    def begin_iteration(self, loop, span, k, label, outer):
        """Count one hard-loop iteration against --max-steps and open its scope beside the previous
        iteration's, inside `outer` (which the loop restores when it ends)."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise limits.loop_limit_error(loop, span, k + 1, self.max_steps)
        graph.leave_scope(outer)
        graph.enter_scope("iteration", label, span)

    def _while(self, s: A.While, frame):
        outer, k = graph.current_scope, 0
        try:
            while self.condition(s.cond, frame, "while"):
                self.begin_iteration("while", s.span, k, f"while: iteration {k}", outer)
                k += 1
                out = self.exec_block(s.body, frame)
                if out is not None:
                    return out
        finally:
            graph.leave_scope(outer)

    def _soft_if(self, s: A.SoftIf, frame):
        from .builtins import blend
        p = self.eval(s.p, frame)
        before = frame.locals
        envs = []
        for body in (s.body, s.orelse):
            branch = frame.branch(dict(before))
            self.exec_block(body, branch)  # the parser has rejected `return` inside soft control flow
            envs.append(branch.locals)
        for name in dict.fromkeys(assigned_names(s.body) + assigned_names(s.orelse)):
            missing = object()
            prior = self.lookup_optional(name, frame)  # a parameter, an instance's or the top level's value
            prior = missing if prior is None or name in self.builtins and prior is self.builtins[name] else prior
            a, b = envs[0].get(name, prior), envs[1].get(name, prior)
            a, b = (self.read_param(v.name) if type(v) is ParamRef else v for v in (a, b))
            if a is missing and b is missing:
                continue  # bound by neither branch: local to a `soft while` body inside it
            if a is missing or b is missing:
                raise DplError(f"`{name}` is assigned in only one branch of `soft if` and has no value before it; "
                               f"give it a value before the `soft if`", s.span)
            before[name] = blend(p, a, b, s.span)

    def _soft_while(self, s: A.SoftWhile, frame):
        from .builtins import soft_while_weights
        n = raw(self.eval(s.max, frame))
        if kind(n) not in "iu" or np.ndim(n) != 0 or kind(n) == "" or int(n) < 1:
            raise DplError(f"`max` of `soft while` must be an integer ≥ 1, got {describe_type(n)}", s.max.span)
        self.add_steps(int(n), f"the `soft while` loop at {s.span} would run {int(n)} iterations", s.span)
        state = [v for v in assigned_names(s.body) if v in frame.locals]
        cur = dict(frame.locals)
        for v in state:
            if type(cur[v]) is ParamRef:
                cur[v] = self.read_param(cur[v].name)
        states, cs = [{v: cur[v] for v in state}], []
        outer = graph.current_scope
        for k in range(int(n)):
            body = frame.branch(dict(cur))
            graph.enter_scope("step", f"soft while step {k + 1}", s.span)
            try:
                cs.append(self.eval(s.p, body))
                self.exec_block(s.body, body)
            finally:
                graph.leave_scope(outer)
            for v in state:
                cur[v] = body.locals[v]
            states.append({v: cur[v] for v in state})
        weights = soft_while_weights(cs, s.p.span)
        from .builtins import expectation
        for v in state:
            frame.locals[v] = expectation(weights, [st[v] for st in states], s.span)
        if s.steps:
            frame.locals[s.steps] = expectation(weights, [B.float_dtype.type(k) for k in range(len(states))], s.span)

    def add_steps(self, n: int, what: str, span) -> None:
        """Count `n` loop iterations known in advance (`what` would run them) against max_steps."""
        if self.steps + n > self.max_steps:
            done = f" after the {self.steps} already run" if self.steps else ""
            raise DplError(f"{what}{done}, more than the limit of {self.max_steps} steps (loop iterations "
                           f"and function calls); raise --max-steps if that is intended", span)
        self.steps += n

    def _declaration_only_at_top(self, s, frame):
        if not frame.top:
            raise DplError(f"`{DECLARATION_WORD[type(s)]}` declarations are allowed only at top level", s.span)

    def _fn_def(self, s: A.FnDef, frame):
        frame.locals[s.name] = Function(s, frame.instance, None if frame.top else frame, frame.globals)

    def _module_def(self, s: A.ModuleDef, frame):
        self._declaration_only_at_top(s, frame)
        frame.locals[s.name] = ModuleValue(s, frame.globals)

    def _param(self, s: A.Param, frame):
        self._declaration_only_at_top(s, frame)
        self.create_param(s, frame, s.name)
        frame.locals[s.name] = ParamRef(s.name)

    def _use(self, s: A.Use, frame):
        self._declaration_only_at_top(s, frame)
        self.bring(self.load_dpl(stdlib_path(s.name, s.span), s.span), s.name, s.alias, frame, s.span)

    def _import(self, s: A.Import, frame):
        self._declaration_only_at_top(s, frame)
        path = Path(s.path)
        if path.suffix != ".dpl":
            raise DplError(f"`import` loads DPL programs (.dpl files), not `{s.path}`", s.span)
        if not path.is_absolute():
            path = Path(s.span.file).parent / path
        self.bring(self.load_dpl(path, s.span), f'"{s.path}"', s.alias, frame, s.span)

    def bring(self, names, what, alias, frame, span):
        if alias is None:
            self.bring_in(names, what, frame, span)
        else:
            frame.locals[alias] = Namespace(what, names)

    def _train(self, s: A.Train, frame):
        self._declaration_only_at_top(s, frame)
        if self.mode == "train" and self.trainer is not None:
            self.trainer(self, s, frame)

    _exec = {A.Assign: _assign, A.Unpack: _unpack, A.Return: _return, A.ExprStmt: _expr_stmt, A.If: _if,
             A.For: _for, A.While: _while, A.SoftIf: _soft_if, A.SoftWhile: _soft_while, A.FnDef: _fn_def,
             A.ModuleDef: _module_def, A.Param: _param, A.Use: _use, A.Import: _import, A.Train: _train}

    # ---- modules ---------------------------------------------------------------------

    def instantiate(self, name: str, mod: ModuleValue, args, kwargs, span) -> Instance:
        """Run a module body: parameters `name.W`, constants, and sub-instances `name.enc` of modules
        called in its assignments."""
        decl = mod.decl
        inst = Instance(name, decl, mod.globals)
        inst.values.update(bind_args(decl.name, decl.params, args, kwargs, span, decl.defaults))
        scope = Frame(inst.values, inst, f"{decl.name}(...)", globals_=mod.globals)
        for p, d in decl.defaults:
            if p not in inst.values:
                inst.values[p] = self.eval(d, scope)
        for stmt in decl.body:
            if isinstance(stmt, A.FnDef):
                inst.fns[stmt.name] = stmt
        for stmt in decl.body:
            graph.set_span(stmt.span)
            if isinstance(stmt, A.Param):
                full = f"{name}.{stmt.name}"
                self.create_param(stmt, scope, full)
                inst.params[stmt.name] = full
            elif isinstance(stmt, A.Assign):
                inst.values[stmt.target] = self.eval_owning(f"{name}.{stmt.target}", stmt.value, scope)
        return inst

    def new_instance(self, mod: ModuleValue, n: A.Call, frame, args, kwargs) -> Instance:
        """A module called inside a top-level or module-body assignment creates an instance; elsewhere it is
        an error (an instance made at every call of a function would have no stable parameter names)."""
        owner = self.owner
        if owner is None or owner[1] is not frame:
            raise DplError(f"module instances are created only in an assignment at top level or in a module "
                           f"body, as `name = {mod.decl.name}(...)`", n.span)
        name = owner[0]
        if name.count(".") >= MAX_INSTANCE_DEPTH:
            raise DplError(f"module instances nested more than {MAX_INSTANCE_DEPTH} deep, as in `{name[:60]}...`: "
                           f"does `{mod.decl.name}` create an instance of itself?", n.span)
        if owner[2] is not n:  # inside a larger expression: numbered
            k = self.instance_counts.get(name, 0)
            self.instance_counts[name] = k + 1
            name = f"{name}.{k}"
        try:
            return self.instantiate(name, mod, args, kwargs, n.span)
        except DplError as e:
            if e.span != n.span:  # an error inside the module's body also names the line that instantiated it
                e.called_from(n.span, mod.decl.name)
            raise

    # ---- names -----------------------------------------------------------------------

    def lookup_optional(self, name, frame):
        if name in frame.locals:
            v = frame.locals[name]
            if type(v) is ParamRef:
                return self.read_param(v.name)
            if self.reads is not None and frame.seq < self.reads_before:
                self.reads.setdefault((id(frame.locals), name), (frame.locals, name, v))
            return v
        outer = frame.parent
        while outer is not None:  # the functions this one is nested in, innermost first
            if name in outer.locals:
                v = outer.locals[name]
                if type(v) is ParamRef:
                    return self.read_param(v.name)
                if self.reads is not None and outer.seq < self.reads_before:  # a closure over a frame from before
                    self.reads.setdefault((id(outer.locals), name), (outer.locals, name, v))
                return v
            outer = outer.parent
        inst = frame.instance
        if inst is not None and (name in inst.params or name in inst.fns or name in inst.values):
            return self.attribute(inst, name, None)
        names = self.globals if frame.globals is None else frame.globals
        if name in names:
            v = names[name]
            if type(v) is ParamRef:
                return self.read_param(v.name)
            if self.reads is not None:  # a replayable recording: replay checks the name still holds v
                self.reads.setdefault((id(names), name), (names, name, v))
            return v
        v = self.builtins.get(name)
        if v is None and "." in name:  # `model.loss` (of `train model.loss`, `--fn model.loss`)
            head, *path = name.split(".")
            v = self.lookup_optional(head, frame)
            for attr in path:
                if isinstance(v, Namespace) and attr in v.globals:
                    v = self.member(v, attr, None)
                    continue
                if not isinstance(v, Instance) or attr not in set(v.params) | set(v.fns) | set(v.values):
                    return None
                v = self.attribute(v, attr, None)
        return v

    def visible_names(self, frame):
        names = set(frame.locals) | set(self.globals if frame.globals is None else frame.globals) | set(self.builtins)
        outer = frame.parent
        while outer is not None:
            names |= set(outer.locals)
            outer = outer.parent
        if frame.instance is not None:
            names |= set(frame.instance.params) | set(frame.instance.fns) | set(frame.instance.values)
        return names

    # ---- expressions -----------------------------------------------------------------

    def eval(self, node, frame):
        return self._eval[type(node)](self, node, frame)

    def _num(self, n: A.Num, frame):
        hit = self._const.get(id(n))
        if hit is not None and hit[0] is n:  # ids are reused once a parsed file is freed: check identity
            return hit[1]
        v = np.int64(n.value) if isinstance(n.value, int) else \
            B.complex_dtype.type(n.value) if isinstance(n.value, complex) else B.float_dtype.type(n.value)
        self._const[id(n)] = (n, v)
        return v

    def _str(self, n, frame):
        return n.value

    def _bool(self, n, frame):
        return np.bool_(n.value)

    def _name(self, n: A.Name, frame):
        v = self.lookup_optional(n.id, frame)
        if v is None:
            names = self.globals if frame.globals is None else frame.globals
            if n.id in frame.locals or n.id in names:  # bound to the result of a call that returned nothing
                raise DplError(f"`{n.id}` has no value: it was assigned the result of a function that returned "
                               f"nothing", n.span)
            raise DplError(f"unknown name `{n.id}`{suggest(n.id, self.visible_names(frame))}", n.span)
        return v

    def _binop(self, n: A.BinOp, frame):
        op = n.op
        a = self.eval(n.left, frame)
        if op in ("and", "or"):
            ra = raw(a)
            if kind(a) == "b" and np.ndim(ra) == 0 and type(a) is not Box and bool(ra) == (op == "or"):
                return a  # short-circuit on a plain scalar, so `i < n and x[i] > 0` is safe
            b = self.eval(n.right, frame)
            for v, side in ((a, n.left), (b, n.right)):
                if kind(v) != "b":
                    raise DplError(f"`{op}` needs booleans, got {describe_type(v)}", side.span)
            try:
                limits.check_broadcast((np.shape(raw(a)), np.shape(raw(b))), f"`{op}`")
            except DplError as e:
                raise e.at(n.span)
            return self.apply(ops.logical_and if op == "and" else ops.logical_or, (a, b), n, op)
        b = self.eval(n.right, frame)
        graph.set_span(n.span)
        return self.binary(op, a, b, n)

    def binary(self, op, a, b, n):
        if op == "@":
            from .primitives import Sparse, sparse_matmul  # here, not per operator: it is on the hot path
            if isinstance(a, Sparse):
                try:
                    return sparse_matmul(a, b)
                except DplError as e:
                    raise e.at(n.span)
        if op in ("==", "!=") and (isinstance(a, str) or isinstance(b, str)):  # option names: `init == "torch"`
            return np.bool_((isinstance(a, str) and isinstance(b, str) and a == b) == (op == "=="))
        for v, side in ((a, n.left), (b, n.right)):
            if not is_tensor(v):
                raise DplError(f"`{op}` needs numbers or tensors, got {describe_type(v)}", side.span)
        ra, rb = raw(a), raw(b)
        if op != "@" and getattr(ra, "ndim", 0) and getattr(rb, "ndim", 0) and ra.shape != rb.shape:
            try:  # broadcasting may grow the result: refuse one too large to allocate
                limits.check_broadcast((ra.shape, rb.shape), f"`{op}`")
            except DplError as e:
                raise e.at(n.span)
        ka, kb = kind(a), kind(b)
        if "c" in (ka, kb) and op in ("<", "<=", ">", ">=", "//", "%"):
            side = n.left if ka == "c" else n.right
            raise DplError(f"`{op}` is not defined for complex numbers, got {describe_type(a if ka == 'c' else b)}; "
                           f"compare or divide real(z), imag(z) or abs(z)", side.span)
        if op in _COMPARE:
            return self.apply(_COMPARE[op], (a, b), n, op)
        if ka == "b" or kb == "b":
            a, b = (ops.astype(a, dtype=np.int64) if ka == "b" else a), (ops.astype(b, dtype=np.int64) if kb == "b" else b)
            ka, kb = kind(a), kind(b)
        if op == "/" or (ka in "fc") != (kb in "fc"):  # `in "fc"`: a complex number counts as a float here
            a, b = to_float(a), to_float(b)
        elif op == "^" and ka not in "fc" and (raw(b) < 0).any():
            raise DplError("an integer raised to a negative integer power; write the base as a float (2.0 ^ -1)",
                           n.right.span)
        if op == "@":
            check_matmul(a, b, n.span)
        return self.apply(_ARITH[op], (a, b), n, op)

    def apply(self, op, args, n, symbol, **attrs):
        """Apply an op; numpy's complaints become DplErrors at this expression."""
        try:
            return op(*args, **attrs)
        except NUMERIC_ERRORS as e:
            shapes = " and ".join(shape_str(a) for a in args if is_tensor(a))
            if len(args) == 2 and "broadcast" in str(e):
                raise DplError(f"shape mismatch in `{symbol}`: shapes {shapes} do not broadcast", n.span) from None
            raise DplError(f"`{symbol}` failed on shapes {shapes}: {e}", n.span) from None

    def _unop(self, n: A.UnOp, frame):
        v = self.eval(n.operand, frame)
        graph.set_span(n.span)
        if n.op == "not":
            if kind(v) != "b":
                raise DplError(f"`not` needs a boolean, got {describe_type(v)}", n.operand.span)
            return ops.logical_not(v)
        if not is_tensor(v):
            raise DplError(f"`-` needs a number or tensor, got {describe_type(v)}", n.operand.span)
        return ops.neg(ops.astype(v, dtype=np.int64) if kind(v) == "b" else v)

    def _call(self, n: A.Call, frame):
        f = self.eval(n.func, frame)
        takes_list = getattr(f, "takes_list", False)
        args = [self.eval_list(a, frame) if takes_list and isinstance(a, A.ListLit) else self.eval(a, frame)
                for a in n.args]
        kwargs = {k: self.eval(v, frame) for k, v in n.kwargs}
        graph.set_span(n.span)
        if isinstance(f, ModuleValue):
            return self.new_instance(f, n, frame, args, kwargs)
        return self.call(f, args, kwargs, n.span)

    def call(self, f, args, kwargs, span):
        from .builtins import Builtin
        if isinstance(f, Builtin):
            if not f.takes_list and (List in map(type, args) or List in map(type, kwargs.values())):
                args = [_empty_as_tensor(a) for a in args]  # `[]` where a builtin wants a shape or axes
                kwargs = {k: _empty_as_tensor(v) for k, v in kwargs.items()}
            if f.context:  # odeint, attend, vjp, ...: what they record sits in a scope of its own (one box in tools)
                return self._in_scope(f.name, span, f, args, kwargs)
            return f(self, args, kwargs, span)
        if isinstance(f, Function):
            return self.call_function(f, args, kwargs, span)
        if isinstance(f, Instance):
            if "call" not in f.fns:
                raise DplError(f"module `{f.decl.name}` has no `call` function, so `{f.name}(...)` is not defined",
                               span)
            return self.call_function(Function(f.fns["call"], f), args, kwargs, span)
        if isinstance(f, ModuleValue):
            raise DplError(f"module instances are created only in an assignment at top level or in a module "
                           f"body, as `name = {f.decl.name}(...)`", span)
        dpl_call = getattr(f, "dpl_call", None)
        if dpl_call is not None:  # grad(f), jacobian(f), vmap(f), ...: in a scope named as the value prints
            name = describe_type(f)
            return self._in_scope(name[1:-1] if name.startswith("<") else name, span, dpl_call, args, kwargs)
        raise DplError(f"{describe_type(f)} is not a function", span)

    def _in_scope(self, name, span, f, args, kwargs):
        """`f(self, args, kwargs, span)` with the nodes it records in a scope `name`, which `dpl graph` folds."""
        outer = graph.enter_scope("builtin", name, span)
        try:
            return f(self, args, kwargs, span)
        finally:
            graph.leave_scope(outer)

    def call_function(self, f: Function, args, kwargs, span):
        self.steps += 1  # a call is a step: recursion without loops is bounded by --max-steps too
        if self.steps > self.max_steps:
            raise limits.call_limit_error(f.name, span, self.max_steps)
        decl = f.decl
        frame = Frame(bind_args(f.name, decl.params, args, kwargs, span, decl.defaults), f.instance, f.name,
                      parent=f.env, globals_=f.globals)
        self.depth += 1
        outer = graph.enter_scope("call", f.name, span)
        try:
            if self.depth > self.max_depth:
                raise DplError(f"recursion deeper than {self.max_depth} calls in `{f.name}` "
                               f"(a recursive function without a base case?)", span)
            self.enter_function(decl, frame)
            r = self.exec_block(decl.body, frame)
        except DplError as e:
            e.called_from(span, f.name)
            raise
        except (RecursionError, MemoryError) as e:  # converted in the innermost call with room left to do it
            err = too_deep_or_big(e, graph.current_span or span)
            err.called_from(span, f.name)
            raise err from None
        finally:
            self.depth -= 1
            graph.leave_scope(outer)
        return r.value if r is not None else None

    def enter_function(self, decl: A.FnDef, frame) -> None:
        """Defaults left out of the call, evaluated in order in the new frame; `fn` declarations directly in
        the body are bound before it runs (hoisted, as at top level)."""
        if decl.defaults and len(frame.locals) < len(decl.params):
            for p, d in decl.defaults:
                if p not in frame.locals:
                    frame.locals[p] = self.eval(d, frame)
        hit = self._nested.get(id(decl))
        if hit is None or hit[0] is not decl:
            hit = self._nested[id(decl)] = (decl, tuple(s for s in decl.body if type(s) is A.FnDef))
        for s in hit[1]:
            frame.locals[s.name] = Function(s, frame.instance, frame, frame.globals)

    def _index(self, n: A.Index, frame):
        v = self.eval(n.value, frame)
        key = tuple(self.index_item(item, frame) for item in n.items)
        graph.set_span(n.span)
        if isinstance(v, (tuple, List)):
            what = "tuple" if isinstance(v, tuple) else "list"
            if what == "list" and len(key) == 1 and isinstance(key[0], slice):
                return v[key[0]]
            if len(key) != 1 or not isinstance(key[0], int):
                raise DplError(f"a {what} is indexed by one integer{' or a slice' * (what == 'list')}", n.span)
            try:
                return v[key[0]]
            except IndexError:
                raise DplError(f"index {key[0]} is out of range for a {what} of {len(v)}", n.span) from None
        if not is_tensor(v):
            raise DplError(f"cannot index {describe_type(v)}", n.value.span)
        if any(getattr(k, "ndim", 0) for k in key):  # an integer or boolean array: a gather can be larger than x
            out = limits.index_shape(np.shape(raw(v)), key)
            if out is not None:
                try:
                    limits.check_elements(out, "indexing")
                except DplError as e:
                    raise e.at(n.span)
        try:
            return ops.index(v, key=key[0] if len(key) == 1 and hasattr(key[0], "dtype") else key)
        except IndexError as e:
            raise DplError(f"bad index for a tensor of shape {shape_str(v)}: {e}", n.span) from None

    def index_item(self, item, frame):
        if type(item) is A.Ellipsis_:
            return Ellipsis
        if isinstance(item, A.Slice):
            return slice(*(None if p is None else self.index_int(p, frame) for p in (item.lo, item.hi, item.step)))
        v = self.unguarded(self.eval(item, frame))
        k = kind(v)
        if k in "iu" and k and np.ndim(v) == 0:
            return int(v)
        if k in ("i", "u", "b"):
            return v
        raise DplError(f"an index must be an integer, an integer tensor or a boolean mask, got {describe_type(v)}",
                       item.span)

    def unguarded(self, v):
        """The plain value of something a hard decision is taken on (an index, a bound), kept as a guard."""
        if type(v) is Box:
            graph.guard(v, B.to_host(raw(v)))
        return raw(v)

    def index_int(self, node, frame) -> int:
        v = self.unguarded(self.eval(node, frame))
        if kind(v) not in ("i", "u") or np.ndim(v) != 0:
            raise DplError(f"a slice bound must be an integer, got {describe_type(v)}", node.span)
        return int(v)

    def _attr(self, n: A.Attr, frame):
        v = self.eval(n.value, frame)
        if isinstance(v, Namespace):
            return self.member(v, n.name, n.span)
        if not isinstance(v, Instance):
            raise DplError(f"`.{n.name}`: only module instances have attributes, got {describe_type(v)}", n.span)
        return self.attribute(v, n.name, n.span)

    def member(self, ns: Namespace, name: str, span):
        if name not in ns.globals or name.startswith("_"):
            public = [k for k in ns.globals if not k.startswith("_")]
            raise DplError(f"{ns.name} has no `{name}`{suggest(name, public)}", span)
        v = ns.globals[name]
        return self.read_param(v.name) if type(v) is ParamRef else v

    def attribute(self, v: Instance, name: str, span):
        if name in v.params:
            return self.read_param(v.params[name])
        if name in v.fns:
            return Function(v.fns[name], v)
        if name in v.values:
            return v.values[name]
        names = set(v.params) | set(v.fns) | set(v.values)
        raise DplError(f"`{v.name}` ({v.decl.name}) has no `{name}`{suggest(name, names)}", span)

    def eval_list(self, n: A.ListLit, frame) -> List:
        return List([self.eval(x, frame) for x in n.items])

    def _list(self, n: A.ListLit, frame):
        """Brackets around tensors of one shape are a tensor literal (LANGUAGE.md §3); `[]` and brackets
        around anything else are a list."""
        items = [self.eval(x, frame) for x in n.items]
        graph.set_span(n.span)
        if items and all(is_tensor(x) for x in items) and len({np.shape(raw(x)) for x in items}) == 1:
            return make_tensor(items, n)
        return List(items)

    def _tuple(self, n: A.TupleExpr, frame):
        return tuple(self.eval(x, frame) for x in n.items)

    def _lambda(self, n: A.Lambda, frame):
        return Function(n.fn, frame.instance, None if frame.top else frame, frame.globals)

    _eval = {A.Num: _num, A.Str: _str, A.Bool: _bool, A.Name: _name, A.BinOp: _binop, A.UnOp: _unop,
             A.Call: _call, A.Index: _index, A.Attr: _attr, A.ListLit: _list, A.TupleExpr: _tuple,
             A.Lambda: _lambda}


def parse_overrides(items) -> dict:
    """`--set NAME=VALUE` items: NAME -> the literal VALUE parsed as DPL (a number, string, boolean, bracket,
    tuple, or a negated number)."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise DplError(f"--set takes NAME=VALUE, got `{item}`")
        body = parse(text, f"--set {name}").body
        if len(body) != 1 or not isinstance(body[0], A.ExprStmt) or not _literal(body[0].expr):
            raise DplError(f"--set {name}: the value must be a DPL literal such as 3, 0.5, \"adam\", true or [1, 2], "
                           f"got `{text}`")
        out[name] = body[0].expr
    return out


def _literal(n) -> bool:
    if isinstance(n, (A.Num, A.Str, A.Bool)):
        return True
    if isinstance(n, A.UnOp):
        return n.op == "-" and isinstance(n.operand, A.Num)
    return isinstance(n, (A.ListLit, A.TupleExpr)) and all(_literal(x) for x in n.items)


def check_overrides(overrides: dict, program: A.Program) -> None:
    settable = list(dict.fromkeys(s.target for s in program.body if isinstance(s, A.Assign)))
    for name in overrides:
        if name not in settable:
            raise DplError(f"--set {name}: the program has no top-level assignment to `{name}`"
                           f"{suggest(name, settable)}; names that can be set: {', '.join(settable) or 'none'}")


def _empty_as_tensor(v):
    return B.xp.zeros((0,), dtype=B.float_dtype) if type(v) is List and not v.n else v


def too_deep_or_big(e: BaseException, span) -> DplError:
    """A DplError for Python running out of stack or of memory while running the program."""
    if isinstance(e, RecursionError):
        return DplError(limits.TOO_DEEP, span)
    traceback.clear_frames(e.__traceback__)  # their locals hold the recorded graph: free it before going on
    e.__traceback__ = None
    return DplError(f"out of memory{' (' + str(e) + ')' if str(e) else ''}; --max-elements limits the size of "
                    f"one tensor, --max-nodes that of the recorded graph", span)


def start_span(node) -> Span:
    """Where an expression begins (a binary operation's own span is its operator)."""
    while isinstance(node, (A.BinOp, A.Index, A.Call, A.Attr)):
        node = node.left if isinstance(node, A.BinOp) else node.func if isinstance(node, A.Call) else node.value
    return Span(node.span.file, node.span.line, node.span.col)


def make_tensor(items, n):
    """A tensor literal: the elements stacked along a new first axis (differentiably when any is traced)."""
    if not items:
        return B.xp.zeros((0,), dtype=B.float_dtype)
    for x, node in zip(items, n.items):
        if not is_tensor(x):
            raise DplError(f"a tensor literal holds numbers or tensors, got {describe_type(x)}", node.span)
    shapes = {np.shape(raw(x)) for x in items}
    if len(shapes) > 1:
        raise DplError(f"the elements of a tensor literal must have equal shapes, got "
                       f"{' and '.join(str(list(s)) for s in sorted(shapes))}", n.span)
    (shp,) = shapes
    if len(shp) >= limits.MAX_DIMS:
        raise DplError(f"a tensor literal nested more than {limits.MAX_DIMS} levels deep: tensors have at most "
                       f"{limits.MAX_DIMS} axes", n.span)
    try:
        limits.check_elements((len(items),) + shp, "a tensor literal")
    except DplError as e:
        raise e.at(n.span)
    kinds = {kind(x) for x in items}
    if "c" in kinds:  # real and complex entries mixed: a complex tensor
        items = [x if kind(x) == "c" else ops.astype(x, dtype=B.complex_dtype) for x in items]
    elif "f" in kinds:
        items = [to_float(x) for x in items]
    elif kinds != {"b"}:
        items = [ops.astype(x, dtype=np.int64) if kind(x) == "b" else x for x in items]
    if any(type(x) is Box for x in items):
        return ops.stack(*items, axis=0)
    return B.xp.stack([B.xp.asarray(x) for x in items])


def check_matmul(a, b, span):
    sa, sb = np.shape(raw(a)), np.shape(raw(b))
    if not sa or not sb:
        raise DplError(f"`@` needs operands with at least one axis, got shapes {list(sa)} @ {list(sb)}", span)
    inner_b = sb[0] if len(sb) == 1 else sb[-2]
    if sa[-1] != inner_b:
        raise DplError(f"shape mismatch in `@`: {list(sa)} @ {list(sb)} (inner sizes {sa[-1]} and {inner_b} "
                       f"differ)", span)
    try:
        batch = limits.broadcast_shape((sa[:-2], sb[:-2]))
    except ValueError:
        raise DplError(f"shape mismatch in `@`: batch dimensions of {list(sa)} @ {list(sb)} do not broadcast",
                       span) from None
    try:
        limits.check_elements(batch + sa[-2:-1] + sb[-1:] if len(sb) > 1 else batch + sa[-2:-1], "`@`")
    except DplError as e:
        raise e.at(span)


def bind_args(name, params, args, kwargs, span, defaults=()) -> dict:
    """Arguments by parameter name; parameters with `defaults` may be left out (the caller evaluates them)."""
    if len(args) > len(params):
        raise DplError(f"`{name}` takes {arity(params, defaults)}, got {len(args)}", span)
    bound = dict(zip(params, args))
    for k, v in kwargs.items():
        if k not in params:
            raise DplError(f"`{name}` has no parameter `{k}`{suggest(k, params)}", span)
        if k in bound:
            raise DplError(f"`{name}` got two values for `{k}`", span)
        bound[k] = v
    if len(bound) < len(params):
        optional = {p for p, _ in defaults}
        missing = [p for p in params if p not in bound and p not in optional]
        if missing:
            raise DplError(f"`{name}` takes {arity(params, defaults)}, missing "
                           f"{', '.join(f'`{m}`' for m in missing)}", span)
    return bound


def arity(params, defaults=()) -> str:
    """`2 arguments (x, y)`, `1 to 2 arguments (x, k = ...)`."""
    least = len(params) - len(defaults)
    count = f"{least} to {len(params)}" if defaults else str(len(params))
    shown = [p + " = ..." * any(p == d for d, _ in defaults) for p in params]
    return f"{count} argument{'s' * (len(params) != 1)} ({', '.join(shown)})"


def stdlib_path(name: str, span) -> Path:
    """stdlib/NAME.dpl, or an error listing the modules there are."""
    path = data_dir("stdlib") / f"{name}.dpl"
    if not path.is_file():
        known = sorted(p.stem for p in data_dir("stdlib").glob("*.dpl"))
        raise DplError(f"no stdlib module `{name}`{suggest(name, known)}; available: {', '.join(known)}", span)
    return path


def read_source(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DplError(f"no such file: {path}") from None
    except OSError as e:
        raise DplError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        SOURCES[str(path)] = data.decode("utf-8", "replace")
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DplError("the file is not valid UTF-8 text", Span(str(path), line, col)) from None


__all__ = ["Interpreter", "Function", "Instance", "ModuleValue", "RESERVED"]
