"""The TwoLayerNet trained by numerical gradients (central differences), float64.

The post's run of 10,000 iterations took 17 hours. This trains the same network
(784-50-10, sigmoid, init 0.01, SGD lr 0.1, batch 100) through the same trainer for
a few hundred iterations with ``gradient="numerical"`` (the batched central
differences), then the same iterations with backprop in float64 from the same
initial weights and the same batches, and plots both accuracy curves. It reports
the time per iteration and what 10,000 iterations would take.

    XPNN_DATA_DIR=/path/to/data python examples/mnist_numerical_gradient.py --iters 300
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import load_mnist
from xpnn.optim import SGD
from xpnn.plotting import plot_histories, plot_history
from xpnn.training import train


def run(gradient, data, args):
    net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01,
                   backend=args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    start = time.perf_counter()
    history = train(net, data[0], data[1], optimizer=SGD(lr=0.1), batch_size=100,
                    iters=args.iters, gradient=gradient, eval_every=args.eval_every,
                    seed=args.seed, progress=not args.no_progress)
    return net, history, time.perf_counter() - start


def main():
    p = _common.parser("mnist_numerical_gradient", __doc__)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    data = load_mnist(backend=args.backend, device=args.device, dtype=args.dtype)
    net, hist_num, wall_num = run("numerical", data, args)
    _, hist_bp, wall_bp = run("backprop", data, args)

    n_evals = len(hist_num.iteration)
    hist_num.save_json(out / "history_numerical.json")
    hist_bp.save_json(out / "history_backprop.json")
    plot_history(hist_num, out / "curves_numerical.png",
                 title=f"numerical gradients, 784-50-10, {net.backend} {net.dtype_name}")
    plot_histories({"numerical gradient": hist_num, "backprop": hist_bp},
                   out / "numerical_vs_backprop.png", metric="test_acc",
                   title=f"MNIST test accuracy, first {args.iters} iterations "
                         f"({net.dtype_name})")
    # the trainer's train_time leaves out the evaluations: the cost of the updates alone
    per_iter = hist_num.meta["train_time"] / args.iters
    result = {
        "setup": "TwoLayerNet 784-50-10 sigmoid, init 0.01, SGD lr 0.1, batch 100, "
                 "numerical (central-difference, batched) gradients",
        "backend": net.backend, "device": str(net.device), "dtype": net.dtype_name,
        "iterations": args.iters, "wall_s": wall_num, "evaluations": n_evals,
        "train_time_s": hist_num.meta["train_time"], "per_iteration_s": per_iter,
        "projected_10000_iterations_h": per_iter * 10000 / 3600,
        "train_acc": _common.final(hist_num, "train_acc"),
        "test_acc": _common.final(hist_num, "test_acc"),
        "backprop_same_iterations": {
            "wall_s": wall_bp, "train_time_s": hist_bp.meta["train_time"],
            "train_acc": _common.final(hist_bp, "train_acc"),
            "test_acc": _common.final(hist_bp, "test_acc"),
        },
    }
    _common.write_result(out, result)
    print(f"numerical gradients {net.backend} {net.dtype_name}: {args.iters} iterations in "
          f"{wall_num:.1f} s ({per_iter:.3f} s/iteration, 10,000 iterations ~ "
          f"{per_iter * 10000 / 3600:.2f} h), test acc {result['test_acc']:.4f}; backprop "
          f"same run: {wall_bp:.1f} s, test acc "
          f"{result['backprop_same_iterations']['test_acc']:.4f} -> {out}")


if __name__ == "__main__":
    main()
