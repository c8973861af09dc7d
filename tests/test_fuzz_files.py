"""Property and fuzz tests over everything that reads a file (issue 9, point 8):
checkpoints, IDX data files, Sign Language class folders and training histories.

The contract: every input either works or raises the documented error (ValueError, or
its subclass DatasetError) with a message naming the file, within a memory bound (a few
MB beyond the file's size, measured with tracemalloc, which sees NumPy's buffers) and a
generous time bound; and a save that fails never loses the file it would replace.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_files import (
    MB,
    SPECIAL_KINDS,
    ST_CODES,
    dying_writes,
    entries_of,
    marker,
    npy_header,
    npy_raw_header,
    peak_bytes,
    small_net,
    special_target,
    st_bytes,
    st_metadata,
    st_parts,
    write_zip,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xpnn
from xpnn.data import DatasetError, datasets
from xpnn.io.atomic import atomic_write
from xpnn.io.checkpoint import load
from xpnn.nn import config
from xpnn.training import History


def _examples(n: int):
    """Hypothesis settings: n examples, no deadline; the fixtures used with @given
    (tmp_path, monkeypatch) are safe to share between examples here."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


FUZZ = _examples(40)
SECONDS = 10.0  # per call: generous, a shared machine; the real cost is milliseconds


def _within_bounds(call, file_size: int, *errors):
    """Run ``call``; it must return or raise one of ``errors`` with a message, using
    under file_size + 4 MB and SECONDS. Returns what it returned or raised."""
    start = time.perf_counter()
    peak, outcome = peak_bytes(call)
    took = time.perf_counter() - start
    if isinstance(outcome, Exception):
        assert isinstance(outcome, errors), f"{type(outcome).__name__}: {outcome}"
        assert str(outcome), "an error without a message"
    assert peak < file_size + 4 * MB, f"peak {peak / MB:.1f} MB for a {file_size} B file"
    assert took < SECONDS, f"took {took:.1f} s"
    return outcome


# ------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def good_checkpoints(tmp_path_factory):
    """The bytes of a valid checkpoint: safetensors (with training state) and the old
    .npz, stored and deflated."""
    folder = tmp_path_factory.mktemp("good")
    net = small_net()
    net.save(folder / "st", extra={"step": np.asarray(3), "m": np.ones((2, 3))},
             extra_meta={"iteration": 3})
    out = {"safetensors": (folder / "st").read_bytes()}
    for name, compression in (("stored", zipfile.ZIP_STORED),
                              ("deflated", zipfile.ZIP_DEFLATED)):
        write_zip(folder / name, entries_of(net), compression=compression)
        out[name] = (folder / name).read_bytes()
    return net, out


def _check_loaded(path, size):
    outcome = _within_bounds(lambda: load(path), size, ValueError)
    if isinstance(outcome, ValueError):
        assert str(path) in str(outcome)
    else:  # the damage missed everything that matters: the net must be whole
        for key, value in outcome.params.items():
            assert np.all(np.isfinite(value)), key
    return outcome


@FUZZ
@given(kind=st.sampled_from(["safetensors", "safetensors", "stored", "deflated"]),
       data=st.data())
def test_damaged_checkpoints(good_checkpoints, tmp_path, kind, data):
    _, files = good_checkpoints
    blob = bytearray(files[kind])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        if not blob:
            break
        edit = data.draw(st.sampled_from(["flip", "overwrite", "truncate", "insert"]))
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        if edit == "flip":
            blob[at] ^= data.draw(st.integers(1, 255), label="bits")
        elif edit == "overwrite":  # e.g. a size field set to something huge
            value = data.draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 10**6]))
            blob[at:at + 4] = value.to_bytes(4, "little")
        elif edit == "truncate":
            del blob[at:]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(blob))
    _check_loaded(path, len(blob))


_NAMES = st.sampled_from(["W1", "b1", "W2", "b2", "W3", "b3", "extra", "__xpnn__"])
_SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 10**7, 2**40]), max_size=3).map(tuple)
_DTYPES = st.sampled_from(["<f8", ">f4", "<f2", "|u1", "<i8", "|O", "<c16", "<U5", "|V8"])


@st.composite
def _hostile_entry(draw):
    name = draw(_NAMES) + draw(st.sampled_from([".npy", ".npy", "", ".txt"]))
    how = draw(st.sampled_from(["header", "header", "random", "zeros"]))
    if how == "header":  # a .npy header with any claim, and some data
        body = npy_header(draw(_SHAPES), draw(_DTYPES), draw(st.booleans()),
                          bytes(draw(st.integers(0, 256))))
    elif how == "random":
        body = draw(st.binary(max_size=200))
    else:
        body = bytes(draw(st.sampled_from([0, 100, 1 << 20])))
    return name, body


@st.composite
def _architectures(draw):
    sizes = draw(st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 10**4, 10**6, -1, 0]),
                          min_size=1, max_size=4))
    hidden = max(len(sizes) - 2, 0)
    return {
        "format": draw(st.sampled_from(["xpnn-mlp", "xpnn-mlp", "keras"])),
        "version": draw(st.sampled_from([1, 1, 0, 2, "1", None])),
        "sizes": sizes,
        "activations": draw(st.lists(st.sampled_from(["relu", "tanh", "Sigmoid", "swish", 3]),
                                     min_size=hidden, max_size=hidden + 1)),
        "loss": draw(st.sampled_from(list(xpnn.LOSSES) + ["hinge", None])),
        "dtype": draw(st.sampled_from(["float32", "float64", "float16", 64])),
        "weight_decay": draw(st.sampled_from([0.0, 0.1, -1.0, float("nan"), "x"])),
        "weight_init": draw(st.sampled_from([0.01, "he", "xavier", None, 0.0, "lecun"])),
    }


@FUZZ
@given(arch=_architectures(), entries=st.lists(_hostile_entry(), max_size=6),
       use_net=st.booleans(), compression=st.sampled_from([zipfile.ZIP_STORED,
                                                           zipfile.ZIP_DEFLATED]))
def test_hostile_checkpoints(tmp_path, arch, entries, use_net, compression):
    files = entries_of(small_net()) if use_net else {}
    files["__xpnn__.npy"] = marker(arch)
    files.update(entries)
    path = tmp_path / "hostile.npz"
    write_zip(path, files, compression=compression)
    _check_loaded(path, path.stat().st_size)


_ST_NAMES = st.sampled_from(["W1", "b1", "W2", "b2", "W3", "b3", "extra/x", "other",
                             "__metadata__"])
_ST_DTYPES = st.sampled_from([*ST_CODES.values(), "BF16", "F8_E4M3", "C64", "f8", 3])
_OFFSETS = st.sampled_from([0, 1, 8, 24, 40, 160, 10**6, 2**40, 2**64 - 1, -8])


@st.composite
def _st_entry(draw):
    """A header entry: mostly well formed, with any claim."""
    how = draw(st.sampled_from(["entry", "entry", "entry", "junk"]))
    if how == "junk":
        return draw(_JSON)
    entry = {"dtype": draw(_ST_DTYPES),
             "shape": draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 10**7, 2**40, -1]),
                                    max_size=3)),
             "data_offsets": draw(st.lists(_OFFSETS, min_size=2, max_size=2))}
    if draw(st.booleans()):  # offsets that agree with the claim
        itemsize = {"F16": 2, "F32": 4, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
        begin = entry["data_offsets"][0]
        size = int(np.prod(entry["shape"], dtype=object)) * itemsize.get(entry["dtype"], 8)
        entry["data_offsets"] = [begin, begin + size]
    return entry


@FUZZ
@given(arch=_architectures(), entries=st.dictionaries(_ST_NAMES, _st_entry(), max_size=4),
       use_net=st.booleans(), tail=st.sampled_from([0, 8, -8]), data=st.data())
def test_hostile_safetensors(tmp_path, arch, entries, use_net, tail, data):
    header, blob = st_parts(small_net()) if use_net else ({}, b"")
    header["__metadata__"] = st_metadata(arch=arch)
    header.update(entries)
    if data.draw(st.sampled_from([False, False, False, True]), label="metadata junk"):
        header["__metadata__"] = data.draw(_JSON, label="metadata")
    blob = blob + bytes(tail) if tail >= 0 else blob[:tail]
    length = data.draw(st.sampled_from([None, None, None, 0, 1, 2**20 + 1, 2**63]),
                       label="length")
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(st_bytes(header, blob, length))
    _check_loaded(path, path.stat().st_size)


@FUZZ
@given(blob=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(str.encode),
                      st.binary(max_size=40).map(lambda b: b"PK\x03\x04" + b),
                      st.binary(max_size=40).map(lambda b: b"\x93NUMPY" + b),
                      st.builds(lambda n, b: n.to_bytes(8, "little") + b"{" + b,
                                st.sampled_from([0, 1, 2, 10, 100, 2**20, 2**64 - 1]),
                                st.binary(max_size=100))))
def test_arbitrary_bytes_are_not_checkpoints(tmp_path, blob):
    path = tmp_path / "x.npz"
    path.write_bytes(blob)
    error = _within_bounds(lambda: load(path), len(blob), ValueError)
    assert isinstance(error, ValueError) and "pickle" not in str(error)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@_examples(150)
@given(cfg=st.one_of(_JSON, _architectures(),
                     _architectures().flatmap(lambda a: st.fixed_dictionaries(
                         {k: st.just(v) for k, v in a.items()}, optional={"extra": _JSON}))))
def test_check_config_accepts_or_names_the_problem(cfg):
    try:
        checked = config.check_config(cfg)
    except ValueError as exc:
        assert str(exc)
        return
    shapes = config.param_shapes(checked)
    assert sum(np.prod(s) for s in shapes.values()) <= config.MAX_PARAMS
    if sum(np.prod(s) for s in shapes.values()) > 10**5:
        return  # valid, but too big to build in a unit test
    # what passes builds a net, whose config is what was checked
    net = xpnn.MLP.from_config(checked)
    # (an unknown weight_init, None, builds with MLP's default 0.01)
    assert config.check_config(config.to_config(net)) == {
        **checked, "weight_init": checked["weight_init"] or 0.01}
    assert {k: tuple(v.shape) for k, v in net.params.items()} == shapes


@_examples(25)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
       activation=st.sampled_from(list(xpnn.ACTIVATIONS)),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 99))
def test_round_trip_is_exact(tmp_path, sizes, activation, dtype, seed):
    loss = "mse" if sizes[-1] == 1 else "softmax_cross_entropy"
    net = xpnn.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed,
                   weight_init=0.5)
    path = tmp_path / "net.safetensors"
    net.save(path)
    back = load(path)
    assert config.to_config(back) == config.to_config(net)
    for key, value in net.params.items():
        np.testing.assert_array_equal(back.params[key], value)


# ------------------------------------------------- malformed .npy headers (issue 16.5)

_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 6), }"
_SHAPE_AT = _HEADER.index("(5, 6)")
_HEADER_PIECES = ["(", ")", "[", "]", "{", "}", "'", '"', "'''", ",", ":", "\\", "#",
                  "\n", "\x00", "9" * 400, "1e999", "-1", "(" * 300, ")" * 300, "[" * 150,
                  "lambda: 0", "__import__('os')", "b'x'", "...", "None", "é"]


@st.composite
def _malformed_headers(draw):
    """A header dict made malformed: truncated, with pieces (brackets, quotes, huge
    numbers, deep nesting, code) inserted or substituted anywhere, or the shape
    replaced by one of them."""
    text = _HEADER
    for _ in range(draw(st.integers(1, 3), label="edits")):
        how = draw(st.sampled_from(["truncate", "insert", "replace", "shape", "nest"]))
        at = draw(st.integers(0, len(text)), label="at")
        piece = draw(st.sampled_from(_HEADER_PIECES) | st.text(max_size=8), label="piece")
        if how == "truncate":
            text = text[:at]
        elif how == "insert":
            text = text[:at] + piece + text[at:]
        elif how == "replace":
            text = text[:at] + piece + text[at + len(piece):]
        elif how == "shape":
            text = _HEADER[:_SHAPE_AT] + piece + _HEADER[_SHAPE_AT + 6:]
        else:  # deep nesting: the parser's recursion and memory limits
            depth = draw(st.integers(50, 1500), label="depth")
            close = draw(st.integers(0, depth), label="closed")
            text = _HEADER[:_SHAPE_AT] + "(" * depth + "5," + ")" * close + text[_SHAPE_AT + 6:]
    return text[:4000]  # under the reader's 4096-byte header limit: it gets parsed


@_examples(120)
@given(header=_malformed_headers(), entry=st.sampled_from(["W1.npy", "b3.npy", "__xpnn__.npy"]),
       version=st.sampled_from([(1, 0), (2, 0)]))
def test_malformed_npy_headers(tmp_path, header, entry, version):
    entries = entries_of(small_net())
    entries[entry] = npy_raw_header(header, version, data=bytes(240))
    path = tmp_path / "header.npz"
    write_zip(path, entries)
    _check_loaded(path, path.stat().st_size)


# ------------------------------------------------------ saving never loses a file


@_examples(20)
@given(failure=st.sampled_from(["nan", "shape", "write", "interrupt"]),
       written=st.integers(0, 5000))
def test_failed_save_keeps_the_old_file(tmp_path_factory, monkeypatch, failure, written):
    folder = tmp_path_factory.mktemp("save")
    path = folder / "net.safetensors"
    small_net().save(path)
    good = path.read_bytes()
    net = small_net(seed=7)
    expected = ValueError
    if failure == "nan":
        net.params["b1"] = net.params["b1"] * np.nan
    elif failure == "shape":
        net.params["W3"] = net.params["W3"][:, :2]
    else:  # the writer dies part-way, after `written` bytes
        expected = OSError if failure == "write" else KeyboardInterrupt
        dying_writes(monkeypatch, written, expected)
    with pytest.raises(expected):
        net.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good and os.listdir(folder) == ["net.safetensors"]
    np.testing.assert_array_equal(load(path).params["W1"], small_net().params["W1"])


# ------------------------- what is already at the target path (issue 16.1, 16.7, 16.11)

_NEW = ("missing", "dangling-link")
_REPLACEABLE = ("regular", "link-to-regular")
_REFUSED = ("folder", "read-only", "link-to-read-only", *SPECIAL_KINDS)
_WRITERS = {
    "checkpoint": (lambda path: small_net(seed=3).save(path), lambda path: load(path)),
    "history": (lambda path: History({"k": 1}).save_json(path), History.load_json),
    "atomic_write": (lambda path: atomic_write(path, lambda f: f.write(b"new")),
                     lambda path: Path(path).read_bytes() == b"new" or 1 / 0),
}


def _snapshot(path: Path):
    """What is at ``path``: (is a link, file type, mode, bytes of a regular file)."""
    if not os.path.lexists(path):
        return None
    info = os.stat(path) if os.path.exists(path) else os.lstat(path)
    data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    return path.is_symlink(), stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), data


def _make_target(folder: Path, path: Path, kind: str) -> None:
    if kind in SPECIAL_KINDS:
        special_target(path, kind)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling-link":
        path.symlink_to(folder / "elsewhere")
    elif kind != "missing":
        real = folder / "real" if kind.startswith("link-to-") else path
        real.write_bytes(b"old")
        real.chmod(0o444 if kind.endswith("read-only") else 0o640)
        if real != path:
            path.symlink_to(real)


@_examples(60)
@given(kind=st.sampled_from([*_NEW, *_REPLACEABLE, *_REFUSED]),
       writer=st.sampled_from(sorted(_WRITERS)),
       umask=st.sampled_from([0o022, 0o077, 0o027, 0o002, 0o000]))
def test_any_existing_target(other_user, kind, writer, umask):
    """Whatever is at the path (a file of any type, through a symlink or not, read-only
    for this user or not) and whatever the umask at that moment: the write makes a
    regular file that reads back, with the old file's mode or (a new file) the
    umask's, or raises an OSError naming the path and changes nothing; it never
    leaves a temp file."""
    base, run_as = other_user
    folder = Path(tempfile.mkdtemp(dir=base))
    folder.chmod(0o777)
    path = folder / "target"
    write, read = _WRITERS[writer]
    read(write(folder / "warm-up") or folder / "warm-up")  # lazy imports, as this user
    (folder / "warm-up").unlink()
    if kind.endswith("device"):  # mknod: root only (skips elsewhere)
        _make_target(folder, path, kind)
    with run_as():
        if not kind.endswith("device"):
            _make_target(folder, path, kind)
        before = _snapshot(path)
        old = os.umask(umask)
        try:
            write(path)
        except OSError as exc:
            assert kind in _REFUSED, f"{kind}: {exc}"
            assert str(path) in str(exc), exc
            assert _snapshot(path) == before
        else:
            assert kind not in _REFUSED, f"{kind} was replaced"
            read(path)
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode == (0o640 if kind in _REPLACEABLE else 0o666 & ~umask), oct(mode)
            assert path.is_symlink() == ("link" in kind)
        finally:
            os.umask(old)
        assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


# ---------------------------------------------------------------- IDX data files


def _idx_header(magic, n, rows=28, cols=28):
    fields = (magic, n, rows, cols) if magic == 0x803 else (magic, n)
    return b"".join(v.to_bytes(4, "big") for v in fields)


@FUZZ
@given(magic=st.sampled_from([0x803, 0x801, 0, 0xFFFFFFFF]),
       n=st.sampled_from([0, 1, 3, 2**31, 2**32 - 1]),
       rows=st.sampled_from([28, 0, 2**16]), extra=st.integers(-20, 20),
       gz=st.booleans(), tail=st.binary(max_size=32))
def test_idx_reader(magic, n, rows, extra, gz, tail):
    kind = 0x803 if magic == 0x803 or (magic not in (0x803, 0x801) and extra % 2) else 0x801
    item = 784 if kind == 0x803 else 1
    payload = bytes(max(0, min(n, 5) * item + extra))
    raw = _idx_header(magic, n, rows, 28) + payload
    data = gzip.compress(raw, mtime=0) + tail if gz else raw + tail  # tail: trailing junk
    outcome = _within_bounds(lambda: datasets._read_idx(data, "f.gz", Path("d"), kind),
                             len(data), DatasetError)
    if not isinstance(outcome, Exception):
        assert outcome.dtype == np.uint8 and len(outcome) == n <= 5


@FUZZ
@given(blob=st.binary(max_size=200), kind=st.sampled_from([0x803, 0x801]))
def test_idx_reader_random_bytes(blob, kind):
    for data in (blob, b"\x1f\x8b" + blob):
        _within_bounds(lambda d=data: datasets._read_idx(d, "f.gz", Path("d"), kind),
                       len(data), DatasetError)


# --------------------------------------------------------- Sign Language folders


_FOLDER_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1, max_size=8,
).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)


@_examples(25)
@given(names=st.lists(_FOLDER_NAMES | st.sampled_from(["0", "1", "01", "²", "7"]),
                      min_size=1, max_size=4, unique=True))
def test_sign_language_class_folders(tmp_path_factory, names):
    from PIL import Image

    root = tmp_path_factory.mktemp("signs") / "Dataset"
    for name in names:
        try:
            (root / name).mkdir(parents=True)
        except OSError:
            assume(False)  # a name this file system refuses
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    datasets.clear_cache()
    try:
        (x, t), (xt, tt) = xpnn.data.load_sign_language_digits(path=root, size=4,
                                                                test_size=1, stratify=False)
    except ValueError as exc:  # DatasetError(NotFound) included
        assert str(exc)
        return
    labels = sorted({int(n) for n in names if n.isascii() and n.isdigit()})
    assert sorted(set(np.concatenate([t, tt]).tolist())) == labels


# -------------------------------------------------------------- training history


def _history(tmp_path, content) -> Path:
    path = tmp_path / "history.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _valid_history() -> dict:
    h = History({"backend": "numpy"})
    h.append({"iteration": 0, "epoch": 0, "train_loss": 2.3, "train_acc": 0.1, "lr": 0.1})
    return h.to_dict()


@pytest.mark.parametrize("content,words", [
    (b"\xff\xfe\x00garbage", "not a UTF-8 text file"),
    (b"[" * 100_000, "nested too deeply"),
    ([1, 2], "not an xpnn history"),
    ({**_valid_history(), "records": {"iteration": 5}}, "records['iteration'] is a int"),
    ({**_valid_history(), "records": "x"}, "'records' is not an object"),
    ({**_valid_history(), "records": {"train_loss": [[1, 2]]}}, "holds [1, 2]"),
    ({**_valid_history(), "meta": 5}, "'meta' is not an object"),
    ({**_valid_history(), "format": "other"}, "not an xpnn history"),
])
def test_damaged_history_names_the_file(tmp_path, content, words):
    path = _history(tmp_path, content)
    with pytest.raises(ValueError) as info:
        History.load_json(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_history_size_is_checked_before_reading(tmp_path):
    path = _history(tmp_path, _valid_history())
    assert History.load_json(path).train_loss == [2.3]
    with pytest.raises(ValueError, match="more than max_bytes=10"):
        History.load_json(path, max_bytes=10)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="/dev/zero: not a regular file"):
            History.load_json("/dev/zero")


@FUZZ
@given(content=st.one_of(_JSON, st.binary(max_size=100),
                         st.builds(lambda r, m: {**_valid_history(), "records": r, "meta": m},
                                   st.dictionaries(st.sampled_from(list(History.fields)),
                                                   _JSON, max_size=4), _JSON)))
def test_history_loader(tmp_path, content):
    path = _history(tmp_path, content)
    outcome = _within_bounds(lambda: History.load_json(path), path.stat().st_size, ValueError)
    if isinstance(outcome, ValueError):
        assert str(path) in str(outcome)
    else:
        lengths = {len(getattr(outcome, f)) for f in History.fields}
        assert len(lengths) == 1
