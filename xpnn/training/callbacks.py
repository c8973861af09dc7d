"""The pieces of the training loop that are not the step: each a small ``Callback``.

The runner (``xpnn.training.runner``) calls, for every callback in order:

    on_train_begin(run)                      once, before the first evaluation
    before_step(run)                         before each step
    after_step(run)                          after each step (run.state is the new one)
    before_evaluation(run)                   before each evaluation's metrics
    on_evaluation(run, record) -> stop       with the evaluation's record; True stops
    after_evaluation(run)                    after every on_evaluation
    on_train_end(run)                        always, last (run.error: the exception or None)

``run`` is the ``Run`` of the runner: ``net``, ``xp``, ``state`` (the step state),
``iteration``, ``total``, ``history``, ``meta``, ``lr`` (host float) and ``set_lr``,
``sync_net()`` (net.params <- state params) and ``diverged(...)``. A callback only
touches what it owns, so each can be tested with a small stand-in for ``run``.
"""

from __future__ import annotations

import math
import numbers

from ..tree import map_tree

__all__ = [
    "Callback",
    "DivergenceGuard",
    "EarlyStopping",
    "FunctionCallback",
    "LRSchedule",
    "Progress",
    "Recorder",
    "copy_params",
]


def copy_tree(xp, tree):
    """Real copies of every array of a nest of dicts (a step state, a parameter dict):
    a later in-place write or a donated buffer cannot change them."""
    return map_tree(lambda a: xp.asarray(a, copy=True), tree)


def copy_params(xp, params: dict) -> dict:
    """Real copies of the parameter arrays (``copy_tree`` of the parameter dict)."""
    return copy_tree(xp, params)


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, run):
        pass

    def before_step(self, run):
        pass

    def after_step(self, run):
        pass

    def before_evaluation(self, run):
        pass

    def on_evaluation(self, run, record: dict) -> bool:
        return False

    def after_evaluation(self, run):
        pass

    def on_train_end(self, run):
        pass

    def get_state(self, run):
        """What a resumed run needs of this callback: None (nothing), or ``(arrays,
        meta)``: a nest of dicts of arrays and a JSON-able dict (``xpnn.training.
        resume``); ``set_state(run, arrays, meta)`` (host arrays) puts them back."""
        return None

    def set_state(self, run, arrays: dict, meta: dict):
        pass


class FunctionCallback(Callback):
    """A user function ``fn(record, net)`` called after each evaluation (True stops)."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"callbacks must be callables cb(record, net), got {fn!r}")
        self.fn = fn

    def on_evaluation(self, run, record):
        if self.fn(dict(record), run.net):
            run.meta["stopped_by_callback"] = True
            return True
        return False


class Recorder(Callback):
    """Appends each evaluation's record to ``run.history``."""

    def on_evaluation(self, run, record):
        run.history.append(record)
        return False


class LRSchedule(Callback):
    """Each step's rate is ``base_lr * schedule(iteration)`` (iteration from 0)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError(f"lr_schedule must be a callable schedule(iteration) -> factor, "
                            f"got {schedule!r}")
        self.schedule = schedule

    def factor(self, iteration: int) -> float:
        try:
            factor = self.schedule(iteration)
        except OverflowError as exc:
            raise ValueError(f"lr_schedule {self.schedule!r} overflowed at iteration "
                             f"{iteration} ({exc})") from None
        except ValueError as exc:
            raise ValueError(f"lr_schedule at iteration {iteration}: {exc}") from None
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (
            factor >= 0 and math.isfinite(factor)
        ):
            raise ValueError(
                f"lr_schedule({iteration}) gave {factor!r}; factors must be finite and >= 0"
            )
        return float(factor)

    def rate(self, run, iteration: int) -> float:
        lr = run.base_lr * self.factor(iteration)
        if not math.isfinite(lr):
            raise ValueError(f"lr_schedule({iteration}) times the base rate {run.base_lr:g} "
                             f"overflows: the learning rate would be inf")
        return lr

    def on_train_begin(self, run):
        # the rate of the last step taken (of none: the first's), as the loop left it
        run.set_lr(self.rate(run, max(run.iteration - 1, 0)))

    def before_step(self, run):
        run.set_lr(self.rate(run, run.iteration))


class EarlyStopping(Callback):
    """Stop when the test loss has not improved for ``patience`` evaluations; at the
    end (normal or early) the parameters of the best test loss are put back."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = None
        self.best_loss = math.inf
        self.waited = 0

    def on_evaluation(self, run, record):
        loss = record["test_loss"]
        if loss < self.best_loss:
            self.best = copy_params(run.xp, run.state["params"])
            self.best_loss, self.waited = loss, 0
            run.meta["best_iteration"], run.meta["best_test_loss"] = record["iteration"], loss
            return False
        self.waited += 1
        if self.waited >= self.patience:
            run.meta["stopped_early"] = True
            return True
        return False

    def on_train_end(self, run):
        if run.error is None and self.best is not None:
            run.net.params.update(self.best)

    def get_state(self, run):
        best_loss = self.best_loss if math.isfinite(self.best_loss) else None
        return ({} if self.best is None else {"best": self.best},
                {"best_loss": best_loss, "waited": self.waited})

    def set_state(self, run, arrays, meta):
        from .resume import params_like

        self.waited = int(meta["waited"])
        best = arrays.get("best/" + next(iter(run.net.params)))
        if meta["best_loss"] is None or best is None:
            self.best, self.best_loss = None, math.inf
            return
        host = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
        self.best, self.best_loss = params_like(run.net, host), float(meta["best_loss"])


class DivergenceGuard(Callback):
    """Stops training with ``TrainingDivergedError`` when the parameters or a loss
    become NaN/inf, after putting finite parameters back.

    every_step  True: read the step's first-bad flag after every step (exact: the
                error names the step, and the parameters from before it are restored
                when their loss is finite); False: read it at evaluations only (no
                device round trip per step) and restore the last evaluation's.
                None: True where reading a device value costs nothing.
    Keeps a copy of the step state of the last good evaluation (real copies, so a
    callback that writes NaN into an array in place cannot spoil it): its parameters
    are put back, and the whole state is where a resumed run continues.
    """

    def __init__(self, every_step: bool | None = None):
        self.every_step = every_step
        self.exact = None  # every_step resolved for the current run
        self.good = None
        self.good_iteration = 0
        self.good_state, self.good_lr = None, None

    def _keep(self, run, params=None):
        """Copy the state of ``run`` (its parameters: ``params`` when already copied)."""
        rest = {k: v for k, v in run.state.items() if k != "params"}
        self.good = copy_params(run.xp, run.state["params"]) if params is None else params
        self.good_state = {**copy_tree(run.xp, rest), "params": self.good}
        self.good_iteration, self.good_lr = run.iteration, run.lr

    def _rolled_back(self, run, iteration, why):
        return run.diverged(iteration, why, self.good, self.good_iteration,
                            state=self.good_state, lr=self.good_lr)

    def checks_every_step(self, run) -> bool:
        """Whether the flag is read after every step of ``run``: ``every_step``, or
        where that is None, whether reads are free there."""
        return bool(run.reads_are_free if self.every_step is None else self.every_step)

    def on_train_begin(self, run):
        self.exact = self.checks_every_step(run)
        self._keep(run)

    def after_step(self, run):
        if not self.exact or int(run.state["first_bad"]) < 0:
            return
        previous = run.previous_params  # None where the step consumed its input state
        if previous is not None and math.isfinite(run.data_loss(previous)):
            raise run.diverged(run.iteration, "the parameters became NaN or inf", previous,
                               run.iteration - 1, state=run.previous_state,
                               lr=run.previous_lr)
        raise self._rolled_back(run, run.iteration, "the parameters became NaN or inf")

    def before_evaluation(self, run):
        if self.exact:
            return
        bad_at = int(run.state["first_bad"])  # waits for the device
        if bad_at >= 0:
            raise self._rolled_back(run, bad_at, "the parameters became NaN or inf")

    def on_evaluation(self, run, record):
        for which in ("train", "test"):
            loss = record[f"{which}_loss"]
            if loss is not None and not math.isfinite(loss):
                why = f"the {which}ing loss is {loss}" if which == "train" else (
                    f"the test loss is {loss}")
                raise self._rolled_back(run, record["iteration"],
                                        f"{why}{run.explain_loss(which)}")
        # runs before the user's callbacks: a copy of what they are given
        self._keep(run)
        return False

    def after_evaluation(self, run):
        """After the user's callbacks, which may have changed the parameters (rebound
        or written in place): back to the copy if they are not finite, else copy them."""
        params = run.state["params"]
        if not bool(run.all_finite(params)):
            raise self._rolled_back(run, run.iteration, "a callback left NaN or inf parameters")
        self.good = copy_params(run.xp, params)
        self.good_state = {**self.good_state, "params": self.good}


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def eval_line(record: dict, total: int) -> str:
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


def summary(history) -> str:
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


class Progress(Callback):
    """A tqdm bar (or, without tqdm, one line per evaluation through ``log``) and a
    summary line at a normal end."""

    def __init__(self, log=print):
        self.log, self.bar = log, None

    def on_train_begin(self, run):
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=run.total, initial=run.iteration, unit="it",
                        dynamic_ncols=True, leave=True)

    def after_step(self, run):
        if self.bar is not None:
            self.bar.update(1)

    def on_evaluation(self, run, record):
        if self.bar is None:
            self.log(eval_line(record, run.total))
            return False
        post = {"loss": f"{record['train_loss']:.4f}"}
        if record["train_acc"] is not None:
            post["acc"] = f"{record['train_acc']:.4f}"
        if record["test_acc"] is not None:
            post["test_acc"] = f"{record['test_acc']:.4f}"
        elif record["test_loss"] is not None:
            post["test_loss"] = f"{record['test_loss']:.4f}"
        self.bar.set_postfix(post, refresh=False)
        return False

    def on_train_end(self, run):
        if self.bar is not None:
            self.bar.close()
        if run.error is None:
            self.log(summary(run.history))
