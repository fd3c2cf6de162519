"""DROPOUT and BN (batch normalisation): layers that behave differently in training."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, Shape
from convnet.ops import norm as F_norm

if TYPE_CHECKING:
    from convnet.arith import LayerRow


class Dropout(Layer):
    """DROPOUT: in training, zero each activation with probability ``p`` and scale the survivors
    by ``1/(1 - p)`` ("inverted" dropout), so evaluation is the identity and needs no rescaling.

    ``p`` is the probability to *drop* (as in PyTorch; jax's stax uses a keep rate: a trap).
    """

    kind = "DROPOUT"
    positional = ("p",)
    purpose = "p is the probability to drop"
    example = "DROPOUT(p=0.5)"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) \
                or not 0 <= p < 1:
            raise ConfigError(
                f"DROPOUT: received p={p!r}; p is the probability to drop a unit and must satisfy "
                "0 <= p < 1 (p=1 would drop everything)"
            )
        self.p = float(p)
        self.rng: np.random.Generator | None = None

    def _hyper_text(self) -> str:
        return f" p={self.p:g}"

    def hyper(self) -> dict[str, Any]:
        return {"p": self.p}

    def derivation(self, row: LayerRow) -> list[str]:
        size = f"{arith.num_elements(self.input_shape):,}"
        return [f"During training each of the {size} values is zeroed with probability "
                f"p = {self.p:g} and the rest scaled by 1/(1 - p); at test time it does nothing. "
                "Shape unchanged, no parameters."]

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None,
              dtype: Any = np.float32, init: str | None = None) -> Shape:
        # share the network's generator: one RNG state to save makes resuming exact
        self.rng = rng if rng is not None else np.random.default_rng()
        return super().build(input_shape, rng, dtype, init)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if not train or self.p == 0.0:
            self._cache = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        scale = x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = keep
        return x * keep * scale

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        keep = self._cache
        self._cache = None
        if keep is None:
            return dout
        return dout * keep * dout.dtype.type(1.0 / (1.0 - self.p))

    def _spec_args(self) -> list[str]:
        return [f"p={self.p!r}"]


class BatchNorm(Layer):
    """BN: normalise each depth slice (volumes) or feature (vectors) over the batch, then scale by
    ``gamma`` and shift by ``beta``. Training uses the batch statistics and updates running
    estimates, ``running = (1 - momentum) * running + momentum * batch``; evaluation uses the
    running estimates.

    Shape: any ``(N, ..., D)`` -> same. Parameters ``gamma``, ``beta``: ``(D,)``; buffers
    ``running_mean``, ``running_var``: ``(D,)``.
    """

    kind = "BN"
    aliases = ("BATCHNORM",)
    foreign_names = ("BATCHNORM2D", "BATCHNORMALIZATION")
    example = "BN"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        for name, v, lo, hi in (("momentum", momentum, 0.0, 1.0), ("eps", eps, 0.0, math.inf)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or not lo < v <= hi:
                raise ConfigError(f"BN: received {name}={v!r}; expected {lo} < {name} <= {hi}")
        self.momentum = float(momentum)
        self.eps = float(eps)

    def count_params(self, input_shape: Shape | None = None) -> int:
        shape = input_shape or self.input_shape
        return 2 * shape[-1]

    def hyper(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def derivation(self, row: LayerRow) -> list[str]:
        ins = self.input_shape
        D = ins[-1]
        over = "the batch and every position" if len(ins) == 3 else "the batch"
        return [f"Batch normalisation: each of the {D} depth slices is normalised over {over}, "
                f"then scaled by gamma and shifted by beta: 2*{D} = {row.params} parameters "
                "(running mean and variance are kept too, but not trained). Shape unchanged."]

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        D = self.input_shape[-1]
        self.params["gamma"] = np.ones(D, dtype=self.dtype)
        self.params["beta"] = np.zeros(D, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(D, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(D, dtype=self.dtype)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train and x.size // x.shape[-1] < 2:
            raise ShapeError(
                f"{self.describe()}: training needs more than one value per channel to compute "
                f"batch statistics, received input of shape {x.shape} (use a batch of 2 or more)"
            )
        out, self._cache = F_norm.batchnorm_forward(
            x, self.params["gamma"], self.params["beta"], self.buffers["running_mean"],
            self.buffers["running_var"], self.momentum, self.eps, train,
        )
        return out

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """This layer in evaluation as ``x * scale + shift`` per channel: ``(scale, shift)``."""
        return F_norm.batchnorm_affine(self.params["gamma"], self.params["beta"],
                                       self.buffers["running_mean"], self.buffers["running_var"],
                                       self.eps, self.dtype)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = F_norm.batchnorm_backward(dout, self._cache)
        self._cache = None
        self.grads["gamma"] = dgamma
        self.grads["beta"] = dbeta
        return dx

    def _spec_args(self) -> list[str]:
        args = []
        if self.momentum != 0.1:
            args.append(f"momentum={self.momentum!r}")
        if self.eps != 1e-5:
            args.append(f"eps={self.eps!r}")
        return args
