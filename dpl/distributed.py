"""`dpl train --workers N`: synchronous data-parallel training on Ray actors.

Each actor (a Replica) runs the program up to the train block being trained and so holds a replica of the
model and of the block's data. At each step the driver sends every replica the current parameters (one object
in Ray's object store) and its shard of the minibatch's rows; each returns the loss and gradients of its shard;
the driver averages them, weighted by the shard's rows, and takes the optimizer step itself. The replicas
compute with exactly the driver's parameters at every step, so they never drift apart, and the driver keeps
the one optimizer, checkpoint and report that `dpl train` has without --workers.

Weighting by rows makes the average the gradient of the mean loss over the whole minibatch, as in a
single process, for a loss that is a mean over its rows (the usual case); a loss that sums its rows is
divided by the number of rows, as data-parallel training does everywhere."""
from __future__ import annotations

import hashlib
import logging
import os
import sys

import numpy as np

from . import ast as A
from . import backend as B
from .errors import DplError
from .train import Trainer, _cat, _settings, _views, block_data, loss_and_grads


def need_ray(what: str):
    """The ray module, or a DplError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise DplError(f"{what} needs Ray: pip install 'dpl[ray]'") from None
    return ray


def start_ray(address: str | None, cpus: int | None = None):
    """Join the cluster at `address`, or start a local Ray (with at least `cpus` CPUs) when none is running."""
    ray = need_ray("--workers" if cpus else "dpl sweep")
    if ray.is_initialized():
        return ray
    local = {} if address else {"num_cpus": max(os.cpu_count() or 1, cpus or 1)}
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 configure_logging=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = (" (is `ray start --head` running there? A cluster with token authentication also needs "
                "RAY_AUTH_MODE=token here: docs/CLUSTER.md)") if address else ""
        raise DplError(f"cannot start or join Ray{f' at {address}' if address else ''}: {e}{hint}") from None
    return ray


def digest(arrays) -> str:
    """The sha256 of arrays' shapes, dtypes and bytes: the driver and each replica must hold the same data."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(B.to_host(a))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class _Reached(BaseException):
    """Raised out of the interpreter when a replica's program reaches the train block it is to train."""

    def __init__(self, loss_fn, data, span):
        super().__init__()
        self.loss_fn, self.data, self.span = loss_fn, data, span


class _ToBlock:
    """A replica's trainer: blocks before `target` end as the driver's did (their final parameters and random
    state), the target block stops the program once its loss function and data are evaluated as `dpl train`
    evaluates them."""

    def __init__(self, target: int, done: list, rng_start: dict):
        self.target, self.done, self.rng_start, self.count = target, done, rng_start, 0

    def __call__(self, interp, stmt: A.Train, frame):
        k, self.count = self.count, self.count + 1
        if k < self.target:
            interp.params.update((n, B.xp.asarray(a)) for n, a in self.done[k]["params"].items())
            interp.rng.bit_generator.state = self.done[k]["rng_end"]
            return
        if interp.rng.bit_generator.state != self.rng_start:
            raise DplError(f"a Ray worker reaches train block {k + 1} in another state than the driver (its "
                           f"random generator differs)", stmt.span)
        _settings(interp, stmt, frame)  # evaluated as the driver does, in the same order
        loss_fn = interp.eval(A.Name(stmt.loss, stmt.span), frame)
        raise _Reached(loss_fn, [v for v, _ in block_data(interp, stmt, frame)], stmt.span)


class Replica:
    """One Ray actor's copy of the program, set up as the driver's run is (dtype, limits, --set, --params)."""

    def __init__(self, setup: dict):
        from . import limits, replay
        os.chdir(setup["cwd"])  # the program's relative paths (load, import) as the driver sees them
        B.use("cpu", setup["dtype"])
        B.limit_threads(1)
        limits.configure(*setup["limits"])
        limits.seed_value(setup["seed"])
        replay.enabled = setup["replay"]
        np.seterr(all="ignore")
        self.setup = setup
        self.devnull = open(os.devnull, "w")  # what the program prints is the driver's to print
        self.interp = self.loss_fn = self.data = self.span = None

    def prepare(self, target: int, done: list, rng_start: dict) -> tuple:
        """Run the program afresh up to train block `target`; the parameters' names and shapes and the digest
        of the block's data, for the driver to compare with its own."""
        from .interp import Interpreter
        from .paramfile import load_params
        s = self.setup
        loaded = load_params(s["params"], partial=s["partial"]) if s["params"] else None
        interp = Interpreter(mode="train", seed=s["seed"], stdout=self.devnull, loaded_params=loaded,
                             trainer=_ToBlock(target, done, rng_start), overrides=s["set"])
        try:
            interp.run_file(s["file"])
        except _Reached as r:
            self.interp, self.loss_fn, self.data, self.span = interp, r.loss_fn, r.data, r.span
        else:
            raise DplError(f"a Ray worker's run of {s['file']} ended before train block {target + 1}")
        return [(n, np.shape(v)) for n, v in interp.params.items()], digest(self.data)

    def gradients(self, flat, idx) -> tuple:
        """The loss and the flat gradient of the rows `idx` with the parameters `flat`, and the names of the
        parameters the loss does not reach."""
        from . import limits
        from .gradcheck import detect_nan
        interp = self.interp
        names = list(interp.params)
        interp.params.update(zip(names, _views(B.xp.asarray(flat), [np.shape(interp.params[n]) for n in names])))
        interp.steps = 0
        unused: set = set()
        with limits.deep_stack(), detect_nan(self.setup["detect_nan"]):
            loss, grads = loss_and_grads(interp, self.loss_fn, [v[B.xp.asarray(idx)] for v in self.data],
                                         self.span, unused)
        return loss, B.to_host(_cat([grads[n] for n in names])), unused


class DataParallelTrainer(Trainer):
    """`dpl train --workers N`: the Trainer whose minibatch gradients come from N Ray actors."""

    def __init__(self, args, path, *a, **kw):
        super().__init__(*a, **kw)
        if args.workers < 1:
            raise DplError(f"--workers must be at least 1, got {args.workers}")
        if args.device != "cpu":
            raise DplError("--workers trains on CPUs; it does not combine with --device gpu")
        self.ray = ray = start_ray(args.address, args.workers)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < args.workers:  # the actors would wait for CPUs for ever
            raise DplError(f"--workers {args.workers} needs a CPU for each worker; the Ray cluster has {cpus}")
        setup = {"cwd": os.getcwd(), "file": str(path.resolve()), "dtype": args.dtype, "seed": args.seed,
                 "limits": (args.max_steps, args.max_elements, args.max_nodes), "replay": not args.no_replay,
                 "set": args.set, "params": args.params and os.path.abspath(args.params),
                 "partial": args.partial, "detect_nan": args.detect_nan}
        actor = ray.remote(num_cpus=1, max_restarts=0)(Replica)
        self.actors = [actor.remote(setup) for _ in range(args.workers)]
        self.prepared = None  # the train block the replicas are at
        self.warned = False

    def gradients(self, interp, stmt, loss_fn, data, idx, unused):
        if not data:  # nothing to shard: the loss takes no rows
            if not self.warned:
                print(f"dpl: the train block of `{stmt.loss}` has no `over` rows to share out; it trains in this "
                      f"process", file=sys.stderr)
                self.warned = True
            return super().gradients(interp, stmt, loss_fn, data, idx, unused)
        ray = self.ray
        names = list(interp.params)
        shapes = [np.shape(interp.params[n]) for n in names]
        k = self.session.blocks - 1
        if self.prepared != k:
            want = ([(n, s) for n, s in zip(names, shapes)], digest(data))
            for got in self._get([a.prepare.remote(k, self.session.done, self.session.start["rng_start"])
                                  for a in self.actors]):
                if got[0] != want[0] or got[1] != want[1]:
                    what = "parameters" if got[0] != want[0] else "data"
                    raise DplError(f"a Ray worker's run of the program reaches this train block with other {what} "
                                   f"than this process (does the program read files that differ where the "
                                   f"workers run?)", stmt.span)
            self.prepared = k
        flat = ray.put(B.to_host(_cat([interp.params[n] for n in names])))
        shards = [s for s in np.array_split(np.asarray(idx), len(self.actors)) if len(s)]
        results = self._get([a.gradients.remote(flat, s) for a, s in zip(self.actors, shards)])
        rows = sum(len(s) for s in shards)
        loss, total = 0.0, None
        for s, (shard_loss, g, shard_unused) in zip(shards, results):
            w = len(s) / rows  # the mean over the minibatch from means over unequal shards
            loss += w * shard_loss
            total = w * g if total is None else total + w * g
        if unused is not None:
            unused.update(set.intersection(*(r[2] for r in results)))
        return loss, dict(zip(names, _views(B.xp.asarray(total.astype(B.float_dtype, copy=False)), shapes)))

    def _get(self, refs) -> list:
        """ray.get, with a replica's DplError raised as itself (its span points into the same program)."""
        ray = self.ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, DplError):
                raise e.cause from None
            raise
        except ray.exceptions.RayActorError as e:
            raise DplError(f"a Ray worker died during training: {e}") from None

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
