"""docs/BUILTINS.md is generated from the builtin registry (dpl/reference.py): it must match the code, and every
builtin must be documented there with all its options."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dpl import reference
from dpl.builtins import BUILTINS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BUILTINS.md"


def test_the_committed_reference_matches_the_registry():
    assert DOC.read_text(encoding="utf-8") == reference.table(), (
        f"docs/BUILTINS.md disagrees with the builtins' signatures or docstrings; regenerate it from the "
        f"repository root with `{reference.REGENERATE}`")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_has_a_docstring_and_a_row(name):
    b = BUILTINS[name]
    assert (b.fn.__doc__ or "").strip(), f"the builtin `{name}` has no docstring ({b.fn.__module__})"
    assert f"| `{reference.signature(b)}` | {reference.description(b)} |" in DOC.read_text(encoding="utf-8")


def test_odeint_shows_every_option():
    row = next(line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `odeint("))
    for text in ("steps = 100", 'method = "rk4"', "rtol = 1e-06", "atol = 1e-09", "ts = none", '"dopri5"',
                 '"euler"', '"midpoint"'):
        assert text in row


def test_signatures_write_defaults_as_dpl_does():
    assert reference.signature(BUILTINS["concat"]) == "concat(xs, axis = 0)"  # 0, not false
    assert reference.signature(BUILTINS["diff"]) == "diff(x, n = 1, axis = -1)"  # 1, not true
    assert reference.signature(BUILTINS["max"]) == "max(x, y = none, *, axis = none, keepdims = false)"
    assert reference.signature(BUILTINS["print"]) == "print(values, ...)"
    assert reference.signature(BUILTINS["attention"]) == 'attention(q, K, score = "dot", mask = none)'


def test_the_regenerate_command_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "dpl.reference"], capture_output=True, cwd=ROOT, timeout=120,
                         check=True).stdout
    assert out.decode("utf-8") == reference.table()
