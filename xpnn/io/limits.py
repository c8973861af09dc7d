"""Bounds shared by the readers of untrusted files (checkpoints, dataset files)."""

from __future__ import annotations

__all__ = ["CHUNK", "DEFLATE_MAX_RATIO"]

#: deflate cannot expand data by more than ~1032x: a size claim beyond that is damaged
DEFLATE_MAX_RATIO = 1032
#: bytes read per call when streaming a file or a download
CHUNK = 1 << 20
