"""`train` blocks (LANGUAGE.md §8): minibatches, gradients of the loss w.r.t. every parameter, optimizer steps;
and `dpl train` around them: checkpoints, resuming, SIGINT/SIGTERM, progress, the summary."""
from __future__ import annotations

import json
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import ast as A
from . import backend as B
from .builtins import OptimizerSpec, adam, integer
from .errors import DplError
from .gradcheck import NonFiniteError
from .graph import raw
from .interp import describe_type, is_float_scalar, is_tensor, real_loss_hint
from .limits import seed_value


class Optimizer:
    """sgd (with momentum), adam (bias-corrected, as torch.optim.Adam) and rmsprop.

    The parameters of a train block live in one flat buffer that `params[name]` are views of (made when
    the block first steps, so a value taken before training keeps its value), and so does the optimizer
    state: an update is a handful of array operations however many parameters there are, written in
    place. Elementwise it is the same arithmetic as parameter by parameter, so the same bits."""

    def __init__(self, spec: OptimizerSpec):
        self.kind, self.h = spec.kind, spec.hyper
        self.state: dict[str, tuple] = {}  # name -> its slots (views of the flat state once stepped)
        self.t = 0
        self._flat = None  # (names, buffer, views): the parameters' buffer
        self._flat_state = None  # (names, slots as flat arrays), or None when `state` must be read

    def _own(self, params: dict, names: list):
        f = self._flat
        if f is not None and f[0] == names and all(params[n] is v for n, v in zip(names, f[2])):
            return f[1]
        buf = _cat([params[n] for n in names])
        self._flat = (names, buf, _views(buf, [np.shape(params[n]) for n in names]))
        params.update(zip(names, self._flat[2]))
        return buf

    def _slots(self, names, sizes):
        """The state of every parameter as flat arrays per slot (0.0 before the first step)."""
        fs = self._flat_state
        if fs is not None and fs[0] == names:
            return fs[1]
        if not any(n in self.state for n in names):
            return None
        parts = [self.state.get(n) for n in names]
        k = len(self._SLOTS[self.kind])
        return tuple(_cat([(p if k > 1 else (p,))[j] if p is not None else B.xp.zeros(size, dtype=B.float_dtype)
                           for p, size in zip(parts, sizes)]) for j in range(k))

    def step(self, params: dict, grads: dict) -> tuple[dict, tuple]:
        """The new parameter values (views of one new flat array) and optimizer state; the caller commits
        them only if they are finite."""
        xp, h, t = B.xp, self.h, self.t + 1
        names = list(grads)
        p = self._own(params, names)
        g = _cat([grads[n] for n in names])
        sizes = [int(np.size(params[n])) for n in names]
        slots = self._slots(names, sizes)
        if self.kind == "sgd":
            if h["momentum"]:
                g = g if slots is None else h["momentum"] * slots[0] + g
                state = (g,)
            else:
                state = ()
            new = p - h["lr"] * g
        elif self.kind == "adam":
            b1, b2 = h["betas"]
            m, v = (0.0, 0.0) if slots is None else slots
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            state = (m, v)
            new = p - h["lr"] * (m / (1 - b1 ** t)) / (xp.sqrt(v / (1 - b2 ** t)) + h["eps"])
        else:  # rmsprop
            v = 0.0 if slots is None else slots[0]
            v = h["alpha"] * v + (1 - h["alpha"]) * g * g
            state = (v,)
            new = p - h["lr"] * g / (xp.sqrt(v) + h["eps"])
        shapes = [np.shape(params[n]) for n in names]
        return dict(zip(names, _views(new, shapes))), (names, new, state, shapes)

    def commit(self, params: dict, new: dict, state: tuple) -> None:
        names, flat, slots, shapes = state
        self.t += 1
        self._own(params, names)[...] = flat  # in place: params[name] are views of the buffer
        if slots:
            self._flat_state = (names, slots)
            per = [_views(s, shapes) for s in slots]
            self.state = {n: (tuple(v[i] for v in per) if len(slots) > 1 else per[0][i]) for i, n in enumerate(names)}

    _SLOTS = {"sgd": ("buf",), "adam": ("m", "v"), "rmsprop": ("v",)}

    def export(self) -> dict[str, dict]:
        """The state as groups of arrays for a checkpoint: `opt.m` -> {parameter: m}, ..."""
        slots = self._SLOTS[self.kind]
        groups: dict[str, dict] = {f"opt.{s}": {} for s in slots}
        for name, st in self.state.items():
            for s, a in zip(slots, st if self.kind == "adam" else (st,)):
                groups[f"opt.{s}"][name] = a
        return groups

    def restore(self, t: int, groups: dict, params: dict) -> None:
        """The state `export` made; ValueError when it does not fit `params` (a damaged checkpoint)."""
        slots = self._SLOTS[self.kind]
        names = set(groups.get(f"opt.{slots[0]}", {}))
        for s in slots:
            arrays = groups.get(f"opt.{s}", {})
            if set(arrays) != names or any(n not in params or a.shape != np.shape(params[n]) or
                                           a.dtype != B.float_dtype for n, a in arrays.items()):
                raise ValueError(f"its {self.kind} state does not fit the parameters")
        self.t = t
        self._flat_state = None
        for name in names:
            parts = tuple(B.xp.asarray(groups[f"opt.{s}"][name]) for s in slots)
            self.state[name] = parts if self.kind == "adam" else parts[0]

    def describe(self) -> str:
        extra = f", momentum={self.h['momentum']:g}" if self.kind == "sgd" and self.h["momentum"] else ""
        return f"{self.kind}(lr={self.h['lr']:g}{extra})"


def _cat(arrays):
    """The arrays flattened one after another (parameters are all of the run's float dtype)."""
    xp = B.xp
    return xp.concatenate([xp.reshape(a, -1) for a in arrays]) if arrays else xp.zeros(0, dtype=B.float_dtype)


def _views(flat, shapes) -> list:
    """`flat` cut into arrays of these shapes, in order (views, not copies)."""
    out, off = [], 0
    for shp in shapes:
        size = int(np.prod(shp, dtype=np.int64))
        out.append(flat[off:off + size].reshape(shp))
        off += size
    return out


def loss_and_grads(interp, loss_fn, args, span, unused: set | None = None):
    """One forward and backward pass: the loss and ∂loss/∂p for every parameter (zeros where unused, and
    their names added to `unused`); replayed from a plan once the step has been recorded twice the same way
    (dpl.record)."""
    from .record import gradients

    def check(out):
        if not is_float_scalar(out):
            raise DplError(f"the loss `{getattr(loss_fn, 'name', '?')}` must return a 0-d float value, "
                           f"got {describe_type(out)}{real_loss_hint(out)}", span)
    value, _, adj = gradients(interp, loss_fn, args, span, wrt_params=True, check=check)
    grads = {n: (B.xp.zeros_like(interp.params[n]) if adj.get(n) is None else raw(adj[n])) for n in interp.params}
    if unused is not None:
        unused.update(n for n in interp.params if adj.get(n) is None)
    return float(raw(value)), grads


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


def block_data(interp, stmt: A.Train, frame) -> list:
    """The `over` tensors of a train block with their expressions, checked to share their first dimension."""
    data = []
    for e in stmt.over:
        v = raw(interp.eval(e, frame))
        if not is_tensor(v) or np.ndim(v) == 0:
            raise DplError(f"`train ... over` needs tensors with a first axis to batch, got {describe_type(v)}",
                           e.span)
        data.append((v, e))
    for v, e in data[1:]:
        if len(v) != len(data[0][0]):
            raise DplError(f"`train ... over`: every tensor needs the same first dimension; "
                           f"{len(data[0][0])} rows in the first but {len(v)} here", e.span)
    return data


class TrainReport:
    """What a run of `train` did, for --metrics, --plot and the summary; `blocks` has one dict per train block
    (loss, where, optimizer, epochs, steps, skipped_steps, final_loss, seconds)."""

    def __init__(self):
        self.final_loss = math.nan
        self.epochs = 0
        self.steps = 0
        self.skipped_steps = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.step_losses: list[float] = []
        self.blocks: list[dict] = []

    _COUNTERS = ("final_loss", "epochs", "steps", "skipped_steps", "seconds", "blocks")

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in self._COUNTERS}

    def restore(self, counters: dict, arrays: dict) -> None:
        for k in self._COUNTERS:
            setattr(self, k, counters[k])
        self.losses = [float(x) for x in arrays.get("losses", ())]
        self.step_losses = [float(x) for x in arrays.get("step_losses", ())]

    def metrics(self) -> dict:
        """The --metrics JSON: strict (a NaN or Inf becomes null)."""
        def num(x):
            return x if math.isfinite(x) else None
        return {"final_loss": num(self.final_loss), "epochs": self.epochs, "steps": self.steps,
                "skipped_steps": self.skipped_steps, "wall_seconds": self.seconds,
                "epoch_losses": [num(x) for x in self.losses],
                "blocks": [dict(b, final_loss=num(b["final_loss"])) for b in self.blocks]}


class Interrupted(BaseException):
    """SIGINT or SIGTERM during `dpl train` (a BaseException, so nothing on the way catches it)."""

    def __init__(self, signum: int, at_once: bool = False):
        super().__init__(signum)
        self.signum, self.at_once = signum, at_once


class Session:
    """One `dpl train` run across its train blocks: counts them in program order, keeps the parameters and
    random state at the end of each finished block, writes checkpoints, and on --resume skips the blocks a
    checkpoint has finished and restores the one it stopped in.

    A signal inside a train block only sets `signal`; the block finishes its step and raises Interrupted at
    the step boundary, with `pending` the state to save. Outside a block Interrupted is raised at once, and
    the checkpoint says "the blocks so far are finished"."""

    def __init__(self, report: TrainReport, path=None, every=None, fingerprint=None, resume=None):
        self.report, self.path, self.every, self.fingerprint = report, path and Path(path), every, fingerprint
        self.blocks = 0
        self.done: list[dict] = []
        self.in_block = False
        self.start: dict = {}
        self.signal: int | None = None
        self.pending = None  # the in-block state at the step boundary where a signal was honoured
        self.written = False
        self.resume_path, self.resume = None, None
        if resume is not None:
            self.resume_path, self.resume = resume
            meta, groups = self.resume
            report.restore(meta["report"], groups.get("report", {}))

    # ---- blocks ----------------------------------------------------------------------------

    def begin_block(self, interp, stmt) -> str:
        """'fresh', 'skip' (finished in the checkpoint) or 'resume' (the checkpoint stopped inside it)."""
        k = self.blocks
        self.blocks += 1
        self.in_block = True
        self.start = {"rng_start": interp.rng.bit_generator.state, "where": f"{stmt.span.file}:{stmt.span.line}",
                      "loss": stmt.loss}
        if self.resume is None:
            return "fresh"
        meta, _ = self.resume
        target, inside = meta["block"], meta["in_block"]
        if k < target:
            recorded = meta["done"][k]["rng_start"]
        elif k == target and inside:
            recorded = meta["position"]["rng_start"]
        else:  # the checkpoint was written between blocks: this one starts afresh
            self.resume = None
            return "fresh"
        if self.start["rng_start"] != recorded:
            raise DplError(f"cannot resume from {self.resume_path}: this run reaches train block {k + 1} in "
                           f"another state than the run that wrote the checkpoint (its random generator differs; "
                           f"was the program or its data changed?)", stmt.span)
        return "skip" if k < target else "resume"

    def skip_block(self, interp, stmt) -> None:
        """A block the checkpoint has finished: its parameters and random state at its end, no training."""
        meta, groups = self.resume
        k = self.blocks - 1
        self.restore_params(interp, groups[f"done.{k}"], stmt)
        interp.rng.bit_generator.state = meta["done"][k]["rng_end"]
        if k + 1 == meta["block"] and not meta["in_block"]:  # written after this block: it resumes from here
            self.resume = None
        self.end_block(interp)

    def restore_params(self, interp, arrays: dict, stmt) -> None:
        if set(arrays) != set(interp.params) or any(np.shape(a) != np.shape(interp.params[n]) or
                                                    a.dtype != B.float_dtype for n, a in arrays.items()):
            raise DplError(f"cannot resume from {self.resume_path}: its parameters at this train block are not "
                           f"those the program declares", stmt.span)
        for name, a in arrays.items():
            interp.params[name] = B.xp.asarray(a)

    def resume_state(self) -> tuple[dict, dict]:
        """The position and arrays of the block being resumed; the checkpoint is used up."""
        meta, groups = self.resume
        self.resume = None
        return meta, groups

    def end_block(self, interp) -> None:
        self.done.append(dict(self.start, params=dict(interp.params), rng_end=interp.rng.bit_generator.state))
        self.in_block = False
        if self.signal is not None:
            raise Interrupted(self.signal)

    def after_step(self, interp, state) -> None:
        """At a step boundary: a checkpoint every --checkpoint-every steps, and the stop a signal asked for.
        `state()` makes the in-block part of a checkpoint."""
        if self.signal is not None:
            self.pending = state()
            raise Interrupted(self.signal)
        if self.every and self.report.steps % self.every == 0:
            try:
                self.save(interp, state())
            except DplError as e:  # a full disk: keep training, the previous checkpoint is still there
                print(f"dpl: warning: {e.message}", file=sys.stderr)

    # ---- checkpoints ---------------------------------------------------------------------------

    def save(self, interp, state=None) -> None:
        """Write the checkpoint: the blocks finished so far, and with `state` the position inside the next."""
        from . import checkpoint
        report = self.report
        meta = {"fingerprint": self.fingerprint(interp), "block": len(self.done), "in_block": state is not None,
                "rng": interp.rng.bit_generator.state, "report": report.counters(),
                "done": [{k: d[k] for k in ("rng_start", "rng_end", "where", "loss")} for d in self.done]}
        groups = {"params": interp.params, "report": {"losses": np.array(report.losses, dtype=np.float64),
                                                      "step_losses": np.array(report.step_losses, dtype=np.float64)}}
        for k, d in enumerate(self.done):
            groups[f"done.{k}"] = d["params"]
        if state is not None:
            meta["position"], more = state
            groups.update(more)
        checkpoint.write(self.path, meta, groups)
        self.written = True



class Trainer:
    """The callback the interpreter calls at each `train` block in `dpl train`."""

    def __init__(self, epochs_override=None, report: TrainReport | None = None, progress=True, on_nonfinite=None,
                 skip_nonfinite=False, log_epochs=False, session: Session | None = None, display=None):
        self.report = report or TrainReport()
        self.session = session or Session(self.report)
        self.epochs_override, self.on_nonfinite, self.skip_nonfinite = epochs_override, on_nonfinite, skip_nonfinite
        self.display = "bar" if progress else "log" if log_epochs else None
        self.make_display = display or _Display  # the notebook passes its own (dpl/notebook.py)

    def __call__(self, interp, stmt: A.Train, frame):
        session = self.session
        if session.blocks == 0:  # the params file must match before anything is trained (paramfile.LoadedParams)
            interp.loaded_params.check(final=False)
        how = session.begin_block(interp, stmt)
        if how == "skip":
            return session.skip_block(interp, stmt)
        self.train_block(interp, stmt, frame, how == "resume")
        session.end_block(interp)  # a signal that came meanwhile stops the run here, with this block finished

    def train_block(self, interp, stmt: A.Train, frame, resuming: bool):
        session, report = self.session, self.report
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
        epochs = (self.epochs_override if self.epochs_override is not None
                  else setting("epochs", 1, lambda v: integer(v, "epochs")))
        if epochs < 0:
            raise DplError(f"`epochs` cannot be negative, got {epochs}",
                           settings["epochs"][1] if "epochs" in settings else stmt.span)
        shuffle = setting("shuffle", True, lambda v: _flag(v, "shuffle"))
        seed = setting("seed", interp.seed, lambda v: seed_value(integer(v, "`seed`"), "`seed`"))
        loss_fn = interp.eval(A.Name(stmt.loss, stmt.span), frame)

        data = block_data(interp, stmt, frame)
        n = len(data[0][0]) if data else 0
        batch = setting("batch", n or 1, lambda v: integer(v, "batch"))
        if batch < 1:
            raise DplError("`batch` must be at least 1", settings["batch"][1])
        rng = np.random.default_rng(seed)
        steps_per_epoch = max(1, math.ceil(n / batch)) if data else 1
        config = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch": batch, "rows": n,
                  "shuffle": shuffle, "seed": seed, "optimizer": [opt.kind, _jsonable(opt.h)]}

        start_epoch, start_step, epoch_losses, epoch_skipped = 0, 0, [], 0
        if resuming:
            start_epoch, start_step, epoch_losses, epoch_skipped = self._resume(interp, stmt, config, opt, rng)
            summary = report.blocks[-1]  # restored with the report: this block's numbers so far
        else:
            summary = {"loss": stmt.loss, "where": session.start["where"], "optimizer": opt.describe(),
                       "epochs": 0, "steps": 0, "skipped_steps": 0, "final_loss": math.nan, "seconds": 0.0}
            report.blocks.append(summary)

        shuffle_state = rng.bit_generator.state

        def state():
            """The in-block part of a checkpoint at this step boundary (`at`: the epoch and step to take next; the
            shuffle generator as it was before the permutation of that epoch was drawn)."""
            position = {"epoch": at[0], "step": at[1], "shuffle_state": shuffle_state, "rng_start":
                        session.start["rng_start"], "t": opt.t, "config": config, "epoch_skipped": epoch_skipped}
            return position, dict(opt.export(), pos={"epoch_losses": np.array(epoch_losses, dtype=np.float64)})

        display = self.make_display(self.display, stmt.loss, epochs, steps_per_epoch,
                           start_epoch * steps_per_epoch + start_step)
        last = time.perf_counter()
        checked_unused = False
        try:
            for epoch in range(start_epoch, epochs):
                order = rng.permutation(n) if shuffle and data else np.arange(n)
                for k in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
                    idx = order[k * batch:(k + 1) * batch]
                    interp.steps = 0  # --max-steps bounds each training step, not the length of training
                    unused = None if checked_unused else set()
                    interp.training = True  # the builtin `training()`: Dropout drops within the loss only
                    try:
                        loss, grads = self.gradients(interp, stmt, loss_fn, [v for v, _ in data], idx, unused)
                    except NonFiniteError as e:  # --detect-nan stopped inside the step: keep the last good step
                        self._stopped(interp)
                        e.message += (f"; training stopped at epoch {epoch + 1}, step {report.steps + 1}, "
                                      f"the parameters from the last good step were saved")
                        raise
                    finally:
                        interp.training = False
                    if not checked_unused:
                        checked_unused = True
                        for name in sorted(unused or ()):
                            print(f"warning: parameter `{name}` gets no gradient from the loss `{stmt.loss}` (on the "
                                  f"block's first step), so this block will not change it", file=sys.stderr)
                    report.steps += 1
                    summary["steps"] += 1
                    new, opt_state = opt.step(interp.params, grads)
                    what = _nonfinite(loss, grads, new)
                    if what and not self.skip_nonfinite:
                        self._stopped(interp)
                        raise DplError(f"training stopped at epoch {epoch + 1}, step {report.steps}: {what}; "
                                       f"the parameters from the last good step were kept (--skip-nonfinite "
                                       f"skips such steps instead)", stmt.span)
                    if what:  # skipped: no update, no optimizer state, the loss not in the epoch mean
                        report.skipped_steps += 1
                        summary["skipped_steps"] += 1
                        epoch_skipped += 1
                    else:
                        opt.commit(interp.params, new, opt_state)
                        epoch_losses.append(loss)
                        report.final_loss = summary["final_loss"] = loss
                    report.step_losses.append(loss)
                    display.advance(epoch, None if what else loss)
                    now = time.perf_counter()
                    report.seconds += now - last
                    summary["seconds"] += now - last
                    last = now
                    if k + 1 < steps_per_epoch:
                        at = (epoch, k + 1)
                    else:  # the epoch is over: account for it before a checkpoint says so
                        mean = float(np.mean(epoch_losses)) if epoch_losses else math.nan
                        report.losses.append(mean)
                        report.epochs += 1
                        summary["epochs"] += 1
                        display.epoch_done(epoch, mean, epoch_skipped)
                        at = (epoch + 1, 0)
                        shuffle_state, epoch_losses, epoch_skipped = rng.bit_generator.state, [], 0
                    session.after_step(interp, state)
            # draws inside the loss leave no trace outside the block: what follows draws as under `dpl run`
            interp.rng.bit_generator.state = session.start["rng_start"]
        finally:
            display.close()
            now = time.perf_counter()
            report.seconds += now - last
            summary["seconds"] += now - last

    def close(self) -> None:
        """Release what the trainer holds once the run ends (dpl.distributed: its Ray actors)."""

    def gradients(self, interp, stmt, loss_fn, data, idx, unused):
        """The loss and gradients of one minibatch, the rows `idx` of each `over` tensor (dpl.distributed
        spreads the rows over Ray actors instead)."""
        args = [v[B.xp.asarray(idx)] for v in data]
        return loss_and_grads(interp, loss_fn, args, stmt.span, unused)

    def _resume(self, interp, stmt, config, opt, rng):
        """Restore the block a checkpoint stopped in: parameters, optimizer, both generators; its position."""
        session = self.session
        meta, groups = session.resume_state()
        pos = meta["position"]
        if pos["config"] != config:
            raise DplError(f"cannot resume from {session.resume_path}: this train block is set up differently "
                           f"from the run that wrote it ({_config_change(pos['config'], config)})", stmt.span)
        session.restore_params(interp, groups["params"], stmt)
        try:
            opt.restore(pos["t"], groups, interp.params)
        except ValueError as e:
            raise DplError(f"cannot resume from {session.resume_path}: {e}", stmt.span) from None
        interp.rng.bit_generator.state = meta["rng"]
        rng.bit_generator.state = pos["shuffle_state"]
        epoch_losses = [float(x) for x in groups.get("pos", {}).get("epoch_losses", ())]
        return pos["epoch"], pos["step"], epoch_losses, pos["epoch_skipped"]

    def _stopped(self, interp):
        if self.on_nonfinite:
            self.on_nonfinite(interp)


def _jsonable(h: dict) -> dict:
    return json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in h.items()}))


def _config_change(before: dict, now: dict) -> str:
    return ", ".join(f"{k} was {before.get(k)}, now {now[k]}" for k in now if before.get(k) != now[k])


def _nonfinite(loss, grads, new) -> str:
    """What went non-finite in a step, or '' when the step may be committed."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if all(math.isfinite(float(a.sum())) for a in new.values()):  # a NaN or Inf anywhere reaches the sum, and
        return ""  # a non-finite gradient makes its update non-finite: one reduction per parameter suffices
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


class _Display:
    """The progress of one train block on stderr: a rich bar (epoch, step, running loss, steps/s) for "bar",
    one plain line per epoch for "log" (--quiet), nothing for None."""

    def __init__(self, mode, name, epochs, steps_per_epoch, done):
        self.mode, self.name, self.epochs = mode, name, epochs
        self.bar, self.running = None, None
        if mode != "bar":
            return
        from rich.console import Console
        self.bar, self.task = progress_bar(name, epochs, steps_per_epoch, done, Console(stderr=True))
        self.bar.start()

    def advance(self, epoch, loss):
        if self.bar is None:
            return
        if loss is not None:
            self.running = loss if self.running is None else 0.9 * self.running + 0.1 * loss
        self.bar.update(self.task, advance=1, epoch=f"{epoch + 1}/{self.epochs}",
                        loss="-" if self.running is None else f"{self.running:.4g}")

    def epoch_done(self, epoch, mean, skipped):
        if self.mode == "log":
            more = f", {skipped} non-finite steps skipped" if skipped else ""
            print(f"train {self.name}: epoch {epoch + 1}/{self.epochs}, mean loss {mean:.6g}{more}",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def progress_bar(name, epochs, steps_per_epoch, done, console, **options):
    """The rich Progress of one train block (epoch, step, running loss, steps/s) and its task."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.0f} steps/s" if task.speed else "- steps/s")

    bar = Progress(TextColumn(f"train {name}"), BarColumn(bar_width=20),
                   TextColumn("epoch {task.fields[epoch]}"), TextColumn("step"), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), Rate(), TimeElapsedColumn(),
                   console=console, transient=False, **options)
    task = bar.add_task("train", total=epochs * steps_per_epoch, completed=done, loss="-",
                        epoch=f"{min(done // steps_per_epoch + 1, epochs)}/{epochs}")
    return bar, task


def print_summary(report: TrainReport) -> None:
    """One row per train block on stderr: loss, optimizer, epochs, steps, final loss, seconds."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    skipped = any(b["skipped_steps"] for b in report.blocks)
    table = Table(title="training summary", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col in ["train", "optimizer", "epochs", "steps"] + ["skipped"] * skipped + ["final loss", "seconds"]:
        text = col in ("train", "optimizer")
        table.add_column(col, justify="left" if text else "right", no_wrap=text, min_width=len(col))
    for b in report.blocks:
        table.add_row(f"{b['loss']} ({Path(b['where']).name})", b["optimizer"], str(b["epochs"]), str(b["steps"]),
                      *([str(b["skipped_steps"])] * skipped), f"{b['final_loss']:.6g}", f"{b['seconds']:.2f}")
    Console(stderr=True).print(table)


# ---- dpl train ---------------------------------------------------------------------------------------------

def train_command(args, path: Path) -> int:
    """`dpl train`: run the program training at each train block, save the parameters; checkpoint on
    --checkpoint-every and on SIGINT/SIGTERM (exit 130/143), continue from one with --resume."""
    from . import checkpoint
    from .interp import Interpreter
    from .paramfile import load_params, prepare_output, save_params

    out = Path(args.out) if args.out else path.with_name(path.stem + ".params.npz")
    prepare_output(out, "--out")  # first: `--out .` has no name to derive the checkpoint's from
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_suffix(".ckpt.npz")
    resume_path = (Path(args.resume) if args.resume else ckpt) if args.resume is not None else None
    check_files(args, path, out, ckpt, resume_path)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise DplError(f"--checkpoint-every takes a number of steps ≥ 1, got {args.checkpoint_every}")
    resume = None
    if resume_path is not None:
        meta, groups = checkpoint.read(resume_path)
        changed = checkpoint.differences(meta["fingerprint"], args)
        if changed:
            raise DplError(f"cannot resume from {resume_path}: {'; '.join(changed)} (run without --resume to "
                           f"start again)")
        resume = (resume_path, (meta, groups))
    loaded = load_params(args.params, partial=args.partial) if args.params else None

    report = TrainReport()
    digests = {f.resolve(): checkpoint.digest(f) for f in (path, args.params and Path(args.params)) if f}

    def fingerprint(it):
        digests.update(it.data_files)  # the hash of what load() read, not of the file as it is now
        return checkpoint.fingerprint(args, it.loaded_files | set(it.data_files), digests)
    session = Session(report, ckpt, args.checkpoint_every, resume=resume, fingerprint=fingerprint)
    settings = dict(progress=not args.quiet, log_epochs=args.quiet, skip_nonfinite=args.skip_nonfinite,
                    on_nonfinite=lambda it: save_params(out, it.params), session=session)
    if getattr(args, "workers", None) is None:
        trainer = Trainer(args.epochs, report, **settings)
    else:
        from .distributed import DataParallelTrainer
        trainer = DataParallelTrainer(args, path, args.epochs, report, **settings)
    interp = Interpreter(mode="train", seed=args.seed, loaded_params=loaded, trainer=trainer,
                         overrides=getattr(args, "set", None))
    handlers = _catch_signals(session)
    try:
        try:
            _run(args, path, out, interp, session, loaded)
        finally:  # before saving a checkpoint: a second signal now stops at once, the ordinary way
            for s, h in handlers.items():
                signal.signal(s, h)
            trainer.close()
    except Interrupted as e:
        return _interrupted(e, args, session, interp)
    for done_with in {session.path if session.written else None, session.resume_path}:
        if done_with is not None:  # the run is complete: its checkpoint has nothing left to resume
            done_with.unlink(missing_ok=True)
    return 0


def check_files(args, path, out, ckpt, resume_path) -> None:
    """Before anything runs: no two of the files read and written name the same file (a run that resumes
    from its own checkpoint excepted), and every output can be written (stale temporary files removed)."""
    from .paramfile import prepare_output, refuse_same_files
    ckpt_flag = "--checkpoint" if args.checkpoint else f"the checkpoint {ckpt} (the default of --checkpoint)"
    out_flag = "--out" if args.out else f"the output {out} (the default of --out)"
    same_as_ckpt = resume_path is not None and os.path.realpath(resume_path) == os.path.realpath(ckpt)
    maps = attention_out(args, path)
    refuse_same_files([("the program", path, False), ("--params", args.params, False),
                       ("--resume", None if same_as_ckpt else resume_path, True),  # removed when the run ends
                       (out_flag, out, True), (ckpt_flag, ckpt, True), ("--metrics", args.metrics, True),
                       ("--plot", args.plot, True), ("--attention-out", maps, True)])
    for flag, target in (("--checkpoint", ckpt), ("--metrics", args.metrics),
                         ("--plot", args.plot), ("--attention-out", maps)):
        if target is not None:
            prepare_output(target, flag)
    from .viz import image_format
    if args.plot:
        image_format(args.plot, "--plot")
    if getattr(args, "attention_out", None) and not getattr(args, "attention", None):
        raise DplError("--attention-out names where --attention saves its heatmaps; give --attention FN too")
    if maps is not None:
        image_format(maps, "--attention-out")


def attention_out(args, path):
    """Where `--attention` saves its heatmaps (None without it)."""
    if not getattr(args, "attention", None):
        return None
    return Path(args.attention_out) if args.attention_out else path.with_name(path.stem + ".attention.png")


def _run(args, path, out, interp, session, loaded) -> None:
    """Run the program, check the params file, save the parameters, metrics and plot."""
    from .paramfile import save_params, write_atomic
    report = session.report
    interp.run_file(path)
    if session.resume is not None:
        raise DplError(f"cannot resume from {session.resume_path}: the program ended before train block "
                       f"{session.resume[0]['block'] + 1}, where the checkpoint stopped")
    if loaded is not None:
        loaded.check(final=True)
    save_params(out, interp.params)
    skipped = f" ({report.skipped_steps} non-finite steps skipped)" if report.skipped_steps else ""
    if report.blocks and not args.quiet:
        print_summary(report)
    print(f"trained {report.steps} steps{skipped} in {report.seconds:.2f} s, final loss "
          f"{report.final_loss:.6g}; parameters saved to {out}", file=sys.stderr)
    if args.metrics:
        write_atomic(args.metrics, json.dumps(report.metrics(), indent=2).encode())
    if args.plot:
        from .viz import plot_losses
        plot_losses(report, args.plot)
    if getattr(args, "attention", None):
        _attention_maps(args, path, interp)


def _attention_maps(args, path, interp) -> None:
    """`--attention FN`: the heatmaps of the attention FN() computes with the trained parameters (saved first, so
    a mistake here loses nothing)."""
    from . import Program
    from .viz import attention_heatmaps
    interp.attention_log.clear()
    Program(interp).call(args.attention)  # an unknown name is Program.function's error
    if not interp.attention_log:
        raise DplError(f"--attention {args.attention}: the call computed no attention weights (`attention`, "
                       f"`attend` or `show_attention`), so there is nothing to draw")
    out = attention_out(args, path)
    n = attention_heatmaps(interp.attention_log, out)
    print(f"{n} attention map{'s' * (n != 1)} written to {out}", file=sys.stderr)


def _catch_signals(session: Session) -> dict:
    """SIGINT and SIGTERM stop the run at the next step boundary with a checkpoint; a second one at once."""
    def handler(signum, frame):
        if session.signal is not None:
            raise Interrupted(signum, at_once=True)
        session.signal = signum
        if not session.in_block:
            raise Interrupted(signum)
        print(f"dpl: {signal.Signals(signum).name}: finishing the current step, then saving a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(s) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
                old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread: signals stay as they are
            break
    return old


def _interrupted(e: Interrupted, args, session: Session, interp) -> int:
    """Save what can be resumed, say how to resume, exit 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    name, code = signal.Signals(e.signum).name, 128 + e.signum

    def say(text):
        print(f"dpl: {text}", file=sys.stderr, flush=True)

    if e.at_once:
        say(f"stopped at once by a second {name}; no checkpoint was written now")
        last = session.path if session.written else session.resume_path
        if last is not None:
            say(f"the last checkpoint is {last}; resume from it with: {resume_command(args, last)}")
        return code
    if session.resume is not None:  # stopped before this run got back to where the checkpoint is
        say(f"interrupted by {name}; {session.resume_path} is unchanged; resume with: "
            f"{resume_command(args, session.resume_path)}")
        return code
    if session.pending is None and not session.done:
        say(f"interrupted by {name} before any training; nothing to resume")
        return code
    try:
        session.save(interp, session.pending)
    except DplError as err:
        say(f"interrupted by {name}, but the checkpoint could not be written: {err.message}")
        return code
    report = session.report
    if session.pending is not None:
        pos, b = session.pending[0], report.blocks[-1]
        where = (f"after step {report.steps} (train block {len(session.done) + 1}, `{b['loss']}` at {b['where']}, "
                 f"epoch {min(pos['epoch'] + 1, pos['config']['epochs'])} of {pos['config']['epochs']})")
    else:
        where = f"after train block {len(session.done)} (step {report.steps})"
    say(f"interrupted by {name} {where}; checkpoint saved to {session.path}")
    say(f"resume with: {resume_command(args, session.path)}")
    return code


def resume_command(args, ckpt: Path) -> str:
    """The command line that continues this run from `ckpt`."""
    parts = ["dpl", "train", args.file]
    for flag, value, default in (("--out", args.out, None), ("--epochs", args.epochs, None),
                                 ("--params", args.params, None), ("--seed", args.seed, 0),
                                 ("--dtype", args.dtype, "float64"), ("--device", args.device, "cpu"),
                                 ("--metrics", args.metrics, None), ("--plot", args.plot, None),
                                 ("--attention", getattr(args, "attention", None), None),
                                 ("--attention-out", getattr(args, "attention_out", None), None),
                                 ("--checkpoint", args.checkpoint, None),
                                 ("--checkpoint-every", args.checkpoint_every, None),
                                 ("--max-steps", getattr(args, "max_steps", None), None),
                                 ("--max-elements", getattr(args, "max_elements", None), None),
                                 ("--max-nodes", getattr(args, "max_nodes", None), None),
                                 ("--workers", getattr(args, "workers", None), None),
                                 ("--address", getattr(args, "address", None), None)):
        if value != default:
            parts += [flag, str(value)]
    for binding in getattr(args, "set", []):
        parts += ["--set", binding]
    for flag in ("partial", "quiet", "skip_nonfinite", "detect_nan", "debug"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    return shlex.join(parts + ["--resume", str(ckpt)])
