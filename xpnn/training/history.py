"""The record of a training run: ``History`` (one list per field of ``FIELDS`` plus
``meta``), saved and loaded as JSON."""

from __future__ import annotations

import json
import os
import stat

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
        #: what xpnn.training.save_resumable writes (set by xpnn.train; not saved)
        self.training_state = None
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
    def load_json(cls, path, max_bytes: int = 256 << 20) -> History:
        """Read a history written by ``save_json``.

        FileNotFoundError for a missing file; ValueError naming the file for anything
        that is not such a history: not UTF-8 JSON, the wrong structure (records that
        are not lists of numbers/None of equal length, meta not an object), or larger
        than ``max_bytes`` (checked before reading).
        """
        shown = os.fsdecode(os.fspath(path))

        def bad(problem):
            return ValueError(f"{shown}: {problem}")

        kind = os.stat(path).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):  # a folder: open() says so
            raise bad("not a regular file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise bad(f"{size:,} bytes is more than max_bytes={max_bytes:,}; not loaded")
            raw = f.read(size + 1)  # read(n) allocates n bytes up front: n from the size
        if len(raw) > size:
            raise bad("the file grew while it was read")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise bad(f"not a UTF-8 text file ({exc})") from None
        except json.JSONDecodeError as exc:
            raise bad(f"not valid JSON ({exc})") from None
        except RecursionError:
            raise bad("not an xpnn history (JSON nested too deeply)") from None
        if not isinstance(data, dict):
            raise bad(f"not an xpnn history (a JSON {type(data).__name__}, not an object)")
        records = data.get("records", {})
        if not isinstance(records, dict):
            raise bad("damaged history: 'records' is not an object")
        for name in FIELDS:
            values = records.get(name, [])
            if not isinstance(values, list):
                raise bad(f"damaged history: records[{name!r}] is a "
                          f"{type(values).__name__}, not a list")
            wrong = next((v for v in values if v is not None
                          and not isinstance(v, (int, float))), None)
            if wrong is not None:
                raise bad(f"damaged history: records[{name!r}] holds {wrong!r}, "
                          f"not a number or null")
        if not isinstance(data.get("meta", {}), dict):
            raise bad("damaged history: 'meta' is not an object")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise bad(exc) from None
