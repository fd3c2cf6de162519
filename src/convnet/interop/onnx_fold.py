"""Evaluating the shape arithmetic exporters write, on a symbolic batch size.

``x.view(x.size(0), -1)`` is exported as Shape -> Gather -> Unsqueeze -> Concat -> Reshape. The
importer evaluates such nodes of constants now (:data:`FOLD`), with :data:`BATCH` standing for
the batch size the file leaves open, so that the Reshape reads as a flatten
(:func:`resolve_reshape`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convnet.interop.onnx_file import DTYPES

#: the most values a computed constant (shape arithmetic) may have
MAX_FOLDED = 10_000_000


class Batch:
    """The symbolic batch size in evaluated shape arithmetic."""

    def __repr__(self) -> str:
        return "N"


BATCH = Batch()


def resolve_reshape(target: list[Any], have: list[Any], allowzero: bool) -> list[Any] | None:
    """ONNX's Reshape rule on a shape with a symbolic batch; None when it cannot be resolved."""
    out: list[Any] = []
    for i, t in enumerate(target):
        if t is BATCH:
            out.append(BATCH)
        elif int(t) == 0 and not allowzero:
            if i >= len(have):
                return None
            out.append(have[i])
        else:
            out.append(int(t))
    known = math.prod(int(d) for d in have if d is not BATCH)
    if out.count(-1) > 1:
        return None
    if -1 in out:
        rest = [d for d in out if d != -1]
        fixed = math.prod(int(d) for d in rest if d is not BATCH)
        if BATCH in rest:   # (N, -1): the rest of the features
            if fixed == 0 or known % fixed:
                return None
            out[out.index(-1)] = known // fixed
        elif fixed and known % fixed == 0 and known // fixed >= 1:
            # (-1, n) with n the features: -1 is the batch
            if known == fixed:
                out[out.index(-1)] = BATCH
            else:
                return None
        else:
            return None
    if BATCH not in out:
        return None
    return out


def _gather(args: list[Any], attrs: dict[str, Any]) -> Any:
    data, idx = np.asarray(args[0]), np.asarray(args[1])
    return np.take(data, idx.astype(np.int64), axis=int(attrs.get("axis", 0)))


def _unsqueeze(args: list[Any], attrs: dict[str, Any]) -> Any:
    a = np.asarray(args[0])
    axes = attrs.get("axes", args[1] if len(args) > 1 else None)
    for ax in sorted(int(x) % (a.ndim + len(np.ravel(axes))) for x in np.ravel(axes)):
        a = np.expand_dims(a, ax)
    return a


def _squeeze(args: list[Any], attrs: dict[str, Any]) -> Any:
    a = np.asarray(args[0])
    axes = attrs.get("axes", args[1] if len(args) > 1 else None)
    return np.squeeze(a, axis=None if axes is None else tuple(int(x) for x in np.ravel(axes)))


def _concat(args: list[Any], attrs: dict[str, Any]) -> Any:
    arrays = [np.asarray(a) for a in args]
    if any(a.dtype == object for a in arrays):
        arrays = [a.astype(object) for a in arrays]
    return np.concatenate(arrays, axis=int(attrs.get("axis", 0)))


def _slice(args: list[Any], attrs: dict[str, Any]) -> Any:
    a = np.asarray(args[0])
    starts = attrs.get("starts", args[1] if len(args) > 1 else None)
    ends = attrs.get("ends", args[2] if len(args) > 2 else None)
    axes = attrs.get("axes", args[3] if len(args) > 3 and args[3] is not None else None)
    steps = args[4] if len(args) > 4 and args[4] is not None else None
    starts, ends = np.ravel(starts).astype(np.int64), np.ravel(ends).astype(np.int64)
    axes = np.arange(len(starts)) if axes is None else np.ravel(axes).astype(np.int64)
    steps = np.ones(len(starts), np.int64) if steps is None else np.ravel(steps).astype(np.int64)
    index = [slice(None)] * a.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[int(ax)] = slice(int(s), int(min(e, 2**62)) if e > -(2**62) else None, int(st))
    return a[tuple(index)]


def _numeric(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object:
        if any(v is BATCH for v in arr.ravel()):
            raise ValueError("arithmetic on the symbolic batch size")
        arr = arr.astype(np.int64)
    return arr


#: operators evaluated on constants: (arguments, attributes) -> value
FOLD: dict[str, Any] = {
    "Identity": lambda a, k: a[0],
    "Cast": lambda a, k: a[0] if np.asarray(a[0]).dtype == object else np.asarray(a[0]).astype(
        DTYPES.get(int(k.get("to", 1)), np.float32)),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Slice": _slice,
    "Reshape": lambda a, k: _numeric(a[0]).reshape(_numeric(a[1]).astype(np.int64)),
    "Transpose": lambda a, k: _numeric(a[0]).transpose(k.get("perm")),
    "Add": lambda a, k: _numeric(a[0]) + _numeric(a[1]),
    "Sub": lambda a, k: _numeric(a[0]) - _numeric(a[1]),
    "Mul": lambda a, k: _numeric(a[0]) * _numeric(a[1]),
    "Div": lambda a, k: _numeric(a[0]) / _numeric(a[1]),
}


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


def folded_size(op: str, args: list[Any], attrs: dict[str, Any]) -> int:
    """How many values ``FOLD[op](args, attrs)`` would make, from the shapes alone (nothing is
    allocated), so a constant too large to fold is refused before it exists: a broadcast of
    ``(10**6, 1) + (1, 10**6)`` or a Gather of a large table by a large index would otherwise
    allocate 10**12 values first. Raises ValueError for shapes the operator refuses."""
    shapes = [np.shape(a) for a in args if a is not None]
    if op in _ELEMENTWISE:
        return math.prod(np.broadcast_shapes(*shapes))
    if op == "Gather" and len(shapes) >= 2:
        data, idx = shapes[0], shapes[1]
        if not data:
            raise ValueError("Gather from a scalar")
        axis = int(attrs.get("axis", 0)) % len(data)
        return math.prod((*data[:axis], *idx, *data[axis + 1:]))
    # the others (Identity, Cast, Unsqueeze, Squeeze, Concat, Slice, Reshape, Transpose) make at
    # most as many values as their arguments hold
    return sum(math.prod(s) for s in shapes)


__all__ = ["BATCH", "FOLD", "MAX_FOLDED", "Batch", "folded_size", "resolve_reshape"]
