"""Draw a model's filters, activation maps, training curves or confusion matrix as a PNG.

The same pictures as `convnet visualize`, for notes and papers (drawn with matplotlib).

examples:
  convnet plot runs/digits --what filters -o filters.png
  convnet plot runs/digits --what activations --image seven.png -o acts.png
  convnet plot runs/digits --what curves -o curves.png
  convnet plot runs/digits --what confusion --data digits -o confusion.png
"""

from __future__ import annotations

import argparse
from typing import Any

from convnet.cli.args import count, positive_int

WHAT = ("filters", "activations", "curves", "confusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="checkpoint (.npz) or run directory; or a zoo name / spec text")
    parser.add_argument("--what", choices=WHAT, default="filters",
                        help="which picture (default filters)")
    parser.add_argument("-o", "--output", metavar="FILE", help="PNG to write (default WHAT.png)")
    parser.add_argument("--image", metavar="FILE",
                        help="activations: the input image (default: the first test image)")
    parser.add_argument("--data", metavar="NAME",
                        help="test set for confusion (and activations without --image); default: "
                             "the model's training data set when the checkpoint names it")
    parser.add_argument("--layer", metavar="NAME", help="filters: only this CONV layer")
    parser.add_argument("--max-maps", type=positive_int, default=16, metavar="N",
                        help="activations: maps per layer (default 16)")
    parser.add_argument("--seed", type=count, default=0, help="random weights for a spec")


def _test_set(args: argparse.Namespace, info: object, what: str):  # noqa: ANN202
    from convnet.errors import ConfigError
    from convnet.viz.page import load_test_set

    name = args.data or info.data_name  # type: ignore[attr-defined]
    if not name:
        raise ConfigError(f"--what {what} needs a test set: pass --data NAME")
    test = load_test_set(name, info.net)  # type: ignore[attr-defined]
    check_classes(info.net, test, name)  # type: ignore[attr-defined]
    return test


def check_classes(net: Any, test: Any, name: str) -> None:
    """A classifier's test set must have as many classes as the model has outputs, and labels
    within them: a confusion matrix of a 2-class data set on a 10-class model means nothing."""
    from convnet.errors import ConfigError

    outputs = int(net.output_shape[-1])
    labels = int(test.y.max()) + 1 if len(test.y) else 0
    if len(net.output_shape) == 1 and (test.num_classes != outputs or labels > outputs):
        raise ConfigError(
            f"the model has {outputs} outputs (classes) but the data set {name!r} has "
            f"{test.num_classes} classes (labels up to {labels - 1}): choose the data set the "
            "model was trained on (--data)"
        )


def run(args: argparse.Namespace) -> int:
    from convnet.errors import ConfigError
    from convnet.viz import plots
    from convnet.viz.page import evaluate_test, load_model

    if args.output is not None and not str(args.output).lower().endswith(".png"):
        raise ConfigError(f"-o {args.output}: plot writes PNG images; give a file name ending "
                          f"in .png (e.g. {args.what}.png)")
    info = load_model(args.model, seed=args.seed)
    net = info.net
    if args.what == "confusion" and len(net.output_shape) != 1:
        raise ConfigError("--what confusion needs a classifier (class scores out)")
    if args.what == "filters":
        img = plots.plot_filters(net, layer=args.layer)
    elif args.what == "activations":
        if args.image:
            from convnet.data import load_image

            image, _ = load_image(args.image, net.input_shape)
            title = f"activations for {args.image}"
        else:
            test = _test_set(args, info, "activations (without --image)")
            image, title = test.x[0], "activations for test image #0"
        img = plots.plot_activations(net, image, max_maps=args.max_maps, title=title)
    elif args.what == "curves":
        img = plots.plot_curves(info.history)
    else:
        test = _test_set(args, info, "confusion")
        result = evaluate_test(net, test.x, test.y)
        classes = info.classes or (test.classes if len(test.classes) == net.output_shape[0]
                                   else [str(i) for i in range(net.output_shape[0])])
        img = plots.plot_confusion(result.confusion, classes,
                                   title=f"confusion matrix: {info.title}")
    out = plots.save_png(img, args.output or f"{args.what}.png")
    w, h = (round(v * img.dpi) for v in img.get_size_inches())
    print(f"wrote {out} ({w}x{h} pixels)")
    return 0
