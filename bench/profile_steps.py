"""Where a training step's time goes: each step of the network's plan, forward and backward,
beside the same network's PyTorch twin's whole step.

    python bench/profile_steps.py resnet-20 --batch 32          # a bench/run.py network name
    python bench/profile_steps.py "INPUT(32x32x1) -> ..." --batch 1 --threads 2

Process CPU time (``--clock wall`` for wall time), median over ``--steps`` training steps. Each
plan step (a layer, or a fused group such as CONV -> POOL) is timed around its own call, so the
table shows the kernels' share; "outside the steps" is what the step costs beyond them: the
loss, the optimiser, the plan's bookkeeping and the Python between calls (at batch 1 the
per-layer overhead shows here and in the per-step times of cheap layers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _median_time(fn: Any, steps: int, clock: Any) -> float:
    """Median seconds of ``steps`` calls of ``fn()`` on ``clock``."""
    times = []
    for _ in range(steps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network", help="a bench/run.py network name or a spec")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch
    import torch.nn.functional as TF

    import convnet as cn
    from run import _labels, network_specs
    from torch_twin import nchw, to_torch

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    spec = network_specs().get(args.network, args.network)
    net = cn.build(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *net.input_shape), dtype=np.float32)
    y = _labels(net, args.batch, rng)
    opt = cn.SGD(lr=0.01, momentum=0.9)

    def step() -> None:
        _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
        net.backward(d, need_dx=False)
        opt.step(net)

    step()
    plan_steps = net._plan.steps(True)
    times: dict[tuple[int, str], list[float]] = defaultdict(list)
    names = {}
    for i, s in enumerate(plan_steps):
        names[i] = " + ".join(f"{ly.name}" for ly in s.layers)

        def wrap(fn: Any, key: tuple[int, str]) -> Any:
            def timed(*a: Any, **k: Any) -> Any:
                t0 = clock()
                try:
                    return fn(*a, **k)
                finally:
                    times[key].append(clock() - t0)
            return timed

        s.forward = wrap(s.forward, (i, "fwd"))
        s.backward = wrap(s.backward, (i, "bwd"))
    total = _median_time(step, args.steps, clock)
    model = to_torch(net)
    topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = nchw(x), torch.from_numpy(y)

    def torch_step() -> None:
        topt.zero_grad()
        TF.cross_entropy(model(xt), yt).backward()
        topt.step()

    torch_step()
    ttotal = _median_time(torch_step, args.steps, clock)
    print(f"{args.network} batch {args.batch}, {args.threads} thread(s), {args.clock} clock, "
          f"median of {args.steps} steps; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"training step: convnet {1e3 * total:.2f} ms, PyTorch {1e3 * ttotal:.2f} ms "
          f"({ttotal / total:.2f}x)\n")
    print("| plan step | forward ms | backward ms | share |\n|---|---:|---:|---:|")
    inside = 0.0
    for i in range(len(plan_steps)):
        f = statistics.median(times[(i, "fwd")]) if times[(i, "fwd")] else 0.0
        b = statistics.median(times[(i, "bwd")]) if times[(i, "bwd")] else 0.0
        inside += f + b
        print(f"| {names[i]} | {1e3 * f:.3f} | {1e3 * b:.3f} | {100 * (f + b) / total:.0f}% |")
    print(f"| (outside the steps: loss, SGD, plan, Python) | | | "
          f"{100 * (total - inside) / total:.0f}% ({1e3 * (total - inside):.2f} ms) |")


if __name__ == "__main__":
    main()
