"""Hand-made checkpoint files (valid, damaged and hostile; safetensors and the old .npz)
and a memory meter, shared by tests/test_checkpoint.py and tests/test_fuzz_files.py."""

from __future__ import annotations

import io
import json
import struct
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


def npy_raw_header(text: str, version=(1, 0), data=b"") -> bytes:
    """A .npy file whose header dict is ``text`` verbatim (malformed or not), padded as
    NumPy pads it, followed by ``data``."""
    body = text.encode("latin1", "replace")
    length = 4 if version >= (2, 0) else 2
    pad = -(len(body) + 1 + 8 + length) % 64
    body += b" " * pad + b"\n"
    size = len(body).to_bytes(length, "little")
    return b"\x93NUMPY" + bytes(version) + size + body + data


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


# ------------------------------------------------------------- safetensors files

ST_CODES = {"float16": "F16", "float32": "F32", "float64": "F64", "int8": "I8",
            "int16": "I16", "int32": "I32", "int64": "I64", "uint8": "U8", "bool": "BOOL"}


def st_layout(arrays: dict, metadata: dict | None = None) -> tuple[dict, bytes]:
    """(header, data) of a safetensors file holding ``arrays`` back to back, in order."""
    header = {} if metadata is None else {"__metadata__": dict(metadata)}
    data = b""
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        raw = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": ST_CODES[value.dtype.name], "shape": list(value.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def st_bytes(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: ``header`` as JSON (its length, or ``length``) then ``data``."""
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def st_metadata(net=None, arch=None) -> dict:
    """The metadata xpnn writes, for ``net``'s architecture or ``arch`` (a dict or raw
    string)."""
    arch = config.to_config(net) if arch is None else arch
    return {"xpnn.format_version": "1", "xpnn.version": xpnn.__version__,
            "xpnn.architecture": arch if isinstance(arch, str) else json.dumps(arch)}


def st_parts(net, arch=None, extra=None) -> tuple[dict, bytes]:
    """(header, data) of ``net``'s checkpoint (with ``extra`` tensors), built by hand."""
    arrays = {k: xpnn.to_numpy(v) for k, v in net.params.items()}
    arrays.update({f"extra/{k}": v for k, v in (extra or {}).items()})
    return st_layout(arrays, st_metadata(net, arch))


def dying_writes(monkeypatch, written: int, error=OSError) -> None:
    """Make checkpoint saves die after ``written`` bytes (OSError 'disk full' or
    ``error()``, e.g. KeyboardInterrupt), inside the real ``atomic_write``."""
    from xpnn.io import atomic, checkpoint

    def dying(path, write):
        def part(f):
            write(f)
            f.truncate(written)
            raise error("disk full") if error is OSError else error()

        atomic.atomic_write(path, part)

    monkeypatch.setattr(checkpoint, "atomic_write", dying)


# ------------------------------------------------ targets that must not be replaced

#: the kinds of existing file ``special_target`` makes; "device" needs CAP_MKNOD (root)
SPECIAL_KINDS = ("fifo", "socket", "device", "link-to-fifo", "link-to-device")


def special_target(path, kind: str):
    """Make ``path`` a non-regular file of ``kind`` (SPECIAL_KINDS); returns a function
    that says whether it is still that kind. A device is a private copy of /dev/null's
    numbers made with mknod in the test folder, never the system's /dev/null (a
    regression would replace the file it points to). Skips where the OS refuses."""
    import os
    import socket
    import stat

    import pytest

    path = os.fspath(path)
    real = path + ".real" if kind.startswith("link-to-") else path
    base = kind.removeprefix("link-to-")
    if base == "fifo":
        os.mkfifo(real)
        test = stat.S_ISFIFO
    elif base == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(real)
        except OSError as exc:  # e.g. a path longer than sun_path
            pytest.skip(f"cannot bind a unix socket at {real}: {exc}")
        finally:
            sock.close()
        test = stat.S_ISSOCK
    elif base == "device":
        null = os.stat("/dev/null")
        try:
            os.mknod(real, stat.S_IFCHR | 0o666, null.st_rdev)
        except (PermissionError, AttributeError) as exc:
            pytest.skip(f"cannot make a device node here: {exc}")
        test = stat.S_ISCHR
    else:
        raise ValueError(kind)
    if real != path:
        os.symlink(real, path)
    return lambda: test(os.stat(path).st_mode) and (real == path or os.path.islink(path))

