"""Datasets for the examples: MNIST, Fashion-MNIST, Sign Language Digits and toy data.

Everything here reads and decodes on the host with NumPy (and Pillow for JPEGs); only
the finished arrays are moved to the chosen backend/device with
:func:`xpnn.backend.asarray`. Images come back as floats (``dtype``, default
``"float32"``), class labels as ``int64`` of shape ``(N,)`` (or one-hot floats).

Where data is looked for:

* MNIST / Fashion-MNIST: ``path=``, else ``$XPNN_DATA_DIR/mnist`` (``fashion-mnist``)
  when ``XPNN_DATA_DIR`` is set, else the user cache ``$XPNN_CACHE_DIR/mnist`` or
  ``~/.cache/xpnn/mnist``. Missing files are downloaded from a list of mirrors and
  every file is checked against its known size (:data:`KNOWN_SIZES`, before it is
  read; at most :data:`MAX_IDX_BYTES` when the size is not known) and SHA-256 (read
  in chunks) on every load; a gzip is never inflated past the size its IDX header
  announces.
* Sign Language Digits: ``path=``, else ``$XPNN_DATA_DIR/sign-language-digits``
  (no download; the folder holds ``Dataset/<digit>/*.JPG``, class folders named by
  plain ASCII decimal labels).

Errors about the data itself (missing, corrupt, malformed, oversized files,
decompression-bomb images) are :class:`DatasetError`, a :class:`ValueError`; bad
arguments are ValueErrors naming the parameter.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import numbers
import os
import re
import struct
import sys
import urllib.request
import warnings
import zlib
from pathlib import Path

import array_api_compat
import numpy as np

from ..backend import asarray, get_namespace, resolve_device, resolve_dtype
from ..backend import dtype_name as _dtype_name  # the loaders use dtype_name for a local
from ..io.atomic import atomic_write
from ..io.limits import CHUNK, DEFLATE_MAX_RATIO

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "MNIST_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "load_mnist",
    "load_fashion_mnist",
    "load_sign_language_digits",
    "make_moons",
    "make_spirals",
    "load_car_prices",
    "train_test_split",
    "clear_cache",
]


class DatasetError(ValueError):
    """A dataset file is missing, corrupt (wrong checksum), malformed, or can't be fetched."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Dataset files are missing and were not (or could not be) downloaded."""


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


def _data_dir_env() -> Path | None:
    value = os.environ.get("XPNN_DATA_DIR")
    return Path(value).expanduser() if value else None


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


def _check_target(backend, device, dtype) -> str:
    """Fail early (before any file work) on a bad backend/device/dtype; return dtype name."""
    xp = get_namespace(backend)
    resolve_device(xp, device)
    return _dtype_name(xp, resolve_dtype(xp, dtype))


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


def _fetch(url: str, target_dir: Path, name: str, expected: str | None) -> bytes:
    """Download ``url`` into ``target_dir/name``; return the verified bytes.

    ``atomic_write`` streams the bytes into a temporary file next to the target and
    renames it onto the target only when the size and checksum match: the file gets
    the umask's permissions, is fsynced, and a failed download leaves no temporary
    file (one left by a killed download is removed by the next download of ``name``).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "xpnn"})
    limit, _ = _size_limit(expected)
    chunks: list[bytes] = []

    def write(out) -> None:
        digest = hashlib.sha256()
        received = 0
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    raise DatasetError(f"{name} from {url} is larger than {limit:,} bytes")
                digest.update(chunk)
                chunks.append(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise DatasetError(_mismatch(name, f"downloaded from {url}", expected, actual))

    atomic_write(target_dir / name, write)
    return b"".join(chunks)


def _download(name: str, target_dir: Path, mirrors: list[str], expected: str | None) -> bytes:
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror + name
        print(f"xpnn: downloading {url} -> {target_dir / name}", file=sys.stderr)
        try:
            return _fetch(url, target_dir, name, expected)
        except DatasetError as exc:  # wrong checksum
            failures.append((url, str(exc)))
        except Exception as exc:  # URLError/HTTPError, timeouts, IncompleteRead, ...
            failures.append((url, f"{type(exc).__name__}: {exc}"))
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures)
    raise DatasetError(
        f"could not download {name} (expected SHA-256 {expected}) into {target_dir}; "
        f"every mirror failed:\n{lines}\n"
        f"You can also download {name} yourself and put it in {target_dir} "
        f"(or in $XPNN_DATA_DIR/<dataset>, or pass path=)."
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
    path, download, backend, device, dtype, mirrors, checksums,
):
    normalize = _check_bool("normalize", normalize)
    flatten = _check_bool("flatten", flatten)
    one_hot_label = _check_bool("one_hot_label", one_hot_label)
    download = _check_bool("download", download)
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
    for name in missing:
        contents[name] = _download(name, directory, mirror_list, table[name])

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
    :class:`DatasetError`.
    """
    return _load_idx_dataset(
        "MNIST", "mnist", MNIST_SHA256, MNIST_MIRRORS, normalize=normalize, flatten=flatten,
        one_hot_label=one_hot_label, path=path, download=download, backend=backend,
        device=device, dtype=dtype, mirrors=mirrors, checksums=checksums,
    )


def load_fashion_mnist(
    normalize=True, flatten=True, one_hot_label=False, path=None, download=True,
    backend=None, device=None, dtype="float32", *, mirrors=None, checksums=None,
):
    """Load Fashion-MNIST; same shapes and arguments as :func:`load_mnist`.

    Folder ``fashion-mnist``; mirrors :data:`FASHION_MNIST_MIRRORS`, checksums
    :data:`FASHION_MNIST_SHA256`.
    """
    return _load_idx_dataset(
        "Fashion-MNIST", "fashion-mnist", FASHION_MNIST_SHA256, FASHION_MNIST_MIRRORS,
        normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, path=path,
        download=download, backend=backend, device=device, dtype=dtype, mirrors=mirrors,
        checksums=checksums,
    )


# ------------------------------------------------------------ Sign Language Digits

_SIGN_URL = "https://github.com/ardamavi/Sign-Language-Digits-Dataset"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_SIGN_CACHE: dict = {}
#: class folders are named by their label: plain ASCII digits, at most 6 of them
_CLASS_NAME = re.compile(r"[0-9]{1,6}\Z")
#: the largest ``size`` load_sign_language_digits resizes to (the photos are 100x100;
#: 256x256 already takes 135 MB as uint8 and 540 MB as float32 for the 2,062 images)
MAX_SIGN_SIZE = 256
#: the most bytes the decoded uint8 images may take (the real 2,062 at 256x256: 135 MB)
MAX_SIGN_BYTES = 1 << 30
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
                  KeyError, ZeroDivisionError)


def _import_pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError(
            "load_sign_language_digits needs Pillow to decode the JPEG images: "
            "pip install 'xpnn[images]'"
        ) from None
    return Image, ImageOps


def _find_sign_dataset(path) -> Path:
    if path is not None:
        root = Path(path).expanduser()
        origin = f"path={str(path)!r}"
    else:
        data_dir = _data_dir_env()
        if data_dir is None:
            raise DatasetNotFoundError(
                "Sign Language Digits: no path= given and XPNN_DATA_DIR is not set. Get the "
                f"dataset from {_SIGN_URL} and put its Dataset/ folder at "
                "$XPNN_DATA_DIR/sign-language-digits/Dataset (Dataset/<digit>/*.JPG), "
                "or pass path=."
            )
        root = data_dir / "sign-language-digits"
        origin = f"XPNN_DATA_DIR={str(data_dir)!r}"
    for candidate in (root / "Dataset", root):
        if candidate.is_dir() and any(
            p.is_dir() and p.name.isdigit() for p in candidate.iterdir()
        ):
            return candidate
    raise DatasetNotFoundError(
        f"Sign Language Digits not found at {root} (from {origin}): expected a folder "
        f"Dataset/<digit>/*.JPG there. Get it from {_SIGN_URL} and put its Dataset/ folder "
        "at $XPNN_DATA_DIR/sign-language-digits/Dataset, or pass path= (the folder "
        "holding Dataset/)."
    )


def _class_label(class_dir: Path, seen: dict) -> int:
    """The label a class folder's name gives (``seen``: label -> folder so far)."""
    if not _CLASS_NAME.match(class_dir.name):
        raise DatasetError(
            f"class folder {class_dir} is not named by a plain decimal label: use ASCII "
            f"digits 0-9 (at most 6), like Dataset/0 ... Dataset/9"
        )
    label = int(class_dir.name)
    if label in seen:
        raise DatasetError(f"class folders {seen[label]} and {class_dir} both mean label {label}")
    seen[label] = class_dir
    return label


def _list_sign_images(dataset: Path) -> list[tuple[Path, int]]:
    files = []
    seen: dict = {}
    for class_dir in sorted(dataset.iterdir(), key=lambda p: p.name):
        if not (class_dir.is_dir() and class_dir.name.isdigit()):
            continue
        label = _class_label(class_dir, seen)
        for file in sorted(class_dir.iterdir(), key=lambda p: p.name):
            if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES:
                files.append((file, label))
    if not files:
        raise DatasetNotFoundError(f"no images (*.JPG) found under {dataset}/<digit>/")
    return files


def _decode_image(Image, ImageOps, file: Path, size: int) -> np.ndarray:
    """One image -> (size, size) uint8 grayscale, EXIF orientation applied.

    Images over Pillow's ``Image.MAX_IMAGE_PIXELS`` (decompression bombs) and files
    Pillow cannot decode raise DatasetError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                if img.format == "JPEG" and min(img.size) >= 2 * size:
                    img.draft(img.mode, (size, size))  # fast DCT downscale of big photos
                img = ImageOps.exif_transpose(img)
                img = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"image {file} is too large to decode: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"cannot decode image {file}: {exc}") from None


def _decode_sign_dataset(dataset: Path, size: int):
    files = _list_sign_images(dataset)
    stats = tuple(
        (str(f.relative_to(dataset)), f.stat().st_size, f.stat().st_mtime_ns) for f, _ in files
    )
    key = (str(dataset.resolve()), size, stats)
    cached = _SIGN_CACHE.get(key)
    if cached is not None:
        return cached
    Image, ImageOps = _import_pillow()
    if len(files) * size * size > MAX_SIGN_BYTES:
        raise DatasetError(
            f"{len(files):,} images under {dataset} at {size}x{size} would take "
            f"{len(files) * size * size:,} bytes, more than MAX_SIGN_BYTES={MAX_SIGN_BYTES:,}; "
            f"pass a smaller size"
        )
    images = np.empty((len(files), size, size), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        images[i] = _decode_image(Image, ImageOps, file, size)
    labels = np.array([label for _, label in files], dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    _SIGN_CACHE[key] = (images, labels)
    return images, labels


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


def _check_classes(classes) -> list[int] | None:
    """None, or a non-empty list of distinct int labels (checked again, against the
    folders found, once the images are listed)."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise ValueError(
            f"classes must be a sequence of class labels such as (0, 1), got {classes!r}"
        )
    chosen = list(classes)
    bad = [c for c in chosen if isinstance(c, bool) or not isinstance(c, numbers.Integral)]
    if bad:
        raise ValueError(f"classes={classes!r}: class labels must be integers, got {bad}")
    if not chosen:
        raise ValueError(f"classes={classes!r}: no classes given")
    chosen = [int(c) for c in chosen]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes={classes!r} repeats a class")
    return chosen


def load_sign_language_digits(
    path=None, classes=None, test_size=0.2, seed=0, size=64, backend=None, device=None,
    dtype="float32", flatten=True, *, stratify=True,
):
    """Load the Sign Language Digits images as ``(x_train, t_train), (x_test, t_test)``.

    Each image is turned upright (EXIF orientation), converted to grayscale, resized to
    ``size`` x ``size`` and scaled to [0, 1]. ``x``: ``(N, size*size)`` floats
    (``(N, 1, size, size)`` when ``flatten=False``); ``t``: ``int64 (N,)``. All 2,062
    images with ``classes=None`` (labels 0..9); ``classes=(0, 1)`` keeps those classes
    and relabels them 0..k-1 in the given order. The split is a seeded (by default
    stratified) shuffle split, see :func:`train_test_split`.

    Looked for at ``path`` (the folder holding ``Dataset/``, or ``Dataset/`` itself)
    or ``$XPNN_DATA_DIR/sign-language-digits``; never downloaded. Needs Pillow
    (``pip install 'xpnn[images]'``). Decoded images are cached in-process.
    """
    size = _check_int("size", size, 1, MAX_SIGN_SIZE)
    chosen = _check_classes(classes)
    flatten = _check_bool("flatten", flatten)
    stratify = _check_bool("stratify", stratify)
    dtype_name = _check_target(backend, device, dtype)
    _import_pillow()
    dataset = _find_sign_dataset(_check_path(path))
    images, labels = _decode_sign_dataset(dataset, size)

    if chosen is not None:
        valid = sorted(set(labels.tolist()))
        bad = [c for c in chosen if c not in valid]
        if bad:
            raise ValueError(
                f"classes={classes!r}: unknown classes {bad}; valid classes are {valid}"
            )
        keep = np.isin(labels, chosen)
        # relabel chosen[i] -> i, without a table as long as the largest label
        order = np.argsort(chosen)
        relabel = order[np.searchsorted(np.asarray(chosen)[order], labels[keep])]
        images, labels = images[keep], relabel.astype(np.int64)

    (x_train, t_train), (x_test, t_test) = train_test_split(
        images, labels, test_size=test_size, seed=seed, stratify=stratify
    )

    def finish(x, t):
        x = x.astype(dtype_name) / np.asarray(255.0, dtype=dtype_name)
        x = x.reshape(len(x), size * size) if flatten else x.reshape(len(x), 1, size, size)
        return (
            asarray(x, backend=backend, device=device, dtype=dtype_name),
            asarray(t.astype(np.int64), backend=backend, device=device),
        )

    return finish(x_train, t_train), finish(x_test, t_test)


def clear_cache():
    """Forget the decoded images cached in-process by :func:`load_sign_language_digits`."""
    _SIGN_CACHE.clear()


# -------------------------------------------------------------------- toy data


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _check_noise(noise):
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    if not math.isfinite(noise):
        raise ValueError(f"noise must be finite, got {noise!r}")
    return float(noise)


def make_moons(n_samples=200, noise=0.2, seed=None, backend=None, device=None, dtype="float32"):
    """Two interleaving half circles (like scikit-learn's ``make_moons``).

    Returns ``x`` ``(n_samples, 2)`` floats and ``t`` ``int64 (n_samples,)``: class 0 is
    the upper moon ``(cos θ, sin θ)``, class 1 the lower ``(1 - cos θ, 0.5 - sin θ)``,
    θ evenly spaced in [0, π], plus Gaussian noise of std ``noise``; shuffled by ``seed``.
    """
    n_samples = _check_int("n_samples", n_samples, 2)
    noise = _check_noise(noise)
    dtype_name = _check_target(backend, device, dtype)
    rng = _rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    theta_out = np.linspace(0.0, np.pi, n_out)
    theta_in = np.linspace(0.0, np.pi, n_in)
    x = np.concatenate([
        np.stack([np.cos(theta_out), np.sin(theta_out)], axis=1),
        np.stack([1.0 - np.cos(theta_in), 1.0 - np.sin(theta_in) - 0.5], axis=1),
    ])
    t = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    if noise:
        x = x + rng.normal(scale=noise, size=x.shape)
    order = rng.permutation(n_samples)
    return (
        asarray(x[order], backend=backend, device=device, dtype=dtype_name),
        asarray(t[order], backend=backend, device=device),
    )


def make_spirals(
    n_samples=300, n_classes=3, noise=0.2, seed=None, backend=None, device=None,
    dtype="float32",
):
    """The cs231n spiral: ``n_classes`` arms, ``n_samples`` points in all.

    For class k with n points: r = linspace(0, 1, n), θ = linspace(4k, 4(k+1), n) plus
    Gaussian noise of std ``noise``; the point is ``r * (sin θ, cos θ)``. (When
    ``n_samples`` is not a multiple of ``n_classes`` the first classes get one more.)
    Returns ``x`` ``(n_samples, 2)`` floats and ``t`` ``int64 (n_samples,)``, shuffled.
    """
    n_classes = _check_int("n_classes", n_classes, 1)
    n_samples = _check_int("n_samples", n_samples, n_classes)
    noise = _check_noise(noise)
    dtype_name = _check_target(backend, device, dtype)
    rng = _rng(seed)
    xs, ts = [], []
    for k in range(n_classes):
        n = n_samples // n_classes + (1 if k < n_samples % n_classes else 0)
        r = np.linspace(0.0, 1.0, n)
        theta = np.linspace(4.0 * k, 4.0 * (k + 1), n)
        if noise:
            theta = theta + rng.normal(scale=noise, size=n)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ts.append(np.full(n, k, dtype=np.int64))
    x, t = np.concatenate(xs), np.concatenate(ts)
    order = rng.permutation(n_samples)
    return (
        asarray(x[order], backend=backend, device=device, dtype=dtype_name),
        asarray(t[order], backend=backend, device=device),
    )


def load_car_prices(backend=None, device=None, dtype="float32"):
    """The linear-regression demo: ``x`` price 3..9 and ``t`` sales, both ``(7, 1)``.

    Sales lie exactly on ``9 - 0.5 * price`` (7.5, 7.0, ..., 4.5).
    """
    dtype_name = _check_target(backend, device, dtype)
    price = np.arange(3.0, 10.0).reshape(7, 1)
    sales = 9.0 - 0.5 * price
    return (
        asarray(price, backend=backend, device=device, dtype=dtype_name),
        asarray(sales, backend=backend, device=device, dtype=dtype_name),
    )


# ------------------------------------------------------------------ splitting


def _as_host(name, a):
    if isinstance(a, np.ndarray):
        return a
    if array_api_compat.is_array_api_obj(a):
        raise TypeError(
            f"train_test_split works on host NumPy arrays; {name} is a "
            f"{type(a).__module__}.{type(a).__name__}. Split before moving the data to a "
            f"backend, or copy it with xpnn.backend.to_numpy first."
        )
    return np.asarray(a)


def train_test_split(x, t, test_size=0.25, seed=None, stratify=False):
    """Shuffle and split host NumPy arrays: ``(x_train, t_train), (x_test, t_test)``.

    Host-side only (NumPy in, NumPy out): split first, then move the parts to a backend.
    ``test_size`` is a fraction in (0, 1) (the test part gets ``ceil(test_size * N)``
    rows) or a row count in [1, N-1]. ``stratify=True`` keeps each class's share of
    ``t`` (labels of shape ``(N,)``) the same in both parts. Both parts are shuffled;
    ``seed`` (None, an int or a ``numpy.random.Generator``) makes it repeatable.
    """
    x = _as_host("x", x)
    t = _as_host("t", t)
    if x.ndim == 0 or t.ndim == 0:
        raise ValueError("x and t must be arrays with a first (sample) axis, not scalars")
    n = len(x)
    if len(t) != n:
        raise ValueError(f"x and t have different lengths: {n} and {len(t)}")
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    if isinstance(test_size, bool):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, not {test_size!r}")
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
        if not 1 <= n_test <= n - 1:
            raise ValueError(f"test_size={n_test} must be a count in [1, {n - 1}] for {n} samples")
    elif isinstance(test_size, numbers.Real):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size={test_size!r} must be a fraction in (0, 1) or a count")
        n_test = math.ceil(float(test_size) * n)
        if n_test >= n:
            raise ValueError(f"test_size={test_size!r} leaves no training samples out of {n}")
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, not {test_size!r}")
    rng = _rng(seed)

    if stratify:
        if t.ndim != 1:
            raise ValueError(f"stratify=True needs class labels of shape (N,), got {t.shape}")
        classes, inverse = np.unique(t, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        share = counts * (n_test / n)
        per_class = np.floor(share).astype(np.int64)
        remainder = n_test - int(per_class.sum())
        if remainder:
            # Largest fractional parts get the leftover rows (ties broken at random).
            frac = share - per_class
            order = np.lexsort((rng.random(len(classes)), -frac))
            per_class[order[:remainder]] += 1
        test_parts, train_parts = [], []
        for c in range(len(classes)):
            members = rng.permutation(np.flatnonzero(inverse == c))
            test_parts.append(members[: per_class[c]])
            train_parts.append(members[per_class[c]:])
        test_idx = rng.permutation(np.concatenate(test_parts))
        train_idx = rng.permutation(np.concatenate(train_parts))
    else:
        order = rng.permutation(n)
        test_idx, train_idx = order[:n_test], order[n_test:]
    return (x[train_idx], t[train_idx]), (x[test_idx], t[test_idx])
