"""MNIST/Fashion-MNIST downloads through pooch, without any network: every test hands
``load_mnist`` a fake pooch downloader (``callable(url, output_file, pooch)``) that
serves small generated IDX ``.gz`` files from a temporary folder, fails midway, or
raises the connection error an offline machine gets.

(tests/test_datasets.py also downloads from an HTTP server on 127.0.0.1 through pooch's
own HTTPDownloader.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import requests
from test_datasets import FILES, N_TRAIN, write_fake_idx

from xpnn.cli import main
from xpnn.data import DatasetError, DatasetNotFoundError, idx, load_fashion_mnist, load_mnist


class FakeMirrors:
    """A pooch downloader serving ``root/<mirror>/<name>`` for URLs
    ``https://<mirror>.test/<name>``; records every URL asked for.

    ``broken``: mirrors whose files come back with one byte flipped; ``offline``:
    mirrors that raise requests' ConnectionError; ``cut``: {name: bytes} written before
    the connection drops midway."""

    def __init__(self, root: Path, broken=(), offline=(), cut=None):
        self.root, self.broken, self.offline = root, set(broken), set(offline)
        self.cut = dict(cut or {})
        self.urls: list[str] = []

    @staticmethod
    def url(mirror: str) -> str:
        return f"https://{mirror}.test/"

    def __call__(self, url, output_file, pooch):
        self.urls.append(url)
        host, name = url.removeprefix("https://").split("/", 1)
        mirror = host.removesuffix(".test")
        if mirror in self.offline:
            raise requests.exceptions.ConnectionError(
                f"HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded "
                f"(Failed to resolve '{host}')"
            )
        data = (self.root / name).read_bytes()
        if mirror in self.broken:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        if name in self.cut:
            output_file.write(data[: self.cut[name]])
            raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
        output_file.write(data)


@pytest.fixture
def served(tmp_path):
    """(FakeMirrors class args: the folder of served files, their checksums, arrays)."""
    checksums, arrays = write_fake_idx(tmp_path / "served", seed=5)
    return tmp_path / "served", checksums, arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("XPNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XPNN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def never_called(url, output_file, pooch):
    raise AssertionError(f"downloaded {url} although the files are there")


def test_fake_downloader_fills_the_cache_then_is_not_asked_again(served, cache, capsys):
    root, checksums, arrays = served
    fake = FakeMirrors(root)
    (x, t), (_, tt) = load_mnist(mirrors=[fake.url("a")], checksums=checksums,
                                 downloader=fake)
    assert x.shape == (N_TRAIN, 784)
    np.testing.assert_array_equal(t, arrays["t_train"])
    np.testing.assert_array_equal(tt, arrays["t_test"])
    assert fake.urls == [fake.url("a") + name for name in FILES]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(FILES)
    assert "xpnn: downloading https://a.test/" in capsys.readouterr().err
    (_, t2), _ = load_mnist(mirrors=[fake.url("a")], checksums=checksums,
                            downloader=never_called)
    np.testing.assert_array_equal(t2, t)


def test_local_files_are_used_without_network(served, tmp_path, monkeypatch):
    root, checksums, arrays = served
    (_, t), _ = load_mnist(path=root, checksums=checksums, downloader=never_called)
    np.testing.assert_array_equal(t, arrays["t_train"])
    data = tmp_path / "data"
    write_fake_idx(data / "fashion-mnist", seed=5)
    monkeypatch.setenv("XPNN_DATA_DIR", str(data))
    (_, t), _ = load_fashion_mnist(checksums=checksums, downloader=never_called)
    np.testing.assert_array_equal(t, arrays["t_train"])


def test_a_corrupted_download_is_refused_and_removed(served, cache):
    root, checksums, _ = served
    fake = FakeMirrors(root, broken={"a"})
    with pytest.raises(DatasetError) as info:
        load_mnist(mirrors=[fake.url("a")], checksums=checksums, downloader=fake)
    text = str(info.value)
    assert "has SHA-256 " in text and f"expected {checksums[FILES[0]]}" in text
    assert fake.url("a") + FILES[0] in text
    assert not cache.exists()  # not the bad file, no pooch temp file, no empty folder


def test_a_bad_mirror_falls_back_to_the_next(served, cache):
    root, checksums, arrays = served
    fake = FakeMirrors(root, broken={"bad"}, offline={"down"})
    mirrors = [fake.url("down"), fake.url("bad"), fake.url("good")]
    (_, t), _ = load_mnist(mirrors=mirrors, checksums=checksums, downloader=fake)
    np.testing.assert_array_equal(t, arrays["t_train"])
    assert fake.urls[:3] == [m + FILES[0] for m in mirrors]
    for name in FILES:
        got = hashlib.sha256((cache / "mnist" / name).read_bytes()).hexdigest()
        assert got == checksums[name]


@pytest.mark.parametrize("where", ["cache", "path"])
def test_a_download_failing_midway_leaves_nothing_behind(served, cache, tmp_path, where):
    # the first two files arrive whole, the third breaks off after 100 bytes: none of
    # them lands in the data folder, which is not even created
    root, checksums, _ = served
    fake = FakeMirrors(root, cut={FILES[2]: 100})
    target = cache / "mnist" if where == "cache" else tmp_path / "mine" / "mnist"
    with pytest.raises(DatasetNotFoundError, match="ChunkedEncodingError"):
        load_mnist(path=None if where == "cache" else target, mirrors=[fake.url("a")],
                   checksums=checksums, downloader=fake)
    assert fake.urls == [fake.url("a") + name for name in FILES[:3]]
    assert not cache.exists() and not (tmp_path / "mine").exists()


def test_a_failure_keeps_the_files_already_there(served, tmp_path):
    root, checksums, _ = served
    folder = tmp_path / "mine"
    write_fake_idx(folder, seed=5)
    (folder / FILES[1]).unlink()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fake = FakeMirrors(root, offline={"a"})
    with pytest.raises(DatasetNotFoundError):
        load_mnist(path=folder, mirrors=[fake.url("a")], checksums=checksums, downloader=fake)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_offline_names_the_folder_and_the_files(served, cache):
    root, checksums, _ = served
    fake = FakeMirrors(root, offline={"a", "b"})
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(mirrors=[fake.url("a"), fake.url("b")], checksums=checksums,
                   downloader=fake)
    text = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "Offline" in text and "ConnectionError" in text
    assert f"put them in {cache / 'mnist'}" in text
    assert all(name in text for name in FILES)
    assert "XPNN_DATA_DIR" in text and "path=" in text
    assert fake.urls == [fake.url("a") + FILES[0], fake.url("b") + FILES[0]]  # then stops
    assert not cache.exists()


def test_offline_cli_says_where_to_put_which_files(served, cache, tmp_path, monkeypatch,
                                                   capsys):
    root, _, _ = served
    fake = FakeMirrors(root, offline={"ossci-datasets.s3.amazonaws.com",
                                      "storage.googleapis.com"})
    monkeypatch.setattr(idx, "_http_downloader", lambda progress: _https(fake))
    code = main(["train", "--out", str(tmp_path / "run"), "--iters", "1"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith("xpnn: downloading")]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("xpnn: error: could not download MNIST")
    assert f"put them in {cache / 'mnist'}" in lines[0]
    assert all(name in lines[0] for name in FILES)
    assert "--data-dir" in lines[0]
    assert not cache.exists() and not (tmp_path / "run").exists()


def _https(fake):
    """``fake`` for the real mirror URLs: https://HOST/mnist/NAME -> mirror HOST."""

    def download(url, output_file, pooch):
        host, rest = url.removeprefix("https://").split("/", 1)
        return fake(f"https://{host}.test/{rest.rsplit('/', 1)[-1]}", output_file, pooch)

    return download


def test_progress_option_reaches_pooch(served, cache, monkeypatch):
    root, checksums, _ = served
    real = idx._http_downloader
    assert real(True).progressbar is True and real(False).progressbar is False
    assert real(False).kwargs["timeout"] == idx.DOWNLOAD_TIMEOUT
    asked = []

    def spy(progress):
        asked.append(progress)
        return FakeMirrors(root)

    monkeypatch.setattr(idx, "_http_downloader", spy)
    for progress in (True, False):
        load_mnist(mirrors=["https://a.test/"], checksums=checksums, progress=progress)
        for name in FILES:
            (cache / "mnist" / name).unlink()
    assert asked == [True, False]


def test_progress_defaults_to_a_bar_on_a_terminal_only(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr("sys.stderr", Stream(True))
    assert idx._resolve_progress(None) is True
    monkeypatch.setattr("sys.stderr", Stream(False))
    assert idx._resolve_progress(None) is False
    with pytest.raises(ValueError, match="progress must be True or False"):
        idx._resolve_progress("yes")


def test_a_downloader_that_is_not_callable_is_named(served):
    root, checksums, _ = served
    with pytest.raises(ValueError, match="downloader must be a pooch downloader"):
        load_mnist(path=root, checksums=checksums, downloader="requests")


def test_no_pooch_temp_files_in_the_system_temp_folder(served, cache, tmp_path, monkeypatch):
    # the temporary download folder is removed on success and on failure
    root, checksums, _ = served
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    fake = FakeMirrors(root, cut={FILES[1]: 10})
    with pytest.raises(DatasetNotFoundError):
        load_mnist(mirrors=[fake.url("a")], checksums=checksums, downloader=fake)
    assert os.listdir(temp) == []
    load_mnist(mirrors=[fake.url("a")], checksums=checksums, downloader=FakeMirrors(root))
    assert os.listdir(temp) == []
