"""Parsing: grammar/dpl.lark through lark (LALR, contextual lexer) into dpl.ast with spans."""
from __future__ import annotations

import functools
import re
import warnings

import lark
from lark import Token, Transformer, v_args

from . import ast as A
from .errors import FOREIGN, SOURCES, DplError, Span
from .limits import MAX_NESTING, deep_stack
from .resources import data_dir

# declarations as the user writes them: messages name these words, never the grammar's rules (fn_def, ...)
DECLARATION_WORD = {A.FnDef: "fn", A.ModuleDef: "module", A.Param: "param", A.Use: "use", A.Import: "import",
                    A.Train: "train"}
RESERVED = {"fn", "param", "module", "use", "import", "train", "soft", "if", "else", "for",
            "in", "while", "return", "and", "or", "not", "true", "false"}


class Layout:
    """Post-lexer for LANGUAGE.md §2's newline rules.

    It never holds a token back: the contextual lexer lexes each token in the
    parser state left by the previous one, so `else` on the next line is found
    by peeking at the source text instead.
    """

    # NAME is offered to every contextual-lexer state so that a keyword is never lexed as the prefix
    # of a longer word (`a andb` is not `a and b`); a NAME spelled like a keyword the state expects is
    # still retyped to that keyword by lark, so `max`, `as` and `over` stay contextual.
    always_accept = ("_NL", "NAME")
    _ELSE_NEXT = re.compile(r"(?:\s|#[^\n]*)*else\b")

    def __init__(self):
        self.text = ""

    def process(self, stream):
        depth, prev = 0, None
        for tok in stream:
            if tok.type == "_NL":
                if (depth and tok.value != ";") or prev in (None, "_NL", "_LBRACE") \
                        or self._ELSE_NEXT.match(self.text, tok.end_pos):
                    continue
            elif tok.type in ("LPAR", "_LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB") and depth:
                depth -= 1
            prev = tok.type
            yield tok


def _grammar_text() -> str:
    return (data_dir("grammar") / "dpl.lark").read_text()


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_grammar_text(), parser="lalr", lexer="contextual", postlex=Layout(),
                     propagate_positions=True, maybe_placeholders=True)


class _ToAst(Transformer):
    """Builds frozen AST nodes; every node gets the span of its first token (operators: the operator)."""

    def __init__(self, file):
        super().__init__()
        self.file = file

    def _span(self, x) -> Span:
        if isinstance(x, Token):
            return Span(self.file, x.line, x.column, x.column + len(x.value))
        if isinstance(x, A.Node):
            return x.span
        return Span(self.file, x.line, x.column, x.end_column if x.end_line == x.line else None)

    def _name(self, tok: Token) -> str:
        if tok.value in RESERVED:
            raise DplError(f"`{tok.value}` is a reserved word and cannot be used as a name", self._span(tok))
        return tok.value

    # ---- program and statements ----
    @v_args(meta=True)
    def start(self, meta, ch):
        return tuple(c for c in ch if c is not None)

    @v_args(meta=True)
    def block(self, meta, ch):
        return tuple(c for c in ch if c is not None)

    @v_args(meta=True)
    def assign(self, meta, ch):
        return A.Assign(self._name(ch[0]), ch[1], self._span(ch[0]))

    @v_args(meta=True)
    def aug_assign(self, meta, ch):
        """`x += e` is `x = x + e` (likewise -=, *=, /=)."""
        target = self._name(ch[0])
        op = A.BinOp(ch[1].value[0], A.Name(target, self._span(ch[0])), ch[2], self._span(ch[1]))
        return A.Assign(target, op, self._span(ch[0]))

    @v_args(meta=True)
    def unpack(self, meta, ch):
        return A.Unpack(tuple(self._name(t) for t in ch[:-1]), ch[-1], self._span(meta))

    @v_args(meta=True)
    def return_stmt(self, meta, ch):
        items = [c for c in ch if c is not None]
        value = None if not items else items[0] if len(items) == 1 else A.TupleExpr(tuple(items), items[0].span)
        return A.Return(value, self._span(meta))

    @v_args(meta=True)
    def expr_stmt(self, meta, ch):
        return A.ExprStmt(ch[0], ch[0].span)

    @v_args(meta=True)
    def if_stmt(self, meta, ch):
        cond, body, orelse = ch
        if isinstance(orelse, A.If):
            orelse = (orelse,)
        return A.If(cond, body, orelse or (), self._span(meta))

    @v_args(meta=True)
    def for_stmt(self, meta, ch):
        return A.For(self._name(ch[0]), ch[1], ch[2], self._span(meta))

    @v_args(meta=True)
    def while_stmt(self, meta, ch):
        return A.While(ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def soft_if(self, meta, ch):
        return A.SoftIf(ch[0], ch[1], ch[2] or (), self._span(meta))

    @v_args(meta=True)
    def soft_while(self, meta, ch):
        p, n, steps, body = ch
        return A.SoftWhile(p, n, self._name(steps) if steps is not None else None, body, self._span(meta))

    @v_args(meta=True)
    def fn_def(self, meta, ch):
        name, params, body = ch
        return self._fn(self._name(name), params, body, self._span(name))

    @v_args(meta=True)
    def lambda_(self, meta, ch):
        params, body = ch
        span = self._span(meta)
        return A.Lambda(self._fn("fn", params, body, span), span)

    def _fn(self, name, params, body, span) -> A.FnDef:
        params = params or ()
        names = tuple(p for p, _ in params)
        for i, (p, default) in enumerate(params):
            if p in names[:i]:
                raise DplError(f"function `{name}` has a repeated parameter name `{p}`", span)
            if default is None and i and params[i - 1][1] is not None:
                raise DplError(f"parameter `{p}` without a default follows one with a default", span)
        if not isinstance(body, tuple):
            body = (A.Return(body, body.span),)
        return A.FnDef(name, names, body, tuple((p, d) for p, d in params if d is not None), span)

    def fn_params(self, ch):
        return tuple(ch)

    def fn_param(self, ch):
        return (self._name(ch[0]), ch[1])

    @v_args(meta=True)
    def module_def(self, meta, ch):
        name, params, body = ch
        for stmt in body:
            if isinstance(stmt, (A.ModuleDef, A.Use, A.Import, A.Train)):
                raise DplError(f"`{DECLARATION_WORD[type(stmt)]}` declarations are allowed only at top level, not "
                               f"inside `module {name.value}` (a module body holds only `param`, `fn` and "
                               f"assignments)", stmt.span)
            if not isinstance(stmt, (A.Param, A.FnDef, A.Assign)):
                raise DplError("a module body holds only `param`, `fn` and assignments", stmt.span)
        fn = self._fn(self._name(name), params, (), self._span(name))
        return A.ModuleDef(fn.name, fn.params, body, fn.defaults, fn.span)

    @v_args(meta=True)
    def param_decl(self, meta, ch):
        return A.Param(self._name(ch[0]), ch[1], ch[2], self._span(ch[0]))

    @v_args(meta=True)
    def init(self, meta, ch):
        name, args = ch
        return A.Init(self._name(name), tuple(args[0]) if args else (), self._span(name))

    @v_args(meta=True)
    def use_stmt(self, meta, ch):
        return A.Use(self._name(ch[0]), self._name(ch[1]) if ch[1] is not None else None, span=self._span(ch[0]))

    @v_args(meta=True)
    def import_stmt(self, meta, ch):
        return A.Import(_unquote(ch[0].value), self._name(ch[1]) if ch[1] is not None else None,
                        span=self._span(ch[0]))

    def dotted(self, ch):
        """`model.loss`: the loss of a `train` block may be any function, named by its path."""
        return Token("NAME", ".".join(self._name(t) for t in ch), ch[0].start_pos, ch[0].line, ch[0].column)

    @v_args(meta=True)
    def train_stmt(self, meta, ch):
        name, *over, body = ch
        for stmt in body:
            if type(stmt) in DECLARATION_WORD:
                raise DplError(f"`{DECLARATION_WORD[type(stmt)]}` declarations are not allowed inside a train block, "
                               f"which holds only settings: `optimizer = ...`, `epochs = ...`", stmt.span)
            if not isinstance(stmt, A.Assign):
                raise DplError("a train block holds only settings: `optimizer = ...`, `epochs = ...`", stmt.span)
        return A.Train(name.value, tuple(o for o in over if o is not None), body, self._span(name))

    # ---- expressions ----
    def binop(self, ch):
        left, op, right = ch
        return A.BinOp("^" if op.value == "**" else op.value, left, right, self._span(op))

    def unop(self, ch):
        op, operand = ch
        return A.UnOp(op.value, operand, self._span(op))

    @v_args(meta=True)
    def call(self, meta, ch):
        func, args = ch
        args = args or ([], [])
        return A.Call(func, tuple(args[0]), tuple(args[1]), func.span)

    def arglist(self, ch):
        pos, kw = [], []
        for a in ch:
            if isinstance(a, tuple):
                if any(k == a[0] for k, _ in kw):
                    raise DplError(f"keyword argument `{a[0]}` given twice", a[1].span)
                kw.append(a)
            elif kw:
                raise DplError("a positional argument cannot follow a keyword argument", a.span)
            else:
                pos.append(a)
        return pos, kw

    def kwarg(self, ch):
        return (self._name(ch[0]), ch[1])

    @v_args(meta=True)
    def index(self, meta, ch):
        return A.Index(ch[0], tuple(c for c in ch[1:] if c is not None), self._span(meta))

    @v_args(meta=True)
    def ellipsis(self, meta, ch):
        return A.Ellipsis_(self._span(meta))

    @v_args(meta=True)
    def tuple(self, meta, ch):
        return A.TupleExpr(tuple(c for c in ch if c is not None), self._span(meta))

    @v_args(meta=True)
    def slice2(self, meta, ch):
        return A.Slice(ch[0], ch[1], None, self._span(meta))

    @v_args(meta=True)
    def slice3(self, meta, ch):
        return A.Slice(ch[0], ch[1], ch[2], self._span(meta))

    @v_args(meta=True)
    def attr(self, meta, ch):
        return A.Attr(ch[0], self._name(ch[1]), self._span(ch[1]))

    @v_args(meta=True)
    def list(self, meta, ch):
        return A.ListLit(tuple(c for c in ch if c is not None), self._span(meta))

    def int(self, ch):
        tok = ch[0]
        digits = tok.value.lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > _INT64_MAX:  # checked by length first: no 4300-digit ValueError
            v = tok.value
            shown = v if len(v) <= 24 else f"{v[:12]}...{v[-4:]} ({len(v)} digits)"
            raise DplError(f"integer literal {shown} does not fit in 64 bits (at most {_INT64_MAX}); "
                           f"write a float such as 1e30 instead", self._span(tok))
        return A.Num(int(digits), self._span(tok))

    def float(self, ch):
        return A.Num(float(ch[0].value), self._span(ch[0]))

    def imag(self, ch):
        """`2.5j`, as Python's imaginary literal: a complex number with that imaginary part."""
        return A.Num(complex(0.0, float(ch[0].value[:-1])), self._span(ch[0]))

    def string(self, ch):
        try:
            return A.Str(_unquote(ch[0].value), self._span(ch[0]))
        except UnicodeDecodeError as e:  # `"\x"`, `"\N{nonsense}"`: say which escape, in DPL's words
            bad = ch[0].value[1:-1].encode("latin-1", "backslashreplace")[e.start:e.end].decode("latin-1")
            raise DplError(f"bad escape `{bad}` in a string ({e.reason}); write `\\\\` for a backslash",
                           self._span(ch[0])) from None

    def true(self, ch):
        return A.Bool(True, self._span(ch[0]))

    def false(self, ch):
        return A.Bool(False, self._span(ch[0]))

    def name(self, ch):
        return A.Name(self._name(ch[0]), self._span(ch[0]))


_INT64_MAX = 2 ** 63 - 1


def _check_nesting(tree, file: str) -> None:
    """A syntax tree deeper than MAX_NESTING is an error at the construct that goes too deep (walked without
    recursion, before anything recursive sees the tree)."""
    stack = [(tree, 1, None)]
    while stack:
        t, depth, where = stack.pop()
        if getattr(t.meta, "line", None) is not None:
            where = Span(file, t.meta.line, t.meta.column)
        if depth > MAX_NESTING:
            raise DplError(f"this nests too deeply: more than {MAX_NESTING} levels of brackets, blocks, calls and "
                           f"operators; split it up with intermediate variables or functions", where)
        stack.extend((c, depth + 1, where) for c in t.children if isinstance(c, lark.Tree))


def _unquote(s: str) -> str:
    with warnings.catch_warnings():  # an unknown escape such as `\d` in "C:\data" stays as written
        warnings.simplefilter("ignore", DeprecationWarning)
        return s[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


_EXPR_START = {"NAME", "INT", "FLOAT", "IMAG", "STRING", "LPAR", "_LSQB", "MINUS", "NOT", "TRUE", "FALSE", "FN"}
_ATOM_START = {"INT", "FLOAT", "IMAG"}  # accepted exactly where an expression may start
_STMT_START = {"FN", "PARAM", "MODULE", "USE", "IMPORT", "TRAIN", "SOFT", "IF", "FOR", "WHILE", "RETURN"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "AT", "POW", "COMPARE", "AND", "OR"}
_SPELLED = {"_NL": "a newline", "$END": "the end of the file", "NAME": "a name", "STRING": "a string"}


def _describe(tok) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line" if tok.value != ";" else "`;`"
    return f"`{tok.value}`"


def _accepted(e) -> set:
    """The terminals that would really let the parse go on (LALR's expected set also holds lookaheads of
    merged states, such as `as` or `}` where they cannot follow)."""
    try:
        return set(e.interactive_parser.accepts())
    except Exception:
        return set(e.expected)


def _expected(names) -> str:
    parser = _parser()
    words = []
    if "PARAM" in names:  # the start of a statement
        words.append("a statement")
        names = names - _STMT_START - _EXPR_START
    if names & _ATOM_START:
        words.append("an expression")
        names = names - _EXPR_START
    if names & _OPERATORS:
        words.append("an operator")
        names = names - _OPERATORS
    for n in sorted(names):
        if n in _SPELLED:
            words.append(_SPELLED[n])
            continue
        try:
            pattern = parser.get_terminal(n).pattern
        except KeyError:
            continue
        if pattern.type == "str":
            words.append(f"`{pattern.value}`")
    if not words:
        return ""
    words = words[:6]
    return "; expected " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])


def parse(text: str, file: str = "<input>") -> A.Program:
    """Parse DPL source; syntax errors become DplError with what was expected."""
    SOURCES[file] = text
    try:
        parser = _parser()
        parser.options.postlex.text = text
        tree = parser.parse(text)
        _check_nesting(tree, file)
        with deep_stack():
            body = _ToAst(file).transform(tree)
            _check_returns(body, None)
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            raise _at_end(f"syntax error: unexpected end of file{_expected(_accepted(e))}", text, file) from None
        span = Span(file, tok.line or 1, tok.column or 1)
        word = _FOREIGN_BEFORE.search(text, 0, tok.start_pos) if tok.start_pos is not None else None
        if word:  # `def f(x)`, `lambda x: ...`: the parse stops at the word after
            raise DplError(f"syntax error: `{word[1]}` is not DPL{FOREIGN[word[1]]}",
                           Span(file, tok.line, tok.column - (tok.start_pos - word.start(1)),
                                tok.column - (tok.start_pos - word.end(1)))) from None
        raise DplError(f"syntax error: unexpected {_describe(tok)}{_expected(_accepted(e))}", span) from None
    except lark.exceptions.UnexpectedCharacters as e:
        char = text[e.pos_in_stream]
        pair = text[e.pos_in_stream:e.pos_in_stream + 2]
        if pair in _OPERATOR_HINTS:
            raise DplError(f"syntax error: unexpected `{pair}`{_OPERATOR_HINTS[pair]}",
                           Span(file, e.line, e.column, e.column + 2)) from None
        raise DplError(f"syntax error: unexpected character `{char}`{_OPERATOR_HINTS.get(char, '')}",
                       Span(file, e.line, e.column)) from None
    except lark.exceptions.UnexpectedEOF as e:
        raise _at_end(f"syntax error: unexpected end of file{_expected(set(e.expected))}", text, file) from None
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, DplError):
            raise e.orig_exc from None
        raise
    return A.Program(body, file, Span(file, 1, 1))


def _check_returns(body, where) -> None:
    """`return` belongs in a function and never inside soft control flow (LANGUAGE.md §5), reached or not."""
    for s in body:
        if isinstance(s, A.Return) and where != "fn":
            msg = "`return` outside a function" if where is None else f"`return` is not allowed inside `{where}`"
            raise DplError(msg, s.span)
        if isinstance(s, A.FnDef):
            _check_returns(s.body, "fn")
        elif isinstance(s, A.ModuleDef):  # its functions
            _check_returns(s.body, None)
        elif isinstance(s, (A.If, A.For, A.While)):
            _check_returns(s.body, where)
            _check_returns(getattr(s, "orelse", ()), where)
        elif isinstance(s, A.SoftIf):
            _check_returns(s.body + s.orelse, "soft if")
        elif isinstance(s, A.SoftWhile):
            _check_returns(s.body, "soft while")


_FOREIGN_BEFORE = re.compile(r"(?<![\w.])(def|lambda)[ \t]*\Z")
_OPERATOR_HINTS = {"&&": " (did you mean `and`?)", "||": " (did you mean `or`?)",
                   "&": " (did you mean `and`?)", "|": " (did you mean `or`?)"}
_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{}()\[\]]')


def _at_end(message: str, text: str, file: str) -> DplError:
    """An error at the end of the file that also points at the innermost bracket left open, if any."""
    e = DplError(message, _end(text, file))
    open_ = []
    for m in _BRACKETS.finditer(text):
        if m[0] in "{([":
            open_.append(m.start())
        elif m[0] in "})]" and open_:
            open_.pop()
    if open_:
        pos = open_[-1]
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        e.notes.append((Span(file, line, col, col + 1), f"this `{text[pos]}` is never closed"))
    return e


def _end(text: str, file: str) -> Span:
    lines = text.splitlines() or [""]
    return Span(file, len(lines), len(lines[-1]) + 1)
