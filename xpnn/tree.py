"""Nests of dicts of arrays (a training state, a parameter dict): walking their leaves
in one fixed order, and mapping a function over them. Shared by the training step and
the compiled steps (``xpnn.compile``); imports nothing of xpnn."""

from __future__ import annotations

__all__ = ["leaves", "map_tree"]


def leaves(tree) -> list:
    """The arrays of a nest of dicts, in sorted-key order."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
    return [tree]


def map_tree(fn, tree, sort: bool = False):
    """``fn`` applied to every leaf of a nest of dicts: the same keys, in each dict's
    own order, or in sorted order with ``sort`` (the order ``leaves`` walks)."""
    if isinstance(tree, dict):
        return {key: map_tree(fn, tree[key], sort) for key in (sorted(tree) if sort else tree)}
    return fn(tree)
