"""Linear regression with the MLP machinery: sizes [1, 1], loss mse, on the seven
car-price points (price 3..9, sales 7.5..4.5, exactly sales = 9 - 0.5 * price).

    python examples/car_prices.py
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import load_car_prices
from xpnn.optim import SGD
from xpnn.plotting import plot_history, plot_regression
from xpnn.training import train


def main():
    p = _common.parser("car_prices", __doc__)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--iters", type=int, default=5000)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    x, t = load_car_prices(backend=args.backend, device=args.device, dtype=args.dtype)
    net = xpnn.MLP([1, 1], activation="identity", loss="mse", weight_init=0.01,
                   backend=args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    start = time.perf_counter()
    history = train(net, (x, t), None, optimizer=SGD(lr=args.lr), batch_size=None,
                    iters=args.iters, eval_every=max(1, args.iters // 100), seed=args.seed,
                    progress=not args.no_progress, log=lambda *a, **k: None)
    wall = time.perf_counter() - start
    w = float(xpnn.to_numpy(net.params["W1"])[0, 0])
    b = float(xpnn.to_numpy(net.params["b1"])[0])
    loss = float(net.loss(x, t))
    history.save_json(out / "history.json")
    plot_history(history, out / "curves.png", title="car prices: mse")
    plot_regression(net, x, t, out / "car_prices.png", xlabel="price", ylabel="sales",
                    title=f"linear regression, {args.iters} full-batch steps, lr {args.lr}")
    _common.write_result(out, {
        "setup": f"[1, 1] mse, full batch, SGD lr {args.lr}", "backend": net.backend,
        "dtype": net.dtype_name, "iterations": args.iters, "wall_s": wall,
        "W": w, "b": b, "mse": loss,
    })
    print(f"car prices: sales = {w:.4f} * price + {b:.4f} (mse {loss:.2e}) after "
          f"{args.iters} iterations in {wall:.2f} s -> {out}")


if __name__ == "__main__":
    main()
