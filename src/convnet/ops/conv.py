"""Convolution and transposed convolution on NHWC arrays: the math, no state, no validation.

How it is computed (and what it costs):

- **im2col.** Every receptive field of the (zero-padded) input is gathered into a contiguous
  matrix ``cols`` of shape ``(N*Ho*Wo, Fh*Fw*D)``, columns ordered ``(fh, fw, d)`` to match the
  weight layout ``W (K, Fh, Fw, D)``, so ``W.reshape(K, -1)`` is the weight matrix with no transpose
  copy. The convolution is then a GEMM, ``cols @ W2d.T`` (BLAS reads the transposed view through
  its ``trans`` flag). The gather reads a :func:`~numpy.lib.stride_tricks.sliding_window_view`
  (a view: strides and dilation are slices of it) and costs one pass writing ``Fh*Fw`` times the
  input. With a bias, ``cols`` carries one extra column of ones, so the bias is added inside the
  GEMM and ``db`` falls out of the weight-gradient GEMM (no separate pass over ``(M, K)``).
- **Blocks, not whole matrices.** ``cols`` is gathered and consumed :data:`BLOCK_BYTES` (a few
  images) at a time, in a reused per-thread scratch buffer: the GEMM reads it from cache, and a
  layer keeps only its input for the backward pass, not ``Fh*Fw`` copies of it (the whole matrix
  was 151 MB for cifar10's second layer at batch 128; PyTorch's whole training step peaks below
  that). The price is a second gather for the weight gradient, ``cols.T @ dout2d``; measured,
  the blocked forward + backward was faster than the cached whole matrix anyway.
- **col2im.** The input gradient is the transposed convolution: ``dcols = dout2d @ W2d`` (a
  GEMM per block) scattered back by ``Fh*Fw`` strided slice-adds, one per kernel offset (a
  Python loop over the kernel only, never over pixels or batch items; ``np.add.at`` measured
  16x slower, 65 vs 4 ms). At stride 1 with a deep enough ``dx`` the same sums are computed as
  a convolution of ``dout`` with the filters turned 180 degrees (see
  :func:`conv2d_input_grad`): a GEMM with inner size ``Fh*Fw*K`` instead of ``K`` runs nearer
  the BLAS peak.
- **Winograd for 3x3 stride-1 layers.** Where input depth and filter count are both at least
  :data:`WINOGRAD_MIN_CHANNELS` and the batch has enough 2x2 output tiles, the forward and both
  gradients run as Winograd F(2x2, 3x3) (:mod:`convnet.ops.winograd`): 16 GEMMs on transformed
  tiles, 2.25x fewer multiplies, same blocks and threads as im2col. The backward makes both
  gradients in one pass from the same transformed output gradient (:func:`_winograd_backward`;
  alone, as a transposed convolution's forward, the input gradient is the flipped convolution
  above, itself Winograd). Float32 results differ from im2col's by ~1e-7 relative (the
  transforms add with signs).
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

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from convnet.arith import conv_output_size, deconv_output_size, effective_extent
from convnet.ops import _arena, _jit, _threads, winograd

Pair = tuple[int, int]


# ------------------------------------------------------------------------------------ helpers
def _out_hw(in_hw: Pair, F: Pair, stride: Pair, pad: Pair, dilation: Pair) -> Pair:
    return (
        conv_output_size(in_hw[0], F[0], stride[0], pad[0], dilation[0], floor=True),
        conv_output_size(in_hw[1], F[1], stride[1], pad[1], dilation[1], floor=True),
    )


#: Target size of one block of the im2col matrix. The gather and the GEMMs that read it run
#: block by block over the batch: the block is still in cache when BLAS reads it, and a layer
#: never holds more than this (plus its input) instead of ``Fh*Fw`` copies of its whole input.
#: With 4 MiB blocks a 3x3 layer's forward + backward took 20-25% less CPU time than with the
#: whole-batch matrix cached by the forward pass (cifar10's layers at batch 128, one thread:
#: 177 vs 220 ms and 135 vs 173 ms), despite the second gather.
BLOCK_BYTES = 4 * 2**20

# Scratch arrays are reused across calls (per thread, so two networks in two threads never
# share one): a fresh multi-MiB np.empty is an mmap whose pages the kernel must zero on first
# touch, every call. Buffers above _SCRATCH_KEEP (a single huge image) are not kept.
_SCRATCH_KEEP = 64 * 2**20

#: Smallest input depth for which :func:`conv2d_input_grad` runs as a flipped convolution
#: rather than GEMM + col2im (stride 1 only); measured faster at 32 and 64, slower at 1.
FLIP_MIN_DEPTH = 16
#: Below this input depth the GEMM + col2im input gradient works on transposed buffers (runs
#: of image rows rather than of depth slices: see :func:`conv2d_input_grad`).
COL2IM_PLANES_BELOW = 8
#: Up to this input depth the im2col gather copies whole planes into a transposed matrix (see
#: :func:`_im2col`). Gather + both GEMMs per block of a 32x32 layer, interleaved: depth 3 4.54
#: vs 4.79 ms, 4: 5.60 vs 5.74, 8: a tie, 16: 4.41 vs 4.10 (slower).
IM2COL_PLANES_MAX_DEPTH = 4
_tls = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` backed by this thread's reusable buffer ``slot``.

    Valid until the next call with the same slot: callers use it within one kernel call only.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    bufs = _tls.__dict__.setdefault("bufs", {})
    buf = bufs.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 1), dtype=np.uint8)
        if nbytes <= _SCRATCH_KEEP:
            bufs[slot] = buf
    return buf[:nbytes].view(dtype).reshape(shape)


#: An im2col block is also at most 1/ACTIVATION_FRACTION of the bytes of the layer's own input
#: and output (but at least :data:`MIN_BLOCK_BYTES`): the per-thread scratch of a layer with
#: small activations then stays small next to them. Without it, seed004 (32x32x1 images, 3
#: and 6 filters) kept two 4 MiB blocks per scratch slot for a training step whose arrays peak
#: at 1.2 MB, and its peak memory matched PyTorch's (7.1 vs 6.3-7.5 MB) instead of 4.8-5.2 MB.
#: Winograd's blocks keep :data:`BLOCK_BYTES` (its layers have >= 32 channels, and smaller
#: blocks cost it: the reference network's 14x14x32 -> 64 layer at batch 32, forward + backward,
#: took 7.1 ms in 2-image blocks and 5.6 ms in 13-image blocks).
ACTIVATION_FRACTION = 4
MIN_BLOCK_BYTES = 256 * 2**10


def _blocks(N: int, bytes_per_image: int, parts: int = 1,
            activation_bytes: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of images whose im2col block is at most about
    :data:`BLOCK_BYTES` (less for a layer whose input + output, ``activation_bytes``, are
    small): nearly equal ranges, as many as a multiple of ``parts`` (the worker threads) when
    there are that many images."""
    per = max(1, bytes_per_image)
    target = BLOCK_BYTES
    if activation_bytes is not None:
        target = min(target, max(MIN_BLOCK_BYTES, activation_bytes // ACTIVATION_FRACTION))
    n = -(-N // max(1, target // per))            # blocks of at most the target size
    # a multiple of the threads, of nearly equal sizes, so every thread gets the same work: 32
    # images in blocks of at most 13 made 13 + 13 + 6, one thread doing 19 images and the other
    # 13 (the reference network's second layer at batch 32); now 8 + 8 + 8 + 8
    n = min(N, -(-n // parts) * parts)
    return _threads.row_blocks(N, n)


def _padded_input(x: np.ndarray, pad: Pair, need_hw: Pair) -> np.ndarray:
    """The rows/cols ``-P .. need - P - 1`` of ``x``, zeros outside: exactly what the windows read.

    ``need_hw`` can be smaller than ``H + 2P`` (floor mode never reads the last rows), so only the
    part that is read is copied. Without padding or cropping ``x`` itself is returned (no copy).
    The copy lives in a scratch buffer (only its border is zeroed, the interior written once).
    """
    N, H, W, D = x.shape
    (ph, pw), (nh, nw) = pad, need_hw
    if ph == pw == 0 and nh <= H and nw <= W:
        return x[:, :nh, :nw]
    xp = _scratch("pad", (N, nh, nw, D), x.dtype)
    h, w = max(0, min(H, nh - ph)), max(0, min(W, nw - pw))
    xp[:, :ph] = 0
    xp[:, ph + h:] = 0
    xp[:, ph:ph + h, :pw] = 0
    xp[:, ph:ph + h, pw + w:] = 0
    xp[:, ph:ph + h, pw:pw + w] = x[:, :h, :w]
    return xp


def _is_pointwise(F: Pair, pad: Pair) -> bool:
    """A 1x1 unpadded window: the receptive field is one pixel, im2col is (a view of) x."""
    return tuple(F) == (1, 1) and tuple(pad) == (0, 0)


def _im2col(x: np.ndarray, F: Pair, stride: Pair, pad: Pair, dilation: Pair,
            out_hw: Pair, ones_column: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Gather every receptive field: ``(N*Ho*Wo, Fh*Fw*D)``, columns in ``(fh, fw, d)`` order.

    ``out_hw`` is given rather than derived so that callers on a grid smaller than the largest
    one that fits (the transposed conv with ``output_padding >= S``) read only the positions they
    need. ``ones_column=True`` appends a column of ones (see :func:`_conv_gemms`); the 1x1 path
    ignores it, since adding it would cost the very copy that path avoids. ``out`` is where to
    write (a fresh array if None).
    """
    N, H, W, D = x.shape
    (Fh, Fw), (sh, sw), (dh, dw), (Ho, Wo) = F, stride, dilation, out_hw
    M, FFD = N * Ho * Wo, Fh * Fw * D
    if _is_pointwise(F, pad):
        # At stride 1 this is a free reshape of x.
        return x[:, : (Ho - 1) * sh + 1 : sh, : (Wo - 1) * sw + 1 : sw].reshape(M, D)
    feh, few = effective_extent(Fh, dh), effective_extent(Fw, dw)
    xp = _padded_input(x, pad, ((Ho - 1) * sh + feh, (Wo - 1) * sw + few))
    width = FFD + ones_column
    if out is None:
        out = np.empty((M, width), dtype=x.dtype)
    if D <= IM2COL_PLANES_MAX_DEPTH:
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


def _sum_rows(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)`` for a tall ``(M, K)`` matrix as a BLAS matrix-vector product: 6x faster
    than numpy's row-by-row reduction on (100352, 32) float32 (0.34 vs 2.2 ms), same dtype."""
    return np.ones(a.shape[0], dtype=a.dtype) @ a


def _conv_gemms(x: np.ndarray, F: Pair, stride: Pair, pad: Pair, dilation: Pair, out_hw: Pair,
                *, W2d: np.ndarray | None = None, ones_column: bool = False,
                gout: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The GEMMs that read the im2col matrix ``cols`` of ``x`` on the grid ``out_hw``.

    - ``W2d`` given: ``out = cols @ W2d.T``, the convolution, ``(N, Ho, Wo, K)``.
    - ``gout`` given (an output gradient ``(N, Ho, Wo, G)``): ``g = cols.T @ gout2d``,
      ``(Fh*Fw*D [+1], G)``, the weight gradient (transposed; its last row is the bias gradient
      when ``ones_column``).

    ``cols`` is never built whole: it is gathered :data:`BLOCK_BYTES` at a time over the batch
    into a reused scratch buffer and consumed by both GEMMs while it is in cache. So a forward
    pass keeps its input, not its im2col matrix, and the weight gradient gathers again: one more
    pass over ``Fh*Fw`` times the input per layer, bought back by the cache-resident GEMMs and
    by never allocating (nor page-faulting) ``Fh*Fw`` copies of every activation.
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
        buf = _scratch("cols", ((n1 - n0) * Ho * Wo, width), x.dtype)
        cols = _im2col(x[n0:n1], F, stride, pad, dilation, out_hw, ones_column, out=buf)
        if out is not None:
            np.matmul(cols, W2d.T, out=out[n0:n1].reshape(-1, W2d.shape[0]))
        return None if gout is None else cols.T @ gout[n0:n1].reshape(len(cols), -1)

    act = x.nbytes + N * Ho * Wo * (len(W2d) if W2d is not None else gout.shape[3]) * x.itemsize
    parts = _threads.map_blocks(block, _blocks(N, Ho * Wo * width * x.itemsize, workers, act),
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


def _conv_core(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair, pad: Pair,
               dilation: Pair, out_hw: Pair, memo: dict | None = None) -> np.ndarray:
    """The convolution on the grid ``out_hw``: ``out (N, Ho, Wo, K)``.

    With a bias, ``cols`` gets a column of ones and the GEMM multiplies by ``[W2d | b]``: the bias
    is added inside the GEMM (saving a read-write pass over the output, 1.5 ms of 3.2 for the
    reference network's first layer), and the weight-gradient GEMM then yields ``db`` as its
    last row for free.
    """
    K, Fh, Fw, D = W.shape
    if _winograd_pays((Fh, Fw), stride, dilation, D, K, x.shape[0], out_hw):
        return _winograd_conv(x, W, b, pad, out_hw, memo)
    if _dilated_as_subimages((Fh, Fw), stride, pad, dilation, D, K, x.shape, out_hw):
        d = tuple(dilation)
        sub = _winograd_conv(_to_subimages(x, d), W, b, (1, 1), _sub_hw(out_hw, d), memo)
        return _from_subimages(sub, x.shape[0], d)
    if _depth1_direct_pays((Fh, Fw), D, K, x.dtype):
        return _conv3x3_depth1(x, W, b, stride, pad, dilation, out_hw)
    W2d = W.reshape(K, -1)
    fused = b is not None and not _is_pointwise((Fh, Fw), pad)
    if fused:
        W2d = np.concatenate([W2d, b.reshape(K, 1).astype(W.dtype, copy=False)], axis=1)
    out, _ = _conv_gemms(x, (Fh, Fw), stride, pad, dilation, out_hw, W2d=W2d, ones_column=fused)
    if b is not None and not fused:
        out += b                                          # in place: no second (M, K) array
    return out


#: Fewest filters for which a 3x3 layer on a one-channel input runs as the compiled direct
#: kernel (:func:`convnet.ops._jit.conv3x3_depth1_kernel`): it vectorises over the filters.
DEPTH1_MIN_FILTERS = 8


def _depth1_direct_pays(F: Pair, D: int, K: int, dtype: np.dtype) -> bool:
    """Whether the convolution runs as the direct 3x3 one-channel kernel."""
    return (tuple(F) == (3, 3) and D == 1 and K >= DEPTH1_MIN_FILTERS and _jit.HAVE_NUMBA
            and dtype in (np.float32, np.float64))


def _depth1_padded(x: np.ndarray, stride: Pair, pad: Pair, dilation: Pair,
                   out_hw: Pair) -> np.ndarray:
    """The padded one-channel images ``(N, Hp, Wp)`` that the 3x3 windows on ``out_hw`` read
    (this thread's scratch; the worker threads only read it)."""
    (sh, sw), (dh, dw), (Ho, Wo) = stride, dilation, out_hw
    need = ((Ho - 1) * sh + effective_extent(3, dh), (Wo - 1) * sw + effective_extent(3, dw))
    return _padded_input(x, pad, need)[..., 0]


def _conv3x3_depth1(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair,
                    pad: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """The 3x3 convolution of one-channel images by the compiled direct kernel, ranges of
    images over the worker threads. Same contract as :func:`_conv_core`."""
    N = x.shape[0]
    K = W.shape[0]
    (sh, sw), (dh, dw), (Ho, Wo) = stride, dilation, out_hw
    xp = _depth1_padded(x, stride, pad, dilation, out_hw)
    Wt = np.ascontiguousarray(W.reshape(K, 9).T)
    bias = np.zeros(K, dtype=x.dtype) if b is None else b.astype(x.dtype, copy=False)
    out = _arena.empty((N, Ho, Wo, K), x.dtype)
    _threads.split_rows(
        lambda n0, n1: _jit.conv3x3_depth1_kernel(xp[n0:n1], sh, sw, dh, dw, Wt, bias,
                                                  out[n0:n1]), N, out.size)
    return out


def _depth1_weight_grad(x: np.ndarray, dout: np.ndarray, stride: Pair, pad: Pair,
                        dilation: Pair, has_b: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW`` ``(K, 3, 3, 1)`` and ``db`` of the 3x3 one-channel convolution by the compiled
    kernel (:func:`convnet.ops._jit.conv3x3_depth1_wgrad_kernel`): each worker thread sums
    its range of images into its own ``(10, K)`` float64 accumulator; those are added in
    order."""
    (sh, sw), (dh, dw) = stride, dilation
    xp = _depth1_padded(x, stride, pad, dilation, dout.shape[1:3])
    return _depth1_accumulate(
        lambda n0, n1, acc: _jit.conv3x3_depth1_wgrad_kernel(xp[n0:n1], sh, sw, dh, dw,
                                                             dout[n0:n1], acc),
        x, dout.shape[3], dout.size, has_b)


def _depth1_accumulate(kernel: Callable[[int, int, np.ndarray], None], x: np.ndarray, K: int,
                       work: int, has_b: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, db)`` from a weight-gradient kernel that adds images ``n0:n1`` into a
    ``(10, K)`` float64 accumulator: one accumulator per worker thread (when the ``work``,
    the convolution's output elements, is worth a split), added in order."""
    N = x.shape[0]

    def part(n0: int, n1: int) -> np.ndarray:
        acc = np.zeros((10, K))
        kernel(n0, n1, acc)
        return acc

    workers = _threads.workers() if work >= _threads.SPLIT_MIN_ELEMENTS else 1
    acc, *rest = _threads.map_blocks(part, _threads.row_blocks(N, workers), workers)
    for more in rest:
        acc += more
    dW = np.ascontiguousarray(acc[:9].T, dtype=x.dtype).reshape(K, 3, 3, 1)
    return dW, (acc[9].astype(x.dtype) if has_b else None)


def depth1_maxpool_fuses(W_shape: tuple[int, ...], stride: Pair, dilation: Pair,
                         dtype: np.dtype) -> bool:
    """Whether :func:`conv3x3_depth1_maxpool_weight_grad` can take the weight gradient of this
    convolution when a 2x2 stride-2 max pool follows it (3x3, stride 1, one input channel)."""
    K, Fh, Fw, D = W_shape
    return (_depth1_direct_pays((Fh, Fw), D, K, dtype) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1))


def conv3x3_depth1_maxpool_weight_grad(
    x: np.ndarray, dout: np.ndarray, idx: np.ndarray, relu_out: np.ndarray | None, pad: Pair,
    conv_hw: Pair, has_b: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, db)`` of a 3x3 stride-1 one-channel convolution followed by a 2x2 stride-2 max
    pool (then a RELU, whose output ``relu_out`` is given), from the POOL's output gradient
    ``dout`` and index ``idx`` (:func:`convnet.ops._jit.conv3x3_depth1_pool_wgrad_kernel`):
    the pool's backward and the convolution's dense output gradient are skipped. A network's
    first layer (no ``dx``); where :func:`depth1_maxpool_fuses`.

    Shape:
        - x: ``(N, H, W, 1)``; dout, idx, relu_out: ``(N, Ho // 2, Wo // 2, K)`` with
          ``conv_hw = (Ho, Wo)`` -> dW ``(K, 3, 3, 1)``, db ``(K,)``
    """
    one = (1, 1)
    xp = _depth1_padded(x, one, pad, one, conv_hw)
    dout = np.ascontiguousarray(dout)
    mask = dout if relu_out is None else relu_out
    return _depth1_accumulate(
        lambda n0, n1, acc: _jit.conv3x3_depth1_pool_wgrad_kernel(
            xp[n0:n1], dout[n0:n1], idx[n0:n1], mask[n0:n1], relu_out is not None, acc),
        x, dout.shape[3], x.shape[0] * conv_hw[0] * conv_hw[1] * dout.shape[3], has_b)


# ----------------------------------------------------------------- Winograd F(2x2, 3x3)
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


def _winograd_pays(F: Pair, stride: Pair, dilation: Pair, D: int, K: int, N: int,
                   out_hw: Pair) -> bool:
    """Whether the 3x3 stride-1 convolution runs as Winograd (see the thresholds above)."""
    th, tw = winograd.tiles(out_hw)
    return (tuple(F) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and min(D, K) >= WINOGRAD_MIN_CHANNELS
            and N * th * tw >= WINOGRAD_MIN_TILES)


def _dilated_as_subimages(F: Pair, stride: Pair, pad: Pair, dilation: Pair, D: int, K: int,
                          x_shape: tuple[int, ...], out_hw: Pair) -> bool:
    """Whether a dilated 3x3 stride-1 "same" convolution runs as Winograd on sub-images.

    With dilation ``d`` and padding ``P = d``, output pixel ``(r, c)`` reads only input pixels
    congruent to it modulo ``d``: the convolution is ``d_h * d_w`` independent undilated 3x3
    convolutions (padding 1) of the interleaved sub-images ``x[:, a::d_h, b::d_w]``, which
    Winograd F(2x2, 3x3) runs with 2.25x fewer multiplies (space-to-batch). Needs sizes
    divisible by ``d`` and enough channels and tiles for Winograd (:func:`_winograd_pays`)."""
    N, H, W_ = x_shape[:3]
    dh, dw = dilation
    if (tuple(F) != (3, 3) or tuple(stride) != (1, 1) or (dh, dw) == (1, 1)
            or tuple(pad) != (dh, dw) or tuple(out_hw) != (H, W_) or H % dh or W_ % dw):
        return False
    return _winograd_pays(F, stride, (1, 1), D, K, N * dh * dw, _sub_hw(out_hw, dilation))


def _sub_hw(hw: Pair, d: Pair) -> Pair:
    return hw[0] // d[0], hw[1] // d[1]


def _to_subimages(x: np.ndarray, d: Pair) -> np.ndarray:
    """``(N, H, W, C)`` -> ``(N * d_h * d_w, H / d_h, W / d_w, C)``: image ``n``'s sub-image
    ``(a, b)`` (pixels ``a::d_h, b::d_w``) at batch index ``(n * d_h + a) * d_w + b``."""
    N, H, W, C = x.shape
    (dh, dw), (h, w) = d, _sub_hw((H, W), d)
    out = _arena.empty((N * dh * dw, h, w, C), x.dtype)
    np.copyto(out.reshape(N, dh, dw, h, w, C),
              x.reshape(N, h, dh, w, dw, C).transpose(0, 2, 4, 1, 3, 5))
    return out


def _from_subimages(y: np.ndarray, N: int, d: Pair) -> np.ndarray:
    """The inverse of :func:`_to_subimages`: sub-images back into ``N`` whole images."""
    _, h, w, C = y.shape
    dh, dw = d
    out = _arena.empty((N, h * dh, w * dw, C), y.dtype)
    np.copyto(out.reshape(N, h, dh, w, dw, C),
              y.reshape(N, dh, dw, h, w, C).transpose(0, 3, 1, 4, 2, 5))
    return out


def _winograd_filters(W: np.ndarray, memo: dict | None) -> np.ndarray:
    """``winograd.filter_transform(W)``, kept in ``memo`` (a dict the caller owns, e.g. a layer
    in evaluation) with a copy of the ``W`` it was made from, and reused while ``W`` equals that
    copy. The check runs at every call: comparing 64x3x3x32 filters with the copy takes ~7 us
    where the transform takes 30-50 us, ~1/5 of that layer's whole forward at batch 1. Weights
    written in place (an optimiser step, ``load_state_dict``, a user) simply miss."""
    if memo is None:
        return winograd.filter_transform(W)
    kept = memo.get("winograd")
    if (kept is not None and kept[0].shape == W.shape and kept[0].dtype == W.dtype
            and np.array_equal(kept[0], W)):
        return kept[1]
    U = winograd.filter_transform(W)
    memo["winograd"] = (W.copy(), U)
    return U


def _winograd_conv(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair,
                   out_hw: Pair, memo: dict | None = None) -> np.ndarray:
    """The 3x3 stride-1 convolution on the grid ``out_hw`` by Winograd F(2x2, 3x3).

    Same contract as :func:`_conv_core` (zeros outside the input, any grid). Block by block over
    the batch, like the im2col path: pad the block, transform its tiles (``V``, 4x the block's
    input), 16 GEMMs into ``M`` (4x its output), transform back into ``out``; every
    intermediate lives in this thread's scratch buffers and the bias is added to ``M[1, 1]``,
    the one tile position that reaches all four outputs with weight +1 (a pass over a quarter of
    the output instead of all of it).

    Shape:
        - x: ``(N, H, W, D)``; W: ``(K, 3, 3, D)``; b: ``(K,)`` -> out: ``(N, *out_hw, K)``
    """
    out = _arena.empty((x.shape[0], *out_hw, W.shape[0]), x.dtype)
    _winograd_tiles(x, W, b, pad, out_hw, memo,
                    lambda M, n0, n1: winograd.output_transform(M, out[n0:n1]))
    return out


def _winograd_tiles(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair,
                    out_hw: Pair, memo: dict | None,
                    finish: Callable[[np.ndarray, int, int], None]) -> None:
    """The blocks of :func:`_winograd_conv` up to the GEMMs' output ``M`` (bias included);
    ``finish(M, n0, n1)`` turns each block's ``M`` into outputs (while it is in cache)."""
    N, _, _, D = x.shape
    K = W.shape[0]
    U = _winograd_filters(W, memo)
    th, tw = winograd.tiles(out_hw)

    def block(n0: int, n1: int) -> None:
        n = n1 - n0
        xp = _padded_input(x[n0:n1], pad, (2 * th + 2, 2 * tw + 2))
        V = _scratch("wino_V", (16, n, th, tw, D), x.dtype)
        winograd.input_transform(xp, V)
        M = _scratch("wino_M", (16, n, th, tw, K), x.dtype)
        np.matmul(V.reshape(16, -1, D), U, out=M.reshape(16, -1, K))
        if b is not None:
            M[5] += b
        finish(M, n0, n1)

    per_image = th * tw * 16 * (D + K) * x.itemsize
    workers = _threads.workers()
    _threads.map_blocks(block, _blocks(N, per_image, workers), workers)


#: Whether a Winograd layer's backward makes both gradients in one pass
#: (:func:`_winograd_backward`); False: the weight gradient, then ``dx`` by the flipped
#: convolution of :func:`conv2d_input_grad`.
FUSED_WINOGRAD_BACKWARD = True


def _winograd_backward(x: np.ndarray, dout: np.ndarray, pad: Pair,
                       W: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, dx)`` of the 3x3 stride-1 convolution of ``x`` by Winograd's adjoints, in one pass
    over the blocks of the batch; ``dx`` only when the filters ``W`` are given (else None).

    Per block: the input tiles ``V`` (as in the forward) and the output-gradient tiles ``dM``;
    16 GEMMs ``dM[a, b]^T @ V[a, b]`` give the block's part of ``dU`` (summed over the blocks,
    then ``G^T dU G`` once); with ``W``, 16 GEMMs ``dM[a, b] @ U[a, b]^T`` overwrite ``V`` with
    the tile gradients, which :func:`winograd.input_grad_transform` turns into the block of
    ``dx``. The input gradient this way reuses ``dM`` where the flipped convolution of
    :func:`conv2d_input_grad` pads and transforms ``dout`` again (a 4x larger array than
    ``dout``, on its 64 channels) and adds an output transform. The reference network's
    14x14x32 -> 64 layer's whole backward, 2 threads, interleaved, median (min): batch 128
    14.4 (9.4) ms against 16.8 (11.2) for the two separate passes, batch 32 3.0 (2.6) against
    3.6 (3.0). :data:`FUSED_WINOGRAD_BACKWARD` = False gives the separate passes (for such
    comparisons; a training step's first layer, ``need_dx=False``, needs only ``dW`` anyway).
    """
    th, tw = winograd.tiles(dout.shape[1:3])

    def fill(dM: np.ndarray, n0: int, n1: int) -> None:
        # dout zero-padded to whole tiles (_padded_input with P = 0: a view when already even;
        # it reuses the scratch slot of xp, which the input transform has finished reading)
        doutp = _padded_input(dout[n0:n1], (0, 0), (2 * th, 2 * tw))
        winograd.output_grad_transform(doutp, dM)

    dW, dx, _ = _winograd_tile_grads(x, dout.shape[3], pad, (th, tw), fill, W)
    return dW, dx


def _winograd_tile_grads(x: np.ndarray, K: int, pad: Pair, tiles: Pair,
                         fill: Callable[[np.ndarray, int, int], None], W: np.ndarray | None,
                         want_db: bool = False,
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The blocks of :func:`_winograd_backward` once ``fill(dM, n0, n1)`` has written each
    block's output-gradient tiles: ``(dW, dx or None, db or None)``. ``db`` (``want_db``) is
    the sum of ``dM[1, 1]`` over the tiles: row 1 of ``A`` is ``(1, 1)``, so that position
    holds the sum of each tile's four output gradients (the forward adds the bias there)."""
    N, _, _, D = x.shape
    th, tw = tiles
    Ut = None if W is None else winograd.filter_transform(W).transpose(0, 2, 1)   # (16, K, D)
    dx = None if W is None else _arena.empty(x.shape, x.dtype)

    def block(n0: int, n1: int) -> tuple[np.ndarray, np.ndarray | None]:
        n = n1 - n0
        xp = _padded_input(x[n0:n1], pad, (2 * th + 2, 2 * tw + 2))
        V = _scratch("wino_V", (16, n, th, tw, D), x.dtype)
        winograd.input_transform(xp, V)
        dM = _scratch("wino_M", (16, n, th, tw, K), x.dtype)
        fill(dM, n0, n1)
        dM2, V2 = dM.reshape(16, -1, K), V.reshape(16, -1, D)
        dU = np.matmul(dM2.transpose(0, 2, 1), V2)
        if dx is not None:
            np.matmul(dM2, Ut, out=V2)           # V is spent: it becomes dV
            winograd.input_grad_transform(V, dx[n0:n1], pad)
        return dU, (_sum_rows(dM2[5]) if want_db else None)

    per_image = th * tw * 16 * (D + K) * x.itemsize
    workers = _threads.workers()
    parts = _threads.map_blocks(block, _blocks(N, per_image, workers), workers)
    dU, db = parts[0]
    for part, part_db in parts[1:]:         # in place, in block order (np.sum would first copy
        dU += part                          # the list into one more array)
        if want_db:
            db += part_db
    return winograd.filter_grad_transform(dU), dx, db


def _weight_grad(x: np.ndarray, dout: np.ndarray, W_shape: tuple[int, ...], stride: Pair,
                 pad: Pair, dilation: Pair, has_b: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW`` ``(K, Fh, Fw, D)`` (and ``db``) of the convolution of ``x`` whose output gradient
    is ``dout``: ``(cols.T @ dout2d).T``, with ``db`` from the ones column when there is one;
    by Winograd where the forward would use it."""
    K, Fh, Fw, D = W_shape
    if _winograd_pays((Fh, Fw), stride, dilation, D, K, x.shape[0], dout.shape[1:3]):
        dW = _winograd_backward(x, dout, pad)[0]
        return dW, (_sum_rows(dout.reshape(-1, K)) if has_b else None)
    if _dilated_as_subimages((Fh, Fw), stride, pad, dilation, D, K, x.shape, dout.shape[1:3]):
        d = tuple(dilation)
        dW = _winograd_backward(_to_subimages(x, d), _to_subimages(dout, d), (1, 1))[0]
        return dW, (_sum_rows(dout.reshape(-1, K)) if has_b else None)
    if _depth1_direct_pays((Fh, Fw), D, K, x.dtype):
        return _depth1_weight_grad(x, dout, stride, pad, dilation, has_b)
    ones = has_b and not _is_pointwise((Fh, Fw), pad)
    _, g = _conv_gemms(x, (Fh, Fw), stride, pad, dilation, dout.shape[1:3], ones_column=ones,
                       gout=dout)
    FFD = Fh * Fw * D
    dW = np.ascontiguousarray(g[:FFD].T).reshape(W_shape)     # a (K, FFD) transpose: tiny
    if not has_b:
        return dW, None
    return dW, (g[FFD].copy() if ones else _sum_rows(dout.reshape(-1, K)))


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

    The cache holds the im2col matrix (``Fh*Fw`` times the input) for the weight gradient.

    >>> x = np.ones((1, 7, 7, 1)); W = np.ones((1, 3, 3, 1))
    >>> conv2d_forward(x, W, None, (2, 2))[0].shape
    (1, 3, 3, 1)
    """
    K, Fh, Fw, _ = W.shape
    out_hw = _out_hw(x.shape[1:3], (Fh, Fw), stride, pad, dilation)
    out = _conv_core(x, W, b, stride, pad, dilation, out_hw, memo)
    return out, (x, W, b is not None, stride, pad, dilation)


def conv2d_backward(
    dout: np.ndarray, cache: Any, *, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dW, db)``; ``db`` is None when ``b`` was None.

    ``need_dx=False`` skips the input gradient (returns None for it): a network's first layer
    does not need it, and it is more than half of the backward cost (a GEMM plus the col2im).

    Shape:
        - dout: ``(N, Ho, Wo, K)`` -> dx ``(N, H, W, D)``, dW ``(K, Fh, Fw, D)``, db ``(K,)``
    """
    x, W, has_b, stride, pad, dilation = cache
    K, Fh, Fw, D = W.shape
    if need_dx and FUSED_WINOGRAD_BACKWARD:
        if _winograd_pays((Fh, Fw), stride, dilation, D, K, x.shape[0], dout.shape[1:3]):
            dW, dx = _winograd_backward(x, dout, pad, W)
            return dx, dW, (_sum_rows(dout.reshape(-1, K)) if has_b else None)
        if _dilated_as_subimages((Fh, Fw), stride, pad, dilation, D, K, x.shape,
                                 dout.shape[1:3]):
            d = tuple(dilation)
            dW, dx = _winograd_backward(_to_subimages(x, d), _to_subimages(dout, d), (1, 1), W)
            return (_from_subimages(dx, x.shape[0], d), dW,
                    _sum_rows(dout.reshape(-1, K)) if has_b else None)
    dW, db = _weight_grad(x, dout, W.shape, stride, pad, dilation, has_b)
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
    lives in a reused scratch buffer).
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
    if _is_pointwise((Fh, Fw), pad) and tuple(stride) == (1, 1) and (Ho, Wo) == tuple(input_hw):
        # every pixel its own window: one GEMM, split by rows over the threads
        return _threads.matmul(dout.reshape(-1, K), W2d).reshape(N, Ho, Wo, D)
    ext = (effective_extent(Fh, dilation[0]), effective_extent(Fw, dilation[1]))
    if tuple(stride) == (1, 1) and D >= FLIP_MIN_DEPTH and pad[0] < ext[0] and pad[1] < ext[1]:
        # At stride 1 the same sums are a convolution of dout, padded by Fe - 1 - P, with the
        # filters turned 180 degrees and their K and D axes swapped. Its GEMM has inner size
        # Fh*Fw*K instead of K, which BLAS runs far closer to peak, and the gather that feeds it
        # writes each value once where col2im adds Fh*Fw times: cifar10's 32x32x32 layer at
        # batch 128 took 46 ms this way against 85 ms (one thread). With a thin dx (D = 1, a
        # first layer) the GEMM is too narrow and col2im wins, 2.7 vs 8.5 ms.
        Wf = np.ascontiguousarray(W.transpose(3, 1, 2, 0)[:, ::-1, ::-1, :])
        flip_pad = (ext[0] - 1 - pad[0], ext[1] - 1 - pad[1])
        return _conv_core(dout, Wf, None, (1, 1), flip_pad, dilation, tuple(input_hw), memo)
    dx = _arena.empty((N, *input_hw, D), dout.dtype)

    planes = D < COL2IM_PLANES_BELOW

    def block(n0: int, n1: int) -> None:
        n, m, FFD = n1 - n0, (n1 - n0) * Ho * Wo, W2d.shape[1]
        if not planes:
            dcols = _scratch("dcols", (m, FFD), dout.dtype)
            np.matmul(dout[n0:n1].reshape(-1, K), W2d, out=dcols)
            _col2im(dcols, dx[n0:n1], (Ho, Wo), (Fh, Fw), stride, pad, dilation)
            return
        # Thin dx: the same sums on transposed buffers, dcols as (FFD, m) and dx as
        # (D, n, H, W), so every slice-add of _col2im runs along rows of the image (runs of
        # Wo values) instead of runs of D; then one transposing copy into dx. With D = 3 the
        # 25 adds of a 5x5 kernel over runs of 3 values took 7.0 ms (seed004's second layer at
        # batch 128, 2 threads); this way 3.8 ms.
        dcolsT = _scratch("dcols", (FFD, m), dout.dtype)
        np.matmul(W2d.T, dout[n0:n1].reshape(-1, K).T, out=dcolsT)
        dxT = _scratch("dxT", (D, n, *input_hw), dout.dtype)
        _col2im(dcolsT.T, dxT.transpose(1, 2, 3, 0), (Ho, Wo), (Fh, Fw), stride, pad, dilation)
        np.copyto(dx[n0:n1], dxT.transpose(1, 2, 3, 0))

    workers = _threads.workers()
    _threads.map_blocks(block, _blocks(N, Ho * Wo * W2d.shape[1] * dout.itemsize, workers,
                                       dout.nbytes + dx.nbytes), workers)
    return dx


def conv2d_weight_grad(
    x: np.ndarray, dout: np.ndarray, F: Pair,
    stride: Pair = (1, 1), pad: Pair = (0, 0), dilation: Pair = (1, 1),
) -> np.ndarray:
    """Gradient of a convolution with respect to its filters, from the input ``x``.

    Gathers ``x`` (im2col, block by block) on ``dout``'s grid and multiplies by ``dout``.

    Shape:
        - x: ``(N, H, W, D)``; dout: ``(N, Ho, Wo, K)``; F: ``(Fh, Fw)`` -> dW: ``(K, Fh, Fw, D)``
    """
    K = dout.shape[3]
    return _weight_grad(x, dout, (K, F[0], F[1], x.shape[3]), stride, pad, dilation, False)[0]


# ------------------------------------------------------------------ conv2d + 2x2 max pool
def maxpool_fuses(x_shape: tuple[int, ...], W_shape: tuple[int, ...], stride: Pair, pad: Pair,
                  dilation: Pair) -> bool:
    """Whether the convolution followed by a 2x2 stride-2 max pool runs as
    :func:`conv2d_maxpool_forward`: when the convolution runs as Winograd F(2x2, 3x3), whose
    2x2 output tiles are the pool's windows."""
    K, Fh, Fw, D = W_shape
    out_hw = _out_hw(x_shape[1:3], (Fh, Fw), stride, pad, dilation)
    return _winograd_pays((Fh, Fw), stride, dilation, D, K, x_shape[0], out_hw)


def conv2d_maxpool_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair, *, relu: bool = False,
    need_index: bool = True, memo: dict | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Any, Pair]:
    """A 3x3 stride-1 convolution, then a 2x2 stride-2 max pool (then ``max(., 0)`` when
    ``relu``), in one pass: the pool is taken on each Winograd output tile while it is in
    registers (:func:`winograd.output_transform_maxpool`), so the convolution's output is never
    written and the pool makes no pass of its own. Only where :func:`maxpool_fuses`.

    Returns ``(pooled, idx, cache, conv_hw)``: the pool's output and first-argmax offsets
    (None unless ``need_index``; :func:`convnet.ops.pool.maxpool2d_forward`'s index), the
    convolution's cache (as :func:`conv2d_forward` returns it) and its output grid.

    Shape:
        - x: ``(N, H, W, D)``; W: ``(K, 3, 3, D)`` -> pooled, idx: ``(N, Ho // 2, Wo // 2, K)``
          (a floor-cropped pool drops the last row or column of an odd grid)
    """
    K = W.shape[0]
    one = (1, 1)
    conv_hw = _out_hw(x.shape[1:3], (3, 3), one, pad, one)
    pooled_shape = (x.shape[0], *(conv_output_size(n, 2, 2, floor=True) for n in conv_hw), K)
    out = _arena.empty(pooled_shape, x.dtype)
    idx = _arena.empty(pooled_shape, np.uint8) if need_index else None

    def finish(M: np.ndarray, n0: int, n1: int) -> None:
        ix = (idx[n0:n1] if idx is not None
              else _scratch("wino_idx", (n1 - n0, *pooled_shape[1:]), np.uint8))
        winograd.output_transform_maxpool(M, out[n0:n1], ix, relu)

    _winograd_tiles(x, W, b, pad, conv_hw, memo, finish)
    return out, idx, (x, W, b is not None, one, pad, one), conv_hw


def conv2d_maxpool_backward(
    dout: np.ndarray, idx: np.ndarray, relu_out: np.ndarray | None, cache: Any, conv_hw: Pair,
    *, need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_maxpool_forward`: ``(dx, dW, db)`` from the pool's output
    gradient ``dout``, its ``idx`` and, with the RELU, its output ``relu_out``. The gradient
    each pooled value sends to its argmax goes straight into the Winograd output-gradient tiles
    (:func:`winograd.output_grad_transform_maxpool`): the pool's backward pass and the dense
    gradient of the convolution's output (4x ``dout``, mostly zeros) are never made.

    Shape:
        - dout, idx, relu_out: ``(N, Ho // 2, Wo // 2, K)`` -> dx ``(N, H, W, D)``,
          dW ``(K, 3, 3, D)``, db ``(K,)``
    """
    x, W, has_b, _, pad, _ = cache
    dout = np.ascontiguousarray(dout)

    def fill(dM: np.ndarray, n0: int, n1: int) -> None:
        winograd.output_grad_transform_maxpool(
            dout[n0:n1], idx[n0:n1], None if relu_out is None else relu_out[n0:n1], dM)

    dW, dx, db = _winograd_tile_grads(x, W.shape[0], pad, winograd.tiles(conv_hw), fill,
                                      W if need_dx else None, want_db=has_b)
    return dx, dW, db


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
    db = _sum_rows(dout.reshape(-1, K)) if has_b else None
    return dx, dW, db


__all__ = [
    "conv2d_backward", "conv2d_forward", "conv2d_input_grad", "conv2d_maxpool_backward",
    "conv2d_maxpool_forward", "conv2d_weight_grad", "conv3x3_depth1_maxpool_weight_grad",
    "conv_transpose2d_backward", "conv_transpose2d_forward", "depth1_maxpool_fuses",
    "maxpool_fuses",
]
