"""Batch normalisation (Ioffe & Szegedy, 2015) over every axis but the last.

For ``(N, D)`` vectors the statistics are per feature over the batch; for ``(N, H, W, D)``
activation maps they are per depth slice over the batch and all pixels (spatial batch norm), so
one kernel serves both.

Train mode normalises with the batch mean and the biased batch variance and updates the running
statistics in place (PyTorch's convention: ``running = (1 - momentum)*running + momentum*batch``,
with the UNBIASED variance ``var * m/(m - 1)`` for ``running_var``, ``m`` values per channel).
Eval mode normalises with the running statistics, which makes it an affine map per channel.

Synchronised batch norm (data-parallel training, :mod:`convnet.distributed`): given a
``reduce(buffer)`` that sums a float64 buffer over every process in place, the statistics are
those of the GLOBAL batch: one reduction of per-channel sums and centred sums of squares in the
forward pass, one of ``sum(dout)`` and ``sum(dout * xhat)`` in the backward pass. Without it
(``reduce=None``) the numbers are exactly those of the single-process kernels.

Shape:
    x ``(N, ..., D)``; gamma, beta, running_mean, running_var ``(D,)``; out like x.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convnet.ops import _arena, _jit, _threads

__all__ = ["batchnorm_affine", "batchnorm_backward", "batchnorm_forward", "compiled"]

#: Whether :func:`batchnorm_forward` and :func:`batchnorm_backward` use the compiled kernels in
#: training (True, where they apply: Numba, float32/64, contiguous, no ``reduce``) or the NumPy
#: passes (False): tests set it to compare the two.
USE_COMPILED = True


def compiled(*arrays: np.ndarray) -> bool:
    """Whether the compiled training kernels apply to ``arrays`` (see :data:`USE_COMPILED`)."""
    return (USE_COMPILED and _jit.HAVE_NUMBA
            and all(a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
                    for a in arrays))


def _row_parts(M: int, size: int) -> list[tuple[int, int]]:
    n = _threads.workers() if size >= _threads.SPLIT_MIN_ELEMENTS else 1
    return _threads.row_blocks(M, n)


def _summed(kernel: Any, arrays: tuple[np.ndarray, ...], D: int, n_acc: int) -> list[np.ndarray]:
    """``kernel(*row ranges of arrays, *accumulators)`` over row blocks on the worker threads,
    each with its own float64 accumulators ``(D,)``, added in block order."""
    def part(r0: int, r1: int) -> list[np.ndarray]:
        accs = [np.zeros(D) for _ in range(n_acc)]
        kernel(*(a[r0:r1] for a in arrays), *accs)
        return accs

    parts = _row_parts(arrays[0].shape[0], arrays[0].size)
    first, *rest = _threads.map_blocks(part, parts, len(parts))
    for more in rest:
        for a, b in zip(first, more, strict=True):
            a += b
    return first


def _rows(kernel: Any, arrays: tuple[np.ndarray, ...], params: tuple[np.ndarray, ...]) -> None:
    """``kernel(*row ranges of arrays, *params)`` over row blocks on the worker threads."""
    parts = _row_parts(arrays[0].shape[0], arrays[0].size)
    _threads.map_blocks(lambda r0, r1: kernel(*(a[r0:r1] for a in arrays), *params), parts,
                        len(parts))


def _channel_sums(a: np.ndarray) -> np.ndarray:
    """Per-channel sums of ``a (M, D)``: ``ones(M) @ a``, the reduction as BLAS matrix-vector
    products over row blocks on the worker threads (NumPy's ``sum(axis=0)`` walks the rows
    one by one: 6x slower on (100352, 32) float32)."""
    ones = np.ones((a.shape[0], 1), dtype=a.dtype)
    return _threads.matmul_tn(ones, a)[0]


#: Elements per chunk of an elementwise pass (256 KiB of float32): a function of two or three
#: passes (multiply, then add) then finds its chunk still in the core's cache for the second.
CHUNK_ELEMENTS = 1 << 16
#: Shortest inner run NumPy gets: rows of ``D`` values are regrouped into rows of at least this
#: many (the per-channel vectors tiled to match), because a broadcast over a short last axis
#: makes NumPy call its inner loop once per pixel (16 values for 16 channels): the affine pass
#: of evaluation took 1.0 ms on 32x32x64x16 that way, and ~0.3 ms regrouped.
MIN_RUN = 1024


def _rowwise(fn: Any, arrays: tuple[np.ndarray, ...], params: tuple[np.ndarray, ...] = ()) -> None:
    """``fn(*chunks, *params)`` over chunks of the rows of the ``(M, D)`` ``arrays``, the chunks
    split over the worker threads: the elementwise passes below are memory-bound and
    independent per row. Each chunk is regrouped into rows of ``k*D`` values and the per-channel
    ``params`` ``(D,)`` tiled ``k`` times, so broadcasting them stays correct."""
    M, D = arrays[0].shape
    k = max(1, MIN_RUN // D)
    tiled = tuple(np.tile(v, k) for v in params)
    step = max(k, CHUNK_ELEMENTS // D // k * k)              # a multiple of k rows

    def run(r0: int, r1: int) -> None:
        for a in range(r0, r1, step):
            b = min(r1, a + step)
            full = a + (b - a) // k * k
            if full > a:
                fn(*(arr[a:full].reshape(-1, k * D) for arr in arrays), *tiled)
            if full < b:                                     # the last few rows, untiled
                fn(*(arr[full:b] for arr in arrays), *params)

    # ranges that start on a multiple of k rows, one per worker thread
    n = _threads.workers() if arrays[0].size >= _threads.SPLIT_MIN_ELEMENTS else 1
    edges = [min(M, (M * i // n + k - 1) // k * k) for i in range(n + 1)]
    edges[-1] = M
    blocks = [(e0, e1) for e0, e1 in zip(edges[:-1], edges[1:], strict=True) if e1 > e0]
    _threads.map_blocks(run, blocks, n)


def batchnorm_affine(gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                     running_var: np.ndarray, eps: float, dtype: Any) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Evaluation-mode BN as the per-channel affine map ``out = x * scale + shift``:
    ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``.

    :func:`batchnorm_forward` applies it in evaluation, and a network folds it into the
    CONV/DECONV before the BN (one pass fewer; see :meth:`Sequential.forward`).

    Shape:
        all ``(D,)`` -> scale, shift ``(D,)`` in ``dtype``.
    """
    inv_std = (1 / np.sqrt(running_var + float(eps))).astype(dtype, copy=False)
    scale = (gamma * inv_std).astype(dtype, copy=False)
    shift = (beta - running_mean.astype(dtype, copy=False) * scale).astype(dtype, copy=False)
    return scale, shift


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: float,
    eps: float,
    train: bool,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """``out = gamma * (x - mean)/sqrt(var + eps) + beta``, per channel (last axis).

    ``running_mean`` and ``running_var`` are updated IN PLACE when ``train`` is true. With a
    single value per channel (``m = 1``) the unbiased variance is undefined; the BatchNorm layer
    rejects that case in train mode (as PyTorch does), and here the biased one (0) is used.

    Cost: evaluation is one affine pass, ``x * scale + shift`` with ``scale = gamma/std`` and
    ``shift = beta - mean * scale`` folded per channel first (the textbook formula makes four
    passes and two temporaries: 3.3 ms against PyTorch's 0.25 ms on 32x32x64x16 before this).
    Training takes the mean and the variance (of the centred values, not ``E[x^2] - E[x]^2``,
    which cancels badly) as BLAS row sums and keeps ``xhat`` for the backward pass.

    ``reduce`` (training only): sums a float64 buffer over every process, in place; the mean
    and variance are then those of all processes' rows together (``x`` may have no rows: a
    process without samples in this batch still joins the reduction). Each process sends its
    per-channel sum ``S``, its centred sum of squares plus ``S^2/m`` (Chan et al.'s pairwise
    combination, so the global variance is ``(sum - S_total^2/M)/M`` with the cancellation
    confined to float64), and its count ``m``: one reduction of ``2*D + 1`` values.

    Shape:
        x ``(N, D)`` or ``(N, H, W, D)`` -> out of the same shape; the parameters are ``(D,)``.
    """
    D = x.shape[-1]
    x2 = x.reshape(-1, D)
    m = x2.shape[0]
    eps = float(eps)
    out = _arena.empty(x.shape, x.dtype)         # reused buffers: no page faults
    out2 = out.reshape(-1, D)
    if not train:
        scale, shift = batchnorm_affine(gamma, beta, running_mean, running_var, eps, x.dtype)
        inv_std = (1 / np.sqrt(running_var + eps)).astype(x.dtype, copy=False)

        def affine(xs: np.ndarray, os: np.ndarray, sc: np.ndarray, sh: np.ndarray) -> None:
            np.multiply(xs, sc, out=os)
            os += sh

        _rowwise(affine, (x2, out2), (scale, shift))
        # the input is cached (not xhat): evaluation rarely meets a backward pass, which then
        # recomputes xhat for dgamma
        return out, (x, running_mean.astype(x.dtype, copy=False), gamma, inv_std, False)
    if reduce is None and compiled(x2):
        # compiled: three passes (sums; centre + squares; normalise + affine), float64 sums
        xhat = _arena.empty(x2.shape, x2.dtype)
        mean = (_summed(_jit.bn_sums_kernel, (x2,), D, 1)[0] / max(m, 1)).astype(x.dtype)
        var = (_summed(lambda xs, hs, acc: _jit.bn_center_kernel(xs, mean, hs, acc),
                       (x2, xhat), D, 1)[0] / max(m, 1)).astype(x.dtype)
        sync = None
    elif reduce is None:
        mean = _channel_sums(x2) / m
        xhat = np.empty_like(x2)
        _rowwise(lambda xs, hs, mu: np.subtract(xs, mu, out=hs), (x2, xhat), (mean,))  # centred
        sq = np.empty_like(x2)
        _rowwise(lambda hs, qs: np.multiply(hs, hs, out=qs), (xhat, sq))
        var = _channel_sums(sq) / m
        del sq
        sync = None
    else:
        mean, var, xhat, m = _reduced_stats(x2, reduce)
        sync = (reduce, m)
    inv_std = (1 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    unbiased = var * (m / (m - 1)) if m > 1 else var
    momentum = float(momentum)
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * unbiased

    def normalise(hs: np.ndarray, os: np.ndarray, inv: np.ndarray, g: np.ndarray,
                  b: np.ndarray) -> None:
        hs *= inv                           # xhat, in the centred values' buffer
        np.multiply(hs, g, out=os)
        os += b

    if compiled(xhat, out2):
        _rows(_jit.bn_normalise_kernel, (xhat, out2),
              tuple(np.asarray(v, dtype=x.dtype) for v in (inv_std, gamma, beta)))
    else:
        _rowwise(normalise, (xhat, out2), (inv_std, gamma, beta))
    # xhat (not x) is cached: the backward formula needs only xhat, gamma and 1/std.
    return out, (xhat.reshape(x.shape), gamma, inv_std, sync, True)


def _reduced_stats(x2: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> \
        tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(mean, var, x2 - mean, M)`` over the rows of every process (``M`` rows in all): this
    process's sums, one ``reduce`` of ``2*D + 1`` float64 values, then the centring."""
    m, D = x2.shape
    local = _channel_sums(x2).astype(np.float64)
    xhat = np.empty_like(x2)
    _rowwise(lambda xs, hs, mu: np.subtract(xs, mu, out=hs), (x2, xhat),
             ((local / max(m, 1)).astype(x2.dtype),))
    sq = np.empty_like(x2)
    _rowwise(lambda hs, qs: np.multiply(hs, hs, out=qs), (xhat, sq))
    centred = _channel_sums(sq).astype(np.float64)
    del sq
    buf = np.concatenate([local, centred + local * local / max(m, 1), [float(m)]])
    reduce(buf)
    total = int(round(buf[-1]))
    s, q = buf[:D], buf[D:2 * D]
    mean64 = s / max(total, 1)
    var64 = np.maximum(q / max(total, 1) - mean64 * mean64, 0.0)
    mean = mean64.astype(x2.dtype)
    _rowwise(lambda xs, hs, mu: np.subtract(xs, mu, out=hs), (x2, xhat), (mean,))
    return mean, var64.astype(x2.dtype), xhat, total


def batchnorm_backward(
    dout: np.ndarray, cache: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batchnorm_forward` with respect to x, gamma and beta.

    Train mode (the statistics depend on x), the compact formula with ``m`` values per channel::

        dx = gamma/std/m * (m*dout - sum(dout) - xhat*sum(dout*xhat))
           = gamma/std * (dout - sum(dout)/m - xhat * sum(dout*xhat)/m)

    Eval mode (fixed statistics): ``dx = gamma/std * dout``.

    After a forward pass with ``reduce``, ``sum(dout)`` and ``sum(dout*xhat)`` in ``dx`` are
    those of every process (one more reduction of ``2*D`` values) and ``m`` is the global
    count; ``dgamma`` and ``dbeta`` stay this process's own sums (the caller reduces them with
    the other gradients).

    Shape:
        dout like x -> dx like x, dgamma ``(D,)``, dbeta ``(D,)``.
    """
    train = cache[-1]
    D = dout.shape[-1]
    d2 = dout.reshape(-1, D)
    m = d2.shape[0]
    sync = None
    if train:
        xhat, gamma, inv_std, sync, _ = cache
    else:
        x, mean, gamma, inv_std, _ = cache
        xhat = (x - mean) * inv_std
    h2 = xhat.reshape(-1, D)
    if train and sync is None and compiled(d2, h2):
        # compiled: two passes (the two sums; dx), float64 sums
        dgamma64, dbeta64 = _summed(_jit.bn_grad_sums_kernel, (d2, h2), D, 2)
        dgamma, dbeta = dgamma64.astype(dout.dtype), dbeta64.astype(dout.dtype)
        dx = _arena.empty(d2.shape, d2.dtype)
        dt = dout.dtype
        _rows(_jit.bn_dx_kernel, (d2, h2, dx),
              ((dgamma64 / m).astype(dt), (dbeta64 / m).astype(dt),
               np.asarray(gamma * inv_std, dtype=dt)))
        return dx.reshape(dout.shape), dgamma, dbeta
    prod = np.empty_like(d2)
    _rowwise(lambda ds, hs, ps: np.multiply(ds, hs, out=ps), (d2, h2, prod))
    dgamma = _channel_sums(prod)
    dbeta = _channel_sums(d2)
    scale = gamma * inv_std
    dx = prod                                # reuse the buffer
    if not train:
        _rowwise(lambda ds, xs, sc: np.multiply(ds, sc, out=xs), (d2, dx), (scale,))
        return dx.reshape(dout.shape), dgamma, dbeta
    if sync is None:
        mean_d = dbeta / m
        slope = dgamma / m
    else:
        reduce, total = sync
        buf = np.concatenate([dbeta, dgamma]).astype(np.float64)
        reduce(buf)
        mean_d = (buf[:D] / max(total, 1)).astype(dout.dtype)
        slope = (buf[D:] / max(total, 1)).astype(dout.dtype)

    def grad(ds: np.ndarray, hs: np.ndarray, xs: np.ndarray, sl: np.ndarray, md: np.ndarray,
             sc: np.ndarray) -> None:
        np.multiply(hs, sl, out=xs)
        np.subtract(ds, xs, out=xs)
        xs -= md
        xs *= sc

    _rowwise(grad, (d2, h2, dx), (slope, mean_d, scale))
    return dx.reshape(dout.shape), dgamma, dbeta
