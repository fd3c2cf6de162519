"""``convnet explain NET``: the derivation of every layer in words and numbers: the output-size
formula with the numbers put in, why the depth is K, each filter's shape and weights, parameters
with and without sharing, MACs, what pooling does to each depth slice, how a volume is flattened
into an FC layer, the receptive field, and, for a net with FC layers, its fully convolutional
equivalent.

A configuration that does not fit is explained, not just rejected: the layers up to the failure
are derived, then the failing layer's formula with the numbers and what would fit. The exit
status is then 2 (as for any error), 0 when every layer fits.

NET is spec text, a spec file, a zoo name (vgg16, alexnet, ...) or a saved model (.npz).

examples:
  convnet explain alexnet
  convnet explain "INPUT(7x7x1) -> CONV(1,F=3,S=3)"
"""

from __future__ import annotations

import argparse
import re
import sys

from convnet.report import parse_input_shape
from convnet.report.explain import derive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", metavar="NET",
                        help="spec text, a spec file, a zoo name, or a saved model (.npz)")
    parser.add_argument("--input", metavar="HxWxD", default=None,
                        help="replace the network's input size, e.g. 64x64x3")


def run(args: argparse.Namespace) -> int:
    shape = parse_input_shape(args.input) if args.input else None
    result = derive(args.net, input_shape=shape)
    text = result.text
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if result.error is not None:
        # the derivation on stdout already holds the whole message: stderr only says that the
        # network fails, and where, without printing it a second time
        sys.stdout.flush()
        head = str(result.error).split(" ", 1)[0]
        where = head if re.fullmatch(r"[a-z_]+\d+", head) else "a layer"  # conv2, fc1, ..
        print(f"convnet explain: error: {where} does not fit; the derivation above says why "
              "and what would fit", file=sys.stderr)
        return 2
    return 0
