"""Save and load a network as one safetensors file (``model.safetensors``): every
parameter as a tensor (``W1, b1, W2, ...``), the architecture (``MLP.to_config()``),
the xpnn version and the layout version as its metadata, and optionally the caller's
training state (``extra`` tensors, ``extra_meta`` JSON). The layout is described in
``xpnn.io._safetensors``; any safetensors reader opens the file
(``safetensors.torch.load_file``, ``safetensors.numpy.load_file``, ...).

A checkpoint written from any backend loads on any other: ``load(path,
backend="torch", device="cuda")``. Files in the old ``.npz`` format (xpnn before
safetensors) still load; the format is told by the file's first bytes, not its name.

Checkpoints are treated as untrusted input: the header (or the .npz directory) and the
architecture it declares are checked before any tensor is read, so a damaged, hostile or
foreign file gets a ValueError naming the file and costs at most about its own size in
memory.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from safetensors import SafetensorError

from ..backend import backend_name, device_name, get_namespace, resolve_device, to_numpy
from ..nn import config as _config
from ..nn.mlp import MLP
from . import _npz, _safetensors
from ._shared import Damaged
from .atomic import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "VERSION", "Checkpoint", "load", "read_checkpoint",
           "save"]

#: the architecture's "format" and version (``xpnn.nn.config``)
FORMAT = _config.FORMAT
VERSION = _config.VERSION
#: the safetensors layout's version (the metadata's ``xpnn.format_version``)
FORMAT_VERSION = _safetensors.FORMAT_VERSION

_READ_ERRORS = _npz.READ_ERRORS


class Checkpoint(NamedTuple):
    """What ``read_checkpoint`` returns: the network, the caller's extra tensors (host
    NumPy arrays by the names given to ``save``) and the caller's ``extra_meta``
    ({} for both when the file has none, e.g. an old .npz)."""

    net: MLP
    extra: dict
    extra_meta: dict


def _bad(path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def save(net, path, *, extra=None, extra_meta=None) -> str:
    """Write ``net`` (an MLP) to ``path`` as one safetensors file, atomically; returns
    the path.

    extra       a dict name -> host NumPy array (floating, integer or bool), stored as
                tensors ``extra/<name>``: training state, read back by
                ``read_checkpoint``
    extra_meta  a JSON-able dict stored in the metadata under ``xpnn.extra``

    The file is written exactly at ``path`` (no suffix is added; ``.safetensors`` is
    the usual one; a symlink is written through). Parameters that are NaN/inf or do not
    match the architecture are refused with a ValueError before anything is written, so
    ``save`` never produces a file that ``load`` refuses, and never replaces a good file
    with such a one.
    """
    shown = os.fsdecode(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else path
    cfg = net.to_config()
    host = {k: to_numpy(v) for k, v in net.params.items()}
    try:
        params = _config.check_params(cfg, host)
        tensors = _safetensors.check_extra(extra)
        if extra_meta is not None and not isinstance(extra_meta, dict):
            raise TypeError(f"extra_meta must be a dict, got {type(extra_meta).__name__}")
        saved_from = {"backend": net.backend, "device": device_name(net.xp, net.device)}
        data = _safetensors.encode(params, cfg, tensors, extra_meta, saved_from)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot save {shown}: {exc}") from None
    atomic_write(path, lambda f: f.write(data))
    return os.fspath(path)


# ----------------------------------------------------------------------- reading


def _check_safetensors(path: str, file_size: int):
    """(config, extra names, extra_meta) of a safetensors checkpoint: its header and the
    architecture in its metadata checked against each other and the file, no tensor
    read yet."""
    with open(path, "rb") as f:
        tensors, metadata = _safetensors.read_header(f, file_size)
    cfg, extra_names = _safetensors.check_tensors(tensors, metadata)
    return cfg, extra_names, _safetensors.extra_meta(metadata)


def _read_tensors(path: str, cfg: dict, extra_names: list, xp, device):
    """The parameters and extra tensors of a checked safetensors checkpoint, read by the
    safetensors library: with torch's loader onto the target device for the torch
    backend (parameters), with NumPy's otherwise; the parameters' values checked."""
    from safetensors import safe_open

    framework, where = "numpy", "cpu"
    if backend_name(xp) == "torch":  # e.g. 'cuda:0', the index always given
        framework, where = "pt", device_name(xp, device)
    params, extra = {}, {}
    with safe_open(path, framework=framework, device=where) as f:
        for key in _config.param_shapes(cfg):
            params[key] = f.get_tensor(key)
    if extra_names:
        with safe_open(path, framework="numpy") as f:
            for name in extra_names:
                extra[name[len(_safetensors.EXTRA):]] = f.get_tensor(name)
    try:  # shapes and dtypes again, as read, and every value finite
        _config.check_params(cfg, {k: to_numpy(v) for k, v in params.items()})
    except ValueError as exc:
        raise Damaged(str(exc)) from None
    return params, extra


def _file_errors(path: str, read, *args):
    """``read(*args)``, with a file's problems raised as a ValueError naming it."""
    try:
        return read(*args)
    except Damaged as exc:
        raise _bad(path, str(exc)) from None
    except PermissionError:
        raise
    except (*_READ_ERRORS, SafetensorError) as exc:
        raise _bad(path, f"damaged or truncated checkpoint ({type(exc).__name__}: {exc})"
                   ) from None


def _read(path, backend, device):
    """(config, params, extra, extra_meta, namespace, device) of the checkpoint at
    ``path``; ValueError naming the file for a file's problem, the backend's own errors
    for a bad ``backend``/``device`` (namespace and device are None for an .npz, whose
    host arrays the MLP moves)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint file {path!r}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _bad(path, "is a directory, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise _bad(path, "not an xpnn checkpoint (not a regular file)")
    with open(path, "rb") as f:
        head = f.read(9)
    if not _safetensors.looks_like(head):
        cfg, params = _file_errors(path, _npz.read, path, info.st_size)
        return cfg, params, {}, {}, None, None
    cfg, extra_names, meta = _file_errors(path, _check_safetensors, path, info.st_size)
    # the backend and device are the caller's: their errors are not the file's
    xp = get_namespace(backend)
    dev = resolve_device(xp, device)
    params, extra = _file_errors(path, _read_tensors, path, cfg, extra_names, xp, dev)
    return cfg, params, extra, meta, xp, dev


def read_checkpoint(path, backend=None, device=None, dtype=None) -> Checkpoint:
    """The network saved at ``path`` with the ``extra`` tensors and ``extra_meta`` it was
    saved with (``save``); arguments as ``load``."""
    cfg, params, extra, meta, xp, dev = _read(path, backend, device)
    # the file's config and parameters were checked: what can still fail here is the
    # backend, device or dtype (given, or taken from XPNN_BACKEND), not the file
    net = MLP.from_config(cfg, params=params, backend=backend if xp is None else xp,
                          device=device if dev is None else dev, dtype=dtype)
    return Checkpoint(net, extra, meta)


def load(path, backend=None, device=None, dtype=None):
    """Rebuild the MLP saved at ``path`` (safetensors, or the old .npz format).

    backend, device  where the network should live (default: ``$XPNN_BACKEND`` /
                     numpy, the backend's default device), whatever it was saved from;
                     backend may be a name, an array library module or an array-API
                     namespace (``net.xp``)
    dtype            'float32' or 'float64'; default the dtype it was saved in

    Raises FileNotFoundError for a missing file and ValueError naming the file and the
    problem for damaged, truncated, hostile or foreign files.
    """
    return read_checkpoint(path, backend=backend, device=device, dtype=dtype).net

