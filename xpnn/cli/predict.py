"""``xpnn predict MODEL INPUT...``: class labels and per-class probabilities of a saved
model for rows read from ``.npy``, ``.csv`` or image files, as CSV or JSON.

Inputs become rows of the model's input width:

- ``.npy``: (N, d), (N, h, w) or (N, 1, h, w) with h*w = d, or one row (d,). uint8
  arrays are pixels 0..255 and are scaled to [0, 1] as the datasets are; other numbers
  are taken as they are (features as the model saw them in training).
- ``.csv``: rows of numbers separated by commas (or spaces), an optional header line;
  taken as they are.
- images (.png, .jpg, ...): one row each, read as the Sign Language Digits are (EXIF
  orientation, grayscale, resized to SIZE x SIZE where SIZE*SIZE is the model's input
  width, scaled to [0, 1]). MNIST digits are white on black.

Labels come from ``MLP.predict_labels`` and probabilities from ``MLP.predict``, in
chunks of the trainer's evaluation size, so the labels for a dataset's rows are the
ones the run's accuracy counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..backend import asarray, to_numpy
from ..io.atomic import atomic_write
from ..training.runner import EVAL_BATCH_SIZE
from . import dataspec
from .errors import CLIError, one_line
from .evaluate import add_model_flags, load_model, n_classes, recorded_data
from .main import _Formatter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", formatter_class=_Formatter,
        help="class labels and probabilities of a saved model for .npy, .csv or image files",
        description="Apply a saved model to the rows of INPUT files and print, per row, the\n"
                    "predicted label and the probability of each class (CSV on stdout, or\n"
                    "--out FILE.csv / FILE.json).\n"
                    "  .npy   (N, d), (N, h, w) or (N, 1, h, w) with h*w = d; uint8 arrays are\n"
                    "         pixels 0..255, scaled to [0, 1] as the datasets are\n"
                    "  .csv   rows of numbers, an optional header line\n"
                    "  image  .png, .jpg, ...: grayscale, resized to the model's SIZE x SIZE\n"
                    "         input and scaled to [0, 1], as the datasets' images",
        epilog="examples:\n"
               "  xpnn predict runs/mnist-20260101-120000 digits.npy\n"
               "  xpnn predict runs/mnist-20260101-120000 seven.png three.png --out p.json\n"
               "  xpnn predict model.safetensors points.csv --backend torch --device cuda",
    )
    add_model_flags(p, "floating dtype to compute in (default: the model's)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".npy, .csv or image files (.png, .jpg, ...)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write to FILE.csv or FILE.json instead of stdout")
    p.add_argument("--format", choices=("csv", "json"), default=None,
                   help="output format (default: --out's suffix, else csv)")
    p.set_defaults(func=cmd_predict)


# ------------------------------------------------------------------ reading inputs


def _finite_rows(name: str, a: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise CLIError(f"{name}: row {row}, column {col} is {a[row, col]} (inputs must be "
                       f"finite numbers)")
    return a


def _as_rows(name: str, a: np.ndarray, width: int, what: str) -> np.ndarray:
    """(N, width) from 1-D (one row), 2-D, or images (N, h, w) / (N, 1, h, w)."""
    shape = tuple(a.shape)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    elif a.ndim in (3, 4) and (a.ndim == 3 or shape[1] == 1):
        a = a.reshape(shape[0], -1)
    elif a.ndim != 2:
        raise CLIError(f"{name}: an array of shape {shape}; give (N, {width}) rows or "
                       f"(N, h, w) images")
    if a.shape[0] == 0:
        raise CLIError(f"{name} holds no rows")
    if a.shape[1] != width:
        shown = f" (shape {shape})" if len(shape) != 2 else ""
        raise CLIError(f"the model expects {width} features, {name} has {a.shape[1]} {what}"
                       f"{shown}")
    return a


def _read_npy(path: Path, width: int, dtype: str) -> np.ndarray:
    try:  # mapped first: a header that claims more data than the file holds fails here
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"{path}: not a readable .npy file ({one_line(exc)})") from None
    if not isinstance(a, np.ndarray):
        raise CLIError(f"{path}: holds several arrays (.npz); give one (N, {width}) array")
    if a.dtype.kind not in "iuf":
        raise CLIError(f"{path}: an array of {a.dtype}; give numbers (floats, or uint8 pixels)")
    a = _as_rows(str(path), a, width, "per row")
    if a.dtype == np.uint8:  # pixels, prepared as the datasets prepare theirs
        return np.asarray(a, dtype=dtype) / np.asarray(255.0, dtype=dtype)
    return _finite_rows(str(path), np.array(a, dtype=np.float64))  # exact for any input


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, width: int, dtype: str) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path}: not a readable text file ({one_line(exc)})") from None
    lines = [(i + 1, s) for i, s in enumerate(text.splitlines())
             if s.strip() and not s.lstrip().startswith("#")]
    if not lines:
        raise CLIError(f"{path} holds no rows")
    first = lines[0][1]
    delimiter = "," if "," in first else None
    fields = [f.strip() for f in (first.split(",") if delimiter else first.split())]
    if not all(_is_number(f) for f in fields):
        lines = lines[1:]  # a header
        if not lines:
            raise CLIError(f"{path} holds a header and no rows")
    body = "\n".join(s for _, s in lines)
    try:
        a = np.loadtxt(io.StringIO(body), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise CLIError(f"{path}: not a table of numbers ({one_line(exc)})") from None
    return _finite_rows(str(path), _as_rows(str(path), a, width, "values per row"))


def _read_image(path: Path, width: int, dtype: str) -> np.ndarray:
    side = math.isqrt(width)
    if side * side != width:
        raise CLIError(f"the model expects {width} features, not a square image "
                       f"(SIZE x SIZE pixels); give .npy or .csv rows")
    from ..data.images import _decode_image, _import_pillow

    try:
        Image, ImageOps = _import_pillow()
    except ImportError:
        raise ImportError("xpnn predict needs Pillow to read images: "
                          "pip install 'xpnn[images]'") from None
    pixels = _decode_image(Image, ImageOps, path, side)  # (side, side) uint8
    x = pixels.reshape(1, width).astype(dtype)
    return x / np.asarray(255.0, dtype=dtype)


def read_input(arg: str, width: int, dtype: str) -> np.ndarray:
    """The rows of one INPUT file: host (N, width) floats."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise CLIError(f"INPUT {arg!r}: no such file")
    if not path.is_file():
        raise CLIError(f"INPUT {arg!r} is not a file")
    if path.stat().st_size == 0:
        raise CLIError(f"INPUT {arg!r} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, width, dtype)
    if suffix in (".csv", ".txt"):
        return _read_csv(path, width, dtype)
    if suffix in IMAGE_SUFFIXES:
        return _read_image(path, width, dtype)
    raise CLIError(f"INPUT {arg!r}: unknown kind of file; give .npy, .csv or an image "
                   f"({', '.join(IMAGE_SUFFIXES)})")


# ------------------------------------------------------------------ predicting


def predict_rows(net, x_host: np.ndarray, chunk: int = EVAL_BATCH_SIZE):
    """(labels int64 (N,), probabilities (N, k)) on the host; k = 2 for a binary model
    (the columns 1-p and p)."""
    labels, probs = [], []
    for s in range(0, x_host.shape[0], chunk):
        xc = asarray(x_host[s:s + chunk], backend=net.xp, device=net.device,
                     dtype=net.dtype_name)
        labels.append(to_numpy(net.predict_labels(xc)).astype(np.int64))
        probs.append(to_numpy(net.predict(xc)))
    p = np.concatenate(probs)
    if p.shape[1] == 1:
        p = np.concatenate([1 - p, p], axis=1)
    return np.concatenate(labels), p


def _csv_text(rows, labels, probs, names) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    named = names != [str(i) for i in range(len(names))]
    w.writerow(["input", "row", "label", *(["class"] if named else []),
                *(f"p_{n}" for n in names)])
    for (src, r), label, p in zip(rows, labels, probs, strict=True):
        w.writerow([src, r, int(label), *([names[label]] if named else []),
                    *(str(v) for v in p)])  # numpy's shortest round-trip form per dtype
    return buf.getvalue()


def _json_text(model, rows, labels, probs, names) -> str:
    data = {
        "model": str(model), "classes": names,
        "predictions": [
            {"input": src, "row": r, "label": int(label), "class": names[label],
             "probabilities": [float(v) for v in p]}
            for (src, r), label, p in zip(rows, labels, probs, strict=True)
        ],
    }
    return json.dumps(data, indent=1) + "\n"


def cmd_predict(args) -> int:
    fmt = args.format
    if args.out is not None:
        suffix = Path(args.out).suffix.lower()
        if suffix not in (".csv", ".json"):
            raise CLIError(f"--out {args.out!r}: give a .csv or .json file")
        if fmt is not None and fmt != suffix[1:]:
            raise CLIError(f"--format {fmt} does not match --out {args.out!r}")
        fmt = suffix[1:]
    fmt = fmt or "csv"
    file, ckpt, history = load_model(args)
    net = ckpt.net
    if not net.loss_fn.has_accuracy:
        raise CLIError(f"{file} is a regression model (loss {net.loss_name}); predict gives "
                       f"class labels")
    width = int(net.sizes[0])
    parts, rows = [], []
    for arg in args.inputs:
        x = read_input(arg, width, net.dtype_name)
        parts.append(x)
        rows += [(arg, r) for r in range(x.shape[0])]
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    labels, probs = predict_rows(net, x)
    names = dataspec.class_names(recorded_data(ckpt, history), n_classes(net))
    text = (_csv_text(rows, labels, probs, names) if fmt == "csv"
            else _json_text(file, rows, labels, probs, names))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    atomic_write(Path(args.out).expanduser(), lambda f: f.write(text.encode()))
    print(f"wrote {len(labels)} predictions to {args.out}", file=sys.stderr)
    return 0
