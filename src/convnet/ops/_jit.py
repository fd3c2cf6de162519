"""Compiled kernels (Numba) for the loops NumPy cannot express in one pass, with a fallback flag.

The kernels, and where they are used (each caller keeps a NumPy path of its own, and each pair
has a test that the two agree):

- **Max pooling** (:mod:`convnet.ops.pool`): :func:`maxpool_forward_kernel` (the max and its
  first argmax together) and :func:`maxpool_backward_kernel` (each gradient to its argmax, the
  RELU after the pool masked in the same pass) are one pass each over the data, where NumPy
  needs ``Fh*Fw`` passes per step with temporaries (for 2x2: 4 max passes + 4x4 passes building
  the index, then 4 mask-multiply-store passes backward). Measured on the reference network's
  first pool (128x28x28x32, one thread, CPU time): forward 9.4 -> 3.1 ms, backward 6.4 -> 1.8
  ms. :func:`maxpool2x2_kernel` and :func:`maxpool2x2_argmax_kernel` do the usual 2x2 stride-2
  pool (and the RELU after it) in one expression per output; :func:`first_max4` is their
  comparison rule, inlined, and shared with the pool on Winograd's tiles
  (:mod:`convnet.ops.winograd`).
- **The 3x3 CONV of a one-channel input** (:mod:`convnet.ops.conv_fast`,
  ``ConvPath.DIRECT_DEPTH1``): :func:`conv3x3_depth1_kernel` (forward),
  :func:`conv3x3_depth1_wgrad_kernel` (weight and bias gradients) and
  :func:`conv3x3_depth1_pool_wgrad_kernel` (the same straight from the gradient of the 2x2 max
  pool after it).
- **The RELU's backward** (:mod:`convnet.ops.activations`): :func:`relu_backward_kernel`, a
  select in one pass.
- **The SGD update** (:class:`convnet.optim.SGD`, through :func:`convnet.backend.sgd_step`):
  :func:`sgd_kernel`, the NumPy passes of one parameter's step in one pass, bitwise the same.
- **The spin-wait of the block threads** (:func:`spin_until`, see :mod:`convnet.ops._threads`).

The kernels are serial (``parallel=False``): Numba's parallel threading layers are not all safe
to call from several Python threads at once, and a library must not impose one; the batch loop
is the outer loop so a parallel version is a ``prange`` away if that ever pays (the worker
threads of :mod:`convnet.ops._threads` split the batch between calls instead).

``cache=True`` writes the compiled code next to this file (or under ``NUMBA_CACHE_DIR``), so only
the first call on a machine pays the ~1 s compile per dtype. If Numba is missing (it is a
declared dependency, but a minimal install may lack it) or ``CONVNET_NO_JIT=1`` is set,
:data:`HAVE_NUMBA` is False, every kernel name here is None, and the callers keep their NumPy
kernels (:func:`convnet.backend.has_jit` says which).
"""

from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised by whichever environment runs the tests
    if os.environ.get("CONVNET_NO_JIT"):
        raise ImportError("disabled by CONVNET_NO_JIT")
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "bn_center_kernel", "bn_dx_kernel", "bn_grad_sums_kernel",
           "bn_normalise_kernel", "bn_sums_kernel", "conv3x3_depth1_kernel",
           "conv3x3_depth1_pool_wgrad_kernel",
           "conv3x3_depth1_wgrad_kernel", "conv_small_dx_kernel", "conv_small_kernel",
           "depthwise_backward_kernel", "depthwise_kernel", "relu6_backward_kernel",
           "relu6_forward_kernel", "relu_backward_inplace_kernel",
           "conv_small_wgrad_kernel", "maxpool2x2_argmax_kernel", "maxpool2x2_kernel",
           "maxpool_backward_kernel", "maxpool_forward_kernel", "relu_backward_kernel",
           "sgd_kernel", "spin_until"]


if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def maxpool_forward_kernel(x, Fh, Fw, Sh, Sw, Ph, Pw, offsets, out, idx):  # pragma: no cover
        """``out[n, oh, ow, d]`` = max of the window, ``idx`` = row-major offset of its FIRST max.

        ``offsets`` is ``arange(Fh*Fw)`` in ``x``'s dtype: the running argmax is kept in the
        values' own type in a small per-pixel buffer so the update is branch-free selects over
        the contiguous depth axis (SIMD); an integer index in the output array directly ran
        4x slower. Padding counts as -inf (skipped: it is never a strict maximum). NaN
        propagates like ``np.maximum`` and then points at offset 0, as the NumPy kernel does.
        """
        N, H, W, D = x.shape
        Ho, Wo = out.shape[1], out.shape[2]
        best = np.empty(D, x.dtype)
        arg = np.empty(D, x.dtype)
        for n in range(N):
            for oh in range(Ho):
                for ow in range(Wo):
                    for d in range(D):
                        best[d] = -np.inf
                        arg[d] = 0
                    for i in range(Fh):
                        h = oh * Sh - Ph + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(Fw):
                            w = ow * Sw - Pw + j
                            if w < 0 or w >= W:
                                continue
                            k = offsets[i * Fw + j]
                            for d in range(D):
                                v = x[n, h, w, d]
                                # strict '>' keeps the first maximum; 'v != v' lets a NaN in,
                                # and nothing is '>' NaN afterwards, so it stays
                                take = (v > best[d]) | (v != v)
                                best[d] = v if take else best[d]
                                arg[d] = k if take else arg[d]
                    for d in range(D):
                        out[n, oh, ow, d] = best[d]
                        idx[n, oh, ow, d] = 0 if best[d] != best[d] else int(arg[d])

    @njit(cache=True, nogil=True, inline="always")
    def first_max4(v0, v1, v2, v3, relu, zero):  # pragma: no cover - compiled
        """``(max, offset)`` of four values in row-major window order: the FIRST maximum wins
        ties, a NaN wins (offset 0 where the max is NaN, as the general kernels give it); the
        max becomes ``max(max, 0)`` when ``relu`` (NaN kept): ``(v > m) | (v != v)`` lets a
        NaN in, and nothing is ``>`` NaN afterwards. Shared by the 2x2 pool kernels and the
        Winograd tile pool (``convnet.ops.winograd``), inlined into their loops.

        Numba's on-disk cache does not see edits across files: after changing this, delete
        ``src/convnet/ops/__pycache__/*.nbi`` and ``*.nbc``, or the cached Winograd kernel keeps
        the old rule (``test_pool_on_winograd_tiles_breaks_ties_like_the_pool``, which compares
        the two kernels on ties, would then fail)."""
        m, i = v0, 0
        t = (v1 > m) | (v1 != v1)
        m, i = (v1, 1) if t else (m, i)
        t = (v2 > m) | (v2 != v2)
        m, i = (v2, 2) if t else (m, i)
        t = (v3 > m) | (v3 != v3)
        m, i = (v3, 3) if t else (m, i)
        nan = m != m
        return (m if (not relu) | (m > zero) | nan else zero), (0 if nan else i)

    @njit(cache=True, nogil=True)
    def maxpool2x2_kernel(x, relu, out):  # pragma: no cover - compiled
        """The 2x2, stride-2, unpadded max pool (the usual POOL) without an argmax (evaluation),
        and the RELU after it when ``relu``: each output vector is one expression of the four
        input vectors of its window, written once. The general kernels above keep a running
        maximum in a buffer and revisit it per window element; this one ran 3-5x faster than
        them and than NumPy's four strided passes (32x28x28x32: 0.36 -> 0.13 ms on 2 threads).
        NaN propagates like ``np.maximum`` (:func:`first_max4`)."""
        N, Ho, Wo, D = out.shape
        zero = x.dtype.type(0)
        for n in range(N):
            for oh in range(Ho):
                for ow in range(Wo):
                    a, b = x[n, 2 * oh, 2 * ow], x[n, 2 * oh, 2 * ow + 1]
                    c, d = x[n, 2 * oh + 1, 2 * ow], x[n, 2 * oh + 1, 2 * ow + 1]
                    o = out[n, oh, ow]
                    for k in range(D):             # the offset first_max4 finds goes unused
                        o[k] = first_max4(a[k], b[k], c[k], d[k], relu, zero)[0]

    @njit(cache=True, nogil=True)
    def maxpool2x2_argmax_kernel(x, relu, out, idx):  # pragma: no cover - compiled
        """:func:`maxpool2x2_kernel` with the argmax (training): ``idx`` gets the row-major
        offset (0-3) of the window's FIRST maximum, 0 where the maximum is NaN, exactly as
        :func:`maxpool_forward_kernel` gives it (32x28x28x32 on one thread: 0.67 -> 0.10
        ms). ``out`` is ``max(pool, 0)`` when ``relu`` (the index stays the pool's)."""
        N, Ho, Wo, D = out.shape
        zero = x.dtype.type(0)
        for n in range(N):
            for oh in range(Ho):
                for ow in range(Wo):
                    a, b = x[n, 2 * oh, 2 * ow], x[n, 2 * oh, 2 * ow + 1]
                    c, d = x[n, 2 * oh + 1, 2 * ow], x[n, 2 * oh + 1, 2 * ow + 1]
                    o, ix = out[n, oh, ow], idx[n, oh, ow]
                    for k in range(D):
                        o[k], ix[k] = first_max4(a[k], b[k], c[k], d[k], relu, zero)

    @njit(cache=True, nogil=True)
    def maxpool_backward_kernel(dout, idx, relu_out, use_relu, Fh, Fw, Sh, Sw, Ph, Pw, disjoint,
                                dx):  # pragma: no cover - compiled
        """Route each ``dout`` to its window's argmax in ``dx``, in one pass over ``dout``.

        ``use_relu``: only where ``relu_out > 0`` (the gradient of the RELU applied after the
        pool, taken in the same pass; ``relu_out`` is any array of ``dout``'s shape otherwise).
        ``disjoint`` (windows cannot overlap, S >= F): every pixel of every window is WRITTEN
        once, the gradient or 0, so ``dx`` needs no zeroing unless some pixels lie in no window
        (the caller zeroes it then). Otherwise ``dx`` must be zeroed and gradients are added.
        """
        N, Ho, Wo, D = dout.shape
        H, W = dx.shape[1], dx.shape[2]
        zero = dout.dtype.type(0)
        for n in range(N):
            for oh in range(Ho):
                for ow in range(Wo):
                    g, ix, r = dout[n, oh, ow], idx[n, oh, ow], relu_out[n, oh, ow]
                    for i in range(Fh):
                        h = oh * Sh - Ph + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(Fw):
                            w = ow * Sw - Pw + j
                            if w < 0 or w >= W:
                                continue
                            k = i * Fw + j
                            dst = dx[n, h, w]
                            if disjoint:
                                for d in range(D):
                                    dst[d] = g[d] if (ix[d] == k) & ((not use_relu) | (r[d] > 0))\
                                        else zero
                            else:
                                for d in range(D):
                                    if (ix[d] == k) & ((not use_relu) | (r[d] > 0)):
                                        dst[d] += g[d]

    @njit(cache=True, nogil=True)
    def conv3x3_depth1_kernel(xp, Sh, Sw, dh, dw, Wt, b, out):  # pragma: no cover - compiled
        """A 3x3 convolution of a one-channel image (the first layer of a grayscale network):
        ``out[n, oh, ow, :] = b + sum over the 9 taps of x_tap * Wt[tap, :]``, one expression
        per output vector over its 9 input values, written once.

        im2col + GEMM does this as a GEMM with an inner size of 9 (10 with the bias), which
        OpenBLAS runs at ~30-40 GFLOP/s after copying the image 9 times; here the 9 weight rows
        stay in L1 and each output vector is stored once. Measured (one thread): 28x28x1 -> 32
        at batch 1 0.07 -> 0.02-0.04 ms, at batch 128 2.2-2.4 -> 1.6-2.0 ms.

        ``xp``: the padded images ``(N, Hp, Wp)``; ``Wt``: ``(9, K)``, tap ``3i + j``;
        ``b``: ``(K,)``; stride ``(Sh, Sw)``, dilation ``(dh, dw)``.
        """
        N, Ho, Wo, K = out.shape
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = (Wt[0], Wt[1], Wt[2], Wt[3], Wt[4], Wt[5], Wt[6],
                                              Wt[7], Wt[8])
        for n in range(N):
            for oh in range(Ho):
                h = oh * Sh
                r0, r1, r2 = xp[n, h], xp[n, h + dh], xp[n, h + 2 * dh]
                for ow in range(Wo):
                    c = ow * Sw
                    x0, x1, x2 = r0[c], r0[c + dw], r0[c + 2 * dw]
                    x3, x4, x5 = r1[c], r1[c + dw], r1[c + 2 * dw]
                    x6, x7, x8 = r2[c], r2[c + dw], r2[c + 2 * dw]
                    o = out[n, oh, ow]
                    for k in range(K):
                        o[k] = (b[k] + x0 * w0[k] + x1 * w1[k] + x2 * w2[k] + x3 * w3[k]
                                + x4 * w4[k] + x5 * w5[k] + x6 * w6[k] + x7 * w7[k]
                                + x8 * w8[k])

    @njit(cache=True, nogil=True)
    def conv3x3_depth1_pool_wgrad_kernel(xp, g, idx, mask, use_relu, acc):  # pragma: no cover
        """:func:`conv3x3_depth1_wgrad_kernel` (stride 1, no dilation) of the convolution whose
        output went through a 2x2 stride-2 max pool (and the RELU after it: ``use_relu``, its
        output ``mask``), straight from the POOL's gradient ``g`` and first-argmax ``idx``:
        each pooled gradient reaches the one output its window's argmax ``q`` names, so tap
        ``t`` of channel ``k`` adds ``x[q + t] * g`` where ``x[q + t]`` is one of four inputs
        picked per channel (a select among four scalars, one tap per loop so it vectorises).
        The pool's backward pass and the dense output gradient it writes (4x ``g``, mostly
        zeros) are never made: the reference network's first layer at batch 64, one thread,
        1.65 ms (median) against 2.30 for the pool's backward then the dense kernel.

        ``xp``: padded images ``(N, Hp, Wp)``; ``g``, ``idx``, ``mask``: ``(N, Hq, Wq, K)``
        (the pooled grid); ``acc``: ``(10, K)`` float64, taps then the bias."""
        N, Hq, Wq, K = g.shape
        row = np.zeros((10, K), g.dtype)
        v = np.empty(K, g.dtype)
        zero = g.dtype.type(0)
        for n in range(N):
            for oh in range(Hq):
                row[:] = 0
                for ow in range(Wq):
                    c = 2 * ow
                    gv, ix, ro = g[n, oh, ow], idx[n, oh, ow], mask[n, oh, ow]
                    for k in range(K):
                        v[k] = gv[k] if (not use_relu) | (ro[k] > zero) else zero
                    bias = row[9]
                    for k in range(K):
                        bias[k] += v[k]
                    for t in range(9):
                        ra, rb = xp[n, 2 * oh + t // 3], xp[n, 2 * oh + t // 3 + 1]
                        j = c + t % 3
                        x0, x1, x2, x3 = ra[j], ra[j + 1], rb[j], rb[j + 1]
                        a = row[t]
                        for k in range(K):
                            q = ix[k]
                            a[k] += (x0 if q == 0 else (x1 if q == 1 else (x2 if q == 2 else x3))
                                     ) * v[k]
                for t in range(10):
                    for k in range(K):
                        acc[t, k] += row[t, k]

    @njit(cache=True, nogil=True)
    def conv3x3_depth1_wgrad_kernel(xp, Sh, Sw, dh, dw, g, acc):  # pragma: no cover - compiled
        """The weight and bias gradients of :func:`conv3x3_depth1_kernel`: ``acc[tap, :] +=
        sum over pixels of x_tap * g`` for the 9 taps and ``acc[9, :] += sum of g`` (the bias).

        Each output-gradient vector is read once and multiplied by the pixel's 9 input values
        into 10 accumulator rows (in L1), summed per image row in the data's type and then into
        ``acc`` (float64): more exact than the GEMM (10 x pixels) x (pixels x K) it replaces,
        which OpenBLAS ran at ~30 GFLOP/s and no faster on two threads than on one (28x28x1 ->
        32 at batch 32: 0.58 ms on one thread, 0.86 ms on two; this kernel 0.42 on one).

        ``xp``: padded images ``(N, Hp, Wp)``; ``g``: ``(N, Ho, Wo, K)``; ``acc``: ``(10, K)``.
        """
        N, Ho, Wo, K = g.shape
        row = np.zeros((10, K), g.dtype)
        a0, a1, a2, a3, a4 = row[0], row[1], row[2], row[3], row[4]
        a5, a6, a7, a8, a9 = row[5], row[6], row[7], row[8], row[9]
        for n in range(N):
            for oh in range(Ho):
                h = oh * Sh
                r0, r1, r2 = xp[n, h], xp[n, h + dh], xp[n, h + 2 * dh]
                row[:] = 0
                for ow in range(Wo):
                    c = ow * Sw
                    x0, x1, x2 = r0[c], r0[c + dw], r0[c + 2 * dw]
                    x3, x4, x5 = r1[c], r1[c + dw], r1[c + 2 * dw]
                    x6, x7, x8 = r2[c], r2[c + dw], r2[c + 2 * dw]
                    gv = g[n, oh, ow]
                    for k in range(K):
                        v = gv[k]
                        a0[k] += x0 * v
                        a1[k] += x1 * v
                        a2[k] += x2 * v
                        a3[k] += x3 * v
                        a4[k] += x4 * v
                        a5[k] += x5 * v
                        a6[k] += x6 * v
                        a7[k] += x7 * v
                        a8[k] += x8 * v
                        a9[k] += v
                for t in range(10):
                    for k in range(K):
                        acc[t, k] += row[t, k]

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def conv_small_kernel(xpT, dh, dw, W, b, out):  # pragma: no cover - compiled
        """A stride-1 convolution of a thin input (a few channels, e.g. seed004's 5x5 layers
        over 1 and 3 channels) by few filters, directly, on the "wide" grid: with the padded
        image planes flattened (row length ``Wp``), output pixel ``(oh, ow)`` of tap ``(i, j)``
        reads flat position ``oh*Wp + ow + i*dh*Wp + j*dw``, so every tap of every channel adds
        ``w * (one contiguous run of L = (Ho-1)*Wp + Wo input values)`` to one accumulator of
        ``L`` values (the columns ``ow >= Wo`` of each row are computed and dropped). The inner
        loop is that run: hundreds of values, which LLVM vectorises, where a run along one output
        row (``Wo`` = 10-28) would stay in the scalar remainder of an unrolled vector loop, and
        im2col's GEMM would have sizes of 1-8 (depth) and 3-8 (filters) after copying the input
        ``Fh*Fw`` times. Measured (one thread, batch 128): 32x32x1 -> 3 (5x5) 12 GMAC/s, 0.61
        ms, where im2col + GEMM took 3.2 ms on two threads.

        ``xpT``: the padded input, planar ``(N, D, Hp, Wp)``, C-contiguous; ``W``: ``(K, Fh, Fw,
        D)``; ``b``: ``(K,)``; ``out``: ``(N, Ho, Wo, K)``; dilation ``(dh, dw)``.
        """
        N, Ho, Wo, K = out.shape
        _, Fh, Fw, D = W.shape
        Wp = xpT.shape[3]
        L = (Ho - 1) * Wp + Wo
        acc = np.empty(L, out.dtype)
        for n in range(N):
            for k in range(K):
                bk = b[k]
                for p in range(L):
                    acc[p] = bk
                for d in range(D):
                    xd = xpT[n, d].ravel()
                    for i in range(Fh):
                        for j in range(Fw):
                            off = i * dh * Wp + j * dw
                            w = W[k, i, j, d]
                            src = xd[off:off + L]
                            for p in range(L):
                                acc[p] += src[p] * w
                for oh in range(Ho):
                    o = out[n, oh]
                    base = oh * Wp
                    for ow in range(Wo):
                        o[ow, k] = acc[base + ow]

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def conv_small_wgrad_kernel(xpT, Fh, Fw, dh, dw, gW, L, acc):  # pragma: no cover
        """The weight and bias gradients of :func:`conv_small_kernel`, on the same wide grid:
        ``acc[k, (i*Fw + j)*D + d] += dot(g_k, x_d shifted by the tap)`` and ``acc[k, Fh*Fw*D]
        += sum(g_k)`` (the bias), each a dot product of ``L`` contiguous values (vectorised:
        the sums are reassociated, ``fastmath`` reassoc). ``gW``: the output gradient planar on
        the wide grid ``(N, K, >= L)``, zeros in the columns ``ow >= Wo``; ``acc``: float64
        ``(K, Fh*Fw*D + 1)``; each image's sums are made in the data's type, then added to it.
        """
        N, K = gW.shape[0], gW.shape[1]
        D = xpT.shape[1]
        Wp = xpT.shape[3]
        T = Fh * Fw * D
        zero = gW.dtype.type(0)
        for n in range(N):
            for k in range(K):
                g = gW[n, k]
                s = zero
                for p in range(L):
                    s += g[p]
                acc[k, T] += s
                for d in range(D):
                    xd = xpT[n, d].ravel()
                    for i in range(Fh):
                        for j in range(Fw):
                            off = i * dh * Wp + j * dw
                            src = xd[off:off + L]
                            s = zero
                            for p in range(L):
                                s += g[p] * src[p]
                            acc[k, (i * Fw + j) * D + d] += s

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def conv_small_dx_kernel(gW, L, dh, dw, W, dxp):  # pragma: no cover - compiled
        """The input gradient of :func:`conv_small_kernel`, on the same wide grid: every tap
        of every filter adds ``w * g_k`` (``L`` contiguous values) into the flattened padded
        input-gradient plane of its channel, shifted by the tap. ``gW``: the output gradient
        planar on the wide grid ``(N, K, >= L)``, ZEROS in the columns ``ow >= Wo`` (they would
        land on real pixels); ``W``: ``(K, Fh, Fw, D)``; ``dxp``: ``(N, D, Hp, Wp)``, written
        (zeroed first) here."""
        N, K = gW.shape[0], gW.shape[1]
        _, Fh, Fw, D = W.shape
        Wp = dxp.shape[3]
        zero = dxp.dtype.type(0)
        for n in range(N):
            for d in range(D):
                dd = dxp[n, d].ravel()
                for p in range(dd.shape[0]):
                    dd[p] = zero
                for k in range(K):
                    g = gW[n, k]
                    for i in range(Fh):
                        for j in range(Fw):
                            off = i * dh * Wp + j * dw
                            w = W[k, i, j, d]
                            dst = dd[off:off + L]
                            for p in range(L):
                                dst[p] += g[p] * w

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def depthwise_kernel(x, Sh, Sw, Ph, Pw, dh, dw, Wt, b, out):  # pragma: no cover - compiled
        """A depthwise convolution (one filter per slice, multiplier 1) on NHWC arrays:
        ``out[n, oh, ow, :] = b + sum over taps of x[n, tap, :] * Wt[i, j, :]``, one
        accumulator vector per output pixel over the contiguous depth (SIMD), written once;
        where the NumPy path makes ``Fh*Fw`` passes over the whole output with a temporary.
        Taps outside the image (the padding ``Ph, Pw``) are skipped: no padded copy.

        ``x``: ``(N, H, W, D)``; ``Wt``: ``(Fh, Fw, D)``; ``b``: ``(D,)``; ``out``: ``(N, Ho,
        Wo, D)``."""
        N, Ho, Wo, D = out.shape
        H, W = x.shape[1], x.shape[2]
        Fh, Fw = Wt.shape[0], Wt.shape[1]
        acc = np.empty(D, out.dtype)
        for n in range(N):
            for oh in range(Ho):
                for ow in range(Wo):
                    for d in range(D):
                        acc[d] = b[d]
                    for i in range(Fh):
                        r = oh * Sh + i * dh - Ph
                        if r < 0 or r >= H:
                            continue
                        xr = x[n, r]
                        for j in range(Fw):
                            c = ow * Sw + j * dw - Pw
                            if c < 0 or c >= W:
                                continue
                            xv = xr[c]
                            wv = Wt[i, j]
                            for d in range(D):
                                acc[d] += xv[d] * wv[d]
                    o = out[n, oh, ow]
                    for d in range(D):
                        o[d] = acc[d]

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def depthwise_backward_kernel(x, Sh, Sw, Ph, Pw, dh, dw, Wt, g, need_dx, dx,
                                  acc):  # pragma: no cover - compiled
        """The gradients of :func:`depthwise_kernel` in one pass over the output gradient
        ``g`` ``(N, Ho, Wo, D)``: ``acc[i, j, :] += x[tap, :] * g`` (float64 ``(Fh, Fw, D)``,
        each image summed in the data's type first) and, with ``need_dx``, ``dx[tap, :] += g *
        Wt[i, j, :]`` into the input gradient ``dx`` ``(N, H, W, D)`` (zeroed here); taps in
        the padding are skipped."""
        N, Ho, Wo, D = g.shape
        H, W = x.shape[1], x.shape[2]
        Fh, Fw = Wt.shape[0], Wt.shape[1]
        part = np.empty((Fh, Fw, D), g.dtype)
        zero = g.dtype.type(0)
        for n in range(N):
            part[:] = zero
            if need_dx:
                dx[n] = zero
            for oh in range(Ho):
                for ow in range(Wo):
                    gv = g[n, oh, ow]
                    for i in range(Fh):
                        r = oh * Sh + i * dh - Ph
                        if r < 0 or r >= H:
                            continue
                        xr = x[n, r]
                        for j in range(Fw):
                            c = ow * Sw + j * dw - Pw
                            if c < 0 or c >= W:
                                continue
                            xv = xr[c]
                            pv = part[i, j]
                            for d in range(D):
                                pv[d] += xv[d] * gv[d]
                            if need_dx:
                                dv = dx[n, r, c]
                                wv = Wt[i, j]
                                for d in range(D):
                                    dv[d] += gv[d] * wv[d]
            for i in range(Fh):
                for j in range(Fw):
                    for d in range(D):
                        acc[i, j, d] += part[i, j, d]

    @njit(cache=True, nogil=True)
    def relu6_forward_kernel(x, out):  # pragma: no cover - compiled
        """``out = min(max(x, 0), 6)``, flat arrays, one pass (NaN stays NaN, as with
        ``np.clip``, which is ~2x slower here: it goes through a generic ufunc loop)."""
        zero = x.dtype.type(0)
        six = x.dtype.type(6)
        for i in range(x.shape[0]):
            v = x[i]
            out[i] = zero if v < zero else (six if v > six else v)

    @njit(cache=True, nogil=True)
    def relu_backward_inplace_kernel(dout, out):  # pragma: no cover - compiled
        """:func:`relu_backward_kernel` with ``dx`` = ``dout``: ``dout[i] = 0`` where
        ``out[i] > 0`` fails. A separate kernel because with ``dx is dout`` LLVM's runtime
        overlap check fails and the three-array loop runs scalar: 3.1 ms against 0.9 for
        32x32x32x16 float32 (ResNet-20's first stage); with one array read and written in
        place it vectorises."""
        zero = dout.dtype.type(0)
        for i in range(dout.shape[0]):
            dout[i] = dout[i] if out[i] > zero else zero

    @njit(cache=True, nogil=True)
    def relu6_backward_kernel(dout, out, dx):  # pragma: no cover - compiled
        """``dx = dout where 0 < out < 6, else 0``, flat arrays, one pass into a separate ``dx``
        (an aliased ``dx`` would fail LLVM's overlap check and run scalar, see
        :func:`relu_backward_inplace_kernel`): the select of :func:`relu_backward_kernel`
        with both ends; NumPy needs two comparisons, an AND and a ``where``, each a pass with
        a temporary."""
        zero = dout.dtype.type(0)
        six = dout.dtype.type(6)
        for i in range(dout.shape[0]):
            o = out[i]
            dx[i] = dout[i] if (o > zero) & (o < six) else zero

    @njit(cache=True, nogil=True)
    def bn_sums_kernel(x, acc):  # pragma: no cover - compiled
        """``acc[d] += sum over rows of x[:, d]`` (``x`` ``(M, D)``, ``acc`` float64): the
        per-channel sums of batch normalisation, accumulated in float64, one pass."""
        M, D = x.shape
        for r in range(M):
            row = x[r]
            for d in range(D):
                acc[d] += row[d]

    @njit(cache=True, nogil=True)
    def bn_center_kernel(x, mean, xhat, acc):  # pragma: no cover - compiled
        """``xhat = x - mean`` and ``acc[d] += sum of xhat[:, d]**2`` (float64), one pass."""
        M, D = x.shape
        for r in range(M):
            row, h = x[r], xhat[r]
            for d in range(D):
                v = row[d] - mean[d]
                h[d] = v
                acc[d] += v * v

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def bn_normalise_kernel(xhat, out, inv, gamma, beta):  # pragma: no cover - compiled
        """``xhat *= inv`` (kept for the backward) and ``out = xhat * gamma + beta``, one
        pass."""
        M, D = xhat.shape
        for r in range(M):
            h, o = xhat[r], out[r]
            for d in range(D):
                v = h[d] * inv[d]
                h[d] = v
                o[d] = v * gamma[d] + beta[d]

    @njit(cache=True, nogil=True)
    def bn_grad_sums_kernel(dout, xhat, acc_g, acc_b):  # pragma: no cover - compiled
        """``acc_g += sum of dout * xhat`` and ``acc_b += sum of dout`` per channel (float64),
        one pass: the sums of batch normalisation's backward (``dgamma``, ``dbeta``)."""
        M, D = dout.shape
        for r in range(M):
            g, h = dout[r], xhat[r]
            for d in range(D):
                acc_g[d] += g[d] * h[d]
                acc_b[d] += g[d]

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def bn_dx_kernel(dout, xhat, dx, slope, mean_d, scale):  # pragma: no cover - compiled
        """``dx = (dout - xhat * slope - mean_d) * scale`` per channel, one pass (``dx`` may
        be ``dout``)."""
        M, D = dout.shape
        for r in range(M):
            g, h, o = dout[r], xhat[r], dx[r]
            for d in range(D):
                o[d] = (g[d] - h[d] * slope[d] - mean_d[d]) * scale[d]

    @njit(cache=True, nogil=True)
    def sgd_kernel(p, g, v, lr, mu, wd, nesterov, first):  # pragma: no cover - compiled
        """One SGD step (:class:`convnet.optim.SGD`) for one parameter, in one pass over its
        flat arrays: ``g' = p * wd + g`` (when ``wd``), ``v = g'`` on the first step else
        ``v * mu + g'``, ``p -= (v * mu + g') * lr`` with Nesterov else ``p -= v * lr``. The
        same operations in the same order as the NumPy passes it replaces, in the arrays'
        dtype (the scalars come in that dtype), so the results are bitwise the same; four
        passes over the parameter's arrays become one (the reference network's 421,642
        parameters, the step inside a training step, median: 0.73 -> 0.34 ms at batch 32).
        ``v`` is unused without momentum (``mu == 0``)."""
        for i in range(p.shape[0]):
            gi = p[i] * wd + g[i] if wd != 0 else g[i]
            if mu != 0:
                vi = gi if first else v[i] * mu + gi
                v[i] = vi
                p[i] -= (vi * mu + gi) * lr if nesterov else vi * lr
            else:
                p[i] -= gi * lr

    @njit(cache=True, nogil=True)
    def relu_backward_kernel(dout, out, dx):  # pragma: no cover - compiled
        """``dx = dout where out > 0, else 0``, flat arrays, one pass (``dx`` may be ``dout``):
        a select, like PyTorch's ``threshold_backward`` and the fused POOL -> RELU kernels (an
        Inf gradient where the RELU was off gives 0, not Inf * 0 = NaN). 2M float32 values on
        one thread: 0.96 ms, where ``np.multiply(dout, out > 0)`` and its boolean temporary
        took 1.63."""
        zero = dout.dtype.type(0)
        for i in range(dout.shape[0]):
            dx[i] = dout[i] if out[i] > zero else zero

else:  # pragma: no cover
    maxpool_forward_kernel = maxpool_backward_kernel = None
    conv3x3_depth1_kernel = conv3x3_depth1_wgrad_kernel = None
    conv3x3_depth1_pool_wgrad_kernel = None
    conv_small_kernel = conv_small_wgrad_kernel = conv_small_dx_kernel = None
    depthwise_kernel = depthwise_backward_kernel = relu6_backward_kernel = None
    relu_backward_inplace_kernel = relu6_forward_kernel = None
    bn_sums_kernel = bn_center_kernel = bn_normalise_kernel = None
    bn_grad_sums_kernel = bn_dx_kernel = None
    maxpool2x2_kernel = maxpool2x2_argmax_kernel = None
    sgd_kernel = relu_backward_kernel = None


if HAVE_NUMBA:
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _load_relaxed(typingctx, arr, i):  # type: ignore[no-untyped-def]  # pragma: no cover
        """``arr[i]`` as an atomic load (LLVM ``monotonic``): compiled code re-reads it from
        memory at every call, where a plain load in a loop may be hoisted out of the loop."""
        sig = arr.dtype(arr, i)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            return builder.load_atomic(ptr, "monotonic", aryty.dtype.bitwidth // 8)

        return sig, codegen

    @njit(cache=True, nogil=True)
    def spin_until(flags, i, value, tries):  # pragma: no cover - compiled
        """Whether ``flags[i] == value`` became true within ``tries`` checks (~0.7 ns each
        here: a million is under a millisecond).

        The spin-wait of :mod:`convnet.ops._threads`: compiled with ``nogil``, so a thread
        waiting here leaves the GIL to the others, and each check is an atomic load of the flag
        that another thread writes. Cached on disk like the other kernels.
        """
        for _ in range(tries):
            if _load_relaxed(flags, i) == value:
                return True
        return _load_relaxed(flags, i) == value

else:  # pragma: no cover
    spin_until = None
