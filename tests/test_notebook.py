"""dpl.Session from Python; the %load_ext dpl magics in an in-process IPython shell; examples/notebooks/cannon.ipynb
executed by a real kernel (nbclient). The IPython and Jupyter parts skip when `dpl[notebook]` is not installed."""
from __future__ import annotations

import base64
import html
import io
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import dpl
from dpl import backend, viz
from dpl.notebook import Session

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebooks" / "cannon.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"

TRAIN = """\
param w: [2] ~ zeros
X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
Y = [1.0, 2.0, 3.0, 4.0]
fn loss(x, y) = mean((x @ w - y) ^ 2)
train loss over X, Y {
    optimizer = sgd(lr = 0.05)
    epochs = 5
    batch = 2
}
"""

ATTN = """\
K = normal(0, 1, [5, 4])
V = normal(0, 1, [5, 3])
fn f(Q) = sum(attend(Q, K, V, score = "scaled_dot"))
"""


def decode_png(data) -> np.ndarray:
    """The pixels of a PNG, as bytes or base64 text as notebooks hold it (signature first, and it decodes)."""
    from matplotlib.image import imread
    if isinstance(data, str):
        data = base64.b64decode(data)
    assert data[:8] == PNG
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
    return pixels


def parse_svg(text: str) -> ET.Element:
    root = ET.fromstring(text[text.index("<svg"):])
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    return root


@pytest.fixture
def session():
    out = io.StringIO()
    s = Session(out=out, err=io.StringIO())

    def printed():
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text
    s.printed = printed
    return s


# ---- dpl.Session, no Jupyter needed ------------------------------------------------------------------------

def test_session_is_dpl_session_and_needs_no_ipython():
    assert dpl.Session is Session
    code = ("import sys, dpl; s = dpl.Session(); s.run('x = 2'); assert s.get('x') == 2; "
            "assert not any(m.split('.')[0] in ('IPython', 'ipykernel') for m in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError, match="no attribute 'Sessions'"):
        dpl.Sessions


def test_definitions_persist_and_values_print_as_in_the_repl(session):
    session.run("k = 2")
    session.run("fn f(x) = x * k")
    session.run("f(3)")
    assert session.printed() == "6\n"
    session.run("[1.0, 2.0] * k")
    assert session.printed() == "[2.0, 4.0]  # float64 [2]\n"
    assert session.eval("f(1.5)") == 3.0 and isinstance(session.eval("f([1.0])"), np.ndarray)
    session.run(":type f([1.0, 2.0])")
    assert session.printed() == "float64 [2]\n"


def test_train_blocks_train_and_keep_their_loss_curve(session):
    session.run(TRAIN)
    assert re.fullmatch(r"trained 10 steps in [\d.]+ s, final loss [\d.e-]+\n", session.printed())
    w = session.get("w")
    assert w.shape == (2,) and np.all(w > 0.1)  # sgd moved both weights up from zeros
    assert session.report.epochs == 5 and len(session.report.step_losses) == 10
    buf = io.BytesIO()
    session.loss_figure().savefig(buf, format="png")
    decode_png(buf.getvalue())
    session.run("loss(X, Y)")  # an input that trains nothing keeps the last curve
    assert session.report.steps == 10


def test_no_loss_curve_before_training(session):
    with pytest.raises(dpl.DplError, match="nothing has been trained"):
        session.loss_figure()


def test_get_returns_numpy_copies_and_parameter_dicts(session):
    session.run('use nn\nenc = Dense(2, 3)\nparam b: [2] = 0.5\nt = ([1, 2], 3.0)\ns = "hi"\nfn f(x) = x')
    assert session.get("enc").keys() == {"W", "b"} and session.get("enc")["W"].shape == (2, 3)
    assert session.get().keys() == {"enc.W", "enc.b", "b"}
    assert session.get("enc.W").shape == (2, 3)
    b = session.get("b")
    b[:] = 7.0  # a copy: the session keeps its value
    assert session.get("b").tolist() == [0.5, 0.5]
    first, second = session.get("t")
    assert first.dtype.kind == "i" and first.tolist() == [1, 2] and second == 3.0
    assert session.get("s") == "hi"
    with pytest.raises(dpl.DplError, match=r"no top-level name `encc` \(did you mean `enc`\?\)"):
        session.get("encc")
    with pytest.raises(dpl.DplError, match="`f` is <fn f>, which has no NumPy form"):
        session.get("f")


def test_set_binds_arrays_and_replaces_parameters(session):
    session.run("param w: [2] = 0.0\nfn f(x) = sum(x * w)")
    session.set("x", np.array([1, 2]))
    session.set("w", [3, 4])  # a parameter keeps its float dtype
    session.run("f(x)")
    assert session.printed() == "11.0\n"
    assert session.get("w").dtype == np.float64
    session.set("label", "cannon")
    assert session.eval("label") == "cannon"
    with pytest.raises(dpl.DplError, match=r"parameter `w` is a float tensor of shape \[2\]"):
        session.set("w", np.zeros(3))
    with pytest.raises(dpl.DplError, match="not a name DPL can bind"):
        session.set("fn", 1.0)
    with pytest.raises(dpl.DplError, match="cannot bind `o` to a dict"):
        session.set("o", {})
    with pytest.raises(dpl.DplError, match="no parameter `a.b`"):
        session.set("a.b", 1.0)


def test_set_follows_the_session_dtype():
    s = Session(dtype="float32", out=io.StringIO())
    try:
        s.set("x", np.arange(3.0))
        assert s.eval("x * 2").dtype == np.float32
    finally:
        backend.use("cpu", "float64")


def test_errors_are_raised_with_their_position(session):
    session.run("y = 1")
    with pytest.raises(dpl.DplError) as e:
        session.run("z = 2\nq = y + nope")
    assert e.value.span.line == 2 and "^" in e.value.format()
    session.run(":reset")
    with pytest.raises(dpl.DplError, match="unknown name `y`"):
        session.run("y")


def test_graph_records_the_expression(session):
    session.run("param w: [2] = 1.0\nx = [1.0, 2.0]\nfn f(v) = sum(v * w) ^ 2")
    rec = session.graph("f(x)")
    assert rec.graph.l == 2 and rec.n_args == 1  # the variable x, then the parameter w
    assert "digraph" in viz.to_dot(rec)


def test_attention_figure_of_the_last_input_or_an_expression(session):
    session.run(ATTN)
    with pytest.raises(dpl.DplError, match="no attend/attention call ran in the last input"):
        session.attention_figure()
    session.run("f(normal(0, 1, [2, 4]))")
    assert len(session.attention_figure().axes) == 2  # one heatmap and its colour bar
    assert len(session.attention_figure("f(normal(0, 1, [3, 4])) + f(normal(0, 1, [3, 4]))").axes) == 4
    with pytest.raises(dpl.DplError, match="in that expression"):
        session.attention_figure("1 + 1")


# ---- the magics, in an in-process IPython shell -------------------------------------------------------------

@pytest.fixture
def shell():
    """An IPython shell with a fresh DPL session; `shell.cell(src)` runs a cell and returns its result, its
    captured stdout and its rich outputs (each a dict of MIME type to data)."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config
    from dpl import notebook
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # nothing written to the user's ~/.ipython
    ip = InteractiveShell.instance(config=config)
    if "dpl" not in ip.extension_manager.loaded:
        ip.run_line_magic("load_ext", "dpl")  # through dpl/__init__.py
    notebook.load_ipython_extension(ip)  # a fresh session for this test

    def cell(src):
        with capture_output() as cap:
            result = ip.run_cell(src)
        return result, cap.stdout, [o.data for o in cap.outputs]
    ip.cell = cell
    yield ip
    ip.user_ns.pop("got", None)


def test_cells_share_one_session(shell):
    shell.cell("%%dpl\nk = 3\nfn f(x) = x * k")
    result, out, _ = shell.cell("%dpl f(2)")
    assert result.success and out == "6\n"
    result, out, _ = shell.cell("%%dpl\nf([1.0, 2.0])")
    assert out == "[3.0, 6.0]  # float64 [2]\n"


def test_a_train_cell_shows_its_loss_curve_as_png(shell):
    result, out, outputs = shell.cell("%%dpl\n" + TRAIN)
    assert result.success and out.startswith("trained 10 steps")
    pngs = [o["image/png"] for o in outputs if "image/png" in o]
    assert len(pngs) == 1
    decode_png(pngs[0])
    _, _, outputs = shell.cell("%%dpl\nloss(X, Y)")  # nothing trained: no picture
    assert outputs == []
    result, out, outputs = shell.cell("%%dpl\ntrain loss over X, Y { epochs = 0 }")
    assert result.success and out.startswith("trained 0 steps") and outputs == []
    result, out, outputs = shell.cell("%%dpl\ntrain loss over X, Y { epochs = 2 }\nnope")
    assert "unknown name `nope`" in out and len(outputs) == 1  # the curve of what trained before the error
    decode_png(outputs[0]["image/png"])


def test_graph_is_inline_svg_or_the_html_view(shell, monkeypatch):
    shell.cell("%%dpl\nparam w: [2] = 1.0\nx = [1.0, 2.0]\nfn f(v) = sum(v * w) ^ 2")
    if viz.find_dot():
        _, _, outputs = shell.cell("%dpl_graph f(x)")
        root = parse_svg(outputs[0]["image/svg+xml"])
        assert "x" in "".join(root.itertext()) and "w" in "".join(root.itertext())
    monkeypatch.setattr(viz, "find_dot", lambda: None)
    _, _, outputs = shell.cell("%dpl_graph f(x)")
    page = html.unescape(re.search(r'<iframe srcdoc="([^"]*)"', outputs[0]["text/html"]).group(1))
    root = parse_svg(page[:page.index("</svg>") + len("</svg>")])
    assert len(root.findall(".//rect")) == 5  # x, w and the nodes of *, sum, ^
    assert shell.cell("%dpl_graph 1 + 2")[1:] == ("(nothing recorded: the expression reads no parameter or float "
                                                  "variable)\n", [])


def test_a_large_graph_is_folded_as_dpl_graph_folds_it(shell, monkeypatch):
    """Past viz.MAX_DRAWN nodes the inline picture is folded and says so, as `dpl graph` does."""
    shell.cell("%%dpl\nparam w: [2] = 1.0\nfn step(s) = s * w + 1.0\n"
               "fn g(v) {\n    s = v\n    for i in range(400) { s = step(s) }\n    return sum(s)\n}")
    monkeypatch.setattr(viz, "find_dot", lambda: None)
    result, out, outputs = shell.cell("%dpl_graph g([1.0, 2.0])")
    assert result.success and "more than 500: drawn as" in out
    page = html.unescape(re.search(r'<iframe srcdoc="([^"]*)"', outputs[0]["text/html"]).group(1))
    root = parse_svg(page[:page.index("</svg>") + len("</svg>")])
    assert 1 < len(root.findall(".//rect")) <= 500


def test_attention_shows_as_png(shell):
    shell.cell("%%dpl\n" + ATTN)
    result, _, outputs = shell.cell("%dpl_attention f(normal(0, 1, [2, 4]))")
    assert result.success
    decode_png(outputs[0]["image/png"])


def test_get_and_set_cross_between_python_and_dpl(shell):
    shell.cell("%%dpl\nuse nn\nenc = Dense(2, 3)\nfn f(x) = enc(x)")
    shell.cell("import numpy as np\n%dpl_set x = np.ones((4, 2)) * 2")
    result, out, _ = shell.cell("got = %dpl_get x\nparams = %dpl_get enc\nout = %dpl_get")
    assert result.success
    ns = shell.user_ns
    assert ns["got"].tolist() == [[2.0, 2.0]] * 4
    assert set(ns["params"]) == {"W", "b"} and set(ns["out"]) == {"enc.W", "enc.b"}
    shell.cell("%dpl_set enc.b = np.ones(3)")
    expected = 2 * ns["params"]["W"].sum(axis=0) + 1
    shell.cell("%dpl y = f(x)")
    shell.cell("got = %dpl_get y")
    assert np.allclose(ns["got"], np.tile(expected, (4, 1)))


def test_errors_show_position_and_caret_without_a_traceback(shell):
    result, out, _ = shell.cell("%%dpl\ny = 1\nz = y + nope")
    assert isinstance(result.error_in_exec, Exception)
    assert "<cell-" in out and ":3:9: unknown name `nope`" in out  # line 3 of the cell, as the notebook counts
    assert "z = y + nope\n" in out and "^^^^" in out
    assert "Traceback" not in out and "File " not in out
    result, out, _ = shell.cell("%dpl_get nothing")
    assert "no top-level name `nothing`" in out and "Traceback" not in out
    result, out, _ = shell.cell("%dpl_set 3")
    assert "usage: %dpl_set NAME = python_expr" in out
    result, out, _ = shell.cell("%%dpl extra\n1")
    assert "%%dpl takes no arguments" in out


def test_an_interrupt_ends_the_cell_with_one_line(shell, monkeypatch):
    def interrupted(self, text):
        raise KeyboardInterrupt
    monkeypatch.setattr(Session, "run", interrupted)
    result, out, _ = shell.cell("%%dpl\n1")
    assert out.strip() == "interrupted" and not result.success


def test_notebook_progress_bar_is_rich_html_updated_in_place(shell):
    from dpl.notebook import Magics, _Stream
    Magics(shell, Session(progress="notebook", progress_after=0.0, out=_Stream("stdout"),
                          err=_Stream("stderr"))).register()
    _, _, outputs = shell.cell("%%dpl\n" + TRAIN)
    bars = [o["text/html"] for o in outputs if "text/html" in o]
    assert bars and all("train loss" in b for b in bars)
    assert "step 10/10" in re.sub(r"<[^>]+>", "", bars[-1])  # the last update shows the finished block


# ---- a real notebook, executed by a kernel ---------------------------------------------------------------------

def test_committed_notebook_has_no_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_cannon_notebook_runs_in_a_kernel():
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert re.search(r"trained 960 steps in [\d.]+ s, final loss [\d.e-]+", text)
    error = float(re.search(r"mean landing error: ([\d.]+) m", text).group(1))
    assert error < 0.2
    assert "'W1': (1, 32)" in text and "'b3': (2,)" in text
    lands = [float(x) for x in re.search(r"numpy lands at \[([^\]]*)\]", text).group(1).split()]
    assert np.allclose(lands, [2.0, 5.0, 8.0], atol=0.5)
    dpl_lands = [float(x) for x in re.search(r"\[([\d., ]+)\]  # float64 \[3\]", text).group(1).split(",")]
    assert np.allclose(dpl_lands, lands, atol=1e-3)  # DPL and NumPy agree on the same parameters
    pngs = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    decode_png(pngs[0])
    graph = [o.data for o in outputs if "image/svg+xml" in o.get("data", {}) or "iframe" in
             o.get("data", {}).get("text/html", "")]
    assert len(graph) == 1
    if "image/svg+xml" in graph[0]:
        parse_svg(graph[0]["image/svg+xml"])
