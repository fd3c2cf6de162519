"""``convnet import FILE.onnx -o model.npz``: an ONNX model as a convnet checkpoint.

Reads graphs written by convnet, by torch.onnx.export (either exporter) and by tf2onnx for
Keras Sequential CNNs: the table's operators (Conv, ConvTranspose, MaxPool, AveragePool,
GlobalAveragePool, Gemm, Relu, Clip, LeakyRelu, Tanh, Sigmoid, BatchNormalization, Add,
Concat) and the patterns around them (Flatten or Reshape to (N, -1), MatMul + Add, Transposes
around NHWC graphs, Pad + Conv, ReduceMean over H and W, Identity, Dropout, Constant and Shape
arithmetic, a final Softmax). Prints the network, what was recognised, and how far convnet's
scores are from onnxruntime's on random inputs.

What convnet cannot represent is refused with one line naming the node, its operator and why
(an unsupported operator, asymmetric padding, a wiring that is not RES/CAT blocks, ...), and
nothing is written. A file that is not safe to read (larger than its declared sizes allow,
external data outside its directory, a cycle) is refused the same way.

Every verb that takes a MODEL reads a .onnx file directly too: this verb makes the checkpoint
that `convnet train --init` and the others can also use.

examples:
  convnet import resnet18.onnx -o resnet18.npz
  convnet import keras_cnn.onnx -o cnn.npz --input 28x28x1     (symbolic H, W in the file)
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.onnx", help="the ONNX model to read")
    parser.add_argument("-o", "--out", metavar="OUT.npz", required=True,
                        help="the convnet checkpoint to write")
    parser.add_argument("--input", metavar="HxWxD", default=None,
                        help="the image size, where the file's input has a symbolic H and W")
    parser.add_argument("--no-check", action="store_true",
                        help="do not run the file with onnxruntime to compare")
    parser.add_argument("--layers", action="store_true",
                        help="list which node each layer came from")


def run(args: argparse.Namespace) -> int:
    from convnet.errors import ConfigError
    from convnet.interop.onnx_import import agreement, read_onnx
    from convnet.report import parse_input_shape
    from convnet.train.checkpoint import save

    if not str(args.out).lower().endswith(".npz"):
        raise ConfigError(f"-o {args.out}: a convnet checkpoint's name ends in .npz (to write "
                          "ONNX, use convnet export)")
    shape = parse_input_shape(args.input) if args.input else None
    m = read_onnx(args.file, shape)
    net = m.net
    lines = [f"read {args.file}" + (f" (written by {m.producer})" if m.producer else "")
             + f": {net.num_params:,} parameters", f"  {net.spec}"]
    lines += [f"  note: {n}" for n in m.notes]
    if args.layers and m.origin:
        width = max(len(k) for k in m.origin)
        lines += [f"  {k:<{width}} <- {v}" for k, v in m.origin.items()]
    if m.classes:
        lines.append(f"  classes: {', '.join(m.classes[:10])}"
                     + (f", ... ({len(m.classes)})" if len(m.classes) > 10 else ""))
    if m.normalizer is not None:
        lines.append("  normalisation (x - mean)/std per channel: mean "
                     f"{[round(float(v), 4) for v in m.normalizer['mean']]}, std "
                     f"{[round(float(v), 4) for v in m.normalizer['std']]}")
    if not args.no_check:
        try:
            err = agreement(m, args.file)
        except ConfigError as exc:
            lines.append(f"  not compared with onnxruntime: {exc}")
        else:
            lines.append(f"  onnxruntime on the file gives convnet's scores to a relative "
                         f"{err:.1e} on random inputs")
    path = save(net, args.out, classes=m.classes, normalizer=m.normalizer, input_info=m.input,
                imported_from=str(args.file), onnx_producer=m.producer)
    lines.append(f"wrote {path}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
