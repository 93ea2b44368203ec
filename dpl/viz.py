"""Seeing inside a run: the recorded DAG as DOT, networkx JSON, a zoomable HTML page or the ⟨n, l, E, f, α⟩
tuple; heatmaps of attention weights; training curves.

`record` traces one call like `Program.trace`; every node carries the scope it was recorded in (the DPL call,
loop iteration or soft-while step the interpreter had open, see graph.Scope), which becomes the clusters.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import backend as B
from . import graph as G
from .errors import SOURCES, DplError, Span
from .graph import Graph, raw
from .record import record as record_call
from .paramfile import prepare_output, refuse_same_files, write_atomic

RENDERED = (".svg", ".png", ".pdf")
MAX_DRAWN = 500       # boxes past which a drawing is folded: `dot` takes minutes on a few thousand
DOT_PAGE_LIMIT = 200  # the HTML page is laid out by `dot` up to this many boxes, in Python past it
LAYOUT_SECONDS = 60.0  # how long `dot` may take before .svg and .html fall back to the Python layout
INSTALL_DOT = ("Graphviz's `dot` program is not installed; install it with `apt install graphviz` (Debian/Ubuntu) "
               "or `brew install graphviz` (macOS); .dot, .json and .html output work without it")


# ---- recording a call, with the DPL call that made each node ------------------------------------------

@dataclass
class Call:
    id: int
    name: str
    span: Span | None  # the call site
    parent: int        # 0: none (the traced call itself is call 1)


@dataclass
class Recording:
    graph: Graph
    calls: dict        # id -> Call
    owner: dict        # node id -> id of the innermost DPL call that recorded it (0 for inputs)
    n_args: int        # inputs 1..n_args are the call's arguments; the rest of 1..l are parameters


def record(prog, fn_name: str, *args) -> Recording:
    """Trace `fn_name(*args)`: the Graph plus the DPL call (or loop iteration, soft-while step) behind every node."""
    interp = prog.interp
    f = prog.function(fn_name)
    fdef = f.fns.get("call") if hasattr(f, "fns") else getattr(f, "decl", None)  # a module instance: its call
    names = list(getattr(fdef, "params", ()))
    G.set_span(None)
    call_args = prog._args(args)
    first = next(G.Scope._seq)  # scopes opened from here on belong to this recording
    rec = record_call(interp, f, call_args, box=range(len(call_args)), names=names)
    out = rec.out
    g = Graph(rec.trace, out if isinstance(out, tuple) else (out,))
    scopes = set()
    for node in g.nodes:
        s = node.scope
        while s is not None and s.seq > first and s not in scopes:
            scopes.add(s)
            s = s.parent
    ids = {s: i for i, s in enumerate(sorted(scopes, key=lambda s: s.seq), start=1)}
    calls = {i: Call(i, s.name, s.span, ids.get(s.parent, 0)) for s, i in ids.items()}
    owner = {node.id: 0 if node.op is None else ids.get(node.scope, 0) for node in g.nodes}
    return Recording(g, calls, owner, len(call_args))


# ---- describing nodes ------------------------------------------------------------------------------------

def _shape(v) -> str:
    return str(list(np.shape(raw(v))))


def source_line(span: Span | None) -> str:
    """`file:line: source text` of a span ('' when unknown)."""
    if span is None:
        return ""
    lines = SOURCES.get(span.file, "").splitlines()
    text = lines[span.line - 1].strip() if 1 <= span.line <= len(lines) else ""
    return f"{Path(span.file).name}:{span.line}: {text}"


def stats(v) -> str:
    r = raw(v)
    if getattr(r, "dtype", None) is None:
        return ""
    a = np.asarray(B.to_host(r), dtype=np.float64)
    if a.size == 0:
        return "empty"
    return f"min {a.min():.6g}  max {a.max():.6g}  mean {a.mean():.6g}"


def _kind(rec: Recording, i: int) -> str:
    node = rec.graph.nodes[i - 1]
    return "op" if node.op is not None else "arg" if i <= rec.n_args else "param"


def _top(rec: Recording, cid: int) -> int:
    """The outermost call below the traced call that contains call `cid` (0 if none)."""
    while cid and rec.calls[cid].parent > 1:
        cid = rec.calls[cid].parent
    return cid if cid > 1 else 0


@dataclass
class Item:
    """One box of the picture: a node, or (with collapse) a whole call."""
    id: str
    lines: list
    kind: str      # arg, param, op, call
    tooltip: str
    call: int      # the call cluster it sits in (0, 1: none)
    output: bool = False
    count: int = 0     # nodes folded into a call box
    copy_of: str = ""  # an input drawn again beside one of its uses (`input_copies`)


def display(rec: Recording, collapse: bool = False):
    """The boxes and edges to draw: every node, or with `collapse` each call below the traced one as one box."""
    g = rec.graph
    items, where = {}, {}
    for node in g.nodes:
        i, kind = node.id, _kind(rec, node.id)
        top = _top(rec, rec.owner[i]) if collapse else 0
        if top:
            where[i] = f"c{top}"
            box = items.get(where[i])
            if box is None:
                c = rec.calls[top]
                box = items[where[i]] = Item(where[i], [f"{c.name}(…)", ""], "call", source_line(c.span), 0)
            box.count += 1
            box.lines[1] = f"{box.count} op{'s' * (box.count != 1)}"
            continue
        where[i] = f"n{i}"
        if kind == "op":
            label, tip = g.op(i), source_line(node.span)
        else:
            label = node.name or f"input {i}"
            tip = f"{'argument' if kind == 'arg' else 'parameter'} {label}" + \
                (f" · {source_line(node.span)}" if node.span else "")
        items[where[i]] = Item(where[i], [label, _shape(node.value)], kind, tip, rec.owner[i])
    for i in g.outputs:
        items[where[i]].output = True
    edges = list(dict.fromkeys((where[a], where[b]) for a, b in g.E if where[a] != where[b]))
    return list(items.values()), edges


def merge_runs(items: list, edges: list, budget: int):
    """Runs of consecutive boxes merged so that at most `budget` boxes remain besides the inputs. Boxes come in
    recording order (a topological order), so edges between runs still go forward: the drawing stays a DAG."""
    inputs = [it for it in items if it.kind in ("arg", "param")]
    rest = [it for it in items if it.kind not in ("arg", "param")]
    per = -(-len(rest) // max(1, budget - len(inputs)))
    where, runs = {it.id: it.id for it in inputs}, []
    for k in range(0, len(rest), per):
        run, rid = rest[k:k + per], f"r{len(runs) + 1}"
        ops = sum(it.count or 1 for it in run)
        names = list(dict.fromkeys(it.lines[0] for it in run))
        tip = "\n".join(dict.fromkeys(t for t in (run[0].tooltip, run[-1].tooltip) if t))
        runs.append(Item(rid, [names[0] + " …" * (len(names) > 1), f"{len(run)} boxes, {ops} ops"], "call",
                         f"{' · '.join(names[:3])}{' …' * (len(names) > 3)}\n{tip}", 0,
                         any(it.output for it in run), ops))
        where.update((it.id, rid) for it in run)
    return inputs + runs, list(dict.fromkeys((where[a], where[b]) for a, b in edges if where[a] != where[b]))


@dataclass
class Drawing:
    """The boxes and edges to draw, and how the graph was folded to get them ('' when it was not)."""
    items: list
    edges: list
    folded: str = ""


def drawing(rec: Recording, collapse: bool = False, max_drawn: int | None = None) -> Drawing:
    """Every node, or with `collapse` each call below the traced one as one box. Past `max_drawn` boxes calls
    are folded anyway, and when that is not enough runs of consecutive boxes are merged (`merge_runs`)."""
    items, edges = display(rec, collapse)
    if max_drawn is None or len(items) <= max_drawn:
        return Drawing(items, edges)
    how = [] if collapse else ["each call folded into one box"]
    if not collapse:
        items, edges = display(rec, True)
    if len(items) > max_drawn:
        items, edges = merge_runs(items, edges, max_drawn)
        how.append("runs of consecutive boxes merged")
    return Drawing(items, edges, f"the graph has {rec.graph.n} nodes, more than {max_drawn}: drawn as "
                                 f"{len(items)} boxes, {' and '.join(how)} "
                                 f"(`dpl graph --max-nodes-drawn N` sets the limit)")


# ---- DOT ---------------------------------------------------------------------------------------------------

def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_FILL = {"arg": "#ffd8a8", "param": "#a5d8ff", "op": "#ffffff", "call": "#e9ecef"}


HUB = 4  # an input that feeds more boxes is drawn again beside each use, as TensorBoard does: dot lays out a
         # long edge as one virtual node per rank it crosses, and a parameter read in every step of a loop made it
         # take minutes on a hundred boxes (well under a second with the copies)


def input_copies(d: Drawing):
    """The drawing's boxes and edges with each input of more than HUB uses replaced by one copy per use."""
    uses = Counter(a for a, _ in d.edges)
    hubs = {it.id: it for it in d.items if it.kind in ("arg", "param") and uses[it.id] > HUB}
    if not hubs:
        return d.items, d.edges
    call = {it.id: it.call for it in d.items}
    items, edges = list(d.items), []
    for a, b in d.edges:
        if a in hubs:
            items.append(replace(hubs[a], id=f"{a}_{b}", call=call[b], output=False, copy_of=a))
            a = f"{a}_{b}"
        edges.append((a, b))
    return items, edges


def _dot_node(it: Item) -> str:
    attrs = {"label": "\n".join(it.lines), "tooltip": it.tooltip or it.lines[0], "fillcolor": _FILL[it.kind]}
    if it.copy_of:
        attrs["style"] = "rounded,filled,dashed"
    if it.kind in ("arg", "param"):
        attrs["shape"] = "ellipse"
    if it.kind == "call":
        attrs["shape"] = "box3d"
    extra = ", peripheries=2" if it.output else ""
    return f"{it.id} [" + ", ".join(f"{k}={_q(v)}" for k, v in attrs.items()) + extra + "];"


def to_dot(rec: Recording, d: Drawing | None = None) -> str:
    """Graphviz source of a drawing (default: every node): inputs as coloured ellipses (arguments orange,
    parameters blue), outputs doubly framed, nodes clustered by the DPL call that recorded them, tooltips with
    the source line."""
    items, edges = input_copies(d or drawing(rec))
    out = ["digraph dpl {",
           '  graph [rankdir=TB, fontname="Helvetica", fontsize=10];',
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [color="#555555", arrowsize=0.6];']
    inside: dict[int, list] = {}
    used = set()  # calls that hold a node, with their ancestors: only those get a cluster
    for it in items:
        inside.setdefault(it.call if it.call > 1 else 0, []).append(it)
        c = it.call
        while c > 1 and c not in used:
            used.add(c)
            c = rec.calls[c].parent
    children: dict[int, list] = {}
    for c in rec.calls.values():
        if c.id in used:
            children.setdefault(c.parent if c.parent > 1 else 0, []).append(c.id)

    def emit(cid, depth):
        pad = "  " * depth
        out.extend(pad + _dot_node(it) for it in inside.get(cid, []))
        for kid in children.get(cid, []):
            c = rec.calls[kid]
            where = f"  {Path(c.span.file).name}:{c.span.line}" if c.span else ""
            out.append(f"{pad}subgraph cluster_{kid} {{")
            out.append(f'{pad}  label={_q(c.name + where)}; style="rounded,filled"; '
                       f'fillcolor="{"#f1f3f5" if depth % 2 else "#f8f9fa"}"; color="#adb5bd";')
            emit(kid, depth + 1)
            out.append(f"{pad}}}")

    emit(0, 1)
    out.extend(f"  {a} -> {b};" for a, b in edges)
    out.append("}")
    return "\n".join(out) + "\n"


def find_dot() -> str | None:
    return shutil.which("dot")


class LayoutTimeout(DplError):
    """`dot` ran past its time limit (and was killed)."""


def render(dot_source: str, fmt: str, timeout: float = LAYOUT_SECONDS) -> bytes:
    """Run Graphviz's `dot -T<fmt>` for at most `timeout` seconds; a DplError saying how to install it when it is
    missing, LayoutTimeout when it takes too long."""
    exe = find_dot()
    if exe is None:
        raise DplError(f"cannot render .{fmt}: {INSTALL_DOT}")
    try:
        code, out, err = run_child([exe, f"-T{fmt}"], dot_source.encode(), timeout)
    except subprocess.TimeoutExpired:
        raise LayoutTimeout(f"Graphviz's `dot` did not finish in {timeout:g} s (--layout-timeout)") \
            from None
    if code != 0:
        raise DplError(f"dot failed: {err.decode(errors='replace').strip()}")
    return out


_PR_SET_DEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl():
    """libc's prctl on Linux (None elsewhere), looked up in dpl itself: the child must not load anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with(parent: int, prctl) -> None:
    """In the child before exec: the kernel sends it SIGKILL when dpl dies, however dpl dies (SIGKILL too)."""
    prctl(_PR_SET_DEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # dpl died before that took effect
        os._exit(1)


def run_child(argv: list, data: bytes, timeout: float):
    """Run `argv` with `data` on its stdin in a process group of its own: (exit code, stdout, stderr). The group is
    killed on timeout (subprocess.TimeoutExpired) and on anything that stops dpl meanwhile: Ctrl-C, an error, and
    on Linux also dpl's own death by SIGTERM or SIGKILL (PR_SET_DEATHSIG). No `dot` outlives dpl."""
    prctl = _prctl()
    setup = functools.partial(_die_with, os.getpid(), prctl) if prctl is not None else None
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True, preexec_fn=setup) as child:
        try:
            out, err = child.communicate(data, timeout=timeout)
        finally:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        return child.returncode, out, err


# ---- text and JSON ------------------------------------------------------------------------------------------

def _brief(v) -> str:
    """A constant or attribute for the tuple text: small arrays by value, large ones by shape."""
    if isinstance(v, tuple):
        return "(" + ", ".join(_brief(x) for x in v) + ")"
    if isinstance(v, slice):
        return ":".join("" if x is None else str(x) for x in (v.start, v.stop, v.step)).removesuffix(":")
    r = raw(v)
    if getattr(r, "dtype", None) is None:
        return repr(v)
    a = np.asarray(B.to_host(r))
    return str(a.tolist()) if a.size <= 4 else f"const{list(a.shape)}"


def _alpha(node) -> str:
    """α_i: the parents' values by number, constants by value (or shape when large), then the attributes."""
    parents = {pos: p.id for pos, p in node.parents}
    parts = [f"v{parents[pos]}" if pos in parents else _brief(a) for pos, a in enumerate(node.args)]
    parts += [f"{k}={_brief(v)}" for k, v in node.attrs.items()]
    return "(" + ", ".join(parts) + ")"


def to_tuple_text(rec: Recording) -> str:
    """⟨n, l, E, f, α⟩ as text: one line per node with f_i, α_i and the shape of v_i."""
    g = rec.graph
    lines = [f"n = {g.n}", f"l = {g.l}", "E = {" + ", ".join(f"({a}, {b})" for a, b in g.E) + "}", ""]
    for node in g.nodes:
        i = node.id
        where = f"  @ {node.span.line}:{node.span.col}" if node.span else ""
        if node.op is None:
            lines.append(f"{i:>4}  input  {_kind(rec, i)} {node.name}  v: {_shape(node.value)}{where}")
        else:
            lines.append(f"{i:>4}  f = {g.op(i)}  α = {_alpha(node)}  v: {_shape(node.value)}{where}")
    if g.outputs:
        lines.append("outputs: " + ", ".join(map(str, g.outputs)))
    return "\n".join(lines) + "\n"


def to_networkx(rec: Recording):
    """Graph.to_networkx plus each node's kind (arg/param/op), DPL call and source line text."""
    nxg = rec.graph.to_networkx()
    for node in rec.graph.nodes:
        c = rec.calls.get(rec.owner[node.id])
        nxg.nodes[node.id].update(kind=_kind(rec, node.id), call=c.name if c else "", source=source_line(node.span))
    return nxg


def node_link(nxg) -> dict:
    import networkx as nx
    try:
        return nx.node_link_data(nxg, edges="edges")
    except TypeError:  # networkx < 3.4 calls them "links"
        return nx.node_link_data(nxg)


def to_json(rec: Recording) -> str:
    return json.dumps(node_link(to_networkx(rec)), indent=1)


# ---- HTML ------------------------------------------------------------------------------------------------

def layered_svg(d: Drawing, standalone: bool = False) -> str:
    """A plain SVG drawing without `dot`: one row per topological generation (longest path from the inputs), each
    row ordered by where its boxes' inputs sit, which uncrosses most edges. O(nodes + edges)."""
    import networkx as nx
    g = nx.DiGraph()
    g.add_nodes_from(it.id for it in d.items)
    g.add_edges_from(d.edges)
    order = {it.id: k for k, it in enumerate(d.items)}
    x, rows = {}, []
    for gen in nx.topological_generations(g):
        row = sorted(gen, key=lambda i: (sum(x[p] for p in g.pred[i]) / max(1, len(g.pred[i])), order[i]))
        x.update((i, k) for k, i in enumerate(row))
        rows.append(row)
    w, h, gx, gy = 130, 38, 20, 42
    pos = {i: (gx + x[i] * (w + gx), gy + r * (h + gy)) for r, row in enumerate(rows) for i in row}
    width = gx + max(map(len, rows)) * (w + gx) if rows else 100
    height = gy + len(rows) * (h + gy)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""  # inline SVG in HTML needs no namespace
    out = [f'<svg{ns} viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="Helvetica" '
           f'font-size="11"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
           f'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    for a, b in d.edges:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        xa, ya, xb, bend = xa + w / 2, ya + h, xb + w / 2, gy / 2
        out.append(f'<path d="M{xa},{ya} C{xa},{ya + bend} {xb},{yb - bend} {xb},{yb}" fill="none" stroke="#555" '
                   f'marker-end="url(#arrow)"/>')
    for it in d.items:
        x0, y0 = pos[it.id]
        rx = h / 2 if it.kind in ("arg", "param") else 6
        stroke = 'stroke-width="3"' if it.output else 'stroke-width="1"'
        out.append(f'<g class="node" id="{it.id}"><title>{it.id}</title>'
                   f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" rx="{rx}" fill="{_FILL[it.kind]}" '
                   f'stroke="#333" {stroke}/>'
                   f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle">{html.escape(it.lines[0][:22])}</text>'
                   f'<text x="{x0 + w / 2}" y="{y0 + 30}" text-anchor="middle" fill="#555">'
                   f'{html.escape(it.lines[1][:22])}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


_SCRIPT = """
const info = JSON.parse(document.getElementById('info').textContent);
const view = document.getElementById('view'), tip = document.getElementById('tip');
const svg = view.querySelector('svg');
svg.removeAttribute('width'); svg.removeAttribute('height');
svg.style.width = '100%'; svg.style.height = '100%';
let vb = svg.getAttribute('viewBox').split(/[ ,]+/).map(Number), drag = null;
const show = () => svg.setAttribute('viewBox', vb.join(' '));
function toSvg(e) {  // the mouse in drawing units, and drawing units per screen pixel
  const m = svg.getScreenCTM && svg.getScreenCTM();
  if (m) {
    const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(m.inverse());
    return {x: p.x, y: p.y, s: 1 / m.a};
  }
  const r = svg.getBoundingClientRect(), s = Math.max(vb[2] / (r.width || 1), vb[3] / (r.height || 1));
  return {x: vb[0] + (e.clientX - r.left) * s, y: vb[1] + (e.clientY - r.top) * s, s: s};
}
view.addEventListener('wheel', e => {
  e.preventDefault();
  const p = toSvg(e), k = e.deltaY < 0 ? 0.85 : 1 / 0.85;
  vb = [p.x - (p.x - vb[0]) * k, p.y - (p.y - vb[1]) * k, vb[2] * k, vb[3] * k];
  show();
}, {passive: false});
view.addEventListener('mousedown', e => { drag = {x: e.clientX, y: e.clientY}; view.style.cursor = 'grabbing'; });
window.addEventListener('mouseup', () => { drag = null; view.style.cursor = 'grab'; });
window.addEventListener('mousemove', e => {
  if (drag) {
    const s = toSvg(e).s;
    vb[0] -= (e.clientX - drag.x) * s; vb[1] -= (e.clientY - drag.y) * s; drag = {x: e.clientX, y: e.clientY};
    show();
  }
  const g = e.target.closest && e.target.closest('g.node'), t = g && g.querySelector('title');
  const d = t && info[t.textContent.trim()];
  if (!d) { tip.style.display = 'none'; return; }
  tip.textContent = d;
  tip.style.display = 'block'; tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
});
"""


def to_html(rec: Recording, d: Drawing | None = None, title: str = "dpl graph",
            timeout: float = LAYOUT_SECONDS) -> tuple[str, str]:
    """One self-contained page: the drawing inline (dot's SVG up to DOT_PAGE_LIMIT boxes, else, or when dot is
    missing or too slow, `layered_svg`), zoom with the wheel, pan by dragging, and op, shape, value statistics and
    source line of each node on hover. Returns the page and a note when dot ran out of time ('' otherwise)."""
    d = d or drawing(rec)
    svg, note = None, ""
    if find_dot() and len(d.items) <= DOT_PAGE_LIMIT:
        try:
            svg = render(to_dot(rec, d), "svg", timeout).decode()
        except LayoutTimeout as e:
            note = f"{e.message}; the page is laid out without it"
        else:
            svg = svg[svg.index("<svg"):]
            svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)  # inline SVG in HTML needs no namespace URLs
            svg = re.sub(r'<a xlink:title="[^"]*">|</a>', "", svg)  # our hover box replaces dot's tooltips
    if svg is None:
        svg = layered_svg(d)
    info = {}
    for it in d.items:
        if it.id.startswith("n"):
            node = rec.graph.nodes[int(it.id[1:]) - 1]
            call = rec.calls.get(rec.owner[node.id])
            head = f"%{node.id}  {rec.graph.op(node.id)}" + (f" {node.name}" if node.op is None else "")
            info[it.id] = "\n".join(x for x in (head, f"shape {_shape(node.value)}", stats(node.value),
                                                source_line(node.span),
                                                f"in {call.name}" if call and call.id > 1 else "") if x)
        else:
            info[it.id] = "\n".join(it.lines + [it.tooltip])
    for it in input_copies(d)[0][len(d.items):]:
        info[it.id] = info[it.copy_of]
    data = json.dumps(info).replace("</", "<\\/")
    drawn = f", drawn as {len(d.items)} boxes" if d.folded else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
html, body {{ margin: 0; height: 100%; font-family: Helvetica, Arial, sans-serif; }}
#bar {{ padding: 6px 10px; font-size: 13px; background: #f1f3f5; border-bottom: 1px solid #ccc; }}
#view {{ position: absolute; top: 30px; bottom: 0; left: 0; right: 0; overflow: hidden; cursor: grab; }}
#tip {{ position: fixed; display: none; white-space: pre; background: #fffbe6; border: 1px solid #999;
        padding: 6px 8px; font: 12px monospace; pointer-events: none; box-shadow: 2px 2px 6px #aaa; }}
</style></head><body>
<div id="bar">{html.escape(title)} — n = {rec.graph.n}, l = {rec.graph.l}, |E| = {len(rec.graph.E)}{drawn}
 · wheel to zoom, drag to pan, hover a node for its values</div>
<div id="view">
{svg}
</div>
<div id="tip"></div>
<script type="application/json" id="info">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
""", note


def write_graph(rec: Recording, out: str, collapse: bool = False, title: str = "dpl graph",
                max_drawn: int | None = MAX_DRAWN, timeout: float = LAYOUT_SECONDS) -> list:
    """Write the drawing to `out`, the format taken from its extension (.json: the whole graph, never folded).
    Returns what to tell the user: how a large graph was folded, and a layout `dot` did not finish in time."""
    ext = Path(out).suffix.lower()
    if ext not in GRAPH_FORMATS:
        raise _unknown_graph_format(out)
    d = drawing(rec, collapse, max_drawn) if ext != ".json" else None
    notes = [d.folded] if d and d.folded else []
    if ext in RENDERED:
        try:
            data = render(to_dot(rec, d), ext[1:], timeout)
        except LayoutTimeout as e:
            if ext != ".svg":
                raise DplError(f"{e.message}; draw fewer boxes with --max-nodes-drawn N, or write .svg or .html, "
                               f"which are then laid out without it") from None
            data = layered_svg(d, standalone=True).encode()
            notes.append(f"{e.message}; drawn without it")
    elif ext in (".dot", ".gv"):
        data = to_dot(rec, d).encode()
    elif ext == ".json":
        data = to_json(rec).encode()
    else:
        page, note = to_html(rec, d, title, timeout)
        data = page.encode()
        notes += [note] if note else []
    write_atomic(out, data)
    return notes


GRAPH_FORMATS = RENDERED + (".dot", ".gv", ".json", ".html", ".htm")


def _unknown_graph_format(out) -> DplError:
    return DplError(f"`-o {out}`: the output format comes from the extension: .svg, .png, .pdf, .dot, .json or "
                    f".html")


def check_graph_output(out, tuple_text: bool = False) -> None:
    """Before recording: `out` has a format `write_graph` knows (any name for --format tuple) and can be written."""
    if not tuple_text and Path(out).suffix.lower() not in GRAPH_FORMATS:
        raise _unknown_graph_format(out)
    prepare_output(out, "-o")


IMAGE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def image_format(out, flag: str) -> str:
    """The matplotlib format of an image file name, from its extension."""
    fmt = Path(out).suffix.lower().removeprefix(".")
    if fmt not in IMAGE_FORMATS:
        raise DplError(f"`{flag} {out}`: the image format comes from the extension: "
                       f"{', '.join('.' + f for f in IMAGE_FORMATS)}")
    return fmt


def save_figure(fig, out, flag: str) -> None:
    """Draw the figure in memory, then write it atomically (no empty or half file on a full disk)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=image_format(out, flag))
    write_atomic(out, buf.getvalue())


# ---- attention and training curves (matplotlib, no pyplot: nothing global is touched) ----------------------

def _figure(w, h):
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def attention_heatmaps(log, out, limit: int = 24) -> int:
    """Write `attention_figure` to `out`; returns the number of panels drawn."""
    fig, n = attention_figure(log, limit)
    save_figure(fig, out, "-o")
    return n


def attention_figure(log, limit: int = 24):
    """One heatmap (query × key) per attend/attention call in `log` [(span, weights)], titled FILE:LINE.
    Weights with batch dimensions give one panel per batch entry. Returns the figure and its number of panels."""
    from matplotlib.ticker import FixedLocator, MaxNLocator
    panels = []
    for span, alpha in log:
        a = np.asarray(B.to_host(alpha), dtype=np.float64)
        a = a.reshape((-1,) + a.shape[-2:]) if a.ndim >= 2 else a.reshape(1, 1, -1)
        where = f"{Path(span.file).name}:{span.line}" if span else "?"
        for b in range(a.shape[0]):
            panels.append((where + (f" [{b}]" if a.shape[0] > 1 else ""), a[b]))
    if not panels:
        raise DplError("the call made no attend/attention calls, so there are no weights to draw")
    if len(panels) > limit:
        print(f"dpl: drawing the first {limit} of {len(panels)} attention maps", file=sys.stderr)
        panels = panels[:limit]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(3.6 * cols, 3.0 * rows)
    for k, (title, a) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        im = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=max(1e-12, float(a.max())), aspect="auto",
                       interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        for axis, size in ((ax.yaxis, a.shape[0]), (ax.xaxis, a.shape[1])):
            axis.set_major_locator(FixedLocator(range(size)) if size <= 16 else MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig, len(panels)


def plot_losses(report, out) -> None:
    """Write `loss_figure` to `out`."""
    save_figure(loss_figure(report), out, "--plot")


def loss_figure(report):
    """The training curve of a TrainReport: the loss of every step and the mean of every epoch."""
    steps = list(getattr(report, "step_losses", []))
    epochs = list(report.losses)
    if not steps and not epochs:
        raise DplError("nothing was trained (no train block ran), so there is no loss curve to plot")
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    if steps:
        ax.plot(np.arange(1, len(steps) + 1), steps, color="#74c0fc", lw=1, label="step loss")
    per = len(steps) / len(epochs) if steps and epochs else 1
    ax.plot(per * np.arange(1, len(epochs) + 1), epochs, "o-", color="#1864ab", ms=3, lw=1.5, label="epoch mean")
    values = np.asarray(steps or epochs, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ---- the commands ----------------------------------------------------------------------------------------

def call_arguments(interp, exprs) -> list:
    """Each `--args` text parsed as one DPL expression and evaluated in the program's top-level scope."""
    from . import ast as A
    from .parser import parse
    values = []
    for k, text in enumerate(exprs):
        prog = parse(text, f"<--args {k + 1}>")
        if len(prog.body) != 1 or not isinstance(prog.body[0], A.ExprStmt):
            raise DplError(f"`--args` takes one DPL expression per argument, got `{text}`")
        values.append(interp.eval(prog.body[0].expr, interp.top))
    return values


def inspect_command(args, path: Path, loaded) -> int:
    """`dpl graph`, `dpl gradcheck`, `dpl attention`: load the program (top-level `print` goes to stderr, so
    stdout holds only what the command prints), evaluate `--args`, then look at one call."""
    from . import Program
    from .interp import Interpreter
    out = getattr(args, "out", None)
    if args.command == "attention":
        out = out or path.with_name(path.stem + ".attention.png")
    refuse_same_files([("the program", path, False), ("--params", args.params, False), ("-o", out, True)])
    if args.command == "attention":
        image_format(out, "-o")
        prepare_output(out, "-o")
    elif out:
        check_graph_output(out, args.format == "tuple")
    if args.command == "graph":
        max_drawn = MAX_DRAWN if args.max_nodes_drawn is None else args.max_nodes_drawn
        timeout = LAYOUT_SECONDS if args.layout_timeout is None else args.layout_timeout
        if max_drawn < 1:
            raise DplError(f"--max-nodes-drawn must be at least 1, got {max_drawn}")
        if not 0 < timeout < float("inf"):
            raise DplError(f"--layout-timeout must be a positive number of seconds, got {args.layout_timeout:g}")
    interp = Interpreter(mode="run", seed=args.seed, stdout=sys.stderr, loaded_params=loaded)
    interp.run_file(path)
    prog = Program(interp)
    prog.function(args.fn)  # a clear error before anything else
    call_args = call_arguments(interp, args.args)
    if args.command == "gradcheck":
        from .gradcheck import gradcheck_command
        return gradcheck_command(prog, args.fn, call_args, args.tol)
    if args.command == "attention":
        interp.attention_log.clear()
        prog.call(args.fn, *call_args)
        n = attention_heatmaps(interp.attention_log, out)
        print(f"{n} attention map{'s' * (n != 1)} written to {out}", file=sys.stderr)
        return 0
    rec = record(prog, args.fn, *call_args)
    if args.format == "tuple" or not args.out:
        if args.format == "tuple":
            text = to_tuple_text(rec)
        else:
            d = drawing(rec, args.collapse, max_drawn)
            text = to_dot(rec, d)
            if d.folded:
                print(f"dpl: {d.folded}", file=sys.stderr)
        if not args.out:
            sys.stdout.write(text)
            return 0
        write_atomic(args.out, text.encode())
    else:
        for note in write_graph(rec, args.out, args.collapse, f"{path.name}: {args.fn}", max_drawn, timeout):
            print(f"dpl: {note}", file=sys.stderr)
    print(f"graph of {args.fn}: {rec.graph.n} nodes, {len(rec.graph.E)} edges, written to {args.out}",
          file=sys.stderr)
    return 0
