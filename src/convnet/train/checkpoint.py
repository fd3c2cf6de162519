"""Checkpoints: one ``.npz`` file that holds everything needed to use or resume a model.

A checkpoint never executes code on load: it is a zip of ``.npy`` arrays written by
``np.savez`` and read with ``np.load(..., allow_pickle=False)``, so an object array (a pickle)
is refused instead of unpickled. Text (the architecture spec, JSON metadata) is stored as NumPy
unicode arrays.

Layout (keys of the npz):

============================  =====================================================================
``format``, ``version``       ``"convnet-checkpoint"``, 1
``spec``                      the architecture in the architecture language (``net.spec``)
``dtype``                     ``"float32"`` or ``"float64"``
``meta``                      JSON: epoch, metrics, history, classes, input conversion info, run
                              config, extras
``rng``                       JSON: ``{"net": ..., "data": ...}`` bit-generator states (dropout
                              masks; shuffling and augmentation)
``param/<name>``              weights and BN buffers (``net.state_dict()``), e.g. ``param/conv1.W``
``optim/<key>``               optimiser state (``Optimizer.state_dict()``)
``norm/mean``, ``norm/std``   per-channel normalisation fitted on the training set
``loop/<key>``                position inside an interrupted epoch (order, next batch, sums)
============================  =====================================================================

Writes are atomic: the file is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the target with ``os.replace`` and the directory fsynced. Killing the
process at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet.data.transforms import Normalizer
from convnet.errors import CheckpointError, ConvnetError, ShapeError
from convnet.net.graph import Graph

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "atomic_savez",
    "load",
    "load_checkpoint",
    "resolve_checkpoint_path",
    "rng_state_from_json",
    "save",
]

FORMAT = "convnet-checkpoint"
VERSION = 1
# Files written by `convnet train` into its run directory.
LAST = "last.npz"
BEST = "best.npz"


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, validated.

    Attributes:
        path: the file it was read from.
        net: the network, built from ``spec`` with the saved weights and BN buffers.
        spec: architecture text.
        epoch: completed epochs when it was saved.
        metrics: the last epoch's logs (``{"loss": ..., "val_accuracy": ...}``).
        history: every epoch's logs, oldest first.
        classes: class names (``classes[i]`` names output ``i``), or None.
        normalizer: ``{"mean": (D,), "std": (D,)}`` float32, or None.
        input: how raw images become network input (shape, value range, data set name).
        config: the training run's settings (optimiser, schedule, batch size, ...).
        optimizer: the optimiser's flat state dict (empty when none was saved).
        rng: ``{"net": state, "data": state}`` bit-generator state dicts.
        loop: position inside an interrupted epoch (empty at an epoch boundary).
        extra: any other JSON metadata passed to :func:`save`.
    """

    path: Path
    net: Graph
    spec: str
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] | None = None
    normalizer: dict[str, np.ndarray] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- writing
def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows), hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_savez(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an npz at ``path`` atomically (temp file, fsync, rename, fsync dir).

    On any failure, including KeyboardInterrupt, the temporary file is removed and the file
    previously at ``path`` (if any) is left untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory: give a file name, e.g. {path / 'model.npz'}")
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _text(obj: Any) -> np.ndarray:
    # allow_nan: a metric may legitimately be NaN (per-class accuracy of an absent class);
    # Python's json reads its NaN back.
    return np.array(json.dumps(obj, default=_json_default, allow_nan=True))


def _rng_state(rng: Any) -> dict[str, Any] | None:
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return dict(rng.bit_generator.state)
    if isinstance(rng, Mapping):
        return dict(rng)
    raise CheckpointError(f"an RNG state must be a numpy Generator or its state dict, not "
                          f"{type(rng).__name__}")


def save(
    net: Graph,
    path: str | os.PathLike[str],
    *,
    optimizer: Any = None,
    epoch: int = 0,
    metrics: Mapping[str, Any] | None = None,
    history: list[Mapping[str, Any]] | None = None,
    classes: list[str] | None = None,
    normalizer: Any = None,
    input_info: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    data_rng: np.random.Generator | Mapping[str, Any] | None = None,
    loop: Mapping[str, np.ndarray] | None = None,
    **extra: Any,
) -> Path:
    """Save ``net`` (and optionally the training state) to one ``.npz`` file, atomically.

    Args:
        net: the network; its spec, weights and BN buffers are saved, and ``net.rng`` (the
            dropout generator).
        path: the file to write (``.npz`` recommended); its directory is created if needed.
        optimizer: an :class:`~convnet.optim.Optimizer` (its ``state_dict()`` is saved) or a
            state dict.
        epoch: completed epochs.
        metrics, history: the last epoch's logs and every epoch's logs (JSON-serialisable).
        classes: class names, ``classes[i]`` for output ``i``.
        normalizer: a :class:`~convnet.data.transforms.Normalizer` or ``{"mean", "std"}``.
        input_info: how raw images become input (e.g. ``{"shape": [8, 8, 1], "range": [0, 1]}``).
        config: the run's settings, so ``--resume`` can rebuild the optimiser and schedule.
        data_rng: the generator that shuffles and augments (or its state dict).
        loop: arrays describing the position inside an interrupted epoch.
        **extra: any other JSON-serialisable metadata.

    Returns the path written.

    >>> import convnet as cn, tempfile, os
    >>> net = cn.build("INPUT(8x8x1) -> FC(10)", seed=0)
    >>> p = cn.save(net, os.path.join(tempfile.mkdtemp(), "m.npz"))
    >>> cn.load(p).spec
    'INPUT(8x8x1) -> FC(10)'
    """
    if not isinstance(net, Graph):
        raise CheckpointError(f"save: expected a convnet network, received {type(net).__name__}")
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION, dtype=np.int64),
        "spec": np.array(net.spec),
        "dtype": np.array(net.dtype.name),
    }
    for key, value in net.state_dict().items():
        arrays[f"param/{key}"] = value
    if optimizer is not None:
        state = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
        for key, value in state.items():
            arrays[f"optim/{key}"] = np.asarray(value)
    stats = Normalizer.coerce(normalizer)
    if stats is not None:
        arrays["norm/mean"] = stats.mean.copy()
        arrays["norm/std"] = stats.std.copy()
    for key, value in (loop or {}).items():
        arrays[f"loop/{key}"] = np.asarray(value)
    meta = {
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
        "history": [dict(h) for h in (history or [])],
        "classes": None if classes is None else [str(c) for c in classes],
        "input": dict(input_info or {"shape": list(net.input_shape)}),
        "config": dict(config or {}),
        "extra": extra,
    }
    try:
        arrays["meta"] = _text(meta)
        arrays["rng"] = _text({"net": _rng_state(net.rng), "data": _rng_state(data_rng)})
    except TypeError as exc:
        raise CheckpointError(f"save {path}: metadata is not JSON serialisable: {exc}") from None
    return atomic_savez(path, arrays)


# ------------------------------------------------------------------------------------- reading
def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: the file itself, or for a run directory its
    ``best.npz`` (else ``last.npz``)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: a run directory without {BEST} or {LAST}")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file")
    return p


def _read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz, read eagerly, pickles refused; any failure -> CheckpointError."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a convnet checkpoint (not an .npz zip archive; truncated or another "
            "kind of file)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {}
            for key in npz.files:
                out[key] = npz[key]
    except ValueError as exc:
        # numpy's message for an object array: "Object arrays cannot be loaded when
        # allow_pickle=False"
        if "pickle" in str(exc):
            raise CheckpointError(
                f"{path}: holds a pickled object array; convnet checkpoints never execute code "
                "on load, so this file is refused"
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None
    return out


def _scalar_text(arrays: dict[str, np.ndarray], key: str, path: Path) -> str:
    if key not in arrays:
        raise CheckpointError(f"{path}: missing {key!r}; not a convnet checkpoint or damaged")
    a = arrays[key]
    if a.shape != () or a.dtype.kind != "U":
        raise CheckpointError(f"{path}: {key!r} must be a text scalar, found shape {a.shape} "
                              f"dtype {a.dtype}")
    return str(a)


def _json(arrays: dict[str, np.ndarray], key: str, path: Path) -> Any:
    text = _scalar_text(arrays, key, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: {key!r} is not valid JSON ({exc})") from None


def rng_state_from_json(
    state: Any, path: str | os.PathLike[str] = "<checkpoint>", what: str = "rng"
) -> np.random.Generator:
    """A new Generator at the saved bit-generator ``state``; CheckpointError if it is not one."""
    try:
        name = state["bit_generator"]
        bitgen_cls = getattr(np.random, name)
        if not (isinstance(bitgen_cls, type) and issubclass(bitgen_cls, np.random.BitGenerator)):
            raise TypeError(name)
        bitgen = bitgen_cls()
        bitgen.state = state
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: {what} state is not a numpy bit-generator state ({exc})") \
            from None
    return np.random.Generator(bitgen)


def _group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save`.

    ``path`` may be a run directory (its ``best.npz``, else ``last.npz``), or an ONNX file
    (``.onnx``, read by :func:`convnet.interop.onnx_import.onnx_checkpoint`).

    Raises:
        CheckpointError: naming the file, when it is missing, not an npz, truncated, holds a
            pickled object array, lacks an entry, has an architecture that does not build, or
            weights whose names or shapes do not fit that architecture.
    """
    path = resolve_checkpoint_path(path)
    if path.suffix.lower() == ".onnx":   # issue 14: an ONNX model, read by the importer
        from convnet.interop.onnx_import import onnx_checkpoint

        return onnx_checkpoint(path)
    arrays = _read_all(path)
    fmt = _scalar_text(arrays, "format", path)
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
    version = arrays.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: missing or invalid 'version'")
    if int(version) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {int(version)} is newer than this convnet reads "
            f"({VERSION}); upgrade convnet"
        )
    spec = _scalar_text(arrays, "spec", path)
    dtype = _scalar_text(arrays, "dtype", path)
    if dtype not in ("float32", "float64"):
        raise CheckpointError(f"{path}: dtype {dtype!r}, expected float32 or float64")
    meta = _json(arrays, "meta", path)
    rng = _json(arrays, "rng", path)
    if not isinstance(meta, dict) or not isinstance(rng, dict):
        raise CheckpointError(f"{path}: 'meta' and 'rng' must be JSON objects")

    from convnet.spec import build

    try:
        net = build(spec, seed=0, dtype=np.dtype(dtype))
    except ConvnetError as exc:
        raise CheckpointError(f"{path}: its architecture does not build: {exc}") from None
    params = _group(arrays, "param/")
    for key, src in params.items():  # what a checkpoint adds to load_state_dict's own checks
        if src.dtype.kind != "f":
            raise CheckpointError(f"{path}: {key} has dtype {src.dtype}, not floating point")
        if not np.all(np.isfinite(src)):
            raise CheckpointError(f"{path}: {key} holds NaN or Inf values")
    try:
        net.load_state_dict(params)  # names and shapes checked before anything is copied
    except ShapeError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if rng.get("net") is not None:
        net.rng.bit_generator.state = rng_state_from_json(rng["net"], path, "net rng") \
            .bit_generator.state

    normalizer = None
    norm = _group(arrays, "norm/")
    if norm:
        if set(norm) != {"mean", "std"}:
            raise CheckpointError(f"{path}: normalisation needs norm/mean and norm/std, found "
                                  f"{sorted(norm)}")
        mean, std = norm["mean"], norm["std"]
        depth = net.input_shape[-1]
        if mean.shape != (depth,) or std.shape != (depth,):
            raise CheckpointError(
                f"{path}: normalisation statistics of shapes {mean.shape} and {std.shape}, but "
                f"the network's input has {depth} channel(s)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
            raise CheckpointError(f"{path}: normalisation std must be > 0 and mean finite")
        normalizer = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}

    try:
        epoch = int(meta.get("epoch", 0))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: 'epoch' is not a whole number") from None
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"{path}: 'classes' must be a list of names")
        outputs = net.output_shape[-1]
        if len(classes) != outputs:
            raise CheckpointError(
                f"{path}: {len(classes)} class names for a network with {outputs} outputs"
            )
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckpointError(f"{path}: 'history' must be a list of per-epoch records")
    for key in ("metrics", "input", "config", "extra"):
        if not isinstance(meta.get(key, {}), dict):
            raise CheckpointError(f"{path}: {key!r} must be a JSON object")
    return Checkpoint(
        path=path,
        net=net,
        spec=spec,
        epoch=epoch,
        metrics=meta.get("metrics", {}),
        history=history,
        classes=classes,
        normalizer=normalizer,
        input=meta.get("input", {}),
        config=meta.get("config", {}),
        optimizer=_group(arrays, "optim/"),
        rng=rng,
        loop=_group(arrays, "loop/"),
        extra=meta.get("extra", {}),
    )


def load(path: str | os.PathLike[str]) -> Graph:
    """The network saved at ``path`` (a checkpoint file or a run directory), ready to predict.

    The class names and normalisation statistics are attached as ``net.classes`` and
    ``net.normalizer`` (None when absent); use :func:`load_checkpoint` for everything else.

    Raises :class:`~convnet.errors.CheckpointError` naming the file when it cannot be read
    safely (see :func:`load_checkpoint`).
    """
    ckpt = load_checkpoint(path)
    net = ckpt.net
    net.classes = ckpt.classes  # type: ignore[attr-defined]
    net.normalizer = ckpt.normalizer  # type: ignore[attr-defined]
    return net
