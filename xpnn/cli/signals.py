"""Signals that stop ``xpnn train`` the way Ctrl-C does.

SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, ``docker stop``, systemd, batch
schedulers) and SIGHUP (the terminal went away) all raise ``Interrupted``, a
``KeyboardInterrupt``: the trainer stops after the step in progress, the command
line writes the partial run and exits ``128 + signal number`` (130, 143, 129) with
one line on stderr.

A signal that was ignored when xpnn started stays ignored (``nohup xpnn train``
survives the hang-up; a launcher that ignores SIGINT keeps it ignored), and a
handler someone else installed is left alone. While files are being written
(``deferred()``) a signal is held and raised when the writes are done, so a
second Ctrl-C, or a SIGTERM arriving as the run finishes, never leaves a
half-written set of files (each file is atomic; this keeps the set consistent).
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Interrupted", "deferred", "ignore_stop_signals", "stop_on_signals"]

#: the signals handled, where the platform has them
NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(KeyboardInterrupt):
    """Raised by SIGINT, SIGTERM or SIGHUP; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + signum


class _State:
    def __init__(self):
        self.holding = 0  # depth of deferred() blocks
        self.pending = None  # the signal held meanwhile


_state = _State()


def _handler(signum, frame):
    if _state.holding:
        if _state.pending is None:
            _state.pending = signum
        return
    raise Interrupted(signum)


def _ours(signum, current) -> bool:
    """Whether to take over ``signum`` whose handler is now ``current``: Python's own
    Ctrl-C handler, or the default action (which ends the process without cleanup);
    not SIG_IGN (nohup) and not someone else's handler."""
    if signum == signal.SIGINT:
        return current is signal.default_int_handler
    return current == signal.SIG_DFL


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM/SIGHUP raise ``Interrupted`` (see the module
    doc); the previous handlers are restored afterwards. Only the main thread can set
    handlers: elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    _state.pending = None
    try:
        for name in NAMES:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            current = signal.getsignal(signum)
            if _ours(signum, current):
                previous[signum] = current
                signal.signal(signum, _handler)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.pending = None


@contextlib.contextmanager
def deferred(raise_held: bool = True):
    """Hold SIGINT/SIGTERM/SIGHUP during the block (files being written); the first
    one that arrived is raised as ``Interrupted`` when the outermost block ends
    normally, or dropped with ``raise_held=False`` (a run already stopping)."""
    _state.holding += 1
    try:
        yield
    finally:
        _state.holding -= 1
    if not _state.holding and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        if raise_held:
            raise Interrupted(signum)


def ignore_stop_signals(names=("SIGINT", "SIGHUP")) -> None:
    """Ignore the signals ``names`` in this process: for the helpers of a run
    (``--workers`` processes, MPI ranks other than 0). Ctrl-C and a hang-up reach the
    whole process group; the run's main process alone decides (it saves the run, then
    ends its helpers), instead of each helper dying with a traceback, or a rank
    stopping while the others wait for it. SIGTERM is left alone by default: it is
    how a process pool ends its workers (``Process.terminate``), and a helper that
    ignored it would never end."""
    for name in names:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
