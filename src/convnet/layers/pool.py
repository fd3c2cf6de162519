"""POOL layers: max and average pooling over each depth slice independently, and global average.

Pooling has no parameters. It slides an ``F x F`` window with stride ``S`` over every activation
map separately, so the depth is preserved: ``(H, W, D) -> ((H - F + 2P)/S + 1, .., D)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.arith import Pair, ReceptiveField, Window, as_pair, fmt_pair, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, PlanTraits, Shape
from convnet.layers.conv import _hw, _WindowLayer
from convnet.ops import pool as F_pool

if TYPE_CHECKING:
    from convnet.arith import LayerRow


class _Pool(_WindowLayer):
    positional = ("F", "S", "P")
    spec_defaults = {"S": "F"}
    #: what each window is replaced by, in the derivation
    reduces_to = "maximum"

    def __init__(self, F: int | Pair = 2, S: int | Pair | None = None, P: int | Pair = 0,
                 floor: bool = False) -> None:
        super().__init__()
        f = as_pair(F, "F", minimum=1, where=self.kind)
        self.window = Window(
            F=f,
            S=f if S is None else as_pair(S, "S", minimum=1, where=self.kind),
            P=as_pair(P, "P", minimum=0, where=self.kind),
        )
        for p, k in zip(self.window.P, f, strict=True):
            if 2 * p > k:
                raise ShapeError(
                    f"{self.kind}: padding P={p} must be at most half the window F={k}: a window "
                    "made mostly of padding would pool nothing but padding"
                )
        self.floor = bool(floor)

    F = property(lambda self: self.window.F)
    S = property(lambda self: self.window.S)
    P = property(lambda self: self.window.P)

    def _hyper_text(self) -> str:
        return self._window_text()

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        H, W = arith.window_output_hw((input_shape[0], input_shape[1]), self.window,
                                      where=self.where(input_shape), floor=self.floor)
        return (H, W, input_shape[2])

    def derivation(self, row: LayerRow) -> list[str]:
        ins, outs, w = self.input_shape, self.output_shape, self.window
        what = self.reduces_to
        return [
            f"Input volume: {fmt_shape(ins)}. Each {w.F[0]}x{w.F[1]} window (stride "
            f"{fmt_pair(w.S)}) of each of the {ins[2]} depth slices is replaced by its {what}; "
            f"the slices are pooled independently, so the depth stays {ins[2]}.",
            f"Output side: (W1 - F + 2P)/S + 1 = {self.formula_text()}: {_hw(ins)} -> "
            f"{_hw(outs)} per slice, {fmt_shape(outs)} in all.",
            f"No parameters: the {what} is a fixed operation, nothing to learn.",
        ]

    def _spec_args(self) -> list[str]:
        w = self.window
        args = []
        if w.F != (2, 2) or w.S != w.F:
            args.append(f"F={fmt_pair(w.F)}")
        if w.S != w.F:
            args.append(f"S={fmt_pair(w.S)}")
        if w.P != (0, 0):
            args.append(f"P={fmt_pair(w.P)}")
        if self.floor:
            args.append("floor=true")
        return args


class MaxPool(_Pool):
    """POOL / MAXPOOL: the maximum of each ``F x F`` window of each depth slice.

    Args: F (default 2), S (default F), P (padding counts as -inf; at most F/2),
    floor (opt in to cropping like PyTorch when the stride does not fit).

    Backward sends each gradient to the first maximum of its window (row-major) on ties, as
    PyTorch does.

    >>> MaxPool().build((28, 28, 32))
    (14, 14, 32)
    """

    kind = "POOL"
    aliases = ("MAXPOOL",)
    foreign_names = ("MAXPOOL2D",)
    purpose = "max pooling, F=2 S=2 by default"
    example = "POOL(F=3,S=2)"
    # max pooling commutes with a nondecreasing activation and can apply the RELU after it in
    # its own pass (convnet/net/plan.py)
    plan_traits = PlanTraits(fresh_output=True, takes_activation=("RELU",))

    def remember_index(self, idx: np.ndarray | None, conv_shape: tuple[int, ...] | None) -> None:
        """Keep the argmax index that another layer's kernel computed for this pool (a CONV
        running this pool on its Winograd tiles); None forgets it. ``conv_shape`` is the
        pooled volume's shape ``(N, H, W, D)``."""
        self._cache = None if idx is None else (idx, conv_shape, self.window.F, self.window.S,
                                                self.window.P)

    def fused_index(self) -> tuple[np.ndarray, tuple[int, ...]] | None:
        """``(index, pooled input shape)`` kept by :meth:`remember_index` or a training forward."""
        return None if self._cache is None else self._cache[:2]

    def _forward(self, x: np.ndarray, train: bool = False, *, relu: bool = False) -> np.ndarray:
        w = self.window
        # evaluation needs no argmax: the max alone is twice as fast. relu=True: the RELU after
        # this layer, done in the same pass (Sequential's plan; the RELU layer keeps the cache)
        out, self._cache = F_pool.maxpool2d_forward(x, w.F, w.S, w.P, need_index=train,
                                                    relu=relu)
        return out

    def _backward(self, dout: np.ndarray, *, relu_out: np.ndarray | None = None) -> np.ndarray:
        if self._cache is None:
            raise ConfigError(f"{self.describe()}: call forward(x, train=True) before backward")
        dx = F_pool.maxpool2d_backward(dout, self._cache, relu_out=relu_out)
        self._cache = None
        return dx


class AvgPool(_Pool):
    """AVGPOOL: the mean of each ``F x F`` window of each depth slice (padded zeros count)."""

    kind = "AVGPOOL"
    foreign_names = ("AVGPOOL2D",)
    purpose = "average pooling, F=2 S=2 by default"
    example = "AVGPOOL(F=2)"
    reduces_to = "mean"

    def _spec_args(self) -> list[str]:
        args = super()._spec_args()
        if not args:  # keep AVGPOOL's window explicit: there is no "usual" average pool
            args = ["F=2"]
        return args

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        w = self.window
        out, self._cache = F_pool.avgpool2d_forward(x, w.F, w.S, w.P)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_pool.avgpool2d_backward(dout, self._cache)
        self._cache = None
        return dx


class GlobalAvgPool(_WindowLayer):
    """GAP: the mean of each whole depth slice: ``(N, H, W, D) -> (N, D)``."""

    kind = "GAP"
    foreign_names = ("GLOBALAVGPOOL", "GLOBALAVERAGEPOOLING2D", "ADAPTIVEAVGPOOL2D")
    purpose = "global average pooling: HxWxD -> D"
    example = "GAP"
    collapses = True

    def convolutional_twin(self, grid: tuple[int, int]) -> Layer | None:
        """An average pool of the window of its whole original input, stride 1."""
        return AvgPool(F=grid, S=1)

    def twin_sentence(self, twin: Layer | None) -> str | None:
        h, w = twin.window.F
        return (f"{self.name}: GAP averages the whole {fmt_shape(self.input_shape)} volume -> "
                f"{twin.to_spec()} (window {h}x{w}, stride 1): the same mean on the original "
                "size, a mean per window on a larger one.")

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        return (input_shape[2],)

    def receptive_field(self, rf: ReceptiveField, grid: tuple[int, int]) -> ReceptiveField:
        rf = arith.receptive_field_step(rf, Window(F=grid, S=grid))
        return ReceptiveField(rf.size, rf.jump, rf.start, whole=True)

    def hyper(self) -> dict[str, Any]:
        return {}

    def short_hyper(self) -> str:
        return ""

    def derivation(self, row: LayerRow) -> list[str]:
        ins, outs = self.input_shape, self.output_shape
        return [f"Global average pooling: the mean of each whole {_hw(ins)} depth slice, "
                f"{fmt_shape(ins)} -> {outs[0]}. No parameters."]

    @property
    def window(self) -> Window:  # a GAP is a pool whose window is the whole input
        h, w = self.input_shape[:2] if self.input_shape else (1, 1)
        return Window(F=(h, w), S=(h, w))

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_pool.global_avgpool_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_pool.global_avgpool_backward(dout, self._cache)
        self._cache = None
        return dx
