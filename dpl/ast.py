"""The AST: frozen dataclasses, each with the span it was parsed from (ignored by ==)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


def _span():
    return field(default=None, compare=False, repr=False)


class Node:
    span: Span


# ---- expressions -------------------------------------------------------------

@dataclass(frozen=True)
class Num(Node):
    value: int | float | complex
    span: Span = _span()


@dataclass(frozen=True)
class Str(Node):
    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Bool(Node):
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class Name(Node):
    id: str
    span: Span = _span()


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / % @ ^ < <= > >= == != and or
    left: Node
    right: Node
    span: Span = _span()


@dataclass(frozen=True)
class UnOp(Node):
    op: str  # - not
    operand: Node
    span: Span = _span()


@dataclass(frozen=True)
class Call(Node):
    func: Node
    args: tuple
    kwargs: tuple  # ((name, expr), ...)
    span: Span = _span()


@dataclass(frozen=True)
class Slice(Node):
    lo: Node | None
    hi: Node | None
    step: Node | None
    span: Span = _span()


@dataclass(frozen=True)
class Index(Node):
    value: Node
    items: tuple  # expressions and Slices
    span: Span = _span()


@dataclass(frozen=True)
class Attr(Node):
    value: Node
    name: str
    span: Span = _span()


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple
    span: Span = _span()


@dataclass(frozen=True)
class TupleExpr(Node):
    items: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Ellipsis_(Node):
    """`...` in an index: as many `:` as the other items leave."""
    span: Span = _span()


@dataclass(frozen=True)
class Lambda(Node):
    """`fn(t, y) = expr`: an anonymous function, a closure over the scope it is evaluated in."""
    fn: "FnDef"
    span: Span = _span()


# ---- statements --------------------------------------------------------------

@dataclass(frozen=True)
class Assign(Node):
    target: str
    value: Node
    span: Span = _span()


@dataclass(frozen=True)
class Unpack(Node):
    targets: tuple
    value: Node
    span: Span = _span()


@dataclass(frozen=True)
class Return(Node):
    value: Node | None
    span: Span = _span()


@dataclass(frozen=True)
class ExprStmt(Node):
    expr: Node
    span: Span = _span()


@dataclass(frozen=True)
class If(Node):
    cond: Node
    body: tuple
    orelse: tuple
    span: Span = _span()


@dataclass(frozen=True)
class For(Node):
    var: str
    iter: Node
    body: tuple
    span: Span = _span()


@dataclass(frozen=True)
class While(Node):
    cond: Node
    body: tuple
    span: Span = _span()


@dataclass(frozen=True)
class SoftIf(Node):
    p: Node
    body: tuple
    orelse: tuple
    span: Span = _span()


@dataclass(frozen=True)
class SoftWhile(Node):
    p: Node
    max: Node
    steps: str | None
    body: tuple
    span: Span = _span()


@dataclass(frozen=True)
class FnDef(Node):
    name: str
    params: tuple
    body: tuple  # statements; a one-expression function is (Return(expr),)
    defaults: tuple = ()  # ((name, expr), ...): evaluated at each call that leaves them out
    span: Span = _span()


@dataclass(frozen=True)
class ModuleDef(Node):
    name: str
    params: tuple
    body: tuple  # Param, FnDef and Assign statements
    defaults: tuple = ()  # ((name, expr), ...), as FnDef's
    span: Span = _span()


@dataclass(frozen=True)
class Init(Node):
    """`~ name` or `~ name(args)`: a named initializer."""
    name: str
    args: tuple
    span: Span = _span()


@dataclass(frozen=True)
class Param(Node):
    name: str
    shape: Node
    init: Node  # Init, or an expression for `= expr`
    span: Span = _span()


@dataclass(frozen=True)
class Use(Node):
    name: str
    alias: str | None = None  # `use nn as nn`: its names as `nn.Dense` only
    span: Span = _span()


@dataclass(frozen=True)
class Import(Node):
    path: str
    alias: str | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Train(Node):
    loss: str
    over: tuple
    body: tuple  # Assign statements: optimizer, epochs, batch, shuffle, seed
    span: Span = _span()


@dataclass(frozen=True)
class Program(Node):
    body: tuple
    file: str
    span: Span = _span()
