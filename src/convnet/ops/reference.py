"""The plain reference: CONV, transposed CONV and POOL as a textbook writes them (CS231n style).

One Python loop over the kernel offsets ``(i, j)``, never over pixels, images or channels: for a
fixed offset, every output position reads one strided slice of the padded input, so each offset
is one vectorised step (a GEMM over the channels for a CONV, a compare for a max POOL). No
blocks, threads, buffers, JIT or paths: this is the oracle the tests hold every path of
:mod:`convnet.ops.conv` and :mod:`convnet.ops.pool` to, without PyTorch
(``tests/test_ops_paths.py``; the reference itself is checked by central differences and
against PyTorch). It keeps the dtype it is given; tests run it in float64.

Same shapes and rules as the fast ops: NHWC, ``W (K, Fh, Fw, D)`` for a CONV and
``(D, Fh, Fw, K)`` for a transposed CONV, floor mode, max-pool padding counts as -inf and ties go
to the FIRST maximum in row-major window order (a NaN wins, then points at offset 0), average
pooling counts the padded zeros.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

Pair = tuple[int, int]
_ONE = (1, 1)


def _grid(hw: Pair, F: Pair, S: Pair, P: Pair, d: Pair) -> Pair:
    return tuple((n + 2 * p - dd * (f - 1) - 1) // s + 1
                 for n, f, s, p, dd in zip(hw, F, S, P, d, strict=True))


def _reach(out_hw: Pair, F: Pair, S: Pair, d: Pair) -> Pair:
    """Rows/cols of the padded input that the windows of the grid ``out_hw`` read."""
    return tuple((o - 1) * s + dd * (f - 1) + 1
                 for o, f, s, dd in zip(out_hw, F, S, d, strict=True))


def _pad(x: np.ndarray, P: Pair, hw: Pair, value: float = 0.0) -> np.ndarray:
    """``x`` padded by ``P`` and on to at least ``hw`` rows/cols (bottom/right)."""
    extra = [max(P[k], hw[k] - x.shape[1 + k] - P[k]) for k in (0, 1)]
    return np.pad(x, ((0, 0), (P[0], extra[0]), (P[1], extra[1]), (0, 0)), constant_values=value)


def _taps(F: Pair, S: Pair, d: Pair, out_hw: Pair) -> Iterator[tuple[int, int, tuple]]:
    """``(i, j, index)``: the padded-input pixels kernel offset ``(i, j)`` reads, one per output."""
    for i in range(F[0]):
        for j in range(F[1]):
            yield i, j, (slice(None), slice(i * d[0], i * d[0] + (out_hw[0] - 1) * S[0] + 1, S[0]),
                         slice(j * d[1], j * d[1] + (out_hw[1] - 1) * S[1] + 1, S[1]))


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None, S: Pair = _ONE,
           P: Pair = (0, 0), d: Pair = _ONE) -> np.ndarray:
    """``out[n, o, k] = b[k] + sum over (i, j, c) of xpad[n, o*S + (i, j)*d, c] W[k, i, j, c]``."""
    out_hw = _grid(x.shape[1:3], W.shape[1:3], S, P, d)
    xp = _pad(x, P, x.shape[1:3])
    out = np.zeros((x.shape[0], *out_hw, W.shape[0]), x.dtype)
    for i, j, win in _taps(W.shape[1:3], S, d, out_hw):
        out += xp[win] @ W[:, i, j, :].T
    return out if b is None else out + b


def conv2d_input_grad(dout: np.ndarray, W: np.ndarray, input_hw: Pair, S: Pair = _ONE,
                      P: Pair = (0, 0), d: Pair = _ONE) -> np.ndarray:
    """``dx`` of :func:`conv2d` on ``dout``'s grid: each offset adds ``dout @ W[:, i, j]`` back
    where it read (``input_hw`` any size the grid fits in; pixels no window reads get 0)."""
    F, out_hw = W.shape[1:3], dout.shape[1:3]
    dxp = _pad(np.zeros((dout.shape[0], *input_hw, W.shape[3]), dout.dtype), P,
               _reach(out_hw, F, S, d))
    for i, j, win in _taps(F, S, d, out_hw):
        dxp[win] += dout @ W[:, i, j, :]
    return dxp[:, P[0]:P[0] + input_hw[0], P[1]:P[1] + input_hw[1]]


def conv2d_weight_grad(x: np.ndarray, dout: np.ndarray, F: Pair, S: Pair = _ONE,
                       P: Pair = (0, 0), d: Pair = _ONE) -> np.ndarray:
    """``dW (K, Fh, Fw, D)`` of :func:`conv2d` on ``dout``'s grid: per offset, the input slice it
    read times ``dout``, summed over images and positions."""
    out_hw = dout.shape[1:3]
    xp = _pad(x, P, _reach(out_hw, F, S, d))
    dW = np.zeros((dout.shape[3], *F, x.shape[3]), x.dtype)
    for i, j, win in _taps(F, S, d, out_hw):
        dW[:, i, j, :] = np.tensordot(dout, xp[win], axes=([0, 1, 2], [0, 1, 2]))
    return dW


def conv_transpose2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None, S: Pair = _ONE,
                     P: Pair = (0, 0), d: Pair = _ONE, a: Pair = (0, 0)) -> np.ndarray:
    """The transposed CONV: the input gradient of the CONV with filters ``W (D, Fh, Fw, K)``
    (the duality), on ``S(H - 1) + Fe - 2P + a`` rows (and likewise cols)."""
    hw = tuple(s * (n - 1) + dd * (f - 1) + 1 - 2 * p + aa for n, s, dd, f, p, aa
               in zip(x.shape[1:3], S, d, W.shape[1:3], P, a, strict=True))
    out = conv2d_input_grad(x, W, hw, S, P, d)
    return out if b is None else out + b


def conv_transpose2d_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray, S: Pair = _ONE,
                              P: Pair = (0, 0), d: Pair = _ONE) -> tuple[np.ndarray, ...]:
    """``(dx, dW, db)`` of :func:`conv_transpose2d`: ``dx`` is the CONV of ``dout`` (cropped to
    ``x``'s grid), ``dW`` the CONV's weight gradient with input and output swapped."""
    dx = conv2d(dout, W, None, S, P, d)[:, :x.shape[1], :x.shape[2]]
    return dx, conv2d_weight_grad(dout, x, W.shape[1:3], S, P, d), dout.sum(axis=(0, 1, 2))


def maxpool2d(x: np.ndarray, F: Pair, S: Pair, P: Pair = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """``(out, idx)``: the window maxima and the row-major offset of each window's first one."""
    out_hw = _grid(x.shape[1:3], F, S, P, _ONE)
    xp = _pad(x, P, x.shape[1:3], -np.inf)
    out = np.full((x.shape[0], *out_hw, x.shape[3]), -np.inf, x.dtype)
    idx = np.zeros(out.shape, np.int64)
    for i, j, win in _taps(F, S, _ONE, out_hw):
        v = xp[win]
        take = (v > out) | np.isnan(v)            # strict: an equal value later does not win
        out, idx = np.where(take, v, out), np.where(take, i * F[1] + j, idx)
    return out, np.where(np.isnan(out), 0, idx)


def maxpool2d_backward(dout: np.ndarray, idx: np.ndarray, x_shape: tuple[int, ...], F: Pair,
                       S: Pair, P: Pair = (0, 0)) -> np.ndarray:
    """Each window's gradient to its first maximum (``idx`` of :func:`maxpool2d`)."""
    dxp = _pad(np.zeros(x_shape, dout.dtype), P, x_shape[1:3])
    for i, j, win in _taps(F, S, _ONE, dout.shape[1:3]):
        dxp[win] += np.where(idx == i * F[1] + j, dout, 0)
    return dxp[:, P[0]:P[0] + x_shape[1], P[1]:P[1] + x_shape[2]]


def avgpool2d(x: np.ndarray, F: Pair, S: Pair, P: Pair = (0, 0)) -> np.ndarray:
    """The window means, padded zeros counted (PyTorch's default)."""
    out_hw = _grid(x.shape[1:3], F, S, P, _ONE)
    xp = _pad(x, P, x.shape[1:3])
    return sum(xp[win] for _, _, win in _taps(F, S, _ONE, out_hw)) / (F[0] * F[1])


def avgpool2d_backward(dout: np.ndarray, x_shape: tuple[int, ...], F: Pair, S: Pair,
                       P: Pair = (0, 0)) -> np.ndarray:
    """``dout / (Fh*Fw)`` to every pixel of each window."""
    dxp = _pad(np.zeros(x_shape, dout.dtype), P, x_shape[1:3])
    for _, _, win in _taps(F, S, _ONE, dout.shape[1:3]):
        dxp[win] += dout / (F[0] * F[1])
    return dxp[:, P[0]:P[0] + x_shape[1], P[1]:P[1] + x_shape[2]]
