"""The `dpl` command: run, train, check. User errors print as FILE:LINE:COL with a caret; exit 1."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np


def _common(p):
    p.add_argument("file", help="the .dpl program")
    p.add_argument("--seed", type=int, default=0, help="seed of uniform/normal and initializers (default 0)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="float dtype of the run")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu runs on CuPy (pip install 'dpl[gpu]')")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dpl", description="DPL: a small language for differentiable programs")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a program's top-level statements (train blocks are skipped)")
    _common(run)
    run.add_argument("--params", help="load trained parameters (.npz) first")
    train = sub.add_parser("train", help="run a program, training at each train block, then save the parameters")
    _common(train)
    train.add_argument("--out", help="where to write the parameters (default: FILE's stem + .params.npz)")
    train.add_argument("--epochs", type=int, help="override the epochs of every train block")
    train.add_argument("--params", help="start from these parameters (.npz)")
    train.add_argument("--metrics", help="write final loss, epochs, steps and wall seconds as JSON here")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    check = sub.add_parser("check", help="parse and resolve names without running")
    check.add_argument("file")
    check.add_argument("--debug", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # DPL's own depth limit comes first
    from .errors import DplError
    try:
        return _dispatch(args)
    except DplError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(e.format(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dpl: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("dpl: error: the program nests too deeply (recursion)", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in DPL, not in the program
        if getattr(args, "debug", False):
            raise
        print(f"dpl: internal error: {type(e).__name__}: {e}\n(run again with --debug for a traceback, "
              f"and please report it)", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from . import backend
    from .check import check_file
    from .errors import DplError

    path = Path(args.file)
    if not path.is_file():
        raise DplError(f"no such file: {args.file}")
    if args.command == "check":
        errors = check_file(path)
        for e in errors:
            print(e.format(), file=sys.stderr)
        if not errors:
            print(f"{args.file}: ok", file=sys.stderr)
        return 1 if errors else 0

    try:
        backend.use(args.device, args.dtype)
    except RuntimeError as e:
        raise DplError(str(e)) from None
    np.seterr(all="ignore")  # inf and nan flow as values; training stops on them with a message
    errors = check_file(path)
    if errors:
        raise errors[0]

    from .interp import Interpreter
    from .paramfile import load_params, save_params
    loaded = load_params(args.params) if args.params else None

    if args.command == "run":
        interp = Interpreter(mode="run", seed=args.seed, loaded_params=loaded)
        interp.run_file(path)
        _warn_unused(interp)
        return 0

    from .train import make_trainer
    out = Path(args.out) if args.out else path.with_name(path.stem + ".params.npz")
    trainer = make_trainer(args.epochs, progress=not args.quiet,
                           on_nonfinite=lambda it: save_params(out, it.params))
    interp = Interpreter(mode="train", seed=args.seed, loaded_params=loaded, trainer=trainer)
    interp.run_file(path)
    _warn_unused(interp)
    save_params(out, interp.params)
    report = trainer.report
    print(f"trained {report.steps} steps in {report.seconds:.2f} s, final loss {report.final_loss:.6g}; "
          f"parameters saved to {out}", file=sys.stderr)
    if args.metrics:
        from .paramfile import write_atomic
        write_atomic(args.metrics, json.dumps({"final_loss": report.final_loss, "epochs": report.epochs,
                                               "steps": report.steps, "wall_seconds": report.seconds,
                                               "epoch_losses": report.losses}, indent=2).encode())
    return 0


def _warn_unused(interp):
    if interp.loaded_params:
        print(f"dpl: warning: the params file has entries the program does not declare: "
              f"{', '.join(sorted(interp.loaded_params))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
