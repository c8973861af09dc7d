"""One training step as a pure function of arrays, and its compiled form.

``step = make_step(net, optimizer)``; ``state = step.init()``; then
``state = step(state, xb, Tb)`` per mini-batch. The state is a dict of backend arrays
(a pytree for JAX):

    params      dict W1, b1, ... (the network's parameters after the last step)
    opt         the optimiser's state (``optimizer.transform.init(params)``)
    iteration   0-d int: steps taken (the k-th step sets it to k)
    first_bad   0-d int: the first step after which a parameter was NaN/inf, -1 if none
    lr          0-d float in the network's dtype: the rate of the next step (a schedule
                changes it without retracing a compiled step)

The step never writes into an array of the state it is given (it rebinds), so the
caller's previous state stays valid, except under ``compile=True`` on JAX (the state is
donated) and on CUDA (one set of preallocated buffers updated in place): there the
state passed in must not be used again.

One flat update. With an ``xpnn.optim`` optimiser (all are element-wise) the step
concatenates the gradients into one vector and updates all parameters (and each
optimiser slot) as one array: a few operations per step whatever the number of
layers, not a few per parameter. The state keeps its per-layer dicts: each array in
``params`` and ``opt`` is a view (a reshaped slice) of the flat vector, and the
update count and iteration are views of one small counter vector. An eager step that
is handed the state it returned last (same dicts, same arrays) takes the flat vectors
from there; any other state (``init``'s, a callback's new params, a compiled step's
argument) is concatenated first, one ``concat`` per vector.
"""

from __future__ import annotations

import functools
import math
import operator
from itertools import chain

import array_api_compat

from .._validation import _detached
from ..backend import device_of
from ..compile import MODES, check_mode, compile_step, function_compiler
from ..nn import functional
from ..nn.finite import all_finite, zero_vectors
from ..optim.transforms import COUNT, checked_parts, elementwise_parts
from ..tree import map_tree

#: steps whose counters (iteration, update count) an eager step computes at once
COUNTER_ROWS = 1024

__all__ = ["Step", "all_finite", "backprop_gradient_fn", "make_step", "numerical_gradient_fn"]


class FlatLayout:
    """Where each array of a dict lies in one flat vector: ``keys`` in order, each at
    ``spans[key] = (start, stop, shape)``; ``size`` elements in all.

    ``flatten(xp, arrays)`` concatenates the arrays (one ``concat``); ``views(xp, flat)``
    is the dict of reshaped slices of ``flat`` (views on NumPy and PyTorch, no
    kernel; under jax.jit slices XLA fuses). Both walk a table made once (key, slice,
    shape or None for a 1-D array): they run every eager step, where each Python-level
    lookup is host time a GPU waits for."""

    def __init__(self, arrays: dict):
        self.keys = tuple(arrays)
        self.spans, start = {}, 0
        for key, a in arrays.items():
            shape = tuple(a.shape)
            stop = start + math.prod(shape)
            self.spans[key] = (start, stop, shape)
            start = stop
        self.size = start
        self._parts = tuple((key, slice(start, stop), None if len(shape) == 1 else shape)
                            for key, (start, stop, shape) in self.spans.items())

    def fits(self, arrays: dict) -> bool:
        """Same keys (any order) and shapes."""
        return (len(arrays) == len(self.keys)
                and all(k in arrays and tuple(arrays[k].shape) == self.spans[k][2]
                        for k in self.keys))

    def flatten(self, xp, arrays: dict):
        reshape = xp.reshape
        return xp.concat([a if a.ndim == 1 else reshape(a, (-1,))
                          for a in map(arrays.__getitem__, self.keys)])

    def views(self, xp, flat) -> dict:
        reshape = xp.reshape
        return {key: flat[part] if shape is None else reshape(flat[part], shape)
                for key, part, shape in self._parts}


def _sorted_tree(tree):
    """The same nest of dicts with every dict's keys in sorted order: compiled steps
    (torch.compile guards on dict key order, CUDA graph buffers) see one fixed layout
    whatever order an optimiser's init and update build their dicts in."""
    return map_tree(lambda leaf: leaf, tree, sort=True)


def _with_params(net, method):
    """``method(x, T)`` of the network evaluated at other parameters: (params, x, T) ->
    grads. Eager only (it swaps net.params for the call)."""

    def gradient(params, x, T):
        saved = net.params
        net.params = params
        try:
            return method(x, T)
        finally:
            net.params = saved

    return gradient


def numerical_gradient_fn(net, h: float, executor=None, compile=False):
    """(params, x, T) -> the batched central-difference gradient with step ``h`` (its
    chunks computed on ``executor``'s workers when given). With ``compile`` a pure
    function of params in the form the backend's compiler takes
    (``xpnn.nn.numerical.compiled_gradient``, its chunk functions compiled by
    ``xpnn.compile.function_compiler``), for a step made with the same ``compile``
    (True or a mode)."""
    if compile:
        if executor is not None:
            raise ValueError("compile=True with an executor is not supported: the chunks "
                             "run on other workers, outside the compiled step")
        from ..nn.numerical import compiled_gradient

        mode = compile if isinstance(compile, str) else None
        return compiled_gradient(net, h, function_compiler(net.xp, net.device, mode))
    return _with_params(
        net, lambda x, T: net.numerical_gradient_prepared(x, T, h, executor=executor))


def backprop_gradient_fn(net):
    """grads = g(params, x, T): the network's backprop gradient as a pure function of
    params (``xpnn.nn.functional.gradient`` over the static ``net.arch``)."""
    # a partial, not a closure: one Python frame less per step
    return functools.partial(functional.gradient, net.arch)


def _book_transform(optimizer):
    """(init, update) around a book-style ``optimizer.update(params, grads)`` that keeps
    its own state: eager only (the state lives in the object, not in the step state)."""

    last = (None, None)  # the state's lr array last read, and its value

    def init(params):
        return {}

    def update(grads, state, params, lr):
        # float() of a device array waits for the device: read the rate only when the
        # state holds a new lr array (never written into, see Step), not every step
        nonlocal last
        if lr is not last[0]:
            last = (lr, float(lr))
        optimizer.lr = last[1]
        new = dict(params)
        optimizer.update(new, grads)
        return new, state

    return init, update


def _pure_transform(optimizer):
    """The optimiser's pure ``transform``, or None for a book-style object, including a
    subclass of an ``xpnn.optim`` optimiser that overrides ``update`` (its override is
    what the user wants run)."""
    from ..optim.optimizers import Optimizer

    transform = getattr(optimizer, "transform", None)
    if transform is None:
        return None
    owner = next((c for c in type(optimizer).__mro__ if "update" in vars(c)), None)
    if owner is not None and owner is not Optimizer:
        return None
    return transform


class Step:
    """``state = step(state, xb, Tb)``: gradient of the batch, optimiser update,
    iteration count and first-bad-iteration flag, all on the device.

    net        an ``xpnn.MLP`` (its architecture; its params seed ``init``)
    optimizer  an optimiser with a pure ``transform`` (``xpnn.optim``), or any object
               with ``update(params, grads)`` and ``lr`` (eager only)
    compile    False: plain Python; True: compiled per backend (``xpnn.compile.
               compile_step``: jax.jit, torch.compile, CUDA graphs; NumPy unchanged);
               or a mode of ``xpnn.compile.MODES`` on CUDA: "graph" (True's choice
               there), "fused" (torch.compile's kernels in xpnn's CUDA graph) or
               "reduce-overhead" (torch.compile's CUDA graphs); both PyTorch only
    comm       None, or a communicator whose ``allreduce_mean(grads, weight)`` averages
               each rank's gradient (weight: the rank's rows in the batch); eager only
    gradient   (params, x, T) -> grads; default backprop (``backprop_gradient_fn``)

    Eager steps validate the optimiser's arguments (keys, shapes, dtypes, lr) in full
    for any state but the one this step returned last (the same dicts holding the same
    arrays), which has the layout already checked and whose flat vectors the step
    kept; a state with anything rebound, even in place (``state["params"]["W1"] =
    ...``), is checked in full and concatenated again. Writing into the arrays
    themselves writes into the flat vectors they are views of.
    """

    def __init__(self, net, optimizer, *, compile=False, comm=None, gradient=None):
        if not isinstance(compile, bool) and compile not in MODES:
            raise TypeError(f"compile must be True or False (or on CUDA a mode of {MODES}), "
                            f"got {compile!r}")
        mode = compile if isinstance(compile, str) else None
        check_mode(mode, net.xp, net.device)
        self.net, self.xp, self.optimizer, self.comm = net, net.xp, optimizer, comm
        self._gradient = backprop_gradient_fn(net) if gradient is None else gradient
        transform = _pure_transform(optimizer)
        self.pure_optimizer = transform is not None
        if transform is None:
            self._init, self._update = _book_transform(optimizer)
            parts = flat = None
        else:
            self._init, self._update = transform.init, transform.update
            parts, flat = checked_parts(transform), elementwise_parts(transform)
        # xpnn's own transforms: the new state keeps the key order of the one given
        # (init's, sorted below), and the eager step can skip re-validating a layout
        self._check, self._apply = (None, None) if parts is None else parts
        # element-wise (xpnn's own): one update of the flat vectors
        self._slots, self._apply_one = (None, None) if flat is None else flat
        self._trusted = None  # (state, its arrays, its flat vectors) this step returned last
        self._ramps = {}  # dtype -> _counter_ramp
        if compile and not self.pure_optimizer:
            raise TypeError(
                f"compile=True needs an optimizer with a pure transform (xpnn.optim); "
                f"{type(optimizer).__name__} only has update(params, grads)"
            )
        if compile and comm is not None:
            raise ValueError("compile=True with comm is not supported: the gradient "
                             "average runs between ranks outside the compiled step")
        self._zeros = zero_vectors(self.xp, net.params)
        self._layout = FlatLayout(net.params)
        self._flat_zeros = self.xp.zeros((self._layout.size, 1), dtype=net.dtype,
                                         device=net.device)
        self.compiled = bool(compile)
        self.compile_mode = mode
        self.donates = False
        self._call = self.pure
        if compile:
            # every product of the step goes through these objects' ``matmul`` (the
            # layers', the finiteness flag's; the loss's in a numerical gradient)
            self._call, self.donates = compile_step(
                self.pure, self.xp, net.device, mode=mode,
                matmul_hooks=(net.arch.affine, net.loss_fn))

    def init(self, params: dict | None = None, lr: float | None = None) -> dict:
        """A first state: ``params`` (default: the network's; not copied), the
        optimiser's state (``optimizer.state`` where it has one, so training continues
        where it stopped; else a fresh one), iteration 0, no bad iteration, ``lr``
        (default ``optimizer.lr``)."""
        xp, net = self.xp, self.net
        # detached: a torch Parameter (requires_grad) would chain every update onto
        # one autograd graph that grows without bound
        params = {k: _detached(v) for k, v in (net.params if params is None
                                                else params).items()}
        lr = self.optimizer.lr if lr is None else lr
        dev = net.device
        kept = getattr(self.optimizer, "state", None) if self.pure_optimizer else None
        # the default integer dtype named: JAX makes a Python int a "weak" type, which
        # the step's results (slices of its counter vector) are not; jax.jit would
        # trace the step again on the second call
        integer = xp.asarray(0).dtype
        state = {
            "params": params,
            "opt": _sorted_tree(self._init(params) if kept is None else kept),
            "iteration": xp.asarray(0, dtype=integer, device=dev),
            "first_bad": xp.asarray(-1, dtype=integer, device=dev),
            "lr": xp.asarray(float(lr), dtype=net.dtype, device=dev),
        }
        return self.placed(state)

    def placed(self, state: dict) -> dict:
        """``state`` as this step takes it: for a compiled step, every array placed on
        the device explicitly (to_device: JAX commits it there), as the compiled step's
        own results are: jax.jit keys its cache on that placement and compiled the step
        again on the second call (0.2 s on the seed net); NumPy and torch return the
        same arrays. Unchanged for an eager step."""
        if self.compiled:
            dev = self.net.device
            state = map_tree(lambda a: array_api_compat.to_device(a, dev), state)
        return state

    def pure(self, state: dict, xb, Tb) -> dict:
        """The uncompiled step (what every backend computes; the optimiser validates
        its arguments, which under jit/torch.compile happens once, while tracing)."""
        if self._apply_one is None:
            return self._dict_step(state, xb, Tb, self._update)
        return self._flat_step(state, xb, Tb, None, eager=False)[0]

    def _gradient_of(self, state: dict, xb, Tb) -> dict:
        grads = self._gradient(state["params"], xb, Tb)
        if self.comm is not None:
            grads = self.comm.allreduce_mean(grads, xb.shape[0])
        return grads

    def _dict_step(self, state: dict, xb, Tb, update) -> dict:
        """A step of an optimiser that is not element-wise or not xpnn's (a book-style
        object, a custom transform): its update on the dicts, one parameter at a time."""
        xp = self.xp
        grads = self._gradient_of(state, xb, Tb)
        params, opt = update(grads, state["opt"], state["params"], state["lr"])
        iteration = state["iteration"] + 1
        first_bad = state["first_bad"]
        keep = all_finite(xp, params, self._zeros) | (first_bad >= 0)
        return {
            "params": params,
            "opt": opt if self._apply is not None else _sorted_tree(opt),
            "iteration": iteration,
            "first_bad": xp.where(keep, first_bad, iteration),
            "lr": state["lr"],
        }

    def _flat_step(self, state: dict, xb, Tb, flat, eager: bool):
        """(new state, its flat vectors): the step of an element-wise optimiser on flat
        vectors. ``flat`` is None (validate the state, then concatenate it) or the
        vectors this step kept for the state it returned last (eager only)."""
        xp = self.xp
        params, opt, lr = state["params"], state["opt"], state["lr"]
        grads = self._gradient_of(state, xb, Tb)
        if flat is None:
            lr = self._check(grads, opt, params, lr)
            layout, zeros = self._layout, self._flat_zeros
            if not layout.fits(params):  # a state of other shapes than the net's
                layout = FlatLayout(params)
                zeros = xp.zeros((layout.size, 1), dtype=lr.dtype, device=device_of(lr))
            P = layout.flatten(xp, params)
            S = {slot: layout.flatten(xp, {k: opt[k][slot] for k in layout.keys})
                 for slot in self._slots}
            it = state["iteration"]
            # (iteration, update count, iteration + 1): one addition advances all three
            K, table = xp.stack([it, xp.astype(opt[COUNT], it.dtype), it + 1]), None
        else:
            layout, zeros, P, S, (table, columns, row), kept_bad = flat
        G = layout.flatten(xp, grads)
        if table is not None and row + 1 < table.shape[0]:
            row += 1
        elif eager:
            # the counters of the next COUNTER_ROWS steps in one addition; the steps
            # after this one read their entries (views of its three columns), no
            # kernel, while each returns the state the one before returned
            last = K if table is None else table[row, :]
            table = last + self._counter_ramp(last.dtype)
            columns, row = (table[:, 0], table[:, 1], table[:, 2]), 0
        else:
            table, columns, row = None, None, None
        if table is None:
            K = K + 1
            iteration, count, after = K[0, ...], K[1, ...], K[2, ...]
        else:
            # 0-d arrays (``[row, ...]``; ``[row]`` gives a NumPy scalar, whose powers in
            # Adam's rate round differently)
            c0, c1, c2 = columns
            iteration, count, after = c0[row, ...], c1[row, ...], c2[row, ...]
        if count.dtype != opt[COUNT].dtype:
            count = xp.astype(count, opt[COUNT].dtype)
        P, S = self._apply_one(G, P, S, lr, count, xp)
        # finiteness: sum(P * 0) is 0 for finite P and NaN otherwise; computed as one
        # product through the Affine block's matmul, so that a compiled step routes it
        # as it routes the layers' products (CuPy: no cuBLAS call inside a capture,
        # see xpnn.compile.cupy_gemm).
        # first_bad: kept while the parameters are finite; else first_bad mod
        # (iteration + 1), which is first_bad when one was recorded (0 < first_bad <=
        # the last iteration) and the new iteration for -1
        # The flag is computed as a (1, 1) array, as the product is, the state's 0-d
        # first_bad being a view of it: array-api-compat's where() on 0-d torch
        # tensors spends ~8 us of host time on type promotion (issue 15's host-bound
        # eager step); the step this one follows kept the array behind the first_bad
        # it returned. (``%``: the array API's remainder operator, no wrapper call.)
        total = self.net.arch.affine.matmul(xp.reshape(P, (1, layout.size)), zeros)
        first_bad = state["first_bad"]
        bad = (kept_bad[1] if flat is not None and first_bad is kept_bad[0]
               else xp.reshape(first_bad, (1, 1)))
        bad = xp.where(total == total, bad, bad % after)
        first_bad = xp.reshape(bad, ())
        slot_views = {slot: layout.views(xp, S[slot]) for slot in self._slots}
        new_opt = {key: count if key == COUNT else
                   {slot: slot_views[slot][key] for slot in opt[key]} for key in opt}
        new_state = {
            "params": layout.views(xp, P),
            "opt": new_opt,
            "iteration": iteration,
            "first_bad": first_bad,
            "lr": state["lr"],
        }
        return new_state, (layout, zeros, P, S, (table, columns, row), (first_bad, bad))

    def _counter_ramp(self, dtype):
        """(COUNTER_ROWS, 1) array 1, 2, ...: added to the counters of a step, the
        counters of the steps after it (made once per dtype)."""
        ramp = self._ramps.get(dtype)
        if ramp is None:
            ramp = self.xp.arange(1, COUNTER_ROWS + 1, dtype=dtype, device=self.net.device)
            ramp = self._ramps[dtype] = self.xp.reshape(ramp, (COUNTER_ROWS, 1))
        return ramp

    def __call__(self, state: dict, xb, Tb) -> dict:
        if self.compiled:
            return self._call(state, xb, Tb)
        # Eager: the optimiser validates a state's layout once. A state this step
        # returned (the same dicts, lr, iteration and arrays) has the layout it was
        # given, so the next step skips the checks and reuses its flat vectors;
        # anything else (init's state, a new lr, params rebound by a callback) is
        # checked in full.
        trusted = self._trusted
        returned = (trusted is not None and state["params"] is trusted[0]["params"]
                    and state["opt"] is trusted[0]["opt"] and state["lr"] is trusted[0]["lr"]
                    and state["iteration"] is trusted[0]["iteration"]
                    and _unchanged(state["params"], state["opt"], trusted[1]))
        if self._apply_one is not None:
            out, flat = self._flat_step(state, xb, Tb, trusted[2] if returned else None,
                                        eager=True)
        else:
            update = self._update
            if self._apply is not None and returned:
                update = self._unchecked_update
            out, flat = self._dict_step(state, xb, Tb, update), None
        self._trusted = (out, _snapshot(out["params"], out["opt"]), flat)
        return out

    def _unchecked_update(self, grads, opt, params, lr):
        return self._apply(grads, opt, params, lr, self.xp)


def _snapshot(params: dict, opt: dict) -> tuple:
    """What ``_unchanged`` compares: ``params``, ``opt`` and each dict in ``opt`` (the
    dicts themselves), their lengths, and all their values (arrays and sub-dicts)."""
    dicts = [params, opt]
    dicts += [d for d in opt.values() if isinstance(d, dict)]
    return dicts, list(map(len, dicts)), tuple(chain.from_iterable(map(dict.values, dicts)))


def _unchanged(params: dict, opt: dict, snapshot: tuple) -> bool:
    """``params`` and ``opt`` are the snapshot's dicts and they (and the dicts in
    ``opt``) hold the very arrays they held, nothing rebound, added or removed:
    identity tests run by ``map`` in C, as this runs every eager step."""
    dicts, lengths, values = snapshot
    return (params is dicts[0] and opt is dicts[1] and list(map(len, dicts)) == lengths
            and all(map(operator.is_, chain.from_iterable(map(dict.values, dicts)), values)))


def make_step(net, optimizer, *, compile=False, comm=None) -> Step:
    """The training step of ``net`` under ``optimizer``: ``state = step(state, xb, Tb)``
    (see ``Step``); ``step.init()`` makes the first state."""
    return Step(net, optimizer, compile=compile, comm=comm)
