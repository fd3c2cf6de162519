"""Convolution and transposed convolution on NHWC arrays: the math, no state, no validation.

This module holds the public functional API (what the layers call), the general im2col + GEMM
path and col2im, and the dispatch: :func:`~convnet.ops.conv_paths.choose_path` decides how each
convolution runs (one decision for the forward pass, the weight gradient and the backward;
re-exported here with :class:`ConvPath` and :func:`force_path`), and the fast drivers live in
:mod:`convnet.ops.conv_fast`. The plain reference the tests hold every path to is
:mod:`convnet.ops.reference`.

How it is computed (and what it costs):

- **im2col.** Every receptive field of the (zero-padded) input is gathered into a contiguous
  matrix ``cols`` of shape ``(N*Ho*Wo, Fh*Fw*D)``, columns ordered ``(fh, fw, d)`` to match the
  weight layout ``W (K, Fh, Fw, D)``, so ``W.reshape(K, -1)`` is the weight matrix with no transpose
  copy. The convolution is then a GEMM, ``cols @ W2d.T`` (BLAS reads the transposed view through
  its ``trans`` flag). The gather reads a :func:`~numpy.lib.stride_tricks.sliding_window_view`
  (a view: strides and dilation are slices of it) and costs one pass writing ``Fh*Fw`` times the
  input. With a bias, ``cols`` carries one extra column of ones, so the bias is added inside the
  GEMM and ``db`` falls out of the weight-gradient GEMM (no separate pass over ``(M, K)``).
- **Blocks, not whole matrices.** ``cols`` is gathered and consumed
  :data:`~convnet.ops._blocks.BLOCK_BYTES` (a few images) at a time, in a reused per-thread
  scratch buffer (:mod:`convnet.ops._blocks`): the GEMM reads it from cache, and a
  layer keeps only its input for the backward pass, not ``Fh*Fw`` copies of it (the whole matrix
  was 151 MB for cifar10's second layer at batch 128; PyTorch's whole training step peaks below
  that). The price is a second gather for the weight gradient, ``cols.T @ dout2d``; measured,
  the blocked forward + backward was faster than the cached whole matrix anyway.
- **col2im.** The input gradient is the transposed convolution: ``dcols = dout2d @ W2d`` (a
  GEMM per block) scattered back by ``Fh*Fw`` strided slice-adds, one per kernel offset (a
  Python loop over the kernel only, never over pixels or batch items; ``np.add.at`` measured
  16x slower, 65 vs 4 ms). At stride 1 with a deep enough ``dx`` the same sums are computed as
  a convolution of ``dout`` with the filters turned 180 degrees (``InputGradPath.FLIPPED``, see
  :func:`conv2d_input_grad`): a GEMM with inner size ``Fh*Fw*K`` instead of ``K`` runs nearer
  the BLAS peak.
- **Fast paths** (:mod:`convnet.ops.conv_fast`, where :func:`choose_path` says they pay):
  Winograd F(2x2, 3x3) for deep 3x3 stride-1 layers (its backward makes both gradients in one
  pass), dilated 3x3 "same" layers as Winograd on sub-images, the compiled direct kernel of a
  3x3 layer on one input channel, and a 3x3 CONV + 2x2 max POOL on Winograd's output tiles.
- **One kernel both ways.** :func:`conv2d_input_grad` is the general input-gradient kernel.
  The convolution's backward uses it for ``dx`` (except where Winograd makes ``dx`` from the
  weight gradient's own tiles, above); :func:`conv_transpose2d_forward` IS it (plus
  bias). Conversely the transposed convolution's ``dx`` is the ordinary convolution's forward
  core and its ``dW`` is the convolution's weight-gradient GEMM with the roles of input and
  output swapped (Chainer computes one with the other's function; tinygrad builds one from the
  other).

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
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from convnet.arith import deconv_output_size, effective_extent
from convnet.ops import _arena, _threads
from convnet.ops import conv_fast as fast
from convnet.ops._blocks import blocks, conv_grid, padded_input, scratch, sum_rows
from convnet.ops.conv_fast import (
    conv2d_maxpool_backward,
    conv2d_maxpool_forward,
    conv3x3_depth1_maxpool_weight_grad,
)
from convnet.ops.conv_paths import (
    ConvPath,
    InputGradPath,
    choose_input_grad_path,
    choose_path,
    force_path,
    fused_backward,
)

Pair = tuple[int, int]

#: Up to this input depth the im2col gather copies whole planes into a transposed matrix (see
#: :func:`_im2col`). Gather + both GEMMs per block of a 32x32 layer, interleaved: depth 3 4.54
#: vs 4.79 ms, 4: 5.60 vs 5.74, 8: a tie, 16: 4.41 vs 4.10 (slower).
IM2COL_PLANES_MAX_DEPTH = 4


# ------------------------------------------------------------------- im2col + GEMM, col2im
def _is_pointwise(F: Pair, pad: Pair) -> bool:
    """A 1x1 unpadded window: the receptive field is one pixel, im2col is (a view of) x."""
    return tuple(F) == (1, 1) and tuple(pad) == (0, 0)


def _im2col(x: np.ndarray, F: Pair, stride: Pair, pad: Pair, dilation: Pair,
            out_hw: Pair, ones_column: bool = False, out: np.ndarray | None = None,
            planes: bool | None = None) -> np.ndarray:
    """Gather every receptive field: ``(N*Ho*Wo, Fh*Fw*D)``, columns in ``(fh, fw, d)`` order.

    ``out_hw`` is given rather than derived so that callers on a grid smaller than the largest
    one that fits (the transposed conv with ``output_padding >= S``) read only the positions they
    need. ``ones_column=True`` appends a column of ones (see :func:`_conv_gemms`); the 1x1 path
    ignores it, since adding it would cost the very copy that path avoids. ``out`` is where to
    write (a fresh array if None). ``planes``: gather plane by plane into a transposed matrix
    (True) or row by row (False); None decides by :data:`IM2COL_PLANES_MAX_DEPTH`.
    """
    N, H, W, D = x.shape
    (Fh, Fw), (sh, sw), (dh, dw), (Ho, Wo) = F, stride, dilation, out_hw
    M, FFD = N * Ho * Wo, Fh * Fw * D
    if _is_pointwise(F, pad):
        # At stride 1 this is a free reshape of x.
        return x[:, : (Ho - 1) * sh + 1 : sh, : (Wo - 1) * sw + 1 : sw].reshape(M, D)
    feh, few = effective_extent(Fh, dh), effective_extent(Fw, dw)
    xp = padded_input(x, pad, ((Ho - 1) * sh + feh, (Wo - 1) * sw + few))
    width = FFD + ones_column
    if out is None:
        out = np.empty((M, width), dtype=x.dtype)
    if planes is None:
        planes = D <= IM2COL_PLANES_MAX_DEPTH
    if planes:
        # A few depth slices: each (kernel offset, slice) is one plane of the output grid. The
        # matrix is built transposed, (width, M) in out's memory, so each plane's copy writes
        # one contiguous row, and the (M, width) view returned is what BLAS reads with its
        # transpose flag. Written the other way round, every offset's copy touched every cache
        # line of the matrix with D-value strided stores: seed004's 5x5 first layer (26
        # columns) took 2.3 ms at batch 32, against 0.3 ms for PyTorch's whole layer; cifar10's
        # 3x3x3 first layer's gather 1.25 -> 0.65 ms per block of 32 images, 0.11 -> 0.06 ms
        # at batch 1 (its forward GEMM then reads the transposed view ~0.3 ms slower per block,
        # its weight-gradient GEMM ~0.1 ms faster).
        bufT = out.reshape(-1)[: width * M].reshape(width, M)
        if ones_column:
            bufT[FFD] = 1
        # all Fh*Fw*D planes as one strided view of xp, (Fh, Fw, D, N, Ho, Wo): one copy call,
        # rows in W's (fh, fw, d) order
        sn, sr, sc, sd = xp.strides
        view = as_strided(xp, (Fh, Fw, D, N, Ho, Wo),
                          (sr * dh, sc * dw, sd, sn, sr * sh, sc * sw), writeable=False)
        np.copyto(bufT[:FFD].reshape(Fh, Fw, D, N, Ho, Wo), view)
        return bufT.T
    buf = out
    if ones_column:
        buf[:, FFD] = 1
    # A view of buf's first FFD columns split into (N, Ho, Wo, Fh, Fw, D): both splits follow
    # the existing strides, so numpy reshapes without copying and the gather writes into buf.
    cols = buf[:, :FFD].reshape(N, Ho, Wo, Fh, Fw, D)
    win = sliding_window_view(xp, (feh, few), axis=(1, 2))   # (N, ., ., D, feh, few), a view
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]                  # stride and dilation: still a view
    np.copyto(cols, win.transpose(0, 1, 2, 4, 5, 3))         # the one gather pass
    return buf




def _conv_gemms(x: np.ndarray, F: Pair, stride: Pair, pad: Pair, dilation: Pair, out_hw: Pair,
                *, W2d: np.ndarray | None = None, ones_column: bool = False,
                gout: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The GEMMs that read the im2col matrix ``cols`` of ``x`` on the grid ``out_hw``.

    - ``W2d`` given: ``out = cols @ W2d.T``, the convolution, ``(N, Ho, Wo, K)``.
    - ``gout`` given (an output gradient ``(N, Ho, Wo, G)``): ``g = cols.T @ gout2d``,
      ``(Fh*Fw*D [+1], G)``, the weight gradient (transposed; its last row is the bias gradient
      when ``ones_column``).

    ``cols`` is never built whole: it is gathered :data:`~convnet.ops._blocks.BLOCK_BYTES` at a
    time over the batch into a reused scratch buffer and consumed by both GEMMs while it is in
    cache. So a forward pass keeps its input, not its im2col matrix, and the weight gradient
    gathers again: one more pass over ``Fh*Fw`` times the input per layer, bought back by the
    cache-resident GEMMs and by never allocating (nor page-faulting) ``Fh*Fw`` copies of every
    activation.
    ``cols.T @ gout`` rather than ``gout.T @ cols``: the same product, but OpenBLAS with 2 threads
    took 40x longer on the latter's shape (64 x 25088 x 289) on this machine.
    """
    N = x.shape[0]
    Ho, Wo = out_hw
    if _is_pointwise(F, pad):
        # x itself is cols (a view at stride 1): plain GEMMs, split by rows over the threads
        cols = _im2col(x, F, stride, pad, dilation, out_hw)
        out = None if W2d is None else _threads.matmul(cols, W2d.T).reshape(N, Ho, Wo, -1)
        return out, (None if gout is None else
                     _threads.matmul_tn(cols, gout.reshape(len(cols), -1)))
    out = None if W2d is None else _arena.empty((N, Ho, Wo, W2d.shape[0]), x.dtype)
    width = F[0] * F[1] * x.shape[3] + ones_column
    workers = _threads.workers()

    def block(n0: int, n1: int) -> np.ndarray | None:
        buf = scratch("cols", ((n1 - n0) * Ho * Wo, width), x.dtype)
        cols = _im2col(x[n0:n1], F, stride, pad, dilation, out_hw, ones_column, out=buf)
        if out is not None:
            np.matmul(cols, W2d.T, out=out[n0:n1].reshape(-1, W2d.shape[0]))
        return None if gout is None else cols.T @ gout[n0:n1].reshape(len(cols), -1)

    act = x.nbytes + N * Ho * Wo * (len(W2d) if W2d is not None else gout.shape[3]) * x.itemsize
    parts = _threads.map_blocks(block, blocks(N, Ho * Wo * width * x.itemsize, workers, act),
                                workers)
    return out, (None if gout is None else np.sum(parts, axis=0))


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


def _col2im(dcols: np.ndarray, dx: np.ndarray, out_hw: Pair, F: Pair, stride: Pair, pad: Pair,
            dilation: Pair) -> None:
    """Scatter-add ``dcols (n*Ho*Wo, Fh*Fw*D)`` into ``dx (n, H, W, D)`` (overwriting it).

    Each kernel offset adds one strided slice, clipped to the real input so the padding never
    needs a buffer (no padded copy, no final crop pass): a Python loop over the kernel only,
    never over pixels or batch items (``np.add.at`` measured 16x slower, 65 vs 4 ms). Callers
    pass one cache-sized block of images at a time, so the ``Fh*Fw`` passes over ``dx`` hit cache.
    """
    n, H, W, D = dx.shape
    (Ho, Wo), (Fh, Fw) = out_hw, F
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    blocks = dcols.reshape(n, Ho, Wo, Fh * Fw, D)
    spans = []
    for i in range(Fh):
        r = _axis_span(i * dh - ph, sh, Ho, H)
        for j in range(Fw):
            c = _axis_span(j * dw - pw, sw, Wo, W)
            if r is not None and c is not None:
                spans.append((i * Fw + j, r, c))
    # Two ways to skip zero-filling dx (and reading those zeros back):
    # - at stride 1 an offset usually covers every input pixel (the centre one under "same"
    #   padding): it goes first, as a plain copy;
    # - windows that cannot overlap (S >= the dilated extent, e.g. a 2x2 stride-2 DECONV) give
    #   every pixel at most one term: all copies, and zeroing only if some pixel gets none.
    disjoint = sh >= effective_extent(Fh, dh) and sw >= effective_extent(Fw, dw)
    full = [k for k, (_, r, c) in enumerate(spans)
            if r[1] == H and c[1] == W and sh == sw == 1]
    if full:
        spans.insert(0, spans.pop(full[0]))
    elif not (disjoint and sum(r[1] * c[1] for _, r, c in spans) == H * W):
        dx[...] = 0
    for k, (f, (ho, nh, ih), (wo, nw, iw)) in enumerate(spans):
        block = blocks[:, ho : ho + nh, wo : wo + nw, f]
        target = dx[:, ih : ih + (nh - 1) * sh + 1 : sh, iw : iw + (nw - 1) * sw + 1 : sw]
        if disjoint or (k == 0 and full):
            np.copyto(target, block)
        else:
            target += block




# ----------------------------------------------------------------------------- the dispatch
def _conv_core(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair, pad: Pair,
               dilation: Pair, out_hw: Pair, memo: dict | None = None) -> np.ndarray:
    """The convolution on the grid ``out_hw``: ``out (N, Ho, Wo, K)``, by the path
    :func:`choose_path` picks.

    On the im2col path with a bias, ``cols`` gets a column of ones and the GEMM multiplies by
    ``[W2d | b]``: the bias is added inside the GEMM (saving a read-write pass over the output,
    1.5 ms of 3.2 for the reference network's first layer), and the weight-gradient GEMM then
    yields ``db`` as its last row for free.
    """
    path = choose_path(x.shape, W.shape, stride, pad, dilation, out_hw, x.dtype)
    if path is ConvPath.WINOGRAD:
        return fast.winograd_conv(x, W, b, pad, out_hw, memo)
    if path is ConvPath.SUBIMAGES:
        return fast.subimages_conv(x, W, b, dilation, out_hw, memo)
    if path is ConvPath.DIRECT_DEPTH1:
        return fast.conv3x3_depth1(x, W, b, stride, pad, dilation, out_hw)
    if path is ConvPath.DIRECT_SMALL:
        return fast.conv_small(x, W, b, pad, dilation, out_hw)
    K, Fh, Fw, D = W.shape
    W2d = W.reshape(K, -1)
    fused = b is not None and not _is_pointwise((Fh, Fw), pad)
    if fused:
        W2d = np.concatenate([W2d, b.reshape(K, 1).astype(W.dtype, copy=False)], axis=1)
    out, _ = _conv_gemms(x, (Fh, Fw), stride, pad, dilation, out_hw, W2d=W2d, ones_column=fused)
    if b is not None and not fused:
        out += b                                          # in place: no second (M, K) array
    return out


def _weight_grad(x: np.ndarray, dout: np.ndarray, W_shape: tuple[int, ...], stride: Pair,
                 pad: Pair, dilation: Pair, has_b: bool,
                 path: ConvPath) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW`` ``(K, Fh, Fw, D)`` (and ``db``) of the convolution of ``x`` whose output gradient
    is ``dout``, on the forward's ``path``: by im2col ``(cols.T @ dout2d).T``, with ``db`` from
    the ones column when there is one."""
    K, Fh, Fw, D = W_shape
    if path is ConvPath.WINOGRAD:
        dW = fast.winograd_backward(x, dout, pad)[0]
        return dW, (sum_rows(dout.reshape(-1, K)) if has_b else None)
    if path is ConvPath.SUBIMAGES:
        dW = fast.subimages_backward(x, dout, dilation)[0]
        return dW, (sum_rows(dout.reshape(-1, K)) if has_b else None)
    if path is ConvPath.DIRECT_DEPTH1:
        return fast.depth1_weight_grad(x, dout, stride, pad, dilation, has_b)
    if path is ConvPath.DIRECT_SMALL:
        return fast.small_weight_grad(x, dout, (Fh, Fw), pad, dilation, has_b)
    ones = has_b and not _is_pointwise((Fh, Fw), pad)
    _, g = _conv_gemms(x, (Fh, Fw), stride, pad, dilation, dout.shape[1:3], ones_column=ones,
                       gout=dout)
    FFD = Fh * Fw * D
    dW = np.ascontiguousarray(g[:FFD].T).reshape(W_shape)     # a (K, FFD) transpose: tiny
    if not has_b:
        return dW, None
    return dW, (g[FFD].copy() if ones else sum_rows(dout.reshape(-1, K)))


# ----------------------------------------------------------------------------------- conv2d
def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
    *, memo: dict | None = None,
) -> tuple[np.ndarray, Any]:
    """2-D convolution (cross-correlation, like every deep-learning library).

    Args:
        x: input volume. W: ``K`` filters. b: one bias per filter, or None.
        stride, pad, dilation: ``(rows, cols)`` pairs; ``dilation=(1, 1)`` means none.
        memo: a dict kept by the caller between calls on the same weights (a layer in
            evaluation): what depends only on ``W`` (Winograd's filter transform) is kept
            there and reused while ``W`` is unchanged (compared with a copy at every call).

    Shape:
        - x: ``(N, H, W, D)``; W: ``(K, Fh, Fw, D)``; b: ``(K,)``
        - out: ``(N, Ho, Wo, K)``, ``Ho = floor((H - Fe_h + 2 P_h) / S_h) + 1`` with
          ``Fe = F + (F - 1)(dilation - 1)`` (``arith.conv_output_size(..., floor=True)``).

    The cache holds the input ``x`` itself (a reference, no copy) with ``W`` and the
    hyperparameters: the weight gradient gathers ``x`` again, block by block, rather than
    keeping the im2col matrix (``Fh*Fw`` times the input).

    >>> x = np.ones((1, 7, 7, 1)); W = np.ones((1, 3, 3, 1))
    >>> conv2d_forward(x, W, None, (2, 2))[0].shape
    (1, 3, 3, 1)
    """
    K, Fh, Fw, _ = W.shape
    out_hw = conv_grid(x.shape[1:3], (Fh, Fw), stride, pad, dilation)
    out = _conv_core(x, W, b, stride, pad, dilation, out_hw, memo)
    return out, (x, W, b is not None, stride, pad, dilation)


def conv2d_backward(
    dout: np.ndarray, cache: Any, *, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dW, db)``; ``db`` is None when ``b`` was None.

    ``need_dx=False`` skips the input gradient (returns None for it): a network's first layer
    does not need it, and it is more than half of the backward cost (a GEMM plus the col2im).
    On the forward's path (:func:`choose_path`); a Winograd layer (sub-images included) makes
    ``dW`` and ``dx`` in one pass over the blocks (:func:`convnet.ops.conv_fast.winograd_backward`).

    Shape:
        - dout: ``(N, Ho, Wo, K)`` -> dx ``(N, H, W, D)``, dW ``(K, Fh, Fw, D)``, db ``(K,)``
    """
    x, W, has_b, stride, pad, dilation = cache
    K = W.shape[0]
    path = choose_path(x.shape, W.shape, stride, pad, dilation, dout.shape[1:3], x.dtype)
    if need_dx and path in (ConvPath.WINOGRAD, ConvPath.SUBIMAGES) and fused_backward():
        if path is ConvPath.WINOGRAD:
            dW, dx = fast.winograd_backward(x, dout, pad, W)
        else:
            dW, dx = fast.subimages_backward(x, dout, dilation, W)
        return dx, dW, (sum_rows(dout.reshape(-1, K)) if has_b else None)
    dW, db = _weight_grad(x, dout, W.shape, stride, pad, dilation, has_b, path)
    dx = conv2d_input_grad(dout, W, x.shape[1:3], stride, pad, dilation) if need_dx else None
    return dx, dW, db


def conv2d_input_grad(
    dout: np.ndarray, W: np.ndarray, input_hw: Pair,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
    *, memo: dict | None = None,
) -> np.ndarray:
    """Gradient of a convolution with respect to its input: THE transposed-convolution kernel.

    ``col2im(dout @ W)``: the GEMM ``(N*Ho*Wo, K) x (K, Fh*Fw*D)``, then ``Fh*Fw`` strided
    slice-adds, both done one cache-sized block of images at a time (the block of ``dcols``
    lives in a reused scratch buffer); or another way to the same sums, as
    :func:`choose_input_grad_path` picks (:class:`InputGradPath`).
    The output grid is ``dout``'s own (not re-derived), so any grid that fits inside
    ``input_hw`` works: floor-cropped convolutions (positions no window reads get zero), and
    transposed convolutions whose output padding leaves rows no input reaches. ``memo``: as in
    :func:`conv2d_forward`, for the turned filters of the stride-1 path below.

    Shape:
        - dout: ``(N, Ho, Wo, K)``; W: ``(K, Fh, Fw, D)`` -> dx: ``(N, *input_hw, D)``
    """
    N, Ho, Wo, K = dout.shape
    _, Fh, Fw, D = W.shape
    W2d = W.reshape(K, -1)
    path = choose_input_grad_path(dout.shape, W.shape, input_hw, stride, pad, dilation,
                                  dout.dtype)
    if path is InputGradPath.DIRECT_SMALL:
        return fast.small_input_grad(dout, W, tuple(input_hw), pad, dilation)
    if path is InputGradPath.GEMM:
        # every pixel its own window: one GEMM, split by rows over the threads
        return _threads.matmul(dout.reshape(-1, K), W2d).reshape(N, Ho, Wo, D)
    if path is InputGradPath.FLIPPED:
        # At stride 1 the same sums are a convolution of dout, padded by Fe - 1 - P, with the
        # filters turned 180 degrees and their K and D axes swapped. Its GEMM has inner size
        # Fh*Fw*K instead of K, which BLAS runs far closer to peak, and the gather that feeds it
        # writes each value once where col2im adds Fh*Fw times (conv_paths.FLIP_MIN_DEPTH: what
        # it saves).
        ext = (effective_extent(Fh, dilation[0]), effective_extent(Fw, dilation[1]))
        Wf = np.ascontiguousarray(W.transpose(3, 1, 2, 0)[:, ::-1, ::-1, :])
        flip_pad = (ext[0] - 1 - pad[0], ext[1] - 1 - pad[1])
        return _conv_core(dout, Wf, None, (1, 1), flip_pad, dilation, tuple(input_hw), memo)
    dx = _arena.empty((N, *input_hw, D), dout.dtype)

    planes = path is InputGradPath.COL2IM_PLANES

    def block(n0: int, n1: int) -> None:
        n, m, FFD = n1 - n0, (n1 - n0) * Ho * Wo, W2d.shape[1]
        if not planes:
            dcols = scratch("dcols", (m, FFD), dout.dtype)
            np.matmul(dout[n0:n1].reshape(-1, K), W2d, out=dcols)
            _col2im(dcols, dx[n0:n1], (Ho, Wo), (Fh, Fw), stride, pad, dilation)
            return
        # Thin dx: the same sums on transposed buffers, dcols as (FFD, m) and dx as
        # (D, n, H, W), so every slice-add of _col2im runs along rows of the image (runs of
        # Wo values) instead of runs of D (conv_paths.COL2IM_PLANES_BELOW: what it saves); then
        # one transposing copy into dx.
        dcolsT = scratch("dcols", (FFD, m), dout.dtype)
        np.matmul(W2d.T, dout[n0:n1].reshape(-1, K).T, out=dcolsT)
        dxT = scratch("dxT", (D, n, *input_hw), dout.dtype)
        _col2im(dcolsT.T, dxT.transpose(1, 2, 3, 0), (Ho, Wo), (Fh, Fw), stride, pad, dilation)
        np.copyto(dx[n0:n1], dxT.transpose(1, 2, 3, 0))

    workers = _threads.workers()
    _threads.map_blocks(block, blocks(N, Ho * Wo * W2d.shape[1] * dout.itemsize, workers,
                                      dout.nbytes + dx.nbytes), workers)
    return dx


def conv2d_weight_grad(
    x: np.ndarray, dout: np.ndarray, F: Pair,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
) -> np.ndarray:
    """Gradient of a convolution with respect to its filters, from the input ``x``.

    Gathers ``x`` (im2col, block by block) on ``dout``'s grid and multiplies by ``dout``; or
    the fast path :func:`choose_path` picks for this convolution.

    Shape:
        - x: ``(N, H, W, D)``; dout: ``(N, Ho, Wo, K)``; F: ``(Fh, Fw)`` -> dW: ``(K, Fh, Fw, D)``
    """
    W_shape = (dout.shape[3], F[0], F[1], x.shape[3])
    path = choose_path(x.shape, W_shape, stride, pad, dilation, dout.shape[1:3], x.dtype)
    return _weight_grad(x, dout, W_shape, stride, pad, dilation, False, path)[0]


# ------------------------------------------------------------------ conv2d + 2x2 max pool
def maxpool_fuses(x_shape: tuple[int, ...], W_shape: tuple[int, ...], stride: Pair, pad: Pair,
                  dilation: Pair) -> bool:
    """Whether the convolution followed by a 2x2 stride-2 max pool runs as
    :func:`conv2d_maxpool_forward`: when the convolution runs as Winograd F(2x2, 3x3), whose
    2x2 output tiles are the pool's windows."""
    K, Fh, Fw, D = W_shape
    out_hw = conv_grid(x_shape[1:3], (Fh, Fw), stride, pad, dilation)
    return choose_path(x_shape, W_shape, stride, pad, dilation, out_hw) is ConvPath.WINOGRAD


def depth1_maxpool_fuses(W_shape: tuple[int, ...], stride: Pair, dilation: Pair,
                         dtype: np.dtype) -> bool:
    """Whether :func:`conv3x3_depth1_maxpool_weight_grad` can take the weight gradient of this
    convolution when a 2x2 stride-2 max pool follows it (3x3, stride 1, one input channel, on
    the direct path)."""
    one = (1, 1)
    if tuple(stride) != one or tuple(dilation) != one:
        return False
    # The input size only matters to the Winograd paths, which need >= 32 input channels (or
    # force_path, which names one path for every size): any size gives the answer for D = 1.
    x_shape = (1, 3, 3, W_shape[3])
    return choose_path(x_shape, W_shape, one, one, one, (3, 3), dtype) is ConvPath.DIRECT_DEPTH1


# ------------------------------------------------------------------------ conv_transpose2d
def conv_transpose2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
    output_padding: Pair = (0, 0), *, memo: dict | None = None,
) -> tuple[np.ndarray, Any]:
    """Transposed convolution ("deconvolution"): the input gradient of a convolution, as a layer.

    It maps each input pixel to an ``Fh x Fw`` patch of the output (weighted by the filters), the
    patches overlapping wherever ``S < F``. Computed by :func:`conv2d_input_grad` itself.

    Args:
        x: input volume. W: weights in the layout of the convolution ``(D, Fh, Fw, K)`` that maps
            the output back to the input (``D`` filters over ``K`` channels). b: ``(K,)`` or None.
        output_padding: ``a`` per axis, extra rows/cols at the bottom/right choosing among the
            input sizes a stride-``S`` convolution maps to the same size.
        memo: as in :func:`conv2d_forward` (a stride-1 layer of >= 32 channels runs as a
            Winograd convolution with the filters turned, see :func:`conv2d_input_grad`).

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
    out = conv2d_input_grad(x, W, out_hw, stride, pad, dilation, memo=memo)
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
    D, Fh, Fw, K = W.shape
    H, Wd = x.shape[1:3]
    # The grid is x's own: with output_padding >= S the convolution would fit one more position,
    # which the forward never produced. One pass over the blocks of dout's im2col feeds both.
    dx, g = _conv_gemms(dout, (Fh, Fw), stride, pad, dilation, (H, Wd),
                        W2d=W.reshape(D, -1) if need_dx else None, gout=x)
    dW = np.ascontiguousarray(g.T).reshape(W.shape)
    db = sum_rows(dout.reshape(-1, K)) if has_b else None
    return dx, dW, db


__all__ = [
    "ConvPath", "InputGradPath", "choose_input_grad_path", "choose_path", "conv2d_backward",
    "conv2d_forward", "conv2d_input_grad", "conv2d_maxpool_backward", "conv2d_maxpool_forward",
    "conv2d_weight_grad", "conv3x3_depth1_maxpool_weight_grad", "conv_transpose2d_backward",
    "conv_transpose2d_forward", "depth1_maxpool_fuses", "force_path", "maxpool_fuses",
]
