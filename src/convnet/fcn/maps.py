"""Score maps: a classifier slid over a larger image in one pass, and the crop-by-crop reference.

A network converted by :func:`~convnet.fcn.convert.to_fully_convolutional` (or one that never had
an FC) runs on any image whose size its strides fit. On an ``H x W`` image it returns a map of
class scores, one score vector per crop of the original input size, the network's *total stride*
``T`` (the product of the strides) apart::

    rows = (H - H0)/T + 1        # CS231n: VGG, H0 = 224, T = 32, H = 384 -> 6x6 map = 36 crops

Without zero padding, map unit ``(i, j)`` *equals* the original network's scores on the crop
``x[i*T : i*T + H0, j*T : j*T + W0]`` (:func:`crop_scores` is that loop, done the slow way, for
tests and the benchmark); the one pass shares the computation of the overlapping crops. With zero
padding the two differ: a crop sees zeros around its border where the large image has pixels
(:func:`interior_units` says which units of a crop's feature volume agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from convnet import arith
from convnet.arith import Pair, ReceptiveField, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.net.sequential import Sequential

#: how many fitting sizes an error message lists
SHOWN_SIZES = 6


def as_fully_convolutional(net: Sequential) -> Sequential:
    """``net`` itself when every layer keeps the spatial layout (its output is a map); else its
    conversion (FC -> CONV, FLATTEN dropped, GAP -> AVGPOOL)."""
    if len(net.input_shape) == 3 and len(net.output_shape) == 3:
        return net
    from convnet.fcn.convert import to_fully_convolutional

    return to_fully_convolutional(net)


def map_receptive_field(net: Sequential) -> ReceptiveField:
    """What one unit of the score map sees of the input (:class:`arith.ReceptiveField`): its
    ``jump`` is the total stride, ``size`` the window (padding included), ``start`` the centre of
    unit ``(0, 0)``."""
    fcn = as_fully_convolutional(net)
    return arith.layer_rows(fcn)[-1].rf


def total_stride(net: Sequential) -> Pair:
    """The total stride ``T`` (rows, cols): how many input pixels apart neighbouring map units
    (equivalently, the crops they score) are: the product of the strides of every layer.

    Raises :class:`ConfigError` when a transposed CONV makes it fractional (an upsampling net
    has no crop grid).
    """
    jump = map_receptive_field(net).jump
    if any(Fraction(j).denominator != 1 for j in jump):
        raise ConfigError(
            f"the map units are {arith.fmt_frac_pair(jump)} input pixels apart (a DECONV divides "
            "the stride): there is no whole-pixel grid of crops"
        )
    return int(jump[0]), int(jump[1])


def zero_padded_layers(net: Sequential) -> list[str]:
    """Names of the sliding-window layers that pad their input (P > 0), e.g. ``["conv1"]``."""
    return [ly.name for ly in net.layers
            if ly.slides and not ly.transposed and ly.window.P != (0, 0)]


# ----------------------------------------------------------------------------- sizes that fit
def _fits(net: Sequential, shape: tuple[int, int, int]) -> bool:
    try:
        net.shapes_for(shape)
    except ShapeError:
        return False
    return True


def sizes_that_fit(net: Sequential, axis: int = 0, upto: int | None = None) -> list[int]:
    """Sizes along ``axis`` (0 rows, 1 cols) at most ``upto`` for which every stride of the
    fully convolutional ``net`` fits (the other axis at its original size). Pure arithmetic.

    Without DECONV or ``floor`` they are ``s0 + T*k``: ``s0`` the smallest, ``T`` the total
    stride.

    >>> import convnet as cn
    >>> net = cn.build("INPUT(28x28x1) -> CONV(8,F=3,P=1) -> POOL -> CONV(10,F=3,P=1) -> POOL"
    ...                " -> FC(10)", weights=False).to_fully_convolutional()
    >>> sizes_that_fit(net, upto=44)
    [28, 32, 36, 40, 44]
    """
    fcn = as_fully_convolutional(net)
    H0, W0, D = fcn.input_shape
    base = (H0, W0)[axis]
    if upto is None:
        upto = base + (SHOWN_SIZES + 2) * max(total_stride_or_1(fcn))
    out = []
    for size in range(1, upto + 1):
        shape = (size, W0, D) if axis == 0 else (H0, size, D)
        if _fits(fcn, shape):
            out.append(size)
    return out


def total_stride_or_1(net: Sequential) -> Pair:
    try:
        return total_stride(net)
    except ConfigError:
        return (1, 1)


def describe_sizes(sizes: Sequence[int], near: int | None = None) -> str:
    """``"28 + 4k: 28, 32, 36, 40, 44, 48, ..."`` (plus the nearest to ``near``)."""
    if not sizes:
        return "none"
    steps = {b - a for a, b in zip(sizes, sizes[1:], strict=False)}
    shown = ", ".join(str(s) for s in sizes[:SHOWN_SIZES]) + (", ..." if len(sizes) > 1 else "")
    text = f"{sizes[0]} + {steps.pop()}k: {shown}" if len(steps) == 1 else shown
    if near is not None and near not in sizes:
        below = [s for s in sizes if s < near]
        above = [s for s in sizes if s > near]
        nearest = ([str(below[-1])] if below else []) + ([str(above[0])] if above else [])
        text += f" (nearest to {near}: {' or '.join(nearest)})"
    return text


def check_input_size(net: Sequential, shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Every layer's output shape for an ``(H, W, D)`` input to the fully convolutional ``net``;
    a :class:`ShapeError` that lists the sizes that fit when a stride does not fit.

    The message keeps the failing layer's formula (from :mod:`convnet.arith`) and adds, per axis
    that fails, ``sizes that fit: 28 + 4k: 28, 32, 36, ...``.
    """
    fcn = as_fully_convolutional(net)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[2] != fcn.input_shape[2]:
        raise ShapeError(
            f"the network takes H x W x {fcn.input_shape[2]} images, received {shape} "
            f"({fmt_shape(shape)})"
        )
    try:
        return fcn.shapes_for(shape)
    except ShapeError as exc:
        H0, W0, D = fcn.input_shape
        T = total_stride_or_1(fcn)
        parts = []
        for axis, name in enumerate(("rows", "cols")):
            trial = (shape[0], W0, D) if axis == 0 else (H0, shape[1], D)
            if _fits(fcn, trial):
                continue
            upto = max(shape[axis], (H0, W0)[axis]) + SHOWN_SIZES * T[axis]
            sizes = [s for s in sizes_that_fit(fcn, axis, upto)]
            parts.append(f"{name}: sizes that fit: {describe_sizes(sizes, shape[axis])}")
        hint = "; ".join(parts) if parts else "the two sizes do not fit together"
        raise ShapeError(
            f"a {fmt_shape(shape)} image does not fit this network: {exc} The strides multiply "
            f"to {arith.fmt_pair(T)}, so {hint}."
        ) from None


# ---------------------------------------------------------------------------------- the maps
def map_shape(net: Sequential, hw: Pair) -> tuple[int, int, int]:
    """``(rows, cols, K)`` of the score map on an ``hw`` image (validated)."""
    fcn = as_fully_convolutional(net)
    out = check_input_size(fcn, (*hw, fcn.input_shape[2]))[-1]
    return int(out[0]), int(out[1]), int(out[2])


def score_map(net: Sequential, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The class-score map of ``net`` on images ``x`` at least as large as its input, in one
    pass per batch (the crops share their computation).

    ``net`` may be the original classifier (it is converted first) or already fully
    convolutional.

    Shape:
        ``x (N, H, W, D) -> (N, rows, cols, K)`` with ``rows = (H - H0)/T + 1`` for a network
        without DECONV (``H0`` the original input size, ``T`` :func:`total_stride`).
    """
    fcn = as_fully_convolutional(net)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"score_map: expected images (N, H, W, D), received shape {x.shape}")
    check_input_size(fcn, x.shape[1:])
    outs = [fcn.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def crops(x: np.ndarray, size: Pair, stride: Pair) -> np.ndarray:
    """Every ``size`` crop of ``x`` at ``stride``, as a view: ``(N, rows, cols, h, w, D)``.

    ``rows = (H - h)/stride + 1`` (the crops that lie wholly inside; a stride that does not tile
    the image leaves the last few pixels unused, as a crop loop would).
    """
    h, w = size
    win = np.lib.stride_tricks.sliding_window_view(x, (h, w), axis=(1, 2))
    win = win[:, ::stride[0], ::stride[1]]  # (N, rows, cols, D, h, w)
    return win.transpose(0, 1, 2, 4, 5, 3)


def crop_scores(net: Sequential, x: np.ndarray, stride: Pair | None = None,
                batch_size: int = 64) -> np.ndarray:
    """The reference the one-pass map is checked against: the *original* classifier run on every
    crop of its input size, ``stride`` apart (default :func:`total_stride`).

    The crops are gathered with one strided view and scored in batches, so the cost is the
    classifier's, once per crop, with no sharing between overlapping crops.

    Shape:
        ``x (N, H, W, D) -> (N, rows, cols, K)``, ``rows = (H - H0)//stride + 1``.
    """
    if len(net.input_shape) != 3:
        raise ConfigError("crop_scores needs a network on H x W x D images")
    H0, W0, D = net.input_shape
    x = np.asarray(x, dtype=net.dtype)
    if x.ndim != 4 or x.shape[3] != D or x.shape[1] < H0 or x.shape[2] < W0:
        raise ShapeError(
            f"crop_scores: images must be (N, H, W, {D}) with H >= {H0} and W >= {W0}, received "
            f"{x.shape}"
        )
    S = stride if stride is not None else total_stride(net)
    win = crops(x, (H0, W0), S)
    N, rows, cols = win.shape[:3]
    flat = win.reshape(N * rows * cols, H0, W0, D)  # the one copy: every crop, unshared
    scores = net.predict(flat, batch_size=batch_size)
    if len(net.output_shape) == 3:  # an already fully convolutional net: (1, 1, K) per crop
        scores = scores.reshape(len(flat), -1)
    return scores.reshape(N, rows, cols, -1)


# --------------------------------------------------------------------- zero-padding caveat
def feature_layer_index(net: Sequential) -> int:
    """Index of the last layer whose output is the volume the first FC (or GAP) reads; for a
    network without FC/GAP, the last layer."""
    for i, layer in enumerate(net.layers):
        if layer.collapses:
            return i - 1
    return len(net.layers) - 1


def interior_units(net: Sequential, layer: int | None = None) -> tuple[slice, slice]:
    """``(rows, cols)`` slices of the units of layer ``layer`` (default: the volume the first FC
    reads) whose receptive field lies wholly inside the input: they read no zero padding, so
    they are the same whether the input is a crop or a window of a larger image. The units
    outside these slices (a border ring, when some layer pads) differ.

    Shape:
        Slices into the layer's ``(H, W)`` output grid.
    """
    i = feature_layer_index(net) if layer is None else layer
    if i < 0:
        H, W = net.input_shape[:2]
        return slice(0, H), slice(0, W)
    rows = arith.layer_rows(net)
    rf = rows[i].rf
    out_hw = rows[i].output_shape[:2]
    size = net.input_shape[:2]
    result = []
    for a in range(2):
        half = (rf.size[a] - 1) / 2
        # unit k sees [start + k*jump - half, start + k*jump + half]; keep those within [0, size-1]
        ks = [k for k in range(out_hw[a])
              if rf.start[a] + k * rf.jump[a] - half >= 0
              and rf.start[a] + k * rf.jump[a] + half <= size[a] - 1]
        result.append(slice(ks[0], ks[-1] + 1) if ks else slice(0, 0))
    return result[0], result[1]


__all__ = [
    "as_fully_convolutional", "check_input_size", "crop_scores", "crops", "describe_sizes",
    "feature_layer_index", "interior_units", "map_receptive_field", "map_shape", "score_map",
    "sizes_that_fit", "total_stride", "zero_padded_layers",
]
