"""Replay (dpl/record.py, dpl/replay.py): a plan replayed at new inputs gives bit for bit what a fresh
recording there gives, or finds out that it cannot (a guard, a rebound name, a tainted recording)."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpl
from dpl import graph, record, replay
from dpl.graph import raw

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "tests" / "conformance"

TAYLOR = """
fn s(x) {
    t = 0.0
    sign = -1.0
    fact = 1.0
    for i in range(1, 20) {
        fact = fact * i
        if i % 2 == 1 {
            newterm = x ^ i / fact
            if abs(newterm) < 1e-8 {
                return t
            }
            sign = -sign
            t = t + sign * newterm
        }
    }
    return t
}
"""


def same(a, b) -> bool:
    """Bit for bit: values, shapes and dtypes (None only where the other is None)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(raw(a)), np.asarray(raw(b))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_result(r1, r2) -> bool:
    (v1, a1, p1), (v2, a2, p2) = r1, r2
    return (same(v1, v2) and len(a1) == len(a2) and all(same(x, y) for x, y in zip(a1, a2))
            and p1.keys() == p2.keys() and all(same(p1[k], p2[k]) for k in p1))


def fresh(interp, f, args, **kw):
    """A recording with replay off: what replay must reproduce."""
    saved, interp.replay = interp.replay, False
    try:
        return record.gradients(interp, f, args, None, **kw)
    finally:
        interp.replay = saved


def plans(interp):
    return [p for e in interp.plans.values() for p in e.plans]


# ---- the plan cache ---------------------------------------------------------------------------------------

def test_grad_in_a_loop_replays_and_matches_fresh_recordings():
    prog = dpl.loads(TAYLOR)
    interp, f = prog.interp, prog.function("s")
    for x in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 1.0, 0.5, 2.0]:
        args = [np.asarray(x)]
        got = record.gradients(interp, f, args, None, wrt_args=(0,))
        assert same_result(got, fresh(interp, f, args, wrt_args=(0,)))
    # three paths through the early return, one plan each
    assert len(plans(interp)) == 3
    assert float(got[0]) == pytest.approx(np.sin(2.0), abs=1e-7)


def test_a_failed_guard_records_again_with_the_other_path():
    prog = dpl.loads("fn f(x) { if x > 0 { return x ^ 2 } \n return -x ^ 3 }")
    interp, f = prog.interp, prog.function("f")
    for x in [1.5, 2.0, 3.0]:
        record.gradients(interp, f, [np.asarray(x)], None, wrt_args=(0,))
    assert len(plans(interp)) == 1
    value, (g,), _ = record.gradients(interp, f, [np.asarray(-2.0)], None, wrt_args=(0,))
    assert float(value) == 8.0 and float(g) == -12.0


def test_a_rebound_top_level_name_is_seen():
    prog = dpl.loads("k = 1.0\nfn f(x) = k * x ^ 2\n"
                     "for i in range(4) { k = float(i)\n print(grad(f)(3.0)) }\n")
    assert prog.interp.stdout.getvalue().split() == ["0.0", "6.0", "12.0", "18.0"]


def test_parameters_changed_by_training_are_read_afresh():
    src = ("param w: [] = 1.0\nfn f(x) = w * x ^ 2\n"
           "for i in range(3) { print(grad(f)(1.0)) }\n")
    prog = dpl.loads(src)
    assert prog.interp.stdout.getvalue().split() == ["2.0"] * 3
    prog.interp.params["w"] = np.asarray(5.0)
    assert float(prog.grad("f")(1.0)) == 10.0


def test_random_draws_and_prints_inside_are_never_replayed():
    src = ("fn f(x) = sum(x * normal(0, 1, [3]))\n"
           "for i in range(4) { print(grad(f)(1.0)) }\n"
           "fn g(x) { print(\"in g\") \n return x ^ 2 }\n"
           "for i in range(3) { print(grad(g)(1.0)) }\n")
    prog = dpl.loads(src)
    out = prog.interp.stdout.getvalue().split("\n")
    assert len(set(out[:4])) == 4  # four different draws
    assert out[4:10] == ["in g", "2.0"] * 3
    whys = [e.why for e in prog.interp.plans.values()]
    assert any("normal" in w for w in whys) and any("print" in w for w in whys)
    assert not plans(prog.interp)


def test_dopri5_is_never_replayed():
    src = ("k = 2.0\nfn rhs(t, y) = [y[1], -k * y[0]]\n"
           "fn f(a) = sum(odeint(rhs, [a, 0.0], 0.0, 1.0, method = \"dopri5\"))\n"
           "for i in range(4) { print(grad(f)(1.0 + 0.1 * float(i))) }\n")
    prog = dpl.loads(src)
    assert not plans(prog.interp)
    assert any("dopri5" in e.why for e in prog.interp.plans.values())


def test_a_constant_taken_from_a_value_stops_replay():
    """`linspace` takes its ends as numbers: such a recording is caught when two recordings differ."""
    prog = dpl.loads("fn f(x) = sum(linspace(0.0, x, 4)) * x\n")
    interp, f = prog.interp, prog.function("f")
    for x in [1.0, 2.0, 3.0, 4.0]:
        args = [np.asarray(x)]
        got = record.gradients(interp, f, args, None, wrt_args=(0,))
        assert same_result(got, fresh(interp, f, args, wrt_args=(0,)))
    (entry,) = interp.plans.values()
    assert entry.gave_up and "constant" in entry.why and not entry.plans


def test_no_replay_inside_another_recording():
    """grad inside a loss is part of the loss's recording: the outer trace must see every operation."""
    prog = dpl.loads("fn g(x) = x ^ 3\nfn f(x) = grad(g)(x) * x\n")
    for x in [1.0, 2.0, 3.0]:
        assert float(prog.grad("f")(x)) == pytest.approx(9 * x * x)
    interp = prog.interp
    inner = [k for k in interp.plans if k[0][1].obj is prog.function("g").decl]
    assert not inner


def test_max_steps_still_counts_replayed_loops():
    prog = dpl.loads("fn f(x) { for i in range(10) { x = x * 1.1 } \n return x }\n")
    interp, f = prog.interp, prog.function("f")
    record.gradients(interp, f, [np.asarray(1.0)], None, wrt_args=(0,))
    per_call = interp.steps  # 10 iterations and the call itself
    interp.max_steps = 4 * per_call + per_call // 2
    for _ in range(3):
        record.gradients(interp, f, [np.asarray(1.0)], None, wrt_args=(0,))
    assert plans(interp) and interp.steps == 4 * per_call
    with pytest.raises(dpl.DplError, match="loop"):
        record.gradients(interp, f, [np.asarray(1.0)], None, wrt_args=(0,))


# ---- replay at other inputs == a fresh recording there ----------------------------------------------------

def _perturb(v, rng):
    r = raw(v)
    if getattr(r, "dtype", None) is None or r.dtype.kind != "f":
        return v
    return (r + 0.05 * rng.standard_normal(np.shape(r)) * (1 + np.abs(r))).astype(r.dtype)


class ReplayChecker:
    """Wraps record.gradients: at every call that could be replayed, build a plan from this one recording
    (no second recording to confirm it) and replay it at perturbed arguments and parameters, comparing
    each replay with a fresh recording there. Counts what it compared."""

    def __init__(self, monkeypatch, trials=3):
        self.original, self.trials = record.gradients, trials
        self.compared = self.missed = self.skipped = 0
        self.rng = np.random.default_rng(0)
        monkeypatch.setattr(record, "gradients", self)

    def __call__(self, interp, f, args, span, **kw):
        result = self.original(interp, f, args, span, **kw)
        if graph.recording or interp.param_trace is not None or any(type(a) is graph.Box for a in args) \
                or kw.get("kwargs"):
            return result
        saved_rng = interp.rng.bit_generator.state
        wrt_args, wrt_params, check = kw.get("wrt_args", ()), kw.get("wrt_params", False), kw.get("check")
        args = [record.as_float(a) if k in wrt_args else a for k, a in enumerate(args)]
        _, rec, wrt, log = record.differentiate(interp, f, args, span, wrt_args, wrt_params, check)
        if rec.trace.tainted:
            self.skipped += 1
            interp.rng.bit_generator.state = saved_rng
            return result
        plan = replay.Plan(rec, wrt, log, wrt_params)
        saved_params = dict(interp.params)
        try:
            for _ in range(self.trials):
                new_args = [_perturb(a, self.rng) for a in args]
                interp.params.update({k: _perturb(v, self.rng) for k, v in saved_params.items()})
                steps = interp.steps
                try:
                    got = plan.run(interp, new_args)
                except replay.Miss:
                    self.missed += 1
                    continue
                interp.steps = steps
                want, rec2, _, _ = record.differentiate(interp, f, new_args, span, wrt_args, wrt_params, check)
                why = replay.Skeleton(rec).mismatch(replay.Skeleton(rec2))
                if why is not None and why.startswith("constant"):  # never replayed: the runtime finds it
                    self.skipped += 1
                    continue
                assert why is None, why  # the guards passed, so the path must be the same
                assert same_result(got, want), f"replay differs from a fresh recording in {getattr(f, 'name', f)}"
                self.compared += 1
        finally:
            interp.params.clear()
            interp.params.update(saved_params)
            interp.rng.bit_generator.state = saved_rng
        return result


CONFORMANCE_PROGRAMS = sorted(p for p in CONFORMANCE.glob("*.dpl") if p.with_suffix(".out").exists())


@pytest.mark.parametrize("path", CONFORMANCE_PROGRAMS, ids=lambda p: p.stem)
def test_conformance_programs_replay_like_fresh_recordings(path, monkeypatch):
    plain = io.StringIO()
    monkeypatch.setattr(replay, "enabled", False)
    dpl.loads(path.read_text(), str(path), stdout=plain)
    monkeypatch.setattr(replay, "enabled", True)
    checker = ReplayChecker(monkeypatch)
    out = io.StringIO()
    dpl.loads(path.read_text(), str(path), stdout=out)
    assert out.getvalue() == plain.getvalue()
    if (path.with_suffix(".train.out")).exists():
        from dpl.train import Trainer
        out2 = io.StringIO()
        from dpl.interp import Interpreter
        interp = Interpreter(mode="train", stdout=out2, trainer=Trainer(progress=False))
        interp.run_file(path)
        assert out2.getvalue()
    assert checker.compared + checker.missed + checker.skipped > 0 or "grad" not in path.read_text()


SECOND_ORDER_AND_PRIMITIVES = {
    "second_order": ("fn g(x) = sum(relu(x) ^ 3 + abs(x) * x)\nfn f(x) = sum(grad(g)(x) ^ 2)\n",
                     "f", [[0.5, -1.0, 2.0]]),
    "ties_and_clip": ("fn f(x) = sum(max(x, axis = 0)) + sum(clip(x, -0.5, 0.5) ^ 2) + sum(max(x, 0.1))\n",
                      "f", [[[0.3, -1.0], [0.9, 0.2]]]),
    "where_and_masks": ("fn f(x) = sum(where(x > 0, x ^ 2, -x)) + sum(x % 0.7)\n", "f", [[0.5, -1.0, 2.0]]),
    "soft_if_while": ("fn f(x) {\n  soft if sigmoid(x) { y = x ^ 2 } else { y = -x }\n"
                      "  z = x\n  soft while sigmoid(z) max 4 { z = z * 0.5 }\n  return y + z\n}\n",
                      "f", [0.7]),
    "attention": ("fn f(q) {\n  K = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]\n  V = [[1.0], [2.0], [3.0]]\n"
                  "  return sum(attend(q, K, V, score = \"cosine\"))\n}\n", "f", [[0.3, 0.8]]),
    "memory": ("fn f(k) {\n  M = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]\n  w = address(M, k, 2.0)\n"
               "  M2 = write(M, w, [0.5, 0.5], [1.0, -1.0])\n  return sum(read(M2, k, 3.0))\n}\n", "f", [[0.3, 0.8]]),
    "odeint_rk4": ("fn rhs(t, y) = [y[1], -4.0 * sin(y[0])]\n"
                   "fn f(a) = sum(odeint(rhs, [a, 0.0], 0.0, 1.0, steps = 20) ^ 2)\n", "f", [0.4]),
    "sparse": ("A = csr([1.0, 2.0, 3.0], [0, 2, 1], [0, 2, 3], [2, 3])\nfn f(x) = sum(tanh(A @ x))\n",
               "f", [[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]]),
    "taylor": (TAYLOR, "s", [1.0]),
    "broadcasting": ("fn f(x) {\n  y = [[1.0], [2.0]] * x[0, :]\n"
                     "  z = (x + y) * (x - y[0]) / (y * 2.0 + 3.0) - x / y + exp(x) * sin(x) + cos(x) * tanh(x)\n"
                     "  w = sqrt(abs(x) + 1.0) + log(abs(x) + 2.0) - [1.0, 2.0, 3.0] / x - 2.0 * -x\n"
                     "  return sum(z + w) + sum(x, axis = 0)[1] + sum(sum(x ^ 2, axis = 1, keepdims = true))\n}\n",
                     "f", [[[0.5, -1.0, 2.0], [1.5, 0.7, -0.3]]]),
    "matmul": ("fn f(x) {\n  W = [[1.0, 2.0], [0.5, -1.0], [0.3, 0.2]]\n  h = tanh(x @ W)\n"
               "  B = stack([x, 2.0 * x], axis = 0)\n  C = B @ transpose(B, [0, 2, 1])\n"
               "  return sum(h) + sum(B @ W) + sum(transpose(x, [1, 0]) @ x) + sum(C @ B) + sum(x[0] @ W)\n}\n",
               "f", [[[0.5, -1.0, 2.0], [1.5, 0.7, -0.3]]]),
    "complex": ("fn f(x) {\n  z = exp(1j * x) * [1.0, 2j, 1.0 - 1j] + x * x / (1j + x)\n"
                "  F = fft(z) + ifft(x, n = 4)[1:] * 2j\n  A = [[1.0, 1j, 0.0], [0.5j, 1.0, 2.0], [0.0, -1j, 1.0]]\n"
                "  k = kron([1.0, 1j], einsum(\"ij,j->i\", A, conj(F)))\n"
                "  return sum(abs(F) ^ 2) + real(sum(A @ z)) + imag(mean(k)) + sum(angle(z))"
                " + sum(irfft(rfft(x) * 1j, n = 3))\n}\n",
                "f", [[0.5, -1.0, 2.0]]),
    "complex_second_order": ("fn g(x) = sum(abs(fft(x * exp(1j * x))) ^ 2)\nfn f(x) = sum(grad(g)(x) ^ 2)\n",
                             "f", [[0.5, -1.0, 2.0, 0.3]]),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_AND_PRIMITIVES))
def test_replay_at_other_inputs_matches_fresh_recordings(name, monkeypatch):
    src, fn, args = SECOND_ORDER_AND_PRIMITIVES[name]
    prog = dpl.loads(src)
    checker = ReplayChecker(monkeypatch, trials=6)
    prog.grad(fn)(*args)
    assert checker.compared >= 3, (checker.compared, checker.missed, checker.skipped)


# random programs: expressions over the elementwise ops, reductions and hard/soft branches
UNARY = ["sin", "cos", "tanh", "exp", "sigmoid", "relu", "abs", "softplus", "sqrt"]


@st.composite
def expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()) and depth < 3:
        return draw(st.sampled_from(["x", "y", "0.5", "x[0]", "sum(x)"]))
    kind = draw(st.sampled_from(["un", "bin", "where", "max", "pow"]))
    a = draw(expressions(depth - 1))
    if kind == "un":
        f = draw(st.sampled_from(UNARY))
        return f"{f}(abs({a}) + 0.1)" if f == "sqrt" else f"{f}({a})"
    b = draw(expressions(depth - 1))
    if kind == "bin":
        return f"({a} {draw(st.sampled_from(['+', '-', '*']))} {b})"
    if kind == "where":
        return f"where({a} > {b}, {a}, {b})"
    if kind == "max":
        return f"max({a}, {b})"
    return f"({a}) ^ {draw(st.sampled_from(['2', '3', '0']))}"


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=expressions(), branch=st.booleans(), order2=st.booleans())
def test_random_programs_replay_like_fresh_recordings(body, branch, order2, monkeypatch):
    src = f"fn h(x, y) = sum({body})\n"
    if branch:
        src = (f"fn h(x, y) {{\n  if sum(x) > 0.3 {{ return sum({body}) }}\n"
               f"  soft if sigmoid(sum(x)) {{ r = sum({body}) }} else {{ r = sum(x) }}\n  return r\n}}\n")
    src += "fn f(x) = sum(grad(h)(x, 0.7) ^ 2)\n" if order2 else "fn f(x) = h(x, 0.7)\n"
    prog = dpl.loads(src)
    checker = ReplayChecker(monkeypatch, trials=4)
    prog.grad("f")(np.array([0.3, -0.8, 1.1]))
    assert checker.compared + checker.missed + checker.skipped == 4


# ---- whole runs: replay on and off give identical files and output ---------------------------------------

EXAMPLES = ["cannon.dpl", "taylor_sin.dpl", "hello.dpl"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_training_with_and_without_replay_is_bit_identical(example, tmp_path):
    outs = []
    for flag in ([], ["--no-replay"]):
        out = tmp_path / f"p{len(outs)}.npz"
        r = subprocess.run([sys.executable, "-m", "dpl.cli", "train", str(ROOT / "examples" / example), "--quiet",
                            "--epochs", "3", "--out", str(out), *flag], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs.append((r.stdout.replace(str(out), "OUT"), dict(np.load(out)) if out.exists() else {}))
    (s1, p1), (s2, p2) = outs
    assert s1 == s2
    assert p1.keys() == p2.keys() and all(p1[k].tobytes() == p2[k].tobytes() for k in p1)


def test_conformance_runner_output_with_no_replay(tmp_path):
    for path in CONFORMANCE_PROGRAMS:
        runs = [subprocess.run([sys.executable, "-m", "dpl.cli", "run", str(path), *flag],
                               capture_output=True, text=True, timeout=300) for flag in ([], ["--no-replay"])]
        assert runs[0].stdout == runs[1].stdout and runs[0].returncode == runs[1].returncode == 0, path.name


# ---- every kernel a plan writes inline is its op, bit for bit -----------------------------------------------

class _Interp:
    """What Plan.run reads of an interpreter."""
    params, globals, steps, max_steps = {}, {}, 0, 10 ** 9


def _inline_cases():
    from dpl import ops
    r = np.random.default_rng(3)
    pos = lambda *s: r.uniform(0.5, 2.0, s)  # noqa: E731
    real = lambda *s: r.standard_normal(s)  # noqa: E731
    binary = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (3,)), ((3,), ())]
    cases = []
    for name in ["add", "sub", "mul", "div"]:
        cases += [(name, getattr(ops, name), [pos(*a), pos(*b)], {}) for a, b in binary]
    cases += [(f.name, f, [pos(2, 3)], {}) for f in (ops.neg, ops.exp, ops.log, ops.sin, ops.cos, ops.tanh,
                                                     ops.sqrt, ops.sigmoid, ops.softplus)]
    cases += [(f.name, f, [real(2, 3)], {}) for f in (ops.abs_, ops.relu)]
    cases += [("pow", ops.power, [pos(2, 3), 3.0], {}), ("pow", ops.power, [pos(2, 3), pos(3)], {}),
              ("pow", ops.power, [pos(3), np.array([2.0, 0.0, 1.5])], {})]
    cases += [("matmul", ops.matmul, [real(*a), real(*b)], {})
              for a, b in [((2, 3), (3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((1, 2, 3), (5, 3, 2))]]
    cases += [("index", ops.index, [real(4, 3)], {"key": (slice(1, 3), 0)}),
              ("index", ops.index, [real(4, 3)], {"key": np.array([0, 2, 2])}),
              ("sum", ops.sum_, [real(4, 3)], {"axis": 0}), ("sum", ops.sum_, [real(4, 3)], {}),
              ("sum", ops.sum_, [real(4, 3, 2)], {"axis": (0, 2), "keepdims": True}),
              ("stack", ops.stack, [real(2, 3), real(2, 3)], {"axis": 1}),
              ("stack", ops.stack, [real(2, 3), real(2, 3)], {"axis": -1})]
    return cases


@pytest.mark.parametrize("case", _inline_cases(), ids=lambda c: c[0])
def test_inlined_kernels_and_vjps_equal_the_ops(case):
    from dpl.autodiff import backward
    from dpl.graph import Trace
    name, op, args, attrs = case
    trace = Trace()
    boxes = [trace.input(np.asarray(a), f"a{k}") if np.ndim(a) or k == 0 else a for k, a in enumerate(args)]
    y = op(*boxes, **attrs)
    w = np.random.default_rng(1).standard_normal(np.shape(raw(y)))
    from dpl import ops
    out = ops.sum_(ops.mul(y, w))
    wrt = [b for b in boxes if type(b) is graph.Box]
    log = []
    want = backward(trace, out, wrt, log=log)
    rec = record.Recording(trace, out, boxes, {}, {}, 0)
    plan = replay.Plan(rec, wrt, log, False)
    inputs = [raw(b) for b in boxes]
    value, adj, _ = plan.run(_Interp(), inputs)
    assert same(value, out.value)
    assert all(same(a, b) for a, b in zip(adj, want)), plan.source
    inlined = name != "pow" or (np.ndim(args[1]) == 0 and type(boxes[1]) is not graph.Box)
    rules = re.findall(r"R(\d+)_\d+\(", plan.source)  # VJP rules called rather than inlined
    assert set(rules) <= {str(len(trace.inputs) + len(trace.nodes) - 1)} or not inlined, plan.source  # but sum's


def test_closures_see_their_variables_as_they_are_when_called():
    """A closure's variables are read from a frame older than the recording: rebinding them misses the plan."""
    src = ("fn outer(x) {\n  k = 1.0\n  fn f(y) = k * y ^ 2\n  out = []\n"
           "  for i in range(4) {\n    k = float(i)\n    out = append(out, grad(f)(x))\n  }\n  return out\n}\n"
           "print(outer(3.0))\n"
           "fn make(c) = fn(y) = c * y ^ 3\ng2 = make(2.0)\ng5 = make(5.0)\n"
           "for i in range(3) { print(grad(g2)(1.0), grad(g5)(1.0)) }\n")
    prog = dpl.loads(src)
    lines = prog.interp.stdout.getvalue().splitlines()
    assert lines[0] == "[0.0, 6.0, 12.0, 18.0]"
    assert lines[1:] == ["6.0 15.0"] * 3


def test_closure_inside_a_training_loss_replays(tmp_path):
    src = ("param k: [] = 0.5\ny0 = [1.0, 0.0]\n"
           "fn loss() {\n  fn rhs(t, y) = [y[1], -k * y[0]]\n"
           "  return sum((odeint(rhs, y0, 0.0, 1.0, steps = 10) - [0.5, -0.8]) ^ 2)\n}\n"
           "train loss {\n  optimizer = sgd(lr = 0.1)\n  epochs = 6\n}\nprint(k)\n")
    path = tmp_path / "c.dpl"
    path.write_text(src)
    outs = []
    for flag in ([], ["--no-replay"]):
        r = subprocess.run([sys.executable, "-m", "dpl.cli", "train", str(path), "--quiet", "--out",
                            str(tmp_path / "o.npz"), *flag], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1]


def test_classification_minibatches_replay_and_bad_labels_are_still_refused():
    """cross_entropy's one-hot is recorded from the labels (minibatch inputs), so a plan serves every batch;
    its range check is a guard, so a batch with a label out of range records again and is refused."""
    src = ("param W: [4, 3] ~ glorot\nfn loss(x, y) = cross_entropy(x @ W, y)\n")
    prog = dpl.loads(src)
    interp, f = prog.interp, prog.function("loss")
    rng = np.random.default_rng(0)
    for step in range(6):
        args = [rng.standard_normal((8, 4)), rng.integers(0, 3, 8)]
        got = record.gradients(interp, f, args, None, wrt_params=True)
        assert same_result(got, fresh(interp, f, args, wrt_params=True))
    assert plans(interp) and not any(e.gave_up for e in interp.plans.values())
    bad = [rng.standard_normal((8, 4)), np.array([0, 1, 2, 3, 0, 1, 2, 0])]
    with pytest.raises(dpl.DplError, match="labels must lie in 0..2"):
        record.gradients(interp, f, bad, None, wrt_params=True)
