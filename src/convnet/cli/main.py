"""``convnet VERB ...``: the command line.

Each verb lives in ``convnet/cli/<verb>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Any :class:`~convnet.errors.ConvnetError` (or an unreadable file) becomes
one line, ``convnet VERB: error: ...``, and exit status 2: never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from convnet.errors import ConvnetError

# (verb, module, one-line help); in the order a newcomer meets them
VERBS = [
    ("train", "convnet.cli.train", "train a network on a data set (default: digits)"),
    ("eval", "convnet.cli.evaluate", "accuracy, precision/recall/F1 per class, confusion matrix"),
    ("predict", "convnet.cli.predict", "top-k classes for image files"),
    ("summary", "convnet.cli.summary", "every layer's volume, parameters, MACs, receptive field"),
    ("explain", "convnet.cli.explain", "the derivation of every shape and count, in words"),
    ("convert", "convnet.cli.convert", "turn FC layers into CONV (fully convolutional)"),
    ("scan", "convnet.cli.scan", "a classifier over a larger image: class maps and a summary"),
    ("visualize", "convnet.cli.visualize", "an HTML page to look inside a trained model"),
    ("plot", "convnet.cli.plot", "filters, activations, curves or confusion matrix as PNG"),
    ("export", "convnet.cli.export", "write a model as ONNX (onnxruntime, TensorRT, ...)"),
    ("import", "convnet.cli.import_", "read an ONNX model (PyTorch, Keras, ...) as a checkpoint"),
]


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (plus usage) and exit status 2, as for our errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    from convnet import __version__

    parser = _Parser(
        prog="convnet",
        description="Convolutional neural networks from first principles on NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"convnet {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, module_name, help_text in VERBS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a verb not shipped in this build
        p = sub.add_parser(verb, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    prog = f"convnet {args.verb}"
    try:
        return int(args._run(args) or 0)
    except ConvnetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"{prog}: error: {exc.strerror or exc}: {name}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `convnet summary vgg16 | head`
        return 0
    except OSError as exc:  # an existing file where a folder should go, a full or read-only disk
        name = f": {exc.filename}" if exc.filename is not None else ""
        print(f"{prog}: error: {exc.strerror or exc}{name}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
