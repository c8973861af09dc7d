"""The README's PyTorch example, run as written: the code block after the marker
``<!-- readme-example: torch`` is taken from README.md, pointed at a freshly trained
784-50-10 sigmoid model, and its probabilities and labels compared with xpnn's."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import xpnn

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors.torch")

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
MARKER = "<!-- readme-example: torch"
PATH_IN_README = "runs/mnist/model.safetensors"


def readme_block() -> str:
    text = open(README, encoding="utf-8").read()
    assert text.count(MARKER) == 1, "the README must hold the torch example exactly once"
    found = re.search(r"```python\n(.*?)```", text.split(MARKER, 1)[1], re.S)
    assert found, "no ```python block after the marker"
    return found.group(1)


def test_the_readme_block_is_short():
    """A torch.nn model in at most five lines besides the imports and blank lines."""
    code = [s for s in readme_block().splitlines()
            if s.strip() and not s.startswith(("import ", "from "))]
    assert len(code) <= 5, code


@pytest.fixture(scope="module")
def toy():
    """Toy 784-pixel data: ten classes, each brightening its own band of pixels."""
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 300)
    x = rng.uniform(0, 0.5, (300, 784))
    for k in range(10):
        x[t == k, k * 78:(k + 1) * 78] += 0.5
    return x, t


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
def test_readme_torch_example_gives_xpnn_predictions(tmp_path, toy, dtype, tol):
    x, t = toy
    net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01, seed=0,
                   dtype=dtype)
    history = xpnn.train(net, (x.astype(dtype), t), batch_size=50, iters=120,
                         optimizer=xpnn.optim.SGD(lr=2.0), progress=False)
    assert history.final["train_acc"] > 0.5  # trained: the weights are not the init
    path = tmp_path / "run" / "model.safetensors"
    path.parent.mkdir()
    net.save(path)

    code = readme_block()
    assert code.count(PATH_IN_README) == 1
    code = code.replace(PATH_IN_README, path.as_posix())
    xs = x[:200].astype(dtype)
    namespace = {"x": torch.from_numpy(xs)}
    exec(compile(code, "README.md (torch example)", "exec"), namespace)

    probs = namespace["probs"].detach().numpy()
    labels = namespace["labels"].numpy()
    want = xpnn.to_numpy(net.predict(xs))
    assert probs.dtype == np.dtype(dtype)
    np.testing.assert_allclose(probs, want, rtol=0, atol=tol)
    np.testing.assert_array_equal(labels, xpnn.to_numpy(net.predict_labels(xs)))
    assert len(set(labels.tolist())) > 1
