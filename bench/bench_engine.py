"""Reference network, convnet against PyTorch CPU, side by side in one run.

    python bench/bench_engine.py [--reps 7] [--threads 2]

Network (the engine issue's reference):
    INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> CONV(64,F=3,P=1) -> RELU -> POOL
    -> FC(128) -> RELU -> FC(10)

For batch 128 and 32 it times one training step (forward + backward + SGD step with momentum)
and one inference pass, repetitions interleaved between the two systems (the machine is shared
and noisy), and prints the medians as images/s and the ratio convnet / PyTorch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

REFERENCE = ("INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> CONV(64,F=3,P=1) -> RELU "
             "-> POOL -> FC(128) -> RELU -> FC(10)")


def make_convnet(seed: int = 0):
    import convnet as cn

    return cn.Sequential(
        [cn.Conv(32, 3, P=1), cn.ReLU(), cn.MaxPool(), cn.Conv(64, 3, P=1), cn.ReLU(),
         cn.MaxPool(), cn.FC(128), cn.ReLU(), cn.FC(10)],
        input_shape=(28, 28, 1), seed=seed,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batches", default="128,32")
    args = ap.parse_args()

    import torch

    import convnet as cn
    from torch_twin import to_torch  # bench/ is on sys.path when run as a script

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        net = make_convnet()
        model = to_torch(net)  # same layers and initial weights, NCHW
        opt = cn.SGD(lr=0.01, momentum=0.9)
        topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        yt = torch.from_numpy(y)

        def ours_train():
            loss, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
            net.backward(d, need_dx=False)
            opt.step(net)

        def torch_train():
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
            loss.backward()
            topt.step()

        def ours_infer():
            net.forward(x)

        def torch_infer():
            with torch.no_grad():
                model(xt)

        for label, a, b in (("train", ours_train, torch_train), ("infer", ours_infer, torch_infer)):
            ta, tb = [], []
            a(), b()  # warm-up
            for _ in range(args.reps):
                t0 = time.perf_counter()
                a()
                ta.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b()
                tb.append(time.perf_counter() - t0)
            ips_a = batch / statistics.median(ta)
            ips_b = batch / statistics.median(tb)
            rows.append((label, batch, ips_a, ips_b, ips_a / ips_b))

    print(f"# reference network: {REFERENCE}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads={args.threads}, numpy {np.__version__}, torch {torch.__version__}, "
          f"median of {args.reps}")
    print("| step | batch | convnet img/s | PyTorch img/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, batch, a, b, r in rows:
        print(f"| {label} | {batch} | {a:,.0f} | {b:,.0f} | {r:.2f}x |")


if __name__ == "__main__":
    main()
