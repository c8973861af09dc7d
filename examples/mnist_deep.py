"""784-150-150-150-10 on MNIST with ReLU, Tanh and ELU (one run each, the same
activation in every hidden layer), SGD lr 0.02, batch 100 (the post: 0.978).

    XPNN_DATA_DIR=/path/to/data python examples/mnist_deep.py --iters 30000
    python examples/mnist_deep.py --init 0.01      # the small-std init, for comparison

``--init auto`` (default) uses He init for relu/elu and Xavier for tanh.
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import load_mnist
from xpnn.optim import SGD
from xpnn.plotting import plot_histories, plot_history
from xpnn.training import train

AUTO_INIT = {"relu": "he", "elu": "he", "tanh": "xavier", "sigmoid": "xavier"}


def main():
    p = _common.parser("mnist_deep", __doc__)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--iters", type=int, default=30000)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--init", default="auto", help="auto, xavier, he or a std like 0.01")
    p.add_argument("--activations", nargs="+", default=["relu", "tanh", "elu"])
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    data = load_mnist(backend=args.backend, device=args.device, dtype=args.dtype)
    histories, results = {}, {}
    for act in args.activations:
        if args.init == "auto":
            init = AUTO_INIT[act]
        elif args.init in ("xavier", "he"):
            init = args.init
        else:
            init = float(args.init)
        net = xpnn.MLP([784, 150, 150, 150, 10], activation=act, weight_init=init,
                       backend=args.backend, device=args.device, dtype=args.dtype,
                       seed=args.seed)
        start = time.perf_counter()
        history = train(net, data[0], data[1], optimizer=SGD(lr=args.lr), batch_size=100,
                        iters=args.iters, eval_every=args.eval_every, seed=args.seed,
                        progress=not args.no_progress)
        wall = time.perf_counter() - start
        history.save_json(out / f"history_{act}.json")
        plot_history(history, out / f"curves_{act}.png",
                     title=f"784-150-150-150-10 {act} (init {init}), {net.backend}")
        histories[f"{act} (init {init})"] = history
        results[act] = {
            "init": init, "wall_s": wall, "iterations": args.iters,
            "train_acc": _common.final(history, "train_acc"),
            "test_acc": _common.final(history, "test_acc"),
            "best_test_acc": max(v for v in history.test_acc if v is not None),
        }
        print(f"{act}: init {init}, {args.iters} iterations in {wall:.1f} s, train acc "
              f"{results[act]['train_acc']:.4f}, test acc {results[act]['test_acc']:.4f}",
              flush=True)
    plot_histories(histories, out / "activations_test_acc.png", metric="test_acc",
                   ylim=(0.9, 0.985),
                   title=f"784-150-150-150-10, SGD lr {args.lr}, batch 100 "
                         f"({args.backend} {args.dtype})")
    _common.write_result(out, {
        "setup": f"784-150-150-150-10, SGD lr {args.lr}, batch 100",
        "backend": args.backend, "dtype": args.dtype, "runs": results,
    })


if __name__ == "__main__":
    main()
