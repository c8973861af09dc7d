"""Figures for training runs: learning curves, decision boundaries, a regression line.

matplotlib is optional (``pip install 'xpnn[plot]'``) and imported only when a
function here is called. Figures are drawn with matplotlib's object API on an Agg
canvas, so nothing here touches pyplot's global state or needs a display, and the
backend an interactive session chose is left alone.

Every function writes one image file atomically (a temporary file in the same
folder, then ``os.replace``), creates missing parent folders, and returns the
path as a :class:`pathlib.Path`. The format follows the file's extension (``.png``
unless you say otherwise).

Networks are evaluated on their own backend and device: grids are built on the host
with NumPy, moved with :func:`xpnn.asarray`, and predictions come back through
:func:`xpnn.to_numpy`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .backend import asarray, to_numpy
from .io.atomic import atomic_write

__all__ = [
    "plot_history",
    "plot_histories",
    "plot_decision_boundary",
    "plot_decision_boundaries",
    "plot_regression",
    "plot_confusion_matrix",
]

#: class colours (colour-blind friendly; Okabe-Ito), cycled for more classes
CLASS_COLORS = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
    "#56B4E9", "#F0E442", "#000000", "#999999", "#882255",
]


# ------------------------------------------------------------------ helpers


def _mpl():
    """Import matplotlib lazily; return (Figure, FigureCanvasAgg, ListedColormap)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"xpnn.plotting needs matplotlib ({exc}): pip install 'xpnn[plot]'"
        ) from None
    return Figure, FigureCanvasAgg, ListedColormap


def _figure(width: float, height: float):
    Figure, FigureCanvasAgg, _ = _mpl()
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically: temp file in the same folder, then rename."""
    path = Path(path).expanduser()
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi))
    return path




def _history_dict(history) -> dict:
    """A History, its ``to_dict()``, a mapping of lists, or a path to history.json."""
    if isinstance(history, (str, os.PathLike)):
        with open(history, encoding="utf-8") as fh:
            data = json.load(fh)
    elif hasattr(history, "to_dict"):
        data = history.to_dict()
    elif isinstance(history, Mapping):
        data = dict(history)
    else:
        raise TypeError(
            f"history must be an xpnn History, a dict of lists or a path to history.json, "
            f"got {type(history).__name__}"
        )
    if isinstance(data.get("records"), Mapping):  # History.to_dict() / history.json layout
        data = {**data["records"], "meta": data.get("meta") or {}}
    return data


def _series(h: dict, key: str, xs):
    """(x, y) pairs of ``h[key]`` where y is a finite number; aligned with ``xs``."""
    ys = h.get(key)
    if ys is None or len(ys) != len(xs):
        return None
    pts = [
        (x, float(y)) for x, y in zip(xs, ys, strict=True)
        if y is not None and isinstance(y, (int, float)) and math.isfinite(float(y))
    ]
    if not pts:
        return None
    return [p[0] for p in pts], [p[1] for p in pts]


def _loss_name(h: dict):
    meta = h.get("meta") or {}
    for key in ("loss", "loss_name"):
        if isinstance(meta.get(key), str):
            return meta[key]
    net = meta.get("net") or meta.get("network") or {}
    if isinstance(net, Mapping) and isinstance(net.get("loss"), str):
        return net["loss"]
    return None


def _log_scale_if_wide(ax, values):
    vals = [v for v in values if v > 0]
    if vals and len(vals) == len(values) and max(vals) / min(vals) > 100:
        ax.set_yscale("log")


# ------------------------------------------------------------------ curves


def plot_history(history, path, title=None) -> Path:
    """Learning curves of one run: loss (train and test) and accuracy vs iteration.

    ``history`` is what :func:`xpnn.training.train` returns (or its ``to_dict()``, or a
    path to a saved ``history.json``). The accuracy panel is left out when the run
    has no accuracies (the regression loss ``mse``). The loss axis turns logarithmic
    when the loss falls by more than a factor 100.
    """
    h = _history_dict(history)
    xs = list(h.get("iteration") or [])
    if not xs:
        raise ValueError("history has no records to plot (empty 'iteration')")
    loss_name = _loss_name(h)
    acc_series = [
        (label, s) for label, key in (("train", "train_acc"), ("test", "test_acc"))
        if (s := _series(h, key, xs)) is not None
    ]
    show_acc = bool(acc_series) and loss_name != "mse"

    fig = _figure(11.0 if show_acc else 6.0, 4.0)
    axes = fig.subplots(1, 2 if show_acc else 1, squeeze=False)[0]
    ax = axes[0]
    all_losses = []
    for label, key, style in (("train", "train_loss", "-"), ("test", "test_loss", "--")):
        s = _series(h, key, xs)
        if s is not None:
            ax.plot(s[0], s[1], style, label=label, marker="o" if len(s[0]) <= 30 else None,
                    markersize=3)
            all_losses.extend(s[1])
    _log_scale_if_wide(ax, all_losses)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss ({loss_name})" if loss_name else "loss")
    ax.set_title("loss")
    ax.grid(True, alpha=0.3)
    if all_losses:
        ax.legend()
    if show_acc:
        ax = axes[1]
        for (label, s), style in zip(acc_series, ("-", "--"), strict=False):
            ax.plot(s[0], s[1], style, label=f"{label} ({s[1][-1]:.4f})",
                    marker="o" if len(s[0]) <= 30 else None, markersize=3)
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_histories(histories, path, title=None, metric="test_acc", ylabel=None,
                   ylim=None) -> Path:
    """Overlay one metric (``test_acc``, ``train_loss``, ...) of several runs.

    ``histories`` maps a label to a History (or dict / history.json path); a list
    of ``(label, history)`` pairs works too. ``ylim=(low, high)`` zooms the y axis.
    """
    items = list(histories.items()) if isinstance(histories, Mapping) else list(histories)
    if not items:
        raise ValueError("no histories to plot")
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    drawn = []
    styles = ("-", "--", "-.", ":")
    for i, (label, hist) in enumerate(items):
        h = _history_dict(hist)
        s = _series(h, metric, list(h.get("iteration") or []))
        if s is None:
            continue
        # a wide pale first line and patterned thinner ones: curves that coincide
        # (numerical vs backprop gradients) stay visible
        ax.plot(s[0], s[1], styles[i % len(styles)], linewidth=3.5 if i == 0 else 1.6,
                alpha=0.55 if i == 0 else 1.0, label=f"{label} ({s[1][-1]:.4f})")
        drawn.extend(s[1])
    if not drawn:
        raise ValueError(f"none of the histories has values for {metric!r}")
    if "loss" in metric:
        _log_scale_if_wide(ax, drawn)
    ax.set_xlabel("iteration")
    names = {"test_acc": "test accuracy", "train_acc": "train accuracy"}
    ax.set_ylabel(ylabel or names.get(metric, metric.replace("_", " ")))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


# ------------------------------------------------------------ decision regions


def _host_xy(x, t):
    xh = np.asarray(to_numpy(x), dtype=np.float64)
    th = np.asarray(to_numpy(t))
    if xh.ndim != 2 or xh.shape[1] != 2:
        raise ValueError(f"decision boundaries need 2-D inputs (N, 2), got shape {xh.shape}")
    if th.ndim == 2:  # one-hot or (N, 1) binary labels
        th = th[:, 0] if th.shape[1] == 1 else th.argmax(axis=1)
    if th.shape[0] != xh.shape[0]:
        raise ValueError(f"x has {xh.shape[0]} rows but t has {th.shape[0]}")
    return xh, th.astype(np.int64)


def _predict_classes(net, xh: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Predicted class of each host row, evaluated on the network's backend/device."""
    if net.sizes[0] != 2:
        raise ValueError(f"decision boundaries need a network with 2 inputs, not {net.sizes[0]}")
    if not net.loss_fn.has_accuracy:
        raise ValueError("decision boundaries need a classifier, not the regression loss 'mse'")
    out = []
    for start in range(0, xh.shape[0], chunk):
        xb = asarray(xh[start:start + chunk], backend=net.xp, device=net.device,
                     dtype=net.dtype_name)
        p = to_numpy(net.predict(xb))
        out.append((p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1))
    return np.concatenate(out)


def _net_loss_acc(net, xh, th):
    x = asarray(xh, backend=net.xp, device=net.device, dtype=net.dtype_name)
    t = asarray(th, backend=net.xp, device=net.device)
    return float(net.loss(x, t)), float(net.accuracy(x, t))


def _draw_boundary(ax, net, xh, th, resolution: int, margin: float = 0.5):
    _, _, ListedColormap = _mpl()
    n_classes = max(int(th.max()) + 1, 2 if net.sizes[-1] == 1 else net.sizes[-1])
    colors = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(n_classes)]
    cmap = ListedColormap(colors)
    (x0, y0), (x1, y1) = xh.min(axis=0) - margin, xh.max(axis=0) + margin
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    zz = _predict_classes(net, grid).reshape(gx.shape)
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(gx, gy, zz, levels=levels, cmap=cmap, alpha=0.3, antialiased=True)
    ax.contour(gx, gy, zz, levels=levels[1:-1], colors="k", linewidths=0.6, alpha=0.6)
    ax.scatter(xh[:, 0], xh[:, 1], c=th, cmap=cmap, vmin=-0.5, vmax=n_classes - 0.5,
               s=14, edgecolors="k", linewidths=0.4)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")


def plot_decision_boundary(net, x, t, path, title=None, resolution=300) -> Path:
    """Predicted class of a 2-input classifier over a grid, with the points on top.

    ``x`` (N, 2) and labels ``t`` (N,) may be host or backend arrays. The grid spans
    the points plus a margin of 0.5 at ``resolution`` x ``resolution`` cells. The
    title defaults to the network's loss and accuracy on (x, t).
    """
    if not (isinstance(resolution, int) and resolution >= 2):
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    xh, th = _host_xy(x, t)
    fig = _figure(5.6, 5.0)
    ax = fig.subplots()
    _draw_boundary(ax, net, xh, th, resolution)
    if title is None:
        loss, acc = _net_loss_acc(net, xh, th)
        title = f"{net.sizes}  loss {loss:.3f}  accuracy {acc:.3f}"
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_decision_boundaries(nets_by_hidden_size, x, t, path, title=None, resolution=200,
                             ncols=4) -> Path:
    """A grid of decision-boundary panels, one per network.

    ``nets_by_hidden_size`` maps a label (e.g. the hidden width: 1, 2, 3, 4, 5, 20,
    50) to a trained network; a list of ``(label, net)`` pairs works too. Each panel
    is titled with the label and the network's loss and accuracy on (x, t).
    """
    items = (
        list(nets_by_hidden_size.items())
        if isinstance(nets_by_hidden_size, Mapping) else list(nets_by_hidden_size)
    )
    if not items:
        raise ValueError("no networks to plot")
    xh, th = _host_xy(x, t)
    ncols = max(1, min(int(ncols), len(items)))
    nrows = math.ceil(len(items) / ncols)
    fig = _figure(3.4 * ncols, 3.2 * nrows + (0.4 if title else 0.0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.set_axis_off()
    for ax, (label, net) in zip(axes.flat, items, strict=False):
        _draw_boundary(ax, net, xh, th, resolution)
        loss, acc = _net_loss_acc(net, xh, th)
        name = f"hidden {label}" if isinstance(label, int) else str(label)
        ax.set_title(f"{name}: loss {loss:.3f}, acc {acc:.3f}", fontsize=9)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ------------------------------------------------------------------ regression


def plot_regression(net, x, t, path, title=None, xlabel="x", ylabel="y") -> Path:
    """Points (x, t) of a 1-input regression and the network's prediction as a line.

    For a linear network (sizes [1, 1]) the legend shows the fitted ``W`` and ``b``.
    """
    if net.sizes[0] != 1 or net.sizes[-1] != 1:
        raise ValueError(f"plot_regression needs a network with 1 input and 1 output, "
                         f"not sizes {net.sizes}")
    xh = np.asarray(to_numpy(x), dtype=np.float64).reshape(-1)
    th = np.asarray(to_numpy(t), dtype=np.float64).reshape(-1)
    if xh.shape != th.shape:
        raise ValueError(
            f"x and t must have the same number of points, got {xh.size} and {th.size}"
        )
    span = xh.max() - xh.min() if xh.size > 1 else 1.0
    grid = np.linspace(xh.min() - 0.1 * span, xh.max() + 0.1 * span, 200).reshape(-1, 1)
    xb = asarray(grid, backend=net.xp, device=net.device, dtype=net.dtype_name)
    yh = to_numpy(net.predict(xb)).reshape(-1)
    if len(net.sizes) == 2:
        w = float(to_numpy(net.params["W1"]).reshape(-1)[0])
        b = float(to_numpy(net.params["b1"]).reshape(-1)[0])
        label = f"fit: y = {w:.4f} x + {b:.4f}"
    else:
        label = "network prediction"
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    ax.plot(grid[:, 0], yh, "-", color=CLASS_COLORS[1], label=label)
    ax.scatter(xh, th, color=CLASS_COLORS[0], zorder=3, s=30, edgecolors="k",
               linewidths=0.5, label="data")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


# ------------------------------------------------------------------ confusion matrix


def plot_confusion_matrix(matrix, path, class_names=None, title=None) -> Path:
    """A confusion matrix as a heat map: rows the true class, columns the predicted one.

    Each cell shows its count; its colour is the count as a fraction of its row (the
    true class), so a class with few examples is as readable as a large one and the
    diagonal reads as per-class recall. ``class_names`` label the axes (default
    0..k-1); the counts are left out of cells when there are more than 30 classes.
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"a confusion matrix is square (k, k), got shape {m.shape}")
    if m.dtype.kind not in "iu" or (m < 0).any():
        raise ValueError("a confusion matrix holds non-negative integer counts")
    k = m.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    rows = m.sum(axis=1, keepdims=True)
    share = m / np.maximum(rows, 1)
    side = min(4.0 + 0.55 * k, 16.0)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(k)
    long = max(len(n) for n in names) > 3
    ax.set_xticks(ticks, names, rotation=45 if long else 0, ha="right" if long else "center",
                  fontsize=8 if k > 12 else 10)
    ax.set_yticks(ticks, names, fontsize=8 if k > 12 else 10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        size = 10 if k <= 10 else 7 if k <= 20 else 5
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=size,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_title(title or f"{int(np.trace(m))} of {int(m.sum())} correct", fontsize=10)
    return _save(fig, path)
