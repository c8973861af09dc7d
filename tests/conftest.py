"""Shared fixtures: ``backend`` / ``xp`` run a test once per array backend present.

NumPy and array-api-strict always; PyTorch when importable (CPU, plus CUDA when
torch sees a GPU); CuPy when importable and a CUDA device is present. Set
``XPNN_TEST_BACKENDS=numpy,torch`` to restrict the list.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpnn
from xpnn.backend import available_backends


def _backend_params():
    names = available_backends()
    wanted = os.environ.get("XPNN_TEST_BACKENDS")
    if wanted:
        names = [n for n in names if n in {w.strip() for w in wanted.split(",")}]
    params = []
    for name in names:
        params.append(pytest.param((name, None), id=name))
        if name == "torch":
            import torch

            if torch.cuda.is_available():
                params.append(pytest.param(("torch", "cuda"), id="torch-cuda"))
    return params


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """(name, device) of one available backend."""
    return request.param


@pytest.fixture
def xp(backend):
    return xpnn.get_namespace(backend[0])


@pytest.fixture
def to_backend(backend):
    """Move host data onto the fixture's backend and device."""
    name, device = backend

    def move(a, dtype=None):
        return xpnn.asarray(np.asarray(a), backend=name, device=device, dtype=dtype)

    return move


@pytest.fixture
def data_dir():
    """The real data folder ($XPNN_DATA_DIR), or skip."""
    path = os.environ.get("XPNN_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("XPNN_DATA_DIR is not set to the data folder")
    return path
