"""Threads over blocks of a batch, each calling BLAS single-threaded.

With 2+ BLAS threads, the kernels that work block by block (CONV's im2col + GEMM, col2im; FC's
GEMMs split by rows) hand their blocks to a pool of that many Python threads, each calling BLAS
single-threaded (NumPy releases the GIL in GEMMs and array copies), instead of one thread calling
a multithreaded BLAS per block. Two reasons, both measured on the 2-core machine of the
benchmark, which other jobs share:

- the gathers, col2im adds and copies around the GEMMs (a third of a CONV layer's time) run in
  parallel too, where NumPy would run them on one core;
- the threads meet once per layer instead of at every BLAS barrier: OpenBLAS's 2-thread GEMMs
  stalled up to 100x whenever another process held a core (a 0.8 ms (3072 x 289)^T (3072 x 32)
  block took 200 ms; an FC forward of 1.3 ms took 86), where single-threaded GEMMs on two
  Python threads just share the core that is left. cifar10's training step at batch 128 went
  from 4.5 s to 1.1 s under that load.

The cost: while a kernel runs its blocks, BLAS is set to one thread process-wide (threadpoolctl),
so a GEMM another Python thread makes at that moment runs single-threaded; and a kernel called
while the pool is busy (from another Python thread) runs its blocks serially. Without
threadpoolctl (a dependency of scikit-learn, so normally present) everything stays serial with
BLAS's own threads.

**One switch per pass, not per kernel.** :func:`single_blas` sets BLAS to one thread for a whole
forward or backward pass of a network (:class:`~convnet.net.sequential.Sequential` enters it),
and the kernels inside see the worker count it recorded. Switching per kernel left BLAS at its
2 threads between kernels, and every small GEMM there (a bias sum, a small FC) woke OpenBLAS's
own thread, which then spins for a while on the second core, exactly while our two block
threads want both: cifar10's training step at batch 128 took 269 ms on 2 threads that way,
no better than on 1 thread (268 ms), and 206 ms with one switch per pass.

**Helpers that spin before they sleep.** Handing blocks to a thread asleep on a condition cost
~120 us per kernel call here (median; an idle virtual CPU must be woken by an interrupt), more
than a whole small kernel: a batch-32 training step makes ~16 such calls. So the helper threads
and the caller wait for each other by spinning on a flag for up to ~0.7 ms first, in a
compiled loop without the GIL (:func:`convnet.ops._jit.spin_until`), and only then sleep on a
condition: a round trip then takes ~60-80 us, most of it the GIL changing hands. This is what
OpenMP runtimes do between parallel regions (PyTorch's included). Without Numba the threads
just sleep and wake.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_lock = threading.Lock()
_state: dict[str, Any] = {}


def blas() -> Any:
    """threadpoolctl's controller of NumPy's BLAS, or None (no threadpoolctl, unknown BLAS)."""
    if "blas" not in _state:
        with _lock:
            try:
                from threadpoolctl import ThreadpoolController

                libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
                # SciPy (loaded by scikit-learn) brings a second OpenBLAS: pick NumPy's own,
                # the one its GEMMs use (numpy.libs/ in wheels, numpy/ otherwise)
                mine = [c for c in libs
                        if any(part.startswith("numpy") for part in Path(c.filepath).parts[-3:-1])]
                _state["blas"] = (mine or libs)[0] if len(mine) == 1 or len(libs) == 1 else None
            except Exception:  # threadpoolctl missing or failing: stay serial
                _state["blas"] = None
    return _state["blas"]


def workers() -> int:
    """Threads for the blocks: BLAS's thread count when the outermost :func:`single_blas` scope
    began, or its current count outside any scope (1 when it cannot be controlled)."""
    ctl = blas()
    if ctl is None:
        return 1
    if _state.get("depth"):
        return _state["workers"]
    return max(1, int(ctl.get_num_threads()))


@contextmanager
def single_blas() -> Iterator[None]:
    """A scope in which BLAS runs single-threaded and the block kernels use :func:`workers`
    threads of their own: BLAS's thread count when the outermost scope began.

    Process-wide and re-entrant (BLAS's thread count is one setting for the process): the first
    scope to begin records the count and sets 1, the last to end restores it.
    """
    ctl = blas()
    if ctl is None:
        yield
        return
    with _lock:
        if not _state.get("depth"):
            _state["workers"] = max(1, int(ctl.get_num_threads()))
            if _state["workers"] > 1:
                ctl.set_num_threads(1)
        _state["depth"] = _state.get("depth", 0) + 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if not _state["depth"] and _state["workers"] > 1:
                ctl.set_num_threads(_state["workers"])


#: Checks of a flag a waiting thread makes before it sleeps (~0.7 ns each here: ~0.7 ms).
SPIN_TRIES = 1_000_000


class _Pool:
    """Helper threads that take blocks alongside the calling thread, one job at a time.

    ``flags[0]`` is the number of the current job; a helper ``h`` writes that number into
    ``flags[1 + h]`` when it has finished its share. Every wait spins first (see the module
    docstring) and then sleeps on ``cond``; every change of a flag is followed by a notify
    under ``cond``, so a sleeper never misses one.
    """

    def __init__(self, helpers: int) -> None:
        self.helpers = helpers
        self.pid = os.getpid()                   # threads do not survive a fork: new pool then
        self.flags = np.zeros(1 + helpers, dtype=np.int64)
        self.cond = threading.Condition()
        self.job: Callable[[], None] = lambda: None
        for h in range(helpers):
            threading.Thread(target=self._serve, args=(h,), name=f"convnet-blocks-{h}",
                             daemon=True).start()

    def _wait(self, i: int, value: int) -> None:
        """Until ``flags[i] == value``: spin without the GIL, then sleep."""
        from convnet.ops._jit import spin_until

        if spin_until is not None and spin_until(self.flags, i, value, SPIN_TRIES):
            return
        with self.cond:
            while self.flags[i] != value:
                self.cond.wait()

    def _serve(self, h: int) -> None:
        done = 0
        while True:
            self._wait(0, done + 1)
            done += 1
            try:
                self.job()
            finally:
                self.flags[1 + h] = done
                with self.cond:
                    self.cond.notify_all()

    def run(self, drain: Callable[[], None]) -> None:
        """``drain()`` on the calling thread and on every helper; returns when all are done."""
        job = int(self.flags[0]) + 1
        self.job = drain
        self.flags[0] = job
        with self.cond:
            self.cond.notify_all()
        try:
            drain()
        finally:
            for h in range(self.helpers):           # never return while a helper still writes
                self._wait(1 + h, job)


def _pool(helpers: int) -> _Pool:
    pool = _state.get("pool")
    if pool is None or pool.helpers != helpers or pool.pid != os.getpid():
        pool = _state["pool"] = _Pool(helpers)
    return pool


def map_blocks(fn: Callable[[int, int], Any], blocks: list[tuple[int, int]],
               n_workers: int) -> list[Any]:
    """``[fn(start, stop) for (start, stop) in blocks]``, on ``n_workers`` threads, each with
    single-threaded BLAS; results in block order, so sums of them do not depend on timing.

    The calling thread is one of the workers, and the threads take the next block from a shared
    counter rather than one pool task per block: a task costs a hand-off (~0.1 ms on this VM
    with a sleeping thread), which made 75 blocks of 0.13 ms of GEMM slower on 2 threads than
    on one (15.8 vs 13.1 ms; 8.1 ms for 2 blocks). Taking blocks as they come also balances the
    threads when another process holds a core for a while. An exception in any block is raised
    here, after every thread has stopped.
    """
    ctl = blas()
    with _lock:
        parallel = (n_workers > 1 and len(blocks) > 1 and ctl is not None
                    and not _state.get("busy"))
        if parallel:
            pool = _pool(n_workers - 1)
            _state["busy"] = True
    if not parallel:
        return [fn(a, b) for a, b in blocks]
    results: list[Any] = [None] * len(blocks)
    errors: list[BaseException] = []
    order = iter(range(len(blocks)))              # next() on it is atomic under the GIL

    def drain() -> None:
        try:
            for k in order:
                if errors:
                    return
                results[k] = fn(*blocks[k])
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)

    scoped = bool(_state.get("depth"))        # inside single_blas: BLAS is already at 1 thread
    before = 0 if scoped else ctl.get_num_threads()
    if not scoped:
        ctl.set_num_threads(1)
    try:
        pool.run(drain)
    finally:
        if not scoped:
            ctl.set_num_threads(before)
        _state["busy"] = False
    if errors:
        raise errors[0]
    return results


def row_blocks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` nearly equal ``(start, stop)`` ranges of ``n`` rows (fewer if ``n < parts``)."""
    parts = max(1, min(parts, n))
    edges = [n * k // parts for k in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


#: Below this many multiply-adds a GEMM is not split (thread hand-off costs ~20-50 us).
SPLIT_MIN_MACS = 2_000_000
#: Below this many elements a memory-bound pass (pooling, RELU) is not split over threads:
#: RELU on 32x14x14x32 (200K values) took ~100 us either way, max pooling 32x28x28x32 (800K)
#: 0.68 ms on one thread and 0.42 ms on two.
SPLIT_MIN_ELEMENTS = 1 << 19


def split_rows(fn: Callable[[int, int], Any], n_rows: int, n_elements: int) -> None:
    """``fn(start, stop)`` over nearly equal ranges of ``n_rows`` rows (images), one per worker
    thread, when the pass touches at least :data:`SPLIT_MIN_ELEMENTS` elements; else
    ``fn(0, n_rows)``. For memory-bound passes whose rows are independent (pooling, RELU): each
    thread streams its own part, in its own core's caches."""
    n = workers()
    if n <= 1 or n_rows < 2 or n_elements < SPLIT_MIN_ELEMENTS:
        fn(0, n_rows)
    else:
        map_blocks(fn, row_blocks(n_rows, n), n)


def concurrently(*fns: Callable[[], Any]) -> list[Any]:
    """``[fn() for fn in fns]``, the calls spread over the worker threads (each with
    single-threaded BLAS), results in order. For independent GEMMs of one layer: an FC layer's
    weight and input gradients, ``x.T @ dout`` and ``dout @ W.T``, each whole on its own thread,
    took 2.0 ms (median) at batch 128 on the reference network's 3136 -> 128 layer where each
    split over both threads took 2.4 (0.58 vs 0.73 at batch 32): the two virtual CPUs of this
    machine share a core's arithmetic units, and one whole GEMM per thread splits nothing."""
    n = workers()
    if n <= 1 or len(fns) < 2:
        return [fn() for fn in fns]
    return map_blocks(lambda k, _: fns[k](), [(k, k + 1) for k in range(len(fns))], n)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays, split over the worker threads by rows of ``a`` or by columns
    of ``b``, whichever makes each thread read the smaller share: every thread reads all of the
    operand that is not split, so the larger one is split (an FC layer's weights at small
    batches: a 4096 x 4096 layer at batch 32 would otherwise read its 64 MB twice)."""
    n = workers()
    M, Kin = a.shape
    N = b.shape[1]
    if n <= 1 or M * Kin * N < SPLIT_MIN_MACS or max(M, N) < 2:
        return a @ b
    out = np.empty((M, N), dtype=np.result_type(a, b))
    if M * Kin >= Kin * N:                       # a is the larger: rows of a
        def part(r0: int, r1: int) -> None:
            np.matmul(a[r0:r1], b, out=out[r0:r1])
        blocks = row_blocks(M, n)
    else:                                        # b is the larger: columns of b
        def part(c0: int, c1: int) -> None:      # (BLAS writes the column block in place)
            np.matmul(a, b[:, c0:c1], out=out[:, c0:c1])
        blocks = row_blocks(N, n)
    map_blocks(part, blocks, n)
    return out


def matmul_tn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` (a weight gradient: the reduction runs over the ``M`` rows of both).

    With fewer rows than output rows or columns (an FC layer's ``x.T @ dout`` at batch 32 when
    it is the network's first layer, so no ``dx`` runs beside it: 32 rows, 3136 x 128 out) the
    output is split, no partial sums to add; with a long reduction
    (a 1x1 CONV's 100,352 pixels) each thread sums its share of the rows and the partial
    products are added in block order.
    """
    n = workers()
    M, P = a.shape
    Q = b.shape[1]
    if n <= 1 or M < 2 or M * P * Q < SPLIT_MIN_MACS:
        return a.T @ b
    if M >= max(P, Q):
        parts = map_blocks(lambda r0, r1: a[r0:r1].T @ b[r0:r1], row_blocks(M, n), n)
        return np.sum(parts, axis=0)
    out = np.empty((P, Q), dtype=np.result_type(a, b))
    if P >= Q:
        def part(r0: int, r1: int) -> None:
            np.matmul(a[:, r0:r1].T, b, out=out[r0:r1])
    else:
        def part(c0: int, c1: int) -> None:
            np.matmul(a.T, b[:, c0:c1], out=out[:, c0:c1])
    map_blocks(part, row_blocks(max(P, Q), n), n)
    return out
