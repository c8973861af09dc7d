"""Tests for xpnn.data: synthetic IDX files, downloads from a local HTTP server,
the real data (``-m data``, needs XPNN_DATA_DIR), toy data, splitting and backends.

Nothing here touches the internet: every download goes to a server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import socket
import sys
import threading
from pathlib import Path

import array_api_compat
import numpy as np
import pytest
from hostile_files import peak_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from xpnn.backend import available_backends, backend_name, to_numpy
from xpnn.data import (
    DatasetError,
    DatasetNotFoundError,
    datasets,
    images,
    load_car_prices,
    load_fashion_mnist,
    load_mnist,
    load_sign_language_digits,
    make_moons,
    make_spirals,
    train_test_split,
)

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
N_TRAIN, N_TEST = 20, 10


# ----------------------------------------------------------------- IDX helpers


def idx_images(images: np.ndarray, magic=0x803) -> bytes:
    n, rows, cols = images.shape
    header = b"".join(v.to_bytes(4, "big") for v in (magic, n, rows, cols))
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic=0x801) -> bytes:
    return magic.to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(
        np.uint8
    ).tobytes()


def write_fake_idx(folder: Path, seed=0, n_train=N_TRAIN, n_test=N_TEST):
    """Write four small gzipped IDX files; return (checksums, arrays)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "t_train": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t_test": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    raw = {
        FILES[0]: idx_images(arrays["x_train"]),
        FILES[1]: idx_labels(arrays["t_train"]),
        FILES[2]: idx_images(arrays["x_test"]),
        FILES[3]: idx_labels(arrays["t_test"]),
    }
    checksums = {}
    for name, data in raw.items():
        blob = gzip.compress(data, mtime=0)
        (folder / name).write_bytes(blob)
        checksums[name] = hashlib.sha256(blob).hexdigest()
    return checksums, arrays


def files_in(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def fake_idx(tmp_path):
    folder = tmp_path / "fake"
    checksums, arrays = write_fake_idx(folder)
    return folder, checksums, arrays


# -------------------------------------------------------- synthetic IDX loading


def test_load_synthetic_defaults(fake_idx):
    folder, checksums, arrays = fake_idx
    (x, t), (xt, tt) = load_mnist(path=folder, checksums=checksums, download=False)
    assert x.shape == (N_TRAIN, 784) and xt.shape == (N_TEST, 784)
    assert x.dtype == np.float32 and t.dtype == np.int64 and tt.dtype == np.int64
    assert t.shape == (N_TRAIN,) and tt.shape == (N_TEST,)
    np.testing.assert_allclose(x, arrays["x_train"].reshape(N_TRAIN, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(t, arrays["t_train"])
    np.testing.assert_array_equal(tt, arrays["t_test"])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_load_synthetic_raw_unflattened_one_hot(fake_idx):
    folder, checksums, arrays = fake_idx
    (x, t), (xt, tt) = load_mnist(
        normalize=False, flatten=False, one_hot_label=True, path=folder,
        checksums=checksums, dtype="float64",
    )
    assert x.shape == (N_TRAIN, 1, 28, 28) and xt.shape == (N_TEST, 1, 28, 28)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x[:, 0], arrays["x_train"].astype(np.float64))
    assert x.max() > 1.0
    assert t.shape == (N_TRAIN, 10) and t.dtype == np.float64
    np.testing.assert_array_equal(t.sum(axis=1), 1.0)
    np.testing.assert_array_equal(t.argmax(axis=1), arrays["t_train"])
    np.testing.assert_array_equal(tt.argmax(axis=1), arrays["t_test"])


def test_fashion_mnist_synthetic(fake_idx):
    folder, checksums, arrays = fake_idx
    (x, t), _ = load_fashion_mnist(path=folder, checksums=checksums, download=False)
    assert x.shape == (N_TRAIN, 784)
    np.testing.assert_array_equal(t, arrays["t_train"])


def test_default_checksums_refuse_synthetic_files(fake_idx):
    folder, _, _ = fake_idx
    with pytest.raises(DatasetError) as info:
        load_mnist(path=folder, download=False)
    text = str(info.value)
    assert "train-images-idx3-ubyte.gz" in text
    assert datasets.MNIST_SHA256["train-images-idx3-ubyte.gz"] in text


def test_corrupt_file_in_user_path_is_refused_but_kept(fake_idx):
    folder, checksums, _ = fake_idx
    bad = folder / FILES[1]
    bad.write_bytes(b"not the labels")
    with pytest.raises(DatasetError) as info:
        load_mnist(path=folder, checksums=checksums)
    text = str(info.value)
    assert FILES[1] in text and checksums[FILES[1]] in text
    assert bad.read_bytes() == b"not the labels"  # user files are never deleted


def _bad_idx_cases():
    imgs = np.zeros((3, 28, 28), dtype=np.uint8)
    labels = np.array([1, 2, 3], dtype=np.uint8)
    return {
        "image magic": (FILES[0], idx_images(imgs, magic=0x801), "magic"),
        "label magic": (FILES[1], idx_labels(labels, magic=0x803), "magic"),
        "27x27": (FILES[0], idx_images(np.zeros((3, 27, 27), np.uint8)), "28x28"),
        "short payload": (FILES[0], idx_images(imgs)[:-5], "bytes"),
        "count mismatch": (FILES[1], idx_labels(np.array([1, 2], np.uint8)), "labels"),
        "label 12": (FILES[1], idx_labels(np.array([1, 12, 3], np.uint8)), "label 12"),
        "tiny": (FILES[1], b"\x00\x00", "too short"),
    }


@pytest.mark.parametrize("case", sorted(_bad_idx_cases()))
def test_bad_idx_header_is_refused(tmp_path, case):
    name, payload, words = _bad_idx_cases()[case]
    imgs = np.zeros((3, 28, 28), dtype=np.uint8)
    good = {
        FILES[0]: idx_images(imgs), FILES[1]: idx_labels(np.array([1, 2, 3], np.uint8)),
        FILES[2]: idx_images(imgs), FILES[3]: idx_labels(np.array([1, 2, 3], np.uint8)),
    }
    good[name] = payload
    checksums = {}
    for fname, data in good.items():
        blob = gzip.compress(data)
        (tmp_path / fname).write_bytes(blob)
        checksums[fname] = hashlib.sha256(blob).hexdigest()
    with pytest.raises(DatasetError, match=words):
        load_mnist(path=tmp_path, checksums=checksums, download=False)


def test_not_gzip_is_refused(fake_idx):
    folder, checksums, _ = fake_idx
    blob = b"\x1f\x8b" + b"garbage" * 10
    (folder / FILES[3]).write_bytes(blob)
    checksums[FILES[3]] = hashlib.sha256(blob).hexdigest()
    with pytest.raises(DatasetError, match="gzip"):
        load_mnist(path=folder, checksums=checksums)


def test_argument_validation(fake_idx):
    folder, checksums, _ = fake_idx
    with pytest.raises(ValueError, match="unknown file names"):
        load_mnist(path=folder, checksums={"train-images.gz": "00"})
    with pytest.raises(ValueError, match="dtype"):
        load_mnist(path=folder, checksums=checksums, dtype="int32")
    with pytest.raises(ValueError, match="unknown backend"):
        load_mnist(path=folder, checksums=checksums, backend="nope")
    with pytest.raises(ValueError, match="mirrors"):
        load_mnist(path=folder, checksums=checksums, mirrors=[])


def test_data_dir_env_is_used(tmp_path, monkeypatch):
    checksums, arrays = write_fake_idx(tmp_path / "data" / "fashion-mnist", seed=3)
    monkeypatch.setenv("XPNN_DATA_DIR", str(tmp_path / "data"))
    (_, t), _ = load_fashion_mnist(checksums=checksums, download=False)
    np.testing.assert_array_equal(t, arrays["t_train"])


def test_missing_files_without_download(tmp_path, monkeypatch):
    monkeypatch.delenv("XPNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XPNN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(download=False)
    text = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    assert all(name in text for name in FILES)
    assert "XPNN_DATA_DIR" in text and str(tmp_path / "cache" / "mnist") in text
    # one missing file in a user folder: only that one is named
    folder = tmp_path / "user"
    checksums, _ = write_fake_idx(folder)
    (folder / FILES[2]).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(path=folder, checksums=checksums, download=False)
    assert FILES[2] in str(info.value) and FILES[0] not in str(info.value)


# ------------------------------------------------------ downloads (local server)


class _Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server with mirrors good/, corrupt/, truncated/ (missing/ gives 404)."""
    root = tmp_path / "www"
    checksums, arrays = write_fake_idx(root / "good", seed=1)
    (root / "corrupt").mkdir()
    (root / "truncated").mkdir()
    for name in FILES:
        blob = (root / "good" / name).read_bytes()
        wrong = bytearray(blob)
        wrong[len(wrong) // 2] ^= 0xFF
        (root / "corrupt" / name).write_bytes(bytes(wrong))
        (root / "truncated" / name).write_bytes(blob[: len(blob) // 2])
    srv = _Server(root)
    srv.checksums, srv.arrays = checksums, arrays
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.delenv("XPNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XPNN_CACHE_DIR", str(folder))
    return folder


def test_download_verifies_and_caches(server, cache, capsys):
    mirrors = [server.url + "good/"]
    (x, t), (xt, tt) = load_mnist(mirrors=mirrors, checksums=server.checksums)
    assert x.shape == (N_TRAIN, 784) and xt.shape == (N_TEST, 784)
    np.testing.assert_array_equal(t, server.arrays["t_train"])
    assert files_in(cache) == sorted(f"mnist/{name}" for name in FILES)  # no temp files
    assert sorted(server.requests) == sorted(f"/good/{name}" for name in FILES)
    assert "downloading" in capsys.readouterr().err
    server.requests.clear()
    (_, t2), _ = load_mnist(mirrors=mirrors, checksums=server.checksums)
    assert server.requests == []  # served from the cache
    np.testing.assert_array_equal(t2, t)


@pytest.mark.parametrize("progress", [True, False])
def test_download_progress_bar(server, cache, capsys, progress):
    # pooch's HTTPDownloader draws tqdm's bar on stderr (a byte count per file)
    load_mnist(mirrors=[server.url + "good/"], checksums=server.checksums, progress=progress)
    err = capsys.readouterr().err
    assert ("100%" in err) == progress, err
    assert ("B/s" in err) == progress, err


def test_download_into_user_path(server, tmp_path):
    folder = tmp_path / "mine" / "nested"
    load_fashion_mnist(path=folder, mirrors=server.url + "good", checksums=server.checksums)
    assert files_in(folder) == sorted(FILES)


@pytest.mark.parametrize("mirror", ["corrupt", "truncated"])
def test_bad_download_is_refused(server, cache, mirror):
    with pytest.raises(DatasetError) as info:
        load_mnist(mirrors=[server.url + mirror + "/"], checksums=server.checksums)
    text = str(info.value)
    first = FILES[0]
    assert first in text and server.checksums[first] in text
    assert f"{mirror}/{first}" in text
    assert not cache.exists()  # nothing bad, no temp file, no empty folder left behind


def test_first_mirror_404_falls_back(server, cache):
    mirrors = [server.url + "missing/", server.url + "good/"]
    (_, t), _ = load_mnist(mirrors=mirrors, checksums=server.checksums)
    np.testing.assert_array_equal(t, server.arrays["t_train"])
    assert f"/missing/{FILES[0]}" in server.requests and f"/good/{FILES[0]}" in server.requests
    assert files_in(cache) == sorted(f"mnist/{name}" for name in FILES)


def test_all_mirrors_fail_lists_each(server, cache):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    mirrors = [server.url + "missing/", server.url + "corrupt/", dead]
    with pytest.raises(DatasetError) as info:
        load_mnist(mirrors=mirrors, checksums=server.checksums)
    text = str(info.value)
    assert "404" in text
    assert server.url + "missing/" + FILES[0] in text
    assert server.url + "corrupt/" + FILES[0] in text and "SHA-256" in text
    assert dead + FILES[0] in text
    assert server.checksums[FILES[0]] in text
    assert not cache.exists()


def test_corrupt_file_in_cache_is_replaced(server, cache):
    checksums, mirrors = server.checksums, [server.url + "good/"]
    load_mnist(mirrors=mirrors, checksums=checksums)
    bad = cache / "mnist" / FILES[0]
    bad.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="removed it from the cache"):
        (x, _), _ = load_mnist(mirrors=mirrors, checksums=checksums)
    assert x.shape == (N_TRAIN, 784)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == checksums[FILES[0]]
    bad.write_bytes(b"broken")
    with pytest.raises(DatasetError, match=checksums[FILES[0]]):
        load_mnist(mirrors=mirrors, checksums=checksums, download=False)
    assert not bad.exists()


# ------------------------------------------------------------- real data files


def _real_folder(name: str) -> Path:
    root = os.environ.get("XPNN_DATA_DIR")
    if not root:
        pytest.skip("XPNN_DATA_DIR is not set (real-data test)")
    folder = Path(root) / name
    if not folder.is_dir():
        pytest.skip(f"{folder} does not exist (real-data test)")
    return folder


@pytest.mark.data
@pytest.mark.parametrize("loader,folder", [(load_mnist, "mnist"),
                                           (load_fashion_mnist, "fashion-mnist")])
def test_real_idx_datasets(loader, folder):
    _real_folder(folder)
    (x, t), (xt, tt) = loader(download=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and t.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    counts = np.bincount(t, minlength=10)
    assert counts.sum() == 60000 and counts.min() > 5000 and len(counts) == 10
    assert np.bincount(tt, minlength=10).sum() == 10000
    (x4, t1), (_, tt1) = loader(download=False, flatten=False, one_hot_label=True,
                                normalize=False)
    assert x4.shape == (60000, 1, 28, 28) and x4.max() == 255.0
    np.testing.assert_array_equal(x4.reshape(60000, 784) / 255.0, x)
    assert t1.shape == (60000, 10) and t1.dtype == np.float32
    np.testing.assert_array_equal(t1.argmax(axis=1), t)
    np.testing.assert_array_equal(tt1.argmax(axis=1), tt)


SIGN_COUNTS = [205, 206, 206, 206, 207, 207, 207, 206, 208, 204]


@pytest.mark.data
def test_real_sign_language_digits():
    _real_folder("sign-language-digits")
    (x, t), (xt, tt) = load_sign_language_digits()
    assert len(x) + len(xt) == 2062
    assert x.shape == (len(x), 4096) and x.dtype == np.float32 and t.dtype == np.int64
    assert 0.0 <= min(x.min(), xt.min()) and max(x.max(), xt.max()) <= 1.0
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([t, tt]), minlength=10), SIGN_COUNTS
    )
    assert len(xt) == 413  # ceil(0.2 * 2062)
    (x2, t2), (xt2, tt2) = load_sign_language_digits(seed=0)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(tt2, tt)
    (_, t3), _ = load_sign_language_digits(seed=1)
    assert not np.array_equal(t3, t)
    (xb, tb), (xbt, tbt) = load_sign_language_digits(classes=(0, 1), test_size=0.25)
    assert len(xb) + len(xbt) == 411
    labels = np.concatenate([tb, tbt])
    assert set(labels.tolist()) == {0, 1}
    np.testing.assert_array_equal(np.bincount(labels), [205, 206])
    (_, tr), (_, trt) = load_sign_language_digits(classes=(1, 0))
    np.testing.assert_array_equal(np.bincount(np.concatenate([tr, trt])), [206, 205])
    (x4, _), _ = load_sign_language_digits(flatten=False, size=32)
    assert x4.shape[1:] == (1, 32, 32)
    with pytest.raises(ValueError, match=r"valid classes are \[0, 1, 2"):
        load_sign_language_digits(classes=(0, 10))


# ------------------------------------------------ sign language (synthetic JPEGs)


@pytest.fixture
def fake_signs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "signs"
    for digit in (0, 1, 2):
        folder = root / "Dataset" / str(digit)
        folder.mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"IMG_{i}.JPG", quality=95)
    # A "camera photo" stored sideways: dark left half, bright right half, with EXIF
    # orientation 6 (rotate 90° clockwise to view), so upright it is dark on top.
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(root / "Dataset" / "2" / "IMG_9.JPG", exif=exif, quality=95)
    (root / "Dataset" / "2" / "notes.txt").write_text("not an image")
    return root


def test_sign_language_synthetic(fake_signs):
    datasets.clear_cache()
    (x, t), (xt, tt) = load_sign_language_digits(path=fake_signs, size=8, test_size=0.25)
    assert len(x) + len(xt) == 16 and x.shape[1] == 64 and x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(np.concatenate([t, tt])), [5, 5, 6])
    assert len(xt) == 4
    (x1, _), _ = load_sign_language_digits(path=fake_signs / "Dataset", size=8, test_size=0.25)
    np.testing.assert_array_equal(x1, x)  # the Dataset folder itself works too
    (xb, tb), (xbt, tbt) = load_sign_language_digits(
        path=fake_signs, classes=[2, 0], size=8, flatten=False, dtype="float64"
    )
    assert xb.shape[1:] == (1, 8, 8) and xb.dtype == np.float64
    np.testing.assert_array_equal(np.bincount(np.concatenate([tb, tbt])), [6, 5])


def test_sign_language_exif_orientation(fake_signs):
    from PIL import Image, ImageOps

    img = images._decode_image(Image, ImageOps, fake_signs / "Dataset/2/IMG_9.JPG", 16)
    assert img.shape == (16, 16) and img.dtype == np.uint8
    top, bottom = img[:6].mean(), img[10:].mean()
    left, right = img[:, :6].mean(), img[:, 10:].mean()
    assert top < 30 and bottom > 225 and abs(left - right) < 30


def test_sign_language_errors(fake_signs, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown classes \[7\].*valid classes are \[0, 1, 2\]"):
        load_sign_language_digits(path=fake_signs, classes=(0, 7), size=8)
    with pytest.raises(ValueError, match="repeats"):
        load_sign_language_digits(path=fake_signs, classes=(0, 0), size=8)
    with pytest.raises(ValueError, match="size"):
        load_sign_language_digits(path=fake_signs, size=0)
    with pytest.raises(ValueError, match="test_size"):
        load_sign_language_digits(path=fake_signs, size=8, test_size=1.5)
    with pytest.raises(DatasetNotFoundError, match="Dataset/<digit>"):
        load_sign_language_digits(path=tmp_path / "nowhere")
    monkeypatch.delenv("XPNN_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="XPNN_DATA_DIR is not set"):
        load_sign_language_digits()
    monkeypatch.setenv("XPNN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match="sign-language-digits"):
        load_sign_language_digits()


def test_sign_language_without_pillow(fake_signs, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnn\[images\]'"):
        load_sign_language_digits(path=fake_signs, size=8)


# --------------------------------------------------------------------- toy data


def test_make_moons_shapes_balance_determinism():
    x, t = make_moons(201, seed=0)
    assert x.shape == (201, 2) and x.dtype == np.float32
    assert t.shape == (201,) and t.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(t), [100, 101])
    x2, t2 = make_moons(201, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(t, t2)
    x3, _ = make_moons(201, seed=1)
    assert not np.array_equal(x, x3)
    assert not np.array_equal(t[:100], np.sort(t[:100]))  # shuffled


def test_make_moons_without_noise_is_on_the_circles():
    x, t = make_moons(100, noise=0.0, seed=0, dtype="float64")
    up, down = x[t == 0], x[t == 1]
    np.testing.assert_allclose(np.hypot(up[:, 0], up[:, 1]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.hypot(down[:, 0] - 1.0, down[:, 1] - 0.5), 1.0, atol=1e-12)
    assert up[:, 1].min() >= -1e-12 and down[:, 1].max() <= 0.5 + 1e-12
    assert {(-1.0, 0.0), (1.0, 0.0)} <= {tuple(np.round(p, 12) + 0.0) for p in up}
    assert (0.0, 0.5) in {tuple(np.round(p, 12) + 0.0) for p in down}
    noisy, _ = make_moons(100, noise=0.2, seed=0, dtype="float64")
    assert not np.allclose(np.sort(noisy, axis=0), np.sort(x, axis=0))


def test_make_spirals():
    x, t = make_spirals(300, 3, seed=0)
    assert x.shape == (300, 2) and x.dtype == np.float32 and t.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(t), [100, 100, 100])
    x2, t2 = make_spirals(300, 3, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(t, t2)
    assert np.all(np.hypot(x[:, 0], x[:, 1]) <= 1.0 + 1e-6)
    x, t = make_spirals(10, 3, noise=0.0, dtype="float64")
    np.testing.assert_array_equal(np.bincount(t), [4, 3, 3])
    radii = np.sort(np.hypot(x[t == 0, 0], x[t == 0, 1]))
    np.testing.assert_allclose(radii, np.linspace(0, 1, 4), atol=1e-12)
    arm = x[t == 1][np.argsort(np.hypot(x[t == 1, 0], x[t == 1, 1]))]
    theta = np.linspace(4.0, 8.0, 3)
    np.testing.assert_allclose(arm, np.linspace(0, 1, 3)[:, None]
                               * np.stack([np.sin(theta), np.cos(theta)], 1), atol=1e-12)


@pytest.mark.parametrize("call", [
    lambda: make_moons(1), lambda: make_moons(10, noise=-1.0), lambda: make_moons(2.5),
    lambda: make_moons(10, noise=float("nan")), lambda: make_moons(10, seed="x"),
    lambda: make_spirals(2, 3), lambda: make_spirals(10, 0), lambda: make_moons(10, dtype="int8"),
])
def test_toy_argument_validation(call):
    with pytest.raises(ValueError):
        call()


def test_car_prices():
    x, t = load_car_prices()
    assert x.shape == (7, 1) and t.shape == (7, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], [3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(t[:, 0], [7.5, 7.0, 6.5, 6.0, 5.5, 5.0, 4.5])
    np.testing.assert_array_equal(t, 9.0 - 0.5 * x)


# -------------------------------------------------------------------- splitting


def test_train_test_split_basics():
    x = np.arange(40).reshape(20, 2)
    t = np.arange(20) % 4
    (xa, ta), (xb, tb) = train_test_split(x, t, test_size=0.25, seed=0)
    assert len(xa) == 15 and len(xb) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate([xa[:, 0], xb[:, 0]])), x[:, 0])
    np.testing.assert_array_equal(xa[:, 0] // 2 % 4, ta)  # rows stay paired
    (xa2, _), _ = train_test_split(x, t, test_size=0.25, seed=0)
    np.testing.assert_array_equal(xa, xa2)
    (_, _), (xc, _) = train_test_split(x, t, test_size=3, seed=0)
    assert len(xc) == 3
    (_, ts), (_, tst) = train_test_split(x, t, test_size=0.2, seed=0, stratify=True)
    np.testing.assert_array_equal(np.bincount(tst), [1, 1, 1, 1])
    np.testing.assert_array_equal(np.bincount(ts), [4, 4, 4, 4])


@pytest.mark.parametrize("kwargs,words", [
    ({"test_size": 0.0}, "test_size"), ({"test_size": 1.0}, "test_size"),
    ({"test_size": 10}, "test_size"), ({"test_size": 0}, "test_size"),
    ({"test_size": True}, "test_size"), ({"test_size": "half"}, "test_size"),
    ({"test_size": 0.99}, "no training"),
])
def test_train_test_split_validation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        train_test_split(np.zeros((10, 2)), np.zeros(10), **kwargs)


def test_train_test_split_rejects_mismatch_and_device_arrays():
    with pytest.raises(ValueError, match="different lengths"):
        train_test_split(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="shape"):
        train_test_split(np.zeros((10, 2)), np.zeros((10, 3)), stratify=True)
    if "torch" in available_backends():
        import torch

        with pytest.raises(TypeError, match="host NumPy"):
            train_test_split(torch.zeros(10, 2), torch.zeros(10))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60), frac=st.floats(0.01, 0.99), k=st.integers(1, 5),
    stratify=st.booleans(), seed=st.integers(0, 2**32 - 1),
)
def test_train_test_split_is_a_partition(n, frac, k, stratify, seed):
    x = np.arange(n)
    t = np.arange(n) % k
    n_test = int(np.ceil(frac * n))
    if n_test >= n:
        with pytest.raises(ValueError):
            train_test_split(x, t, test_size=frac, seed=seed, stratify=stratify)
        return
    (xa, ta), (xb, tb) = train_test_split(x, t, test_size=frac, seed=seed, stratify=stratify)
    assert len(xb) == n_test
    np.testing.assert_array_equal(np.sort(np.concatenate([xa, xb])), x)
    np.testing.assert_array_equal(ta, xa % k)
    if stratify:
        expected = np.bincount(t, minlength=k) * n_test / n
        assert np.all(np.abs(np.bincount(tb, minlength=k) - expected) < 1.0)


# --------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends(name, dtype, fake_idx):
    x, t = make_moons(50, seed=0, backend=name, dtype=dtype)
    xp = array_api_compat.array_namespace(x)
    assert backend_name(xp) == name
    assert backend_name(array_api_compat.array_namespace(t)) == name
    assert x.dtype == getattr(xp, dtype) and t.dtype == xp.int64
    assert tuple(x.shape) == (50, 2)
    host, _ = make_moons(50, seed=0, dtype=dtype)
    np.testing.assert_array_equal(to_numpy(x), host)
    x, _ = make_spirals(30, backend=name, dtype=dtype)
    assert backend_name(array_api_compat.array_namespace(x)) == name
    x, t = load_car_prices(backend=name, dtype=dtype)
    assert backend_name(array_api_compat.array_namespace(t)) == name
    assert t.dtype == getattr(xp, dtype)
    folder, checksums, _ = fake_idx
    (x, t), _ = load_mnist(path=folder, checksums=checksums, backend=name, dtype=dtype,
                           one_hot_label=True)
    assert backend_name(array_api_compat.array_namespace(x)) == name
    assert x.dtype == getattr(xp, dtype) and t.dtype == getattr(xp, dtype)
    (_, t), _ = load_mnist(path=folder, checksums=checksums, backend=name)
    assert t.dtype == xp.int64


def test_default_backend_from_environment(monkeypatch):
    backend = "torch" if "torch" in available_backends() else "numpy"
    monkeypatch.setenv("XPNN_BACKEND", backend)
    x, _ = make_moons(10, seed=0)
    assert backend_name(array_api_compat.array_namespace(x)) == backend


# --------------------------------- files that must not cost unbounded memory or time


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # no blocks written: instant, and takes no disk space


def test_huge_data_file_is_refused_from_its_size(fake_idx):
    folder, checksums, _ = fake_idx
    # known checksum (the real MNIST file): its exact size is known too
    _sparse(folder / FILES[0], 100 << 30)
    peak, error = peak_bytes(lambda: load_mnist(path=folder, download=False))
    assert isinstance(error, DatasetError), error
    assert "107,374,182,400 bytes" in str(error) and "9,912,422" in str(error)
    assert peak < 4 << 20
    # unknown checksum: refused above MAX_IDX_BYTES, still before reading it
    _sparse(folder / FILES[0], datasets.MAX_IDX_BYTES + 1)
    peak, error = peak_bytes(lambda: load_mnist(path=folder, download=False,
                                           checksums={**checksums, FILES[0]: None}))
    assert isinstance(error, DatasetError) and "more than the" in str(error), error
    assert peak < 4 << 20


def _gz_images_file(folder: Path, checksums: dict, header_n: int, payload: bytes):
    raw = b"".join(v.to_bytes(4, "big") for v in (0x803, header_n, 28, 28)) + payload
    blob = gzip.compress(raw, compresslevel=1, mtime=0)
    (folder / FILES[0]).write_bytes(blob)
    checksums[FILES[0]] = hashlib.sha256(blob).hexdigest()


def test_gzip_payload_is_not_inflated_past_its_header(fake_idx):
    folder, checksums, _ = fake_idx
    _gz_images_file(folder, checksums, 3, bytes(40 << 20))  # 3 images, then 40 MB more
    peak, error = peak_bytes(lambda: load_mnist(path=folder, checksums=checksums))
    assert isinstance(error, DatasetError) and "announces 3 images" in str(error), error
    assert peak < 4 << 20
    _gz_images_file(folder, checksums, 10**7, bytes(784))  # claims 7.8 GB from ~1 KB
    peak, error = peak_bytes(lambda: load_mnist(path=folder, checksums=checksums))
    assert isinstance(error, DatasetError) and "more than this" in str(error), error
    assert peak < 4 << 20


@pytest.mark.parametrize("limit", [150, 3000])  # over 2x the limit: error; over 1x: warning
def test_decompression_bomb_image_is_a_dataset_error(fake_signs, monkeypatch, limit):
    from PIL import Image

    datasets.clear_cache()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # the 64x64 photo is a "bomb"
    with pytest.raises(DatasetError, match=r"IMG_9\.JPG is too large"):
        load_sign_language_digits(path=fake_signs, size=8)


def test_undecodable_image_is_a_dataset_error(fake_signs):
    datasets.clear_cache()
    good = (fake_signs / "Dataset/1/IMG_0.JPG").read_bytes()
    (fake_signs / "Dataset/1/IMG_0.JPG").write_bytes(good[: len(good) // 3])
    with pytest.raises(DatasetError, match=r"cannot decode image .*IMG_0\.JPG"):
        load_sign_language_digits(path=fake_signs, size=8)


@pytest.mark.parametrize("size", [257, 10**6])
def test_huge_image_size_is_refused_before_decoding(fake_signs, size):
    with pytest.raises(ValueError, match=rf"size must be an integer <= 256, got {size}"):
        load_sign_language_digits(path=fake_signs, size=size)


@pytest.mark.parametrize("name,words", [
    ("²", "not named by a plain decimal label"),   # str.isdigit() is True, int() fails
    ("٣", "not named by a plain decimal label"),   # int() would read it as 3
    ("1234567", "not named by a plain decimal label"),
    ("01", "both mean label 1"),
])
def test_odd_class_folder_names(fake_signs, name, words):
    from PIL import Image

    datasets.clear_cache()
    folder = fake_signs / "Dataset" / name
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "IMG_0.JPG")
    with pytest.raises(DatasetError, match=words) as info:
        load_sign_language_digits(path=fake_signs, size=8)
    assert name in str(info.value)


@pytest.mark.parametrize("kwargs,words", [
    ({"classes": 1}, "classes must be a sequence"),
    ({"classes": "01"}, "classes must be a sequence"),
    ({"classes": [0.0, 1.0]}, "class labels must be integers"),
    ({"classes": ()}, "no classes given"),
    ({"classes": (1, 1)}, "repeats"),
    ({"flatten": "no"}, "flatten must be True or False"),
    ({"stratify": None}, "stratify must be True or False"),
    ({"path": 123}, "path must be a folder name"),
])
def test_sign_language_arguments_are_named_before_decoding(fake_signs, monkeypatch, kwargs,
                                                          words):
    def no_decoding(*args):
        raise AssertionError("decoded images before checking the arguments")

    monkeypatch.setattr(images, "_decode_sign_dataset", no_decoding)
    with pytest.raises(ValueError, match=words):
        load_sign_language_digits(**{"path": fake_signs, "size": 8, **kwargs})


@pytest.mark.parametrize("kwargs,words", [
    ({"normalize": "yes"}, "normalize must be True or False"),
    ({"one_hot_label": 1}, "one_hot_label must be True or False"),
    ({"download": "false"}, "download must be True or False"),
    ({"path": 3.5}, "path must be a folder name"),
    ({"checksums": {FILES[0]: "abc"}}, r"checksums\['train-images-idx3-ubyte.gz'\]"),
])
def test_idx_arguments_are_named(fake_idx, kwargs, words):
    folder, checksums, _ = fake_idx
    with pytest.raises(ValueError, match=words):
        load_mnist(**{"path": folder, "checksums": checksums, **kwargs})


def test_large_class_labels_need_no_table(fake_signs):
    datasets.clear_cache()
    (fake_signs / "Dataset" / "2").rename(fake_signs / "Dataset" / "999999")
    (_, t), (_, tt) = load_sign_language_digits(path=fake_signs, classes=(999999, 0), size=8)
    np.testing.assert_array_equal(np.bincount(np.concatenate([t, tt])), [6, 5])


def test_too_many_images_for_the_memory_bound(fake_signs, monkeypatch):
    datasets.clear_cache()
    monkeypatch.setattr(images, "MAX_SIGN_BYTES", 16 * 8 * 8 - 1)  # the 16 fakes at 8x8
    with pytest.raises(DatasetError, match="16 images under .* at 8x8 would take 1,024 bytes"):
        load_sign_language_digits(path=fake_signs, size=8)
    monkeypatch.setattr(images, "MAX_SIGN_BYTES", 16 * 8 * 8)
    load_sign_language_digits(path=fake_signs, size=8)


def test_download_stops_at_the_known_size(server, cache):
    # a mirror that serves more bytes than the real file has (here 12 MB instead of
    # MNIST's 9,912,422) is cut off there instead of being read to its end
    huge = server.root / "huge"
    huge.mkdir()
    with open(huge / FILES[0], "wb") as f:
        f.truncate(12 << 20)
    with pytest.raises(DatasetError, match=r"larger than 9,912,422 bytes"):
        load_mnist(mirrors=[server.url + "huge/"])
    assert not cache.exists()


def test_downloaded_file_gets_the_umask_permissions(server, tmp_path, monkeypatch):
    # a shared XPNN_DATA_DIR: other users must be able to read the cached files, so a
    # download gets 0666 & ~umask like any new file, not mkstemp's 0600 (the umask in
    # force at the write: atomic_write never caches it)
    old = os.umask(0o022)
    try:
        folder = tmp_path / "shared"
        load_mnist(path=folder, mirrors=server.url + "good/", checksums=server.checksums)
    finally:
        os.umask(old)
    assert files_in(folder) == sorted(FILES)
    for name in FILES:
        assert (folder / name).stat().st_mode & 0o777 == 0o644


def test_failed_download_leaves_nothing_behind(server, tmp_path):
    # not even the folder: a failed download used to leave user/ (and mnist/ folders in
    # the cache) behind, empty
    folder = tmp_path / "user"
    with pytest.raises(DatasetError, match="SHA-256"):
        load_mnist(path=folder, mirrors=server.url + "corrupt/", checksums=server.checksums)
    assert not folder.exists()
    assert os.listdir(tmp_path) == ["www"]


def test_temp_file_of_a_killed_download_is_removed(server, tmp_path):
    # the temp file a download killed mid-way left behind (its process is gone) is
    # removed by the next download of that file
    import subprocess

    from xpnn.io import atomic

    folder = tmp_path / "user"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f"{atomic._temp_prefix(FILES[0])}{dead.pid}.abc123.tmp"
    stale.write_bytes(b"half a download")
    load_mnist(path=folder, mirrors=server.url + "good/", checksums=server.checksums)
    assert files_in(folder) == sorted(FILES)
