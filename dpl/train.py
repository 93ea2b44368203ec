"""`train` blocks (LANGUAGE.md §8): minibatches, gradients of the loss w.r.t. every parameter, optimizer steps."""
from __future__ import annotations

import math
import time

import numpy as np

from . import ast as A
from . import backend as B
from .autodiff import backward
from .builtins import OptimizerSpec, adam, integer
from .errors import DplError
from .graph import Box, Trace, raw
from .interp import describe_type, is_tensor, kind


class Optimizer:
    """sgd (with momentum), adam (bias-corrected, as torch.optim.Adam) and rmsprop, on plain arrays."""

    def __init__(self, spec: OptimizerSpec):
        self.kind, self.h = spec.kind, spec.hyper
        self.state: dict[str, tuple] = {}
        self.t = 0

    def step(self, params: dict, grads: dict) -> tuple[dict, dict]:
        """The new parameter values and optimizer state, as new arrays (a value taken before training keeps
        its value); the caller commits them only if they are finite."""
        xp, h, t = B.xp, self.h, self.t + 1
        new, state = {}, {}
        for name, g in grads.items():
            p = params[name]
            if self.kind == "sgd":
                if h["momentum"]:
                    v = self.state.get(name)
                    g = state[name] = g if v is None else h["momentum"] * v + g
                new[name] = p - h["lr"] * g
            elif self.kind == "adam":
                b1, b2 = h["betas"]
                m, v = self.state.get(name, (0.0, 0.0))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                state[name] = (m, v)
                new[name] = p - h["lr"] * (m / (1 - b1 ** t)) / (xp.sqrt(v / (1 - b2 ** t)) + h["eps"])
            else:  # rmsprop
                v = self.state.get(name, 0.0)
                v = state[name] = h["alpha"] * v + (1 - h["alpha"]) * g * g
                new[name] = p - h["lr"] * g / (xp.sqrt(v) + h["eps"])
        return new, state

    def commit(self, params: dict, new: dict, state: dict) -> None:
        self.t += 1
        self.state.update(state)
        params.update(new)


def loss_and_grads(interp, loss_fn, args, span):
    """One forward and backward pass: the loss and ∂loss/∂p for every parameter (zeros where unused)."""
    trace = Trace()
    with interp.tracing_params(trace) as boxes:
        for name in interp.params:
            interp.read_param(name)
        out = interp.call(loss_fn, args, {}, span)
        if not is_tensor(out) or np.ndim(raw(out)) != 0 or kind(out) != "f":
            raise DplError(f"the loss `{getattr(loss_fn, 'name', '?')}` must return a 0-d float value, "
                           f"got {describe_type(out)}", span)
        names = list(boxes)
        if type(out) is Box and out.trace is trace:
            adj = backward(trace, out, [boxes[n] for n in names])
        else:
            adj = [None] * len(names)
    grads = {n: (B.xp.zeros_like(interp.params[n]) if g is None else raw(g)) for n, g in zip(names, adj)}
    return float(raw(out)), grads


def _settings(interp, stmt: A.Train, frame) -> dict:
    known = {"optimizer", "epochs", "batch", "shuffle", "seed"}
    out = {}
    for s in stmt.body:
        if s.target not in known:
            from .errors import suggest
            raise DplError(f"unknown train setting `{s.target}`{suggest(s.target, known)}; "
                           f"settings are {', '.join(sorted(known))}", s.span)
        out[s.target] = (interp.eval(s.value, frame), s.value.span)
    return out


class TrainReport:
    """What a run of `train` did, for --metrics and the summary."""

    def __init__(self):
        self.final_loss = math.nan
        self.epochs = 0
        self.steps = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.step_losses: list[float] = []


def make_trainer(epochs_override=None, report: TrainReport | None = None, progress=True, on_nonfinite=None):
    """The callback the interpreter calls at each `train` block in `dpl train`."""
    report = report or TrainReport()

    def trainer(interp, stmt: A.Train, frame):
        settings = _settings(interp, stmt, frame)

        def setting(name, default, convert):
            if name not in settings:
                return default
            value, span = settings[name]
            try:
                return convert(value)
            except DplError as e:
                raise e.at(span)

        opt_spec = setting("optimizer", None, lambda v: v if isinstance(v, OptimizerSpec) else _bad_optimizer(v))
        opt = Optimizer(opt_spec or adam(lr=0.001))
        epochs = epochs_override if epochs_override is not None else setting("epochs", 1, lambda v: integer(v, "epochs"))
        if epochs < 0:
            raise DplError(f"`epochs` cannot be negative, got {epochs}",
                           settings["epochs"][1] if "epochs" in settings else stmt.span)
        shuffle = setting("shuffle", True, lambda v: _flag(v, "shuffle"))
        seed = setting("seed", interp.seed, lambda v: integer(v, "seed"))
        loss_fn = interp.eval(A.Name(stmt.loss, stmt.span), frame)

        data = []
        for e in stmt.over:
            v = raw(interp.eval(e, frame))
            if not is_tensor(v) or np.ndim(v) == 0:
                raise DplError(f"`train ... over` needs tensors with a first axis to batch, got {describe_type(v)}",
                               e.span)
            data.append((v, e))
        n = len(data[0][0]) if data else 0
        for v, e in data[1:]:
            if len(v) != n:
                raise DplError(f"`train ... over`: every tensor needs the same first dimension; "
                               f"{len(data[0][0])} rows in the first but {len(v)} here", e.span)
        batch = setting("batch", n or 1, lambda v: integer(v, "batch"))
        if batch < 1:
            raise DplError("`batch` must be at least 1", settings["batch"][1])
        rng = np.random.default_rng(seed)
        steps_per_epoch = max(1, math.ceil(n / batch)) if data else 1

        bar = _Progress(epochs * steps_per_epoch, stmt.loss, enabled=progress)
        start = time.perf_counter()
        try:
            for epoch in range(epochs):
                order = rng.permutation(n) if shuffle and data else np.arange(n)
                epoch_losses = []
                for k in range(steps_per_epoch):
                    idx = order[k * batch:(k + 1) * batch]
                    args = [v[B.xp.asarray(idx)] for v, _ in data]
                    loss, grads = loss_and_grads(interp, loss_fn, args, stmt.span)
                    report.steps += 1
                    new, state = opt.step(interp.params, grads)
                    what = _nonfinite(loss, grads, new)
                    if what:
                        if on_nonfinite:
                            on_nonfinite(interp)
                        raise DplError(f"training stopped at epoch {epoch + 1}, step {report.steps}: {what}; "
                                       f"the parameters from the last good step were kept", stmt.span)
                    opt.commit(interp.params, new, state)
                    epoch_losses.append(loss)
                    report.step_losses.append(loss)
                    report.final_loss = loss
                    bar.advance(loss)
                report.losses.append(float(np.mean(epoch_losses)))
                report.epochs += 1
        finally:
            bar.close()
            report.seconds += time.perf_counter() - start

    trainer.report = report
    return trainer


def _nonfinite(loss, grads, new) -> str:
    """What went non-finite in a step, or '' when the step may be committed."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    for what, arrays in (("gradient", grads), ("updated value", new)):
        for name, a in arrays.items():
            if not bool(B.xp.isfinite(a).all()):
                return f"the {what} of `{name}` is not finite"
    return ""


def _bad_optimizer(v):
    raise DplError(f"`optimizer` must be sgd(...), adam(...) or rmsprop(...), got {describe_type(v)}")


def _flag(v, what):
    from .builtins import flag
    return flag(v, what)


class _Progress:
    """A rich progress bar on stderr with the running loss; silent when disabled."""

    def __init__(self, total, name, enabled):
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn(f"train {name}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task("train", total=total, loss="-")
        self.running = None
        self.bar.start()

    def advance(self, loss):
        if self.bar is None:
            return
        self.running = loss if self.running is None else 0.9 * self.running + 0.1 * loss
        self.bar.update(self.task, advance=1, loss=f"{self.running:.4g}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()
