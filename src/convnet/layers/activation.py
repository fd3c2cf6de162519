"""Elementwise activations: RELU, LRELU, TANH, SIGMOID. Shape in = shape out, no parameters."""

from __future__ import annotations

import math

import numpy as np

from convnet.errors import ConfigError
from convnet.layers.base import Layer
from convnet.ops import activations as F_act


class ReLU(Layer):
    """RELU: ``max(0, x)``.

    ``inplace=True`` (forward and backward) overwrites the argument instead of allocating: what
    :class:`~convnet.net.sequential.Sequential` does when the array is fresh from the layer
    before and nobody else reads it. By default the argument is left untouched.
    """

    kind = "RELU"
    activation = "relu"
    needs_build = False

    def _forward(self, x: np.ndarray, train: bool = False, *, inplace: bool = False) -> np.ndarray:
        out, self._cache = F_act.relu_forward(x, inplace=inplace)
        return out

    def _backward(self, dout: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        dx = F_act.relu_backward(dout, self._cache, inplace=inplace)
        self._cache = None
        return dx


class LeakyReLU(Layer):
    """LRELU: ``x`` where positive, ``alpha * x`` elsewhere."""

    kind = "LRELU"
    activation = "relu"
    needs_build = False

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) \
                or not math.isfinite(alpha) or not 0 <= alpha < 1:
            raise ConfigError(f"LRELU: received alpha={alpha!r}; expected 0 <= alpha < 1")
        self.alpha = float(alpha)

    def _hyper_text(self) -> str:
        return f" alpha={self.alpha:g}"

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.leaky_relu_forward(x, self.alpha)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.leaky_relu_backward(dout, self._cache)
        self._cache = None
        return dx

    def _spec_args(self) -> list[str]:
        return [] if self.alpha == 0.01 else [f"alpha={self.alpha!r}"]


class Tanh(Layer):
    """TANH: ``tanh(x)``, in (-1, 1)."""

    kind = "TANH"
    activation = "tanh"
    needs_build = False

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.tanh_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.tanh_backward(dout, self._cache)
        self._cache = None
        return dx


class Sigmoid(Layer):
    """SIGMOID: ``1 / (1 + exp(-x))``, in (0, 1)."""

    kind = "SIGMOID"
    activation = "sigmoid"
    needs_build = False

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.sigmoid_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.sigmoid_backward(dout, self._cache)
        self._cache = None
        return dx
