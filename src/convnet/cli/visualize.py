"""Write one self-contained HTML page to look inside a model.

The page (works offline, opened from disk) shows the architecture as volumes with K, F, S, P,
parameters, MACs and receptive fields; for a chosen image every activation map of every layer,
the filters and the class probabilities; click any unit to see its receptive field on the input
and the window, filter, dot product and bias that produced it; how the last volume is flattened;
and from the run's metrics log the loss and accuracy curves, the confusion matrix and the test
images the model gets most confidently wrong.

examples:
  convnet visualize runs/digits -o report.html
  convnet visualize runs/digits/best.npz --image seven.png --data digits --serve
  convnet visualize lenet5 --image photo.png          (an architecture: random weights)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convnet.cli.args import count, port_number, positive_int
from convnet.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="checkpoint (.npz) or run directory; or a zoo name / spec text for "
                             "random weights")
    parser.add_argument("--image", metavar="FILE", action="append", default=[],
                        help="an image to show (repeatable); resized and converted to the "
                             "model's input")
    parser.add_argument("--data", metavar="NAME",
                        help="test set to sample from and to evaluate on (digits, mnist, "
                             "fashion-mnist, cifar10 or a directory); default: the one the model "
                             "was trained on, when the checkpoint names it")
    parser.add_argument("--samples", type=count, default=16, metavar="N",
                        help="test images embedded in the page (default 16)")
    parser.add_argument("--eval-images", type=positive_int, default=None, metavar="N",
                        help="test images counted in the accuracy and confusion matrix "
                             "(default: the whole test set, as convnet eval; a smaller N draws "
                             "N at random and is faster)")
    parser.add_argument("--max-maps", type=positive_int, default=32, metavar="N",
                        help="activation maps drawn per layer (default 32)")
    parser.add_argument("-o", "--output", default="report.html", metavar="FILE",
                        help="the page to write (default report.html)")
    parser.add_argument("--title", help="the page's title (default: the run's name)")
    parser.add_argument("--seed", type=count, default=0,
                        help="chooses the test images shown (and random weights for a spec)")
    parser.add_argument("--serve", action="store_true",
                        help="then serve the page (only the page) on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=port_number, default=8000,
                        help="port for --serve (default 8000; 0 picks a free one)")


def run(args: argparse.Namespace) -> int:
    from convnet.viz.serve import PageServer

    # The port is taken first: one in use fails now, not after the page is computed.
    server = PageServer(args.port) if args.serve else None
    try:
        return _run(args, server)
    finally:
        if server is not None:
            server.close()


def _run(args: argparse.Namespace, server: Any) -> int:
    from convnet.cli.plot import check_classes
    from convnet.data import load_image
    from convnet.errors import ConfigError
    from convnet.viz.page import Sample, load_model, load_test_set, visualize

    info = load_model(args.model, seed=args.seed)
    net = info.net
    if len(net.input_shape) != 3:
        raise ConfigError("visualize needs a network on images (INPUT(HxWxD))")
    images = []
    for path in args.image:
        img, notes = load_image(path, net.input_shape)
        images.append(Sample(img, str(path), None, "file", list(notes)))
    notes = list(info.notes)
    test = None
    name = args.data or info.data_name
    if name:
        try:
            test = load_test_set(name, net)
            check_classes(net, test, name)
        except (DataError, ConfigError) as exc:
            if args.data:
                raise
            notes.append(f"The training data set {name!r} could not be loaded ({exc}); pass "
                         "--data to show test images and the confusion matrix.")
    if not images and test is None:
        raise ConfigError("nothing to show: give an image (--image FILE) or a test set "
                          "(--data NAME)")
    out = visualize(net, args.output, images=images, test_set=test, samples=args.samples,
                    history=info.history, classes=info.classes, title=args.title or info.title,
                    notes=notes, seed=args.seed, max_maps=args.max_maps,
                    max_eval=args.eval_images)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); open it in a browser")
    sys.stdout.flush()
    if server is not None:
        server.set_page(out)
        server.serve_forever()
    return 0
