"""Loading parameter files that may not fit, or not be trustworthy (README "Command line"): the file must match
the declared parameters (names and shapes) unless --partial; every difference is listed together; nothing is
ever unpickled."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from dpl import checkpoint
from dpl.cli import main

PROG = """\
param w: [2] ~ zeros
module Dense(n_in, n_out) {
    param W: [n_in, n_out] ~ glorot
    param b: [n_out] ~ zeros
    fn call(x) = x @ W + b
}
enc = Dense(2, 3)
print(w)
print(enc.W)
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
Y = [1.0, 2.0, 3.0]
fn loss(x, y) = mean((x @ w + sum(enc(x), axis = 1) - y) ^ 2)
train loss over X, Y {
    optimizer = sgd(lr = 0.01)
    epochs = 2
}
param late: [1] ~ ones
print(late)
"""

GOOD = {"w": np.array([5.0, 6.0]), "enc.W": np.full((2, 3), 0.5), "enc.b": np.zeros(3), "late": np.array([2.0])}


@pytest.fixture
def prog(tmp_path):
    p = tmp_path / "p.dpl"
    p.write_text(PROG)
    return p


def params(tmp_path, name="f.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def run(*args):
    return main([*map(str, args)])


def test_matching_file_loads_everything(prog, tmp_path, capsys):
    f = params(tmp_path, **GOOD)
    assert run("run", prog, "--params", f) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[5.0, 6.0]", "[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]", "[2.0]"] and err == ""


def test_missing_and_extra_names_are_listed_together(prog, tmp_path, capsys):
    f = params(tmp_path, w=GOOD["w"], stray=np.ones(2), other=np.ones(1))
    assert run("run", prog, "--params", f) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"dpl: error: the params file {f} does not match the program's parameters (--partial loads the entries "
        f"that match and keeps the initializers of the others):",
        "    missing: `enc.W` is declared but not in the file",
        "    missing: `enc.b` is declared but not in the file",
        "    missing: `late` is declared but not in the file",
        "    extra: `other` is in the file but the program declares no such parameter",
        "    extra: `stray` is in the file but the program declares no such parameter"]


def test_shape_mismatch_stops_at_the_declaration(prog, tmp_path, capsys):
    """Before the value can be used: nothing printed; names already found missing come along."""
    f = params(tmp_path, **dict(GOOD, **{"enc.W": np.zeros((3, 3))}))
    assert run("run", prog, "--params", f) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{prog}:3:11: parameter `enc.W` is declared [2, 3] but the params file {f} has [3, 3] "
                          f"(--partial loads only the entries that match)\n")
    g = params(tmp_path, "g.npz", **{"enc.W": np.zeros((3, 3))})
    assert run("run", prog, "--params", g) == 1
    assert "has [3, 3]; the file also lacks `w` (--partial" in capsys.readouterr().err


def test_partial_loads_what_matches_and_warns_about_the_rest(prog, tmp_path, capsys):
    assert run("run", prog) == 0
    initial = capsys.readouterr().out.splitlines()
    f = params(tmp_path, w=GOOD["w"], **{"enc.W": np.zeros((3, 3))}, stray=np.ones(2))
    assert run("run", prog, "--params", f, "--partial") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[5.0, 6.0]", initial[1], initial[2]]  # enc.W and late keep their initializers
    assert err.splitlines() == [
        f"dpl: warning: the params file {f} matches the program only in part; with --partial the matching "
        f"entries were loaded, the others not:",
        "    shape: `enc.W` is declared [2, 3] but the file has [3, 3]",
        "    missing: `enc.b` is declared but not in the file",
        "    missing: `late` is declared but not in the file",
        "    extra: `stray` is in the file but the program declares no such parameter"]


def test_train_checks_before_the_first_step(prog, tmp_path, capsys):
    f = params(tmp_path, w=GOOD["w"], **{"enc.W": GOOD["enc.W"]})
    out = tmp_path / "out.npz"
    assert run("train", prog, "--quiet", "--params", f, "--out", out) == 1
    o, err = capsys.readouterr()
    assert o.count("\n") == 2  # the prints before the train block
    assert err.startswith(f"dpl: error: the params file {f} does not match")
    assert "missing: `enc.b`" in err and "late" not in err  # `late` is not declared yet: no verdict on it
    assert "epoch" not in err and not out.exists()


def test_train_names_never_declared_fail_at_the_end_without_saving(prog, tmp_path, capsys):
    f = params(tmp_path, **GOOD, stray=np.ones(2))
    out = tmp_path / "out.npz"
    assert run("train", prog, "--quiet", "--params", f, "--out", out) == 1
    err = capsys.readouterr().err
    assert "train loss: epoch 2/2" in err and "extra: `stray`" in err and not out.exists()
    assert run("train", prog, "--quiet", "--params", f, "--out", out, "--partial") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "extra: `stray`" in err
    assert set(np.load(out).files) == {"w", "enc.W", "enc.b", "late"}


def test_train_from_a_complete_file_with_a_late_parameter(prog, tmp_path, capsys):
    """`late` is declared after the train block: the check at the block does not call it extra."""
    out = tmp_path / "out.npz"
    assert run("train", prog, "--quiet", "--out", out) == 0
    assert run("train", prog, "--quiet", "--params", out, "--out", tmp_path / "again.npz") == 0
    assert "warning" not in capsys.readouterr().err


class Payload:
    """Unpickling this creates a file: proof that pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_params_are_refused_without_running_them(prog, tmp_path, capsys):
    marker = tmp_path / "pickle-ran"
    f = tmp_path / "evil.npz"
    np.savez(f, w=np.array([Payload(marker)], dtype=object))
    with np.load(f, allow_pickle=True) as z:  # the file is a real pickle bomb ...
        z["w"]
    assert marker.exists()
    marker.unlink()
    assert run("run", prog, "--params", f) == 1  # ... that DPL does not open
    err = capsys.readouterr().err
    assert err.startswith(f"dpl: error: cannot read params file {f}: ") and "pickle" in err
    assert run("train", prog, "--quiet", "--resume", f) == 1
    assert capsys.readouterr().err.startswith(f"dpl: error: cannot read checkpoint {f}: ")
    assert not marker.exists()


def test_pickled_checkpoint_meta_is_refused(prog, tmp_path, capsys):
    marker = tmp_path / "pickle-ran"
    f = tmp_path / "evil.ckpt.npz"
    np.savez(f, __checkpoint__=np.array([Payload(marker)], dtype=object), **{"params/w": np.zeros(2)})
    assert run("train", prog, "--quiet", "--resume", f) == 1
    assert "cannot read checkpoint" in capsys.readouterr().err and not marker.exists()


@pytest.mark.parametrize("case, words", [
    ("text", "`w` holds <U1 values, not numbers"),
    ("npy", "a single .npy array, not an .npz archive"),
    ("truncated", "cannot read params file"),
    ("garbage", "cannot read params file"),
])
def test_damaged_or_strange_files_are_user_errors(case, words, prog, tmp_path, capsys):
    f = tmp_path / "f.npz"
    if case == "text":
        np.savez(f, w=np.array(["a", "b"]))
    elif case == "npy":
        with open(f, "wb") as fh:
            np.save(fh, np.zeros(2))
    elif case == "truncated":
        np.savez(f, **GOOD)
        f.write_bytes(f.read_bytes()[:300])
    else:
        f.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    assert run("run", prog, "--params", f) == 1
    out, err = capsys.readouterr()
    assert out == "" and words in err and "internal error" not in err and "Traceback" not in err


def test_a_checkpoint_loads_as_params(prog, tmp_path, capsys):
    """`--params` takes a checkpoint's current parameters (not those of finished blocks)."""
    ck = tmp_path / "c.ckpt.npz"
    checkpoint.write(ck, {"block": 0}, {"params": GOOD, "done.0": {k: v * 0 for k, v in GOOD.items()}})
    assert run("run", prog, "--params", ck) == 0
    assert capsys.readouterr().out.splitlines()[0] == "[5.0, 6.0]"


def test_python_api_is_lenient_about_missing_names(tmp_path):
    """`dpl.load(params=...)` keeps its behaviour: missing names keep their initializers, a shape that differs
    is an error at the declaration."""
    import dpl
    from dpl.errors import DplError
    p = tmp_path / "p.dpl"
    p.write_text("param w: [2] ~ zeros\nparam v: [1] ~ ones\n")
    prog = dpl.load(p, params={"w": np.array([1.0, 2.0])})
    assert prog.params["w"].tolist() == [1.0, 2.0] and prog.params["v"].tolist() == [1.0]
    with pytest.raises(DplError, match=r"`w` is declared \[2\] but the given parameters have \[3\]"):
        dpl.load(p, params={"w": np.zeros(3)})


def test_paths_are_not_interpreted(tmp_path, capsys):
    """Entry names are only dictionary keys: a name like ../x does not touch the file system."""
    prog = tmp_path / "p.dpl"
    prog.write_text("param w: [1] ~ ones\nprint(w)\n")
    f = params(tmp_path, w=np.array([3.0]), **{"../escape": np.ones(1)})
    assert run("run", prog, "--params", f, "--partial") == 0
    assert capsys.readouterr().out == "[3.0]\n"
    assert not (tmp_path.parent / "escape").exists() and not pathlib.Path("escape.npy").exists()
