"""What the page (:mod:`~convnet.viz.page`) and the PNG plots (:mod:`~convnet.viz.plots`) share:
the model's input normalisation, every layer's activations, and the axes of the training curves.

Both modules import from here and never from each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convnet.arith import fmt_shape
from convnet.data.transforms import Normalizer
from convnet.errors import ConfigError
from convnet.net.graph import Graph

__all__ = ["curve_extent", "fmt_tick", "layer_activations", "nice_ticks"]


def _normalize(net: Graph, images: np.ndarray) -> np.ndarray:
    """``images`` normalised with ``net.normalizer`` (the training set's per-channel mean and
    std saved with the model), or unchanged when the model has none."""
    stats = Normalizer.coerce(getattr(net, "normalizer", None))
    x = np.asarray(images, dtype=np.float32)
    return x if stats is None else stats.apply(x)


def layer_activations(net: Graph, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for the (already normalised) batch ``x``, in evaluation mode.

    The layers one by one in the network's order, each reading its own inputs (a merge all of
    its branches), keeping each intermediate volume: the values of :meth:`Graph.forward`, to the
    last bit unless the network has a BN right after a CONV/DECONV, which its evaluation folds
    into that layer's weights (a different rounding, ~1e-7 relative in float32). The page's
    probabilities come from these volumes.

    Shape:
        x ``(N, *net.input_shape)`` -> one ``(N, *layer.output_shape)`` array per layer.
    """
    from convnet.layers.base import check_array

    values = {-1: check_array(x, net.input_shape, net.dtype,
                              f"network input ({fmt_shape(net.input_shape)})")}
    for i, layer in enumerate(net.layers):
        ins = [values[k] for k in net.inputs_of[i]]
        values[i] = layer.forward(ins[0] if layer.arity == 1 else ins, train=False)
    return [values[i] for i in range(len(net.layers))]


# ------------------------------------------------------------------------------ axis ticks
#: The mantissas of a "nice" tick step: 1, 2 or 5 times a power of ten.
NICE_STEPS = (1, 2, 5)


def _step_decimals(step: float) -> int:
    """Decimals that write every multiple of ``step`` exactly (0.05 -> 2, 2.5 -> 1, 20 -> 0)."""
    step = abs(step)
    for d in range(13):
        if abs(round(step, d) - step) <= 1e-9 * step:
            return d
    return 12


def _floor(q: float) -> int:
    """``floor``, but a quotient a rounding error below a whole number is that number."""
    r = round(q)
    return r if abs(q - r) <= max(1e-9, 1e-12 * abs(q)) else math.floor(q)


def _ceil(q: float) -> int:
    r = round(q)
    return r if abs(q - r) <= max(1e-9, 1e-12 * abs(q)) else math.ceil(q)


def nice_ticks(lo: float, hi: float, n: int = 6, *, integer: bool = False,
               inside: bool = False) -> list[float]:
    """At most ``n`` evenly spaced round values that cover ``[lo, hi]`` (or lie inside it).

    The step is the smallest of 1, 2 or 5 times a power of ten (at least 1 with ``integer``)
    for which the multiples of the step from ``floor(lo/step)*step`` to ``ceil(hi/step)*step``
    number at most ``n``; those multiples are returned, so the first tick is ``<= lo`` and the
    last ``>= hi``: a chart takes them as its axis limits (a zoomed, labelled range). With
    ``inside`` only the multiples within ``[lo, hi]`` count and are returned (for an axis
    whose limits are fixed already: the epochs, a colour bar). An empty range is widened
    around its value first; a range around zero needs 3 ticks to be covered (one below, 0,
    one above), so ``n=2`` gives 3 there.

    >>> nice_ticks(0.8531, 0.9163, 6)     # accuracies: the axis runs 0.84 .. 0.92
    [0.84, 0.86, 0.88, 0.9, 0.92]
    >>> nice_ticks(0.217, 0.311, 6)       # a step of 0.02 would need 7 ticks
    [0.2, 0.25, 0.3, 0.35]
    >>> nice_ticks(1, 15, 8, integer=True, inside=True)   # epochs 1 to 15
    [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]

    Raises :class:`~convnet.errors.ConfigError` for ``n < 2`` or a bound that is not finite.
    """
    if n < 2:
        raise ConfigError(f"nice_ticks: n={n}: a scale needs at least 2 ticks")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"nice_ticks: the range [{lo}, {hi}] is not finite")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo < 1e-12 * max(1.0, abs(lo)):
        half = 0.5 if integer or lo == 0 else 0.05 * abs(lo)
        lo, hi = lo - half, hi + half
    if not inside and lo < 0 < hi:
        n = max(n, 3)
    # the smallest candidate step is below the span / (n - 1): start one decade under it
    exp = math.floor(math.log10((hi - lo) / (n - 1))) - 1
    while True:
        for m in NICE_STEPS:
            step = m * 10.0 ** exp
            if integer and step < 1:
                continue
            if inside:
                first, last = _ceil(lo / step), _floor(hi / step)
            else:
                first, last = _floor(lo / step), _ceil(hi / step)
            if last - first + 1 <= n:
                digits = _step_decimals(step) + 1
                return [round(i * step, digits) + 0.0 for i in range(first, last + 1)]
        exp += 1


def fmt_tick(value: float, ticks: Sequence[float], percent: bool = False) -> str:
    """``value`` written with as many decimals as the step of ``ticks`` needs (all labels of an
    axis alike: 0.20, 0.25, 0.30 rather than 0.2, 0.25, 0.3); with ``percent``, a fraction
    written as a percentage (0.925 -> 92.5%)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    scale = 100.0 if percent else 1.0
    digits = _step_decimals(step * scale) if step > 0 else 0
    return f"{value * scale:.{digits}f}" + ("%" if percent else "")


def curve_extent(history: Sequence[Mapping[str, Any]], keys: Sequence[str], unit_range: bool,
                 n: int = 6) -> tuple[list[float], tuple[float, float], tuple[float, float]]:
    """Epochs, value range and epoch range of per-epoch curves (the PNG and the page's SVG).

    The value range is zoomed to the data and widened to round ticks (:func:`nice_ticks`):
    accuracies between 0.87 and 0.93 get an axis from 0.86 to 0.94, not 0 to 1, so the curves
    do not lie flat along the top. With ``unit_range`` (accuracies) the range stays within
    ``[0, 1]``. A single epoch gets an epoch range of 1, so nothing divides by zero.
    """
    epochs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    vals = [float(v) for h in history for k in keys if (v := h.get(k)) is not None]
    ticks = nice_ticks(min(vals), max(vals), n)
    lo, hi = ticks[0], ticks[-1]
    if unit_range and max(vals) <= 1.0 and min(vals) >= 0.0:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    e0, e1 = min(epochs), max(epochs)
    if e1 == e0:
        e1 = e0 + 1
    return epochs, (lo, hi), (e0, e1)
