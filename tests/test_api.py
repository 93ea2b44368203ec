"""The Python API (dpl/__init__.py): top-level values out of a Program, calls and their results, prog.train
(its own train blocks as `dpl train` runs them, or one block written from Python) and prog.save_params."""
from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import numpy as np
import pytest

import dpl
from dpl.cli import main as cli_main

PROG = """\
param w: [2] ~ zeros
module Lin(n) {
    param W: [n] ~ ones
    scale = 2.0
    fn call(x) = sum(x * W) * scale
}
lin = Lin(2)
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
Y = [1.0, 2.0, 3.0, 4.0]
name = "demo"
pair = (1, [2.0, 3.0])
items = append(append([], 1.5), (2, "b"))
fn loss(x, y) = mean((x @ w - y) ^ 2) + 0.01 * sum(lin.W ^ 2)
fn listed(x) = append(append([], x), [x, x])
fn two(x, k = 3) = (x, x * k)
fn apply(f, x) = f(x)
train loss over X, Y {
    optimizer = adam(lr = 0.1)
    epochs = 6
    batch = 3
}
err = loss(X, Y)
print("err", err)
"""


@pytest.fixture
def prog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.dpl").write_text(PROG)
    return dpl.load("m.dpl", stdout=io.StringIO())


# ---- top-level values -----------------------------------------------------------------------------------

def test_top_level_values_come_out_as_numpy_and_python(prog):
    np.testing.assert_array_equal(prog["w"], np.zeros(2))
    assert isinstance(prog["X"], np.ndarray) and prog["X"].shape == (4, 2) and prog["X"].dtype == np.float64
    assert prog["name"] == "demo"
    one, pair = prog["pair"]
    assert isinstance(prog["pair"], tuple) and one == 1 and one.dtype.kind == "i"
    np.testing.assert_array_equal(pair, [2.0, 3.0])
    items = prog["items"]
    assert isinstance(items, list) and items[0] == 1.5 and items[1][0] == 2 and items[1][1] == "b"
    np.testing.assert_array_equal(prog["lin.W"], np.ones(2))  # a module instance's members by dotted name
    assert prog["lin.scale"] == 2.0
    assert prog["err"] == pytest.approx(np.mean((np.array([1.0, 2.0, 3.0, 4.0])) ** 2) + 0.02)
    assert "w" in prog and "lin.W" in prog and "exp" not in prog and "lin.V" not in prog
    assert prog.get("nope") is None and prog.get("nope", 5) == 5 and prog.get("name") == "demo"
    assert set(prog.values) == {"w", "X", "Y", "name", "pair", "items", "err"}  # data, not functions or instances
    np.testing.assert_array_equal(prog.values["Y"], [1.0, 2.0, 3.0, 4.0])


def test_reading_what_has_no_python_value_says_so(prog):
    with pytest.raises(KeyError, match=r"the program has no top-level value `nmae` \(did you mean `name`\?\)"):
        prog["nmae"]
    with pytest.raises(KeyError):
        prog["exp"]  # builtins are not the program's values
    with pytest.raises(TypeError, match=r'`lin` is <Lin instance lin>, which has no Python value; read its members '
                                        r'by their dotted names, as prog\["lin.W"\]'):
        prog["lin"]


def test_functions_are_callables_and_results_are_python_lists_and_tuples(prog):
    out = prog.call("listed", 2.0)
    assert isinstance(out, list) and len(out) == 2  # a DPL list: a Python list, not the interpreter's
    assert out[0] == 2.0 and isinstance(out[0], np.ndarray)
    np.testing.assert_array_equal(out[1], [2.0, 2.0])
    x, y = prog.call("two", 1.5, k=4)
    assert (float(x), float(y)) == (1.5, 6.0)
    f = prog["two"]
    assert repr(f) == "<dpl <fn two>>"
    assert [float(v) for v in f(2.0)] == [2.0, 6.0]
    assert float(prog.call("apply", prog["listed"], 1.0)[0]) == 1.0  # a function value passed back to DPL
    assert float(prog.call("apply", prog.get("two"), 3.0)[1]) == 9.0
    g = prog.grad("loss")(prog["X"], prog["Y"])
    assert isinstance(g, np.ndarray) and g.shape == (4, 2)


# ---- prog.train() runs the program's train blocks as `dpl train` does -----------------------------------------

def test_train_with_no_arguments_is_dpl_train(prog, capsys):
    assert cli_main(["train", "m.dpl", "--quiet", "--out", "cli.npz", "--metrics", "cli.json"]) == 0
    capsys.readouterr()
    metrics = prog.train()
    with np.load("cli.npz") as z:
        for k in z.files:
            np.testing.assert_array_equal(prog.params[k], z[k])  # bit for bit
    expected = json.loads(Path("cli.json").read_text())
    for key in ("final_loss", "epochs", "steps", "skipped_steps", "epoch_losses"):
        assert metrics[key] == expected[key]
    assert [b["steps"] for b in metrics["blocks"]] == [b["steps"] for b in expected["blocks"]] == [12]
    assert len(metrics["step_losses"]) == 12 and metrics["step_losses"][-1] == metrics["final_loss"]
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    # the statements after the block ran again and saw the trained parameters
    assert prog["err"] == pytest.approx(prog.call("loss", prog["X"], prog["Y"]))
    assert prog["err"] < 1.0
    assert prog.interp.stdout.getvalue().count("err ") == 2  # once when loaded, once more by train()


def test_train_starts_from_the_params_the_program_was_loaded_with(prog):
    np.savez("start.npz", w=np.array([1.0, 2.0]), **{"lin.W": np.zeros(2)})
    loaded = dpl.load("m.dpl", params="start.npz", stdout=io.StringIO())
    np.testing.assert_array_equal(loaded["w"], [1.0, 2.0])
    first = loaded.train()
    again = loaded.train()  # each run starts from the file again: the same result
    assert first["step_losses"] == again["step_losses"]
    assert first["step_losses"][0] != prog.train()["step_losses"][0]


def test_train_with_no_loss_takes_no_settings(prog):
    with pytest.raises(dpl.DplError, match=r"prog.train\(\) with no loss runs the program's own train blocks"):
        prog.train(epochs=3)


# ---- prog.train("loss", ...) trains as one train block written in Python --------------------------------------

def test_train_a_loss_from_python_is_the_train_block_it_spells(prog, tmp_path):
    block = PROG.replace("optimizer = adam(lr = 0.1)\n    epochs = 6\n    batch = 3",
                         "optimizer = sgd(lr = 0.05, momentum = 0.5)\n    epochs = 4\n    batch = 2\n"
                         "    shuffle = false\n    seed = 7")
    Path("block.dpl").write_text(block)
    reference = dpl.load("block.dpl", stdout=io.StringIO())
    ref = reference.train()
    got = prog.train("loss", prog["X"], "Y", epochs=4, batch=np.int64(2), shuffle=False, seed=7,
                     optimizer="sgd(lr = 0.05, momentum = 0.5)")
    assert got["step_losses"] == ref["step_losses"] and got["steps"] == 8
    for k, v in reference.params.items():
        np.testing.assert_array_equal(prog.params[k], v)
    block = got["blocks"][0]
    assert block["where"] == "<prog.train>:1" and block["optimizer"] == "sgd(lr=0.05, momentum=0.5)"
    assert prog["err"] != prog.call("loss", prog["X"], prog["Y"])  # nothing else ran: `err` is the loaded value


def test_train_a_loss_takes_optimizer_names_and_defaults(prog):
    m = prog.train("loss", "X", "Y", optimizer="rmsprop")
    assert m["blocks"][0]["optimizer"] == "rmsprop(lr=0.01)" and m["epochs"] == 1 and m["steps"] == 1
    m = prog.train("loss", "X[0:2]", "Y[0:2]", epochs=3, batch=1)
    assert m["blocks"][0]["optimizer"] == "adam(lr=0.001)" and m["steps"] == 6


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch=0), "<prog.train>:2:13: `batch` must be at least 1"),
    (dict(epochs=1.5), "<prog.train>:2:14: epochs must be an integer, got a float scalar; use int(...) to convert"),
    (dict(optimizer="adma"), "<prog.train>:2:17: unknown name `adma` (did you mean `adam`?)"),
    (dict(optimizer="3"), "<prog.train>:2:17: `optimizer` must be sgd(...), adam(...) or rmsprop(...), got an "
                          "integer scalar"),
    (dict(loss="lossx"), "<prog.train>:1:7: unknown name `lossx` (did you mean `loss`?)"),
    (dict(over=("X", "Y[0:2]")), "<prog.train>:1:20: `train ... over`: every tensor needs the same first "
                                 "dimension; 4 rows in the first but 2 here"),
])
def test_train_a_loss_reports_errors_in_the_block_it_spells(prog, kwargs, message):
    loss, over = kwargs.pop("loss", "loss"), kwargs.pop("over", ("X", "Y"))
    with pytest.raises(dpl.DplError) as e:
        prog.train(loss, *over, **kwargs)
    assert e.value.format().splitlines()[0] == message
    assert "^" in e.value.format()  # the caret under the written-out block


# ---- prog.save_params ---------------------------------------------------------------------------------------

def test_save_params_writes_what_dpl_train_out_writes(prog, capsys):
    prog.train()
    assert prog.save_params("api.npz") == Path("api.npz")
    assert cli_main(["train", "m.dpl", "--quiet", "--out", "cli.npz"]) == 0
    assert Path("api.npz").read_bytes() == Path("cli.npz").read_bytes()
    assert cli_main(["run", "m.dpl", "--params", "api.npz"]) == 0  # and reads back as --params
    assert not [p.name for p in Path(".").iterdir() if p.name.endswith(".tmp")]


def test_save_params_is_atomic(prog, monkeypatch):
    np.savez("p.npz", old=np.ones(3))
    old = Path("p.npz").read_bytes()

    def savez(f, **arrays):
        f.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(np, "savez", savez)
        with pytest.raises(dpl.DplError, match="No space left on device"):
            prog.save_params("p.npz")
    assert Path("p.npz").read_bytes() == old
    with pytest.raises(dpl.DplError, match="cannot write no/such/dir/p.npz: the directory .* does not exist"):
        prog.save_params("no/such/dir/p.npz")
    Path("d").mkdir()
    with pytest.raises(dpl.DplError, match="it is a directory"):
        prog.save_params("d")


# ---- the README's Python API runs as written ----------------------------------------------------------------

MODEL = """\
param W: [1, 4] ~ glorot
module Lin(n) {
    param W: [n, 1] ~ glorot
    fn call(x) = x @ W
}
enc = Lin(4)
fn f(x) = sum(tanh(x * W) ^ 2)
xs = normal(0, 1, [64, 1])
ys = sin(xs)
fn loss(x, y) = mean((enc(tanh(x @ W)) - y) ^ 2)
train loss over xs, ys {
    epochs = 2
    batch = 16
}
"""


def test_the_readme_python_api_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("model.dpl").write_text(MODEL)
    assert cli_main(["train", "model.dpl", "--quiet"]) == 0
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code, scope)
    prog, metrics = scope["prog"], scope["metrics"]
    assert metrics["steps"] == 40 and len(metrics["step_losses"]) == 40
    assert float(scope["small"].call("sq", 3.0)) == 9.0
    assert Path("model.params.npz").is_file() and set(prog.params) == {"W", "enc.W"}


def test_train_a_loss_with_a_bare_optimizer_name_says_what_it_lacks(prog):
    with pytest.raises(dpl.DplError) as e:
        prog.train("loss", "X", "Y", optimizer="sgd")
    assert e.value.format().splitlines()[0] == ("<prog.train>:2:17: wrong arguments to `sgd`: missing a required "
                                                "argument: 'lr'; usage: sgd(lr, momentum = 0.0)")
