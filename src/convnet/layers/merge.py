"""Merge layers: where branches of a network meet. ADD (a residual connection) and CAT
(concatenation along depth, Inception's way of joining its branches).

Their backward passes are the duals of their forward ones, written once: an ADD sends its output
gradient unchanged to every input (the derivative of a sum with respect to each term is 1); a
CAT's backward is a split of the gradient along depth, each input getting the slices it gave.
A gradient that reaches a layer by two paths (the input of a residual block feeds both the block
and the shortcut) is summed by the network.

A merge layer has ``arity = 0`` (two or more inputs): its ``infer_merge(shapes, sources)``
replaces ``infer_shape``, its ``_forward`` takes a list of arrays and its ``_backward`` returns
one gradient per input. ``input_shape`` is the first input's shape; ``input_shapes`` all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.arith import ReceptiveField, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, PlanTraits, Shape

if TYPE_CHECKING:
    from convnet.arith import LayerRow


class _Merge(Layer):
    arity = 0

    def __init__(self) -> None:
        super().__init__()
        self.input_shapes: list[Shape] = []
        self.sources: list[str] = []

    def _where(self, shapes: Sequence[Shape], sources: Sequence[str]) -> str:
        parts = [f"{fmt_shape(s)} (from {src})" if src else fmt_shape(s)
                 for s, src in zip(shapes, [*sources, *[""] * len(shapes)], strict=False)]
        return f"{self.describe()} merging {' and '.join(parts)}"

    def infer_shape(self, input_shape: Shape) -> Shape:
        raise ShapeError(f"{self.describe()}: a merge takes two or more inputs; put it in a "
                         "network (a RES[...] or CAT[...] block)")

    def infer_merge(self, shapes: Sequence[Shape], sources: Sequence[str] = ()) -> Shape:
        """The output shape for the input ``shapes`` (``sources`` name where each comes from,
        for the message); :class:`ShapeError` when they cannot be merged."""
        raise NotImplementedError

    def build_merge(self, shapes: Sequence[Shape], dtype: Any = np.float32,
                    sources: Sequence[str] = ()) -> Shape:
        out = self.infer_merge(shapes, sources)
        self.input_shapes = [tuple(s) for s in shapes]
        self.sources = list(sources)
        self.input_shape, self.output_shape = self.input_shapes[0], out
        self.dtype = np.dtype(dtype)
        self.built = True
        return out

    def forward(self, xs: Any, train: bool = False, **kwargs: Any) -> np.ndarray:
        """The merge on a list of batches, one per input (validated like any layer's input)."""
        from convnet.layers.base import check_array

        if not isinstance(xs, list | tuple) or len(xs) < 2:
            raise ShapeError(f"{self.describe()}: expected a list of two or more arrays, one per "
                             "input")
        arrays = [check_array(x, None, self.dtype, self.describe()) for x in xs]
        self.infer_merge([a.shape[1:] for a in arrays], self.sources)
        out = self._forward(arrays, train)
        self._trained = bool(train)
        return out

    def backward(self, dout: Any, **kwargs: Any) -> list[np.ndarray]:
        if not self._trained:
            raise ConfigError(f"{self.describe()}: call forward(xs, train=True) before backward "
                              "(backward needs what the training forward kept, once)")
        self._trained = False
        return self._backward(np.asarray(dout).astype(self.dtype, copy=False))

    def receptive_field(self, rf: ReceptiveField, grid: tuple[int, int]) -> ReceptiveField:
        return rf

    def merge_receptive_field(self, rfs: Sequence[ReceptiveField]) -> ReceptiveField:
        """A unit of the merge sees what any of its inputs' units at that position see: the
        union of their windows (:func:`convnet.arith.union_receptive_field`)."""
        return arith.union_receptive_field(rfs)

    def _branches_text(self) -> str:
        return " + ".join(f"{fmt_shape(s)}" + (f" ({src})" if src else "")
                          for s, src in zip(self.input_shapes,
                                            [*self.sources, *[""] * len(self.input_shapes)],
                                            strict=False))


class Add(_Merge):
    """ADD: the element-by-element sum of two or more volumes of the same shape (the residual
    connection of ResNets: the block's output ``F(x)`` plus its input ``x``).

    Shape:
        inputs ``(N, H, W, D)`` each (all equal) -> output ``(N, H, W, D)``. No parameters.
    """

    kind = "ADD"
    foreign_names = ("SUM",)
    purpose = "element-wise sum of branches (residual)"
    example = "RES[CONV(64,F=3,P=1) -> BN]"
    # the sum is a new array; the backward hands the same gradient to every input
    plan_traits = PlanTraits(fresh_output=True, fresh_backward=False)

    def infer_merge(self, shapes: Sequence[Shape], sources: Sequence[str] = ()) -> Shape:
        first = tuple(shapes[0])
        if any(tuple(s) != first for s in shapes[1:]):
            raise ShapeError(
                f"{self._where(shapes, sources)}: an ADD needs inputs of the same shape, element "
                "by element. A residual block whose main branch changes the size or the depth "
                "needs a projection on its shortcut (a 1x1 CONV with the stride and K that match; "
                "RES[...] inserts one)"
            )
        return first

    def _forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        out = np.add(xs[0], xs[1])
        for x in xs[2:]:
            out += x
        self._cache = len(xs)
        return out

    def _backward(self, dout: np.ndarray) -> list[np.ndarray]:
        n = self._cache or len(self.input_shapes)
        self._cache = None
        return [dout] * n          # d(a + b)/da = 1: the same gradient to every input

    def derivation(self, row: LayerRow) -> list[str]:
        outs = self.output_shape
        return [f"Adds its {len(self.input_shapes)} inputs element by element: "
                f"{self._branches_text()} -> {fmt_shape(outs)} (the shapes must be equal). In a "
                "residual block the branch learns only what to add to its input, F(x) = y - x, "
                "and the gradient reaches the input unchanged through the shortcut. No "
                "parameters."]


class Concat(_Merge):
    """CAT: the inputs stacked along depth (Inception joins its branches this way).

    Shape:
        inputs ``(N, H, W, D_i)`` (same ``H`` and ``W``) -> output ``(N, H, W, sum D_i)``; vectors
        ``(N, n_i)`` -> ``(N, sum n_i)``. No parameters.
    """

    kind = "CAT"
    aliases = ("CONCAT",)
    foreign_names = ("CONCATENATE",)
    purpose = "stack branches along depth"
    example = "CAT[CONV(64,F=1) | CONV(32,F=3,P=1)]"
    # the concatenation and the split are new arrays
    plan_traits = PlanTraits(fresh_output=True)

    def infer_merge(self, shapes: Sequence[Shape], sources: Sequence[str] = ()) -> Shape:
        first = tuple(shapes[0])
        if any(len(s) != len(first) or tuple(s[:-1]) != first[:-1] for s in shapes[1:]):
            raise ShapeError(
                f"{self._where(shapes, sources)}: a CAT stacks its inputs along depth, so every "
                "other dimension must agree (the same H x W). Make the branches keep the same "
                "size: same strides, and padding P = (F - 1)/2 for stride 1"
            )
        return (*first[:-1], sum(int(s[-1]) for s in shapes))

    def _forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        self._cache = [x.shape[-1] for x in xs]
        return np.concatenate(xs, axis=-1)

    def _backward(self, dout: np.ndarray) -> list[np.ndarray]:
        depths = self._cache or [s[-1] for s in self.input_shapes]
        self._cache = None
        bounds = np.cumsum([0, *depths])
        # the split, each piece a contiguous array of its own (the kernels before read rows)
        return [np.ascontiguousarray(dout[..., a:b]) for a, b in
                zip(bounds[:-1], bounds[1:], strict=True)]

    def derivation(self, row: LayerRow) -> list[str]:
        outs = self.output_shape
        depths = " + ".join(str(s[-1]) for s in self.input_shapes)
        return [f"Stacks its {len(self.input_shapes)} inputs along depth: "
                f"{self._branches_text()} -> {fmt_shape(outs)} (depth {depths} = {outs[-1]}; every "
                "other dimension must agree). Its backward splits the gradient the same way. No "
                "parameters."]
