"""--detect-nan: the first NaN/Inf, forward or backward, reported at the DPL expression that made it."""
from __future__ import annotations

import pytest

from dpl.cli import main
from dpl.errors import DplError
from dpl.gradcheck import detect_nan
from dpl.ops import Op

LOG = """\
fn f(x) {
    y = x - x
    return log(y)
}
print(f([1.0, 2.0]))
"""

SQRT = """\
fn f(x) {
    z = x * 0.0
    return sqrt(z) + x
}
print(f(1.0))
print(grad(f)(1.0))
"""

TRAIN = """\
param w: [] = 0.0
fn loss() {
    r = w * w
    return sqrt(r) + w
}
train loss {
    epochs = 2
}
"""


def run(tmp_path, text, *flags, command="run"):
    p = tmp_path / "p.dpl"
    p.write_text(text)
    return main([command, str(p), *flags]), p


def test_forward_log_points_at_its_line(tmp_path, capsys):
    code, p = run(tmp_path, LOG)
    assert code == 0 and capsys.readouterr().out == "[-inf, -inf]\n"  # without the flag, -inf is a value
    code, p = run(tmp_path, LOG, "--detect-nan")
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"{p}:3:12: --detect-nan: `log` produced -Inf (2 of 2 values) in the forward pass")
    assert "inputs: [0, 0] (shape [2])" in first
    assert "in f, called from" in err and ":5:7" in err


def test_backward_sqrt_at_zero_points_at_its_line(tmp_path, capsys):
    code, p = run(tmp_path, SQRT)
    assert code == 0 and capsys.readouterr().out == "1.0\nnan\n"
    code, p = run(tmp_path, SQRT, "--detect-nan")
    out, err = capsys.readouterr()
    assert code == 1 and out == "1.0\n"  # the forward pass is fine
    assert err.startswith(f"{p}:3:12: --detect-nan: `sqrt` produced +Inf (1 of 1 values) in the backward pass")
    assert "inputs: [0, 0] (shape [])" in err and "incoming adjoint: [1, 1]" in err


def test_train_reports_the_node_not_the_train_block(tmp_path, capsys):
    code, p = run(tmp_path, TRAIN, "--quiet", command="train")
    assert code == 1 and f"{p}:6:7: training stopped" in capsys.readouterr().err
    code, p = run(tmp_path, TRAIN, "--quiet", "--detect-nan", command="train")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"{p}:4:12: --detect-nan: `sqrt`") and "backward" in err.splitlines()[0]


def test_untraced_top_level_is_checked(tmp_path, capsys):
    code, p = run(tmp_path, "a = 2.0\nb = a - a\nc = [1.0, 2.0] / b\n", "--detect-nan")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"{p}:3:16: --detect-nan: `div` produced +Inf (2 of 2 values) in the forward")
    assert "inputs: [1, 2] (shape [2]), [0, 0] (shape [])" in err


def test_finite_programs_are_unaffected(tmp_path, capsys):
    text = "fn f(x) = sum(sqrt(x) * log(x))\nprint(f([1.0, 4.0]), grad(f)([1.0, 4.0]))\n"
    assert run(tmp_path, text)[0] == 0
    plain = capsys.readouterr().out
    assert run(tmp_path, text, "--detect-nan")[0] == 0
    assert capsys.readouterr().out == plain


def test_costs_nothing_when_off_and_always_restores():
    call, vjp = Op.__call__, Op.vjp
    with detect_nan(False):
        assert Op.__call__ is call and Op.vjp is vjp
    with pytest.raises(DplError):
        with detect_nan():
            assert Op.__call__ is not call and Op.vjp is not vjp
            import dpl
            dpl.loads("print(log(0.0))\n")
    assert Op.__call__ is call and Op.vjp is vjp
