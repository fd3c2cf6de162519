"""FC (fully connected): ``out = x @ W + b`` on a batch of vectors, and its gradients.

The GEMMs run on the worker threads of :mod:`convnet.ops._threads` with single-threaded BLAS:
the forward and a lone weight gradient split the larger operand over the threads
(:func:`~convnet.ops._threads.matmul`, :func:`~convnet.ops._threads.matmul_tn`); the backward's
two GEMMs, ``x.T @ dout`` and ``dout @ W.T``, run whole and side by side, one per thread
(:func:`~convnet.ops._threads.concurrently`: 2.0 ms against 2.4 for each split over both
threads, the reference network's 3136 -> 128 layer at batch 128).

Shape:
    x ``(N, n)`` or ``(N, H, W, D)`` (flattened in NHWC order, ``n = H*W*D``), W ``(n, K)``,
    b ``(K,)`` -> out ``(N, K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.ops import _threads

__all__ = ["fc_backward", "fc_forward"]


def fc_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, Any]:
    """``x @ W + b`` with ``x`` flattened per image (a view for a contiguous volume).

    The cache holds that view of ``x``, its shape and ``W`` (references, no copies).

    >>> out, _ = fc_forward(np.ones((2, 3)), np.ones((3, 4)), np.arange(4.0))
    >>> out[0]
    array([3., 4., 5., 6.])
    """
    x2 = x.reshape(x.shape[0], -1)
    out = _threads.matmul(x2, W)
    if b is not None:
        out += b
    return out, (x2, x.shape, W, b is not None)


def fc_backward(dout: np.ndarray, cache: Any, *, need_dx: bool = True
                ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`fc_forward`: ``(dx, dW, db)``; ``dx`` in ``x``'s own shape (None when
    not ``need_dx``: a network's first layer), ``db`` None without a bias.

    Shape:
        - dout: ``(N, K)`` -> dx ``(N, n)`` or ``(N, H, W, D)``, dW ``(n, K)``, db ``(K,)``
    """
    x2, shape, W, has_b = cache
    db = dout.sum(axis=0) if has_b else None
    macs = dout.size * W.shape[0]                  # each of the two GEMMs
    if need_dx and macs >= _threads.SPLIT_MIN_MACS:
        # the two gradients at once, one whole GEMM per thread
        dW, dx = _threads.concurrently(lambda: x2.T @ dout, lambda: dout @ W.T)
        return dx.reshape(shape), dW, db
    dW = _threads.matmul_tn(x2, dout)
    return (_threads.matmul(dout, W.T).reshape(shape) if need_dx else None), dW, db
