"""Two moons, one tanh hidden layer, softmax output, full-batch gradient descent.

The "implement a neural network from scratch" post: 200 points with noise 0.2,
20,000 passes, learning rate 0.01 and regularisation 0.01 on gradients *summed* over
the 200 points, weights drawn with std 1/sqrt(n_in). xpnn's losses are batch
means, so the same steps are lr = 0.01 * 200 = 2.0 and weight decay = 0.01 / 200 =
5e-5. One network per hidden size 1, 2, 3, 4, 5, 20, 50, all in one figure.

    python examples/moons.py
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import make_moons
from xpnn.optim import SGD
from xpnn.plotting import plot_decision_boundaries, plot_decision_boundary, plot_history
from xpnn.training import train


def main():
    p = _common.parser("moons", __doc__)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--iters", type=int, default=20000)
    p.add_argument("--lr", type=float, default=2.0)
    p.add_argument("--weight-decay", type=float, default=5e-5)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4, 5, 20, 50])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    x, t = make_moons(200, noise=0.2, seed=args.seed, backend=args.backend,
                      device=args.device, dtype=args.dtype)
    nets, results = {}, {}
    for size in args.sizes:
        net = xpnn.MLP([2, size, 2], activation="tanh", weight_init="xavier",
                       weight_decay=args.weight_decay, backend=args.backend,
                       device=args.device, dtype=args.dtype, seed=args.seed)
        start = time.perf_counter()
        history = train(net, (x, t), None, optimizer=SGD(lr=args.lr), batch_size=None,
                        iters=args.iters, eval_every=args.iters // 100, seed=args.seed,
                        progress=not args.no_progress, log=lambda *a, **k: None)
        wall = time.perf_counter() - start
        history.save_json(out / f"history_{size}.json")
        if size == 3:
            plot_history(history, out / "curves_3.png", title="moons, 3 tanh hidden units")
            plot_decision_boundary(net, x, t, out / "decision_boundary_3.png")
        nets[size] = net
        results[size] = {"loss": float(net.loss(x, t)), "train_acc": net.accuracy(x, t),
                         "wall_s": wall}
        print(f"hidden {size:>2}: loss {results[size]['loss']:.4f}, train acc "
              f"{results[size]['train_acc']:.3f}, {wall:.1f} s", flush=True)
    plot_decision_boundaries(nets, x, t, out / "moons_hidden_sizes.png",
                             title=f"moons: tanh hidden layer of 1-50 units, {args.iters} "
                                   f"full-batch steps, lr {args.lr}, weight decay "
                                   f"{args.weight_decay:g}")
    _common.write_result(out, {
        "setup": "moons 200 points noise 0.2, [2, H, 2] tanh, softmax, xavier init, "
                 f"full batch, SGD lr {args.lr}, weight decay {args.weight_decay}",
        "backend": args.backend, "dtype": args.dtype, "iterations": args.iters,
        "runs": results,
    })


if __name__ == "__main__":
    main()
