"""Mini-batch training on any array-API backend, with the data kept on the device.

``train(net, (x, t), (x_test, t_test), optimizer=Adam(lr=1e-3), epochs=10)`` runs the
book's loop (sample a batch, gradient, update, evaluate now and then) and returns a
``History``.

How the loop stays on the device
  The data sets are validated once and stay where they are. Mini-batch indices come
  from per-epoch permutations drawn on the host (``np.random.default_rng(seed)``) and
  are uploaded in blocks of up to 1000 iterations as one int64 array; each batch is
  gathered on the device with ``xp.take``. Nothing is read back to the host between
  evaluations, so an accelerator never waits for Python.

Divergence (NaN/inf)
  A NaN/inf loss shows up as NaN/inf gradients and so as NaN/inf parameters, which are
  checked after every update. Where reading a value is free (host-memory backends, see
  ``_checks_every_iteration``) the check is exact: the error names the update that
  went bad, and the parameters from just before it are put back (or, if their loss is
  not finite either, those of the last evaluation). On accelerators the check is an
  ``xp.where`` on the device that remembers the first bad iteration; it is read at the
  next evaluation, and the parameters of the last good evaluation are put back. A
  NaN/inf loss at an evaluation counts as divergence too (a loss can overflow while
  the parameters are still finite). ``meta["restored_iteration"]`` says which
  parameters the network was left with.

Iterations are counted from 1: "iteration k" is the k-th update, and the history's
record at iteration k is taken after it (iteration 0 is the untrained network).
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np

from ..optim.optimizers import SGD, make_optimizer
from .history import FIELDS, History

__all__ = ["FIELDS", "History", "TrainingDivergedError", "train"]

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


def _checks_every_iteration(net) -> bool:
    """True where reading a device value back costs nothing (arrays in host memory:
    numpy, array_api_strict, torch on the CPU). There the divergence check runs exactly
    after every update; elsewhere it stays on the device until the next evaluation."""
    if net.backend in ("numpy", "array_api_strict"):
        return True
    if net.backend == "torch":
        return str(net.device) == "cpu"
    return False


def _all_finite(xp, params: dict):
    """0-d boolean device array: every parameter is free of NaN and inf.

    One reduction per parameter: a sum is finite exactly when its terms are, except
    when finite terms overflow it, and parameters near the dtype's maximum have
    diverged anyway. (isfinite + all took two passes and a boolean temporary.)"""
    total = None
    for p in params.values():
        s = xp.sum(p)
        total = s if total is None else total + s
    return xp.isfinite(total)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


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


def _total_iterations(iters, epochs, per_epoch: int) -> int:
    if iters is not None and epochs is not None:
        raise ValueError(f"give iters or epochs, not both (got iters={iters}, epochs={epochs})")
    if iters is not None:
        return _positive_int(iters, "iters")
    if epochs is None:
        epochs = 1
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real):
        raise TypeError(f"epochs must be a positive number, got {epochs!r}")
    if not (epochs > 0 and math.isfinite(epochs)):
        raise ValueError(f"epochs must be positive and finite, got {epochs!r}")
    return max(1, round(epochs * per_epoch))


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


def _metrics(net, x, T, chunk: int):
    """Loss and accuracy (None for 'mse') over the whole set, in chunks of ``chunk``
    rows weighted by their size; reading them synchronises with the device."""
    has_acc = net.loss_name != "mse"
    n = x.shape[0]
    if n <= chunk:
        loss = net.loss_prepared(x, T)
        acc = net.accuracy_prepared(x, T) if has_acc else None
    else:
        loss = acc = 0.0
        for s in range(0, n, chunk):
            stop = min(n, s + chunk)
            xc, Tc = x[s:stop, :], T[s:stop, :]
            w = xc.shape[0] / n
            loss = loss + w * net.loss_prepared(xc, Tc)
            if has_acc:
                acc = acc + w * net.accuracy_prepared(xc, Tc)
    return float(loss), (float(acc) if has_acc else None)


def _factor(schedule, iteration: int) -> float:
    factor = schedule(iteration)
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (
        factor >= 0 and math.isfinite(factor)
    ):
        raise ValueError(
            f"lr_schedule({iteration}) gave {factor!r}; factors must be finite and >= 0"
        )
    return float(factor)


def _make_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="it", dynamic_ncols=True, leave=True)


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def _eval_line(record: dict, total: int) -> str:
    line = (
        f"iter {record['iteration']}/{total} (epoch {record['epoch']:.2f}): "
        f"train loss {_fmt(record['train_loss'])}"
    )
    if record["train_acc"] is not None:
        line += f" acc {_fmt(record['train_acc'])}"
    if record["test_loss"] is not None:
        line += f" | test loss {_fmt(record['test_loss'])}"
        if record["test_acc"] is not None:
            line += f" acc {_fmt(record['test_acc'])}"
    return line


def _summary(history: History) -> str:
    last, meta = history.final, history.meta
    text = f"trained {meta['iterations']} iterations in {meta['wall_time']:.1f} s: "
    if last["train_acc"] is not None:
        text += f"train acc {last['train_acc']:.4f}"
        if last["test_acc"] is not None:
            text += f", test acc {last['test_acc']:.4f}"
    else:
        text += f"train loss {last['train_loss']:.4g}"
        if last["test_loss"] is not None:
            text += f", test loss {last['test_loss']:.4g}"
    if meta.get("stopped_early"):
        text += (
            f" (stopped early; best test loss {meta['best_test_loss']:.4g} at iteration "
            f"{meta['best_iteration']} restored)"
        )
    elif meta.get("stopped_by_callback"):
        text += " (stopped by a callback)"
    return text


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
    eval_batch_size=10000,
    log=print,
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
    seed             seed of the host generator for the mini-batch permutations
    progress         tqdm bar (or, without tqdm, one line per evaluation) and a final
                     summary through ``log``; False prints nothing
    callbacks        ``cb(record: dict, net)`` after every evaluation; returning True
                     stops training
    lr_schedule      ``schedule(iteration) -> factor`` (iteration from 0); each update
                     uses ``optimizer.lr = base_lr * factor`` (lr is reset to base_lr
                     when train returns)
    early_stopping   patience: stop when the test loss has not improved for that many
                     evaluations (needs ``test``); the parameters of the best test loss
                     are restored whenever it is set, also at a normal end
    eval_batch_size  rows per chunk when evaluating the full sets
    log              where messages go (default print)

    Raises ``TrainingDivergedError`` (a ValueError, with ``.iteration`` and
    ``.history``) if the loss or parameters become NaN/inf; the parameters are then
    restored to the last finite ones (see the module docstring).
    """
    wall_start = time.perf_counter()
    if not (hasattr(net, "gradient_prepared") and hasattr(net, "params")):
        raise TypeError(f"net must be an xpnn.MLP, got {type(net).__name__}")
    xp = net.xp

    # -- validate everything once -----------------------------------------------------
    x, T = _prepare_set(net, train, "train")
    test_set = None if test is None else _prepare_set(net, test, "test")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({n} rows); "
                f"use batch_size=None for full-batch gradient descent"
            )
    per_epoch = 1 if batch_size is None else -(-n // batch_size)
    total = _total_iterations(iters, epochs, per_epoch)
    eval_every = per_epoch if eval_every is None else _positive_int(eval_every, "eval_every")
    eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")

    if optimizer is None:
        optimizer = SGD(lr=0.1)
    elif isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer)
    if not callable(getattr(optimizer, "update", None)) or not hasattr(optimizer, "lr"):
        raise TypeError(
            f"optimizer must have update(params, grads) and an lr attribute, got {optimizer!r}"
        )
    base_lr = float(optimizer.lr)

    if gradient == "backprop":
        if h is not None:
            raise ValueError("h (the finite-difference step) applies only to gradient='numerical'")
        grad_fn = net.gradient_prepared
    elif gradient == "numerical":
        h = net.default_h() if h is None else h
        if isinstance(h, bool) or not isinstance(h, numbers.Real) or not (
            h > 0 and math.isfinite(h)
        ):
            raise ValueError(f"h must be a positive finite number, got {h!r}")
        h = float(h)

        def grad_fn(xb, Tb):
            return net.numerical_gradient_prepared(xb, Tb, h)
    else:
        raise ValueError(f"gradient must be 'backprop' or 'numerical', not {gradient!r}")

    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables cb(record, net), got {cb!r}")
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError(f"lr_schedule must be a callable schedule(iteration) -> factor, "
                        f"got {lr_schedule!r}")
    if early_stopping is not None:
        early_stopping = _positive_int(early_stopping, "early_stopping")
        if test_set is None:
            raise ValueError("early_stopping watches the test loss: pass test=(x, t)")
    if not bool(_all_finite(xp, net.params)):
        raise ValueError("the network's parameters contain NaN or inf before training")

    if not progress or log is None:
        def say(*args, **kwargs):
            pass
    else:
        say = log

    exact = _checks_every_iteration(net)
    history = History(
        {
            "backend": net.backend,
            "device": str(net.device),
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
            "seed": (seed if seed is None else int(seed) if isinstance(seed, numbers.Integral)
                     else repr(seed)),
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
            "exact_divergence_check": exact,
            "elapsed_includes_eval": False,
            "train_time": 0.0,
            "wall_time": 0.0,
        }
    )
    meta = history.meta
    if gradient == "numerical" and net.dtype_name == "float32":
        note = (
            f"note: numerical gradients in float32 use h={h:g} and are only ~1e-3 relative "
            f"accuracy (central differences in float32 with h=1e-4 have errors larger than "
            f"the W1 gradient itself); use dtype='float64' for numerical training"
        )
        meta["note"] = note
        say(note)

    # -- state --------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    batches = None if batch_size is None else _BatchIndices(rng, n, batch_size)
    block_iters = 1 if batch_size is None else max(
        1, min(_BLOCK_ITERS, _BLOCK_INDICES // batch_size)
    )
    block, block_start, block_stop = None, 0, 0
    dev = net.device
    if not exact:  # on-device bookkeeping of the first bad iteration
        first_bad = xp.asarray(-1, dtype=xp.int64, device=dev)
        it_dev = xp.asarray(1, dtype=xp.int64, device=dev)

    # "good": the parameters of the last evaluation (finite loss), taken at "good_it"
    run = {"good": dict(net.params), "good_it": 0, "best": None, "best_loss": math.inf,
           "waited": 0}
    train_time = 0.0
    it = 0
    bar = _make_bar(total) if progress else None

    def diverged(iteration: int, why: str, restore: dict, restored_iteration: int):
        """Put finite parameters back and build the error (the caller raises it)."""
        net.params.update(restore)
        meta["diverged_at"] = iteration
        meta["restored_iteration"] = restored_iteration
        meta["iterations"] = iteration
        meta["train_time"] = train_time
        meta["wall_time"] = time.perf_counter() - wall_start
        start = " (the starting ones)" if restored_iteration == 0 else ""
        return TrainingDivergedError(
            f"training diverged at iteration {iteration}: {why} (lr={optimizer.lr:g}); "
            f"the parameters were restored to those after iteration {restored_iteration}"
            f"{start}. Try a smaller learning rate.",
            iteration,
            history,
        )

    def evaluate(iteration: int) -> bool:
        """Record one evaluation; True when training should stop."""
        train_loss, train_acc = _metrics(net, x, T, eval_batch_size)
        test_loss = test_acc = None
        if test_set is not None:
            test_loss, test_acc = _metrics(net, *test_set, eval_batch_size)
        if not (math.isfinite(train_loss) and (test_loss is None or math.isfinite(test_loss))):
            where = "the training" if not math.isfinite(train_loss) else "the test"
            raise diverged(
                iteration,
                f"{where} loss is {train_loss if where == 'the training' else test_loss}",
                run["good"],
                run["good_it"],
            )
        run["good"], run["good_it"] = dict(net.params), iteration
        record = {
            "iteration": iteration,
            "epoch": iteration / per_epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "elapsed": train_time,
            "lr": float(optimizer.lr),
        }
        history.append(record)
        if bar is not None:
            post = {"loss": f"{train_loss:.4f}"}
            if train_acc is not None:
                post["acc"] = f"{train_acc:.4f}"
            if test_acc is not None:
                post["test_acc"] = f"{test_acc:.4f}"
            elif test_loss is not None:
                post["test_loss"] = f"{test_loss:.4f}"
            bar.set_postfix(post, refresh=False)
        elif progress:
            say(_eval_line(record, total))

        stop = False
        if early_stopping is not None:
            if test_loss < run["best_loss"]:
                run["best"], run["best_loss"], run["waited"] = dict(net.params), test_loss, 0
                meta["best_iteration"], meta["best_test_loss"] = iteration, test_loss
            else:
                run["waited"] += 1
                if run["waited"] >= early_stopping:
                    meta["stopped_early"] = stop = True

        pre_callbacks = dict(net.params)
        for cb in callbacks:
            if cb(dict(record), net):
                meta["stopped_by_callback"] = stop = True
        if any(net.params[k] is not v for k, v in pre_callbacks.items()):
            if not bool(_all_finite(xp, net.params)):
                raise diverged(iteration, "a callback left NaN or inf parameters",
                               pre_callbacks, iteration)
            run["good"] = dict(net.params)
        return stop

    # -- the loop -------------------------------------------------------------------------
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            if lr_schedule is not None:
                optimizer.lr = base_lr * _factor(lr_schedule, 0)
            stop = evaluate(0)
            mark = time.perf_counter()
            while it < total and not stop:
                # one step: gather a batch on the device, gradient, update. (The body
                # has fixed shapes, so a later cuda_graph= option can capture it.)
                if lr_schedule is not None:
                    optimizer.lr = base_lr * _factor(lr_schedule, it)
                if batches is None:
                    xb, Tb = x, T
                else:
                    if it >= block_stop:
                        block_start, block_stop = it, min(total, it + block_iters)
                        block = xp.asarray(batches.block(block_start, block_stop), device=dev)
                    rows = block[it - block_start, :]
                    xb, Tb = xp.take(x, rows, axis=0), xp.take(T, rows, axis=0)
                before = dict(net.params)  # references: arrays are never written into
                optimizer.update(net.params, grad_fn(xb, Tb))
                it += 1
                if exact:
                    if not bool(_all_finite(xp, net.params)):
                        train_time += time.perf_counter() - mark
                        # the parameters before this update are finite, but their loss
                        # may not be (an overflowing loss with finite gradients): check
                        # once, else fall back to the last evaluation's
                        net.params.update(before)
                        if math.isfinite(_metrics(net, x, T, eval_batch_size)[0]):
                            raise diverged(it, "the parameters became NaN or inf", before,
                                           it - 1)
                        raise diverged(it, "the parameters became NaN or inf", run["good"],
                                       run["good_it"])
                else:
                    bad = xp.logical_and(first_bad < 0, xp.logical_not(_all_finite(xp, net.params)))
                    first_bad = xp.where(bad, it_dev, first_bad)
                    it_dev = it_dev + 1
                if bar is not None:
                    bar.update(1)

                if it % eval_every == 0 or it == total:
                    bad_at = -1 if exact else int(first_bad)  # waits for the device
                    train_time += time.perf_counter() - mark
                    if bad_at >= 0:
                        raise diverged(bad_at, "the parameters became NaN or inf", run["good"],
                                       run["good_it"])
                    stop = evaluate(it)
                    mark = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
        optimizer.lr = base_lr

    if early_stopping is not None and run["best"] is not None:
        net.params.update(run["best"])
    meta["iterations"] = it
    meta["epochs"] = it / per_epoch
    meta["train_time"] = train_time
    meta["wall_time"] = time.perf_counter() - wall_start
    say(_summary(history))
    return history
