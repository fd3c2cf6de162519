"""``convnet predict MODEL IMAGE...``: the top-k classes of each image, with probabilities.

MODEL is a checkpoint (.npz) or a run directory. Images may be any size and mode Pillow reads
(PNG, JPEG, ...): each is converted to the model's input (resized, turned grayscale or RGB) and
the conversion is reported; the normalisation saved with the model is applied.

examples:
  convnet predict runs/digits-20250101-120000 three.png
  convnet predict model.npz shoe.jpg bag.png --top-k 3
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a checkpoint (.npz) or a run directory")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    parser.add_argument("--top-k", type=_positive_int, default=3,
                        help="how many classes to show per image (default 3)")


def run(args: argparse.Namespace) -> int:
    from convnet.data import load_image
    from convnet.ops.loss import softmax
    from convnet.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.model)
    net = ckpt.net
    if len(net.input_shape) != 3:
        from convnet.errors import ConfigError

        raise ConfigError(f"{ckpt.path}: the model takes vectors {net.input_shape}, not images")
    C = net.output_shape[-1]
    classes = ckpt.classes or [str(i) for i in range(C)]
    # Every image is read (and fails, naming the file) before any is classified.
    loaded = [(path, *load_image(path, net.input_shape)) for path in args.images]
    x = np.stack([img for _, img, _ in loaded]).astype(net.dtype)
    if ckpt.normalizer is not None:
        x = (x - ckpt.normalizer["mean"]) / ckpt.normalizer["std"]
    scores = net.predict(x.astype(net.dtype, copy=False))
    if scores.ndim != 2:
        from convnet.errors import ConfigError

        raise ConfigError(
            f"{ckpt.path}: the model outputs score maps {net.output_shape}, not one score per "
            "class; predict classifies whole images (use `convnet scan` for score maps)"
        )
    probs = softmax(scores.astype(np.float64))
    k = min(args.top_k, C)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    width = max(len(classes[j]) for j in top.ravel())
    lines = []
    for (path, _, notes), order, p in zip(loaded, top, probs, strict=True):
        head = str(path)
        if notes:
            head += f" (converted to the model's {'x'.join(map(str, net.input_shape))} input: " \
                    + "; ".join(notes) + ")"
        lines.append(head)
        for rank, j in enumerate(order, 1):
            lines.append(f"  {rank}. {classes[j]:<{width}} {100 * p[j]:6.2f}%")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
