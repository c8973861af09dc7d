"""Atomic file writes shared by checkpoints, histories and plots.

``atomic_write(path, write)`` writes a temp file next to the target and renames it onto
the target, so readers see the old file or the complete new one. The temp file is
named ``.<name>.<host>-<pid>.<random>.tmp``; one left behind by a writer that was
killed (its process on this host is gone) is removed by the next write to that path.

What it refuses, before writing a byte (errors name the path):

- a target that exists and is not a regular file (a FIFO, socket, character or block
  device, or a folder): replacing it by a regular file would destroy it (as root,
  ``save("/dev/null")`` would replace the system's /dev/null). A symlink is followed
  to the file it finally points to, and that file is checked the same way (a link to
  a regular file is written through; a link to a device is refused; a dangling link
  creates the file it names);
- a target that this user cannot open for writing (``open(path, "wb")`` would raise
  PermissionError: a read-only file, an ACL, a read-only mount), although the rename
  could replace it.

Permissions: an existing target keeps its mode; a new file gets the mode ``open()``
would give it at that moment (0o666 less the umask in force at the call, or the
folder's default ACL), because the temp file is created with mode 0o666 and the kernel
applies the umask itself. The umask is never read, so there is no window in which it
is changed (``os.umask`` can only be read by setting it, which would race with other
threads creating files) and a umask changed between two writes is honoured.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat

__all__ = ["atomic_replace", "atomic_write"]

_NAME_KEEP = 100  # characters of the target's name kept in the temp name (NAME_MAX is 255)
_TEMP_TRIES = 100  # names tried before giving up (a collision needs 2**32 / live writers)

#: what a non-regular file is called in the refusal
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


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


def _check_target(target: str, shown: str):
    """The mode bits to give the new file (None: a new file, the kernel applies the
    umask), after refusing a target that must not be replaced (see the module doc)."""
    try:
        existing = os.stat(target).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(existing):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {shown}: it is a folder", shown)
    if not stat.S_ISREG(existing):
        kind = next((name for test, name in _KINDS if test(existing)), "not a regular file")
        where = f" ({target})" if target != os.path.abspath(shown) else ""
        raise FileExistsError(
            errno.EEXIST, f"cannot write {shown}: it exists and is {kind}{where}; xpnn "
            f"replaces only regular files", shown)
    # the check open(path, "wb") makes (mode bits, ACLs, read-only mounts, immutable
    # files), without opening it (no inotify event, no side effect)
    effective = os.access in os.supports_effective_ids
    if not os.access(target, os.W_OK, effective_ids=effective):
        raise PermissionError(
            errno.EACCES, f"cannot write {shown}: it is read-only for this user (mode "
            f"{stat.S_IMODE(existing):04o}); make it writable or remove it first", shown)
    return stat.S_IMODE(existing)


def _create_temp(folder: str, name: str, mode: int) -> tuple[int, str]:
    """A new temp file next to the target, created with ``mode`` (less the umask in
    force now, applied by the kernel)."""
    prefix = _temp_prefix(name) + f"{os.getpid()}."
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_TRIES):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temp file name in {folder}", folder)


def atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it onto
    ``path``: readers see the old file or the complete new one, never a partial one,
    and a failed write leaves the old file and no temp file behind.

    A symlink at ``path`` is written through (its target is replaced). An existing
    file keeps its permission bits; a new one gets those ``open()`` gives now (the
    current umask). A target that exists and is not a regular file (FIFO, socket,
    device, folder), or that this user cannot open for writing, is refused with an
    OSError naming ``path`` before anything is written. Errors name ``path``.
    """
    shown = os.fsdecode(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else path
    target = _target(path)
    folder, name = os.path.split(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot write {shown}: the folder {folder} does not exist", shown
        )
    mode = _check_target(target, shown)
    _remove_stale_temps(folder, name)
    try:
        # a new file: 0o666 and the kernel's umask, as open() does; replacing a file:
        # private while written (its content may be secret), then the file's mode
        fd, tmp = _create_temp(folder, name, 0o666 if mode is None else 0o600)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {shown}: {exc.strerror}", shown) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        _check_target(target, shown)  # again: it may have become a FIFO meanwhile
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_replace(source, path) -> None:
    """Move the complete file ``source`` onto ``path`` (same file system) under the
    rules of ``atomic_write``: a symlink at ``path`` is written through, and a target
    that is not a regular file or is read-only for this user is refused, naming it."""
    shown = os.fsdecode(os.fspath(path))
    target = _target(path)
    mode = _check_target(target, shown)
    if mode is not None:
        os.chmod(source, mode)
    os.replace(source, target)
