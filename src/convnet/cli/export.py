"""``convnet export MODEL -o model.onnx``: the model as an ONNX file, for onnxruntime, TensorRT,
OpenVINO and every other runtime that reads ONNX.

The graph takes NCHW float32 (N, D, H, W) with a symbolic batch N (and symbolic H and W when
the network is fully convolutional, e.g. after `convnet convert`); --nhwc makes it take
convnet's own (N, H, W, D). Standard operators only (opset 17 or newer, --opset). The class
names and the normalisation travel as metadata ('classes', 'normalization': the input must be
(x - mean)/std of images in [0, 1]); --bake-normalization puts the normalisation in the graph
instead (its first nodes), so that it takes raw images in [0, 1]. DROPOUT vanishes (it is the
identity in inference); BN is exported in its inference form (running statistics).

The file is checked before it is written (onnx.checker, full) and then run with onnxruntime on
random inputs beside convnet: the largest relative difference is printed (--no-check skips
it).

MODEL is a checkpoint (.npz), a run directory, an ONNX file, or a spec or zoo name (random
weights, which is said).

examples:
  convnet export runs/fashion -o fashion.onnx
  convnet export runs/fashion -o fashion-nhwc.onnx --nhwc --bake-normalization
  convnet export fcn.npz -o fcn.onnx              (fully convolutional: any image size)
  convnet export resnet18 -o resnet18.onnx        (random weights)
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from convnet.interop.mapping import MIN_OPSET

    parser.add_argument("model", metavar="MODEL",
                        help="a checkpoint (.npz), a run directory, an .onnx file, or a spec / "
                             "zoo name (random weights)")
    parser.add_argument("-o", "--out", metavar="FILE", required=True,
                        help="the ONNX file to write (.onnx)")
    parser.add_argument("--nhwc", action="store_true",
                        help="the graph takes (N, H, W, D) as convnet does, not (N, D, H, W)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET,
                        help=f"ONNX opset to write (default {MIN_OPSET}, the lowest it can)")
    parser.add_argument("--bake-normalization", action="store_true",
                        help="normalise inside the graph (first nodes Sub and Div): it then "
                             "takes raw images in [0, 1]")
    parser.add_argument("--fixed-size", action="store_true",
                        help="fixed H and W even for a fully convolutional network")
    parser.add_argument("--input", metavar="HxWxD", default=None,
                        help="for a spec or zoo name: the input size to build it for")
    parser.add_argument("--seed", type=int, default=0,
                        help="for a spec or zoo name: the seed of its random weights")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the onnx checker and the comparison with onnxruntime")


def run(args: argparse.Namespace) -> int:
    from convnet.errors import ConfigError
    from convnet.interop.onnx_export import compare_with_onnxruntime, export_onnx
    from convnet.report import _is_saved_model, parse_input_shape

    if not str(args.out).lower().endswith(".onnx"):
        raise ConfigError(f"-o {args.out}: an ONNX file name ends in .onnx")
    notes = []
    if _is_saved_model(args.model):
        from convnet.train.checkpoint import load_checkpoint

        if args.input:
            raise ConfigError("--input is for a spec or zoo name: a saved model has its size")
        ckpt = load_checkpoint(args.model)
        net, source = ckpt.net, str(ckpt.path)
        classes, normalizer, info = ckpt.classes, ckpt.normalizer, ckpt.input
    else:
        from convnet.spec import build

        shape = parse_input_shape(args.input) if args.input else None
        net = build(args.model, seed=args.seed, input_shape=shape)
        source, classes, normalizer, info = "an architecture", None, None, None
        notes.append(f"random weights (seed {args.seed}): {args.model!r} is an architecture, "
                     "not a trained model")
    dynamic = False if args.fixed_size else None
    path = export_onnx(net, args.out, nhwc=args.nhwc, opset=args.opset, classes=classes,
                       normalizer=normalizer, bake_normalization=args.bake_normalization,
                       input_info=info, dynamic_size=dynamic, check=not args.no_check)
    image = len(net.input_shape) == 3
    dyn = net.fully_convolutional and image and not args.fixed_size
    if image:
        h, w, d = ("H", "W", net.input_shape[2]) if dyn else net.input_shape
        ins = f"(N, {h}, {w}, {d}) NHWC" if args.nhwc else f"(N, {d}, {h}, {w}) NCHW"
    else:
        ins = f"(N, {net.input_shape[0]})"
    out = net.output_shape
    if len(out) == 3:
        h2, w2 = ("H'", "W'") if dyn else out[:2]
        outs = f"(N, {h2}, {w2}, {out[2]})" if args.nhwc else f"(N, {out[2]}, {h2}, {w2})"
    else:
        outs = f"(N, {out[0]})"
    lines = [f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): opset {args.opset}, input "
             f"'input' float32 {ins}, output 'output' {outs}",
             f"  from {source}: {net.spec}"]
    meta = []
    if classes:
        meta.append(f"classes ({len(classes)})")
    if normalizer is not None:
        meta.append("normalization (" + ("baked into the graph: give it images in [0, 1]"
                                         if args.bake_normalization else
                                         "not in the graph: give it (x - mean)/std") + ")")
    meta += ["convnet.spec", "convnet.input", "convnet.layout"]
    lines.append("  metadata: " + ", ".join(meta))
    lines += [f"  note: {n}" for n in notes]
    if not args.no_check:
        try:
            sizes = []
            if dyn:
                sizes = [tuple(2 * s for s in net.input_shape[:2])]
            err = compare_with_onnxruntime(net, path, nhwc=args.nhwc, normalizer=normalizer,
                                           baked=args.bake_normalization, sizes=sizes)
        except ConfigError as exc:   # onnxruntime is not installed
            lines.append(f"  checked with onnx.checker (full); not run: {exc}")
        else:
            at = "" if not sizes else f" (also at {sizes[0][0]}x{sizes[0][1]})"
            lines.append(f"  checked: onnx.checker (full) passes; onnxruntime gives convnet's "
                         f"scores to a relative {err:.1e} on random inputs{at}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
