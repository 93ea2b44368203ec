"""The recorded DAG ⟨n, l, E, fᵢ, vᵢ, αᵢ⟩ of LANGUAGE.md §1, through dpl.loads(...).trace(...).

* inputs (arguments and the parameters a call reads) are nodes 1..l, every edge (i, j) has i < j;
* literals and values that depend on no input are constants, not nodes;
* hard control flow decides what is recorded and leaves guards;
* a golden file pins `pretty()` (regenerate with DPL_REGEN_GOLDEN=1);
* random programs (hypothesis) keep these invariants and `prog.grad` matches central differences.
"""
from __future__ import annotations

import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dpl
from dpl.graph import Graph, raw

GOLDEN = Path(__file__).parent / "golden"


# ---- invariants every recorded graph satisfies -----------------------------------------------------

def check_dag(g: Graph) -> None:
    n, l = g.n, g.l
    assert n == len(g.nodes) and 0 <= l <= n
    # inputs first: 1..l are inputs, nothing after l is
    assert [g.op(i) for i in range(1, l + 1)] == ["input"] * l
    assert all(g.op(i) != "input" for i in range(l + 1, n + 1))
    assert all(g.inputs_of(i) == [] for i in range(1, l + 1))
    # literals and constants are not nodes: every computed node has a predecessor
    assert all(g.inputs_of(j) for j in range(l + 1, n + 1))
    # every edge goes from a lower to a higher number, and E is exactly the inputs_of relation
    assert all(1 <= i < j <= n for i, j in g.E)
    assert len(set(g.E)) == len(g.E)
    assert set(g.E) == {(i, j) for j in range(1, n + 1) for i in g.inputs_of(j)}
    # α and v: each node's inputs are its predecessors' values, and v = f(α)
    for j in range(l + 1, n + 1):
        node = g.nodes[j - 1]
        assert node.id == j
        for pos, parent in node.parents:
            assert node.args[pos] is parent.value
        again = node.op.fwd(*node.args, **node.attrs)
        np.testing.assert_array_equal(np.asarray(raw(again)), np.asarray(g.value(j)))
    # networkx: a DAG with the same nodes and edges
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph) and nx.is_directed_acyclic_graph(d)
    assert sorted(d.nodes) == list(range(1, n + 1))
    assert set(d.edges) == set(g.E)
    assert d.graph["n"] == n and d.graph["l"] == l
    assert all(d.nodes[i]["op"] == g.op(i) for i in range(1, n + 1))
    # guards refer to recorded nodes
    for node, taken, _span, _at in g.guards:
        assert 1 <= node.id <= n and g.nodes[node.id - 1] is node
        assert isinstance(taken, (bool, int, np.ndarray))  # a branch, a loop count, an index


def input_names(g: Graph) -> list[str]:
    return [g.nodes[i - 1].name for i in range(1, g.l + 1)]


def ops(g: Graph) -> list[str]:
    return [g.op(i) for i in range(1, g.n + 1)]


PROGRAM = """
param W: [2, 2] = [[1.0, 0.5], [-0.5, 1.0]]
param b: [2] = [0.1, -0.1]
param unused: [3] ~ zeros
module Lin(n) {
    param V: [n] ~ ones
    fn call(x) = x * V
}
lin = Lin(2)
fn layer(x) = tanh(x @ W + b)
fn twice(x) = W @ x + W @ x
fn consts(x) = x * (2.0 * 3.0 + pi) + [1.0, 2.0]
fn constant(x) = 3.0 * 2.0
fn stacked(x) = [x, 1.0, x * b[0]]
fn mod(x) = lin(x) + lin.V * b
fn cube(x) = x ^ 3
fn nested(x) = grad(cube)(x) * x
fn pair(x) {
    return x * 2.0, x + 1.0
}
fn branch(x, y) {
    if sum(x) > 0 {
        return x * y + 1.5
    }
    return x - y
}
fn doubling(x) {
    while x < 10.0 {
        x = x * 2.0
    }
    return x
}
fn unrolled(x) {
    s = 0.0
    for i in range(3) {
        s = s + x * i
    }
    return s
}
fn counted(x, n) {
    s = x
    for i in range(n) {
        s = s * x
    }
    return s
}
fn pick(x, i) = x[i] * 2.0
fn softly(x) {
    y = x
    soft if sigmoid(x) { y = y * 2.0 } else { y = y + 1.0 }
    return y
}
"""


@pytest.fixture(scope="module")
def prog():
    return dpl.loads(PROGRAM, file="graph.dpl")


# ---- inputs, numbering, edges -------------------------------------------------------------------

def test_inputs_are_args_then_parameters_read(prog):
    g = prog.trace("layer", [1.0, 2.0])
    check_dag(g)
    assert (g.n, g.l) == (6, 3)
    assert input_names(g) == ["arg0", "W", "b"]           # `unused` is not read, so not an input
    assert ops(g) == ["input", "input", "input", "matmul", "add", "tanh"]
    assert g.E == [(1, 4), (2, 4), (4, 5), (3, 5), (5, 6)]
    assert g.inputs_of(5) == [4, 3]
    np.testing.assert_allclose(g.value(1), [1.0, 2.0])
    np.testing.assert_allclose(g.value(2), [[1.0, 0.5], [-0.5, 1.0]])
    np.testing.assert_allclose(g.value(6), np.tanh(np.array([1.0, 2.0]) @ prog.params["W"] + prog.params["b"]))
    np.testing.assert_allclose(g.result, g.value(6))
    assert g.outputs == [6]
    assert g.guards == []


def test_a_parameter_read_twice_is_one_input(prog):
    g = prog.trace("twice", [1.0, 2.0])
    check_dag(g)
    assert input_names(g) == ["arg0", "W"]
    assert ops(g) == ["input", "input", "matmul", "matmul", "add"]
    assert g.E == [(2, 3), (1, 3), (2, 4), (1, 4), (3, 5), (4, 5)]


def test_parameter_read_late_is_still_numbered_among_the_inputs(prog):
    g = prog.trace("stacked", 1.5)
    check_dag(g)
    assert input_names(g) == ["arg0", "b"]
    assert ops(g) == ["input", "input", "index", "mul", "stack"]
    np.testing.assert_allclose(g.value(5), [1.5, 1.0, 1.5 * 0.1])


def test_module_parameters_are_inputs_with_their_full_name(prog):
    g = prog.trace("mod", [1.0, 2.0])
    check_dag(g)
    assert input_names(g) == ["arg0", "lin.V", "b"]


def test_literals_are_not_nodes(prog):
    g = prog.trace("consts", 1.5)
    check_dag(g)
    assert ops(g) == ["input", "mul", "add"]          # 2.0 * 3.0 + pi and [1.0, 2.0] are constants
    assert g.E == [(1, 2), (2, 3)]
    np.testing.assert_allclose(g.value(3), 1.5 * (6 + np.pi) + np.array([1.0, 2.0]))


def test_a_function_of_no_input_records_only_the_inputs(prog):
    g = prog.trace("constant", 1.0)
    check_dag(g)
    assert (g.n, g.l, g.E) == (1, 1, [])
    assert g.result == 6.0 and g.outputs == []


def test_tuple_results(prog):
    g = prog.trace("pair", 1.0)
    check_dag(g)
    assert ops(g) == ["input", "mul", "add"]
    assert g.outputs == [2, 3]
    assert g.result == (2.0, 2.0)


def test_nested_grad_is_recorded_in_the_outer_graph(prog):
    g = prog.trace("nested", 2.0)
    check_dag(g)
    assert g.l == 1 and g.n > 3
    assert g.result == pytest.approx(3 * 2.0 ** 2 * 2.0)
    assert g.op(g.n) == "mul" and 1 in g.inputs_of(g.n)


def test_soft_if_becomes_ordinary_nodes(prog):
    g = prog.trace("softly", 0.3)
    check_dag(g)
    assert g.guards == []                        # soft control flow takes no hard decision
    assert "sigmoid" in ops(g)
    p = 1 / (1 + np.exp(-0.3))
    assert g.result == pytest.approx(p * 0.6 + (1 - p) * 1.3)


# ---- hard control flow decides what is recorded ---------------------------------------------------------

def test_hard_if_records_the_branch_taken(prog):
    pos = prog.trace("branch", [1.0, 1.0], [2.0, 3.0])
    neg = prog.trace("branch", [-1.0, -1.0], [2.0, 3.0])
    check_dag(pos)
    check_dag(neg)
    assert ops(pos) == ["input", "input", "sum", "gt", "mul", "add"]
    assert ops(neg) == ["input", "input", "sum", "gt", "sub"]
    assert [(node.id, taken) for node, taken, _, _ in pos.guards] == [(4, True)]
    assert [(node.id, taken) for node, taken, _, _ in neg.guards] == [(4, False)]
    _, _, span, _ = pos.guards[0]
    assert (span.file, span.line) == ("graph.dpl", 22)
    np.testing.assert_allclose(pos.result, [3.5, 4.5])
    np.testing.assert_allclose(neg.result, [-3.0, -4.0])


def test_hard_while_unrolls_as_many_times_as_it_runs(prog):
    g1 = prog.trace("doubling", 1.0)
    g3 = prog.trace("doubling", 3.0)
    check_dag(g1)
    check_dag(g3)
    assert ops(g1) == ["input"] + ["lt", "mul"] * 4 + ["lt"]
    assert ops(g3) == ["input"] + ["lt", "mul"] * 2 + ["lt"]
    assert [taken for _, taken, _, _ in g1.guards] == [True] * 4 + [False]
    assert [taken for _, taken, _, _ in g3.guards] == [True, True, False]
    assert (g1.result, g3.result) == (16.0, 12.0)
    # the chain of multiplications: each mul reads the previous one
    muls = [i for i in range(1, g1.n + 1) if g1.op(i) == "mul"]
    assert [g1.inputs_of(m) for m in muls] == [[1]] + [[m] for m in muls[:-1]]


def test_for_is_unrolled_into_the_graph(prog):
    g = prog.trace("unrolled", 2.0)
    check_dag(g)
    assert ops(g) == ["input", "mul", "add", "mul", "add", "mul", "add"]
    assert g.result == pytest.approx(2.0 * (0 + 1 + 2))


def test_loop_count_from_an_integer_argument_changes_the_graph(prog):
    g1, g3 = prog.trace("counted", 2.0, 1), prog.trace("counted", 2.0, 3)
    check_dag(g1)
    check_dag(g3)
    assert ops(g1).count("mul") == 1 and ops(g3).count("mul") == 3
    assert (g1.result, g3.result) == (4.0, 16.0)


def test_loop_count_from_a_traced_integer_is_a_guard(prog):
    assert prog.trace("counted", 2.0, 3).guards


def test_index_from_a_traced_integer_is_a_guard(prog):
    g = prog.trace("pick", [1.0, 2.0, 3.0], 1)
    assert g.result == 4.0
    assert g.guards


# ---- golden file ----------------------------------------------------------------------------------

GOLDEN_PROGRAM = """\
param W: [2, 3] = [[0.5, -1.0, 0.25], [1.0, 0.5, -0.5]]
param b: [3] ~ zeros
fn f(x, t) {
    h = tanh(t / 10 @ W + b)
    if sum(h) > 0 {
        h = h * x
    } else {
        h = -h ^ 2
    }
    for i in range(2) {
        h = h + sin(h) * i
    }
    return mean(h)
}
"""


@pytest.mark.parametrize("name, args", [
    ("graph_positive", (2.0, [[1.0, 2.0]])),
    ("graph_negative", (2.0, [[-10.0, -10.0]])),
])
def test_pretty_golden(name, args):
    g = dpl.loads(GOLDEN_PROGRAM, file="golden.dpl").trace("f", *args)
    check_dag(g)
    text = g.pretty() + "\n"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("DPL_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with DPL_REGEN_GOLDEN=1 to create it"
    assert text == path.read_text()


def test_golden_branches_differ():
    a = (GOLDEN / "graph_positive.txt").read_text()
    b = (GOLDEN / "graph_negative.txt").read_text()
    assert a != b
    assert "neg(" in b and "neg(" not in a


# ---- property: random programs --------------------------------------------------------------------------

CONSTS = ["0.5", "1.5", "0.25", "2.0", "3", "2", "pi"]
UNARY = ["tanh({})", "sin({})", "cos({})", "exp(0.5 * sin({}))", "sigmoid({})", "(-{})", "({}) ^ 2",
         "softplus({})", "(2 * {})"]
BINARY = ["({} + {})", "({} - {})", "({} * {})", "({} / (1.5 + ({}) ^ 2))", "({} * 0.5 + {})"]


@st.composite
def expressions(draw, names, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            return draw(st.sampled_from(names))
        return draw(st.sampled_from(CONSTS))
    if draw(st.booleans()):
        return draw(st.sampled_from(UNARY)).format(draw(expressions(names, depth - 1)))
    a, b = draw(expressions(names, depth - 1)), draw(expressions(names, depth - 1))
    return draw(st.sampled_from(BINARY)).format(a, b)


@st.composite
def programs(draw):
    base = ["x", "y", "p0", "p1"]
    lines = [f"param p0: [] = {draw(st.floats(-1, 1)):.3f}",
             f"param p1: [] = {draw(st.floats(-1, 1)):.3f}",
             "fn f(x, y) {",
             f"    a = {draw(expressions(base))}"]
    cond = None
    if draw(st.booleans()):
        c1, c2 = draw(expressions(base + ["a"], 2)), draw(expressions(base + ["a"], 2))
        cond = f"{c1} - ({c2})"
        lines.append(f"    if {c1} > {c2} {{")
        if draw(st.booleans()):
            lines.append(f"        return {draw(expressions(base + ['a']))} + x * 0.0")
        else:
            lines.append(f"        a = {draw(expressions(base + ['a']))}")
        lines.append("    } else {")
        lines.append(f"        a = a * {draw(expressions(base + ['a'], 2))}")
        lines.append("    }")
    k = draw(st.integers(0, 3))
    if k:
        lines.append(f"    for i in range({k}) {{")
        update = draw(st.sampled_from(["a = tanh({})", "a = a + 0.25 * sin({})", "a = 0.5 * a + tanh({})"]))
        lines.append("        " + update.format(draw(expressions(base + ["a", "i"], 2))))
        lines.append("    }")
    # `+ 0.0`: integer constants and `a = 3` must not make f return an integer (grad wants a float)
    lines.append(f"    return a * {draw(expressions(base + ['a'], 2))} + {draw(expressions(base + ['a'], 2))} + 0.0")
    lines.append("}")
    if cond is not None:
        # the branch condition as seen from the start of f (before `a` changes)
        lines.append(f"fn cond(x, y) {{\n    a = {lines[3].split('= ', 1)[1]}\n    return {cond}\n}}")
    return "\n".join(lines) + "\n"


def central(prog, x, y, argnum, h=1e-6):
    if argnum == 0:
        return (float(prog.call("f", x + h, y)) - float(prog.call("f", x - h, y))) / (2 * h)
    return (float(prog.call("f", x, y + h)) - float(prog.call("f", x, y - h))) / (2 * h)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=programs(), x=st.floats(-2, 2), y=st.floats(-2, 2))
def test_random_programs(src, x, y):
    prog = dpl.loads(src, file="random.dpl")
    h = 1e-6
    if "fn cond" in src:
        # keep the finite-difference stencil on one side of the hard branch
        signs = {np.sign(float(prog.call("cond", x + dx, y + dy)))
                 for dx, dy in ((0, 0), (h, 0), (-h, 0), (0, h), (0, -h))}
        assume(len(signs) == 1 and 0.0 not in signs)
        assume(abs(float(prog.call("cond", x, y))) > 1e-4)

    g = prog.trace("f", x, y)
    check_dag(g)
    names = input_names(g)
    assert names[:2] == ["arg0", "arg1"]
    assert set(names[2:]) <= {"p0", "p1"}
    value = float(prog.call("f", x, y))
    assert float(np.asarray(g.result)) == value
    if g.outputs:
        assert float(g.value(g.outputs[0])) == value
    if "fn cond" in src and g.guards:
        assert g.op(g.guards[0][0].id) == "gt"

    for argnum in (0, 1):
        analytic = float(prog.grad("f", argnum)(x, y))
        numeric = central(prog, x, y, argnum, h)
        assert np.isfinite(analytic)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-5), (src, x, y, argnum)


def test_random_program_generator_covers_control_flow():
    """The generator really produces hard ifs, early returns and loops (else the property tests little)."""
    seen = {"if": 0, "return a": 0, "for": 0, "early": 0}

    @settings(max_examples=80, deadline=None, database=None, derandomize=True)
    @given(programs())
    def collect(src):
        seen["if"] += "    if " in src
        seen["for"] += "for i in range" in src
        seen["early"] += "        return " in src
        seen["return a"] += "return a *" in src

    collect()
    assert all(v > 0 for v in seen.values()), seen
