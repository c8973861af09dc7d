"""The ``xpnn`` command line: ``xpnn train``, ``xpnn gradcheck``, ``xpnn evaluate`` and
``xpnn predict`` (the last two in their own modules).

    xpnn train                         # the book's TwoLayerNet on MNIST, 10,000 iterations
    xpnn train --dataset moons         # 2-3-2 tanh net, full-batch gradient descent
    xpnn train --gradient numerical --iters 100
    xpnn gradcheck --activation relu --hidden 8 8

Bad flags and bad values end in one line ``xpnn: error: ...`` on stderr and exit
code 2 (set ``XPNN_DEBUG=1`` to see the traceback of a library error instead).
A run that fails or is interrupted after training started still writes what it did
(history.json, model.safetensors) and says where; see ``main`` for the exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backend import BACKENDS
from ..io import checkpoint
from ..io.atomic import atomic_replace
from ..nn.mlp import MLP
from ..optim import OPTIMIZERS, make_optimizer
from ..training import TrainingDivergedError, save_resumable, train
from . import argtypes, budget, signals
from .argtypes import ACTIVATION_NAMES
from .dataspec import data_spec
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_STDOUT,
    CLIError,
    describe,
    in_flag_terms,
    one_line,
)
from .output import OutputFolder
from .threads import gemm_work, limit_threads, plan_threads

DATASETS = ("mnist", "fashion-mnist", "sign-language-digits", "moons", "spirals")
TOY = ("moons", "spirals")
TRAIN_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
ALL_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")

#: per-dataset defaults for the flags left out. MNIST's are the book's TwoLayerNet;
#: moons is the "neural network from scratch" post (lr 0.01 and reg 0.01 on summed
#: gradients over 200 points = lr 2.0 and weight decay 5e-5 on batch means); spirals
#: is the cs231n case study.
PRESETS = {
    "mnist": dict(hidden=[50], activation=["sigmoid"], lr=0.1, batch_size=100,
                  iters=10000, weight_init=0.01, weight_decay=0.0),
    "fashion-mnist": dict(hidden=[50], activation=["sigmoid"], lr=0.1, batch_size=100,
                          iters=10000, weight_init=0.01, weight_decay=0.0),
    "sign-language-digits": dict(hidden=[50], activation=["tanh"], lr=0.03, batch_size=100,
                                 iters=5000, weight_init=0.01, weight_decay=0.0),
    "moons": dict(hidden=[3], activation=["tanh"], lr=2.0, batch_size=None, iters=20000,
                  weight_init="xavier", weight_decay=5e-5),
    "spirals": dict(hidden=[100], activation=["relu"], lr=1.0, batch_size=None, iters=10000,
                    weight_init=0.01, weight_decay=1e-3),
}

#: shown when --gradient numerical picks float64 on its own
#: (measured on the TwoLayerNet at its initial weights, seed 0, the first 100 MNIST rows,
#: against the float64 backprop W1 gradient, whose entries are at most 9.45e-4 (rms
#: 1.31e-4): float32 central differences at the default h=5e-3 are off by up to 5.5e-5
#: (rms 1.2e-5), at the book's h=1e-4 by up to 2.4e-3; float64 with h=1e-5 by 7.7e-11)
FLOAT64_NOTE = (
    "note: --gradient numerical trains in float64 unless --dtype says otherwise: float32 "
    "central differences (default step h=5e-3) miss MNIST's W1 gradient by up to ~6% of "
    "its largest element, float64 (h=1e-5) by ~1e-10"
)

#: shown for --backend jax without --compile (the step then runs op by op)
JAX_EAGER_HINT = (
    "hint: without --compile JAX dispatches the step one operation at a time, which is "
    "slow; add --compile to run it as one jitted function"
)

#: shown on stderr (whatever --no-progress/--quiet say) for numerical training in float32
FLOAT32_NUMERICAL_WARNING = (
    "xpnn: warning: --gradient numerical in float32 (central differences with step "
    "{h:g}) is coarse: on MNIST's W1 the default step 5e-3 misses by up to ~6% of the "
    "largest gradient element, and steps below sqrt(eps) = 3.5e-4 by more than the "
    "gradient itself; use --dtype float64"
)
#: how the trainer's own line about the same thing starts (not repeated)
_TRAINER_FLOAT32_NOTE = "note: numerical gradients in float32"

#: input width and rows (train, test) of the fixed-size datasets, for the estimate
_DATASET_SHAPES = {"mnist": (784, 60000, 10000), "fashion-mnist": (784, 60000, 10000)}
_SIGN_LANGUAGE_IMAGES = 2062  # all ten classes, before the train/test split
SIGN_LANGUAGE_IMAGE_SIZE = 64
TOY_NOISE = 0.2
#: how the parser's description names the BACKENDS (a name missing here is shown as is)
_BACKEND_TITLES = {"numpy": "NumPy", "array_api_strict": "array-api-strict",
                   "torch": "PyTorch", "cupy": "CuPy", "jax": "JAX"}
TOY_SAMPLES = {"moons": 200, "spirals": 300}  # --samples left out
_TOY_CLASSES = {"moons": 2, "spirals": 3}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr: ``xpnn: error: ...``."""

    def error(self, message):
        self.exit(2, f"xpnn: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already names its default
    or there is nothing to show (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        if isinstance(default, list):
            default = " ".join(map(str, default)) or "none"
        return f"{text} (default: {default})"


# ------------------------------------------------------------------ parser


_EXIT_CODES = (
    "exit codes: 0 done; 1 the run failed (diverged, out of memory, GPU or I/O error) or a\n"
    "gradient check did not pass; 2 bad flags or values, missing backend or data;\n"
    "74 stdout could not be written (e.g. a full disk; the run went on and wrote its files);\n"
    "128+N stopped by signal N: 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP;\n"
    "141 stdout closed early (e.g. '| head -1')."
)

_LIMITS = (
    "after training started, a failure, Ctrl-C, SIGTERM or SIGHUP still writes history.json\n"
    "and model.safetensors (the last good parameters) for what was done, and says where;\n"
    "when --out holds an earlier run (refused without --overwrite), into --out/partial/, so\n"
    "that only a run that completes replaces it. A run whose memory estimate (data +\n"
    "parameters, gradients, optimizer state + activations of one batch) "
    f"exceeds {budget.human_bytes(budget.MAX_RUN_BYTES)} is refused before anything\n"
    "is allocated, naming the flag to shrink (--hidden, --samples, --image-size, "
    "--batch-size)."
)


def _add_backend_flags(p, dtype_help: str):
    p.add_argument("--backend", default=None,
                   help=f"array backend: {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]} "
                        "(default: $XPNN_BACKEND, else numpy)")
    p.add_argument("--device", default=None,
                   help="device of the backend, e.g. cpu, cuda, cuda:1 (default: the "
                        "backend's default device)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None, help=dtype_help)


def _add_threads_flag(p):
    p.add_argument("--threads", type=argtypes.nonneg_int, default=None, metavar="N",
                   help="BLAS/OpenMP threads (threadpoolctl), or 0 to leave the pools as "
                        "they are (default: 1 for small matrix products such as the "
                        "book's net, else the cores not already busy; see the banner)")


def _preset_table() -> str:
    rows = ["per-dataset defaults (used for the flags you leave out):"]
    for name, p in PRESETS.items():
        bs = "full" if p["batch_size"] is None else p["batch_size"]
        rows.append(
            f"  {name:<21} hidden {' '.join(map(str, p['hidden']))}, {p['activation'][0]}, "
            f"init {p['weight_init']}, lr {p['lr']}, batch {bs}, {p['iters']} iterations"
            + (f", weight decay {p['weight_decay']:g}" if p["weight_decay"] else "")
        )
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xpnn",
        formatter_class=_Formatter,
        description="Train and check the from-scratch MLP on any array-API backend\n("
                    + ", ".join(_BACKEND_TITLES.get(b, b) for b in BACKENDS) + ").",
        epilog="examples:\n"
               "  xpnn train                                 # TwoLayerNet on MNIST (the book)\n"
               "  xpnn train --dataset moons --hidden 5      # decision boundary in runs/\n"
               "  xpnn train --backend torch --device cuda   # the same network on a GPU\n"
               "  xpnn gradcheck --activation relu           # backprop vs central differences\n"
               "  xpnn evaluate runs/mnist-<time>            # loss, accuracy, confusion matrix\n"
               "  xpnn predict runs/mnist-<time> digit.png   # label and class probabilities\n"
               "\ndata: MNIST files are read from --data-dir, else $XPNN_DATA_DIR/mnist, else\n"
               "the cache ~/.cache/xpnn/mnist (downloaded when missing).\n"
               "set XPNN_DEBUG=1 to get tracebacks instead of one-line errors.\n"
               "\n" + _EXIT_CODES,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"xpnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---- train
    t = sub.add_parser(
        "train", formatter_class=_Formatter,
        help="train an MLP on a dataset and write history.json, curves.png, "
             "model.safetensors",
        description="Train an MLP and write history.json, curves.png, model.safetensors (and\n"
                    "decision_boundary.png for the 2-D datasets) into --out.\n"
                    "With no flags: the book's TwoLayerNet 784-50-10 (sigmoid, init std "
                    "0.01,\nSGD lr 0.1, batch 100, 10,000 iterations) on MNIST.",
        epilog=_preset_table() + "\n\n" + _LIMITS + "\n\n" + _EXIT_CODES,
    )
    g = t.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="mnist", help="what to train on")
    g.add_argument("--data-dir", default=None,
                   help="folder holding mnist/, fashion-mnist/, sign-language-digits/ "
                        "(or the dataset's own folder) (default: $XPNN_DATA_DIR, else the "
                        "cache ~/.cache/xpnn)")
    g.add_argument("--no-download", action="store_true",
                   help="fail instead of downloading missing MNIST/Fashion-MNIST files")
    g.add_argument("--classes", type=argtypes.nonneg_int, nargs="+", default=None, metavar="K",
                   help="sign-language-digits: the digits to keep, relabelled 0..k-1 in "
                        "this order, e.g. --classes 0 1 (default: all ten)")
    g.add_argument("--image-size", type=argtypes.positive_int, default=None, metavar="SIZE",
                   help="sign-language-digits: images are resized to SIZE x SIZE "
                        f"(default: {SIGN_LANGUAGE_IMAGE_SIZE})")
    g.add_argument("--samples", type=argtypes.positive_int, default=None,
                   help="moons/spirals: number of points (default: "
                        + ", ".join(f"{k} {v}" for k, v in TOY_SAMPLES.items())
                        + "); a test set of the same size is drawn with seed+1")
    g.add_argument("--noise", type=argtypes.nonneg_float, default=None,
                   help=f"moons/spirals: Gaussian noise std (default: {TOY_NOISE})")

    g = t.add_argument_group("network")
    h = g.add_mutually_exclusive_group()
    h.add_argument("--hidden", type=argtypes.positive_int, nargs="+", default=None, metavar="WIDTH",
                   help="hidden layer widths, e.g. --hidden 150 150 150 (default: per "
                        "dataset, 50 for MNIST)")
    h.add_argument("--no-hidden", action="store_true",
                   help="no hidden layer: logistic/softmax regression")
    g.add_argument("--activation", type=argtypes.activation, nargs="+", default=None,
                   metavar="NAME",
                   help="one activation for all hidden layers or one per hidden layer: "
                        f"{', '.join(ACTIVATION_NAMES)} (default: per dataset, sigmoid for "
                        "MNIST)")
    g.add_argument("--loss", choices=TRAIN_LOSSES, default="softmax_cross_entropy",
                   help="binary_cross_entropy needs a 2-class task and gives the last "
                        "layer 1 unit")
    g.add_argument("--weight-init", type=argtypes.weight_init, default=None,
                   metavar="STD|xavier|he",
                   help="std of the initial Gaussian weights, or xavier (sqrt(1/n_in)) or "
                        "he (sqrt(2/n_in)) (default: per dataset, 0.01 for MNIST)")
    g.add_argument("--weight-decay", type=argtypes.nonneg_float, default=None,
                   help="L2 penalty 0.5*wd*sum(W^2) on the weights (default: per dataset, 0 "
                        "for MNIST)")

    g = t.add_argument_group("training")
    g.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd", help="update rule")
    g.add_argument("--lr", type=argtypes.positive_float, default=None,
                   help="learning rate (default: per dataset, 0.1 for MNIST)")
    g.add_argument("--batch-size", type=argtypes.batch_size, default=None, metavar="N|full",
                   help="minibatch size, or 'full' for full-batch gradient descent "
                        "(default: per dataset, 100 for MNIST)")
    it = g.add_mutually_exclusive_group()
    it.add_argument("--iters", type=argtypes.positive_int, default=None,
                    help="number of updates (default: per dataset, 10000 for MNIST)")
    it.add_argument("--epochs", type=argtypes.positive_float, default=None,
                    help="number of passes over the training set, instead of --iters; "
                         "fractions too, e.g. 0.5 (rounded to whole iterations, at least 1)")
    g.add_argument("--gradient", choices=("backprop", "numerical"), default="backprop",
                   help="how gradients are computed; numerical = central differences "
                        "(slow: the book's 17-hour run)")
    g.add_argument("--h", type=argtypes.positive_float, default=None,
                   help="step of the central differences (default: 1e-5 in float64, 5e-3 "
                        "in float32)")
    g.add_argument("--seed", type=argtypes.nonneg_int, default=0,
                   help="seed (>= 0) of the initial weights, the batch order, the toy data "
                        "and the sign-language train/test split")
    g.add_argument("--compile", nargs="?", const=True, default=False,
                   choices=("graph", "fused", "reduce-overhead"), metavar="MODE",
                   help="compile the training step with the backend's compiler "
                        "(xpnn.train(compile=True)); on CUDA optionally a MODE: graph "
                        "(the default there), fused or reduce-overhead (PyTorch only)")
    g.add_argument("--eval-every", type=argtypes.positive_int, default=None, metavar="ITERS",
                   help="evaluate train/test loss and accuracy every ITERS iterations "
                        "(default: the trainer's: once per epoch; full-batch runs: 100 "
                        "evaluations in all)")
    _add_backend_flags(
        g, "floating dtype of parameters and data (default: float32; float64 with "
           "--gradient numerical)")
    _add_threads_flag(g)

    g = t.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: runs/<dataset>-<timestamp>)")
    g.add_argument("--overwrite", action="store_true",
                   help="let --out hold an earlier run (history.json, model file): a run "
                        "that completes replaces its files; one that fails or is "
                        "interrupted writes into --out/partial/ instead")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run whose model.safetensors is in DIR (interrupted, "
                        "failed or finished) with its own flags, writing into DIR (or "
                        "--out); flags given again must agree, except --iters/--epochs "
                        "(the whole run's length), --lr, --backend, --device, --compile "
                        "and the output flags")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--quiet", action="store_true",
                   help="print only the final summary line (implies --no-progress)")
    from ..dist.cli import add_dist_flags

    add_dist_flags(t)
    t.set_defaults(func=cmd_train)
    parser.commands = {"train": t}  # for _resumed_args

    # ---- gradcheck
    c = sub.add_parser(
        "gradcheck", formatter_class=_Formatter,
        help="compare backprop with numerical gradients on a small network",
        description="Build a small MLP on random data and compare its backprop gradient\n"
                    "with central differences, parameter by parameter.\n"
                    "Exit code 0 when every parameter passes, 1 otherwise.",
    )
    c.add_argument("--hidden", type=argtypes.positive_int, nargs="*", default=[10], metavar="WIDTH",
                   help="hidden layer widths (give none for no hidden layer)")
    c.add_argument("--inputs", type=argtypes.positive_int, default=4, help="input features")
    c.add_argument("--classes", type=argtypes.positive_int, default=3,
                   help="outputs (classes) for softmax_cross_entropy and mse; "
                        "binary_cross_entropy always has 1")
    c.add_argument("--activation", type=argtypes.activation, nargs="+", default=["sigmoid"],
                   metavar="NAME", help="one activation, or one per hidden layer")
    c.add_argument("--loss", choices=ALL_LOSSES, default="softmax_cross_entropy",
                   help="output loss")
    c.add_argument("--weight-init", type=argtypes.weight_init, default="xavier",
                   metavar="STD|xavier|he", help="initial weights")
    c.add_argument("--weight-decay", type=argtypes.nonneg_float, default=0.0, help="L2 penalty")
    c.add_argument("--batch", type=argtypes.positive_int, default=8, help="rows of random data")
    c.add_argument("--seed", type=argtypes.nonneg_int, default=0,
                   help="seed (>= 0) of weights and data")
    c.add_argument("--h", type=argtypes.positive_float, default=None,
                   help="central-difference step (default 1e-5; the comparison runs in "
                        "float64, a float32 net through a float64 copy)")
    c.add_argument("--threshold", type=argtypes.positive_float, default=None,
                   help="largest max relative error that passes (default: 1e-7, the "
                        "float64 comparison's)")
    c.add_argument("--atol", type=argtypes.nonneg_float, default=None,
                   help="absolute error that passes whatever the relative error, for "
                        "elements whose gradient is near zero (default: 10*eps*max(1,|loss|)/h, "
                        "ten times the central difference's rounding noise; 0 turns it off)")
    c.add_argument("--method", choices=("batched", "loop"), default="batched",
                   help="numerical gradient: broadcast ('batched') or element by element")
    _add_backend_flags(c, "floating dtype (default: float64)")
    _add_threads_flag(c)
    c.set_defaults(func=cmd_gradcheck)
    from . import evaluate, predict  # they import this module

    evaluate.add_parser(sub)
    predict.add_parser(sub)
    return parser


# ------------------------------------------------------------------ train


def _say(args, *parts):
    if not args.quiet:
        print(*parts, flush=True)


def _resolve_train_config(args) -> dict:
    """Fill the flags left out from the dataset's preset; check combinations."""
    preset = PRESETS[args.dataset]
    cfg = {}
    cfg["hidden"] = [] if args.no_hidden else (args.hidden or list(preset["hidden"]))
    if args.activation is None:
        cfg["activation"] = preset["activation"][0]
    elif len(args.activation) == 1:
        cfg["activation"] = args.activation[0]
    else:
        if len(args.activation) != len(cfg["hidden"]):
            raise CLIError(
                f"got {len(args.activation)} activations for {len(cfg['hidden'])} hidden "
                f"layers; give one name or one per hidden layer"
            )
        cfg["activation"] = list(args.activation)
    cfg["lr"] = args.lr if args.lr is not None else preset["lr"]
    if args.batch_size is None:
        cfg["batch_size"] = preset["batch_size"]
    else:
        cfg["batch_size"] = None if args.batch_size == "full" else args.batch_size
    cfg["weight_init"] = args.weight_init if args.weight_init is not None else preset["weight_init"]
    cfg["weight_decay"] = (
        args.weight_decay if args.weight_decay is not None else preset["weight_decay"]
    )
    if args.epochs is not None:
        cfg["iters"], cfg["epochs"] = None, args.epochs
    else:
        cfg["iters"], cfg["epochs"] = (args.iters or preset["iters"]), None
    cfg["dtype_defaulted"] = args.dtype is None
    cfg["dtype"] = args.dtype or ("float64" if args.gradient == "numerical" else "float32")
    if args.classes is not None and args.dataset != "sign-language-digits":
        raise CLIError("--classes applies to --dataset sign-language-digits only")
    for flag, value, datasets in (("--samples", args.samples, TOY),
                                  ("--noise", args.noise, TOY),
                                  ("--image-size", args.image_size, ("sign-language-digits",))):
        if value is not None and args.dataset not in datasets:
            raise CLIError(f"{flag} applies to --dataset {' or '.join(datasets)} only")
    if args.image_size is None:
        args.image_size = SIGN_LANGUAGE_IMAGE_SIZE
    if args.noise is None:
        args.noise = TOY_NOISE
    if args.samples is None and args.dataset in TOY:
        args.samples = TOY_SAMPLES[args.dataset]
    if args.h is not None and args.gradient != "numerical":
        raise CLIError("--h applies to --gradient numerical only")
    if args.classes is not None:
        _check_sign_language_classes(args.classes)
    return cfg


def _check_sign_language_classes(classes) -> None:
    if len(classes) < 2:
        raise CLIError(
            f"--classes needs at least 2 digits to tell apart, got {len(classes)} "
            f"({' '.join(map(str, classes))}); e.g. --classes 0 1"
        )
    if len(set(classes)) != len(classes):
        raise CLIError(f"--classes repeats a digit: {' '.join(map(str, classes))}")
    bad = [c for c in classes if c > 9]
    if bad:
        raise CLIError(f"--classes takes digits 0..9, got {' '.join(map(str, bad))}")


def _dataset_path(data_dir, folder: str):
    """--data-dir may be the root (holding mnist/ ...) or the dataset's own folder."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir!r} is not a folder")
    return root / folder if (root / folder).is_dir() else root


def _load_data(args, cfg, backend, device):
    """-> (x_train, t_train), (x_test, t_test), for flags filled in by
    ``_resolve_train_config``."""
    from ..data import datasets

    dtype = cfg["dtype"]
    name = args.dataset
    if name in ("mnist", "fashion-mnist"):
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        train, test = loader(
            path=_dataset_path(args.data_dir, name), download=not args.no_download,
            backend=backend, device=device, dtype=dtype,
        )
        return train, test
    if name == "sign-language-digits":
        train, test = datasets.load_sign_language_digits(
            path=_dataset_path(args.data_dir, name), classes=args.classes, seed=args.seed,
            size=args.image_size, backend=backend, device=device, dtype=dtype,
        )
        return train, test
    make = datasets.make_moons if name == "moons" else datasets.make_spirals
    kw = dict(n_samples=args.samples, noise=args.noise, backend=backend, device=device,
              dtype=dtype)
    return make(seed=args.seed, **kw), make(seed=args.seed + 1, **kw)


def _rows_words(x_train, x_test, dist) -> str:
    """The data's rows for the banner: the whole run's, and under data-parallel MPI
    how they are split over the ranks."""
    n_train, n_test = int(x_train.shape[0]), int(x_test.shape[0])
    words = f"{n_train} train, {n_test} test"
    if dist.comm is None or dist.size == 1:
        return words
    from ..dist.comm import shard_range

    def each(n):
        counts = {b - a for a, b in (shard_range(n, r, dist.size) for r in range(dist.size))}
        return " or ".join(str(c) for c in sorted(counts, reverse=True))

    return (f"{words}, split over {dist.size} MPI ranks: {each(n_train)} train and "
            f"{each(n_test)} test rows each")


def _batch_words(batch_size, dist) -> str:
    if batch_size is None:
        return "full batch"
    if dist.comm is None or dist.size == 1:
        return f"batch {batch_size}"
    return f"batch {batch_size * dist.size} ({batch_size} per rank)"


def _default_out(dataset: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{dataset}-{stamp}"
    k = 2
    while out.exists():
        out = Path("runs") / f"{dataset}-{stamp}-{k}"
        k += 1
    return out


def _fmt(v, digits=4):
    return f"{float(v):.{digits}f}"


def _train_estimate(args, cfg, n_classes: int, n_out: int) -> budget.Estimate:
    """Memory estimate of the run from the flags alone (before loading anything)."""
    name = args.dataset
    if name in _DATASET_SHAPES:
        n_in, n_train, n_test = _DATASET_SHAPES[name]
        data_flags = []  # fixed size
    elif name == "sign-language-digits":
        n_in = args.image_size ** 2
        n_rows = _SIGN_LANGUAGE_IMAGES * n_classes // 10
        n_test = n_rows // 5  # the loader's default test_size=0.2
        n_train = n_rows - n_test
        data_flags = ["--image-size"]
    else:
        n_in, n_train = 2, args.samples
        n_test = n_train
        data_flags = ["--samples"]
    batch = n_train if cfg["batch_size"] is None else min(cfg["batch_size"], n_train)
    width_flags = ["--hidden"] + (["--image-size"] if name == "sign-language-digits" else [])
    if batch <= budget.EVAL_CHUNK:
        rows_flags = []  # the evaluation chunk is the largest batch
    elif cfg["batch_size"] is None and name in TOY:  # full batch: every point at once
        rows_flags = ["--samples", "--batch-size"]
    else:
        rows_flags = ["--batch-size"]
    rows = max(batch, min(budget.EVAL_CHUNK, max(n_train, n_test)))
    return budget.estimate(
        [n_in, *cfg["hidden"], n_out], n_train, n_test, rows,
        itemsize=8 if cfg["dtype"] == "float64" else 4, optimizer=args.optimizer,
        data_flags=data_flags, width_flags=width_flags, rows_flags=rows_flags,
    )


def _n_classes(args) -> int:
    """Classes of --dataset (sign-language-digits: those kept by --classes)."""
    if args.dataset == "sign-language-digits":
        return len(args.classes) if args.classes else 10
    return _TOY_CLASSES.get(args.dataset, 10)


def _trainer_log(args, warned_float32: bool):
    """The ``log`` handed to xpnn.train: stdout, library wording in flag terms, and the
    trainer's float32 note dropped when the CLI has already warned on stderr."""
    if args.quiet:
        return lambda *parts, **kwargs: None

    def log(*parts, **kwargs):
        text = " ".join(map(str, parts))
        if text.startswith(_TRAINER_FLOAT32_NOTE):
            if warned_float32:
                return
            text = in_flag_terms(text)
        print(text, flush=True)

    return log


#: flags (argparse dests) that --resume lets differ from the run's own: the run's
#: length, its rate, where and how it runs, where it writes
RESUME_MAY_CHANGE = ("iters", "epochs", "lr", "backend", "device", "compile", "out",
                     "no_progress", "quiet", "data_dir", "no_download", "workers",
                     "scheduler", "threads", "resume", "overwrite")
#: dests that are not flags of the run (set by argparse or by xpnn)
_NOT_FLAGS = ("command", "func", "argv", "resume", "resumed_at", "memory_hint", "run_flags")


def _run_flags(args) -> dict:
    """The train flags' values (JSON types), as --resume reuses them."""
    return {k: v for k, v in vars(args).items() if k not in _NOT_FLAGS}


def _resume_file(where) -> Path:
    path = Path(where).expanduser()
    return path / "model.safetensors" if path.is_dir() else path


def _resumed_args(parser, args, argv):
    """``args`` for ``xpnn train --resume DIR ...``: the flags saved with DIR's run,
    with those given now on top (a given flag outside RESUME_MAY_CHANGE must agree)."""
    path = _resume_file(args.resume)
    if not path.exists():
        raise CLIError(f"--resume {args.resume!r}: no model.safetensors there to resume")
    meta = checkpoint.read_checkpoint(path).extra_meta
    saved = meta.get("cli", {}).get("args") if isinstance(meta.get("cli"), dict) else None
    if "resume" not in meta or not isinstance(saved, dict):
        raise CLIError(f"--resume: {path} holds no run to resume (it was not written by "
                       f"'xpnn train' with its training state)")
    train_parser = parser.commands["train"]
    unset = object()  # every default: what is not unset was on the command line
    train_parser.set_defaults(**{k: unset for k in vars(args)})
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not unset}
    merged = dict(saved)
    for key, value in given.items():
        if key in _NOT_FLAGS:
            continue
        if key not in RESUME_MAY_CHANGE and value != saved.get(key):
            flag = "--" + key.replace("_", "-")
            was = (f"{flag} {_shown_flag(saved[key])}" if saved.get(key) not in (None, False)
                   else f"no {flag}")
            raise CLIError(f"--resume: {flag} {_shown_flag(value)} differs from the run being "
                           f"resumed ({was}); leave it out (the run's own flags are used)")
        merged[key] = value
    if "iters" in given:
        merged["epochs"] = None
    elif "epochs" in given:
        merged["iters"] = None
    out = given.get("out") or str(path.parent)
    # continuing a run in its own folder replaces its files once the resumed run
    # completes; a resumed run that fails or is interrupted writes into partial/ there
    # (the --overwrite policy), so the checkpoint resumed from is never lost
    overwrite = given.get("overwrite", False) or Path(out).resolve() == path.parent.resolve()
    return argparse.Namespace(**{**merged, "out": out, "overwrite": overwrite,
                                 "resume": str(path), "argv": argv,
                                 "resumed_at": meta["resume"].get("iteration"),
                                 "command": "train", "func": cmd_train})


def _shown_flag(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _save_model(path, net, source, cli_meta: dict):
    """model.safetensors with the run's data record (``xpnn evaluate`` reads it) and,
    where the trainer attached one, its training state and flags (``--resume``)."""
    if getattr(source, "training_state", None) is None:
        return checkpoint.save(net, path, extra_meta={"data": cli_meta["data"]})
    return save_resumable(path, net, source,
                          extra_meta={"data": cli_meta["data"], "cli": cli_meta})


def _save_partial(exc, net, out: OutputFolder, cli_meta: dict):
    """Write history.json and model.safetensors for a run that ended by ``exc`` after
    training started (``exc.history``, attached by xpnn.train), into
    ``out.partial_folder()`` (never over an earlier run's files); return the note for
    the error line, or None when the trainer recorded nothing. A second signal
    meanwhile does not cut it short."""
    history = getattr(exc, "history", None)
    if history is None or not len(history):
        return None
    if isinstance(exc, signals.Interrupted) and exc.signum != signals.signal.SIGINT:
        reason = f"interrupted by {exc.signame}"
    elif isinstance(exc, KeyboardInterrupt):
        reason = "interrupted"
    elif isinstance(exc, TrainingDivergedError):
        reason = "diverged"
    else:
        reason = "error"
    cli = dict(cli_meta, stopped=reason, error=f"{type(exc).__name__}: {one_line(exc)}")
    history.meta["cli"] = cli
    folder = out
    try:
        with signals.deferred(raise_held=False):
            folder = out.partial_folder()
            history.save_json(folder / "history.json")
            _save_model(folder / "model.safetensors", net, exc, cli)
    except Exception as save_error:  # report the run's own error, and this one
        return f"could not save the partial run to {folder} ({one_line(save_error)})"
    if isinstance(exc, TrainingDivergedError):
        done = None  # the error message says where it diverged
        at = history.meta.get("restored_iteration")
    else:  # xpnn.train leaves the net at the last completed step
        done = at = history.meta.get("interrupted_at")
    params = "the last parameters" if at is None else f"the parameters after iteration {at}"
    evaluations = f"{len(history)} evaluation" + ("s" if len(history) != 1 else "")
    wrote = (f"wrote history.json ({evaluations}, the last at iteration "
             f"{history.iteration[-1]}) and model.safetensors ({params}) to {folder}")
    return (f"stopped after iteration {done}; " if done is not None else "") + wrote


def _save_completed(history, net, out: OutputFolder, cli_meta: dict) -> None:
    """Write a completed run's history.json and model.safetensors into ``out``. Over an
    earlier run (--overwrite) both are first written into a fresh hidden folder in
    ``out`` and then moved into place, so that a failed write (a full disk) leaves the
    earlier run's pair intact (and an earlier partial/ untouched)."""
    if not out.earlier_run:
        history.save_json(out / "history.json")
        _save_model(out / "model.safetensors", net, history, cli_meta)
        return
    stage = Path(tempfile.mkdtemp(dir=out.path, prefix=".xpnn-new-"))
    try:
        history.save_json(stage / "history.json")
        _save_model(stage / "model.safetensors", net, history, cli_meta)
        for name in ("model.safetensors", "history.json"):
            atomic_replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cmd_train(args) -> int:
    from ..dist.cli import dist_setup

    with dist_setup(args, gradient=args.gradient) as dist:
        return _train_as(args, dist)


def _train_as(args, dist) -> int:
    """``xpnn train`` in this process: alone, or as one rank of ``dist`` (xpnn.dist.cli)."""
    args.run_flags = _run_flags(args)  # before the presets fill them in
    cfg = _resolve_train_config(args)
    if not dist.is_root:  # rank 0 alone prints and writes,
        args.quiet = True
        # and alone stops on a signal, then ends the others (MPI_Abort kills them)
        signals.ignore_stop_signals(signals.NAMES)
    if args.quiet:
        args.no_progress = True
    n_classes = _n_classes(args)
    if args.loss == "binary_cross_entropy" and n_classes != 2:
        raise CLIError(
            f"binary_cross_entropy needs a 2-class task but {args.dataset} has {n_classes} "
            f"classes" + (" (pick two with --classes A B)"
                          if args.dataset == "sign-language-digits" else "")
        )
    n_out = 1 if args.loss == "binary_cross_entropy" else n_classes
    estimate = _train_estimate(args, cfg, n_classes, n_out)
    budget.check(estimate)
    args.memory_hint = estimate.hint()

    out = OutputFolder(args.out if args.out else _default_out(args.dataset))
    if dist.is_root:
        out.prepare(holds_runs=True, overwrite=args.overwrite)
    try:
        return _run_training(args, cfg, n_out, out, dist)
    except BaseException:
        if dist.is_root:
            out.discard()  # only while empty: an error before anything was written
        raise


def _run_training(args, cfg, n_out: int, out: OutputFolder, dist) -> int:
    if args.gradient == "numerical" and cfg["dtype_defaulted"]:
        _say(args, FLOAT64_NOTE)
    (x_tr, t_tr), (x_te, t_te) = _load_data(args, cfg, args.backend, args.device)
    x_all, t_all, x_te_all = x_tr, t_tr, x_te  # the plot and the banner's totals
    x_tr, t_tr = dist.shard(x_tr, t_tr)  # data-parallel: this rank's rows (else all)
    x_te, t_te = dist.shard(x_te, t_te)
    sizes = [int(x_tr.shape[1]), *cfg["hidden"], n_out]
    net = MLP(
        sizes, activation=cfg["activation"], loss=args.loss, weight_init=cfg["weight_init"],
        weight_decay=cfg["weight_decay"], backend=args.backend, device=args.device,
        dtype=cfg["dtype"], seed=args.seed,
    )
    optimizer = make_optimizer(args.optimizer, lr=cfg["lr"])
    n_train = int(x_tr.shape[0])
    eval_every = args.eval_every
    if eval_every is None and (cfg["batch_size"] is None or cfg["batch_size"] >= n_train):
        total = cfg["iters"] if cfg["iters"] is not None else cfg["epochs"]
        eval_every = max(1, int(total // 100))
    elif eval_every is None and dist.comm is not None:
        # one epoch of the largest shard, the same on every rank: the trainer's default
        # (an epoch of each rank's own shard) differs between unequal shards
        from ..dist.comm import shard_range

        first, stop = shard_range(int(x_all.shape[0]), 0, dist.size)
        eval_every = -(-(stop - first) // cfg["batch_size"])
    length = (f"{cfg['iters']} iterations" if cfg["iters"] is not None
              else f"{cfg['epochs']:g} epoch{'s' if cfg['epochs'] != 1 else ''}")
    rows = n_train if cfg["batch_size"] is None else min(cfg["batch_size"], n_train)
    n_threads, threads_note = plan_threads(args.threads, gemm_work(sizes, rows), dist.size)
    _say(args,
         f"xpnn train: {args.dataset} ({_rows_words(x_all, x_te_all, dist)}) on "
         f"{net.backend} {net.dtype_name}, sizes {sizes}, "
         f"{cfg['activation'] if sizes[1:-1] else 'no hidden layer'}, {args.optimizer} "
         f"lr {cfg['lr']:g}, {_batch_words(cfg['batch_size'], dist)}, {length}, "
         f"{args.gradient} gradients, {threads_note}"
         + (f"; resuming {args.resume} at iteration {args.resumed_at}"
            if getattr(args, "resume", None) else ""))
    if net.backend == "jax" and not args.compile and args.gradient == "backprop":
        _say(args, JAX_EAGER_HINT)
    warned_float32 = args.gradient == "numerical" and net.dtype_name == "float32"
    if warned_float32 and dist.is_root:
        h = args.h if args.h is not None else net.default_h()
        print(FLOAT32_NUMERICAL_WARNING.format(h=h), file=sys.stderr, flush=True)

    cli_meta = {
        "argv": args.argv, "args": args.run_flags, "dataset": args.dataset, "sizes": sizes,
        "data": data_spec(args),
        **{k: v for k, v in cfg.items() if k != "dtype_defaulted"},
    }
    start = time.perf_counter()
    try:
        with limit_threads(n_threads):
            history = train(
                net, (x_tr, t_tr), (x_te, t_te), optimizer=optimizer,
                batch_size=cfg["batch_size"], iters=cfg["iters"], epochs=cfg["epochs"],
                gradient=args.gradient, eval_every=eval_every, seed=args.seed,
                progress=not args.no_progress, h=args.h,
                log=_trainer_log(args, warned_float32), compile=args.compile,
                comm=dist.comm, executor=dist.executor,
                resume=getattr(args, "resume", None),
            )
    except BaseException as exc:
        note = _save_partial(exc, net, out, cli_meta) if dist.is_root else None
        if note:
            exc.xpnn_saved = note
        raise
    wall = time.perf_counter() - start
    if not dist.is_root:
        return 0

    history.meta.setdefault("cli", cli_meta)
    try:
        with signals.deferred():  # a signal meanwhile waits until both are written
            _save_completed(history, net, out, cli_meta)
    except KeyboardInterrupt as exc:  # a signal held while writing: the run is complete
        exc.xpnn_saved = ("after the run completed; wrote history.json and model.safetensors "
                          f"to {out}")
        raise
    written = ["history.json", "model.safetensors"]
    try:
        from .. import plotting

        title = f"{args.dataset}: {sizes} {net.backend} {net.dtype_name}"
        plotting.plot_history(history, out / "curves.png", title=title)
        written.append("curves.png")
        if args.dataset in TOY:
            plotting.plot_decision_boundary(net, x_all, t_all, out / "decision_boundary.png")
            written.append("decision_boundary.png")
    except ImportError as exc:
        print(f"xpnn: warning: no plots ({exc})", file=sys.stderr)
    except BaseException as exc:
        exc.xpnn_saved = f"{' and '.join(written)} were written to {out}"
        raise

    # xpnn.train always evaluates at the last iteration, with accuracy (both TRAIN_LOSSES
    # have it) and the test set, over all ranks' shards
    m = history.final
    print(
        f"{args.dataset}: {net.backend} {net.dtype_name}, {m['iteration']} iterations in "
        f"{wall:.1f} s, train acc {_fmt(m['train_acc'])}, test acc "
        f"{_fmt(m['test_acc'])} (loss {_fmt(m['train_loss'])} / "
        f"{_fmt(m['test_loss'])}) -> {out}",
        flush=True,
    )
    return 0


# ------------------------------------------------------------------ gradcheck


def cmd_gradcheck(args) -> int:
    from ..backend import asarray
    from ..nn.gradcheck import gradient_check

    dtype = args.dtype or "float64"
    hidden = list(args.hidden)
    activation = args.activation[0] if len(args.activation) == 1 else list(args.activation)
    n_out = 1 if args.loss == "binary_cross_entropy" else args.classes
    if args.loss == "softmax_cross_entropy" and n_out < 2:
        raise CLIError("softmax_cross_entropy needs --classes >= 2")
    sizes = [args.inputs, *hidden, n_out]
    estimate = budget.estimate(
        sizes, args.batch, 0, args.batch, itemsize=8 if dtype == "float64" else 4,
        optimizer="sgd", data_flags=["--batch", "--inputs"],
        width_flags=["--hidden", "--inputs", "--classes"], rows_flags=["--batch"],
    )
    budget.check(estimate)
    args.memory_hint = estimate.hint()
    net = MLP(sizes, activation=activation, loss=args.loss, weight_init=args.weight_init,
              weight_decay=args.weight_decay, backend=args.backend, device=args.device,
              dtype=dtype, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch, args.inputs))
    if args.loss == "softmax_cross_entropy":
        t = rng.integers(0, n_out, args.batch)
    elif args.loss == "binary_cross_entropy":
        t = rng.integers(0, 2, args.batch)
    else:
        t = rng.standard_normal((args.batch, n_out))
    # the namespace itself, not its name: any array-API namespace works
    x = asarray(x, backend=net.xp, device=net.device, dtype=net.dtype_name)
    t = asarray(t, backend=net.xp, device=net.device,
                dtype=net.dtype_name if args.loss == "mse" else None)
    n_threads, threads_note = plan_threads(args.threads, gemm_work(sizes, args.batch))
    print(f"{net!r}, batch {args.batch}, {net.n_params} parameters, {threads_note}")
    with limit_threads(n_threads):
        result = gradient_check(net, x, t, threshold=args.threshold, h=args.h,
                                method=args.method, atol=args.atol)
    print(result.table())
    return 0 if result.passed else 1


# ------------------------------------------------------------------ entry point


def _stdout_closed() -> int:
    """The reader of stdout went away (``xpnn ... | head -1``): point stdout (and stderr
    when it is the same pipe) at /dev/null so that Python's flush at exit finds no
    broken pipe, and exit quietly (the recipe of the Python docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        targets = [sys.stdout]
        try:
            if os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())):
                targets.append(sys.stderr)
        except (AttributeError, OSError, ValueError):
            pass
        for stream in targets:
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, OSError, ValueError):  # not a real file (tests)
                pass
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _report(message: str) -> None:
    """One line on stderr; a closed stderr is not worth a traceback."""
    try:
        print(f"xpnn: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # closed, full, or None
        pass


def _fill_closed_descriptors() -> None:
    """Point a closed stdin/stdout/stderr descriptor (``xpnn train >&-``) at /dev/null:
    otherwise the next file opened (a checkpoint's temp file) gets descriptor 1 or 2,
    and whatever writes there (a library, a child process) writes into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class _GuardedStdout:
    """``sys.stdout`` while ``main`` runs. Writing to stdout is the report, not the
    run: when it fails (``> /dev/full``: ENOSPC, an I/O error) the run goes on and
    writes its files, the rest of the output is dropped (its descriptor is pointed at
    /dev/null so that Python's flush at exit finds nothing to fail on, no "Exception
    ignored in <stdout>"), and ``main`` ends with one line on stderr and EXIT_STDOUT.
    A closed pipe (``| head -1``) still stops the run: BrokenPipeError passes."""

    def __init__(self, stream):
        self.stream = stream
        self.error = None

    def _lost(self, exc: OSError) -> None:
        self.error = exc
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.stream.fileno())
            finally:
                os.close(null)
            self.stream.flush()  # what is still buffered goes to /dev/null
        except (OSError, ValueError, AttributeError):  # not a real file (tests)
            pass

    def write(self, text):
        if self.error is None:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                raise
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def flush(self):
        if self.error is None:
            try:
                self.stream.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                self._lost(exc)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _guarded_stdout():
    """``sys.stdout`` as a ``_GuardedStdout`` for the block (/dev/null when stdout was
    closed, ``>&-``); restored afterwards."""
    _fill_closed_descriptors()
    original = sys.stdout
    stream = original if original is not None else open(  # noqa: SIM115 - closed below
        os.devnull, "w", encoding="utf-8")
    guard = _GuardedStdout(stream)
    sys.stdout = guard
    try:
        yield guard
    finally:
        if sys.stdout is guard:
            sys.stdout = original
        if original is None:
            stream.close()


def main(argv=None) -> int:
    """Run the ``xpnn`` command; returns the exit code: 0 ok, 1 failed (a gradient check
    that did not pass, a diverged run, out of memory, a GPU or I/O error), 2 bad flags or
    values, 74 stdout could not be written (the run went on), 128+N stopped by signal N
    (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), 141 stdout closed early (``| head -1``).

    Failures are one line ``xpnn: error: ...`` on stderr in flag terms, plus where the
    results of an interrupted or failed run were written; ``XPNN_DEBUG=1`` re-raises
    library errors with their traceback instead. SIGTERM and SIGHUP stop a run the way
    Ctrl-C does (``xpnn.cli.signals``).
    """
    with _guarded_stdout() as stdout, signals.stop_on_signals():
        try:
            code = _main(argv)
            stdout.flush()  # a closed pipe shows up here rather than at exit
        except BrokenPipeError:
            return _stdout_closed()
        except KeyboardInterrupt as exc:  # a signal outside the command's own handling
            _report(_interrupted(exc))
            return getattr(exc, "exit_code", EXIT_INTERRUPTED)
        if stdout.error is not None:
            why = stdout.error.strerror or one_line(stdout.error)
            _report(f"error: stdout: {why} (the printed output was lost; the run went on"
                    f"{' and completed' if code == 0 else ''})")
            return EXIT_STDOUT if code == 0 else code
        return code


def _interrupted(exc: KeyboardInterrupt) -> str:
    """'interrupted' (Ctrl-C) or 'interrupted by SIGTERM', plus what was saved."""
    name = getattr(exc, "signame", "SIGINT")
    saved = getattr(exc, "xpnn_saved", None)
    return ("interrupted" + ("" if name == "SIGINT" else f" by {name}")
            + (f": {saved}" if saved else ""))


def _main(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("XPNN_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "resume", None) is not None:
            args = _resumed_args(parser, args, args.argv)
        return args.func(args)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (xpnn.cli.signals)
        _report(_interrupted(exc))
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:
        described = describe(exc, getattr(args, "memory_hint", None))
        saved = getattr(exc, "xpnn_saved", None)
        if described is None or (debug and not isinstance(exc, CLIError)):
            if saved:  # a bug: its traceback follows, but the work is not lost
                _report(f"{saved} (before the error below)")
            raise
        code, message = described
        if saved:
            message = f"{message.rstrip('.')}; {saved}"
        _report(f"error: {message}")
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
