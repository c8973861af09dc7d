"""Tests for the ``xpnn`` command line (xpnn.cli, python -m xpnn).

Small data only (moons, spirals, random gradcheck nets); the MNIST and Sign Language
runs need XPNN_DATA_DIR and then train for 20 iterations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import xpnn
from xpnn import checkpoint
from xpnn.backend import available_backends
from xpnn.cli import PRESETS, build_parser, main
from xpnn.training import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xpnn: error: "), err
    assert "Traceback" not in err


# -- help -------------------------------------------------------------------------------


def test_python_m_xpnn_help():
    proc = subprocess.run([sys.executable, "-m", "xpnn", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "gradcheck" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("command", ["train", "gradcheck"])
def test_subcommand_help_is_complete(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in out
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"
    if command == "train":
        assert "per-dataset defaults" in out
        for name in PRESETS:
            assert name in out
        assert "10000" in out and "784-50-10" in out


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and xpnn.__version__ in out


# -- train end to end --------------------------------------------------------------------


def test_train_moons_end_to_end(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "400",
                             "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    for word in ("moons", "numpy", "float32", "400 iterations", "train acc", "test acc"):
        assert word in summary
    assert str(out_dir) in summary

    data = json.loads((out_dir / "history.json").read_text())
    history = History.load_json(out_dir / "history.json")
    assert len(history) > 2 and history.iteration[-1] == 400
    assert history.meta["dtype"] == "float32" and history.meta["batch_size"] is None
    assert data["meta"]["cli"]["dataset"] == "moons"
    assert history.final["train_acc"] > 0.8

    net = checkpoint.load(out_dir / "model.npz")
    assert net.sizes == [2, 3, 2] and net.activations == ["tanh"]
    x, t = xpnn.data.make_moons(200, noise=0.2, seed=0)
    p = xpnn.to_numpy(net.predict(x))
    assert p.shape == (200, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert net.accuracy(x, t) == pytest.approx(history.final["train_acc"], abs=1e-6)

    if has_matplotlib():
        assert_png(out_dir / "curves.png")
        assert_png(out_dir / "decision_boundary.png")


def test_train_spirals_deep_custom_flags(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "train", "--dataset", "spirals", "--samples", "90", "--hidden", "8", "6",
        "--activation", "relu", "tanh", "--weight-init", "he", "--optimizer", "adam",
        "--lr", "0.01", "--batch-size", "30", "--epochs", "5", "--eval-every", "5",
        "--dtype", "float64", "--seed", "3", "--out", str(tmp_path), "--quiet",
    )
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # --quiet: the summary only
    history = History.load_json(tmp_path / "history.json")
    assert history.meta["sizes"] == [2, 8, 6, 3]
    assert history.meta["activations"] == ["relu", "tanh"]
    assert history.meta["optimizer"] == "adam" and history.meta["dtype"] == "float64"
    assert history.iteration[-1] == 15  # 5 epochs of ceil(90 / 30) batches
    net = checkpoint.load(tmp_path / "model.npz")
    assert net.dtype_name == "float64"


def test_train_no_hidden_binary(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--no-hidden", "--loss",
                           "binary_cross_entropy", "--iters", "50", "--out", str(tmp_path),
                           "--quiet")
    assert code == 0, err
    net = checkpoint.load(tmp_path / "model.npz")
    assert net.sizes == [2, 1] and net.loss_name == "binary_cross_entropy"


def test_train_default_out_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "10", "--quiet")
    assert code == 0, err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("moons-")
    assert (runs[0] / "model.npz").exists()


@pytest.fixture
def one_torch_thread():
    """torch's OpenMP threads spin at every barrier: on a busy 2-core machine 100 tiny
    steps can take 20 s instead of 0.1 s. One thread keeps this test fast anywhere."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif("torch" not in available_backends(), reason="torch not installed")
def test_train_torch_backend(capsys, tmp_path, one_torch_thread):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--backend", "torch",
                             "--iters", "100", "--out", str(tmp_path), "--quiet")
    assert code == 0, err
    assert "torch float32" in out
    net = checkpoint.load(tmp_path / "model.npz", backend="torch")
    assert net.backend == "torch"


def test_numerical_gradient_run_defaults_to_float64(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--samples", "40",
                             "--hidden", "3", "--gradient", "numerical", "--iters", "20",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "float64" in out.splitlines()[0] and "h=1e-4" in out  # the note, first
    assert "float64" in out.strip().splitlines()[-1]
    history = History.load_json(tmp_path / "history.json")
    assert history.meta["gradient"] == "numerical" and history.meta["dtype"] == "float64"
    assert history.iteration[-1] == 20


def test_numerical_gradient_explicit_dtype_has_no_float64_note(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--samples", "40",
                             "--gradient", "numerical", "--dtype", "float32", "--iters", "5",
                             "--h", "1e-2", "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "trains in float64" not in out
    assert History.load_json(tmp_path / "history.json").meta["h"] == pytest.approx(1e-2)


def test_diverged_run_exits_1_with_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--lr", "1e30",
                           "--weight-init", "10", "--iters", "50", "--out", str(tmp_path),
                           "--quiet")
    assert code == 1
    assert err.strip().startswith("xpnn: error: training diverged")
    assert len(err.strip().splitlines()) == 1


# -- bad flags and values ------------------------------------------------------------------


BAD = {
    "unknown dataset": ["train", "--dataset", "cifar"],
    "zero width": ["train", "--hidden", "0"],
    "negative width": ["train", "--hidden", "-3"],
    "width not a number": ["train", "--hidden", "ten"],
    "activation count": ["train", "--dataset", "moons", "--hidden", "5", "--activation",
                         "relu", "tanh"],
    "unknown activation": ["train", "--activation", "swish"],
    "unknown backend": ["train", "--dataset", "moons", "--iters", "1", "--backend", "jaxx"],
    "bad device": ["train", "--dataset", "moons", "--iters", "1", "--device", "tpu:9"],
    "bad lr": ["train", "--lr", "fast"],
    "negative lr": ["train", "--lr", "-1"],
    "zero batch": ["train", "--batch-size", "0"],
    "batch larger than data": ["train", "--dataset", "moons", "--batch-size", "1000"],
    "iters and epochs": ["train", "--iters", "5", "--epochs", "1"],
    "bad init": ["train", "--weight-init", "big"],
    "negative decay": ["train", "--weight-decay", "-0.1"],
    "hidden and no-hidden": ["train", "--hidden", "3", "--no-hidden"],
    "bce with 3 classes": ["train", "--dataset", "spirals", "--loss", "binary_cross_entropy"],
    "classes for moons": ["train", "--dataset", "moons", "--classes", "0", "1"],
    "h with backprop": ["train", "--dataset", "moons", "--h", "1e-4"],
    "unknown command": ["fit"],
    "no command": [],
    "gradcheck unknown loss": ["gradcheck", "--loss", "hinge"],
    "gradcheck activation count": ["gradcheck", "--hidden", "4", "--activation", "relu",
                                   "tanh"],
    "gradcheck unknown backend": ["gradcheck", "--backend", "nope"],
}


@pytest.mark.parametrize("argv", list(BAD.values()), ids=list(BAD))
def test_bad_flags_one_line_exit_2(capsys, tmp_path, argv):
    extra = ["--out", str(tmp_path / "o")] if argv[:1] == ["train"] else []
    code, _, err = run_cli(capsys, *argv, *extra)
    assert_one_line_error(code, err)


def test_missing_data_files_one_line_exit_2(capsys, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--data-dir", str(empty), "--no-download",
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert "mnist" in err.lower()
    code, _, err = run_cli(capsys, "train", "--data-dir", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "train", "--dataset", "sign-language-digits", "--data-dir",
                           str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)


def test_bad_value_through_the_real_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "xpnn", "train", "--dataset", "moons", "--backend", "nope",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr)


def test_xpnn_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XPNN_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown backend"):
        main(["train", "--dataset", "moons", "--backend", "nope", "--out", str(tmp_path)])


# -- gradcheck ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--activation", "relu", "--hidden", "8", "--loss", "binary_cross_entropy"],
        ["--activation", "tanh", "elu", "--hidden", "5", "4", "--loss", "mse",
         "--weight-decay", "0.1"],
        ["--hidden", "--loss", "softmax_cross_entropy", "--method", "loop"],
        ["--backend", "array_api_strict", "--batch", "4"],
        ["--dtype", "float32"],
    ],
    ids=["default", "relu-bce", "tanh-elu-mse-decay", "no-hidden-loop", "strict", "float32"],
)
def test_gradcheck_passes_and_prints_the_table(capsys, flags):
    code, out, err = run_cli(capsys, "gradcheck", *flags)
    assert code == 0, out + err
    assert "max rel error" in out and "all passed" in out
    assert "W1" in out and "b1" in out


def test_gradcheck_failure_exits_1(capsys):
    code, out, _ = run_cli(capsys, "gradcheck", "--threshold", "1e-300", "--atol", "0")
    assert code == 1
    assert "FAIL" in out


# -- real data (XPNN_DATA_DIR) ------------------------------------------------------------


@pytest.mark.data
def test_train_mnist_20_iterations(capsys, tmp_path, data_dir):
    code, out, err = run_cli(capsys, "train", "--iters", "20", "--eval-every", "10",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "mnist: numpy float32, 20 iterations" in out
    history = History.load_json(tmp_path / "history.json")
    assert history.meta["sizes"] == [784, 50, 10] and history.meta["n_train"] == 60000
    assert history.iteration == [0, 10, 20]
    assert not (tmp_path / "decision_boundary.png").exists()
    if has_matplotlib():
        assert_png(tmp_path / "curves.png")


@pytest.mark.data
def test_train_sign_language_two_classes(capsys, tmp_path, data_dir):
    code, out, err = run_cli(
        capsys, "train", "--dataset", "sign-language-digits", "--data-dir", data_dir,
        "--classes", "0", "1", "--hidden", "3", "--activation", "tanh", "--loss",
        "binary_cross_entropy", "--batch-size", "full", "--lr", "0.01", "--iters", "20",
        "--out", str(tmp_path), "--quiet",
    )
    assert code == 0, err
    net = checkpoint.load(tmp_path / "model.npz")
    assert net.sizes == [4096, 3, 1]


def test_data_dir_env_is_used_for_mnist(capsys, tmp_path, monkeypatch):
    """No files in $XPNN_DATA_DIR and no download: the error names the folder."""
    monkeypatch.setenv("XPNN_DATA_DIR", str(tmp_path))
    code, _, err = run_cli(capsys, "train", "--no-download", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert os.fspath(tmp_path) in err
