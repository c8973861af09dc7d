"""Resuming a training run: everything a run needs to continue, as host arrays and a
JSON-able dict, and back.

``capture(run) -> TrainingState(arrays, meta)`` takes a ``Run`` (``xpnn.training.
runner``) apart; ``restore(run, callbacks, state)`` puts a fresh ``Run`` of the same
training at the captured point. Neither knows a file format: ``save_resumable``
writes the pair into a checkpoint (``xpnn.io.checkpoint.save``'s ``extra`` tensors and
``extra_meta``), ``train(..., resume=path)`` reads it back.

What is captured
  state/<path>     every leaf of the step state (``Step.init``'s nest of dicts: the
                   parameters, the optimiser's state whatever its slots are called, the
                   iteration count, the first-bad flag, the rate of the next step),
                   named by its path of keys (``state/opt/W1/m``), never by knowing
                   the optimiser. Restoring builds the structure with ``step.init()``
                   and fills it leaf by leaf, checking names, shapes and dtypes.
  history/<field>  the evaluations so far, one float64 (iteration: int64) array per
                   field (None stored as NaN: a recorded loss is never NaN)
  callbacks/...    the state of callbacks that hold some (``Callback.get_state``:
                   EarlyStopping's best copy, patience count)
  meta             the iteration, the host learning rate, the training time so far,
                   the sampler's generator state, the history's meta, and the settings
                   that decide the trajectory (optimizer, hyper-parameters, batch size,
                   training rows, seed, schedule, ...), checked on restore.

The sampler (``_BatchIndices``) draws epoch e's permutation from one host generator in
order, so its state is the generator's state before epoch 0 (``bit_generator.state``)
and the position is the iteration: a restored sampler draws the epochs up to the
iteration's again (cheap next to training: one ``permutation(N)`` per epoch). This
works on every rank of a data-parallel run, whose shards (and so whose generators'
later states) may differ while the seed is the same; only rank 0 writes.

The learning-rate schedule's position is the iteration (a schedule is a function of
it); the rate of the next step is part of the step state and checked to be the same
bits after restoring.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import array_api_compat
import numpy as np

from ..backend import asarray, device_of, to_numpy

__all__ = ["FORMAT", "VERSION", "TrainingState", "capture", "restore", "save_resumable",
           "state_of"]

FORMAT = "xpnn-resume"
VERSION = 1
STATE, HISTORY, CALLBACKS = "state/", "history/", "callbacks/"
#: settings that decide the trajectory: a resumed run must have the same ones
_SAME = ("optimizer", "batch_size", "n_train", "gradient", "h", "early_stopping",
         "eval_batch_size", "ranks", "dtype")


class TrainingState(NamedTuple):
    """Host NumPy arrays by name and a JSON-able dict: a run's resume point."""

    arrays: dict
    meta: dict


# -- trees ---------------------------------------------------------------------------


def flatten(tree, prefix: str = "") -> dict:
    """{'a/b/c': leaf} for a nest of dicts (sorted keys); keys must be strings without
    '/'. An empty dict has no leaves."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key in sorted(tree):
        if not isinstance(key, str) or "/" in key or not key:
            raise ValueError(f"cannot name a state entry {key!r} under {prefix!r}: keys "
                             f"must be non-empty strings without '/'")
        out.update(flatten(tree[key], f"{prefix}{key}/"))
    return out


def _host_copy(x) -> np.ndarray:
    return np.array(to_numpy(x), copy=True)


def _like(host: np.ndarray, template, name: str, what: str):
    """``host`` as an array of ``template``'s backend, device and dtype, after checking
    that it is the same entry (shape, dtype; integer counters may change width)."""
    want = to_numpy(template)
    if host.shape != want.shape:
        raise ValueError(f"{what}: {name} has shape {host.shape}, the run expects "
                         f"{want.shape}")
    if host.dtype != want.dtype:
        ints = host.dtype.kind in "iu" and want.dtype.kind in "iu"
        if not ints or (host.size and (host.min() < np.iinfo(want.dtype).min
                                      or host.max() > np.iinfo(want.dtype).max)):
            raise ValueError(f"{what}: {name} is {host.dtype}, the run expects {want.dtype}")
        host = host.astype(want.dtype)
    xp = array_api_compat.array_namespace(template)
    return asarray(np.array(host, copy=True), backend=xp, device=device_of(template))


def fill(template, arrays: dict, prefix: str, what: str):
    """``template`` (a nest of dicts of backend arrays) with every leaf replaced by
    ``arrays[prefix + its path]``; ValueError naming the entries that are missing,
    extra, or of another shape or dtype."""
    names = flatten(template)
    have = {k[len(prefix):] for k in arrays if k.startswith(prefix)}
    missing, extra = sorted(set(names) - have), sorted(have - set(names))
    if missing or extra:
        parts = ([f"it lacks {', '.join(missing)}"] if missing else []) + (
            [f"it has {', '.join(extra)} that this run does not"] if extra else [])
        raise ValueError(f"{what}: {'; '.join(parts)}")
    leaves = {name: _like(np.asarray(arrays[prefix + name]), leaf, name, what)
              for name, leaf in names.items()}

    def rebuild(tree, path):
        if not isinstance(tree, dict):
            return leaves[path[:-1]]
        return {key: rebuild(tree[key], f"{path}{key}/") for key in tree}

    return rebuild(template, "")


# -- capture -------------------------------------------------------------------------


def _history_arrays(history) -> tuple[dict, list]:
    arrays, absent = {}, []
    for name in history.fields:
        values = getattr(history, name)
        if values and all(v is None for v in values):
            absent.append(name)
        if name == "iteration":
            arrays[HISTORY + name] = np.asarray(values, dtype=np.int64)
        else:
            arrays[HISTORY + name] = np.asarray(
                [math.nan if v is None else v for v in values], dtype=np.float64)
    return arrays, absent


def capture(run, callbacks=()) -> TrainingState:
    """The resume point of ``run`` as host arrays and a JSON-able dict: the last
    completed step (or, after a divergence, the state training was rolled back to)."""
    from .history import _jsonable

    point = run.resume_point()
    state, lr, iteration = point["state"], point["lr"], point["iteration"]
    arrays = {STATE + name: _host_copy(leaf) for name, leaf in flatten(state).items()}
    history_arrays, absent = _history_arrays(run.history)
    arrays.update(history_arrays)
    states = {}
    for key, cb in _keyed(callbacks):
        got = cb.get_state(run)
        if got is None:
            continue
        cb_arrays, cb_meta = got
        for name, value in flatten(cb_arrays).items():
            arrays[f"{CALLBACKS}{key}/{name}"] = _host_copy(value)
        states[key] = _jsonable(cb_meta)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": iteration,
        "lr": lr,
        "train_time": run.train_time,
        "sampler": None if run.batches is None else run.batches.get_state(),
        "history": {"meta": _jsonable(run.history.meta), "absent": absent},
        "callbacks": states,
        "settings": settings(run),
    }
    return TrainingState(arrays, meta)


def settings(run) -> dict:
    """What decides a run's trajectory (checked when resuming)."""
    m = run.meta
    return {
        "optimizer": m["optimizer"],
        "optimizer_params": m["optimizer_params"],
        "pure_optimizer": bool(run.step.pure_optimizer),
        "lr_schedule": m["lr_schedule"],
        # n_train: the rows of all ranks (each rank's shard is its own)
        "batch_size": m["batch_size"], "n_train": m["n_train"], "seed": m["seed"],
        "gradient": m["gradient"], "h": m["h"], "early_stopping": m["early_stopping"],
        "eval_batch_size": m["eval_batch_size"], "ranks": m["ranks"], "dtype": m["dtype"],
        "total": run.total, "finished": bool(run.finished),
    }


def _keyed(callbacks):
    """(key, callback) with a key per callback class, numbered when repeated."""
    seen: dict = {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        yield (name if seen[name] == 1 else f"{name}{seen[name]}"), cb


# -- restore -------------------------------------------------------------------------


def check(meta: dict, run, lr_schedule) -> None:
    """ValueError unless ``meta`` is a resume point this ``run`` can continue."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("holds no training state to resume (not written by "
                         "xpnn.save_resumable or the CLI)")
    if meta.get("version") != VERSION:
        raise ValueError(f"training state version {meta.get('version')!r} is not one this "
                         f"xpnn reads ({VERSION})")
    old, new = meta["settings"], settings(run)
    if not old["pure_optimizer"] or not new["pure_optimizer"]:
        raise ValueError("resuming needs an xpnn.optim optimizer: a book-style object with "
                         "only update(params, grads) keeps its state in itself")
    differ = [k for k in _SAME if old[k] != new[k]]
    op_old = {k: v for k, v in old["optimizer_params"].items() if k != "lr"}
    op_new = {k: v for k, v in new["optimizer_params"].items() if k != "lr"}
    if op_old != op_new:
        differ.append("optimizer_params")
    if new["seed"] is not None and old["seed"] != new["seed"]:
        differ.append("seed")
    if differ:
        shown = "; ".join(f"{k}: checkpoint {old[k]}, now {new[k]}" for k in differ)
        raise ValueError(f"the checkpoint was written by a different run ({shown}); "
                         f"resume with the same settings")
    if old["ranks"] > 1 and old["seed"] is None and meta["sampler"] is not None:
        raise ValueError("the checkpoint's run had several ranks and no seed: each rank "
                         "drew its own batch order, which the checkpoint (rank 0's) cannot "
                         "restore; such a run cannot be resumed exactly")
    mine, theirs = (None if lr_schedule is None else repr(lr_schedule)), old["lr_schedule"]
    comparable = mine is None or theirs is None or " at 0x" not in mine + theirs
    if comparable and mine != theirs:  # a function's repr names its address: not compared
        raise ValueError(f"the checkpoint's run used lr_schedule={theirs}, this one "
                         f"{mine}; pass the same schedule")
    k = meta["iteration"]
    if k > run.total or (k == run.total and old["finished"]):
        raise ValueError(f"the checkpoint's run already reached iteration {k}; the run "
                         f"length (iters/epochs: the total, {run.total} iterations here) "
                         f"must be larger to continue")


def restore(run, callbacks, point: TrainingState) -> None:
    """Put ``run`` (fresh from ``Run(...)``, its network, optimiser and data those of
    the captured run, checked by ``check``) at the captured point."""
    arrays, meta = point
    what = "the checkpoint was written by a different optimizer/architecture"
    state = fill(run.state, arrays, STATE, what)
    run.state = run.step.placed(state)
    iteration = int(meta["iteration"])
    if int(run.state["iteration"]) != iteration:
        raise ValueError(f"damaged training state: the step state is at iteration "
                         f"{int(run.state['iteration'])}, the checkpoint says {iteration}")
    run.iteration, run.lr = iteration, float(meta["lr"])
    run.train_time = float(meta["train_time"])
    run.resumed_from = iteration
    _restore_history(run, arrays, meta["history"])
    if run.batches is not None:
        run.batches.set_state(meta["sampler"])
    cb_states = meta.get("callbacks", {})
    for key, cb in _keyed(callbacks):
        if key in cb_states:
            prefix = f"{CALLBACKS}{key}/"
            mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            cb.set_state(run, mine, cb_states[key])
    run.sync_net()


def _restore_history(run, arrays: dict, saved: dict) -> None:
    history = run.history
    n = {len(arrays.get(HISTORY + name, ())) for name in history.fields}
    if len(n) != 1:
        raise ValueError("damaged training state: the history's fields have different "
                         "lengths")
    for name in history.fields:
        values = np.asarray(arrays[HISTORY + name])
        if name == "iteration":
            setattr(history, name, [int(v) for v in values])
        elif name in saved["absent"]:
            setattr(history, name, [None] * len(values))
        else:
            setattr(history, name, [float(v) for v in values])
    old = saved["meta"]
    for key in ("best_iteration", "best_test_loss", "note"):
        if key in old:
            history.meta[key] = old[key]
    history.meta["resumed_at"] = [*old.get("resumed_at", []), run.iteration]


def params_like(net, host: dict) -> dict:
    """Host arrays as the network's parameters' backend arrays (device, dtype)."""
    if set(host) != set(net.params):
        raise ValueError(f"damaged training state: parameters {sorted(host)}, the network "
                         f"has {sorted(net.params)}")
    return {k: _like(np.asarray(host[k]), net.params[k], k, "parameters")
            for k in net.params}


# -- writing -------------------------------------------------------------------------


def state_of(source) -> TrainingState:
    """The ``TrainingState`` of a ``History`` returned by ``train``, or of an exception
    that ended it (both carry ``.training_state``), or the state itself."""
    if isinstance(source, TrainingState):
        return source
    point = getattr(source, "training_state", None)
    if point is None:
        raise ValueError(f"{type(source).__name__} carries no training state (pass the "
                         f"History xpnn.train returned, or the exception that ended it)")
    return point


def save_resumable(path, net, source, extra_meta=None) -> str:
    """Write ``net`` and the training state of ``source`` (a ``History`` returned by
    ``xpnn.train``, the exception that ended a run, or a ``TrainingState``) to one
    checkpoint at ``path`` (``xpnn.io.checkpoint.save``); ``train(..., resume=path)``
    continues from it. ``extra_meta``: more JSON-able entries (not 'resume')."""
    from ..io import checkpoint

    arrays, meta = state_of(source)
    extra = dict(extra_meta or {})
    if "resume" in extra:
        raise ValueError("extra_meta may not use the key 'resume'")
    extra["resume"] = meta
    return checkpoint.save(net, path, extra=arrays, extra_meta=extra)
