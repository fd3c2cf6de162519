"""Communicators: what data-parallel training needs of the processes that share a run.

:class:`Comm` is the interface the trainer uses (collectives on NumPy buffers, in place):
:class:`LocalComm` is one process (every call does nothing, nothing to import), and
:class:`MPIComm` is MPI through mpi4py (imported when one is made, so the core stays NumPy-only).
Gradients travel as one fused buffer per step (``Allreduce`` on a buffer; mpi4py's pickled
``allreduce`` of the same arrays, one per parameter, took 4-12x longer in
``bench/bench_distributed.py``); objects are pickled only at start-up (``broadcast_object``),
never in the loop.

Every process must make the same collective calls in the same order, or some of them wait
forever: the trainer makes each call on every process, including a process whose share of a
short last batch is empty.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from convnet.errors import ConfigError

__all__ = ["Comm", "CommStats", "LocalComm", "MPIComm", "shard"]

INSTALL_HINT = "pip install '.[distributed]' (mpi4py and the mpich wheel)"


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of process ``rank``'s contiguous share of ``n`` items: sizes differ
    by at most one, earlier ranks take the smaller shares (``n * rank // size``); a share is
    empty when ``n < size``."""
    return n * rank // size, n * (rank + 1) // size


@dataclass
class CommStats:
    """Time spent in :meth:`Comm.allreduce` (what ``bench_distributed.py`` reports)."""

    calls: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.calls, self.bytes, self.seconds = 0, 0, 0.0


class Comm:
    """The processes of a data-parallel run, ``size`` of them, this one being ``rank``.

    Attributes:
        rank: this process, ``0 .. size-1``; rank 0 alone prints and writes files.
        size: the number of processes.
        local_size: processes on this machine (to share its cores: ``cores // local_size``
            threads each).
        stats: time spent in :meth:`allreduce`.
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1

    def __init__(self) -> None:
        self.stats = CommStats()

    def shard(self, n: int) -> tuple[int, int]:
        """This process's ``(start, stop)`` among ``n`` items (:func:`shard`)."""
        return shard(n, self.rank, self.size)

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` (contiguous) element-wise over every process, IN PLACE; returns it."""
        raise NotImplementedError

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``buf`` (contiguous) with ``root``'s, IN PLACE; returns it."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """``root``'s ``obj`` on every process (pickled: start-up only, never per step)."""
        raise NotImplementedError

    def allgather(self, rows: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        """Every process's ``rows`` (``counts[r]`` rows of the same trailing shape and dtype
        from rank ``r``) concatenated in rank order, on every process."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every process has called it."""

    def abort(self, code: int = 1) -> NoReturn:
        """End every process of the run now with exit status ``code``."""
        raise SystemExit(code)


class LocalComm(Comm):
    """One process: rank 0 of 1. Every collective returns its input; imports nothing.

    ``cn.fit(..., comm=LocalComm())`` trains exactly as ``cn.fit(...)`` does.
    """

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        return buf

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, rows: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        return rows

    def __repr__(self) -> str:
        return "LocalComm()"


def import_mpi() -> Any:
    """mpi4py's ``MPI`` module (initialising MPI), or a ConfigError that says what to install.

    mpi4py without an MPI library fails at import with "cannot load MPI library"; the mpich
    wheel from PyPI provides one (and ``mpiexec``), a cluster's own MPI does too.
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"distributed training needs mpi4py and an MPI library ({exc}): "
                          f"{INSTALL_HINT}") from None
    except RuntimeError as exc:          # mpi4py present, no MPI library to load
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"mpi4py cannot load an MPI library ({reason}): {INSTALL_HINT}, "
                          "or load your cluster's MPI module") from None
    return MPI


class MPIComm(Comm):
    """MPI processes through mpi4py: ``MPIComm()`` is every process of ``mpiexec -n N``
    (``MPI.COMM_WORLD``); ``MPIComm(comm)`` wraps another mpi4py communicator.

    Collectives are mpi4py's buffer methods (``Allreduce`` with ``MPI.IN_PLACE``, ``Bcast``,
    ``Allgatherv``) on NumPy arrays: no pickling. Raises ConfigError when mpi4py or an MPI
    library is missing.
    """

    def __init__(self, comm: Any = None) -> None:
        super().__init__()
        self.MPI = import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        try:   # the processes that share this machine's memory (and cores)
            local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
            self.local_size = int(local.Get_size())
            local.Free()
        except Exception:  # noqa: BLE001 - an MPI without shared-memory split: assume all
            self.local_size = self.size

    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.stats.calls += 1
        self.stats.bytes += buf.nbytes
        self.stats.seconds += time.perf_counter() - t0
        return buf

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        self.comm.Bcast(buf, root=root)
        return buf

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def allgather(self, rows: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        rows = np.ascontiguousarray(rows)
        per_row = int(np.prod(rows.shape[1:], dtype=np.int64))
        out = np.empty((int(sum(counts)), *rows.shape[1:]), rows.dtype)
        sizes = [int(c) * per_row for c in counts]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        from mpi4py.util.dtlib import from_numpy_dtype

        self.comm.Allgatherv(rows.reshape(-1), [out.reshape(-1), sizes, offsets,
                                                 from_numpy_dtype(rows.dtype)])
        return out

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> NoReturn:
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(code)
        raise SystemExit(code)  # not reached: Abort ends the process

    def __repr__(self) -> str:
        return f"MPIComm(rank={self.rank}, size={self.size})"
