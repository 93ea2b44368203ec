"""The conformance programs of tests/conformance/, one case per program, judged as run.py judges them."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CONFORMANCE = HERE / "conformance"
# The shared copy these programs come from, when the checkout sits beside it (repo/../shared/conformance).
SOURCE = pathlib.Path(os.environ.get("DPL_CONFORMANCE_SOURCE", HERE.parent.parent / "shared" / "conformance"))

_spec = importlib.util.spec_from_file_location("dpl_conformance_run", CONFORMANCE / "run.py")
run_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_py)

PROGRAMS = sorted(CONFORMANCE.glob("*.dpl"))


def dpl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dpl.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def failures(program: pathlib.Path, work: pathlib.Path) -> list[str]:
    """What run.py's check() would report as failing, with DPL run through this interpreter."""
    expected_dir = program.parent
    stem = program.name[:-4]
    shutil.copy(program, work / program.name)
    bad, cases = [], 0
    for suffix, verb in ((".out", "run"), (".train.out", "train")):
        expected = expected_dir / (stem + suffix)
        if expected.exists():
            cases += 1
            extra = ["--out", work / "params.npz"] if verb == "train" else []
            r = dpl(verb, program.name, *extra, cwd=work)
            want = expected.read_text()
            if not (r.returncode == 0 and run_py.same(r.stdout, want)):
                bad.append(f"{stem} ({verb}): exit {r.returncode}\n--- want\n{want}--- got\n{r.stdout}"
                           f"{r.stderr[-800:]}")
    err = expected_dir / (stem + ".err")
    if err.exists():
        cases += 1
        file, line = err.read_text().strip().rstrip(":").rsplit(":", 1)
        r = dpl("run", program.name, cwd=work)
        m = run_py.POSITION.match(r.stderr)
        if not (r.returncode != 0 and m is not None and pathlib.Path(m[1]).name == file and m[2] == line
                and "Traceback" not in r.stdout + r.stderr):
            bad.append(f"{stem} (error): exit {r.returncode}, want stderr to start with {file}:{line}:COL: "
                       f"message\n{r.stderr[-800:]}")
    if not cases:
        bad.append(f"{stem}: no .out, .train.out or .err file beside it")
    return bad


@pytest.mark.parametrize("program", [pytest.param(p, id=p.name[:-4]) for p in PROGRAMS])
def test_conformance(program, tmp_path):
    bad = failures(program, tmp_path)
    assert not bad, "\n\n".join(bad)


def test_programs_are_there():
    """The copy is complete: 14 programs, each with something to compare against."""
    assert len(PROGRAMS) >= 14
    for p in PROGRAMS:
        stem = p.name[:-4]
        assert any((CONFORMANCE / (stem + s)).exists() for s in (".out", ".train.out", ".err")), stem


def test_same_is_strict():
    """The comparison itself can fail: 3 vs 3.0, a wrong digit, non-repr floats, different text."""
    assert run_py.same("1.5 [2, 3]\n", "1.5 [2, 3]\n")
    assert run_py.same("0.30000000000000004\n", "0.3000000000000001\n")  # within 1e-12 relative
    assert not run_py.same("3\n", "3.0\n")
    assert not run_py.same("0.31\n", "0.3\n")
    assert not run_py.same("0.30000000000000000\n", "0.3\n")  # not Python's repr
    assert not run_py.same("[1.0, 2.0]\n", "(1.0, 2.0)\n")
    assert not run_py.same("true\n", "false\n")


def test_a_wrong_expectation_fails(tmp_path):
    """failures() reports a program whose output differs from its .out (so the cases above can fail)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "900-x.dpl").write_text("print(1 + 2)\n")
    (fake / "900-x.out").write_text("3.0\n")
    (fake / "901-y.dpl").write_text("print(1 + 2)\n")
    (fake / "901-y.err").write_text("901-y.dpl:1:\n")
    work = tmp_path / "work"
    work.mkdir()
    assert failures(fake / "900-x.dpl", work)
    assert failures(fake / "901-y.dpl", work)


@pytest.mark.skipif(not SOURCE.is_dir(), reason="no shared conformance directory beside the checkout")
def test_copy_in_sync_with_shared():
    """tests/conformance/ holds the same programs and expectations as the shared copy."""
    names = lambda d: {p.name for p in d.iterdir()
                       if p.suffix in (".dpl", ".out", ".err") or p.name == "run.py"}
    assert names(CONFORMANCE) == names(SOURCE)
    for name in names(SOURCE):
        assert (CONFORMANCE / name).read_bytes() == (SOURCE / name).read_bytes(), name
