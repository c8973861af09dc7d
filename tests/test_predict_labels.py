"""MLP.predict_labels: integer class labels, the rule ``accuracy`` scores, every backend."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn


def _x(n=64, d=4):
    return np.random.default_rng(3).standard_normal((n, d))


def test_softmax_labels_are_the_argmax_of_predict(backend, to_backend):
    name, device = backend
    net = xpnn.MLP([4, 8, 5], activation="relu", weight_init=1.0, seed=0, dtype="float64",
                   backend=name, device=device)
    x = to_backend(_x())
    labels = net.predict_labels(x)
    host = xpnn.to_numpy(labels)
    assert host.shape == (64,) and host.dtype.kind == "i"
    assert xpnn.backend.device_of(labels) == net.device
    np.testing.assert_array_equal(host, np.argmax(xpnn.to_numpy(net.predict(x)), axis=1))
    assert len(set(host.tolist())) > 1  # the weights give more than one class here
    # the labels are what accuracy scores (and it takes them as they come)
    assert net.accuracy(x, labels) == 1.0
    assert net.accuracy(x, (labels + 1) % 5) == 0.0


def test_binary_labels_threshold_the_probability(backend, to_backend):
    name, device = backend
    net = xpnn.MLP([4, 1], loss="binary_cross_entropy", weight_init=1.0, seed=1,
                   dtype="float64", backend=name, device=device)
    x = to_backend(_x())
    labels = net.predict_labels(x)
    host = xpnn.to_numpy(labels)
    p = xpnn.to_numpy(net.predict(x))[:, 0]
    assert host.shape == (64,) and host.dtype.kind == "i"
    np.testing.assert_array_equal(host, (p > 0.5).astype(host.dtype))
    assert 0 < host.sum() < 64
    assert net.accuracy(x, labels) == 1.0 and net.accuracy(x, 1 - labels) == 0.0


def test_labels_refused_for_a_regression(backend):
    name, device = backend
    net = xpnn.MLP([4, 3, 2], loss="mse", seed=0, backend=name, device=device)
    with pytest.raises(ValueError, match="labels are not defined for the regression loss "
                                         "'mse'; use predict"):
        net.predict_labels(xpnn.asarray(_x(), backend=name, device=device))


def test_labels_check_the_input_like_predict():
    net = xpnn.MLP([4, 3], seed=0)
    with pytest.raises(ValueError, match="4"):
        net.predict_labels(np.ones((2, 5)))
