"""Elementwise activations: RELU, RELU6, LRELU, TANH, SIGMOID. Shape in = shape out, no
parameters."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.errors import ConfigError
from convnet.layers.base import Layer, PlanTraits
from convnet.ops import activations as F_act

if TYPE_CHECKING:
    from convnet.arith import LayerRow


class _Elementwise(Layer):
    """An activation applied to each value on its own; ``formula`` is how explain writes it."""

    needs_build = False
    formula = "f(x)"

    def formula_text(self) -> str:
        return self.formula

    def derivation(self, row: LayerRow) -> list[str]:
        size = f"{arith.num_elements(self.input_shape):,}"
        return [f"{self.formula_text()} applied to each of the {size} values on its own: shape "
                f"unchanged ({fmt_shape(self.output_shape)}), no parameters."]


class ReLU(_Elementwise):
    """RELU: ``max(0, x)``.

    ``inplace=True`` (forward and backward) overwrites the argument instead of allocating: what a
    network does when the array is fresh from the layer before and nobody else reads it. By
    default the argument is left untouched.
    """

    kind = "RELU"
    activation = "relu"
    formula = "max(0, x)"
    plan_traits = PlanTraits(inplace=True, monotone=True)

    def _forward(self, x: np.ndarray, train: bool = False, *, inplace: bool = False) -> np.ndarray:
        out, self._cache = F_act.relu_forward(x, inplace=inplace)
        return out

    def _backward(self, dout: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        dx = F_act.relu_backward(dout, self._cache, inplace=inplace)
        self._cache = None
        return dx

    def remember_output(self, out: np.ndarray | None) -> None:
        # the RELU's cache is its output (its derivative is out > 0): a POOL that applied this
        # RELU in its own pass hands it over here
        self._cache = out

    def take_output(self) -> np.ndarray | None:
        """The output kept for backward (consumed: forgotten here)."""
        out, self._cache = self._cache, None
        return out


class ReLU6(_Elementwise):
    """RELU6: ``min(max(0, x), 6)`` (MobileNet; ONNX writes it as ``Clip(0, 6)``)."""

    kind = "RELU6"
    foreign_names = ("CLIP", "HARDTANH")
    activation = "relu"
    formula = "min(max(0, x), 6)"

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.relu6_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.relu6_backward(dout, self._cache)
        self._cache = None
        return dx


class LeakyReLU(_Elementwise):
    """LRELU: ``x`` where positive, ``alpha * x`` elsewhere."""

    kind = "LRELU"
    aliases = ("LEAKYRELU",)
    foreign_names = ("LEAKY_RELU",)
    positional = ("alpha",)
    example = "LRELU(alpha=0.1)"
    activation = "relu"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) \
                or not math.isfinite(alpha) or not 0 <= alpha < 1:
            raise ConfigError(f"LRELU: received alpha={alpha!r}; expected 0 <= alpha < 1")
        self.alpha = float(alpha)

    def formula_text(self) -> str:
        return f"max({self.alpha:g}x, x)"

    def _hyper_text(self) -> str:
        return f" alpha={self.alpha:g}"

    def hyper(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.leaky_relu_forward(x, self.alpha)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.leaky_relu_backward(dout, self._cache)
        self._cache = None
        return dx

    def _spec_args(self) -> list[str]:
        return [] if self.alpha == 0.01 else [f"alpha={self.alpha!r}"]


class Tanh(_Elementwise):
    """TANH: ``tanh(x)``, in (-1, 1)."""

    kind = "TANH"
    activation = "tanh"
    formula = "tanh(x)"

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.tanh_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.tanh_backward(dout, self._cache)
        self._cache = None
        return dx


class Sigmoid(_Elementwise):
    """SIGMOID: ``1 / (1 + exp(-x))``, in (0, 1)."""

    kind = "SIGMOID"
    activation = "sigmoid"
    formula = "1/(1 + exp(-x))"

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = F_act.sigmoid_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx = F_act.sigmoid_backward(dout, self._cache)
        self._cache = None
        return dx
