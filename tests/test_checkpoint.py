"""Checkpoints: round trips across backends, architecture, atomic writes, bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import xpnn
from xpnn import checkpoint
from xpnn.io.checkpoint import load, save


def _net(backend, dtype="float64", **kw):
    name, device = backend
    kw = {"activation": ["relu", "tanh"], "weight_init": 0.3, "weight_decay": 0.01,
          "seed": 1, **kw}
    return xpnn.MLP([4, 5, 6, 3], backend=name, device=device, dtype=dtype, **kw)


def _targets():
    """(name, device) of every backend here, CUDA devices included."""
    names = xpnn.available_backends()
    wanted = os.environ.get("XPNN_TEST_BACKENDS")
    if wanted:
        names = [n for n in names if n in {w.strip() for w in wanted.split(",")}]
    out = [(n, None) for n in names]
    if "torch" in names:
        import torch

        if torch.cuda.is_available():
            out.append(("torch", "cuda"))
    return out


def _x(n=7):
    return np.random.default_rng(2).standard_normal((n, 4))


def test_round_trip_to_every_backend(backend, tmp_path):
    net = _net(backend)
    path = tmp_path / "net.npz"
    assert net.save(path) == os.fspath(path)
    expected = xpnn.to_numpy(net.predict(xpnn.asarray(_x(), backend=backend[0],
                                                      device=backend[1])))
    for name, device in _targets():
        back = load(path, backend=name, device=device)
        assert back.backend == name and back.dtype_name == "float64"
        assert back.sizes == [4, 5, 6, 3] and back.activations == ["relu", "tanh"]
        assert back.loss_name == "softmax_cross_entropy" and back.weight_decay == 0.01
        assert back.weight_init == 0.3
        for k, v in net.params.items():
            np.testing.assert_array_equal(xpnn.to_numpy(back.params[k]), xpnn.to_numpy(v))
        got = xpnn.to_numpy(back.predict(xpnn.asarray(_x(), backend=name, device=device)))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_architecture_and_dtype(tmp_path):
    net = xpnn.MLP([3, 1], loss="binary_cross_entropy", weight_init="he", dtype="float32",
                   seed=0)
    save(net, tmp_path / "b.npz")
    back = load(tmp_path / "b.npz")
    assert back.dtype_name == "float32" and back.sizes == [3, 1] and back.activations == []
    assert back.loss_name == "binary_cross_entropy" and back.weight_init == "he"
    wide = load(tmp_path / "b.npz", dtype="float64")
    assert wide.dtype_name == "float64" and wide.params["W1"].dtype == np.float64
    np.testing.assert_array_equal(wide.params["W1"], net.params["W1"].astype(np.float64))
    with np.load(tmp_path / "b.npz") as data:
        arch = json.loads(str(data["__xpnn__"]))
    assert arch["format"] == "xpnn-mlp" and arch["version"] == 1
    assert set(arch) >= {"sizes", "activations", "loss", "dtype", "weight_decay"}


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    net = _net(("numpy", None))
    path = tmp_path / "net.npz"
    save(net, path)
    save(net, path)  # overwrite
    assert os.listdir(tmp_path) == ["net.npz"]
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save(_net(("numpy", None), seed=9), path)
    assert os.listdir(tmp_path) == ["net.npz"] and path.read_bytes() == good


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)


def _saved(tmp_path):
    path = tmp_path / "good.npz"
    save(_net(("numpy", None)), path)
    return path


def test_damaged_files_are_named(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
        load(junk)

    data = _saved(tmp_path).read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        short = tmp_path / "short.npz"
        short.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="short.npz: ") as info:
            load(short)
        assert "damaged" in str(info.value) or "not a readable" in str(info.value)

    # flip bytes inside a stored member: the zip's CRC check catches it
    flipped = bytearray(data)
    at = data.index(b"\x93NUMPY") + 200
    flipped[at : at + 8] = bytes(b ^ 0xFF for b in flipped[at : at + 8])
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.npz: damaged"):
        load(bad)


def test_foreign_files_are_named(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.ones(3), b=np.zeros(2))
    with pytest.raises(ValueError, match=r"other.npz: not an xpnn checkpoint .*holds: a, b"):
        load(other)

    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="single.npy: not an xpnn checkpoint"):
        load(single)

    net = _net(("numpy", None))
    arch = json.dumps(checkpoint._architecture(net))
    params = {k: v for k, v in net.params.items()}

    def write(name, marker=arch, **arrays):
        p = tmp_path / name
        np.savez(p, __xpnn__=np.asarray(marker), **arrays)
        return p

    with pytest.raises(ValueError, match="missing parameters W3"):
        load(write("missing.npz", **{k: v for k, v in params.items() if k != "W3"}))
    with pytest.raises(ValueError, match="unexpected entries extra"):
        load(write("extra.npz", extra=np.ones(2), **params))
    with pytest.raises(ValueError, match=r"W2 has shape \(6, 5\).*needs \(5, 6\)"):
        load(write("shape.npz", **{**params, "W2": params["W2"].T}))
    with pytest.raises(ValueError, match="b1 has dtype int64"):
        load(write("int.npz", **{**params, "b1": np.zeros(5, dtype=np.int64)}))
    with pytest.raises(ValueError, match="W1 contains NaN"):
        load(write("nan.npz", **{**params, "W1": params["W1"] * np.nan}))
    with pytest.raises(ValueError, match="not JSON"):
        load(write("json.npz", marker="{oops", **params))
    with pytest.raises(ValueError, match="format 'keras'"):
        load(write("fmt.npz", marker=json.dumps({"format": "keras"}), **params))
    newer = json.dumps({**json.loads(arch), "version": 99})
    with pytest.raises(ValueError, match="version 99"):
        load(write("new.npz", marker=newer, **params))
    broken = json.dumps({**json.loads(arch), "activations": ["swish", "relu"]})
    with pytest.raises(ValueError, match="broken.npz: damaged checkpoint: bad architecture"):
        load(write("broken.npz", marker=broken, **params))


def test_caller_errors_pass_through(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(ValueError, match="unknown backend"):
        load(path, backend="tensorflow")
    with pytest.raises(ValueError, match="dtype must be"):
        load(path, dtype="float16")


def test_trained_net_round_trip(tmp_path):
    from xpnn.training import train

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
    net = _net(("numpy", None))
    train(net, (x, y), batch_size=10, epochs=2, seed=0, progress=False)
    net.save(tmp_path / "t.npz")
    back = load(tmp_path / "t.npz")
    assert back.accuracy(x, y) == net.accuracy(x, y)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
