"""stdlib/quantum.dpl: gates and states against their matrices, expectations of Pauli strings against closed forms
(one-qubit rotations, Bell and GHZ states), and gradients of expectations w.r.t. rotation angles against the
closed forms and finite differences; a parameterised circuit trains to the ground state of Z."""
from __future__ import annotations

import io

import numpy as np
import pytest

import dpl
from conftest import check_grads

I2 = np.eye(2)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]])
Z = np.diag([1.0, -1.0]).astype(complex)
H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
PAULI = {"I": I2, "X": X, "Y": Y, "Z": Z}


def kron(*ms):
    out = np.ones((1, 1))
    for m in ms:
        out = np.kron(out, m)
    return out


@pytest.fixture(scope="module")
def q():
    return dpl.loads("""
use quantum
fn rot(name, t) {
    if name == "x" { return rx(t) }
    if name == "y" { return ry(t) }
    return rz(t)
}
fn one(name, t, p) = expect_pauli(rot(name, t) @ ket("0"), p)
fn after_h(name, t, p) = expect_pauli(rot(name, t) @ (H @ ket("0")), p)
fn bell(p) = expect_pauli(cnot(0, 1, 2) @ apply(H, 0, 2, ket("00")), p)
fn ghz(p) {
    psi = apply(H, 0, 3, zero_state(3))
    psi = cnot(0, 1, 3) @ psi
    return expect_pauli(cnot(1, 2, 3) @ psi, p)
}
fn entangled(t, p) = expect_pauli(cnot(0, 1, 2) @ apply(ry(t), 0, 2, ket("00")), p)
fn ez(t) = one("y", t, "Z")
fn circuit(a, b) {
    psi = apply(ry(a), 0, 2, ket("00"))
    psi = apply(rx(b), 1, 2, psi)
    psi = cz(0, 1, 2) @ (cnot(1, 0, 2) @ psi)
    return expect_pauli(psi, "ZX") + 0.5 * expect_pauli(psi, "YI") - expect_pauli(psi, "XY")
}
""")


def test_gates_are_the_textbook_matrices(q):
    t = 0.83
    c, s = np.cos(t / 2), np.sin(t / 2)
    np.testing.assert_allclose(q.call("rx", t), [[c, -1j * s], [-1j * s, c]], rtol=1e-15)
    np.testing.assert_allclose(q.call("ry", t), [[c, -s], [s, c]], rtol=1e-15)
    np.testing.assert_allclose(q.call("rz", t), np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)]), rtol=1e-15)
    for name, m in PAULI.items():
        np.testing.assert_array_equal(q.call("pauli1", name), m)
    np.testing.assert_allclose(q.call("pauli", "XYZ"), kron(X, Y, Z))
    np.testing.assert_array_equal(q.call("cnot", 0, 1, 2), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(q.call("cnot", 1, 0, 2), [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(q.call("cz", 0, 2, 3), np.diag([1, 1, 1, 1, 1, -1, 1, -1]))
    np.testing.assert_allclose(q.call("on_qubit", H, 1, 3), kron(I2, H, I2), rtol=1e-15)
    assert q.call("rx", t).dtype == np.complex128


def test_states(q):
    np.testing.assert_array_equal(q.call("ket", "01"), [0, 1, 0, 0])
    np.testing.assert_array_equal(q.call("ket", "110"), np.eye(8)[6])
    np.testing.assert_array_equal(q.call("zero_state", 3), np.eye(8)[0])
    psi = q.call("apply", H, 0, 2, q.call("ket", "00"))
    np.testing.assert_allclose(q.call("probabilities", psi), [0.5, 0, 0.5, 0], atol=1e-15)


@pytest.mark.parametrize("t", [0.0, 0.7, 2.5, -1.3])
def test_single_qubit_expectations_match_closed_forms(q, t):
    e = lambda *a: float(q.call(*a))  # noqa: E731
    assert e("one", "y", t, "Z") == pytest.approx(np.cos(t), abs=1e-14)   # ry(θ)|0>: <Z> = cos θ, <X> = sin θ
    assert e("one", "y", t, "X") == pytest.approx(np.sin(t), abs=1e-14)
    assert e("one", "x", t, "Z") == pytest.approx(np.cos(t), abs=1e-14)   # rx(θ)|0>: <Y> = -sin θ
    assert e("one", "x", t, "Y") == pytest.approx(-np.sin(t), abs=1e-14)
    assert e("one", "z", t, "Z") == pytest.approx(1.0, abs=1e-14)         # rz only changes the phase
    assert e("after_h", "z", t, "X") == pytest.approx(np.cos(t), abs=1e-14)  # rz(φ)H|0>: <X> = cos φ, <Y> = sin φ
    assert e("after_h", "z", t, "Y") == pytest.approx(np.sin(t), abs=1e-14)


@pytest.mark.parametrize("p,want", [("ZZ", 1.0), ("XX", 1.0), ("YY", -1.0), ("ZI", 0.0), ("IZ", 0.0), ("XI", 0.0),
                                    ("II", 1.0), ("XY", 0.0)])
def test_bell_state_expectations(q, p, want):
    assert float(q.call("bell", p)) == pytest.approx(want, abs=1e-14)


@pytest.mark.parametrize("p,want", [("ZZI", 1.0), ("IZZ", 1.0), ("ZIZ", 1.0), ("XXX", 1.0), ("ZII", 0.0),
                                    ("XYY", -1.0), ("YYX", -1.0)])
def test_ghz_state_expectations(q, p, want):
    assert float(q.call("ghz", p)) == pytest.approx(want, abs=1e-14)


def test_expectations_match_numpy_for_a_random_circuit(q):
    a, b = 0.4, -1.1
    psi = kron(np.array([[np.cos(a / 2), -np.sin(a / 2)], [np.sin(a / 2), np.cos(a / 2)]]), I2) @ np.eye(4)[0]
    psi = kron(I2, np.array([[np.cos(b / 2), -1j * np.sin(b / 2)], [-1j * np.sin(b / 2), np.cos(b / 2)]])) @ psi
    cnot10 = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]])
    psi = np.diag([1, 1, 1, -1]) @ (cnot10 @ psi)
    ev = lambda m: np.real(np.conj(psi) @ m @ psi)  # noqa: E731
    want = ev(kron(Z, X)) + 0.5 * ev(kron(Y, I2)) - ev(kron(X, Y))
    assert float(q.call("circuit", a, b)) == pytest.approx(want, abs=1e-14)


@pytest.mark.parametrize("t", [0.0, 0.7, 2.5])
def test_gradient_of_z_after_ry_is_minus_sin(q, t):
    g = q.grad("ez")(t)
    assert g.dtype == np.float64 and float(g) == pytest.approx(-np.sin(t), abs=1e-14)


def test_gradient_through_entangling_circuits(q):
    """ry(θ) then CNOT: <ZI> = cos θ, <XX> = sin θ, <ZZ> = 1 for every θ."""
    t = 0.9
    assert float(q.grad("entangled")(t, "XX")) == pytest.approx(np.cos(t), abs=1e-14)
    assert float(q.grad("entangled")(t, "ZI")) == pytest.approx(-np.sin(t), abs=1e-14)
    assert float(q.grad("entangled")(t, "ZZ")) == pytest.approx(0.0, abs=1e-14)
    check_grads(q, "circuit", [0.4, -1.1], [0, 1])


def test_a_variational_circuit_trains_to_the_ground_state_of_z():
    out = io.StringIO()
    src = ("use quantum\nparam theta: [] = 0.3\nfn energy() = expect_pauli(apply(ry(theta), 0, 1, ket(\"0\")), \"Z\")\n"
           "train energy { epochs = 200 \n optimizer = sgd(0.2) }\nprint(energy(), theta)\n")
    from dpl.interp import Interpreter
    from dpl.parser import parse
    from dpl.train import Trainer
    interp = Interpreter(mode="train", stdout=out, trainer=Trainer(progress=False))
    interp.run_program(parse(src, "vqe.dpl"))
    energy, theta = map(float, out.getvalue().split())
    assert energy == pytest.approx(-1.0, abs=1e-6) and theta == pytest.approx(np.pi, abs=1e-3)


def test_an_unknown_pauli_letter_is_an_error_that_leads_to_the_call():
    with pytest.raises(dpl.DplError) as e:
        dpl.loads('use quantum\nx = expect_pauli(ket("0"), "Q")\n', file="prog.dpl")
    text = e.value.format()
    assert "a Pauli string holds the letters I, X, Y and Z, got Q" in text and "called from prog.dpl:2:5" in text
