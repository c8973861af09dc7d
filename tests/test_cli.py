"""Tests for the ``xpnn`` command line (xpnn.cli, python -m xpnn).

Small data only (moons, spirals, random gradcheck nets); the MNIST and Sign Language
runs need XPNN_DATA_DIR and then train for 20 iterations.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MARKED_MAIN, STOP_SIGNALS, assert_one_line_error, default_signals, run_cli

import xpnn
from xpnn import checkpoint
from xpnn.backend import available_backends
from xpnn.cli import PRESETS, build_parser, main
from xpnn.data import make_moons
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


def test_help_names_every_backend(capsys):
    parser = build_parser()
    for command in ("train", "gradcheck"):
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        backend = next(a for a in sub._actions if "--backend" in a.option_strings)
        for name in xpnn.BACKENDS:
            assert name in backend.help, (command, name)
    assert "JAX" in parser.description and "NumPy" in parser.description
    assert parser.description.count(",") == len(xpnn.BACKENDS) - 1


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

    net = checkpoint.load(out_dir / "model.safetensors")
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
    net = checkpoint.load(tmp_path / "model.safetensors")
    assert net.dtype_name == "float64"


def test_train_no_hidden_binary(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--no-hidden", "--loss",
                           "binary_cross_entropy", "--iters", "50", "--out", str(tmp_path),
                           "--quiet")
    assert code == 0, err
    net = checkpoint.load(tmp_path / "model.safetensors")
    assert net.sizes == [2, 1] and net.loss_name == "binary_cross_entropy"


def test_train_default_out_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "10", "--quiet")
    assert code == 0, err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("moons-")
    assert (runs[0] / "model.safetensors").exists()


@pytest.mark.skipif("torch" not in available_backends(), reason="torch not installed")
def test_train_torch_backend(capsys, tmp_path, one_torch_thread):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--backend", "torch",
                             "--iters", "100", "--out", str(tmp_path), "--quiet")
    assert code == 0, err
    assert "torch float32" in out
    net = checkpoint.load(tmp_path / "model.safetensors", backend="torch")
    assert net.backend == "torch"


def test_numerical_gradient_run_defaults_to_float64(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--samples", "40",
                             "--hidden", "3", "--gradient", "numerical", "--iters", "20",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "float64" in out.splitlines()[0] and "h=5e-3" in out  # the note, first
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
    "image-size for moons": ["train", "--dataset", "moons", "--image-size", "32", "--iters", "1"],
    "noise for mnist": ["train", "--noise", "0.1", "--iters", "1", "--no-download"],
    "samples for mnist": ["train", "--samples", "100", "--iters", "1", "--no-download"],
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


@pytest.mark.parametrize("flags", [["--workers", "2"], ["--scheduler", "tcp://h:1"],
                                   ["--workers", "2", "--compile"]])
def test_dist_flag_combinations_are_one_line_even_with_xpnn_debug(capsys, tmp_path,
                                                                  monkeypatch, flags):
    monkeypatch.setenv("XPNN_DEBUG", "1")
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", *flags,
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert flags[0] in err and "--gradient numerical" in err
    assert not (tmp_path / "o").exists()


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


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_gradcheck_bad_atol_is_a_one_line_argparse_error(capsys, value):
    code, out, err = run_cli(capsys, "gradcheck", "--atol", value)
    assert_one_line_error(code, err)
    assert "argument --atol" in err and out == ""


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
    net = checkpoint.load(tmp_path / "model.safetensors")
    assert net.sizes == [4096, 3, 1]


def test_data_dir_env_is_used_for_mnist(capsys, tmp_path, monkeypatch):
    """No files in $XPNN_DATA_DIR and no download: the error names the folder."""
    monkeypatch.setenv("XPNN_DATA_DIR", str(tmp_path))
    code, _, err = run_cli(capsys, "train", "--no-download", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert os.fspath(tmp_path) in err


# -- issue 9.4: a failed or interrupted run keeps its work -------------------------------


CLI_MODULE = sys.modules["xpnn.cli.main"]  # xpnn.cli.main the attribute is the function


def fake_train_that_raises(make_exc, steps=7, record_every=3):
    """A stand-in for xpnn.train that does ``steps`` updates (the parameters move),
    records evaluations like the real one, then raises ``make_exc()`` carrying the
    partial History and leaving the net at the last completed step, as xpnn.train
    does. Returns (fake, seen) where seen["params"] are the host parameters at the end."""
    seen = {}

    def fake(net, train_set, test_set=None, **kwargs):
        history = History({"sizes": list(net.sizes)})
        for it in range(steps + 1):
            if it:
                net.params = {k: v * 0.5 + 0.01 for k, v in net.params.items()}
            if it % record_every == 0:
                history.append({"iteration": it, "train_loss": 1.0 / (it + 1),
                                "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5})
        history.meta["interrupted_at"] = steps
        seen["params"] = {k: xpnn.to_numpy(v).copy() for k, v in net.params.items()}
        exc = make_exc()
        exc.history = history
        raise exc

    return fake, seen


def moons_argv(out, *extra):
    return ["train", "--dataset", "moons", "--iters", "50", "--out", str(out), "--quiet",
            *extra]


def assert_partial_run_saved(out, seen, reason):
    history = History.load_json(out / "history.json")
    assert history.iteration == [0, 3, 6]
    assert history.meta["cli"]["stopped"] == reason
    assert history.meta["cli"]["dataset"] == "moons"
    net = checkpoint.load(out / "model.safetensors")
    for key, value in seen["params"].items():
        np.testing.assert_array_equal(xpnn.to_numpy(net.params[key]), value)


def test_ctrl_c_during_training_saves_the_partial_run_and_exits_130(capsys, tmp_path,
                                                                     monkeypatch):
    fake, seen = fake_train_that_raises(KeyboardInterrupt)
    monkeypatch.setattr(CLI_MODULE, "train", fake)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, *moons_argv(out))
    assert code == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: interrupted"), err
    assert "stopped after iteration 7" in err and str(out) in err
    assert "history.json" in err and "model.safetensors" in err
    assert_partial_run_saved(out, seen, "interrupted")


def test_error_during_training_saves_the_partial_run(capsys, tmp_path, monkeypatch):
    fake, seen = fake_train_that_raises(lambda: OSError(28, "No space left on device"))
    monkeypatch.setattr(CLI_MODULE, "train", fake)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *moons_argv(out))
    assert code == 1
    assert err.startswith("xpnn: error: ") and len(err.strip().splitlines()) == 1, err
    assert "No space left" in err and str(out) in err
    assert_partial_run_saved(out, seen, "error")


def test_bug_during_training_keeps_the_traceback_and_the_partial_run(capsys, tmp_path,
                                                                    monkeypatch):
    fake, seen = fake_train_that_raises(lambda: ZeroDivisionError("a bug"))
    monkeypatch.setattr(CLI_MODULE, "train", fake)
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        main(moons_argv(out))
    assert str(out) in capsys.readouterr().err
    assert_partial_run_saved(out, seen, "error")


def test_diverged_run_writes_history_and_last_good_model(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--lr", "1e30",
                           "--weight-init", "10", "--iters", "50", "--out", str(out), "--quiet")
    assert code == 1
    assert str(out) in err and "model.safetensors" in err
    history = History.load_json(out / "history.json")
    assert history.meta["cli"]["stopped"] == "diverged"
    assert history.meta["diverged_at"] >= 1
    net = checkpoint.load(out / "model.safetensors")
    assert all(np.isfinite(xpnn.to_numpy(p)).all() for p in net.params.values())


def test_interrupt_before_training_leaves_no_folder(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CLI_MODULE, "_load_data", interrupted)
    out = tmp_path / "new" / "run"
    code, _, err = run_cli(capsys, *moons_argv(out))
    assert code == 130 and err.strip() == "xpnn: interrupted"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv", [
    ["--batch-size", "1000"],          # refused by xpnn.train, before the first step
    ["--backend", "nope"],             # refused while loading the data
], ids=["train-refuses", "bad-backend"])
def test_error_before_training_leaves_no_empty_folder(capsys, tmp_path, argv):
    out = tmp_path / "new" / "run"
    code, _, err = run_cli(capsys, *moons_argv(out, *argv))
    assert_one_line_error(code, err)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    code, _, err = run_cli(capsys, *moons_argv(existing, *argv))
    assert code == 2 and existing.is_dir() and not any(existing.iterdir())


def test_default_out_is_not_left_behind_on_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--batch-size", "1000",
                           "--quiet")
    assert_one_line_error(code, err)
    assert not (tmp_path / "runs").exists()


def test_unwritable_out_is_refused_before_loading_data(capsys, tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded before --out was checked")

    monkeypatch.setattr(CLI_MODULE, "_load_data", must_not_load)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, *moons_argv(blocker / "run"))
    assert_one_line_error(code, err)
    assert "--out" in err and "not writable" in err
    code, _, err = run_cli(capsys, *moons_argv(blocker))
    assert_one_line_error(code, err)
    assert "--out" in err and "not a folder" in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a POSIX user that file permissions apply to")
def test_read_only_out_is_refused(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, *moons_argv(locked))
    finally:
        locked.chmod(0o700)
    assert_one_line_error(code, err)
    assert "not writable" in err and not any(locked.iterdir())


def test_closed_stdout_exits_quietly_in_process(capsys, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["gradcheck", "--hidden", "3"])
    assert code == 141
    assert capsys.readouterr().err == ""


def test_pipe_into_head_exits_quietly(tmp_path):
    """`xpnn train ... | head -1`: the reader goes away after the first line; the run's
    next write (its summary line) meets the closed pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xpnn", "train", "--dataset", "moons", "--samples", "20",
         "--iters", "5000", "--eval-every", "1", "--no-progress", "--out",
         str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert first.startswith(b"xpnn train: moons")
    assert err == "", err


# -- issue 9.7: clear errors instead of tracebacks -----------------------------------------


def raise_in_train(exc):
    def fake(*args, **kwargs):
        raise exc

    return fake


def test_memory_error_names_the_flag(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(CLI_MODULE, "train", raise_in_train(MemoryError(
        "Unable to allocate 74.5 GiB for an array with shape (200, 100000000) and data "
        "type float32")))
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run", "--hidden", "5000"))
    assert code == 1
    assert err.startswith("xpnn: error: out of memory") and len(err.splitlines()) == 1, err
    assert "74.5 GiB" in err and "--hidden" in err and "--dtype float32" in err
    assert not (tmp_path / "run").exists()


def test_torch_cpu_allocator_failure_is_out_of_memory(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(CLI_MODULE, "train", raise_in_train(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 40000000000000 bytes.")))
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run"))
    assert code == 1 and err.startswith("xpnn: error: out of memory"), err
    assert "Traceback" not in err


def fake_exception(module, name, base):
    """A class with the module and name of an accelerator library's exception."""
    return type(name, (base,), {"__module__": module})


GPU_ERRORS = {
    "torch.cuda.OutOfMemoryError": (
        fake_exception("torch.cuda", "OutOfMemoryError", RuntimeError),
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "139.81 GiB of which 1.2 GiB is free. If reserved but unallocated memory is large "
        "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
        "fragmentation.", "out of memory"),
    "torch.OutOfMemoryError": (
        fake_exception("torch", "OutOfMemoryError", RuntimeError),
        "CUDA out of memory. Tried to allocate 2.00 GiB.", "out of memory"),
    "cupy.cuda.memory.OutOfMemoryError": (
        fake_exception("cupy.cuda.memory", "OutOfMemoryError", MemoryError),
        "Out of memory allocating 21,474,836,480 bytes (allocated so far: 0 bytes).",
        "out of memory"),
    "cupy.cuda.runtime.CUDARuntimeError": (
        fake_exception("cupy.cuda.runtime", "CUDARuntimeError", RuntimeError),
        "cudaErrorNoDevice: no CUDA-capable device is detected", "CUDA runtime error"),
    "cupy_backends...CUDARuntimeError": (
        fake_exception("cupy_backends.cuda.api.runtime", "CUDARuntimeError", RuntimeError),
        "cudaErrorInvalidDevice: invalid device ordinal", "CUDA runtime error"),
    "CUDARuntimeError out of memory": (
        fake_exception("cupy_backends.cuda.api.runtime", "CUDARuntimeError", RuntimeError),
        "cudaErrorMemoryAllocation: out of memory", "out of memory"),
}


@pytest.mark.parametrize("cls, message, kind", list(GPU_ERRORS.values()), ids=list(GPU_ERRORS))
def test_gpu_errors_are_one_line_with_a_hint(capsys, tmp_path, monkeypatch, cls, message,
                                             kind):
    monkeypatch.setattr(CLI_MODULE, "train", raise_in_train(cls(message)))
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: error: "), err
    assert kind in err and "--device" in err and "Traceback" not in err
    if kind == "out of memory":
        assert "--batch-size" in err and "--dtype float32" in err


@pytest.mark.parametrize("argv, flag", [
    (["train", "--dataset", "moons", "--hidden", str(10**12)], "--hidden"),
    (["train", "--dataset", "moons", "--hidden", "3", str(10**9)], "--hidden"),
    (["train", "--dataset", "spirals", "--samples", str(10**12)], "--samples"),
    (["train", "--dataset", "spirals", "--samples", str(3 * 10**9), "--batch-size", "100"],
     "--samples"),
    (["train", "--dataset", "sign-language-digits", "--image-size", str(10**6)],
     "--image-size"),
    (["train", "--hidden", "40000", "40000"], "--hidden"),
    (["gradcheck", "--hidden", str(10**12)], "--hidden"),
    (["gradcheck", "--batch", str(10**12)], "--batch"),
], ids=["hidden", "deep-hidden", "samples", "samples-minibatch", "image-size", "mnist-wide",
        "gradcheck-hidden", "gradcheck-batch"])
def test_huge_sizes_are_refused_before_allocating(capsys, tmp_path, monkeypatch, argv, flag):
    def must_not_build(*args, **kwargs):
        raise AssertionError("built a network or data above the limit")

    monkeypatch.setattr(CLI_MODULE, "MLP", must_not_build)
    monkeypatch.setattr(xpnn.nn.mlp, "MLP", must_not_build)
    monkeypatch.setattr(CLI_MODULE, "_load_data", must_not_build)
    extra = ["--out", str(tmp_path / "o")] if argv[0] == "train" else []
    code, _, err = run_cli(capsys, *argv, *extra)
    assert_one_line_error(code, err)
    assert err.startswith(f"xpnn: error: {flag} is too large"), err
    assert "16.0 GiB" in err
    assert not (tmp_path / "o").exists()


def test_sizes_below_the_limit_are_accepted():
    from xpnn.cli import budget

    # the book's TwoLayerNet: data 70,100 x 784 float32 values dominate (~210 MiB)
    est = budget.estimate([784, 50, 10], 60000, 10000, 10000, 4, "sgd",
                          [], ["--hidden"], [])
    assert 200 * 2**20 < est.total < 300 * 2**20
    assert est.largest.what.startswith("the data") and "try" not in est.hint()
    budget.check(est)
    with pytest.raises(Exception, match="--hidden is too large"):
        budget.check(budget.estimate([784, 10**6, 10], 60000, 10000, 10000, 4, "adam",
                                     [], ["--hidden"], []))
    with pytest.raises(Exception, match="the run is too large"):
        budget.check(est, limit=2**20)


def test_budget_follows_the_optimizers_and_the_trainer():
    # the estimate's optimizer slots and evaluation chunk come from xpnn.optim and
    # xpnn.train, so they cannot drift from them; an unknown optimizer is an error,
    # not a guess
    import inspect

    import xpnn
    from xpnn.cli import budget

    assert budget.OPTIMIZER_SLOTS == {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1,
                                      "rmsprop": 1, "adam": 2}
    assert budget.EVAL_CHUNK == inspect.signature(xpnn.train).parameters[
        "eval_batch_size"].default
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        budget.estimate([784, 50, 10], 60000, 10000, 10000, 4, "lion", [], ["--hidden"], [])


@pytest.mark.parametrize("classes, words", [
    (["1"], ["--classes", "at least 2"]),
    (["3", "3"], ["--classes", "repeats"]),
    (["0", "12"], ["--classes", "0..9"]),
])
def test_sign_language_classes_are_checked_before_loading(capsys, tmp_path, monkeypatch,
                                                          classes, words):
    monkeypatch.setattr(CLI_MODULE, "_load_data", raise_in_train(AssertionError("loaded")))
    code, _, err = run_cli(capsys, "train", "--dataset", "sign-language-digits",
                           "--classes", *classes, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    for word in words:
        assert word in err


def test_negative_seed_names_the_flag(capsys, tmp_path):
    for argv in (["train", "--dataset", "moons", "--seed", "-1", "--out", str(tmp_path)],
                 ["gradcheck", "--seed", "-5"]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err)
        assert "--seed" in err


def test_library_messages_use_flag_names(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--batch-size", "1000",
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert "--batch-size 1000" in err and "--batch-size full" in err
    assert "batch_size" not in err
    empty = tmp_path / "data"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--data-dir", str(empty), "--no-download",
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err)
    assert "download=True" not in err and "path=" not in err
    assert "--no-download" in err and "--data-dir" in err


def test_flag_terms_rewrites_keywords_only():
    from xpnn.cli.errors import in_flag_terms

    assert in_flag_terms("use dtype='float64' for numerical training") == \
        "use --dtype float64 for numerical training"
    assert in_flag_terms("seed must be None or a non-negative integer") == \
        "--seed must be None or a non-negative integer"
    assert in_flag_terms("eval_batch_size must be a positive integer") == \
        "eval_batch_size must be a positive integer"  # not a flag: left alone
    assert in_flag_terms("compile=True needs gradient='backprop'") == \
        "--compile needs --gradient backprop"
    assert in_flag_terms("atol must be >= 0 and finite, got -1.0") == \
        "--atol must be >= 0 and finite, got -1.0"
    assert in_flag_terms("downloaded from https://x/y.gz") == "downloaded from https://x/y.gz"


def test_float32_numerical_warning_on_stderr_without_progress(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--samples", "20",
                             "--gradient", "numerical", "--dtype", "float32", "--iters", "2",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "xpnn: warning: --gradient numerical in float32" in err
    assert "--dtype float64" in err
    assert "note: numerical gradients in float32" not in out  # said once, on stderr


def test_float32_numerical_warning_said_once_with_progress(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--dataset", "moons", "--samples", "20",
                             "--gradient", "numerical", "--dtype", "float32", "--iters", "2",
                             "--out", str(tmp_path))
    assert code == 0, err
    assert (out + err).count("in float32") == 1, out + err


# -- issue 8.3: --compile ------------------------------------------------------------------


def test_compile_flag_reaches_train(capsys, tmp_path, monkeypatch):
    calls = []

    def fake(net, train_set, test_set=None, compile=False, **kwargs):  # noqa: A002
        calls.append(compile)
        raise KeyboardInterrupt  # no history: nothing done

    monkeypatch.setattr(CLI_MODULE, "train", fake)
    assert run_cli(capsys, *moons_argv(tmp_path / "a", "--compile"))[0] == 130
    assert run_cli(capsys, *moons_argv(tmp_path / "b"))[0] == 130
    assert calls == [True, False]


def test_compile_with_numerical_gradients_trains(capsys, tmp_path):
    """--compile --gradient numerical (issue 15): the compiled numerical step; on NumPy
    the same model as without --compile."""
    for name, extra in (("c", ("--compile",)), ("e", ())):
        code, _, err = run_cli(capsys, *moons_argv(tmp_path / name, "--gradient",
                                                   "numerical", *extra))
        assert code == 0, err
    assert History.load_json(tmp_path / "c" / "history.json").meta["compile"] is True
    a, b = (checkpoint.load(tmp_path / run / "model.safetensors") for run in ("c", "e"))
    for key in a.params:
        np.testing.assert_array_equal(xpnn.to_numpy(a.params[key]), xpnn.to_numpy(b.params[key]))


def test_compile_trains_for_real(capsys, tmp_path):
    code, out, err = run_cli(capsys, *moons_argv(tmp_path / "run", "--compile"))
    assert code == 0, err
    assert History.load_json(tmp_path / "run" / "history.json").meta["compile"] is True


def test_a_failed_capture_under_compile_is_a_warning_not_a_traceback(capsys, tmp_path,
                                                                     monkeypatch):
    """``xpnn train --backend cupy --compile`` ended in CuPy's capture traceback (issue
    15): a capture that raises (faked here, as CuPy raises) now trains eagerly after one
    CompileFallbackWarning."""
    from helpers import FakeCapture

    from xpnn.compile import CompileFallbackWarning
    from xpnn.compile.cuda_graph import CudaGraphStep
    from xpnn.training import step as step_module

    refused = NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")
    monkeypatch.setattr(step_module, "compile_step", lambda fn, *a, **k: (
        CudaGraphStep(fn, FakeCapture("numpy", fail_on_begin=refused)), True))
    with pytest.warns(CompileFallbackWarning, match="cuBLAS") as record:
        code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run", "--compile"))
    assert code == 0, err
    assert "Traceback" not in err
    assert sum(issubclass(w.category, CompileFallbackWarning) for w in record) == 1
    assert History.load_json(tmp_path / "run" / "history.json").iteration[-1] == 50


@pytest.mark.parametrize("mode", ["fused", "reduce-overhead"])
def test_a_compile_mode_off_cuda_is_a_clear_error(capsys, tmp_path, mode):
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "o", "--compile", mode))
    assert_one_line_error(code, err)
    assert mode in err and "CUDA" in err


# -- issue 8.4: the namespace, not its name ------------------------------------------------


def test_gradcheck_passes_the_namespace_not_the_name(capsys, monkeypatch):
    """A net whose backend has no registered name (jax.numpy, any array-API namespace)
    still gets its data: the CLI hands net.xp to xpnn.asarray."""

    class NamelessBackendMLP(xpnn.MLP):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.backend = "some_namespace_without_a_registered_name"

    monkeypatch.setattr(CLI_MODULE, "MLP", NamelessBackendMLP)
    monkeypatch.setattr(xpnn.nn.mlp, "MLP", NamelessBackendMLP)
    code, out, err = run_cli(capsys, "gradcheck", "--hidden", "3")
    assert code == 0, err
    assert "all passed" in out


# -- help and README -----------------------------------------------------------------------


def test_help_documents_exit_codes_and_limits(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for text in ("130", "141", "16.0 GiB", "history.json", "--compile"):
        assert text in " ".join(out.split()), text


def test_readme_command_line_section_matches_the_flags():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"),
                  encoding="utf-8").read()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    known = {flag for sub in subs.values() for a in sub._actions for flag in a.option_strings}
    known |= {flag for a in parser._actions for flag in a.option_strings}
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", section))
    assert mentioned, "the README's command-line section names no flags"
    assert mentioned <= known, f"README names flags the CLI lacks: {mentioned - known}"
    for text in ("130", "--out", "history.json", "model.safetensors"):
        assert text in section, text


def test_real_ctrl_c_exits_130_with_one_line(tmp_path):
    """SIGINT to a running `xpnn train`: exit 130, one line on stderr; when the trainer
    attached the partial history, the files it names are there."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from xpnn.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "train", "--dataset", "moons", "--iters", "100000000",
         "--eval-every", "1000", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("xpnn train: moons")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: interrupted"), err
    if "wrote" in err:
        history = History.load_json(out / "history.json")
        assert history.meta["cli"]["stopped"] == "interrupted"
        checkpoint.load(out / "model.safetensors")
    else:
        assert not out.exists()


def test_failed_partial_save_still_reports_the_run_error(capsys, tmp_path, monkeypatch):
    fake, _ = fake_train_that_raises(lambda: KeyboardInterrupt())
    monkeypatch.setattr(CLI_MODULE, "train", fake)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CLI_MODULE.checkpoint, "save", disk_full)
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run"))
    assert code == 130
    assert err.startswith("xpnn: interrupted: could not save") and "No space" in err, err
    assert len(err.strip().splitlines()) == 1


def test_history_records_the_argv_that_was_run(capsys, tmp_path):
    argv = moons_argv(tmp_path / "run")
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert History.load_json(tmp_path / "run" / "history.json").meta["cli"]["argv"] == argv


# -- issue 16: signals, --out holding a run, stdout states, --workers ---------------------

ROOT = Path(__file__).resolve().parent.parent


def _start(argv, marked=True, **popen):
    cmd = [sys.executable, "-c", MARKED_MAIN] if marked else [sys.executable, "-m", "xpnn"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get(
               "PYTHONPATH", "")) if p)}
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
             "preexec_fn": default_signals, **popen}
    return subprocess.Popen([*cmd, *argv], text=True, env=env, **popen)


def _wait_for_training(proc):
    for line in proc.stdout:
        if line.startswith("xpnn-test: training"):
            return
    raise AssertionError(f"the run ended before training: {proc.communicate()}")


def _long_moons(out, *extra):
    return ["train", "--dataset", "moons", "--iters", "100000000", "--eval-every", "1000",
            "--no-progress", "--out", str(out), *extra]


def _finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return out, err


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_stop_signals_save_the_run_and_exit_128_plus_n(tmp_path, signum):
    """SIGTERM (timeout, docker stop, batch schedulers) and SIGHUP lost the whole run
    (exit -15/-1, an empty --out); now all three do what Ctrl-C does (issue 16.3)."""
    out = tmp_path / "run"
    proc = _start(_long_moons(out))
    _wait_for_training(proc)
    proc.send_signal(signum)
    _, err = _finish(proc)
    assert proc.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    expected = "xpnn: interrupted" + ("" if name == "SIGINT" else f" by {name}") + ": stopped"
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert f"to {out}" in err and "Traceback" not in err
    history = History.load_json(out / "history.json")
    assert history.meta["cli"]["stopped"].startswith("interrupted")
    net = checkpoint.load(out / "model.safetensors")
    assert all(np.isfinite(xpnn.to_numpy(p)).all() for p in net.params.values())


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    """`nohup xpnn train`: SIGHUP was ignored when xpnn started and must stay so."""
    out = tmp_path / "run"

    def nohup():
        default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = _start(["train", "--dataset", "moons", "--iters", "3000", "--no-progress",
                   "--out", str(out)], preexec_fn=nohup)
    _wait_for_training(proc)
    proc.send_signal(signal.SIGHUP)
    _, err = _finish(proc)
    assert proc.returncode == 0, err
    checkpoint.load(out / "model.safetensors")


@pytest.mark.parametrize("seed", range(4))
def test_stop_signals_at_random_moments(tmp_path, seed):
    """A stop signal at any moment after the run announced itself, through training,
    the final writes, the plots and the summary line: the run either completed (exit
    0, or killed by the signal only after its summary line) or stopped with exit 128+n
    and one line, and every file it says it wrote loads."""
    rng = np.random.default_rng(seed)
    signum = int(rng.choice(STOP_SIGNALS))
    delay = float(rng.uniform(0.0, 2.0))
    out = tmp_path / "run"
    proc = _start(["train", "--dataset", "moons", "--iters", "2000", "--no-progress",
                   "--out", str(out)], marked=False)
    first = proc.stdout.readline()
    assert first.startswith("xpnn train: moons"), first
    time.sleep(delay)
    with_signal = proc.poll() is None
    if with_signal:
        proc.send_signal(signum)
    stdout, err = _finish(proc)
    code = proc.returncode
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if code == 0 or code == -signum:  # it completed first (-n: after the summary line)
        assert code == 0 or "-> " in stdout, (code, stdout, err)
        checkpoint.load(out / "model.safetensors")
        History.load_json(out / "history.json")
        return
    assert with_signal and code == 128 + signum, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: interrupted"), err
    if "wrote" in err or "written" in err:
        checkpoint.load(out / "model.safetensors")
        History.load_json(out / "history.json")
    else:  # before training started: nothing to keep, no folder left behind
        assert not out.exists()


# -- --out holding an earlier run (issue 16.4)


def _good_run(capsys, out):
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "300", "--out",
                           str(out), "--quiet")
    assert code == 0, err
    files = {n: (out / n).read_bytes() for n in ("model.safetensors", "history.json")}
    net = checkpoint.load(out / "model.safetensors")
    return files, History.load_json(out / "history.json").final["test_acc"], net


def test_out_holding_a_run_is_refused_without_overwrite(capsys, tmp_path, monkeypatch):
    out = tmp_path / "good"
    files, _, _ = _good_run(capsys, out)

    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded although --out was refused")

    monkeypatch.setattr(CLI_MODULE, "_load_data", must_not_load)
    code, _, err = run_cli(capsys, *moons_argv(out))
    assert_one_line_error(code, err)
    assert "holds an earlier run" in err and "--overwrite" in err and str(out) in err
    assert {n: (out / n).read_bytes() for n in files} == files


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # lr 1e300
def test_failed_rerun_with_overwrite_never_replaces_the_completed_run(capsys, tmp_path):
    """The issue's reproduction: a good moons run, then the same --out with --lr 1e300
    replaced model.npz by the initial random weights (accuracy 0.545 instead of 0.965)."""
    out = tmp_path / "good"
    files, accuracy, net = _good_run(capsys, out)
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "300", "--lr",
                           "1e300", "--out", str(out), "--quiet", "--overwrite")
    assert code == 1 and "diverged" in err and str(out / "partial") in err, err
    assert {n: (out / n).read_bytes() for n in files} == files
    again = checkpoint.load(out / "model.safetensors")
    x, t = make_moons(200, noise=0.2, seed=1)
    assert float(again.accuracy(x, t)) == float(net.accuracy(x, t))
    assert History.load_json(out / "history.json").final["test_acc"] == accuracy
    partial = History.load_json(out / "partial" / "history.json")
    assert partial.meta["cli"]["stopped"] == "diverged"
    checkpoint.load(out / "partial" / "model.safetensors")


def test_interrupted_rerun_with_overwrite_writes_beside_the_completed_run(capsys, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "good"
    files, _, _ = _good_run(capsys, out)
    fake, seen = fake_train_that_raises(KeyboardInterrupt)
    monkeypatch.setattr(CLI_MODULE, "train", fake)
    code, _, err = run_cli(capsys, *moons_argv(out, "--overwrite"))
    assert code == 130 and str(out / "partial") in err, err
    assert {n: (out / n).read_bytes() for n in files} == files
    assert_partial_run_saved(out / "partial", seen, "interrupted")


def test_real_ctrl_c_into_a_second_run_keeps_the_first(capsys, tmp_path):
    out = tmp_path / "good"
    files, _, _ = _good_run(capsys, out)
    proc = _start(_long_moons(out, "--overwrite"))
    _wait_for_training(proc)
    proc.send_signal(signal.SIGINT)
    _, err = _finish(proc)
    assert proc.returncode == 130, err
    assert {n: (out / n).read_bytes() for n in files} == files
    checkpoint.load(out / "partial" / "model.safetensors")


def test_completed_rerun_with_overwrite_replaces_the_run(capsys, tmp_path, monkeypatch):
    out = tmp_path / "good"
    files, _, _ = _good_run(capsys, out)
    code, _, err = run_cli(capsys, *moons_argv(out, "--overwrite", "--seed", "3"))
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() != files["model.safetensors"]
    assert History.load_json(out / "history.json").meta["cli"]["argv"][-2:] == ["--seed", "3"]
    assert not (out / "partial").exists()  # the staging folder is gone
    # a write that fails while the completed run is written leaves the earlier pair
    files = {n: (out / n).read_bytes() for n in files}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CLI_MODULE.checkpoint, "save", disk_full)
    code, _, err = run_cli(capsys, *moons_argv(out, "--overwrite", "--seed", "4"))
    assert code == 1 and "No space left" in err, err
    assert {n: (out / n).read_bytes() for n in files} == files


# -- stdout closed, on a full device, or a pipe closed early (issue 16.8)


def _stdout_states():
    """(name, popen keyword arguments, expected exit code, what stderr must say)."""
    states = [("closed", {"preexec_fn": lambda: (default_signals(), os.close(1))}, 0, "")]
    if os.path.exists("/dev/full"):
        states.append(("full", {"stdout": "/dev/full"}, 74,
                       "xpnn: error: stdout: No space left on device"))
    states.append(("devnull", {"stdout": subprocess.DEVNULL}, 0, ""))
    return states


@pytest.mark.parametrize("state", _stdout_states(), ids=lambda s: s[0])
def test_stdout_states(tmp_path, state):
    """`xpnn train >&-` ended with AttributeError and exit 1 after writing its files;
    `> /dev/full` with a traceback, "Exception ignored in <stdout>" and exit 120."""
    name, popen, code, said = state
    out = tmp_path / "run"
    if popen.get("stdout") == "/dev/full":
        popen = {**popen, "stdout": open("/dev/full", "w")}  # noqa: SIM115 - closed below
    proc = _start(["train", "--dataset", "moons", "--iters", "200", "--out", str(out)],
                  marked=False, **popen)
    try:
        _, err = _finish(proc)
    finally:
        if hasattr(popen.get("stdout"), "close"):
            popen["stdout"].close()
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("xpnn")]
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if said:
        assert len(lines) == 1 and lines[0].startswith(said), err
    else:
        assert lines == [], err
    checkpoint.load(out / "model.safetensors")
    History.load_json(out / "history.json")
    assert (out / "curves.png").exists() or not has_matplotlib()


def test_stdout_write_errors_in_process(capsys, tmp_path, monkeypatch):
    """The same policy for any OSError of stdout but a closed pipe (property over
    errno values): the run completes and writes its files, one line, exit 74."""
    import errno as errnos

    for number in (errnos.ENOSPC, errnos.EIO, errnos.EDQUOT, errnos.EFBIG):
        class Failing:
            def write(self, text, number=number):
                raise OSError(number, os.strerror(number))

            def flush(self):
                pass

        monkeypatch.setattr(sys, "stdout", Failing())
        out = tmp_path / f"run{number}"
        code = main([*moons_argv(out)[:-1], "--no-progress"])  # not --quiet: it prints
        err = capsys.readouterr().err
        assert code == 74, err
        assert err.strip() == (f"xpnn: error: stdout: {os.strerror(number)} (the printed "
                               f"output was lost; the run went on and completed)"), err
        checkpoint.load(out / "model.safetensors")


# -- --workers: a killed worker, and the bound (issue 16.9, 16.14)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the child processes of ``pid`` (Linux /proc)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    out.append((kid, f.read().replace(b"\0", b" ").decode()))
            except OSError:
                pass
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_killed_worker_is_one_line_and_the_work_is_saved(tmp_path):
    out = tmp_path / "run"
    proc = _start(["train", "--dataset", "moons", "--samples", "20", "--gradient",
                   "numerical", "--workers", "2", "--iters", "100000000", "--eval-every",
                   "100", "--no-progress", "--out", str(out)])
    _wait_for_training(proc)
    workers = [pid for pid, cmd in _children(proc.pid) if "spawn_main" in cmd]
    assert workers, _children(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    _, err = _finish(proc)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: error: a --workers process "
                                                   "ended abruptly"), err
    assert "Traceback" not in err and f"to {out}" in err
    assert History.load_json(out / "history.json").meta["cli"]["stopped"] == "error"
    checkpoint.load(out / "model.safetensors")


def test_workers_has_an_upper_bound(capsys, tmp_path):
    from xpnn.dist.cli import max_workers

    bound = max_workers()
    code, _, err = run_cli(capsys, *moons_argv(tmp_path / "run", "--gradient", "numerical",
                                               "--workers", str(bound + 1)))
    assert_one_line_error(code, err)
    assert f"--workers: must be at most {bound}" in err
    assert not (tmp_path / "run").exists()
    args = build_parser().parse_args(["train", "--workers", str(bound)])
    assert args.workers == bound


_OUT_CONTENTS = {
    "missing": (), "empty": (), "unrelated": ("notes.txt",), "model": ("model.safetensors",),
    "old-model": ("model.npz",), "history": ("history.json",),
    "run": ("model.safetensors", "history.json"),
    "run+partial": ("model.safetensors", "history.json", "partial/model.safetensors"),
}


@pytest.mark.parametrize("contents", sorted(_OUT_CONTENTS))
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
@pytest.mark.parametrize("outcome", ["completes", "fails", "interrupted"])
def test_out_states(capsys, tmp_path, monkeypatch, contents, overwrite, outcome):
    """Every state of --out × --overwrite × how the run ends: an earlier run's files
    (and anything else in the folder) are never replaced except by a run that
    completes with --overwrite; a refused --out is exit 2 before any work."""
    out = tmp_path / "out"
    if contents != "missing":
        out.mkdir()
    for name in _OUT_CONTENTS[contents]:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(f"earlier {name}".encode())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    holds_run = any(n in ("model.safetensors", "model.npz", "history.json")
                    for n in _OUT_CONTENTS[contents])
    if outcome != "completes":
        fake, _ = fake_train_that_raises(
            KeyboardInterrupt if outcome == "interrupted" else lambda: OSError(5, "I/O"))
        monkeypatch.setattr(CLI_MODULE, "train", fake)
    code, _, err = run_cli(capsys, *moons_argv(out, *(["--overwrite"] if overwrite else [])))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if holds_run and not overwrite:
        assert_one_line_error(code, err)
        assert after == before
        return
    assert code == {"completes": 0, "fails": 1, "interrupted": 130}[outcome], err
    replaced = {p for p in before if after.get(p) != before[p]}
    if outcome == "completes":
        assert replaced <= {out / "model.safetensors", out / "history.json"}
        checkpoint.load(out / "model.safetensors")
    else:
        where = out / "partial" if holds_run else out
        assert not replaced - {where / "model.safetensors", where / "history.json"}, replaced
        assert not (holds_run and replaced & {out / "model.safetensors", out / "history.json"})
        checkpoint.load(where / "model.safetensors")


# -- resuming a run (issue 17) ------------------------------------------------------------


RESUME_RUN = ["--dataset", "moons", "--samples", "1000", "--hidden", "20", "--optimizer",
              "adam", "--lr", "0.01", "--batch-size", "50", "--eval-every", "1000"]


def _same_files(a, b):
    """Two run folders: the same parameters and optimizer state bit for bit, the same
    history but for the wall-clock fields."""
    ca, cb = (xpnn.read_checkpoint(p / "model.safetensors") for p in (a, b))
    for k, v in ca.net.params.items():
        assert xpnn.to_numpy(v).tobytes() == xpnn.to_numpy(cb.net.params[k]).tobytes(), k
    state = {k for k in ca.extra if k.startswith("state/")}
    assert state and state == {k for k in cb.extra if k.startswith("state/")}
    for k in state:
        assert ca.extra[k].tobytes() == cb.extra[k].tobytes(), k
    ha, hb = (History.load_json(p / "history.json") for p in (a, b))
    for field in ("iteration", "train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert getattr(ha, field) == getattr(hb, field), field


def test_real_ctrl_c_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    """SIGINT to a real `xpnn train` process (the one the user's Ctrl-C sends) once its
    progress bar shows steps taken, then `xpnn train --resume DIR`: the same files as a
    run that was never interrupted."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from xpnn.cli import main; sys.exit(main(sys.argv[1:]))")
    iters = ["--iters", "20000"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", code, "train", *RESUME_RUN, *iters,
                             "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while not re.search(r"\| *[1-9]\d*/20000", seen):  # tqdm: some steps done
            char = proc.stderr.read(1)
            assert char, f"the run ended before showing progress: {seen}"
            seen += char
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    stopped = History.load_json(out / "history.json").meta["interrupted_at"]
    assert 0 < stopped < 20000
    resumed = subprocess.run([sys.executable, "-m", "xpnn", "train", "--resume", str(out),
                              "--no-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'model.safetensors'} at iteration {stopped}" in resumed.stdout
    ref = tmp_path / "ref"
    code, _, err = run_cli_subprocess(*RESUME_RUN, *iters, "--no-progress", "--out", str(ref))
    assert code == 0, err
    _same_files(out, ref)


def run_cli_subprocess(*argv):
    done = subprocess.run([sys.executable, "-m", "xpnn", "train", *argv], capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_resume_continues_a_finished_run_and_refuses_other_flags(capsys, tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    quick = [*RESUME_RUN[:-2], "--eval-every", "100", "--no-progress"]
    assert run_cli(capsys, "train", *quick, "--iters", "300", "--out", str(out))[0] == 0
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "--hidden", "5")
    assert code == 2 and "--resume: --hidden 5 differs from the run being resumed " \
                          "(--hidden 20)" in err, err
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "--weight-decay", "0.1")
    assert code == 2 and "(no --weight-decay)" in err, err
    code, _, err = run_cli(capsys, "train", "--resume", str(out))
    assert code == 2 and "already reached iteration 300" in err, err
    # the flags given again with the same values are fine; --iters is the new total
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "--hidden", "20",
                           "--iters", "700")
    assert code == 0, err
    assert run_cli(capsys, "train", *quick, "--iters", "700", "--out", str(ref))[0] == 0
    ca, cb = (xpnn.read_checkpoint(p / "model.safetensors") for p in (out, ref))
    for k, v in ca.extra.items():
        if k.startswith("state/"):
            assert v.tobytes() == cb.extra[k].tobytes(), k
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "none"))
    assert code == 2 and "no model.safetensors there to resume" in err, err


def test_a_diverged_cli_run_resumes_from_its_last_good_state(capsys, tmp_path):
    """A diverged run writes the state it rolled back to; resuming it with the same
    flags diverges at the same step, with a smaller --lr it trains on."""
    out = tmp_path / "run"
    argv = ["train", "--dataset", "moons", "--optimizer", "momentum", "--lr", "1e30",
            "--iters", "50", "--eval-every", "10", "--no-progress", "--out", str(out)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "diverged at iteration" in err, err
    first = History.load_json(out / "history.json").meta["diverged_at"]
    code, _, err = run_cli(capsys, "train", "--resume", str(out))
    assert code == 1 and f"diverged at iteration {first}" in err, err
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "--lr", "0.5")
    assert code == 0, err
    assert History.load_json(out / "history.json").iteration[-1] == 50
