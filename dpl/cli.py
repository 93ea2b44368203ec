"""The `dpl` command: run, train, check. User errors print as FILE:LINE:COL with a caret; exit 1."""
from __future__ import annotations

import argparse
import json
import math
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


def _inspection(sub):
    """graph, gradcheck, attention: load FILE (train blocks skipped), call one function, look at it."""
    cmds = {"graph": "draw the recorded DAG of one call (DOT, SVG/PNG/PDF via Graphviz, JSON, HTML)",
            "gradcheck": "compare reverse-mode gradients of one call with finite differences (float64)",
            "attention": "heatmaps of the attention weights of one call"}
    for name, text in cmds.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("file", help="the .dpl program")
        p.add_argument("--fn", required=True, help="the function to call")
        p.add_argument("--args", nargs="*", default=[], metavar="EXPR",
                       help="its arguments, one DPL expression each, e.g. --args '[[1.0, 2.0]]' '3.0'")
        p.add_argument("--params", help="load trained parameters (.npz) first")
        p.add_argument("--seed", type=int, default=0, help="seed of uniform/normal and initializers (default 0)")
        p.add_argument("--debug", action="store_true", help="show Python tracebacks")
        p.set_defaults(dtype="float64", device="cpu")
        if name == "graph":
            p.add_argument("-o", "--out", help="output file: .svg .png .pdf (need Graphviz), .dot, .json, .html "
                                               "(default: DOT on stdout)")
            p.add_argument("--collapse", action="store_true", help="fold each function call into one box")
            p.add_argument("--format", choices=["tuple"], help="print ⟨n, l, E, f, α⟩ as text instead")
        elif name == "attention":
            p.add_argument("-o", "--out", help="image file (default: FILE's stem + .attention.png)")
        else:
            p.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted (default 1e-6)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dpl", description="DPL: a small language for differentiable programs")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a program's top-level statements (train blocks are skipped)")
    _common(run)
    run.add_argument("--params", help="load trained parameters (.npz) first")
    run.add_argument("--detect-nan", action="store_true", help="stop at the first NaN/Inf, forward or backward")
    train = sub.add_parser("train", help="run a program, training at each train block, then save the parameters")
    _common(train)
    train.add_argument("--out", help="where to write the parameters (default: FILE's stem + .params.npz)")
    train.add_argument("--epochs", type=int, help="override the epochs of every train block")
    train.add_argument("--params", help="start from these parameters (.npz)")
    train.add_argument("--metrics", help="write final loss, epochs, steps and wall seconds as JSON here")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--detect-nan", action="store_true", help="stop at the first NaN/Inf, forward or backward")
    train.add_argument("--plot", metavar="PNG", help="draw the training curve (loss per step and epoch) here")
    _inspection(sub)
    repl = sub.add_parser("repl", help="an interactive session (loads FILE first when given)")
    repl.add_argument("file", nargs="?", help="a .dpl program to load first (train blocks skipped)")
    repl.add_argument("--seed", type=int, default=0, help="seed of uniform/normal and initializers (default 0)")
    repl.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="float dtype of the session")
    repl.add_argument("--debug", action="store_true", help="show Python tracebacks")
    check = sub.add_parser("check", help="parse and resolve names without running")
    check.add_argument("file")
    check.add_argument("--debug", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # DPL's own depth limit comes first
    from .errors import DplError
    from .gradcheck import detect_nan
    try:
        with detect_nan(getattr(args, "detect_nan", False)):
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

    if args.command == "repl":
        from .repl import main as repl_main
        return repl_main(args)
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
    if args.command in ("graph", "gradcheck", "attention"):
        from .viz import inspect_command
        return inspect_command(args, path, loaded)

    if args.command == "run":
        interp = Interpreter(mode="run", seed=args.seed, loaded_params=loaded)
        interp.run_file(path)
        _warn_unused(interp)
        return 0

    from .train import make_trainer
    out = Path(args.out) if args.out else path.with_name(path.stem + ".params.npz")
    for target in (out, args.metrics and Path(args.metrics), args.plot and Path(args.plot)):
        if target and not target.parent.is_dir():  # say so before training, not after it
            raise DplError(f"cannot write {target}: the directory {target.parent} does not exist")
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
        write_atomic(args.metrics, json.dumps({"final_loss": report.final_loss if math.isfinite(report.final_loss) else None, "epochs": report.epochs,
                                               "steps": report.steps, "wall_seconds": report.seconds,
                                               "epoch_losses": report.losses}, indent=2).encode())
    if args.plot:
        from .viz import plot_losses
        plot_losses(report, args.plot)
    return 0


def _warn_unused(interp):
    if interp.loaded_params:
        print(f"dpl: warning: the params file has entries the program does not declare: "
              f"{', '.join(sorted(interp.loaded_params))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
