"""The `dpl` command: run, train, check. User errors print as FILE:LINE:COL with a caret; exit 1."""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np


DEFAULT_THREADS = 1  # measured: benchmarks/RESULTS.md, "Threads"


def _common(p):
    p.add_argument("file", help="the .dpl program")
    p.add_argument("--seed", type=int, default=0, help="seed of uniform/normal and initializers (default 0)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="float dtype of the run")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu runs on CuPy (pip install 'dpl[gpu]')")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="most loop iterations and function calls in total (each training step on its own; "
                        "default 10000000)")
    p.add_argument("--max-elements", type=int, metavar="N", help="most elements of one tensor (default 2**31)")
    p.add_argument("--max-nodes", type=int, metavar="N", help="most nodes of one recorded graph (default 5000000)")
    p.add_argument("--no-replay", action="store_true",
                   help="record every gradient call afresh instead of replaying compiled plans (same results)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="BLAS threads (default 1: small matrices run faster on one; see docs/DESIGN.md)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="bind the literal VALUE at the first top-level assignment to NAME (repeatable)")


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
            p.add_argument("--max-nodes-drawn", type=int, metavar="N",
                           help="a graph of more nodes is drawn folded: each call as one box, then runs of "
                                "consecutive boxes merged, to at most N boxes (default 500; not .json or tuple)")
            p.add_argument("--layout-timeout", type=float, metavar="SECONDS",
                           help="stop Graphviz after this long: .svg and .html are then laid out without it, "
                                ".png and .pdf stop with an error (default 60)")
        elif name == "attention":
            p.add_argument("-o", "--out", help="image file (default: FILE's stem + .attention.png)")
        else:
            p.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted (default 1e-6)")


def _sweep(sub):
    p = sub.add_parser("sweep", help="train FILE over --set configurations and seeds on Ray (pip install "
                                     "'dpl[ray]'; docs/CLUSTER.md)")
    p.add_argument("file", help="the .dpl program")
    p.add_argument("--grid", nargs="+", default=[], metavar="NAME=V1,V2",
                   help="every combination of these values of top-level assignments, e.g. lr=1e-3,1e-2 hidden=16,32")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="train each configuration with --seed 0..N-1")
    p.add_argument("--samples", type=int, metavar="N", help="N random draws from --space (each with every grid point)")
    p.add_argument("--space", nargs="+", default=[], metavar="NAME=DIST:LOW:HIGH",
                   help="distributions to draw from: uniform, loguniform, randint, e.g. lr=loguniform:1e-4:1e-1")
    p.add_argument("--scheduler", choices=["asha"], help="stop poor trials early with Ray Tune's ASHA on the "
                                                         "per-epoch losses")
    p.add_argument("--workers", type=int, metavar="N", help="trials at once (default: the CPUs of the Ray cluster)")
    p.add_argument("--address", metavar="ADDR", help="join the Ray cluster at ADDR (default: start a local Ray)")
    p.add_argument("--out", metavar="DIR", help="results directory (default: FILE's stem + .sweep)")
    p.add_argument("--epochs", type=int, help="override the epochs of every train block of every trial")
    p.add_argument("--resume", action="store_true", help="continue the sweep in DIR: run the trials not finished")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    p.set_defaults(dtype="float64", device="cpu")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    ap = argparse.ArgumentParser(prog="dpl", description="DPL: a small language for differentiable programs")
    ap.add_argument("--version", action="version", version=f"dpl {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a program's top-level statements (train blocks are skipped)")
    _common(run)
    run.add_argument("--params", help="load trained parameters (.npz) first; they must match the program's")
    run.add_argument("--partial", action="store_true",
                     help="load the --params entries that match, warn about the rest")
    run.add_argument("--detect-nan", action="store_true", help="stop at the first NaN/Inf, forward or backward")
    train = sub.add_parser("train", help="run a program, training at each train block, then save the parameters")
    _common(train)
    train.add_argument("--out", help="where to write the parameters (default: FILE's stem + .params.npz)")
    train.add_argument("--epochs", type=int, help="override the epochs of every train block")
    train.add_argument("--params", help="start from these parameters (.npz); they must match the program's")
    train.add_argument("--partial", action="store_true",
                       help="load the --params entries that match, warn about the rest")
    train.add_argument("--metrics", help="write final loss, epochs, steps, skipped steps, wall seconds and "
                                         "per-block numbers as JSON here")
    train.add_argument("--quiet", action="store_true", help="no progress bar or summary table: one line per epoch")
    train.add_argument("--checkpoint-every", type=int, metavar="N",
                       help="write a checkpoint (parameters, optimizer state, position) every N steps")
    train.add_argument("--checkpoint", metavar="PATH", help="the checkpoint file (default: --out with suffix "
                                                            ".ckpt.npz); also written on Ctrl-C and SIGTERM")
    train.add_argument("--resume", nargs="?", const="", metavar="PATH",
                       help="continue the run a checkpoint stopped (default: the --checkpoint file)")
    train.add_argument("--skip-nonfinite", action="store_true",
                       help="skip steps whose loss or gradient is NaN/Inf instead of stopping, and count them")
    train.add_argument("--detect-nan", action="store_true", help="stop at the first NaN/Inf, forward or backward")
    train.add_argument("--plot", metavar="PNG", help="draw the training curve (loss per step and epoch) here")
    train.add_argument("--attention", metavar="FN", help="after training, call the program's FN() and save the "
                       "heatmaps of the attention weights it computes (as `dpl attention --fn FN`)")
    train.add_argument("--attention-out", metavar="PNG",
                       help="where --attention saves its heatmaps (default: FILE's stem + .attention.png)")
    train.add_argument("--workers", type=int, metavar="N",
                       help="data-parallel training on N Ray actors, each on its shard of every minibatch "
                            "(pip install 'dpl[ray]'; docs/CLUSTER.md)")
    train.add_argument("--address", metavar="ADDR", help="with --workers: join the Ray cluster at ADDR "
                                                         "(default: start a local Ray)")
    _sweep(sub)
    _inspection(sub)
    repl = sub.add_parser("repl", help="an interactive session (loads FILE first when given)")
    repl.add_argument("file", nargs="?", help="a .dpl program to load first (train blocks skipped)")
    repl.add_argument("--params", help="load parameters (.npz) first; FILE's declarations take them")
    repl.add_argument("--seed", type=int, default=0, help="seed of uniform/normal and initializers (default 0)")
    repl.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="float dtype of the session")
    repl.add_argument("--debug", action="store_true", help="show Python tracebacks")
    repl.add_argument("--full", action="store_true",
                      help="show tensors whole (by default those of more than 1000 elements are summarised)")
    check = sub.add_parser("check", help="parse and resolve names without running")
    check.add_argument("file")
    check.add_argument("--debug", action="store_true")
    return ap


def _startup_interrupted() -> bool:
    """Load what every command needs while Ctrl-C is held back (dpl/__init__.py), then let it through again;
    True if it came meanwhile."""
    import dpl
    held = getattr(dpl, "_held_interrupts", None)
    if held is None:  # not started as the `dpl` command (tests, python -m dpl.cli): nothing was held
        return False
    from . import builtins, interp, train  # noqa: F401  (numpy, scipy, lark and the rest)
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return bool(held)


def main(argv=None) -> int:
    args = build_parser().parse_args(_resume_before_program(sys.argv[1:] if argv is None else list(argv)))
    if _startup_interrupted():
        print("dpl: interrupted", file=sys.stderr)
        return 130
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
    except MemoryError:  # outside any DPL call (a backward pass): what it held is released by now
        print("dpl: error: out of memory; --max-elements limits the size of one tensor, --max-nodes that of the "
              "recorded graph", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in DPL, not in the program
        if getattr(args, "debug", False):
            raise
        print(f"dpl: internal error: {type(e).__name__}: {e}\n(run again with --debug for a traceback, "
              f"and please report it)", file=sys.stderr)
        return 2


def _resume_before_program(argv: list) -> list:
    """`dpl train --resume prog.dpl`: the .dpl file is the program, not the checkpoint path (train's --resume
    takes an optional path; sweep's is a plain flag and needs no rewriting)."""
    if not argv or argv[0] != "train":
        return argv
    for i, a in enumerate(argv[:-1]):
        if a == "--resume" and argv[i + 1].endswith(".dpl"):
            return argv[:i] + ["--resume="] + argv[i + 1:]
    return argv


def _dispatch(args) -> int:
    from . import backend
    from .check import check_file
    from .errors import DplError
    from .limits import configure, seed_value

    configure(getattr(args, "max_steps", None), getattr(args, "max_elements", None),
              getattr(args, "max_nodes", None))  # defaults unless given
    if hasattr(args, "seed"):
        seed_value(args.seed)
    from . import replay
    replay.enabled = not getattr(args, "no_replay", False)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise DplError(f"--threads must be at least 1, got {threads}")
    if args.command in ("run", "train"):
        backend.limit_threads(threads or DEFAULT_THREADS)
        backend.keep_freed_memory()
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
    from .paramfile import load_params
    if args.command == "train":
        from .train import train_command
        return train_command(args, path)
    if args.command == "sweep":
        from .sweep import sweep_command
        return sweep_command(args, path)
    loaded = load_params(args.params, partial=getattr(args, "partial", False)) if args.params else None
    if args.command in ("graph", "gradcheck", "attention"):
        from .viz import inspect_command
        return inspect_command(args, path, loaded)

    interp = Interpreter(mode="run", seed=args.seed, loaded_params=loaded, overrides=args.set)
    interp.run_file(path)
    if loaded is not None:
        loaded.check()  # every difference between the file and the declared parameters, together
    return 0


if __name__ == "__main__":
    sys.exit(main())
