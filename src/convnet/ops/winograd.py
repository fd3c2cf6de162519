"""Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2015): the transforms, on NHWC tiles.

A 3x3, stride-1, undilated convolution computes each 2x2 block of outputs from a 4x4 tile of the
(padded) input. Direct (im2col) computation spends ``2*2*3*3 = 36`` multiplies per channel pair on
it; Winograd spends ``4*4 = 16``, 2.25x fewer::

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A        (.) elementwise, per input/output channel pair

with ``d`` the 4x4 input tile, ``g`` the 3x3 filter and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Summed over the input channels, the elementwise product becomes 16 GEMMs, one per position
``(a, b)`` of the 4x4 transformed tile: ``M[a, b] = V[a, b] @ U[a, b]`` with ``V[a, b]`` of shape
``(tiles, D)`` (the transformed inputs) and ``U[a, b]`` ``(D, K)`` (the transformed filters). The
transforms are only additions (B and A hold 0 and +-1; G's halves are exact in binary), done here
as whole-array slice arithmetic: each is a handful of NumPy calls per 4x4 tile position, never a
loop over pixels or images. The price is precision: the transformed values mix up to 9 inputs with
signs, so float32 results differ from the direct sum by ~1e-6 relative (the direct GEMM's own
rounding is ~1e-7); well inside what training needs and what the tests allow (1e-4).

This module holds only the math of one block of images; :mod:`convnet.ops.conv` decides when to use
it (3x3, stride 1, dilation 1, deep enough layers), pads the input and splits the batch into
cache-sized blocks over its worker threads.

Shape conventions: a block of ``n`` images ``xp (n, 2*th + 2, 2*tw + 2, D)`` (already padded, zeros
outside the input) yields an output grid of ``th x tw`` tiles, ``2*th x 2*tw`` outputs, of which
the caller keeps the first ``Ho x Wo`` (odd sizes crop the last row/column of tiles).
"""

from __future__ import annotations

import numpy as np

#: G of F(2x2, 3x3): the filter transform ``U = G g G^T``.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def tiles(out_hw: tuple[int, int]) -> tuple[int, int]:
    """Number of 2x2 output tiles per axis, ``(ceil(Ho / 2), ceil(Wo / 2))``."""
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


def filter_transform(W: np.ndarray) -> np.ndarray:
    """``U = G g G^T`` for every filter and channel, laid out for the 16 GEMMs.

    Computed in float64 and rounded once (it is tiny: ``16*D*K`` values), so float32 loses
    nothing to it.

    Shape:
        - W: ``(K, 3, 3, D)`` -> U: ``(16, D, K)``, ``U[4a + b] = (G g G^T)[a, b]`` as ``(D, K)``
    """
    K, _, _, D = W.shape
    U = np.einsum("ai,kijd,bj->abdk", _G, W.astype(np.float64, copy=False), _G)
    return np.ascontiguousarray(U.reshape(16, D, K), dtype=W.dtype)


def input_transform(xp: np.ndarray, V: np.ndarray, rows: np.ndarray) -> None:
    """``V = B^T d B`` for every 4x4 input tile ``d`` (tiles overlap by 2: stride-2 slices).

    ``B^T d`` mixes rows ``(d0 - d2, d1 + d2, d2 - d1, d1 - d3)``; ``(.) B`` mixes columns the
    same way. Done as two passes of 4 and 16 slice subtractions/additions, the first into the
    scratch ``rows`` (what it costs: 2x, then 4x the input's size written).

    Shape:
        - xp: ``(n, 2*th + 2, 2*tw + 2, D)``; V (written): ``(16, n, th, tw, D)``;
          rows (scratch): ``(4, n, th, 2*tw + 2, D)``
    """
    th, tw = V.shape[2], V.shape[3]
    _mix(lambda i: xp[:, i : i + 2 * th : 2], rows)
    for a in range(4):
        _mix(lambda j, a=a: rows[a][:, :, j : j + 2 * tw : 2], V[4 * a : 4 * a + 4])


def _mix(part, out: np.ndarray) -> None:
    """The B^T mixing of the four slices ``part(0..3)`` into ``out[0..3]``."""
    p0, p1, p2, p3 = part(0), part(1), part(2), part(3)
    np.subtract(p0, p2, out=out[0])
    np.add(p1, p2, out=out[1])
    np.subtract(p2, p1, out=out[2])
    np.subtract(p1, p3, out=out[3])


def output_transform(M: np.ndarray, out: np.ndarray, half: np.ndarray) -> None:
    """``Y = A^T M A`` for every tile, written into ``out`` (the tiles that fit in it).

    ``A^T M`` keeps rows ``(m0 + m1 + m2, m1 - m2 - m3)``, then ``(.) A`` the same over columns;
    output ``(r, c)`` of each tile lands at ``out[:, r::2, c::2]`` (cropped to ``out``'s size,
    so odd ``Ho``/``Wo`` need no extra buffer).

    Shape:
        - M: ``(16, n, th, tw, K)``; out (written): ``(n, Ho, Wo, K)`` with ``Ho <= 2*th``,
          ``Wo <= 2*tw``; half (scratch): ``(8, n, th, tw, K)``
    """
    Ho, Wo = out.shape[1:3]
    Mt = M.reshape(4, 4, *M.shape[1:])
    H2 = half.reshape(2, 4, *half.shape[1:])
    _reduce(lambda i: Mt[i], H2)
    for r in range(2):
        for c in range(2):
            target = out[:, r:Ho:2, c:Wo:2]
            h, w = target.shape[1:3]
            _reduce_one(lambda j, r=r: H2[r][j][:, :h, :w], c, target)


def _reduce(part, out: np.ndarray) -> None:
    """The A^T reduction of ``part(0..3)`` into ``out[0]`` and ``out[1]``."""
    for r in range(2):
        _reduce_one(part, r, out[r])


def _reduce_one(part, r: int, out: np.ndarray) -> None:
    """Row ``r`` of A^T applied to ``part(0..3)``: ``p0 + p1 + p2`` or ``p1 - p2 - p3``."""
    if r == 0:
        np.add(part(0), part(1), out=out)
        out += part(2)
    else:
        np.subtract(part(1), part(2), out=out)
        out -= part(3)


__all__ = ["filter_transform", "input_transform", "output_transform", "tiles"]
