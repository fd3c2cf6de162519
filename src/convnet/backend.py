"""The backend: what device the arrays live on and which speed machinery exists, in one place.

Today that is NumPy on the CPU, with three private speed modules behind it:
:mod:`convnet.ops._arena` (large arrays of a step reuse freed buffers: no page faults step after
step), :mod:`convnet.ops._threads` (our own worker threads over blocks of a batch, BLAS single-
threaded inside them) and :mod:`convnet.ops._jit` (Numba kernels, with NumPy fallbacks). Only
``ops/`` and this module import those; layers, optimizers, the network and the training loop
reach them through the names below, so that ``ops/`` and ``backend.py`` are the only places that
know where arrays live.

========================= ==================================================================
name                      what it is (CPU / NumPy backend)
========================= ==================================================================
``NAME``, ``xp``          ``"numpy"``, the array module (:mod:`numpy`)
``empty(shape, dtype)``   an uninitialised array; large ones reuse a free buffer of the arena
``zeros(shape, dtype)``   the same, zeroed
``release()``             hand the arena's free buffers back (the trainer calls it at the end)
``kept_bytes()``          ``(bytes the arena keeps, of which free)``
``matmul(a, b)``          ``a @ b`` (2-D), split over the worker threads when large enough
``matmul_tn(a, b)``       ``a.T @ b`` (a weight gradient), split likewise
``map_blocks(fn, bl, n)`` ``[fn(start, stop) for (start, stop) in bl]`` on ``n`` threads
``row_blocks(n, parts)``  ``parts`` nearly equal ``(start, stop)`` ranges of ``n`` rows
``split_rows(fn, n, e)``  ``fn`` over ranges of ``n`` rows, one per worker, for ``e`` elements
``concurrently(*fns)``    independent calls spread over the worker threads, results in order
``workers()``             how many threads the block kernels use now
``single_blas()``         context: BLAS single-threaded for a whole pass (one switch per pass)
``has_jit()``             whether the compiled kernels are there (Numba, not ``CONVNET_NO_JIT``)
``sgd_step(...)``         one SGD update in one compiled pass (only where ``has_jit()``)
========================= ==================================================================

How a GPU (CuPy) backend would come through this door, without touching layers, optimizers or the
loop:

1. A module ``convnet/_backend_cupy.py`` defines the same names: ``xp = cupy``; ``empty`` and
   ``zeros`` from ``cupy`` (its memory pool already caches freed blocks, as the arena does);
   ``release`` frees the pool's blocks; ``matmul``/``matmul_tn`` are plain ``a @ b`` and
   ``a.T @ b`` (cuBLAS); ``map_blocks``, ``split_rows`` and ``concurrently`` run serially (a
   GPU kernel is parallel by itself; CUDA streams could come later); ``workers()`` is 1 and
   ``single_blas()`` a no-op scope; ``has_jit()`` False for the Numba CPU kernels, with
   ``sgd_step`` an ``ElementwiseKernel``.
2. This module picks the implementation once, at import (an environment variable such as
   ``CONVNET_BACKEND=cupy``, or a ``use("cupy")`` before the first network is built), and
   re-exports its names; everything outside ``ops/`` already calls them through here.
3. ``ops/`` takes its array module from the backend (``xp`` instead of ``np`` where it makes
   arrays), and :mod:`convnet.ops.conv_paths` gets device thresholds of its own (Winograd and
   the blocked im2col pay differently on a GPU; the decision stays in one place).
   :mod:`convnet.ops.reference` ports as it is (slicing and ``@`` only) and remains the oracle.
4. Arrays cross to the host at the edges only: data sets hand NumPy batches that the network's
   forward moves with ``xp.asarray``; checkpoints and reports move back with ``cupy.asnumpy``.
"""

from __future__ import annotations

import numpy as np

from convnet.ops import _jit
from convnet.ops._arena import empty, kept_bytes, release, zeros
from convnet.ops._threads import (
    concurrently,
    map_blocks,
    matmul,
    matmul_tn,
    row_blocks,
    single_blas,
    split_rows,
    workers,
)

#: The backend's name and its array module.
NAME = "numpy"
xp = np


def has_jit() -> bool:
    """Whether the compiled kernels exist: Numba is installed and ``CONVNET_NO_JIT`` unset. Without
    them every op runs its NumPy fallback (same results)."""
    return bool(_jit.HAVE_NUMBA)


def sgd_step(p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: np.generic, mu: np.generic,
             wd: np.generic, nesterov: bool, first: bool) -> None:
    """One SGD step for one parameter in one compiled pass over its flat, contiguous arrays of
    one float dtype (the scalars in that dtype): ``p``, its gradient ``g`` and velocity ``v``
    (:func:`convnet.ops._jit.sgd_kernel`: bitwise the NumPy passes it replaces). Only where
    :func:`has_jit`."""
    _jit.sgd_kernel(p, g, v, lr, mu, wd, nesterov, first)


__all__ = [
    "NAME", "concurrently", "empty", "has_jit", "kept_bytes", "map_blocks", "matmul",
    "matmul_tn", "release", "row_blocks", "sgd_step", "single_blas", "split_rows", "workers",
    "xp", "zeros",
]
