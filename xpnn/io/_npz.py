"""The reader of the old checkpoint format: one ``.npz`` file with every parameter as a
``.npy`` entry plus the architecture as a JSON string entry ``__xpnn__``. xpnn no longer
writes it (``checkpoint.save`` writes safetensors); files written before still load.

Checkpoints are treated as untrusted input. ``read`` reads the zip directly: it
validates the architecture (``xpnn.nn.config.check_config``, which bounds the parameter
count) before anything else, reads only the entries that architecture implies, checks
each entry's declared sizes and its ``.npy`` header (shape, floating dtype) before
allocating its array, never unpickles, and builds the network only from checked
arrays. A damaged or hostile file costs at most about its own size in memory (for
deflated entries, at most deflate's ~1000x ratio of it) and gets a ValueError.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from ..nn import config as _config
from ._shared import Damaged as _Damaged
from ._shared import check_architecture
from ._shared import shown as _shown
from .limits import CHUNK, DEFLATE_MAX_RATIO

__all__ = ["MARKER", "read"]

#: the marker entry's name
MARKER = "__xpnn__"

#: the largest architecture entry read (its JSON is a few hundred bytes in practice)
MAX_MARKER_BYTES = 1 << 20
#: the largest .npy preamble (magic + header dict) read; NumPy writes 64 or 128 bytes
_MAX_NPY_HEADER = 4096
#: a checkpoint holds the marker plus a W and b per layer; a zip claiming more entries
#: is refused before zipfile builds a record for each of them
MAX_ENTRIES = 2 * _config.MAX_LAYERS + 1
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error,
                NotImplementedError, RuntimeError, ValueError, KeyError, OverflowError)


# ----------------------------------------------------------------------- reading


def _declared_entries(f, file_size: int) -> int | None:
    """The entry count in a zip's end-of-central-directory record (zip64 too), read
    from the file's tail; None when there is no such record (zipfile then says why)."""
    tail_size = min(file_size, _EOCD.size + 0xFFFF)  # the record plus the longest comment
    f.seek(file_size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    count = _EOCD.unpack_from(tail, at)[4]
    if count != 0xFFFF or at < _ZIP64_LOCATOR.size:
        return count
    magic, _, offset, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
    if magic != b"PK\x06\x07" or offset > file_size - _ZIP64_EOCD.size:
        return count
    f.seek(offset)
    record = f.read(_ZIP64_EOCD.size)
    if not record.startswith(b"PK\x06\x06"):
        return count
    return _ZIP64_EOCD.unpack(record)[6]


def _open_zip(path: str, file_size: int) -> zipfile.ZipFile:
    with open(path, "rb") as f:
        head = f.read(8)
        count = _declared_entries(f, file_size)
    if head.startswith(b"\x93NUMPY"):
        raise _Damaged("not an xpnn checkpoint (a single .npy array, not an .npz)")
    if count is not None and count > MAX_ENTRIES:
        raise _Damaged(f"not an xpnn checkpoint: its zip directory declares {count:,} "
                       f"entries (a checkpoint has at most {MAX_ENTRIES})")
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        if head.startswith(b"PK"):
            raise _Damaged(f"damaged or truncated checkpoint ({type(exc).__name__}: {exc})"
                           ) from None
        raise _Damaged("not an xpnn checkpoint (neither a safetensors file nor an .npz: "
                       "no zip directory)") from None


def _check_entry(info: zipfile.ZipInfo, file_size: int, max_bytes: int, what: str) -> None:
    """Refuse an entry whose declared sizes are impossible or exceed ``max_bytes``,
    before a byte of it is read."""
    if info.flag_bits & 0x1:
        raise _Damaged(f"damaged checkpoint: {what} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Damaged(f"damaged checkpoint: {what} uses zip compression method "
                       f"{info.compress_type} (xpnn reads stored or deflated entries)")
    if info.header_offset + info.compress_size > file_size:
        raise _Damaged(f"damaged or truncated checkpoint: {what} claims "
                       f"{info.compress_size} bytes beyond the end of the file")
    if info.file_size > max_bytes:
        raise _Damaged(f"damaged checkpoint: {what} declares {info.file_size} bytes, more "
                       f"than the {max_bytes} its shape can take")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _Damaged(f"damaged checkpoint: {what} declares {info.file_size} bytes but "
                       f"stores {info.compress_size}")
    if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 64:
        raise _Damaged(f"damaged checkpoint: {what} declares {info.file_size} bytes, more "
                       f"than {info.compress_size} compressed bytes can hold")


def _read_exactly(stream, buffer: memoryview) -> None:
    pos = 0
    while pos < len(buffer):
        chunk = stream.read(min(CHUNK, len(buffer) - pos))
        if not chunk:
            raise _Damaged("damaged or truncated checkpoint: an entry ends early")
        buffer[pos:pos + len(chunk)] = chunk
        pos += len(chunk)


def _read_npy(zf, info, file_size: int, shape: tuple, kinds: str, max_itemsize: int,
              what: str) -> np.ndarray:
    """The array in entry ``info``, which must have ``shape`` and a dtype of a kind in
    ``kinds`` with itemsize <= ``max_itemsize``; everything is checked before the
    array is allocated, and the data must fill the entry exactly (CRC checked)."""
    count = math.prod(shape)
    _check_entry(info, file_size, count * max_itemsize + _MAX_NPY_HEADER, what)
    with zf.open(info) as stream:
        prefix = stream.read(min(info.file_size, _MAX_NPY_HEADER))
        head = io.BytesIO(prefix)
        try:
            version = npy_format.read_magic(head)
            if version == (1, 0):
                found, fortran, dtype = npy_format.read_array_header_1_0(head)
            elif version == (2, 0):
                found, fortran, dtype = npy_format.read_array_header_2_0(head)
            else:
                raise ValueError(f".npy format version {version}")
        except Exception as exc:  # noqa: BLE001 - see below
            # the header is untrusted text that NumPy parses with tokenize and then
            # ast.literal_eval: besides ValueError it raises tokenize.TokenError,
            # SyntaxError, MemoryError, RecursionError, OverflowError, ... for malformed
            # dicts; every one of them means "no readable header" (issue 16.5)
            why = " ".join(str(exc).split())[:200]  # it may quote the whole header
            raise _Damaged(f"damaged checkpoint: {what} has no readable .npy header "
                           f"({type(exc).__name__}: {why})") from None
        if found != shape:
            raise _Damaged(f"{what} has shape {found}, but the architecture needs {shape}")
        if dtype.kind not in kinds or dtype.hasobject or dtype.itemsize > max_itemsize:
            kind = "floating" if kinds == "f" else "text"
            raise _Damaged(f"{what} has dtype {dtype}, not {kind}")
        offset = head.tell()
        if info.file_size - offset != count * dtype.itemsize:
            raise _Damaged(f"damaged checkpoint: {what} holds {info.file_size - offset} data "
                           f"bytes, but a {shape} {dtype} array needs {count * dtype.itemsize}")
        out = np.empty(count, dtype=dtype)
        buffer = memoryview(out.view(np.uint8))
        body = prefix[offset:]
        buffer[:len(body)] = body
        _read_exactly(stream, buffer[len(body):])
        if stream.read(1):  # also makes zipfile check the CRC at the entry's end
            raise _Damaged(f"damaged checkpoint: {what} is longer than it declares")
    return out.reshape(shape, order="F" if fortran else "C")


def _read_architecture(zf, entries, file_size: int) -> dict:
    marker = entries.get(MARKER + ".npy")
    if marker is None:
        raise _Damaged(f"not an xpnn checkpoint (an .npz without the {MARKER!r} entry; it "
                       f"holds: {_shown(list(entries)) or 'nothing'})")
    what = f"the {MARKER!r} entry"
    text = _read_npy(zf, marker, file_size, (), "U", MAX_MARKER_BYTES, what)
    try:
        arch = json.loads(str(text[()]))
    except (ValueError, RecursionError) as exc:
        raise _Damaged(f"damaged checkpoint: {what} is not JSON ({exc})") from None
    return check_architecture(arch, what)


def read(path: str, file_size: int) -> tuple[dict, dict]:
    """The checked config and the checked host parameter arrays of an .npz checkpoint;
    ``_shared.Damaged`` (or one of ``READ_ERRORS``) says what is wrong."""
    with _open_zip(path, file_size) as zf:
        infos = zf.infolist()
        entries = {info.filename: info for info in infos}
        if len(entries) != len(infos):
            raise _Damaged("damaged checkpoint: an entry name appears twice")
        cfg = _read_architecture(zf, entries, file_size)
        shapes = _config.param_shapes(cfg)
        wanted = {f"{k}.npy": k for k in shapes}
        missing = [k for name, k in wanted.items() if name not in entries]
        extra = [n for n in entries if n not in wanted and n != MARKER + ".npy"]
        if missing or extra:
            raise _Damaged(f"checkpoint does not match its architecture {cfg['sizes']}: "
                           + _config.mismatch(missing, _shown(extra) if extra else ""))
        params = {}
        for name, key in wanted.items():
            params[key] = _read_npy(zf, entries[name], file_size, shapes[key], "f", 8,
                                    f"parameter {key}")
    try:
        return cfg, _config.check_params(cfg, params)
    except ValueError as exc:
        raise _Damaged(str(exc)) from None
