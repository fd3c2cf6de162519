"""Data-parallel training on MPI (issue 16): N processes train the one-process model.

The MPI tests start real ``mpiexec`` jobs of this very file (``python tests/test_distributed.py
worker ...``, see the bottom) on tiny networks and a synthetic batch of 90 images:

- ``-n 2`` and ``-n 3`` against one process with the same global batch of 22: the shares are
  uneven (7/7/8), and the last batch of each epoch holds 2 images, so with 3 processes rank 0
  has NONE and must still join every collective call;
- a plain net, and a BN + DROPOUT + augmentation net (float32, relative tolerance 1e-5; and in
  float64, where the sums are exact to ~1e-15, 1e-12);
- the processes bit-identical to each other; a checkpoint of 2 processes resumed on 3; a
  process that raises, and one that is killed, end the whole job; ``convnet train --workers``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import convnet as cn
from convnet.data import Augmentation
from convnet.distributed import LocalComm, find_mpiexec, launched_size, shard
from convnet.errors import ConfigError
from convnet.keyed_random import epoch_order
from convnet.optim import SGD
from convnet.train import Trainer, evaluate, load_checkpoint
from convnet.train.callbacks import Callback, ModelCheckpoint

PLAIN = "INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)"
# no bias before a BN: BN removes any constant, so such a bias's true gradient is 0 and its
# value after training is rounding noise, which no tolerance could compare
BN_DROPOUT = ("INPUT(8x8x1) -> CONV(6,F=3,P=1,bias=false) -> BN -> RELU -> POOL -> DROPOUT(0.3) "
              "-> FC(16,bias=false) -> BN -> RELU -> FC(10)")
NETS = {"plain": (PLAIN, "float32"), "bn": (BN_DROPOUT, "float32"),
        "bn64": (BN_DROPOUT, "float64")}
BATCH, EPOCHS = 22, 2            # 90 images: batches of 22, 22, 22, 22, 2
TINY = "INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)"
QUIET = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}   # 2 cores, 3 processes


def _data(dtype: str = "float32"):
    rng = np.random.default_rng(0)
    x = rng.random((90, 8, 8, 1)).astype(dtype)
    vx = rng.random((31, 8, 8, 1)).astype(dtype)
    label = lambda a: a.reshape(len(a), -1)[:, :10].argmax(1).astype(np.int64)  # noqa: E731
    return (x, label(x)), (vx, label(vx))


def _trainer(name: str, comm=None, callbacks=()) -> Trainer:
    spec, dtype = NETS[name]
    train, val = _data(dtype)
    net = cn.build(spec, seed=1, dtype=np.dtype(dtype))
    aug = Augmentation(pad=1, flip=True) if "BN" in spec else None
    return Trainer(net, train, val, epochs=EPOCHS, batch_size=BATCH,
                   optimizer=SGD(lr=0.05, momentum=0.9), seed=3, augment=aug, comm=comm,
                   callbacks=callbacks)


def _record(trainer: Trainer) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v, np.float64) for k, v in trainer.net.state_dict().items()}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        out[f"history.{key}"] = np.array(trainer.history[key], np.float64)
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the array's scale."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def references():
    """One-process training of each net (what the MPI runs must reproduce)."""
    out = {}
    for name in NETS:
        t = _trainer(name)
        t.run()
        out[name] = _record(t)
    return out


def _mpiexec(n: int, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [str(find_mpiexec()), "-n", str(n), sys.executable, str(Path(__file__).resolve()),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **QUIET})


def _load(path: Path) -> list[dict[str, np.ndarray]]:
    """Per rank: name -> array, from a worker's gathered file."""
    d = np.load(path)
    keys, sizes, shapes = list(d["keys"]), d["sizes"], json.loads(str(d["shapes"]))
    ranks = []
    for flat in d["all"]:
        rec, off = {}, 0
        for k, n in zip(keys, sizes, strict=True):
            rec[k] = flat[off:off + n].reshape(shapes[k])
            off += n
        ranks.append(rec)
    return ranks


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory):
    """``-n 2`` (which also writes a checkpoint in the middle of epoch 2), then ``-n 3``
    (which also resumes that checkpoint)."""
    tmp = tmp_path_factory.mktemp("mpi")
    runs = {}
    for n in (2, 3):
        out = tmp / f"n{n}.npz"
        proc = _mpiexec(n, "worker", str(out), str(tmp / "ckpt"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[n] = _load(out)
    return runs


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", list(NETS))
def test_processes_train_the_one_process_model(mpi_runs, references, n, name):
    """Same weights as one process with the same global batch (BN statistics over the global
    batch, dropout masks and crops of each image, the uneven shares weighted by their size):
    1e-5 relative in float32, where a wrong averaging misses by 2e-2
    (test_wrong_averaging_is_caught), and 1e-12 in float64."""
    tol = 1e-12 if name.endswith("64") else 1e-5
    ref = references[name]
    got = {k[len(name) + 1:]: v for k, v in mpi_runs[n][0].items() if k.startswith(name + "/")}
    assert set(got) == set(ref)
    for key, v in ref.items():
        assert _rel(got[key], v) < tol, (key, _rel(got[key], v))


@pytest.mark.parametrize("n", [2, 3])
def test_processes_are_bit_identical(mpi_runs, n):
    ranks = mpi_runs[n]
    assert len(ranks) == n
    for other in ranks[1:]:
        for key, v in ranks[0].items():
            np.testing.assert_array_equal(other[key], v, err_msg=key)


def test_evaluation_split_over_processes(mpi_runs):
    """``evaluate(..., comm)`` on 3 processes: the one-process evaluation of the same weights
    (loss, confusion matrix, every prediction, gathered in order)."""
    rec = mpi_runs[3][0]
    spec, _ = NETS["plain"]
    net = cn.build(spec, seed=1)
    net.load_state_dict({k[6:]: v.astype(np.float32) for k, v in rec.items()
                         if k.startswith("plain/") and "history" not in k})
    _, val = _data()
    want = evaluate(net, val, batch_size=4)
    np.testing.assert_array_equal(rec["eval/predictions"], want["predictions"])
    np.testing.assert_array_equal(rec["eval/confusion"], want["confusion"])
    assert abs(rec["eval/loss"][0] - want["loss"]) < 1e-6 * abs(want["loss"])


def test_checkpoint_of_two_processes_resumes_on_three(mpi_runs, references):
    """``-n 2`` stopped in the middle of epoch 2 (step 7); ``-n 3`` resumed that checkpoint and
    finished: the uninterrupted one-process run's weights."""
    got = mpi_runs[3][0]
    for key, v in references["bn"].items():
        if key.startswith("history."):
            continue
        assert _rel(got[f"resumed/{key}"], v) < 1e-5, key


def test_wrong_averaging_is_caught(references):
    """The tolerance can fail: training the plain net with each share's MEAN gradient averaged
    equally over 3 uneven shares (7, 7, 8 images; the last batch's 2 images as 0, 1, 1), instead
    of weighting each by its share, ends 2.4e-2 away from the right weights (measured). The same loop with
    the right weights lands within float rounding, so it replays the trainer faithfully."""
    train, _ = _data()

    def simulate(weighted: bool) -> dict[str, np.ndarray]:
        net = cn.build(PLAIN, seed=1)
        opt = SGD(lr=0.05, momentum=0.9)
        for epoch in range(EPOCHS):
            order = epoch_order(3, epoch, 90)
            for b in range(0, 90, BATCH):
                idx = order[b:b + BATCH]
                total = {name: np.zeros_like(p) for name, p, _ in net.parameters()}
                shares = [idx[slice(*shard(len(idx), r, 3))] for r in range(3)]
                shares = [s for s in shares if len(s)]
                for s in shares:
                    _, d = cn.softmax_cross_entropy(net.forward(train[0][s], train=True),
                                                    train[1][s])
                    net.backward(d)
                    w = len(s) / len(idx) if weighted else 1 / len(shares)
                    for name, _, g in net.parameters():
                        total[name] += w * g
                for layer in net.layers:
                    for key in layer.params:
                        layer.grads[key] = total[f"{layer.name}.{key}"]
                opt.step(net)
        return {k: v.astype(np.float64) for k, v in net.state_dict().items()}

    right, wrong = simulate(True), simulate(False)
    ref = references["plain"]
    assert max(_rel(right[k], ref[k]) for k in right) < 1e-5
    assert max(_rel(wrong[k], ref[k]) for k in wrong) > 1e-3   # measured 2.4e-2


def test_local_comm_is_the_one_process_path(references):
    """``cn.fit(..., comm=LocalComm())``: bit for bit the run without a communicator."""
    t = _trainer("bn", comm=LocalComm())
    h = t.run()
    assert h.stop_reason is None and t.comm.size == 1
    for key, v in references["bn"].items():
        np.testing.assert_array_equal(_record(t)[key], v, err_msg=key)
    spec, _ = NETS["bn"]
    train, val = _data()
    # cn.fit with a LocalComm is cn.fit without one, bit for bit
    with_comm, without = cn.build(spec, seed=1), cn.build(spec, seed=1)
    h1 = cn.fit(with_comm, train, val, epochs=1, batch_size=BATCH, optimizer=SGD(lr=0.05),
                seed=3, comm=LocalComm())
    h2 = cn.fit(without, train, val, epochs=1, batch_size=BATCH, optimizer=SGD(lr=0.05),
                seed=3)
    assert h1["loss"] == h2["loss"] and len(h1) == 1
    for key, v in without.state_dict().items():
        np.testing.assert_array_equal(with_comm.state_dict()[key], v, err_msg=key)
    assert not np.array_equal(with_comm.state_dict()["conv1.W"],
                              cn.build(spec, seed=1).state_dict()["conv1.W"])  # it trained


class _FakeComm:
    """Rank ``rank`` of 2, whose broadcast_object gives what rank 0 sends (``sent``)."""

    def __init__(self, rank, sent=None):
        self.rank, self.size, self.sent, self.log = rank, 2, sent, []

    def broadcast_object(self, obj, root=0):
        self.log.append(("broadcast", obj))
        return obj if self.rank == 0 else self.sent


@pytest.mark.parametrize("rank", [0, 1])
def test_download_on_several_processes_is_rank_0_first(rank, monkeypatch):
    import argparse

    import convnet.data
    from convnet.cli import train as train_cli
    from convnet.errors import DataError

    comm = _FakeComm(rank)

    def fake_load(name, *, data_dir, download, progress, **kw):
        comm.log.append(("load", download))
        return ("train", "test")

    monkeypatch.setattr(convnet.data, "load_dataset", fake_load)
    monkeypatch.setattr(train_cli, "_data_options", lambda s: {})
    args = argparse.Namespace(download=True, data_dir=None)
    assert train_cli._load_data({"data": "fashion"}, args, comm, print) == ("train", "test")
    # rank 0 fetches, then tells the others (the barrier); they only read, after it
    assert comm.log == ([("load", True), ("broadcast", None)] if rank == 0 else
                        [("broadcast", None), ("load", False)])
    # rank 0 failing: it reports its own error, the others say that rank 0 failed
    failing = _FakeComm(rank, sent="mirror down")

    def fail(name, **kw):
        raise DataError("mirror down")

    monkeypatch.setattr(convnet.data, "load_dataset", fail)
    with pytest.raises(DataError, match="mirror down" if rank == 0 else
                       "rank 0 could not fetch the data set: mirror down"):
        train_cli._load_data({"data": "fashion"}, args, failing, print)
    assert failing.log == [("broadcast", "mirror down" if rank == 0 else None)]


def test_a_failing_process_ends_the_job():
    """Rank 1 raises at step 3 while rank 0 waits in a collective: the job ends with a non-zero
    status and one line naming the rank and the reason (MPI_Abort), not a hang."""
    proc = _mpiexec(2, "raise", timeout=60)
    assert proc.returncode not in (0, None)
    lines = [ln for ln in proc.stderr.splitlines() if "failed, ending the job" in ln]
    assert lines == ["convnet: error: rank 1 of 2 failed, ending the job: RuntimeError: the data "
                     "source broke at step 3"], proc.stderr


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _rank_pid(root: int, rank: int) -> int | None:
    for pid in _descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env:
            return pid
    return None


def test_killed_process_ends_job_then_resume_on_three(tmp_path):
    """``convnet train --workers 2``; rank 1 is killed (SIGKILL) once a checkpoint exists: the
    job ends with a non-zero status (no process left waiting in a collective), last.npz is
    intact, and ``mpiexec -n 3 convnet train --resume`` finishes the run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "convnet_launch", "train", "--arch", TINY, "--epochs", "500",
           "--out", str(out), "--workers", "2", "--progress-every", "1000"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **QUIET})
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.npz").exists() and job.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.1)
        pid = _rank_pid(job.pid, 1)
        assert pid is not None and job.poll() is None
        os.kill(pid, signal.SIGKILL)
        _, err = job.communicate(timeout=60)     # a hang would time out here
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0, err
    # MPI's banner (stdout), then our one line on what it means for the run
    last = err.strip().splitlines()[-1]
    assert last.startswith("convnet train: error: the job ended with status ") \
        and f"--resume {out}" in last, err
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.epoch >= 1 and ckpt.config["processes"] == 2
    cmd = [str(find_mpiexec()), "-n", "3", sys.executable, "-m", "convnet_launch", "train",
           "--resume", str(out), "--epochs", str(ckpt.epoch + 1)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **QUIET})
    assert done.returncode == 0, done.stderr
    assert "on 3 processes (it was written by 2)" in done.stderr
    assert done.stdout.count("test accuracy") == 1            # rank 0 alone prints
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == ckpt.epoch + 1
    epochs = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, ckpt.epoch + 2))


# ------------------------------------------------------------------------ without processes
def test_launch_is_detected_from_the_environment():
    assert launched_size({}) is None
    assert launched_size({"PMI_SIZE": "4", "PMI_RANK": "0"}) == 4
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert launched_size({"PMIX_RANK": "0"}) == 0           # a launcher, size from MPI


def test_one_process_without_a_launcher(monkeypatch):
    """Not started by MPI: one process, MPI never loaded; the threads are the machine's."""
    from convnet.distributed import default_threads, world

    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALRANKID",
                 "MV2_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # would fail if it were imported
    comm = world()
    assert isinstance(comm, LocalComm) and (comm.rank, comm.size) == (0, 1)
    assert default_threads(1) >= default_threads(2) >= 1 and default_threads(10**6) == 1
    assert find_mpiexec().is_file()


def test_missing_mpi_is_one_line(monkeypatch, tmp_path, capsys):
    from convnet.cli.main import main
    from convnet.distributed import MPIComm

    monkeypatch.setitem(sys.modules, "mpi4py", None)       # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install '\.\[distributed\]'"):
        MPIComm()
    assert main(["train", "--distributed", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convnet train: error: ") \
        and "pip install '.[distributed]'" in err[0]


def test_workers_command_line_is_the_same_run():
    """--workers re-runs the command under mpiexec: every option but --workers, read back the
    same by the parser."""
    from convnet.cli.main import make_parser
    from convnet.cli.train import _argv

    parser = make_parser()
    argv = ["train", "--arch", TINY, "--epochs", "3", "--lr", "0.01", "--augment",
            "--workers", "2", "--val-split", "0.2", "--max-data-bytes", "1000000"]
    args = parser.parse_args(argv)
    again = parser.parse_args(["train", *_argv(args)])
    assert "--workers" not in _argv(args)
    assert {**vars(again), "workers": 2, "_run": None} == {**vars(args), "_run": None}


# ------------------------------------------------------------------------------- the worker
class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, batch, logs):
        if self.trainer.step == self.step:
            self.trainer.request_stop()


class _BreakAt(Callback):
    def on_batch_end(self, batch, logs):
        if self.trainer.step == 3 and self.trainer.rank == 1:
            raise RuntimeError("the data source broke at step 3")


def _worker(out: str, ckpt_dir: str) -> None:
    """Every net on this job's processes; rank 0 saves every rank's results."""
    from convnet.distributed import MPIComm

    comm = MPIComm()
    rec: dict[str, np.ndarray] = {}
    for name in NETS:
        t = _trainer(name, comm=comm)
        t.run()
        rec.update({f"{name}/{k}": v for k, v in _record(t).items()})
        if name == "plain":
            res = evaluate(t.net, _data()[1], batch_size=4, comm=comm)
            rec["eval/predictions"] = res["predictions"].astype(np.float64)
            rec["eval/confusion"] = res["confusion"].astype(np.float64)
            rec["eval/loss"] = np.array([res["loss"]])
    ckpt = Path(ckpt_dir)
    if comm.size == 2:     # stop in the middle of epoch 2: ModelCheckpoint saves last.npz
        t = _trainer("bn", comm=comm, callbacks=[_StopAt(7), ModelCheckpoint(ckpt)])
        assert t.run().stop_reason == "interrupted"
    else:                  # resume it on this number of processes
        t = _trainer("bn", comm=comm)
        t.restore(ckpt / "last.npz")
        assert t.run().stop_reason is None
        rec.update({f"resumed/{k}": v for k, v in _record(t).items()})
    keys = sorted(rec)
    flat = np.concatenate([np.asarray(rec[k], np.float64).reshape(-1) for k in keys])
    everyone = comm.allgather(flat[None], [1] * comm.size)
    if comm.rank == 0:
        np.savez(out, keys=np.array(keys), sizes=np.array([rec[k].size for k in keys]),
                 shapes=np.array(json.dumps({k: list(np.shape(rec[k])) for k in keys})),
                 all=everyone)


def _raise() -> None:
    from convnet.distributed import MPIComm

    _trainer("plain", comm=MPIComm(), callbacks=[_BreakAt()]).run()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "raise":
        _raise()
