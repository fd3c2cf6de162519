"""``convnet convert MODEL --fully-convolutional -o OUT``: the same network with every FC as a
CONV (FC after an H x W x D volume -> CONV with F = H x W; each later FC -> CONV with F = 1;
FLATTEN dropped; GAP -> AVGPOOL over the same window, stride 1). The weights are the same
numbers, reshaped in the order FC flattened its input, so on the original input size the
scores are the same; on a larger image the converted model returns a map of scores (see
``convnet scan``).

Prints the conversion step by step (the formula for each new CONV, the parameter counts, the
score map on a larger image, each map unit's receptive field, and whether the map equals the
crop-by-crop scores: not exactly when layers zero-pad).

MODEL is a saved model (.npz, .onnx) or run directory; a spec or zoo name is accepted too, to
see the conversion without weights (then -o is not allowed). -o model.onnx writes the converted
model as ONNX, with a symbolic H and W (see `convnet export`).

examples:
  convnet convert runs/fashion --fully-convolutional -o fashion-fcn.npz
  convnet convert vgg16 --fully-convolutional --image 384x384
  convnet convert model.onnx --fully-convolutional -o fcn.onnx
"""

from __future__ import annotations

import argparse

from convnet.errors import ConfigError


def _parse_hw(text: str) -> tuple[int, int]:
    from convnet.report import parse_input_shape

    parts = str(text).lower().split("x")
    dims = parse_input_shape(f"{parts[0]}x{parts[1]}x1" if len(parts) == 2 else text)
    if len(dims) != 3:
        raise ConfigError(f"--image {text!r} must read HxW, e.g. 384x384")
    return dims[0], dims[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a saved model (.npz) or run directory; or a spec / zoo name")
    parser.add_argument("--fully-convolutional", action="store_true",
                        help="turn every FC into a CONV (the only conversion there is)")
    parser.add_argument("-o", "--out", metavar="OUT", default=None,
                        help="where to save the converted model (.npz, or .onnx to export it)")
    parser.add_argument("--image", metavar="HxW", default=None,
                        help="the larger image size to describe the score map for "
                             "(default: 5 total strides larger each way)")
    parser.add_argument("--quiet", action="store_true", help="print only the file written")


def run(args: argparse.Namespace) -> int:
    from convnet.fcn.convert import to_fully_convolutional
    from convnet.fcn.explain import conversion_text
    from convnet.report import _is_saved_model, load_network

    if not args.fully_convolutional:
        raise ConfigError("say what to convert to: --fully-convolutional (FC -> CONV)")
    hw = _parse_hw(args.image) if args.image else None
    if args.out is not None and not str(args.out).lower().endswith((".npz", ".onnx")):
        raise ConfigError(f"-o {args.out}: convert writes a checkpoint (.npz) or an ONNX file "
                          "(.onnx); give a file name ending in one of them")
    saved = _is_saved_model(args.model)
    if not saved and args.out:
        raise ConfigError(
            f"{args.model!r} is not a saved model: there are no weights to save; train it "
            "first (convnet train) or leave out -o to see the conversion"
        )
    if saved:
        from convnet.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(args.model)
        net = ckpt.net
    else:
        ckpt, net = None, load_network(args.model)
    if not args.quiet:
        print(conversion_text(net, hw), end="")
    if ckpt is not None and args.out:
        from convnet.train import save

        fcn = to_fully_convolutional(net)
        if str(args.out).lower().endswith(".onnx"):   # straight to ONNX (symbolic H and W)
            from convnet.interop.onnx_export import export_onnx

            path = export_onnx(fcn, args.out, classes=ckpt.classes, normalizer=ckpt.normalizer,
                               input_info={**ckpt.input, "shape": list(fcn.input_shape)})
            print(f"wrote {path} ({fcn.spec}; ONNX, any image size)")
            return 0
        path = save(
            fcn, args.out, epoch=ckpt.epoch, metrics=ckpt.metrics, history=ckpt.history,
            classes=ckpt.classes, normalizer=ckpt.normalizer,
            input_info={**ckpt.input, "shape": list(fcn.input_shape)}, config=ckpt.config,
            converted_from=ckpt.spec, source=str(ckpt.path),
        )
        print(f"wrote {path} ({fcn.spec})")
    elif ckpt is not None and not args.quiet:
        print("(no -o given: nothing written)")
    return 0
