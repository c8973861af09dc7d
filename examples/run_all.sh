#!/usr/bin/env bash
# Reproduce every result in docs/results.md. Outputs go to runs/examples/ (git-ignored).
# Needs XPNN_DATA_DIR pointing at the folder with mnist/ and sign-language-digits/.
# About 12 minutes on a 2-core CPU (the numerical-gradient run is 4 of them).
#
# One BLAS/OpenMP thread per process: on a shared 2-core machine, OpenBLAS's and
# torch's spinning worker threads made runs 15-20x slower whenever another process
# was busy (the same 10,000-iteration MNIST run: 6 s with one thread, 102 s with two).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${XPNN_DATA_DIR:?set XPNN_DATA_DIR to the data folder (mnist/, sign-language-digits/)}"
export XPNN_DATA_DIR
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

for backend in numpy torch array_api_strict; do
    python examples/mnist_two_layer_net.py --no-progress --backend "$backend" \
        --out "runs/examples/two_layer_$backend"
done
python examples/mnist_numerical_gradient.py --no-progress --iters 600 --eval-every 50 \
    --out runs/examples/numerical600
python examples/mnist_deep.py --no-progress --iters 30000 --out runs/examples/deep
python examples/mnist_deep.py --no-progress --iters 3000 --init 0.01 --eval-every 1000 \
    --out runs/examples/deep_init001_short
for seed in 0 1 2 3 4; do
    python examples/moons.py --no-progress --seed "$seed" --out "runs/examples/moons_seed$seed"
done
python examples/sign_language.py --no-progress --out runs/examples/sign_language
python examples/car_prices.py --no-progress --out runs/examples/car_prices
