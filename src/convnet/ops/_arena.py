"""Large arrays of a training step reused from step to step: a caching allocator.

Every training step allocates the same large arrays again (each layer's output and input
gradient) and frees them. glibc hands big blocks back to the kernel when they are freed, so the
next step's ``np.empty`` gets fresh pages that fault on first touch, each fault a trip through
the hypervisor on a virtual machine: the reference network's training step at batch 128 took
~1,400 page faults (and PyTorch's ~4,000) and ran 53 ms where the same step without them (glibc
told by ``mallopt`` to keep freed memory, process-wide) ran 42 ms.

:func:`empty` is ``np.empty`` for arrays of at least :data:`MIN_BYTES` that takes a buffer of
the same size which nothing references any more, if this module keeps one. A buffer is free when
its reference count says that only this module holds it: every array handed out is a view whose
``base`` chain holds the buffer, so while the array, or any view, slice or reshape of it, lives
anywhere, the buffer is not handed out again. (An integer address taken with ``arr.ctypes.data``
holds no reference, just as it does not keep a freed ``np.empty`` alive.)

Memory is kept in the process, for the next step, instead of returned and faulted in again, as
PyTorch's caching allocators do on GPUs. A step's peak stays what it was, since a buffer is only
reused when free; between steps the process keeps that peak. Whenever a new buffer has to be
made, the free ones beyond :data:`KEEP_BYTES` are dropped (oldest first), so a change of batch
size does not pile up buffers of the old sizes; :func:`release` drops every free buffer (the
trainer calls it when a run ends).
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

#: Arrays smaller than this come from ``np.empty`` (glibc keeps small blocks itself).
MIN_BYTES = 1 << 20
#: Free buffers beyond this many bytes are dropped (oldest first) when a new one is made.
KEEP_BYTES = 256 << 20

_lock = threading.Lock()
_buffers: list[np.ndarray] = []          # uint8, oldest first


def _free(i: int) -> bool:
    """Whether ``_buffers[i]`` is referenced only by the list (+1: getrefcount's argument).
    Always by index: a loop variable, or a tuple that ``enumerate`` keeps, would add one."""
    return sys.getrefcount(_buffers[i]) == 2


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``; large ones reuse a
    kept buffer that nothing references any more."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        for i in range(len(_buffers)):
            if _buffers[i].nbytes == nbytes and _free(i):
                _buffers.append(_buffers.pop(i))      # now the most recently used
                new = False
                break
        else:
            _buffers.append(np.empty(nbytes, dtype=np.uint8))
            new = True
        # the view holds the buffer (as its base) from here on: not free for _trim or others
        out = _buffers[-1].view(dtype).reshape(shape)
        if new:
            _trim()
    return out


def zeros(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """Like ``np.zeros``, from :func:`empty`."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def _trim() -> None:
    """Drop the oldest free buffers while the free ones exceed :data:`KEEP_BYTES`."""
    free = [i for i in range(len(_buffers)) if _free(i)]
    excess = sum(_buffers[i].nbytes for i in free) - KEEP_BYTES
    drop = set()
    for i in free:
        if excess <= 0:
            break
        drop.add(i)
        excess -= _buffers[i].nbytes
    _buffers[:] = [_buffers[i] for i in range(len(_buffers)) if i not in drop]


def release() -> None:
    """Drop every kept buffer that is free (the memory goes back to the allocator)."""
    with _lock:
        _buffers[:] = [_buffers[i] for i in range(len(_buffers)) if not _free(i)]


def kept_bytes() -> tuple[int, int]:
    """``(bytes kept, of which free)``."""
    with _lock:
        return (sum(_buffers[i].nbytes for i in range(len(_buffers))),
                sum(_buffers[i].nbytes for i in range(len(_buffers)) if _free(i)))


__all__ = ["KEEP_BYTES", "MIN_BYTES", "empty", "kept_bytes", "release", "zeros"]
