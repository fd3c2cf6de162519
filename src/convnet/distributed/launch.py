"""How a run finds out it was started by MPI, and how ``convnet train --workers N`` starts one.

Detection reads the environment that MPI launchers give every process they start, before any
MPI library is loaded (so a plain ``convnet train`` never touches MPI): ``PMI_SIZE`` /
``PMI_RANK`` (MPICH's and Intel MPI's ``mpiexec``/hydra, Slurm's PMI-2), ``OMPI_COMM_WORLD_SIZE``
(Open MPI), ``PMIX_RANK`` (PMIx launchers: Open MPI 5, ``srun --mpi=pmix``), ``MV2_COMM_WORLD_SIZE``
(MVAPICH). A launcher none of these names can still be used with ``convnet train --distributed``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from convnet.distributed.comm import INSTALL_HINT, Comm, LocalComm, MPIComm
from convnet.errors import ConfigError

__all__ = ["default_threads", "find_mpiexec", "launched_size", "mpiexec_command", "world"]

#: Environment variables that hold the world size under an MPI launcher.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: Variables that show an MPI launch without its size.
RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID")


def launched_size(environ: Mapping[str, str] | None = None) -> int | None:
    """The number of processes the MPI launcher started, from the environment; 0 when a
    launcher is seen without a size (ask MPI); None when the process was not started by one."""
    env = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        value = env.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return 0 if any(name in env for name in RANK_VARIABLES) else None


def world(distributed: bool | None = None) -> Comm:
    """The communicator of this run: every process of ``mpiexec -n N`` (:class:`MPIComm`) when
    MPI started this process with N > 1 (or ``distributed=True``), else one process
    (:class:`LocalComm`, MPI never loaded). ``distributed=False`` forces one process."""
    if distributed is False:
        return LocalComm()
    size = launched_size()
    if distributed or (size is not None and size != 1):
        comm = MPIComm()
        return comm if comm.size > 1 or distributed else LocalComm()
    return LocalComm()


def default_threads(local_size: int) -> int:
    """Threads per process when ``local_size`` processes share this machine: its cores (those
    this process may run on) divided among them, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


def find_mpiexec() -> Path:
    """The ``mpiexec`` of this Python environment: beside ``sys.executable`` (a virtual
    environment's bin/), the one the ``mpich`` wheel installed (which mpi4py then loads), or
    the first on PATH (a cluster's MPI module). ConfigError naming the fix when there is none."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "mpiexec" and f.parent.name == "bin":
            path = Path(f.locate()).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    found = shutil.which("mpiexec")
    if found:
        return Path(found)
    raise ConfigError(f"--workers needs an mpiexec and none was found (beside {sys.executable}, "
                      f"in the mpich package, or on PATH): {INSTALL_HINT}")


def mpiexec_command(n: int, args: list[str], mpiexec: Path | None = None) -> list[str]:
    """``mpiexec -n N <this python> -m convnet_launch <args>``: the same interpreter and
    environment on every process."""
    return [str(mpiexec or find_mpiexec()), "-n", str(int(n)), sys.executable, "-m",
            "convnet_launch", *args]
