"""The fast drivers of a convolution: what :mod:`convnet.ops.conv` dispatches to when
:func:`~convnet.ops.conv_paths.choose_path` says a fast path pays. Each has a test against the
plain im2col path and against :mod:`convnet.ops.reference` (``tests/test_ops_paths.py``).

- **Winograd F(2x2, 3x3)** (``ConvPath.WINOGRAD``, :func:`winograd_conv`,
  :func:`winograd_backward`): 3x3 stride-1 layers with enough channels and tiles. 16 GEMMs on
  transformed tiles (:mod:`convnet.ops.winograd`), 2.25x fewer multiplies, in the same blocks
  and threads as im2col. The backward makes both gradients in one pass from the same
  transformed output gradient. Float32 results differ from im2col's by ~1e-7 relative (the
  transforms add with signs).
- **Dilation by sub-images** (``ConvPath.SUBIMAGES``, :func:`to_subimages`): a dilated 3x3
  "same" convolution is ``d_h * d_w`` undilated ones on the interleaved sub-images, run as
  Winograd (space-to-batch).
- **The one-channel direct kernel** (``ConvPath.DIRECT_DEPTH1``, :func:`conv3x3_depth1`,
  :func:`depth1_weight_grad`): a 3x3 layer on a one-channel input (a grayscale network's first
  layer) by compiled kernels that vectorise over the filters, where im2col's GEMM would have an
  inner size of 9.
- **The thin-input direct kernel** (``ConvPath.DIRECT_SMALL``, :func:`conv_small`,
  :func:`small_weight_grad`, :func:`small_input_grad`): a stride-1 CONV of any window and
  dilation on an input of at most 8 channels by at most 8 filters (seed004's 5x5 layers over 1
  and 3 channels), by compiled kernels on the "wide grid" (the padded planes flattened, each
  tap one long contiguous run), where im2col's GEMM would have sizes of 3-6 and copy the input
  ``Fh*Fw`` times.
- **CONV + POOL fusion** (:func:`conv2d_maxpool_forward`, :func:`conv2d_maxpool_backward`,
  :func:`conv3x3_depth1_maxpool_weight_grad`): a 2x2 stride-2 max pool taken on Winograd's
  2x2 output tiles while they are in registers, and its backward straight into the tiles; the
  one-channel layer's weight gradient straight from the pool's gradient and index.

Everything here is internal to ``ops/``: layers call the public functions of
:mod:`convnet.ops.conv` (which re-exports the fused CONV + POOL functions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convnet.arith import conv_output_size, deconv_output_size
from convnet.ops import _arena, _jit, _threads, winograd
from convnet.ops._blocks import blocks, conv_grid, padded_input, scratch, sum_rows
from convnet.ops.conv_paths import sub_hw

Pair = tuple[int, int]


# ----------------------------------------------------------------- Winograd F(2x2, 3x3)
def winograd_filters(W: np.ndarray, memo: dict | None) -> np.ndarray:
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


def winograd_conv(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair,
                  out_hw: Pair, memo: dict | None = None) -> np.ndarray:
    """The 3x3 stride-1 convolution on the grid ``out_hw`` by Winograd F(2x2, 3x3).

    Same contract as the im2col path (zeros outside the input, any grid). Block by block over
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
    """The blocks of :func:`winograd_conv` up to the GEMMs' output ``M`` (bias included);
    ``finish(M, n0, n1)`` turns each block's ``M`` into outputs (while it is in cache)."""
    N, _, _, D = x.shape
    K = W.shape[0]
    U = winograd_filters(W, memo)
    th, tw = winograd.tiles(out_hw)

    def block(n0: int, n1: int) -> None:
        n = n1 - n0
        xp = padded_input(x[n0:n1], pad, (2 * th + 2, 2 * tw + 2))
        V = scratch("wino_V", (16, n, th, tw, D), x.dtype)
        winograd.input_transform(xp, V)
        M = scratch("wino_M", (16, n, th, tw, K), x.dtype)
        np.matmul(V.reshape(16, -1, D), U, out=M.reshape(16, -1, K))
        if b is not None:
            M[5] += b
        finish(M, n0, n1)

    per_image = th * tw * 16 * (D + K) * x.itemsize
    workers = _threads.workers()
    _threads.map_blocks(block, blocks(N, per_image, workers), workers)


def winograd_backward(x: np.ndarray, dout: np.ndarray, pad: Pair,
                      W: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, dx)`` of the 3x3 stride-1 convolution of ``x`` by Winograd's adjoints, in one pass
    over the blocks of the batch; ``dx`` only when the filters ``W`` are given (else None).

    Per block: the input tiles ``V`` (as in the forward) and the output-gradient tiles ``dM``;
    16 GEMMs ``dM[a, b]^T @ V[a, b]`` give the block's part of ``dU`` (summed over the blocks,
    then ``G^T dU G`` once); with ``W``, 16 GEMMs ``dM[a, b] @ U[a, b]^T`` overwrite ``V`` with
    the tile gradients, which :func:`winograd.input_grad_transform` turns into the block of
    ``dx``. The input gradient this way reuses ``dM`` where the flipped convolution of
    :func:`~convnet.ops.conv.conv2d_input_grad` pads and transforms ``dout`` again (a 4x larger
    array than ``dout``, on its 64 channels) and adds an output transform. The reference
    network's 14x14x32 -> 64 layer's whole backward, 2 threads, interleaved, median (min):
    batch 128 14.4 (9.4) ms against 16.8 (11.2) for the two separate passes, batch 32 3.0 (2.6)
    against 3.6 (3.0). ``force_path(fused_backward=False)`` gives the separate passes (for such
    comparisons; a training step's first layer, ``need_dx=False``, needs only ``dW`` anyway).
    """
    th, tw = winograd.tiles(dout.shape[1:3])

    def fill(dM: np.ndarray, n0: int, n1: int) -> None:
        # dout zero-padded to whole tiles (padded_input with P = 0: a view when already even;
        # it reuses the scratch slot of xp, which the input transform has finished reading)
        doutp = padded_input(dout[n0:n1], (0, 0), (2 * th, 2 * tw))
        winograd.output_grad_transform(doutp, dM)

    dW, dx, _ = _winograd_tile_grads(x, dout.shape[3], pad, (th, tw), fill, W)
    return dW, dx


def _winograd_tile_grads(x: np.ndarray, K: int, pad: Pair, tiles: Pair,
                         fill: Callable[[np.ndarray, int, int], None], W: np.ndarray | None,
                         want_db: bool = False,
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The blocks of :func:`winograd_backward` once ``fill(dM, n0, n1)`` has written each
    block's output-gradient tiles: ``(dW, dx or None, db or None)``. ``db`` (``want_db``) is
    the sum of ``dM[1, 1]`` over the tiles: row 1 of ``A`` is ``(1, 1)``, so that position
    holds the sum of each tile's four output gradients (the forward adds the bias there)."""
    N, _, _, D = x.shape
    th, tw = tiles
    Ut = None if W is None else winograd.filter_transform(W).transpose(0, 2, 1)   # (16, K, D)
    dx = None if W is None else _arena.empty(x.shape, x.dtype)

    def block(n0: int, n1: int) -> tuple[np.ndarray, np.ndarray | None]:
        n = n1 - n0
        xp = padded_input(x[n0:n1], pad, (2 * th + 2, 2 * tw + 2))
        V = scratch("wino_V", (16, n, th, tw, D), x.dtype)
        winograd.input_transform(xp, V)
        dM = scratch("wino_M", (16, n, th, tw, K), x.dtype)
        fill(dM, n0, n1)
        dM2, V2 = dM.reshape(16, -1, K), V.reshape(16, -1, D)
        dU = np.matmul(dM2.transpose(0, 2, 1), V2)
        if dx is not None:
            np.matmul(dM2, Ut, out=V2)           # V is spent: it becomes dV
            winograd.input_grad_transform(V, dx[n0:n1], pad)
        return dU, (sum_rows(dM2[5]) if want_db else None)

    per_image = th * tw * 16 * (D + K) * x.itemsize
    workers = _threads.workers()
    parts = _threads.map_blocks(block, blocks(N, per_image, workers), workers)
    dU, db = parts[0]
    for part, part_db in parts[1:]:         # in place, in block order (np.sum would first copy
        dU += part                          # the list into one more array)
        if want_db:
            db += part_db
    return winograd.filter_grad_transform(dU), dx, db


# --------------------------------------------------- dilated 3x3 as Winograd on sub-images
def to_subimages(x: np.ndarray, d: Pair) -> np.ndarray:
    """``(N, H, W, C)`` -> ``(N * d_h * d_w, H / d_h, W / d_w, C)``: image ``n``'s sub-image
    ``(a, b)`` (pixels ``a::d_h, b::d_w``) at batch index ``(n * d_h + a) * d_w + b``."""
    N, H, W, C = x.shape
    (dh, dw), (h, w) = d, sub_hw((H, W), d)
    out = _arena.empty((N * dh * dw, h, w, C), x.dtype)
    np.copyto(out.reshape(N, dh, dw, h, w, C),
              x.reshape(N, h, dh, w, dw, C).transpose(0, 2, 4, 1, 3, 5))
    return out


def from_subimages(y: np.ndarray, N: int, d: Pair) -> np.ndarray:
    """The inverse of :func:`to_subimages`: sub-images back into ``N`` whole images."""
    _, h, w, C = y.shape
    dh, dw = d
    out = _arena.empty((N, h * dh, w * dw, C), y.dtype)
    np.copyto(out.reshape(N, h, dh, w, dw, C),
              y.reshape(N, dh, dw, h, w, C).transpose(0, 3, 1, 4, 2, 5))
    return out


def subimages_conv(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, dilation: Pair,
                   out_hw: Pair, memo: dict | None = None) -> np.ndarray:
    """The dilated 3x3 "same" convolution (``P = d``) as Winograd on the sub-images (each an
    undilated 3x3 convolution with padding 1)."""
    d = tuple(dilation)
    sub = winograd_conv(to_subimages(x, d), W, b, (1, 1), sub_hw(out_hw, d), memo)
    return from_subimages(sub, x.shape[0], d)


def subimages_backward(x: np.ndarray, dout: np.ndarray, dilation: Pair,
                       W: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, dx)`` of :func:`subimages_conv` by :func:`winograd_backward` on the sub-images;
    ``dx`` only when ``W`` is given."""
    d = tuple(dilation)
    dW, dx = winograd_backward(to_subimages(x, d), to_subimages(dout, d), (1, 1), W)
    return dW, (None if dx is None else from_subimages(dx, x.shape[0], d))


def _extent_read(out_hw: Pair, F: Pair, stride: Pair, dilation: Pair) -> Pair:
    """The padded input rows and columns that the windows of an ``out_hw`` output read: the
    size a transposed CONV of ``out_hw`` would make (:func:`convnet.arith.deconv_output_size`,
    no padding)."""
    return (deconv_output_size(out_hw[0], F[0], stride[0], 0, 0, dilation[0]),
            deconv_output_size(out_hw[1], F[1], stride[1], 0, 0, dilation[1]))


# ------------------------------------------------------------- 3x3 on one channel, direct
def _depth1_padded(x: np.ndarray, stride: Pair, pad: Pair, dilation: Pair,
                   out_hw: Pair) -> np.ndarray:
    """The padded one-channel images ``(N, Hp, Wp)`` that the 3x3 windows on ``out_hw`` read
    (this thread's scratch; the worker threads only read it)."""
    return padded_input(x, pad, _extent_read(out_hw, (3, 3), stride, dilation))[..., 0]


def conv3x3_depth1(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair,
                   pad: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """The 3x3 convolution of one-channel images by the compiled direct kernel
    (:func:`convnet.ops._jit.conv3x3_depth1_kernel`), ranges of images over the worker
    threads. Same contract as the im2col path."""
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


def depth1_weight_grad(x: np.ndarray, dout: np.ndarray, stride: Pair, pad: Pair,
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


# ------------------------------------------------- thin inputs (D <= 8, few filters), direct
def _small_planar(x: np.ndarray, F: Pair, pad: Pair, dilation: Pair,
                  out_hw: Pair) -> np.ndarray:
    """The padded input the stride-1 windows on ``out_hw`` read, planar ``(N, D, Hp, Wp)`` (a
    copy in this thread's scratch: thin inputs are small)."""
    need = _extent_read(out_hw, F, (1, 1), dilation)
    xp = padded_input(x, pad, need)
    xpT = scratch("small_xT", (x.shape[0], x.shape[3], *need), x.dtype)
    np.copyto(xpT, xp.transpose(0, 3, 1, 2))
    return xpT


def _small_split(N: int, macs: int) -> list[tuple[int, int]]:
    workers = _threads.workers() if macs >= _threads.SPLIT_MIN_MACS else 1
    return _threads.row_blocks(N, workers)


def conv_small(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair,
               dilation: Pair, out_hw: Pair) -> np.ndarray:
    """The stride-1 convolution of a thin input by few filters by the compiled direct kernel
    (:func:`convnet.ops._jit.conv_small_kernel`), ranges of images over the worker threads
    when the work is worth it. Same contract as the im2col path."""
    N = x.shape[0]
    K, Fh, Fw, D = W.shape
    Ho, Wo = out_hw
    xpT = _small_planar(x, (Fh, Fw), pad, dilation, out_hw)
    Wc = np.ascontiguousarray(W, dtype=x.dtype)
    bias = np.zeros(K, dtype=x.dtype) if b is None else b.astype(x.dtype, copy=False)
    out = _arena.empty((N, Ho, Wo, K), x.dtype)
    parts = _small_split(N, N * Ho * Wo * K * Fh * Fw * D)
    _threads.map_blocks(
        lambda n0, n1: _jit.conv_small_kernel(xpT[n0:n1], dilation[0], dilation[1], Wc, bias,
                                              out[n0:n1]), parts, len(parts))
    return out


def _wide_gradient(dout: np.ndarray, Wp: int) -> tuple[np.ndarray, int]:
    """``dout`` planar on the wide grid ``(N, K, Ho*Wp)`` (zeros in the columns ``>= Wo``, in
    this thread's scratch) and the run length ``L`` of the small kernels."""
    N, Ho, Wo, K = dout.shape
    gW = scratch("small_gW", (N, K, Ho, Wp), dout.dtype)
    gW[..., Wo:] = 0
    np.copyto(gW[..., :Wo], dout.transpose(0, 3, 1, 2))
    return gW.reshape(N, K, Ho * Wp), (Ho - 1) * Wp + Wo


def small_input_grad(dout: np.ndarray, W: np.ndarray, input_hw: Pair, pad: Pair,
                     dilation: Pair) -> np.ndarray:
    """The input gradient of the stride-1 convolution of a thin input by few filters (and the
    forward of such a transposed convolution) by the compiled kernel
    (:func:`convnet.ops._jit.conv_small_dx_kernel`) on the wide grid, then cropped to the input
    and transposed to NHWC. Same contract as :func:`convnet.ops.conv.conv2d_input_grad`."""
    N, Ho, Wo, K = dout.shape
    _, Fh, Fw, D = W.shape
    (ph, pw), (H, W_) = pad, input_hw
    need = _extent_read((Ho, Wo), (Fh, Fw), (1, 1), dilation)
    gW, L = _wide_gradient(dout, need[1])
    dxp = scratch("small_dxp", (N, D, *need), dout.dtype)
    Wc = np.ascontiguousarray(W, dtype=dout.dtype)
    parts = _small_split(N, N * Ho * Wo * W.size)
    _threads.map_blocks(
        lambda n0, n1: _jit.conv_small_dx_kernel(gW[n0:n1], L, dilation[0], dilation[1], Wc,
                                                 dxp[n0:n1]), parts, len(parts))
    dx = _arena.empty((N, H, W_, D), dout.dtype)
    # input rows/cols r sit at r + P in the padded grid; those past ``need`` get no gradient
    h, w = max(0, min(H, need[0] - ph)), max(0, min(W_, need[1] - pw))
    if h < H or w < W_:
        dx[...] = 0
    np.copyto(dx[:, :h, :w], dxp[:, :, ph:ph + h, pw:pw + w].transpose(0, 2, 3, 1))
    return dx


def small_weight_grad(x: np.ndarray, dout: np.ndarray, F: Pair, pad: Pair,
                      dilation: Pair, has_b: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``dW`` ``(K, Fh, Fw, D)`` and ``db`` of :func:`conv_small` by the compiled kernel
    (:func:`convnet.ops._jit.conv_small_wgrad_kernel`): the output gradient copied planar onto
    the kernel's wide grid (zeros in the extra columns); each worker thread sums its range of
    images into its own float64 accumulator; those are added in order."""
    N, Ho, Wo, K = dout.shape
    D = x.shape[3]
    xpT = _small_planar(x, F, pad, dilation, (Ho, Wo))
    gW, L = _wide_gradient(dout, xpT.shape[3])
    T = F[0] * F[1] * D

    def part(n0: int, n1: int) -> np.ndarray:
        acc = np.zeros((K, T + 1))
        _jit.conv_small_wgrad_kernel(xpT[n0:n1], F[0], F[1], dilation[0], dilation[1],
                                     gW[n0:n1], L, acc)
        return acc

    parts = _small_split(N, N * Ho * Wo * K * T)
    acc, *rest = _threads.map_blocks(part, parts, len(parts))
    for more in rest:
        acc += more
    dW = acc[:, :T].astype(x.dtype).reshape(K, F[0], F[1], D)
    return dW, (acc[:, T].astype(x.dtype) if has_b else None)


# ------------------------------------------------------------------ CONV + 2x2 max POOL
def conv2d_maxpool_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, pad: Pair, *, relu: bool = False,
    need_index: bool = True, memo: dict | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Any, Pair]:
    """A 3x3 stride-1 convolution, then a 2x2 stride-2 max pool (then ``max(., 0)`` when
    ``relu``), in one pass: the pool is taken on each Winograd output tile while it is in
    registers (:func:`winograd.output_transform_maxpool`), so the convolution's output is never
    written and the pool makes no pass of its own. Only where
    :func:`convnet.ops.conv.maxpool_fuses`.

    Returns ``(pooled, idx, cache, conv_hw)``: the pool's output and first-argmax offsets
    (None unless ``need_index``; :func:`convnet.ops.pool.maxpool2d_forward`'s index), the
    convolution's cache (as :func:`convnet.ops.conv.conv2d_forward` returns it) and its output
    grid.

    Shape:
        - x: ``(N, H, W, D)``; W: ``(K, 3, 3, D)`` -> pooled, idx: ``(N, Ho // 2, Wo // 2, K)``
          (a floor-cropped pool drops the last row or column of an odd grid)
    """
    K = W.shape[0]
    one = (1, 1)
    conv_hw = conv_grid(x.shape[1:3], (3, 3), one, pad, one)
    pooled_shape = (x.shape[0], *(conv_output_size(n, 2, 2, floor=True) for n in conv_hw), K)
    out = _arena.empty(pooled_shape, x.dtype)
    idx = _arena.empty(pooled_shape, np.uint8) if need_index else None

    def finish(M: np.ndarray, n0: int, n1: int) -> None:
        ix = (idx[n0:n1] if idx is not None
              else scratch("wino_idx", (n1 - n0, *pooled_shape[1:]), np.uint8))
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


def conv3x3_depth1_maxpool_weight_grad(
    x: np.ndarray, dout: np.ndarray, idx: np.ndarray, relu_out: np.ndarray | None, pad: Pair,
    conv_hw: Pair, has_b: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dW, db)`` of a 3x3 stride-1 one-channel convolution followed by a 2x2 stride-2 max
    pool (then a RELU, whose output ``relu_out`` is given), from the POOL's output gradient
    ``dout`` and index ``idx`` (:func:`convnet.ops._jit.conv3x3_depth1_pool_wgrad_kernel`):
    the pool's backward and the convolution's dense output gradient are skipped. A network's
    first layer (no ``dx``); where :func:`convnet.ops.conv.depth1_maxpool_fuses`.

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
