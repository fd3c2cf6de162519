"""``convnet predict MODEL IMAGE...``: the top-k classes of each image, with probabilities.

For a model that labels every pixel (its output is a map of class scores of the input's size,
e.g. one trained with --data fashion-seg) the predicted mask of each image is written as a
colour PNG (IMAGE.mask.png next to the image, or in --out DIR), with legend.png beside it
showing which colour is which class; the command prints where and the share of each class.

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

from convnet.cli.args import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a checkpoint (.npz) or a run directory")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    parser.add_argument("--top-k", type=positive_int, default=3,
                        help="how many classes to show per image (default 3)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="for a model that labels every pixel: where to write the masks "
                             "(default: next to each image, as IMAGE.mask.png)")


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
    out_shape = tuple(net.output_shape)
    if len(out_shape) == 3 and out_shape[:2] == tuple(net.input_shape[:2]):
        return _write_masks(ckpt, args, loaded, scores, classes)
    if len(out_shape) > 1 and all(d == 1 for d in out_shape[:-1]):
        # a network without FC ending in a 1x1xK volume: its K scores are the class scores
        scores = scores.reshape(len(scores), C)
    if scores.ndim != 2:
        from convnet.errors import ConfigError

        raise ConfigError(
            f"{ckpt.path}: the model outputs score maps {net.output_shape}, neither one score "
            "per class nor a map of the input's size; predict classifies whole images or "
            "labels every pixel (use `convnet scan` for score maps)"
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


def _write_masks(ckpt, args: argparse.Namespace, loaded: list, scores: np.ndarray,
                 classes: list[str]) -> int:
    """Segmentation: the class of every pixel, written as a colour PNG per image."""
    from pathlib import Path

    from convnet.fcn.segment import colorize_mask, save_legend_png, save_mask_png

    masks = scores.argmax(axis=-1)
    out_dir = Path(args.out) if args.out else None
    lines = []
    written: list[Path] = []
    for (path, _, notes), mask in zip(loaded, masks, strict=True):
        path = Path(path)
        target = (out_dir / f"{path.stem}.mask.png") if out_dir else \
            path.with_name(f"{path.stem}.mask.png")
        if target in written:  # two images of the same name into one folder
            target = target.with_name(f"{path.stem}-{len(written)}.mask.png")
        save_mask_png(mask, target)
        written.append(target)
        head = f"{path}: mask {mask.shape[0]}x{mask.shape[1]} written to {target}"
        if notes:
            head += f" (image converted to the model's input: {'; '.join(notes)})"
        lines.append(head)
        counts = np.bincount(mask.ravel(), minlength=len(classes))
        for j in np.argsort(-counts, kind="stable"):
            if counts[j]:
                lines.append(f"  {classes[j]:<12} {100 * counts[j] / mask.size:6.2f}% of pixels")
    legend_dir = out_dir or written[0].parent
    legend = save_legend_png(classes, legend_dir / "legend.png")
    colours = colorize_mask(np.arange(len(classes)))
    lines.append(f"legend ({legend}): " + ", ".join(
        f"{i} {c} #{''.join(f'{int(v):02x}' for v in colours[i])}"
        for i, c in enumerate(classes)))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
