"""``convnet pack SOURCE -o DIR``: a data set as uint8 shards, to train on with bounded memory.

SOURCE is a folder of images with one sub-folder per class (or train/ and test/ holding such
folders), a directory of IDX files or CIFAR-10 batches, or a name: mnist, fashion, cifar10,
fashion-seg (segmentation canvases: per-pixel labels are packed too). DIR receives .npy shards
of uint8 images and labels and a manifest.json (class names, counts, shapes, per-channel mean
and std, a SHA-256 per shard, and the images that could not be read, with the reason: an
unreadable image is skipped, never fatal).

Images are decoded by --workers processes. Each shard is written atomically, so an interrupted
pack (Ctrl-C, a crash) is continued by running the same command again: complete shards whose
hashes verify are kept. Running it on a finished pack re-checks every shard and re-makes any
that is damaged.

A folder is split into train and test as `convnet train --data FOLDER` splits it (20% of each
class, seed 0), and images are resized as it resizes them (to the most common size unless
--size), so training on the packed directory gives the same result, bit for bit.

examples:
  convnet pack photos/ -o photos-packed --size 96x96
  convnet train --data photos-packed --arch "INPUT(96x96x3) -> ... -> FC(10)"
  convnet pack fashion -o fashion-packed
  convnet pack fashion-seg -o seg-packed --n-train 5000
"""

from __future__ import annotations

import argparse
import shlex
import sys

from convnet.cli.args import positive_int


def _size(text: str) -> tuple[int, int]:
    from convnet.data.packing import _parse_size
    from convnet.errors import DataError

    try:
        pair = _parse_size(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return pair  # type: ignore[return-value]  # a string always gives a pair


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: decode in this "
                                         f"process), received {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="image folder, IDX or CIFAR-10 directory, or a data set name")
    parser.add_argument("-o", "--out", metavar="DIR", required=True,
                        help="the directory to write (new, empty, or this same pack to continue)")
    parser.add_argument("--size", type=_size, default=None, metavar="HxW",
                        help="resize every image to H x W (default: the native size; for a "
                             "folder, the most common size)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--grayscale", dest="grayscale", action="store_const", const=True,
                      default=None, help="one channel (default: what most images are)")
    mode.add_argument("--rgb", dest="grayscale", action="store_const", const=False,
                      help="three channels")
    parser.add_argument("--shard-size", type=positive_int, default=None, metavar="N",
                        help="images per shard (default: as many as make 128 MiB)")
    parser.add_argument("--workers", type=_workers, default=None, metavar="N",
                        help="processes decoding images (default: the CPU count, at most 8; "
                             "0: in this process)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                        help="a folder without train/ and test/: share of each class held out "
                             "as the test set (default 0.2, as convnet train)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="where a named data set's files are")
    parser.add_argument("--download", action="store_true",
                        help="download a missing named data set from its mirrors (MD5-verified)")
    parser.add_argument("--n-train", type=positive_int, default=None, metavar="N",
                        help="fashion-seg: training canvases (default 5000, as convnet train)")
    parser.add_argument("--n-test", type=positive_int, default=None, metavar="N",
                        help="fashion-seg: test canvases (default 1000)")


def run(args: argparse.Namespace) -> int:
    from convnet.data.packing import pack
    from convnet.data.registry import ALIASES
    from convnet.errors import ConfigError

    options = {}
    if ALIASES.get(args.source.lower()) == "fashion-seg":
        from convnet.cli.train import RECIPES

        options = {"n_train": args.n_train or RECIPES["fashion-seg"]["n_train"],
                   "n_test": args.n_test or 1000}
    elif args.n_train or args.n_test:
        raise ConfigError("--n-train and --n-test are for fashion-seg (how many canvases to "
                          "generate)")
    try:
        result = pack(args.source, args.out, size=args.size, grayscale=args.grayscale,
                      shard_size=args.shard_size, workers=args.workers,
                      test_fraction=args.test_fraction, data_dir=args.data_dir,
                      download=args.download, progress=True, **options)
    except KeyboardInterrupt:
        print("convnet pack: interrupted; the shards written so far are kept: run the same "
              "command again to continue", file=sys.stderr)
        return 130
    from convnet.data.shards import read_manifest

    m = read_manifest(args.out)
    h, w, d = m["input_shape"]
    train, test = (m["splits"][p] for p in ("train", "test"))
    shards = len(train["shards"]) + len(test["shards"])
    mean = ", ".join(f"{v:.4f}" for v in train["mean"])
    std = ", ".join(f"{v:.4f}" for v in train["std"])
    rounded = m["settings"].get("rounded_to_uint8")
    if rounded:
        print(f"note: the {' and '.join(rounded)} images held values between the 256 levels "
              "of 8 bits; they were rounded to the nearest level (at most 1/510 off)",
              file=sys.stderr)
    for s in result.skipped[:5]:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if len(result.skipped) > 5:
        print(f"... and {len(result.skipped) - 5} more (all in {result.manifest}, 'skipped')",
              file=sys.stderr)
    did = f"made {result.made} shard(s)" + (f", kept {result.kept} already complete"
                                             if result.kept else "")
    print(f"packed {train['count']:,} train + {test['count']:,} test images {h}x{w}x{d} of "
          f"{len(m['classes'])} classes into {shards} shards in {args.out} ({did}; "
          f"{len(result.skipped)} skipped) in {result.seconds:.1f} s; train mean {mean}, "
          f"std {std}")
    print(f"train from it: convnet train --data {shlex.quote(str(args.out))}")
    return 0
