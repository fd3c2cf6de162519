"""Blocks of a batch and the per-thread scratch they live in: what every CONV path shares.

The im2col and Winograd paths (:mod:`convnet.ops.conv`, :mod:`convnet.ops.conv_fast`) work
one cache-sized block of images at a time, on the worker threads of :mod:`convnet.ops._threads`,
in scratch buffers that each thread reuses from call to call. This module sizes the blocks,
keeps the buffers and builds the zero-padded input the windows read.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from convnet.arith import conv_output_size
from convnet.ops import _threads
from convnet.ops.conv_paths import forced_block_bytes

Pair = tuple[int, int]


def conv_grid(in_hw: Pair, F: Pair, stride: Pair, pad: Pair, dilation: Pair) -> Pair:
    """The output grid of a convolution in floor mode (``arith.conv_output_size``)."""
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

#: An im2col block is also at most 1/ACTIVATION_FRACTION of the bytes of the layer's own input
#: and output (but at least :data:`MIN_BLOCK_BYTES`): the per-thread scratch of a layer with
#: small activations then stays small next to them. Without it, seed004 (32x32x1 images, 3
#: and 6 filters) kept two 4 MiB blocks per scratch slot for a training step whose arrays peak
#: at 1.2 MB, and its peak memory matched PyTorch's (7.1 vs 6.3-7.5 MB) instead of 4.8-5.2 MB.
#: Winograd's blocks keep :data:`BLOCK_BYTES` (its layers have >= 32 channels, and smaller
#: blocks cost it: the reference network's 14x14x32 -> 64 layer at batch 32, forward + backward,
#: took 7.1 ms in 2-image blocks and 5.6 ms in 13-image blocks).
#: The floor was 256 KiB; round 2 raised it to 2 MiB: ResNet-20's 32x32x16 -> 16 layers at
#: batch 32 (2 MiB in, 2 MiB out) ran in one-image blocks of 0.6 MB, whose per-block Python and
#: GEMM start-up cost showed: its training step 217 -> 162 ms, inference 54 -> 48 ms (one
#: thread, CPU time, median of 3) with 2 MiB blocks; batch 128 (already 4 MiB blocks) unchanged.
#: seed004's layers no longer run on im2col (``ConvPath.DIRECT_SMALL``), so its memory does not
#: depend on this floor.
ACTIVATION_FRACTION = 4
MIN_BLOCK_BYTES = 2 * 2**20

# Scratch arrays are reused across calls (per thread, so two networks in two threads never
# share one): a fresh multi-MiB np.empty is an mmap whose pages the kernel must zero on first
# touch, every call. Buffers above _SCRATCH_KEEP (a single huge image) are not kept.
_SCRATCH_KEEP = 64 * 2**20
_tls = threading.local()


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
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


def blocks(N: int, bytes_per_image: int, parts: int = 1,
           activation_bytes: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of images whose block is at most about :data:`BLOCK_BYTES`
    (less for a layer whose input + output, ``activation_bytes``, are small): nearly equal
    ranges, as many as a multiple of ``parts`` (the worker threads) when there are that many
    images. :func:`~convnet.ops.conv_paths.force_path` can set the size instead."""
    per = max(1, bytes_per_image)
    target = forced_block_bytes()
    if target is None:
        target = BLOCK_BYTES
        if activation_bytes is not None:
            target = min(target, max(MIN_BLOCK_BYTES, activation_bytes // ACTIVATION_FRACTION))
    n = -(-N // max(1, target // per))            # blocks of at most the target size
    # a multiple of the threads, of nearly equal sizes, so every thread gets the same work: 32
    # images in blocks of at most 13 made 13 + 13 + 6, one thread doing 19 images and the other
    # 13 (the reference network's second layer at batch 32); now 8 + 8 + 8 + 8
    n = min(N, -(-n // parts) * parts)
    return _threads.row_blocks(N, n)


def padded_input(x: np.ndarray, pad: Pair, need_hw: Pair) -> np.ndarray:
    """The rows/cols ``-P .. need - P - 1`` of ``x``, zeros outside: exactly what the windows read.

    ``need_hw`` can be smaller than ``H + 2P`` (floor mode never reads the last rows), so only the
    part that is read is copied. Without padding or cropping ``x`` itself is returned (no copy).
    The copy lives in a scratch buffer (only its border is zeroed, the interior written once).
    """
    N, H, W, D = x.shape
    (ph, pw), (nh, nw) = pad, need_hw
    if ph == pw == 0 and nh <= H and nw <= W:
        return x[:, :nh, :nw]
    xp = scratch("pad", (N, nh, nw, D), x.dtype)
    h, w = max(0, min(H, nh - ph)), max(0, min(W, nw - pw))
    xp[:, :ph] = 0
    xp[:, ph + h:] = 0
    xp[:, ph:ph + h, :pw] = 0
    xp[:, ph:ph + h, pw + w:] = 0
    xp[:, ph:ph + h, pw:pw + w] = x[:, :h, :w]
    return xp


def sum_rows(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)`` for a tall ``(M, K)`` matrix as a BLAS matrix-vector product: 6x faster
    than numpy's row-by-row reduction on (100352, 32) float32 (0.34 vs 2.2 ms), same dtype."""
    return np.ones(a.shape[0], dtype=a.dtype) @ a
