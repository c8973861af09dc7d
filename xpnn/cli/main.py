"""The ``xpnn`` command line: ``xpnn train`` and ``xpnn gradcheck``.

    xpnn train                         # the book's TwoLayerNet on MNIST, 10,000 iterations
    xpnn train --dataset moons         # 2-3-2 tanh net, full-batch gradient descent
    xpnn train --gradient numerical --iters 100
    xpnn gradcheck --activation relu --hidden 8 8

Bad flags and bad values end in one line ``xpnn: error: ...`` on stderr and exit
code 2 (set ``XPNN_DEBUG=1`` to see the traceback of a library error instead).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion-mnist", "sign-language-digits", "moons", "spirals")
TOY = ("moons", "spirals")
TRAIN_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
ALL_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")
ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "elu", "identity")
_FALLBACK_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")

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
#: (measured on the TwoLayerNet at its initial weights, MNIST batches of 100: float32
#: central differences with h=1e-4 are off by up to 2.6e-3 (rms 4e-4) on W1, whose
#: entries are at most 1.05e-3 (rms 1.4e-4); float64 with h=1e-5 is off by ~1e-10)
FLOAT64_NOTE = (
    "note: --gradient numerical trains in float64 unless --dtype says otherwise: in "
    "float32 with h=1e-4 the central difference's error on W1 (up to ~2.5e-3) exceeds "
    "the true W1 gradient (at most ~1e-3)"
)


class CLIError(Exception):
    """A bad combination of flags found after parsing: exit code 2."""


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


# ------------------------------------------------------------------ flag types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _weight_init(text: str):
    if text.strip().lower() in ("xavier", "he"):
        return text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive std (e.g. 0.01), 'xavier' or 'he', got {text!r}"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"the std must be positive and finite, got {text!r}")
    return value


def _batch_size(text: str):
    if text.strip().lower() == "full":
        return "full"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'full', got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {value}")
    return value


def _activation(text: str) -> str:
    name = text.strip().lower()
    if name not in ACTIVATION_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown activation {text!r} (choose from {', '.join(ACTIVATION_NAMES)})"
        )
    return name


def _optimizer_names():
    try:
        from ..optim import OPTIMIZERS
    except ImportError:
        return _FALLBACK_OPTIMIZERS
    return tuple(OPTIMIZERS)


# ------------------------------------------------------------------ parser


def _add_backend_flags(p, dtype_help: str):
    p.add_argument("--backend", default=None,
                   help="array backend: numpy, torch, cupy or array_api_strict "
                        "(default: $XPNN_BACKEND, else numpy)")
    p.add_argument("--device", default=None,
                   help="device of the backend, e.g. cpu, cuda, cuda:1 (default: the "
                        "backend's default device)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None, help=dtype_help)


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
        description="Train and check the from-scratch MLP on any array-API backend\n"
                    "(NumPy, PyTorch, CuPy, array-api-strict).",
        epilog="examples:\n"
               "  xpnn train                                 # TwoLayerNet on MNIST (the book)\n"
               "  xpnn train --dataset moons --hidden 5      # decision boundary in runs/\n"
               "  xpnn train --backend torch --device cuda   # the same network on a GPU\n"
               "  xpnn gradcheck --activation relu           # backprop vs central differences\n"
               "\ndata: MNIST files are read from --data-dir, else $XPNN_DATA_DIR/mnist, else\n"
               "the cache ~/.cache/xpnn/mnist (downloaded when missing).\n"
               "set XPNN_DEBUG=1 to get tracebacks instead of one-line errors.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"xpnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---- train
    t = sub.add_parser(
        "train", formatter_class=_Formatter,
        help="train an MLP on a dataset and write history.json, curves.png, model.npz",
        description="Train an MLP and write history.json, curves.png, model.npz (and\n"
                    "decision_boundary.png for the 2-D datasets) into --out.\n"
                    "With no flags: the book's TwoLayerNet 784-50-10 (sigmoid, init std "
                    "0.01,\nSGD lr 0.1, batch 100, 10,000 iterations) on MNIST.",
        epilog=_preset_table(),
    )
    g = t.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="mnist", help="what to train on")
    g.add_argument("--data-dir", default=None,
                   help="folder holding mnist/, fashion-mnist/, sign-language-digits/ "
                        "(or the dataset's own folder) (default: $XPNN_DATA_DIR, else the "
                        "cache ~/.cache/xpnn)")
    g.add_argument("--no-download", action="store_true",
                   help="fail instead of downloading missing MNIST/Fashion-MNIST files")
    g.add_argument("--classes", type=_nonneg_int, nargs="+", default=None, metavar="K",
                   help="sign-language-digits: the digits to keep, relabelled 0..k-1 in "
                        "this order, e.g. --classes 0 1 (default: all ten)")
    g.add_argument("--image-size", type=_positive_int, default=64,
                   help="sign-language-digits: images are resized to SIZE x SIZE")
    g.add_argument("--samples", type=_positive_int, default=None,
                   help="moons/spirals: number of points (default: moons 200, spirals 300); "
                        "a test set of the same size is drawn with seed+1")
    g.add_argument("--noise", type=_nonneg_float, default=0.2,
                   help="moons/spirals: Gaussian noise std")

    g = t.add_argument_group("network")
    h = g.add_mutually_exclusive_group()
    h.add_argument("--hidden", type=_positive_int, nargs="+", default=None, metavar="WIDTH",
                   help="hidden layer widths, e.g. --hidden 150 150 150 (default: per "
                        "dataset, 50 for MNIST)")
    h.add_argument("--no-hidden", action="store_true",
                   help="no hidden layer: logistic/softmax regression")
    g.add_argument("--activation", type=_activation, nargs="+", default=None, metavar="NAME",
                   help="one activation for all hidden layers or one per hidden layer: "
                        f"{', '.join(ACTIVATION_NAMES)} (default: per dataset, sigmoid for "
                        "MNIST)")
    g.add_argument("--loss", choices=TRAIN_LOSSES, default="softmax_cross_entropy",
                   help="binary_cross_entropy needs a 2-class task and gives the last "
                        "layer 1 unit")
    g.add_argument("--weight-init", type=_weight_init, default=None, metavar="STD|xavier|he",
                   help="std of the initial Gaussian weights, or xavier (sqrt(1/n_in)) or "
                        "he (sqrt(2/n_in)) (default: per dataset, 0.01 for MNIST)")
    g.add_argument("--weight-decay", type=_nonneg_float, default=None,
                   help="L2 penalty 0.5*wd*sum(W^2) on the weights (default: per dataset, 0 "
                        "for MNIST)")

    g = t.add_argument_group("training")
    g.add_argument("--optimizer", choices=_optimizer_names(), default="sgd", help="update rule")
    g.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: per dataset, 0.1 for MNIST)")
    g.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|full",
                   help="minibatch size, or 'full' for full-batch gradient descent "
                        "(default: per dataset, 100 for MNIST)")
    it = g.add_mutually_exclusive_group()
    it.add_argument("--iters", type=_positive_int, default=None,
                    help="number of updates (default: per dataset, 10000 for MNIST)")
    it.add_argument("--epochs", type=_positive_int, default=None,
                    help="number of passes over the training set, instead of --iters")
    g.add_argument("--gradient", choices=("backprop", "numerical"), default="backprop",
                   help="how gradients are computed; numerical = central differences "
                        "(slow: the book's 17-hour run)")
    g.add_argument("--h", type=_positive_float, default=None,
                   help="step of the central differences (default: 1e-5 in float64, 5e-3 "
                        "in float32)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, the batch order and the toy data")
    g.add_argument("--eval-every", type=_positive_int, default=None, metavar="ITERS",
                   help="evaluate train/test loss and accuracy every ITERS iterations "
                        "(default: the trainer's: once per epoch; full-batch runs: 100 "
                        "evaluations in all)")
    _add_backend_flags(
        g, "floating dtype of parameters and data (default: float32; float64 with "
           "--gradient numerical)")

    g = t.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: runs/<dataset>-<timestamp>)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--quiet", action="store_true",
                   help="print only the final summary line (implies --no-progress)")
    t.set_defaults(func=cmd_train)

    # ---- gradcheck
    c = sub.add_parser(
        "gradcheck", formatter_class=_Formatter,
        help="compare backprop with numerical gradients on a small network",
        description="Build a small MLP on random data and compare its backprop gradient\n"
                    "with central differences, parameter by parameter.\n"
                    "Exit code 0 when every parameter passes, 1 otherwise.",
    )
    c.add_argument("--hidden", type=_positive_int, nargs="*", default=[10], metavar="WIDTH",
                   help="hidden layer widths (give none for no hidden layer)")
    c.add_argument("--inputs", type=_positive_int, default=4, help="input features")
    c.add_argument("--classes", type=_positive_int, default=3,
                   help="outputs (classes) for softmax_cross_entropy and mse; "
                        "binary_cross_entropy always has 1")
    c.add_argument("--activation", type=_activation, nargs="+", default=["sigmoid"],
                   metavar="NAME", help="one activation, or one per hidden layer")
    c.add_argument("--loss", choices=ALL_LOSSES, default="softmax_cross_entropy",
                   help="output loss")
    c.add_argument("--weight-init", type=_weight_init, default="xavier",
                   metavar="STD|xavier|he", help="initial weights")
    c.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="L2 penalty")
    c.add_argument("--batch", type=_positive_int, default=8, help="rows of random data")
    c.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    c.add_argument("--h", type=_positive_float, default=None,
                   help="central-difference step (default: 1e-5 in float64, 5e-3 in float32)")
    c.add_argument("--threshold", type=_positive_float, default=None,
                   help="largest max relative error that passes (default: 1e-7 in float64, "
                        "5e-2 in float32)")
    c.add_argument("--atol", type=float, default=None,
                   help="absolute error that passes whatever the relative error, for "
                        "elements whose gradient is near zero (default: 10*eps*max(1,|loss|)/h, "
                        "ten times the central difference's rounding noise; 0 turns it off)")
    c.add_argument("--method", choices=("batched", "loop"), default="batched",
                   help="numerical gradient: broadcast ('batched') or element by element")
    _add_backend_flags(c, "floating dtype (default: float64)")
    c.set_defaults(func=cmd_gradcheck)
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
    if args.samples is not None and args.dataset not in TOY:
        raise CLIError("--samples applies to --dataset moons or spirals only")
    if args.h is not None and args.gradient != "numerical":
        raise CLIError("--h applies to --gradient numerical only")
    return cfg


def _dataset_path(data_dir, folder: str):
    """--data-dir may be the root (holding mnist/ ...) or the dataset's own folder."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir!r} is not a folder")
    return root / folder if (root / folder).is_dir() else root


def _load_data(args, cfg, backend, device):
    """-> (x_train, t_train), (x_test, t_test), n_classes, description."""
    from ..data import datasets

    dtype = cfg["dtype"]
    name = args.dataset
    if name in ("mnist", "fashion-mnist"):
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        train, test = loader(
            path=_dataset_path(args.data_dir, name), download=not args.no_download,
            backend=backend, device=device, dtype=dtype,
        )
        return train, test, 10
    if name == "sign-language-digits":
        train, test = datasets.load_sign_language_digits(
            path=_dataset_path(args.data_dir, name), classes=args.classes, seed=args.seed,
            size=args.image_size, backend=backend, device=device, dtype=dtype,
        )
        return train, test, (len(args.classes) if args.classes else 10)
    n = args.samples or (200 if name == "moons" else 300)
    if name == "moons":
        make = datasets.make_moons
        n_classes = 2
    else:
        make = datasets.make_spirals
        n_classes = 3
    kw = dict(n_samples=n, noise=args.noise, backend=backend, device=device, dtype=dtype)
    return make(seed=args.seed, **kw), make(seed=args.seed + 1, **kw), n_classes


def _default_out(dataset: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{dataset}-{stamp}"
    k = 2
    while out.exists():
        out = Path("runs") / f"{dataset}-{stamp}-{k}"
        k += 1
    return out


def _final_metrics(history, net, train, test):
    """(train_acc, test_acc, train_loss, test_loss) of the final network."""
    final = getattr(history, "final", None)
    if callable(final):
        final = final()
    vals = {}
    if isinstance(final, dict):
        vals = {k: final.get(k) for k in ("train_acc", "test_acc", "train_loss", "test_loss")}
    if vals.get("train_acc") is None or (test is not None and vals.get("test_acc") is None):
        vals["train_loss"], vals["train_acc"] = _evaluate(net, *train)
        if test is not None:
            vals["test_loss"], vals["test_acc"] = _evaluate(net, *test)
    return vals


def _evaluate(net, x, t, batch=10000):
    n = x.shape[0]
    loss = acc = 0.0
    for s in range(0, n, batch):
        xb, tb = x[s:s + batch], t[s:s + batch]
        m = xb.shape[0]
        loss += float(net.loss(xb, tb)) * m
        acc += net.accuracy(xb, tb) * m
    return loss / n, acc / n


def _fmt(v, digits=4):
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def cmd_train(args) -> int:
    from ..io import checkpoint
    from ..nn.mlp import MLP
    from ..optim import make_optimizer
    from ..training import train

    cfg = _resolve_train_config(args)
    if args.quiet:
        args.no_progress = True
    out = Path(args.out).expanduser() if args.out else _default_out(args.dataset)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")

    if args.gradient == "numerical" and cfg["dtype_defaulted"]:
        _say(args, FLOAT64_NOTE)
    (x_tr, t_tr), (x_te, t_te), n_classes = _load_data(args, cfg, args.backend, args.device)
    if args.loss == "binary_cross_entropy" and n_classes != 2:
        raise CLIError(
            f"binary_cross_entropy needs a 2-class task but {args.dataset} has {n_classes} "
            f"classes" + (" (pick two with --classes A B)"
                          if args.dataset == "sign-language-digits" else "")
        )
    n_out = 1 if args.loss == "binary_cross_entropy" else n_classes
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
        eval_every = max(1, total // 100)
    bs = "full batch" if cfg["batch_size"] is None else f"batch {cfg['batch_size']}"
    length = (f"{cfg['iters']} iterations" if cfg["iters"] is not None
              else f"{cfg['epochs']} epochs")
    _say(args,
         f"xpnn train: {args.dataset} ({n_train} train, {int(x_te.shape[0])} test) on "
         f"{net.backend} {net.dtype_name}, sizes {sizes}, "
         f"{cfg['activation'] if sizes[1:-1] else 'no hidden layer'}, {args.optimizer} "
         f"lr {cfg['lr']:g}, {bs}, {length}, {args.gradient} gradients")
    out.mkdir(parents=True, exist_ok=True)

    log = (lambda *a, **k: None) if args.quiet else print
    start = time.perf_counter()
    history = train(
        net, (x_tr, t_tr), (x_te, t_te), optimizer=optimizer, batch_size=cfg["batch_size"],
        iters=cfg["iters"], epochs=cfg["epochs"], gradient=args.gradient,
        eval_every=eval_every, seed=args.seed, progress=not args.no_progress, h=args.h,
        log=log,
    )
    wall = time.perf_counter() - start

    meta = getattr(history, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault("cli", {
            "argv": list(sys.argv[1:]), "dataset": args.dataset, "sizes": sizes,
            **{k: v for k, v in cfg.items() if k != "dtype_defaulted"},
        })
    history.save_json(out / "history.json")
    checkpoint.save(net, out / "model.npz")
    written = ["history.json", "model.npz"]
    try:
        from .. import plotting

        title = f"{args.dataset}: {sizes} {net.backend} {net.dtype_name}"
        plotting.plot_history(history, out / "curves.png", title=title)
        written.append("curves.png")
        if args.dataset in TOY:
            plotting.plot_decision_boundary(net, x_tr, t_tr, out / "decision_boundary.png")
            written.append("decision_boundary.png")
    except ImportError as exc:
        print(f"xpnn: warning: no plots ({exc})", file=sys.stderr)

    iters_done = history.iteration[-1] if getattr(history, "iteration", None) else cfg["iters"]
    m = _final_metrics(history, net, (x_tr, t_tr), (x_te, t_te))
    print(
        f"{args.dataset}: {net.backend} {net.dtype_name}, {iters_done} iterations in "
        f"{wall:.1f} s, train acc {_fmt(m.get('train_acc'))}, test acc "
        f"{_fmt(m.get('test_acc'))} (loss {_fmt(m.get('train_loss'))} / "
        f"{_fmt(m.get('test_loss'))}) -> {out}",
        flush=True,
    )
    return 0


# ------------------------------------------------------------------ gradcheck


def cmd_gradcheck(args) -> int:
    from ..backend import asarray
    from ..nn.gradcheck import gradient_check
    from ..nn.mlp import MLP

    dtype = args.dtype or "float64"
    hidden = list(args.hidden)
    activation = args.activation[0] if len(args.activation) == 1 else list(args.activation)
    n_out = 1 if args.loss == "binary_cross_entropy" else args.classes
    if args.loss == "softmax_cross_entropy" and n_out < 2:
        raise CLIError("softmax_cross_entropy needs --classes >= 2")
    sizes = [args.inputs, *hidden, n_out]
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
    x = asarray(x, backend=net.backend, device=net.device, dtype=net.dtype_name)
    t = asarray(t, backend=net.backend, device=net.device,
                dtype=net.dtype_name if args.loss == "mse" else None)
    print(f"{net!r}, batch {args.batch}, {net.n_params} parameters")
    result = gradient_check(net, x, t, threshold=args.threshold, h=args.h, method=args.method,
                            atol=args.atol)
    print(result.table())
    return 0 if result.passed else 1


# ------------------------------------------------------------------ entry point


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _exit_code(exc: BaseException):
    """Exit code for an error the library raised on purpose, None for a bug."""
    from ..training import TrainingDivergedError

    if isinstance(exc, TrainingDivergedError):
        return 1  # the run failed (lr too large ...), the flags were well-formed
    if isinstance(exc, (ValueError, TypeError, ImportError, FileNotFoundError)):
        return 2  # bad values, missing backend or data files
    if isinstance(exc, OSError):
        return 1  # cannot write the output folder, disk full, ...
    return None


def main(argv=None) -> int:
    """Run the ``xpnn`` command; returns the exit code: 0 ok, 1 failed (a gradient check
    that did not pass, a diverged run, an I/O error), 2 bad flags or values, 130 Ctrl-C."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = os.environ.get("XPNN_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"xpnn: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xpnn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = _exit_code(exc)
        if debug or code is None:
            raise
        print(f"xpnn: error: {_one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
