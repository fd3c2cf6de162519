"""``convnet scan MODEL IMAGE -o DIR``: run a trained classifier over a larger image.

The classifier is made fully convolutional (FC -> CONV, see ``convnet convert``) and run once
over the whole image: the result is a map of class scores, one per crop of the size the model
was trained on, the network's total stride apart (CS231n: 224 -> 384 gives 6x6 = 36 crops at
stride 32). Printed: per class, the share of the crops where it is the most likely class, its
highest probability and the crop where it has it. Written to DIR:

  scan.png                the overview: the input, each crop's most likely class over the
                          image, and every class's probability map with one colour bar
  scores.npy, probs.npy   the map (rows, cols, classes): raw scores and softmax probabilities
  scores.txt              the summary, the most likely class per crop, and each class's
                          probability grid
  heat_<k>_<class>.png    with --per-class-maps: per class, each pixel's mean probability
                          over the crops containing it, as a heat map over the image

An image whose size the strides do not fit is cropped to the largest size that fits (say
--no-crop to get an error listing the sizes that fit instead).

examples:
  convnet scan runs/fashion big.png -o scan/
  convnet scan model.npz street.jpg -o out --top 5
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from convnet.cli.args import positive_int, size
from convnet.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a saved model (.npz) or a run directory")
    parser.add_argument("image", metavar="IMAGE", help="an image at least as large as the "
                        "model's input (any format Pillow reads)")
    parser.add_argument("-o", "--out", metavar="DIR", required=True,
                        help="directory for the maps, the table and the heat maps")
    parser.add_argument("--top", type=positive_int, default=None, metavar="N",
                        help="maps (and summary lines) only for the N classes with the highest "
                             "peak probability (default: every class, or 10 beyond 20 classes)")
    parser.add_argument("--per-class-maps", action="store_true",
                        help="also write heat_<k>_<class>.png per class, at the image's size")
    parser.add_argument("--no-crop", action="store_true",
                        help="refuse an image the strides do not fit instead of cropping it")
    parser.add_argument("--max-memory", type=size, default=None, metavar="SIZE",
                        help="the most activations the scan may hold, e.g. 8GiB (default 4GiB; "
                             "checked from the shapes before it runs)")


def run(args: argparse.Namespace) -> int:
    from convnet.fcn.scan import SCAN_MEMORY, read_image, scan_image, summary_text, write_scan
    from convnet.train import load

    net = load(args.model)
    if len(net.input_shape) != 3:
        raise ConfigError(f"{args.model}: a network on vectors cannot scan an image")
    image = read_image(args.image, net.input_shape[2])
    scan = scan_image(net, image, getattr(net, "normalizer", None), crop=not args.no_crop,
                      max_bytes=args.max_memory or SCAN_MEMORY)
    K = scan.probs.shape[-1]
    classes = getattr(net, "classes", None) or [str(k) for k in range(K)]
    top = args.top if args.top is not None else (K if K <= 20 else 10)
    if top < 1:
        raise ConfigError(f"--top {top}: give at least 1 class")
    which = sorted(np.argsort(-scan.probs.reshape(-1, K).max(axis=0))[:top].tolist())
    paths = write_scan(scan, classes, args.out, which, per_class_maps=args.per_class_maps)
    for note in scan.notes:
        print(f"note: {note}")
    sys.stdout.write(summary_text(scan, classes, limit=top))
    print(f"wrote {len(paths)} files to {args.out} (the overview: {paths[3]})")
    return 0
