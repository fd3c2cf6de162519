"""Grouped and depthwise convolution kernels (``groups > 1``) on NHWC arrays.

A grouped CONV with ``G`` groups is ``G`` independent convolutions side by side: group ``g``
reads input slices ``[g*D/G, (g+1)*D/G)`` and writes output maps ``[g*K/G, (g+1)*K/G)`` with
filters of depth ``D/G`` (PyTorch's layout). Weights ``W``: ``(K, Fh, Fw, D/G)``.

- ``1 < G < D`` (ResNeXt, ``CONV(128,F=1,G=4)``): each group runs on the ordinary CONV kernels
  (:mod:`convnet.ops.conv`, im2col + GEMM), a loop over the ``G`` groups only.
- ``G == D`` (depthwise, MobileNet's ``DWCONV``): a GEMM per slice would multiply a 1-column
  matrix ``D`` times, so this is its own kernel, on the path
  :func:`~convnet.ops.conv_paths.choose_depthwise_path` picks: ``DIRECT`` (multiplier 1,
  compiled: one pass over the output, each pixel's ``Fh*Fw`` taps summed in a vector over the
  contiguous depth; the backward makes ``dW`` and ``dx`` in one pass), else ``TAPS`` (NumPy: a
  loop over the filter taps, each one strided slice of the padded input times one weight per
  slice, over all images, positions and slices at once, a pass over the output per tap). A
  depthwise CONV does ``F*F`` multiply-adds per output value, so it is bound by memory.

Shape:
    x ``(N, H, W, D)``, W ``(K, Fh, Fw, D/G)``, b ``(K,)`` or None -> out ``(N, Ho, Wo, K)``,
    ``Ho = floor((H + 2P - F_eff)/S) + 1`` (the layers check that it fits first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.arith import Pair, conv_output_size
from convnet.ops import _arena, _jit, _threads
from convnet.ops import conv as F_conv
from convnet.ops.conv_paths import DepthwisePath, choose_depthwise_path

__all__ = ["grouped_conv2d_backward", "grouped_conv2d_forward"]


def _out_hw(in_hw: Pair, F: Pair, stride: Pair, pad: Pair, dilation: Pair) -> Pair:
    return (conv_output_size(in_hw[0], F[0], stride[0], pad[0], dilation[0], floor=True),
            conv_output_size(in_hw[1], F[1], stride[1], pad[1], dilation[1], floor=True))


def _tap(i: int, j: int, out_hw: Pair, stride: Pair, dilation: Pair) -> tuple[slice, ...]:
    """The padded-input pixels that filter tap ``(i, j)`` reads for every output position."""
    r, c = i * dilation[0], j * dilation[1]
    return (slice(None), slice(r, r + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(c, c + stride[1] * (out_hw[1] - 1) + 1, stride[1]), slice(None))


def _pad(x: np.ndarray, pad: Pair) -> np.ndarray:
    if pad == (0, 0):
        return x
    return np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))


def _direct_parts(N: int, work: int) -> list[tuple[int, int]]:
    workers = _threads.workers() if work >= _threads.SPLIT_MIN_ELEMENTS else 1
    return _threads.row_blocks(N, workers)


def _depthwise_direct_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
                              stride: Pair, pad: Pair, dilation: Pair,
                              out_hw: Pair) -> np.ndarray:
    """``DepthwisePath.DIRECT``: the compiled kernel (no padded copy: taps in the padding are
    skipped), ranges of images over the threads."""
    N, D = x.shape[0], x.shape[3]
    fh, fw = W.shape[1:3]
    xc = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(W[..., 0].transpose(1, 2, 0), dtype=x.dtype)   # (Fh, Fw, D)
    bias = np.zeros(D, x.dtype) if b is None else b.astype(x.dtype, copy=False)
    out = _arena.empty((N, *out_hw, D), x.dtype)
    parts = _direct_parts(N, out.size * fh * fw)
    _threads.map_blocks(
        lambda n0, n1: _jit.depthwise_kernel(xc[n0:n1], stride[0], stride[1], pad[0], pad[1],
                                             dilation[0], dilation[1], Wt, bias, out[n0:n1]),
        parts, len(parts))
    return out


def _depthwise_direct_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray, stride: Pair,
                               pad: Pair, dilation: Pair, need_dx: bool
                               ) -> tuple[np.ndarray | None, np.ndarray]:
    """``DepthwisePath.DIRECT``: both gradients in one compiled pass, straight into ``dx``;
    each thread sums its images' weight gradient into its own float64 accumulator, added in
    order."""
    N, D = x.shape[0], x.shape[3]
    fh, fw = W.shape[1:3]
    xc = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(W[..., 0].transpose(1, 2, 0), dtype=x.dtype)
    dx = _arena.empty(x.shape, dout.dtype) if need_dx else np.empty((1, 1, 1, 1), dout.dtype)
    g = np.ascontiguousarray(dout)

    def part(n0: int, n1: int) -> np.ndarray:
        acc = np.zeros((fh, fw, D))
        _jit.depthwise_backward_kernel(xc[n0:n1], stride[0], stride[1], pad[0], pad[1],
                                       dilation[0], dilation[1], Wt, g[n0:n1], need_dx,
                                       dx[n0:n1] if need_dx else dx, acc)
        return acc

    parts = _direct_parts(N, dout.size * fh * fw)
    acc, *rest = _threads.map_blocks(part, parts, len(parts))
    for more in rest:
        acc += more
    dW = np.ascontiguousarray(acc.transpose(2, 0, 1), dtype=x.dtype).reshape(D, fh, fw, 1)
    return (dx if need_dx else None), dW


def _depthwise_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair,
                       pad: Pair, dilation: Pair) -> np.ndarray:
    N, H, Wd, D = x.shape
    K, fh, fw, _ = W.shape
    m = K // D
    out_hw = _out_hw((H, Wd), (fh, fw), stride, pad, dilation)
    if choose_depthwise_path(m, x.dtype) is DepthwisePath.DIRECT:
        return _depthwise_direct_forward(x, W, b, stride, pad, dilation, out_hw)
    xp = _pad(x, pad)
    taps = W[..., 0].reshape(D, m, fh, fw)        # output map d*m + j reads slice d
    out = np.zeros((N, *out_hw, D, m) if m > 1 else (N, *out_hw, D), dtype=x.dtype)
    tmp = np.empty((N, *out_hw, D), dtype=x.dtype)
    for i in range(fh):
        for j in range(fw):
            win = xp[_tap(i, j, out_hw, stride, dilation)]
            if m == 1:
                np.multiply(win, taps[:, 0, i, j], out=tmp)
                out += tmp
            else:
                out += win[..., None] * taps[:, :, i, j]
    out = out.reshape(N, *out_hw, K)
    if b is not None:
        out += b
    return out


def _depthwise_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray, stride: Pair,
                        pad: Pair, dilation: Pair, need_dx: bool
                        ) -> tuple[np.ndarray | None, np.ndarray]:
    N, H, Wd, D = x.shape
    K, fh, fw, _ = W.shape
    m = K // D
    if choose_depthwise_path(m, x.dtype) is DepthwisePath.DIRECT:
        return _depthwise_direct_backward(dout, x, W, stride, pad, dilation, need_dx)
    out_hw = dout.shape[1:3]
    xp = _pad(x, pad)
    taps = W[..., 0].reshape(D, m, fh, fw)
    dO = dout.reshape(N, *out_hw, D, m)
    dW = np.empty((D, m, fh, fw), dtype=dout.dtype)
    dxp = np.zeros(xp.shape, dtype=dout.dtype) if need_dx else None
    for i in range(fh):
        for j in range(fw):
            idx = _tap(i, j, out_hw, stride, dilation)
            win = xp[idx]
            # the weight gradient of a tap: its window times the output gradient, summed over
            # images and positions (einsum: no temporary of the output's size)
            dW[:, :, i, j] = np.einsum("nyxd,nyxdm->dm", win, dO)
            if dxp is not None:
                if m == 1:
                    dxp[idx] += dO[..., 0] * taps[:, 0, i, j]
                else:
                    dxp[idx] += np.einsum("nyxdm,dm->nyxd", dO, taps[:, :, i, j])
    dx = None
    if dxp is not None:
        dx = dxp[:, pad[0]:pad[0] + H, pad[1]:pad[1] + Wd] if pad != (0, 0) else dxp
        dx = np.ascontiguousarray(dx)
    return dx, dW.reshape(K, fh, fw, 1)


def grouped_conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: Pair,
                           pad: Pair, dilation: Pair, groups: int
                           ) -> tuple[np.ndarray, tuple[Any, ...]]:
    """A CONV with ``groups`` groups (see the module docstring). The cache holds ``x``, ``W``
    and the per-group caches of the ordinary kernel."""
    D = x.shape[3]
    K = W.shape[0]
    if groups == D and W.shape[3] == 1:
        out = _depthwise_forward(x, W, b, stride, pad, dilation)
        return out, ("depthwise", x, W, stride, pad, dilation, b is not None)
    Dg, Kg = D // groups, K // groups
    outs, caches = [], []
    for g in range(groups):
        xg = np.ascontiguousarray(x[..., g * Dg:(g + 1) * Dg])
        bg = None if b is None else b[g * Kg:(g + 1) * Kg]
        o, c = F_conv.conv2d_forward(xg, np.ascontiguousarray(W[g * Kg:(g + 1) * Kg]), bg,
                                     stride, pad, dilation)
        outs.append(o)
        caches.append(c)
    return np.concatenate(outs, axis=-1), ("groups", caches, groups, Dg, Kg, b is not None)


def grouped_conv2d_backward(dout: np.ndarray, cache: tuple[Any, ...], *, need_dx: bool = True
                            ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dW, db)`` of :func:`grouped_conv2d_forward`."""
    if cache[0] == "depthwise":
        _, x, W, stride, pad, dilation, has_b = cache
        dx, dW = _depthwise_backward(dout, x, W, stride, pad, dilation, need_dx)
        db = dout.sum(axis=(0, 1, 2)) if has_b else None
        return dx, dW, db
    _, caches, groups, Dg, Kg, has_b = cache
    dxs, dWs, dbs = [], [], []
    for g in range(groups):
        dg = np.ascontiguousarray(dout[..., g * Kg:(g + 1) * Kg])
        dxg, dWg, dbg = F_conv.conv2d_backward(dg, caches[g], need_dx=need_dx)
        dxs.append(dxg)
        dWs.append(dWg)
        dbs.append(dbg)
    dx = np.concatenate(dxs, axis=-1) if need_dx else None
    db = np.concatenate(dbs) if has_b else None
    return dx, np.concatenate(dWs, axis=0), db
