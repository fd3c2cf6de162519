"""``convnet eval MODEL``: accuracy, precision, recall and F1 per class and averaged, and the
confusion matrix of a saved model.

For a model that labels every pixel (trained on fashion-seg): mean IoU, per-class IoU and pixel
accuracy.

MODEL is a checkpoint (.npz) or a run directory (its best.npz, else last.npz). The data set
defaults to the one the model was trained on; its test split is used unless --split train.
The normalisation saved with the model is applied.

A class's precision is the share of the images called by its name that are of it; its recall
(its per-class accuracy) the share of its images called by its name; F1 their harmonic mean.
The macro average is the plain mean over classes, the weighted one weighs each class by its
number of images (support). As in scikit-learn (zero_division=0), the averages run over the
classes that occur in the labels or the predictions, and a class never predicted counts as
precision 0 in them (its own row shows n/a).

--json prints one JSON object instead. For a classifier:

  {"model": PATH, "data": NAME, "split": "test"|"train", "count": IMAGES,
   "accuracy": FRACTION, "loss": MEAN_CROSS_ENTROPY, "classes": [NAME, ...],
   "per_class": [{"index": I, "class": NAME, "precision": F, "recall": F, "f1": F,
                  "support": IMAGES}, ...],
   "macro": {"precision": F, "recall": F, "f1": F},
   "weighted": {"precision": F, "recall": F, "f1": F},
   "per_class_accuracy": [F, ...],           (the recalls again, as earlier versions wrote)
   "confusion": [[COUNT, ...], ...]}         (rows: true class, columns: predicted)

Fractions are in [0, 1]; a value that is undefined (a class never predicted has no precision)
is null, and counts as 0 in macro and weighted. For a segmentation model: model, data, split,
images, pixels, pixel_accuracy, loss, mean_iou, classes, iou (per class), confusion.

examples:
  convnet eval runs/digits-20250101-120000
  convnet eval model.npz --data fashion --split test
  convnet eval runs/fashion --json > results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from convnet.errors import ConfigError, InputError, ShapeError


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
    from convnet.train.metrics import format_confusion, format_scores, scores_from_confusion

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
    if not math.isfinite(r["loss"]):
        # NaN or Inf scores (weights that overflow): no accuracy can be trusted (issue 20)
        raise InputError(f"{ckpt.path}: the model's scores on {ds.name or 'the test set'} are "
                         "not finite (NaN or Inf): its weights overflow; retrain it, or check "
                         "the checkpoint")
    cm = r["confusion"]
    if "mean_iou" in r:
        return _report_segmentation(ckpt, ds, args, r, classes)
    scores = scores_from_confusion(cm)  # the matrix evaluate() counted, not the labels again
    if args.json:
        out = {
            "model": str(ckpt.path), "data": ds.name, "split": args.split, "count": r["count"],
            "accuracy": r["accuracy"], "loss": r["loss"], "classes": classes,
            "per_class": [
                {"index": i, "class": name, "precision": _num(scores["precision"][i]),
                 "recall": _num(scores["recall"][i]), "f1": _num(scores["f1"][i]),
                 "support": int(scores["support"][i])}
                for i, name in enumerate(classes)
            ],
            "macro": {k: _num(v) for k, v in scores["macro"].items()},
            "weighted": {k: _num(v) for k, v in scores["weighted"].items()},
            "per_class_accuracy": [_num(v) for v in r["per_class_accuracy"].tolist()],
            "confusion": cm.tolist(),
        }
        print(json.dumps(out, indent=2))
        return 0
    correct = int(cm.trace())
    lines = [
        f"{ckpt.path} on {ds.name} ({args.split}, {r['count']} images)",
        f"accuracy {100 * r['accuracy']:.2f}% ({correct}/{r['count']}), loss {r['loss']:.4f}",
        "",
        "per class:",
        format_scores(scores, classes),
        "recall: the share of a class's images given its name (its per-class accuracy);",
        "precision: the share of the images given a name that are of that class; F1: their "
        "harmonic mean.",
        "averages: classes never predicted count as precision 0 (n/a in their row), as in "
        "scikit-learn",
        "(zero_division=0); a class in neither the labels nor the predictions is left out.",
        "",
        "confusion matrix:", format_confusion(cm, classes),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _num(v: float) -> float | None:
    """A float for JSON: NaN (undefined) becomes null."""
    return None if math.isnan(v) else float(v)


def _report_segmentation(ckpt, ds, args: argparse.Namespace, r: dict, classes: list[str]) -> int:
    """Mean IoU and per-class IoU (and pixel accuracy) of a model that labels every pixel."""
    cm = r["confusion"]
    ious = r["iou"].tolist()
    if args.json:
        out = {
            "model": str(ckpt.path), "data": ds.name, "split": args.split, "images": len(ds),
            "pixels": r["count"], "pixel_accuracy": r["accuracy"], "loss": r["loss"],
            "mean_iou": r["mean_iou"], "classes": classes,
            "iou": [_num(v) for v in ious],
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
