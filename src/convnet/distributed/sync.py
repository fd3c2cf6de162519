"""What keeps the processes of a data-parallel run identical, in the order Horovod and PyTorch
DDP do it: the same starting point (parameters, BN buffers and optimiser state broadcast from
rank 0), the same gradient every step (one fused allreduce of all gradients, each process's
already weighted by its share of the global batch), and no process left waiting when one fails
(:func:`abort_job`).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from convnet.distributed.comm import Comm
from convnet.errors import ConfigError, ConvnetError

__all__ = ["GradientBuffer", "abort_job", "abort_on_error", "broadcast_network",
           "broadcast_optimizer"]


def broadcast_network(comm: Comm, net: Any) -> None:
    """Rank 0's weights and BN buffers on every process (one fused ``Bcast`` per dtype), after
    checking that every process built the same architecture."""
    spec = comm.broadcast_object(net.spec)
    if spec != net.spec:
        raise ConfigError(f"rank {comm.rank} built {net.spec} but rank 0 built {spec}: every "
                          "process must train the same network")
    state = list(net.state_dict().values())
    for dtype in sorted({a.dtype.str for a in state}):
        arrays = [a for a in state if a.dtype.str == dtype]
        buf = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
        comm.broadcast(buf)
        off = 0
        for a in arrays:
            a[...] = buf[off:off + a.size].reshape(a.shape)
            off += a.size
    state_rng = comm.broadcast_object(dict(net.rng.bit_generator.state))
    net.rng.bit_generator.state = state_rng


def broadcast_optimizer(comm: Comm, optimizer: Any) -> None:
    """Rank 0's optimiser state (moments, velocities, step counts) on every process: its layout
    as a small object, then each array as a buffer."""
    state = optimizer.state_dict()
    layout = comm.broadcast_object({k: (v.shape, v.dtype.str) for k, v in state.items()})
    out = {}
    for key, (shape, dtype) in layout.items():
        mine = state.get(key)
        if mine is not None and mine.shape == shape and mine.dtype.str == dtype \
                and mine.dtype.kind in "biuf":
            buf = np.array(mine, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        else:
            buf = np.zeros(shape, np.dtype(dtype)) if np.dtype(dtype).kind in "biuf" else None
        if buf is None:                     # text (the optimiser's kind): small, as an object
            out[key] = np.asarray(comm.broadcast_object(state.get(key)))
        else:
            out[key] = comm.broadcast(buf)
    if comm.rank != 0:
        optimizer.load_state_dict(out)


class GradientBuffer:
    """All of a network's gradients in one contiguous buffer, summed over the processes by one
    ``allreduce`` per step.

    Each process's gradients are already weighted by its share of the global batch (the
    trainer scales the loss gradient by ``positions here / positions in the batch``), so the
    sum IS the gradient of the global batch's mean loss. After :meth:`allreduce` each layer's
    ``grads[key]`` is a view of the summed buffer (valid until the next step).
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self.slots = [(layer, key, p.shape, p.size) for layer in net.layers
                      for key, p in layer.params.items()]
        self.buf = np.zeros(sum(s[3] for s in self.slots), net.dtype)

    @property
    def nbytes(self) -> int:
        return int(self.buf.nbytes)

    def allreduce(self, comm: Comm, contribute: bool = True) -> None:
        """Pack (or zeros when ``contribute`` is false: no samples here), sum, unpack."""
        buf = self.buf
        off = 0
        for layer, key, _, size in self.slots:
            if contribute:
                buf[off:off + size] = layer.grads[key].reshape(-1)
            off += size
        if not contribute:
            buf[...] = 0
        comm.allreduce(buf)
        off = 0
        for layer, key, shape, size in self.slots:
            layer.grads[key] = buf[off:off + size].reshape(shape)
            off += size


def abort_job(comm: Comm, exc: BaseException, prog: str = "convnet") -> NoReturn:
    """End every process of the run because this one failed: one line on stderr naming the
    rank and the reason, then ``comm.abort`` (``MPI_Abort``), as ``python -m mpi4py`` does for
    an uncaught exception. Without it the other processes would wait in their next collective
    call forever. Exit status: 2 for a :class:`ConvnetError` (bad input), 130 for Ctrl-C,
    1 otherwise (its traceback is printed first: a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        code, reason = 130, "interrupted"
    elif isinstance(exc, ConvnetError):
        code, reason = 2, str(exc)
    else:
        code = 1
        with contextlib.suppress(Exception):
            traceback.print_exception(exc, file=sys.stderr)
        reason = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{prog}: error: rank {comm.rank} of {comm.size} failed, ending the "
                         f"job: {reason}\n")
        sys.stderr.flush()
    comm.abort(code)


@contextlib.contextmanager
def abort_on_error(comm: Comm, prog: str = "convnet") -> Iterator[None]:
    """``with abort_on_error(comm): ...``: an exception on any process ends the whole job
    (:func:`abort_job`) when there is more than one process; with one it propagates."""
    try:
        yield
    except BaseException as exc:
        if comm.size > 1 and not isinstance(exc, SystemExit):
            abort_job(comm, exc, prog)
        raise
