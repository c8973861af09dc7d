"""The checkpoint format: one safetensors file (https://github.com/huggingface/safetensors).

Layout: 8 bytes (little-endian u64) giving the header's length N, N bytes of JSON
header, then the tensors' bytes. The header maps each tensor name to ``{"dtype": "F64",
"shape": [4, 5], "data_offsets": [begin, end]}`` (offsets into the data that follows
the header) and ``"__metadata__"`` to a str -> str dict. xpnn writes

- tensors ``W1, b1, W2, b2, ...``: the parameters, shape (n_in, n_out) and (n_out,), in
  the net's dtype (a layer computes ``x @ W1 + b1``);
- tensors ``extra/<name>``: whatever the caller adds (training state);
- metadata ``xpnn.architecture`` (JSON of ``MLP.to_config()``), ``xpnn.format_version``
  (``FORMAT_VERSION``), ``xpnn.version`` (the writer's xpnn), ``xpnn.saved_from``
  (JSON: backend and device; informational) and, when given, ``xpnn.extra`` (the
  caller's JSON).

Reading treats the file as untrusted: ``read_header`` checks the header's length
against the file and ``MAX_HEADER_BYTES`` before reading it, then that it is a JSON
object whose tensors have allowed dtypes and shapes and whose data offsets tile the data
exactly (no overlap, no gap, nothing beyond the file); ``check_tensors`` checks the
tensor names, shapes and dtypes against the architecture in the metadata. Only then
does the safetensors library read a tensor, so nothing is allocated beyond the header
(at most ``MAX_HEADER_BYTES``) and tensors whose sizes were checked against the file.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from ..nn import config as _config
from ._shared import Damaged, check_architecture, shown

__all__ = [
    "ARCHITECTURE", "EXTRA", "EXTRA_META", "FORMAT_VERSION", "MAX_HEADER_BYTES",
    "check_extra", "check_tensors", "encode", "extra_meta", "looks_like", "read_header",
]

#: the newest layout version this xpnn writes and reads (the metadata's
#: ``xpnn.format_version``)
FORMAT_VERSION = 1
#: metadata keys
ARCHITECTURE = "xpnn.architecture"
VERSION_KEY = "xpnn.format_version"
XPNN_VERSION = "xpnn.version"
SAVED_FROM = "xpnn.saved_from"
EXTRA_META = "xpnn.extra"
#: the prefix of the caller's tensors
EXTRA = "extra/"

#: the largest header read (an xpnn header is a few KB; a header this big is refused
#: before a byte of it is read, and ``encode`` refuses to write one)
MAX_HEADER_BYTES = 1 << 20
#: the most dimensions a tensor may have
MAX_DIMS = 8
_LENGTH = struct.Struct("<Q")

#: safetensors dtype -> NumPy dtype: the ones a checkpoint may hold. Parameters must be
#: floating; the caller's extra tensors may also be integers or booleans.
DTYPES = {
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
}
FLOATS = ("F16", "F32", "F64")
_KINDS = {dtype.kind for dtype in DTYPES.values()}


def looks_like(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 9 bytes) is meant as safetensors:
    a header length and then the header's opening brace."""
    return len(head) >= 9 and head[8:9] == b"{"


# --------------------------------------------------------------------- writing


def check_extra(extra) -> dict[str, np.ndarray]:
    """The caller's extra tensors as ``{"extra/<name>": contiguous host array}``;
    TypeError / ValueError for a name or an array a checkpoint cannot hold."""
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict of name -> NumPy array, got "
                        f"{type(extra).__name__}")
    out = {}
    for name, value in extra.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"extra names must be non-empty strings, got {name!r}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"extra[{name!r}] must be a host NumPy array, got "
                            f"{type(value).__name__}")
        if value.dtype.kind not in _KINDS or value.dtype.itemsize > 8:
            raise ValueError(f"extra[{name!r}] has dtype {value.dtype}; a checkpoint holds "
                             f"floating, integer or bool arrays")
        if value.ndim > MAX_DIMS:
            raise ValueError(f"extra[{name!r}] has {value.ndim} dimensions, more than "
                             f"{MAX_DIMS}")
        # np.require, not ascontiguousarray: that one makes a 0-d array 1-d
        out[EXTRA + name] = np.require(value.astype(value.dtype.newbyteorder("<"), copy=False),
                                       requirements="C")
    return out


def encode(params: dict, cfg: dict, extra: dict, extra_meta, saved_from: dict) -> bytes:
    """The bytes of a checkpoint of checked host ``params``, checked config ``cfg``,
    checked ``extra`` (``check_extra``) and JSON-able ``extra_meta`` (or None)."""
    from safetensors.numpy import save as st_save

    from .. import __version__

    metadata = {
        VERSION_KEY: str(FORMAT_VERSION),
        XPNN_VERSION: __version__,
        ARCHITECTURE: json.dumps(cfg),
        SAVED_FROM: json.dumps(saved_from),
    }
    if extra_meta is not None:
        try:
            metadata[EXTRA_META] = json.dumps(extra_meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"extra_meta must be JSON-able (no NaN or inf): {exc}") from None
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    data = st_save({**tensors, **extra}, metadata=metadata)
    header = _LENGTH.unpack_from(data)[0]
    if header > MAX_HEADER_BYTES:
        raise ValueError(f"the checkpoint's header would take {header:,} bytes, more than "
                         f"the {MAX_HEADER_BYTES:,} a reader accepts; store big training "
                         f"state as extra tensors, not in extra_meta")
    return data


# --------------------------------------------------------------------- reading


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_entry(name: str, entry) -> tuple[str, tuple, int, int]:
    """(dtype, shape, begin, end) of one header entry, its form checked."""
    what = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise Damaged(f"damaged checkpoint: {what} is not a dtype/shape/data_offsets entry")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise Damaged(f"{what} has dtype {dtype!r}, not one of {', '.join(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(_int(n) and n >= 0 for n in shape)):
        raise Damaged(f"damaged checkpoint: {what} has shape {shape!r}, not a list of at most "
                      f"{MAX_DIMS} non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_int(n) and n >= 0 for n in offsets) or offsets[0] > offsets[1]):
        raise Damaged(f"damaged checkpoint: {what} has data_offsets {offsets!r}, not "
                      f"[begin, end] with 0 <= begin <= end")
    begin, end = offsets
    needs = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != needs:
        raise Damaged(f"damaged checkpoint: {what} ({dtype} {tuple(shape)}) needs {needs} "
                      f"bytes but its data_offsets span {end - begin}")
    return dtype, tuple(shape), begin, end


class _Duplicate(Exception):
    pass


def _unique(pairs) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(repr(key))
            seen.add(key)
    return out


def read_header(f, file_size: int) -> tuple[dict, dict]:
    """The tensors ``{name: (dtype, shape, begin, end)}`` and the metadata of the
    safetensors file open as ``f`` (``file_size`` bytes), every claim checked against
    the file before anything is allocated for it."""
    f.seek(0)
    head = f.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise Damaged("damaged or truncated checkpoint: shorter than a safetensors header")
    length = _LENGTH.unpack(head)[0]
    if length > MAX_HEADER_BYTES:
        raise Damaged(f"damaged checkpoint: its safetensors header declares {length:,} bytes, "
                      f"more than the {MAX_HEADER_BYTES:,} xpnn reads")
    if _LENGTH.size + length > file_size:
        raise Damaged(f"damaged or truncated checkpoint: its safetensors header declares "
                      f"{length:,} bytes, but the file has {file_size - _LENGTH.size:,} "
                      f"after the length")
    raw = f.read(length)
    if len(raw) != length:
        raise Damaged("damaged or truncated checkpoint: the header ends early")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique)
    except _Duplicate as exc:
        raise Damaged(f"damaged checkpoint: the safetensors header names {exc} twice"
                      ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Damaged(f"damaged checkpoint: the safetensors header is not JSON "
                      f"({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise Damaged("damaged checkpoint: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values()):
        raise Damaged("damaged checkpoint: the safetensors __metadata__ is not a str -> str "
                      "object")
    tensors = {name: _tensor_entry(name, entry) for name, entry in header.items()}
    data_size = file_size - _LENGTH.size - length
    at = 0
    for name, (_, _, begin, end) in sorted(tensors.items(), key=lambda kv: kv[1][2:]):
        if begin != at:
            problem = "overlaps the one before" if begin < at else f"leaves a gap at byte {at}"
            raise Damaged(f"damaged checkpoint: tensor {name!r} (data_offsets [{begin}, "
                          f"{end}]) {problem}")
        at = end
    if at != data_size:
        problem = ("beyond the end of the file" if at > data_size
                   else f"while the file holds {data_size:,}")
        raise Damaged(f"damaged or truncated checkpoint: the tensors' data ends at byte "
                      f"{at:,} {problem}")
    return tensors, metadata


def _json_meta(metadata: dict, key: str):
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as exc:
        raise Damaged(f"damaged checkpoint: the metadata {key!r} is not JSON ({exc})") from None


def check_tensors(tensors: dict, metadata: dict) -> tuple[dict, list[str]]:
    """The checked config (from the metadata) and the names of the extra tensors, after
    checking that the parameters are exactly those the architecture implies, with its
    shapes and a floating dtype."""
    if ARCHITECTURE not in metadata:
        raise Damaged(f"not an xpnn checkpoint (a safetensors file without the "
                      f"{ARCHITECTURE!r} metadata; it holds: "
                      f"{shown(list(tensors)) or 'nothing'})")
    version = metadata.get(VERSION_KEY)
    if version is not None and (not version.isdigit() or int(version) > FORMAT_VERSION):
        raise Damaged(f"checkpoint layout version {version!r} is not one this xpnn reads "
                      f"(up to {FORMAT_VERSION}); upgrade xpnn")
    cfg = check_architecture(_json_meta(metadata, ARCHITECTURE),
                             f"the {ARCHITECTURE!r} metadata")
    shapes = _config.param_shapes(cfg)
    missing = [k for k in shapes if k not in tensors]
    unknown = [n for n in tensors if n not in shapes and not n.startswith(EXTRA)]
    if missing or unknown:
        raise Damaged(f"checkpoint does not match its architecture {cfg['sizes']}: "
                      + _config.mismatch(missing, shown(unknown) if unknown else ""))
    for key, shape in shapes.items():
        dtype, found, _, _ = tensors[key]
        if found != shape:
            raise Damaged(f"parameter {key} has shape {found}, but the architecture needs "
                          f"{shape}")
        if dtype not in FLOATS:
            raise Damaged(f"parameter {key} has dtype {dtype}, not floating")
    return cfg, [n for n in tensors if n.startswith(EXTRA)]


def extra_meta(metadata: dict) -> dict:
    """The caller's ``extra_meta`` (a dict; {} when none was saved)."""
    if EXTRA_META not in metadata:
        return {}
    value = _json_meta(metadata, EXTRA_META)
    if not isinstance(value, dict):
        raise Damaged(f"damaged checkpoint: the metadata {EXTRA_META!r} is not a JSON object")
    return value
