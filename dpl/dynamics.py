"""Dynamics: `odeint` (fixed steps, adaptive dopri5, per-row end times, `ts` grids, events, the adjoint method)
and `sdeint` (Euler–Maruyama, Milstein).

Taped solves are composed from ops, so their gradients are those of the discrete scheme and differentiate again.
Two parts take values off the tape on purpose: an event's time is located on plain values and gets its gradient
from the implicit-function theorem, and `adjoint = true` solves forward untaped and runs the backward pass as one
op whose VJP integrates the augmented system [y, a, ∫ a·∂f/∂θ] from t1 back to t0 (Chen et al. 2018).

Adaptive and event solves work in normalised time s ∈ [0, 1], t = t0 + (t1 − t0)·s, so that one step size serves
every row of a batch however its interval is set, and y depends on t0 and t1 through ops.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as B
from . import graph, ops
from .autodiff import backward
from .builtins import builtin, flag, floats, integer, tensor
from .errors import DplError
from .graph import Box, Trace, raw
from .interp import describe_type, is_function, kind
from .limits import check_elements

# Butcher tableaus: a (rows of the lower triangle), b (weights), c (nodes)
TABLEAUS = {
    "euler": ([], [1.0], [0.0]),
    "midpoint": ([[0.5]], [0.0, 1.0], [0.0, 0.5]),
    "rk4": ([[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0.0, 0.5, 0.5, 1.0]),
    # Dormand–Prince 5(4): b is the 5th-order solution
    "dopri5": ([[1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
                [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
                [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
                [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]],
               [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
               [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]),
}
_DP_E = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]  # b − b* (the error estimate)
MAX_ADAPTIVE_STEPS = 100000


def _host(v):
    return np.asarray(B.to_host(raw(v)))


def _combo(y, h, coeffs, ks):
    """y + h · Σ cᵢ kᵢ over the nonzero coefficients."""
    acc = None
    for c, k in zip(coeffs, ks):
        if c:
            term = ops.mul(c, k)
            acc = term if acc is None else ops.add(acc, term)
    return y if acc is None else ops.add(y, ops.mul(h, acc))


def _stages(rhs, t, y, h, tableau):
    """The stages kᵢ = f(t + cᵢh, y + h Σ aᵢⱼkⱼ) of one explicit Runge–Kutta step (h may be one per row)."""
    a, _, c = tableau
    ks = [rhs(t, y)]
    for row, ci in zip(a, c[1:]):
        ks.append(rhs(ops.add(t, ops.mul(ci, h)), _combo(y, h, row, ks)))
    return ks


def _step(rhs, t, y, h, tableau):
    ks = _stages(rhs, t, y, h, tableau)
    return _combo(y, h, tableau[1], ks), ks


def _error_ratio(h, ks, y, y_new, rtol, atol, rows=None):
    """The RMS of dopri5's error estimate over atol + rtol·|y|, on plain values (no nodes); `rows` masks states."""
    err = np.asarray(h) * sum(e * _host(k) for e, k in zip(_DP_E, ks) if e)
    scale = atol + rtol * np.maximum(np.abs(_host(y)), np.abs(_host(y_new)))
    q = (err / scale) ** 2
    if rows is not None:
        q = np.broadcast_to(q, np.broadcast_shapes(q.shape, rows.shape))[np.broadcast_to(rows, q.shape)]
    return float(np.sqrt(np.mean(q))) if np.size(q) else 0.0


def _next_step(h, ratio):
    factor = 0.9 * (1.0 / ratio) ** 0.2 if ratio > 0 else 5.0
    return h * min(5.0, max(0.2, factor))


class _Rhs:
    """f(t, y) through the interpreter, checked to return dy/dt shaped like y."""

    def __init__(self, interp, span, f, shape, what="the ODE function"):
        self.interp, self.span, self.f, self.shape, self.what = interp, span, f, shape, what

    def __call__(self, t, y):
        dy = self.interp.call(self.f, [t, y], {}, self.span)
        if kind(dy) not in ("f", "i", "u"):
            raise DplError(f"{self.what} must return a tensor shaped like y, got {describe_type(dy)}")
        dy = floats(dy)
        if np.shape(raw(dy)) != self.shape:
            try:
                ok = np.broadcast_shapes(np.shape(raw(dy)), self.shape) == self.shape
            except ValueError:
                ok = False
            if not ok:
                raise DplError(f"{self.what} must return a tensor shaped like y {list(self.shape)}, "
                               f"got shape {list(np.shape(raw(dy)))}")
            dy = ops.broadcast_to(dy, shape=self.shape)
        return dy


class _ParamValues:
    """Context: the functions called read parameters from `values` (name → value) instead of the recording's
    inputs; a parameter read beyond those becomes an input of a private trace (`extra` names it)."""

    def __init__(self, interp, values):
        self.interp, self.values = interp, values

    def __enter__(self):
        i = self.interp
        self.saved = (i.param_trace, i.param_boxes)
        self.trace = Trace()
        i.param_trace, i.param_boxes = self.trace, dict(self.values)
        self.boxes = i.param_boxes
        return self

    def __exit__(self, *exc):
        self.interp.param_trace, self.interp.param_boxes = self.saved

    @property
    def extra(self):
        return [name for name in self.boxes if name not in self.values]


def _untraced(interp):
    """Parameters as plain arrays: for evaluations whose nodes nobody differentiates (event location)."""
    return _ParamValues(interp, interp.params)


def _check_times(t0, t1, yshape, what="`odeint`"):
    """t0 and t1 are numbers, or one time per trajectory: shaped like y0 with its last axis 1 ([B, 1] for [B, d])."""
    per_row = yshape[:-1] + (1,) if yshape else ()
    for name, t in (("t0", t0), ("t1", t1)):
        ts = np.shape(raw(t))
        try:
            ok = len(ts) <= len(per_row) and np.broadcast_shapes(ts, per_row) == per_row
        except ValueError:
            ok = False
        if not ok:
            rows = f" or one per trajectory shaped {list(per_row)}" if len(yshape) > 1 else ""
            raise DplError(f"{what}: `{name}` must be a number{rows}, got shape {list(ts)} for y0 of shape "
                           f"{list(yshape)}")


# ---- taped solves ------------------------------------------------------------------------------------------


def _fixed(rhs, y, t0, t1, steps, method):
    tableau = TABLEAUS[method]
    h = ops.div(ops.sub(t1, t0), float(steps))
    for n in range(steps):
        y = _step(rhs, ops.add(t0, ops.mul(h, float(n))), y, h, tableau)[0]
    return y


def _dopri5(interp, span, rhs, y, t0, t1, steps, rtol, atol):
    """Adaptive Dormand–Prince: step sizes are hard decisions on values; gradients flow through accepted steps."""
    graph.taint("`odeint` with dopri5, whose step sizes are chosen from values")
    tableau = TABLEAUS["dopri5"]
    span_t = ops.sub(t1, t0)
    d = _host(span_t)
    s, h, taken = 0.0, 1.0 / steps, 0
    while s < 1 - 1e-12:
        if taken > MAX_ADAPTIVE_STEPS:
            raise DplError(f"dopri5 took more than {MAX_ADAPTIVE_STEPS} steps; loosen rtol/atol")
        interp.add_steps(1, f"`odeint` with dopri5 would take its step {taken + 1}", span)
        h = min(h, 1.0 - s)
        y_new, ks = _step(rhs, ops.add(t0, ops.mul(span_t, s)), y, ops.mul(span_t, h), tableau)
        ratio = _error_ratio(h * d, ks, y, y_new, rtol, atol)
        taken += 1
        if ratio <= 1.0:
            y, s = y_new, s + h
        h = _next_step(h, ratio)
    return y


# ---- events --------------------------------------------------------------------------------------------------


class _Event:
    """g(t, y) through the interpreter, checked to return one value per trajectory (shape `batch`)."""

    def __init__(self, interp, span, g, batch):
        self.interp, self.span, self.g, self.batch = interp, span, g, batch

    def __call__(self, t, y):
        v = self.interp.call(self.g, [t, y], {}, self.span)
        if kind(v) not in ("f", "i", "u"):
            raise DplError(f"the `event` function must return a number per trajectory, got {describe_type(v)}")
        v = floats(v)
        s = np.shape(raw(v))
        if s == self.batch + (1,):
            v = ops.reshape(v, shape=self.batch)
        elif s != self.batch:
            want = f"one value per trajectory, shaped {list(self.batch)}" if self.batch else "a number"
            raise DplError(f"the `event` function must return {want}, got shape {list(s)}")
        return v


def _locate(step_to, event_at, ref, rows, h, g_lo, g_hi, dtype):
    """Where each of `rows` crosses zero within (0, h] of normalised time, on plain values: regula falsi with
    the Illinois modification (superlinear, and the bracket always holds the root)."""
    lo, hi = np.zeros_like(g_lo), np.full_like(g_hi, h)
    g_lo, g_hi = np.where(rows, g_lo, 1.0), np.where(rows, g_hi, -1.0)
    ref = np.where(rows, ref, 1.0)
    kept = np.zeros(np.shape(rows), dtype=int)  # which end stayed last time: -1 lo, +1 hi
    x = hi.copy()
    tol = 4 * np.finfo(dtype).eps
    for _ in range(100):
        x = np.clip(lo - g_lo * (hi - lo) / (g_hi - g_lo), lo, hi)
        gx = np.where(rows, event_at(x, step_to(x)), 0.0)
        below = np.sign(gx) == ref                  # still on the starting side: the root lies above x
        g_hi = np.where(below & (kept == 1), g_hi / 2, g_hi)
        g_lo = np.where(~below & (kept == -1), g_lo / 2, g_lo)
        lo, g_lo = np.where(below, x, lo), np.where(below, gx, g_lo)
        hi, g_hi = np.where(below, hi, x), np.where(below, g_hi, gx)
        kept = np.where(below, 1, -1)
        if np.all(~rows | (hi - lo <= tol) | (gx == 0)):
            break
    return np.where(rows, x, 0.0)


def _event_solve(interp, span, rhs, event, y0, t0, t1, steps, method, rtol, atol):
    """Integrate every trajectory until event(t, y) changes sign; (t_event [batch], y at the event [..y0])."""
    graph.taint("`odeint` with an `event`, whose stopping time is located from values")
    tableau, adaptive = TABLEAUS[method], method == "dopri5"
    yshape = np.shape(raw(y0))
    batch = yshape[:-1]
    col = batch + (1,) if yshape else ()
    dtype = raw(y0).dtype
    G = _Event(interp, span, event, batch)
    span_t = ops.sub(t1, t0)
    d, t0_raw = _host(span_t), _host(t0)

    def at(tau):
        """Per-trajectory values [batch] as a column against y [batch, d] (host masks moved to the device)."""
        tau = B.xp.asarray(tau) if isinstance(tau, np.ndarray) else tau
        return ops.reshape(tau, shape=col) if yshape else tau

    with _untraced(interp):
        g_prev = _host(G(raw(t0), raw(y0)))
    ref = np.sign(g_prev)  # the side each trajectory starts on; a start exactly on zero takes its first step's
    done = np.zeros(batch, dtype=bool)
    t_event = B.xp.zeros(batch, dtype=dtype)
    y, s, h, taken = y0, 0.0, 1.0 / steps, 0
    while not done.all():
        if s >= 1 - 1e-12:
            left = [int(i[0]) if len(batch) == 1 else [int(j) for j in i] for i in np.argwhere(~done)]
            which = (f"trajectory {left[0]} (of {done.size}) does" if len(left) == 1 else
                     f"{len(left)} trajectories (of {done.size}; the first is {left[0]}) do") if batch else "it does"
            raise DplError(f"`odeint`: the `event` function does not cross zero between t0 and t1: {which} not "
                           f"reach the event in time; raise t1 or check the event function")
        if adaptive and taken > MAX_ADAPTIVE_STEPS:
            raise DplError(f"dopri5 took more than {MAX_ADAPTIVE_STEPS} steps; loosen rtol/atol")
        interp.add_steps(1, f"`odeint` with an event would take its step {taken + 1}", span)
        taken += 1
        h = min(h, 1.0 - s)
        t_k = ops.add(t0, ops.mul(span_t, s))
        y_new, ks = _step(rhs, t_k, y, ops.mul(span_t, h), tableau)
        if adaptive:
            ratio = _error_ratio(h * d, ks, y, y_new, rtol, atol, rows=~np.reshape(done, col))
            if ratio > 1.0:
                h = _next_step(h, ratio)
                continue
        y_new = ops.where(at(done), y, y_new)  # stopped trajectories stay at their event
        with _untraced(interp):
            g_new = _host(G(B.xp.asarray(t0_raw + d * (s + h), dtype=dtype), raw(y_new)))
        crossed = ~done & (ref != 0) & (np.sign(g_new) != ref)
        ref = np.where(~done & (ref == 0), np.sign(g_new), ref)
        if crossed.any():
            sigma = _crossing(interp, rhs, G, tableau, t0_raw, d, s, y, ref, crossed, h, g_prev, g_new, at, dtype)
            y_new, t_hit = _crossing_step(rhs, G, tableau, t0, span_t, s, y, h, sigma, crossed, done, at, interp)
            t_event = ops.where(B.xp.asarray(crossed), t_hit, t_event)
            done = done | crossed
        y, s, g_prev = y_new, s + h, g_new
        if adaptive:
            h = _next_step(h, ratio)
    return t_event, y


def _crossing(interp, rhs, G, tableau, t0, d, s, y, ref, rows, h, g_lo, g_hi, at, dtype):
    """The normalised time σ ∈ (0, h] after s at which each crossing row meets the event, on plain values: one
    step of the solver's own method from the step's start gives y there (accurate to the method's order)."""
    t_k, y_k = B.xp.asarray(t0 + d * s, dtype=dtype), raw(y)
    d = B.xp.asarray(d, dtype=dtype)
    with _untraced(interp):
        def step_to(x):
            return raw(_step(rhs, t_k, y_k, d * at(B.xp.asarray(x, dtype=dtype)), tableau)[0])

        def event_at(x, y_x):
            return _host(G(t_k + d * at(B.xp.asarray(x, dtype=dtype)), y_x))

        return _locate(step_to, event_at, ref, rows, h, g_lo, g_hi, dtype)


def _crossing_step(rhs, G, tableau, t0, span_t, s, y, h, sigma, rows, done, at, interp):
    """The step that ends each crossing row at its event, with σ made differentiable by the implicit-function
    theorem: σ_c = σ − (G − G₀)/∂G/∂σ has σ's value and the derivative −(∂G/∂θ)/(∂G/∂σ) for everything θ the
    event value G = g(t(σ), y(σ)) depends on (y0, t0, t1, parameters). Other rows take the full step h."""
    t_k = ops.add(t0, ops.mul(span_t, s))
    sig = B.xp.asarray(sigma, dtype=raw(y).dtype)
    h_sig = ops.mul(span_t, at(sig))
    y_sig = _step(rhs, t_k, y, h_sig, tableau)[0]
    g_sig = G(ops.add(t_k, h_sig), y_sig)
    slope = _event_slope(interp, rhs, G, tableau, raw(t_k), _host(span_t), raw(y), sig, at)
    rows = B.xp.asarray(rows)
    slope = B.xp.where(rows, slope, 1.0)
    sig_c = ops.sub(sig, ops.div(ops.sub(g_sig, ops.stop_gradient(g_sig)), slope))
    frac = ops.where(rows, sig_c, h)
    y_new = _step(rhs, t_k, y, ops.mul(span_t, at(frac)), tableau)[0]
    y_new = ops.where(at(done), y, y_new)
    t_hit = ops.add(t0, ops.mul(span_t, ops.add(s, at(sig_c))))
    return y_new, ops.reshape(t_hit, shape=np.shape(sig))


def _event_slope(interp, rhs, G, tableau, t_k, d, y_k, sig, at):
    """∂G/∂σ per row at the crossing, by differentiating one step of the method on plain values (rows are
    independent trajectories, so the gradient of Σ G holds each row's own derivative)."""
    trace = Trace()
    sb = trace.input(sig, "sigma")
    with _untraced(interp):
        h = ops.mul(B.xp.asarray(d, dtype=sig.dtype), at(sb))
        g = G(ops.add(t_k, h), _step(rhs, t_k, y_k, h, tableau)[0])
    if type(g) is not Box or g.trace is not trace:
        return B.xp.zeros_like(sig)
    slope = backward(trace, ops.sum_(g), [sb])[0]
    return B.xp.zeros_like(sig) if slope is None else raw(slope)


# ---- the adjoint method ---------------------------------------------------------------------------------------


def _rk_tuple(F, s, z, h, tableau):
    """One Runge–Kutta step of z' = F(s, z) for a tuple of arrays z: (z after the step, stages)."""
    a, b, c = tableau
    ks = [F(s, z)]
    for row, ci in zip(a, c[1:]):
        ks.append(F(s + ci * h, tuple(_combo(zj, h, row, [k[j] for k in ks]) for j, zj in enumerate(z))))
    return tuple(_combo(zj, h, b, [k[j] for k in ks]) for j, zj in enumerate(z)), ks


def _integrate(interp, span, F, z, s0, s1, steps, method, rtol, atol, checked):
    """z(s1) from z(s0) for z' = F(s, z): `steps` fixed steps, or dopri5 from an initial step (s1 − s0)/steps
    with its error measured on the components `checked`."""
    tableau = TABLEAUS[method]
    length = s1 - s0
    if method != "dopri5":
        interp.add_steps(steps, f"`odeint(adjoint = true)` would take {steps} steps", span)
        h = length / steps
        for n in range(steps):
            z = _rk_tuple(F, s0 + n * h, z, h, tableau)[0]
        return z
    done, h, taken = 0.0, length / steps, 0
    while abs(done) < abs(length) * (1 - 1e-12):
        if taken > MAX_ADAPTIVE_STEPS:
            raise DplError(f"dopri5 took more than {MAX_ADAPTIVE_STEPS} steps; loosen rtol/atol")
        interp.add_steps(1, f"`odeint(adjoint = true)` with dopri5 would take its step {taken + 1}", span)
        taken += 1
        h = min(abs(h), abs(length - done)) * math.copysign(1.0, length)
        z_new, ks = _rk_tuple(F, s0 + done, z, h, tableau)
        ratio = max(_error_ratio(abs(h), [k[j] for k in ks], z[j], z_new[j], rtol, atol) for j in checked)
        if ratio <= 1.0:
            z, done = z_new, done + h
        h = _next_step(h, ratio)
    return z


class _AdjointSolve(ops.Op):
    """y(t1) = odeint(f, y0, t0, t1) as one op whose VJP is the adjoint method. It holds the function and the
    names of the parameters it reads, so it is made per call and kept out of ops.REGISTRY (whose ops are pure
    functions of their inputs); a recording holding it is tainted, as replay cannot run DPL code inside a plan.

    The backward pass writes ẏ = D f(t0 + D s, y), ȧ = −a·∂(Df)/∂y, ġ_p = −a·∂(Df)/∂p for p in t0, D = t1 − t0
    and the parameters, integrated from s = 1 to 0 in ops: on plain values nothing is recorded (O(1) memory in
    the number of steps); when the adjoint seed is itself traced (a gradient of a gradient) the outer recording
    tapes it, so second order stays exact."""

    def __init__(self, interp, span, rhs, names, method, steps, rtol, atol):
        self.name, self.fwd, self.vjps = "odeint_adjoint", self._forward, self._rule
        self.interp, self.span, self.rhs, self.names = interp, span, rhs, names
        self.method, self.steps, self.rtol, self.atol = method, steps, rtol, atol
        self._last = None  # (seed, adjoints): one augmented solve serves every input of a backward pass

    @staticmethod
    def _plain(v, reading, plain=True):
        """v, refused if the function read a parameter the first evaluation did not (or, when `plain`, if v is
        traced at all: the forward solve runs on plain values, so a traced result came from elsewhere)."""
        extra = reading.extra
        if extra or (plain and type(v) is Box):
            why = (f"it read parameter{'s' * (len(extra) > 1)} {', '.join(f'`{n}`' for n in extra)} only after "
                   f"its first evaluation") if extra else "it uses a traced value that is neither t, y nor a parameter"
            raise DplError(f"`odeint(adjoint = true)`: the ODE function must depend on traced values only through "
                           f"t, y and the parameters it reads, but {why}; carry such values in the state y (with "
                           f"zero derivative), or use the taped solve (adjoint = false)")
        return v

    def _forward(self, y0, t0, t1, *thetas):
        span_t = t1 - t0
        with _ParamValues(self.interp, dict(zip(self.names, thetas))) as reading:
            def F(s, z):
                return (span_t * self._plain(self.rhs(t0 + span_t * s, z[0]), reading),)
            return _integrate(self.interp, self.span, F, (y0,), 0.0, 1.0, self.steps, self.method, self.rtol,
                              self.atol, (0,))[0]

    def _rule(self, i):
        def rule(g, ans, y0, t0, t1, *thetas):
            if self._last is None or self._last[0] is not g:
                self._last = (g, self._backward(g, ans, t0, t1, thetas))
            return self._last[1][i]
        return rule

    def _augmented(self, t0, span_t, thetas):
        def F(s, z):
            y, a = z[0], z[1]
            trace = Trace()
            yb, t0b, db = trace.input(y, "y"), trace.input(t0, "t0"), trace.input(span_t, "t1 - t0")
            pb = [trace.input(v, n) for v, n in zip(thetas, self.names)]
            with _ParamValues(self.interp, dict(zip(self.names, pb))) as reading:
                dy = ops.mul(db, self.rhs(ops.add(t0b, ops.mul(db, s)), yb))
            self._plain(dy, reading, plain=False)
            wrt = [yb, t0b, db] + pb
            if type(dy) is Box and dy.trace is trace:
                adj = backward(trace, dy, wrt, seed=a)
                dy = dy.value
            else:
                adj = [None] * len(wrt)
            return (dy,) + tuple(B.xp.zeros(np.shape(raw(w)), dtype=raw(y).dtype) if v is None else ops.neg(v)
                                 for v, w in zip(adj, wrt))
        return F

    def _backward(self, g, y1, t0, t1, thetas):
        span_t = ops.sub(t1, t0)
        dtype = raw(y1).dtype
        zero = [B.xp.zeros(np.shape(raw(v)), dtype=dtype) for v in (t0, span_t, *thetas)]
        z = _integrate(self.interp, self.span, self._augmented(t0, span_t, thetas), (y1, g, *zero), 1.0, 0.0,
                       self.steps, self.method, self.rtol, self.atol, (0, 1))
        g_t0, g_span = z[2], z[3]
        return [z[1], ops.sub(g_t0, ops.unbroadcast(g_span, np.shape(raw(t0)))),
                ops.unbroadcast(g_span, np.shape(raw(t1)))] + list(z[4:])


def _adjoint(interp, span, rhs, y0, t0, t1, steps, method, rtol, atol):
    """Find the parameters f reads (one evaluation with each read made an input of a private trace), then solve."""
    graph.taint("`odeint(adjoint = true)`, whose backward pass runs the ODE function again")
    state = interp.rng.bit_generator.state
    with _ParamValues(interp, {}) as reading:
        out = rhs(raw(t0), raw(y0))
    if interp.rng.bit_generator.state != state:
        raise DplError("`odeint(adjoint = true)`: the ODE function draws random numbers, so the backward pass "
                       "would see other draws than the forward solve; use the taped solve (adjoint = false)")
    names = list(reading.boxes)
    v = out.value if type(out) is Box and out.trace is reading.trace else out
    if type(v) is Box:
        raise DplError("`odeint(adjoint = true)`: the ODE function must depend on traced values only through t, "
                       "y and the parameters it reads, but it uses a traced value that is neither t, y nor a "
                       "parameter (a variable it closes over?); carry such values in the state y (with zero "
                       "derivative), or use the taped solve (adjoint = false)")
    op = _AdjointSolve(interp, span, rhs, names, method, steps, rtol, atol)
    return op(y0, t0, t1, *[interp.read_param(n) for n in names])


# ---- odeint -----------------------------------------------------------------------------------------------------


@builtin(context=True)
def odeint(interp, span, f, y0, t0, t1, steps=100, method="rk4", rtol=1e-6, atol=1e-9, ts=None, event=None,
           adjoint=False):
    """y(t1) of dy/dt = f(t, y), y(t0) = y0, differentiable w.r.t. y0, t0, t1 and what f reads. `method` "rk4",
    "midpoint" or "euler" takes `steps` fixed steps; "dopri5" (adaptive Dormand–Prince) starts from `steps` and
    keeps the error within `atol` + `rtol`·|y|. With `ts` (a 1-d grid of times, integrated from t0; t1 must be its
    last time) it returns y at each of them, stacked along a new first axis. `event = g` stops each trajectory where
    g(t, y) crosses zero and returns (t_event, y_event); `adjoint = true` takes the gradient by the adjoint method
    (memory independent of the number of steps)."""
    if not is_function(f):
        raise DplError(f"`odeint` integrates a function f(t, y), got {describe_type(f)}")
    y0, t0, t1 = floats(y0, "y0"), floats(t0, "t0"), floats(t1, "t1")
    steps = integer(steps, "steps")
    if steps < 1:
        raise DplError("`steps` must be at least 1")
    if method not in TABLEAUS:
        raise DplError(f"`method` must be one of {', '.join(repr(m) for m in sorted(TABLEAUS))}, "
                       f"got {describe_type(method)}")
    adjoint = flag(adjoint, "adjoint")
    yshape = np.shape(raw(y0))
    _check_times(t0, t1, yshape)
    rtol, atol = float(raw(floats(rtol, "rtol"))), float(raw(floats(atol, "atol")))
    rhs = _Rhs(interp, span, f, yshape)
    if event is not None:
        if not is_function(event):
            raise DplError(f"`event` must be a function g(t, y), got {describe_type(event)}")
        if ts is not None or adjoint:
            raise DplError("`odeint` with an `event` returns (t_event, y_event) and takes neither `ts` nor "
                           "`adjoint = true`")
        return _event_solve(interp, span, rhs, event, y0, t0, t1, steps, method, rtol, atol)

    def solve(y, a, b):
        same = ops.eq(a, b)
        if np.ndim(raw(same)):
            same = ops.all_(same)
        if graph.guard(same, bool(raw(same))):
            # an empty interval: y itself in value, with the first-order dependence on a and b kept
            return ops.add(y, ops.mul(ops.sub(b, a), rhs(a, y)))
        if adjoint:
            return _adjoint(interp, span, rhs, y, a, b, steps, method, rtol, atol)
        if method == "dopri5":
            return _dopri5(interp, span, rhs, y, a, b, steps, rtol, atol)
        interp.add_steps(steps, f"`odeint` would take {steps} steps", span)  # counted before they are taken
        return _fixed(rhs, y, a, b, steps, method)

    if ts is None:
        return solve(y0, t0, t1)
    grid = floats(ts, "ts")
    if np.ndim(raw(grid)) != 1 or np.shape(raw(grid))[0] < 1:
        raise DplError(f"`ts` must be a 1-d grid of times, got {describe_type(ts)}")
    if np.ndim(raw(t0)) or np.ndim(raw(t1)):
        raise DplError("`odeint` over a `ts` grid takes numbers for t0 and t1, not one time per trajectory")
    last = ops.index(grid, key=(-1,))
    agree = ops.le(ops.abs_(ops.sub(t1, last)), ops.mul(1e-12, ops.add(1.0, ops.abs_(last))))
    if not graph.guard(agree, bool(raw(agree))):
        raise DplError(f"`odeint`: t1 = {float(raw(t1)):g} disagrees with the last time of `ts` "
                       f"({float(raw(last)):g}); over a grid the solve ends at ts[-1], so pass t1 = ts[-1]")
    check_elements(np.shape(raw(grid)) + yshape, "`odeint` over `ts`")  # the states it returns
    ys, y = [], y0
    prev = ops.index(grid, key=(0,))
    y = solve(y, t0, prev)
    ys.append(y)
    for i in range(1, np.shape(raw(grid))[0]):
        cur = ops.index(grid, key=(i,))
        y = solve(y, prev, cur)
        ys.append(y)
        prev = cur
    return ops.stack(*ys, axis=0)


# ---- sdeint -----------------------------------------------------------------------------------------------------


def _diffusion_and_slope(interp, span, g, t, y, shape):
    """g(t, y) and the diagonal of ∂g/∂y (as ∂(Σg)/∂y: for diagonal noise gᵢ depends on yᵢ alone), the latter
    by DPL's own reverse mode in a private trace whose VJPs, written in ops, are taped by any outer recording."""
    trace = Trace()
    yb = trace.input(y, "y")
    out = _Rhs(interp, span, g, shape, "the diffusion function g")(t, yb)
    if type(out) is not Box or out.trace is not trace:
        return out, B.xp.zeros(shape, dtype=raw(y).dtype)
    slope = backward(trace, out, [yb], seed=B.xp.ones(shape, dtype=raw(y).dtype))[0]
    return out.value, B.xp.zeros(shape, dtype=raw(y).dtype) if slope is None else slope


@builtin(context=True)
def sdeint(interp, span, f, g, y0, t0, t1, steps=100, method="euler_maruyama", dW=None):
    """y(t1) of dy = f(t, y) dt + g(t, y) dW (diagonal noise) in `steps` fixed steps, `method` "euler_maruyama" or
    "milstein"; the Brownian increments come from the seeded generator, or from `dW` ([steps, *shape of y0])."""
    for name, fn in (("f", f), ("g", g)):
        if not is_function(fn):
            raise DplError(f"`sdeint` takes a drift f(t, y) and a diffusion g(t, y); `{name}` is {describe_type(fn)}")
    y0, t0, t1 = floats(y0, "y0"), floats(t0, "t0"), floats(t1, "t1")
    steps = integer(steps, "steps")
    if steps < 1:
        raise DplError("`steps` must be at least 1")
    if method not in ("euler_maruyama", "milstein"):
        raise DplError(f'`method` must be "euler_maruyama" or "milstein", got {describe_type(method)}')
    yshape = np.shape(raw(y0))
    _check_times(t0, t1, yshape, "`sdeint`")
    h = ops.div(ops.sub(t1, t0), float(steps))
    if dW is None:
        check_elements((steps,) + yshape, "`sdeint`'s Brownian increments")
        graph.taint("a random draw (`sdeint`'s Brownian increments) inside it")
        dW = B.xp.asarray(interp.rng.normal(0.0, 1.0, (steps,) + yshape) * np.sqrt(np.abs(_host(h))),
                          dtype=B.float_dtype)
    else:
        dW = floats(tensor(dW, "dW"), "dW")
        want = (steps,) + yshape
        if np.shape(raw(dW)) != want:
            raise DplError(f"`dW` must hold one Brownian increment per step and state, shaped {list(want)}, got "
                           f"shape {list(np.shape(raw(dW)))}")
    interp.add_steps(steps, f"`sdeint` would take {steps} steps", span)
    drift = _Rhs(interp, span, f, yshape, "the drift function f")
    diffusion = _Rhs(interp, span, g, yshape, "the diffusion function g")
    y = y0
    for n in range(steps):
        t = ops.add(t0, ops.mul(h, float(n)))
        dw = ops.index(dW, key=(n,))
        if method == "milstein":  # yₙ₊₁ = yₙ + f h + g ΔW + ½ g ∂g/∂y (ΔW² − h)
            gv, slope = _diffusion_and_slope(interp, span, g, t, y, yshape)
            corr = ops.mul(0.5, ops.mul(ops.mul(gv, slope), ops.sub(ops.mul(dw, dw), h)))
            y = ops.add(ops.add(y, ops.mul(drift(t, y), h)), ops.add(ops.mul(gv, dw), corr))
        else:
            y = ops.add(ops.add(y, ops.mul(drift(t, y), h)), ops.mul(diffusion(t, y), dw))
    return y
