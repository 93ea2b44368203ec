"""Nothing lost, nothing cryptic (issue 8): files that collide or cannot be written are refused before anything
runs, outputs are written atomically (through symbolic links), user input never ends in an internal error,
and the limits on steps, nodes and elements hold."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dpl import limits, paramfile
from dpl.cli import main as cli_main

PROG = """\
param w: [2] ~ zeros
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
Y = [1.0, 2.0, 3.0]
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over X, Y {
    optimizer = sgd(lr = 0.1)
    epochs = 3
}
print("done")
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("prog.dpl").write_text(PROG)
    limits.configure()
    yield
    limits.configure()


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train(capsys, *argv):
    return cli(capsys, "train", "prog.dpl", "--quiet", *argv)


def npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- colliding files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, first, second", [
    (["--out", "p.npz", "--checkpoint", "p.npz"], "--out", "--checkpoint"),
    (["--out", "p.npz", "--metrics", "./p.npz"], "--out", "--metrics"),
    (["--out", "p.npz", "--plot", "sub/../p.npz"], "--out", "--plot"),
    (["--out", "prog.dpl"], "the program", "--out"),
    (["--metrics", "m.json", "--plot", "m.json"], "--metrics", "--plot"),
])
def test_two_outputs_naming_one_file_are_refused_before_training(argv, first, second, capsys):
    Path("sub").mkdir()
    code, out, err = train(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"dpl: error: {first}") and f"and {second} name the same file" in err
    assert "trained" not in err
    assert Path("prog.dpl").read_text() == PROG and not Path("p.npz").exists()


def test_checkpoint_equal_to_params_leaves_the_input_alone(capsys):
    np.savez("start.npz", w=np.array([5.0, 6.0]))
    before = Path("start.npz").read_bytes()
    code, _, err = train(capsys, "--params", "start.npz", "--checkpoint", "start.npz")
    assert code == 1 and "--params and --checkpoint name the same file" in err
    assert Path("start.npz").read_bytes() == before


def test_default_checkpoint_equal_to_params_is_named_as_the_default(capsys):
    np.savez("prog.params.ckpt.npz", w=np.array([5.0, 6.0]))
    code, _, err = train(capsys, "--params", "prog.params.ckpt.npz")
    assert code == 1
    assert "--params and the checkpoint prog.params.ckpt.npz (the default of --checkpoint) name the same file" in err


def test_files_compared_after_symlinks(capsys):
    os.symlink("real.npz", "link.npz")
    code, _, err = train(capsys, "--out", "link.npz", "--metrics", "real.npz")
    assert code == 1 and "--out and --metrics name the same file" in err
    assert os.path.islink("link.npz") and not Path("real.npz").exists()


def test_resuming_from_its_own_checkpoint_is_no_collision(capsys):
    code, _, err = train(capsys, "--out", "p.npz", "--checkpoint", "c.npz", "--resume", "c.npz")
    assert code == 1 and "no such checkpoint: c.npz" in err  # got past the check of the files


# ---- outputs that cannot be written -----------------------------------------------------------------------

def test_symlinked_out_writes_through_to_its_target(capsys):
    Path("store").mkdir()
    os.symlink("store/params.npz", "p.npz")
    code, _, err = train(capsys, "--out", "p.npz")
    assert code == 0, err
    assert os.path.islink("p.npz") and os.readlink("p.npz") == "store/params.npz"
    assert set(npz("store/params.npz")) == {"w"} and sorted(os.listdir("store")) == ["params.npz"]


@pytest.mark.parametrize("out, message", [
    (".", "cannot write --out .: it is a directory; name a file"),
    ("/dev/null", "cannot write --out /dev/null: it is not a regular file"),
    ("nowhere/p.npz", "cannot write --out nowhere/p.npz: the directory"),
])
def test_unwritable_out_is_found_before_training(out, message, capsys):
    code, stdout, err = train(capsys, "--out", out)
    assert code == 1 and message in err and "done" not in stdout and "trained" not in err


def test_read_only_directory_is_found_before_training(capsys, monkeypatch):
    def refuse(*a, **kw):  # as a read-only mount does (root can write into a chmod 555 directory)
        raise PermissionError(13, "Read-only file system")
    monkeypatch.setattr(paramfile.tempfile, "mkstemp", refuse)
    code, stdout, err = train(capsys, "--out", "p.npz")
    assert code == 1 and "cannot write --out p.npz: Read-only file system" in err and "done" not in stdout


def test_temporary_files_of_a_killed_write_are_removed_by_the_next_run(capsys):
    Path(".p.npz.ab3_k9zq.tmp").write_bytes(b"half a file")
    Path(".p.npz.ab3_k9zq.tmp.keep").write_bytes(b"not ours")
    Path(".q.npz.ab3_k9zq.tmp").write_bytes(b"another path's")
    code, _, err = train(capsys, "--out", "p.npz")
    assert code == 0, err
    assert sorted(p.name for p in Path(".").iterdir() if p.name.startswith(".")) == [
        ".p.npz.ab3_k9zq.tmp.keep", ".q.npz.ab3_k9zq.tmp"]


def test_plot_with_unknown_extension_is_found_before_training(capsys):
    code, stdout, err = train(capsys, "--out", "p.npz", "--plot", "curve.bmp")
    assert code == 1 and "`--plot curve.bmp`: the image format comes from the extension" in err
    assert "done" not in stdout and not Path("p.npz").exists()


def test_plot_is_written_atomically(capsys, monkeypatch):
    fsync = os.fsync

    def full(fd):  # the disk fills up while the plot is written (the parameters are saved before it)
        if ".curve.png." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        fsync(fd)
    monkeypatch.setattr(paramfile.os, "fsync", full)
    code, _, err = train(capsys, "--out", "p.npz", "--plot", "curve.png")
    assert code == 1 and "cannot write" in err and "curve.png: No space left on device" in err
    assert set(npz("p.npz")) == {"w"} and not Path("curve.png").exists() and not [p for p in os.listdir() if p.endswith(".tmp")]


# ---- Ctrl-C while dpl starts -------------------------------------------------------------------------------

DPL_SCRIPT = Path(sys.executable).with_name("dpl")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not DPL_SCRIPT.is_file(), reason="the `dpl` console script is not installed beside python")
def test_ctrl_c_while_importing_prints_no_traceback():
    """A KeyboardInterrupt raised in the middle of `import numpy` under the console script."""
    code = (f"import sys\nsys.argv = [{str(DPL_SCRIPT)!r}, 'run', 'prog.dpl']\n"
            "class Boom:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'numpy':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Boom())\n"
            f"exec(compile(open({str(DPL_SCRIPT)!r}).read(), 'dpl', 'exec'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr, r.stdout) == (130, "dpl: interrupted\n", "")


@pytest.mark.skipif(not DPL_SCRIPT.is_file(), reason="the `dpl` console script is not installed beside python")
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.5])
def test_ctrl_c_early_prints_no_traceback(delay):
    p = subprocess.Popen([str(DPL_SCRIPT), "run", "prog.dpl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    frames = re.findall(r'^  File "([^"]+)"', err, re.M)
    if "KeyboardInterrupt" in err and not any(f.startswith(str(ROOT / "dpl")) or "site-packages" in f and
                                              "__editable__" not in f for f in frames):
        return  # Python itself was still starting (site, the standard library): before the first line of dpl
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert p.returncode in (0, 130, -signal.SIGINT), err  # done, caught, or before Python's handler existed


# ---- user input that used to be an internal error ----------------------------------------------------------

def npz_with_text_member(path, **arrays):
    """An .npz whose member `notes.txt` is not a .npy array (np.load would hand its bytes back)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", b"hello")
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a)


def test_npz_member_that_is_not_npy(capsys):
    npz_with_text_member("p.npz", w=np.zeros(2))
    code, _, err = cli(capsys, "run", "prog.dpl", "--params", "p.npz")
    assert (code, err) == (1, "dpl: error: cannot read params file p.npz: its member `notes.txt` is not a .npy "
                              "array\n")
    Path("load.dpl").write_text('x = load("p.npz", "notes.txt")\n')
    code, _, err = cli(capsys, "run", "load.dpl")
    assert code == 1 and err.startswith("load.dpl:1:5: `load`: cannot read p.npz: its member `notes.txt` is not "
                                        "a .npy array")
    npz_with_text_member("c.npz", __checkpoint__=np.zeros(2, np.uint8))
    code, _, err = train(capsys, "--out", "o.npz", "--checkpoint", "c.npz", "--resume")
    assert (code, err) == (1, "dpl: error: cannot read checkpoint c.npz: its member `notes.txt` is not a .npy "
                              "array\n")


def test_npz_header_is_checked_before_decompressing(capsys):
    """A zip bomb: a small file whose member claims (and holds) 10**7 zeros, compressed to a few kB."""
    with zipfile.ZipFile("bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("w.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(10 ** 7))
    assert Path("bomb.npz").stat().st_size < 200_000
    code, _, err = cli(capsys, "run", "prog.dpl", "--params", "bomb.npz", "--max-elements", "1000")
    limit = ("a tensor of shape [10000000] would have 10000000 elements, more than the limit of 1000; raise "
             "--max-elements if that is intended")
    assert (code, err) == (1, f"dpl: error: cannot read params file bomb.npz, member `w.npy`: {limit}\n")
    Path("load.dpl").write_text('x = load("bomb.npz", "w")\n')
    code, _, err = cli(capsys, "run", "load.dpl", "--max-elements", "1000")
    assert code == 1 and err.startswith(f"load.dpl:1:5: `load`: cannot read bomb.npz, member `w.npy`: {limit}\n")


@pytest.mark.parametrize("argv, message", [
    (["run", "prog.dpl", "--seed", "-1"], "dpl: error: --seed must be a non-negative integer, got -1\n"),
    (["train", "prog.dpl", "--seed", "-3"], "dpl: error: --seed must be a non-negative integer, got -3\n"),
])
def test_negative_seed(argv, message, capsys):
    assert cli(capsys, *argv)[::2] == (1, message)


def test_negative_seed_in_a_train_block(capsys):
    Path("prog.dpl").write_text(PROG.replace("epochs = 3", "epochs = 3\n    seed = -1"))
    code, _, err = train(capsys, "--out", "p.npz")
    assert code == 1 and err.startswith("prog.dpl:8:12: `seed` must be a non-negative integer, got -1")


@pytest.mark.parametrize("betas, message", [
    ("[0.9]", "`betas` must be two numbers, as [0.9, 0.999], got a float tensor of shape [1]"),
    ('"ab"', "`betas` must be two numbers, as [0.9, 0.999], got a string"),
    ("[0.9, 1.0]", "`betas` must each lie in [0, 1), got [0.9, 1.0]"),
])
def test_adam_betas(betas, message, capsys):
    Path("adam.dpl").write_text(f"o = adam(betas = {betas})\n")
    code, _, err = cli(capsys, "run", "adam.dpl")
    assert code == 1 and err.startswith(f"adam.dpl:1:5: {message}")


GRAPH = ["graph", "prog.dpl", "--fn", "loss", "--args", "[[1.0, 0.0]]", "[1.0]", "-o"]


@pytest.mark.parametrize("argv", [GRAPH, ["attention", "prog.dpl", "--fn", "loss", "-o"]], ids=["graph", "attention"])
@pytest.mark.parametrize("out, message", [
    ("nowhere/g.png", "cannot write -o nowhere/g.png: the directory"),
    ("g.bmp", "`-o g.bmp`: the"),
    (".", "the"),
])
def test_inspection_outputs_that_cannot_be_written(argv, out, message, capsys):
    code, _, err = cli(capsys, *argv, out)
    assert code == 1 and message in err, err
    assert sorted(os.listdir()) == ["prog.dpl"]


def test_graph_output_on_a_read_only_or_full_disk(capsys, monkeypatch):
    def read_only(*a, **kw):
        raise PermissionError(13, "Read-only file system")
    with monkeypatch.context() as m:
        m.setattr(paramfile.tempfile, "mkstemp", read_only)
        code, _, err = cli(capsys, *GRAPH, "g.json")
    assert code == 1 and "cannot write -o g.json: Read-only file system" in err

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(paramfile.os, "fsync", full)
    code, _, err = cli(capsys, *GRAPH, "g.json")
    assert code == 1 and "cannot write" in err and "No space left on device" in err
    assert sorted(os.listdir()) == ["prog.dpl"]  # no empty g.json


def test_repl_graph_output_that_cannot_be_written():
    from dpl.repl import Session
    import io
    out, err = io.StringIO(), io.StringIO()
    s = Session(out=out, err=err)
    s.execute("param W: [2] ~ ones")
    for dest, message in (("nowhere/g.json", "the directory"), ("g.bmp", "the output format comes from the "
                                                                          "extension"), (".", "")):
        s.execute(f":graph sum(W) -o {dest}")
        assert message in err.getvalue() and "internal" not in err.getvalue()
    assert sorted(os.listdir()) == ["prog.dpl"]


# ---- limits that hold --------------------------------------------------------------------------------------

FIB = "fn fib(n) {\n    if n < 2 { return n }\n    return fib(n - 1) + fib(n - 2)\n}\nprint(fib(35))\n"


def test_exponential_recursion_is_bounded_by_max_steps(capsys):
    Path("fib.dpl").write_text(FIB)
    start = time.perf_counter()
    code, out, err = cli(capsys, "run", "fib.dpl", "--max-steps", "20000")
    assert code == 1 and time.perf_counter() - start < 10
    assert err.startswith("fib.dpl:3:12: the call of `fib` took the program past 20000 steps (loop iterations and "
                          "function calls; recursion that never ends, or grows exponentially?); raise --max-steps if "
                          "that is intended\n")
    Path("fib.dpl").write_text(FIB.replace("fib(35)", "fib(10)"))
    assert cli(capsys, "run", "fib.dpl", "--max-steps", "177")[:2] == (0, "55\n")  # fib(10) makes 177 calls
    assert cli(capsys, "run", "fib.dpl", "--max-steps", "176")[0] == 1


def test_dopri5_steps_count():
    from dpl.interp import Interpreter
    Path("ode.dpl").write_text('fn f(t, y) = -y\ny = odeint(f, [1.0], 0.0, 10.0, method = "dopri5", rtol = 1e-8)\n')
    interp = Interpreter(mode="run")
    interp.run_file(Path("ode.dpl"))
    assert interp.steps > 0 and interp.steps % 8 == 0  # each step: itself and its 7 calls of f


def test_max_nodes(capsys):
    Path("g.dpl").write_text("fn f(x) {\n    y = x\n    for i in range(1000) {\n        y = y * 1.001\n    }\n"
                             "    return y\n}\nprint(grad(f)(1.0))\n")
    code, _, err = cli(capsys, "run", "g.dpl", "--max-nodes", "500")
    assert code == 1 and err.startswith("g.dpl:4:15: the recorded graph has grown past 500 nodes (a very long loop "
                                        "or `odeint` inside `grad` or a loss, or `grad`s nested deeply?); raise "
                                        "--max-nodes if that is intended\n")
    code, out, _ = cli(capsys, "run", "g.dpl", "--max-nodes", "1001")
    assert code == 0 and float(out) == pytest.approx(1.001 ** 1000)
    assert limits.DEFAULT_MAX_NODES == 5_000_000
    assert cli(capsys, "run", "g.dpl", "--max-nodes", "0")[::2] == (
        1, "dpl: error: --max-nodes must be a positive integer, got 0\n")


def test_memory_error_in_a_call_releases_what_it_held(monkeypatch):
    import weakref
    from dpl.errors import DplError
    from dpl.interp import Interpreter
    held = []
    real = Interpreter.exec_block

    def exec_block(self, body, frame):
        if self.depth:  # inside the call of f
            blob = np.ones(10 ** 6)  # a local of a frame in the traceback, as a recorded graph would be
            held.append(weakref.ref(blob))
            raise MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000000000,)")
        return real(self, body, frame)
    monkeypatch.setattr(Interpreter, "exec_block", exec_block)
    Path("m.dpl").write_text("fn f(x) {\n    return x\n}\nprint(f(1.0))\n")
    with pytest.raises(DplError) as e:
        Interpreter(mode="run").run_file(Path("m.dpl"))
    assert e.value.format().splitlines()[0] == (
        "m.dpl:4:7: out of memory (Unable to allocate 7.45 GiB for an array with shape (1000000000,)); "
        "--max-elements limits the size of one tensor, --max-nodes that of the recorded graph")
    assert held[0]() is None


def test_memory_error_in_a_backward_pass_is_a_clear_error(capsys, monkeypatch):
    import dpl.record

    def backward(*a, **kw):
        raise MemoryError()
    monkeypatch.setattr(dpl.record, "backward", backward)
    code, _, err = train(capsys, "--out", "p.npz")
    assert code == 1 and err.startswith("prog.dpl:5:7: out of memory; --max-elements limits the size of one "
                                        "tensor, --max-nodes that of the recorded graph\n")


@pytest.mark.parametrize("call, what", [
    ("concat([zeros([600]), zeros([600])])", "`concat`: a tensor of shape [1200]"),
    ("stack([zeros([600]), zeros([600])])", "`stack`: a tensor of shape [2, 600]"),
    ("odeint(f, zeros([400]), 0.0, 1.0, steps = 1, ts = linspace(0, 1, 4))",
     "`odeint` over `ts`: a tensor of shape [4, 400]"),
])
def test_max_elements_covers_concat_stack_and_odeint_grids(call, what, capsys):
    Path("e.dpl").write_text(f"fn f(t, y) = -y\nx = {call}\n")
    code, _, err = cli(capsys, "run", "e.dpl", "--max-elements", "1000")
    assert code == 1 and err.startswith(f"e.dpl:2:5: {what} would have")
    assert cli(capsys, "run", "e.dpl", "--max-elements", "1600")[0] == 0


# ---- resume: the data files are part of a checkpoint's identity -------------------------------------------

def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C as the run reaches the end of training step `step`."""
    import dpl.train
    real = dpl.train.Session.after_step

    def after_step(self, interp, state):
        if self.report.steps == step:
            self.signal = signal.SIGINT
        return real(self, interp, state)
    monkeypatch.setattr(dpl.train.Session, "after_step", after_step)


def test_resume_refuses_a_changed_data_file(capsys, monkeypatch):
    Path("data.csv").write_text("1, 0, 1\n0, 1, 2\n1, 1, 3\n")
    Path("prog.dpl").write_text(PROG.replace("X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]\nY = [1.0, 2.0, 3.0]",
                                             'D = load("data.csv")\nX = D[:, 0:2]\nY = D[:, 2]'))
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        assert train(capsys, "--out", "p.npz")[0] == 130
    meta = json.loads(bytes(npz("p.ckpt.npz")["__checkpoint__"]).decode())
    assert str(Path("data.csv").resolve()) in meta["fingerprint"]["files"]
    Path("data.csv").write_text("1, 0, 1\n0, 1, 2\n1, 1, 4\n")
    code, _, err = train(capsys, "--out", "p.npz", "--resume")
    assert (code, err) == (1, f"dpl: error: cannot resume from p.ckpt.npz: {Path('data.csv').resolve()} has "
                              f"changed since (run without --resume to start again)\n")
    Path("data.csv").write_text("1, 0, 1\n0, 1, 2\n1, 1, 3\n")  # as it was: the run goes on
    code, _, err = train(capsys, "--out", "p.npz", "--resume")
    assert code == 0, err


def test_resume_refuses_a_changed_csv_read_with_its_header(capsys, monkeypatch):
    Path("data.csv").write_text("a,b,y\n1, 0, 1\n0, 1, 2\n1, 1, 3\n")
    Path("prog.dpl").write_text(PROG.replace("X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]\nY = [1.0, 2.0, 3.0]",
                                             'X = load("data.csv", columns = ["a", "b"])\n'
                                             'Y = load("data.csv", columns = "y")\nprint(load_header("data.csv"))'))
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        assert train(capsys, "--out", "p.npz")[0] == 130
    Path("data.csv").write_text("a,b,z\n1, 0, 1\n0, 1, 2\n1, 1, 3\n")  # only the header changed
    code, _, err = train(capsys, "--out", "p.npz", "--resume")
    assert (code, err) == (1, f"dpl: error: cannot resume from p.ckpt.npz: {Path('data.csv').resolve()} has "
                              f"changed since (run without --resume to start again)\n")
    Path("data.csv").write_text("a,b,y\n1, 0, 1\n0, 1, 2\n1, 1, 3\n")
    code, out, err = train(capsys, "--out", "p.npz", "--resume")
    assert (code, out) == (0, "[a, b, y]\ndone\n"), err


# ---- daily use -----------------------------------------------------------------------------------------------

def test_version(capsys):
    import dpl
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"dpl {dpl.__version__}\n"


def test_repl_loads_params(capsys):
    from dpl.repl import Session
    np.savez("w.npz", w=np.array([3.0, 4.0]), v=np.array([1.0]))
    np.savez("bad.npz", w=np.array([3.0]))
    out, err = io.StringIO(), io.StringIO()
    s = Session(out=out, err=err)
    s.execute("param w: [2] ~ zeros")
    s.execute(":params bad.npz")
    assert "parameter `w` is [2] but bad.npz has [1]; nothing was loaded" in err.getvalue()
    s.execute(":params w.npz")
    assert out.getvalue() == "loaded 1 parameter from w.npz; 1 more kept for their `param` declarations\n"
    s.execute("param v: [1] ~ zeros")
    out.truncate(0)
    out.seek(0)
    s.execute("print(w, v)")
    assert out.getvalue() == "[3.0, 4.0] [1.0]\n"


def test_repl_params_flag():
    np.savez("w.npz", w=np.array([3.0, 4.0]))
    Path("r.dpl").write_text("param w: [2] ~ zeros\n")
    r = subprocess.run([sys.executable, "-m", "dpl.cli", "repl", "r.dpl", "--params", "w.npz"], input="print(w)\n",
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "loaded 0 parameters from w.npz; 1 more kept for their `param` "
                                           "declarations\n[3.0, 4.0]\n"), r.stderr


def test_api_load_takes_a_params_path():
    import dpl
    np.savez("w.npz", w=np.array([3.0, 4.0]))
    np.savez("bad.npz", v=np.array([3.0]))
    assert dpl.load("prog.dpl", params="w.npz", stdout=io.StringIO()).params["w"].tolist() == [3.0, 4.0]
    assert dpl.load("prog.dpl", params=Path("w.npz"), stdout=io.StringIO()).params["w"].tolist() == [3.0, 4.0]
    with pytest.raises(dpl.DplError, match="missing: `w` is declared but not in the file"):
        dpl.load("prog.dpl", params="bad.npz", stdout=io.StringIO())


def test_graph_output_over_the_program_is_refused(capsys):
    code, _, err = cli(capsys, *GRAPH, "prog.dpl", "--format", "tuple")
    assert (code, err) == (1, f"dpl: error: the program and -o name the same file ({Path('prog.dpl').resolve()}); "
                              f"one would overwrite the other, so give them different paths\n")
    assert Path("prog.dpl").read_text() == PROG


def test_steps_are_counted_per_call_from_python_and_per_repl_input():
    import dpl
    from dpl.repl import Session
    limits.configure(max_steps=100)
    prog = dpl.loads("fn f(n) {\n    for i in range(n) { }\n    return n\n}\nfn g(x) = x * f(60)\n")
    for _ in range(5):  # 5 x 61 steps: each call within the limit
        assert prog.call("f", 60) == 60 and prog.grad("g")(2.0) == 60.0
    with pytest.raises(dpl.DplError, match="past 100 steps"):
        prog.call("f", 100)
    out, err = io.StringIO(), io.StringIO()
    s = Session(out=out, err=err)
    s.execute("fn f(n) {\n    for i in range(n) { }\n    return n\n}")
    for _ in range(3):
        s.execute("print(f(60))")
    assert out.getvalue() == "60\n" * 3 and err.getvalue() == ""
