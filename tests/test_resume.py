"""Resuming a run (xpnn.training.resume, train(resume=...)): a run interrupted at a
random iteration and resumed from its checkpoint ends bitwise equal to the
uninterrupted run, for every optimizer and schedule on every backend; what a
checkpoint written on divergence or on an error holds; the clear errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import host_leaves

import xpnn
from xpnn.training import Callback, TrainingDivergedError, save_resumable

ITERS, EVAL_EVERY, BATCH, ROWS = 24, 5, 7, 30  # 7 does not divide 30: padded epochs
SCHEDULES = {"none": None, "steplr": lambda: xpnn.StepLR(5, gamma=0.5),
             "cosine": lambda: xpnn.CosineLR(ITERS, min_factor=0.1)}
LRS = {"sgd": 0.2, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
       "adam": 0.02}
#: where each case is interrupted (after step k, or before it: after the schedule set
#: the next step's rate): drawn once from this seed, shown in the test ids
INTERRUPT_SEED = 17
_CASES = list(itertools.product(xpnn.OPTIMIZERS, SCHEDULES))
_rng = np.random.default_rng(INTERRUPT_SEED)
_AT = dict(zip(_CASES, _rng.integers(1, ITERS, len(_CASES)).tolist(), strict=True))
_HOW = dict(zip(_CASES, _rng.choice(["after", "before"], len(_CASES)).tolist(), strict=True))
MATRIX = [pytest.param(opt, sched, _AT[opt, sched], _HOW[opt, sched],
                       id=f"{opt}-{sched}-{_HOW[opt, sched]}{_AT[opt, sched]}")
          for opt, sched in _CASES]


class StopAt(Callback):
    """Raises ``exc`` after step ``k``; with ``before_next``, before step k + 1 (the
    schedule has set its rate: a Ctrl-C during a step); with ``in_evaluation``, in the
    evaluation after step k, before anything is recorded."""

    def __init__(self, k, exc=KeyboardInterrupt, in_evaluation=False, before_next=False):
        self.k, self.exc = k, exc
        self.in_evaluation, self.before_next = in_evaluation, before_next

    def after_step(self, run):
        if run.iteration == self.k and not (self.in_evaluation or self.before_next):
            raise self.exc()

    def before_step(self, run):
        if run.iteration == self.k and self.before_next:
            raise self.exc()

    def before_evaluation(self, run):
        if run.iteration == self.k and self.in_evaluation:
            raise self.exc()


def _problem(backend, seed=0, dtype="float32", sizes=(4, 6, 3)):
    name, device = backend
    net = xpnn.MLP(list(sizes), activation="tanh", weight_init=0.5, dtype=dtype, seed=seed,
                   backend=name, device=device)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((ROWS + 10, sizes[0]))
    t = rng.integers(0, sizes[-1], ROWS + 10)
    x = xpnn.asarray(x, backend=name, device=device, dtype=dtype)
    t = xpnn.asarray(t, backend=name, device=device)
    return net, (x[:ROWS, :], t[:ROWS]), (x[ROWS:, :], t[ROWS:])


def _run(backend, opt, sched, init_seed=0, callbacks=(), resume=None, **kw):
    """(net, optimizer, history) of one training of the test problem."""
    net, train, test = _problem(backend, seed=init_seed)
    optimizer = xpnn.make_optimizer(opt, lr=LRS[opt])
    args = dict(batch_size=BATCH, iters=ITERS, eval_every=EVAL_EVERY, seed=3, progress=False,
                lr_schedule=None if SCHEDULES[sched] is None else SCHEDULES[sched]())
    args.update(kw)
    history = xpnn.train(net, train, test, optimizer=optimizer, callbacks=list(callbacks),
                         resume=resume, **args)
    return net, optimizer, history


def _interrupted(tmp_path, backend, opt, sched, k, exc=KeyboardInterrupt, **kw):
    """Train, stop after step k with ``exc``, save the checkpoint: (its path, the
    exception)."""
    with pytest.raises(exc) as info:
        _run(backend, opt, sched, callbacks=[StopAt(k, exc, **kw)])
    assert info.value.training_state is not None
    path = tmp_path / "ckpt.safetensors"
    save_resumable(path, _problem(backend)[0], info.value)
    return path, info.value


def _bits(a) -> tuple:
    host = xpnn.to_numpy(a)
    return str(host.dtype), host.shape, host.tobytes()


def assert_same_run(got, want):
    """Two (net, optimizer, history): parameters and optimizer state bit for bit, and
    every history field but the wall-clock 'elapsed'."""
    (net_a, opt_a, hist_a), (net_b, opt_b, hist_b) = got, want
    assert net_a.params.keys() == net_b.params.keys()
    for key in net_b.params:
        assert _bits(net_a.params[key]) == _bits(net_b.params[key]), key
    leaves_a, leaves_b = host_leaves(opt_a.state), host_leaves(opt_b.state)
    assert leaves_a.keys() == leaves_b.keys()
    for key in leaves_b:
        assert _bits(leaves_a[key]) == _bits(leaves_b[key]), key
    for field in xpnn.training.FIELDS:
        if field != "elapsed":
            assert getattr(hist_a, field) == getattr(hist_b, field), field
    for key in ("iterations", "best_iteration", "best_test_loss", "stopped_early"):
        assert hist_a.meta.get(key) == hist_b.meta.get(key), key


@pytest.mark.parametrize("opt, sched, k, how", MATRIX)
def test_interrupted_and_resumed_run_is_bitwise_the_uninterrupted_one(
        tmp_path, backend, opt, sched, k, how):
    want = _run(backend, opt, sched)
    path, exc = _interrupted(tmp_path, backend, opt, sched, k, before_next=how == "before")
    assert exc.history.meta["interrupted_at"] == k
    got = _run(backend, opt, sched, init_seed=99, resume=path)  # other initial weights
    assert got[2].meta["resumed_at"] == [k]
    assert_same_run(got, want)


@pytest.mark.parametrize("k", [EVAL_EVERY, ITERS])
def test_interrupted_during_an_evaluation_evaluates_on_resuming(tmp_path, k):
    """Stopped in the evaluation after step k (nothing recorded at k): the resumed run
    records it first, as the uninterrupted one did."""
    backend = ("numpy", None)
    want = _run(backend, "adam", "steplr")
    path, exc = _interrupted(tmp_path, backend, "adam", "steplr", k, in_evaluation=True)
    assert exc.history.iteration[-1] < k
    got = _run(backend, "adam", "steplr", init_seed=99, resume=path)
    assert_same_run(got, want)


def test_twice_interrupted_run_and_resume_from_a_checkpoint_object(tmp_path):
    backend = ("numpy", None)
    want = _run(backend, "momentum", "cosine")
    path, _ = _interrupted(tmp_path, backend, "momentum", "cosine", 4)
    with pytest.raises(KeyboardInterrupt) as info:
        _run(backend, "momentum", "cosine", resume=xpnn.read_checkpoint(path),
             callbacks=[StopAt(17)])
    save_resumable(path, _problem(backend)[0], info.value)
    got = _run(backend, "momentum", "cosine", resume=path)
    assert got[2].meta["resumed_at"] == [4, 17]
    assert_same_run(got, want)


def test_an_error_writes_a_resumable_checkpoint(tmp_path):
    backend = ("numpy", None)
    want = _run(backend, "rmsprop", "none")
    path, exc = _interrupted(tmp_path, backend, "rmsprop", "none", 13, exc=RuntimeError)
    assert exc.history.meta["interrupted_at"] == 13
    assert_same_run(_run(backend, "rmsprop", "none", resume=path), want)


def test_early_stopping_state_resumes(tmp_path):
    """The best copy and the patience count travel: stopping and the restored best
    parameters are those of the uninterrupted run."""
    backend = ("numpy", None)
    kw = dict(early_stopping=2, eval_every=1, iters=60, lr_schedule=None)
    want = _run(backend, "sgd", "none", **kw)
    assert want[2].meta["stopped_early"]  # the test covers a run that stops early
    stop = want[2].meta["iterations"]
    with pytest.raises(KeyboardInterrupt) as info:
        _run(backend, "sgd", "none", callbacks=[StopAt(stop - 2)], **kw)
    path = tmp_path / "es.safetensors"
    save_resumable(path, _problem(backend)[0], info.value)
    got = _run(backend, "sgd", "none", resume=path, **kw)
    assert_same_run(got, want)


def test_a_finished_run_continues_to_a_longer_total(tmp_path):
    """iters is the whole run's length: a finished run resumed with a larger one ends
    where a run of that length from the start ends."""
    backend = ("numpy", None)
    want = _run(backend, "nesterov", "steplr", iters=40)
    path = tmp_path / "done.safetensors"
    net, _, history = _run(backend, "nesterov", "steplr")
    save_resumable(path, net, history)
    with pytest.raises(ValueError, match="already reached iteration 24.*must be larger"):
        _run(backend, "nesterov", "steplr", resume=path)
    net, opt, hist = _run(backend, "nesterov", "steplr", iters=40, resume=path)
    # the same parameters and state; the history has one more record, at the old end
    extra = hist.iteration.index(ITERS)
    assert ITERS not in want[2].iteration
    for field in ("iteration", "train_loss", "test_acc", "lr"):
        values = getattr(hist, field)
        assert values[:extra] + values[extra + 1:] == getattr(want[2], field), field
    hist.iteration = want[2].iteration  # compared above
    for name in xpnn.training.FIELDS:
        setattr(hist, name, getattr(want[2], name))
    assert_same_run((net, opt, hist), want)


def _regression(seed=0):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3))
    net = xpnn.MLP([3, 4, 1], activation="identity", loss="mse", weight_init=0.5, seed=seed,
                   dtype="float32")
    return net, (x, x @ rng.standard_normal((3, 1)))


def _spike(iteration):
    """A schedule whose 7th step is 1e300 times too large (inf in float32): the
    parameters become NaN/inf there, and nowhere before."""
    return 1e300 if iteration == 6 else 1.0


@pytest.mark.parametrize("every_step", [True, False], ids=["exact", "at-evaluations"])
def test_divergence_checkpoint_is_the_state_it_rolled_back_to(tmp_path, every_step):
    """A diverged run's checkpoint holds the step state of the iteration its parameters
    were restored to (the step before the bad one, or the last evaluation's): the same
    bits as a run of that length, so resuming it with the same settings diverges at the
    same step again, and without the bad schedule goes on."""
    kw = dict(batch_size=7, iters=40, eval_every=4, seed=3, progress=False)

    def guard():
        return xpnn.training.DivergenceGuard(every_step=every_step)

    net, train = _regression()
    with pytest.raises(TrainingDivergedError) as info:
        xpnn.train(net, train, optimizer=xpnn.Momentum(lr=0.05), callbacks=[guard()],
                   lr_schedule=_spike, **kw)
    exc = info.value
    r = exc.history.meta["restored_iteration"]
    assert exc.training_state.meta["iteration"] == r
    assert (exc.iteration, r) == (7, 6 if every_step else 4)
    path = tmp_path / "diverged.safetensors"
    save_resumable(path, net, exc)
    # a run of r iterations from the start: the same state
    ref, train = _regression()
    ref_opt = xpnn.Momentum(lr=0.05)
    xpnn.train(ref, train, optimizer=ref_opt, lr_schedule=_spike, **{**kw, "iters": r})
    state = exc.training_state.arrays
    for key, value in host_leaves(ref_opt.state).items():
        assert _bits(state["state/opt/" + key]) == _bits(value), key
    for key, value in ref.params.items():
        assert _bits(state["state/params/" + key]) == _bits(value), key
    again, train = _regression(seed=5)
    with pytest.raises(TrainingDivergedError) as info2:
        xpnn.train(again, train, optimizer=xpnn.Momentum(lr=0.05), resume=path,
                   lr_schedule=_spike, callbacks=[guard()], **kw)
    assert info2.value.iteration == exc.iteration
    on, train = _regression(seed=5)
    history = xpnn.train(on, train, optimizer=xpnn.Momentum(lr=0.05), resume=path,
                         lr_schedule=lambda i: 1.0, **kw)
    assert history.iteration[-1] == 40 and history.meta["resumed_at"] == [r]
    assert all(math.isfinite(v) for v in history.train_loss)


def test_compiled_resume_is_bitwise_the_uninterrupted_run(tmp_path, backend):
    """compile=True (jax.jit; NumPy/strict unchanged) restores into the placed state."""
    if backend[0] not in ("jax", "numpy"):
        pytest.skip("torch.compile takes too long for a unit test; jax.jit and NumPy here")
    want = _run(backend, "adam", "cosine", compile=True)
    with pytest.raises(KeyboardInterrupt) as info:
        _run(backend, "adam", "cosine", compile=True, callbacks=[StopAt(9)])
    path = tmp_path / "c.safetensors"
    save_resumable(path, _problem(backend)[0], info.value)
    assert_same_run(_run(backend, "adam", "cosine", compile=True, resume=path), want)


# -- what does not fit is refused -----------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    backend = ("numpy", None)
    path, _ = _interrupted(tmp_path, backend, "adam", "steplr", 7)
    return path


@pytest.mark.parametrize("change, words", [
    (dict(opt="momentum"), "different run (optimizer: checkpoint adam, now momentum"),
    (dict(sched="cosine"), "lr_schedule=StepLR(step_size=5, gamma=0.5), this one "
                           "CosineLR"),
    (dict(sched="none"), "lr_schedule=StepLR(step_size=5, gamma=0.5), this one None"),
    (dict(batch_size=5), "batch_size: checkpoint 7, now 5"),
    (dict(seed=4), "seed: checkpoint 3, now 4"),
    (dict(gradient="numerical"), "gradient: checkpoint backprop, now numerical"),
    (dict(early_stopping=3), "early_stopping: checkpoint None, now 3"),
])
def test_a_different_run_is_refused(saved, change, words):
    change = dict(change)
    opt, sched = change.pop("opt", "adam"), change.pop("sched", "steplr")
    with pytest.raises(ValueError) as info:
        _run(("numpy", None), opt, sched, resume=saved, **change)
    assert words in str(info.value) and "resume=" in str(info.value), str(info.value)


def test_other_hyper_parameters_are_refused_a_new_lr_is_taken(saved):
    net, train, test = _problem(("numpy", None))
    kw = dict(batch_size=BATCH, iters=ITERS, eval_every=EVAL_EVERY, seed=3, progress=False,
              lr_schedule=xpnn.StepLR(5, gamma=0.5), resume=saved)
    with pytest.raises(ValueError, match="optimizer_params"):
        xpnn.train(net, train, test, optimizer=xpnn.Adam(lr=LRS["adam"], beta1=0.8), **kw)
    history = xpnn.train(net, train, test, optimizer=xpnn.Adam(lr=0.001), **kw)
    assert history.lr[-1] == 0.001 * 0.5 ** ((ITERS - 1) // 5)


def test_another_architecture_or_dtype_is_refused(saved):
    name = ("numpy", None)
    for net in (xpnn.MLP([4, 7, 3], activation="tanh", dtype="float32"),
                xpnn.MLP([4, 6, 3], activation="relu", dtype="float32"),
                xpnn.MLP([4, 6, 3], activation="tanh", dtype="float64")):
        _, train, test = _problem(name, dtype=net.dtype_name)
        with pytest.raises(ValueError, match="different architecture"):
            xpnn.train(net, train, test, optimizer=xpnn.Adam(lr=0.02), batch_size=BATCH,
                       iters=ITERS, seed=3, progress=False, resume=saved,
                       lr_schedule=xpnn.StepLR(5, gamma=0.5))


def test_a_checkpoint_without_training_state_or_a_book_optimizer_is_refused(saved, tmp_path):
    net, train, test = _problem(("numpy", None))
    plain = tmp_path / "plain.safetensors"
    xpnn.save(net, plain)
    with pytest.raises(ValueError, match="holds no training state"):
        xpnn.train(net, train, optimizer=xpnn.Adam(lr=0.02), batch_size=BATCH, resume=plain,
                   progress=False)

    class Book:  # the book's optimizer interface only
        lr = 0.1

        def update(self, params, grads):
            for k in params:
                params[k] = params[k] - self.lr * grads[k]

    with pytest.raises(ValueError, match="needs an xpnn.optim optimizer"):
        xpnn.train(net, train, test, optimizer=Book(), batch_size=BATCH, iters=ITERS, seed=3,
                   progress=False, resume=saved, lr_schedule=xpnn.StepLR(5, gamma=0.5))


def test_a_different_optimizer_state_layout_is_named(saved, tmp_path):
    """The step state is matched leaf by leaf: a checkpoint whose optimizer state has
    other entries (another optimizer that kept the name) says which."""
    ckpt = xpnn.read_checkpoint(saved)
    extra = {k: v for k, v in ckpt.extra.items() if not k.startswith("state/opt/W1/v")}
    extra["state/opt/W1/u"] = ckpt.extra["state/opt/W1/v"]
    bad = tmp_path / "bad.safetensors"
    xpnn.save(ckpt.net, bad, extra=extra, extra_meta=ckpt.extra_meta)
    with pytest.raises(ValueError) as info:
        _run(("numpy", None), "adam", "steplr", resume=bad)
    text = str(info.value)
    assert "different optimizer/architecture" in text
    assert "it lacks opt/W1/v" in text and "it has opt/W1/u that this run does not" in text


def test_the_batch_order_of_an_unseeded_run_resumes(tmp_path, monkeypatch):
    """seed=None: the batch order comes from fresh entropy, so only the generator state
    in the checkpoint can continue it. The generator each run gets is pinned here (the
    uninterrupted and the interrupted run the same one, the resumed run another): the
    resumed run matches only by restoring the checkpoint's state."""
    real = np.random.default_rng
    entropy = iter([12345, 12345, 999])

    def pinned(seed=None):
        return real(next(entropy) if seed is None else seed)

    monkeypatch.setattr(np.random, "default_rng", pinned)
    backend = ("numpy", None)
    want = _run(backend, "adam", "none", seed=None)
    with pytest.raises(KeyboardInterrupt) as info:
        _run(backend, "adam", "none", seed=None, callbacks=[StopAt(9)])
    assert info.value.training_state.meta["sampler"]["bit_generator"] == real(
        12345).bit_generator.state
    path = tmp_path / "unseeded.safetensors"
    save_resumable(path, _problem(backend)[0], info.value)
    assert_same_run(_run(backend, "adam", "none", seed=None, resume=path), want)
