"""Data-parallel training on MPI (issue 16): throughput, the cost of Allreduce, and a scaling model.

1. Throughput of the reference network (zoo ``fashion``) on real Fashion-MNIST at global batch
   128 and 512: 1 process x 2 threads against 2 MPI processes x 1 thread (``mpiexec -n 2``), each
   configuration in fresh processes; images/s (median step after 2 warm-up steps) and the share
   of the step spent in ``Allreduce`` (all of its calls: the fused gradients, the metrics, the
   stop flag; it includes waiting for the slower process).
2. ``Allreduce`` of one float32 buffer the size of each zoo network's gradients, 2 processes on
   this machine (shared memory), median of repeats after a barrier; and mpi4py's pickled
   ``allreduce`` of the same arrays (what ``Comm`` avoids) on the reference network's buffer.
3. Compute per image of a training step (1 process x 2 threads, batch 64) for the zoo networks
   with small inputs; for the ImageNet-sized ones an estimate from their multiply-accumulates at
   the rate measured on the small ones (marked "est.").
4. A scaling model for machines on a 10 Gbit/s network, one process per machine computing at
   the rate of step 3: a ring allreduce costs ``2(N-1) alpha + 2 (N-1)/N * bytes / bandwidth``
   (alpha = 50 us per message, bandwidth 1.25 GB/s; no overlap of communication with the
   backward pass, as in this implementation); the table gives the number of processes N at which
   communication exceeds 20% of the step, for a global batch of 512 (strong scaling, what
   ``--batch-size`` means) and for 128 images per process (weak scaling).

Writes ``bench/results/distributed.md`` (and prints it).

    python bench/bench_distributed.py                  # ~5 min on 2 busy cores
    python bench/bench_distributed.py --steps 6 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

BANDWIDTH = 10e9 / 8          # 10 Gbit/s in bytes/s
ALPHA = 50e-6                 # seconds per message step of the ring (TCP over 10 GbE)
THRESHOLD = 0.20              # communication share of the step
SMALL_SIDE = 64               # zoo networks measured directly (input side <= this)


# --------------------------------------------------------------------------------- children
def _child_train(batch: int, steps: int, threads: int, out: str) -> None:
    """One training epoch of ``steps + 2`` batches of the reference network; rank 0 writes the
    step times and the Allreduce time per step."""
    from threadpoolctl import threadpool_limits

    import convnet as cn
    from convnet.data import Normalizer, load_dataset
    from convnet.distributed import world
    from convnet.optim import Adam
    from convnet.train import Trainer
    from convnet.train.callbacks import Callback

    comm = world()
    train, _ = load_dataset("fashion")
    n = batch * (steps + 2)
    x, y = train.x[:n], train.y[:n]

    class Clock(Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def on_epoch_begin(self, epoch, logs):
            self.marks.append((time.perf_counter(), comm.stats.seconds))

        def on_batch_end(self, batch, logs):
            self.marks.append((time.perf_counter(), comm.stats.seconds))

    clock = Clock()
    net = cn.build("fashion", seed=0)
    trainer = Trainer(net, (x, y), epochs=1, batch_size=batch, optimizer=Adam(lr=1e-3),
                      seed=0, normalizer=Normalizer.fit(x), callbacks=[clock], comm=comm)
    with threadpool_limits(threads):
        trainer.run()
    if comm.rank != 0:
        return
    marks = clock.marks[3:]                       # after 2 warm-up steps
    steps_s = [b[0] - a[0] for a, b in zip(marks[:-1], marks[1:], strict=True)]
    ar_s = [b[1] - a[1] for a, b in zip(marks[:-1], marks[1:], strict=True)]
    grads = sum(p.size for _, p, _ in net.parameters()) * 4
    Path(out).write_text(json.dumps({
        "processes": comm.size, "threads": threads, "batch": batch, "steps": steps_s,
        "allreduce": ar_s, "grad_bytes": grads}))


def _child_allreduce(sizes: dict[str, int], out: str, quick: bool) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    res: dict[str, dict[str, float]] = {}
    for name, count in sizes.items():
        buf = np.ones(count, np.float32)
        reps = 3 if buf.nbytes > 50e6 else (5 if quick else 15)
        times = []
        for _ in range(reps + 1):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        res[name] = {"bytes": buf.nbytes, "buffer_s": statistics.median(times[1:])}
        del buf
    # the pickled object path on the reference network's gradients, one array per parameter
    import convnet as cn

    arrays = [np.ones(p.shape, np.float32) for _, p, _ in cn.build("fashion").parameters()]
    fused = np.concatenate([a.reshape(-1) for a in arrays])
    pick, buf_t = [], []
    for _ in range(6 if quick else 16):
        comm.Barrier()
        t0 = time.perf_counter()
        for a in arrays:                    # the object path: each array pickled, summed
            comm.allreduce(a, op=MPI.SUM)
        pick.append(time.perf_counter() - t0)
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, fused, op=MPI.SUM)
        buf_t.append(time.perf_counter() - t0)
    if comm.rank == 0:
        res["_pickled"] = {"pickled_s": statistics.median(pick[1:]),
                           "buffer_s": statistics.median(buf_t[1:]), "bytes": fused.nbytes}
        Path(out).write_text(json.dumps(res))


# ----------------------------------------------------------------------------------- parent
def _mpiexec() -> str:
    from convnet.distributed import find_mpiexec

    return str(find_mpiexec())


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _throughput(batch: int, procs: int, steps: int, tmp: Path) -> dict:
    out = tmp / f"train-{batch}-{procs}.json"
    threads = 2 // procs
    child = [sys.executable, __file__, "--child", "train", "--batch", str(batch), "--steps",
             str(steps), "--threads", str(threads), "--json", str(out)]
    _run(child if procs == 1 else [_mpiexec(), "-n", str(procs), *child])
    r = json.loads(out.read_text())
    step = statistics.median(r["steps"])
    share = sum(r["allreduce"]) / sum(r["steps"])
    return {**r, "step_s": step, "images_s": batch / step, "share": share}


def _compute_per_image(names: list[str], quick: bool) -> dict[str, float]:
    """Seconds per image of a training step, 1 process x 2 threads, batch 64."""
    from threadpoolctl import threadpool_limits

    import convnet as cn

    out = {}
    with threadpool_limits(2):
        for name in names:
            net = cn.build(name, seed=0)
            rng = np.random.default_rng(0)
            x = rng.random((64, *net.input_shape), dtype=np.float32)
            y = rng.integers(0, net.output_shape[-1], (64, *net.output_shape[:-1]))
            times = []
            for _ in range(3 if quick else 5):
                t0 = time.perf_counter()
                _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
                net.backward(d, need_dx=False)
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times[1:]) / 64
    return out


def _ring(nbytes: float, n: int) -> float:
    return 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * nbytes / BANDWIDTH


def _crossing(nbytes: float, per_image: float, *, global_batch: int | None = None,
              per_rank: int | None = None, limit: int = 1 << 20) -> int | None:
    """Smallest N >= 2 at which the ring allreduce exceeds THRESHOLD of the step."""
    n = 2
    while n <= limit:
        imgs = global_batch / n if global_batch is not None else per_rank
        comm = _ring(nbytes, n)
        if comm / (comm + per_image * imgs) > THRESHOLD:
            return n
        n = n + 1 if n < 64 else int(n * 1.05) + 1
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(HERE / "results" / "distributed.md"))
    ap.add_argument("--child", choices=("train", "allreduce"), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "train":
        _child_train(args.batch, args.steps, args.threads, args.json)
        return
    if args.child == "allreduce":
        _child_allreduce(json.loads(args.sizes), args.json, args.quick)
        return

    import convnet as cn
    from convnet import arith
    from convnet.spec import zoo

    load0 = os.getloadavg()
    t_start = time.time()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-distributed-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)

    # 1. throughput
    rows = []
    for batch in (128, 512):
        for procs in (1, 2):
            r = _throughput(batch, procs, args.steps, tmp)
            rows.append(r)
            print(f"batch {batch}: {procs} x {r['threads']}: {r['images_s']:.0f} img/s, "
                  f"allreduce {100 * r['share']:.1f}%", flush=True)

    # 2. allreduce on the zoo networks' gradient sizes
    nets = {}
    for name in zoo.zoo_names():
        net = cn.build(name, weights=False)
        macs = sum(r.macs for r in arith.layer_rows(net))
        nets[name] = {"params": net.num_params, "macs": macs,
                      "side": max(net.input_shape[:2])}
    sizes = {name: v["params"] for name, v in nets.items()}
    out = tmp / "allreduce.json"
    _run([_mpiexec(), "-n", "2", sys.executable, __file__, "--child", "allreduce", "--json",
          str(out), "--sizes", json.dumps(sizes)] + (["--quick"] if args.quick else []))
    ar = json.loads(out.read_text())
    print(f"allreduce measured on {len(sizes)} sizes", flush=True)

    # 3. compute per image
    small = [n for n, v in nets.items() if v["side"] <= SMALL_SIDE]
    measured = _compute_per_image(small, args.quick)
    rate = statistics.median(measured[n] / nets[n]["macs"] for n in small
                             if nets[n]["macs"] >= 4e6)          # seconds per MAC
    per_image = {n: measured.get(n, nets[n]["macs"] * rate) for n in nets}
    print("compute per image measured", flush=True)

    # 4. the report
    load1 = os.getloadavg()
    lines = [
        "# Data-parallel training on MPI (issue 16)",
        "",
        f"`python bench/bench_distributed.py{' --quick' if args.quick else ''} --steps "
        f"{args.steps}`; {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load "
        f"average {load0[0]:.2f} before and {load1[0]:.2f} after (the machine is shared), "
        f"{time.time() - t_start:.0f} s. MPICH from the `mpich` wheel, mpi4py "
        f"{__import__('mpi4py').__version__}.",
        "",
        "## Reference network (zoo `fashion`, 421,642 parameters) on Fashion-MNIST",
        "",
        "| global batch | processes x threads | images/s | step (ms, median) | share of the "
        "step in Allreduce | gradient buffer |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['processes']} x {r['threads']} | "
                     f"{r['images_s']:,.0f} | {1e3 * r['step_s']:.1f} | "
                     f"{100 * r['share']:.1f}% | {r['grad_bytes'] / 2**20:.2f} MiB |")
    p = ar["_pickled"]
    lines += [
        "",
        f"The Allreduce share includes waiting for the slower process. On this reference "
        f"network's gradients ({p['bytes'] / 2**20:.2f} MiB, 2 processes here) one fused "
        f"buffer `Allreduce` takes {1e3 * p['buffer_s']:.2f} ms; mpi4py's pickled "
        f"`allreduce` of the same arrays (one per parameter) {1e3 * p['pickled_s']:.2f} ms "
        f"({p['pickled_s'] / p['buffer_s']:.0f}x).",
        "",
        "## Scaling model: machines on a 10 Gbit/s network",
        "",
        f"Ring allreduce `2(N-1)*{ALPHA * 1e6:.0f}us + 2(N-1)/N * bytes / 1.25 GB/s`, no overlap "
        "with the backward pass; compute per image of a training step measured here (1 "
        "process x 2 threads, batch 64: one 2-core machine per process), or estimated from "
        "the multiply-accumulates at the median rate of the measured networks "
        f"({rate * 1e12:.1f} ps per MAC) where marked est. N: the number of processes at "
        f"which communication exceeds {100 * THRESHOLD:.0f}% of the step.",
        "",
        "| network | parameters | gradients | Allreduce here, 2 processes | compute per image | "
        "ring at N=2 on 10 Gbit/s | N, global batch 512 | N, 128 images per process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in sorted(nets.items(), key=lambda kv: kv[1]["params"]):
        nbytes = ar[name]["bytes"]
        pi = per_image[name]
        strong = _crossing(nbytes, pi, global_batch=512)
        weak = _crossing(nbytes, pi, per_rank=128)
        est = "" if name in measured else " est."
        lines.append(
            f"| {name} | {v['params']:,} | {nbytes / 2**20:,.1f} MiB | "
            f"{1e3 * ar[name]['buffer_s']:,.2f} ms | {1e3 * pi:,.2f} ms{est} | "
            f"{1e3 * _ring(nbytes, 2):,.2f} ms | {strong if strong else '> 10^6'} | "
            f"{weak if weak else '> 10^6'} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
