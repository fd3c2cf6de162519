"""FC (fully connected) and FLATTEN.

How a volume becomes a vector, once and for all: an ``H x W x D`` volume is flattened in NHWC
row-major order, ``index = (row * W + col) * D + depth``: row by row, left to right, and at each
position all D depth slices before moving on. So a 5x5x6 volume gives 150 features, where
features 0..5 are the six depth values of the top-left pixel. FC, FLATTEN, the FC -> CONV
conversion and the visualiser all use this order.
"""

from __future__ import annotations

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.errors import ShapeError
from convnet.layers.base import Layer, Shape
from convnet.net.init import init_weights
from convnet.ops import dense as F_dense


class Flatten(Layer):
    """FLATTEN: ``(N, H, W, D) -> (N, H*W*D)`` in the documented order (a view, no copy).

    >>> Flatten().infer_shape((5, 5, 6))
    (150,)
    """

    kind = "FLATTEN"

    def infer_shape(self, input_shape: Shape) -> Shape:
        return (arith.num_elements(input_shape),)

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

    def n_in(self, input_shape: Shape | None = None) -> int:
        return arith.num_elements(input_shape or self.input_shape)

    def count_params(self, input_shape: Shape | None = None) -> int:
        return arith.fc_params(self.n_in(input_shape), self.K, self.bias)

    def flatten_text(self) -> str:
        """``6x5x5 -> 150`` style description of the flattening this layer does."""
        return f"{fmt_shape(self.input_shape)} -> {self.n_in()}"

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
