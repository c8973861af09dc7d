"""What the two checkpoint readers (``_safetensors``, ``_npz``) share: the internal
error that carries a problem's text, and the check of the architecture a file
declares."""

from __future__ import annotations

from ..nn import config as _config

#: the architecture's "format" value, and the newest version this xpnn reads
FORMAT = _config.FORMAT
VERSION = _config.VERSION


class Damaged(Exception):
    """Internal: the problem text that ``checkpoint`` turns into a ValueError naming
    the file."""


def shown(names) -> str:
    """Up to 8 entry names, '.npy' stripped, for a message."""
    names = [n[:-4] if n.endswith(".npy") else n for n in names]
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def check_architecture(arch, what: str) -> dict:
    """The checked, normalised config (``xpnn.nn.config.check_config``) of the
    architecture ``arch`` a file declares in ``what``; Damaged names the problem."""
    if not isinstance(arch, dict):
        raise Damaged(f"damaged checkpoint: {what} is not a JSON object")
    if arch.get("format") != FORMAT:
        raise Damaged(f"not an xpnn checkpoint (format {arch.get('format')!r}, "
                      f"expected {FORMAT!r})")
    version = arch.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise Damaged(f"checkpoint format version {version} is newer than this xpnn reads "
                      f"(up to {VERSION}); upgrade xpnn")
    try:
        return _config.check_config(arch)
    except ValueError as exc:
        raise Damaged(f"damaged checkpoint: bad architecture ({exc})") from None
