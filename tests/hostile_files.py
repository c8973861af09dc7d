"""Hand-made checkpoint files (valid, damaged and hostile) and a memory meter, shared by
tests/test_checkpoint.py and tests/test_fuzz_files.py."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np

import xpnn
from xpnn.nn import config

MB = 1 << 20


def npy_bytes(array) -> bytes:
    """``array`` as the bytes of a .npy file."""
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)
    return out.getvalue()


def npy_header(shape, dtype="<f8", fortran=False, data=b"") -> bytes:
    """A .npy file whose header claims ``shape``/``dtype``, followed by ``data``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}
    )
    return out.getvalue() + data


def marker(arch) -> bytes:
    """The ``__xpnn__.npy`` entry for an architecture dict (or a raw string)."""
    text = arch if isinstance(arch, str) else json.dumps(arch)
    return npy_bytes(np.asarray(text))


def write_zip(path, entries: dict, compression=zipfile.ZIP_STORED) -> None:
    """A zip at ``path`` with ``entries`` {name: bytes}, in that order."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def small_net(**kw):
    kw = {"activation": ["relu", "tanh"], "weight_init": 0.3, "seed": 1, "dtype": "float64",
          **kw}
    return xpnn.MLP([4, 5, 6, 3], **kw)


def entries_of(net, arch=None) -> dict:
    """The entries of ``net``'s checkpoint, as {name: bytes}."""
    out = {"__xpnn__.npy": marker(config.to_config(net) if arch is None else arch)}
    for key, value in net.params.items():
        out[f"{key}.npy"] = npy_bytes(xpnn.to_numpy(value))
    return out


def peak_bytes(call) -> tuple[int, object]:
    """(peak bytes traced while running ``call()``, what it raised or returned).

    NumPy reports its array buffers to tracemalloc, so this sees every array.
    """
    tracemalloc.start()
    try:
        try:
            outcome = call()
        except Exception as exc:  # noqa: BLE001 - the caller inspects it
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, outcome
