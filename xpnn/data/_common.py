"""What the data loaders share: the errors, argument checks, ``$XPNN_DATA_DIR`` and
seeded random generators."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

from ..backend import dtype_name as _dtype_name
from ..backend import get_namespace, resolve_device, resolve_dtype


class DatasetError(ValueError):
    """A dataset file is missing, corrupt (wrong checksum), malformed, or can't be fetched."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Dataset files are missing and were not (or could not be) downloaded."""


def _data_dir_env() -> Path | None:
    value = os.environ.get("XPNN_DATA_DIR")
    return Path(value).expanduser() if value else None


def _check_target(backend, device, dtype) -> str:
    """Fail early (before any file work) on a bad backend/device/dtype; return dtype name."""
    xp = get_namespace(backend)
    resolve_device(xp, device)
    return _dtype_name(xp, resolve_dtype(xp, dtype))


def _check_int(name, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_path(value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"path must be a folder name (str or os.PathLike), got {value!r}")
    return value


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)
