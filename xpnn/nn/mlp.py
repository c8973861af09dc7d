"""The multi-layer perceptron: the book's TwoLayerNet / MultiLayerNet, once, for
every array-API backend."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import check_inputs, prepare_targets
from ..backend import (
    backend_name,
    device_of,
    dtype_name,
    get_namespace,
    resolve_device,
    resolve_dtype,
)
from . import numerical as _numerical
from .layers import Affine, make_activation
from .losses import LOSSES, make_loss


def _check_sizes(sizes) -> list[int]:
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(
            f"sizes needs at least two entries (inputs and outputs), got {sizes!r}"
        )
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"layer widths must be integers, got {s!r} in {sizes!r}")
        if s <= 0:
            raise ValueError(f"layer widths must be positive, got {s!r} in {sizes!r}")
    return [int(s) for s in sizes]


def _check_activations(activation, n_hidden: int) -> list[str]:
    if isinstance(activation, str):
        names = [activation] * n_hidden
        make_activation(activation, None)  # validates the name even with no hidden layer
    else:
        names = list(activation)
        if len(names) != n_hidden:
            raise ValueError(
                f"got {len(names)} activations for {n_hidden} hidden layers; give one name "
                f"or one per hidden layer"
            )
    for name in names:
        make_activation(name, None)
    return [n.lower() for n in names]


def _init_std(weight_init, n_in: int) -> float:
    if isinstance(weight_init, str):
        key = weight_init.lower()
        if key == "xavier":
            return math.sqrt(1.0 / n_in)
        if key == "he":
            return math.sqrt(2.0 / n_in)
        raise ValueError(f"weight_init must be a positive float, 'xavier' or 'he', not {key!r}")
    if isinstance(weight_init, bool) or not isinstance(weight_init, numbers.Real):
        raise TypeError(
            f"weight_init must be a positive float, 'xavier' or 'he', not {weight_init!r}"
        )
    if not (weight_init > 0 and math.isfinite(weight_init)):
        raise ValueError(f"weight_init std must be positive and finite, got {weight_init!r}")
    return float(weight_init)


class MLP:
    """Fully connected network: Affine -> activation -> ... -> Affine -> loss.

    sizes         layer widths, e.g. [784, 50, 10]
    activation    one name for all hidden layers, or a list with one per hidden layer
    loss          'softmax_cross_entropy', 'binary_cross_entropy' (one output) or 'mse'
    weight_init   std of the Gaussian initial weights (the book's weight_init_std),
                  'xavier' (std sqrt(1/n_in)) or 'he' (std sqrt(2/n_in)); biases start at 0
    weight_decay  adds 0.5 * weight_decay * sum ||W||^2 (weights only) to the loss
    backend       'numpy', 'torch', 'cupy', 'array_api_strict', a module or None ($XPNN_BACKEND)
    device        backend device ('cpu', 'cuda', 'cuda:1', ...), None for the default
    dtype         'float32' (default) or 'float64'
    seed          seed of the host generator that draws the initial weights, so every
                  backend starts from the same parameters

    ``params`` is a dict ``W1, b1, W2, b2, ...`` of backend arrays; replacing an entry
    (``net.params["W1"] = W - lr * g``) is how parameters are updated: nothing is
    mutated in place.
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
    ):
        self.sizes = _check_sizes(sizes)
        self.activations = _check_activations(activation, len(self.sizes) - 2)
        if not isinstance(loss, str) or loss.lower() not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(sorted(LOSSES))}")
        self.loss_name = loss.lower()
        loss_cls = LOSSES[self.loss_name]
        n_out = self.sizes[-1]
        if n_out < loss_cls.min_outputs or n_out > getattr(loss_cls, "max_outputs", n_out):
            need = (
                "exactly 1 output"
                if getattr(loss_cls, "max_outputs", None) == 1
                else f"at least {loss_cls.min_outputs} outputs"
            )
            raise ValueError(f"loss {self.loss_name!r} needs {need}, but sizes ends in {n_out}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
            raise TypeError(f"weight_decay must be a number, got {weight_decay!r}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be >= 0 and finite, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.weight_init = weight_init

        self.xp = get_namespace(backend)
        self.backend = backend_name(self.xp)
        self.dtype = resolve_dtype(self.xp, dtype)
        self.dtype_name = dtype_name(self.xp, self.dtype)

        rng = np.random.default_rng(seed)
        host = {}
        for i in range(1, len(self.sizes)):
            n_in, n_out_ = self.sizes[i - 1], self.sizes[i]
            std = _init_std(weight_init, n_in)
            host[f"W{i}"] = std * rng.standard_normal((n_in, n_out_))
            host[f"b{i}"] = np.zeros(n_out_)
        dev = resolve_device(self.xp, device)
        self.params = {
            k: self._to_device(v.astype(self.dtype_name), dev) for k, v in host.items()
        }
        self.device = device_of(self.params["W1"])

        self.n_layers = len(self.sizes) - 1
        self.affines = [Affine(self.xp) for _ in range(self.n_layers)]
        self.hidden = [make_activation(a, self.xp) for a in self.activations]
        self.last_layer = make_loss(self.loss_name, self.xp)

    def _to_device(self, host: np.ndarray, dev):
        if dev is None:
            return self.xp.asarray(host)
        return self.xp.asarray(host, device=dev)

    def __repr__(self):
        return (
            f"MLP(sizes={self.sizes}, activation={self.activations}, loss={self.loss_name!r}, "
            f"weight_decay={self.weight_decay}, backend={self.backend!r}, "
            f"device={self.device!s}, dtype={self.dtype_name!r})"
        )

    @property
    def n_params(self) -> int:
        return sum(math.prod(p.shape) for p in self.params.values())

    @property
    def layers(self) -> list:
        """The blocks in order: Affine, activation, Affine, ..., Affine."""
        out = []
        for i, aff in enumerate(self.affines):
            out.append(aff)
            if i < len(self.hidden):
                out.append(self.hidden[i])
        return out

    # -- checked public interface (the book's) ---------------------------------------

    def check_x(self, x):
        """Validate a batch (N, sizes[0]) and return it in the network's dtype."""
        return check_inputs(self.xp, self.device, self.dtype, self.sizes[0], x)

    def prepare_targets(self, t, n_rows: int | None = None):
        """Validate targets and return the (N, n_out) array the loss consumes."""
        return prepare_targets(
            self.xp, self.device, self.dtype, self.loss_name, self.sizes[-1], t, n_rows
        )

    def predict(self, x):
        """Output probabilities (softmax or sigmoid), raw values for mse: (N, n_out)."""
        return self.last_layer.output(self.forward(self.check_x(x)))

    def loss(self, x, t):
        """Batch-mean loss plus weight decay, as a 0-d backend array (float() it to read)."""
        x = self.check_x(x)
        return self.loss_prepared(x, self.prepare_targets(t, x.shape[0]))

    def accuracy(self, x, t) -> float:
        """Fraction of correct predictions (labels or one-hot; 0/1 for binary)."""
        x = self.check_x(x)
        return float(self.accuracy_prepared(x, self.prepare_targets(t, x.shape[0])))

    def gradient(self, x, t) -> dict:
        """Backprop gradient of ``loss(x, t)``: a dict with the keys of ``params``."""
        x = self.check_x(x)
        return self.gradient_prepared(x, self.prepare_targets(t, x.shape[0]))

    def numerical_gradient(self, x, t, h=None, method="batched", memory_budget=None) -> dict:
        """Central-difference gradient of ``loss(x, t)``, dict like ``params``.

        method 'batched' (default) evaluates many perturbed parameters in broadcast
        forwards that reuse the unperturbed pass below the perturbed layer; 'loop' is
        the book's element-by-element reference. h defaults to 1e-5 in float64 and
        5e-3 in float32 (about eps**(1/3), the step that balances truncation and
        rounding error). memory_budget (bytes) bounds the batched chunks.
        """
        x = self.check_x(x)
        T = self.prepare_targets(t, x.shape[0])
        return self.numerical_gradient_prepared(x, T, h, method, memory_budget)

    # -- unchecked fast paths (inputs already validated by the caller) ---------------

    def forward(self, x, params=None):
        """Logits (the last affine output) for a validated x: (N, n_out)."""
        params = self.params if params is None else params
        h = x
        for i, aff in enumerate(self.affines):
            aff.W, aff.b = params[f"W{i + 1}"], params[f"b{i + 1}"]
            h = aff.forward(h)
            if i < len(self.hidden):
                h = self.hidden[i].forward(h)
        return h

    def regularization(self, params=None):
        params = self.params if params is None else params
        if self.weight_decay == 0:
            return 0.0
        xp = self.xp
        total = 0.0
        for i in range(1, self.n_layers + 1):
            W = params[f"W{i}"]
            total = total + xp.sum(W * W)
        return 0.5 * self.weight_decay * total

    def loss_prepared(self, x, T, params=None):
        z = self.forward(x, params)
        return self.last_layer.forward(z, T) + self.regularization(params)

    def accuracy_prepared(self, x, T):
        xp = self.xp
        z = self.forward(x)
        if self.loss_name == "softmax_cross_entropy":
            hit = xp.argmax(z, axis=1) == xp.argmax(T, axis=1)
        elif self.loss_name == "binary_cross_entropy":
            hit = xp.astype(z[:, 0] > 0, self.dtype) == T[:, 0]
        else:
            raise ValueError("accuracy is not defined for the regression loss 'mse'")
        return xp.mean(xp.astype(hit, self.dtype))

    def gradient_prepared(self, x, T) -> dict:
        # the loss value is not needed for the gradient: skip evaluating it
        dout = self.last_layer.gradient(self.forward(x), T)
        for i in range(self.n_layers - 1, -1, -1):
            dout = self.affines[i].backward(dout, input_grad=i > 0)
            if i > 0:
                dout = self.hidden[i - 1].backward(dout)
        grads = {}
        for i, aff in enumerate(self.affines, start=1):
            dW = aff.dW
            if self.weight_decay:
                dW = dW + self.weight_decay * aff.W
            grads[f"W{i}"], grads[f"b{i}"] = dW, aff.db
        return grads

    def default_h(self) -> float:
        return 1e-5 if self.dtype == self.xp.float64 else 5e-3

    def numerical_gradient_prepared(self, x, T, h=None, method="batched", memory_budget=None):
        h = self.default_h() if h is None else float(h)
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"h must be positive and finite, got {h!r}")
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

    def to_config(self) -> dict:
        """The architecture as a JSON-able dict (see ``xpnn.nn.config``)."""
        from .config import to_config

        return to_config(self)

    @classmethod
    def from_config(cls, config, params=None, backend=None, device=None, dtype=None):
        """Build a net from ``config`` (checked with ``xpnn.nn.config.check_config``).

        With host ``params`` (dict of NumPy arrays) they are checked against the config
        first and become the weights (in ``dtype``, default the config's); else the
        weights are drawn as ``MLP(...)`` does.
        """
        # TEMP shim until the lead's from_config lands: it still draws (and discards)
        # initial weights, but only after config and params passed their checks.
        from .config import check_config, check_params

        cfg = check_config(config)
        host = None if params is None else check_params(cfg, params)
        net = cls(
            cfg["sizes"], activation=cfg["activations"], loss=cfg["loss"],
            weight_init=cfg["weight_init"] or 0.01, weight_decay=cfg["weight_decay"],
            backend=backend, device=device, dtype=cfg["dtype"] if dtype is None else dtype,
            seed=0,
        )
        if host is not None:
            net.params = {
                k: net._to_device(v.astype(net.dtype_name), net.device) for k, v in host.items()
            }
        return net

    def save(self, path) -> str:
        """Write architecture and parameters to one .npz file (``xpnn.checkpoint.save``);
        reload with ``xpnn.checkpoint.load(path, backend=..., device=...)``."""
        from ..io.checkpoint import save

        return save(self, path)
