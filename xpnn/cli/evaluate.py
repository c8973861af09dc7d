"""``xpnn evaluate MODEL``: loss, accuracy and the confusion matrix of a saved model on a
dataset, computed by the training run's own evaluation code.

The rows are loaded by ``xpnn train``'s own loader (``main._load_data``: the same
normalisation, flattening, sign-language split and toy-set seeds) from the record of
the data the model was trained on (``dataspec``: in model.safetensors's metadata and in
history.json), and scored by the trainer's ``_metrics`` (``F.loss_and_accuracy`` in
chunks of the run's ``eval_batch_size``, in the model's dtype). So on the backend and
dtype the run used, ``xpnn evaluate RUN`` prints exactly the final test accuracy in the
run's history.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..io import checkpoint
from ..io.atomic import atomic_write
from ..training import History
from ..training.runner import EVAL_BATCH_SIZE, _metrics
from . import argtypes, dataspec
from .errors import CLIError, one_line
from .main import (
    DATASETS,
    SIGN_LANGUAGE_IMAGE_SIZE,
    TOY,
    _add_backend_flags,
    _check_sign_language_classes,
    _Formatter,
    _load_data,
)
from .output import OutputFolder

#: what a run folder holds, in the order looked for
MODEL_FILES = ("model.safetensors", "model.npz")

_MODEL_HELP = ("a run folder of xpnn train (holding model.safetensors) or a model file "
               "(.safetensors, or the old .npz)")


# ------------------------------------------------------------------ shared with predict


def resolve_model(arg: str) -> tuple[Path, Path | None]:
    """(model file, history.json beside it or None) for MODEL (a folder or a file)."""
    path = Path(arg).expanduser()
    if path.is_dir():
        found = next((path / n for n in MODEL_FILES if (path / n).is_file()), None)
        if found is None:
            raise CLIError(f"MODEL {arg!r} is a folder without {' or '.join(MODEL_FILES)}; "
                           f"give {_MODEL_HELP}")
        path = found
    elif not path.exists():
        raise CLIError(f"MODEL {arg!r}: no such file or folder")
    history = path.parent / "history.json"
    return path, (history if history.is_file() else None)


def load_model(args):
    """(model file, Checkpoint, History or None) for ``args.model``, on ``--backend``,
    ``--device`` and ``--dtype`` (default the model's). A history.json beside the model
    counts only when it describes the same architecture."""
    file, history_file = resolve_model(args.model)
    ckpt = checkpoint.read_checkpoint(file, backend=args.backend, device=args.device,
                                      dtype=getattr(args, "dtype", None))
    history = None
    if history_file is not None:
        try:
            history = History.load_json(history_file)
        except (OSError, ValueError) as exc:
            print(f"xpnn: warning: ignoring {history_file} ({one_line(exc)})", file=sys.stderr)
        else:
            if history.meta.get("sizes") != list(ckpt.net.sizes):
                history = None  # another model's record
    return file, ckpt, history


def recorded_data(ckpt, history) -> dict | None:
    """The data the model was trained on, as ``dataspec.data_spec`` wrote it (the
    checkpoint's record first: ``extra_meta["data"]``, or ``["cli"]["data"]`` where the
    run's CLI record is saved whole; then history.json's; for runs from before the
    record, history.json's dataset and seed)."""
    saved_cli = ckpt.extra_meta.get("cli")
    cli = (history.meta.get("cli") if history is not None else None) or {}
    for spec in (ckpt.extra_meta.get("data"),  # xpnn train's record, alone or with the
                 saved_cli.get("data") if isinstance(saved_cli, dict) else None,  # run's
                 cli.get("data")):
        if isinstance(spec, dict) and spec.get("dataset") in DATASETS:
            return dict(spec)
    if cli.get("dataset") in DATASETS:
        return {"dataset": cli["dataset"], "seed": history.meta.get("seed") or 0}
    return None


def n_classes(net) -> int:
    return 2 if net.sizes[-1] == 1 else int(net.sizes[-1])


def add_model_flags(p, dtype_help: str):
    p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    _add_backend_flags(p, dtype_help)


# ------------------------------------------------------------------ parser


def add_parser(sub) -> None:
    e = sub.add_parser(
        "evaluate", formatter_class=_Formatter,
        help="loss, accuracy and confusion matrix of a saved model on a dataset",
        description="Score a saved model on a dataset's test (or train) rows: print the loss,\n"
                    "the accuracy and the confusion matrix, and write the matrix as a PNG\n"
                    "(counts, coloured by the fraction of each true class), a CSV and a\n"
                    "JSON with the figures. The data is loaded and prepared as the\n"
                    "training run did (dataset, seed, --samples, --noise, --classes,\n"
                    "--image-size from the model's record), and scored by the trainer's\n"
                    "own evaluation code, so on the run's backend and dtype the test\n"
                    "accuracy is exactly the run's final one in history.json.",
        epilog="examples:\n"
               "  xpnn evaluate runs/mnist-20260101-120000\n"
               "  xpnn evaluate runs/moons-20260101-120000 --split train --out eval/\n"
               "  xpnn evaluate model.safetensors --dataset fashion-mnist --backend torch",
    )
    add_model_flags(e, "floating dtype to evaluate in (default: the model's)")
    g = e.add_argument_group("data (default: what the model was trained on)")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="dataset to score on (default: the model's record; needed for a "
                        "model file without one)")
    g.add_argument("--split", choices=("test", "train"), default="test",
                   help="which rows to score")
    g.add_argument("--data-dir", default=None,
                   help="folder holding mnist/, fashion-mnist/, sign-language-digits/ "
                        "(default: $XPNN_DATA_DIR, else the cache ~/.cache/xpnn)")
    g.add_argument("--no-download", action="store_true",
                   help="fail instead of downloading missing MNIST/Fashion-MNIST files")
    g.add_argument("--seed", type=argtypes.nonneg_int, default=None,
                   help="moons/spirals: seed of the training set (the test set is seed+1); "
                        "sign-language-digits: seed of the train/test split")
    g.add_argument("--samples", type=argtypes.positive_int, default=None,
                   help="moons/spirals: number of points")
    g.add_argument("--noise", type=argtypes.nonneg_float, default=None,
                   help="moons/spirals: Gaussian noise std")
    g.add_argument("--classes", type=argtypes.nonneg_int, nargs="+", default=None,
                   metavar="K", help="sign-language-digits: the digits kept, in label order")
    g.add_argument("--image-size", type=argtypes.positive_int, default=None, metavar="SIZE",
                   help="sign-language-digits: images resized to SIZE x SIZE (default: "
                        "the record's, else from the model's input width)")
    g = e.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="folder for confusion-<split>.png/.csv and evaluation-<split>.json "
                        "(default: the model's folder)")
    e.set_defaults(func=cmd_evaluate)


# ------------------------------------------------------------------ command


def _data_to_use(args, recorded: dict | None, net) -> tuple[dict, bool]:
    """(data spec, True when it is the recorded one unchanged) from the record and the
    flags; CLIError when there is neither."""
    if args.dataset is None and recorded is None:
        raise CLIError(f"{args.model} has no record of the data it was trained on; "
                       f"give --dataset")
    if recorded is not None and args.dataset in (None, recorded["dataset"]):
        spec = dict(recorded)
    else:
        spec = {"dataset": args.dataset}
    name = spec["dataset"]
    overrides = {"seed": args.seed, "samples": args.samples, "noise": args.noise,
                 "classes": args.classes, "image_size": args.image_size}
    allowed = {"seed": DATASETS, "samples": TOY, "noise": TOY,
               "classes": ("sign-language-digits",), "image_size": ("sign-language-digits",)}
    for key, value in overrides.items():
        if value is None:
            continue
        if name not in allowed[key]:
            flag = "--" + key.replace("_", "-")
            raise CLIError(f"{flag} applies to --dataset {' or '.join(allowed[key])} only")
        spec[key] = list(value) if isinstance(value, list) else value
    if spec.get("classes") is not None:
        _check_sign_language_classes(spec["classes"])
    if name == "sign-language-digits" and spec.get("image_size") is None:
        side = int(round(net.sizes[0] ** 0.5))  # the model's input: SIZE x SIZE pixels
        spec["image_size"] = side if side * side == net.sizes[0] else SIGN_LANGUAGE_IMAGE_SIZE
    spec = dataspec.complete(spec)
    unchanged = recorded is not None and spec == dataspec.complete(recorded)
    return spec, unchanged


def _describe_data(spec: dict) -> str:
    extra = ", ".join(f"{k.replace('_', ' ')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                      for k, v in spec.items() if k != "dataset")
    return spec["dataset"] + (f" ({extra})" if extra else "")


def confusion_matrix(true, predicted, k: int) -> np.ndarray:
    """int64 (k, k): row = true class, column = predicted class."""
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    return np.bincount(true * k + predicted, minlength=k * k).reshape(k, k)


def predicted_labels(net, x, chunk: int) -> np.ndarray:
    """``net.predict_labels`` over ``x`` in chunks of ``chunk`` rows, on the host."""
    n = int(x.shape[0])
    parts = [to_numpy(net.predict_labels(x[s:min(n, s + chunk), :])) for s in range(0, n, chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def matrix_text(m: np.ndarray, names: list[str]) -> str:
    k = m.shape[0]
    rows = [f"{i}" if names[i] == str(i) else f"{i} {names[i]}" for i in range(k)]
    left = max(len(r) for r in rows)
    width = max(len(str(int(m.max()))), len(str(k - 1))) + 2
    lines = [" " * left + "".join(f"{j:>{width}}" for j in range(k))]
    lines += [f"{rows[i]:<{left}}" + "".join(f"{int(v):>{width}}" for v in m[i])
              for i in range(k)]
    return "\n".join(lines)


def _matrix_csv(m: np.ndarray, names: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *names])
    for name, row in zip(names, m, strict=True):
        w.writerow([name, *(int(v) for v in row)])
    return buf.getvalue()


def cmd_evaluate(args) -> int:
    file, ckpt, history = load_model(args)
    net = ckpt.net
    if not net.loss_fn.has_accuracy:
        raise CLIError(f"{file} is a regression model (loss {net.loss_name}); evaluate scores "
                       f"classifiers")
    spec, as_recorded = _data_to_use(args, recorded_data(ckpt, history), net)
    out = OutputFolder(args.out if args.out else file.parent)
    out.prepare()
    try:
        return _evaluate(args, file, net, history, spec, as_recorded, out)
    except BaseException:
        out.discard()  # only while empty: a failure before anything was written
        raise


def _evaluate(args, file, net, history, spec, as_recorded, out) -> int:
    loader = dataspec.loader_args(spec, args.data_dir, args.no_download)
    train_set, test_set = _load_data(loader, {"dtype": net.dtype_name}, args.backend,
                                     args.device)
    x, t = test_set if args.split == "test" else train_set
    if int(x.shape[1]) != net.sizes[0]:
        raise CLIError(f"the model expects {net.sizes[0]} features, {_describe_data(spec)} "
                       f"has {int(x.shape[1])}")
    k = n_classes(net)
    t_host = to_numpy(t)
    if t_host.size and int(t_host.max()) >= k:
        raise CLIError(f"{spec['dataset']} has {int(t_host.max()) + 1} classes, the model "
                       f"tells {k} apart")
    x = net.check_x(x)
    T = net.prepare_targets(t, x.shape[0])
    chunk = (history.meta.get("eval_batch_size") if history is not None else None) \
        or EVAL_BATCH_SIZE
    loss, acc = _metrics(net, x, T, int(chunk))
    m = confusion_matrix(t_host, predicted_labels(net, x, int(chunk)), k)
    names = dataspec.class_names(spec, k)
    n = int(x.shape[0])
    hits = int(np.trace(m))

    print(f"xpnn evaluate: {file} on {_describe_data(spec)} {args.split} ({n} rows), "
          f"{net.backend} {net.dtype_name}, sizes {list(net.sizes)}")
    print(f"loss {loss:.4f}  accuracy {acc:.4f} ({hits}/{n})")
    final = history.final if history is not None else None
    recorded = final.get(f"{args.split}_acc") if final else None
    if recorded is not None and as_recorded:
        same = "the same" if recorded == acc else f"differs by {acc - recorded:+.3g}"
        where = ""
        if recorded != acc and (history.meta.get("backend"), history.meta.get("dtype")) != (
                net.backend, net.dtype_name):
            where = (f"; the run used {history.meta.get('backend')} "
                     f"{history.meta.get('dtype')}")
        print(f"history.json's final {args.split} accuracy: {recorded!r} ({same}{where})")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(matrix_text(m, names), flush=True)

    stem = f"{args.split}"
    report = {
        "model": str(file), "data": spec, "split": args.split, "rows": n,
        "backend": net.backend, "dtype": net.dtype_name, "sizes": list(net.sizes),
        "loss": loss, "accuracy": acc, "correct": hits, "eval_batch_size": int(chunk),
        "history_accuracy": recorded if as_recorded else None,
        "classes": names, "confusion_matrix": m.tolist(),
        "confusion_matrix_layout": "rows: true class, columns: predicted class",
    }
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(out / f"evaluation-{stem}.json", lambda f: f.write(text.encode()))
    csv_text = _matrix_csv(m, names)
    atomic_write(out / f"confusion-{stem}.csv", lambda f: f.write(csv_text.encode()))
    written = [f"evaluation-{stem}.json", f"confusion-{stem}.csv"]
    try:
        from .. import plotting

        plotting.plot_confusion_matrix(
            m, out / f"confusion-{stem}.png", names,
            title=f"{spec['dataset']} {args.split}: accuracy {acc:.4f} ({hits}/{n})")
        written.append(f"confusion-{stem}.png")
    except ImportError as exc:
        print(f"xpnn: warning: no confusion-{stem}.png ({exc})", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {out}")
    return 0
