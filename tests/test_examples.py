"""Every examples/*.dpl runs; those with a train block train (shortened) and reduce their loss; the
cannon example trains in full and lands within 5 cm (README "Set up")."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.dpl"))
TRAIN_BLOCK = re.compile(r"^\s*train\s+\w+", re.M)


def dpl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dpl.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def trains(path: pathlib.Path) -> bool:
    return TRAIN_BLOCK.search(path.read_text()) is not None


def test_examples_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"hello.dpl", "taylor_sin.dpl", "cannon.dpl"} <= names
    assert trains(ROOT / "examples" / "cannon.dpl") and not trains(ROOT / "examples" / "hello.dpl")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example, tmp_path):
    """`dpl run` succeeds, prints something, and writes nothing (train blocks are skipped)."""
    before = {p.name for p in example.parent.iterdir()}
    r = dpl("run", example, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "error" not in r.stderr.lower()
    assert {p.name for p in example.parent.iterdir()} == before
    assert not list(tmp_path.iterdir())


TRAINING = [p for p in EXAMPLES if trains(p)]


@pytest.mark.parametrize("example", TRAINING, ids=[p.stem for p in TRAINING])
def test_example_trains_shortened(example, tmp_path):
    """`dpl train --epochs 3` succeeds, saves the parameters and lowers the loss from the first epoch."""
    out, metrics = tmp_path / "p.npz", tmp_path / "m.json"
    r = dpl("train", example, "--quiet", "--epochs", "3", "--out", out, "--metrics", metrics, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    m = json.loads(metrics.read_text())
    assert m["steps"] > 0
    losses = m.get("epoch_losses")
    if losses:
        assert losses[-1] < losses[0]


CANNON_LINE = re.compile(r"mean landing error: (\d+\.\d{1,4}) m")


def landing_error(stdout: str) -> float:
    """The cannon example's one line, `mean landing error: 0.0116 m` (README "Set up")."""
    m = CANNON_LINE.fullmatch(stdout.strip())
    assert m, stdout
    return float(m.group(1))


def test_cannon_trains_to_within_5cm(tmp_path):
    cannon = ROOT / "examples" / "cannon.dpl"
    untrained = dpl("run", cannon, cwd=tmp_path)
    assert untrained.returncode == 0, untrained.stderr
    assert landing_error(untrained.stdout) > 0.5  # the untrained network misses by far
    out = tmp_path / "cannon.params.npz"
    r = dpl("train", cannon, "--quiet", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1  # only the print; the summary went to stderr
    error = landing_error(lines[0])
    assert 0 <= error < 0.05, f"mean landing error {error} m"
    assert f"    {lines[0]}\n" in (ROOT / "README.md").read_text()  # the README shows what it prints
    # the saved parameters give the same landing error under `dpl run --params`
    again = dpl("run", cannon, "--params", out, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert landing_error(again.stdout) == error


# ---- memory network, DNC and pondering (issue 12), shortened --------------------------------------------------

def train_shortened(name, tmp_path, *args):
    """`dpl train examples/NAME.dpl --quiet ARGS`: (stdout lines, epoch losses, params path)."""
    out, metrics = tmp_path / f"{name}.params.npz", tmp_path / "m.json"
    r = dpl("train", ROOT / "examples" / f"{name}.dpl", "--quiet", "--out", out, "--metrics", metrics, *args,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines(), json.loads(metrics.read_text())["epoch_losses"], out


def labelled(line, label):
    """The number after `label` in a printed line."""
    assert line.startswith(label), line
    return float(line[len(label):].split()[0])


def test_memnet_forecast_shortened(tmp_path):
    """3 epochs: the loss falls and the memory network already beats persistence; `dpl attention` draws a map
    per hop from the saved parameters."""
    lines, losses, params = train_shortened("memnet_forecast", tmp_path, "--epochs", "3")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(lines) == 3
    model = labelled(lines[0], "memory network: test rmse")
    persistence = labelled(lines[1], "persistence: test rmse")
    linear = labelled(lines[2], "0-hop linear model: test rmse")
    assert model < persistence and linear < persistence
    png = tmp_path / "hops.png"
    r = dpl("attention", ROOT / "examples" / "memnet_forecast.dpl", "--fn", "hops", "--params", params, "-o", png,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 attention maps written" in r.stderr and png.stat().st_size > 0


def test_dnc_copy_shortened(tmp_path):
    """A few steps on few sequences: the loss falls and the bit error rate is printed at three lengths."""
    lines, losses, _ = train_shortened("dnc_copy", tmp_path, "--epochs", "3", "--set", "n_train=96")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert [line.split(":")[0] for line in lines] == ["bit error rate, length 6 (trained up to 6)",
                                                       "bit error rate, length 10", "bit error rate, length 12"]
    assert all(0 <= float(line.split()[-1]) <= 1 for line in lines)


def test_ponder_shortened(tmp_path):
    """3 epochs: the loss falls (and --plot draws it); accuracy and mean steps are printed for easy and hard
    strings, the steps within the loop's bound."""
    lines, losses, _ = train_shortened("ponder", tmp_path, "--epochs", "3", "--plot", tmp_path / "loss.png")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert len(lines) == 2
    for line, label in zip(lines, ["easy strings (1-3 bits): accuracy", "hard strings (6-8 bits): accuracy"]):
        assert 0 <= labelled(line, label) <= 1
        assert 1 <= float(line.split("mean steps")[1]) <= 10


# ---- seq2seq_attention and darnn_sunspots (issue 12) ---------------------------------------------------------

def labelled_line(stdout: str, label: str) -> float:
    """The number printed after `label` on a line of its own (`token accuracy with attention: 0.99`)."""
    m = re.search(rf"^{re.escape(label)}:? (\S+)$", stdout, re.M)
    assert m, (label, stdout)
    return float(m.group(1))


def test_seq2seq_attention_shortened(tmp_path):
    """A shortened run: the loss falls, both accuracies print, attention is ahead already, and `dpl attention`
    draws the alignment from the saved parameters."""
    example = ROOT / "examples" / "seq2seq_attention.dpl"
    out, metrics = tmp_path / "p.npz", tmp_path / "m.json"
    r = dpl("train", example, "--quiet", "--set", "n_train=1000", "--epochs", "3", "--out", out, "--metrics", metrics,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    losses = json.loads(metrics.read_text())["epoch_losses"]
    assert losses[-1] < losses[0]
    with_att = labelled_line(r.stdout, "token accuracy with attention")
    without = labelled_line(r.stdout, "token accuracy without attention")
    assert 0 <= without < with_att <= 1
    png = tmp_path / "align.png"
    r = dpl("attention", example, "--fn", "alignments", "--params", out, "-o", png, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG" and "4 attention maps" in r.stderr
    assert "| `seq2seq_attention.dpl` |" in (ROOT / "examples" / "README.md").read_text()


def test_darnn_sunspots_shortened(tmp_path):
    """A shortened run: the loss falls, the three RMSEs print, persistence is exactly its closed form on the
    CSV, and `dpl attention` draws the input and temporal attention of four test windows."""
    import numpy as np
    example = ROOT / "examples" / "darnn_sunspots.dpl"
    out, metrics = tmp_path / "p.npz", tmp_path / "m.json"
    r = dpl("train", example, "--quiet", "--epochs", "5", "--out", out, "--metrics", metrics, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    losses = json.loads(metrics.read_text())["epoch_losses"]
    assert losses[-1] < losses[0]
    year, spots = np.loadtxt(ROOT / "examples" / "data" / "sunspots.csv", delimiter=",", unpack=True)
    test = year >= 1950
    assert test.sum() == 59
    persistence = np.sqrt(np.mean((spots[test] - np.roll(spots, 1)[test]) ** 2))
    assert labelled_line(r.stdout, "test RMSE persistence") == pytest.approx(persistence, rel=1e-12)
    for model in ("DA-RNN", "LSTM"):
        assert 0 < labelled_line(r.stdout, f"test RMSE {model}") < 3 * persistence
    png = tmp_path / "maps.png"
    r = dpl("attention", example, "--fn", "maps", "--params", out, "-o", png, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "8 attention maps" in r.stderr
    assert "| `darnn_sunspots.dpl` |" in (ROOT / "examples" / "README.md").read_text()
