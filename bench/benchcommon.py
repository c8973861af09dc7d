"""Shared pieces of the benchmark suite: networks, targets (backend x device),
data, the timed steps of xpnn and of its peers, sampled numerical gradients, and
the ``measure`` helper that times a step with pytest-benchmark.

Every timed callable ends by synchronising its device (a no-op on the CPU), so a
GPU figure is the time of finished work, not of queued kernels.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

import xpnn
from xpnn.nn import numerical as xnum
from xpnn.training import make_step

# --------------------------------------------------------------------------- nets


@dataclass(frozen=True)
class NetSpec:
    name: str
    sizes: tuple
    activation: str
    batch: int
    weight_init: object
    lr: float
    small: bool  # array-api-strict runs only the small nets
    #: numerical-loop: None = every element; else elements timed per parameter tensor
    loop_sample: int | None = None
    #: the same for array-api-strict and GPU targets (slower per element / per call)
    loop_sample_other: int | None = None
    #: numerical (batched): None = every chunk; else chunks timed per parameter tensor
    batched_sample: int | None = None

    @property
    def n_params(self) -> int:
        s = self.sizes
        return sum(a * b + b for a, b in zip(s[:-1], s[1:], strict=True))

    def step_flops(self) -> int:
        """FLOPs of the step's matrix products: forward x@W, backward dW for every
        layer, dx for every layer but the first (the input needs no gradient)."""
        n, s = self.batch, self.sizes
        per = [2 * n * a * b for a, b in zip(s[:-1], s[1:], strict=True)]
        return 2 * sum(per) + sum(per[1:])


NETS = {
    "moons": NetSpec("moons", (2, 3, 2), "tanh", 200, "xavier", 0.1, True),
    "seed": NetSpec(
        "seed", (784, 50, 10), "sigmoid", 100, 0.01, 0.1, True,
        loop_sample=None, loop_sample_other=256,
    ),
    "three-hidden": NetSpec(
        "three-hidden", (784, 150, 150, 150, 10), "relu", 100, "he", 0.01, False,
        loop_sample=100, loop_sample_other=100, batched_sample=4,
    ),
    "wide": NetSpec(
        "wide", (784, 1024, 1024, 10), "relu", 256, "he", 0.01, False,
        loop_sample=12, loop_sample_other=12, batched_sample=8,
    ),
}


def loop_sample(spec: NetSpec, target) -> int | None:
    """Elements per tensor the loop is timed on (None: all of them)."""
    if target.gpu or target.id == "array_api_strict":
        return spec.loop_sample_other
    return spec.loop_sample

#: the scaling sweep: 784-H-10, sigmoid, batch 100 (the seed net's shape and data)
SWEEP_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)


def sweep_spec(width: int) -> NetSpec:
    return NetSpec(
        f"784-{width}-10", (784, width, 10), "sigmoid", 100, 0.01, 0.1, False,
        loop_sample=24, loop_sample_other=24, batched_sample=16 if width > 64 else None,
    )


# ------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    id: str  # "numpy", "torch", "array_api_strict", "cupy", "torch-cuda"
    backend: str
    device: str | None
    gpu: bool


def _torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def available_targets() -> list[Target]:
    """CPU backends always (when importable), GPU ones when a CUDA device is present.
    ``XPNN_BENCH_BACKENDS=numpy,torch-cuda`` restricts the list."""
    found = []
    names = xpnn.available_backends()
    for name in ("numpy", "torch", "array_api_strict", "cupy"):
        if name not in names:
            continue
        if name == "cupy":
            found.append(Target("cupy", "cupy", "cuda", True))
        else:
            found.append(Target(name, name, None, False))
        if name == "torch" and _torch_cuda():
            found.append(Target("torch-cuda", "torch", "cuda", True))
    return [t for t in found if wanted_target(t.id)]


def wanted_target(target_id: str) -> bool:
    """Whether ``XPNN_BENCH_BACKENDS`` (unset: everything) names the target id."""
    wanted = os.environ.get("XPNN_BENCH_BACKENDS")
    if not wanted:
        return True
    return target_id in {w.strip() for w in wanted.split(",") if w.strip()}


TARGETS = available_targets()
TARGET_IDS = [t.id for t in TARGETS]
DTYPES = ("float32", "float64")


def jax_target() -> Target | None:
    """JAX on its default device (the GPU where JAX has one, its name in ``device``),
    when jax is installed and ``XPNN_BENCH_BACKENDS`` (if set) names "jax": only the
    compiled-step benchmarks run there (``-m compiled``)."""
    if not wanted_target("jax"):
        return None
    try:
        import jax
    except ImportError:
        return None
    device = jax.devices()[0]
    platform = "cuda" if device.platform == "gpu" else device.platform
    return Target("jax", "jax", f"{platform}:{device.id}", device.platform == "gpu")


def backend_spec(target: Target):
    """What ``xpnn.MLP(backend=...)`` takes for the target (the jax.numpy module for JAX)."""
    if target.backend == "jax":
        import jax.numpy

        return jax.numpy
    return target.backend


def synchronizer(target: Target):
    """A function ``sync(tree=None)`` that waits for the target's device to finish
    queued work (JAX: for the arrays of ``tree``)."""
    if target.id == "cupy":
        import cupy

        return lambda tree=None: cupy.cuda.get_current_stream().synchronize()
    if target.id == "torch-cuda":
        import torch

        return lambda tree=None: torch.cuda.synchronize()
    if target.id == "jax":
        import jax

        return jax.block_until_ready
    return _no_sync


def _no_sync(tree=None):
    return None


# ----------------------------------------------------------------------- versions


def gpu_info() -> dict | None:
    """The GPU's name, memory, CUDA versions and nvidia-smi line (None without a GPU)."""
    info = {}
    try:
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(i)
            info["name"] = torch.cuda.get_device_name(i)
            info["memory_gib"] = round(props.total_memory / 2**30, 1)
            info["capability"] = f"{props.major}.{props.minor}"
            info["torch_cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
            info["torch_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    except Exception:
        pass
    if "cupy" in TARGET_IDS:
        try:
            import cupy

            rt = cupy.cuda.runtime
            info.setdefault("name", rt.getDeviceProperties(0)["name"].decode())
            info["cuda_driver_version"] = rt.driverGetVersion()
            info["cuda_runtime_version"] = rt.runtimeGetVersion()
        except Exception:
            pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
        if smi.returncode == 0 and smi.stdout.strip():
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
    except Exception:
        pass
    return info or None




def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return None


def library_versions() -> dict:
    out = {
        name: _version(name)
        for name in ("numpy", "torch", "cupy", "array_api_compat", "array_api_strict")
    }
    out["xpnn"] = xpnn.__version__
    return out


VERSIONS = library_versions()


# --------------------------------------------------------------------------- data


def host_batch(spec: NetSpec, seed: int = 0):
    """(x, labels) on the host, float64 / int64. MNIST-shaped nets get uniform [0, 1)
    pixels and random labels (timings do not depend on the values); the moons net
    gets the two-moons data set."""
    if spec.name == "moons":
        from xpnn.data import make_moons

        x, t = make_moons(spec.batch, noise=0.2, seed=seed, backend="numpy", dtype="float64")
        return np.asarray(x), np.asarray(t)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((spec.batch, spec.sizes[0]))
    t = rng.integers(0, spec.sizes[-1], spec.batch)
    return x, t


def make_net(spec: NetSpec, target: Target, dtype: str, seed: int = 0):
    return xpnn.MLP(
        list(spec.sizes), activation=spec.activation, weight_init=spec.weight_init,
        backend=backend_spec(target), device=target.device, dtype=dtype, seed=seed,
    )


def problem(spec: NetSpec, target: Target, dtype: str, seed: int = 0):
    """A fresh net (initial weights from ``seed``: identical on every backend) with its
    prepared batch ``x, T`` on the target."""
    net = make_net(spec, target, dtype, seed)
    xh, th = host_batch(spec, seed)
    kw = {"backend": backend_spec(target), "device": target.device}
    x = xpnn.asarray(xh, dtype=dtype, **kw)
    T = net.prepare_targets(xpnn.asarray(th, **kw))
    return net, x, T


def base_info(spec: NetSpec, target: Target, dtype: str, method: str, impl: str = "xpnn",
              net=None) -> dict:
    if net is not None:  # one spelling: 'cpu', 'cuda:0' (JAX's own: 'TFRT_CPU_0')
        device = xpnn.backend.device_name(net.xp, net.device)
    else:
        device = target.device or "cpu"
    return {
        "kind": "step",
        "net": spec.name,
        "sizes": list(spec.sizes),
        "activation": spec.activation,
        "method": method,
        "impl": impl,
        "target": target.id,
        "backend": target.backend,
        "device": device,
        "dtype": dtype,
        "n_params": spec.n_params,
        "batch_size": spec.batch,
        "lr": spec.lr,
        "step_gflop": spec.step_flops() / 1e9,
        "versions": VERSIONS,
    }


# -------------------------------------------------------------------- xpnn steps


def sgd(params: dict, grads: dict, lr: float):
    """The trainer's unchecked update: rebind every entry (no in-place mutation)."""
    for k in params:
        params[k] = params[k] - lr * grads[k]


class TrainerStep:
    """The trainer's own step (``xpnn.training.make_step`` with ``SGD(lr)``, compiled
    with ``compile=True``) on a fixed batch: gradient, update, iteration count and
    divergence flag, exactly what ``xpnn.train`` runs per iteration. Each call takes
    one step and waits for the device; ``params`` are the latest parameters."""

    def __init__(self, net, x, T, lr, sync, compile=False):
        self.step = make_step(net, xpnn.SGD(lr=lr), compile=compile)
        self.state, self.x, self.T, self.sync = self.step.init(), x, T, sync

    @property
    def params(self) -> dict:
        return self.state["params"]

    def __call__(self):
        self.state = self.step(self.state, self.x, self.T)
        self.sync(self.state)


def backprop_step(net, x, T, lr, sync, compile=False) -> TrainerStep:
    return TrainerStep(net, x, T, lr, sync, compile)


def gradient_update_step(net, x, T, lr, sync):
    """The bare iteration the trainer's step replaced: the backprop gradient and the
    rebinding SGD update, with no optimiser state, counters or divergence check."""
    params = net.params

    def step():
        sgd(params, net.gradient_prepared(x, T), lr)
        sync()

    return step


def numerical_step(net, x, T, lr, sync, method="batched"):
    params = net.params

    def step():
        grads = net.numerical_gradient_prepared(x, T, method=method)
        for k in params:
            params[k] = params[k] - lr * grads[k]
        sync()

    return step


def _spread(n: int, k: int) -> list[int]:
    """k distinct indices spread evenly over range(n) (a fixed sample)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


@dataclass
class SampledStep:
    """One numerical-gradient iteration timed on a fixed sample of each parameter
    tensor and extrapolated per tensor: ``shared + sum_p time_p * n_p / k_p + update``.

    ``estimates`` collects one extrapolated iteration time per call; ``plan`` records
    for each tensor how many units (elements for the loop, chunks of perturbations for
    the batched method) exist and how many are timed.
    """

    net: object
    x: object
    T: object
    lr: float
    sync: object
    method: str  # "batched" or "loop"
    per_tensor: int | None
    estimates: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)

    def __post_init__(self):
        net = self.net
        self.h = net.default_h()
        self._work = {}
        self._workspace = xnum.Workspace(net.xp)  # as mlp_numerical_gradient keeps one
        for key, value in net.params.items():
            n = math.prod(value.shape)
            if self.method == "loop":
                picks = _spread(n, self.per_tensor or n)
                self._work[key] = picks
                self.plan[key] = {"units": n, "timed": len(picks), "unit": "element"}
            else:
                chunks = [c for c in xnum.plan(net, self.x.shape[0]) if c.key == key]
                step = chunks[0].width
                units = len(chunks)
                if self.per_tensor is not None and self.per_tensor < len(chunks):
                    # whole chunks, as the real code runs them, spread over the tensor
                    # (never the last, possibly partial one); n / step of them in all
                    full = max(1, n // step)
                    chunks = [chunks[i] for i in _spread(full, self.per_tensor)]
                    units = n / step
                self._work[key] = chunks
                self.plan[key] = {
                    "units": units, "timed": len(chunks), "unit": f"chunk of {step} (x2 signs)",
                    "elements": n,
                }

    @property
    def exact(self) -> bool:
        return all(p["units"] == p["timed"] for p in self.plan.values())

    def _loop_tensor(self, key):
        """The body of xpnn.nn.numerical.numerical_gradient, on the sampled elements."""
        net, xp, x, T, h = self.net, self.net.xp, self.x, self.T, self.h
        value = net.params[key]
        flat = xp.reshape(value, (-1,))
        dev = xpnn.backend.device_of(value)
        index = xp.arange(flat.shape[0], device=dev)
        plus, minus = flat + h, flat - h
        out = []
        for i in self._work[key]:
            at_i = index == i
            p_plus = xp.reshape(xp.where(at_i, plus, flat), value.shape)
            fp = net.loss_prepared(x, T, {**net.params, key: p_plus})
            p_minus = xp.reshape(xp.where(at_i, minus, flat), value.shape)
            fm = net.loss_prepared(x, T, {**net.params, key: p_minus})
            out.append(xp.asarray((fp - fm) / (2 * h), dtype=value.dtype, device=dev))
        return out

    def _batched_tensor(self, key, cache):
        """xpnn.nn.numerical.chunk_gradient on the sampled chunks, as the real code runs it."""
        net, x, T, h = self.net, self.x, self.T, self.h
        return [xnum.chunk_gradient(net, x, T, chunk, h, cache, workspace=self._workspace)
                for chunk in self._work[key]]

    def __call__(self):
        net, sync = self.net, self.sync
        clock = time.perf_counter
        t0 = clock()
        cache = xnum.forward_cache(net, self.x) if self.method == "batched" else None
        sync()
        total = clock() - t0
        for key, plan in self.plan.items():
            t1 = clock()
            if self.method == "loop":
                self._loop_tensor(key)
            else:
                self._batched_tensor(key, cache)
            sync()
            total += (clock() - t1) * plan["units"] / max(1, plan["timed"])
        t2 = clock()
        sgd(net.params, net.params, 0.0)  # the update's cost (grads of the same shapes)
        sync()
        total += clock() - t2
        self.estimates.append(total)

    def info(self) -> dict:
        return {
            "sampled": not self.exact,
            "sample_plan": self.plan,
            "extrapolation": (
                "per parameter tensor: time of the timed units x (units / timed units), "
                "summed, plus the shared forward pass and the SGD update once"
            ),
        }


# ---------------------------------------------------------------------- peers


_TORCH_ACT = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}


def torch_eager_step(spec: NetSpec, target: Target, dtype: str, seed: int = 0):
    """PyTorch autograd, eager: the same net (identical initial weights), the same
    loss (mean softmax cross-entropy), the same SGD update under torch.no_grad.
    Returns (step, params, x, labels)."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if target.gpu else "cpu"
    tgt = Target("torch-cuda" if target.gpu else "torch", "torch", device if target.gpu else None,
                 target.gpu)
    net = make_net(spec, tgt, dtype, seed)
    params = [net.params[k].detach().clone().requires_grad_(True) for k in net.params]
    xh, th = host_batch(spec, seed)
    x = torch.as_tensor(xh, dtype=getattr(torch, dtype), device=device)
    labels = torch.as_tensor(th, dtype=torch.int64, device=device)
    act = getattr(torch, _TORCH_ACT[spec.activation])
    n_layers = len(params) // 2
    lr = spec.lr
    sync = torch.cuda.synchronize if target.gpu else _no_sync

    def body():
        h = x
        for i in range(n_layers):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i])  # what nn.Linear runs
            if i < n_layers - 1:
                h = act(h)
        loss = F.cross_entropy(h, labels)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.sub_(p.grad, alpha=lr)
                p.grad = None

    def step():
        body()
        sync()

    step.body = body  # the step without the synchronisation (torch_graphed_step)
    return step, params, x, labels


def torch_graphed_step(spec: NetSpec, target: Target, dtype: str, seed: int = 0):
    """``torch_eager_step``'s autograd step captured whole as one CUDA graph, the way
    PyTorch's docs capture a training iteration (warm-up on a side stream, then
    ``torch.cuda.graph``); each call replays it. CUDA only. Returns (step, params)."""
    import torch

    eager, params, _, _ = torch_eager_step(spec, target, dtype, seed)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            eager.body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        eager.body()

    def step():
        graph.replay()
        torch.cuda.synchronize()

    return step, params


def gemm_floor_step(spec: NetSpec, target: Target, dtype: str, seed: int = 0):
    """The step's matrix products alone, as plain library calls on the target's
    library: forward h@W per layer, backward h.T@d (dW) per layer and d@W.T (dx) for
    every layer but the first. Returns (step, flops)."""
    rng = np.random.default_rng(seed)
    n, s = spec.batch, spec.sizes
    if target.id == "jax":
        return _jax_gemm_floor_step(spec, dtype, rng), spec.step_flops()
    if target.id == "cupy":
        import cupy as lib

        conv = lib.asarray
    elif target.backend == "torch":
        import torch as lib

        dev = "cuda" if target.gpu else "cpu"

        def conv(a):
            return lib.as_tensor(a, device=dev)
    else:  # numpy, and array_api_strict (which wraps numpy)
        lib = np

        def conv(a):
            return a
    hs = [conv((rng.random((n, a)) - 0.5).astype(dtype)) for a in s[:-1]]
    Ws = [
        conv((0.05 * rng.standard_normal((a, b))).astype(dtype))
        for a, b in zip(s[:-1], s[1:], strict=True)
    ]
    ds = [conv((rng.random((n, b)) - 0.5).astype(dtype)) for b in s[1:]]
    sync = synchronizer(target) if target.id in ("cupy", "torch-cuda") else _no_sync

    def step():
        for i in range(len(Ws)):
            hs[i] @ Ws[i]
        for i in range(len(Ws) - 1, -1, -1):
            hs[i].T @ ds[i]
            if i > 0:
                ds[i] @ Ws[i].T
        sync()

    return step, spec.step_flops()


def _jax_gemm_floor_step(spec: NetSpec, dtype: str, rng):
    """The same products in one jitted function (eager JAX would time its dispatch)."""
    import jax
    import jax.numpy as jnp

    n, s = spec.batch, spec.sizes
    hs = [jnp.asarray((rng.random((n, a)) - 0.5).astype(dtype)) for a in s[:-1]]
    Ws = [jnp.asarray((0.05 * rng.standard_normal((a, b))).astype(dtype))
          for a, b in zip(s[:-1], s[1:], strict=True)]
    ds = [jnp.asarray((rng.random((n, b)) - 0.5).astype(dtype)) for b in s[1:]]

    @jax.jit
    def products(hs, Ws, ds):
        out = [h @ W for h, W in zip(hs, Ws, strict=True)]
        out += [h.T @ d for h, d in zip(hs, ds, strict=True)]
        return out + [d @ W.T for d, W in zip(ds[1:], Ws[1:], strict=True)]

    def step():
        jax.block_until_ready(products(hs, Ws, ds))

    return step


def plain_numpy_step(spec: NetSpec, dtype: str, seed: int = 0):
    """The same step in plain NumPy (no array-API layer, no layer objects): the same
    maths as xpnn's layers and loss, the same rebinding SGD update. Returns
    (step, params, x, T)."""
    net = make_net(spec, Target("numpy", "numpy", None, False), dtype, seed)
    params = {k: np.asarray(v) for k, v in net.params.items()}
    xh, th = host_batch(spec, seed)
    x = xh.astype(dtype)
    T = np.zeros((spec.batch, spec.sizes[-1]), dtype=dtype)
    T[np.arange(spec.batch), th] = 1.0
    L = len(spec.sizes) - 1
    act = spec.activation
    lr = spec.lr
    N = spec.batch

    def step():
        hs, outs = [x], []
        h = x
        for i in range(1, L + 1):
            a = h @ params[f"W{i}"] + params[f"b{i}"]
            if i < L:
                if act == "sigmoid":
                    h = 0.5 * np.tanh(0.5 * a) + 0.5
                elif act == "tanh":
                    h = np.tanh(a)
                else:  # relu
                    outs.append((a > 0).astype(a.dtype))
                    h = np.maximum(a, 0.0)
                hs.append(h)
            else:
                h = a
        if act != "relu":
            outs = hs[1:]
        e = np.exp(h - np.max(h, axis=1, keepdims=True))
        d = (e / np.sum(e, axis=1, keepdims=True) - T) / N
        grads = {}
        for i in range(L, 0, -1):
            grads[f"W{i}"] = hs[i - 1].T @ d
            grads[f"b{i}"] = np.sum(d, axis=0)
            if i > 1:
                d = d @ params[f"W{i}"].T
                o = outs[i - 2]
                if act == "sigmoid":
                    d = d * o * (1.0 - o)
                elif act == "tanh":
                    d = d * (1.0 - o * o)
                else:
                    d = d * o
        for k in params:
            params[k] = params[k] - lr * grads[k]

    return step, params, x, T


# -------------------------------------------------------------------- measuring

#: seconds of timing a long-running benchmark aims for (pedantic rounds = this / call)
LONG_CALL_BUDGET = float(os.environ.get("XPNN_BENCH_LONG_BUDGET", "6"))


def measure(benchmark, fn, *, warmup: int = 2, rounds: int | None = None,
            long_call_s: float = 0.05):
    """Time ``fn`` (which synchronises its device) after ``warmup`` untimed calls.

    Calls shorter than ``long_call_s`` go through pytest-benchmark's calibrated timer;
    longer ones through pedantic mode with explicit rounds (``rounds``, or as many as
    fit in ``LONG_CALL_BUDGET`` seconds, 3..20), one call per round.
    """
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):
        fn()
    per_call = (time.perf_counter() - t0) / max(1, warmup)
    if rounds is None and per_call < long_call_s:
        benchmark.extra_info["timing"] = "calibrated"
        return benchmark(fn)
    if rounds is None:
        rounds = int(min(20, max(3, LONG_CALL_BUDGET // per_call)))
    benchmark.extra_info["timing"] = f"pedantic, {rounds} rounds x 1 call, {warmup} warm-up"
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
