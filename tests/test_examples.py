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


# ---- seq2seq_attention and darnn_sunspots (issue 12) ---------------------------------------------------------

def labelled(stdout: str, label: str) -> float:
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
    with_att = labelled(r.stdout, "token accuracy with attention")
    without = labelled(r.stdout, "token accuracy without attention")
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
    assert labelled(r.stdout, "test RMSE persistence") == pytest.approx(persistence, rel=1e-12)
    for model in ("DA-RNN", "LSTM"):
        assert 0 < labelled(r.stdout, f"test RMSE {model}") < 3 * persistence
    png = tmp_path / "maps.png"
    r = dpl("attention", example, "--fn", "maps", "--params", out, "-o", png, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "8 attention maps" in r.stderr
    assert "| `darnn_sunspots.dpl` |" in (ROOT / "examples" / "README.md").read_text()
