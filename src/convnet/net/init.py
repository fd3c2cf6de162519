"""Weight initialisation: He for weights followed by a ReLU-family activation, Glorot otherwise.

He (Kaiming) normal keeps the variance of activations constant through ReLU layers:
``std = sqrt(2 / fan_in)``. Glorot (Xavier) uniform balances forward and backward variance for
symmetric activations (tanh, sigmoid, or none): ``limit = sqrt(6 / (fan_in + fan_out))``.
Biases start at zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.errors import ConfigError

INITS = ("he", "glorot")


def init_weights(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    *,
    fan_in: int,
    fan_out: int,
    init: str = "he",
    dtype: Any = np.float32,
    gain: float | None = None,
) -> np.ndarray:
    """Random weights of ``shape``; drawn in float64 then cast, so float32 and float64 networks
    built with the same seed hold the same numbers (up to rounding)."""
    if init == "he":
        g = np.sqrt(2.0) if gain is None else gain
        w = rng.standard_normal(shape) * (g / np.sqrt(fan_in))
    elif init == "glorot":
        g = 1.0 if gain is None else gain
        limit = g * np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    else:
        raise ConfigError(f"init={init!r} is not one of {', '.join(INITS)}")
    return w.astype(dtype)
