"""Fashion-MNIST: a network trained by convnet and by PyTorch CPU, same recipe, one run.

    python bench/bench_fashion.py [--recipe default|reference] [--epochs N] [--threads 2]
                                  [--out bench/results/fashion.md]

Two recipes:

- ``default`` (the default): what ``convnet train --data fashion`` does with no other option,
  read from its recipe table (``convnet.cli.train.RECIPES``): the zoo network "fashion-bn"
  (BN after each CONV -> RELU -> POOL stage, DROPOUT before the classifier), SGD with Nesterov
  momentum 0.9 and weight decay 5e-4, the one-cycle schedule peaking at lr 0.1, batch 128,
  18 epochs. Unlike the CLI it trains on all 60,000 training images (no validation split).
- ``reference``: the engine issue's reference network ("fashion", no BN), SGD as above, cosine
  from lr 0.05 with one warm-up epoch, batch 128 (results in bench/results/fashion-reference.md).

Same for both systems: architecture (flattening in NHWC order), initial weights (PyTorch's copied
from convnet's), optimiser, schedule (stepped per batch), batches and augmentation (random crop
with padding 2 and horizontal flip, from the same seeded generator, so both see identical
batches), dropout masks (PyTorch's dropout is given the keys of convnet's, so both drop the same
units), normalisation (per-channel statistics of the training set). Epochs alternate between the
two systems, so machine load affects both alike. Each system's epoch time counts its own data
pipeline and training steps; evaluation on the test set after each epoch is timed separately.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import convnet as cn
from convnet.cli.train import RECIPES
from convnet.data import augment_batch, load_dataset
from convnet.data.transforms import Normalizer
from convnet.keyed_random import SampleKeys
from convnet.optim import CosineLR, OneCycleLR
from convnet.spec import zoo

_CLI = RECIPES["fashion-mnist"]
#: name -> (zoo network, lr, schedule, epochs, batch, what the schedule is in words)
SETUPS = {
    "default": (_CLI["arch"], _CLI["lr"], _CLI["schedule"], _CLI["epochs"], _CLI["batch_size"]),
    "reference": ("fashion", 0.05, "cosine", 15, 128),
}


def batches(n: int, batch: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch):
        yield order[i:i + batch]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=list(SETUPS), default="default")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--batch", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--lr", type=float, default=None, help="(peak) lr; default: the recipe's")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images")
    ap.add_argument("--out", default=None, help="default: bench/results/fashion.md for the "
                    "default recipe, bench/results/fashion-reference.md for the reference one")
    args = ap.parse_args()
    arch, lr, schedule_name, epochs, batch = SETUPS[args.recipe]
    args.epochs = args.epochs or epochs
    args.batch = args.batch or batch
    args.lr = args.lr or lr
    if args.out is None:
        args.out = "bench/results/fashion.md" if args.recipe == "default" else \
            "bench/results/fashion-reference.md"
    spec = " ".join(zoo.get(arch).split())

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    train, test = load_dataset("fashion-mnist")
    xtr, ytr = train.x, train.y
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    norm = Normalizer.fit(xtr)
    xtr, xte = norm.apply(xtr), norm.apply(test.x)
    yte = test.y
    n = len(xtr)
    steps_per_epoch = -(-n // args.batch)
    total = steps_per_epoch * args.epochs
    if schedule_name == "onecycle":
        schedule = OneCycleLR(args.lr, total)
        schedule_text = (f"one-cycle to lr {args.lr} (cosine up over the first 30% of the "
                         "steps from lr/25, then cosine down to lr/25e4; per batch)")
    else:
        schedule = CosineLR(args.lr, total, warmup_steps=min(steps_per_epoch, total // 4))
        schedule_text = f"cosine from lr {args.lr} with 1 warm-up epoch (per batch)"

    net = cn.build(spec, seed=args.seed)
    dropouts = [layer for layer in net.layers if layer.kind == "DROPOUT"]
    from torch_twin import to_torch  # bench/ is on sys.path when run as a script

    model = to_torch(net)  # same layers and initial weights, NCHW, NHWC flattening
    twins = [m for m in model if type(m).__name__ == "KeyedDropout"]
    opt = cn.SGD(lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    topt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)
    xte_t = torch.from_numpy(xte.transpose(0, 3, 1, 2).copy())

    def ours_epoch(epoch: int, rng: np.random.Generator) -> float:
        total_loss = 0.0
        for i, idx in enumerate(batches(n, args.batch, rng)):
            xb = augment_batch(xtr[idx], rng, pad=2, flip=True)
            for layer in dropouts:
                layer.use_keys(SampleKeys.from_generator(rng, len(idx)))
            opt.lr = schedule(epoch * steps_per_epoch + i)
            loss, d = cn.softmax_cross_entropy(net.forward(xb, train=True), ytr[idx])
            net.backward(d, need_dx=False)
            opt.step(net)
            total_loss += loss * len(idx)
        return total_loss / n

    def torch_epoch(epoch: int, rng: np.random.Generator) -> float:
        total_loss = 0.0
        model.train()
        for i, idx in enumerate(batches(n, args.batch, rng)):
            xb = augment_batch(xtr[idx], rng, pad=2, flip=True)
            for m in twins:
                m.keys = SampleKeys.from_generator(rng, len(idx))
            for g in topt.param_groups:
                g["lr"] = schedule(epoch * steps_per_epoch + i)
            xt = torch.from_numpy(xb.transpose(0, 3, 1, 2).copy())
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt), torch.from_numpy(ytr[idx]))
            loss.backward()
            topt.step()
            total_loss += loss.item() * len(idx)
        return total_loss / n

    def ours_acc() -> float:
        return float((net.predict(xte, batch_size=500).argmax(1) == yte).mean())

    def torch_acc() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(xte_t).argmax(1).numpy() == yte).mean())

    rng_ours = np.random.default_rng(args.seed)
    rng_torch = np.random.default_rng(args.seed)
    rows: list[tuple[int, float, float, float, float, float, float]] = []
    wall = {"convnet": 0.0, "PyTorch": 0.0}
    load_before = os.getloadavg()[0]
    limit = f" --limit {args.limit}" if args.limit else ""

    def report() -> str:
        """The results so far (written after every epoch: a run cut short keeps its table)."""
        done = len(rows)
        lines = [
            f"# Fashion-MNIST: convnet vs PyTorch CPU, same recipe ({args.recipe})",
            "",
            f"Command: `python bench/bench_fashion.py --recipe {args.recipe} --epochs "
            f"{args.epochs} --threads {args.threads}{limit}`",
            "",
            f"Network (zoo \"{arch}\", {net.num_params:,} parameters): `{spec}`",
            "",
            f"Recipe: {args.epochs} epochs, batch {args.batch}, SGD Nesterov momentum 0.9, "
            f"weight decay 5e-4, {schedule_text}, "
            f"random crop pad 2 + horizontal flip, per-channel normalisation; "
            f"same initial weights, batches and dropout masks; {n:,} training images, "
            f"{len(yte):,} test images.",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
            f"numpy {np.__version__}, torch {torch.__version__}; 1-minute load average "
            f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (other "
            "processes running on the machine slow both systems alike: epochs alternate).",
            "",
            "| epoch | convnet loss | convnet test acc | convnet s | PyTorch loss "
            "| PyTorch test acc | PyTorch s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e, lo, ao, to, lt, at, tt in rows:
            lines.append(f"| {e} | {lo:.4f} | {ao:.2%} | {to:.1f} | {lt:.4f} | {at:.2%} "
                         f"| {tt:.1f} |")
        if done < args.epochs:
            lines += ["", f"Stopped after {done} of {args.epochs} epochs (partial results)."]
        if rows:
            final_o, final_t = rows[-1][2], rows[-1][5]
            lines += [
                "",
                f"{'Final' if done == args.epochs else 'Last'} test accuracy: convnet "
                f"{final_o:.2%}, PyTorch {final_t:.2%} (difference "
                f"{100 * (final_o - final_t):+.2f} points).",
                f"Training wall time: convnet {wall['convnet']:.1f} s, PyTorch "
                f"{wall['PyTorch']:.1f} s (ratio convnet/PyTorch "
                f"{wall['convnet'] / wall['PyTorch']:.2f}).",
            ]
        return "\n".join(lines) + "\n"

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        l_ours = ours_epoch(epoch, rng_ours)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        l_torch = torch_epoch(epoch, rng_torch)
        t_torch = time.perf_counter() - t0
        wall["convnet"] += t_ours
        wall["PyTorch"] += t_torch
        a_ours, a_torch = ours_acc(), torch_acc()
        rows.append((epoch + 1, l_ours, a_ours, t_ours, l_torch, a_torch, t_torch))
        print(f"epoch {epoch + 1:2d}  convnet loss {l_ours:.4f} test {a_ours:.2%} "
              f"{t_ours:6.1f}s"
              f"  |  PyTorch loss {l_torch:.4f} test {a_torch:.2%} {t_torch:6.1f}s", flush=True)
        Path(args.out).write_text(report())
    print(report())

if __name__ == "__main__":
    main()
