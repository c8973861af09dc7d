"""Sign Language Digits: JPEG photos of hand signs, read from a local folder (never
downloaded), decoded with Pillow, cached in-process."""

from __future__ import annotations

import numbers
import re
import struct
import warnings
from pathlib import Path

import numpy as np

from ..backend import asarray
from ._common import (
    DatasetError,
    DatasetNotFoundError,
    _check_bool,
    _check_int,
    _check_path,
    _check_target,
    _data_dir_env,
)
from .split import train_test_split

__all__ = ["load_sign_language_digits", "clear_cache", "MAX_SIGN_SIZE", "MAX_SIGN_BYTES"]

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

