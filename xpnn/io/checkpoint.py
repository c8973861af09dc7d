"""Save and load a network: one ``.npz`` file with every parameter as a host NumPy
array plus the architecture as a JSON string entry ``__xpnn__``.

A checkpoint written from any backend loads on any other: ``load(path,
backend="torch", device="cuda")``.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from ..backend import asarray, to_numpy
from .atomic import atomic_write

__all__ = ["FORMAT", "VERSION", "load", "save"]

#: the marker entry's name and its "format" value
MARKER = "__xpnn__"
FORMAT = "xpnn-mlp"
VERSION = 1


def _architecture(net) -> dict:
    init = net.weight_init
    return {
        "format": FORMAT,
        "version": VERSION,
        "sizes": list(net.sizes),
        "activations": list(net.activations),
        "loss": net.loss_name,
        "dtype": net.dtype_name,
        "weight_decay": net.weight_decay,
        "weight_init": init if isinstance(init, (str, int, float)) else None,
        "params": list(net.params),
        "saved_from": {"backend": net.backend, "device": str(net.device)},
    }


def save(net, path) -> str:
    """Write ``net`` (an MLP) to ``path`` as one .npz file, atomically; returns the path.

    The file is written exactly at ``path`` (no suffix is added).
    """
    arrays = {k: to_numpy(v) for k, v in net.params.items()}
    if MARKER in arrays:
        raise ValueError(f"parameter name {MARKER!r} is reserved")
    arrays[MARKER] = np.asarray(json.dumps(_architecture(net)))
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return os.fspath(path)


def _bad(path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _read(path) -> tuple[dict, dict]:
    """The architecture dict and the parameter arrays of the checkpoint at ``path``."""
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):  # a plain .npy array
            raise _bad(path, "not an xpnn checkpoint (a single .npy array, not an .npz)")
        with data:
            names = list(data.files)
            if MARKER not in names:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise _bad(
                    path,
                    f"not an xpnn checkpoint (an .npz without the {MARKER!r} entry; it holds: "
                    f"{shown or 'nothing'})",
                )
            arrays = {k: data[k] for k in names}
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise _bad(path, f"not a readable .npz file: damaged, truncated or another format "
                   f"({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise _bad(
            path, f"damaged or truncated checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    marker = arrays.pop(MARKER)
    try:
        arch = json.loads(str(marker[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise _bad(path, f"damaged checkpoint: the {MARKER!r} entry is not JSON ({exc})") from None
    if not isinstance(arch, dict):
        raise _bad(path, f"damaged checkpoint: the {MARKER!r} entry is not a JSON object")
    if arch.get("format") != FORMAT:
        raise _bad(path, f"not an xpnn checkpoint (format {arch.get('format')!r}, "
                   f"expected {FORMAT!r})")
    version = arch.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise _bad(path, f"checkpoint format version {version!r} is not one this xpnn reads "
                   f"(up to {VERSION})")
    missing = [k for k in ("sizes", "activations", "loss", "dtype") if k not in arch]
    if missing:
        raise _bad(path, f"damaged checkpoint: the architecture lacks {', '.join(missing)}")
    return arch, arrays


def load(path, backend=None, device=None, dtype=None):
    """Rebuild the MLP saved at ``path``.

    backend, device  where the network should live (default: ``$XPNN_BACKEND`` /
                     numpy, the backend's default device), whatever it was saved from
    dtype            'float32' or 'float64'; default the dtype it was saved in

    Raises FileNotFoundError for a missing file and ValueError naming the file and the
    problem for damaged, truncated or foreign files.
    """
    from ..nn.mlp import MLP

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file {path!r}")
    if os.path.isdir(path):
        raise _bad(path, "is a directory, not a checkpoint file")
    arch, arrays = _read(path)
    try:
        net = MLP(
            arch["sizes"],
            activation=list(arch["activations"]),
            loss=arch["loss"],
            weight_init=arch.get("weight_init") or 0.01,
            weight_decay=arch.get("weight_decay", 0.0),
            backend=backend,
            device=device,
            dtype=arch["dtype"] if dtype is None else dtype,
            seed=0,
        )
    except (TypeError, ValueError) as exc:
        if backend is not None or device is not None or dtype is not None:
            raise  # most likely the caller's backend/device/dtype: their error, unchanged
        raise _bad(path, f"damaged checkpoint: bad architecture ({exc})") from None

    missing = [k for k in net.params if k not in arrays]
    extra = [k for k in arrays if k not in net.params]
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing parameters {', '.join(missing)}")
        if extra:
            what.append(f"unexpected entries {', '.join(extra)}")
        raise _bad(path, f"checkpoint does not match its architecture {net.sizes}: "
                   + "; ".join(what))
    for key, value in net.params.items():
        host = arrays[key]
        if host.shape != tuple(value.shape):
            raise _bad(path, f"parameter {key} has shape {host.shape}, but the architecture "
                       f"{net.sizes} needs {tuple(value.shape)}")
        if host.dtype.kind != "f":
            raise _bad(path, f"parameter {key} has dtype {host.dtype}, not floating")
        if not np.all(np.isfinite(host)):
            raise _bad(path, f"parameter {key} contains NaN or inf")
    for key in list(net.params):
        net.params[key] = asarray(arrays[key], backend=net.backend, device=net.device,
                                  dtype=net.dtype_name)
    return net
