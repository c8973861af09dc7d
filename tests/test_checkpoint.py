"""Checkpoints: round trips across backends, architecture, atomic writes, bad files
(safetensors, and the old .npz format that still loads)."""

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
    SPECIAL_KINDS,
    dying_writes,
    entries_of,
    marker,
    npy_bytes,
    npy_header,
    npy_raw_header,
    peak_bytes,
    small_net,
    special_target,
    st_bytes,
    st_layout,
    st_metadata,
    st_parts,
    write_zip,
)

import xpnn
from xpnn import checkpoint
from xpnn.io import atomic
from xpnn.io.checkpoint import load, save
from xpnn.nn import config
from xpnn.training import History


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
    path = tmp_path / "net.safetensors"
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
    save(net, tmp_path / "b.safetensors")
    back = load(tmp_path / "b.safetensors")
    assert back.dtype_name == "float32" and back.sizes == [3, 1] and back.activations == []
    assert back.loss_name == "binary_cross_entropy" and back.weight_init == "he"
    wide = load(tmp_path / "b.safetensors", dtype="float64")
    assert wide.dtype_name == "float64" and wide.params["W1"].dtype == np.float64
    np.testing.assert_array_equal(wide.params["W1"], net.params["W1"].astype(np.float64))
    meta = _metadata(tmp_path / "b.safetensors")
    arch = json.loads(meta["xpnn.architecture"])
    assert arch == net.to_config() and arch["format"] == "xpnn-mlp" and arch["version"] == 1
    assert set(arch) >= {"sizes", "activations", "loss", "dtype", "weight_decay"}
    assert meta["xpnn.format_version"] == "1" and meta["xpnn.version"] == xpnn.__version__


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return f.metadata()


def _old_npz(path, net, arch=None):
    """``net`` as the .npz checkpoint xpnn wrote before safetensors."""
    arch = {**config.to_config(net), "params": list(net.params),
            "saved_from": {"backend": net.backend, "device": "cpu"}} if arch is None else arch
    arrays = {k: xpnn.to_numpy(v) for k, v in net.params.items()}
    with open(path, "wb") as f:  # (np.savez would append .npz to another name)
        np.savez(f, __xpnn__=np.asarray(json.dumps(arch)), **arrays)


def test_saved_from_names_the_device_as_the_history_does(backend, tmp_path):
    net = _net(backend)
    path = tmp_path / "net.safetensors"
    save(net, path)
    assert json.loads(_metadata(path)["xpnn.saved_from"]) == {
        "backend": backend[0], "device": xpnn.backend.device_name(net.xp, net.device)}
    # .npz files written before (the device as str(net.device), e.g. an object repr) load
    old = {**config.to_config(net), "params": list(net.params),
           "saved_from": {"backend": backend[0], "device": "<Device object at 0x1>"}}
    _old_npz(tmp_path / "old.npz", net, old)
    back = load(tmp_path / "old.npz")
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], xpnn.to_numpy(v))


def test_old_npz_checkpoints_load_on_every_backend(tmp_path):
    net = _net(("numpy", None), dtype="float32")
    _old_npz(tmp_path / "model.npz", net)
    for name, device in _targets():
        back = checkpoint.read_checkpoint(tmp_path / "model.npz", backend=name, device=device)
        assert back.extra == {} and back.extra_meta == {}
        assert back.net.to_config() == net.to_config() and back.net.backend == name
        for k, v in net.params.items():
            np.testing.assert_array_equal(xpnn.to_numpy(back.net.params[k]), v)


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    net = _net(("numpy", None))
    path = tmp_path / "net.safetensors"
    save(net, path)
    save(net, path)  # overwrite
    assert os.listdir(tmp_path) == ["net.safetensors"]
    good = path.read_bytes()

    dying_writes(monkeypatch, 100)
    with pytest.raises(OSError, match="disk full"):
        save(_net(("numpy", None), seed=9), path)
    assert os.listdir(tmp_path) == ["net.safetensors"] and path.read_bytes() == good


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)


def _saved(tmp_path):
    path = tmp_path / "good.safetensors"
    save(_net(("numpy", None)), path)
    return path


def test_damaged_files_are_named(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match="junk.safetensors: not an xpnn checkpoint"):
        load(junk)

    data = _saved(tmp_path).read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100, 12, 8, 3):
        short = tmp_path / "short.safetensors"
        short.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="short.safetensors: ") as info:
            load(short)
        assert "damaged" in str(info.value) or "not an xpnn checkpoint" in str(info.value)

    # flip bytes inside the header: its JSON no longer parses
    flipped = bytearray(data)
    flipped[20:28] = bytes(b ^ 0xFF for b in flipped[20:28])
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.safetensors: damaged checkpoint: the "
                                         "safetensors header is not JSON"):
        load(bad)


def test_damaged_npz_files_are_named(tmp_path):
    net = _net(("numpy", None))
    _old_npz(tmp_path / "good.npz", net)
    data = (tmp_path / "good.npz").read_bytes()
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
    net.save(tmp_path / "t.safetensors")
    back = load(tmp_path / "t.safetensors")
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


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 6), ",     # no closing brace
    "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 6)]}",     # unbalanced
    "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 6), '''}",  # open string
], ids=["no-closing-brace", "unbalanced", "open-string"])
@pytest.mark.parametrize("entry", ["W2.npy", "__xpnn__.npy"])
def test_npy_header_the_tokenizer_rejects_is_a_value_error(tmp_path, header, entry):
    """NumPy parses the header with tokenize before ast.literal_eval: its TokenError
    escaped load() (issue 16.5)."""
    entries = entries_of(small_net())
    entries[entry] = npy_raw_header(header)
    path = tmp_path / "bad.npz"
    write_zip(path, entries)
    with pytest.raises(ValueError, match=r"bad\.npz: damaged checkpoint: .* no readable "
                                         r"\.npy header"):
        load(path)


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
    path = tmp_path / "net.safetensors"
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
    path = tmp_path / "net.safetensors"
    small_net().save(path)
    back = load(path, backend=fake)
    assert back.xp is fake
    np.testing.assert_array_equal(back.params["b2"], small_net().params["b2"])


# --------------------------------------------------- save (issue 9, point 3)


@pytest.mark.parametrize("damage", ["nan", "inf", "shape", "missing", "int"])
def test_save_refuses_parameters_load_would_refuse(tmp_path, damage):
    net = small_net()
    path = tmp_path / "net.safetensors"
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
    with pytest.raises(ValueError, match=r"cannot save .*net\.safetensors: (parameter|parameters)"):
        net.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["net.safetensors"]


def test_save_keeps_the_file_mode(tmp_path):
    path = tmp_path / "net.safetensors"
    small_net().save(path)
    os.chmod(path, 0o640)
    small_net(seed=2).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    new = tmp_path / "new.safetensors"
    small_net().save(new)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask


def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.safetensors"
    small_net().save(real)
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    small_net(seed=5).save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load(real).params["W1"], small_net(seed=5).params["W1"])
    assert sorted(os.listdir(tmp_path)) == ["link.safetensors", "real.safetensors"]


# -- issue 16.1/16.11: targets that save() must not replace ----------------------------


def _writers():
    """Every kind of file xpnn writes goes through atomic_write; one writer of each."""
    return {
        "checkpoint": lambda path: small_net().save(path),
        "history": lambda path: History({"x": 1}).save_json(path),
        "atomic_write": lambda path: atomic.atomic_write(path, lambda f: f.write(b"data")),
    }


@pytest.mark.parametrize("writer", ["checkpoint", "history", "atomic_write"])
@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_save_refuses_a_target_that_is_not_a_regular_file(tmp_path, kind, writer):
    path = tmp_path / "target.npz"
    still_there = special_target(path, kind)
    with pytest.raises(FileExistsError) as info:
        _writers()[writer](path)
    message = str(info.value)
    assert str(path) in message
    assert "replaces only regular files" in message
    assert ("FIFO" in message) == kind.endswith("fifo") and ("device" in message) == (
        kind.endswith("device"))
    assert still_there(), f"{kind} was replaced"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_save_through_a_dangling_symlink_creates_the_file_it_names(tmp_path):
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "created.npz")
    small_net().save(dangling)
    assert dangling.is_symlink() and (tmp_path / "created.npz").is_file()
    np.testing.assert_array_equal(load(dangling).params["W1"], small_net().params["W1"])


@pytest.mark.parametrize("writer", ["checkpoint", "history", "atomic_write"])
def test_save_refuses_a_read_only_target_like_open_does(other_user, writer):
    folder, run_as = other_user
    path = folder / "locked.npz"
    with run_as():
        small_net().save(path)
        path.chmod(0o444)
        before = path.read_bytes()
        with pytest.raises(PermissionError):  # what open() says: the policy's reference
            open(path, "wb").close()
        with pytest.raises(PermissionError) as info:
            _writers()[writer](path)
        assert str(path) in str(info.value) and "read-only" in str(info.value)
        assert "0444" in str(info.value)
        assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
        assert sorted(os.listdir(folder)) == ["locked.npz"]
        path.chmod(0o644)  # writable again: saved
        _writers()[writer](path)


def test_each_save_honours_the_umask_in_force(tmp_path):
    old = os.umask(0o022)
    try:
        small_net().save(tmp_path / "a.npz")
        History({}).save_json(tmp_path / "a.json")
        os.umask(0o077)
        small_net().save(tmp_path / "b.npz")
        History({}).save_json(tmp_path / "b.json")
        with open(tmp_path / "c.txt", "w"):
            pass
        os.umask(0o027)
        small_net().save(tmp_path / "d.npz")
    finally:
        os.umask(old)

    def mode(name):
        return stat.S_IMODE((tmp_path / name).stat().st_mode)

    assert (mode("a.npz"), mode("a.json")) == (0o644, 0o644)
    assert (mode("b.npz"), mode("b.json")) == (mode("c.txt"), mode("c.txt")) == (0o600, 0o600)
    assert mode("d.npz") == 0o640


def test_temp_file_of_an_existing_private_file_is_private(tmp_path):
    """Replacing a 0600 file: the temp file holding the new content is not readable by
    others while it is written (created 0600, then given the file's mode)."""
    path = tmp_path / "secret.bin"
    path.write_bytes(b"old")
    path.chmod(0o600)
    seen = []

    def write(f):
        seen.append(stat.S_IMODE(os.fstat(f.fileno()).st_mode))
        f.write(b"new")

    old = os.umask(0o022)
    try:
        atomic.atomic_write(path, write)
    finally:
        os.umask(old)
    assert seen == [0o600] and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"new"


def test_save_to_a_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "no" / "such" / "net.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        small_net().save(target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError, match="folder"):
        small_net().save(tmp_path)


def test_save_and_load_bytes_and_pathlike_paths(tmp_path):
    net = small_net()
    raw = os.fsencode(tmp_path / "b.safetensors")
    net.save(raw)
    np.testing.assert_array_equal(load(raw).params["W3"], net.params["W3"])

    class Where:
        def __fspath__(self):
            return str(tmp_path / "p.safetensors")

    net.save(Where())
    np.testing.assert_array_equal(load(Where()).params["W3"], net.params["W3"])
    assert sorted(os.listdir(tmp_path)) == ["b.safetensors", "p.safetensors"]


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
    path = tmp_path / "net.safetensors"
    small_net().save(path)
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    left = [n for n in os.listdir(tmp_path) if n != "net.safetensors"]
    assert len(left) == 1 and left[0].endswith(".tmp")  # what SIGKILL leaves behind
    # a temp file of a writer that is still running must survive
    live_name = atomic._temp_prefix("net.safetensors") + f"{os.getppid()}.abcd1234.tmp"
    live = tmp_path / live_name
    live.write_bytes(b"in progress")
    small_net(seed=3).save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["net.safetensors", live_name])
    np.testing.assert_array_equal(load(path).params["W1"], small_net(seed=3).params["W1"])


# ------------------------------------------- safetensors: extra state, loaders


def test_extra_tensors_and_meta_round_trip(tmp_path, backend):
    net = _net(backend)
    extra = {"m/W1": np.arange(20.0).reshape(4, 5), "step": np.asarray(7, dtype=np.int64),
             "rng": np.arange(4, dtype=np.uint64) * 2**40, "mask": np.array([True, False]),
             "small": np.ones(3, dtype=np.float32), "empty": np.zeros((0, 3)),
             "big_endian": np.arange(3, dtype=">i4")}
    meta = {"optimizer": "adam", "iteration": 12, "lr": [0.1, 0.01], "nested": {"a": None}}
    path = tmp_path / "state.safetensors"
    assert xpnn.save(net, path, extra=extra, extra_meta=meta) == os.fspath(path)
    got = xpnn.read_checkpoint(path, backend=backend[0], device=backend[1])
    assert isinstance(got, checkpoint.Checkpoint) and got.extra_meta == meta
    assert set(got.extra) == set(extra)
    for name, value in extra.items():
        assert isinstance(got.extra[name], np.ndarray)
        assert got.extra[name].dtype == value.dtype.newbyteorder("=")
        assert got.extra[name].shape == value.shape  # a 0-d counter stays 0-d
        np.testing.assert_array_equal(got.extra[name], value)
    for k, v in net.params.items():
        np.testing.assert_array_equal(xpnn.to_numpy(got.net.params[k]), xpnn.to_numpy(v))
    # a plain safetensors reader sees the same tensors, under extra/<name>
    from safetensors.numpy import load_file

    tensors = load_file(path)
    assert set(tensors) == set(net.params) | {f"extra/{k}" for k in extra}
    np.testing.assert_array_equal(tensors["extra/m/W1"], extra["m/W1"])
    # load (the net only) ignores the extras; a save without them reads back empty
    assert load(path).sizes == net.sizes
    net.save(path)
    assert xpnn.read_checkpoint(path)[1:] == ({}, {})


@pytest.mark.parametrize("extra,meta,words", [
    ([1], None, "extra must be a dict"),
    ({3: np.ones(2)}, None, "extra names must be non-empty strings"),
    ({"": np.ones(2)}, None, "extra names must be non-empty strings"),
    ({"x": [1, 2]}, None, "must be a host NumPy array"),
    ({"x": np.array([object()])}, None, "dtype object"),
    ({"x": np.ones(2, dtype=np.complex128)}, None, "dtype complex128"),
    ({"x": np.array(["a"])}, None, "dtype <U1"),
    (None, [1, 2], "extra_meta must be a dict"),
    (None, {"x": float("nan")}, "JSON-able"),
    (None, {"x": object()}, "JSON-able"),
    (None, {"x": "y" * (2 * MB)}, "more than the 1,048,576 a reader accepts"),
])
def test_save_refuses_extras_a_checkpoint_cannot_hold(tmp_path, extra, meta, words):
    path = tmp_path / "net.safetensors"
    small_net().save(path)
    good = path.read_bytes()
    with pytest.raises((TypeError, ValueError)) as info:
        small_net(seed=3).save(path, extra=extra, extra_meta=meta)
    assert words in str(info.value) and "cannot save" in str(info.value)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["net.safetensors"]


def test_each_backend_reads_with_its_own_loader(tmp_path, monkeypatch):
    import safetensors

    opened = []
    real = safetensors.safe_open

    def spy(path, framework, device="cpu", **kw):
        opened.append((framework, device))
        return real(path, framework=framework, device=device, **kw)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    path = tmp_path / "net.safetensors"
    small_net().save(path, extra={"s": np.ones(2)})
    for name, device in _targets():
        opened.clear()
        net = load(path, backend=name, device=device)
        if name == "torch":
            where = xpnn.backend.device_name(net.xp, net.device)
            assert opened == [("pt", where), ("numpy", "cpu")], opened
        else:
            assert opened == [("numpy", "cpu"), ("numpy", "cpu")], opened
        np.testing.assert_array_equal(xpnn.to_numpy(net.params["W1"]),
                                      small_net().params["W1"])


def test_format_is_told_by_content_not_name(tmp_path):
    net = small_net()
    net.save(tmp_path / "really_safetensors.npz")
    _old_npz(tmp_path / "really_npz.safetensors", net)
    for name in ("really_safetensors.npz", "really_npz.safetensors"):
        np.testing.assert_array_equal(load(tmp_path / name).params["W2"], net.params["W2"])
    assert (tmp_path / "really_safetensors.npz").read_bytes()[8:9] == b"{"
    assert (tmp_path / "really_npz.safetensors").read_bytes()[:2] == b"PK"


# ------------------------------------------------- hostile safetensors files


def _st(tmp_path, header, data=b"", length=None, name="hostile.safetensors"):
    path = tmp_path / name
    path.write_bytes(st_bytes(header, data, length))
    return path


def test_foreign_and_mismatched_safetensors_are_named(tmp_path):
    net = small_net()
    header, data = st_layout({"a": np.ones(3), "b": np.zeros(2)})
    _raises_value_error(lambda: load(_st(tmp_path, header, data, name="other.safetensors")),
                        "other.safetensors: not an xpnn checkpoint", "holds: a, b")
    params = {k: v for k, v in net.params.items()}
    meta = st_metadata(net)

    def refused(arrays, *words, metadata=meta):
        header, data = st_layout(arrays, metadata)
        return _raises_value_error(lambda: load(_st(tmp_path, header, data)),
                                   "hostile.safetensors: ", *words)

    refused({k: v for k, v in params.items() if k != "W3"}, "missing parameters W3")
    refused({**params, "extra": np.ones(2)}, "unexpected entries extra")
    refused({**params, "W2": params["W2"].T}, "W2 has shape (6, 5)", "needs (5, 6)")
    refused({**params, "b1": np.zeros(5, dtype=np.int64)}, "b1 has dtype I64, not floating")
    refused({**params, "W1": params["W1"] * np.nan}, "W1 contains NaN")
    refused({**params, "b3": params["b3"] + np.inf}, "b3 contains NaN or inf")
    refused(params, "metadata 'xpnn.architecture' is not JSON",
            metadata={**meta, "xpnn.architecture": "{oops"})
    refused(params, "format 'keras'",
            metadata={**meta, "xpnn.architecture": json.dumps({"format": "keras"})})
    newer = json.dumps({**net.to_config(), "version": 99})
    refused(params, "version 99", "upgrade xpnn", metadata={**meta, "xpnn.architecture": newer})
    refused(params, "layout version '2'", "upgrade xpnn",
            metadata={**meta, "xpnn.format_version": "2"})
    broken = json.dumps({**net.to_config(), "activations": ["swish", "relu"]})
    refused(params, "damaged checkpoint: bad architecture",
            metadata={**meta, "xpnn.architecture": broken})
    refused(params, "metadata 'xpnn.extra' is not JSON", metadata={**meta, "xpnn.extra": "["})
    refused(params, "'xpnn.extra' is not a JSON object", metadata={**meta, "xpnn.extra": "[]"})
    refused(params, "not an xpnn checkpoint", "holds: W1, b1", metadata={"format": "pt"})


def test_hostile_safetensors_headers_are_refused_before_reading(tmp_path):
    net = small_net()
    header, data = st_parts(net)

    def refused(*words, header=header, data=data, length=None, memory=MB):
        path = _st(tmp_path, header, data, length)
        return _raises_value_error(lambda: load(path), str(path), *words, memory=memory)

    def with_entry(name, **change):
        return {**header, name: {**header[name], **change}}

    size = len(json.dumps(header))
    # the header's length: beyond the file, beyond the cap, cutting the JSON short
    refused("header declares 1,099,511,627,776 bytes", "more than the 1,048,576",
            length=2**40)
    refused("header declares 2,000,000 bytes", length=2_000_000)
    refused(f"header declares {size + len(data) + 1:,} bytes", "the file has",
            length=size + len(data) + 1)
    refused("header is not JSON", length=size - 5)
    big = _st(tmp_path, b"{" + b" " * (2 * MB) + b"}", name="big.safetensors")
    _raises_value_error(lambda: load(big), "more than the 1,048,576", memory=MB)
    refused("header is not JSON", header=b'{"W1": [1, 2')
    refused("not JSON", header=b"{\xff\xfe}")
    refused("header names 'W1' twice",
            header=b"{" + json.dumps(header)[1:-1].encode() + b', "W1": ' +
            json.dumps(header["W1"]).encode() + b"}")
    refused("__metadata__ is not a str -> str",
            header={**header, "__metadata__": {"xpnn.architecture": {"sizes": [1]}}})
    for junk in ([], "", 0, None):
        refused("__metadata__ is not a str -> str", header={**header, "__metadata__": junk})
    # each tensor's entry
    refused("not a dtype/shape/data_offsets entry", header={**header, "W1": [1, 2]})
    refused("dtype 'BF16'", header=with_entry("W1", dtype="BF16"))
    refused("dtype 'F8_E4M3'", header=with_entry("b2", dtype="F8_E4M3"))
    refused("has shape [-1, 5]", header=with_entry("W1", shape=[-1, 5]))
    refused("has shape [4.0, 5]", header=with_entry("W1", shape=[4.0, 5]))
    refused("has shape", header=with_entry("W1", shape=[1] * 9))
    refused("data_offsets [5, 1]", header=with_entry("W1", data_offsets=[5, 1]))
    refused("data_offsets [0]", header=with_entry("W1", data_offsets=[0]))
    begin, end = header["W1"]["data_offsets"]
    refused("needs 160 bytes but its data_offsets span 152",
            header=with_entry("W1", data_offsets=[begin, end - 8]))
    refused("needs 80 bytes", header=with_entry("W1", dtype="F32"))
    # offsets that overlap, leave a gap or run beyond the file
    b1 = header["b1"]["data_offsets"]
    refused("overlaps the one before",
            header=with_entry("b1", data_offsets=[b1[0] - 8, b1[1] - 8]))
    refused("leaves a gap",
            header=with_entry("b1", data_offsets=[b1[0] + 8, b1[1] + 8]), data=data + bytes(8))
    refused("ends at byte", "beyond the end of the file", data=data[:-8])
    refused("while the file holds", data=data + bytes(8))
    # a huge tensor whose offsets agree with its shape, beyond the file: nothing allocated
    huge = {**header, "extra/x": {"dtype": "F64", "shape": [10**6, 10**6],
                                  "data_offsets": [len(data), len(data) + 8 * 10**12]}}
    refused("beyond the end of the file", header=huge)
    huge = with_entry("W1", shape=[10**7, 10**7], data_offsets=[0, 8 * 10**14])
    refused(header=huge)
    # the architecture checked against the file's tensors before any is read
    arch = {**net.to_config(), "sizes": [2000, 2000, 2], "activations": ["relu"]}
    params = {"W1": np.zeros((2, 2)), "b1": np.zeros(2), "W2": np.zeros((2, 2)),
              "b2": np.zeros(2)}
    header2, data2 = st_layout(params, st_metadata(arch=arch))
    refused("W1 has shape (2, 2)", "needs (2000, 2000)", header=header2, data=data2)
    arch["sizes"] = [10**6, 10**6, 2]
    header2, data2 = st_layout(params, st_metadata(arch=arch))
    refused("bad architecture", "parameters", header=header2, data=data2)


def test_hostile_safetensors_claiming_huge_sizes_allocate_little(tmp_path):
    """A file of a few KB that claims a 10**7 x 10**7 W1 with offsets to match (800 TB
    of data): refused after reading its header only, within 1 MB."""
    net = small_net()
    header, data = st_parts(net)
    header["W1"] = {"dtype": "F64", "shape": [10**7, 10**7], "data_offsets": [0, 8 * 10**14]}
    shift = 8 * 10**14 - 160
    for name in list(header):
        if name not in ("W1", "__metadata__"):
            b, e = header[name]["data_offsets"]
            header[name]["data_offsets"] = [b + shift, e + shift]
    path = _st(tmp_path, header, data)
    _raises_value_error(lambda: load(path), "beyond the end of the file", memory=MB)


_NN_ALONE = """
import os, sys, types
import numpy as np
# xpnn.nn on its own: a bare package stands in for xpnn/__init__.py (which imports io)
package = types.ModuleType("xpnn")
package.__path__ = [os.path.join(sys.argv[1], "xpnn")]
sys.modules["xpnn"] = package
from xpnn.nn import MLP
net = MLP([3, 4, 2], activation="relu", seed=0)
back = MLP.from_config(net.to_config(), params=net.params)
assert back.to_config() == net.to_config()
labels = back.predict_labels(np.ones((2, 3)))
loaded = sorted(m for m in sys.modules if m.startswith("xpnn."))
assert not any(m.startswith("xpnn.io") for m in loaded), loaded
print("ok", len(loaded))
"""


def test_nn_never_imports_io():
    """The layering: io imports nn (checkpoint builds an MLP from a config); nn never
    imports io at module level (``MLP.save`` imports it when called)."""
    import ast
    from pathlib import Path

    root = Path(xpnn.__file__).parent
    for source in sorted((root / "nn").glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                if node.level:
                    names = ["xpnn." * (node.level == 2) + n for n in names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "io" or "xpnn.io" in n or n.startswith("..io")
                           for n in names), f"{source.name} imports {names}"
    from xpnn.io import checkpoint as module

    assert module.MLP is xpnn.MLP  # io -> nn, at module level
    out = subprocess.run([sys.executable, "-c", _NN_ALONE, str(root.parent)], check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("ok")
    for name in ("xpnn.io.checkpoint", "xpnn.nn.mlp", "xpnn.nn.config"):
        subprocess.run([sys.executable, "-c", f"import {name}"], check=True)
