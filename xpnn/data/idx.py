"""MNIST and Fashion-MNIST: the IDX files, their checksums, and their download.

Files are looked for at ``path=``, else ``$XPNN_DATA_DIR/mnist`` (``fashion-mnist``)
when ``XPNN_DATA_DIR`` is set, else the user cache ``$XPNN_CACHE_DIR/mnist`` or
``~/.cache/xpnn/mnist``; files found there are read without any network access. Every
file is checked against its known size (:data:`KNOWN_SIZES`, before it is read; at most
:data:`MAX_IDX_BYTES` when the size is not known) and SHA-256 (read in chunks) on every
load; a gzip is never inflated past the size its IDX header announces.

Missing files are fetched with pooch (``pooch.retrieve``: its HTTP downloader, SHA-256
check and optional tqdm progress bar), trying a list of mirrors in order. Every missing
file is downloaded into a temporary folder outside the data folder first and moved in
only when all of them passed their checksum, so a failed download leaves the data
folder as it was (no partial files, no empty folders).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..backend import asarray
from ..io.atomic import atomic_write
from ..io.limits import CHUNK, DEFLATE_MAX_RATIO
from ._common import (
    DatasetError,
    DatasetNotFoundError,
    _check_bool,
    _check_path,
    _check_target,
    _data_dir_env,
)

__all__ = [
    "MNIST_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "KNOWN_SIZES",
    "MAX_IDX_BYTES",
    "load_mnist",
    "load_fashion_mnist",
]

# --------------------------------------------------------------------------- MNIST

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
_IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Mirrors tried in order for the original MNIST files (``mirror + filename``).
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

#: Mirrors for Zalando's Fashion-MNIST files.
FASHION_MNIST_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
]

#: SHA-256 of the canonical MNIST ``.gz`` files.
MNIST_SHA256 = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: SHA-256 of the canonical Fashion-MNIST ``.gz`` files.
FASHION_MNIST_SHA256 = {
    TRAIN_IMAGES: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    TRAIN_LABELS: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    TEST_IMAGES: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    TEST_LABELS: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

#: Byte sizes of the files with the known checksums above: a file of another size is
#: refused from its size alone, before it is read or hashed.
KNOWN_SIZES = {
    MNIST_SHA256[TRAIN_IMAGES]: 9912422,
    MNIST_SHA256[TRAIN_LABELS]: 28881,
    MNIST_SHA256[TEST_IMAGES]: 1648877,
    MNIST_SHA256[TEST_LABELS]: 4542,
    FASHION_MNIST_SHA256[TRAIN_IMAGES]: 26421880,
    FASHION_MNIST_SHA256[TRAIN_LABELS]: 29515,
    FASHION_MNIST_SHA256[TEST_IMAGES]: 4422102,
    FASHION_MNIST_SHA256[TEST_LABELS]: 5148,
}

#: The largest IDX file (as stored, .gz or not) read when its size is not known from
#: its checksum, and the largest decompressed IDX payload: 256 MiB is over 300,000
#: 28x28 images, five times MNIST's training set.
MAX_IDX_BYTES = 256 << 20

#: Seconds to wait on a mirror before giving up on it.
DOWNLOAD_TIMEOUT = 60.0
_IMAGE_MAGIC = 0x00000803
_LABEL_MAGIC = 0x00000801


def _cache_root() -> Path:
    value = os.environ.get("XPNN_CACHE_DIR")
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "xpnn"


def _resolve_idx_dir(path, folder: str) -> tuple[Path, bool]:
    """(directory, user_given): user-given folders never have files deleted."""
    if path is not None:
        return Path(path).expanduser(), True
    data_dir = _data_dir_env()
    if data_dir is not None:
        return data_dir / folder, True
    return _cache_root() / folder, False


def _size_limit(expected: str | None) -> tuple[int, bool]:
    """(the most bytes a file with SHA-256 ``expected`` (None: unknown) may have,
    whether that is its exact known size)."""
    known = KNOWN_SIZES.get(expected) if expected is not None else None
    return (known, True) if known is not None else (MAX_IDX_BYTES, False)


def _size_problem(name: str, where, size: int, expected: str | None) -> str | None:
    """Why a file of ``size`` bytes cannot be ``name`` (None when it may be)."""
    limit, exact = _size_limit(expected)
    if exact and size != limit:
        return f"{name} ({where}) has {size:,} bytes, but the file with SHA-256 {expected} " \
               f"has {limit:,}"
    if size > limit:
        return f"{name} ({where}) has {size:,} bytes, more than the {limit:,} an IDX file " \
               f"may have"
    return None


def _read_verified(file: Path, name: str, expected: str | None) -> tuple[bytes, str | None]:
    """(the bytes of ``file``, the problem with them or None): the size is checked
    before anything is read, then the file is read and hashed in chunks."""
    size = file.stat().st_size
    problem = _size_problem(name, file, size, expected)
    if problem is not None:
        return b"", problem
    digest = hashlib.sha256()
    chunks = []
    with open(file, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            chunks.append(chunk)
            size -= len(chunk)
            if size < 0:
                return b"", f"{name} ({file}) grew while it was read"
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        return b"", _mismatch(name, file, expected, actual)
    return b"".join(chunks), None


def _normalize_mirrors(mirrors) -> list[str]:
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    mirrors = list(mirrors)
    if not mirrors or not all(isinstance(m, str) and m for m in mirrors):
        raise ValueError(f"mirrors must be a non-empty list of URL prefixes, got {mirrors!r}")
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _checksum_table(default: dict, checksums) -> dict:
    table = dict(default)
    if checksums is not None:
        if not isinstance(checksums, dict):
            raise TypeError("checksums must be a dict {filename: sha256 hex digest}")
        unknown = sorted(set(checksums) - set(_IDX_FILES))
        if unknown:
            raise ValueError(
                f"checksums has unknown file names {unknown}; known: {', '.join(_IDX_FILES)}"
            )
        for name, value in checksums.items():
            if value is not None and not (
                isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value)
            ):
                raise ValueError(
                    f"checksums[{name!r}] must be a SHA-256 hex digest (64 hex digits) or "
                    f"None, got {value!r}"
                )
        table.update({k: (v.lower() if isinstance(v, str) else v) for k, v in checksums.items()})
    return table


def _mismatch(name: str, where, expected: str, actual: str) -> str:
    return f"{name} ({where}) has SHA-256 {actual}, expected {expected}"


# ------------------------------------------------------------- downloads (pooch)


class _CappedFile:
    """The file object a downloader writes into: refuses bytes past ``limit`` (the
    file's known size, else :data:`MAX_IDX_BYTES`), so a mirror that serves more is cut
    off there instead of being read to its end."""

    def __init__(self, file, limit: int, name: str, url: str):
        self._file, self._limit, self._name, self._url = file, limit, name, url
        self._written = 0

    def write(self, data) -> int:
        self._written += len(data)
        if self._written > self._limit:
            raise DatasetError(
                f"{self._name} from {self._url} is larger than {self._limit:,} bytes"
            )
        return self._file.write(data)

    def __getattr__(self, attr):  # flush, tell, ... of the real file
        return getattr(self._file, attr)


def _capped(downloader, limit: int, name: str):
    """``downloader`` (a pooch downloader: ``downloader(url, output_file, pooch)``) made
    to write into a :class:`_CappedFile` over pooch's temporary file."""

    def download(url, output_file, pooch):
        with open(output_file, "wb") as file:
            downloader(url, _CappedFile(file, limit, name, url), pooch)

    return download


def _resolve_progress(progress) -> bool:
    """``progress`` (None: a bar when stderr is a terminal and tqdm is installed)."""
    import importlib.util

    has_tqdm = importlib.util.find_spec("tqdm") is not None
    if progress is None:
        try:
            return bool(sys.stderr.isatty()) and has_tqdm
        except (AttributeError, ValueError):  # no stderr, or a closed one
            return False
    progress = _check_bool("progress", progress)
    if progress and not has_tqdm:
        raise ImportError("progress=True draws its bar with tqdm: pip install 'xpnn[progress]'")
    return progress


def _http_downloader(progress: bool):
    """pooch's HTTP downloader: a tqdm bar on stderr when ``progress``, and
    :data:`DOWNLOAD_TIMEOUT` seconds per mirror."""
    import pooch

    return pooch.HTTPDownloader(
        progressbar=progress, timeout=DOWNLOAD_TIMEOUT, headers={"User-Agent": "xpnn"}
    )


@contextlib.contextmanager
def _pooch_quiet(pooch):
    """pooch logs "Downloading data from ... to file <temp folder>"; xpnn prints its own
    line naming the data folder instead."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


_POOCH_MISMATCH = re.compile(r"but got ([0-9a-fA-F]{64})")


def _download_one(pooch, name, tmp: Path, directory: Path, mirrors, expected, downloader):
    """(the verified bytes of ``name`` fetched into ``tmp``, or None; the failures as
    ``(url, why)``), trying ``mirrors`` in order."""
    limit, _ = _size_limit(expected)
    failures = []
    for mirror in mirrors:
        url = mirror + name
        print(f"xpnn: downloading {url} -> {directory / name}", file=sys.stderr, flush=True)
        try:
            with _pooch_quiet(pooch):
                file = pooch.retrieve(
                    url, known_hash=None if expected is None else f"sha256:{expected}",
                    fname=name, path=tmp, downloader=_capped(downloader, limit, name),
                )
        except DatasetError as exc:  # larger than the file can be
            failures.append((url, str(exc)))
            continue
        except ValueError as exc:  # pooch: the SHA-256 does not match (temp file deleted)
            got = _POOCH_MISMATCH.search(str(exc))
            failures.append((url, _mismatch(name, f"downloaded from {url}", expected, got[1])
                             if got else f"{type(exc).__name__}: {exc}"))
            continue
        except Exception as exc:  # connection refused, no network, HTTP 404, timeout...
            failures.append((url, f"{type(exc).__name__}: {exc}"))
            continue
        data, problem = _read_verified(Path(file), name, expected)
        Path(file).unlink(missing_ok=True)
        if problem is None:
            return data, failures
        failures.append((url, problem))
    return None, failures


def _store(directory: Path, files: dict) -> None:
    """Write verified downloads into ``directory``, creating it as needed; on failure
    (disk full, ...) the folders this call created are removed again when empty."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(directory / name, lambda out, data=data: out.write(data))
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _download_missing(title, folder, missing, directory: Path, user_given: bool, mirrors,
                      table, downloader, progress) -> dict:
    """Fetch every file in ``missing`` into a temporary folder, then move them all into
    ``directory``; any failure raises before ``directory`` is touched."""
    import pooch

    if downloader is None:
        downloader = _http_downloader(progress)
    fetched = {}
    with tempfile.TemporaryDirectory(prefix="xpnn-download-") as tmp:
        for name in missing:
            data, failures = _download_one(pooch, name, Path(tmp), directory, mirrors,
                                           table[name], downloader)
            if data is None:
                raise DatasetNotFoundError(
                    _download_failed(title, folder, name, missing, directory, user_given,
                                     mirrors, table, failures)
                )
            fetched[name] = data
    _store(directory, fetched)
    return fetched


def _download_failed(title, folder, name, missing, directory, user_given, mirrors, table,
                     failures) -> str:
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures)
    where = (f"put them in {directory}" if user_given else
             f"put them in {directory}, or in a folder {folder}/ under the folder that "
             f"XPNN_DATA_DIR names")
    return (
        f"could not download {title}: {name} (SHA-256 {table[name]}) failed from every "
        f"mirror:\n{lines}\nNothing was written to {directory}. Offline (or behind a "
        f"firewall)? Get the {len(missing)} missing file(s) {', '.join(missing)} "
        f"(the original .gz files, e.g. from {mirrors[0]}) and {where}; or pass path= "
        f"naming the folder that holds them."
    )


def _read_idx(data: bytes, name: str, where: Path, magic: int):
    """The uint8 array in an IDX file (gzipped or not). Its header is checked before
    the payload is decompressed, and the payload is never inflated past the size the
    header announces, so a small file cannot make this allocate much more than it."""
    kind = "image" if magic == _IMAGE_MAGIC else "label"
    header_size = 16 if magic == _IMAGE_MAGIC else 8
    gzipped = data[:2] == b"\x1f\x8b"
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if gzipped else io.BytesIO(data)
    try:
        header = stream.read(header_size)
        if len(header) < header_size:
            raise DatasetError(f"{name} ({where}) is too short for an IDX {kind} header")
        found = int.from_bytes(header[:4], "big")
        if found != magic:
            raise DatasetError(
                f"{name} ({where}) is not an IDX {kind} file: magic number 0x{found:08x}, "
                f"expected 0x{magic:08x}"
            )
        n = int.from_bytes(header[4:8], "big")
        if magic == _IMAGE_MAGIC:
            rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
            if (rows, cols) != (28, 28):
                raise DatasetError(
                    f"{name} ({where}) holds {rows}x{cols} images, expected 28x28"
                )
            shape = (n, rows, cols)
        else:
            shape = (n,)
        size = math.prod(shape)
        room = DEFLATE_MAX_RATIO * len(data) if gzipped else len(data)
        if header_size + size > min(room, MAX_IDX_BYTES):
            raise DatasetError(
                f"{name} ({where}): the header announces {n} {kind}s ({header_size + size:,} "
                f"bytes), more than this {len(data):,}-byte file can hold"
            )
        payload = stream.read(size + 1)  # one byte more: too long, or the gzip CRC check
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{name} ({where}) is not a valid gzip file: {exc}") from None
    if len(payload) != size:
        raise DatasetError(
            f"{name} ({where}): the header announces {n} {kind}s ({header_size + size} bytes) "
            f"but the data holds {header_size + len(payload)}{'+' if len(payload) > size else ''}"
            f" bytes"
        )
    array = np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    if magic == _LABEL_MAGIC and n and int(array.max()) > 9:
        raise DatasetError(f"{name} ({where}) has label {int(array.max())}, expected 0..9")
    return array


def _load_idx_dataset(
    title, folder, default_checksums, default_mirrors, *, normalize, flatten, one_hot_label,
    path, download, backend, device, dtype, mirrors, checksums, progress, downloader,
):
    normalize = _check_bool("normalize", normalize)
    flatten = _check_bool("flatten", flatten)
    one_hot_label = _check_bool("one_hot_label", one_hot_label)
    download = _check_bool("download", download)
    progress = _resolve_progress(progress)
    if downloader is not None and not callable(downloader):
        raise ValueError(
            f"downloader must be a pooch downloader, callable(url, output_file, pooch), "
            f"got {downloader!r}"
        )
    dtype_name = _check_target(backend, device, dtype)
    table = _checksum_table(default_checksums, checksums)
    mirror_list = _normalize_mirrors(default_mirrors if mirrors is None else mirrors)
    directory, user_given = _resolve_idx_dir(_check_path(path), folder)

    contents: dict[str, bytes] = {}
    missing = []
    for name in _IDX_FILES:
        file = directory / name
        if not file.is_file():
            missing.append(name)
            continue
        data, message = _read_verified(file, name, table[name])
        if message is None:
            contents[name] = data
            continue
        if user_given:
            raise DatasetError(
                f"{message}. The file is corrupt, truncated or not the original {title} file; "
                f"delete it (it will be downloaded again) or replace it with the original."
            )
        # A bad file in our own cache: remove it, then download it again if allowed.
        file.unlink(missing_ok=True)
        if not download:
            raise DatasetError(f"{message}; removed it from the cache. Load with download=True.")
        warnings.warn(f"{message}; removed it from the cache and downloading again", stacklevel=3)
        missing.append(name)

    if missing and not download:
        env = _data_dir_env()
        raise DatasetNotFoundError(
            f"{title} files missing from {directory}: {', '.join(missing)}. "
            f"Put the original .gz files there (set XPNN_DATA_DIR to a folder holding "
            f"{folder}/, or pass path=), or call with download=True to fetch them. "
            f"(XPNN_DATA_DIR is {'set to ' + str(env) if env else 'not set'}.)"
        )
    if missing:
        contents.update(_download_missing(
            title, folder, missing, directory, user_given, mirror_list, table, downloader,
            progress,
        ))

    splits = []
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images = _read_idx(contents[images_name], images_name, directory, _IMAGE_MAGIC)
        labels = _read_idx(contents[labels_name], labels_name, directory, _LABEL_MAGIC)
        if len(images) != len(labels):
            raise DatasetError(
                f"{images_name} holds {len(images)} images but {labels_name} holds "
                f"{len(labels)} labels ({directory})"
            )
        x = images.astype(dtype_name)
        if normalize:
            x /= 255.0
        x = x.reshape(len(x), 784) if flatten else x.reshape(len(x), 1, 28, 28)
        if one_hot_label:
            t = np.zeros((len(labels), 10), dtype=dtype_name)
            t[np.arange(len(labels)), labels] = 1.0
        else:
            t = labels.astype(np.int64)
        splits.append((
            asarray(x, backend=backend, device=device, dtype=dtype_name),
            asarray(t, backend=backend, device=device, dtype=dtype_name if one_hot_label else None),
        ))
    return splits[0], splits[1]


def load_mnist(
    normalize=True, flatten=True, one_hot_label=False, path=None, download=True,
    backend=None, device=None, dtype="float32", *, mirrors=None, checksums=None,
    progress=None, downloader=None,
):
    """Load MNIST as ``(x_train, t_train), (x_test, t_test)``.

    ``x``: ``(N, 784)`` floats (``(N, 1, 28, 28)`` when ``flatten=False``), in [0, 1] when
    ``normalize`` else 0..255; N is 60000 (train) and 10000 (test). ``t``: ``int64 (N,)``,
    or ``(N, 10)`` one-hot floats when ``one_hot_label``.

    Files are read from ``path``, ``$XPNN_DATA_DIR/mnist`` or the cache
    (``$XPNN_CACHE_DIR`` or ``~/.cache/xpnn``)``/mnist``; missing ones are downloaded
    into that folder from ``mirrors`` (default :data:`MNIST_MIRRORS`) unless
    ``download=False``. Every file must match its SHA-256 (:data:`MNIST_SHA256`,
    overridden per file by ``checksums``; a value of None skips the check), else
    :class:`DatasetError`. Files found locally are used without any network access.

    Downloads go through pooch: ``progress`` draws a tqdm bar per file on stderr (None:
    when stderr is a terminal); ``downloader`` replaces pooch's HTTP downloader with any
    pooch downloader, ``callable(url, output_file, pooch)`` writing the bytes at ``url``
    into ``output_file`` (a file object). All missing files are fetched into a temporary
    folder and moved into the data folder only when every one matched its SHA-256: a
    failed download leaves the data folder unchanged, and when every mirror fails (no
    network) :class:`DatasetNotFoundError` names the folder to put which files in.
    """
    return _load_idx_dataset(
        "MNIST", "mnist", MNIST_SHA256, MNIST_MIRRORS, normalize=normalize, flatten=flatten,
        one_hot_label=one_hot_label, path=path, download=download, backend=backend,
        device=device, dtype=dtype, mirrors=mirrors, checksums=checksums,
        progress=progress, downloader=downloader,
    )


def load_fashion_mnist(
    normalize=True, flatten=True, one_hot_label=False, path=None, download=True,
    backend=None, device=None, dtype="float32", *, mirrors=None, checksums=None,
    progress=None, downloader=None,
):
    """Load Fashion-MNIST; same shapes and arguments as :func:`load_mnist`.

    Folder ``fashion-mnist``; mirrors :data:`FASHION_MNIST_MIRRORS`, checksums
    :data:`FASHION_MNIST_SHA256`.
    """
    return _load_idx_dataset(
        "Fashion-MNIST", "fashion-mnist", FASHION_MNIST_SHA256, FASHION_MNIST_MIRRORS,
        normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, path=path,
        download=download, backend=backend, device=device, dtype=dtype, mirrors=mirrors,
        checksums=checksums, progress=progress, downloader=downloader,
    )
