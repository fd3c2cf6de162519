"""Data-parallel training on MPI: ``mpiexec -n N convnet train ...``, ``convnet train --workers N``,
``cn.fit(..., comm=MPIComm())``.

Every process holds the whole network and trains on its share of each GLOBAL batch
(``--batch-size`` is the global batch; the learning rate means what it means on one process).
Per step: each process computes its share's gradient weighted by its share of the batch, one
fused ``Allreduce`` sums them, and every process takes the same optimiser step. BN statistics
are those of the global batch (:mod:`convnet.ops.norm`), and the data order, each image's
augmentation and each unit's dropout mask are functions of the seed, the epoch and the image's
global index (:mod:`convnet.keyed_random`), so N processes train the same model as one, up to
float rounding, and the processes stay bit-identical to each other.

- :class:`Comm` / :class:`LocalComm` / :class:`MPIComm`: the communicators (``comm.py``);
  mpi4py is imported only when an :class:`MPIComm` is made.
- :func:`world`: this run's communicator, from the environment an MPI launcher sets.
- :mod:`~convnet.distributed.sync`: start-up broadcast, the fused gradient buffer, aborting the
  job when one process fails.

Install with ``pip install '.[distributed]'`` (mpi4py and the mpich wheel, which brings
``mpiexec``; on a cluster mpi4py uses the site's MPI instead).
"""

from convnet.distributed.comm import Comm, CommStats, LocalComm, MPIComm, shard
from convnet.distributed.launch import (
    default_threads,
    find_mpiexec,
    launched_size,
    mpiexec_command,
    world,
)
from convnet.distributed.sync import (
    GradientBuffer,
    abort_job,
    abort_on_error,
    broadcast_network,
    broadcast_optimizer,
)

__all__ = [
    "Comm",
    "CommStats",
    "GradientBuffer",
    "LocalComm",
    "MPIComm",
    "abort_job",
    "abort_on_error",
    "broadcast_network",
    "broadcast_optimizer",
    "default_threads",
    "find_mpiexec",
    "launched_size",
    "mpiexec_command",
    "shard",
    "world",
]
