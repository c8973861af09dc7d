"""Atomic file writes shared by checkpoints, histories and plots.

``atomic_write(path, write)`` writes a temp file next to the target and renames it onto
the target, so readers see the old file or the complete new one. The temp file is
named ``.<name>.<host>-<pid>.<random>.tmp``; one left behind by a writer that was
killed (its process on this host is gone) is removed by the next write to that path.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import tempfile

__all__ = ["atomic_write"]

_UMASK = None
_NAME_KEEP = 100  # characters of the target's name kept in the temp name (NAME_MAX is 255)


def _umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def _temp_prefix(name: str) -> str:
    return f".{name[:_NAME_KEEP]}.{_host()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _remove_stale_temps(folder: str, name: str) -> None:
    """Delete temp files of earlier writes to ``folder/name`` whose writer (a process
    on this host) no longer runs. Live writers' files and other hosts' are kept."""
    prefix = _temp_prefix(name)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[^.]+\.tmp\Z")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError:
            pass


def _target(path) -> str:
    """``path`` as a str (bytes and PathLike accepted) with symlinks resolved, so the
    write replaces the file a link points to instead of the link."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}")
    text = os.fsdecode(os.fspath(path))
    if not text:
        raise ValueError("path is empty")
    return os.path.realpath(text) if os.path.islink(text) else os.path.abspath(text)


def atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it onto
    ``path``: readers see the old file or the complete new one, never a partial one,
    and a failed write leaves the old file and no temp file behind.

    A symlink at ``path`` is written through (its target is replaced). An existing
    file keeps its permission bits; a new one gets the umask's. Errors name ``path``.
    """
    shown = os.fsdecode(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else path
    target = _target(path)
    folder, name = os.path.split(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot write {shown}: the folder {folder} does not exist", shown
        )
    try:
        existing = os.stat(target).st_mode
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    else:
        if stat.S_ISDIR(existing):
            raise IsADirectoryError(errno.EISDIR, f"cannot write {shown}: it is a folder", shown)
        mode = stat.S_IMODE(existing)
    _remove_stale_temps(folder, name)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(name) + f"{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {shown}: {exc.strerror}", shown) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
