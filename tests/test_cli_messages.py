"""What the command line says (issue 17, point 6): global figures under MPI, which
tolerance a gradient check passed on, fractional --epochs, rounded accuracies and the
hint to --compile on JAX. The real 2-rank mpiexec run is in test_dist_cli.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import xpnn
from xpnn.cli import main
from xpnn.cli.main import _batch_words, _rows_words
from xpnn.dist.cli import DistSetup
from xpnn.nn.gradcheck import GradientCheck, ParamCheck
from xpnn.training.runner import _metrics


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- banner under data-parallel MPI -----------------------------------------------------


def test_banner_words_give_the_runs_rows_and_the_split():
    x_train, x_test = np.zeros((200, 2)), np.zeros((50, 2))
    alone = DistSetup()
    assert _rows_words(x_train, x_test, alone) == "200 train, 50 test"
    assert _batch_words(20, alone) == "batch 20"
    three = DistSetup(comm=object(), rank=0, size=3)
    assert _rows_words(x_train, x_test, three) == (
        "200 train, 50 test, split over 3 MPI ranks: 67 or 66 train and 17 or 16 test "
        "rows each"
    )
    assert _batch_words(20, three) == "batch 60 (20 per rank)"
    assert _batch_words(None, three) == "full batch"
    # --mpi-split parameters: every rank holds all the data
    params = DistSetup(executor=object(), rank=0, size=3)
    assert _rows_words(x_train, x_test, params) == "200 train, 50 test"


# -- gradcheck says which tolerance passed ----------------------------------------------


def test_gradcheck_table_names_the_criterion():
    checks = [ParamCheck("W1", (4, 10), 2e-9, 1e-11, True, 0),
              ParamCheck("W2", (10, 3), 1.86e-7, 1.3e-11, True, 2),
              ParamCheck("b2", (3,), 3e-3, 1e-4, False, 3)]
    table = GradientCheck(checks, 1e-7, "float64", 1e-5, 2.5e-10).table().splitlines()
    assert "relative error is <= 1e-07 (rtol)" in table[0]
    assert "absolute error is <= 2.5e-10 (atol)" in table[0]
    assert table[2].endswith("ok (rtol)")
    assert table[3].endswith("ok (atol: 2 elements over rtol, within atol)")
    assert table[4].endswith("FAIL")


def test_gradcheck_cli_line_over_rtol_says_it_passed_on_atol(capsys):
    # with h = 1e-7 the central differences' rounding (about eps*|L|/h = 2e-9) puts
    # elements with gradients under ~0.02 over rtol = 1e-7, well within the atol that
    # scales with it (10*eps*|L|/h): several rows pass on atol for every seed tried
    # (0-3). These lines used to say just "ok". (With the default h = 1e-5 whether any
    # element crosses rtol hangs on rounding: the 4-pass numerical gradient moved this
    # net's worst W2 element from 1.6e-7 to 6e-8.)
    code, out, _ = run(capsys, "gradcheck", "--activation", "tanh", "--hidden", "10", "10",
                       "--h", "1e-7")
    assert code == 0, out
    rows = [line for line in out.splitlines() if re.match(r"[Wb]\d ", line)]
    assert len(rows) == 6, out
    over = 0
    for line in rows:
        rel = float(re.findall(r"\d\.\d+e[-+]\d+", line)[0])  # the max rel error column
        over += rel > 1e-7
        assert ("ok (atol" in line) == (rel > 1e-7), line
        assert ("ok (rtol)" in line) == (rel <= 1e-7), line
    assert over >= 1, out


# -- --epochs takes fractions -----------------------------------------------------------


@pytest.mark.parametrize("epochs, batch, iterations", [("0.5", "20", 5), ("2.5", "full", 2)])
def test_fractional_epochs(capsys, tmp_path, epochs, batch, iterations):
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--dataset", "moons", "--epochs", epochs,
                         "--batch-size", batch, "--no-progress", "--out", str(out_dir))
    assert code == 0, err
    assert f", {epochs} epochs," in out.splitlines()[0]
    history = json.loads((out_dir / "history.json").read_text())
    assert history["meta"]["iterations"] == iterations  # round(epochs * batches per epoch)


def test_epochs_must_be_positive(capsys):
    code, _, err = run(capsys, "train", "--dataset", "moons", "--epochs", "0")
    assert code == 2 and "--epochs" in err


# -- accuracy is a count over the rows --------------------------------------------------


def net_and_labels_with_hits(hits: int, n: int):
    """A 10-class net and labels it gets right on exactly ``hits`` of ``n`` rows."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    net = xpnn.MLP([4, 10], seed=0)
    predicted = np.argmax(xpnn.to_numpy(net.predict(x)), axis=1)
    t = np.where(np.arange(n) < hits, predicted, (predicted + 1) % 10)
    return net, x, t


def test_accuracy_is_hits_over_rows_not_a_float32_mean():
    net, x, t = net_and_labels_with_hits(9473, 10000)
    assert float(np.float32(9473) / np.float32(10000)) == 0.9473000168800354  # float32's
    acc = net.accuracy(x, t)
    assert acc == 0.9473 and repr(acc) == "0.9473"
    _, trainer_acc = _metrics(net, net.check_x(x), net.prepare_targets(t, 10000), 3000)
    assert trainer_acc == 0.9473


def test_cli_prints_accuracies_rounded(capsys, tmp_path, monkeypatch):
    # with tqdm missing the trainer prints one line per evaluation through the CLI
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    code, out, err = run(capsys, "train", "--dataset", "moons", "--iters", "40",
                         "--eval-every", "10", "--out", str(tmp_path / "run"))
    assert code == 0, err
    shown = re.findall(r"acc (\d+\.\d+)", out)
    assert len(shown) >= 5, out
    assert all(len(a.split(".")[1]) == 4 for a in shown), shown
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for acc in history["records"]["train_acc"]:  # JSON keeps the exact k / 200
        assert acc * 200 == round(acc * 200)


# -- JAX without --compile --------------------------------------------------------------


def test_jax_without_compile_suggests_it(capsys, tmp_path):
    pytest.importorskip("jax")
    argv = ["train", "--dataset", "moons", "--backend", "jax", "--iters", "2",
            "--no-progress"]
    code, out, err = run(capsys, *argv, "--out", str(tmp_path / "eager"))
    assert code == 0, err
    assert "hint: without --compile JAX" in out and "add --compile" in out
    code, out, err = run(capsys, *argv, "--compile", "--out", str(tmp_path / "jit"))
    assert code == 0, err
    assert "hint:" not in out
    code, out, err = run(capsys, "train", "--dataset", "moons", "--iters", "2",
                         "--no-progress", "--out", str(tmp_path / "np"))
    assert code == 0 and "hint:" not in out


# -- the numerical-gradient notes state the real default steps --------------------------


def test_float_notes_quote_the_default_steps_of_the_code():
    from xpnn.cli.main import FLOAT32_NUMERICAL_WARNING, FLOAT64_NOTE
    from xpnn.training import runner

    h32 = xpnn.MLP([2, 2], dtype="float32").default_h()
    h64 = xpnn.MLP([2, 2], dtype="float64").default_h()

    def steps(text):
        return [float(v) for v in re.findall(r"(?:h=|default step )(\d[\d.]*e-\d+)", text)]

    assert steps(FLOAT64_NOTE) == [h32, h64]  # it used to quote the book's h=1e-4
    assert steps(FLOAT32_NUMERICAL_WARNING) == [h32]
    import inspect

    assert steps(inspect.getsource(runner.train)) == [h32]
