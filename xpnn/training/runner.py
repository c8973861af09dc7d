"""Mini-batch training on any array-API backend, with the data kept on the device.

``train(net, (x, t), (x_test, t_test), optimizer=Adam(lr=1e-3), epochs=10)`` runs the
book's loop (sample a batch, gradient, update, evaluate now and then) and returns a
``History``. The loop itself is short: everything else is a ``Callback``
(``xpnn.training.callbacks``: history, progress, early stopping, divergence, LR
schedule), and the step is the pure ``xpnn.training.step.Step``, compiled per backend
with ``compile=True``.

How the loop stays on the device
  The data sets are validated once and stay where they are. Mini-batch indices come
  from per-epoch permutations drawn on the host (``np.random.default_rng(seed)``) and
  are uploaded in blocks of up to 1000 iterations as one int64 array; each batch is
  gathered on the device with ``xp.take``. The step keeps its iteration count, learning
  rate and first-bad-iteration flag on the device, so nothing is read back between
  evaluations where a read would cost a device round trip.

Divergence (NaN/inf)
  A NaN/inf loss shows up as NaN/inf gradients and so as NaN/inf parameters, which the
  step flags. Where reading a value is free (arrays in host memory) the flag is read
  after every step: the error names the update that went bad, and the parameters from
  just before it are put back (or, if their loss is not finite either, those of the
  last evaluation). Elsewhere it is read at the next evaluation, and the parameters of
  the last good evaluation (a copy) are put back. A NaN/inf loss at an evaluation counts
  as divergence too. ``meta["restored_iteration"]`` says which parameters the network
  was left with.

Interruption
  Any exception that escapes after training started (``KeyboardInterrupt`` included)
  leaves the network with the parameters of the last completed step and carries the
  partial ``History`` as ``exc.history`` (``meta["interrupted_at"]``: that step).

Several processes (``comm``)
  An object with ``rank``, ``size``, ``allreduce_mean(grads, weight)`` and
  ``allreduce_sum(list_of_floats)``: the step averages the ranks' gradients (weighted by
  their rows), evaluations sum loss, hits and rows over the ranks, and only rank 0
  shows progress and logs.

Iterations are counted from 1: "iteration k" is the k-th update, and the history's
record at iteration k is taken after it (iteration 0 is the untrained network).
"""

from __future__ import annotations

import math
import numbers
import os
import time

import numpy as np

from ..backend import device_name, in_host_memory
from ..nn.numerical import check_h
from ..optim.optimizers import SGD, make_optimizer
from ..optim.transforms import _check_lr as _check_positive_lr
from ..optim.transforms import _check_positive_int
from . import resume as resume_module
from .callbacks import (
    Callback,
    DivergenceGuard,
    EarlyStopping,
    FunctionCallback,
    LRSchedule,
    Progress,
    Recorder,
)
from .history import FIELDS, History
from .step import Step, all_finite, numerical_gradient_fn

__all__ = ["EVAL_BATCH_SIZE", "FIELDS", "History", "Run", "TrainingDivergedError", "train"]

#: rows per chunk when evaluating the full sets: ``train``'s ``eval_batch_size`` default
#: (the CLI's memory estimate uses it too)
EVAL_BATCH_SIZE = 10000

#: iterations of mini-batch indices uploaded at once (fewer for huge batches)
_BLOCK_ITERS = 1000
_BLOCK_INDICES = 1 << 22


class TrainingDivergedError(ValueError):
    """The loss or the parameters became NaN or inf.

    ``iteration``: the update that went bad (1-based; 0 if the untrained network already
    gives a NaN/inf loss); ``history``: the ``History`` up to the last good evaluation.
    The network's parameters have been restored to finite ones before this is raised.
    """

    def __init__(self, message: str, iteration: int, history: History):
        super().__init__(message)
        self.iteration = iteration
        self.history = history


# -- helpers ---------------------------------------------------------------------------


def reads_are_free(net) -> bool:
    """True where reading a device value back costs nothing (arrays in host memory:
    numpy, array_api_strict, torch and JAX on the CPU)."""
    return bool(in_host_memory(net.xp, net.device))


def _prepare_set(net, data, what: str):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{what} must be an (x, t) pair of arrays, got {type(data).__name__}")
    x, t = data
    try:
        x = net.check_x(x)
        T = net.prepare_targets(t, x.shape[0])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what} set: {exc}") from None
    return x, T


#: the longest run: iteration counters are int64 on the device and float64 in histories
MAX_ITERATIONS = 2**53


def _total_iterations(iters, epochs, per_epoch: int) -> int:
    if iters is not None and epochs is not None:
        raise ValueError(f"give iters or epochs, not both (got iters={iters}, epochs={epochs})")
    if iters is not None:
        total, what = _check_positive_int(iters, "iters"), f"iters={iters}"
    else:
        if epochs is None:
            epochs = 1
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real):
            raise TypeError(f"epochs must be a positive number, got {epochs!r}")
        if not (epochs > 0 and math.isfinite(epochs)):
            raise ValueError(f"epochs must be positive and finite, got {epochs!r}")
        total, what = max(1, round(epochs * per_epoch)), f"epochs={epochs}"
    if total > MAX_ITERATIONS:
        raise ValueError(f"{what} means {total:.3g} iterations, more than the {MAX_ITERATIONS:.3g} "
                         f"a run can count")
    return total


class _BatchIndices:
    """The host-side stream of mini-batch rows: epoch e uses ``rng.permutation(N)``
    cut into ``ceil(N / batch_size)`` rows of ``batch_size`` indices. When batch_size
    does not divide N, the epoch's last batch is topped up with the first indices of
    the same permutation (so every row is used each epoch, and every batch has the
    same shape and no repeated row)."""

    def __init__(self, rng, n: int, batch_size: int):
        self.rng, self.n, self.batch_size = rng, n, batch_size
        self.per_epoch = -(-n // batch_size)
        self.pad = self.per_epoch * batch_size - n
        self._epoch, self._rows = -1, None
        self._initial = rng.bit_generator.state  # before epoch 0: see get_state

    def get_state(self) -> dict:
        """JSON-able: the generator's state before epoch 0 and the epochs drawn so far.
        The stream is a function of that state and the iteration alone (``block``
        draws the epochs before the one asked for), so a restored sampler needs no
        more, on every rank of a data-parallel run whatever its shard's size."""
        return {"bit_generator": self._initial, "epochs_drawn": self._epoch + 1}

    def set_state(self, state: dict) -> None:
        """Start again from ``get_state()``'s generator state (the same kind of bit
        generator is required)."""
        kind = state["bit_generator"].get("bit_generator")
        if kind != self._initial.get("bit_generator"):
            raise ValueError(f"the checkpoint's batch order comes from a {kind} generator, "
                             f"this run's from {self._initial.get('bit_generator')}")
        self.rng.bit_generator.state = state["bit_generator"]
        self._initial = self.rng.bit_generator.state
        self._epoch, self._rows = -1, None

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        while self._epoch < epoch:  # blocks are requested in order
            perm = self.rng.permutation(self.n)
            if self.pad:
                perm = np.concatenate([perm, perm[: self.pad]])
            self._rows = perm.reshape(self.per_epoch, self.batch_size)
            self._epoch += 1
        return self._rows

    def block(self, start: int, stop: int) -> np.ndarray:
        """Indices of iterations [start, stop) (0-based): int64 (stop - start, batch_size)."""
        parts, it = [], start
        while it < stop:
            epoch, row = divmod(it, self.per_epoch)
            take = min(stop - it, self.per_epoch - row)
            parts.append(self._epoch_rows(epoch)[row : row + take])
            it += take
        return np.concatenate(parts).astype(np.int64, copy=False)


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or a non-negative integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
    return int(seed)


def _check_lr(optimizer) -> float:
    """The optimiser's current rate, re-checked (it may have been set after construction)."""
    try:
        return _check_positive_lr(optimizer.lr)
    except (TypeError, ValueError):
        raise ValueError(
            f"optimizer.lr must be positive and finite, got {optimizer.lr!r}") from None


def _metrics(net, x, T, chunk: int, comm=None, params=None):
    """Loss and accuracy (None for 'mse') over the whole set (summed over the ranks of
    ``comm``), in chunks of ``chunk`` rows, at ``params`` (default the network's); one
    forward pass per chunk; reading them synchronises with the device."""
    has_acc = net.loss_fn.has_accuracy
    n = x.shape[0]
    loss_sum = hits = 0.0
    for s in range(0, n, chunk):
        stop = min(n, s + chunk)
        xc, Tc = (x, T) if stop - s == n else (x[s:stop, :], T[s:stop, :])
        loss, acc = net.loss_and_accuracy_prepared(xc, Tc, params)
        loss_sum = loss_sum + (stop - s) * loss
        if has_acc:
            hits = hits + (stop - s) * acc
    totals = [float(loss_sum), float(hits), float(n)]
    if comm is not None:
        totals = [float(v) for v in comm.allreduce_sum(totals)]
    # hits is a count: round off the float32 means' error (0.9473, not 0.94730001688)
    return totals[0] / totals[2], (round(totals[1]) / totals[2] if has_acc else None)


class Run:
    """One training run: the step state, where the loop is, the data and the record.
    Callbacks read and change it (see ``xpnn.training.callbacks``)."""

    def __init__(self, net, step, train_set, test_set, batches, total, per_epoch,
                 eval_every, eval_batch_size, optimizer, history, comm):
        self.net, self.xp, self.step = net, net.xp, step
        self.x, self.T = train_set
        self.test_set, self.batches = test_set, batches
        self.total, self.per_epoch, self.eval_every = total, per_epoch, eval_every
        self.eval_batch_size, self.optimizer, self.comm = eval_batch_size, optimizer, comm
        self.history, self.meta = history, history.meta
        self.base_lr = self.lr = float(optimizer.lr)
        self.state = step.init(lr=self.lr)
        self.reads_are_free = reads_are_free(net)
        self.iteration, self.train_time, self.error = 0, 0.0, None
        self.previous_params = self.previous_state = self.previous_lr = None
        self.taken = None  # (state lr array, host lr) of the step that made the state
        self.resumed_from, self.finished, self._rollback = None, False, None
        self.wall_start = self._mark = time.perf_counter()
        self._block, self._block_start, self._block_stop = None, 0, 0
        self._block_iters = 1 if batches is None else max(
            1, min(_BLOCK_ITERS, _BLOCK_INDICES // batches.batch_size))

    # -- used by the loop --------------------------------------------------------------

    def batch(self):
        """This iteration's (xb, Tb), gathered on the device."""
        if self.batches is None:
            return self.x, self.T
        it, xp = self.iteration, self.xp
        if it >= self._block_stop:
            self._block_start, self._block_stop = it, min(self.total, it + self._block_iters)
            host = self.batches.block(self._block_start, self._block_stop)
            self._block = xp.asarray(host, device=self.net.device)
        rows = self._block[it - self._block_start, :]
        return xp.take(self.x, rows, axis=0), xp.take(self.T, rows, axis=0)

    def advance(self):
        xb, Tb = self.batch()
        if self.step.donates:
            self.previous_state = self.previous_params = None
        else:  # with the rate of the step that made it, not the next one's
            self.previous_state = {**self.state, "lr": self.taken[0]}
            self.previous_params, self.previous_lr = self.state["params"], self.taken[1]
        self.state = self.step(self.state, xb, Tb)
        self.taken = (self.state["lr"], self.lr)
        self.iteration += 1

    def evaluate(self, callbacks) -> bool:
        """Record an evaluation (all callbacks see it); True when training should stop."""
        self.train_time += time.perf_counter() - self._mark
        for cb in callbacks:
            cb.before_evaluation(self)
        self.sync_net()
        train_loss, train_acc = _metrics(self.net, self.x, self.T, self.eval_batch_size,
                                         self.comm)
        test_loss = test_acc = None
        if self.test_set is not None:
            test_loss, test_acc = _metrics(self.net, *self.test_set, self.eval_batch_size,
                                           self.comm)
        record = {
            "iteration": self.iteration, "epoch": self.iteration / self.per_epoch,
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
            "test_acc": test_acc, "elapsed": self.train_time, "lr": self.lr,
        }
        stops = [bool(cb.on_evaluation(self, record)) for cb in callbacks]
        # callbacks may rebind (checked again, detached, only where an entry changed)
        self.state = {**self.state, "params": dict(self.net.check_params())}
        for cb in callbacks:
            cb.after_evaluation(self)
        self._mark = time.perf_counter()
        return any(stops)

    def finish(self):
        self.meta["iterations"] = self.iteration
        self.meta["epochs"] = self.iteration / self.per_epoch
        self.meta["train_time"] = self.train_time
        self.meta["wall_time"] = time.perf_counter() - self.wall_start

    # -- used by callbacks ---------------------------------------------------------------

    def set_lr(self, lr: float):
        """The rate of the next steps (a new 0-d array in the state: nothing retraces)."""
        if lr != self.lr:
            self.lr = lr
            value = self.xp.asarray(lr, dtype=self.net.dtype, device=self.net.device)
            self.state = {**self.state, "lr": value}  # never written into: see Step

    def sync_net(self):
        """net.params <- the state's parameters (the last completed step's)."""
        self.net.params = dict(self.state["params"])

    def all_finite(self, params: dict):
        return all_finite(self.xp, params)

    def data_loss(self, params: dict) -> float:
        """Training-set loss of other parameters (the network is left as it was)."""
        return _metrics(self.net, self.x, self.T, self.eval_batch_size, self.comm,
                        params=params)[0]

    def explain_loss(self, which: str) -> str:
        """Why a loss is not finite, when that can be told: outputs or weight decay."""
        net, xp = self.net, self.xp
        x, T = (self.x, self.T) if which == "train" else self.test_set
        n, chunk, data = x.shape[0], self.eval_batch_size, 0.0
        for s in range(0, n, chunk):
            z = net.forward(x[s:s + chunk, :])
            if not bool(all_finite(xp, z)):
                return " (the network's outputs are NaN or inf)"
            data += float(net.loss_fn.value(z, T[s:s + chunk, :])) * z.shape[0]
        if net.weight_decay and math.isfinite(data):
            return (f": the loss without the weight_decay term is {data / n:.4g}, so "
                    f"weight_decay={net.weight_decay:g} is too large for these parameters")
        return ""

    def resume_point(self) -> dict:
        """Where a resumed run continues: the step state (the last completed step's, or
        after a divergence the one rolled back to), its iteration and host rate."""
        if self._rollback is not None:
            return self._rollback
        state, lr = self.state, self.lr
        if self.taken is not None:  # the rate of the step that made the state, not the
            state, lr = {**state, "lr": self.taken[0]}, self.taken[1]  # next (scheduled)
        return {"state": state, "iteration": int(state["iteration"]), "lr": lr}

    def first_evaluation_due(self) -> bool:
        """Evaluate before the first step: always, except on resuming where the
        checkpoint's history already holds this iteration's record or the iteration is
        not one that is evaluated."""
        if self.resumed_from is None:
            return True
        k = self.iteration
        due = k % self.eval_every == 0 or k == self.total
        return due and (not len(self.history) or self.history.iteration[-1] != k)

    def diverged(self, iteration: int, why: str, restore: dict, restored_iteration: int,
                 state: dict | None = None, lr: float | None = None):
        """Put finite parameters back and build the error (the caller raises it).
        ``state``/``lr``: the step state (and its host rate) of ``restored_iteration``,
        where a resumed run continues (see ``resume_point``)."""
        self.net.params = dict(restore)
        if state is not None:
            self._rollback = {"state": state, "iteration": restored_iteration,
                              "lr": self.lr if lr is None else lr}
        self.meta["diverged_at"] = iteration
        self.meta["restored_iteration"] = restored_iteration
        self.finish()
        self.meta["iterations"] = iteration
        start = " (the starting ones)" if restored_iteration == 0 else ""
        return TrainingDivergedError(
            f"training diverged at iteration {iteration}: {why} (lr={self.lr:g}); "
            f"the parameters were restored to those after iteration {restored_iteration}"
            f"{start}. Try a smaller learning rate.",
            iteration,
            self.history,
        )


def _loop(run: Run, callbacks) -> None:
    """The training loop: evaluate, then step (and evaluate every eval_every) to the end."""
    for cb in callbacks:
        cb.on_train_begin(run)
    run.taken = (run.state["lr"], run.lr)
    stop = run.evaluate(callbacks) if run.first_evaluation_due() else False
    while run.iteration < run.total and not stop:
        for cb in callbacks:
            cb.before_step(run)
        run.advance()
        for cb in callbacks:
            cb.after_step(run)
        if run.iteration % run.eval_every == 0 or run.iteration == run.total:
            stop = run.evaluate(callbacks)
    run.finished = True
    run.finish()


def _run(run: Run, callbacks) -> History:
    """``_loop`` with the guarantees on the way out: on any exception the network holds
    the last completed step's parameters (or the restored ones after divergence) and
    the exception carries the partial history; every callback's on_train_end runs."""
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            _loop(run, callbacks)
        run.sync_net()
        run.history.training_state = _capture(run, callbacks)
    except BaseException as exc:
        run.error = exc
        if not isinstance(exc, TrainingDivergedError):
            run.sync_net()
            run.finish()
            run.meta["interrupted_at"] = run.iteration
        exc.history = run.history
        exc.training_state = _capture(run, callbacks)
        raise
    finally:
        try:
            for cb in callbacks:
                cb.on_train_end(run)
        finally:
            run.optimizer.lr = run.base_lr
            if run.step.pure_optimizer:  # the next train() continues from here, but
                diverged = isinstance(run.error, TrainingDivergedError)  # not from NaN
                run.optimizer.state = None if diverged else run.state["opt"]
    return run.history


def _capture(run: Run, callbacks):
    """``resume.capture`` of the run, or None where it cannot be taken (a compiled
    step interrupted while it held the state's donated buffers)."""
    try:
        return resume_module.capture(run, callbacks)
    except Exception:  # the run's own error is what the caller must see
        return None


# -- the trainer -----------------------------------------------------------------------


def train(
    net,
    train,
    test=None,
    optimizer=None,
    batch_size=100,
    iters=None,
    epochs=None,
    gradient="backprop",
    eval_every=None,
    seed=None,
    progress=True,
    callbacks=(),
    lr_schedule=None,
    early_stopping=None,
    h=None,
    eval_batch_size=EVAL_BATCH_SIZE,
    log=print,
    compile=False,
    comm=None,
    executor=None,
    resume=None,
) -> History:
    """Train ``net`` in place by mini-batch gradient descent; return the ``History``.

    train, test      (x, t) pairs of arrays on the network's backend and device:
                     x (N, sizes[0]) floating, t labels (N,) or targets (N, n_out)
    optimizer        an optimiser object (``xpnn.optim``), a name from
                     ``OPTIMIZERS`` (default hyper-parameters), or None for SGD(lr=0.1)
    batch_size       rows per update (<= N); None: full-batch gradient descent
    iters / epochs   run length: give at most one; an epoch is ceil(N / batch_size)
                     iterations; epochs may be fractional (rounded to whole
                     iterations); neither: one epoch
    gradient         'backprop' or 'numerical' (batched central differences with step
                     ``h``, default ``net.default_h()``: 1e-5 float64, 5e-3 float32)
    eval_every       iterations between evaluations (default: one epoch); the untrained
                     network (iteration 0) and the last iteration are always evaluated
    seed             seed (None or an integer >= 0) of the host generator for the
                     mini-batch permutations
    progress         tqdm bar (or, without tqdm, one line per evaluation) and a final
                     summary through ``log``; False prints nothing
    callbacks        functions ``cb(record: dict, net)`` called after every evaluation
                     (returning True stops training), or ``Callback`` objects; a
                     ``DivergenceGuard`` given here replaces the default one
    lr_schedule      ``schedule(iteration) -> factor`` (iteration from 0); each update
                     uses ``base_lr * factor`` (``optimizer.lr`` is base_lr again when
                     train returns)
    early_stopping   patience: stop when the test loss has not improved for that many
                     evaluations (needs ``test``); the parameters of the best test loss
                     are restored whenever it is set, also at a normal end
    eval_batch_size  rows per chunk when evaluating the full sets
    log              where messages go (default print)
    compile          compile the step for the backend (``xpnn.compile.compile_step``:
                     jax.jit, torch.compile, CUDA graphs); needs an ``xpnn.optim``
                     optimiser. True, or on CUDA a mode: "graph" (the default there),
                     "fused" or "reduce-overhead" (PyTorch's torch.compile modes). With
                     gradient='numerical' the batched gradient is compiled too
                     (``xpnn.nn.numerical.compiled_gradient``), not with an executor
    comm             None (one process) or a communicator (see the module docstring)
    executor         gradient='numerical' only: a concurrent.futures.Executor, a Dask
                     Client, or an xpnn.dist communicator (every rank calling) that
                     computes the numerical gradient's parameter chunks
                     (xpnn.dist.numerical_gradient)
    resume           a checkpoint (path or ``xpnn.Checkpoint``) written with its
                     training state (``xpnn.training.save_resumable``, or the CLI's
                     model.safetensors): continue that run. ``net`` must have its
                     architecture (its parameters are replaced by the checkpoint's) and
                     ``optimizer`` its kind and hyper-parameters (a different ``lr`` is
                     allowed: the way on after a divergence); batch_size, the training
                     rows, seed, gradient, lr_schedule and early_stopping must be the
                     run's too. iters/epochs are the whole run's length, so the same
                     values end where the uninterrupted run would have, bitwise equal
                     to it (see README "Resuming").

    The History returned, and any exception that ends training, carry
    ``.training_state``: what ``save_resumable`` writes.

    Raises ``TrainingDivergedError`` (a ValueError, with ``.iteration`` and
    ``.history``) if the loss or parameters become NaN/inf; the parameters are then
    restored to finite ones (see the module docstring).
    """
    if not (hasattr(net, "gradient_prepared") and hasattr(net, "params")):
        raise TypeError(f"net must be an xpnn.MLP, got {type(net).__name__}")
    if log is not None and not callable(log):
        raise TypeError(f"log must be a function like print (or None), got {log!r}")
    if comm is not None:
        _check_comm(comm)
    net.check_params()  # backend, dtype, shape, device; torch Parameters detached
    x, T = _prepare_set(net, train, "train")
    test_set = None if test is None else _prepare_set(net, test, "test")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = _check_positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({n} rows); "
                f"use batch_size=None for full-batch gradient descent"
            )
    per_epoch = 1 if batch_size is None else -(-n // batch_size)
    total = _total_iterations(iters, epochs, per_epoch)
    eval_every = per_epoch if eval_every is None else _check_positive_int(eval_every, "eval_every")
    if comm is not None:
        from ..dist.comm import check_same

        check_same(comm, {"iterations": total, "eval_every": eval_every},
                   hint="every rank must run the same steps; with shards of unequal size "
                        "epochs= and the default eval_every (one epoch) differ between "
                        "ranks, so give iters= and eval_every=")
    eval_batch_size = _check_positive_int(eval_batch_size, "eval_batch_size")
    seed = _check_seed(seed)

    if optimizer is None:
        optimizer = SGD(lr=0.1)
    elif isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer)
    if not callable(getattr(optimizer, "update", None)) or not hasattr(optimizer, "lr"):
        raise TypeError(
            f"optimizer must have update(params, grads) and an lr attribute, got {optimizer!r}"
        )
    base_lr = _check_lr(optimizer)

    if gradient == "backprop":
        if h is not None:
            raise ValueError("h (the finite-difference step) applies only to gradient='numerical'")
        if executor is not None:
            raise ValueError("executor (parameter-parallel numerical gradients) applies only "
                             "to gradient='numerical'")
        grad_fn = None
    elif gradient == "numerical":
        h = check_h(net, h)
        grad_fn = numerical_gradient_fn(net, h, executor, compile=compile)
    else:
        raise ValueError(f"gradient must be 'backprop' or 'numerical', not {gradient!r}")

    user = _user_callbacks(callbacks)
    schedule = None if lr_schedule is None else LRSchedule(lr_schedule)
    stopping = None
    if early_stopping is not None:
        stopping = EarlyStopping(_check_positive_int(early_stopping, "early_stopping"))
        if test_set is None:
            raise ValueError("early_stopping watches the test loss: pass test=(x, t)")
    if not bool(all_finite(net.xp, net.params)):
        raise ValueError("the network's parameters contain NaN or inf before training")
    point = None if resume is None else _resume_point(resume, net)
    if point is not None and hasattr(optimizer, "reset"):
        optimizer.reset()  # the step state's layout from init; its values are restored
    step = Step(net, optimizer, compile=compile, comm=comm, gradient=grad_fn)

    talk = progress and log is not None and (comm is None or comm.rank == 0)
    say = log if talk else (lambda *args, **kwargs: None)
    history = History(_meta(net, optimizer, base_lr, lr_schedule, batch_size, gradient, h,
                            seed, n, test_set, per_epoch, total, eval_every,
                            eval_batch_size, early_stopping, compile, comm))
    if gradient == "numerical" and net.dtype_name == "float32":
        note = (
            f"note: numerical gradients in float32 (h={h:g}) are coarse: on MNIST's W1 "
            f"the default h=5e-3 misses by up to ~6% of the largest gradient element, "
            f"smaller steps by more; use dtype='float64' for numerical training"
        )
        history.meta["note"] = note
        say(note)

    batches = None if batch_size is None else _BatchIndices(
        np.random.default_rng(seed), n, batch_size)
    run = Run(net, step, (x, T), test_set, batches, total, per_epoch, eval_every,
              eval_batch_size, optimizer, history, comm)
    guard = next((cb for cb in user if isinstance(cb, DivergenceGuard)), DivergenceGuard())
    user = [cb for cb in user if cb is not guard]
    chain = [guard, Recorder(), schedule, stopping, Progress(say) if talk else None, *user]
    run.meta["exact_divergence_check"] = guard.checks_every_step(run)
    chain = [cb for cb in chain if cb is not None]
    if point is not None:
        where = f"resume={_shown(resume)}"
        try:
            resume_module.check(point.meta, run, lr_schedule)
            resume_module.restore(run, chain, point)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        # the rate of the step before the resume point, as the schedule gives it: the
        # checkpoint's when the base rate is the same (then the bits of the step
        # state's rate are the checkpoint's too); a new base rate is the caller's wish
        before = max(run.iteration - 1, 0)
        lr = run.base_lr * (1.0 if schedule is None else schedule.factor(before))
        same_base = run.base_lr == point.meta["settings"]["optimizer_params"].get("lr")
        if same_base and (lr != point.meta["lr"] or not _same_lr_bits(run, point)):
            raise ValueError(
                f"{where}: the rate of step {run.iteration} was {point.meta['lr']!r} in the "
                f"checkpoint's run, {lr!r} here: pass the same lr_schedule")
        run.set_lr(lr)
        say(f"resuming from iteration {run.iteration} of {total}")
    return _run(run, chain)


def _shown(resume) -> str:
    return repr(os.fsdecode(os.fspath(resume))) if isinstance(
        resume, (str, bytes, os.PathLike)) else type(resume).__name__


def _resume_point(resume, net):
    """The ``TrainingState`` held by ``resume`` (a path or an ``xpnn.Checkpoint``), its
    architecture checked against ``net``'s."""
    from ..io.checkpoint import Checkpoint, read_checkpoint

    where = f"resume={_shown(resume)}"
    if isinstance(resume, Checkpoint):
        ckpt = resume
    elif isinstance(resume, (str, bytes, os.PathLike)):
        ckpt = read_checkpoint(resume, backend=net.xp, device=net.device)
    else:
        raise TypeError(f"resume must be a checkpoint path or an xpnn.Checkpoint, got "
                        f"{type(resume).__name__}")
    mine, theirs = net.to_config(), ckpt.net.to_config()
    differ = [k for k in ("sizes", "activations", "loss", "dtype", "weight_decay")
              if mine.get(k) != theirs.get(k)]
    if differ:
        shown = "; ".join(f"{k}: checkpoint {theirs.get(k)}, net {mine.get(k)}" for k in differ)
        raise ValueError(f"{where}: the checkpoint was written by a different "
                         f"architecture ({shown})")
    meta = ckpt.extra_meta.get("resume")
    if meta is None:
        raise ValueError(f"{where}: the checkpoint holds no training state (written by "
                         f"xpnn.save, not save_resumable); start a new run from its "
                         f"parameters with xpnn.load")
    return resume_module.TrainingState(ckpt.extra, meta)


def _same_lr_bits(run, point) -> bool:
    """Whether the step state's rate is the checkpoint's, bit for bit."""
    from ..backend import to_numpy

    saved = point.arrays.get(resume_module.STATE + "lr")
    return saved is None or to_numpy(run.state["lr"]).tobytes() == np.asarray(saved).tobytes()


#: what train() uses of a communicator (see the module docstring)
_COMM_ATTRIBUTES = ("rank", "size", "allreduce_mean", "allreduce_sum")


def _check_comm(comm) -> None:
    missing = [a for a in _COMM_ATTRIBUTES if not hasattr(comm, a)]
    if missing:
        raise TypeError(
            f"comm must be a communicator with {', '.join(_COMM_ATTRIBUTES)} (e.g. "
            f"xpnn.dist.MPIComm()), got {type(comm).__name__} without {', '.join(missing)}"
        )


def _user_callbacks(callbacks) -> list:
    if callable(callbacks) or isinstance(callbacks, Callback):
        callbacks = (callbacks,)
    return [cb if isinstance(cb, Callback) else FunctionCallback(cb) for cb in callbacks]


def _meta(net, optimizer, base_lr, lr_schedule, batch_size, gradient, h, seed, n, test_set,
          per_epoch, total, eval_every, eval_batch_size, early_stopping, compile, comm):
    meta = {
        "backend": net.backend,
        "device": device_name(net.xp, net.device),
        "dtype": net.dtype_name,
        "sizes": list(net.sizes),
        "activations": list(net.activations),
        "loss": net.loss_name,
        "weight_decay": net.weight_decay,
        "n_params": net.n_params,
        "optimizer": getattr(optimizer, "name", type(optimizer).__name__),
        "lr": base_lr,
        "optimizer_params": (
            optimizer.hyperparams() if hasattr(optimizer, "hyperparams") else {"lr": base_lr}
        ),
        "lr_schedule": None if lr_schedule is None else repr(lr_schedule),
        "batch_size": batch_size,
        "gradient": gradient,
        "h": h,
        "seed": seed,
        "n_train": n,
        "n_test": None if test_set is None else test_set[0].shape[0],
        "iters_per_epoch": per_epoch,
        "iterations_planned": total,
        "iterations": 0,
        "eval_every": eval_every,
        "eval_batch_size": eval_batch_size,
        "early_stopping": early_stopping,
        "stopped_early": False,
        "stopped_by_callback": False,
        "diverged_at": None,
        "compile": compile,
        "ranks": 1 if comm is None else int(comm.size),
        "elapsed_includes_eval": False,
        "train_time": 0.0,
        "wall_time": 0.0,
    }
    if comm is not None:  # the run's rows, not this rank's shard (which read as unused data)
        rows = [n, 0 if test_set is None else test_set[0].shape[0]]
        rows = comm.allreduce_sum(rows) if comm.size > 1 else rows
        meta.update(n_train=int(rows[0]), n_test=None if test_set is None else int(rows[1]),
                    n_train_rank=n,
                    batch_size_global=None if batch_size is None else batch_size * comm.size)
    return meta
