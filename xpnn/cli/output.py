"""The output folder of ``xpnn train``: checked before anything slow, and not left
behind empty when the command fails before writing into it.

An earlier run's files are never lost to a later run: ``--out`` holding a run
(``RUN_FILES``) is refused unless ``--overwrite`` is given, and even then only a run
that completes replaces them; a run that fails or is interrupted writes its partial
files into ``--out/partial/`` instead (``partial_folder``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import CLIError

#: the files that make a folder hold a run (a model in either format, or a history)
RUN_FILES = ("model.npz", "model.safetensors", "history.json")
#: where a failed or interrupted run writes when --out holds an earlier run
PARTIAL = "partial"


class OutputFolder:
    """``--out``: ``prepare()`` creates it (and missing parents) and proves it writable
    with a probe file; ``discard()`` removes the folders ``prepare()`` created while
    they are still empty. Folders that existed before are never removed."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self._created: list[Path] = []
        self.earlier_run: list[str] = []  # RUN_FILES found by prepare()

    def prepare(self, holds_runs: bool = False, overwrite: bool = False) -> None:
        """Create and probe the folder. ``holds_runs`` (xpnn train): a folder holding
        an earlier run is refused unless ``overwrite``; other commands (evaluate)
        write their own files beside a run."""
        if self.path.exists() and not self.path.is_dir():
            raise CLIError(f"--out {str(self.path)!r} exists and is not a folder")
        if holds_runs:
            self.earlier_run = [n for n in RUN_FILES if os.path.lexists(self.path / n)]
        if self.earlier_run and not overwrite:
            raise CLIError(
                f"--out {str(self.path)!r} holds an earlier run ({', '.join(self.earlier_run)}); "
                f"choose another --out, or add --overwrite to replace it once the new run "
                f"completes")
        missing = []
        folder = self.path.absolute()
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".xpnn-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self.discard()
            why = exc.strerror or type(exc).__name__
            raise CLIError(f"--out {str(self.path)!r} is not writable ({why})") from None

    def discard(self) -> None:
        """Remove the folders ``prepare()`` created, innermost first, if still empty."""
        while self._created:
            folder = self._created.pop()
            try:
                folder.rmdir()
            except OSError:  # not empty (something was written), or already gone
                self._created.clear()
                return

    def partial_folder(self) -> Path:
        """Where a failed or interrupted run writes: ``--out`` itself, or
        ``--out/partial/`` (created) when --out holds an earlier run, which a run that
        did not complete must not replace."""
        if not self.earlier_run:
            return self.path
        folder = self.path / PARTIAL
        folder.mkdir(exist_ok=True)
        return folder

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)
