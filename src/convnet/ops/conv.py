"""Convolution and transposed convolution on NHWC arrays: the math, no state, no validation.

How it is computed (and what it costs):

- **im2col.** Every receptive field of the (zero-padded) input is gathered ONCE into a contiguous
  matrix ``cols`` of shape ``(N*Ho*Wo, Fh*Fw*D)``, columns ordered ``(fh, fw, d)`` to match the
  weight layout ``W (K, Fh, Fw, D)``, so ``W.reshape(K, -1)`` is the weight matrix with no transpose
  copy. The convolution is then one GEMM, ``cols @ W2d.T`` (BLAS reads the transposed view through
  its ``trans`` flag). The gather reads a :func:`~numpy.lib.stride_tricks.sliding_window_view`
  (a view: strides and dilation are slices of it) and costs one pass writing ``Fh*Fw`` times the
  input. ``cols`` is kept in the cache, so the weight gradient is one more GEMM,
  ``dout2d.T @ cols``, never a second gather. Memory: ``Fh*Fw`` copies of the input per layer.
  With a bias, ``cols`` carries one extra column of ones, so the bias is added inside the GEMM
  and ``db`` falls out of the weight-gradient GEMM (no separate pass over ``(M, K)`` for either).
- **col2im.** The input gradient is the transposed convolution: ``dcols = dout2d @ W2d`` (one
  GEMM, laid out offset-major) scattered back by ``Fh*Fw`` strided slice-adds, one per kernel
  offset (a Python loop over the kernel only, never over pixels or batch items; ``np.add.at``
  measured 16x slower, 65 vs 4 ms).
- **One kernel both ways.** :func:`conv2d_input_grad` is the only col2im. The convolution's
  backward uses it for ``dx``; :func:`conv_transpose2d_forward` IS it (plus bias). Conversely the
  transposed convolution's ``dx`` is the ordinary convolution's forward core and its ``dW`` is the
  convolution's weight-gradient GEMM with the roles of input and output swapped (Chainer computes
  one with the other's function; tinygrad builds one from the other).

Floor mode: the output grid is ``arith.conv_output_size(..., floor=True)``, so configurations whose
last positions do not fit are cropped like PyTorch does; input positions no window reads get zero
gradient. Everything keeps the input dtype (float32 stays float32, float64 stays float64).

Shape conventions (pairs are ``(rows, cols)``):

- ``conv2d``: ``x (N, H, W, D)``, ``W (K, Fh, Fw, D)``, ``b (K,)`` -> ``(N, Ho, Wo, K)`` with
  ``Ho = floor((H - Fe_h + 2 P_h) / S_h) + 1`` and ``Fe = F + (F - 1)(dilation - 1)``.
- ``conv_transpose2d``: ``x (N, H, W, D)``, ``W (D, Fh, Fw, K)`` (the layout of the convolution,
  ``D`` filters over ``K`` channels, whose input gradient it computes), ``b (K,)`` ->
  ``(N, S_h (H - 1) + Fe_h - 2 P_h + a_h, ..., K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convnet.arith import conv_output_size, deconv_output_size, effective_extent

Pair = tuple[int, int]


# ------------------------------------------------------------------------------------ helpers
def _out_hw(in_hw: Pair, F: Pair, stride: Pair, pad: Pair, dilation: Pair) -> Pair:
    return (
        conv_output_size(in_hw[0], F[0], stride[0], pad[0], dilation[0], floor=True),
        conv_output_size(in_hw[1], F[1], stride[1], pad[1], dilation[1], floor=True),
    )


def _padded_input(x: np.ndarray, pad: Pair, need_hw: Pair) -> np.ndarray:
    """The rows/cols ``-P .. need - P - 1`` of ``x``, zeros outside: exactly what the windows read.

    ``need_hw`` can be smaller than ``H + 2P`` (floor mode never reads the last rows), so only the
    part that is read is copied. Without padding or cropping ``x`` itself is returned (no copy).
    """
    N, H, W, D = x.shape
    (ph, pw), (nh, nw) = pad, need_hw
    if ph == pw == 0 and nh <= H and nw <= W:
        return x[:, :nh, :nw]
    # np.zeros is calloc'd (lazily zeroed pages); only the interior is written, once.
    xp = np.zeros((N, nh, nw, D), dtype=x.dtype)
    h, w = max(0, min(H, nh - ph)), max(0, min(W, nw - pw))
    xp[:, ph:ph + h, pw:pw + w] = x[:, :h, :w]
    return xp


def _im2col(x: np.ndarray, F: Pair, stride: Pair, pad: Pair, dilation: Pair,
            out_hw: Pair, ones_column: bool = False) -> np.ndarray:
    """Gather every receptive field: ``(N*Ho*Wo, Fh*Fw*D)``, columns in ``(fh, fw, d)`` order.

    ``out_hw`` is given rather than derived so that callers on a grid smaller than the largest
    one that fits (the transposed conv with ``output_padding >= S``) read only the positions they
    need. ``ones_column=True`` appends a column of ones (see :func:`_conv_core`); the 1x1 fast
    path ignores it, since adding it would cost the very copy that path avoids.
    """
    N, H, W, D = x.shape
    (Fh, Fw), (sh, sw), (dh, dw), (Ho, Wo) = F, stride, dilation, out_hw
    M, FFD = N * Ho * Wo, Fh * Fw * D
    if Fh == Fw == 1 and tuple(pad) == (0, 0):
        # 1x1 unpadded: the receptive field is one pixel. At stride 1 this is a free reshape of x.
        return x[:, : (Ho - 1) * sh + 1 : sh, : (Wo - 1) * sw + 1 : sw].reshape(M, D)
    feh, few = effective_extent(Fh, dh), effective_extent(Fw, dw)
    xp = _padded_input(x, pad, ((Ho - 1) * sh + feh, (Wo - 1) * sw + few))
    buf = np.empty((M, FFD + ones_column), dtype=x.dtype)
    if ones_column:
        buf[:, FFD] = 1
    # A view of buf's first FFD columns split into (N, Ho, Wo, Fh, Fw, D): both splits follow
    # the existing strides, so numpy reshapes without copying and the gather writes into buf.
    cols = buf[:, :FFD].reshape(N, Ho, Wo, Fh, Fw, D)
    if D == 1:
        # One depth slice: the window view's innermost contiguous run is only Fw elements, so a
        # loop of Fh*Fw strided copies (each an N*Ho*Wo-long run) is ~3x faster (0.7 vs 2.2 ms
        # for 128x28x28x1, F=3). For D > 1 it is 2-6x slower than the single gather below.
        for i in range(Fh):
            rows = slice(i * dh, i * dh + (Ho - 1) * sh + 1, sh)
            for j in range(Fw):
                cols[:, :, :, i, j, :] = xp[:, rows, j * dw : j * dw + (Wo - 1) * sw + 1 : sw]
    else:
        win = sliding_window_view(xp, (feh, few), axis=(1, 2))   # (N, ., ., D, feh, few), a view
        win = win[:, ::sh, ::sw, :, ::dh, ::dw]                  # stride and dilation: still a view
        np.copyto(cols, win.transpose(0, 1, 2, 4, 5, 3))         # the one gather pass
    return buf


def _sum_rows(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)`` for a tall ``(M, K)`` matrix as a BLAS matrix-vector product: 6x faster
    than numpy's row-by-row reduction on (100352, 32) float32 (0.34 vs 2.2 ms), same dtype."""
    return np.ones(a.shape[0], dtype=a.dtype) @ a


def _axis_span(offset: int, S: int, n_out: int, n_in: int) -> tuple[int, int, int] | None:
    """Output positions ``o`` whose input index ``o*S + offset`` lies in ``[0, n_in)``.

    Returns ``(first_o, count, first_input_index)``, or None when no position does (a kernel
    offset that only ever reads padding, or that floor mode never reaches).
    """
    lo = max(0, -(offset // S))                           # ceil(-offset / S)
    hi = min(n_out - 1, (n_in - 1 - offset) // S)
    if hi < lo:
        return None
    return lo, hi - lo + 1, lo * S + offset


def _col2im(dcols: np.ndarray, out_hw: Pair, in_hw: Pair, F: Pair, stride: Pair, pad: Pair,
            dilation: Pair) -> np.ndarray:
    """Scatter-add ``dcols (Fh*Fw, N*Ho*Wo, D)`` back to ``(N, H, W, D)``.

    Each kernel offset adds one strided slice, clipped to the real input so the padding never
    needs a buffer (no padded copy, no final crop pass). The columns come offset-major, so each
    slice-add reads a contiguous block: 2x faster than reading every ``Fh*Fw``-th run of ``D``
    from the ``(M, Fh*Fw*D)`` layout (3.5 vs 7 ms for 128x14x14x32, F=3).
    """
    _, M, D = dcols.shape
    (Ho, Wo), (H, W), (Fh, Fw) = out_hw, in_hw, F
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    N = M // (Ho * Wo)
    spans = []
    for i in range(Fh):
        r = _axis_span(i * dh - ph, sh, Ho, H)
        for j in range(Fw):
            c = _axis_span(j * dw - pw, sw, Wo, W)
            if r is not None and c is not None:
                spans.append((i * Fw + j, r, c))
    # At stride 1 an offset usually covers every input pixel (the centre one under "same"
    # padding): it is written first with a plain copy into an uninitialised dx, which saves
    # zero-filling dx and reading those zeros back (one pass over dx of Fh*Fw + 1).
    full = [k for k, (_, r, c) in enumerate(spans)
            if sh == sw == 1 and r[1] == H and c[1] == W]
    if full:
        spans.insert(0, spans.pop(full[0]))
        dx = np.empty((N, H, W, D), dtype=dcols.dtype)
    else:
        dx = np.zeros((N, H, W, D), dtype=dcols.dtype)
    for n, (f, (ho, nh, ih), (wo, nw, iw)) in enumerate(spans):
        block = dcols[f].reshape(N, Ho, Wo, D)[:, ho : ho + nh, wo : wo + nw]
        target = dx[:, ih : ih + (nh - 1) * sh + 1 : sh, iw : iw + (nw - 1) * sw + 1 : sw]
        if n == 0 and full:
            np.copyto(target, block)
        else:
            target += block
    return dx


def _conv_core(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair, pad: Pair,
               dilation: Pair, out_hw: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The convolution on the grid ``out_hw``: ``(out (N, Ho, Wo, K), cols)``.

    With a bias, ``cols`` gets a column of ones and the GEMM multiplies by ``[W2d | b]``: the bias
    is added inside the GEMM (saving a read-write pass over the output, 1.5 ms of 3.2 for the
    reference network's first layer), and the weight-gradient GEMM then yields ``db`` as its
    last column for free.
    """
    K, Fh, Fw, _ = W.shape
    cols = _im2col(x, (Fh, Fw), stride, pad, dilation, out_hw, ones_column=b is not None)
    W2d = W.reshape(K, -1)
    fused = b is not None and cols.shape[1] > W2d.shape[1]        # False on the 1x1 path
    if fused:
        W2d = np.concatenate([W2d, b.reshape(K, 1).astype(W.dtype, copy=False)], axis=1)
    out = cols @ W2d.T                                    # the one GEMM: (M, FFD) x (FFD, K)
    if b is not None and not fused:
        out += b                                          # in place: no second (M, K) array
    return out.reshape(x.shape[0], out_hw[0], out_hw[1], K), cols


def _weight_grad(cols: np.ndarray, dout2d: np.ndarray, W_shape: tuple[int, ...],
                 has_b: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW = dout2d.T @ cols``: (K, M) x (M, FFD) lands directly in W's ``(K, Fh, Fw, D)``.

    When ``cols`` carries the ones column, its product is ``db``; otherwise ``db`` is summed.
    """
    FFD = W_shape[1] * W_shape[2] * W_shape[3]
    g = dout2d.T @ cols
    if g.shape[1] == FFD:
        return g.reshape(W_shape), (_sum_rows(dout2d) if has_b else None)
    return np.ascontiguousarray(g[:, :FFD]).reshape(W_shape), (g[:, FFD].copy() if has_b else None)


# ----------------------------------------------------------------------------------- conv2d
def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
) -> tuple[np.ndarray, Any]:
    """2-D convolution (cross-correlation, like every deep-learning library).

    Args:
        x: input volume. W: ``K`` filters. b: one bias per filter, or None.
        stride, pad, dilation: ``(rows, cols)`` pairs; ``dilation=(1, 1)`` means none.

    Shape:
        - x: ``(N, H, W, D)``; W: ``(K, Fh, Fw, D)``; b: ``(K,)``
        - out: ``(N, Ho, Wo, K)``, ``Ho = floor((H - Fe_h + 2 P_h) / S_h) + 1`` with
          ``Fe = F + (F - 1)(dilation - 1)`` (``arith.conv_output_size(..., floor=True)``).

    The cache holds the im2col matrix (``Fh*Fw`` times the input) for the weight gradient.

    >>> x = np.ones((1, 7, 7, 1)); W = np.ones((1, 3, 3, 1))
    >>> conv2d_forward(x, W, None, (2, 2))[0].shape
    (1, 3, 3, 1)
    """
    K, Fh, Fw, _ = W.shape
    out_hw = _out_hw(x.shape[1:3], (Fh, Fw), stride, pad, dilation)
    out, cols = _conv_core(x, W, b, stride, pad, dilation, out_hw)
    return out, (cols, W, x.shape[1:3], b is not None, stride, pad, dilation)


def conv2d_backward(
    dout: np.ndarray, cache: Any, *, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dW, db)``; ``db`` is None when ``b`` was None.

    ``need_dx=False`` skips the input gradient (returns None for it): a network's first layer
    does not need it, and it is more than half of the backward cost (a GEMM plus the col2im).

    Shape:
        - dout: ``(N, Ho, Wo, K)`` -> dx ``(N, H, W, D)``, dW ``(K, Fh, Fw, D)``, db ``(K,)``
    """
    cols, W, in_hw, has_b, stride, pad, dilation = cache
    dW, db = _weight_grad(cols, dout.reshape(-1, W.shape[0]), W.shape, has_b)
    dx = conv2d_input_grad(dout, W, in_hw, stride, pad, dilation) if need_dx else None
    return dx, dW, db


def conv2d_input_grad(
    dout: np.ndarray, W: np.ndarray, input_hw: Pair,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
) -> np.ndarray:
    """Gradient of a convolution with respect to its input: THE transposed-convolution kernel.

    ``col2im(dout @ W)``: the GEMM ``(N*Ho*Wo, K) x (K, Fh*Fw*D)``, then ``Fh*Fw`` strided
    slice-adds into a zeroed ``dx``.
    The output grid is ``dout``'s own (not re-derived), so any grid that fits inside
    ``input_hw`` works: floor-cropped convolutions (positions no window reads get zero), and
    transposed convolutions whose output padding leaves rows no input reaches.

    Shape:
        - dout: ``(N, Ho, Wo, K)``; W: ``(K, Fh, Fw, D)`` -> dx: ``(N, *input_hw, D)``
    """
    N, Ho, Wo, K = dout.shape
    _, Fh, Fw, D = W.shape
    # dcols[f] = dout2d @ W[:, f, :] for each kernel offset f: the same GEMM as dout2d @ W2d, run
    # as Fh*Fw BLAS calls on strided views of W (no copy) so the columns come out offset-major.
    dcols = np.matmul(dout.reshape(-1, K), W.reshape(K, Fh * Fw, D).transpose(1, 0, 2))
    if Fh == Fw == 1 and tuple(pad) == (0, 0) and tuple(stride) == (1, 1) \
            and (Ho, Wo) == tuple(input_hw):
        return dcols.reshape(N, Ho, Wo, D)                # 1x1: every pixel is its own window
    return _col2im(dcols, (Ho, Wo), input_hw, (Fh, Fw), stride, pad, dilation)


def conv2d_weight_grad(
    x: np.ndarray, dout: np.ndarray, F: Pair,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
) -> np.ndarray:
    """Gradient of a convolution with respect to its filters, from the input ``x``.

    Gathers ``x`` (im2col) on ``dout``'s grid and does one GEMM. :func:`conv2d_backward` skips the
    gather by reusing the matrix cached by the forward pass.

    Shape:
        - x: ``(N, H, W, D)``; dout: ``(N, Ho, Wo, K)``; F: ``(Fh, Fw)`` -> dW: ``(K, Fh, Fw, D)``
    """
    N, Ho, Wo, K = dout.shape
    cols = _im2col(x, F, stride, pad, dilation, (Ho, Wo))
    return _weight_grad(cols, dout.reshape(-1, K), (K, F[0], F[1], x.shape[3]), False)[0]


# ------------------------------------------------------------------------ conv_transpose2d
def conv_transpose2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
    output_padding: Pair = (0, 0),
) -> tuple[np.ndarray, Any]:
    """Transposed convolution ("deconvolution"): the input gradient of a convolution, as a layer.

    It maps each input pixel to an ``Fh x Fw`` patch of the output (weighted by the filters), the
    patches overlapping wherever ``S < F``. Computed by :func:`conv2d_input_grad` itself.

    Args:
        x: input volume. W: weights in the layout of the convolution ``(D, Fh, Fw, K)`` that maps
            the output back to the input (``D`` filters over ``K`` channels). b: ``(K,)`` or None.
        output_padding: ``a`` per axis, extra rows/cols at the bottom/right choosing among the
            input sizes a stride-``S`` convolution maps to the same size.

    Shape:
        - x: ``(N, H, W, D)`` -> out: ``(N, Ho, Wo, K)`` with
          ``Ho = S_h (H - 1) + Fe_h - 2 P_h + a_h`` (``arith.deconv_output_size``).

    >>> x = np.ones((1, 3, 3, 1)); W = np.ones((1, 3, 3, 1))
    >>> conv_transpose2d_forward(x, W, None, (2, 2))[0].shape
    (1, 7, 7, 1)
    """
    _, Fh, Fw, _ = W.shape
    H, Wd = x.shape[1:3]
    out_hw = (
        deconv_output_size(H, Fh, stride[0], pad[0], output_padding[0], dilation[0]),
        deconv_output_size(Wd, Fw, stride[1], pad[1], output_padding[1], dilation[1]),
    )
    out = conv2d_input_grad(x, W, out_hw, stride, pad, dilation)
    if b is not None:
        out += b
    return out, (x, W, b is not None, stride, pad, dilation)


def conv_transpose2d_backward(
    dout: np.ndarray, cache: Any, *, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv_transpose2d_forward`: ``(dx, dW, db)``.

    ``dx`` is the ordinary convolution of ``dout`` with ``W``; ``dW`` is the convolution's weight
    gradient with the roles swapped (``dout`` is the convolution's input, ``x`` its output
    gradient). Both use the same im2col of ``dout``, gathered once.

    Shape:
        - dout: ``(N, Ho, Wo, K)`` -> dx ``(N, H, W, D)``, dW ``(D, Fh, Fw, K)``, db ``(K,)``
    """
    x, W, has_b, stride, pad, dilation = cache
    N, H, Wd, D = x.shape
    # The grid is x's own: with output_padding >= S the convolution would fit one more position,
    # which the forward never produced.
    if need_dx:
        dx, cols = _conv_core(dout, W, None, stride, pad, dilation, (H, Wd))
    else:
        dx, cols = None, _im2col(dout, W.shape[1:3], stride, pad, dilation, (H, Wd))
    dW, _ = _weight_grad(cols, x.reshape(-1, D), W.shape, False)
    db = _sum_rows(dout.reshape(-1, W.shape[3])) if has_b else None
    return dx, dW, db


__all__ = [
    "conv2d_backward", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad",
    "conv_transpose2d_backward", "conv_transpose2d_forward",
]
