"""`dpl graph` (DOT golden file, networkx JSON, SVG via Graphviz, self-contained HTML, the tuple text,
clusters by DPL call, --collapse), `dpl attention` heatmaps and `dpl train --plot`."""
from __future__ import annotations

import json
import pathlib
import re
import shutil

import networkx as nx
import pytest

import dpl
from dpl import viz
from dpl.cli import main

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
PNG = b"\x89PNG\r\n\x1a\n"
HAS_DOT = shutil.which("dot") is not None

SMALL = """\
param W: [2, 3] ~ glorot
param b: [3] ~ zeros
fn layer(x) = tanh(x @ W + b)
fn f(x) {
    h = layer(x)
    return sum(h ^ 2)
}
"""

# inner is called twice from outer, outer once from f: clusters nest and repeat.
NESTED = """\
fn inner(x) = exp(x) * 2.0
fn outer(x) = inner(x) + inner(x * x)
fn f(x) = sum(outer(x) - x)
"""


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.dpl"
    p.write_text(SMALL)
    return p


def graph_cli(path, *extra):
    return main(["graph", str(path), "--fn", "f", "--args", "[[1.0, 2.0]]", *map(str, extra)])


def json_graph(text: str) -> nx.DiGraph:
    data = json.loads(text)
    try:
        return nx.node_link_graph(data, edges="edges")
    except TypeError:  # networkx < 3.4
        return nx.node_link_graph(data)


# ---- DOT ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collapse, golden", [(False, "graph_small.dot"), (True, "graph_small_collapse.dot")])
def test_dot_matches_golden_file(small, tmp_path, collapse, golden):
    out = tmp_path / "g.dot"
    assert graph_cli(small, "-o", out, *(["--collapse"] if collapse else [])) == 0
    assert out.read_text() == (GOLDEN / golden).read_text()


def test_dot_without_o_goes_to_stdout(small, capsys):
    assert graph_cli(small) == 0
    out = capsys.readouterr().out
    assert out == (GOLDEN / "graph_small.dot").read_text()


def test_clusters_follow_dpl_calls(tmp_path):
    p = tmp_path / "nested.dpl"
    p.write_text(NESTED)
    rec = viz.record(dpl.load(p), "f", [1.0, 2.0])
    g = rec.graph
    names = {i: rec.calls[rec.owner[i]].name if rec.owner[i] else "" for i in range(1, g.n + 1)}
    by_op = {}
    for i in range(g.l + 1, g.n + 1):
        by_op.setdefault(g.op(i), []).append(names[i])
    assert by_op["exp"] == ["inner", "inner"] and by_op["add"] == ["outer"] and by_op["sum"] == ["f"]
    inner_calls = [c for c in rec.calls.values() if c.name == "inner"]
    assert len(inner_calls) == 2 and all(rec.calls[c.parent].name == "outer" for c in inner_calls)
    dot = viz.to_dot(rec)
    # both inner clusters sit inside the outer one; f (the traced call) is not boxed
    outer = next(c.id for c in rec.calls.values() if c.name == "outer")
    block = dot[dot.index(f"subgraph cluster_{outer} "):]
    for c in inner_calls:
        assert block.index(f"subgraph cluster_{c.id} ") < block.index("\n  }")
    assert "cluster_1 " not in dot


LOOPS = """\
param w: [] = 0.5
fn g(x) = tanh(x * w)
fn f(x) {
    for i in range(2) { x = g(x) + x }
    k = 0
    while k < 1 { x = x - w
        k = k + 1 }
    soft while 0.5 max 2 { x = x * w }
    return x
}
"""


def test_clusters_follow_loop_iterations_and_soft_while_steps(tmp_path):
    p = tmp_path / "loops.dpl"
    p.write_text(LOOPS)
    rec = viz.record(dpl.load(p), "f", 1.0)
    g = rec.graph
    where = {}
    for i in range(g.l + 1, g.n + 1):
        c = rec.calls[rec.owner[i]]
        where.setdefault(g.op(i), []).append((c.name, rec.calls[c.parent].name if c.parent else ""))
    assert where["tanh"] == [("g", "for i: iteration 0"), ("g", "for i: iteration 1")]
    assert ("while: iteration 0", "f") in where["sub"]
    assert [w for w in where["mul"] if w[0].startswith("soft")] == [("soft while step 1", "f"),
                                                                   ("soft while step 2", "f")]
    dot = viz.to_dot(rec)
    assert 'label="for i: iteration 1' in dot and 'label="soft while step 2' in dot


def test_record_leaves_the_interpreter_as_it_was(tmp_path):
    from dpl import graph as G
    p = tmp_path / "nested.dpl"
    p.write_text(NESTED + "fn bad(x) = x @ [1.0, 2.0, 3.0]\n")
    prog = dpl.load(p)
    viz.record(prog, "f", [1.0])
    assert G.current_scope is None
    with pytest.raises(dpl.DplError):
        viz.record(prog, "bad", [[1.0, 2.0]])
    assert G.current_scope is None  # an error unwinds every scope it was in
    assert prog.call("f", [0.0]) == pytest.approx(2.0 + 2.0)


def test_collapse_folds_each_call(tmp_path):
    p = tmp_path / "nested.dpl"
    p.write_text(NESTED)
    rec = viz.record(dpl.load(p), "f", [1.0, 2.0])
    items, edges = viz.display(rec, collapse=True)
    boxes = [it for it in items if it.kind == "call"]
    assert [b.lines for b in boxes] == [["outer(…)", "6 ops"]]  # inner: exp, mul (twice); outer: mul, add
    assert {it.lines[0] for it in items if it.kind == "op"} == {"sub", "sum"}
    assert ("n1", boxes[0].id) in edges


# ---- the tuple, JSON ---------------------------------------------------------------------------------


def test_format_tuple(small, capsys):
    assert graph_cli(small, "--format", "tuple") == 0
    out = capsys.readouterr().out
    g = viz.record(dpl.load(small), "f", [[1.0, 2.0]]).graph
    assert out.startswith(f"n = {g.n}\nl = {g.l}\nE = {{" + ", ".join(f"({a}, {b})" for a, b in g.E) + "}\n")
    assert "f = matmul  α = (v1, v2)  v: [1, 3]" in out
    assert "f = pow  α = (v6, 2.0)" in out  # a constant shows its value


def test_json_round_trips_through_networkx(small, tmp_path):
    out = tmp_path / "g.json"
    assert graph_cli(small, "-o", out) == 0
    back = json_graph(out.read_text())
    g = viz.record(dpl.load(small), "f", [[1.0, 2.0]]).graph
    assert back.graph["n"] == g.n == back.number_of_nodes() == 8
    assert back.graph["l"] == g.l == 3
    assert set(back.edges) == set(g.E)
    assert back.nodes[4]["op"] == "matmul" and back.nodes[4]["shape"] == [1, 3] and back.nodes[4]["line"] == 3
    assert back.nodes[4]["call"] == "layer" and "tanh(x @ W + b)" in back.nodes[4]["source"]
    assert [back.nodes[i]["kind"] for i in (1, 2, 3)] == ["arg", "param", "param"]


# ---- rendering -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_svg_through_dot(small, tmp_path):
    out = tmp_path / "g.svg"
    assert graph_cli(small, "-o", out) == 0
    svg = out.read_text()
    assert "<svg" in svg
    assert all(f"<title>n{i}</title>" in svg for i in range(1, 9))
    assert "<title>cluster_2</title>" in svg


def test_missing_dot_says_how_to_install(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viz, "find_dot", lambda: None)
    assert graph_cli(small, "-o", tmp_path / "g.svg") == 1
    err = capsys.readouterr().err
    assert "apt install graphviz" in err and "brew install graphviz" in err
    assert not (tmp_path / "g.svg").exists()
    assert graph_cli(small, "-o", tmp_path / "g.dot") == 0 and graph_cli(small, "-o", tmp_path / "g.json") == 0


def test_unknown_extension(small, tmp_path, capsys):
    assert graph_cli(small, "-o", tmp_path / "g.bmp") == 1
    assert ".svg, .png, .pdf, .dot, .json or .html" in capsys.readouterr().err


@pytest.mark.parametrize("with_dot", [pytest.param(True, marks=pytest.mark.skipif(not HAS_DOT, reason="no dot")),
                                      False])
def test_html_is_self_contained_and_holds_every_node(small, tmp_path, monkeypatch, with_dot):
    if not with_dot:
        monkeypatch.setattr(viz, "find_dot", lambda: None)
    out = tmp_path / "g.html"
    assert graph_cli(small, "-o", out) == 0
    page = out.read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)  # nothing loaded from anywhere
    assert all(f"<title>n{i}</title>" in page for i in range(1, 9))
    info = json.loads(re.search(r'<script type="application/json" id="info">(.*?)</script>', page, re.S).group(1))
    assert sorted(info) == sorted(f"n{i}" for i in range(1, 9))
    assert "matmul" in info["n4"] and "[1, 3]" in info["n4"] and "min " in info["n4"] and "mean " in info["n4"]
    assert "small.dpl:3: fn layer(x) = tanh(x @ W + b)" in info["n4"]
    assert "addEventListener('wheel'" in page  # zoom; pan and hover share the mousemove handler


def test_html_collapsed_without_dot(small, tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "find_dot", lambda: None)
    out = tmp_path / "g.html"
    assert graph_cli(small, "-o", out, "--collapse") == 0
    page = out.read_text()
    assert "<title>c2</title>" in page and "<title>n4</title>" not in page


def test_args_must_be_single_expressions(small, capsys):
    assert main(["graph", str(small), "--fn", "f", "--args", "x = 1"]) == 1
    assert "one DPL expression per argument" in capsys.readouterr().err
    assert main(["graph", str(small), "--fn", "nope"]) == 1
    assert "no function `nope`" in capsys.readouterr().err


def test_args_see_the_top_level(tmp_path, capsys):
    p = tmp_path / "t.dpl"
    p.write_text(SMALL + "xs = [[3.0, 4.0], [5.0, 6.0]]\nprint(1.5)\n")
    assert main(["graph", str(p), "--fn", "f", "--args", "xs[0:1] * 2", "--format", "tuple"]) == 0
    out, err = capsys.readouterr()
    assert "input  arg x  v: [1, 2]" in out
    assert "1.5" not in out and "1.5" in err  # the program's print goes to stderr


# ---- attention and training curves ------------------------------------------------------------------------

ATTN = """\
K = normal(0, 1, [5, 4])
V = normal(0, 1, [5, 3])
fn f(Q) {
    a = attend(Q, K, V, score = "scaled_dot")
    w = attention(Q[0], K)
    return sum(a) + sum(w)
}
fn g(x) = x * 2.0
"""


def test_attention_heatmaps_png(tmp_path, capsys):
    p = tmp_path / "att.dpl"
    p.write_text(ATTN)
    out = tmp_path / "att.png"
    assert main(["attention", str(p), "--fn", "f", "--args", "normal(0, 1, [3, 4])", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "2 attention maps" in capsys.readouterr().err


def test_attention_titles_and_no_attention(tmp_path, monkeypatch):
    prog = dpl.loads(ATTN, file=str(tmp_path / "att.dpl"))
    prog.interp.attention_log.clear()
    prog.call("f", [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    titles = []
    from matplotlib.axes import Axes
    original = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, t, **kw: (titles.append(t), original(self, t, **kw))[1])
    viz.attention_heatmaps(prog.interp.attention_log, tmp_path / "a.png")
    assert titles == ["att.dpl:4", "att.dpl:5"]
    with pytest.raises(dpl.DplError, match="no attend/attention calls"):
        viz.attention_heatmaps([], tmp_path / "b.png")


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


def test_train_plot_writes_png(tmp_path):
    p = tmp_path / "t.dpl"
    p.write_text(TRAIN)
    out = tmp_path / "loss.png"
    assert main(["train", str(p), "--quiet", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG


def test_train_report_keeps_step_losses(tmp_path):
    from dpl.interp import Interpreter
    from dpl.train import Trainer
    p = tmp_path / "t.dpl"
    p.write_text(TRAIN)
    trainer = Trainer(progress=False)
    Interpreter(mode="train", trainer=trainer).run_file(p)
    r = trainer.report
    assert len(r.step_losses) == r.steps == 10 and len(r.losses) == 5
    assert r.losses[0] == pytest.approx(sum(r.step_losses[:2]) / 2)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.optional
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package `chromium`) is not installed")
@pytest.mark.parametrize("with_dot", [pytest.param(True, marks=pytest.mark.skipif(not HAS_DOT, reason="no dot")),
                                      False])
def test_html_renders_in_headless_chromium(small, tmp_path, monkeypatch, with_dot):
    """The page draws the graph with no network: a screenshot shows dark strokes (nodes, edges, labels)."""
    import subprocess

    import matplotlib.image

    if not with_dot:
        monkeypatch.setattr(viz, "find_dot", lambda: None)
    page, shot = tmp_path / "g.html", tmp_path / "shot.png"
    assert graph_cli(small, "-o", page) == 0
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,700",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == PNG
    pixels = matplotlib.image.imread(shot)[..., :3]
    dark = (pixels.mean(axis=-1) < 0.5).mean()
    assert 0.001 < dark < 0.5  # something is drawn, and it is not a blank or an error page


# ---- big graphs: folded, laid out in bounded time, no `dot` left behind ------------------------------------

ODE = """\
param k: [] = 0.5
fn rhs(t, y) = -k * y + sin(t)
fn loss(y0) {
    y = odeint(rhs, y0, 0.0, 1.0, steps = STEPS)
    return sum(y ^ 2)
}
"""

LOOP = """\
param w: [] = 0.5
fn loss(x) {
    for i in range(STEPS) { x = tanh(x * w) + x }
    return sum(x)
}
"""


def big(tmp_path, source, steps):
    p = tmp_path / "big.dpl"
    p.write_text(source.replace("STEPS", str(steps)))
    return p


def boxes(page: str) -> list:
    """The ids of the boxes drawn (by dot or by layered_svg)."""
    return re.findall(r'class="node"[^>]*>\s*<title>(\w+)</title>', page)


def test_a_big_ode_loss_is_folded_and_drawn_quickly(tmp_path, capsys):
    """An odeint of 200 rk4 steps records 6000 nodes; the page shows its inputs, one odeint box and the rest."""
    import time
    p, out = big(tmp_path, ODE, 200), tmp_path / "g.html"
    start = time.perf_counter()
    assert main(["graph", str(p), "--fn", "loss", "--args", "[1.0, 2.0]", "-o", str(out)]) == 0
    assert time.perf_counter() - start < 60  # minutes of `dot` before; a few seconds (mostly recording) now
    err = capsys.readouterr().err
    assert "the graph has 6004 nodes, more than 500: drawn as 5 boxes, each call folded into one box" in err
    assert "--max-nodes-drawn" in err
    page = out.read_text()
    assert sorted(boxes(page)) == ["c2", "n1", "n2", "n6003", "n6004"]
    assert "odeint(…)" in page and "6000 ops" in page and "drawn as 5 boxes" in page


def test_max_nodes_drawn_draws_every_node_when_high_enough(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(viz, "find_dot", lambda: None)
    p, out = big(tmp_path, ODE, 3), tmp_path / "g.html"
    assert main(["graph", str(p), "--fn", "loss", "--args", "[1.0]", "-o", str(out), "--max-nodes-drawn", "94"]) == 0
    assert len(boxes(out.read_text())) == 94 and "drawn as" not in capsys.readouterr().err
    assert main(["graph", str(p), "--fn", "loss", "--args", "[1.0]", "-o", str(out), "--max-nodes-drawn", "93"]) == 0
    assert len(boxes(out.read_text())) == 5 and "drawn as 5 boxes" in capsys.readouterr().err
    for bad, flag in (("0", "--max-nodes-drawn"), ("-2", "--layout-timeout"), ("inf", "--layout-timeout")):
        assert main(["graph", str(p), "--fn", "loss", "--args", "[1.0]", flag, bad]) == 1
        assert f"{flag} must be" in capsys.readouterr().err


def test_runs_of_boxes_are_merged_when_folding_calls_is_not_enough(tmp_path):
    """3000 loop iterations are 3000 boxes even folded; runs of them are merged, every op counted once, and the
    result is still a DAG that the layered layout draws."""
    rec = viz.record(dpl.load(big(tmp_path, LOOP, 600)), "loss", [1.0, 2.0])
    d = viz.drawing(rec, max_drawn=50)
    assert len(d.items) <= 50 and "runs of consecutive boxes merged" in d.folded
    inputs = [it for it in d.items if it.kind in ("arg", "param")]
    assert [it.id for it in inputs] == ["n1", "n2"]
    assert sum(it.count for it in d.items if it not in inputs) == rec.graph.n - rec.graph.l
    assert [it.output for it in d.items].count(True) == 1 and d.items[-1].output
    g = nx.DiGraph(d.edges)
    assert nx.is_directed_acyclic_graph(g) and set(g) == {it.id for it in d.items}
    svg = viz.layered_svg(d)
    assert len(boxes(svg)) == len(d.items) and svg.count("<path d=\"M") == len(d.edges) + 1  # + the arrow head


def test_the_layered_layout_puts_each_generation_in_a_row(tmp_path):
    p = tmp_path / "nested.dpl"
    p.write_text(NESTED)
    d = viz.drawing(viz.record(dpl.load(p), "f", [1.0, 2.0]))
    svg = viz.layered_svg(d)
    y = {i: float(v) for i, v in re.findall(r'id="(\w+)"><title>\w+</title><rect x="[\d.]+" y="([\d.]+)"', svg)}
    g = nx.DiGraph(d.edges)
    for depth, gen in enumerate(nx.topological_generations(g)):
        assert {y[i] for i in gen} == {42 + depth * 80}
    assert "xmlns" not in svg and 'xmlns="http://www.w3.org/2000/svg"' in viz.layered_svg(d, standalone=True)


def test_a_large_page_is_laid_out_without_dot(tmp_path, monkeypatch):
    def no_dot(*args, **kwargs):
        raise AssertionError("dot was run for a page past DOT_PAGE_LIMIT boxes")
    monkeypatch.setattr(viz, "render", no_dot)
    monkeypatch.setattr(viz, "DOT_PAGE_LIMIT", 20)
    out = tmp_path / "g.html"
    assert main(["graph", str(big(tmp_path, LOOP, 10)), "--fn", "loss", "--args", "[1.0]", "-o", str(out)]) == 0
    assert len(boxes(out.read_text())) == 33  # x, w, 3 ops in each of 10 iterations, sum


def test_an_input_of_many_uses_is_drawn_beside_each(tmp_path):
    rec = viz.record(dpl.load(big(tmp_path, LOOP, 30)), "loss", [1.0])
    dot = viz.to_dot(rec, viz.drawing(rec, collapse=True))
    assert dot.count("n2_c") == 2 * 30  # a dashed copy of w (node and edge) in each of the 30 iterations
    assert "n2 ->" not in dot and 'style="rounded,filled,dashed"' in dot
    assert viz.to_dot(rec).count("n2_n") == 2 * 30  # unfolded: beside each mul
    few = viz.record(dpl.load(big(tmp_path, LOOP, viz.HUB)), "loss", [1.0])
    assert viz.to_dot(few).count("n2 ->") == viz.HUB and "n2_" not in viz.to_dot(few)
    page, _ = viz.to_html(rec, viz.drawing(rec, collapse=True)) if HAS_DOT else ("", "")
    if HAS_DOT:
        info = json.loads(re.search(r'id="info">(.*?)</script>', page, re.S).group(1))
        assert info["n2_c2"] == info["n2"]


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_dot_lays_out_a_folded_loop_in_seconds(tmp_path, capsys):
    """A parameter read in each of 3000 iterations: 431 boxes that dot took minutes on before the copies."""
    import time
    out = tmp_path / "g.svg"
    start = time.perf_counter()
    assert main(["graph", str(big(tmp_path, LOOP, 3000)), "--fn", "loss", "--args", "[1.0]", "-o", str(out),
                 "--layout-timeout", "120"]) == 0
    assert time.perf_counter() - start < 60
    assert "did not finish" not in capsys.readouterr().err and "<title>r1</title>" in out.read_text()


def fake_dot(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A `dot` that writes its pid and hangs: (its directory, the pid file)."""
    bin_dir, pid = tmp_path / "bin", tmp_path / "dot.pid"
    bin_dir.mkdir()
    exe = bin_dir / "dot"
    exe.write_text(f"#!/bin/sh\necho $$ > {pid}.tmp\nmv {pid}.tmp {pid}\nexec sleep 600\n")
    exe.chmod(0o755)
    return bin_dir, pid


def gone(pid: int, within: float = 10.0) -> bool:
    """The process has ended (a zombie waiting for init counts as ended)."""
    import os
    import time
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        except OSError:  # no /proc: ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            state = "R"
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not hasattr(__import__("os"), "killpg"), reason="POSIX process groups")
def test_layout_timeout_falls_back_and_kills_dot(small, tmp_path, monkeypatch, capsys):
    bin_dir, pid = fake_dot(tmp_path)
    monkeypatch.setattr(viz, "find_dot", lambda: str(bin_dir / "dot"))
    for name, code in (("g.svg", 0), ("g.html", 0), ("g.png", 1)):
        out = tmp_path / name
        assert graph_cli(small, "-o", out, "--layout-timeout", "0.5") == code
        err = capsys.readouterr().err
        assert "`dot` did not finish in 0.5 s (--layout-timeout)" in err
        assert gone(int(pid.read_text()), within=5)
        pid.unlink()
        if code == 0:
            assert ("drawn without it" if name == "g.svg" else "the page is laid out without it") in err
            assert all(f"<title>n{i}</title>" in out.read_text() for i in range(1, 9))
        else:
            assert "--max-nodes-drawn" in err and not out.exists()
    assert out.with_suffix(".svg").read_text().startswith('<svg xmlns="http://www.w3.org/2000/svg"')


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_DEATHSIG is Linux's")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_dot_dies_with_dpl(small, tmp_path, sig):
    """However dpl ends (Ctrl-C, kill, kill -9) while dot lays out, dot ends too."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time
    bin_dir, pid = fake_dot(tmp_path)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dpl_proc = subprocess.Popen([sys.executable, "-m", "dpl.cli", "graph", str(small), "--fn", "f", "--args",
                                 "[[1.0, 2.0]]", "-o", str(tmp_path / "g.svg")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 60
        while not pid.exists() and time.monotonic() < end and dpl_proc.poll() is None:
            time.sleep(0.05)
        assert pid.exists(), dpl_proc.communicate()
        dot_pid = int(pid.read_text())
        dpl_proc.send_signal(getattr(signal, sig))
        _, err = dpl_proc.communicate(timeout=30)
        assert gone(dot_pid)
        if sig == "SIGINT":
            assert dpl_proc.returncode == 130 and b"interrupted" in err and b"Traceback" not in err
    finally:
        if dpl_proc.poll() is None:
            dpl_proc.kill()
        if pid.exists() and not gone(int(pid.read_text()), within=0):
            with contextlib.suppress(ProcessLookupError):  # it may end between the check and the kill
                os.kill(int(pid.read_text()), signal.SIGKILL)


def test_repl_graph_of_a_big_expression_is_folded(tmp_path):
    import io
    from dpl.repl import Session
    out = io.StringIO()
    s = Session(out=out, err=io.StringIO())
    s.execute("x = [1.0, 2.0]")
    s.execute("fn step(v) = tanh(v) + v")
    page = tmp_path / "g.dot"
    s.execute("fn many(v, n) {\n  for i in range(n) { v = step(v) }\n  return sum(v)\n}")
    s.execute(f":graph many(x, 400) -o {page}")
    text = out.getvalue()
    assert "the graph has 802 nodes, more than 500: drawn as" in text and f"wrote {page}" in text
    assert page.read_text().count("[label=") <= 500
