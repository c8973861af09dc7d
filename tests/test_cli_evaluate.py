"""``xpnn evaluate``: the training run's own evaluation reproduced from a saved model
(history.json's final accuracies, exactly), the confusion matrix as text, CSV, JSON and
PNG, the data record in model.safetensors, and one-line errors."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

import xpnn
from xpnn.cli import build_parser, main
from xpnn.cli.evaluate import confusion_matrix, matrix_text
from xpnn.io import checkpoint
from xpnn.training import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train_run(capsys, out, *flags):
    code, _, err = run_cli(capsys, "train", *flags, "--eval-every", "50", "--out", out,
                           "--quiet")
    assert code == 0, err
    return History.load_json(out / "history.json")


def report(folder, split="test"):
    return json.loads((folder / f"evaluation-{split}.json").read_text())


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """A 2-3-2 moons run of 300 full-batch iterations (one per module)."""
    out = tmp_path_factory.mktemp("moons") / "run"
    assert main(["train", "--dataset", "moons", "--iters", "300", "--out", str(out),
                 "--quiet"]) == 0
    return out


# -- reproducing the run's evaluation --------------------------------------------------


def test_evaluate_reproduces_the_final_accuracies_exactly(capsys, tmp_path, backend):
    """moons, trained by the CLI on each backend and device and evaluated there: the loss
    and accuracy of both splits equal history.json's final ones (==)."""
    name, device = backend
    where = ["--backend", name] + (["--device", device] if device else [])
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "moons", "--iters", "60",
                           "--eval-every", "30", "--seed", "3", *where, "--out", run, "--quiet")
    assert code == 0, err
    history = History.load_json(run / "history.json")
    final = history.final
    for split in ("test", "train"):
        code, out, err = run_cli(capsys, "evaluate", run, "--split", split, *where)
        assert code == 0, err
        r = report(run, split)
        assert r["accuracy"] == final[f"{split}_acc"]
        assert r["loss"] == final[f"{split}_loss"]
        assert r["history_accuracy"] == final[f"{split}_acc"]
        assert r["backend"] == history.meta["backend"] and r["dtype"] == "float32"
        assert f"history.json's final {split} accuracy: {final[f'{split}_acc']!r} (the same)" in out
        assert r["data"] == {"dataset": "moons", "seed": 3, "samples": 200, "noise": 0.2}


def test_evaluate_spirals_float64_three_classes(capsys, tmp_path):
    run = tmp_path / "run"
    history = train_run(capsys, run, "--dataset", "spirals", "--iters", "200", "--dtype",
                        "float64", "--samples", "150", "--noise", "0.1")
    code, out, err = run_cli(capsys, "evaluate", run)
    assert code == 0, err
    r = report(run)
    assert r["dtype"] == "float64" and r["accuracy"] == history.final["test_acc"]
    assert r["data"]["samples"] == 150 and r["data"]["noise"] == 0.1
    m = np.array(r["confusion_matrix"])
    assert m.shape == (3, 3) and m.sum() == 150 == r["rows"]


def test_binary_model_has_a_two_class_matrix(capsys, tmp_path):
    run = tmp_path / "run"
    history = train_run(capsys, run, "--dataset", "moons", "--iters", "200", "--loss",
                        "binary_cross_entropy")
    assert checkpoint.load(run / "model.safetensors").sizes[-1] == 1
    code, _, err = run_cli(capsys, "evaluate", run)
    assert code == 0, err
    r = report(run)
    assert r["accuracy"] == history.final["test_acc"]
    assert np.array(r["confusion_matrix"]).shape == (2, 2)


# -- the confusion matrix ----------------------------------------------------------------


def test_confusion_matrix_text_csv_json_and_png_agree(capsys, moons_run, tmp_path):
    out = tmp_path / "eval"
    code, text, err = run_cli(capsys, "evaluate", moons_run, "--out", out)
    assert code == 0, err
    r = report(out)
    m = np.array(r["confusion_matrix"])
    net = checkpoint.load(moons_run / "model.safetensors")
    x, t = xpnn.data.make_moons(200, noise=0.2, seed=1)  # the run's test set (seed + 1)
    labels = xpnn.to_numpy(net.predict_labels(x))
    expected = np.zeros((2, 2), dtype=np.int64)
    np.add.at(expected, (xpnn.to_numpy(t), labels), 1)
    np.testing.assert_array_equal(m, expected)
    assert r["correct"] == int(np.trace(m)) and round(r["accuracy"] * 200) == r["correct"]
    assert r["classes"] == ["0", "1"]
    with open(out / "confusion-test.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "0", "1"]
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], dtype=int), m)
    assert matrix_text(m, ["0", "1"]) in text
    assert f"({r['correct']}/200)" in text
    pytest.importorskip("matplotlib")
    data = (out / "confusion-test.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert not (moons_run / "evaluation-test.json").exists()  # --out was used


def test_confusion_matrix_counts_rows_true_columns_predicted():
    m = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert "2 Pullover" in matrix_text(m, ["T-shirt/top", "Trouser", "Pullover"])


def test_plot_confusion_matrix_checks_its_input(tmp_path):
    pytest.importorskip("matplotlib")
    from xpnn import plotting

    with pytest.raises(ValueError, match="square"):
        plotting.plot_confusion_matrix(np.zeros((2, 3), dtype=int), tmp_path / "a.png")
    with pytest.raises(ValueError, match="class names"):
        plotting.plot_confusion_matrix(np.eye(2, dtype=int), tmp_path / "a.png", ["a"])
    with pytest.raises(ValueError, match="integer"):
        plotting.plot_confusion_matrix(np.eye(2) * 0.5, tmp_path / "a.png")
    # a class with no rows gets a white row, not a division by zero
    path = plotting.plot_confusion_matrix(np.array([[3, 1], [0, 0]]), tmp_path / "z.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


# -- where the data record comes from -----------------------------------------------------


def test_the_checkpoint_records_its_data(moons_run, tmp_path, capsys):
    """model.safetensors alone (no history.json beside it) still knows its data."""
    ckpt = checkpoint.read_checkpoint(moons_run / "model.safetensors")
    assert ckpt.extra_meta["data"] == {"dataset": "moons", "seed": 0, "samples": 200,
                                       "noise": 0.2}
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((moons_run / "model.safetensors").read_bytes())
    code, out, err = run_cli(capsys, "evaluate", lone)
    assert code == 0, err
    assert report(tmp_path)["accuracy"] == History.load_json(
        moons_run / "history.json").final["test_acc"]
    assert "history.json" not in out  # nothing to compare with


def test_the_record_may_sit_inside_the_runs_cli_record(capsys, tmp_path):
    """A checkpoint whose metadata holds the whole CLI record ({"cli": {..., "data":
    ...}}, as a resumable checkpoint keeps it) is read the same way."""
    net = xpnn.MLP([2, 4, 3], activation="tanh", seed=0)
    xpnn.save(net, tmp_path / "model.safetensors",
              extra_meta={"cli": {"argv": [], "data": {"dataset": "spirals", "seed": 4}}})
    code, out, err = run_cli(capsys, "evaluate", tmp_path)
    assert code == 0, err
    assert report(tmp_path)["data"] == {"dataset": "spirals", "seed": 4, "samples": 300,
                                        "noise": 0.2}


def test_a_model_without_a_record_needs_dataset(capsys, tmp_path):
    net = xpnn.MLP([2, 4, 2], activation="tanh", seed=0)
    for name in ("api.safetensors", "old.npz"):
        path = tmp_path / name
        if name.endswith(".npz"):  # the format before safetensors
            arch = {**net.to_config(), "params": list(net.params)}
            with open(path, "wb") as f:
                np.savez(f, __xpnn__=np.asarray(json.dumps(arch)),
                         **{k: xpnn.to_numpy(v) for k, v in net.params.items()})
        else:
            net.save(path)
        code, _, err = run_cli(capsys, "evaluate", path)
        assert_one_line_error(code, err, "no record of the data", "--dataset")
        code, out, err = run_cli(capsys, "evaluate", path, "--dataset", "spirals", "--samples",
                                 "90", "--out", tmp_path / name.replace(".", "-"))
        assert_one_line_error(code, err, "spirals has 3 classes, the model tells 2 apart")
        code, out, err = run_cli(capsys, "evaluate", path, "--dataset", "moons", "--samples",
                                 "90", "--out", tmp_path / name.replace(".", "-"))
        assert code == 0, err
        assert "on moons (seed 0, samples 90" in out


def test_data_flags_override_the_record(capsys, moons_run, tmp_path):
    code, out, err = run_cli(capsys, "evaluate", moons_run, "--seed", "7", "--noise", "0.05",
                             "--out", tmp_path)
    assert code == 0, err
    r = report(tmp_path)
    assert r["data"] == {"dataset": "moons", "seed": 7, "samples": 200, "noise": 0.05}
    assert r["history_accuracy"] is None and "history.json" not in out


def test_runs_from_before_the_record_use_history_dataset_and_seed(capsys, moons_run,
                                                                  tmp_path):
    """history.json without meta.cli.data and a checkpoint without extra_meta: the
    dataset and seed from the history, the rest the training defaults."""
    old = tmp_path / "old"
    old.mkdir()
    checkpoint.save(checkpoint.load(moons_run / "model.safetensors"), old / "model.safetensors")
    data = json.loads((moons_run / "history.json").read_text())
    del data["meta"]["cli"]["data"]
    (old / "history.json").write_text(json.dumps(data))
    code, out, err = run_cli(capsys, "evaluate", old)
    assert code == 0, err
    assert report(old)["accuracy"] == data["records"]["test_acc"][-1]
    assert "(the same)" in out


# -- errors ---------------------------------------------------------------------------------


def test_errors_are_one_line(capsys, moons_run, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "missing")
    assert_one_line_error(code, err, "no such file or folder")
    code, _, err = run_cli(capsys, "evaluate", tmp_path)
    assert_one_line_error(code, err, "without model.safetensors")
    code, _, err = run_cli(capsys, "evaluate", moons_run, "--classes", "0", "1")
    assert_one_line_error(code, err, "--classes applies to --dataset sign-language-digits")
    code, _, err = run_cli(capsys, "evaluate", moons_run, "--split", "validation")
    assert_one_line_error(code, err, "--split")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    code, _, err = run_cli(capsys, "evaluate", junk, "--dataset", "moons")
    assert_one_line_error(code, err, "junk.safetensors")


def test_mnist_model_on_moons_names_the_widths(capsys, tmp_path):
    net = xpnn.MLP([784, 5, 10], seed=0)
    net.save(tmp_path / "model.safetensors")
    code, _, err = run_cli(capsys, "evaluate", tmp_path, "--dataset", "moons")
    assert_one_line_error(code, err, "the model expects 784 features", "has 2")


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_help_of_the_new_commands_is_complete(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in out
        if action.dest != "help":
            assert action.help, f"{action.dest} has no help text"
    for flag in ("--backend", "--device", "--dtype", "--out"):
        assert flag in out


def test_top_level_help_lists_evaluate_and_predict():
    proc = subprocess.run([sys.executable, "-m", "xpnn", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("evaluate", "predict"):
        assert re.search(rf"^\s+{command}\s+\S", proc.stdout, re.M), proc.stdout
        assert f"xpnn {command} runs/" in proc.stdout


# -- real data ----------------------------------------------------------------------------


@pytest.mark.data
def test_mnist_evaluate_and_predict_reproduce_history_exactly(capsys, tmp_path, data_dir):
    """The issue's must-show: a short MNIST run by the CLI, then `xpnn evaluate` and
    `xpnn predict` (on the test images as a .npy) give history.json's final test
    accuracy, compared with ==."""
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--iters", "300", "--eval-every", "100",
                           "--data-dir", data_dir, "--no-download", "--out", run, "--quiet")
    assert code == 0, err
    final = History.load_json(run / "history.json").final
    code, out, err = run_cli(capsys, "evaluate", run, "--data-dir", data_dir,
                             "--no-download")
    assert code == 0, err
    r = report(run)
    assert r["accuracy"] == final["test_acc"] and r["loss"] == final["test_loss"]
    assert r["rows"] == 10000 and np.array(r["confusion_matrix"]).sum() == 10000

    _, (x, t) = xpnn.data.load_mnist(path=f"{data_dir}/mnist", download=False)
    np.save(tmp_path / "test.npy", xpnn.to_numpy(x))
    code, _, err = run_cli(capsys, "predict", run, tmp_path / "test.npy", "--out",
                           tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as f:
        labels = np.array([int(row["label"]) for row in csv.DictReader(f)])
    hits = int((labels == xpnn.to_numpy(t)).sum())
    assert hits == r["correct"]  # the labels the run's accuracy counted
    assert hits / 10000 == final["test_acc"]


@pytest.mark.data
def test_sign_language_subset_evaluates_with_its_split_and_digit_names(capsys, tmp_path,
                                                                       data_dir):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "sign-language-digits", "--data-dir",
                           data_dir, "--classes", "7", "3", "--image-size", "16", "--seed",
                           "5", "--iters", "30", "--eval-every", "15", "--out", run, "--quiet")
    assert code == 0, err
    final = History.load_json(run / "history.json").final
    code, out, err = run_cli(capsys, "evaluate", run, "--data-dir", data_dir)
    assert code == 0, err
    r = report(run)
    assert r["data"] == {"dataset": "sign-language-digits", "seed": 5, "classes": [7, 3],
                         "image_size": 16}
    assert r["accuracy"] == final["test_acc"] and r["classes"] == ["7", "3"]
    assert "0 7" in out and "1 3" in out  # rows named by label and digit


def test_a_failure_leaves_no_empty_out_folder(capsys, tmp_path, monkeypatch):
    net = xpnn.MLP([784, 5, 10], seed=0)
    net.save(tmp_path / "model.safetensors")
    monkeypatch.setenv("XPNN_DATA_DIR", str(tmp_path / "nothing"))
    out = tmp_path / "a" / "b"
    code, _, err = run_cli(capsys, "evaluate", tmp_path, "--dataset", "mnist",
                           "--no-download", "--out", out)
    assert_one_line_error(code, err, "MNIST files missing")
    assert not (tmp_path / "a").exists()


def test_a_diverged_run_still_records_its_data(capsys, tmp_path):
    """The partial save (divergence, Ctrl-C, errors) records the data too."""
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "spirals", "--lr", "1e30", "--iters",
                           "50", "--seed", "2", "--out", run, "--quiet")
    assert code == 1 and "diverged" in err, err
    ckpt = checkpoint.read_checkpoint(run / "model.safetensors")
    assert ckpt.extra_meta["data"] == {"dataset": "spirals", "seed": 2, "samples": 300,
                                       "noise": 0.2}
    code, out, err = run_cli(capsys, "evaluate", run)
    assert code == 0, err
    assert "on spirals (seed 2, samples 300, noise 0.2) test (300 rows)" in out
