"""The front end: every construct of LANGUAGE.md §2-§8 parses to the expected AST, with spans.

AST equality ignores spans (dpl/ast.py), so expected trees are written without them and
spans are checked separately.
"""
from __future__ import annotations

import io
import warnings

import pytest

import dpl
from hypothesis import given, settings
from hypothesis import strategies as st

from dpl import ast as A
from dpl.errors import DplError, Span
from dpl.parser import RESERVED, parse

F = "t.dpl"


# ---- shorthand --------------------------------------------------------------------------------

def N(x):
    return A.Name(x)


def C(v):
    return A.Num(v)


def B(op, a, b):
    return A.BinOp(op, a, b)


def U(op, a):
    return A.UnOp(op, a)


def call(f, *args, **kwargs):
    return A.Call(N(f) if isinstance(f, str) else f, tuple(args), tuple(kwargs.items()))


def L(*items):
    return A.ListLit(tuple(items))


def S(lo=None, hi=None, step=None):
    return A.Slice(lo, hi, step)


def body(src):
    return parse(src, F).body


def expr(src):
    """The expression of `x = SRC`."""
    (stmt,) = body("x = " + src)
    assert isinstance(stmt, A.Assign) and stmt.target == "x"
    return stmt.value


def one(src):
    (stmt,) = body(src)
    return stmt


def syntax_error(src) -> DplError:
    with pytest.raises(DplError) as ei:
        parse(src, F)
    return ei.value


def pos(span):
    return (span.line, span.col)


# ---- §2 lexical: numbers, strings, booleans, names -------------------------------------------------

@pytest.mark.parametrize("src, value, typ", [
    ("3", 3, int),
    ("0", 0, int),
    ("3.5", 3.5, float),
    ("1e-8", 1e-8, float),
    ("1E-8", 1e-8, float),
    ("2.5e3", 2500.0, float),
    ("1e5", 1e5, float),
    ("1e+2", 100.0, float),
    (".5", 0.5, float),
    (".5e1", 5.0, float),
    ("1.", 1.0, float),
    ("10", 10, int),
])
def test_number_literals(src, value, typ):
    n = expr(src)
    assert n == C(value)
    assert type(n.value) is typ


def test_exponent_number_is_one_token_not_the_constant_e():
    n = expr("1e-8")
    assert isinstance(n, A.Num)
    assert (n.span.col, n.span.end_col) == (5, 9)
    # written with spaces it is the constant e
    assert expr("1 * e - 8") == B("-", B("*", C(1), N("e")), C(8))
    assert expr("e") == N("e") and expr("pi") == N("pi")


@pytest.mark.parametrize("src", ["1e", "1e-", "2e-8e", "3 4", "1.5.5"])
def test_malformed_numbers_are_syntax_errors(src):
    assert syntax_error("x = " + src).message.startswith("syntax error: unexpected")


@pytest.mark.parametrize("src, value", [
    ('"data.npz"', "data.npz"),
    ('""', ""),
    ('"lib/x y.dpl"', "lib/x y.dpl"),
    (r'"a\"b"', 'a"b'),
    (r'"a\nb"', "a\nb"),
    (r'"a\\b"', "a\\b"),
    ('"café"', "café"),
])
def test_string_literals(src, value):
    assert expr(src) == A.Str(value)


def test_unknown_escape_stays_literal_even_with_warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expr(r'"C:\data\y.csv"') == A.Str("C:\\data\\y.csv")


def test_string_is_a_value():
    out = io.StringIO()
    dpl.loads('d = "data.npz"\nprint(d)', stdout=out)
    assert out.getvalue() == "data.npz\n"


def test_single_quotes_are_not_strings():
    e = syntax_error("x = 'a'")
    assert e.message == "syntax error: unexpected character `'`"
    assert pos(e.span) == (1, 5)


def test_booleans():
    assert expr("true") == A.Bool(True)
    assert expr("false") == A.Bool(False)
    assert expr("[true, false]") == L(A.Bool(True), A.Bool(False))


@pytest.mark.parametrize("name", ["x", "_", "_x1", "W2", "camelCase", "a_b_c", "x123"])
def test_names(name):
    assert expr(name) == N(name)


@pytest.mark.parametrize("name", [
    # names that start with a reserved word are plain names
    "iffy", "format", "input", "notable", "origin", "android", "truex", "falsey", "returned",
    "elsewhere", "soft_max", "use_bias", "imports", "training", "module_x", "params", "fnx", "whiled",
])
def test_names_with_a_keyword_prefix(name):
    assert one(f"{name} = 1") == A.Assign(name, C(1))
    assert expr(f"{name} + 1") == B("+", N(name), C(1))
    assert expr(f"not {name}") == U("not", N(name))


@pytest.mark.parametrize("src", [
    "x = a andb",        # not `a and b`
    "x = a orb",         # not `a or b`
    "for i inrange(3) { }",
    "train loss overs { }",
    "soft while p maxi { }",
])
def test_keyword_glued_to_a_word_is_not_split(src):
    assert syntax_error(src).message.startswith("syntax error: unexpected `")


def test_comments():
    src = "# a comment\nx = 1  # trailing comment\n# another\ny = 2 # x = 3\n"
    assert body(src) == (A.Assign("x", C(1)), A.Assign("y", C(2)))
    assert body("# only a comment") == ()
    assert body("") == ()
    assert body("\n\n\n") == ()


# ---- §4 expressions: precedence and associativity -----------------------------------------------------

@pytest.mark.parametrize("src, tree", [
    # + - * / % @ and ^
    ("a + b * c", B("+", N("a"), B("*", N("b"), N("c")))),
    ("a * b + c", B("+", B("*", N("a"), N("b")), N("c"))),
    ("a - b - c", B("-", B("-", N("a"), N("b")), N("c"))),
    ("a / b / c", B("/", B("/", N("a"), N("b")), N("c"))),
    ("a % b * c", B("*", B("%", N("a"), N("b")), N("c"))),
    ("a @ b + c", B("+", B("@", N("a"), N("b")), N("c"))),
    ("a + b @ c", B("+", N("a"), B("@", N("b"), N("c")))),
    ("t / 10 @ W", B("@", B("/", N("t"), C(10)), N("W"))),
    ("a @ b @ c", B("@", B("@", N("a"), N("b")), N("c"))),
    ("a * b ^ c", B("*", N("a"), B("^", N("b"), N("c")))),
    ("a ^ b ^ c", B("^", N("a"), B("^", N("b"), N("c")))),
    ("a ** b", B("^", N("a"), N("b"))),
    ("a ** b ** c", B("^", N("a"), B("^", N("b"), N("c")))),
    ("a ^ b ** c", B("^", N("a"), B("^", N("b"), N("c")))),
    # unary minus: looser than ^, tighter than * /
    ("-x ^ 2", U("-", B("^", N("x"), C(2)))),
    ("2 ^ -x", B("^", C(2), U("-", N("x")))),
    ("-2 ^ -3 ^ 2", U("-", B("^", C(2), U("-", B("^", C(3), C(2)))))),
    ("-a * b", B("*", U("-", N("a")), N("b"))),
    ("a * -b", B("*", N("a"), U("-", N("b")))),
    ("--a", U("-", U("-", N("a")))),
    ("-(-a)", U("-", U("-", N("a")))),
    ("a - -b", B("-", N("a"), U("-", N("b")))),
    ("-x[0]", U("-", A.Index(N("x"), (C(0),)))),
    ("-f(x) ^ 2", U("-", B("^", call("f", N("x")), C(2)))),
    ("(a + b) * c", B("*", B("+", N("a"), N("b")), N("c"))),
    ("(a)", N("a")),
    # comparisons, not, and, or
    ("a + b < c * d", B("<", B("+", N("a"), N("b")), B("*", N("c"), N("d")))),
    ("a < b", B("<", N("a"), N("b"))),
    ("a <= b", B("<=", N("a"), N("b"))),
    ("a > b", B(">", N("a"), N("b"))),
    ("a >= b", B(">=", N("a"), N("b"))),
    ("a == b", B("==", N("a"), N("b"))),
    ("a != b", B("!=", N("a"), N("b"))),
    ("not a < b", U("not", B("<", N("a"), N("b")))),
    ("not a and b", B("and", U("not", N("a")), N("b"))),
    ("not not a", U("not", U("not", N("a")))),
    ("a and b or c", B("or", B("and", N("a"), N("b")), N("c"))),
    ("a or b and c", B("or", N("a"), B("and", N("b"), N("c")))),
    ("a or b or c", B("or", B("or", N("a"), N("b")), N("c"))),
    ("a and b and c", B("and", B("and", N("a"), N("b")), N("c"))),
    ("not a and b or c", B("or", B("and", U("not", N("a")), N("b")), N("c"))),
    ("a == b and c != d", B("and", B("==", N("a"), N("b")), B("!=", N("c"), N("d")))),
    ("i < n and x[i] > 0", B("and", B("<", N("i"), N("n")), B(">", A.Index(N("x"), (N("i"),)), C(0)))),
])
def test_precedence(src, tree):
    assert expr(src) == tree


# Precedence as a property: random trees printed with the fewest parentheses §4's table allows parse back
# to the same tree. Levels: or 1, and 2, not 3, comparisons 4, + - 5, * / % @ 6, unary - 7, ^ 8, atoms 9.
_LEVEL = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4, "+": 5, "-": 5,
          "*": 6, "/": 6, "%": 6, "@": 6, "^": 8}


def _level(node):
    if isinstance(node, A.BinOp):
        return _LEVEL[node.op]
    if isinstance(node, A.UnOp):
        return 3 if node.op == "not" else 7
    return 9


def _paren(node, needed, full):
    text = _render(node, full)
    return f"({text})" if needed or (full and _level(node) < 9) else text


def _render(node, full=False):
    """Source text for a tree: minimal parentheses, or every subexpression parenthesised when `full`."""
    if isinstance(node, A.Name):
        return node.id
    if isinstance(node, A.Num):
        return str(node.value)
    if isinstance(node, A.UnOp):
        lv = _level(node)
        sep = " " if node.op == "not" else ""
        return f"{node.op}{sep}{_paren(node.operand, _level(node.operand) < lv, full)}"
    lv = _LEVEL[node.op]
    if node.op == "^":      # right-associative; its right operand may be a unary minus
        left, right = _level(node.left) <= lv, _level(node.right) < 7
    elif lv == 4:           # comparisons do not chain
        left, right = _level(node.left) <= lv, _level(node.right) <= lv
    else:                   # left-associative
        left, right = _level(node.left) < lv, _level(node.right) <= lv
    return f"{_paren(node.left, left, full)} {node.op} {_paren(node.right, right, full)}"


_leaves = st.one_of(st.sampled_from([N("a"), N("b"), N("c")]), st.integers(0, 9).map(C))
_trees = st.recursive(
    _leaves,
    lambda sub: st.one_of(
        st.builds(B, st.sampled_from(sorted(_LEVEL)), sub, sub),
        st.builds(U, st.sampled_from(["-", "not"]), sub),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_precedence_property(tree):
    assert expr(_render(tree)) == tree
    assert expr(_render(tree, full=True)) == tree


def test_render_helper_is_minimal():
    assert _render(B("-", B("-", N("a"), N("b")), B("-", N("c"), C(1)))) == "a - b - (c - 1)"
    assert _render(B("^", B("^", N("a"), N("b")), B("^", N("c"), U("-", N("a"))))) == "(a ^ b) ^ c ^ -a"
    assert _render(U("-", B("^", N("x"), C(2)))) == "-x ^ 2"
    assert _render(B("^", U("-", N("x")), C(2))) == "(-x) ^ 2"
    assert _render(B("<", B("<", N("a"), N("b")), N("c"))) == "(a < b) < c"


def test_comparisons_do_not_chain():
    e = syntax_error("x = a < b < c")
    assert e.message == "syntax error: unexpected `<`; expected an operator, the end of the file or a newline"
    assert pos(e.span) == (1, 11)


# ---- calls, indexing, attributes, tensor literals ---------------------------------------------------

@pytest.mark.parametrize("src, tree", [
    ("f()", call("f")),
    ("f(x)", call("f", N("x"))),
    ("f(x, y)", call("f", N("x"), N("y"))),
    ("f(x,)", call("f", N("x"))),
    ("f(x, key = 1)", call("f", N("x"), key=C(1))),
    ("f(x, a = 1, b = y + 1)", call("f", N("x"), a=C(1), b=B("+", N("y"), C(1)))),
    ("adam(lr = 0.01)", call("adam", lr=C(0.01))),
    ("sum(x, axis = [0, 1], keepdims = true)", call("sum", N("x"), axis=L(C(0), C(1)), keepdims=A.Bool(True))),
    ("grad(f)(x)", A.Call(call("grad", N("f")), (N("x"),), ())),
    ("grad(grad(f))(2.0)", A.Call(call("grad", call("grad", N("f"))), (C(2.0),), ())),
    ("grad(f, argnum = 1)(x, y)", A.Call(call("grad", N("f"), argnum=C(1)), (N("x"), N("y")), ())),
    ("f(x)(y)(z)", A.Call(A.Call(call("f", N("x")), (N("y"),), ()), (N("z"),), ())),
    ("max(a, b)", call("max", N("a"), N("b"))),
    ("max(x, axis = 0)", call("max", N("x"), axis=C(0))),
    ("f(max = 1, over = 2, as = 3, steps = 4)", call("f", max=C(1), over=C(2), **{"as": C(3)}, steps=C(4))),
])
def test_calls(src, tree):
    assert expr(src) == tree


@pytest.mark.parametrize("src, msg", [
    ("f(key = 1, 2)", "a positional argument cannot follow a keyword argument"),
    ("f(a = 1, a = 2)", "keyword argument `a` given twice"),
])
def test_bad_argument_lists(src, msg):
    assert syntax_error("x = " + src).message == msg


@pytest.mark.parametrize("src, tree", [
    ("x[0]", A.Index(N("x"), (C(0),))),
    ("x[-1]", A.Index(N("x"), (U("-", C(1)),))),
    ("x[i]", A.Index(N("x"), (N("i"),))),
    ("x[idx]", A.Index(N("x"), (N("idx"),))),
    ("x[x > 0]", A.Index(N("x"), (B(">", N("x"), C(0)),))),
    ("x[:, 0]", A.Index(N("x"), (S(), C(0)))),
    ("x[1:3]", A.Index(N("x"), (S(C(1), C(3)),))),
    ("x[::2]", A.Index(N("x"), (S(None, None, C(2)),))),
    ("x[:]", A.Index(N("x"), (S(),))),
    ("x[::]", A.Index(N("x"), (S(),))),
    ("x[1:]", A.Index(N("x"), (S(C(1)),))),
    ("x[:-1]", A.Index(N("x"), (S(None, U("-", C(1))),))),
    ("x[::-1]", A.Index(N("x"), (S(None, None, U("-", C(1))),))),
    ("x[1:2:3, ::-1]", A.Index(N("x"), (S(C(1), C(2), C(3)), S(None, None, U("-", C(1)))))),
    ("x[:, 0:1]", A.Index(N("x"), (S(), S(C(0), C(1))))),
    ("x[0, 1, 2]", A.Index(N("x"), (C(0), C(1), C(2)))),
    ("x[0,]", A.Index(N("x"), (C(0),))),
    ("x[i + 1:n - 1]", A.Index(N("x"), (S(B("+", N("i"), C(1)), B("-", N("n"), C(1))),))),
    ("x[0][1]", A.Index(A.Index(N("x"), (C(0),)), (C(1),))),
    ("f(x)[0]", A.Index(call("f", N("x")), (C(0),))),
    ("o[:, 0] * 2", B("*", A.Index(N("o"), (S(), C(0))), C(2))),
])
def test_indexing(src, tree):
    assert expr(src) == tree


def test_empty_index_is_a_syntax_error():
    e = syntax_error("x = a[]")
    assert e.message == "syntax error: unexpected `]`; expected an expression, `:` or `...`"
    assert pos(e.span) == (1, 7)


@pytest.mark.parametrize("src, tree", [
    ("m.W", A.Attr(N("m"), "W")),
    ("m.f(x)", A.Call(A.Attr(N("m"), "f"), (N("x"),), ())),
    ("enc.W[0, :]", A.Index(A.Attr(N("enc"), "W"), (C(0), S()))),
    ("a.b.c", A.Attr(A.Attr(N("a"), "b"), "c")),
    ("f(x)[0].W", A.Attr(A.Index(call("f", N("x")), (C(0),)), "W")),
    ("m.max", A.Attr(N("m"), "max")),
    ("-m.W ^ 2", U("-", B("^", A.Attr(N("m"), "W"), C(2)))),
])
def test_attributes(src, tree):
    assert expr(src) == tree


@pytest.mark.parametrize("src, tree", [
    ("[]", L()),
    ("[1, 2, 3]", L(C(1), C(2), C(3))),
    ("[1, 2, 3,]", L(C(1), C(2), C(3))),
    ("[x]", L(N("x"))),
    ("[[1, 0], [0, 1]]", L(L(C(1), C(0)), L(C(0), C(1)))),
    ("[[1, 0,], [0, 1,],]", L(L(C(1), C(0)), L(C(0), C(1)))),
    ("[[[1]]]", L(L(L(C(1))))),
    ("[x, 2 * y, f(z)]", L(N("x"), B("*", C(2), N("y")), call("f", N("z")))),
    ("[-1, .5, 1e-3]", L(U("-", C(1)), C(0.5), C(1e-3))),
    ("[1, 2][0]", A.Index(L(C(1), C(2)), (C(0),))),
    ("concat([a, b], axis = 0)", call("concat", L(N("a"), N("b")), axis=C(0))),
])
def test_tensor_literals(src, tree):
    assert expr(src) == tree


# ---- §5 statements ---------------------------------------------------------------------------------

def test_assign_and_rebind():
    assert body("x = 1\nx = x + 1") == (A.Assign("x", C(1)), A.Assign("x", B("+", N("x"), C(1))))


def test_unpack():
    assert one("a, b = f(x)") == A.Unpack(("a", "b"), call("f", N("x")))
    assert one("v, theta, w = aim(t)") == A.Unpack(("v", "theta", "w"), call("aim", N("t")))


def test_expression_statement():
    assert one("print(x, y)") == A.ExprStmt(call("print", N("x"), N("y")))
    assert one("f(x)") == A.ExprStmt(call("f", N("x")))


def test_return_forms():
    fn = one("fn f(x) {\n return\n}")
    assert fn.body == (A.Return(None),)
    fn = one("fn f(x) { return x }")
    assert fn.body == (A.Return(N("x")),)
    fn = one("fn f(x) { return a, b }")
    assert fn.body == (A.Return(A.TupleExpr((N("a"), N("b")))),)
    fn = one("fn f(x) { return 10 * sigmoid(o[:, 0]), pi / 2 * sigmoid(o[:, 1]) }")
    (ret,) = fn.body
    assert isinstance(ret.value, A.TupleExpr) and len(ret.value.items) == 2
    assert ret.value.items[1] == B("*", B("/", N("pi"), C(2)), call("sigmoid", A.Index(N("o"), (S(), C(1)))))


X1 = A.Assign("x", C(1))
X2 = A.Assign("x", C(2))
X3 = A.Assign("x", C(3))


@pytest.mark.parametrize("src, tree", [
    ("if a { x = 1 }", A.If(N("a"), (X1,), ())),
    ("if a { x = 1 } else { x = 2 }", A.If(N("a"), (X1,), (X2,))),
    ("if a {\n x = 1\n} else {\n x = 2\n}", A.If(N("a"), (X1,), (X2,))),
    ("if a {\n x = 1\n}\nelse {\n x = 2\n}", A.If(N("a"), (X1,), (X2,))),
    ("if a { x = 1 }\n\n  # comment\n\nelse { x = 2 }", A.If(N("a"), (X1,), (X2,))),
    ("if a { x = 1 } else if b { x = 2 } else { x = 3 }",
     A.If(N("a"), (X1,), (A.If(N("b"), (X2,), (X3,)),))),
    ("if a { x = 1 }\nelse if b { x = 2 }\nelse { x = 3 }",
     A.If(N("a"), (X1,), (A.If(N("b"), (X2,), (X3,)),))),
    ("if a { x = 1 } else if b { x = 2 }", A.If(N("a"), (X1,), (A.If(N("b"), (X2,), ()),))),
    ("if x > 0 and y < 1 { }", A.If(B("and", B(">", N("x"), C(0)), B("<", N("y"), C(1))), (), ())),
    ("if a {} else {}", A.If(N("a"), (), ())),
])
def test_if(src, tree):
    assert one(src) == tree


def test_else_line_peek_does_not_swallow_names_starting_with_else():
    assert body("x = 1\nelse_x = 2") == (X1, A.Assign("else_x", C(2)))
    assert body("if a { x = 1 }\nelsewhere = 2") == (A.If(N("a"), (X1,), ()), A.Assign("elsewhere", C(2)))


@pytest.mark.parametrize("src, tree", [
    ("for i in range(3) { x = x + i }",
     A.For("i", call("range", C(3)), (A.Assign("x", B("+", N("x"), N("i"))),))),
    ("for i in range(1, 20, 2) {\n}", A.For("i", call("range", C(1), C(20), C(2)), ())),
    ("for row in xs { }", A.For("row", N("xs"), ())),
    ("while a < 3 { a = a + 1 }", A.While(B("<", N("a"), C(3)), (A.Assign("a", B("+", N("a"), C(1))),))),
    ("while not done {\n}", A.While(U("not", N("done")), ())),
])
def test_loops(src, tree):
    assert one(src) == tree


@pytest.mark.parametrize("src, tree", [
    ("soft if p { x = 1 } else { x = 2 }", A.SoftIf(N("p"), (X1,), (X2,))),
    ("soft if p { x = 1 }", A.SoftIf(N("p"), (X1,), ())),
    ("soft if sigmoid(z) {\n x = 1\n}\nelse {\n x = 2\n}", A.SoftIf(call("sigmoid", N("z")), (X1,), (X2,))),
    ("soft while p max 5 { x = x * 2 }",
     A.SoftWhile(N("p"), C(5), None, (A.Assign("x", B("*", N("x"), C(2))),))),
    ("soft while p max N as steps { x = x * 2 }",
     A.SoftWhile(N("p"), N("N"), "steps", (A.Assign("x", B("*", N("x"), C(2))),))),
    ("soft while sigmoid(h) > 0.5 max n + 1 as k {\n}",
     A.SoftWhile(B(">", call("sigmoid", N("h")), C(0.5)), B("+", N("n"), C(1)), "k", ())),
    # max/as/over stay names inside the clauses themselves
    ("soft while max(a, b) max max(3, 4) as over { over = 1 }",
     A.SoftWhile(call("max", N("a"), N("b")), call("max", C(3), C(4)), "over", (A.Assign("over", C(1)),))),
])
def test_soft_control_flow(src, tree):
    assert one(src) == tree


def test_soft_if_else_if_is_not_allowed():
    e = syntax_error("soft if p { x = 1 } else if q { x = 2 }")
    assert e.message == "syntax error: unexpected `if`; expected `{`"


def test_soft_while_needs_max():
    e = syntax_error("soft while p { }")
    assert e.message == "syntax error: unexpected `{`; expected `max`"
    assert pos(e.span) == (1, 14)


# ---- §7 declarations -------------------------------------------------------------------------------

@pytest.mark.parametrize("src, tree", [
    ("fn f(x) = x ^ 2", A.FnDef("f", ("x",), (A.Return(B("^", N("x"), C(2))),))),
    ("fn f() = 3", A.FnDef("f", (), (A.Return(C(3)),))),
    ("fn f(x, y,) = x", A.FnDef("f", ("x", "y"), (A.Return(N("x")),))),
    ("fn g(x, y) {\n    h = f(x)\n    return h * y\n}",
     A.FnDef("g", ("x", "y"), (A.Assign("h", call("f", N("x"))), A.Return(B("*", N("h"), N("y")))))),
    ("fn g(x, y) { h = f(x); return h * y }",
     A.FnDef("g", ("x", "y"), (A.Assign("h", call("f", N("x"))), A.Return(B("*", N("h"), N("y")))))),
    ("fn f(\n  a,\n  b\n) = a", A.FnDef("f", ("a", "b"), (A.Return(N("a")),))),
    ("fn f() {}", A.FnDef("f", (), ())),
])
def test_fn(src, tree):
    assert one(src) == tree


def test_fn_repeated_parameter():
    e = syntax_error("fn f(x, x) = x")
    assert e.message == "function `f` has a repeated parameter name `x`"
    assert pos(e.span) == (1, 4)


def test_one_expression_fn_returns_a_single_expression():
    e = syntax_error("fn t(x) = x, x")
    assert e.message == "syntax error: unexpected `,`; expected the end of the file or a newline"


@pytest.mark.parametrize("src, tree", [
    ("param W: [2, 32] ~ glorot", A.Param("W", L(C(2), C(32)), A.Init("glorot", ()))),
    ("param b: [32] ~ zeros", A.Param("b", L(C(32)), A.Init("zeros", ()))),
    ("param b: [32] ~ ones", A.Param("b", L(C(32)), A.Init("ones", ()))),
    ("param Q: [4, 4] ~ orthogonal", A.Param("Q", L(C(4), C(4)), A.Init("orthogonal", ()))),
    ("param W: [2, 3] ~ normal(0.1)", A.Param("W", L(C(2), C(3)), A.Init("normal", (C(0.1),)))),
    ("param W: [2, 3] ~ uniform(-1, 1)", A.Param("W", L(C(2), C(3)), A.Init("uniform", (U("-", C(1)), C(1))))),
    ("param W: [2, 3] ~ uniform(lo, 2 * lo)",
     A.Param("W", L(C(2), C(3)), A.Init("uniform", (N("lo"), B("*", C(2), N("lo")))))),
    ("param W: [2, 3] ~ glorot()", A.Param("W", L(C(2), C(3)), A.Init("glorot", ()))),
    ("param s: [] = 0.5", A.Param("s", L(), C(0.5))),
    ("param v: [2] = [1.0, 2.0]", A.Param("v", L(C(2)), L(C(1.0), C(2.0)))),
    ("param v: [n, 2 * n] = zeros([n, 2 * n])",
     A.Param("v", L(N("n"), B("*", C(2), N("n"))), call("zeros", L(N("n"), B("*", C(2), N("n")))))),
    ("param v: shape ~ zeros", A.Param("v", N("shape"), A.Init("zeros", ()))),
])
def test_param(src, tree):
    assert one(src) == tree


def test_module():
    src = """module Dense(n_in, n_out) {
    param W: [n_in, n_out] ~ glorot
    param b: [n_out] ~ zeros
    scale = 2
    fn call(x) = x @ W + b
}
enc = Dense(1, 32)
"""
    mod, inst = body(src)
    assert mod == A.ModuleDef("Dense", ("n_in", "n_out"), (
        A.Param("W", L(N("n_in"), N("n_out")), A.Init("glorot", ())),
        A.Param("b", L(N("n_out")), A.Init("zeros", ())),
        A.Assign("scale", C(2)),
        A.FnDef("call", ("x",), (A.Return(B("+", B("@", N("x"), N("W")), N("b"))),)),
    ))
    assert inst == A.Assign("enc", call("Dense", C(1), C(32)))
    assert one("module M { param s: [] = 0.5 }") == A.ModuleDef("M", (), (A.Param("s", L(), C(0.5)),))
    assert one("module M() {}") == A.ModuleDef("M", (), ())


def test_module_body_holds_only_declarations():
    e = syntax_error("module M(a) {\n  print(a)\n}")
    assert e.message == "a module body holds only `param`, `fn` and assignments"
    assert pos(e.span) == (2, 3)


def test_use_and_import():
    assert one("use nn") == A.Use("nn")
    assert one('import "lib/physics.dpl"') == A.Import("lib/physics.dpl")
    assert syntax_error("import nn").message == "syntax error: unexpected `nn`; expected a string"
    assert syntax_error('use "nn"').message == 'syntax error: unexpected `"nn"`; expected a name'


# ---- §8 training -----------------------------------------------------------------------------------

def test_train_with_over():
    src = """train loss over xs, ys {
    optimizer = adam(lr = 0.01)     # also: sgd(lr, momentum), rmsprop(lr)
    epochs = 50
    batch = 64
    shuffle = true
    seed = 0
}"""
    assert one(src) == A.Train("loss", (N("xs"), N("ys")), (
        A.Assign("optimizer", call("adam", lr=C(0.01))),
        A.Assign("epochs", C(50)),
        A.Assign("batch", C(64)),
        A.Assign("shuffle", A.Bool(True)),
        A.Assign("seed", C(0)),
    ))


def test_train_without_over_and_with_expressions():
    assert one("train fit { epochs = 10 }") == A.Train("fit", (), (A.Assign("epochs", C(10)),))
    assert one("train loss over xs[:100], f(ys) {}") == A.Train(
        "loss", (A.Index(N("xs"), (S(None, C(100)),)), call("f", N("ys"))), ())
    # `over` as the loss's name and as a data name
    assert one("train over over over, as { epochs = 1 }") == A.Train(
        "over", (N("over"), N("as")), (A.Assign("epochs", C(1)),))


def test_train_block_holds_only_settings():
    e = syntax_error("train loss {\n  print(1)\n}")
    assert e.message == "a train block holds only settings: `optimizer = ...`, `epochs = ...`"
    assert pos(e.span) == (2, 3)


# ---- §2 newline rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("src, tree", [
    ("x = (1 +\n 2)", (A.Assign("x", B("+", C(1), C(2))),)),
    ("x = f(1,\n  2,\n)", (A.Assign("x", call("f", C(1), C(2))),)),
    ("x = f(\n  a = 1,\n  b = 2\n)", (A.Assign("x", call("f", a=C(1), b=C(2))),)),
    ("x = [1,\n 2]", (A.Assign("x", L(C(1), C(2))),)),
    ("x = [\n  [1, 0],  # row 0\n  [0, 1],  # row 1\n]", (A.Assign("x", L(L(C(1), C(0)), L(C(0), C(1)))),)),
    ("x = a[\n 0,\n 1\n]", (A.Assign("x", A.Index(N("a"), (C(0), C(1)))),)),
    ("x = (\n\n a\n\n)", (A.Assign("x", N("a")),)),
    ("x = f(g(1,\n 2), [3,\n 4])", (A.Assign("x", call("f", call("g", C(1), C(2)), L(C(3), C(4)))),)),
    # `;` separates statements, runs of separators collapse, leading ones are ignored
    ("x = 1; y = 2", (X1, A.Assign("y", C(2)))),
    ("x = 1;; y = 2;", (X1, A.Assign("y", C(2)))),
    (";\n;x = 1", (X1,)),
    ("x = 1\n\n\n\ny = 2\n\n", (X1, A.Assign("y", C(2)))),
    ("x = 1\r\ny = 2\r\n", (X1, A.Assign("y", C(2)))),
    # a newline ends the statement: a leading minus starts a new one
    ("x = a\n-b", (A.Assign("x", N("a")), A.ExprStmt(U("-", N("b"))))),
    # newlines right after `{` and before `}` are ignored; `}` ends the statement before it
    ("fn f(x) { y = x ^ 2 }", (A.FnDef("f", ("x",), (A.Assign("y", B("^", N("x"), C(2))),)),)),
    ("fn f(x) {\n\n  y = x ^ 2\n\n}", (A.FnDef("f", ("x",), (A.Assign("y", B("^", N("x"), C(2))),)),)),
    ("fn f(x) { # comment\n  return x }", (A.FnDef("f", ("x",), (A.Return(N("x")),)),)),
    ("fn f(x) { a = 1; b = 2; return a }",
     (A.FnDef("f", ("x",), (A.Assign("a", C(1)), A.Assign("b", C(2)), A.Return(N("a")))),)),
    ("if a { if b { x = 1 } }", (A.If(N("a"), (A.If(N("b"), (X1,), ()),), ()),)),
    ("if a {\n}\nx = 1", (A.If(N("a"), (), ()), X1)),
])
def test_newline_rules(src, tree):
    assert body(src) == tree


@pytest.mark.parametrize("src, msg, at", [
    # newlines are not ignored after a binary operator
    ("x = a +\n b", "syntax error: unexpected end of line; expected an expression", (1, 8)),
    ("x = a\n+ b", "syntax error: unexpected `+`; expected a statement or the end of the file", (2, 1)),
    ("fn f() {\n  + 1\n}", "syntax error: unexpected `+`; expected a statement, `}` or a newline", (2, 3)),
    # `;` is not a newline inside brackets: it is never silently dropped
    ("print(1;)", "syntax error: unexpected `;`; expected `,` or `)`", (1, 8)),
    ("x = [1; 2]", "syntax error: unexpected `;`; expected `,` or `]`", (1, 7)),
    # `}` ends the statement before it, not the one after it
    ("if a { x = 1 } y = 2", "syntax error: unexpected `y`; expected the end of the file, `else` or a newline",
     (1, 16)),
    ("fn f() { if a { x = 1 } y = 2 }", "syntax error: unexpected `y`; expected `else`, `}` or a newline", (1, 25)),
    # a block needs its braces
    ("if x { y = 1 } else y = 2", "syntax error: unexpected `y`; expected `if` or `{`", (1, 21)),
])
def test_newline_rule_errors(src, msg, at):
    e = syntax_error(src)
    assert (e.message, pos(e.span)) == (msg, at)


# ---- contextual keywords and reserved words ----------------------------------------------------------

@pytest.mark.parametrize("name", ["max", "as", "over", "steps", "pi", "e", "min", "range"])
def test_contextual_keywords_are_names(name):
    assert one(f"{name} = 1") == A.Assign(name, C(1))
    assert expr(f"{name} + 1") == B("+", N(name), C(1))
    assert one(f"fn {name}({name}) = {name}") == A.FnDef(name, (name,), (A.Return(N(name)),))
    assert one(f"for {name} in xs {{ }}") == A.For(name, N("xs"), ())
    assert one(f"a, {name} = t") == A.Unpack(("a", name), N("t"))
    assert one(f"param {name}: [] = 0.5") == A.Param(name, L(), C(0.5))


def test_contextual_keywords_run_as_names():
    out = io.StringIO()
    dpl.loads("over = 2\nsteps = 3\nas = over * steps\nprint(max(as, 10), max(as, 1))\n"
              "fn max2(a, b) = max(a, b)\nprint(max2(over, steps))\n"
              "x = 1.0\nsoft while 1.0 max over as steps { x = x * 2 }\nprint(x, steps)", stdout=out)
    assert out.getvalue() == "10 6\n3\n4.0 2.0\n"


@pytest.mark.parametrize("word", sorted(RESERVED))
@pytest.mark.parametrize("template", [
    "{w} = 1",
    "a, {w} = t",
    "fn {w}(x) = x",
    "fn f({w}) = 1",
    "for {w} in xs {{ }}",
    "param {w}: [] = 1",
    "module {w}() {{ }}",
    "x = f({w} = 1)",
    "x = m.{w}",
    "use {w}",
    "train {w} {{ }}",
    "param W: [2] ~ {w}",
])
def test_reserved_words_are_rejected_as_names(word, template):
    src = template.format(w=word)
    e = syntax_error(src)
    assert e.message.startswith("syntax error: unexpected") or \
        e.message == f"`{word}` is a reserved word and cannot be used as a name", (src, e.message)


@pytest.mark.parametrize("src, word, col", [
    ("x = if", "if", 5), ("fn if(x) = x", "if", 4), ("fn f(in) = x", "in", 6), ("param true: [] = 1", "true", 7),
    ("x = y + while", "while", 9), ("x = m.for", "for", 7), ("x = f(in = 1)", "in", 7), ("use soft", "soft", 5),
])
def test_reserved_word_message(src, word, col):
    e = syntax_error(src)
    assert e.message == f"`{word}` is a reserved word and cannot be used as a name"
    assert (e.span.line, e.span.col, e.span.end_col) == (1, col, col + len(word))


def test_reserved_words_match_the_contract():
    assert RESERVED == set("fn param module use import train soft if else for in while return and or not "
                           "true false".split())


# ---- `return` placement (LANGUAGE.md §5), checked statically ------------------------------------------

@pytest.mark.parametrize("src, msg, at", [
    ("return 1", "`return` outside a function", (1, 1)),
    ("x = 1\nif false {\n  return x\n}", "`return` outside a function", (3, 3)),
    ("for i in range(2) { while true { return } }", "`return` outside a function", (1, 34)),
    ("fn f(x) {\n  soft if 0.5 { if x > 1 { return x } }\n  return x\n}",
     "`return` is not allowed inside `soft if`", (2, 28)),
    ("fn f(x) {\n  soft if 0.5 { x = 1 } else {\n    return 2\n  }\n}",
     "`return` is not allowed inside `soft if`", (3, 5)),
    ("fn f(x) {\n  soft while 0.5 max 3 {\n    return x }\n}", "`return` is not allowed inside `soft while`", (3, 5)),
    ("module M() {\n  fn call(x) {\n    soft if 0.5 { return x }\n  }\n}", "`return` is not allowed inside `soft if`",
     (3, 19)),
])
def test_misplaced_return(src, msg, at):
    e = syntax_error(src)
    assert (e.message, pos(e.span)) == (msg, at)


def test_return_inside_loops_and_ifs_of_a_function_is_fine():
    src = "fn f(x) {\n for i in range(3) { if i > 1 { return i } }\n while true { return x }\n}"
    assert isinstance(one(src), A.FnDef)


# ---- spans -----------------------------------------------------------------------------------------

SRC = """x = a + b * c
y, z = f(x)
if x > 1 {
  w = -x ^ 2
} else {
  w = m.W[0, 1:3]
}
fn g(a) = a ** 2
for i in range(3) { s = s + i }
soft if p { q = 1 }
param W: [2] ~ zeros
use nn
train loss over xs { epochs = 1 }
"""


def test_statement_spans():
    stmts = body(SRC)
    assert [(type(s).__name__, pos(s.span)) for s in stmts] == [
        ("Assign", (1, 1)),   # the target
        ("Unpack", (2, 1)),
        ("If", (3, 1)),       # the `if`
        ("FnDef", (8, 4)),    # the function's name
        ("For", (9, 1)),
        ("SoftIf", (10, 1)),  # the `soft`
        ("Param", (11, 7)),   # the parameter's name
        ("Use", (12, 5)),
        ("Train", (13, 7)),   # the loss's name
    ]
    assert all(s.span.file == F for s in stmts)


def test_expression_spans():
    stmts = body(SRC)
    add = stmts[0].value
    # a BinOp's span is its operator
    assert (add.span.line, add.span.col, add.span.end_col) == (1, 7, 8)
    assert pos(add.right.span) == (1, 11)
    assert (add.left.span.col, add.left.span.end_col) == (5, 6)       # name `a`
    assert pos(add.right.left.span) == (1, 9) and pos(add.right.right.span) == (1, 13)
    cond = stmts[2].cond
    assert pos(cond.span) == (3, 6)
    neg = stmts[2].body[0]
    assert pos(neg.span) == (4, 3)
    assert pos(neg.value.span) == (4, 7)                 # unary minus: the `-`
    assert pos(neg.value.operand.span) == (4, 10)        # the `^`
    idx = stmts[2].orelse[0].value
    assert pos(idx.span) == (6, 7)                       # index: where it starts
    assert (idx.value.span.col, idx.value.span.end_col) == (9, 10)  # attribute: its name `W`
    assert pos(idx.items[1].span) == (6, 14)
    power = stmts[3].body[0].value
    assert power.op == "^" and (power.span.col, power.span.end_col) == (13, 15)   # `**` is two columns
    call_ = stmts[1].value
    assert pos(call_.span) == (2, 8)


def test_span_of_keyword_argument_and_numbers():
    c = expr("adam(lr = 0.01)")
    ((k, v),) = c.kwargs
    assert k == "lr" and (v.span.col, v.span.end_col) == (15, 19)


def test_spans_on_later_lines_with_tabs_and_crlf():
    stmts = body("x = 1\r\n\r\n\ty = foo + 2\r\n")
    y = stmts[1]
    assert pos(y.span) == (3, 2) and pos(y.value.span) == (3, 10) and pos(y.value.left.span) == (3, 6)


def test_span_equality_is_ignored_by_ast_equality():
    a = parse("x = a + b", "one.dpl").body
    b = parse("x   =   a   +   b", "two.dpl").body
    assert a == b
    assert a[0].value.span != b[0].value.span


def test_program_node():
    p = parse("x = 1", "some/file.dpl")
    assert isinstance(p, A.Program) and p.file == "some/file.dpl" and p.body == (X1,)
    assert p.span == Span("some/file.dpl", 1, 1)


# ---- issue 10: closures, defaults, tuples, augmented assignment, //, ..., qualified imports ----------------------

def R(e):
    return (A.Return(e),)


@pytest.mark.parametrize("src, tree", [
    ("fn(t, y) = -k * y", A.Lambda(A.FnDef("fn", ("t", "y"), R(B("*", U("-", N("k")), N("y")))))),
    ("fn() = 1", A.Lambda(A.FnDef("fn", (), R(C(1))))),
    ("fn(x, k = 2) = x + 1", A.Lambda(A.FnDef("fn", ("x", "k"), R(B("+", N("x"), C(1))), (("k", C(2)),)))),
    ("fn(x) = fn(y) = x", A.Lambda(A.FnDef("fn", ("x",), R(A.Lambda(A.FnDef("fn", ("y",), R(N("x")))))))),
    ("(1, 2)", A.TupleExpr((C(1), C(2)))),
    ("(1,)", A.TupleExpr((C(1),))),
    ("(1)", C(1)),
    ("a // b * c", B("*", B("//", N("a"), N("b")), N("c"))),
    ("x[..., 0]", A.Index(N("x"), (A.Ellipsis_(), C(0)))),
    ("[]", L()),
    ("f(fn(x) = x, 2)", call("f", A.Lambda(A.FnDef("fn", ("x",), R(N("x")))), C(2))),
])
def test_new_expressions(src, tree):
    assert expr(src) == tree


@pytest.mark.parametrize("src, tree", [
    ("x += 1", A.Assign("x", B("+", N("x"), C(1)))),
    ("x -= y * 2", A.Assign("x", B("-", N("x"), B("*", N("y"), C(2))))),
    ("x *= 2", A.Assign("x", B("*", N("x"), C(2)))),
    ("x /= 2", A.Assign("x", B("/", N("x"), C(2)))),
    ("fn f(x, k = 2, m = k) = x", A.FnDef("f", ("x", "k", "m"), R(N("x")), (("k", C(2)), ("m", N("k"))))),
    ("module M(n, s = 1.0) { }", A.ModuleDef("M", ("n", "s"), (), (("s", C(1.0)),))),
    ("use nn as nn", A.Use("nn", "nn")),
    ("use nn", A.Use("nn")),
    ('import "lib/x.dpl" as x', A.Import("lib/x.dpl", "x")),
    ("train m.loss { }", A.Train("m.loss", (), ())),
    ("train a.b.c over x { }", A.Train("a.b.c", (N("x"),), ())),
    ("fn f() {\n    fn g() = 1\n    return g\n}", A.FnDef("f", (), (A.FnDef("g", (), R(C(1))), A.Return(N("g"))))),
])
def test_new_statements(src, tree):
    assert body(src) == (tree,)


def test_spans_of_new_constructs():
    (s,) = body("y = fn(a) = a")
    assert (s.value.span.line, s.value.span.col) == (1, 5)
    (s,) = body("y += 1")
    assert (s.span.col, s.value.span.col) == (1, 3)  # the statement at the name, the operation at `+=`


def test_as_and_max_stay_names_outside_their_clauses():
    assert body("as = 1\nmax = 2") == (A.Assign("as", C(1)), A.Assign("max", C(2)))


# ---- declarations where they are not allowed, strings the parser cannot read: DPL's words only -------------

_RULE_WORDS = ("fndef", "moduledef", "fn_def", "module_def", "param_decl", "train_stmt", "use_stmt", "import_stmt",
               "expr_stmt", "return_stmt", "lambda_", "rule", "tree(", "token(", "visiterror", "internal error")


@pytest.mark.parametrize("src, message, where", [
    ("module M {\n  module N {}\n}", "`module` declarations are allowed only at top level, not inside `module M` "
                                     "(a module body holds only `param`, `fn` and assignments)", (2, 10)),
    ("module M {\n  train loss { epochs = 1 }\n}", "`train` declarations are allowed only at top level, not inside "
                                                  "`module M` (a module body holds only `param`, `fn` and "
                                                  "assignments)", (2, 9)),
    ("module M(a) {\n  use nn\n}", "`use` declarations are allowed only at top level, not inside `module M` "
                                   "(a module body holds only `param`, `fn` and assignments)", (2, 7)),
    ("train loss {\n  fn f(x) = x\n}", "`fn` declarations are not allowed inside a train block, which holds only "
                                      "settings: `optimizer = ...`, `epochs = ...`", (2, 6)),
    ("train loss {\n  param W: [2] ~ zeros\n}", "`param` declarations are not allowed inside a train block, which "
                                               "holds only settings: `optimizer = ...`, `epochs = ...`", (2, 9)),
    ('x = "a\\x"', "bad escape `\\x` in a string (truncated \\xXX escape); write `\\\\` for a backslash", (1, 5)),
    ('x = "\\N{no such}"', "bad escape `\\N{no such}` in a string (unknown Unicode character name); write `\\\\` "
                          "for a backslash", (1, 5)),
    ('print("\\u12")', "bad escape `\\u12` in a string (truncated \\uXXXX escape); write `\\\\` for a backslash",
     (1, 7)),
])
def test_misplaced_declarations_and_bad_escapes_are_named_in_dpl_words(src, message, where):
    e = syntax_error(src)
    assert e.message == message
    assert pos(e.span) == where
    assert not any(w in e.format().lower() for w in _RULE_WORDS)


@pytest.mark.parametrize("src, message", [
    ("fn f(x) {\n  module M {}\n  return x\n}\nprint(f(1))", "prog.dpl:2:10: `module` declarations are allowed "
                                                              "only at top level"),
    ("fn f(x) {\n  train f { epochs = 1 }\n  return x\n}\nprint(f(1))", "prog.dpl:2:9: `train` declarations are "
                                                                         "allowed only at top level"),
    ("fn f(x) {\n  param W: [2] ~ zeros\n  return x\n}\nprint(f(1))", "prog.dpl:2:9: `param` declarations are "
                                                                       "allowed only at top level"),
    ("fn f(x) {\n  if x > 0 { use nn }\n  return x\n}\nprint(f(1))", "prog.dpl:2:18: `use` declarations are "
                                                                      "allowed only at top level"),
    ('g = fn(x) = f(x)\nfn f(x) {\n  import "a.dpl"\n  return x\n}\nprint(g(1))',
     "prog.dpl:3:10: `import` declarations are allowed only at top level"),
    ("module M {\n  fn call(x) {\n    param W: [2] ~ zeros\n    return x\n  }\n}\nm = M()\nprint(m(1))",
     "prog.dpl:3:11: `param` declarations are allowed only at top level"),
])
def test_declarations_inside_functions_are_named_by_run_and_check(src, message, tmp_path):
    with pytest.raises(DplError) as ei:
        dpl.loads(src, file="prog.dpl")
    assert ei.value.format().splitlines()[0] == message
    assert not any(w in ei.value.format().lower() for w in _RULE_WORDS)
    p = tmp_path / "prog.dpl"
    p.write_text(src)
    from dpl.check import check_file
    got = [e.format().splitlines()[0].replace(str(tmp_path) + "/", "") for e in check_file(p)]
    assert message in got
