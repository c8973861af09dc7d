"""The trainer: determinism, batching arithmetic, evaluation, callbacks, early stopping,
divergence handling, numerical-gradient training, History, progress output."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

import xpnn
from xpnn.optim import SGD, Adam, StepLR
from xpnn.training import FIELDS, History, TrainingDivergedError, train
from xpnn.training import runner as training
from xpnn.training.callbacks import DivergenceGuard


def blobs(n=60, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d)), y


def _net(backend, sizes=(4, 6, 3), dtype="float64", **kw):
    name, device = backend
    kw = {"activation": "tanh", "weight_init": 0.5, "seed": 0, **kw}
    return xpnn.MLP(list(sizes), backend=name, device=device, dtype=dtype, **kw)


def _data(to_backend, n=60, seed=0, dtype="float64"):
    x, y = blobs(n=n, seed=seed)
    return to_backend(x, dtype), to_backend(y)


def _host(params):
    return {k: xpnn.to_numpy(v).copy() for k, v in params.items()}


def _same_params(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def _curves(h):
    return {f: getattr(h, f) for f in FIELDS if f != "elapsed"}


QUIET = {"progress": False}


# -- determinism ---------------------------------------------------------------------


def test_same_seed_same_history_different_seed_different(backend, to_backend):
    tr, te = _data(to_backend, 60, 0), _data(to_backend, 30, 1)
    runs = []
    for seed in (7, 7, 8):
        net = _net(backend)
        h = train(net, tr, te, optimizer=Adam(lr=0.05), batch_size=16, epochs=3, seed=seed,
                  **QUIET)
        runs.append((_curves(h), _host(net.params)))
    assert runs[0][0] == runs[1][0]
    assert _same_params(runs[0][1], runs[1][1])
    assert runs[0][0]["train_loss"] != runs[2][0]["train_loss"]
    assert not _same_params(runs[0][1], runs[2][1])


# -- batching and run-length arithmetic ----------------------------------------------


def test_batch_indices_cover_every_row_each_epoch():
    b = training._BatchIndices(np.random.default_rng(0), 23, 5)
    assert b.per_epoch == 5 and b.pad == 2
    whole = b.block(0, 7)
    rest = b.block(7, 10)
    assert whole.shape == (7, 5) and whole.dtype == np.int64
    both = np.concatenate([whole, rest])
    for e in range(2):
        epoch = both[5 * e : 5 * e + 5]
        assert set(epoch.ravel()) == set(range(23))
        assert all(len(set(row)) == 5 for row in epoch)  # no repeated row in a batch
    assert not np.array_equal(both[:5], both[5:])
    # the same stream whatever the block boundaries
    again = training._BatchIndices(np.random.default_rng(0), 23, 5).block(0, 10)
    np.testing.assert_array_equal(again, both)


def test_one_step_uses_the_seeded_batch(backend, to_backend):
    x, y = blobs(n=40)
    net, ref = _net(backend), _net(backend)
    train(net, (to_backend(x, "float64"), to_backend(y)), optimizer=SGD(lr=0.5),
          batch_size=8, iters=1, seed=3, **QUIET)
    rows = training._BatchIndices(np.random.default_rng(3), 40, 8).block(0, 1)[0]
    g = ref.gradient(to_backend(x[rows], "float64"), to_backend(y[rows]))
    SGD(lr=0.5).update(ref.params, g)
    for k, v in _host(ref.params).items():
        np.testing.assert_allclose(xpnn.to_numpy(net.params[k]), v, rtol=1e-12, atol=1e-14)


def test_full_batch_uses_every_row(backend, to_backend):
    tr = _data(to_backend, 50)
    net, ref = _net(backend), _net(backend)
    h = train(net, tr, optimizer=SGD(lr=0.3), batch_size=None, iters=3, **QUIET)
    assert h.meta["iters_per_epoch"] == 1 and h.meta["batch_size"] is None
    assert h.iteration == [0, 1, 2, 3] and h.epoch == [0.0, 1.0, 2.0, 3.0]
    for _ in range(3):
        SGD(lr=0.3).update(ref.params, ref.gradient(*tr))
    assert _same_params(_host(net.params), _host(ref.params))


def test_epoch_and_iteration_arithmetic():
    x, y = blobs(n=103)
    tr = (x, y)
    h = train(_net(("numpy", None)), tr, batch_size=10, epochs=2, **QUIET)
    assert h.meta["iters_per_epoch"] == 11 and h.meta["iterations"] == 22
    assert h.iteration == [0, 11, 22] and h.epoch == [0.0, 1.0, 2.0]
    h = train(_net(("numpy", None)), tr, batch_size=10, **QUIET)  # neither: one epoch
    assert h.iteration == [0, 11]
    h = train(_net(("numpy", None)), tr, batch_size=10, epochs=0.5, **QUIET)
    assert h.meta["iterations"] == 6
    h = train(_net(("numpy", None)), tr, batch_size=10, iters=5, **QUIET)
    assert h.iteration == [0, 5] and h.epoch[-1] == pytest.approx(5 / 11)
    h = train(_net(("numpy", None)), tr, batch_size=10, iters=5, eval_every=2, **QUIET)
    assert h.iteration == [0, 2, 4, 5]
    assert len(h) == 4 and h.final["iteration"] == 5 and h[1]["iteration"] == 2
    h = train(_net(("numpy", None)), tr, batch_size=103, iters=2, **QUIET)
    assert h.meta["iters_per_epoch"] == 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"iters": 3, "epochs": 1}, ValueError, "not both"),
        ({"iters": 0}, ValueError, "iters must be a positive integer"),
        ({"iters": 2.5}, TypeError, "iters"),
        ({"iters": None, "epochs": -1}, ValueError, "epochs must be positive"),
        ({"batch_size": 61}, ValueError, "larger than the training set"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"eval_every": 0}, ValueError, "eval_every"),
        ({"eval_batch_size": 0}, ValueError, "eval_batch_size"),
        ({"gradient": "autograd"}, ValueError, "'backprop' or 'numerical'"),
        ({"h": 1e-4}, ValueError, "only to gradient='numerical'"),
        ({"gradient": "numerical", "h": -1.0}, ValueError, "h must be"),
        ({"early_stopping": 3}, ValueError, "pass test="),
        ({"early_stopping": 0}, ValueError, "early_stopping"),
        ({"callbacks": [1]}, TypeError, "callbacks"),
        ({"lr_schedule": 0.5}, TypeError, "lr_schedule"),
        ({"optimizer": object()}, TypeError, "update"),
        ({"optimizer": "lion"}, ValueError, "unknown optimizer"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = blobs()
    with pytest.raises(error, match=match):
        train(_net(("numpy", None)), (x, y), **{"iters": 1, "batch_size": 10, **kwargs, **QUIET})


def test_bad_data_is_named():
    x, y = blobs()
    net = _net(("numpy", None))
    with pytest.raises(TypeError, match="train must be an"):
        train(net, x, **QUIET)
    with pytest.raises(ValueError, match="test set: x has 2 features"):
        train(net, (x, y), (x[:, :2], y), **QUIET)
    with pytest.raises(ValueError, match="train set: labels must lie"):
        train(net, (x, y + 5), **QUIET)
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match="train set: x is a torch array"):
        train(net, (xpnn.asarray(x, backend="torch"), y), **QUIET)


def test_schedule_sets_the_rate_and_is_reset():
    x, y = blobs()
    seen = []

    class Spy(SGD):
        def update(self, params, grads):
            seen.append(self.lr)
            super().update(params, grads)

    spy = Spy(lr=0.4)
    h = train(_net(("numpy", None)), (x, y), optimizer=spy, batch_size=10, iters=12,
              eval_every=4, lr_schedule=StepLR(5, gamma=0.5), **QUIET)
    assert seen == [0.4] * 5 + [0.2] * 5 + [0.1] * 2
    assert h.lr == [0.4, 0.4, 0.2, 0.1]
    assert spy.lr == 0.4  # back to the base rate
    with pytest.raises(ValueError, match=r"lr_schedule\(0\) gave nan"):
        train(_net(("numpy", None)), (x, y), batch_size=10, iters=2,
              lr_schedule=lambda i: math.nan, **QUIET)


def test_evaluation_in_chunks_matches_whole(backend, to_backend):
    tr, te = _data(to_backend, 60, 0), _data(to_backend, 25, 1)
    h1 = train(_net(backend), tr, te, iters=4, batch_size=10, seed=0, **QUIET)
    h2 = train(_net(backend), tr, te, iters=4, batch_size=10, seed=0, eval_batch_size=7,
               **QUIET)
    for f in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_allclose(getattr(h2, f), getattr(h1, f), rtol=1e-12, atol=1e-12)
    net = _net(backend)
    assert h1.train_loss[0] == pytest.approx(float(net.loss(*tr)), rel=1e-12)
    assert h1.test_acc[0] == pytest.approx(net.accuracy(*te), rel=1e-12)


def test_mse_records_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    t = x @ rng.standard_normal((3, 2))
    net = xpnn.MLP([3, 8, 2], activation="tanh", loss="mse", seed=0, dtype="float64")
    h = train(net, (x, t), (x[:10], t[:10]), optimizer=SGD(0.1), batch_size=10, epochs=5,
              **QUIET)
    assert h.train_acc == [None] * len(h) and h.test_acc == [None] * len(h)
    assert h.train_loss[-1] < h.train_loss[0]


# -- callbacks and early stopping ----------------------------------------------------


def test_callbacks_see_records_and_can_stop():
    x, y = blobs()
    seen = []

    def watch(record, net):
        seen.append((record["iteration"], isinstance(net, xpnn.MLP)))

    def stop_at_6(record, net):
        return record["iteration"] >= 6

    h = train(_net(("numpy", None)), (x, y), batch_size=10, iters=30, eval_every=3,
              callbacks=[watch, stop_at_6], **QUIET)
    assert h.iteration == [0, 3, 6]
    assert seen == [(0, True), (3, True), (6, True)]
    assert h.meta["stopped_by_callback"] and h.meta["iterations"] == 6


def test_early_stopping_restores_the_best_params(backend, to_backend):
    x, y = blobs(n=60)
    # the test labels are shifted, so learning the training set makes the test loss worse
    tr = (to_backend(x, "float64"), to_backend(y))
    te = (to_backend(x, "float64"), to_backend((y + 1) % 3))
    net = _net(backend)
    start = _host(net.params)
    h = train(net, tr, te, optimizer=SGD(lr=0.5), batch_size=10, iters=100, eval_every=2,
              early_stopping=3, **QUIET)
    assert h.meta["stopped_early"] and h.meta["best_iteration"] == 0
    assert h.iteration == [0, 2, 4, 6]
    assert h.test_loss[-1] > h.test_loss[0]
    assert _same_params(_host(net.params), start)


def test_early_stopping_keeps_improving_runs_going():
    tr, te = blobs(60, seed=0), blobs(30, seed=0)
    h = train(_net(("numpy", None)), tr, te, optimizer=SGD(0.1), batch_size=10, epochs=4,
              early_stopping=2, **QUIET)
    assert not h.meta["stopped_early"] and h.meta["iterations"] == 24
    assert h.meta["best_iteration"] == 24


# -- divergence ----------------------------------------------------------------------


def _regression(to_backend, n=30):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    t = x @ rng.standard_normal((3, 1))
    return to_backend(x, "float64"), to_backend(t, "float64")


def _mse_net(backend):
    name, device = backend
    return xpnn.MLP([3, 4, 1], activation="identity", loss="mse", weight_init=0.5, seed=0,
                    backend=name, device=device, dtype="float64")


def test_absurd_learning_rate_diverges_and_restores(backend, to_backend):
    tr = _regression(to_backend)
    net = _mse_net(backend)
    with pytest.raises(TrainingDivergedError, match="diverged at iteration") as info:
        train(net, tr, optimizer=SGD(lr=1e30), batch_size=10, iters=1000, seed=0, **QUIET)
    err = info.value
    assert isinstance(err, ValueError) and err.iteration >= 1
    assert f"iteration {err.iteration}" in str(err)
    assert err.history.meta["diverged_at"] == err.iteration
    params = _host(net.params)
    assert all(np.all(np.isfinite(v)) for v in params.values())
    restored = err.history.meta["restored_iteration"]
    assert 0 <= restored < err.iteration
    assert f"restored to those after iteration {restored}" in str(err)
    replay = _mse_net(backend)
    if restored:
        train(replay, tr, optimizer=SGD(lr=1e30), batch_size=10, iters=restored, seed=0,
              **QUIET)
    assert _same_params(params, _host(replay.params))
    assert math.isfinite(float(net.loss(*tr)))


class PoisonAt(SGD):
    """SGD whose n-th update writes NaN into W1."""

    def __init__(self, n, lr=0.1):
        super().__init__(lr)
        self.n, self.count = n, 0

    def update(self, params, grads):
        super().update(params, grads)
        self.count += 1
        if self.count == self.n:
            params["W1"] = params["W1"] * math.nan


def test_poisoned_update_is_named_exactly_on_cpu():
    x, y = blobs()
    net, ref = _net(("numpy", None)), _net(("numpy", None))
    with pytest.raises(TrainingDivergedError, match="iteration 3") as info:
        train(net, (x, y), optimizer=PoisonAt(3), batch_size=10, iters=20, seed=1, **QUIET)
    assert info.value.iteration == 3 and info.value.history.iteration == [0]
    assert info.value.history.meta["restored_iteration"] == 2
    train(ref, (x, y), optimizer=SGD(0.1), batch_size=10, iters=2, seed=1, **QUIET)
    assert _same_params(_host(net.params), _host(ref.params))


def test_device_side_check_reports_the_first_bad_iteration(backend, to_backend):
    """The accelerator path (flag kept on the device, read at evaluations), forced here."""
    tr = _data(to_backend)
    net, ref = _net(backend), _net(backend)
    with pytest.raises(TrainingDivergedError, match="iteration 7") as info:
        train(net, tr, optimizer=PoisonAt(7), batch_size=10, iters=30, eval_every=5,
              seed=1, callbacks=[DivergenceGuard(every_step=False)], **QUIET)
    assert info.value.iteration == 7
    assert info.value.history.iteration == [0, 5]
    assert "restored to those after iteration 5" in str(info.value)
    assert info.value.history.meta["restored_iteration"] == 5
    train(ref, tr, optimizer=SGD(0.1), batch_size=10, iters=5, seed=1, **QUIET)
    assert _same_params(_host(net.params), _host(ref.params))
    assert not info.value.history.meta["exact_divergence_check"]
    # and without a problem the forced path trains exactly like the exact one
    a, b = _net(backend), _net(backend)
    h1 = train(a, tr, batch_size=10, iters=9, eval_every=4, seed=2,
               callbacks=[DivergenceGuard(every_step=True)], **QUIET)
    h2 = train(b, tr, batch_size=10, iters=9, eval_every=4, seed=2,
               callbacks=[DivergenceGuard(every_step=False)], **QUIET)
    assert _curves(h1) == _curves(h2) and _same_params(_host(a.params), _host(b.params))


def test_default_guard_resolves_per_run_and_stays_default():
    """every_step=None is decided for each run (reads free or not) and recorded in the
    meta from the same rule; the guard object keeps None, so it can be reused."""
    x, y = blobs()
    guard = DivergenceGuard()
    h = train(_net(("numpy", None)), (x, y), batch_size=10, iters=2, callbacks=[guard],
              **QUIET)
    assert guard.every_step is None and guard.exact is True
    assert h.meta["exact_divergence_check"] is True


def test_callback_that_poisons_params_is_caught():
    x, y = blobs()
    net = _net(("numpy", None))

    def poison(record, net):
        if record["iteration"] == 4:
            net.params["b1"] = net.params["b1"] + math.inf

    with pytest.raises(TrainingDivergedError, match="callback"):
        train(net, (x, y), batch_size=10, iters=10, eval_every=2, callbacks=[poison], **QUIET)
    assert all(np.all(np.isfinite(v)) for v in _host(net.params).values())


def test_non_finite_params_are_refused_up_front():
    x, y = blobs()
    net = _net(("numpy", None))
    net.params["W2"] = net.params["W2"] * math.nan
    with pytest.raises(ValueError, match="before training"):
        train(net, (x, y), batch_size=10, iters=1, **QUIET)


# -- numerical gradients -------------------------------------------------------------


def test_numerical_training_matches_backprop_in_float64(backend, to_backend):
    x, y = blobs(20)
    tr = (to_backend(x, "float64"), to_backend(y % 2))
    kw = {"optimizer": "sgd", "batch_size": 8, "iters": 6, "eval_every": 2, "seed": 0}
    a = _net(backend, (4, 3, 2), activation="sigmoid")
    h_bp = train(a, tr, **kw, **QUIET)
    b = _net(backend, (4, 3, 2), activation="sigmoid")
    h_num = train(b, tr, gradient="numerical", **kw, **QUIET)
    assert h_num.meta["gradient"] == "numerical" and h_num.meta["h"] == 1e-5
    np.testing.assert_allclose(h_num.train_loss, h_bp.train_loss, rtol=1e-6)
    for k, v in _host(a.params).items():
        np.testing.assert_allclose(xpnn.to_numpy(b.params[k]), v, rtol=1e-6, atol=1e-9)


def test_numerical_float32_note():
    x, y = blobs(20)
    lines = []
    net = _net(("numpy", None), (4, 3, 3), dtype="float32")
    h = train(net, (x.astype(np.float32), y), gradient="numerical", batch_size=10, iters=2,
              log=lines.append, progress=True)
    assert "float32" in lines[0] and "h=0.005" in lines[0] and "float64" in lines[0]
    assert h.meta["note"] == lines[0]


# -- progress output -----------------------------------------------------------------


def test_quiet_prints_nothing(capsys):
    x, y = blobs()
    calls = []
    train(_net(("numpy", None)), (x, y), batch_size=10, iters=3, progress=False,
          log=calls.append)
    out = capsys.readouterr()
    assert calls == [] and out.out == "" and out.err == ""


def test_progress_bar_and_summary(capsys):
    pytest.importorskip("tqdm")
    tr, te = blobs(60), blobs(20, seed=1)
    lines = []
    train(_net(("numpy", None)), tr, te, batch_size=10, epochs=2, log=lines.append)
    assert len(lines) == 1
    assert lines[0].startswith("trained 12 iterations in ")
    assert "train acc" in lines[0] and "test acc" in lines[0]
    assert "12/12" in capsys.readouterr().err


def test_plain_lines_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    lines = []
    train(_net(("numpy", None)), blobs(60), batch_size=10, epochs=2, log=lines.append)
    assert len(lines) == 4  # iterations 0, 6, 12, then the summary
    assert lines[1].startswith("iter 6/12 (epoch 1.00): train loss")
    assert lines[-1].startswith("trained 12 iterations")


# -- History ---------------------------------------------------------------------------


def test_history_json_round_trip(tmp_path):
    tr, te = blobs(60), blobs(20, seed=1)
    h = train(_net(("numpy", None)), tr, te, batch_size=10, epochs=2, seed=5, **QUIET)
    meta = h.meta
    for key in ("backend", "device", "dtype", "sizes", "activations", "loss", "optimizer",
                "lr", "batch_size", "gradient", "h", "seed", "iterations", "wall_time"):
        assert key in meta
    assert meta["optimizer"] == "sgd" and meta["lr"] == 0.1 and meta["seed"] == 5
    path = tmp_path / "h.json"
    h.save_json(path)
    assert os.listdir(tmp_path) == ["h.json"]
    back = History.load_json(path)
    assert back.to_dict() == json.loads(path.read_text()) == h.to_dict()
    assert back.final == h.final and len(back) == len(h) == 3
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        History.load_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an xpnn history"):
        History.load_json(tmp_path / "other.json")
    assert History().final is None and len(History()) == 0


# -- immutability ----------------------------------------------------------------------


def test_read_only_numpy_data_and_params():
    x, y = blobs()
    xt, yt = blobs(20, seed=1)
    arrays = (x, y, xt, yt)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    net = _net(("numpy", None))
    for v in net.params.values():
        v.flags.writeable = False
    h = train(net, (x, y), (xt, yt), optimizer=Adam(0.01), batch_size=7, epochs=2, **QUIET)
    assert len(h) == 3
    for a, c in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(a, c)


# -- reliability (issue 9) -------------------------------------------------------------


class InterruptAt(SGD):
    """SGD whose n-th update is interrupted after rebinding its first parameter."""

    def __init__(self, n, lr=0.1, exc=KeyboardInterrupt):
        super().__init__(lr)
        self.n, self.count, self.exc = n, 0, exc

    def update(self, params, grads):
        self.count += 1
        for i, key in enumerate(params):
            if self.count == self.n and i == 1:
                raise self.exc()
            params[key] = params[key] - self.lr * grads[key]


def test_interrupt_leaves_the_last_completed_step_and_the_history():
    x, y = blobs()
    net, ref = _net(("numpy", None)), _net(("numpy", None))
    with pytest.raises(KeyboardInterrupt) as info:
        train(net, (x, y), optimizer=InterruptAt(5), batch_size=10, iters=20, eval_every=2,
              seed=1, **QUIET)
    history = info.value.history
    assert isinstance(history, History) and history.iteration == [0, 2, 4]
    assert history.meta["interrupted_at"] == 4 and history.meta["iterations"] == 4
    train(ref, (x, y), optimizer=SGD(0.1), batch_size=10, iters=4, seed=1, **QUIET)
    assert _same_params(_host(net.params), _host(ref.params))  # not W1 of step 5


def test_any_exception_after_the_start_carries_the_history():
    x, y = blobs()

    def fail_at_4(record, net):
        if record["iteration"] == 4:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed") as info:
        train(_net(("numpy", None)), (x, y), batch_size=10, iters=10, eval_every=2,
              callbacks=[fail_at_4], **QUIET)
    assert info.value.history.iteration == [0, 2, 4]
    assert info.value.history.meta["interrupted_at"] == 4


def test_divergence_restore_is_a_copy_not_a_reference():
    """A callback that writes NaN into a parameter in place must not poison the
    parameters kept for the restore."""
    x, y = blobs()
    net, ref = _net(("numpy", None)), _net(("numpy", None))

    def poison_in_place(record, net):
        if record["iteration"] == 4:
            net.params["W1"][0, 0] = math.nan

    for v in net.params.values():
        v.flags.writeable = True
    with pytest.raises(TrainingDivergedError, match="restored to those after iteration 4"):
        train(net, (x, y), batch_size=10, iters=10, eval_every=2, seed=1,
              callbacks=[poison_in_place], **QUIET)
    train(ref, (x, y), batch_size=10, iters=4, seed=1, **QUIET)
    assert _same_params(_host(net.params), _host(ref.params))


def test_weight_decay_that_overflows_the_loss_is_named():
    x, y = blobs()
    net = _net(("numpy", None), dtype="float32", weight_decay=1e38)
    with pytest.raises(TrainingDivergedError, match="weight_decay=1e.38 is too large") as info:
        train(net, (x.astype(np.float32), y), batch_size=10, iters=3, **QUIET)
    assert info.value.iteration == 0


def test_non_finite_outputs_at_evaluation_are_named():
    x, y = blobs()
    net = _net(("numpy", None), dtype="float32")
    net.params["W2"] = np.full_like(net.params["W2"], 3e38)  # finite, outputs overflow
    with pytest.raises(TrainingDivergedError, match="outputs are NaN or inf") as info:
        train(net, (x.astype(np.float32), y), batch_size=10, iters=3, **QUIET)
    assert info.value.iteration == 0


def test_large_finite_parameters_are_not_divergence():
    """Their sum overflows; the finite check must not."""
    x, y = blobs()
    x[:, 0] = 0.0  # the huge first row of W1 never reaches the outputs
    net = _net(("numpy", None), dtype="float32")
    W1 = np.array(net.params["W1"])
    W1[0, :] = 3e38
    net.params["W1"] = W1
    h = train(net, (x.astype(np.float32), y), batch_size=10, iters=6, eval_every=3, **QUIET)
    assert h.iteration == [0, 3, 6] and all(math.isfinite(v) for v in h.train_loss)
    assert np.array_equal(np.asarray(net.params["W1"])[0], W1[0])


class BookSGD:
    """A user optimiser in the book's style: a plain lr attribute and update()."""

    def __init__(self, lr):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] = params[key] - self.lr * grads[key]


@pytest.mark.parametrize("lr", [-0.5, 0.0, math.nan, math.inf, "0.1"])
def test_bad_lr_set_after_construction_is_refused(lr):
    x, y = blobs()
    opt = BookSGD(0.1)
    opt.lr = lr
    with pytest.raises(ValueError, match="optimizer.lr must be positive and finite"):
        train(_net(("numpy", None)), (x, y), optimizer=opt, batch_size=10, iters=2, **QUIET)


@pytest.mark.parametrize("seed, error", [("abc", TypeError), (1.5, TypeError),
                                         (-1, ValueError), (True, TypeError)])
def test_bad_seed_is_named(seed, error):
    x, y = blobs()
    with pytest.raises(error, match="seed must be None or a non-negative integer"):
        train(_net(("numpy", None)), (x, y), batch_size=10, iters=2, seed=seed, **QUIET)


# -- the distributed seam --------------------------------------------------------------


class OneRankComm:
    """A communicator of one rank that records what the trainer asks of it."""

    def __init__(self, rank=0):
        self.rank, self.size = rank, 1
        self.weights, self.sums = [], []

    def allreduce_mean(self, grads, weight):
        self.weights.append(weight)
        return dict(grads)

    def allreduce_sum(self, values):
        self.sums.append(list(values))
        return list(values)


def test_comm_seam_averages_gradients_and_sums_evaluations():
    x, y = blobs(63)
    comm = OneRankComm()
    a, b = _net(("numpy", None)), _net(("numpy", None))
    h1 = train(a, (x, y), batch_size=10, iters=7, eval_every=3, seed=4, **QUIET)
    h2 = train(b, (x, y), batch_size=10, iters=7, eval_every=3, seed=4, comm=comm, **QUIET)
    assert _curves(h1) == _curves(h2) and _same_params(_host(a.params), _host(b.params))
    assert comm.weights == [10] * 7
    assert len(comm.sums) == 4 and all(len(s) == 3 and s[2] == 63 for s in comm.sums)
    assert h2.meta["ranks"] == 1


def test_only_rank_0_talks():
    x, y = blobs()
    lines = []
    train(_net(("numpy", None)), (x, y), batch_size=10, iters=3, comm=OneRankComm(rank=1),
          log=lines.append)
    assert lines == []


# -- callbacks on their own ----------------------------------------------------------


class FakeRun:
    """The little of a Run that the schedule and early stopping use."""

    def __init__(self):
        self.xp = xpnn.get_namespace("numpy")
        self.base_lr, self.lr, self.iteration, self.error = 0.5, 0.5, 0, None
        self.state = {"params": {"W1": np.ones(2)}}
        self.meta = {}
        self.net = type("Net", (), {"params": {}})()

    def set_lr(self, lr):
        self.lr = lr


def test_lr_schedule_callback_alone():
    from xpnn.training.callbacks import LRSchedule

    run, cb = FakeRun(), LRSchedule(StepLR(2, gamma=0.1))
    seen = []
    cb.on_train_begin(run)
    for it in range(5):
        run.iteration = it
        cb.before_step(run)
        seen.append(run.lr)
    assert seen == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])


def test_early_stopping_callback_alone_keeps_a_copy():
    from xpnn.training.callbacks import EarlyStopping

    run, cb = FakeRun(), EarlyStopping(patience=2)
    assert not cb.on_evaluation(run, {"iteration": 0, "test_loss": 1.0})
    run.state["params"]["W1"][:] = 7.0  # written in place after the best evaluation
    assert not cb.on_evaluation(run, {"iteration": 1, "test_loss": 2.0})
    assert cb.on_evaluation(run, {"iteration": 2, "test_loss": 1.5})
    assert run.meta["stopped_early"] and run.meta["best_iteration"] == 0
    cb.on_train_end(run)
    np.testing.assert_array_equal(run.net.params["W1"], np.ones(2))


def test_optimizer_state_continues_across_runs_but_not_after_divergence():
    x, y = blobs()
    opt = Adam(lr=0.01)
    net = _net(("numpy", None))
    train(net, (x, y), optimizer=opt, batch_size=10, iters=5, **QUIET)
    assert int(opt.state["count"]) == 5
    train(net, (x, y), optimizer=opt, batch_size=10, iters=3, **QUIET)
    assert int(opt.state["count"]) == 8
    sgd = SGD(1e30)
    with pytest.raises(TrainingDivergedError):
        train(_mse_net(("numpy", None)), _regression(np.asarray), optimizer=sgd,
              batch_size=10, iters=50, **QUIET)
    assert sgd.state is None
