"""FC (fully connected) and FLATTEN.

How a volume becomes a vector, once and for all: an ``H x W x D`` volume is flattened in NHWC
row-major order, ``index = (row * W + col) * D + depth``: row by row, left to right, and at each
position all D depth slices before moving on. So a 5x5x6 volume gives 150 features, where
features 0..5 are the six depth values of the top-left pixel. FC, FLATTEN, the FC -> CONV
conversion and the visualiser all use this order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.arith import ReceptiveField, Window, fmt_shape
from convnet.errors import ShapeError
from convnet.layers.base import Layer, PlanTraits, Shape
from convnet.net.init import init_weights
from convnet.ops import dense as F_dense

if TYPE_CHECKING:
    from convnet.arith import LayerRow


def _n(x: int) -> str:
    return f"{x:,}"


class Flatten(Layer):
    """FLATTEN: ``(N, H, W, D) -> (N, H*W*D)`` in the documented order (a view, no copy).

    >>> Flatten().infer_shape((5, 5, 6))
    (150,)
    """

    kind = "FLATTEN"
    purpose = "HxWxD -> H*W*D"
    example = "FLATTEN"
    fixed_size = True
    collapses = True

    def convolutional_twin(self, grid: tuple[int, int]) -> Layer | None:
        return None   # the CONV that replaces the next FC reads the volume directly

    def twin_sentence(self, twin: Layer | None) -> str | None:
        return f"{self.name}: FLATTEN is dropped; the CONV reads the volume directly."

    def infer_shape(self, input_shape: Shape) -> Shape:
        return (arith.num_elements(input_shape),)

    def derivation(self, row: LayerRow) -> list[str]:
        return [f"Flattens {fmt_shape(self.input_shape)} -> {self.output_shape[0]} in NHWC order "
                "(row by row, left to right, all depth values of a position together). No "
                "parameters."]

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self._cache)


class FC(Layer):
    """FC: every output is a dot product with *all* inputs, plus a bias.

    Applied to a volume it first flattens it (``6x5x5 -> 150``, in the order described in this
    module's docstring), so ``FC`` can follow CONV or POOL directly.

    Shape:
        input ``(N, n)`` or ``(N, H, W, D)`` with ``n = H*W*D`` -> output ``(N, K)``.
        Weights ``W``: ``(n, K)`` (so the forward pass is ``x @ W + b``); bias ``b``: ``(K,)``.

    >>> layer = FC(10)
    >>> layer.build((5, 5, 6))
    (10,)
    >>> layer.num_params
    1510
    """

    kind = "FC"
    foreign_names = ("DENSE", "LINEAR")
    positional = ("K",)
    purpose = "fully connected, K outputs"
    example = "FC(10)"
    weighted = True
    fixed_size = True
    collapses = True
    plan_traits = PlanTraits(fresh_output=True)

    def __init__(self, K: int, bias: bool = True) -> None:
        super().__init__()
        if isinstance(K, bool) or not isinstance(K, int | np.integer) or K < 1:
            raise ShapeError(
                f"FC: received K={K!r}: the number of outputs must be a whole number > 0")
        self.K = int(K)
        self.bias = bool(bias)

    def _hyper_text(self) -> str:
        return f" K={self.K}"

    def infer_shape(self, input_shape: Shape) -> Shape:
        return (self.K,)

    def macs(self) -> int:
        return arith.fc_macs(arith.num_elements(self.input_shape), self.K)

    def receptive_field(self, rf: ReceptiveField, grid: tuple[int, int] | None) -> ReceptiveField:
        """Every output sees the whole input: the window of an FC is the volume it reads
        (directly, or the grid it was flattened from)."""
        if grid is None:            # a network of vectors: there is no image to see
            return rf if rf.whole else ReceptiveField(whole=True)
        if grid == (1, 1):
            return rf
        rf = arith.receptive_field_step(rf, Window(F=grid, S=grid))
        return ReceptiveField(rf.size, rf.jump, rf.start, whole=True)

    def hyper(self) -> dict[str, Any]:
        return {"K": int(self.K)}

    def short_hyper(self) -> str:
        return f"K={self.K}"

    def derivation(self, row: LayerRow) -> list[str]:
        ins, K = self.input_shape, self.K
        n = arith.num_elements(ins)
        lines = []
        if len(ins) == 3:
            lines.append(
                f"Flattens the {fmt_shape(ins)} volume into {ins[0]}*{ins[1]}*{ins[2]} = {_n(n)} "
                f"values ({fmt_shape(ins)} -> {n}), in NHWC order: row by row, left to right, "
                f"the {ins[2]} depth values of each position together.")
        lines += [
            f"Each of the {_n(K)} outputs is a dot product with all {_n(n)} inputs"
            + (" plus a bias" if self.bias else "") + f": {_n(n)}*{_n(K)} weights"
            + (f" + {_n(K)} biases" if self.bias else "") + f" = {_n(row.params)} parameters.",
            f"MACs: {_n(n)} x {_n(K)} = {_n(row.macs)}.",
        ]
        return lines

    def convolutional_twin(self, grid: tuple[int, int]) -> Layer | None:
        """A CONV whose filter covers the ``grid`` volume this FC reads: ``CONV(K, F=grid)``."""
        from convnet.layers.conv import Conv

        return Conv(self.K, F=grid, bias=self.bias)

    def copy_weights_to(self, twin: Layer) -> None:
        fh, fw = twin.window.F
        D = twin.input_shape[2]
        # rows of W are (row, col, depth) in flattening order: the filter bank is a reshape
        twin.params["W"][...] = self.params["W"].reshape(fh, fw, D, self.K).transpose(3, 0, 1, 2)
        if self.bias:
            twin.params["b"][...] = self.params["b"]

    def twin_sentence(self, twin: Layer | None) -> str | None:
        fh, fw = twin.window.F
        # the volume the CONV reads: FLATTEN's input, or 1x1xK after an earlier FC / GAP
        D = arith.num_elements(self.input_shape) // (fh * fw)
        vol = f"{fh}x{fw}x{D}"
        formula = "; ".join(arith.window_formula((fh, fw), twin.window))
        params = arith.conv_params((fh, fw), D, self.K, self.bias)
        bias = f" + {self.K}" if self.bias else ""
        return (f"{self.name}: {self.to_spec()} reads {vol} = {_n(fh * fw * D)} numbers -> "
                f"{twin.to_spec()}: {formula}, so {vol} -> 1x1x{self.K}. Its {_n(fh * fw * D)}x"
                f"{self.K} weight matrix, rows in (row, col, depth) order, is reshaped to "
                f"{self.K} filters of {vol}: {fh}*{fw}*{D}*{self.K}{bias} = {_n(params)} "
                "parameters either way.")

    def n_in(self, input_shape: Shape | None = None) -> int:
        return arith.num_elements(input_shape or self.input_shape)

    def count_params(self, input_shape: Shape | None = None) -> int:
        return arith.fc_params(self.n_in(input_shape), self.K, self.bias)

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        n = self.n_in()
        self.params["W"] = init_weights(rng, (n, self.K), fan_in=n, fan_out=self.K, init=init,
                                        dtype=self.dtype)
        if self.bias:
            self.params["b"] = np.zeros(self.K, dtype=self.dtype)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        # the GEMMs over the worker threads with single-threaded BLAS (ops/dense.py)
        out, self._cache = F_dense.fc_forward(x, self.params["W"], self.params.get("b"))
        return out

    def _backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        cache, self._cache = self._cache, None
        dx, self.grads["W"], db = F_dense.fc_backward(dout, cache, need_dx=need_dx)
        if self.bias:
            self.grads["b"] = db
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        self._backward(dout, need_dx=False)

    def _spec_args(self) -> list[str]:
        return [str(self.K)] + ([] if self.bias else ["bias=false"])
