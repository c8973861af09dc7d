"""The output folder of ``xpnn train``: checked before anything slow, and not left
behind empty when the command fails before writing into it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import CLIError


class OutputFolder:
    """``--out``: ``prepare()`` creates it (and missing parents) and proves it writable
    with a probe file; ``discard()`` removes the folders ``prepare()`` created while
    they are still empty. Folders that existed before are never removed."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self._created: list[Path] = []

    def prepare(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise CLIError(f"--out {str(self.path)!r} exists and is not a folder")
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

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)
