"""The multi-layer perceptron: the book's TwoLayerNet / MultiLayerNet, once, for
every array-API backend."""

from __future__ import annotations

import math
import sys

import numpy as np

from .._validation import check_array, check_inputs, prepare_targets
from ..backend import (
    backend_name,
    device_name,
    device_of,
    dtype_name,
    get_namespace,
    resolve_device,
    resolve_dtype,
    to_numpy,
)
from . import config as _config
from . import functional as F
from . import numerical as _numerical
from .finite import NonFiniteError, locate, require_finite
from .layers import Affine, check_activation, make_activation
from .losses import LOSSES, check_loss, make_loss


def _check_sizes(sizes) -> list[int]:
    if not isinstance(sizes, (list, tuple)):
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}") from None
    return _config.check_sizes(sizes, "sizes", TypeError, bounded=False)


def _check_activations(activation, n_hidden: int) -> list[str]:
    if isinstance(activation, str):
        return [check_activation(activation)] * n_hidden  # checked even with no hidden layer
    try:
        names = list(activation)
    except TypeError:
        raise TypeError(
            f"activation must be a name or a list of names (one per hidden layer), "
            f"got {activation!r}"
        ) from None
    if len(names) != n_hidden:
        raise ValueError(
            f"got {len(names)} activations for {n_hidden} hidden layers; give one name "
            f"or one per hidden layer"
        )
    return [check_activation(n) for n in names]


def _check_parameter(net, key: str, value):
    """One entry of ``net.params``: an array of the network's backend, device, dtype and
    the architecture's shape, or an error naming it; returned detached from any
    autograd graph (a torch Parameter would otherwise chain every update onto one
    growing graph)."""
    what = f"params[{key!r}]"
    value = check_array(net.xp, net.device, value, what)
    if value.dtype != net.dtype:
        raise TypeError(
            f"{what} has dtype {value.dtype} but the network is {net.dtype_name}; convert it with "
            f"xpnn.asarray({what}, backend={net.backend!r}, dtype={net.dtype_name!r})"
        )
    want = net._shapes[key]
    if tuple(value.shape) != want:
        raise ValueError(f"{what} has shape {tuple(value.shape)}, but the architecture "
                         f"{net.sizes} needs {want}")
    return value


def _host_rng(seed):
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise TypeError(
            f"seed must be None or a non-negative integer, got {seed!r}"
        ) from None


def _init_std(init, n_in: int) -> float:
    """The std of layer weights with n_in inputs, for a checked weight_init."""
    if init == "xavier":
        return math.sqrt(1.0 / n_in)
    if init == "he":
        return math.sqrt(2.0 / n_in)
    return init


class MLP:
    """Fully connected network: Affine -> activation -> ... -> Affine -> loss.

    sizes         layer widths, e.g. [784, 50, 10]
    activation    one name for all hidden layers, or a list with one per hidden layer
    loss          'softmax_cross_entropy', 'binary_cross_entropy' (one output) or 'mse'
    weight_init   std of the Gaussian initial weights (the book's weight_init_std),
                  'xavier' (std sqrt(1/n_in)) or 'he' (std sqrt(2/n_in)); biases start at 0
    weight_decay  adds 0.5 * weight_decay * sum ||W||^2 (weights only) to the loss
    backend       'numpy', 'torch', 'cupy', 'array_api_strict', 'jax', a module or None
                  ($XPNN_BACKEND)
    device        backend device ('cpu', 'cuda', 'cuda:1', ...), None for the default
    dtype         'float32' (default) or 'float64'
    seed          seed of the host generator that draws the initial weights, so every
                  backend starts from the same parameters

    ``params`` is a dict ``W1, b1, W2, b2, ...`` of backend arrays; replacing an entry
    (``net.params["W1"] = W - lr * g``) is how parameters are updated: nothing is
    mutated in place. The maths lives in pure functions (``xpnn.nn.functional``) of
    ``net.arch`` (static: layers, loss, weight decay) and a params dict; the methods
    here check their inputs and call them with ``net.params``.
    """

    def __init__(
        self,
        sizes,
        activation="sigmoid",
        loss="softmax_cross_entropy",
        weight_init=0.01,
        weight_decay=0.0,
        backend=None,
        device=None,
        dtype="float32",
        seed=None,
        *,
        params=None,
    ):
        self.sizes = _check_sizes(sizes)
        self.activations = _check_activations(activation, len(self.sizes) - 2)
        self.loss_name = check_loss(loss)
        LOSSES[self.loss_name].check_outputs(self.sizes[-1])
        self.weight_decay = _config.check_weight_decay(weight_decay, "weight_decay", TypeError)
        init = _config.check_weight_init(weight_init, "weight_init", TypeError)
        stds = [_init_std(init, n_in) for n_in in self.sizes[:-1]]
        self.weight_init = weight_init
        n = _config.n_params(self.sizes)
        if n * 8 > sys.maxsize:  # NumPy's "array is too big" otherwise, sizes not named
            raise MemoryError(f"{self._too_big()}: {n * 8:.3g} bytes is more than any "
                              f"machine can address")

        self.xp = get_namespace(backend)
        self.backend = backend_name(self.xp)
        self.dtype = resolve_dtype(self.xp, dtype)
        self.dtype_name = dtype_name(self.xp, self.dtype)
        dev = resolve_device(self.xp, device)

        try:
            host = (self._initial_params(stds, seed) if params is None
                    else self._checked_params(params))
            self.params = {k: self._to_device(v.astype(self.dtype_name), dev)
                           for k, v in host.items()}
        except MemoryError:
            raise MemoryError(self._too_big()) from None
        except RuntimeError as exc:  # torch's allocator failing on the CPU or a GPU
            if "alloc" not in str(exc).lower() and "out of memory" not in str(exc).lower():
                raise
            raise MemoryError(f"{self._too_big()} ({exc})") from None
        self.device = device_of(self.params["W1"])

        xp = self.xp
        zero = self._to_device(np.zeros((), dtype=self.dtype_name), dev)
        self.loss_fn = make_loss(self.loss_name, xp, zero)
        self.arch = F.Architecture(
            affine=Affine(xp),
            activations=tuple(make_activation(a, xp, zero) for a in self.activations),
            loss=self.loss_fn,
            weight_decay=self.weight_decay,
        )
        self.n_layers = len(self.sizes) - 1
        self._numerical_budget = None  # bytes per numerical-gradient chunk, found once
        self._shapes = _config.param_shapes({"sizes": self.sizes})
        self._params_seen = {}  # the entries of params last checked (see check_params)

    def _too_big(self) -> str:
        n = _config.n_params(self.sizes)
        return (f"not enough memory for sizes {self.sizes}: {n:,} parameters, "
                f"{n * 8 / 2**30:.3g} GiB ({n * 8:,} bytes) while drawing them in float64 "
                f"on the host; use smaller layer widths")

    def _initial_params(self, stds, seed) -> dict:
        rng = _host_rng(seed)
        host = {}
        for i, std in enumerate(stds, start=1):
            host[f"W{i}"] = std * rng.standard_normal((self.sizes[i - 1], self.sizes[i]))
            host[f"b{i}"] = np.zeros(self.sizes[i])
            limit = float(np.finfo(self.dtype_name).max)
            if not np.all(np.abs(host[f"W{i}"]) <= limit):
                raise ValueError(
                    f"weight_init std {std:g} gives weights beyond the {self.dtype_name} "
                    f"range (inf) in W{i}; use a smaller weight_init, 'xavier' or 'he'"
                )
        return host

    def _checked_params(self, params) -> dict:
        """Host copies of given parameters, checked against the architecture (and finite
        in the net's dtype, which may be narrower than theirs)."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        host = _config.check_params({"sizes": self.sizes},
                                    {k: to_numpy(v) for k, v in params.items()})
        for k, a in host.items():
            if not np.all(np.isfinite(a.astype(self.dtype_name, copy=False))):
                raise ValueError(f"parameter {k} contains NaN or inf (in {self.dtype_name})")
        return host

    def _to_device(self, host: np.ndarray, dev):
        if dev is None:
            return self.xp.asarray(host)
        return self.xp.asarray(host, device=dev)

    def __repr__(self):
        return (
            f"MLP(sizes={self.sizes}, activation={self.activations}, loss={self.loss_name!r}, "
            f"weight_decay={self.weight_decay}, backend={self.backend!r}, "
            f"device={device_name(self.xp, self.device)!r}, dtype={self.dtype_name!r})"
        )

    # -- configuration -----------------------------------------------------------------

    def to_config(self) -> dict:
        """The architecture as plain JSON types (no parameters): format, version, sizes,
        activations, loss, dtype, weight_decay, weight_init."""
        return _config.to_config(self)

    @classmethod
    def from_config(cls, config: dict, params=None, backend=None, device=None, dtype=None,
                    seed=None):
        """Build a net from ``to_config()``'s dict, checked first (``xpnn.nn.config``). With
        ``params`` (a dict of host or backend arrays) those are checked against the
        architecture and used as they are, with no random initialisation; otherwise
        weights are drawn from ``seed``. ``dtype`` overrides the config's."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        config = _config.check_config(
            {"format": _config.FORMAT, "version": _config.VERSION, **config})
        return cls(
            config["sizes"],
            activation=config["activations"],
            loss=config["loss"],
            weight_init=config["weight_init"] or 0.01,
            weight_decay=config["weight_decay"],
            backend=backend,
            device=device,
            dtype=dtype or config["dtype"],
            seed=seed,
            params=params,
        )

    @property
    def n_params(self) -> int:
        return sum(math.prod(p.shape) for p in self.params.values())

    @property
    def hidden(self) -> tuple:
        """The hidden layers' activation blocks."""
        return self.arch.activations

    @property
    def layers(self) -> list:
        """The blocks in order: Affine, activation, Affine, ..., Affine (the Affine block
        is stateless and shared)."""
        out = []
        for act in self.arch.activations:
            out += [self.arch.affine, act]
        return out + [self.arch.affine]

    # -- checked public interface (the book's) ---------------------------------------

    def check_x(self, x):
        """Validate a batch (N, sizes[0]) and return it in the network's dtype."""
        return check_inputs(self.xp, self.device, self.dtype, self.sizes[0], x)

    def prepare_targets(self, t, n_rows: int | None = None):
        """Validate targets and return the (N, n_out) array the loss consumes."""
        return prepare_targets(
            self.xp, self.device, self.dtype, self.loss_fn, self.sizes[-1], t, n_rows
        )

    def check_params(self) -> dict:
        """``net.params``, checked against the network: exactly the keys W1, b1, ...,
        each an array of the network's backend, device, dtype and shape (else an error
        naming the parameter); a torch tensor that requires grad is replaced by its
        detached self (xpnn computes its own gradients; an autograd graph would grow
        with every update). O(number of parameters) and cached by identity: entries
        already checked are not looked at again. Every public method calls it."""
        params = self.params
        seen = self._params_seen
        if (type(params) is dict and len(params) == len(seen)
                and all(params.get(k) is v for k, v in seen.items())):
            return params
        if not isinstance(params, dict):
            raise TypeError(f"net.params must be a dict of arrays, got "
                            f"{type(params).__name__}")
        missing = [k for k in self._shapes if k not in params]
        extra = [repr(k) for k in params if k not in self._shapes]
        if missing or extra:
            raise ValueError(
                f"net.params does not match the architecture {self.sizes}: "
                + _config.mismatch(missing, ", ".join(extra)))
        checked = {}
        for key in params:
            value = params[key]
            if seen.get(key) is not value:
                value = _check_parameter(self, key, value)
                if value is not params[key]:
                    params[key] = value  # detached
            checked[key] = value
        self._params_seen = checked
        return params

    def _finite(self, value, params, x, T=None, what="output"):
        """``value`` (one reduction), or NonFiniteError naming the block that overflowed."""
        return require_finite(self.arch, params, x, value, T, what)

    def predict(self, x):
        """Output probabilities (softmax or sigmoid), raw values for mse: (N, n_out)."""
        x = self.check_x(x)
        params = self.check_params()
        return self._finite(F.predict(self.arch, params, x), params, x)

    def predict_labels(self, x):
        """Predicted class labels, an integer array (N,): the most probable class for
        softmax_cross_entropy, 1 where the probability exceeds 0.5 (else 0) for
        binary_cross_entropy; the rule ``accuracy`` scores. ValueError for mse (a
        regression: use ``predict``)."""
        x = self.check_x(x)
        params = self.check_params()
        logits = self._finite(self.forward(x, params), params, x, what="logits")
        return self.loss_fn.labels(logits)

    def loss(self, x, t):
        """Batch-mean loss plus weight decay, as a 0-d backend array (float() it to read)."""
        x = self.check_x(x)
        T = self.prepare_targets(t, x.shape[0])
        params = self.check_params()
        return self._finite(self.loss_prepared(x, T, params), params, x, T, "loss")

    def accuracy(self, x, t) -> float:
        """Fraction of correct predictions (labels or one-hot; 0/1 for binary): the
        count of hits over the rows as a Python float (9473 / 10000 = 0.9473, not the
        float32 mean's 0.9473000168800354)."""
        x = self.check_x(x)
        T = self.prepare_targets(t, x.shape[0])
        params = self.check_params()
        logits = self._finite(self.forward(x, params), params, x, what="logits")
        acc = float(self.loss_fn.accuracy(logits, T))
        n = x.shape[0]
        if n == 0 or acc != acc:  # nothing to count, or NaN: as computed
            return acc
        return round(acc * n) / n  # the float32 mean of n 0/1 values is within 0.5/n of k/n

    def gradient(self, x, t) -> dict:
        """Backprop gradient of ``loss(x, t)``: a dict with the keys of ``params``."""
        x = self.check_x(x)
        T = self.prepare_targets(t, x.shape[0])
        params = self.check_params()
        return self._finite(self.gradient_prepared(x, T, params), params, x, T, "gradient")

    def numerical_gradient(self, x, t, h=None, method="batched", memory_budget=None,
                           executor=None) -> dict:
        """Central-difference gradient of ``loss(x, t)``, dict like ``params``.

        method 'batched' (default) evaluates many perturbed parameters in broadcast
        forwards that reuse the unperturbed pass below the perturbed layer; 'loop' is
        the book's element-by-element reference. h defaults to 1e-5 in float64 and
        5e-3 in float32 (about eps**(1/3), the step that balances truncation and
        rounding error); a step below sqrt(eps) is refused. memory_budget (bytes) bounds
        the batched chunks. executor (a concurrent.futures.Executor, or an xpnn.dist
        communicator on every rank) computes the batched chunks in parallel
        (xpnn.dist.numerical_gradient).
        """
        x = self.check_x(x)
        T = self.prepare_targets(t, x.shape[0])
        h = _numerical.check_h(self, h)
        params = self.check_params()
        try:
            grads = self.numerical_gradient_prepared(x, T, h, method, memory_budget, executor)
            return _numerical.check_finite(self.xp, grads, h)
        except ValueError:
            where = locate(self.arch, params, x, T)  # the unperturbed net overflows?
            if where is None:
                raise
            raise NonFiniteError(f"the loss is NaN or inf: {where}", where) from None

    # -- unchecked fast paths (inputs already validated by the caller) ---------------

    def forward(self, x, params=None):
        """Logits (the last affine output) for a validated x: (N, n_out)."""
        return F.forward(self.arch, self.params if params is None else params, x)[0]

    def regularization(self, params=None):
        return F.regularization(self.arch, self.params if params is None else params)

    def loss_prepared(self, x, T, params=None):
        return F.loss(self.arch, self.params if params is None else params, x, T)

    def accuracy_prepared(self, x, T, params=None):
        return F.accuracy(self.arch, self.params if params is None else params, x, T)

    def loss_and_accuracy_prepared(self, x, T, params=None):
        """(loss, accuracy or None) of one forward pass (``F.loss_and_accuracy``)."""
        return F.loss_and_accuracy(self.arch, self.params if params is None else params, x, T)

    def gradient_prepared(self, x, T, params=None) -> dict:
        return F.gradient(self.arch, self.params if params is None else params, x, T)

    def default_h(self) -> float:
        return 1e-5 if self.dtype == self.xp.float64 else 5e-3

    def numerical_gradient_prepared(self, x, T, h=None, method="batched", memory_budget=None,
                                    executor=None):
        h = _numerical.check_h(self, h)
        if executor is not None:
            if method != "batched":
                raise ValueError(f"executor= splits method='batched' only, not {method!r}")
            from ..dist.executor import numerical_gradient

            return numerical_gradient(self, x, T, h, executor=executor,
                                      memory_budget=memory_budget)
        if method == "batched":
            return _numerical.mlp_numerical_gradient(self, x, T, h, memory_budget)
        if method == "loop":
            grads = {}
            for key, value in self.params.items():
                def f(p, key=key):
                    return self.loss_prepared(x, T, {**self.params, key: p})

                grads[key] = _numerical.numerical_gradient(f, value, h)
            return grads
        raise ValueError(f"method must be 'batched' or 'loop', not {method!r}")

    def save(self, path, **kwargs) -> str:
        """Write architecture and parameters to one safetensors file (``xpnn.save``, which
        takes the same keywords); reload with ``xpnn.load(path, backend=..., device=...)``.
        """
        from ..io.checkpoint import save  # lazy: io imports nn, never the other way

        return save(self, path, **kwargs)
