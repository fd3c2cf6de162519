"""How a convolution picks its path: the one decision, its measured thresholds, and the override.

A convolution can be computed several ways; all give the same sums (to rounding) and differ only
in speed and memory. :func:`choose_path` is the ONE place that decides, for the forward pass,
the weight gradient and the backward of :mod:`convnet.ops.conv` alike (a layer's forward and
backward see the same shapes, so they take the same path):

==================== ================================================= =======================
path                 where it applies (shapes)                         where it is chosen
==================== ================================================= =======================
``WINOGRAD``         3x3, stride 1, no dilation                        >= 32 channels in and
                                                                       out, >= 25 output tiles
``SUBIMAGES``        dilated 3x3 stride-1 "same" (P = d, sizes          as Winograd, on the
                     divisible by d): Winograd on the d*d sub-images   sub-images
``DIRECT_DEPTH1``    3x3 on one input channel, Numba, float32/64       >= 8 filters
``DIRECT_SMALL``     stride 1, any window and dilation, <= 8 input     <= 8 filters
                     channels, Numba, float32/64
``IM2COL``           everything (gather + GEMM: the general path)      otherwise
==================== ================================================= =======================

The input gradient (a convolution's ``dx``, and the transposed convolution's forward, which IS
that kernel) has a ladder of its own, :func:`choose_input_grad_path`: one GEMM for a 1x1 layer,
the flipped convolution at stride 1 (which then picks its own :class:`ConvPath`), GEMM + col2im
(on transposed buffers for a thin ``dx``).

Every threshold below states what was measured to set it. A path is "chosen" where it pays and
"applies" wherever it computes the right result; :func:`force_path` makes a path that applies be
taken whatever the thresholds say, so that tests compare every fast path with the plain one
(and with :mod:`convnet.ops.reference`) on small shapes, and so that a measurement can run the
same layer both ways. It replaces setting the thresholds by hand.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from convnet.arith import effective_extent
from convnet.ops import _jit, winograd

Pair = tuple[int, int]

__all__ = [
    "COL2IM_PLANES_BELOW", "DEPTH1_MIN_FILTERS", "FLIP_MIN_DEPTH", "SMALL_MAX_DEPTH",
    "SMALL_MAX_FILTERS", "WINOGRAD_MIN_CHANNELS", "WINOGRAD_MIN_TILES", "ConvPath",
    "DepthwisePath", "InputGradPath", "choose_depthwise_path", "choose_input_grad_path",
    "choose_path", "force_path",
]


class ConvPath(enum.Enum):
    """How a convolution's forward pass, weight gradient and backward are computed."""

    #: im2col + GEMM, block by block (:mod:`convnet.ops.conv`): any configuration.
    IM2COL = "im2col"
    #: Winograd F(2x2, 3x3) (:func:`convnet.ops.conv_fast.winograd_conv`): 2.25x fewer
    #: multiplies; the backward makes dW and dx in one pass.
    WINOGRAD = "winograd"
    #: A dilated 3x3 "same" convolution as Winograd on the ``d_h * d_w`` interleaved sub-images
    #: (space-to-batch, :func:`convnet.ops.conv_fast.to_subimages`).
    SUBIMAGES = "subimages"
    #: The compiled direct 3x3 kernel of a one-channel input
    #: (:func:`convnet.ops.conv_fast.conv3x3_depth1`).
    DIRECT_DEPTH1 = "direct_depth1"
    #: The compiled direct kernel of a thin input (at most :data:`SMALL_MAX_DEPTH` channels)
    #: and any window (:func:`convnet.ops.conv_fast.conv_small`).
    DIRECT_SMALL = "direct_small"


class DepthwisePath(enum.Enum):
    """How a depthwise convolution (``DWCONV``, groups = depth) is computed
    (:mod:`convnet.ops.grouped`)."""

    #: NumPy: one strided pass per filter tap over the whole output (any multiplier).
    TAPS = "taps"
    #: Compiled kernels, one pass over the output, vectorised over the depth
    #: (:func:`convnet.ops._jit.depthwise_kernel`): multiplier 1, float32/64.
    DIRECT = "direct"


class InputGradPath(enum.Enum):
    """How :func:`convnet.ops.conv.conv2d_input_grad` (a convolution's ``dx``, a transposed
    convolution's forward) is computed."""

    #: A 1x1 unpadded stride-1 layer on the input's own grid: one GEMM ``dout @ W``.
    GEMM = "gemm"
    #: Stride 1: the convolution of ``dout`` with the filters turned 180 degrees (it then takes
    #: its own :class:`ConvPath`, Winograd included).
    FLIPPED = "flipped"
    #: ``dcols = dout @ W`` per block, then ``Fh*Fw`` strided slice-adds (col2im).
    COL2IM = "col2im"
    #: The same sums on transposed buffers: the slice-adds run along image rows (a thin ``dx``).
    COL2IM_PLANES = "col2im_planes"
    #: Stride 1, a thin ``dx`` (at most :data:`SMALL_MAX_DEPTH` channels) from few filters: the
    #: compiled kernel on the wide grid (:func:`convnet.ops.conv_fast.small_input_grad`).
    DIRECT_SMALL = "direct_small"


# ------------------------------------------------------------------------------ thresholds
#: Smallest input depth AND filter count for which a 3x3 stride-1 convolution (forward, input
#: and weight gradients) runs as Winograd F(2x2, 3x3) (:mod:`convnet.ops.winograd`, 2.25x fewer
#: multiplies) instead of im2col + GEMM. Below it the 16 GEMMs (inner size D or K instead of
#: 9*D) run too far from the BLAS peak. Measured at batch 128, one thread, CPU time:
#: 16x16x64 -> 64 forward 40.8 -> 21.2 ms, input gradient 40.0 -> 23.2, weight gradient 41.3
#: -> 23.8; 32x32x32 -> 32 52.8 -> 36.4, 52.2 -> 42.1, 50.1 -> 38.1; but 32x32x16 -> 32
#: forward 26.9 -> 35.1 and 32x32x16 -> 16 17.8 -> 27.4 (slower).
WINOGRAD_MIN_CHANNELS = 32
#: ... and smallest number of 2x2 output tiles over the whole batch. Measured at batch 1 (one
#: thread, min of 600 calls, interleaved): 14x14x32 -> 64 (49 tiles) 222 us by im2col, 206 by
#: Winograd; 10x10x32 -> 32 (25 tiles) 100 vs 83; 7x7x64 -> 64 and 8x8 (16 tiles) a tie
#: (134-141 us both). Below 25 tiles im2col, whose cost is steadier at that size.
WINOGRAD_MIN_TILES = 25
#: Fewest filters for which a 3x3 layer on a one-channel input runs as the compiled direct
#: kernel (:func:`convnet.ops._jit.conv3x3_depth1_kernel`): it vectorises over the filters, so
#: it wants enough of them. Measured at 32 filters (28x28x1 -> 32, one thread): batch 1 0.07 ->
#: 0.02-0.04 ms, batch 128 2.2-2.4 -> 1.6-2.0 ms against im2col + GEMM.
DEPTH1_MIN_FILTERS = 8
#: Largest input depth for which a convolution can run as the compiled thin-input kernel
#: (:func:`convnet.ops._jit.conv_small_kernel`, ``ConvPath.DIRECT_SMALL``) ...
SMALL_MAX_DEPTH = 8
#: ... and largest filter count for which it is chosen: it makes one filter at a time, so its
#: cost grows with K where the GEMM's improves. Measured at batch 128 (the kernel on one
#: thread, against im2col + GEMM on two): 32x32x1 -> 3 (5x5) 0.61 against 3.2 ms; 14x14x3 -> 6
#: (5x5) 0.78 against 2.6; but 32x32x3 -> 16 (3x3) 8.5 against 5.0 and -> 32 15.2 against 10.9.
SMALL_MAX_FILTERS = 8
#: Smallest input depth for which the input gradient runs as a flipped convolution rather than
#: GEMM + col2im (stride 1 only); measured faster at 32 and 64, slower at 1: cifar10's 32x32x32
#: layer at batch 128 46 ms against 85 ms (one thread); with D = 1 (a first layer) the GEMM is
#: too narrow and col2im wins, 2.7 vs 8.5 ms.
FLIP_MIN_DEPTH = 16
#: Below this input depth the GEMM + col2im input gradient works on transposed buffers (runs
#: of image rows rather than of depth slices): with D = 3 the 25 adds of a 5x5 kernel over runs
#: of 3 values took 7.0 ms (seed004's second layer at batch 128, 2 threads); this way 3.8 ms.
COL2IM_PLANES_BELOW = 8


# ------------------------------------------------------------------------------ the override
@dataclasses.dataclass(frozen=True)
class _Forced:
    conv: tuple[ConvPath, ...] | None = None
    input_grad: InputGradPath | None = None
    fused_backward: bool | None = None
    block_bytes: int | None = None
    depthwise: DepthwisePath | None = None


_forced = _Forced()


@contextmanager
def force_path(conv: ConvPath | Sequence[ConvPath] | None = None, *,
               input_grad: InputGradPath | None = None,
               fused_backward: bool | None = None,
               block_bytes: int | None = None,
               depthwise: DepthwisePath | None = None) -> Iterator[None]:
    """A scope in which the convolutions take the given paths wherever they apply, whatever
    the measured thresholds say (elsewhere the usual choice): for tests and measurements.

    Args:
        conv: the :class:`ConvPath` of every convolution it applies to (forward, weight
            gradient, backward, and the flipped convolution of an input gradient), or several,
            the first that applies winning (``(ConvPath.WINOGRAD, ConvPath.SUBIMAGES)``:
            Winograd wherever it can run); ``ConvPath.IM2COL`` turns every fast path off.
        input_grad: the :class:`InputGradPath` of every input gradient it applies to.
        fused_backward: False makes a Winograd layer's backward compute ``dW``, then ``dx`` by
            :func:`~convnet.ops.conv.conv2d_input_grad`, instead of both in one pass.
        block_bytes: the size of the im2col and Winograd blocks (1: one image per block),
            instead of :data:`convnet.ops._blocks.BLOCK_BYTES` and the activation cap.
        depthwise: the :class:`DepthwisePath` of every depthwise convolution it applies to.

    Process-wide, like the BLAS thread count (the worker threads see it too); scopes nest, an
    inner one overriding only what it names.

    >>> from convnet.ops import conv
    >>> with force_path(ConvPath.WINOGRAD):
    ...     conv.choose_path((1, 4, 4, 2), (3, 3, 3, 2), (1, 1), (1, 1), (1, 1), (4, 4))
    <ConvPath.WINOGRAD: 'winograd'>
    """
    global _forced
    before = _forced
    if isinstance(conv, ConvPath):
        conv = (conv,)
    given = {"conv": None if conv is None else tuple(conv), "input_grad": input_grad,
             "fused_backward": fused_backward, "block_bytes": block_bytes,
             "depthwise": depthwise}
    _forced = dataclasses.replace(before, **{k: v for k, v in given.items() if v is not None})
    try:
        yield
    finally:
        _forced = before


def fused_backward() -> bool:
    """Whether a Winograd layer's backward makes ``dW`` and ``dx`` in one pass (the default;
    see :func:`convnet.ops.conv_fast.winograd_backward` for what it saves)."""
    return _forced.fused_backward is not False


def forced_block_bytes() -> int | None:
    """The block size :func:`force_path` set, or None."""
    return _forced.block_bytes


# ------------------------------------------------------------------------------ the choices
def _winograd_pays(D: int, K: int, N: int, out_hw: Pair) -> bool:
    th, tw = winograd.tiles(out_hw)
    return min(D, K) >= WINOGRAD_MIN_CHANNELS and N * th * tw >= WINOGRAD_MIN_TILES


def sub_hw(hw: Pair, d: Pair) -> Pair:
    """The grid of one sub-image of the dilation-``d`` interleave."""
    return hw[0] // d[0], hw[1] // d[1]


def choose_path(x_shape: tuple[int, ...], W_shape: tuple[int, ...], stride: Pair, pad: Pair,
                dilation: Pair, out_hw: Pair, dtype: np.dtype | type = np.float32) -> ConvPath:
    """The path of the convolution of an ``x_shape`` input by ``W_shape`` filters on the grid
    ``out_hw``: its forward pass, its weight gradient and its backward all take it.

    The first path of the ladder WINOGRAD, SUBIMAGES, DIRECT_DEPTH1, DIRECT_SMALL that applies
    to the shapes and pays (the thresholds above), else IM2COL; or the first path
    :func:`force_path` names that applies.

    Shape:
        x_shape ``(N, H, W, D)``, W_shape ``(K, Fh, Fw, D)``, ``out_hw`` the output grid (it can
        be smaller than the largest that fits, or, for a flipped convolution, larger: zeros
        outside the input).
    """
    K, Fh, Fw, D = W_shape
    N, H, W_ = x_shape[:3]
    three = (Fh, Fw) == (3, 3)
    one = tuple(stride) == (1, 1)
    undilated = tuple(dilation) == (1, 1)
    dh, dw = dilation
    winograd_fits = three and one and undilated
    # With dilation d and padding P = d, output pixel (r, c) reads only the input pixels
    # congruent to it modulo d: d_h * d_w independent undilated 3x3 convolutions (padding 1) of
    # the interleaved sub-images x[:, a::d_h, b::d_w].
    subimages_fit = (three and one and not undilated and tuple(pad) == (dh, dw)
                     and tuple(out_hw) == (H, W_) and H % dh == 0 and W_ % dw == 0)
    depth1_fits = (three and D == 1 and _jit.HAVE_NUMBA
                   and np.dtype(dtype) in (np.float32, np.float64))
    small_fits = (one and D <= SMALL_MAX_DEPTH and _jit.HAVE_NUMBA
                  and np.dtype(dtype) in (np.float32, np.float64))
    for forced in _forced.conv or ():
        if (forced is ConvPath.IM2COL or (forced is ConvPath.WINOGRAD and winograd_fits)
                or (forced is ConvPath.SUBIMAGES and subimages_fit)
                or (forced is ConvPath.DIRECT_DEPTH1 and depth1_fits)
                or (forced is ConvPath.DIRECT_SMALL and small_fits)):
            return forced
    if winograd_fits and _winograd_pays(D, K, N, out_hw):
        return ConvPath.WINOGRAD
    if subimages_fit and _winograd_pays(D, K, N * dh * dw, sub_hw(out_hw, (dh, dw))):
        return ConvPath.SUBIMAGES
    if depth1_fits and K >= DEPTH1_MIN_FILTERS:
        return ConvPath.DIRECT_DEPTH1
    if small_fits and K <= SMALL_MAX_FILTERS:
        return ConvPath.DIRECT_SMALL
    return ConvPath.IM2COL


def choose_depthwise_path(multiplier: int, dtype: np.dtype | type) -> DepthwisePath:
    """DIRECT wherever it applies (multiplier 1, float32/64, Numba): it is one pass over the
    output where TAPS makes ``Fh*Fw`` (measured in bench/README.md, "Round 2"); or the path
    :func:`force_path` names, where it applies."""
    direct_fits = (multiplier == 1 and _jit.HAVE_NUMBA
                   and np.dtype(dtype) in (np.float32, np.float64))
    if _forced.depthwise is DepthwisePath.TAPS:
        return DepthwisePath.TAPS
    return DepthwisePath.DIRECT if direct_fits else DepthwisePath.TAPS


def choose_input_grad_path(dout_shape: tuple[int, ...], W_shape: tuple[int, ...],
                           input_hw: Pair, stride: Pair, pad: Pair,
                           dilation: Pair, dtype: np.dtype | type = np.float32) -> InputGradPath:
    """The path of :func:`convnet.ops.conv.conv2d_input_grad` for an output gradient of
    ``dout_shape`` ``(N, Ho, Wo, K)``, filters ``W_shape`` ``(K, Fh, Fw, D)`` and an input grid
    ``input_hw``: GEMM (1x1), DIRECT_SMALL (stride 1, thin ``dx`` from at most
    :data:`SMALL_MAX_FILTERS` filters), FLIPPED (stride 1, deep enough ``dx``), COL2IM_PLANES
    (thin ``dx``), else COL2IM; or the path :func:`force_path` names, where it applies."""
    _, Ho, Wo, _ = dout_shape
    _, Fh, Fw, D = W_shape
    one = tuple(stride) == (1, 1)
    gemm_fits = ((Fh, Fw) == (1, 1) and tuple(pad) == (0, 0) and one
                 and (Ho, Wo) == tuple(input_hw))
    ext = (effective_extent(Fh, dilation[0]), effective_extent(Fw, dilation[1]))
    # the flipped convolution (padding Fe - 1 - P) covers exactly Ho + Fe - 1 - 2P rows: where
    # the input is larger (a transposed CONV's output padding, rows no input reaches) it does not
    # fit, and col2im leaves those rows at zero
    flipped_fits = (one and pad[0] < ext[0] and pad[1] < ext[1]
                    and (Ho + ext[0] - 1 - 2 * pad[0], Wo + ext[1] - 1 - 2 * pad[1])
                    == tuple(input_hw))
    small_fits = (one and D <= SMALL_MAX_DEPTH and _jit.HAVE_NUMBA
                  and np.dtype(dtype) in (np.float32, np.float64))
    forced = _forced.input_grad
    if forced is not None and (forced in (InputGradPath.COL2IM, InputGradPath.COL2IM_PLANES)
                               or (forced is InputGradPath.GEMM and gemm_fits)
                               or (forced is InputGradPath.FLIPPED and flipped_fits)
                               or (forced is InputGradPath.DIRECT_SMALL and small_fits)):
        return forced
    if gemm_fits:
        return InputGradPath.GEMM
    if small_fits and dout_shape[3] <= SMALL_MAX_FILTERS:
        return InputGradPath.DIRECT_SMALL
    if flipped_fits and D >= FLIP_MIN_DEPTH:
        return InputGradPath.FLIPPED
    if D < COL2IM_PLANES_BELOW:
        return InputGradPath.COL2IM_PLANES
    return InputGradPath.COL2IM
