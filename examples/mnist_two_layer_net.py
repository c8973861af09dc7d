"""The book's TwoLayerNet on MNIST: 784-50-10, sigmoid, weight init std 0.01,
SGD lr 0.1, batch 100, 10,000 iterations (the original post: test accuracy 0.9437).

    XPNN_DATA_DIR=/path/to/data python examples/mnist_two_layer_net.py
    python examples/mnist_two_layer_net.py --backend torch

Same as ``xpnn train`` with no flags.
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import load_mnist
from xpnn.optim import SGD
from xpnn.plotting import plot_history
from xpnn.training import train


def main():
    p = _common.parser("mnist_two_layer_net", __doc__)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    (x_train, t_train), (x_test, t_test) = load_mnist(
        backend=args.backend, device=args.device, dtype=args.dtype
    )
    net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01,
                   backend=args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    start = time.perf_counter()
    history = train(net, (x_train, t_train), (x_test, t_test), optimizer=SGD(lr=0.1),
                    batch_size=100, iters=args.iters, seed=args.seed,
                    progress=not args.no_progress)
    wall = time.perf_counter() - start

    history.save_json(out / "history.json")
    plot_history(history, out / "curves.png",
                 title=f"TwoLayerNet 784-50-10 on MNIST ({net.backend} {net.dtype_name})")
    result = {
        "setup": "TwoLayerNet 784-50-10 sigmoid, init 0.01, SGD lr 0.1, batch 100",
        "backend": net.backend, "device": str(net.device), "dtype": net.dtype_name,
        "iterations": args.iters, "wall_s": wall,
        "train_acc": _common.final(history, "train_acc"),
        "test_acc": _common.final(history, "test_acc"),
        "test_loss": _common.final(history, "test_loss"),
    }
    _common.write_result(out, result)
    print(f"TwoLayerNet MNIST {net.backend} {net.dtype_name}: {args.iters} iterations in "
          f"{wall:.1f} s, train acc {result['train_acc']:.4f}, test acc "
          f"{result['test_acc']:.4f} -> {out}")


if __name__ == "__main__":
    main()
