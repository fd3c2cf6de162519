"""``convnet scan MODEL IMAGE -o DIR``: run a trained classifier over a larger image.

The classifier is made fully convolutional (FC -> CONV, see ``convnet convert``) and run once
over the whole image: the result is a map of class scores, one per crop of the size the model
was trained on, the network's total stride apart (CS231n: 224 -> 384 gives 6x6 = 36 crops at
stride 32). Written to DIR:

  scores.npy, probs.npy   the map (rows, cols, classes): raw scores and softmax probabilities
  scores.txt              the most likely class per crop, and each class's probability grid
  heat_<k>_<class>.png    per class: each pixel's mean probability over the crops containing
                          it, as a heat map over the image

An image whose size the strides do not fit is cropped to the largest size that fits (say
--no-crop to get an error listing the sizes that fit instead).

examples:
  convnet scan runs/fashion big.png -o scan/
  convnet scan model.npz street.jpg -o out --top 5
"""

from __future__ import annotations

import argparse

import numpy as np

from convnet.cli.args import positive_int
from convnet.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a saved model (.npz) or a run directory")
    parser.add_argument("image", metavar="IMAGE", help="an image at least as large as the "
                        "model's input (any format Pillow reads)")
    parser.add_argument("-o", "--out", metavar="DIR", required=True,
                        help="directory for the maps, the table and the heat maps")
    parser.add_argument("--top", type=positive_int, default=None, metavar="N",
                        help="heat maps only for the N classes with the highest peak "
                             "probability (default: every class, or 10 beyond 20 classes)")
    parser.add_argument("--no-crop", action="store_true",
                        help="refuse an image the strides do not fit instead of cropping it")


def run(args: argparse.Namespace) -> int:
    from convnet.fcn.scan import read_image, scan_image, write_scan
    from convnet.train import load

    net = load(args.model)
    if len(net.input_shape) != 3:
        raise ConfigError(f"{args.model}: a network on vectors cannot scan an image")
    image = read_image(args.image, net.input_shape[2])
    scan = scan_image(net, image, getattr(net, "normalizer", None), crop=not args.no_crop)
    K = scan.probs.shape[-1]
    classes = getattr(net, "classes", None) or [str(k) for k in range(K)]
    top = args.top if args.top is not None else (K if K <= 20 else 10)
    if top < 1:
        raise ConfigError(f"--top {top}: give at least 1 class")
    which = sorted(np.argsort(-scan.probs.reshape(-1, K).max(axis=0))[:top].tolist())
    paths = write_scan(scan, classes, args.out, which)
    for note in scan.notes:
        print(f"note: {note}")
    rows, cols, _ = scan.probs.shape
    h, w = scan.image.shape[:2]
    print(f"{h}x{w} image -> {rows}x{cols} map of {K} classes: {rows * cols} crops of "
          f"{scan.crop[0]}x{scan.crop[1]}, {scan.stride[0]}x{scan.stride[1]} pixels apart, in "
          "one pass")
    best = scan.probs.reshape(-1, K).max(axis=0)
    order = np.argsort(-best)[:min(5, K)]
    print("highest probability anywhere: " + ", ".join(
        f"{classes[k]} {best[k]:.2f}" for k in order))
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
