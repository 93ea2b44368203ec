"""`train` blocks and `dpl train` (LANGUAGE.md §8, §10; README "Command line"): optimizers against
hand-written NumPy, minibatching, --epochs/--metrics, the params file, non-finite stops, atomic writes."""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def dpl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dpl.cli", *map(str, args)], cwd=cwd or ROOT / "tests",
                          capture_output=True, text=True, timeout=120)


def train(prog, *args):
    """`dpl train --quiet PROG ARGS`."""
    return dpl("train", prog, "--quiet", *args)


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


def npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def floats(line: str) -> np.ndarray:
    return np.array(eval(line), dtype=float)


def leftovers(directory: pathlib.Path) -> list[str]:
    """Temporary files a writer left behind (anything hidden or ending in .tmp)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def without_epoch_lines(stderr: str) -> str:
    """stderr less the line per epoch that --quiet prints (`train loss: epoch 3/10, mean loss 0.25`)."""
    return "".join(x for x in stderr.splitlines(keepends=True) if not re.match(r"train \w+: epoch \d+/\d+, ", x))


def lit(a) -> str:
    """A DPL tensor literal with the exact float64 values of `a`."""
    return repr(np.asarray(a, dtype=float).tolist())


# ---- data of the small problems -------------------------------------------------------------------

X = np.array([[1.0, 0.5], [-0.3, 1.0], [0.7, 0.7], [2.0, -1.0], [0.2, 0.1]])
Y = np.array([1.0, 2.0, 0.5, -1.0, 0.3])
W0, B0 = np.array([0.5, -0.3]), 0.1

C = np.array([1.0, 3.0, 0.5])
T = np.array([0.3, 0.1, -0.7])
Q0 = np.array([1.0, -2.0, 0.5])

OPTIMIZERS = {  # DPL spelling -> (kind, hyperparameters of the NumPy reference)
    "sgd": ("sgd(lr = 0.05)", dict(kind="sgd", lr=0.05, momentum=0.0)),
    "sgd-momentum": ("sgd(lr = 0.05, momentum = 0.9)", dict(kind="sgd", lr=0.05, momentum=0.9)),
    "adam": ("adam(lr = 0.05)", dict(kind="adam", lr=0.05, betas=(0.9, 0.999), eps=1e-8)),
    "adam-options": ("adam(lr = 0.02, betas = [0.8, 0.99], eps = 1e-6)",
                     dict(kind="adam", lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "rmsprop": ("rmsprop(lr = 0.01)", dict(kind="rmsprop", lr=0.01, alpha=0.99, eps=1e-8)),
}


class Reference:
    """torch.optim semantics written out by hand: SGD (momentum buffer starts at g, no dampening),
    Adam (bias-corrected), RMSprop (no centering, no momentum)."""

    def __init__(self, kind, lr, momentum=0.0, betas=(0.9, 0.999), eps=1e-8, alpha=0.99):
        self.kind, self.lr, self.momentum, self.betas, self.eps, self.alpha = kind, lr, momentum, betas, eps, alpha
        self.t, self.state = 0, {}

    def step(self, params: dict, grads: dict):
        self.t += 1
        for k, g in grads.items():
            if self.kind == "sgd":
                if self.momentum:
                    buf = self.state.get(k)
                    buf = g.copy() if buf is None else self.momentum * buf + g
                    self.state[k] = buf
                    g = buf
                params[k] = params[k] - self.lr * g
            elif self.kind == "adam":
                b1, b2 = self.betas
                m, v = self.state.get(k, (np.zeros_like(g), np.zeros_like(g)))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                self.state[k] = (m, v)
                m_hat = m / (1 - b1 ** self.t)
                v_hat = v / (1 - b2 ** self.t)
                params[k] = params[k] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
            else:
                v = self.state.get(k, np.zeros_like(g))
                v = self.alpha * v + (1 - self.alpha) * g * g
                self.state[k] = v
                params[k] = params[k] - self.lr * g / (np.sqrt(v) + self.eps)


def close(a, b, rel=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-3)), (a, b, a - b)


# ---- optimizers against NumPy -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_full_batch_matches_numpy(name, tmp_path):
    """Without `over`: the loss is called with no arguments, one step per epoch."""
    spelled, hyper = OPTIMIZERS[name]
    epochs = 40
    prog = write(tmp_path / "q.dpl", f"""\
param w: [3] = {lit(Q0)}
c = {lit(C)}
t = {lit(T)}
fn loss() = sum(c * (w - t) ^ 2)
train loss {{
    optimizer = {spelled}
    epochs = {epochs}
}}
""")
    out = tmp_path / "q.npz"
    r = train(prog, "--out", out, "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == epochs
    ref, p = Reference(**hyper), {"w": Q0.copy()}
    for _ in range(epochs):
        ref.step(p, {"w": 2 * C * (p["w"] - T)})
    got = npz(out)
    assert set(got) == {"w"}
    close(got["w"], p["w"])
    assert not np.allclose(p["w"], Q0, atol=1e-3)  # it moved: the comparison means something


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_minibatches_match_numpy(name, tmp_path):
    """With `over`, batch 2 of 5 rows, no shuffle: 3 steps an epoch, the last batch one row."""
    spelled, hyper = OPTIMIZERS[name]
    epochs = 4
    prog = write(tmp_path / "b.dpl", f"""\
param w: [2] = {lit(W0)}
param b: [] = {B0!r}
X = {lit(X)}
Y = {lit(Y)}
fn loss(x, y) = mean((x @ w + b - y) ^ 2)
train loss over X, Y {{
    optimizer = {spelled}
    epochs = {epochs}
    batch = 2
    shuffle = false
}}
""")
    out = tmp_path / "b.npz"
    r = train(prog, "--out", out, "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 3 * epochs
    ref, p = Reference(**hyper), {"w": W0.copy(), "b": np.array(B0)}
    for _ in range(epochs):
        for k in range(0, len(X), 2):
            x, y = X[k:k + 2], Y[k:k + 2]
            res = x @ p["w"] + p["b"] - y
            ref.step(p, {"w": 2 * x.T @ res / len(x), "b": 2 * res.sum() / len(x)})
    got = npz(out)
    assert set(got) == {"w", "b"}
    assert got["b"].shape == ()
    close(got["w"], p["w"])
    close(got["b"], p["b"])


def test_adam_defaults_are_torch_defaults(tmp_path):
    """`adam()` is lr 0.001, betas (0.9, 0.999), eps 1e-8, as torch.optim.Adam."""
    prog = write(tmp_path / "a.dpl", f"""\
param w: [3] = {lit(Q0)}
fn loss() = sum({lit(C)} * (w - {lit(T)}) ^ 2)
train loss {{
    optimizer = adam()
    epochs = 5
}}
""")
    r = train(prog, "--out", tmp_path / "a.npz")
    assert r.returncode == 0, r.stderr
    ref, p = Reference("adam", 0.001), {"w": Q0.copy()}
    for _ in range(5):
        ref.step(p, {"w": 2 * C * (p["w"] - T)})
    close(npz(tmp_path / "a.npz")["w"], p["w"])


# ---- batches, shuffle, epochs, metrics ------------------------------------------------------------------

VISITS = """\
param w: [7] ~ zeros
idx = arange(7)
fn loss(i) = sum(w[i])
train loss over idx {{
    optimizer = sgd(lr = 1.0)
    epochs = 4
    batch = 3
    shuffle = {shuffle}
}}
print(w)
"""


@pytest.mark.parametrize("shuffle", ["true", "false"])
def test_every_row_once_per_epoch(shuffle, tmp_path):
    """sum(w[i]) with lr 1 lowers w[i] by one per visit: after 4 epochs every row was seen exactly 4 times,
    the last partial batch (7 = 3 + 3 + 1) included."""
    prog = write(tmp_path / "v.dpl", VISITS.format(shuffle=shuffle))
    r = train(prog, "--out", tmp_path / "v.npz", "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[-4.0, -4.0, -4.0, -4.0, -4.0, -4.0, -4.0]\n"
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["steps"] == 12 and m["epochs"] == 4


def _sgd_program(shuffle, seed=None):
    extra = f"\n    seed = {seed}" if seed is not None else ""
    return f"""\
param w: [2] = {lit(W0)}
X = {lit(X)}
Y = {lit(Y)}
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over X, Y {{
    optimizer = sgd(lr = 0.1)
    epochs = 3
    batch = 2
    shuffle = {shuffle}{extra}
}}
"""


def test_shuffle_changes_the_order_and_follows_the_seed(tmp_path):
    def run(name, text, *args):
        prog = write(tmp_path / f"{name}.dpl", text)
        r = train(prog, "--out", tmp_path / f"{name}.npz", *args)
        assert r.returncode == 0, r.stderr
        return (tmp_path / f"{name}.npz").read_bytes()

    fixed = run("fixed", _sgd_program("false"))
    fixed_seed = run("fixed_seed", _sgd_program("false"), "--seed", "5")
    default = run("default", _sgd_program("true"))
    explicit = run("explicit", _sgd_program("true", seed=0))
    by_flag = run("by_flag", _sgd_program("true"), "--seed", "7")
    block7 = run("block7", _sgd_program("true", seed=7))
    block3 = run("block3", _sgd_program("true", seed=3))
    assert fixed == fixed_seed  # no shuffle: the seed does not matter
    assert default != fixed  # shuffle is on by default and reorders the minibatches
    assert default == explicit  # the block's seed defaults to --seed (0)
    assert by_flag == block7  # ... and `seed = 7` equals --seed 7
    assert block7 != block3 != default


def test_batch_default_is_all_rows(tmp_path):
    """Without `batch` every step sees all rows, so shuffle does not change the result beyond rounding."""
    text = _sgd_program("true").replace("    batch = 2\n", "")
    prog = write(tmp_path / "all.dpl", text)
    r = train(prog, "--out", tmp_path / "all.npz", "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 3
    p = W0.copy()
    for _ in range(3):
        p = p - 0.1 * 2 * X.T @ (X @ p - Y) / len(X)
    np.testing.assert_allclose(npz(tmp_path / "all.npz")["w"], p, rtol=1e-12)


METRIC_PROGRAM = """\
param w: [2] ~ zeros
X = {X}
Y = {Y}
fn loss(x, y) = mean((x @ w - y) ^ 2)
fn full() = mean((X @ w - Y) ^ 2)
print(full())
train {loss} {over}{{
    optimizer = sgd(lr = 0.01)
{settings}}}
"""


@pytest.mark.parametrize("settings, over, steps, epochs", [
    ("    epochs = 3\n    batch = 2\n", True, 9, 3),        # ceil(5 / 2) * 3
    ("    epochs = 2\n    batch = 5\n", True, 2, 2),
    ("    epochs = 2\n    batch = 1\n", True, 10, 2),
    ("    epochs = 4\n", True, 4, 4),                        # batch = all rows
    ("    epochs = 2\n    batch = 8\n", True, 2, 2),        # a batch larger than the data
    ("    epochs = 3\n", False, 3, 3),                       # no `over`: one step an epoch
    ("", True, 1, 1),                                        # epochs defaults to 1
], ids=["b2", "b5", "b1", "ball", "b8", "no-over", "defaults"])
def test_metrics_step_counts(settings, over, steps, epochs, tmp_path):
    text = METRIC_PROGRAM.format(X=lit(X), Y=lit(Y), loss="loss" if over else "full",
                                 over="over X, Y " if over else "", settings=settings)
    prog = write(tmp_path / "m.dpl", text)
    metrics = tmp_path / "metrics.json"
    r = train(prog, "--out", tmp_path / "m.npz", "--metrics", metrics)
    assert r.returncode == 0, r.stderr
    m = json.loads(metrics.read_text())
    assert {"final_loss", "epochs", "steps", "wall_seconds"} <= set(m)
    assert m["steps"] == steps and m["epochs"] == epochs
    assert isinstance(m["steps"], int) and isinstance(m["epochs"], int)
    assert isinstance(m["final_loss"], float) and math.isfinite(m["final_loss"])
    assert isinstance(m["wall_seconds"], float) and 0 <= m["wall_seconds"] < 60
    assert leftovers(tmp_path) == []


def test_metrics_final_loss_is_the_last_steps_loss(tmp_path):
    """With one full-batch step, the final loss is the loss at the starting parameters."""
    text = METRIC_PROGRAM.format(X=lit(X), Y=lit(Y), loss="loss", over="over X, Y ",
                                 settings="    epochs = 1\n    shuffle = false\n")
    prog = write(tmp_path / "m.dpl", text)
    r = train(prog, "--out", tmp_path / "m.npz", "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["final_loss"] == float(r.stdout.splitlines()[0]) == np.mean(Y ** 2)


def test_metrics_is_strict_json_without_steps(tmp_path):
    prog = write(tmp_path / "none.dpl", "param w: [2] ~ zeros\nprint(w)\n")
    r = train(prog, "--out", tmp_path / "n.npz", "--metrics", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr

    def reject(token):
        raise ValueError(f"not JSON: {token}")

    m = json.loads((tmp_path / "m.json").read_text(), parse_constant=reject)
    assert m["steps"] == 0 and m["epochs"] == 0


TWO_BLOCKS = """\
param w: [2] ~ zeros
X = {X}
Y = {Y}
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over X, Y {{
    optimizer = sgd(lr = 0.01)
    epochs = {e1}
    batch = 2
    shuffle = false
}}
train loss over X, Y {{
    optimizer = sgd(lr = 0.001)
    epochs = {e2}
    batch = 3
    shuffle = false
}}
print(w)
"""


def test_epochs_override_applies_to_every_block(tmp_path):
    written = write(tmp_path / "two.dpl", TWO_BLOCKS.format(X=lit(X), Y=lit(Y), e1=5, e2=7))
    as_if = write(tmp_path / "two2.dpl", TWO_BLOCKS.format(X=lit(X), Y=lit(Y), e1=2, e2=2))
    r = train(written, "--epochs", "2", "--out", tmp_path / "a.npz", "--metrics", tmp_path / "a.json")
    s = train(as_if, "--out", tmp_path / "b.npz", "--metrics", tmp_path / "b.json")
    full = train(written, "--out", tmp_path / "c.npz", "--metrics", tmp_path / "c.json")
    for x in (r, s, full):
        assert x.returncode == 0, x.stderr
    a, c = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "c.json").read_text())
    assert a["epochs"] == 4 and a["steps"] == 2 * 3 + 2 * 2  # both blocks counted
    assert c["epochs"] == 12 and c["steps"] == 5 * 3 + 7 * 2
    assert r.stdout == s.stdout != full.stdout
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


# ---- the params file ---------------------------------------------------------------------------------------

TRAINABLE = """\
param w: [2] ~ zeros
module Dense(n_in, n_out) {
    param W: [n_in, n_out] ~ glorot
    param b: [n_out] ~ zeros
    fn call(x) = x @ W + b
}
enc = Dense(2, 3)
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [1.0, 3.0]]
Y = [1.0, 2.0, 3.0, 4.0, 7.0]
fn loss(x, y) = mean((x @ w + sum(enc(x), axis = 1) - y) ^ 2)
print(loss(X, Y))
train loss over X, Y {
    optimizer = adam(lr = 0.05)
    epochs = 10
    batch = 2
}
print(loss(X, Y))
print(w)
print(enc.W)
print(enc.b)
"""


def test_params_file_round_trips(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    before = dpl("run", prog)
    trained = train(prog)  # default output beside the program
    out = tmp_path / "t.params.npz"
    assert before.returncode == 0 and trained.returncode == 0, before.stderr + trained.stderr
    p = npz(out)
    assert set(p) == {"w", "enc.W", "enc.b"}
    assert p["w"].shape == (2,) and p["enc.W"].shape == (2, 3) and p["enc.b"].shape == (3,)
    assert all(v.dtype == np.float64 for v in p.values())
    init = before.stdout.splitlines()
    # every parameter moved, module parameters included
    assert not np.array_equal(floats(init[2]), p["w"])
    assert not np.array_equal(floats(init[3]), p["enc.W"])
    assert not np.array_equal(floats(init[4]), p["enc.b"])
    # statements after the train block see the trained values, exactly those saved
    lines = trained.stdout.splitlines()
    assert float(lines[1]) < float(lines[0]) == float(init[0])
    assert np.array_equal(floats(lines[2]), p["w"])
    assert np.array_equal(floats(lines[3]), p["enc.W"])
    assert np.array_equal(floats(lines[4]), p["enc.b"])
    # `dpl run --params` prints the same
    loaded = dpl("run", prog, "--params", out)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[0] == lines[1]
    assert loaded.stdout.splitlines()[2:] == lines[2:]


def test_train_continues_from_params(tmp_path):
    """sgd keeps no state, so 2 + 2 epochs from a saved file equal 4 epochs at once."""
    text = _sgd_program("false")
    four = write(tmp_path / "four.dpl", text.replace("epochs = 3", "epochs = 4"))
    two = write(tmp_path / "two.dpl", text.replace("epochs = 3", "epochs = 2"))
    assert train(four, "--out", tmp_path / "4.npz").returncode == 0
    assert train(two, "--out", tmp_path / "2.npz").returncode == 0
    r = train(two, "--params", tmp_path / "2.npz", "--out", tmp_path / "2+2.npz")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(npz(tmp_path / "2+2.npz")["w"], npz(tmp_path / "4.npz")["w"])
    assert not np.array_equal(npz(tmp_path / "2.npz")["w"], npz(tmp_path / "4.npz")["w"])


def test_float32_training_saves_float32(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    r = train(prog, "--dtype", "float32", "--out", tmp_path / "f.npz")
    assert r.returncode == 0, r.stderr
    p = npz(tmp_path / "f.npz")
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.array_equal(floats(r.stdout.splitlines()[2]).astype(np.float32), p["w"])


def test_values_taken_before_training_keep_their_value(tmp_path):
    prog = write(tmp_path / "alias.dpl", """\
param w: [2] ~ zeros
w0 = w
fn loss() = sum((w - [1.0, 2.0]) ^ 2)
train loss {
    optimizer = sgd(lr = 0.1)
    epochs = 3
}
print(w0)
print(w)
""")
    r = train(prog, "--out", tmp_path / "a.npz")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[0.0, 0.0]", "[0.488, 0.976]"]


def test_determinism_same_seed_same_bytes(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    runs = [train(prog, *seed, "--out", tmp_path / f"{i}.npz")
            for i, seed in enumerate([[], ["--seed", "0"], ["--seed", "1"]])]
    for r in runs:
        assert r.returncode == 0, r.stderr
    a, b, c = ((tmp_path / f"{i}.npz").read_bytes() for i in range(3))
    assert a == b
    assert a != c  # the seed reaches the initializers and the shuffle
    assert runs[0].stdout == runs[1].stdout != runs[2].stdout


# ---- failures keep what the user had ---------------------------------------------------------------------

OLD = {"w": np.array([9.0, 9.0]), "enc.W": np.full((2, 3), 9.0), "enc.b": np.full(3, 9.0)}


@pytest.mark.parametrize("case, tail", [
    ("runtime-after-train", "print([1.0, 2.0] @ [[1.0, 2.0, 3.0]])\n"),
    ("syntax", "print((1 + )\n"),
    ("runtime-before-train", None),
    ("in-loss", None),
])
def test_failed_run_leaves_params_file_untouched(case, tail, tmp_path):
    text = TRAINABLE + tail if tail else TRAINABLE
    if case == "runtime-before-train":
        text = text.replace("print(loss(X, Y))\ntrain", "print(X @ X)\ntrain", 1)
    elif case == "in-loss":
        # fails a few steps into training, once w has moved: a shape error inside the loss
        text = text.replace("fn loss(x, y) = mean(", "fn late(v) {\n    if abs(v[0]) > 0.02 {\n"
                            "        return X @ X\n    }\n    return 0.0\n}\nfn loss(x, y) = late(w) + mean(", 1)
    prog = write(tmp_path / "t.dpl", text)
    out = tmp_path / "t.params.npz"  # the default output, already there
    np.savez(out, **OLD)
    old = out.read_bytes()
    os.utime(out, (1_000_000, 1_000_000))
    r = train(prog, "--metrics", tmp_path / "m.json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert without_epoch_lines(r.stderr).startswith(f"{prog}:")
    if case == "in-loss":
        assert len(r.stdout.splitlines()) == 1 and "called from" in r.stderr
    assert "Traceback" not in r.stderr
    assert out.read_bytes() == old
    assert out.stat().st_mtime == 1_000_000  # not even rewritten with the same bytes
    assert not (tmp_path / "m.json").exists()
    assert leftovers(tmp_path) == []


# ---- non-finite losses and gradients ---------------------------------------------------------------------


def test_nan_loss_stops_and_saves_last_good(tmp_path):
    """log(w) with lr 2: step 1 at w = 1 is fine and moves w to -1, where step 2's loss is nan."""
    prog = write(tmp_path / "n.dpl", """\
param w: [] = 1.0
param u: [2] = [1.0, 2.0]
fn loss() = log(w) + sum(u ^ 2)
print(loss())
train loss {
    optimizer = sgd(lr = 2.0)
    epochs = 5
}
print("after")
""")
    out = tmp_path / "n.npz"
    np.savez(out, w=np.array(7.0), u=np.array([7.0, 7.0]))
    r = train(prog, "--out", out, "--metrics", tmp_path / "m.json")
    assert r.returncode == 1
    assert r.stdout == "5.0\n"  # nothing after the train block ran
    assert r.stderr.startswith(f"train loss: epoch 1/5, mean loss 5\n{prog}:5:")  # epoch 1 was good
    assert "step 2" in r.stderr and "nan" in r.stderr
    assert "Traceback" not in r.stderr
    p = npz(out)  # the parameters of the last good step, saved over the old file
    assert p["w"] == -1.0
    assert np.array_equal(p["u"], np.array([1.0, 2.0]) - 2.0 * 2 * np.array([1.0, 2.0]))
    assert all(np.isfinite(v).all() for v in p.values())
    assert leftovers(tmp_path) == []


def test_nonfinite_gradient_stops_at_step_1(tmp_path):
    """sqrt(w) at w = 0: the loss is 0 but its gradient is +inf (sqrt'(0) = +inf, no epsilon)."""
    prog = write(tmp_path / "g.dpl", """\
param v: [2] = [0.5, 0.5]
param w: [] = 0.0
fn loss() = sqrt(w) + sum(v)
train loss {
    optimizer = adam(lr = 0.1)
    epochs = 3
}
""")
    out = tmp_path / "g.npz"
    r = train(prog, "--out", out)
    assert r.returncode == 1
    assert "step 1" in r.stderr and "`w`" in r.stderr
    p = npz(out)
    assert p["w"] == 0.0 and np.array_equal(p["v"], [0.5, 0.5])  # no step was taken


def test_divergence_stops_with_finite_parameters(tmp_path):
    """w ^ 2 with lr 3 multiplies w by -5 a step until the loss overflows to inf; two steps an epoch."""
    prog = write(tmp_path / "d.dpl", """\
param w: [] = 1.0
fn loss(i) = w ^ 2
train loss over arange(4) {
    optimizer = sgd(lr = 3.0)
    epochs = 1000
    batch = 2
}
""")
    out = tmp_path / "d.npz"
    r = train(prog, "--out", out)
    assert r.returncode == 1
    # |w| = 5^k after k steps; (5^k)^2 overflows once k >= 221, so step 222 (epoch 111) meets inf
    assert "step 222" in r.stderr and "epoch 111" in r.stderr and "inf" in r.stderr
    w = npz(out)["w"]
    assert np.isfinite(w)
    assert math.isclose(abs(float(w)), 5.0 ** 221, rel_tol=1e-12)


def test_overflowing_update_keeps_finite_parameters(tmp_path):
    prog = write(tmp_path / "o.dpl", """\
param w: [] = 1e308
fn loss() = -w
train loss {
    optimizer = sgd(lr = 1e308)
    epochs = 5
}
""")
    out = tmp_path / "o.npz"
    r = train(prog, "--out", out)
    assert r.returncode == 1
    assert np.isfinite(npz(out)["w"])


# ---- atomic writes -------------------------------------------------------------------------------------------


def test_write_replaces_the_file_not_its_contents(tmp_path):
    """The params and metrics files are new files renamed into place: a hard link to the old file keeps
    the old bytes, and no temporary file remains."""
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    work = tmp_path / "out"
    work.mkdir()
    out, metrics = work / "p.npz", work / "m.json"
    np.savez(out, **OLD)
    metrics.write_text("{}")
    old = out.read_bytes()
    os.link(out, tmp_path / "p-link.npz")
    os.link(metrics, tmp_path / "m-link.json")
    r = train(prog, "--out", out, "--metrics", metrics)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p-link.npz").read_bytes() == old
    assert (tmp_path / "m-link.json").read_text() == "{}"
    assert out.read_bytes() != old and set(npz(out)) == {"w", "enc.W", "enc.b"}
    assert json.loads(metrics.read_text())["steps"] == 30
    assert sorted(p.name for p in work.iterdir()) == ["m.json", "p.npz"]


def test_no_temp_file_left_when_the_write_fails(tmp_path):
    """--out naming a directory: the rename fails, the temporary file is removed, the directory survives."""
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    target = tmp_path / "adir"
    target.mkdir()
    r = train(prog, "--out", target)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert target.is_dir() and not list(target.iterdir())
    assert leftovers(tmp_path) == []


def test_out_in_missing_directory_is_a_user_error(tmp_path):
    prog = write(tmp_path / "t.dpl", TRAINABLE)
    r = train(prog, "--out", tmp_path / "missing" / "p.npz")
    assert r.returncode == 1
    assert "internal error" not in r.stderr
    assert "missing" in r.stderr


# ---- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, line, words", [
    ("    optimizer = sgd(lr = 0.1)\n    bogus = 3\n", 7, ["bogus"]),
    ("    batch = 0\n", 6, ["batch"]),
    ("    optimizer = 3\n", 6, ["optimizer"]),
], ids=["unknown-setting", "batch-0", "not-an-optimizer"])
def test_bad_settings_are_errors(settings, line, words, tmp_path):
    prog = write(tmp_path / "s.dpl", f"""\
param w: [2] ~ zeros
X = {lit(X)}
Y = {lit(Y)}
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over X, Y {{
{settings}}}
""")
    r = train(prog, "--out", tmp_path / "s.npz")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{prog}:{line}:"), r.stderr
    for w in words:
        assert w in r.stderr
    assert not (tmp_path / "s.npz").exists()


def test_over_tensors_must_share_first_dimension(tmp_path):
    prog = write(tmp_path / "s.dpl", f"""\
param w: [2] ~ zeros
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over {lit(X)}, [1.0, 2.0] {{
    epochs = 1
}}
""")
    r = train(prog, "--out", tmp_path / "s.npz")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{prog}:3:")
    assert "first dimension" in r.stderr


def test_loss_must_be_a_scalar(tmp_path):
    prog = write(tmp_path / "s.dpl", "param w: [2] ~ zeros\nfn loss() = w * 2\ntrain loss {\n    epochs = 1\n}\n")
    r = train(prog, "--out", tmp_path / "s.npz")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{prog}:3:")
    assert "0-d" in r.stderr


def test_a_parameter_the_loss_never_reads_is_named(tmp_path):
    """A parameter shadowed by a top-level assignment gets no gradient: the run says so instead of saving its
    initial value without a word (issue 8)."""
    prog = write(tmp_path / "p.dpl", "param w: [] = 1.0\nparam v: [] = 2.0\nv = 5.0\n"
                                     "fn loss() = (w - 3.0) ^ 2 + v\n"
                                     "train loss {\n  optimizer = adam(lr = 0.1)\n  epochs = 4\n}\n")
    r = dpl("train", prog, "--quiet", "--out", tmp_path / "o.npz")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: parameter `v` gets no gradient from the loss `loss` (on the block's first step), "
                        "so this block will not change it"]
    assert npz(tmp_path / "o.npz")["v"] == 2.0 and npz(tmp_path / "o.npz")["w"] != 1.0


ATTENTIVE = """\
param K: [4, 3] ~ normal(1.0)
param q: [3] ~ normal(1.0)
fn loss() = sum(attend(q, K, K) ^ 2)
fn look() = attend(q, K, K)
fn plain() = sum(q)
train loss { epochs = 3 }
"""


def test_attention_flag_saves_the_heatmaps_of_a_call_after_training(tmp_path):
    """`--attention FN` draws FN()'s attention with the trained parameters, after they are saved."""
    prog = write(tmp_path / "a.dpl", ATTENTIVE)
    r = train(prog, "--quiet", "--attention", "look")
    assert r.returncode == 0, r.stderr
    png = tmp_path / "a.attention.png"
    assert "1 attention map written to" in r.stderr and png.read_bytes()[:4] == b"\x89PNG"
    r = train(prog, "--quiet", "--attention", "look", "--attention-out", tmp_path / "maps.svg")
    assert r.returncode == 0 and (tmp_path / "maps.svg").read_text().lstrip().startswith("<?xml")
    for args, words in ((["--attention", "nope"], "the program has no function `nope`"),
                        (["--attention", "plain"], "the call computed no attention weights"),
                        (["--attention-out", tmp_path / "m.png"], "give --attention FN too"),
                        (["--attention", "look", "--attention-out", tmp_path / "m.txt"], "the image format")):
        r = train(prog, "--quiet", *args)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
    assert (tmp_path / "a.params.npz").is_file()  # a mistake after training keeps the parameters
