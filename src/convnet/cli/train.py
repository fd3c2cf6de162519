"""``convnet train``: train a network on a data set, with checkpoints and a metrics log.

With no arguments: the zoo "digits" network on the built-in 8x8 handwritten digits (from
scikit-learn, no download), SGD with Nesterov momentum and a cosine schedule; it reaches about
98% test accuracy in seconds.

On a terminal a progress bar shows the epoch's batches, running loss and accuracy and the time
left; in a log file a line every 10 s (--progress-every) does. Every epoch prints a line (loss,
accuracy, validation, images/s) on stderr, appends to metrics.csv and metrics.jsonl, and saves
last.npz (and best.npz when validation accuracy improves) in the run directory. The first
Ctrl-C or SIGTERM finishes the batch, saves last.npz and exits with status 130; --resume DIR
continues exactly where it stopped. A NaN or Inf loss stops training (exit status 1) and keeps
the last good checkpoint.

examples:
  convnet train
  convnet train --data fashion --out runs/fashion     # 18 epochs, about 93.5%
  convnet train --arch "INPUT(8x8x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> FC(10)" --lr 0.1
  convnet train --resume runs/fashion --epochs 15
  convnet train --data fashion-seg --out runs/seg     # segmentation: reports mean IoU
  convnet pack photos/ -o photos-packed && convnet train --data photos-packed --arch ...
  convnet train --data fashion --workers 2 --batch-size 128     # 2 processes, global batch 128
  mpiexec -n 4 convnet train --data fashion --out runs/f4      # 4 MPI processes
  convnet train --init resnet18.onnx --data DIR       # fine-tune an imported model

A zoo name given to --arch is built for the data set's images when they differ from the
zoo's INPUT (`--arch resnet-cifar --data fashion`: ResNet-20 on 28x28x1, said so); spec text
keeps its INPUT and a different image size is refused.

--init MODEL (a checkpoint, a run directory or an ONNX file, e.g. from `convnet import` or
torch.onnx.export) starts a new run from that model's weights and architecture. Where the data
set has another number of classes than the model has outputs, the model's last FC is replaced
by a new one with that many outputs (random weights) and the output says so; the model's
normalisation is kept when it has one.

With --data fashion-seg the network (default: the zoo's "segnet" encoder-decoder) outputs a map
of class scores of the image's size; the loss is averaged over pixels, there is no
augmentation, and the validation and test mean IoU are reported. A classifier without FC may
end in a 1x1xK volume (CONV to 1x1xK, or GAP): its scores are the image's class scores.

More cores and machines (pip install '.[distributed]'): `convnet train --workers 4 ...` starts
4 processes with mpiexec on this machine; `mpiexec -n 8 -f hosts convnet train ...` runs on
several machines. --batch-size is then the global batch, each process trains on its share of
it, and the model is the one a single process would train (up to float rounding). Rank 0
prints, writes the metrics and the checkpoints; a checkpoint resumes on any number of
processes; a process that fails or is killed ends the whole job with a non-zero status.

A packed directory (`convnet pack SOURCE -o DIR`) is trained on out of core: batches are read
from its uint8 shards by a background thread, memory stays at a few batches plus the model
whatever the data set's size, and the result is bit for bit the same as from memory. A folder
of images larger than 2 GB as float32 is refused with the `convnet pack` command to run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convnet.cli.args import positive_int
from convnet.errors import ConfigError, ShapeError

# The recipe for each data set when the command line does not say otherwise; measured so that
# `convnet train` on digits stays >= 97% test accuracy over seeds 0-4 (97.8-98.3%).
RECIPES: dict[str, dict[str, Any]] = {
    # threads=1: these matrices are so small that a second BLAS thread costs more in
    # synchronisation than it computes (measured: 4 epochs in 3.8 s with one thread, 8 s with two)
    "digits": dict(arch="digits", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                   schedule="cosine", epochs=20, batch_size=32, threads=1),
    # `convnet train --data fashion`: 93.56% test accuracy in 7 min 34 s on 2 cores with seed 0,
    # 93.24% with seed 1 (the 2-conv "fashion" network with BN after its pools and 64 filters in
    # the second CONV: 93.07% with seed 0). The one-cycle schedule warms up over its first 30%
    # of the steps, which SGD at lr 0.1 needs. The same recipe in PyTorch:
    # bench/bench_fashion.py (bench/results/fashion.md).
    "fashion-mnist": dict(arch="fashion-bn", optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=5e-4, schedule="onecycle", epochs=18, batch_size=128),
    "mnist": dict(arch="fashion", optimizer="adam", lr=1e-3, weight_decay=None, momentum=None,
                  schedule="cosine", epochs=5, batch_size=64),
    # Measured with bench/bench_segmentation.py (bench/results/segmentation.md): held-out mean
    # IoU >= 0.6 in about 10 minutes on 2 cores. n_train is the number of canvases generated.
    "fashion-seg": dict(arch="segnet", optimizer="adam", lr=3e-3, weight_decay=None,
                        momentum=None, schedule="cosine", epochs=8, batch_size=32, n_train=5000),
    "cifar10": dict(arch="cifar10", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                    schedule="cosine", epochs=30, batch_size=128),
}
FALLBACK = dict(arch=None, optimizer="adam", lr=1e-3, weight_decay=None, momentum=None,
                schedule="cosine", epochs=10, batch_size=64)
# Settings a resumed run takes from its checkpoint; changing them would not be a continuation.
FIXED_ON_RESUME = ("arch", "data", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                   "batch_size", "seed", "augment", "val_split", "early_stop", "n_train",
                   "n_test")




def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, received {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction 0 <= f < 1 (0 disables validation), received {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds >= 0 (0: a line after every batch), received {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from convnet.optim import SCHEDULE_NAMES

    g = parser.add_argument_group("what to train")
    g.add_argument("--arch", metavar="SPEC|FILE|ZOO", default=None,
                   help="architecture: spec text, a spec file or a zoo name (default: the zoo "
                        "network made for the data set, e.g. 'digits')")
    g.add_argument("--init", metavar="MODEL", default=None,
                   help="start from this model's weights (.npz, run directory or .onnx): "
                        "fine-tuning; its last FC is replaced when the class count differs")
    g.add_argument("--data", metavar="NAME|PATH", default=None,
                   help="digits (default, built in), mnist, fashion, cifar10, fashion-seg "
                        "(segmentation canvases of Fashion-MNIST items), or a directory: "
                        "IDX files, CIFAR-10 batches, class folders of images (up to 2 GB as "
                        "float32), or a packed directory (`convnet pack`: trained on out of "
                        "core, memory bounded)")
    g.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where a named data set's files are")
    g.add_argument("--n-train", type=positive_int, default=None, metavar="N",
                   help="fashion-seg: how many training canvases to generate (default 5000)")
    g.add_argument("--n-test", type=positive_int, default=None, metavar="N",
                   help="fashion-seg: how many test canvases to generate (default 1000)")
    g.add_argument("--download", action="store_true",
                   help="download a missing data set from its mirrors (MD5-verified)")
    g = parser.add_argument_group("recipe (defaults depend on the data set)")
    g.add_argument("--epochs", type=positive_int, default=None, help="total epochs")
    g.add_argument("--batch-size", type=positive_int, default=None, help="images per step")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None)
    g.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (Nesterov)")
    g.add_argument("--weight-decay", type=float, default=None, help="L2 / decoupled decay")
    g.add_argument("--schedule", choices=SCHEDULE_NAMES, default=None,
                   help="learning-rate schedule over all steps")
    g.add_argument("--seed", type=_int, default=None,
                   help="seed of the weights, shuffling, augmentation and dropout (default 0)")
    aug = g.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_const", const=True, default=None,
                     help="random crops (and flips where they keep the label)")
    aug.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                     help="no augmentation (default for digits)")
    g.add_argument("--val-split", type=_fraction, default=None, metavar="FRACTION",
                   help="share of the training set held out for validation (default 0.1)")
    g.add_argument("--early-stop", type=positive_int, default=None, metavar="PATIENCE",
                   help="stop when val_loss has not improved for PATIENCE epochs")
    g = parser.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default runs/<data>-<date>-<time>)")
    g.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR exactly where it stopped")
    g.add_argument("--prefetch", type=_int, default=None, metavar="N",
                   help="batches a background thread reads ahead while the network computes "
                        "(default 2 for packed data, 0 for data in memory); results do not "
                        "depend on it")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="BLAS threads per process (default: all cores, shared out among the "
                        "processes of a data-parallel run on the machine; 1 for digits, whose "
                        "tiny matrices run faster on one)")
    g.add_argument("--progress-every", type=_seconds, default=None, metavar="SECONDS",
                   help="when stderr is not a terminal (a log file, CI, nohup): a progress "
                        "line every SECONDS inside an epoch (default 10; 0: every batch)")
    g = parser.add_argument_group(
        "processes (data-parallel training on MPI: pip install '.[distributed]')",
        "Under `mpiexec -n N convnet train ...` (detected from the environment the launcher "
        "sets), or with --workers N, N processes each train on their share of every batch: "
        "--batch-size is the GLOBAL batch and the learning rate means what it means on one "
        "process; the result is the one-process model up to float rounding.")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="train with N processes on this machine: starts `mpiexec -n N` itself "
                        "(the mpiexec of this Python environment)")
    g.add_argument("--distributed", action="store_true",
                   help="this process is one of an MPI job (default: detected from the "
                        "launcher's environment, PMI_RANK, OMPI_COMM_WORLD_SIZE, PMIX_RANK...; "
                        "give it for a launcher that sets none of them)")


# -------------------------------------------------------------------------------- settings
def _settings(args: argparse.Namespace, saved: dict[str, Any] | None,
              init_arch: str | None = None) -> dict[str, Any]:
    """The run's settings: the checkpoint's (resume), else the command line over the recipe
    (``init_arch``: the architecture of the --init model)."""
    given = {k: getattr(args, k) for k in (*FIXED_ON_RESUME, "epochs")
             if getattr(args, k) is not None}
    if init_arch is not None:
        given["arch"] = init_arch
    if saved is not None:
        conflicts = [
            f"--{k.replace('_', '-')} {given[k]} (the run has {saved.get(k)})"
            for k in FIXED_ON_RESUME if k in given and given[k] != saved.get(k)
            and not (k == "arch" and saved.get("arch_spec") == given[k])
        ]
        if conflicts:
            raise ConfigError(
                f"--resume continues a run exactly, so these cannot change: "
                f"{'; '.join(conflicts)}. Only --epochs, --out and --threads may be given "
                "(or start a new run)"
            )
        s = dict(saved)
        if "epochs" in given:
            s["epochs"] = given["epochs"]
        return s
    data = given.get("data", "digits")
    key = _data_key(data)
    recipe = RECIPES.get(key, FALLBACK)
    s = {**recipe, "data": data, "seed": 0, "augment": None, "val_split": 0.1,
         "early_stop": None}
    s.update(given)
    # A recipe's momentum / weight decay belong to its optimiser; another optimiser starts from
    # its own defaults unless they are given.
    if "optimizer" in given and given["optimizer"] != recipe["optimizer"]:
        for k in ("momentum", "weight_decay", "lr"):
            if k not in given:
                s[k] = None
    if s["arch"] is None:
        if not Path(str(data)).expanduser().exists():
            from convnet.data import dataset_names
            from convnet.errors import DataError

            raise DataError(f"unknown data set {str(data)!r}: not one of "
                            f"{', '.join(dataset_names())} and no such file or directory")
        raise ConfigError(
            f"no default network for data {data!r}: give one with --arch (spec text, a spec "
            "file or a zoo name, e.g. --arch lenet5)"
        )
    return s


def _is_zoo(arch: Any) -> bool:
    """Whether ``--arch`` names a zoo network: the rule of :func:`convnet.spec.parser.resolve`
    (a zoo name wins over a file of that name)."""
    from convnet.spec.zoo import ZOO

    return isinstance(arch, str) and arch.strip().lower() in ZOO


def _data_key(data: Any) -> str:
    """The canonical name of a data set (a packed directory: the name of what was packed)."""
    from convnet.data.registry import ALIASES

    key = ALIASES.get(str(data).lower(), "")
    if not key:
        from convnet.data.shards import is_packed, read_manifest

        path = Path(str(data)).expanduser()
        if path.is_dir() and is_packed(path):
            key = ALIASES.get(str(read_manifest(path).get("name", "")).lower(), "")
    return key


def _make_optimizer(s: dict[str, Any]) -> Any:
    from convnet.optim import make_optimizer

    kw: dict[str, Any] = {"lr": s["lr"], "weight_decay": s["weight_decay"]}
    if s["optimizer"] == "sgd":
        kw["momentum"] = s["momentum"]
        if s["momentum"]:
            kw["nesterov"] = True
    elif s["momentum"] is not None:
        raise ConfigError(f"--momentum is for SGD; {s['optimizer']} has betas instead")
    return make_optimizer(s["optimizer"], **kw)


def _default_out(data: str) -> Path:
    stem = Path(str(data)).name or "data"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _data_options(s: dict[str, Any]) -> dict[str, Any]:
    """Settings of a generated data set (fashion-seg: how many canvases to make); a packed
    fashion-seg directory holds the canvases it was packed with."""
    from convnet.data.registry import ALIASES

    if ALIASES.get(str(s.get("data")).lower()) != "fashion-seg":
        return {}
    return {k: s[k] for k in ("n_train", "n_test") if s.get(k) is not None}


def _check_output(net: Any, train: Any) -> bool:
    """Check that the network's output fits the labels; True for per-pixel labels.

    Per-image labels take a vector of class scores ``(C,)`` or a ``1 x 1 x C`` volume (a network
    without FC that ends in a CONV to 1x1xC or a pool over the whole map); per-pixel labels
    take a map of class scores of the image's size, ``H x W x C``.
    """
    out, C = tuple(net.output_shape), train.num_classes
    if train.label_shape:
        h, w = train.label_shape
        if out != (h, w, C):
            raise ShapeError(
                f"the network outputs {'x'.join(map(str, out))} but {train.name} has one label "
                f"per pixel ({h}x{w}, {C} classes): the network must end in a {h}x{w}x{C} map "
                f"of class scores (e.g. DECONVs back up to {h}x{w}, then CONV({C},F=1))"
            )
        return True
    if out[-1:] != (C,) or any(d != 1 for d in out[:-1]):
        raise ShapeError(
            f"the network outputs {'x'.join(map(str, out))} but {train.name} has {C} classes: "
            f"end the spec with FC({C}), or with CONV({C}) to a 1x1x{C} volume, or with "
            f"CONV({C},F=1) -> GAP"
        )
    return False


def _from_init(init: Any, train: Any, seed: int) -> Any:
    """The --init model made to fit ``train``: rebuilt for its image size where the weights
    allow it, and its last FC replaced by one with as many outputs as ``train`` has classes.
    Says what it did."""
    from convnet.arith import fmt_shape
    from convnet.layers import FC
    from convnet.net.blocks import to_spec
    from convnet.spec.parser import build_text

    net, C, where = init.net, train.num_classes, f"--init {init.path}"
    items, last = list(net.items), net.layers[-1]
    shape = tuple(train.input_shape)
    spec = net.spec
    changed = []
    if tuple(net.input_shape) != shape:
        spec = f"INPUT({fmt_shape(shape)}) -> {to_spec(items)}"
        changed.append(f"built for {train.name}'s {fmt_shape(shape)} images instead of "
                       f"{fmt_shape(net.input_shape)}")
    outputs = net.output_shape[-1]
    if outputs != C or len(net.output_shape) != 1:
        if last.kind != "FC" or items[-1] is not last:
            raise ShapeError(
                f"{where}: the model outputs {fmt_shape(net.output_shape)} and {train.name} has "
                f"{C} classes, but its last layer is {last.describe()}, not an FC that could be "
                "replaced: give a model that ends in FC, or data with as many classes")
        new_fc = FC(C, bias=last.bias)
        spec = f"INPUT({fmt_shape(shape)}) -> {to_spec(items[:-1])} -> {new_fc.to_spec()}"
        changed.append(f"its last layer {last.name} ({last.to_spec()}, {outputs} outputs) is "
                       f"replaced by a new {new_fc.to_spec()} with random weights, for the "
                       f"{C} classes of {train.name}")
    if not changed:
        _say(f"{where}: starting from the model's weights ({net.num_params:,} parameters)")
        return net
    try:
        new = build_text(spec, seed=seed)
    except ShapeError as exc:
        raise ShapeError(f"{where}: the model does not fit {train.name}'s "
                         f"{fmt_shape(shape)} images: {exc}") from None
    target = new.state_dict()
    replaced = f"{last.name}." if outputs != C else None
    for key, value in net.state_dict().items():
        if replaced is not None and key.startswith(replaced):
            continue
        if target[key].shape != value.shape:
            raise ShapeError(
                f"{where}: {key} has shape {value.shape} in the model but {target[key].shape} "
                f"for {train.name}'s {fmt_shape(shape)} images (a different depth, or an FC "
                "after a volume of another size): the weights cannot be carried over")
        target[key][...] = value
    _say(f"{where}: starting from the model's weights; " + "; ".join(changed))
    return new


def _augmentation(s: dict[str, Any], train: Any, per_pixel: bool = False) -> Any:
    from convnet.data import Augmentation, default_augmentation

    if per_pixel:
        if s["augment"]:
            raise ConfigError(f"--augment moves pixels but not the per-pixel labels of "
                              f"{train.name}: train it without --augment")
        return None
    if s["augment"] is False:
        return None
    aug = default_augmentation(train.name, train.hflip)
    if s["augment"] and not aug.enabled:
        aug = Augmentation(pad=1, flip=train.hflip)  # asked for: the mildest that makes sense
    return aug if aug.enabled else None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _quiet(text: str) -> None:
    """What the other processes of a data-parallel run say: nothing (rank 0 speaks)."""


# ------------------------------------------------------------------------------------- run
def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from convnet.distributed import launched_size, world

    if args.workers is not None and args.workers > 1:
        if launched_size() is not None:
            raise ConfigError(f"--workers {args.workers} starts mpiexec itself, but this process "
                              "was already started by an MPI launcher: give the number of "
                              "processes to the launcher (mpiexec -n N) instead")
        return _launch(args)
    # Before training starts (loading data can take a while) SIGTERM acts like Ctrl-C: nothing
    # to save yet, exit 130. During training StopOnSignal takes over (finish the batch, save).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        comm = world(True if args.distributed else None)
        if comm.size == 1:
            return _train(_prepare(args, comm))
        return _run_distributed(args, comm)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_distributed(args: argparse.Namespace, comm: Any) -> int:
    """Every process prepares the run; a bad argument or file (the same on every process, or
    only on some) is reported once, by the lowest rank that met it, and every process exits
    with status 2 without waiting for the others. From the first collective call on, an
    exception on any process ends the job (``abort_job``)."""
    import numpy as np

    from convnet.distributed import abort_job, abort_on_error
    from convnet.errors import ConvnetError

    failure: BaseException | None = None
    try:
        prepared = _prepare(args, comm)
    except (ConvnetError, OSError) as exc:  # what the command line reports as one line
        failure = exc
    except BaseException as exc:   # Ctrl-C / SIGTERM while loading, or a bug: end the job
        abort_job(comm, exc, "convnet train")
    failed = np.zeros(comm.size)
    failed[comm.rank] = failure is not None
    comm.allreduce(failed)
    if failed.any():
        if failure is not None and int(np.argmax(failed)) == comm.rank:
            raise failure           # printed by convnet.cli.main as one line, exit status 2
        return 2
    with abort_on_error(comm, "convnet train"):
        return _train(prepared)


def _launch(args: argparse.Namespace) -> int:
    """``convnet train --workers N``: the same command under ``mpiexec -n N`` (this Python, this
    environment), in a session of its own so that one Ctrl-C reaches it once, from us; its exit
    status is ours."""
    import subprocess

    from convnet.distributed import mpiexec_command

    if args.out is None and args.resume is None:
        # one run directory for every process (and for the message below), named once here
        args.out = str(_default_out(args.data or "digits"))
    cmd = mpiexec_command(args.workers, ["train", *_argv(args), "--distributed"])
    proc = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                status = proc.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - the handler above takes SIGINT
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:   # we are leaving on an exception: do not leave the job behind
            proc.terminate()
    if status not in (0, 1, 2, 130):
        # 1, 2 and 130 are our own (the processes said why); anything else is MPI's report of
        # a process that was killed or crashed, after its banner: say what it means for the run
        run_dir = args.out or args.resume
        _say(f"convnet train: error: the job ended with status {status}: one of its processes "
             f"was killed or crashed, and the others were stopped. The last checkpoint is "
             f"kept; continue with: convnet train --resume {run_dir}")
    return status


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line of ``args`` (``convnet train`` and its limits), without ``--workers``:
    each option whose value differs from its default, as the parser reads it back."""
    from convnet.cli.main import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: list[str] = []
    for action in sub.choices["train"]._actions:
        if not action.option_strings or action.dest in ("help", "workers", "distributed"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        if action.nargs == 0:              # store_true, store_const (--augment / --no-augment)
            if value == action.const:
                out.append(action.option_strings[-1])
        else:
            out += [action.option_strings[-1], str(value)]
    return out


@dataclass
class _Prepared:
    """A run ready to train: what :func:`_prepare` built, for :func:`_train`."""

    comm: Any
    say: Callable[[str], None]
    trainer: Any
    net: Any
    test: Any
    normalizer: Any
    out: Path
    limits: Any
    per_pixel: bool
    classes: list[str]


def _load_data(s: dict[str, Any], args: argparse.Namespace, comm: Any,
               say: Callable[..., None]) -> Any:
    """The data set. With --download on several processes, rank 0 alone fetches (and
    unpacks) it while the others wait, then they read what it wrote: N processes writing
    the same files at once would each see the others' half-written files."""
    from convnet.data import load_dataset
    from convnet.errors import ConvnetError, DataError

    def load(download: bool) -> Any:
        return load_dataset(s["data"], data_dir=args.data_dir, download=download,
                            progress=say, **_data_options(s))

    if not args.download or comm.size == 1:
        return load(args.download)
    splits: Any = None
    failure: BaseException | None = None
    if comm.rank == 0:
        try:
            splits = load(True)
        except (ConvnetError, OSError) as exc:
            failure = exc
    # also the barrier: no other process reads before rank 0 has finished writing
    problem = comm.broadcast_object(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if problem is not None:
        raise DataError(f"rank 0 could not fetch the data set: {problem}")
    return splits if splits is not None else load(False)


def _prepare(args: argparse.Namespace, comm: Any) -> _Prepared:
    from convnet.data import Normalizer, train_val_split
    from convnet.distributed import default_threads
    from convnet.spec import build
    from convnet.train import callbacks as cbs
    from convnet.train.checkpoint import LAST, load_checkpoint
    from convnet.train.loop import Trainer

    say = _say if comm.rank == 0 else _quiet
    ckpt = None
    if args.resume is not None:
        resume_dir = Path(args.resume)
        path = resume_dir / LAST if resume_dir.is_dir() else resume_dir
        ckpt = load_checkpoint(path)
        if not ckpt.config.get("cli"):
            raise ConfigError(f"{path} was not written by `convnet train`; resume it from Python "
                              "with cn.fit(..., resume=path)")
        target = args.epochs if args.epochs is not None else ckpt.config.get("epochs", 0)
        done = ckpt.epoch + (1 if ckpt.loop else 0)  # an interrupted epoch must be finished
        if target < done:
            raise ConfigError(
                f"{path}: the run has {'started' if ckpt.loop else 'completed'} {done} epochs, "
                f"so there is nothing to do up to {target}; give --epochs N with N >= "
                f"{max(done, ckpt.epoch + 1)} to train further"
            )
        if target == ckpt.epoch and not ckpt.loop:
            raise ConfigError(
                f"{path}: the run already completed its {ckpt.epoch} epochs; give --epochs N "
                f"with N > {ckpt.epoch} to train further"
            )
    init = None
    if args.init is not None:
        if ckpt is not None:
            raise ConfigError("--init starts a new run from a model's weights and --resume "
                              "continues a run: give one of them")
        if args.arch is not None:
            raise ConfigError("--init takes the architecture from the model: leave out --arch")
        init = load_checkpoint(args.init)
    s = _settings(args, ckpt.config.get("cli") if ckpt else None,
                  init.net.spec if init is not None else None)

    # Each of N processes on a machine takes its share of the cores (unless told otherwise).
    threads = args.threads or s.get("threads") or \
        (default_threads(comm.local_size) if comm.size > 1 else None)
    limits: Any = nullcontext()
    if threads:
        try:  # installed with scikit-learn; without it the BLAS default stays
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            limits = threadpool_limits(threads)

    out = Path(args.out) if args.out else (Path(args.resume) if ckpt else _default_out(s["data"]))
    if ckpt is None and (out / LAST).exists():
        raise ConfigError(f"{out} already holds a run ({LAST}); continue it with --resume {out} "
                          "or choose another --out")

    # The network and optimiser first: a spec or a hyperparameter that cannot work fails
    # before any data is read.
    # A zoo name is a design, not a fixed input: checked here without weights, built with them
    # once the data set says what its images are.
    zoo = ckpt is None and init is None and _is_zoo(s["arch"])
    net = ckpt.net if ckpt else None if init else build(s["arch"], seed=s["seed"],
                                                        weights=not zoo)
    optimizer = _make_optimizer(s)
    splits = _load_data(s, args, comm, say)
    train, test = splits
    if init is not None:
        net = _from_init(init, train, s["seed"])
        s["arch"], s["init"] = net.spec, str(init.path)
    if zoo and net.input_shape == train.input_shape:
        net = build(s["arch"], seed=s["seed"])
    elif zoo:
        # built for this data set's images (a spec the user wrote stays as written and is
        # refused below)
        made_for = "x".join(map(str, net.input_shape))
        try:
            net = build(s["arch"], input_shape=train.input_shape, seed=s["seed"])
        except ShapeError as exc:
            raise ShapeError(f"zoo network {s['arch']!r} is made for {made_for} images and "
                             f"does not fit the {'x'.join(map(str, train.input_shape))} images "
                             f"of {train.name}: {exc}") from None
        say(f"zoo network {s['arch']!r} is made for {made_for} images; built for the "
            f"{'x'.join(map(str, train.input_shape))} images of {train.name} instead "
            f"({net.num_params:,} parameters)")
        s["arch"] = net.spec
    if net.input_shape != train.input_shape:
        h, w, d = train.input_shape
        raise ShapeError(
            f"the network takes {'x'.join(map(str, net.input_shape))} images but {train.name} "
            f"has {h}x{w}x{d}: start the spec with INPUT({h}x{w}x{d})"
        )
    per_pixel = _check_output(net, train)
    val = None
    if s["val_split"]:
        train, val = train_val_split(train, s["val_split"], seed=0)
    kept = ckpt or init
    normalizer = (Normalizer(**kept.normalizer) if kept and kept.normalizer
                  else Normalizer.fit(train))  # packed data: read chunk by chunk
    augment = _augmentation(s, train, per_pixel)

    steps_per_epoch = math.ceil(len(train) / s["batch_size"])
    from convnet.optim import make_schedule

    schedule = make_schedule(s["schedule"], optimizer.lr, s["epochs"] * steps_per_epoch,
                             steps_per_epoch)
    monitor = ("val_mean_iou" if per_pixel else "val_accuracy") if val is not None \
        else "accuracy"
    callbacks: list[cbs.Callback] = [
        cbs.StopOnSignal(),
        cbs.ProgressBar(interval=cbs.DEFAULT_PROGRESS_INTERVAL if args.progress_every is None
                        else args.progress_every),
        cbs.MetricsLog(out),
        cbs.ModelCheckpoint(out, monitor=monitor),
    ]
    if s["early_stop"]:
        callbacks.append(cbs.EarlyStopping("val_loss" if val is not None else "loss",
                                           patience=s["early_stop"]))
    cli_config = {**s, "arch_spec": net.spec}
    input_info = {"shape": list(net.input_shape), "range": [0.0, 1.0],
                  "mode": "L" if net.input_shape[-1] == 1 else "RGB", "dataset": train.name}
    trainer = Trainer(
        net, train, val, epochs=s["epochs"], batch_size=s["batch_size"], optimizer=optimizer,
        schedule=schedule, callbacks=callbacks, seed=s["seed"], augment=augment,
        normalizer=normalizer, classes=train.classes, config={"cli": cli_config},
        input_info=input_info, prefetch=args.prefetch, comm=comm,
    )
    if ckpt is not None:
        trainer.restore(ckpt)
        where = f"epoch {ckpt.epoch + 1}" + (f", batch {int(ckpt.loop['batch']) + 1}"
                                              if ckpt.loop else "")
        was_n = ckpt.config.get("processes", 1)
        on = f" on {comm.size} process{'es' if comm.size > 1 else ''} (it was written by {was_n})" \
            if was_n != comm.size else ""
        say(f"resuming {ckpt.path} at {where} of {s['epochs']}{on}")
        was = ckpt.config["cli"].get("epochs")
        if was != s["epochs"]:
            say(f"note: the {s['schedule']} schedule now spans {s['epochs']} epochs instead of "
                f"{was}, so the learning rates differ from those of the original plan")
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    procs = f"; {comm.size} processes x {threads} threads" if comm.size > 1 else ""
    say(f"training {net.spec} ({net.num_params:,} parameters) on {train.name}: {len(train)} "
        f"train, {len(val) if val is not None else 0} validation, {len(test)} test images; "
        f"{optimizer!r}, {s['schedule']} schedule, {s['epochs']} epochs of batch "
        f"{s['batch_size']}{', augmented' if augment else ''}{procs}; run directory {out}")
    return _Prepared(comm, say, trainer, net, test, normalizer, out, limits, per_pixel,
                     list(train.classes))


def _train(p: _Prepared) -> int:
    from convnet.train.checkpoint import LAST
    from convnet.train.loop import evaluate

    trainer, net, out, say = p.trainer, p.net, p.out, p.say
    root = p.comm.rank == 0
    with p.limits:
        history = trainer.run()
        if history.stop_reason == "nan":
            if root:
                print(f"convnet train: error: {history.message}", file=sys.stderr)
            return 1
        if history.stop_reason == "interrupted":
            saved = trainer.last_saved[0] if trainer.last_saved else "nothing (no checkpoint)"
            say(f"{history.message}; saved {saved}. Continue with: convnet train --resume {out}")
            return 130
        if history.stop_reason == "early_stop":
            say(history.message)
        result = evaluate(net, p.test, normalizer=p.normalizer, comm=p.comm)
    if not root:
        return 0
    correct = int(round(result["accuracy"] * result["count"]))
    summary = {"test_accuracy": result["accuracy"], "test_loss": result["loss"],
               "test_count": result["count"], "epochs": trainer.epoch,
               "stop_reason": history.stop_reason}
    best = out / "best.npz"
    by = "validation" if trainer.val is not None and len(trainer.val) else \
        "training accuracy (no validation)"
    saved = f"model saved in {out / LAST}" + (
        f" (best epoch by {by}: {best})" if best.exists() else "")
    if p.per_pixel:
        summary["test_mean_iou"] = result["mean_iou"]
        summary["test_iou"] = {c: None if math.isnan(v) else v
                               for c, v in zip(p.classes, result["iou"].tolist(), strict=True)}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if p.per_pixel:
        print(f"test mean IoU {result['mean_iou']:.3f}, pixel accuracy "
              f"{100 * result['accuracy']:.2f}% ({len(p.test)} images) after {trainer.epoch} "
              f"epochs; {saved}")
    else:
        print(f"test accuracy {100 * result['accuracy']:.2f}% ({correct}/{result['count']}) "
              f"after {trainer.epoch} epochs; {saved}")
    return 0
