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
weight gradient is the adjoint of the same computation (see "weight gradient" below).

The tile transforms are only additions (B and A hold 0 and +-1; G's halves are exact in binary).
With Numba each is one compiled pass over the tiles (like the max-pool kernels of
:mod:`convnet.ops._jit`); without it, whole-array slice arithmetic (a handful of NumPy calls per
tile position, never a loop over pixels or images), 2-3x slower. The price of Winograd is
precision: the transformed values mix up to 16 inputs with signs; measured, float32 results
differ from the float64 direct sum by ~2e-7 relative (the im2col GEMM's own error is ~1e-7),
well inside what training needs and what the tests allow (1e-4).

This module holds only the math of one block of images; :mod:`convnet.ops.conv` decides when to use
it (3x3, stride 1, dilation 1, deep enough layers, enough tiles), pads the input and splits the
batch into cache-sized blocks over its worker threads.

Shape conventions: a block of ``n`` images ``xp (n, 2*th + 2, 2*tw + 2, D)`` (already padded, zeros
outside the input) yields an output grid of ``th x tw`` tiles, ``2*th x 2*tw`` outputs, of which
the caller keeps the first ``Ho x Wo`` (odd sizes crop the last row/column of tiles).
"""

from __future__ import annotations

import numpy as np

from convnet.ops._jit import HAVE_NUMBA

#: G of F(2x2, 3x3): the filter transform ``U = G g G^T``.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def tiles(out_hw: tuple[int, int]) -> tuple[int, int]:
    """Number of 2x2 output tiles per axis, ``(ceil(Ho / 2), ceil(Wo / 2))``."""
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


def filter_transform(W: np.ndarray) -> np.ndarray:
    """``U = G g G^T`` for every filter and channel, laid out for the 16 GEMMs.

    Two small GEMMs (G over the rows, then over the columns) on the filters laid out
    ``(3, 3, D, K)``; G's entries are exact in binary, so this rounds like any 3-term sum.

    Shape:
        - W: ``(K, 3, 3, D)`` -> U: ``(16, D, K)``, ``U[4a + b] = (G g G^T)[a, b]`` as ``(D, K)``
    """
    K, _, _, D = W.shape
    G = _G.astype(W.dtype)
    g = np.ascontiguousarray(W.transpose(1, 2, 3, 0)).reshape(3, 3 * D * K)   # rows i
    Gg = (G @ g).reshape(4, 3, D * K)                                          # (a, j, D*K)
    return np.matmul(G, Gg).reshape(16, D, K)                                   # (a, b, D*K)


def input_transform(xp: np.ndarray, V: np.ndarray) -> None:
    """``V = B^T d B`` for every 4x4 input tile ``d`` (tiles overlap by 2: stride-2 slices).

    ``B^T d`` mixes rows ``(d0 - d2, d1 + d2, d2 - d1, d1 - d3)``; ``(.) B`` mixes columns the
    same way. With Numba, one compiled pass (:func:`_input_transform_kernel`); without, two
    passes of 4 and 16 slice subtractions/additions through a temporary twice the input's size
    (2-2.5x slower: 3.4 vs 1.4 ms for 128x14x14x32, 15.5 vs 7.2 ms for 128x32x32x32, one thread).

    Shape:
        - xp: ``(n, 2*th + 2, 2*tw + 2, D)``; V (written): ``(16, n, th, tw, D)``
    """
    if HAVE_NUMBA:
        _input_transform_kernel(xp, V, _BT_ROWS, _BT_SIGNS.astype(V.dtype))
        return
    n, th, tw, D = V.shape[1:]
    rows = np.empty((4, n, th, xp.shape[2], D), dtype=V.dtype)
    _mix([xp[:, i : i + 2 * th : 2] for i in range(4)], rows)
    for a in range(4):
        _mix([rows[a, :, :, j : j + 2 * tw : 2] for j in range(4)], V[4 * a : 4 * a + 4])


def _mix(parts: list[np.ndarray], out: np.ndarray) -> None:
    """The B^T mixing of four slices into ``out[0..3]``."""
    p0, p1, p2, p3 = parts
    np.subtract(p0, p2, out=out[0])
    np.add(p1, p2, out=out[1])
    np.subtract(p2, p1, out=out[2])
    np.subtract(p1, p3, out=out[3])


def output_transform(M: np.ndarray, out: np.ndarray) -> None:
    """``Y = A^T M A`` for every tile, written into ``out`` (the tiles that fit in it).

    ``A^T M`` keeps rows ``(m0 + m1 + m2, m1 - m2 - m3)``, then ``(.) A`` the same over columns;
    output ``(r, c)`` of each tile lands at ``out[:, r::2, c::2]`` (cropped to ``out``'s size,
    so odd ``Ho``/``Wo`` need no extra buffer). With Numba one compiled pass
    (:func:`_output_transform_kernel`, 2.5-3x faster than the slices and their temporary).

    Shape:
        - M: ``(16, n, th, tw, K)``; out (written): ``(n, Ho, Wo, K)`` with ``Ho <= 2*th``,
          ``Wo <= 2*tw``
    """
    if HAVE_NUMBA:
        _output_transform_kernel(M, out)
        return
    Ho, Wo = out.shape[1:3]
    Mt = M.reshape(4, 4, *M.shape[1:])
    H2 = np.empty((2, 4, *M.shape[1:]), dtype=M.dtype)
    for r in range(2):
        _reduce_one(list(Mt), r, H2[r])
    for r in range(2):
        for c in range(2):
            target = out[:, r:Ho:2, c:Wo:2]
            h, w = target.shape[1:3]
            _reduce_one([H2[r, j, :, :h, :w] for j in range(4)], c, target)


def _reduce_one(parts: list[np.ndarray], r: int, out: np.ndarray) -> None:
    """Row ``r`` of A^T applied to four slices: ``p0 + p1 + p2`` or ``p1 - p2 - p3``."""
    p0, p1, p2, p3 = parts
    if r == 0:
        np.add(p0, p1, out=out)
        out += p2
    else:
        np.subtract(p1, p2, out=out)
        out -= p3


# ------------------------------------------------------------------------ weight gradient
# The forward is linear in the filters, so its adjoint gives the weight gradient with the same
# tiles (Lavin & Gray's F(3x3, 2x2) form): for each tile position (a, b),
#     dU[a, b] = dM[a, b]^T @ V[a, b]  (K x D),  dM = A dY A^T (the 2x2 output-gradient tile,
#     spread back to 4x4),  dW = G^T dU G.
# 16 GEMMs (K, tiles) x (tiles, D) with the long tile axis as the reduction, instead of one
# (Fh*Fw*D, N*Ho*Wo) x (N*Ho*Wo, K): 2.25x fewer multiplies again.

#: A of F(2x2, 3x3), ``(A^T)^T``: the output-gradient transform ``dM = A dY A^T``.
_A = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]])


def output_grad_transform(doutp: np.ndarray, dM: np.ndarray) -> None:
    """``dM = A dY A^T`` for every 2x2 tile ``dY`` of the output gradient.

    Shape:
        - doutp: ``(n, 2*th, 2*tw, K)`` (zero-padded to even sizes); dM (written):
          ``(16, n, th, tw, K)``
    """
    if HAVE_NUMBA:
        _output_grad_kernel(doutp, dM, _A.astype(dM.dtype))
        return
    n, th, tw, K = dM.shape[1:]
    rows = np.empty((4, n, th, 2 * tw, K), dtype=dM.dtype)
    _spread([doutp[:, 0::2], doutp[:, 1::2]], rows)
    for a in range(4):
        _spread([rows[a, :, :, 0::2], rows[a, :, :, 1::2]], dM[4 * a : 4 * a + 4])


def _spread(parts: list[np.ndarray], out: np.ndarray) -> None:
    """The rows of A applied to two slices: ``(p0, p0 + p1, p0 - p1, -p1)`` into ``out[0..3]``."""
    p0, p1 = parts
    np.copyto(out[0], p0)
    np.add(p0, p1, out=out[1])
    np.subtract(p0, p1, out=out[2])
    np.negative(p1, out=out[3])


def filter_grad_transform(dU: np.ndarray) -> np.ndarray:
    """``dW = G^T dU G``, the adjoint of :func:`filter_transform`.

    ``dU`` comes filters-first, ``(16, K, D)``: the weight-gradient GEMMs run as
    ``dM[a, b]^T @ V[a, b]`` (see :func:`input_grad_transform`), which OpenBLAS ran at 90-110
    GFLOP/s where ``V[a, b]^T @ dM[a, b]`` (the ``(D, K)`` layout) ran at 65-75 (one thread,
    blocks of 8-16 images of the reference network's 14x14x32 -> 64 layer).

    Shape:
        - dU: ``(16, K, D)`` -> dW: ``(K, 3, 3, D)``
    """
    _, K, D = dU.shape
    Gt = _G.T.astype(dU.dtype)
    t = (Gt @ dU.reshape(4, 4 * K * D)).reshape(3, 4, K * D)                   # (i, b, K*D)
    dW = np.matmul(Gt, t).reshape(3, 3, K, D)                                  # (i, j, K, D)
    return np.ascontiguousarray(dW.transpose(2, 0, 1, 3))


# ------------------------------------------------------------------------- input gradient
# The forward is linear in the input too: with dV[a, b] = dM[a, b] @ U[a, b]^T (the gradient of
# the transformed tiles), each tile's input gradient is B dV B^T, and the tiles, which overlap by
# 2 rows and columns, add up. dM is the weight gradient's own, so one backward pass makes dM
# once and both gradients from it, instead of a second, flipped Winograd convolution of dout
# (which transforms dout again, a 4x larger array than dout, on the wider of the two depths).


def input_grad_transform(dV: np.ndarray, dx: np.ndarray, pad: tuple[int, int]) -> None:
    """``dx`` (written) from the tile gradients ``dV``: ``B dV B^T`` per tile, overlapping tiles
    added, the padding rows/columns ``pad`` dropped (the adjoint of :func:`input_transform` on
    the input padded by ``pad``).

    ``B`` mixes ``(v0, v1, v2, v3)`` into ``(v0, v1 - v2 + v3, v1 + v2 - v0, -v3)`` (the
    columns of B^T). With Numba, one compiled kernel (:func:`_input_grad_kernel`, 2.3x faster
    than adding tile by tile); without, slices through a temporary 4x the size of ``dV``.

    Shape:
        - dV: ``(16, n, th, tw, D)``; dx (written): ``(n, H, W, D)`` with
          ``H + pad[0] <= 2*th + 2`` (and the same for W)
    """
    if HAVE_NUMBA:
        _input_grad_kernel(dV, dx, pad[0], pad[1])
        return
    n, th, tw, D = dV.shape[1:]
    H, W = dx.shape[1:3]
    rows = np.empty((4, 4, n, th, tw, D), dtype=dV.dtype)   # (p, b): B over the rows first
    dVt = dV.reshape(4, 4, n, th, tw, D)
    _unmix(list(dVt), rows)
    buf = np.zeros((n, 2 * th + 2, 2 * tw + 2, D), dtype=dV.dtype)
    z = np.empty((4, n, th, tw, D), dtype=dV.dtype)
    for p in range(4):
        _unmix(list(rows[p]), z)                           # (q): then over the columns
        for q in range(4):
            buf[:, p:p + 2 * th:2, q:q + 2 * tw:2] += z[q]
    np.copyto(dx, buf[:, pad[0]:pad[0] + H, pad[1]:pad[1] + W])


def _unmix(parts: list[np.ndarray], out: np.ndarray) -> None:
    """The adjoint of :func:`_mix` (``B`` instead of ``B^T``) into ``out[0..3]``."""
    v0, v1, v2, v3 = parts
    np.copyto(out[0], v0)
    np.subtract(v1, v2, out=out[1])
    out[1] += v3
    np.add(v1, v2, out=out[2])
    out[2] -= v0
    np.negative(v3, out=out[3])


# ------------------------------------------------------------------- with a 2x2 max pool
# A 2x2 output tile of F(2x2, 3x3) is exactly a window of the 2x2 stride-2 max pool that so
# often follows a 3x3 CONV (tiles and windows both start at row and column 0 and step by 2).
# So the pool can be taken in the output transform, and its gradient routed in the
# output-gradient transform: the convolution's full output and its gradient are never
# written, and the pool has no pass of its own.


def output_transform_maxpool(M: np.ndarray, out: np.ndarray, idx: np.ndarray,
                             relu: bool) -> None:
    """:func:`output_transform`, then the max of each tile's four outputs into ``out`` and the
    row-major offset (0-3) of its FIRST maximum into ``idx`` (0 where the max is NaN), as the
    2x2 max pool of :mod:`convnet.ops.pool` gives them; ``max(., 0)`` too when ``relu``.
    Only the ``Hp x Wp`` tiles of ``out`` (a floor-cropped pool drops the last odd row/column).

    Shape:
        - M: ``(16, n, th, tw, K)``; out, idx (written): ``(n, Hp, Wp, K)``, ``Hp <= th``,
          ``Wp <= tw``
    """
    if HAVE_NUMBA and M.dtype in (np.float32, np.float64):
        _output_maxpool_kernel(M, relu, out, idx)
        return
    n, th, tw, K = M.shape[1:]
    Hp, Wp = out.shape[1:3]
    y = np.empty((n, 2 * th, 2 * tw, K), dtype=M.dtype)
    output_transform(M, y)
    parts = [y[:, r:2 * Hp:2, c:2 * Wp:2] for r in (0, 1) for c in (0, 1)]
    m = parts[0].copy()
    idx[...] = 0
    for q in (1, 2, 3):
        take = (parts[q] > m) | np.isnan(parts[q])
        np.copyto(m, parts[q], where=take)
        idx[take] = q
    nan = np.isnan(m)
    idx[nan] = 0
    if relu:
        m = np.where((m > 0) | nan, m, m.dtype.type(0))
    np.copyto(out, m)


def output_grad_transform_maxpool(g: np.ndarray, idx: np.ndarray, relu_out: np.ndarray | None,
                                  dM: np.ndarray) -> None:
    """:func:`output_grad_transform` of the gradient that the 2x2 max pool (and the RELU after
    it, where ``relu_out``, its output, is given) sends back: each tile's 2x2 gradient is
    ``g`` at the offset ``idx`` and 0 elsewhere, so ``dM[4a + b] = A[a, r] A[b, c] g`` with
    ``(r, c)`` that offset: one coefficient (0 or +-1) per value, the dense gradient never
    made. Tiles outside the pooled ``Hp x Wp`` get 0.

    Shape:
        - g, idx, relu_out: ``(n, Hp, Wp, K)``; dM (written): ``(16, n, th, tw, K)``
    """
    if HAVE_NUMBA and dM.dtype in (np.float32, np.float64):
        mask = g if relu_out is None else relu_out
        _output_grad_maxpool_kernel(g, idx, mask, relu_out is not None, dM,
                                    _A.astype(dM.dtype))
        return
    n, th, tw, K = dM.shape[1:]
    Hp, Wp = g.shape[1:3]
    if relu_out is not None:
        g = np.where(relu_out > 0, g, g.dtype.type(0))
    doutp = np.zeros((n, 2 * th, 2 * tw, K), dtype=dM.dtype)
    for q in range(4):
        r, c = divmod(q, 2)
        doutp[:, r:2 * Hp:2, c:2 * Wp:2] = np.where(idx == q, g, g.dtype.type(0))
    output_grad_transform(doutp, dM)


# ------------------------------------------------------------------------- compiled transforms
# Each row of B^T is ``d[p] + s * d[q]``: (p, q, s) per row. The kernels read the table instead of
# spelling out 16 formulas; the signs are passed in the data's dtype so float32 stays float32.
_BT_TERMS = ((0, 2, -1), (1, 2, 1), (2, 1, -1), (1, 3, -1))
_BT_ROWS = np.array([t[:2] for t in _BT_TERMS], dtype=np.int64)
_BT_SIGNS = np.array([t[2] for t in _BT_TERMS], dtype=np.float64)

if HAVE_NUMBA:
    from numba import njit

    from convnet.ops._jit import first_max4

    @njit(cache=True, nogil=True)
    def _input_transform_kernel(xp, V, rows, signs):  # pragma: no cover - compiled
        """:func:`input_transform` in one pass over the tiles: ``V[4a + b]`` is the sum of the
        four inputs that rows ``a`` and ``b`` of B^T pick, written once (the slice version writes
        a 2x temporary first and walks short runs of ``D`` values). The innermost loop reads four
        contiguous depth vectors and writes one, which LLVM vectorises (a 16-formula version
        with 16 output streams stayed scalar and ran 4x slower)."""
        n, th, tw, D = V.shape[1], V.shape[2], V.shape[3], V.shape[4]
        for b in range(n):
            for ty in range(th):
                for tx in range(tw):
                    h, w = 2 * ty, 2 * tx
                    for i in range(4):
                        p, q, si = rows[i, 0], rows[i, 1], signs[i]
                        for j in range(4):
                            u, v, sj = rows[j, 0], rows[j, 1], signs[j]
                            d_pu, d_pv = xp[b, h + p, w + u], xp[b, h + p, w + v]
                            d_qu, d_qv = xp[b, h + q, w + u], xp[b, h + q, w + v]
                            dst = V[4 * i + j, b, ty, tx]
                            for c in range(D):
                                dst[c] = (d_pu[c] + sj * d_pv[c]) + si * (d_qu[c] + sj * d_qv[c])

    @njit(cache=True, nogil=True, inline="always")
    def _rows_of_AtM(M, b, ty, tx, s):  # pragma: no cover - compiled
        """``s = A^T M`` for tile ``(b, ty, tx)``: rows ``m0 + m1 + m2`` and ``m1 - m2 - m3``
        of each column ``j``, ``(2, 4, K)`` (in L1); shared by the output transforms."""
        for j in range(4):
            m0, m1 = M[j, b, ty, tx], M[4 + j, b, ty, tx]
            m2, m3 = M[8 + j, b, ty, tx], M[12 + j, b, ty, tx]
            s0, s1 = s[0, j], s[1, j]
            for k in range(M.shape[4]):
                s0[k] = m0[k] + m1[k] + m2[k]
                s1[k] = m1[k] - m2[k] - m3[k]

    @njit(cache=True, nogil=True)
    def _output_transform_kernel(M, out):  # pragma: no cover - compiled
        """:func:`output_transform` in one pass over the tiles: ``A^T M`` into a small per-tile
        buffer (``(2, 4, K)``, in L1), then ``(.) A`` straight into the outputs that fit."""
        n, th, tw, K = M.shape[1], M.shape[2], M.shape[3], M.shape[4]
        Ho, Wo = out.shape[1], out.shape[2]
        s = np.empty((2, 4, K), M.dtype)
        for b in range(n):
            for ty in range(th):
                for tx in range(tw):
                    _rows_of_AtM(M, b, ty, tx, s)
                    for r in range(min(2, Ho - 2 * ty)):
                        t0, t1, t2, t3 = s[r, 0], s[r, 1], s[r, 2], s[r, 3]
                        o = out[b, 2 * ty + r, 2 * tx]
                        for k in range(K):
                            o[k] = t0[k] + t1[k] + t2[k]
                        if 2 * tx + 1 < Wo:
                            o = out[b, 2 * ty + r, 2 * tx + 1]
                            for k in range(K):
                                o[k] = t1[k] - t2[k] - t3[k]

    @njit(cache=True, nogil=True)
    def _output_grad_kernel(doutp, dM, A):  # pragma: no cover - compiled
        """:func:`output_grad_transform` in one pass: ``dM[4a + b]`` combines the tile's four
        gradient vectors with rows ``a`` and ``b`` of A (one output stream per inner loop, as
        in :func:`_input_transform_kernel`, so it vectorises)."""
        n, th, tw, K = dM.shape[1], dM.shape[2], dM.shape[3], dM.shape[4]
        for b in range(n):
            for ty in range(th):
                for tx in range(tw):
                    y00, y01 = doutp[b, 2 * ty, 2 * tx], doutp[b, 2 * ty, 2 * tx + 1]
                    y10, y11 = doutp[b, 2 * ty + 1, 2 * tx], doutp[b, 2 * ty + 1, 2 * tx + 1]
                    for i in range(4):
                        r0, r1 = A[i, 0], A[i, 1]
                        for j in range(4):
                            c0, c1 = A[j, 0], A[j, 1]
                            dst = dM[4 * i + j, b, ty, tx]
                            for k in range(K):
                                dst[k] = r0 * (c0 * y00[k] + c1 * y01[k]) + r1 * (
                                    c0 * y10[k] + c1 * y11[k])

    @njit(cache=True, nogil=True)
    def _input_grad_kernel(dV, dx, ph, pw):  # pragma: no cover - compiled
        """:func:`input_grad_transform` in two passes per image, both over contiguous runs:

        1. ``B`` over the rows, a whole row of tiles at a time (runs of ``tw * D`` values):
           ``R[r, j]`` holds padded row ``r``'s part of column index ``j`` of every tile;
           a row shared by two tile rows gets the second one added.
        2. ``(.) B^T`` over the columns, gathered straight into each pixel of ``dx`` that lies
           inside the input: padded column ``2m`` is ``z0`` of tile ``m`` plus ``z2`` of tile
           ``m - 1``, column ``2m + 1`` is ``z1`` of tile ``m`` plus ``z3`` of tile ``m - 1``.

        A version that added each 4x4 tile into a padded buffer ran 2.3x slower (its inner loops
        over ``D`` values, 32 of them per tile, were too short to pay their setup)."""
        n, th, tw, D = dV.shape[1], dV.shape[2], dV.shape[3], dV.shape[4]
        H, W = dx.shape[1], dx.shape[2]
        L = tw * D
        dVr = dV.reshape(16, n, th, L)
        R = np.empty((2 * th + 2, 4, L), dV.dtype)
        for b in range(n):
            for ty in range(th):
                for j in range(4):
                    v0, v1 = dVr[j, b, ty], dVr[4 + j, b, ty]
                    v2, v3 = dVr[8 + j, b, ty], dVr[12 + j, b, ty]
                    r0, r1 = R[2 * ty, j], R[2 * ty + 1, j]
                    r2, r3 = R[2 * ty + 2, j], R[2 * ty + 3, j]
                    if ty == 0:
                        for c in range(L):
                            r0[c] = v0[c]
                        for c in range(L):
                            r1[c] = v1[c] - v2[c] + v3[c]
                    else:
                        for c in range(L):
                            r0[c] += v0[c]
                        for c in range(L):
                            r1[c] += v1[c] - v2[c] + v3[c]
                    for c in range(L):
                        r2[c] = v1[c] + v2[c] - v0[c]
                    for c in range(L):
                        r3[c] = -v3[c]
            for r in range(H):
                Rr = R[r + ph]
                for w in range(W):
                    m = (w + pw) // 2
                    cur, prev = m * D, (m - 1) * D          # tile m and tile m - 1
                    dst = dx[b, r, w]
                    if (w + pw) % 2 == 0:                   # z0[m] + z2[m - 1]
                        if m == 0:
                            for c in range(D):
                                dst[c] = Rr[0, c]
                        elif m == tw:
                            for c in range(D):
                                dst[c] = Rr[1, prev + c] + Rr[2, prev + c] - Rr[0, prev + c]
                        else:
                            for c in range(D):
                                dst[c] = Rr[0, cur + c] + (
                                    Rr[1, prev + c] + Rr[2, prev + c] - Rr[0, prev + c])
                    elif m == 0:                            # z1[m] + z3[m - 1]
                        for c in range(D):
                            dst[c] = Rr[1, c] - Rr[2, c] + Rr[3, c]
                    elif m == tw:
                        for c in range(D):
                            dst[c] = -Rr[3, prev + c]
                    else:
                        for c in range(D):
                            dst[c] = (Rr[1, cur + c] - Rr[2, cur + c] + Rr[3, cur + c]) - Rr[
                                3, prev + c]

    @njit(cache=True, nogil=True)
    def _output_maxpool_kernel(M, relu, out, idx):  # pragma: no cover - compiled
        """:func:`output_transform_maxpool`: per tile, ``A^T M`` into a small buffer as in
        :func:`_output_transform_kernel`, then the four outputs of each channel compared in
        registers (:func:`convnet.ops._jit.first_max4`, the 2x2 pool kernel's own rule) and
        only the max and its offset stored."""
        n, K = M.shape[1], M.shape[4]
        Hp, Wp = out.shape[1], out.shape[2]
        s = np.empty((2, 4, K), M.dtype)
        zero = M.dtype.type(0)
        for b in range(n):
            for ty in range(Hp):
                for tx in range(Wp):
                    _rows_of_AtM(M, b, ty, tx, s)
                    t0, t1, t2, t3 = s[0, 0], s[0, 1], s[0, 2], s[0, 3]
                    u0, u1, u2, u3 = s[1, 0], s[1, 1], s[1, 2], s[1, 3]
                    o, ix = out[b, ty, tx], idx[b, ty, tx]
                    for k in range(K):
                        o[k], ix[k] = first_max4(
                            t0[k] + t1[k] + t2[k], t1[k] - t2[k] - t3[k],
                            u0[k] + u1[k] + u2[k], u1[k] - u2[k] - u3[k], relu, zero)

    @njit(cache=True, nogil=True)
    def _output_grad_maxpool_kernel(g, idx, mask, use_relu, dM, A):  # pragma: no cover
        """:func:`output_grad_transform_maxpool`: for each of the 16 tile positions, one pass
        over the channels picking the coefficient ``A[a, r] A[b, c]`` of the offset ``idx``
        (a select among four scalars, which vectorises; building the four masked 2x2 values
        first and mixing them, as :func:`_output_grad_kernel` does, ran 2.7x slower)."""
        n, th, tw, K = dM.shape[1], dM.shape[2], dM.shape[3], dM.shape[4]
        Hp, Wp = g.shape[1], g.shape[2]
        zero = dM.dtype.type(0)
        for b in range(n):
            for ty in range(th):
                for tx in range(tw):
                    if ty >= Hp or tx >= Wp:          # outputs the floor-cropped pool dropped
                        for a in range(16):
                            dM[a, b, ty, tx, :] = zero
                        continue
                    gv, ix, r = g[b, ty, tx], idx[b, ty, tx], mask[b, ty, tx]
                    for i in range(4):
                        r0, r1 = A[i, 0], A[i, 1]
                        for j in range(4):
                            c0, c1 = A[j, 0], A[j, 1]
                            w0, w1, w2, w3 = r0 * c0, r0 * c1, r1 * c0, r1 * c1
                            dst = dM[4 * i + j, b, ty, tx]
                            for k in range(K):
                                q = ix[k]
                                w = w0 if q == 0 else (w1 if q == 1 else (w2 if q == 2 else w3))
                                dst[k] = w * gv[k] if (not use_relu) | (r[k] > zero) else zero


__all__ = ["filter_grad_transform", "filter_transform", "input_grad_transform", "input_transform",
           "output_grad_transform", "output_grad_transform_maxpool", "output_transform",
           "output_transform_maxpool", "tiles"]
