"""Sign Language Digits, 0 vs 1: logistic regression and a one-hidden-layer tanh net.

The Kaggle "deep learning tutorial for beginners" setting: 64x64 grayscale images of
the digits 0 and 1 (410 images; 328 train / 82-83 test, stratified, seed 0), full-batch
gradient descent with the logistic loss and one sigmoid output.

* logistic regression: sizes [4096, 1] (no hidden layer), binary_cross_entropy
* the 2-layer net: sizes [4096, 3, 1], tanh, binary_cross_entropy

Both start from Gaussian weights of std 0.01 and use lr 0.01. The post stopped
after 150 iterations; the loss is still falling there, so these runs go on to 2,000
and 2,500 iterations (--iters-logistic, --iters-hidden).

    XPNN_DATA_DIR=/path/to/data python examples/sign_language.py
"""

from __future__ import annotations

import time

import _common

import xpnn
from xpnn.data import load_sign_language_digits
from xpnn.optim import SGD
from xpnn.plotting import plot_histories, plot_history
from xpnn.training import train


def main():
    p = _common.parser("sign_language", __doc__)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--iters-logistic", type=int, default=2000)
    p.add_argument("--iters-hidden", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)

    train_set, test_set = load_sign_language_digits(
        classes=(0, 1), seed=args.seed, backend=args.backend, device=args.device,
        dtype=args.dtype,
    )
    runs = {
        "logistic regression [4096, 1]": ([4096, 1], args.iters_logistic),
        "tanh net [4096, 3, 1]": ([4096, 3, 1], args.iters_hidden),
    }
    histories, results = {}, {}
    for label, (sizes, iters) in runs.items():
        net = xpnn.MLP(sizes, activation="tanh", loss="binary_cross_entropy", weight_init=0.01,
                       backend=args.backend, device=args.device, dtype=args.dtype,
                       seed=args.seed)
        start = time.perf_counter()
        history = train(net, train_set, test_set, optimizer=SGD(lr=args.lr), batch_size=None,
                        iters=iters, eval_every=max(1, iters // 100), seed=args.seed,
                        progress=not args.no_progress, log=lambda *a, **k: None)
        wall = time.perf_counter() - start
        tag = "logistic" if len(sizes) == 2 else "hidden3"
        history.save_json(out / f"history_{tag}.json")
        plot_history(history, out / f"curves_{tag}.png",
                     title=f"Sign Language 0 vs 1: {label}")
        histories[label] = history
        results[label] = {
            "sizes": sizes, "iterations": iters, "wall_s": wall,
            "train_acc": _common.final(history, "train_acc"),
            "test_acc": _common.final(history, "test_acc"),
            "test_loss": _common.final(history, "test_loss"),
            "n_train": int(train_set[0].shape[0]), "n_test": int(test_set[0].shape[0]),
        }
        print(f"{label}: {iters} iterations in {wall:.1f} s, train acc "
              f"{results[label]['train_acc']:.4f}, test acc {results[label]['test_acc']:.4f} "
              f"({results[label]['n_test']} test images)", flush=True)
    plot_histories(histories, out / "sign_language_test_acc.png", metric="test_acc",
                   title=f"Sign Language Digits 0 vs 1, full batch, lr {args.lr}")
    _common.write_result(out, {
        "setup": f"Sign Language Digits 0 vs 1, 64x64 gray, full-batch SGD lr {args.lr}, "
                 "init 0.01, binary_cross_entropy",
        "backend": args.backend, "dtype": args.dtype, "runs": results,
    })


if __name__ == "__main__":
    main()
