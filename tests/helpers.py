"""Small generated problems shared by the tests."""

from __future__ import annotations

import signal

import numpy as np

import xpnn


def problem(backend, sizes, loss="softmax_cross_entropy", n=5, seed=0, dtype="float64",
            activation="tanh", weight_init=0.7, weight_decay=0.0):
    """A net plus (x, t) on ``backend`` = (name, device), all from ``seed``."""
    name, device = backend
    net = xpnn.MLP(sizes, activation=activation, loss=loss, weight_init=weight_init,
                   weight_decay=weight_decay, backend=name, device=device, dtype=dtype,
                   seed=seed)
    rng = np.random.default_rng(seed + 1000)
    x = rng.standard_normal((n, sizes[0]))
    if loss == "softmax_cross_entropy":
        t = rng.integers(0, sizes[-1], n)
    elif loss == "binary_cross_entropy":
        t = rng.integers(0, 2, n)
    else:
        t = rng.standard_normal((n, sizes[-1]))
    xb = xpnn.asarray(x, backend=name, device=device, dtype=dtype)
    tb = xpnn.asarray(t, backend=name, device=device)
    return net, xb, tb


def host(grads):
    return {k: xpnn.to_numpy(v).astype(np.float64) for k, v in grads.items()}


def host_leaves(tree, prefix: str = "") -> dict:
    """{"opt/W1/v": host copy, ...}: every array of a nest of dicts (a step's state),
    keyed by its path, in sorted-key order, with its dtype kept."""
    if isinstance(tree, dict):
        out = {}
        for key in sorted(tree):
            out.update(host_leaves(tree[key], f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): np.array(xpnn.to_numpy(tree))}


def counting_update(optimizer) -> list:
    """Wrap ``optimizer.transform.update`` (the validating one) and its ``check`` to
    count their calls in the returned list; its unchecked halves stay what
    ``checked_parts`` and ``elementwise_parts`` find."""
    calls = []
    update = optimizer.transform.update

    def counting(*args):
        calls.append(1)
        return update(*args)

    def counting_check(*args):  # what the step's flat update validates with
        calls.append(1)
        return update.check(*args)

    counting.check, counting.apply = counting_check, update.apply
    counting.slots, counting.apply_one = update.slots, update.apply_one
    optimizer.transform = optimizer.transform._replace(update=counting)
    return calls


class FakeCapture:
    """A CUDA-graph capture on the CPU, for ``xpnn.compile.cuda_graph.CudaGraphStep``:
    the real buffer handling of the backend ``lib`` ("numpy" or "torch" arrays copy
    like CuPy's or torch CUDA's), a "graph" that re-runs the recorded body on the same
    buffers. It logs "begin" / "end" / "discard" in ``events`` and is ``capturing()``
    between begin and end or discard, as a CUDA stream is; ``fail_on_begin`` raises
    at ``begin`` instead. ``replay_hooks`` (a ``CudaGraphStep``'s ``hooks``) replays
    with them installed, as a real graph replays the routed kernels it captured."""

    def __new__(cls, lib, fail_on_begin=None):
        from xpnn.compile.cuda_graph import Capture, hooked

        class _Fake(Capture):
            name = f"fake-{lib}"

            def __init__(self):
                super().__init__(lib)
                self.events, self.is_capturing = [], False
                self.warm_ups = self.replays = 0
                self._body = self.replay_hooks = None

            def warm_up(self, run, times=2):
                self.warm_ups += times
                super().warm_up(run, times)

            def begin(self):
                if fail_on_begin is not None:
                    raise fail_on_begin
                self.events.append("begin")
                self.is_capturing = True

            def end(self):
                self.events.append("end")
                self.is_capturing = False
                return self._body

            def discard(self):
                self.events.append("discard")
                self.is_capturing = False

            def capturing(self):
                return self.is_capturing

            def record(self, body):
                self._body = body
                return super().record(body)

            def replay(self, graph):
                self.replays += 1
                with hooked(self.replay_hooks):  # the step's own hook installer
                    graph()

        return _Fake()


#: runs ``xpnn`` in a child process and prints a marker on stdout once the first training
#: step is done (the partial history then holds the evaluation at iteration 0), so a test
#: can signal a run that is known to be training
MARKED_MAIN = (
    "import sys\n"
    "from xpnn.training import Callback\n"
    "import xpnn.cli\n"
    "m = sys.modules['xpnn.cli.main']\n"
    "class Started(Callback):\n"
    "    def after_step(self, run):\n"
    "        if run.iteration == 1:\n"
    "            print('xpnn-test: training', flush=True)\n"
    "real = m.train\n"
    "def train(*args, **kwargs):\n"
    "    kwargs['callbacks'] = [*kwargs.get('callbacks', ()), Started()]\n"
    "    return real(*args, **kwargs)\n"
    "m.train = train\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)
STOP_SIGNALS = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, n)]


def default_signals():
    """preexec_fn: the child starts with the default actions (a test runner started in
    the background has SIGINT ignored, which the child would inherit and keep)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def run_cli(capsys, *argv):
    """``xpnn.cli.main`` in this process: (exit code, stdout, stderr)."""
    from xpnn.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    """A CLI failure as the CLI promises it: exit 2, one ``xpnn: error:`` line, no
    traceback, holding each of ``fragments``."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
