"""Complex numbers (issue 11): literals, printing, arithmetic and the complex-aware builtins against NumPy,
gradients of real losses through complex intermediates against finite differences and closed forms (JAX's
convention), float32 → complex64, and the positioned errors for what complex numbers do not support.

The ops themselves (real, imag, conj, fft, ifft, rfft, irfft) are checked on complex inputs in test_ops.py."""
from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest

import dpl
from conftest import check_grads, numeric_grad
from dpl.errors import DplError


def run(src, dtype="float64"):
    out = io.StringIO()
    dpl.loads(textwrap.dedent(src), stdout=out, dtype=dtype)
    return out.getvalue()


def error_of(src):
    with pytest.raises(DplError) as ei:
        dpl.loads(textwrap.dedent(src), file="prog.dpl")
    return ei.value


# ---- literals and printing ----------------------------------------------------------------------------------


def test_imaginary_literals_print_as_python_repr():
    out = run('print(1j, 2.5j, 1e3j, .5j, 3J, 1 + 2j, 1.5 - 0.5j, -1j, 2j * 2j, 0j)')
    assert out == f"{1j!r} {2.5j!r} {1e3j!r} {.5j!r} {3j!r} {1 + 2j!r} {1.5 - 0.5j!r} {-1j!r} {2j * 2j!r} {0j!r}\n"
    assert out == "1j 2.5j 1000j 0.5j 3j (1+2j) (1.5-0.5j) (-0-1j) (-4+0j) 0j\n"


def test_tensors_of_complex_numbers_print_each_entry_as_python_does():
    assert run("print([1 + 2j, 3j], [[1.0, 2j], [3, 4.5]])") == "[(1+2j), 3j] [[(1+0j), 2j], [(3+0j), (4.5+0j)]]\n"


def test_complex64_prints_the_shortest_float32_digits_of_each_part():
    assert run("print(0.1 + 0.2j, [1.0 / 3.0 + 1j])", dtype="float32") == "(0.1+0.2j) [(0.33333334+1j)]\n"


def test_tensor_literals_mixing_real_and_complex_become_complex():
    prog = dpl.loads("fn f() = [1, 2.5, 1j, true]\nfn g() = [[1j], [2]]\n")
    np.testing.assert_array_equal(prog.call("f"), np.array([1, 2.5, 1j, 1]))
    assert prog.call("f").dtype == np.complex128 and prog.call("g").dtype == np.complex128


def test_float32_runs_make_complex64():
    prog = dpl.loads("fn f(x) = [fft(x), x * 1j, exp(1j * x), x + [1j, 2, 3]]\n"
                     "fn l(x) = sum(abs(fft(x * exp(1j * x))) ^ 2)\n", dtype="float32")
    x = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    assert prog.call("f", x).dtype == np.complex64
    assert prog.grad("l")(x).dtype == np.float32
    assert dpl.loads("fn f() = 1j", dtype="float32").call("f").dtype == np.complex64


# ---- values against NumPy -------------------------------------------------------------------------------------

A = np.array([[1.0, 2j, 0.5], [1 - 1j, 0.0, 3.0]])
Z = np.array([0.5 + 1j, -2.0 + 0.3j, 1j])
VALUES = [
    ("a + z", lambda a, z: a + z), ("a - z", lambda a, z: a - z), ("a * z", lambda a, z: a * z),
    ("a / (z + 1)", lambda a, z: a / (z + 1)), ("z ^ 2", lambda a, z: z ** 2), ("z ^ 0.5j", lambda a, z: z ** 0.5j),
    ("-z", lambda a, z: -z), ("a @ z", lambda a, z: a @ z), ("z @ transpose(a)", lambda a, z: z @ a.T),
    ("exp(z)", lambda a, z: np.exp(z)), ("log(z)", lambda a, z: np.log(z)), ("sqrt(z)", lambda a, z: np.sqrt(z)),
    ("sin(z) + cos(z) * tanh(z)", lambda a, z: np.sin(z) + np.cos(z) * np.tanh(z)),
    ("sum(a)", lambda a, z: np.sum(a)), ("sum(a, axis = 0)", lambda a, z: np.sum(a, axis=0)),
    ("mean(a, axis = 1)", lambda a, z: np.mean(a, axis=1)), ("a[1, 0]", lambda a, z: a[1, 0]),
    ("a[:, 1:]", lambda a, z: a[:, 1:]), ("z[[2, 0]]", lambda a, z: z[[2, 0]]),
    ("kron(z, a)", lambda a, z: np.kron(z, a)), ("einsum(\"ij,j->i\", a, z)", lambda a, z: np.einsum("ij,j->i", a, z)),
    ("abs(z)", lambda a, z: np.abs(z)), ("real(a)", lambda a, z: np.real(a)), ("imag(a)", lambda a, z: np.imag(a)),
    ("conj(a)", lambda a, z: np.conj(a)), ("angle(z)", lambda a, z: np.angle(z)),
    ("angle([-1.0, 2.0])", lambda a, z: np.angle([-1.0, 2.0])), ("imag(3.0)", lambda a, z: 0.0),
    ("fft(z)", lambda a, z: np.fft.fft(z)), ("fft(a, n = 4)", lambda a, z: np.fft.fft(a, n=4)),
    ("fft(a, axis = 0)", lambda a, z: np.fft.fft(a, axis=0)), ("ifft(z, n = 2)", lambda a, z: np.fft.ifft(z, n=2)),
    ("rfft(real(a), n = 5, axis = 1)", lambda a, z: np.fft.rfft(a.real, n=5, axis=1)),
    ("irfft(a)", lambda a, z: np.fft.irfft(a)), ("irfft(a, n = 5, axis = 0)", lambda a, z: np.fft.irfft(a, n=5, axis=0)),
    ("rfft([1, 2, 3])", lambda a, z: np.fft.rfft([1.0, 2.0, 3.0])),
    *[(f'{f}({"real(a)" if f == "rfft" else "a"}, n = 5, norm = "{m}")', lambda a, z, f=f, m=m: getattr(np.fft, f)(a.real if f == "rfft" else a, n=5,
                                                                                 norm=m))
      for f in ("fft", "ifft", "rfft", "irfft") for m in ("backward", "ortho", "forward")],
    ("where([true, false, true], z, 0.0)", lambda a, z: np.where([True, False, True], z, 0.0)),
    ("concat([z, [1.0]])", lambda a, z: np.concatenate([z, [1.0]])), ("stack([z, z * 2j], axis = 1)",
                                                                      lambda a, z: np.stack([z, z * 2j], axis=1)),
    ("outer(z, [1, 2])", lambda a, z: np.outer(z, [1, 2])), ("trace(a[:, :2])", lambda a, z: np.trace(a[:, :2])),
    ("z == 1j", lambda a, z: z == 1j), ("reshape(a, [3, 2])", lambda a, z: a.reshape(3, 2)),
]


@pytest.mark.parametrize("expr,ref", VALUES, ids=[v[0] for v in VALUES])
def test_values_match_numpy(expr, ref):
    got = dpl.loads(f"fn f(a, z) = {expr}\n").call("f", A, Z)
    want = ref(A, Z)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_strings_iterate_compare_and_have_a_length():
    assert run('for c in "XZ" { print(c, c == "Z", c != "Z") }\nprint(len("XYZ"), "ab" == "ab")') == \
        "X false true\nZ true false\n3 true\n"


def test_soft_if_blends_complex_values_with_a_real_probability():
    assert run("soft if 0.25 { y = 4j } else { y = 2.0 }\nprint(y)") == "(1.5+1j)\n"


def test_sort_with_axis_none_sorts_the_flattened_tensor():
    prog = dpl.loads('fn f(x) = sort(x, axis = "none")\nfn g(x) = argsort(x, axis = "none")\n'
                     'fn h(x) = sum(sort(x, axis = "none") * [1.0, 2.0, 3.0, 4.0])\n')
    x = np.array([[3.0, 1.0], [0.5, 2.0]])
    np.testing.assert_array_equal(prog.call("f", x), np.sort(x, axis=None))
    np.testing.assert_array_equal(prog.call("g", x), np.argsort(x, axis=None))
    check_grads(prog, "h", [x], [0])


# ---- gradients: real losses through complex intermediates ---------------------------------------------------

LOSSES = {
    "parseval": "sum(abs(fft(x)) ^ 2)",
    "phase": "real(sum(exp(1j * x) * [1.0, 2j, -0.5 + 1j, 3.0]))",
    "arith": "abs(sum((x + 1j) * (x - 2j) / (x * x + 1j) - x ^ (0.5 + 1j)))",
    "matmul": "sum(abs([[1.0, 1j, 0.0, 2.0], [0.5j, 1.0, 2.0, -1j]] @ (x * exp(0.3j * x))) ^ 2)",
    "ifft": "sum(imag(ifft(x * 1j + x ^ 2, n = 6)) ^ 2) + real(sum(fft(x, n = 3) * [1.0, 1j, 2.0]))",
    "rfft-irfft": "sum(irfft(rfft(x) * [1.0, 2j, 0.5 + 1j], n = 5) * [1.0, 2.0, 3.0, 4.0, 5.0]) "
                  "+ sum(abs(rfft(x, n = 7)))",
    "kron-einsum": 'real(einsum("i,i->", kron([1.0, 1j], x[:2]), conj(exp(1j * x)))) + sum(angle(x + 1j))',
    "mean-index": "imag(mean(exp(2j * x)[1:] * x[0])) + sum(real(conj(x * 1j) * [2j, 1.0, 1.0, 1.0]))",
    "norm": 'sum(abs(fft(x, norm = "ortho")) ^ 3) + sum(irfft(rfft(x, norm = "forward") * 1j, norm = "ortho") ^ 2)',
    "sinh-square": "sum(real(square(sinh(x * 1j + 0.5)) + reciprocal(cosh(x + 1j))))",
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_of_a_real_loss_through_complex_values_matches_finite_differences(name):
    prog = dpl.loads(f"fn f(x) = {LOSSES[name]}\nfn s(x) = sum(grad(f)(x) * [0.3, -1.0, 0.7, 0.2])\n")
    x = np.array([0.5, -1.0, 2.0, 0.3])
    g = prog.grad("f")(x)
    assert g.dtype == np.float64  # the gradient w.r.t. a real input is real
    check_grads(prog, "f", [x], [0])
    check_grads(prog, "s", [x], [0], rtol=1e-5, atol=1e-6)  # second order: the recorded backward pass


def test_parseval_gradient_is_2n_x():
    """Σ|fft(x)|² = N Σ x², so its gradient is 2N x."""
    x = np.array([0.5, -1.0, 2.0, 0.3, 1.1])
    g = dpl.loads("fn f(x) = sum(abs(fft(x)) ^ 2)\n").grad("f")(x)
    np.testing.assert_allclose(g, 2 * 5 * x, rtol=1e-13)


def test_phase_gradient_is_minus_sin():
    """d/dθ Re(e^{iθ}) = -sin θ, and d/dθ Im(e^{iθ}) = cos θ."""
    prog = dpl.loads("fn f(t) = real(exp(1j * t))\nfn g(t) = imag(exp(1j * t))\n")
    assert float(prog.grad("f")(0.7)) == pytest.approx(-np.sin(0.7), rel=1e-14)
    assert float(prog.grad("g")(0.7)) == pytest.approx(np.cos(0.7), rel=1e-14)


def test_gradient_with_respect_to_a_complex_input_follows_jax():
    """grad of a real f at complex z is ∂f/∂Re z − i ∂f/∂Im z: |z|² at 3+4j gives 6−8j (JAX's value), and a
    holomorphic part of the loss contributes the conjugate-free derivative, as JAX's VJPs do."""
    prog = dpl.loads("fn f(z) = abs(z) ^ 2\nfn h(z) = real(sum(z * z * [1.0, 2j]))\n")
    assert complex(prog.grad("f")(3 + 4j)) == pytest.approx(6 - 8j, rel=1e-14)
    z = np.array([0.5 + 1j, -1.0 + 0.2j])
    want = numeric_grad(lambda v: np.real(np.sum(v * v * np.array([1.0, 2j]))), z)
    np.testing.assert_allclose(prog.grad("h")(z), want, rtol=1e-8)
    np.testing.assert_allclose(want, 2 * z * np.array([1.0, 2j]), rtol=1e-8)  # = g · f′(z), no conjugate


def test_modulus_has_gradient_zero_at_zero():
    g = dpl.loads("fn f(x) = sum(abs(x * 1j))\n").grad("f")(np.array([0.0, 2.0, -3.0]))
    np.testing.assert_array_equal(g, [0.0, 1.0, -1.0])


def test_vmap_batches_complex_ops():
    prog = dpl.loads("fn f(x) = abs(fft(x * exp(1j * x)))\nfn g(X) = vmap(f)(X)\n")
    X = np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]])
    np.testing.assert_allclose(prog.call("g", X), np.abs(np.fft.fft(X * np.exp(1j * X), axis=-1)), rtol=1e-13)


# ---- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src,col,msg", [
    ("print(relu([1j]))", 7, "`relu` is not defined for complex numbers, got a complex tensor of shape [1]; take "
                             "real(z), imag(z), abs(z) or angle(z) first"),
    ("print(sort([1j, 2]))", 7, "`sort` is not defined for complex numbers, got a complex tensor of shape [2]; take "
                                "real(z), imag(z), abs(z) or angle(z) first"),
    ("print(max([1j, 2], axis = 0))", 7, "`max` is not defined for complex numbers, got a complex tensor of shape "
                                         "[2]; take real(z), imag(z), abs(z) or angle(z) first"),
    ("print(sigmoid(1j))", 7, "`sigmoid` is not defined for complex numbers, got a complex scalar; take real(z), "
                              "imag(z), abs(z) or angle(z) first"),
    ("print(float(2.0 * 1j))", 7, "`float` is not defined for complex numbers, got a complex scalar; take real(z), "
                                  "imag(z), abs(z) or angle(z) first"),
    ("print(1.0 < 1j)", 13, "`<` is not defined for complex numbers, got a complex scalar; compare or divide "
                            "real(z), imag(z) or abs(z)"),
    ("print(1j >= 1.0)", 7, "`>=` is not defined for complex numbers, got a complex scalar; compare or divide "
                            "real(z), imag(z) or abs(z)"),
    ("print(3j % 2)", 7, "`%` is not defined for complex numbers, got a complex scalar; compare or divide "
                         "real(z), imag(z) or abs(z)"),
    ("print(rfft([1j, 2]))", 7, "`rfft` takes a real tensor, got a complex tensor of shape [2]; fft transforms "
                                "complex ones"),
    ('print(fft([1.0], norm = "unit"))', 7, '`fft`: norm must be "backward", "ortho" or "forward", got "unit"'),
    ("print(fft(1j))", 7, "`fft` needs a tensor with at least one axis, got a complex scalar"),
    ("print(fft([1.0], n = 0))", 7, "`fft`: n must be at least 1, got 0"),
    ("print(ifft([1.0, 2.0], axis = 1))", 7, "`axis` 1 is out of range for a tensor of shape [2]"),
    ("param W: [2] = [1j, 2]", 16, "parameter `W` must be real, got a complex tensor of shape [2]; parameters stay "
                                   "real: declare the real and imaginary parts as two parameters and build the "
                                   "complex value from them (a + 1j * b)"),
    ("param W: [2] ~ uniform(1j, 2.0)", 24, "parameter `W` must be real, but initializer `uniform` got a complex "
                                            "scalar"),
    ("z = 1j\nsoft if z { y = 1.0 } else { y = 2.0 }", 1, "the `soft if` probability must be real, got a complex "
                                                          "scalar; take real(...) or abs(...) of it"),
    ('print("a" < "b")', 7, "`<` needs numbers or tensors, got a string"),
    ("fn f(x) = sum(x * 1j)\nprint(grad(f)(1.0))", 7, "grad needs a function returning a 0-d float value, got a "
                                                      "complex scalar; a complex value has no gradient to descend: "
                                                      "take real(...) or abs(...) of it"),
])
def test_what_complex_numbers_do_not_support_is_a_positioned_error(src, col, msg):
    e = error_of(src)
    assert e.message == msg
    assert e.span.col == col and e.span.file == "prog.dpl"


def test_a_complex_training_loss_says_to_take_real_or_abs(tmp_path):
    from dpl.interp import Interpreter
    from dpl.train import Trainer
    path = tmp_path / "p.dpl"
    path.write_text("param w: [2] = [0.5, 1.0]\nfn loss() = sum(w * 1j)\ntrain loss { epochs = 1 }\n")
    with pytest.raises(DplError) as ei:
        Interpreter(mode="train", trainer=Trainer(progress=False)).run_file(path)
    assert "got a complex scalar; a complex value has no gradient to descend: take real(...) or abs(...)" \
        in ei.value.message
    assert ei.value.span.line == 3


def test_gradcheck_of_a_complex_result_says_to_take_real_or_abs():
    from dpl.gradcheck import gradcheck
    prog = dpl.loads("fn f(x) = sum(x * 1j)\n")
    with pytest.raises(DplError, match=r"take real\(\.\.\.\) or abs\(\.\.\.\) of it"):
        gradcheck(prog, "f", np.array([1.0, 2.0]))


def test_a_loss_taken_real_trains_real_parameters(tmp_path):
    from dpl.interp import Interpreter
    from dpl.train import Trainer
    head = "param a: [2] = [0.5, 1.0]\nfn loss() = sum(abs(fft(a * exp(1j * a)) - [1.0, 0.5]) ^ 2)\n"
    before = float(run(head + "print(loss())\n"))
    path = tmp_path / "p.dpl"
    path.write_text(head + "train loss { epochs = 30 \n optimizer = sgd(0.05) }\nprint(loss())\n")
    out = io.StringIO()
    interp = Interpreter(mode="train", stdout=out, trainer=Trainer(progress=False))
    interp.run_file(path)
    assert interp.params["a"].dtype == np.float64
    assert float(out.getvalue()) < 0.5 * before
