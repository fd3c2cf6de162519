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
    ("predict", "convnet.cli.predict", "top-k classes for image files, folders or globs"),
    ("pack", "convnet.cli.pack", "a data set as uint8 shards, to train on out of core"),
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


#: The caps (convnet.safety.CAPS) each verb's files are read under; each gets its --max-* flag.
LIMITS = {
    "train": ("data_bytes", "image_pixels", "checkpoint_bytes"),
    "eval": ("checkpoint_bytes", "data_bytes", "image_pixels"),
    "predict": ("checkpoint_bytes", "image_pixels"),
    "pack": ("data_bytes", "image_pixels"),
    "convert": ("checkpoint_bytes",),
    "scan": ("checkpoint_bytes", "image_pixels"),
    "visualize": ("checkpoint_bytes", "data_bytes", "image_pixels"),
    "plot": ("checkpoint_bytes", "data_bytes", "image_pixels"),
    "summary": ("checkpoint_bytes",),
    "explain": ("checkpoint_bytes",),
    "export": ("checkpoint_bytes",),
    "import": ("checkpoint_bytes",),
}


def _add_limits(parser: argparse.ArgumentParser, verb: str) -> None:
    from convnet.cli.args import size
    from convnet.safety import CAPS

    names = LIMITS.get(verb, ())
    if not names:
        return
    g = parser.add_argument_group(
        "limits for untrusted files (see SECURITY.md)",
        "Files larger than these are refused before they are read; raise a limit only for a "
        "file you trust. Each also reads its environment variable.")
    for name in names:
        c = CAPS[name]
        g.add_argument(c.flag, type=size, default=None, metavar="N", dest=f"cap_{name}",
                       help=f"{c.what} (default {c.default:,}; ${c.env})")


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
        _add_limits(p, verb)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``convnet VERB ...``; returns the exit status.

    0: done; 1: the run itself failed (a NaN loss); 2: an error, as one line
    ``convnet VERB: error: ...`` on stderr (any :class:`~convnet.errors.ConvnetError`, a file
    that cannot be read or written); 130: interrupted by Ctrl-C (or SIGTERM where a verb maps it
    to Ctrl-C), at any moment from start-up on, without a traceback.
    """
    prog = "convnet"
    try:
        parser = make_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        prog = f"convnet {args.verb}"
        return _run(args, prog)
    except KeyboardInterrupt:
        # Quiet: the user asked to stop. (A verb that saves on Ctrl-C says what it saved.)
        return 130
    except BrokenPipeError:  # `convnet summary vgg16 | head`
        _silence_stdout()
        return 0


def _run(args: argparse.Namespace, prog: str) -> int:
    import numpy as np

    from convnet.safety import caps

    limits = {k[4:]: v for k, v in vars(args).items() if k.startswith("cap_")}
    try:
        # NumPy's overflow warnings would add lines to the one-line contract; every result that
        # must be finite is checked where it is used (the loss, scores, the page's JSON).
        with caps(**limits), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return int(args._run(args) or 0)
    except ConvnetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"{prog}: error: {exc.strerror or exc}: {name}".rstrip(": "), file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as exc:  # an existing file where a folder should go, a full or read-only disk
        name = f": {exc.filename}" if exc.filename is not None else ""
        print(f"{prog}: error: {exc.strerror or exc}{name}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would report the broken pipe again; point it at devnull.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
