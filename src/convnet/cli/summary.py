"""``convnet summary NET``: every layer's output volume (H x W x D), parameters, MACs, receptive
field and activation memory, with totals for parameters, MACs (FLOPs = 2 x MACs) and training
memory at ``--batch``. Never allocates weights, so ``convnet summary vgg16`` is instant.

NET is spec text, a spec file, a zoo name (vgg16, alexnet, ...) or a saved model (.npz).

examples:
  convnet summary vgg16
  convnet summary "INPUT(32x32x3) -> CONV(10,F=5,P=2) -> RELU -> POOL -> FC(10)" --format markdown
  convnet summary alexnet --batch 128 --format json
  convnet summary fcn --input 64x64x1
"""

from __future__ import annotations

import argparse
import sys

from convnet.cli.args import positive_int
from convnet.report import parse_input_shape
from convnet.report.summary import FORMATS, summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", metavar="NET",
                        help="spec text, a spec file, a zoo name, or a saved model (.npz)")
    parser.add_argument("--batch", type=positive_int, default=1,
                        help="batch size for activation and training memory (default 1)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default table)")
    parser.add_argument("--input", metavar="HxWxD", default=None,
                        help="replace the network's input size, e.g. 64x64x3")


def run(args: argparse.Namespace) -> int:
    shape = parse_input_shape(args.input) if args.input else None
    sys.stdout.write(summary(args.net, batch=args.batch, format=args.format, input_shape=shape))
    return 0
