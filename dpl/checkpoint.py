"""Checkpoints of `dpl train`: parameters, optimizer state and the position in the run, in one .npz that is
written atomically and read without pickle (the position and the generator states are JSON in a uint8 array).

Layout: `__checkpoint__` (the JSON meta), `params/NAME` (the current values), `opt.SLOT/NAME` (optimizer
state: adam's m and v, sgd's momentum buffer, rmsprop's v), `done.K/NAME` (the parameters at the end of
finished train block K), `report/losses`, `report/step_losses`, `pos/epoch_losses`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import backend as B
from .errors import DplError
from .paramfile import read_npz, write_npz

FORMAT, VERSION = "dpl-checkpoint", 1
META = "__checkpoint__"


def is_checkpoint(arrays: dict) -> bool:
    return META in arrays


def write(path, meta: dict, groups: dict[str, dict]) -> None:
    flat = {META: np.frombuffer(json.dumps(dict(meta, format=FORMAT, version=VERSION)).encode(), dtype=np.uint8)}
    for group, arrays in groups.items():
        for name, a in arrays.items():
            flat[f"{group}/{name}"] = B.to_host(a)
    write_npz(path, flat)


def read(path) -> tuple[dict, dict[str, dict]]:
    """The meta and the groups of arrays of a checkpoint file."""
    arrays = read_npz(path, "checkpoint")
    if not is_checkpoint(arrays):
        raise DplError(f"{path} is not a dpl checkpoint (a params file? `--params` loads those)")
    meta = _meta(arrays, path)
    groups: dict[str, dict] = {}
    for key, a in arrays.items():
        if key != META:
            group, _, name = key.partition("/")
            groups.setdefault(group, {})[name] = a
    problem = _invalid(meta, groups)
    if problem:
        raise DplError(f"cannot read checkpoint {path}: it is damaged ({problem})")
    return meta, groups


def _invalid(meta: dict, groups: dict) -> str:
    """What is wrong with the structure of a checkpoint (it may come from anywhere), or ''."""
    def has(d, keys, what):
        if not isinstance(d, dict) or not set(keys) <= set(d):
            raise ValueError(f"{what} lacks {', '.join(sorted(set(keys) - set(d or {})))}"
                             if isinstance(d, dict) else f"{what} is not a record")

    def numbers(d, keys, kind, what):
        for k in keys:
            if not isinstance(d[k], kind) or isinstance(d[k], bool):
                raise ValueError(f"{what}: `{k}` is not {'an integer' if kind is int else 'a number'}")

    def generator(state):
        np.random.default_rng().bit_generator.state = state  # raises on anything but a PCG64 state

    try:
        has(meta, ("fingerprint", "block", "in_block", "rng", "report", "done"), "the meta data")
        has(meta["fingerprint"], ("seed", "dtype", "epochs", "params", "files"), "the fingerprint")
        has(meta["report"], ("final_loss", "epochs", "steps", "skipped_steps", "seconds", "blocks"), "the report")
        if not isinstance(meta["block"], int) or not isinstance(meta["done"], list) or \
                len(meta["done"]) != meta["block"] or not isinstance(meta["fingerprint"]["files"], dict):
            raise ValueError("the finished blocks do not add up")
        numbers(meta["report"], ("epochs", "steps", "skipped_steps"), int, "the report")
        numbers(meta["report"], ("final_loss", "seconds"), (int, float), "the report")
        if not isinstance(meta["report"]["blocks"], list):
            raise ValueError("the report's blocks are not a list")
        for k, b in enumerate(meta["report"]["blocks"]):
            has(b, ("loss", "where", "optimizer"), f"the report of block {k + 1}")
            if not all(isinstance(b[s], str) for s in ("loss", "where", "optimizer")):
                raise ValueError(f"the report of block {k + 1} names its loss, place or optimizer wrongly")
            numbers(b, ("epochs", "steps", "skipped_steps"), int, f"the report of block {k + 1}")
            numbers(b, ("final_loss", "seconds"), (int, float), f"the report of block {k + 1}")
        generator(meta["rng"])
        for k, d in enumerate(meta["done"]):
            has(d, ("rng_start", "rng_end", "where", "loss"), f"finished block {k + 1}")
            generator(d["rng_start"])
            generator(d["rng_end"])
            if f"done.{k}" not in groups:
                raise ValueError(f"the parameters of finished block {k + 1} are missing")
        if not isinstance(meta["in_block"], bool):
            raise ValueError("`in_block` is not true or false")
        if meta["in_block"]:
            pos = meta.get("position")
            has(pos, ("epoch", "step", "shuffle_state", "rng_start", "t", "config", "epoch_skipped"), "the position")
            numbers(pos, ("epoch", "step", "t", "epoch_skipped"), int, "the position")
            generator(pos["shuffle_state"])
            generator(pos["rng_start"])
            has(pos["config"], ("epochs", "steps_per_epoch"), "the position's configuration")
            numbers(pos["config"], ("epochs", "steps_per_epoch"), int, "the position's configuration")
            if not (0 <= pos["epoch"] <= pos["config"]["epochs"] and 0 <= pos["step"] < pos["config"]
                    ["steps_per_epoch"] and pos["t"] >= 0 and pos["epoch_skipped"] >= 0):
                raise ValueError("the position is out of range")
            if "params" not in groups:
                raise ValueError("the parameters are missing")
        counts = [meta["block"]] + [meta["report"][k] for k in ("epochs", "steps", "skipped_steps")]
        if min(counts) < 0:
            raise ValueError("a count is negative")
        for k in ("losses", "step_losses"):
            a = groups.get("report", {}).get(k)
            if a is not None and (a.ndim != 1 or a.dtype.kind != "f"):
                raise ValueError(f"the report's {k} are not a list of numbers")
        a = groups.get("pos", {}).get("epoch_losses")
        if a is not None and (a.ndim != 1 or a.dtype.kind != "f"):
            raise ValueError("the epoch's losses are not a list of numbers")
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        return str(e)
    return ""


def params_of(arrays: dict, path) -> dict:
    """The current parameters in the arrays of a checkpoint (so `--params` can load one)."""
    _meta(arrays, path)
    return {k.partition("/")[2]: a for k, a in arrays.items() if k.startswith("params/")}


def _meta(arrays, path) -> dict:
    try:
        if arrays[META].dtype != np.uint8:  # written as bytes; anything else is damage
            raise ValueError(f"its bytes are stored as {arrays[META].dtype}")
        meta = json.loads(bytes(arrays[META]).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise DplError(f"cannot read checkpoint {path}: its meta data is damaged ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DplError(f"cannot read checkpoint {path}: not a version-{VERSION} dpl checkpoint")
    return meta


def digest(path) -> str:
    """The sha256 of a file's content, read in pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(args, files, digests: dict) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint to continue it exactly: the
    arguments, the --params file and the program's files (`digests` caches each file's hash, taken once)."""
    def hashed(f):
        f = Path(f).resolve()
        if f not in digests:
            digests[f] = digest(f)
        return digests[f]
    return {"seed": args.seed, "dtype": args.dtype, "epochs": args.epochs, "set": list(getattr(args, "set", [])),
            "params": hashed(args.params) if args.params else None,
            "files": {str(f): hashed(f) for f in sorted(files)}}


def differences(recorded: dict, args) -> list[str]:
    """How this run's arguments and files differ from those recorded in a checkpoint."""
    out = []
    def given(flag, value):
        return f"no {flag}" if value is None else f"{flag} {value}"
    for key in ("seed", "dtype", "epochs"):
        if recorded[key] != getattr(args, key):
            out.append(f"it was written with {given('--' + key, recorded[key])}, this run has "
                       f"{given('--' + key, getattr(args, key))}")
    if recorded.get("set", []) != list(getattr(args, "set", [])):  # absent from checkpoints before --set counted
        out.append(f"it was written with --set {recorded.get('set', [])}, this run has "
                   f"--set {list(getattr(args, 'set', []))}")
    if recorded["params"] != (digest(args.params) if args.params and Path(args.params).is_file() else None):
        out.append("its run started from other --params" if recorded["params"] else
                   "its run had no --params")
    for f, sha in recorded["files"].items():
        if not Path(f).is_file():
            out.append(f"{f} no longer exists")
        elif digest(f) != sha:
            out.append(f"{f} has changed since")
    return out
