"""Pooling kernels: max, average and global average pooling on NHWC arrays.

Every kernel loops only over the ``Fh*Fw`` offsets inside the window; each offset is one strided
slice of the (padded) input covering all images, output positions and depth slices at once, so
the work per offset is one vectorised pass. On this machine a 2x2 max pool done as four strided
slices ran twice as fast as a reshape-and-mask version (and a mask is wrong on ties).

No validation here: the layers check the configuration through :mod:`convnet.arith` first. Output
sizes use ``floor=True`` (PyTorch's rule): window positions that would stick out of the padded
input are dropped, and the rows/cols they would have covered get a zero gradient.

Shape:
    x ``(N, H, W, D)``; ``F``, ``S``, ``P`` are ``(rows, cols)`` pairs;
    out ``(N, Ho, Wo, D)`` with ``Ho = floor((H - Fh + 2Ph)/Sh) + 1`` (and likewise ``Wo``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.arith import Pair, conv_output_size
from convnet.ops import _arena, _jit, _threads

__all__ = [
    "avgpool2d_backward",
    "avgpool2d_forward",
    "global_avgpool_backward",
    "global_avgpool_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
]


def _output_hw(H: int, W: int, F: Pair, S: Pair, P: Pair) -> Pair:
    return (conv_output_size(H, F[0], S[0], P[0], floor=True),
            conv_output_size(W, F[1], S[1], P[1], floor=True))


def _pad(x: np.ndarray, P: Pair, value: float) -> np.ndarray:
    if P == (0, 0):
        return x
    return np.pad(x, ((0, 0), (P[0], P[0]), (P[1], P[1]), (0, 0)), constant_values=value)


def _window(i: int, j: int, out_hw: Pair, S: Pair) -> tuple[slice, slice, slice, slice]:
    """Index of the input pixels that offset ``(i, j)`` of every window reads.

    For a fixed offset the windows read distinct pixels, so ``a[idx] += g`` never collides.
    """
    return (slice(None), slice(i, i + S[0] * (out_hw[0] - 1) + 1, S[0]),
            slice(j, j + S[1] * (out_hw[1] - 1) + 1, S[1]), slice(None))


# ------------------------------------------------------------------------------------ max pool
def maxpool2d_forward(
    x: np.ndarray, F: Pair, S: Pair, P: Pair, *, need_index: bool = True, relu: bool = False
) -> tuple[np.ndarray, tuple[Any, ...] | None]:
    """Max pooling with window ``F``, stride ``S`` and padding ``P`` (padding counts as -inf).

    The cache keeps only a compact index per output (``uint8`` for windows up to 16x16): the
    row-major offset inside the window of the FIRST maximum, as PyTorch picks on ties. It is a
    quarter of the output's size in float32 and the input itself is not kept.

    ``relu=True`` returns ``max(pool(x), 0)``: the RELU that follows the pool in a network's
    plan (:func:`convnet.net.sequential._execution_plan`), applied to each range of images while
    it is in cache, instead of a pass of its own (the reference network's first pool and RELU
    at batch 128, evaluation: 1.9 -> 1.5 ms, median).

    Shape:
        x ``(N, H, W, D)`` -> out ``(N, Ho, Wo, D)``, ``Ho = floor((H - Fh + 2Ph)/Sh) + 1``.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> maxpool2d_forward(x, (2, 2), (2, 2), (0, 0))[0][0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    N, H, W, D = x.shape
    out_hw = _output_hw(H, W, F, S, P)
    idx_dtype = np.min_scalar_type(F[0] * F[1] - 1)
    out = _arena.empty((N, *out_hw, D), x.dtype)
    idx = _arena.empty(out.shape, idx_dtype) if need_index else None
    xc = np.ascontiguousarray(x) if need_index else x

    # images are independent: ranges of them over the worker threads (ops/_threads.py)
    def part(a: int, b: int) -> None:
        _maxpool_into(xc[a:b], F, S, P, out[a:b], None if idx is None else idx[a:b], relu)

    _threads.split_rows(part, N, x.size)
    return out, (None if idx is None else (idx, x.shape, F, S, P))


def _max_argmax_numpy(x: np.ndarray, F: Pair, S: Pair, P: Pair, out: np.ndarray,
                      idx: np.ndarray) -> None:
    """The max and its first argmax without Numba: ``F*F`` strided passes each."""
    out_hw = out.shape[1:3]
    xp = _pad(x, P, -np.inf)
    offsets = [(i, j) for i in range(F[0]) for j in range(F[1])]
    _window_max(xp, F, S, out_hw, out)
    # The first maximum in row-major order: visit the offsets last to first so the earliest
    # offset that equals the max writes last. Where the max is NaN nothing matches and the
    # gradient goes to offset 0 (a NaN's gradient has no meaning anyway).
    # The write is arithmetic, ``idx += (k - idx) * hit`` in wrapping unsigned integers: a
    # masked np.copyto(..., where=hit) was 40x slower here on the irregular masks maxima make.
    idx[...] = 0
    step = np.empty_like(idx)
    for k in range(len(offsets) - 1, -1, -1):
        i, j = offsets[k]
        np.subtract(idx.dtype.type(k), idx, out=step)
        step *= xp[_window(i, j, out_hw, S)] == out
        idx += step


def _maxpool_into(x: np.ndarray, F: Pair, S: Pair, P: Pair, out: np.ndarray,
                  idx: np.ndarray | None, relu: bool = False) -> None:
    """Max pooling of ``x`` (then the RELU when ``relu``) written into ``out``, and the first
    argmax into ``idx`` (None in evaluation), on the calling thread.

    With Numba: the 2x2 stride-2 unpadded window (the usual POOL) has kernels of its own, one
    expression per output, RELU included (:func:`convnet.ops._jit.maxpool2x2_kernel`, 3-6x
    faster than the general ones); other windows take the general compiled max+argmax pass
    (``x`` C-contiguous) or, without an argmax, ``F*F`` strided np.maximum passes (2.0 ms
    against 4.7 ms for the general compiled max+argmax on 128x28x28x32). Without Numba:
    :func:`_max_argmax_numpy`."""
    compiled = _jit.HAVE_NUMBA and x.dtype in (np.float32, np.float64)
    if compiled and F == S == (2, 2) and P == (0, 0):
        if idx is None:
            _jit.maxpool2x2_kernel(x, relu, out)
        else:
            _jit.maxpool2x2_argmax_kernel(x, relu, out, idx)
        return
    if idx is None:
        _window_max(_pad(x, P, -np.inf), F, S, out.shape[1:3], out)
    elif compiled:
        _jit.maxpool_forward_kernel(x, *F, *S, *P, np.arange(F[0] * F[1], dtype=x.dtype), out,
                                    idx)
    else:
        _max_argmax_numpy(x, F, S, P, out, idx)
    if relu:
        np.maximum(out, out.dtype.type(0), out=out)


def _window_max(xp: np.ndarray, F: Pair, S: Pair, out_hw: Pair,
                out: np.ndarray | None = None) -> np.ndarray:
    """The max over each window of the (already padded) input: one strided np.maximum per
    window offset, into ``out`` (a new array if None). np.maximum propagates NaN, like
    PyTorch's max pool."""
    first = xp[_window(0, 0, out_hw, S)]
    if out is None:
        out = first.copy()
    else:
        np.copyto(out, first)
    for i in range(F[0]):
        for j in range(F[1]):
            if i or j:
                np.maximum(out, xp[_window(i, j, out_hw, S)], out=out)
    return out


def maxpool2d_backward(dout: np.ndarray, cache: tuple[Any, ...], *,
                       relu_out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`maxpool2d_forward`: each output's gradient goes to its (first) maximum.

    ``relu_out``: the forward's output when it applied the RELU (``relu=True``); the RELU's
    gradient (``dout`` where that output is positive) is then taken per range of images, in the
    same pass.

    Shape:
        dout ``(N, Ho, Wo, D)`` -> dx ``(N, H, W, D)``.
    """
    if relu_out is not None and not (_jit.HAVE_NUMBA and dout.dtype in (np.float32, np.float64)):
        # the NumPy path below: the mask first, as a select like the compiled kernel (and
        # PyTorch's threshold_backward): 0 where the output is not positive, even for Inf/NaN
        dout = np.where(relu_out > 0, dout, dout.dtype.type(0))
        relu_out = None
    idx, x_shape, F, S, P = cache
    N, H, W, D = x_shape
    out_hw = idx.shape[1:3]
    overlap = F[0] > S[0] or F[1] > S[1]
    if _jit.HAVE_NUMBA and dout.dtype in (np.float32, np.float64):
        # Disjoint windows that tile the input (2x2/S2 on an even size) write every pixel once:
        # no zero-fill. Otherwise (overlap, padding, floor-cropped borders) dx starts at zero.
        tiles = not overlap and P == (0, 0) and (out_hw[0] * S[0], out_hw[1] * S[1]) == (H, W) \
            and F == S
        dx = (_arena.empty if tiles else _arena.zeros)(x_shape, dout.dtype)
        dc = np.ascontiguousarray(dout)

        mask = dc if relu_out is None else relu_out          # read only with the RELU

        def part(a: int, b: int) -> None:
            _jit.maxpool_backward_kernel(dc[a:b], idx[a:b], mask[a:b], relu_out is not None,
                                         *F, *S, *P, not overlap, dx[a:b])

        _threads.split_rows(part, N, dx.size)
        return dx
    dxp = np.zeros((N, H + 2 * P[0], W + 2 * P[1], D), dtype=dout.dtype)
    for k in range(F[0] * F[1]):
        i, j = divmod(k, F[1])
        # a select, not dout * mask: an Inf/NaN gradient reaches only its argmax, as in the
        # compiled kernel and PyTorch (a product would put NaN = Inf * 0 everywhere else)
        g = np.where(idx == k, dout, dout.dtype.type(0))
        if overlap:
            # Overlapping windows (e.g. 3x3 S=2) share pixels across offsets: accumulate.
            dxp[_window(i, j, out_hw, S)] += g
        else:
            # Non-overlapping windows (F <= S, e.g. 2x2 S=2): every pixel is written at most
            # once, so assignment replaces read-add-write.
            dxp[_window(i, j, out_hw, S)] = g
    return dxp[:, P[0]:P[0] + H, P[1]:P[1] + W, :] if P != (0, 0) else dxp


# ------------------------------------------------------------------------------------ avg pool
def avgpool2d_forward(
    x: np.ndarray, F: Pair, S: Pair, P: Pair
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Average pooling; padded zeros count in the mean (PyTorch's ``count_include_pad=True``).

    Every window averages exactly ``Fh*Fw`` values (floor mode never lets a window leave the
    padded input), so the divisor is the same everywhere. The cache holds only shapes.

    Shape:
        x ``(N, H, W, D)`` -> out ``(N, Ho, Wo, D)``, ``Ho = floor((H - Fh + 2Ph)/Sh) + 1``.
    """
    N, H, W, D = x.shape
    out_hw = _output_hw(H, W, F, S, P)
    xp = _pad(x, P, 0)
    out = xp[_window(0, 0, out_hw, S)].copy()
    for k in range(1, F[0] * F[1]):
        out += xp[_window(*divmod(k, F[1]), out_hw, S)]
    out *= out.dtype.type(1.0 / (F[0] * F[1]))
    return out, (x.shape, F, S, P)


def avgpool2d_backward(dout: np.ndarray, cache: tuple[Any, ...]) -> np.ndarray:
    """Gradient of :func:`avgpool2d_forward`: each output spreads ``dout/(Fh*Fw)`` over its window.

    Shape:
        dout ``(N, Ho, Wo, D)`` -> dx ``(N, H, W, D)``.
    """
    x_shape, F, S, P = cache
    N, H, W, D = x_shape
    out_hw = dout.shape[1:3]
    g = dout * dout.dtype.type(1.0 / (F[0] * F[1]))
    dxp = np.zeros((N, H + 2 * P[0], W + 2 * P[1], D), dtype=dout.dtype)
    for k in range(F[0] * F[1]):
        dxp[_window(*divmod(k, F[1]), out_hw, S)] += g
    return dxp[:, P[0]:P[0] + H, P[1]:P[1] + W, :] if P != (0, 0) else dxp


# ----------------------------------------------------------------------------- global average
def global_avgpool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Global average pooling: the mean of each depth slice over all rows and cols.

    Shape:
        x ``(N, H, W, D)`` -> out ``(N, D)``.
    """
    return x.mean(axis=(1, 2)), (x.shape,)


def global_avgpool_backward(dout: np.ndarray, cache: tuple[Any, ...]) -> np.ndarray:
    """Gradient of :func:`global_avgpool_forward`: ``dout/(H*W)`` at every pixel.

    Shape:
        dout ``(N, D)`` -> dx ``(N, H, W, D)`` (a fresh writable array, not a broadcast view).
    """
    (x_shape,) = cache
    N, H, W, D = x_shape
    dx = np.empty(x_shape, dtype=dout.dtype)
    dx[...] = (dout * dout.dtype.type(1.0 / (H * W)))[:, None, None, :]
    return dx
