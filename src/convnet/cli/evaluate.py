"""``convnet eval MODEL``: accuracy, per-class accuracy and the confusion matrix of a saved model.

For a model that labels every pixel (trained on fashion-seg): mean IoU, per-class IoU and pixel
accuracy.

MODEL is a checkpoint (.npz) or a run directory (its best.npz, else last.npz). The data set
defaults to the one the model was trained on; its test split is used unless --split train.
The normalisation saved with the model is applied.

examples:
  convnet eval runs/digits-20250101-120000
  convnet eval model.npz --data fashion --split test
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from convnet.errors import ConfigError, ShapeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a checkpoint (.npz) or a run directory")
    parser.add_argument("--data", metavar="NAME|PATH", default=None,
                        help="data set (default: the one the model was trained on)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="where a named data set's files are")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="which split to evaluate (default test)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    from convnet.data import load_dataset
    from convnet.train.checkpoint import load_checkpoint
    from convnet.train.loop import evaluate
    from convnet.train.metrics import format_confusion

    ckpt = load_checkpoint(args.model)
    net = ckpt.net
    data = args.data or ckpt.config.get("cli", {}).get("data") or ckpt.input.get("dataset")
    if not data:
        raise ConfigError(f"{ckpt.path} does not say which data it was trained on: give --data")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, received {args.batch_size}")
    from convnet.cli.train import _data_options

    # a generated data set is regenerated with the run's settings (its test canvases are fixed
    # by the seed, so they are the very canvases the run was tested on)
    splits = load_dataset(data, data_dir=args.data_dir,
                          **_data_options(ckpt.config.get("cli", {})))
    ds = splits.test if args.split == "test" else splits.train
    if ds.input_shape != net.input_shape:
        raise ShapeError(
            f"{ds.name} has {'x'.join(map(str, ds.input_shape))} images but the model takes "
            f"{'x'.join(map(str, net.input_shape))}"
        )
    C = net.output_shape[-1]
    if ds.num_classes != C:
        raise ShapeError(f"{ds.name} has {ds.num_classes} classes but the model outputs {C}")
    classes = ckpt.classes or ds.classes
    r = evaluate(net, ds, batch_size=args.batch_size, normalizer=ckpt.normalizer)
    cm = r["confusion"]
    if "mean_iou" in r:
        return _report_segmentation(ckpt, ds, args, r, classes)
    if args.json:
        out = {
            "model": str(ckpt.path), "data": ds.name, "split": args.split, "count": r["count"],
            "accuracy": r["accuracy"], "loss": r["loss"], "classes": classes,
            "per_class_accuracy": [None if math.isnan(v) else v
                                   for v in r["per_class_accuracy"].tolist()],
            "confusion": cm.tolist(),
        }
        print(json.dumps(out, indent=2))
        return 0
    correct = int(cm.trace())
    lines = [
        f"{ckpt.path} on {ds.name} ({args.split}, {r['count']} images)",
        f"accuracy {100 * r['accuracy']:.2f}% ({correct}/{r['count']}), loss {r['loss']:.4f}",
        "",
        "per-class accuracy:",
    ]
    width = max(len(c) for c in classes)
    totals = cm.sum(axis=1)
    for i, (name, acc) in enumerate(zip(classes, r["per_class_accuracy"], strict=True)):
        acc_txt = "   n/a" if math.isnan(acc) else f"{100 * acc:6.2f}%"
        lines.append(f"  {i:>2} {name:<{width}} {acc_txt} ({int(cm[i, i])}/{int(totals[i])})")
    lines += ["", "confusion matrix:", format_confusion(cm, classes)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _report_segmentation(ckpt, ds, args: argparse.Namespace, r: dict, classes: list[str]) -> int:
    """Mean IoU and per-class IoU (and pixel accuracy) of a model that labels every pixel."""
    cm = r["confusion"]
    ious = r["iou"].tolist()
    if args.json:
        out = {
            "model": str(ckpt.path), "data": ds.name, "split": args.split, "images": len(ds),
            "pixels": r["count"], "pixel_accuracy": r["accuracy"], "loss": r["loss"],
            "mean_iou": r["mean_iou"], "classes": classes,
            "iou": [None if math.isnan(v) else v for v in ious],
            "confusion": cm.tolist(),
        }
        print(json.dumps(out, indent=2))
        return 0
    lines = [
        f"{ckpt.path} on {ds.name} ({args.split}, {len(ds)} images, {r['count']:,} pixels)",
        f"mean IoU {r['mean_iou']:.3f} (over the classes present), pixel accuracy "
        f"{100 * r['accuracy']:.2f}%, loss {r['loss']:.4f}",
        "",
        "per-class IoU (pixels both call the class / pixels either calls it):",
    ]
    width = max(len(c) for c in classes)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    for i, (name, v) in enumerate(zip(classes, ious, strict=True)):
        txt = "  n/a" if math.isnan(v) else f"{v:.3f}"
        lines.append(f"  {i:>2} {name:<{width}} {txt} ({int(tp[i]):,}/{int(union[i]):,})")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
