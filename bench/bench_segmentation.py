"""Train the segmentation encoder-decoder on Fashion-MNIST canvases and measure mean IoU.

Trains ``convnet.fcn.segment.SEGNET`` (CONV/POOL down, DECONV back up to the input size) on
``fashion-seg`` canvases (Fashion-MNIST training items), evaluates on held-out canvases (items of
the Fashion-MNIST test split) after every epoch, prints one line per epoch (training loss and
pixel accuracy, held-out pixel accuracy and mean IoU, wall time), and writes
``bench/results/segmentation.md`` with the per-epoch table, the per-class IoU and the command.

The defaults are the recipe of ``convnet train --data fashion-seg`` (see
``convnet.cli.train.RECIPES``)::

    python bench/bench_segmentation.py                       # the recipe
    python bench/bench_segmentation.py --n-train 500 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from convnet.cli.train import RECIPES
    from convnet.fcn.segment import SEGNET

    recipe = RECIPES["fashion-seg"]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default=SEGNET, help="spec text (default: SEGNET)")
    p.add_argument("--n-train", type=int, default=recipe["n_train"])
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=recipe["epochs"])
    p.add_argument("--batch-size", type=int, default=recipe["batch_size"])
    p.add_argument("--lr", type=float, default=recipe["lr"])
    p.add_argument("--schedule", default=recipe["schedule"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "segmentation.md")
    args = p.parse_args(argv)
    command = "python bench/bench_segmentation.py " + " ".join(map(shlex.quote, argv or
                                                                     sys.argv[1:]))

    import convnet as cn
    from convnet.data import Normalizer
    from convnet.train.callbacks import Callback
    from convnet.train.loop import Trainer, evaluate

    t_start = time.perf_counter()
    # CPU seconds (all threads) alongside wall time: on a shared machine the wall time depends
    # on what else runs, the CPU time much less
    cpu_start = time.process_time()
    train, test = cn.load_dataset("fashion-seg", n_train=args.n_train, n_test=args.n_test)
    net = cn.build(args.arch, seed=args.seed)
    norm = Normalizer.fit(train.x)
    rows: list[dict] = []

    class Report(Callback):
        """One line per epoch; the held-out canvases are the validation data."""

        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            rec = {"epoch": logs["epoch"], "loss": logs["loss"], "pixel_acc": logs["accuracy"],
                   "test_pixel_acc": logs["val_accuracy"], "test_mean_iou": logs["val_mean_iou"],
                   "epoch_s": logs["time_s"], "wall_s": time.perf_counter() - t_start,
                   "cpu_s": time.process_time() - cpu_start}
            rows.append(rec)
            print(f"epoch {rec['epoch']:>2}  loss {rec['loss']:.4f}  pixel acc "
                  f"{100 * rec['pixel_acc']:.2f}%  test pixel acc "
                  f"{100 * rec['test_pixel_acc']:.2f}%  test mean IoU {rec['test_mean_iou']:.3f}"
                  f"  epoch {rec['epoch_s']:.0f}s  wall {rec['wall_s']:.0f}s  "
                  f"cpu {rec['cpu_s']:.0f}s",
                  flush=True)

    print(f"{net.spec}\n{net.num_params:,} parameters; {len(train)} train / {len(test)} test "
          f"canvases {'x'.join(map(str, train.input_shape))}; adam lr {args.lr} {args.schedule}, "
          f"{args.epochs} epochs of batch {args.batch_size}", flush=True)
    trainer = Trainer(net, train, test, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer="adam", lr=args.lr, schedule=args.schedule, seed=args.seed,
                      normalizer=norm, callbacks=[Report()])
    trainer.run()
    r = evaluate(net, test, normalizer=norm)
    wall = time.perf_counter() - t_start
    print(f"final: test mean IoU {r['mean_iou']:.3f}, pixel accuracy "
          f"{100 * r['accuracy']:.2f}%, {wall:.0f} s wall")

    lines = [
        "# Segmentation: encoder-decoder on Fashion-MNIST canvases",
        "",
        f"Command: `{command.strip()}`  ",
        f"Network ({net.num_params:,} parameters): `{' '.join(net.spec.split())}`  ",
        f"Data: {len(train)} training canvases {'x'.join(map(str, train.input_shape))} "
        "(Fashion-MNIST training items), "
        f"{len(test)} held-out canvases (Fashion-MNIST test items).  ",
        f"Recipe: Adam lr {args.lr}, {args.schedule} schedule, {args.epochs} epochs of batch "
        f"{args.batch_size}, seed {args.seed}.  ",
        f"Result: **held-out mean IoU {r['mean_iou']:.3f}**, pixel accuracy "
        f"{100 * r['accuracy']:.2f}%, total wall time {wall:.0f} s, CPU time "
        f"{time.process_time() - cpu_start:.0f} s (data, training and evaluation; 2 cores "
        "shared with other jobs, so the wall time varies with the load).",
        "",
        "| epoch | train loss | train pixel acc | test pixel acc | test mean IoU | epoch s "
        "| wall s | cpu s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {e['epoch']} | {e['loss']:.4f} | {100 * e['pixel_acc']:.2f}% | "
              f"{100 * e['test_pixel_acc']:.2f}% | {e['test_mean_iou']:.3f} | "
              f"{e['epoch_s']:.0f} | {e['wall_s']:.0f} | {e['cpu_s']:.0f} |" for e in rows]
    lines += ["", "Per-class IoU on the held-out canvases:", "", "| class | IoU |", "|---|---:|"]
    lines += [f"| {name} | {'n/a' if np.isnan(v) else f'{v:.3f}'} |"
              for name, v in zip(train.classes, r["iou"], strict=True)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
