"""Tests for xpnn.plotting: every figure is a valid, non-trivial PNG written atomically,
on every backend; bad inputs give clear errors; a missing matplotlib says what to install."""

from __future__ import annotations

import json
import os
import stat
import struct
import sys

import numpy as np
import pytest

import xpnn
from xpnn.data import load_car_prices, make_moons, make_spirals

pytest.importorskip("matplotlib")

from xpnn import plotting  # noqa: E402
from xpnn.optim import SGD  # noqa: E402
from xpnn.training import History, train  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Check the PNG signature and a reasonable size; return (width, height)."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def no_temp_files(folder) -> bool:
    return not [p for p in os.listdir(folder) if p.endswith(".tmp")]


@pytest.fixture(scope="module")
def moons_run():
    x, t = make_moons(120, noise=0.2, seed=0)
    net = xpnn.MLP([2, 5, 2], activation="tanh", weight_init="xavier", seed=0)
    history = train(net, (x, t), (x, t), optimizer=SGD(lr=1.0), batch_size=None, iters=200,
                    eval_every=20, seed=0, progress=False)
    return net, x, t, history


def test_plot_history_from_history_dict_and_json(moons_run, tmp_path):
    _, _, _, history = moons_run
    a = plotting.plot_history(history, tmp_path / "a.png", title="moons")
    assert a == tmp_path / "a.png"
    w_two, _ = png_size(a)
    png_size(plotting.plot_history(history.to_dict(), tmp_path / "b.png"))
    history.save_json(tmp_path / "history.json")
    png_size(plotting.plot_history(tmp_path / "history.json", tmp_path / "c.png"))
    png_size(plotting.plot_history(str(tmp_path / "history.json"), tmp_path / "d.png"))
    plain = {"iteration": [0, 10, 20], "train_loss": [1.0, 0.5, 0.2],
             "train_acc": [0.5, 0.8, 0.9], "test_loss": [1.1, 0.6, 0.3],
             "test_acc": [0.4, None, 0.85]}
    png_size(plotting.plot_history(plain, tmp_path / "e.png"))
    assert w_two > 900  # two panels
    assert no_temp_files(tmp_path)


def test_plot_history_mse_has_one_panel(tmp_path):
    x, t = load_car_prices(dtype="float64")
    net = xpnn.MLP([1, 1], loss="mse", dtype="float64", seed=0)
    history = train(net, (x, t), None, optimizer=SGD(lr=0.02), batch_size=None, iters=300,
                    eval_every=10, progress=False)
    assert all(a is None for a in history.train_acc)
    width, _ = png_size(plotting.plot_history(history, tmp_path / "mse.png"))
    assert width < 800  # the loss panel only


def test_plot_history_empty_and_bad(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        plotting.plot_history(History(), tmp_path / "x.png")
    with pytest.raises(TypeError, match="history"):
        plotting.plot_history(42, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_histories(moons_run, tmp_path):
    _, _, _, history = moons_run
    png_size(plotting.plot_histories({"a": history, "b": history.to_dict()},
                                     tmp_path / "h.png", metric="test_acc", title="t"))
    png_size(plotting.plot_histories([("a", history)], tmp_path / "l.png", metric="train_loss"))
    with pytest.raises(ValueError, match="no histories"):
        plotting.plot_histories({}, tmp_path / "n.png")
    with pytest.raises(ValueError, match="none of the histories"):
        plotting.plot_histories({"a": history}, tmp_path / "n.png", metric="nope")


def test_decision_boundary_on_every_backend(backend, to_backend, tmp_path):
    name, device = backend
    xh, th = make_moons(80, noise=0.2, seed=1)
    net = xpnn.MLP([2, 4, 2], activation="tanh", weight_init="xavier", backend=name,
                   device=device, seed=0)
    x, t = to_backend(xpnn.to_numpy(xh)), to_backend(xpnn.to_numpy(th))
    out = plotting.plot_decision_boundary(net, x, t, tmp_path / "sub" / "db.png",
                                          resolution=60)
    png_size(out)
    # host arrays work too, and a binary (1-output) network
    bce = xpnn.MLP([2, 3, 1], activation="relu", loss="binary_cross_entropy",
                   weight_init="he", backend=name, device=device, seed=0)
    png_size(plotting.plot_decision_boundary(bce, xh, th, tmp_path / "bce.png",
                                             title="bce", resolution=40))


def test_predicted_classes_match_the_network(moons_run):
    net, x, t, _ = moons_run
    grid = np.random.default_rng(0).uniform(-2, 3, size=(500, 2))
    classes = plotting._predict_classes(net, grid, chunk=128)  # several chunks
    expected = xpnn.to_numpy(net.predict(xpnn.asarray(grid, dtype="float32"))).argmax(axis=1)
    np.testing.assert_array_equal(classes, expected)


def test_decision_boundaries_grid(tmp_path):
    x, t = make_spirals(90, n_classes=3, seed=0)
    nets = {h: xpnn.MLP([2, h, 3], activation="relu", weight_init="he", seed=h)
            for h in (1, 2, 3, 4, 5, 20, 50)}
    width, height = png_size(plotting.plot_decision_boundaries(
        nets, x, t, tmp_path / "grid.png", title="spirals", resolution=40))
    assert width > height  # 4 columns x 2 rows
    png_size(plotting.plot_decision_boundaries([("one", nets[1])], x, t, tmp_path / "one.png",
                                               resolution=30))
    with pytest.raises(ValueError, match="no networks"):
        plotting.plot_decision_boundaries({}, x, t, tmp_path / "none.png")


def test_decision_boundary_errors(tmp_path):
    net3 = xpnn.MLP([3, 4, 2], seed=0)
    x3 = xpnn.asarray(np.zeros((5, 3)), dtype="float32")
    with pytest.raises(ValueError, match="2-D inputs"):
        plotting.plot_decision_boundary(net3, x3, np.zeros(5, dtype=np.int64), tmp_path / "a.png")
    reg = xpnn.MLP([2, 1], loss="mse", seed=0)
    x, t = make_moons(20, seed=0)
    with pytest.raises(ValueError, match="classifier"):
        plotting.plot_decision_boundary(reg, x, t, tmp_path / "b.png")
    net = xpnn.MLP([2, 3, 2], seed=0)
    with pytest.raises(ValueError, match="resolution"):
        plotting.plot_decision_boundary(net, x, t, tmp_path / "c.png", resolution=1)
    with pytest.raises(ValueError, match="rows"):
        plotting.plot_decision_boundary(net, x, np.zeros(3, dtype=np.int64), tmp_path / "d.png")
    assert not any(tmp_path.iterdir())


def test_plot_regression(tmp_path):
    x, t = load_car_prices(dtype="float64")
    net = xpnn.MLP([1, 1], loss="mse", dtype="float64", seed=0)
    train(net, (x, t), None, optimizer=SGD(lr=0.02), batch_size=None, iters=2000,
          progress=False)
    png_size(plotting.plot_regression(net, x, t, tmp_path / "reg.png", xlabel="price",
                                      ylabel="sales", title="cars"))
    deep = xpnn.MLP([1, 4, 1], activation="tanh", loss="mse", seed=0)
    png_size(plotting.plot_regression(deep, x, t, tmp_path / "deep.png"))
    with pytest.raises(ValueError, match="1 input and 1 output"):
        plotting.plot_regression(xpnn.MLP([2, 1], loss="mse"), x, t, tmp_path / "bad.png")


def test_atomic_write_mode_and_overwrite(moons_run, tmp_path):
    net, x, t, _ = moons_run
    path = tmp_path / "db.png"
    path.write_bytes(b"old")
    plotting.plot_decision_boundary(net, x, t, path, resolution=30)
    png_size(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    assert no_temp_files(tmp_path)


def test_failed_save_leaves_no_temp_file(moons_run, tmp_path):
    _, _, _, history = moons_run
    with pytest.raises(ValueError):  # matplotlib: unknown format
        plotting.plot_history(history, tmp_path / "curves.notaformat")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnn\[plot\]'"):
        plotting.plot_history({"iteration": [0], "train_loss": [1.0]}, tmp_path / "a.png")


def test_history_json_layout_is_readable(moons_run, tmp_path):
    _, _, _, history = moons_run
    history.save_json(tmp_path / "h.json")
    data = json.loads((tmp_path / "h.json").read_text())
    flat = plotting._history_dict(data)
    assert flat["iteration"] == history.iteration
    assert flat["meta"]["loss"] == "softmax_cross_entropy"


def test_nets_on_a_namespace_without_a_registered_name(backend, tmp_path):
    """Plots hand net.xp (the namespace) to xpnn.asarray, never net.backend (a display
    name): a net on jax.numpy or any other array-API namespace has no name that the
    backend lookup knows."""
    name, device = backend
    x, t = make_moons(40, noise=0.2, seed=2)
    net = xpnn.MLP([2, 3, 2], activation="tanh", weight_init="xavier", backend=name,
                   device=device, seed=0)
    net.backend = "a_namespace_without_a_registered_name"
    png_size(plotting.plot_decision_boundary(net, x, t, tmp_path / "db.png", resolution=30))
    png_size(plotting.plot_decision_boundaries({"a": net}, x, t, tmp_path / "grid.png",
                                               resolution=30))
    reg = xpnn.MLP([1, 1], loss="mse", backend=name, device=device, seed=0)
    reg.backend = net.backend
    xr, tr = load_car_prices()
    png_size(plotting.plot_regression(reg, xr, tr, tmp_path / "reg.png"))
