"""Every GPU figure of issue 15 in one command, each with its target and pass/fail.

    python bench/gpu_check.py                  # on a machine with a CUDA GPU (< 5 min)
    python bench/gpu_check.py --dry-run        # the same code path on the CPU backends
    nox -s gpu_check

Each backend runs in a process of its own (``--worker``; a failure in one cannot touch
the others' CUDA state): cupy, torch-cuda and jax on the GPU; numpy, torch and jax on
the CPU with ``--dry-run``. ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set for every
worker (JAX would take 75% of the GPU at its first array), ``JAX_ENABLE_X64=1`` for the
JAX one (the float64 checks). Per backend:

* correctness (float64, seed net 784-50-10, batch 100, 3 steps): every optimizer's
  compiled step (``compile=True``) equals the eager step to 1e-12 (max relative
  difference over the whole state); on torch-cuda also ``compile="fused"`` (every
  optimizer) and ``compile="reduce-overhead"`` (SGD). A compiled step that fell back
  to eager (``CompileFallbackWarning``) is reported as such;
* speed (float32, medians of 7 rounds): the eager and compiled training step (SGD) of
  the seed net (784-50-10, batch 100) and the wide net (784-1024-1024-10, batch 256);
  on torch-cuda also ``compile="fused"`` and ``compile="reduce-overhead"``, PyTorch's
  own eager autograd step and its CUDA-graphed step;
* the batched numerical gradient of the seed net (float64): one gradient, eager and
  compiled as each numerical step's ``compile=`` compiles it (True; on torch-cuda also
  "fused", its chunk functions compiled by inductor inside the graph; a CUDA graph on
  the GPU), each against a host NumPy float64 reference and against each other,
  within the central difference's rounding bound (``numgrad_tolerance``); then the
  eager gradient and the compiled numerical steps timed; the chunk budget the
  numerical gradient plans from the device's free memory (information);
* once (torch-cuda, else the first GPU backend): the 10,000-iteration
  numerical-gradient MNIST run (float64, batch 100, SGD 0.1), needs ``XPNN_DATA_DIR``.

It prints one line per figure with its issue-15 target and pass/fail, writes
``gpu-check-<date>.json`` and ``.md`` (device, versions, commit, date) under
``bench/results/`` (``--out``), and exits 1 when a correctness check fails or a
worker dies, 3 when there is no GPU (without ``--dry-run``), else 0 (a missed speed
target is a "fail" in the table, not an error). In the dry run every timing is
"info": the targets are GPU targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GPU_WORKERS = ("cupy", "torch-cuda", "jax")
CPU_WORKERS = ("numpy", "torch", "jax")
TOL = 1e-12
#: issue 15's targets, microseconds per float32 training step (compiled)
COMPILED_US = {"seed": 80.0, "wide": 192.0}
NUMGRAD_MS = 0.5
MNIST_S, MNIST_ACC = 10.0, 0.94
MNIST_ITERS = 10_000
#: seconds a worker may run (torch-cuda compiles with inductor about a dozen times:
#: "fused" for six optimizers, two nets and the numerical step, "reduce-overhead");
#: expected totals are well under these, which only stop a hung worker
WORKER_TIMEOUT_S = {"cupy": 90, "torch-cuda": 240, "jax": 90}
#: torch-cuda's modes besides compile=True ("graph"), timed and checked there
TORCH_CUDA_MODES = ("fused", "reduce-overhead")


# ----------------------------------------------------------------------------- rows


def row(backend, check, value, unit, target="", ok=None, kind="speed", note=""):
    """One figure. ``ok``: True / False against ``target``, None for information."""
    return {"backend": backend, "check": check, "value": value, "unit": unit,
            "target": target, "ok": ok, "kind": kind, "note": note}


def _status(r) -> str:
    if r["kind"] == "error":
        return "ERROR"
    if r["kind"] == "correctness" and r["note"].startswith("fell back"):
        return "FALLBACK"
    if r["ok"] is None:
        return "info" if r["kind"] != "skip" else "skipped"
    return "pass" if r["ok"] else "FAIL"


def _value(r) -> str:
    v = r["value"]
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if r["unit"] in ("", "rel", "abs") else f"{v:,.1f}"
    return str(v)


# ---------------------------------------------------------------------------- worker

#: the nets timed and checked: benchcommon's seed and wide nets; tiny ones of the
#: same structure in the dry run (set by ``worker``)
NETS: dict = {}


def _nets(dry_run: bool) -> dict:
    import benchcommon as bc

    if not dry_run:
        return {"seed": bc.NETS["seed"], "wide": bc.NETS["wide"]}
    return {"seed": bc.NetSpec("seed", (12, 6, 3), "sigmoid", 8, 0.01, 0.1, True),
            "wide": bc.NetSpec("wide", (12, 10, 10, 3), "relu", 16, "he", 0.01, True)}


def _max_rel(a, b) -> float:
    """Max over the leaves of max|a - b| / max|b| (host float64)."""
    import numpy as np

    import xpnn
    from xpnn.tree import leaves

    worst = 0.0
    for x, y in zip(leaves(a), leaves(b), strict=True):
        x = np.asarray(xpnn.to_numpy(x), dtype=np.float64)
        y = np.asarray(xpnn.to_numpy(y), dtype=np.float64)
        scale = max(float(np.max(np.abs(y), initial=0.0)), 1e-300)
        worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)) / scale)
    return worst


def _compile_warnings(caught) -> str:
    from xpnn.compile import CompileFallbackWarning

    return "; ".join(str(w.message) for w in caught
                     if issubclass(w.category, CompileFallbackWarning))


def check_compiled_equals_eager(target, modes, repeat_steps=3) -> list:
    import benchcommon as bc

    import xpnn
    from xpnn.training import make_step

    spec = NETS["seed"]
    out = []
    for mode, optimizers in modes:
        for name in optimizers:
            check = f"compile={mode!r} == eager, {name} (float64, seed)"
            try:
                lr = {"rmsprop": 0.01, "adam": 0.01}.get(name, 0.1)
                states = []
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    for compile in (False, mode):
                        net, _, _ = bc.problem(spec, target, "float64")
                        step = make_step(net, xpnn.make_optimizer(name, lr=lr),
                                         compile=compile)
                        state = step.init()
                        for seed in range(repeat_steps):
                            _, x, T = bc.problem(spec, target, "float64", seed=seed)
                            state = step(state, x, T)
                        states.append(state)
                fallback = _compile_warnings(caught)
                err = _max_rel(states[1], states[0])
                # a step that fell back to eager proves nothing about the compiled one
                ok = err <= TOL if not fallback or err > TOL else None
                out.append(row(target.id, check, err, "rel", f"<= {TOL:g}", ok,
                               "correctness",
                               f"fell back to eager: {fallback}" if fallback else ""))
            except Exception as exc:
                out.append(row(target.id, check, None, "", f"<= {TOL:g}", False, "error",
                               f"{type(exc).__name__}: {exc}"))
    return out


def _time_us(fn, rounds, budget_s) -> float:
    """Median µs per call of ``fn`` (which synchronises) over ``rounds`` rounds, after
    a warm-up that lasts until three calls in a row agree within 2x (at least three
    calls; past ``budget_s`` of warm-up, six calls end it). PyTorch's first eager
    autograd steps in a process take 3-15 ms each against ~0.2 ms later on the CPU: a
    single warm-up call left them in the rounds (the dry run's reference read 20 ms)."""
    from profile_step import _median_time

    times = []
    start = time.perf_counter()
    while len(times) < 200:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        last = times[-3:]
        if len(last) == 3 and (max(last) <= 2 * min(last)
                               or (time.perf_counter() - start > budget_s
                                   and len(times) >= 6)):
            break
    once = max(min(times[-3:]), 1e-7)
    n = int(min(2000, max(1, budget_s / rounds / once)))
    return _median_time(fn, n, rounds=rounds) * 1e6


def _timed(out, target, key, check, build, rounds, budget, limit=None, unit_target=""):
    """Build a step (``build() -> (fn, note)``), time it, add a row keyed ``key``. A
    failure is a row too (a missed target where there is one: the timings are not
    correctness checks)."""
    text = unit_target or (f"<= {limit:g} us" if limit else "")
    ok_if = (lambda us: us <= limit) if (limit and target.gpu) else (lambda us: None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn, note = build()
            us = _time_us(fn, rounds, budget)
        fallback = _compile_warnings(caught)
        if fallback:
            note = f"fell back to eager: {fallback}"
        out.append({**row(target.id, check, us, "us", text, ok_if(us), "speed", note),
                    "key": key})
    except Exception as exc:
        out.append({**row(target.id, check, None, "us", text,
                          False if (limit and target.gpu) else None, "speed",
                          f"{type(exc).__name__}: {exc}"), "key": key})


def time_steps(target, rounds, budget) -> list:
    import benchcommon as bc

    out = []
    is_torch = target.backend == "torch"
    modes = [True] + (list(TORCH_CUDA_MODES) if is_torch and target.gpu else [])
    for net_name in ("seed", "wide"):
        spec = NETS[net_name]
        shape = f"{net_name} {'-'.join(map(str, spec.sizes))} b{spec.batch}"

        def xpnn_step(compile, spec=spec):
            net, x, T = bc.problem(spec, target, "float32")
            return bc.backprop_step(net, x, T, spec.lr, bc.synchronizer(target),
                                    compile=compile), ""

        if is_torch:
            _timed(out, target, f"torch-eager:{net_name}",
                   f"PyTorch eager autograd step, {shape}",
                   lambda spec=spec: (bc.torch_eager_step(spec, target, "float32")[0],
                                      "reference"), rounds, budget)
            if target.gpu:
                _timed(out, target, f"torch-graph:{net_name}",
                       f"PyTorch autograd step in a CUDA graph, {shape}",
                       lambda spec=spec: (bc.torch_graphed_step(spec, target, "float32")[0],
                                          "reference"), rounds, budget)
        _timed(out, target, f"eager:{net_name}", f"eager step, {shape}",
               lambda: xpnn_step(False), rounds, budget)
        for mode in modes:
            limit = COMPILED_US[net_name] if target.id in ("cupy", "torch-cuda") else None
            _timed(out, target, f"compile={mode}:{net_name}",
                   f"compile={mode!r} step, {shape}", lambda mode=mode: xpnn_step(mode),
                   rounds, budget, limit)
    return out


def _numerical_modes(target) -> list:
    """compile= values of the numerical step checked and timed: True, and "fused" on
    torch-cuda (its chunk functions compiled by inductor inside the graph)."""
    return [True] + (["fused"] if target.backend == "torch" and target.gpu else [])


def time_numerical(target, rounds, budget) -> list:
    import benchcommon as bc

    out = []
    spec = NETS["seed"]
    sync = bc.synchronizer(target)
    limit = NUMGRAD_MS * 1000 if target.gpu else None

    def eager():
        net, x, T = bc.problem(spec, target, "float64")

        def fn():
            sync(net.numerical_gradient_prepared(x, T))

        return fn, "net.numerical_gradient_prepared (batched)"

    def compiled(mode):
        net, x, T = bc.problem(spec, target, "float64")
        step = _numerical_step(net, spec, mode)
        box = [step.init()]

        def fn():
            box[0] = step(box[0], x, T)
            sync(box[0])

        return fn, f"Step(compile={mode!r}, gradient=numerical): gradient + SGD update"

    text = f"<= {NUMGRAD_MS * 1000:g} us"
    _timed(out, target, "numgrad:eager", "numerical gradient, seed (float64)", eager,
           rounds, budget, limit, text)
    for mode in _numerical_modes(target):
        key = "numgrad:compiled" if mode is True else f"numgrad:compile={mode}"
        _timed(out, target, key, f"numerical step, compile={mode!r}, seed (float64)",
               lambda mode=mode: compiled(mode), rounds, budget, limit, text)
    return out


def _numerical_step(net, spec, compile, h=None):
    """The numerical-gradient training step (SGD) of ``net``, its gradient the one
    ``train(gradient="numerical", compile=compile)`` uses (compiled, it is
    ``compiled_gradient``: lax.map under jit, the chunk functions torch.compile'd on
    the CPU and under "fused"; the eager gradient swapped into a torch.compile'd step
    failed to compile on the CPU). ``h`` default ``net.default_h()``."""
    import xpnn
    from xpnn.training.step import Step, numerical_gradient_fn

    return Step(net, xpnn.SGD(lr=spec.lr), compile=compile,
                gradient=numerical_gradient_fn(net, h or net.default_h(), compile=compile))


def numgrad_tolerance(loss: float, h: float, n_rows: int) -> float:
    """How far apart two correct float64 numerical gradients may be (absolute, per
    element), when they differ only in rounding.

    g = (L(+h) - L(-h)) / (2h), and each L is a mean over ``n_rows`` per-row terms
    (log-sum-exp less the target logit), each within a few ulps of |L|-sized values:
    exp/log kernels (CUDA's, XLA's, NumPy's) differ by up to 1-2 ulps, GEMMs and
    reductions sum in other orders. Summed in any order, n_rows terms of a few roundings
    each agree to at most ``4 * n_rows`` ulps of max(|L|, 1); the difference of two
    such losses, divided by 2h, is then off by 2 * 4 * n_rows * eps * max(|L|, 1) / (2h)
    = 4 * n_rows * eps * max(|L|, 1) / h. The seed net at h=1e-5, L~2.3, 100 rows:
    2.0e-8. A larger difference is not rounding: a wrong value somewhere."""
    eps = 2.0 ** -52
    return 4 * n_rows * eps * max(abs(loss), 1.0) / h


def _max_abs(a: dict, b: dict) -> float:
    import numpy as np

    return max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in b)


def check_numerical_compiled(target) -> list:
    """One numerical gradient of the seed net (float64, same parameters and batch),
    eager and compiled (as ``Step(compile=mode)`` runs it, for each of
    ``_numerical_modes``: jax.jit, torch.compile, a CUDA graph on the GPU, the products
    on CuPy through the GEMM route), each against a host NumPy float64 reference (the
    batched gradient on NumPy) and against each other, within ``numgrad_tolerance``:
    a GPU run says whether compiled is wrong or only rounds differently. Plus the
    chunk budget the gradient plans from device memory."""
    import benchcommon as bc

    import xpnn
    from xpnn.backend import free_memory
    from xpnn.compile import compile_step
    from xpnn.nn.numerical import _budget
    from xpnn.training.step import numerical_gradient_fn

    spec = NETS["seed"]
    out = []
    eager_check = "numerical gradient, eager vs NumPy reference (float64, seed)"
    try:
        host = bc.Target("numpy", "numpy", None, False)
        ref_net, xr, Tr = bc.problem(spec, host, "float64")
        h = ref_net.default_h()
        ref = {k: xpnn.to_numpy(v) for k, v in
               numerical_gradient_fn(ref_net, h)(ref_net.params, xr, Tr).items()}
        tol = numgrad_tolerance(float(ref_net.loss_prepared(xr, Tr)), h, spec.batch)
        net, x, T = bc.problem(spec, target, "float64")
        eager = {k: xpnn.to_numpy(v)
                 for k, v in numerical_gradient_fn(net, h)(net.params, x, T).items()}
    except Exception as exc:
        return [row(target.id, eager_check, None, "", "", False, "error",
                    f"{type(exc).__name__}: {exc}")]
    note = (f"max |a - b| over the elements; rounding bound 4*N*eps*|L|/h "
            f"(N={spec.batch}, h={h:g}, |g| <= "
            f"{max(float(abs(v).max()) for v in ref.values()):.3g})")
    text = f"<= {tol:.2g}"
    err = _max_abs(eager, ref)
    out.append(row(target.id, eager_check, err, "abs", text, err <= tol, "correctness",
                   note))
    for mode in _numerical_modes(target):
        checks = (f"numerical gradient, compile={mode!r} vs NumPy reference (float64, seed)",
                  f"numerical gradient, compile={mode!r} vs eager (float64, seed)")
        try:
            grad = numerical_gradient_fn(net, h, compile=mode)

            def fn(state, x, T, grad=grad):  # the gradient as a step the backend compiles
                return {"params": state["params"], "grad": grad(state["params"], x, T)}

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compiled, _ = compile_step(fn, net.xp, net.device,
                                           mode=None if mode is True else mode,
                                           matmul_hooks=(net.arch.affine, net.loss_fn))
                for _ in range(2):  # the first call builds (a CUDA graph), then a replay
                    # a fresh state each call: jax.jit donates it
                    state = {"params": {k: net.xp.asarray(v, copy=True)
                                        for k, v in net.params.items()},
                             "grad": {k: net.xp.zeros_like(v)
                                      for k, v in net.params.items()}}
                    got = {k: xpnn.to_numpy(v)
                           for k, v in compiled(state, x, T)["grad"].items()}
            fallback = _compile_warnings(caught)
            for check, b in zip(checks, (ref, eager), strict=True):
                err = _max_abs(got, b)
                ok, row_note = err <= tol, note
                if fallback:  # an eager fallback proves nothing about the compiled one
                    ok, row_note = (None if ok else False), f"fell back to eager: {fallback}"
                out.append(row(target.id, check, err, "abs", text, ok, "correctness",
                               row_note))
        except Exception as exc:
            done = {r["check"] for r in out}
            out += [row(target.id, check, None, "", text, False, "error",
                        f"{type(exc).__name__}: {exc}") for check in checks
                    if check not in done]
    free = free_memory(net.xp, net.device)
    out.append(row(target.id, "numerical-gradient chunk budget (from free memory)",
                   _budget(net, None), "bytes", "", None, "info",
                   f"free memory {free:,} bytes" if free else "host budget"))
    return out


def mnist_run(target) -> list:
    import benchcommon as bc
    from mnist_data import load_host_mnist

    import xpnn

    check = f"{MNIST_ITERS:,}-iteration numerical-gradient MNIST run (float64)"
    host = load_host_mnist()
    if host is None:
        return [row(target.id, check, None, "s", f"< {MNIST_S:g} s at >= {MNIST_ACC}", None,
                    "skip", "needs XPNN_DATA_DIR with mnist/ (not set or files missing)")]
    spec = NETS["seed"]
    kw = {"backend": bc.backend_spec(target), "device": target.device}
    xtr, xte = (xpnn.asarray(a, dtype="float64", **kw) for a in host[0::2])
    ttr, tte = (xpnn.asarray(a, **kw) for a in host[1::2])
    note = "eager"
    for compile in (True, False):
        net = bc.make_net(spec, target, "float64")
        try:
            t0 = time.perf_counter()
            h = xpnn.train(net, (xtr, ttr), (xte, tte), optimizer=xpnn.SGD(lr=0.1),
                           batch_size=100, iters=MNIST_ITERS, gradient="numerical",
                           compile=compile, seed=0, progress=False, log=lambda *a: None)
            seconds = time.perf_counter() - t0
        except ValueError as exc:
            if not compile:
                raise
            note = f"eager (compile=True refused: {exc})"
            continue
        note = "compile=True" if compile else note
        acc = float(h.test_acc[-1])
        return [row(target.id, check, seconds, "s", f"< {MNIST_S:g} s at >= {MNIST_ACC}",
                    seconds < MNIST_S and acc >= MNIST_ACC, "speed",
                    f"{note}; test accuracy {acc:.4f}")]
    return []


def worker(name, args, save) -> None:
    """Everything for one backend, in this process; ``save(data)`` after each section
    (a worker the parent stops for time still reports what it finished)."""
    import benchcommon as bc

    import xpnn

    targets = {t.id: t for t in bc.available_targets()}
    jax = bc.jax_target()
    if jax is not None:
        targets["jax"] = jax
    target = targets.get(name)
    if target is None or (not args.dry_run and not target.gpu):
        why = "not available here" if target is None else f"{name} runs on {target.device}"
        save({"rows": [row(name, "backend", None, "", "", None, "skip", why)],
              "device": None, "done": "all"})
        return
    NETS.update(_nets(args.dry_run))
    rounds = 3 if args.dry_run else 7
    budget = 0.05 if args.dry_run else 0.6  # seconds of timing per figure
    optimizers = sorted(xpnn.OPTIMIZERS)
    if args.dry_run and target.backend == "torch":
        optimizers = ["sgd"]  # torch.compile on a CPU takes seconds per optimizer
    modes = [(True, optimizers)]
    if target.backend == "torch" and target.gpu:
        modes += [("fused", optimizers), ("reduce-overhead", ["sgd"])]
    net = bc.make_net(bc.NETS["moons"], target, "float32")
    data = {"rows": [], "device": xpnn.backend.device_name(net.xp, net.device), "done": ""}
    sections = [("correctness", lambda: check_compiled_equals_eager(target, modes)),
                ("steps", lambda: time_steps(target, rounds, budget)),
                ("numerical", lambda: (check_numerical_compiled(target)
                                       + time_numerical(target, rounds, budget)))]
    if args.mnist:
        sections.append(("mnist", lambda: mnist_run(target)))
    for section, run in sections:
        data["rows"] += run()
        data["done"] = section
        save(data)
    data["done"] = "all"
    save(data)


# ---------------------------------------------------------------------------- parent


def _print_row(r):
    print(f"  {_status(r):7} {r['backend']}: {r['check']}: {_value(r)} {r['unit']}"
          f"{'  (target ' + r['target'] + ')' if r['target'] else ''}"
          f"{'  [' + r['note'] + ']' if r['note'] else ''}", flush=True)


def derived_rows(rows, dry_run: bool) -> list:
    """Figures that compare workers: each backend's eager seed step against PyTorch's
    eager autograd step (timed in the torch worker of the same run), and torch's
    compile modes against each other per figure (the fastest should be
    compile=True's)."""
    by = {(r["backend"], r.get("key")): r["value"] for r in rows if r.get("key")}
    torch_id = "torch" if dry_run else "torch-cuda"
    peer = by.get((torch_id, "torch-eager:seed"))
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        eager = by.get((backend, "eager:seed"))
        if eager is None:
            continue
        ok = None if (dry_run or peer is None) else eager <= peer
        out.append(row(backend, "eager seed step <= PyTorch eager autograd (same run)", eager,
                       "us", f"<= {peer:,.1f} us" if peer else "PyTorch eager not timed",
                       ok, "speed"))
    figures = {net: {mode: f"compile={key}:{net}" for mode, key in
                     (("graph", True), *((m, m) for m in TORCH_CUDA_MODES))}
               for net in ("seed", "wide")}
    figures["numerical step"] = {"graph": "numgrad:compiled", "fused": "numgrad:compile=fused"}
    for figure, keys in figures.items():
        timed = {mode: by[(torch_id, key)] for mode, key in keys.items()
                 if by.get((torch_id, key))}
        if len(timed) < 2 or "graph" not in timed:
            continue
        fastest = min(timed, key=timed.get)
        name = "graph (the default)" if fastest == "graph" else fastest
        out.append(row(torch_id, f"fastest torch compile mode, {figure}",
                       round(timed[fastest], 1), "us", "", None, "info",
                       f"{name}: " + ", ".join(f"{m} {us:,.1f} us"
                                               for m, us in timed.items())))
    return out


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=HERE, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        pass
    return os.environ.get("XPNN_COMMIT", "unknown (no git; set XPNN_COMMIT)")


def _versions() -> dict:
    import benchcommon as bc

    out = dict(bc.VERSIONS)
    for module in ("jax", "nvmath"):
        out[module] = bc._version(module)
    out["python"] = platform.python_version()
    return out


def run_worker(name, args, mnist: bool) -> dict:
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    env.pop("XPNN_BENCH_BACKENDS", None)  # --backends chooses the workers here
    if name == "jax":
        env["JAX_ENABLE_X64"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--result", str(result)] + (["--dry-run"] if args.dry_run else []) + (
               ["--mnist"] if mnist else [])
        limit = WORKER_TIMEOUT_S.get(name, 100) + (60 if mnist else 0)
        if args.dry_run:
            limit = 300
        limit = args.timeout or limit
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
            failure = None
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                failure = f"exit {proc.returncode}: {' | '.join(tail)}"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {limit} s"
        data = (json.loads(result.read_text()) if result.exists()
                else {"rows": [], "device": None, "done": ""})
        if failure or data.get("done") != "all":
            after = data.get("done") or "nothing"
            data["rows"].append(row(name, "worker", None, "", "", False, "error",
                                    f"{failure or 'stopped early'} (finished: {after})"))
        data["seconds"] = round(time.perf_counter() - t0, 1)
        return data


def _table(rows) -> list[str]:
    lines = ["| backend | check | value | unit | target | result | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        note = r["note"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['backend']} | {r['check']} | {_value(r)} | {r['unit']} | "
                     f"{r['target']} | {_status(r)} | {note} |")
    return lines


def report(meta, rows, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = meta["date"].replace(":", "").replace("-", "")[:15]
    base = out_dir / f"gpu-check{'-dryrun' if meta['dry_run'] else ''}-{stamp}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    dry = " (CPU dry run: timings are not GPU figures)" if meta["dry_run"] else ""
    head = [f"# xpnn gpu_check{dry}",
            "",
            f"- date: {meta['date']}; commit: {meta['commit']}",
            f"- device: {meta['gpu'] or 'no GPU'}; worker devices: {meta['devices']}",
            f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items() if v)}",
            f"- result: {meta['summary']}", ""]
    md_path.write_text("\n".join(head + _table(rows)) + "\n")
    return json_path, md_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="run on the CPU backends (numpy, torch, jax), quickly")
    parser.add_argument("--backends", default=None,
                        help="comma-separated workers (default: cupy,torch-cuda,jax; "
                             "numpy,torch,jax with --dry-run)")
    parser.add_argument("--out", default=str(HERE / "results"), help="report folder")
    parser.add_argument("--no-mnist", action="store_true", help="skip the MNIST run")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each worker may run (default: per backend, 90-240)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--mnist", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = Path(args.result)

        def save(data):
            partial = result.with_suffix(".part")
            partial.write_text(json.dumps(data, default=str))
            partial.replace(result)

        worker(args.worker, args, save)
        return 0

    import benchcommon as bc

    names = tuple(n.strip() for n in args.backends.split(",")) if args.backends else (
        CPU_WORKERS if args.dry_run else GPU_WORKERS)
    gpu = bc.gpu_info()
    if not args.dry_run and not any(t.gpu for t in bc.available_targets()):
        print("gpu_check: no CUDA GPU here (neither CuPy nor PyTorch sees one), so there is "
              "nothing to check. Run it on a machine with a GPU, or `python "
              "bench/gpu_check.py --dry-run` for the same code path on the CPU backends.",
              file=sys.stderr)
        return 3
    mnist_worker = None
    if not args.dry_run and not args.no_mnist:
        mnist_worker = next((n for n in ("torch-cuda", "cupy", "jax") if n in names), None)
    rows, devices, seconds = [], {}, {}
    t0 = time.perf_counter()
    for name in names:
        print(f"gpu_check: {name} ...", flush=True)
        data = run_worker(name, args, mnist=name == mnist_worker)
        devices[name], seconds[name] = data.get("device"), data.get("seconds")
        for r in data["rows"]:
            _print_row(r)
        rows += data["rows"]
    derived = derived_rows(rows, args.dry_run)
    if derived:
        print("gpu_check: across backends")
        for r in derived:
            _print_row(r)
    rows += derived
    bad = [r for r in rows if r["kind"] in ("correctness", "error") and r["ok"] is False]
    missed = [r for r in rows if r["kind"] == "speed" and r["ok"] is False]
    fell_back = [r for r in rows if _status(r) == "FALLBACK"]
    summary = (f"{len(bad)} correctness failure(s)/error(s), {len(missed)} speed target(s) "
               f"missed, {len(fell_back)} compiled step(s) fell back to eager, "
               f"{sum(r['ok'] is True for r in rows)} passed, "
               f"{time.perf_counter() - t0:.0f} s")
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "dry_run": args.dry_run, "gpu": gpu, "devices": devices,
            "worker_seconds": seconds, "versions": _versions(), "host": platform.node(),
            "summary": summary}
    json_path, md_path = report(meta, rows, Path(args.out))
    print(f"gpu_check: {summary}\n  {json_path}\n  {md_path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
