"""The language of issue 10 (docs/LANGUAGE.md §12): nested functions and closures, anonymous functions, lists,
modules that own modules, tuples, default parameters and keyword arguments, `x += e`, `//`, `...`, and
`train model.loss`. Exact output, errors with positions, gradients against finite differences, `dpl check`."""
from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest

import dpl
from dpl.check import check_file
from dpl.errors import DplError
from dpl.gradcheck import gradcheck
from dpl.values import List

from conftest import check_grads


def run(src: str) -> str:
    out = io.StringIO()
    dpl.loads(textwrap.dedent(src), file="prog.dpl", stdout=out)
    return out.getvalue()


def load(src: str):
    return dpl.loads(textwrap.dedent(src), file="prog.dpl")


def error_of(src: str) -> DplError:
    with pytest.raises(DplError) as ei:
        dpl.loads(textwrap.dedent(src), file="prog.dpl")
    return ei.value


def first_line(e: DplError) -> str:
    return e.format().splitlines()[0]


def check(src: str, tmp_path) -> list[str]:
    """`dpl check`'s messages for src, as first lines FILE:LINE:COL: message."""
    p = tmp_path / "prog.dpl"
    p.write_text(textwrap.dedent(src))
    return [e.format().splitlines()[0].replace(str(tmp_path) + "/", "") for e in check_file(p)]


# ---- nested functions and closures --------------------------------------------------------------------------

WIND = """\
fn shoot(v, w) {
    wind = w
    fn f(t, s) = [s[1], -9.81 - 0.1 * (s[1] - wind)]
    return odeint(f, [0.0, v], 0.0, 1.0)
}
fn shoot_explicit(v, w) = odeint(fn(t, s) = [s[1], -9.81 - 0.1 * (s[1] - w)], [0.0, v], 0.0, 1.0)
print(shoot(5.0, 1.0), shoot(5.0, 0.0))
print(shoot_explicit(5.0, 1.0), shoot_explicit(5.0, 0.0))
"""


def test_the_issue_wind_example_sees_the_enclosing_variable():
    lines = run(WIND).splitlines()
    assert lines[0] == lines[1]
    a, b = (np.array(eval(part)) for part in lines[0].replace("] [", "]|[").split("|"))
    assert not np.allclose(a, b)  # the wind changes the flight
    # dv/dt = -9.81 - 0.1 (v - w): v(1) = w - 98.1 + (5 - w + 98.1) e^-0.1
    for got, w in ((a, 1.0), (b, 0.0)):
        np.testing.assert_allclose(got[1], w - 98.1 + (5 - w + 98.1) * np.exp(-0.1), rtol=1e-9)


def test_a_nested_function_reads_variables_as_they_are_when_it_is_called():
    assert run("""
        fn outer() {
            k = 1
            fn g() = k
            a = g()
            k = 2
            return a, g()
        }
        print(outer())
    """) == "(1, 2)\n"


def test_nested_functions_nest_recurse_and_are_hoisted_in_their_body():
    assert run("""
        fn outer(n) {
            r = fact(n)
            fn fact(m) {
                if m <= 1 { return 1 }
                return m * fact(m - 1)
            }
            fn twice(x) {
                fn once(y) = y + n
                return once(once(x))
            }
            return r, twice(0)
        }
        print(outer(5))
    """) == "(120, 10)\n"


def test_functions_are_values_returned_stored_and_passed_on():
    assert run("""
        fn adder(k) = fn(x) = x + k
        fn compose(f, g) = fn(x) = f(g(x))
        fs = [adder(1), adder(10), fn(x) = x * 2]
        h = compose(fs[0], fs[2])
        print(h(5), fs[1](5), len(fs))
        fn apply_all(fs, x) {
            for f in fs { x = f(x) }
            return x
        }
        print(apply_all(fs, 1))
        print(adder(1), fs[2])
    """) == "11 15 3\n24\n<fn fn at line 2> <fn fn at line 4>\n"


def test_a_closure_keeps_its_frame_alive_after_the_call_returns():
    assert run("""
        fn counter(start) {
            fn get() = start * 10
            return get
        }
        a = counter(1)
        b = counter(2)
        print(a(), b())
    """) == "10 20\n"


def test_module_functions_can_nest_and_see_the_instance():
    assert run("""
        module Scale(k) {
            param s: [] = 2.0
            fn call(xs) {
                fn one(x) = x * s * k
                return one(xs)
            }
        }
        m = Scale(3.0)
        print(m(1.0), odeint(fn(t, y) = m(y) * 0.0, 1.0, 0.0, 1.0))
    """) == "6.0 1.0\n"


def test_anonymous_function_passed_to_grad_and_odeint():
    assert run("""
        k = 0.5
        print(grad(fn(x) = x ^ 3)(2.0))
        print(odeint(fn(t, y) = -k * y, 1.0, 0.0, 1.0, steps = 10))
    """) == f"12.0\n{_rk4_decay(0.5, 10)!r}\n"


def _rk4_decay(k, steps):
    y, h = 1.0, 1.0 / steps
    for _ in range(steps):
        k1 = -k * y
        k2 = -k * (y + h / 2 * k1)
        k3 = -k * (y + h / 2 * k2)
        k4 = -k * (y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def test_nested_fn_never_says_fndef_or_unknown_name(tmp_path):
    src = """
        fn outer(x) {
            fn inner(y) = y + x
            return inner(1.0)
        }
        print(outer(2.0))
    """
    assert run(src) == "3.0\n"
    assert check(src, tmp_path) == []


def test_gradient_through_a_closure_matches_finite_differences():
    prog = load("""
        fn loss(k, y0) {
            fn f(t, y) = -k * y + sin(y)
            g = fn(x) = x * k
            return sum(g(odeint(f, y0, 0.0, 1.0, steps = 20)))
        }
    """)
    check_grads(prog, "loss", [0.7, [0.3, -1.2]], argnums=(0, 1))


def test_second_order_through_a_closure():
    assert run("""
        fn f(a) {
            fn g(x) = a * x ^ 3
            return grad(g)
        }
        print(grad(fn(x) = f(2.0)(x))(1.5))
    """) == "18.0\n"  # d/dx 3·a·x² = 6·a·x


# ---- default parameters, keyword arguments, tuples ------------------------------------------------------------

def test_defaults_and_keywords():
    assert run("""
        fn f(x, k = 2, m = k + 1) = x * k + m
        print(f(1), f(1, 5), f(1, m = 0), f(x = 1, k = 3))
        module Lin(n, scale = 2.0) {
            param w: [n] = scale
        }
        a = Lin(2)
        b = Lin(2, scale = 0.5)
        print(a.w, b.w)
    """) == "5 11 2 7\n[2.0, 2.0] [0.5, 0.5]\n"


def test_tuple_literals_and_indexing():
    assert run("""
        t = (1, 2.5, [1, 2])
        print(t, t[0], t[-1], len(t), (3,))
        a, b = (4, 5)
        print(a + b)
    """) == "(1, 2.5, [1, 2]) 1 [1, 2] 3 (3,)\n9\n"


def test_augmented_assignment_floor_division_and_ellipsis():
    assert run("""
        x = 5
        x += 2
        x -= 1
        x *= 3
        y = 7.0
        y /= 2
        print(x, y, 7 // 2, -7 // 2, 7.5 // 2, -7.5 // 2.0, 7 // 2.0)
        z = reshape(arange(24), [2, 3, 4])
        print(z[..., 0], z[0, ..., 1], z[1, ...][2])
    """) == ("18 3.5 3 -4 3.0 -4.0 3.0\n[[0, 4, 8], [12, 16, 20]] [1, 5, 9] [20, 21, 22, 23]\n")


def test_floor_division_has_a_zero_gradient_and_augmented_assignment_differentiates():
    assert run("""
        fn f(x) {
            y = x
            y *= x
            y += x // 1.0
            return y
        }
        print(grad(f)(3.5))
    """) == "7.0\n"


# ---- lists ----------------------------------------------------------------------------------------------

def test_lists_append_len_index_iterate_print():
    assert run("""
        xs = []
        print(xs, len(xs))
        for i in range(4) { xs = append(xs, float(i) * ones([2])) }
        print(len(xs), xs[0], xs[-1], xs[1:3])
        s = 0.0
        for v in xs { s = s + sum(v) }
        print(s)
        mixed = [1.0, [1, 2, 3], (1, 2), "s", fn(x) = x]
        print(len(mixed), mixed[1], mixed[2][1], mixed[4](7))
        nested = append(append([], []), [1.0, [2.0]])
        print(nested)
    """) == ("[] 0\n4 [0.0, 0.0] [3.0, 3.0] [[1.0, 1.0], [2.0, 2.0]]\n12.0\n"
             "5 [1, 2, 3] 2 7\n[[], [1.0, [2.0]]]\n")


def test_brackets_of_equal_shapes_stay_tensor_literals():
    assert run("""
        a = [1, 2]
        b = [[1.0, 2.0], [3.0, 4.0]]
        c = [[1.0], [2.0, 3.0]]
        print(shape(a), shape(b), len(c), a * 2)
        param s: [] = 0.5
        print(zeros([]), shape(ones([])), reshape([5.0], []))
    """) == "[2] [2, 2] 2 [2, 4]\n0.0 [] 5.0\n"


def test_lists_are_values_append_does_not_change_the_list_it_was_given():
    assert run("""
        a = append([], 1)
        b = append(a, 2)
        c = append(a, 3)
        d = append(b, 4)
        print(a, b, c, d)
    """) == "[1] [1, 2] [1, 3] [1, 2, 4]\n"


def test_appending_shares_storage_so_t_appends_cost_o_t():
    xs = List()
    chain = [xs]
    for i in range(1000):
        chain.append(chain[-1].append(i))
    assert all(v.store is xs.store for v in chain)  # no copy along the chain
    assert len(xs.store) == 1000 and list(chain[10]) == list(range(10))
    fork = chain[10].append("x")  # a second append to an older list copies its 10 items, once
    assert fork.store is not xs.store and list(fork) == list(range(10)) + ["x"] and chain[11][10] == 10


def test_stack_and_concat_of_a_list_record_one_node():
    prog = load("""
        fn f(x) {
            ys = []
            for i in range(50) { ys = append(ys, x * float(i)) }
            return sum(stack(ys, axis = 0)) + sum(concat(ys, axis = 0))
        }
    """)
    g = prog.trace("f", np.ones(3))
    names = [g.op(i) for i in range(g.l + 1, g.n + 1)]
    assert names.count("stack") == 1 and names.count("concat") == 1
    assert names.count("mul") == 50


def test_gradient_through_lists_matches_finite_differences():
    prog = load("""
        fn f(x, w) {
            hs = []
            h = x
            for i in range(4) {
                h = tanh(h * w + 0.1 * float(i))
                hs = append(hs, h)
            }
            fs = [fn(v) = v ^ 2, fn(v) = sin(v)]
            return sum(stack(hs, axis = 1) ^ 2) + sum(concat(hs, axis = 0)) + sum(fs[0](hs[-1])) + sum(fs[1](hs[0]))
        }
    """)
    check_grads(prog, "f", [[0.3, -0.5], [1.2, 0.7]], argnums=(0, 1))


# ---- modules that own modules -------------------------------------------------------------------------------

S2S = """\
module Lin(n_in, n_out) {
    param W: [n_in, n_out] ~ glorot
    param b: [n_out] ~ zeros
    fn call(x) = x @ W + b
}
module Seq2Seq(n, h) {
    enc = Lin(n, h)
    dec = Lin(h, n)
    blocks = [Lin(h, h), Lin(h, h)]
    fn call(x) {
        z = tanh(enc(x))
        for blk in blocks { z = tanh(blk(z)) }
        return dec(z)
    }
}
s2s = Seq2Seq(2, 3)
fn loss(x) = sum(s2s(x) ^ 2)
"""


def test_sub_instances_are_named_along_the_path():
    prog = load(S2S)
    assert list(prog.params) == ["s2s.enc.W", "s2s.enc.b", "s2s.dec.W", "s2s.dec.b", "s2s.blocks.0.W",
                                 "s2s.blocks.0.b", "s2s.blocks.1.W", "s2s.blocks.1.b"]
    assert run(S2S + "print(s2s.enc, s2s.blocks[1], shape(s2s.dec.W), s2s.blocks[0].b)\n") == \
        "<Lin instance s2s.enc> <Lin instance s2s.blocks.1> [3, 2] [0.0, 0.0, 0.0]\n"


def test_gradients_of_sub_instance_parameters_match_finite_differences():
    rows = gradcheck(load(S2S), "loss", [[0.5, -1.0], [1.5, 0.2]])
    assert [r.name for r in rows][:3] == ["arg 0 (x)", "s2s.enc.W", "s2s.enc.b"]
    assert len(rows) == 9
    for r in rows:
        assert r.error < 1e-7, r.name
        assert np.abs(r.analytic).max() > 1e-6, r.name


def test_top_level_lists_of_instances_and_train_model_loss(tmp_path):
    src = tmp_path / "fit.dpl"
    src.write_text(textwrap.dedent("""
        module Fit(n) {
            param w: [n] ~ zeros
            fn loss(x) = mean((x @ w - 1.0) ^ 2)
        }
        layers = []
        for i in range(2) { layers = append(layers, Fit(2)) }
        m = layers[1]
        xs = ones([8, 2])
        train m.loss over xs {
            optimizer = adam(lr = 0.1)
            epochs = 50
        }
        print(m.loss(xs) < 0.01, layers[0].w)
    """))
    out = io.StringIO()
    from dpl.interp import Interpreter
    from dpl.train import Trainer
    interp = Interpreter(mode="train", stdout=out, trainer=Trainer(progress=False))
    interp.run_file(src)
    assert out.getvalue() == "true [0.0, 0.0]\n"
    assert list(interp.params) == ["layers.0.w", "layers.1.w"]


def test_params_file_and_repl_show_nested_names(tmp_path):
    from dpl.cli import main
    p = tmp_path / "s2s.dpl"
    p.write_text(S2S + "train loss over ones([4, 2]) {\n    epochs = 1\n}\n")
    out = tmp_path / "s2s.params.npz"
    assert main(["train", str(p), "--out", str(out)]) == 0
    with np.load(out) as z:
        assert {"s2s.enc.W", "s2s.blocks.1.b"} <= set(z.files)


# ---- errors, with positions, and `dpl check` agreeing with `dpl run` ---------------------------------------------

@pytest.mark.parametrize("src, message", [
    ("fn f() {\n    fn g() = h\n    return g()\n}\nf()\n", "prog.dpl:2:14: unknown name `h`"),
    ("g = fn(x) = x + y\nprint(g(1))\n", "prog.dpl:1:17: unknown name `y`"),
    ("g = fn(x, y) = x\nprint(g(1))\n", "prog.dpl:2:7: `fn at line 1` takes 2 arguments (x, y), missing `y`"),
    ("fn f(x, k = 1) = x\nprint(f())\n", "prog.dpl:2:7: `f` takes 1 to 2 arguments (x, k = ...), missing `x`"),
    ("fn f(x, k = 1) = x\nprint(f(1, 2, 3))\n", "prog.dpl:2:7: `f` takes 1 to 2 arguments (x, k = ...), got 3"),
    ("fn f(x, k = 1) = x\nprint(f(1, q = 2))\n", "prog.dpl:2:7: `f` has no parameter `q`"),
    ("module M(n) {\n    param W: [n] ~ zeros\n}\nfn f() {\n    m = M(2)\n    return m\n}\nf()\n",
     "prog.dpl:5:9: module instances are created only in an assignment at top level or in a module body, as "
     "`name = M(...)`"),
    ("fn f() {\n    param W: [2] ~ zeros\n}\nf()\n",
     "prog.dpl:2:11: `param` declarations are allowed only at top level"),
    ("xs = append([], 1)\nprint(xs[3])\n", "prog.dpl:2:7: index 3 is out of range for a list of 1"),
    ("xs = append([], 1)\nprint(xs[0, 1])\n", "prog.dpl:2:7: a list is indexed by one integer or a slice"),
    ("print(append(1.0, 2))\n", "prog.dpl:1:7: `append` adds to a list, got a float scalar; start one with `xs = []`"),
    ("print(append([]))\n", "prog.dpl:1:7: wrong arguments to `append`: missing a required argument: 'v'; usage: "
                            "append(xs, v)"),
    ("print(stack([1.0, fn(x) = x]))\n", "prog.dpl:1:7: an item of the list given to `stack` must be a number or "
                                         "tensor, got <fn fn at line 1>"),
    ("x = [[1.0], [2.0, 3.0]]\ny = x + 1\n",
     "prog.dpl:2:5: `+` needs numbers or tensors, got a list of 2 (brackets around tensors of different shapes [1] "
     "and [2] make a list, not a tensor)"),
    ("t = (1, 2)\nprint(t[2])\n", "prog.dpl:2:7: index 2 is out of range for a tuple of 2"),
    ("x = 1\ny += x\n", "prog.dpl:2:1: unknown name `y`"),
    ("x = ones([2])\nprint(x[..., ...])\n", "prog.dpl:2:7: bad index for a tensor of shape [2]: an index can only "
                                            "have a single ellipsis ('...')"),
])
def test_errors_of_run_and_check(src, message, tmp_path):
    e = error_of(src)
    assert first_line(e) == message
    assert "fndef" not in e.format().lower()
    got = check(src, tmp_path)
    if "out of range" in message or "indexed by" in message or "adds to" in message \
            or "item of the list" in message or "needs numbers" in message or "bad index" in message:
        assert got == []  # found only by running: no false alarm
    else:
        assert got and got[0] == message  # `dpl check` finds it without running


@pytest.mark.parametrize("src, message", [
    ("fn f(x, k = 1, y) = x\n", "prog.dpl:1:4: parameter `y` without a default follows one with a default"),
    ("g = fn(x, x) = x\n", "prog.dpl:1:5: function `fn` has a repeated parameter name `x`"),
    ("x = (1, )\ny = ( , 2)\n", "prog.dpl:2:7: syntax error: unexpected `,`; expected an expression"),
    ("x[0] += 1\n", "prog.dpl:1:7: syntax error: unexpected `=`; expected an expression"),
])
def test_syntax_errors(src, message):
    assert first_line(error_of(src)) == message


def test_check_accepts_closures_lists_and_sub_modules(tmp_path):
    assert check(S2S + WIND + "fn f(x, k = 2) = x * k\nprint(f(1, k = 3))\nxs = []\nxs = append(xs, 1)\n",
                 tmp_path) == []


# ---- soft control flow and parameters (issue 10's bugs) ---------------------------------------------------------

def test_soft_if_and_soft_while_assign_a_top_level_parameter():
    assert run("""
        param w: [] = 2.0
        soft if 0.25 { w = w * 3.0 }
        print(w)
        param v: [] = 1.0
        soft while 1.0 max 3 { v = v * 2.0 }
        print(v)
    """) == "3.0\n8.0\n"


def test_one_branch_soft_if_assigning_a_parameter_inside_a_function():
    prog = load("""
        param w: [] = 2.0
        module M() {
            param u: [] = 4.0
            fn f(p) {
                soft if p { u = u * 3.0 }
                return u
            }
        }
        m = M()
        fn g(p) {
            soft if p { w = w * 3.0 }
            return w
        }
    """)
    assert prog.call("g", 0.25) == pytest.approx(3.0)
    assert prog.interp.call(prog.interp.attribute(prog.function("m"), "f", None), [np.float64(0.5)], {}, None) \
        == pytest.approx(8.0)
    check_grads(prog, "g", [0.3], argnums=(0,))


# ---- function transforms ---------------------------------------------------------------------------------

TRANSFORMS = """\
fn f(x) = [x[0] ^ 2 * x[1], sin(x[1]) * x[0]]
x = [1.5, 0.5]
print(jacobian(f)(x))
print(vjp(f, x, [1.0, 2.0]), jvp(f, x, [1.0, 2.0]))
print(hessian(fn(x) = x[0] ^ 2 * x[1] ^ 3)(x))
print(grad(fn(a, b) = a * b ^ 2, argnum = [0, 1])(3.0, 2.0))
print(value_and_grad(fn(a, b) = a * b ^ 2, argnum = [0, 1])(3.0, 2.0))
print(grad(fn(x) = stop_gradient(x) * x)(3.0))
print(vmap(fn(x) = sum(x ^ 2))(reshape(arange(6), [3, 2])))
print(vmap(fn(x, w) = x * w, in_axes = [0, "none"])(reshape(arange(6), [3, 2]), 2.0))
print(vmap(fn(x, y) = (x + y, x - y), in_axes = [1, 0])(reshape(arange(6), [2, 3]), [10, 20, 30]))
print(grad(fn(x) = sum(jvp(fn(y) = y ^ 3, x, ones([2]))))(x))
"""


def test_function_transforms_exact():
    s, c = float(np.sin(0.5)), float(np.cos(0.5))
    assert run(TRANSFORMS).splitlines() == [
        f"[[1.5, 2.25], [{s!r}, {1.5 * c!r}]]",
        f"[{1.5 + 2 * s!r}, {2.25 + 2 * 1.5 * c!r}] [6.0, {s + 2 * 1.5 * c!r}]",
        "[[0.25, 2.25], [2.25, 6.75]]",
        "(4.0, 12.0)",
        "(12.0, (4.0, 12.0))",
        "3.0",
        "[1, 13, 41]",
        "[[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]",
        "([[10, 13], [21, 24], [32, 35]], [[-10, -7], [-19, -16], [-28, -25]])",
        "[9.0, 3.0]",
    ]


def test_transforms_against_finite_differences():
    from conftest import numeric_grad
    prog = load("""
        fn f(x) = tanh(x[0] * x ^ 2 + sin(x))
        fn s(x) = sum(exp(x[1] * x) * x[0])
        fn jac(x) = jacobian(f)(x)
        fn hes(x) = hessian(s)(x)
        fn jv(x, v) = jvp(f, x, v)
        fn vj(x, v) = vjp(f, x, v)
        fn vm(xs) = vmap(f)(xs)
        fn loss_jac(x) = sum(jacobian(f)(x) ^ 2)
        fn loss_vmap(xs) = sum(vmap(fn(x) = f(x) * x[0])(xs))
    """)
    x = np.array([0.3, -0.7, 1.1])
    v = np.array([0.5, 2.0, -1.0])
    J = prog.call("jac", x)
    np.testing.assert_allclose(J, np.stack([numeric_grad(lambda y, i=i: prog.call("f", y)[i], x) for i in range(3)]),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(prog.call("hes", x), np.stack([numeric_grad(
        lambda y, i=i: prog.grad("s")(y)[i], x) for i in range(3)]), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(prog.call("jv", x, v), J @ v, rtol=1e-12)
    np.testing.assert_allclose(prog.call("vj", x, v), v @ J, rtol=1e-12)
    xs = np.array([[0.3, -0.7, 1.1], [1.0, 0.2, -0.4]])
    np.testing.assert_allclose(prog.call("vm", xs), np.stack([prog.call("f", r) for r in xs]), rtol=1e-12)
    check_grads(prog, "loss_jac", [x], argnums=(0,))  # second order through jacobian
    check_grads(prog, "loss_vmap", [xs], argnums=(0,))
    prog2 = load("fn f(x) = tanh(x[0] * x ^ 2 + sin(x))\nfn g(x, v) = sum(jvp(f, x, v) ^ 2)\n")
    check_grads(prog2, "g", [x, v], argnums=(0, 1))  # through the double-VJP


@pytest.mark.parametrize("src, message", [
    ("print(grad(fn(x) = x * ones([2]))(1.0))\n",
     "prog.dpl:1:7: grad needs a function returning a 0-d float value, got a float tensor of shape [2]; for a tensor "
     "result, jacobian(f) gives every derivative"),
    ("print(jacobian(3.0))\n", "prog.dpl:1:7: `jacobian` takes a function, got a float scalar"),
    ("print(vjp(fn(x) = x * 2.0, [1.0, 2.0], [1.0]))\n",
     "prog.dpl:1:7: `v` has shape [1], but f(x) has shape [2]"),
    ("print(jvp(fn(x) = x > 0.0, 1.0, 1.0))\n",
     "prog.dpl:1:7: `jvp` needs a function returning a float tensor, got a boolean scalar"),
    ("print(vmap(fn(x, y) = x)(ones([2]), ones([3])))\n",
     "prog.dpl:1:7: `vmap`: the mapped axes must have one size, got [2, 3]"),
    ("print(vmap(fn(x) = x, in_axes = 2)(ones([2])))\n",
     "prog.dpl:1:7: `vmap`: axis 2 is out of range for an argument of shape [2]"),
])
def test_transform_errors(src, message):
    assert first_line(error_of(src)) == message


# ---- the command line: --set, --fn instance.fn --------------------------------------------------------------

def test_set_binds_the_first_top_level_assignment(tmp_path, capsys):
    from dpl.cli import main
    p = tmp_path / "s.dpl"
    p.write_text('lr = 0.1\nn = 3\nname = "a"\nprint(lr, n, name)\nlr = 5\nprint(lr)\n')
    assert main(["run", str(p), "--set", "lr=0.5", "--set", 'name="b"', "--set", "n=-2"]) == 0
    assert capsys.readouterr().out == "0.5 -2 b\n5\n"
    assert main(["run", str(p), "--set", "lx=1"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == \
        "dpl: error: --set lx: the program has no top-level assignment to `lx`; names that can be set: lr, n, name"
    assert main(["run", str(p), "--set", "lr=foo"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == ('dpl: error: --set lr: the value must be a DPL literal such as '
                                                       '3, 0.5, "adam", true or [1, 2], got `foo`')


def test_set_under_train(tmp_path, capsys):
    from dpl.cli import main
    p = tmp_path / "t.dpl"
    p.write_text("param w: [] = 0.0\nn = 1\nfn loss() = (w - 2.0) ^ 2\ntrain loss {\n    epochs = n\n"
                 "    optimizer = sgd(lr = 0.25)\n}\nprint(w)\n")
    assert main(["train", str(p), "--quiet", "--out", str(tmp_path / "t.npz"), "--set", "n=2"]) == 0
    assert capsys.readouterr().out == "1.5\n"  # w ← w − 0.25·2(w − 2): 0 → 1 → 1.5


def test_graph_and_gradcheck_take_instance_functions(tmp_path, capsys):
    from dpl.cli import main
    p = tmp_path / "s2s.dpl"
    p.write_text(S2S)
    assert main(["gradcheck", str(p), "--fn", "s2s.call", "--args", "ones([2, 2])"]) == 0
    assert "s2s.blocks.1.W" in capsys.readouterr().out
    assert main(["graph", str(p), "--fn", "s2s", "--args", "ones([2, 2])", "--format", "tuple"]) == 0
    assert "s2s.enc.W" in capsys.readouterr().out


# ---- files keep their own scope -------------------------------------------------------------------------------

def _files(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.dpl").write_text(
        "fn helper(x) = x * 10\nfn _private(x) = x\nfn api(x) = helper(x) + 1\n"
        "module Lin(n) {\n    param W: [n] ~ ones\n    fn call(x) = helper(x * W)\n}\n")
    (tmp_path / "lib" / "b.dpl").write_text("fn api(x) = x - 1\n")


def _run_file(path) -> str:
    out = io.StringIO()
    from dpl.interp import Interpreter
    errors = check_file(path)
    if errors:
        raise errors[0]
    Interpreter(stdout=out).run_file(path)
    return out.getvalue()


def _file_error(path) -> tuple[str, str]:
    """(the first line of `dpl check`'s first error or 'ok', the first line of the run's error)"""
    from dpl.interp import Interpreter
    errors = check_file(path)
    with pytest.raises(DplError) as ei:
        Interpreter(stdout=io.StringIO()).run_file(path)
    return (first_line(errors[0]) if errors else "ok"), first_line(ei.value)


def test_an_imported_file_resolves_its_own_names_first(tmp_path):
    _files(tmp_path)
    main = tmp_path / "main.dpl"
    main.write_text('use nn\nimport "lib/a.dpl"\nimport "lib/b.dpl" as b\nfn helper(x) = x * 1000\n'
                    'print(api(1), helper(1), b.api(1))\nl = Lin(2)\nd = Dense(2, 3)\n'
                    'print(l([1.0, 2.0]), shape(d.W))\n')
    assert _run_file(main) == "11 1000 0\n[10.0, 20.0] [2, 3]\n"


def test_a_user_function_never_replaces_a_stdlib_internal(tmp_path):
    main = tmp_path / "main.dpl"
    # rnn's modules call `empty_steps` for an empty sequence; a user's function of that name changes nothing
    main.write_text("use rnn\nfn empty_steps(xs, n) = 0\nr = RNN(2, 3)\n"
                    "print(shape(r(ones([4, 1, 2]))), shape(r(zeros([0, 1, 2]))), empty_steps(1, 2))\n")
    assert _run_file(main) == "[4, 1, 3] [0, 1, 3] 0\n"


def test_qualified_names(tmp_path):
    main = tmp_path / "main.dpl"
    main.write_text("use nn as nn\nd = nn.Dense(2, 3)\nprint(nn.gelu(0.0), shape(d.W), nn)\n")
    assert _run_file(main) == "0.0 [2, 3] <names of nn>\n"
    main.write_text("use nn as nn\nprint(nn.Dens)\n")
    msg = f"{main}:2:10: nn has no `Dens` (did you mean `Dense`?)"
    assert _file_error(main) == (msg, msg)
    main.write_text("use nn as nn\nprint(Dense)\n")
    msg = f"{main}:2:7: unknown name `Dense` (did you mean `dense`?)"
    assert _file_error(main) == (msg, msg)


def test_two_imports_of_one_public_name(tmp_path):
    _files(tmp_path)
    main = tmp_path / "main.dpl"
    main.write_text('import "lib/a.dpl"\nimport "lib/b.dpl"\n')
    msg = (f'{main}:2:8: `api` is defined both by "lib/a.dpl" and by "lib/b.dpl"; load one of them with a name, as '
           f'`use nn as nn` or `import "lib.dpl" as lib`, and write `nn.api`')
    assert _file_error(main) == (msg, msg)
    main.write_text('import "lib/a.dpl"\nimport "lib/b.dpl" as b\nuse nn\nuse nn\nprint(api(1), b.api(1))\n')
    assert _run_file(main) == "11 0\n"  # a qualified one, and the same file twice, are fine
    main.write_text('import "lib/a.dpl"\nprint(_private(1))\n')
    assert _file_error(main)[1] == f"{main}:2:7: unknown name `_private`"


def test_soft_if_inside_a_nested_function_sees_the_enclosing_variables():
    assert run("""
        fn outer(k) {
            fn inner(x) {
                y = x
                soft if 0.5 { y = x * k }
                return y
            }
            return inner(2.0)
        }
        print(outer(3.0))
    """) == "4.0\n"


def test_repl_params_show_nested_names_and_closures_work_there():
    from dpl.repl import Session
    out, err = io.StringIO(), io.StringIO()
    s = Session(out=out, err=err)
    for line in S2S.split("\n}\n"):
        s.execute(line + ("\n}" if line.strip().startswith("module") else ""))
    s.execute(":params")
    table = out.getvalue()
    for cell in ("s2s.enc.W", "s2s.blocks.1.b", "[3, 2]"):
        assert cell in table, table
    s.execute("fn mk(k) {\n    fn c(x) = x * k\n    return c\n}")
    s.execute("print(mk(3)(2), len(append([], 1)))")
    assert out.getvalue().endswith("6 1\n"), err.getvalue()


def test_draws_after_a_train_block_match_dpl_run(tmp_path, capsys):
    """Random draws inside the loss during training do not shift the draws after the block."""
    from dpl.cli import main
    p = tmp_path / "r.dpl"
    p.write_text("param w: [2] ~ normal(1.0)\nxs = normal(0, 1, [8, 2])\n"
                 "fn loss(x) = mean((x @ w + normal(0, 0.1, [len(x)])) ^ 2)\n"
                 "train loss over xs {\n    epochs = 2\n    batch = 4\n}\nprint(normal(0, 1, [3]))\n")
    assert main(["train", str(p), "--quiet", "--out", str(tmp_path / "r.npz")]) == 0
    trained = capsys.readouterr().out
    assert main(["run", str(p), "--params", str(tmp_path / "r.npz")]) == 0
    assert capsys.readouterr().out == trained


VMAP = """\
param W: [3, 4] ~ glorot
param b: [4] ~ normal(0.1)
fn mlp(x) = tanh(x @ W + b)
fn colv(x) = transpose(W) @ x
fn rowv(x) = x @ W
fn mat(x) = x @ transpose(x) @ ones([2, 1])
fn att(q) = sum(softmax(reshape(q, [3, 1]) * W, axis = 0) * W, axis = 1)
fn red(x) = (sum(x, axis = 0), max(x, axis = -1), norm(x), logsumexp(x, axis = 1, keepdims = true),
             argmax(x, axis = 1), mean(x), min(x))
fn idx(x) = (x[0], x[:, 1], x[..., 0:2], x[[1, 0]], x[1, [0, 2]], reshape(x, [-1]), transpose(x),
             concat([x, x], axis = 1), stack([x[0], x[1]], axis = -1), concat([x, ones([1, 3])], axis = 0))
fn toint(x) = int(x * 10.0)
fn ew(x) = (where(x > 0.0, x, -x), clip(x, -0.5, 0.5), x // 0.3, max(x, 0.1), x ^ 2,
            sigmoid(x) + softplus(x) - relu(x), stop_gradient(x) * x, float(x > 0.0))
fn scalar(x) = sum(x) * 2.0
fn hard(x) {
    if sum(x) > 0.0 { return x }
    return -x
}
fn noisy(x) = x + normal(0, 1, shape(x))
"""


@pytest.mark.parametrize("name, item", [("mlp", (3,)), ("colv", (3,)), ("rowv", (3,)), ("mat", (2, 3)),
                                        ("att", (3,)), ("red", (2, 3)), ("idx", (2, 3)), ("ew", (2, 3)),
                                        ("scalar", (2, 3)), ("hard", (2,)), ("toint", (2,))])
def test_vmap_batches_and_matches_a_loop(name, item, monkeypatch):
    from dpl import batching
    done = []
    real = batching.batched
    monkeypatch.setattr(batching, "batched", lambda *a: (real(*a), done.append(1))[0])
    prog = load(VMAP + f"fn v(xs) = vmap({name})(xs)\n")
    xs = np.linspace(-1.0, 1.2, 5 * int(np.prod(item))).reshape((5,) + item)
    got = prog.call("v", xs)
    want = [prog.call(name, x) for x in xs]
    if isinstance(got, tuple):
        for g, w in zip(got, zip(*want)):
            np.testing.assert_allclose(g, np.stack(w), rtol=1e-12, atol=1e-15)
            assert np.asarray(g).dtype == np.stack(w).dtype
    else:
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-12, atol=1e-15)
    assert done == ([] if name == "hard" else [1])  # `hard` decides on its input: run once per item


def test_vmap_falls_back_to_a_loop_for_random_draws():
    prog = load(VMAP + "fn v(xs) = vmap(noisy)(xs)\n")
    out = prog.call("v", np.zeros((4, 3)))
    assert len({tuple(r) for r in out}) == 4  # a fresh draw for every item, as the loop gives


def test_vmap_records_each_op_once_and_its_gradient_matches_finite_differences():
    prog = load(VMAP + "fn loss(xs) = sum(vmap(mlp)(xs) ^ 2)\nfn loss2(xs, c) = sum(vmap(two, in_axes = [0, \"none\"])"
                       "(xs, c))\nfn two(a, c) = a * c + sum(a) * c ^ 2\n")
    g = prog.trace("loss", np.ones((50, 3)))
    names = [g.op(i) for i in range(g.l + 1, g.n + 1)]
    # the first item's recording, the last item's check, then the whole batch in one node each
    assert names.count("tanh") == 3 and names.count("matmul") == 3
    rows = gradcheck(prog, "loss", np.linspace(-1, 1, 15).reshape(5, 3))
    assert [r.name for r in rows] == ["arg 0 (xs)", "W", "b"]
    for r in rows:
        assert r.error < 1e-7, r.name
    check_grads(prog, "loss2", [np.linspace(-1, 1, 6).reshape(3, 2), 0.7], argnums=(0, 1))


def test_vmap_checks_the_last_item_against_a_plain_call(monkeypatch):
    """A builtin that reads its input's value outside the recording would make every item look like the first:
    the batch is checked against f on the last item and falls back to the loop."""
    from dpl import builtins
    monkeypatch.setattr(builtins.BUILTINS["int"], "fn", lambda x: builtins.ops.floor_int(builtins.raw(x)))
    prog = load("fn v(xs) = vmap(fn(x) = x * 0.0 + float(int(x * 10.0)))(xs)\n")
    assert prog.call("v", np.array([0.1, 0.25, 0.9])).tolist() == [1.0, 2.0, 9.0]
    from dpl import batching
    monkeypatch.setattr(batching, "_agrees", lambda *a: True)
    assert prog.call("v", np.array([0.1, 0.25, 0.9])).tolist() == [1.0, 1.0, 1.0]  # what the check prevents


def test_check_has_no_false_alarm_for_locals_named_like_top_level_functions(tmp_path):
    src = ("use nn as nn\nfn f(x) = x\nfn g(f) = f(1, 2)\nfn h() {\n    len = fn(a, b) = a\n    return len(1, 2)\n}\n"
           "module M(nn) {\n    fn call(x) = nn.W\n}\nprint(g(fn(a, b) = a), h())\n")
    assert check(src, tmp_path) == []
    assert run(src) == "1 1\n"


def test_a_one_tuple_prints_as_python_writes_it():
    assert run("print((3,), ((1, 2.5),), (1, 2))\nt = (true,)\nprint(t, t[0])") == \
        "(3,) ((1, 2.5),) (1, 2)\n(true,) true\n"


def test_check_counts_the_arguments_of_nested_and_anonymous_functions(tmp_path):
    src = """\
        fn outer(x) {
            fn inner(y, k = 2) = y * k
            g = fn(a) = a + x
            h = fn(a) = a
            h = fn(a, b) = a
            for i in range(2) { fn r(n) = n }
            fn rec(n) = rec(n, 1)
            return inner(1, 2, 3) + g(1, 2) + g(b = 1) + h(1, 2, 3) + inner(y = 1) + g(1) + r(1, 2)
        }
        q = fn(a) = a
        fn k(f) = f(1, 2)
        print(q(1, 2), k(fn(a, b) = a))
    """
    assert check(src, tmp_path) == [
        "prog.dpl:7:17: `rec` takes 1 argument (n), got 2",
        "prog.dpl:8:12: `inner` takes 1 to 2 arguments (y, k = ...), got 3",
        "prog.dpl:8:29: `fn at line 3` takes 1 argument (a), got 2",
        "prog.dpl:8:39: `fn at line 3` has no parameter `b`",
        "prog.dpl:8:85: `r` takes 1 argument (n), got 2",
        "prog.dpl:12:7: `fn at line 10` takes 1 argument (a), got 2",
    ]
    assert first_line(error_of(src)) == "prog.dpl:12:7: `fn at line 10` takes 1 argument (a), got 2"  # as run


def test_check_keeps_names_bound_by_unpacking_loops_and_steps(tmp_path):
    """A name bound by `a, u = ...`, a `for` or `as steps` stays bound when a later `u = u + 1` reads it first."""
    src = ("fn f(s) {\n    h, u = s\n    h, c = (h + 1, h)\n    u = u + c\n    return u\n}\n"
           "fn g(n) {\n    for i in range(n) { k = i }\n    i = i + 1\n    return i\n}\n"
           "fn w(x) {\n    soft while 0.5 max 2 as steps { x = x + 1.0 }\n    steps = steps + 1\n    return steps\n}\n"
           "print(f((1, 2)), g(3))\n")
    assert check(src, tmp_path) == []
    assert run(src) == "3 3\n"
