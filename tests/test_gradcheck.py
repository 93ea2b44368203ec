"""dpl.gradcheck / `dpl gradcheck`: reverse mode against central differences, in float64."""
from __future__ import annotations

import numpy as np
import pytest

import dpl
from dpl import ops
from dpl.cli import main
from dpl.gradcheck import gradcheck

MLP = """\
use nn
enc = MLP(2, 4, 1)
fn f(x) = sum(enc(x) ^ 2)
"""
X = [[1.0, 2.0], [0.5, -1.0]]


def wrong_tanh_vjp(g, ans, x):
    return ops.mul(g, ops.sub(1.0, ans))  # should be 1 - ans²


@pytest.fixture
def mlp(tmp_path):
    p = tmp_path / "mlp.dpl"
    p.write_text(MLP)
    return p


def test_stdlib_mlp_passes(mlp):
    rows = gradcheck(dpl.load(mlp), "f", X)
    assert [r.name for r in rows] == ["arg 0 (x)", "enc.W1", "enc.b1", "enc.W2", "enc.b2"]
    assert [r.shape for r in rows] == [(2, 2), (2, 4), (4,), (4, 1), (1,)]
    for r in rows:
        assert r.error < 1e-8, r.name
        assert np.abs(r.analytic).max() > 1e-3  # a real gradient, not two zeros agreeing


def test_wrong_custom_vjp_is_flagged(mlp, monkeypatch):
    monkeypatch.setattr(ops.tanh, "vjps", [wrong_tanh_vjp])
    errors = {r.name: r.error for r in gradcheck(dpl.load(mlp), "f", X)}
    assert errors["enc.W1"] > 1e-3 and errors["enc.b1"] > 1e-3 and errors["arg 0 (x)"] > 1e-3
    assert errors["enc.W2"] < 1e-8 and errors["enc.b2"] < 1e-8  # above the tanh, nothing is wrong


def test_cli_table_and_exit_codes(mlp, monkeypatch, capsys):
    assert main(["gradcheck", str(mlp), "--fn", "f", "--args", str(X)]) == 0
    out, err = capsys.readouterr()
    assert "enc.W1" in out and "rel. error" in out and "FAIL" not in out
    assert "all 5 gradients agree within 1e-06" in err
    monkeypatch.setattr(ops.tanh, "vjps", [wrong_tanh_vjp])
    assert main(["gradcheck", str(mlp), "--fn", "f", "--args", str(X)]) == 1
    out, err = capsys.readouterr()
    assert out.count("FAIL") == 3 and "3 of 5 gradients differ" in err


def test_tolerance_is_used(mlp, capsys):
    assert main(["gradcheck", str(mlp), "--fn", "f", "--args", str(X), "--tol", "1e-30"]) == 1


def test_non_scalar_result_integer_args_and_random_draws(tmp_path):
    # a matrix result (checked through a fixed random projection), an integer argument (not checked),
    # and a random draw inside f (the generator is reset before every evaluation)
    prog = dpl.loads("param W: [3, 2] ~ glorot\n"
                     "fn f(x, k) = tanh(x @ W) * float(k) + normal(0, 1, [2])\n"
                     "fn g(x) = sum(x * normal(0, 1, [3]))\n", file=str(tmp_path / "t.dpl"))
    rows = gradcheck(prog, "f", [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]], 3)
    assert [r.name for r in rows] == ["arg 0 (x)", "W"]
    assert max(r.error for r in rows) < 1e-8
    (row,) = gradcheck(prog, "g", [1.0, 2.0, 3.0])
    assert row.error < 1e-8 and np.abs(row.analytic).max() > 0.1


def test_needs_float64(tmp_path):
    prog = dpl.loads("fn f(x) = sum(x ^ 2)\n", dtype="float32")
    with pytest.raises(dpl.DplError, match="float64"):
        gradcheck(prog, "f", [1.0, 2.0])


def test_scalar_result_shows_the_plain_gradient_and_the_table_says_which(tmp_path, capsys):
    src = tmp_path / "t.dpl"
    src.write_text("param W: [3, 2] ~ glorot\nfn f(x) = tanh(x @ W)\nfn g(x) = sum(x ^ 2)\n")
    (row,) = gradcheck(dpl.load(src), "g", [1.0, -2.0, 0.5])
    np.testing.assert_allclose(row.analytic, [2.0, -4.0, 1.0], rtol=1e-12)  # d/dx Σx² = 2x, unweighted
    assert row.out_shape == ()
    assert main(["gradcheck", str(src), "--fn", "g", "--args", "[1.0, -2.0, 0.5]"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the caption may wrap
    assert "`g` returns a scalar: these are its plain gradients" in out and "4.000e+00" in out
    assert main(["gradcheck", str(src), "--fn", "f", "--args", "[[0.1, 0.2, 0.3]]"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "`f` returns shape [1, 2], not a scalar" in out
    assert "random projection sum(w * f(...)), w ~ N(0, 1) fixed" in out
