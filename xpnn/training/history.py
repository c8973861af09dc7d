"""The record of a training run: ``History`` (one list per field of ``FIELDS`` plus
``meta``), saved and loaded as JSON."""

from __future__ import annotations

import json
import os

import numpy as np

from ..io.atomic import atomic_write

__all__ = ["FIELDS", "History"]

#: what each evaluation records, in order
FIELDS = ("iteration", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "elapsed", "lr")

_HISTORY_FORMAT = "xpnn-history"
_HISTORY_VERSION = 1


def _jsonable(value):
    """Plain JSON types for a metadata value (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class History:
    """The evaluations of one run: one list per field of ``FIELDS`` plus ``meta``.

    ``history.train_loss[i]`` etc.; ``history[i]`` and ``history.final`` give one
    evaluation as a dict. ``train_acc``/``test_acc`` are None for the 'mse' loss, the
    ``test_*`` fields None without a test set. ``elapsed`` is training time in seconds
    since the start, evaluation time excluded. ``meta`` describes the run (backend,
    device, dtype, sizes, optimizer, batch size, seed, wall time, ...).
    """

    fields = FIELDS

    def __init__(self, meta: dict | None = None):
        self.meta = dict(meta or {})
        for name in FIELDS:
            setattr(self, name, [])

    def append(self, record: dict) -> None:
        for name in FIELDS:
            getattr(self, name).append(record.get(name))

    def __len__(self) -> int:
        return len(self.iteration)

    def __getitem__(self, i) -> dict:
        return {name: getattr(self, name)[i] for name in FIELDS}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def final(self) -> dict | None:
        """The last evaluation as a dict (None before any)."""
        return self[-1] if len(self) else None

    def __repr__(self):
        last = self.final
        tail = "" if last is None else f", final={last}"
        return f"History({len(self)} evaluations{tail})"

    def to_dict(self) -> dict:
        return {
            "format": _HISTORY_FORMAT,
            "version": _HISTORY_VERSION,
            "meta": _jsonable(self.meta),
            "records": {name: _jsonable(getattr(self, name)) for name in FIELDS},
        }

    @classmethod
    def from_dict(cls, data: dict) -> History:
        if not isinstance(data, dict) or data.get("format") != _HISTORY_FORMAT:
            raise ValueError("not an xpnn history (no 'format': 'xpnn-history' entry)")
        version = data.get("version")
        if not isinstance(version, int) or version > _HISTORY_VERSION:
            raise ValueError(
                f"history format version {version!r} is not one this xpnn reads "
                f"(up to {_HISTORY_VERSION})"
            )
        records = data.get("records", {})
        lengths = {len(records.get(name, [])) for name in FIELDS}
        if len(lengths) != 1:
            raise ValueError("damaged history: its fields have different lengths")
        out = cls(data.get("meta", {}))
        for name in FIELDS:
            setattr(out, name, list(records.get(name, [])))
        return out

    def save_json(self, path) -> None:
        """Write the history to ``path`` as JSON (atomically: temp file, then rename)."""
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))

    @classmethod
    def load_json(cls, path) -> History:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{os.fspath(path)}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc}") from None
