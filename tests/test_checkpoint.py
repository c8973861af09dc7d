"""Checkpoints: round trips across backends, architecture, atomic writes, bad files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
from hostile_files import (
    MB,
    entries_of,
    marker,
    npy_bytes,
    npy_header,
    peak_bytes,
    small_net,
    write_zip,
)

import xpnn
from xpnn import checkpoint
from xpnn.io import atomic
from xpnn.io.checkpoint import load, save
from xpnn.nn import config


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


def test_saved_from_names_the_device_as_the_history_does(backend, tmp_path):
    net = _net(backend)
    path = tmp_path / "net.npz"
    save(net, path)
    with np.load(path) as data:
        arch = json.loads(str(data["__xpnn__"]))
    assert arch["saved_from"] == {"backend": backend[0],
                                  "device": xpnn.backend.device_name(net.xp, net.device)}
    # files written before (the device as str(net.device), e.g. an object repr) load
    old = {**arch, "saved_from": {"backend": backend[0], "device": "<Device object at 0x1>"}}
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "__xpnn__"}
    np.savez(tmp_path / "old.npz", __xpnn__=np.asarray(json.dumps(old)), **arrays)
    back = load(tmp_path / "old.npz")
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], xpnn.to_numpy(v))


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
    with pytest.raises(ValueError, match="junk.npz: not an xpnn checkpoint"):
        load(junk)

    data = _saved(tmp_path).read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        short = tmp_path / "short.npz"
        short.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="short.npz: ") as info:
            load(short)
        assert "damaged" in str(info.value)

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
    arch = json.dumps(config.to_config(net))
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


def test_a_bad_default_backend_is_not_blamed_on_the_file(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setenv("XPNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown backend 'bogus'") as info:
        load(path)
    assert "damaged" not in str(info.value)


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


# --------------------------------------------- hostile files (issue 9, point 2)


def _raises_value_error(call, *words, memory=4 * MB):
    """``call()`` raises ValueError containing ``words`` while allocating < ``memory``."""
    peak, outcome = peak_bytes(call)
    assert isinstance(outcome, ValueError), f"expected ValueError, got {outcome!r}"
    for word in words:
        assert word in str(outcome), f"{word!r} not in {outcome}"
    assert peak < memory, f"peak {peak / MB:.1f} MB while refusing: {outcome}"
    return outcome


def test_huge_architecture_is_refused_before_any_net_is_built(tmp_path):
    # a 2.4 KB file claiming a 2000-2000-2 net: 4 M parameters that were drawn (32 MB
    # and a random init) before the stored shapes were ever looked at
    net = small_net()
    arch = {**config.to_config(net), "sizes": [2000, 2000, 2], "activations": ["relu"]}
    path = tmp_path / "big.npz"
    write_zip(path, {**entries_of(net, arch)})
    _raises_value_error(lambda: load(path), "big.npz", "checkpoint does not match")
    params = {"W1": np.zeros((2, 2)), "b1": np.zeros(2), "W2": np.zeros((2, 2)),
              "b2": np.zeros(2)}
    write_zip(path, {"__xpnn__.npy": marker(arch),
                     **{f"{k}.npy": npy_bytes(v) for k, v in params.items()}})
    _raises_value_error(lambda: load(path), "W1 has shape (2, 2)", "needs (2000, 2000)")
    # ... and one whose sizes would not even fit in memory
    arch["sizes"] = [10**6, 10**6, 2]
    write_zip(path, {"__xpnn__.npy": marker(arch)})
    _raises_value_error(lambda: load(path), "bad architecture", "parameters")


def test_npy_header_with_a_huge_shape_is_refused_unread(tmp_path):
    net = small_net()
    entries = entries_of(net)
    entries["W1.npy"] = npy_header((10**7, 10**7))
    path = tmp_path / "huge.npz"
    write_zip(path, entries)
    _raises_value_error(lambda: load(path), "W1 has shape (10000000, 10000000)")
    entries["W1.npy"] = npy_header((4, 5), data=b"\0" * 8)  # right shape, data cut short
    write_zip(path, entries)
    _raises_value_error(lambda: load(path), "W1 holds 8 data bytes")
    entries["W1.npy"] = npy_header((4, 5), dtype="|O", data=b"\0" * 160)
    write_zip(path, entries)
    _raises_value_error(lambda: load(path), "W1 has dtype object, not floating")


def test_unexpected_entry_is_refused_without_inflating_it(tmp_path):
    net = small_net()
    entries = {**entries_of(net), "junk.npy": bytes(40 * MB)}  # deflates to ~40 KB
    path = tmp_path / "extra.npz"
    write_zip(path, entries, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < MB
    _raises_value_error(lambda: load(path), "unexpected entries junk")


def test_declared_sizes_beyond_the_file_are_refused(tmp_path):
    net = small_net()
    path = tmp_path / "lying.npz"
    write_zip(path, entries_of(net))
    data = bytearray(path.read_bytes())
    # W1.npy's central directory record (the name's last occurrence; the record's fixed
    # part is 46 bytes): make its uncompressed size claim 10**8 bytes
    record = data.rindex(b"W1.npy") - 46
    assert data[record:record + 4] == b"PK\x01\x02"
    data[record + 24:record + 28] = (10**8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    _raises_value_error(lambda: load(path), "W1", "declares 100000000 bytes")


def test_zip_with_too_many_entries_is_refused_before_parsing_them(tmp_path):
    # 200,000 empty entries (17 MB) took 24 s and 107 MB in zipfile's directory parse
    path = tmp_path / "many.npz"
    write_zip(path, {**entries_of(small_net()), **{str(i): b"" for i in range(5000)}})
    _raises_value_error(lambda: load(path), "declares 5,007 entries", memory=MB)


def test_text_and_device_files_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    for path in (text, "/dev/zero"):
        if not os.path.exists(path):
            continue
        error = _raises_value_error(lambda p=path: load(p), "not an xpnn checkpoint")
        assert "pickle" not in str(error)


def test_compressed_checkpoint_loads(tmp_path):
    net = small_net()
    path = tmp_path / "small.npz"
    write_zip(path, entries_of(net), compression=zipfile.ZIP_DEFLATED)
    back = load(path)
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], v)


def test_big_endian_and_fortran_parameters_load(tmp_path):
    net = small_net()
    entries = entries_of(net)
    entries["W1.npy"] = npy_bytes(np.asfortranarray(net.params["W1"]).astype(">f8"))
    path = tmp_path / "odd.npz"
    write_zip(path, entries)
    np.testing.assert_array_equal(load(path).params["W1"], net.params["W1"])


def test_backend_given_as_a_namespace(tmp_path, backend):
    name, device = backend
    net = _net(backend)
    path = tmp_path / "net.npz"
    net.save(path)
    back = load(path, backend=net.xp, device=device)
    assert back.xp is net.xp and back.backend == name
    np.testing.assert_array_equal(xpnn.to_numpy(back.params["W2"]),
                                  xpnn.to_numpy(net.params["W2"]))


def test_backend_namespace_unknown_by_name(tmp_path):
    # a standard namespace xpnn has no name for (like jax.numpy): used as given,
    # never looked up again by its name
    import array_api_compat.numpy as compat_numpy

    fake = types.ModuleType("fake_array_api")
    fake.__dict__.update({k: v for k, v in vars(compat_numpy).items()
                          if not k.startswith("__")})
    fake.__array_api_version__ = compat_numpy.__array_api_version__
    path = tmp_path / "net.npz"
    small_net().save(path)
    back = load(path, backend=fake)
    assert back.xp is fake
    np.testing.assert_array_equal(back.params["b2"], small_net().params["b2"])


# --------------------------------------------------- save (issue 9, point 3)


@pytest.mark.parametrize("damage", ["nan", "inf", "shape", "missing", "int"])
def test_save_refuses_parameters_load_would_refuse(tmp_path, damage):
    net = small_net()
    path = tmp_path / "net.npz"
    net.save(path)
    good = path.read_bytes()
    W1 = net.params["W1"]
    if damage == "nan":
        net.params["W1"] = W1 * np.nan
    elif damage == "inf":
        net.params["b2"] = net.params["b2"] + np.inf
    elif damage == "shape":
        net.params["W2"] = net.params["W2"].T
    elif damage == "missing":
        del net.params["b3"]
    else:
        net.params["W1"] = W1.astype(np.int64)
    with pytest.raises(ValueError, match=r"cannot save .*net\.npz: (parameter|parameters)"):
        net.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["net.npz"]


def test_save_keeps_the_file_mode(tmp_path):
    path = tmp_path / "net.npz"
    small_net().save(path)
    os.chmod(path, 0o640)
    small_net(seed=2).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    new = tmp_path / "new.npz"
    small_net().save(new)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask


def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.npz"
    small_net().save(real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    small_net(seed=5).save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load(real).params["W1"], small_net(seed=5).params["W1"])
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real.npz"]


def test_save_to_a_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "no" / "such" / "net.npz"
    with pytest.raises(FileNotFoundError) as info:
        small_net().save(target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError, match="folder"):
        small_net().save(tmp_path)


def test_save_and_load_bytes_and_pathlike_paths(tmp_path):
    net = small_net()
    raw = os.fsencode(tmp_path / "b.npz")
    net.save(raw)
    np.testing.assert_array_equal(load(raw).params["W3"], net.params["W3"])

    class Where:
        def __fspath__(self):
            return str(tmp_path / "p.npz")

    net.save(Where())
    np.testing.assert_array_equal(load(Where()).params["W3"], net.params["W3"])
    assert sorted(os.listdir(tmp_path)) == ["b.npz", "p.npz"]


_KILLED_WRITER = """
import os, sys, time
from xpnn.io.atomic import atomic_write
def write(f):
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_temp_file_of_a_killed_writer_is_cleaned_by_the_next_save(tmp_path):
    path = tmp_path / "net.npz"
    small_net().save(path)
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    left = [n for n in os.listdir(tmp_path) if n != "net.npz"]
    assert len(left) == 1 and left[0].endswith(".tmp")  # what SIGKILL leaves behind
    # a temp file of a writer that is still running must survive
    live_name = atomic._temp_prefix("net.npz") + f"{os.getppid()}.abcd1234.tmp"
    live = tmp_path / live_name
    live.write_bytes(b"in progress")
    small_net(seed=3).save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["net.npz", live_name])
    np.testing.assert_array_equal(load(path).params["W1"], small_net(seed=3).params["W1"])


def test_no_import_cycle_between_checkpoint_and_mlp():
    import ast

    def module_level_imports(module):
        tree = ast.parse(open(module.__file__, encoding="utf-8").read())
        names = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
        return names

    from xpnn.nn import mlp

    assert not any("mlp" in n for n in module_level_imports(checkpoint))
    assert not any("checkpoint" in n or n == "io" for n in module_level_imports(mlp))
    for module in ("xpnn.io.checkpoint", "xpnn.nn.mlp", "xpnn.nn.config"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
