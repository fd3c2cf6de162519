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
The file gets the permissions the umask gives any new file.

Reads treat the file as hostile: :func:`load_checkpoint` validates the whole file against one
schema (the zip directory, every ``.npy`` header, the JSON, the stored spec as text only, the
arrays' sizes against the architecture) before anything is allocated, built or used; see
``SECURITY.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet.data.transforms import Normalizer
from convnet.errors import CheckpointError, ConvnetError
from convnet.net.graph import Graph
from convnet.safety import (  # noqa: F401 - MAX_NDIM: checkpoint.MAX_NDIM stays importable
    MAX_NDIM,
    NpyHeader,
    atomic_write,
    cap,
    excerpt,
    npy_header,
    open_regular,
    too_big,
)

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
def atomic_savez(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an npz at ``path`` atomically (temp file, fsync, rename, fsync dir).

    The file gets the permissions the umask gives any new file (0644 for the usual umask 022).
    On any failure, including KeyboardInterrupt, the temporary file is removed and the file
    previously at ``path`` (if any) is left untouched; an ``OSError`` (a full disk, a read-only
    directory) is raised again with ``path`` as its file name and a message saying so.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory: give a file name, e.g. {path / 'model.npz'}")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:
        if exc.errno is not None:
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise OSError(exc.errno, f"{exc.strerror or exc} while writing the checkpoint "
                                     f"({kept})", str(path)) from exc
        raise
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
#: What a checkpoint may hold, besides the arrays' sizes (the ``checkpoint_bytes`` cap):
MAX_MEMBERS = 200_000          # zip members (10,000 layers x params, buffers and optimiser slots)
MAX_TEXT_CHARS = {"format": 64, "dtype": 16, "spec": 1_000_000, "meta": 16_000_000,
                  "rng": 1_000_000, "optim/optimizer": 32}
MAX_JSON_DEPTH = 32            # nesting of meta / rng (convnet writes at most 6)
MAX_INFLATION = 32             # decompressed total / size on disk, beyond the allowance below
_INFLATION_ALLOWANCE = 64 * 2**20
MAX_NAME = 1_000               # characters of a class name
_KEY = re.compile(r"[A-Za-z0-9_.\-/]{1,256}")


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: the file itself, or for a run directory its
    ``best.npz`` (else ``last.npz``)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: a run directory without {BEST} or {LAST}")
    if not p.exists() and not p.is_symlink():
        raise CheckpointError(f"{p}: no such checkpoint file")
    return p


@dataclass(frozen=True)
class _Member(NpyHeader):
    """One ``.npy`` member: its zip entry and what its header declares (validated, nothing of
    its data read)."""

    info: zipfile.ZipInfo


def _bad(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}")


def _npy_header(stream: Any, key: str, info: zipfile.ZipInfo, path: Path) -> _Member:
    """Parse and validate a member's ``.npy`` header (:func:`convnet.safety.npy_header`); the
    data's declared size must be exactly what the zip directory says the member holds (so
    nothing past it is ever read)."""
    h = npy_header(stream, f"{path}: member {key!r}", CheckpointError)
    m = _Member(h.dtype, h.shape, h.fortran, h.header_bytes, info)
    if m.header_bytes + m.nbytes != info.file_size:
        raise _bad(path, f"member {key!r}: its header declares {m.shape} of {m.dtype} = "
                         f"{m.nbytes:,} bytes, but the archive says the member holds "
                         f"{info.file_size - m.header_bytes:,}")
    return m


# What zipfile and zlib raise on a damaged or hostile archive.
_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
               RuntimeError, ValueError, OverflowError, struct.error, UnicodeDecodeError)


class _Archive:
    """A checkpoint's zip, opened with every check that needs no member's data: a regular file
    under the ``checkpoint_bytes`` cap, a bounded member count, the total decompressed size
    from the zip directory under the cap (zip bombs), and every member's ``.npy`` header."""

    def __init__(self, path: Path) -> None:
        self.path = path
        limit = cap("checkpoint_bytes")
        self.file = open_regular(path, what="checkpoint", error=CheckpointError,
                                 cap_name="checkpoint_bytes")
        try:
            self._open(limit)
        except CheckpointError:
            self.file.close()
            raise
        except _ZIP_ERRORS as exc:
            self.file.close()
            raise self._corrupt(exc) from None
        except BaseException:
            self.file.close()
            raise

    def _corrupt(self, exc: BaseException) -> CheckpointError:
        return _bad(self.path, f"corrupt or truncated checkpoint ({type(exc).__name__}: "
                               f"{excerpt(str(exc), 80)[1:-1]})")

    def _open(self, limit: int) -> None:
        path = self.path
        if not zipfile.is_zipfile(self.file):
            raise _bad(path, "not a convnet checkpoint (not an .npz zip archive; truncated or "
                             "another kind of file)")
        self.file.seek(0)
        # The directory's own member count, before ZipFile parses (and allocates) every entry.
        # zipfile's private helper, stable since Python 2; without it the count is checked after.
        end_record = getattr(zipfile, "_EndRecData", None)
        end = end_record(self.file) if end_record is not None else ()
        if end is None:
            raise _bad(path, "not a convnet checkpoint (no zip directory)")
        count = end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)] if end else 0
        if count > MAX_MEMBERS:
            raise _bad(path, f"{count:,} members (a checkpoint has at most {MAX_MEMBERS:,})")
        self.file.seek(0)
        self.zip = zipfile.ZipFile(self.file)
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _bad(path, f"{len(infos):,} members (a checkpoint has at most {MAX_MEMBERS:,})")
        total = sum(i.file_size for i in infos)
        if total > limit:
            raise too_big(path, "the checkpoint once decompressed", total, "checkpoint_bytes",
                          CheckpointError)
        on_disk = os.fstat(self.file.fileno()).st_size
        if total > _INFLATION_ALLOWANCE + MAX_INFLATION * on_disk:
            raise _bad(path, f"its members inflate to {total:,} bytes from {on_disk:,} on disk "
                             f"(more than {MAX_INFLATION}x, plus {_INFLATION_ALLOWANCE // 2**20} "
                             "MiB): a zip bomb, not weights (convnet writes members uncompressed; "
                             "compressed real weights shrink by 1.1x to 3x)")
        self.members: dict[str, _Member] = {}
        for info in infos:
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            if key is None or not _KEY.fullmatch(key):
                raise _bad(path, f"member {excerpt(name, 60)} is not one of a convnet checkpoint "
                                 "(NAME.npy)")
            if key in self.members:
                raise _bad(path, f"member {key!r} appears twice")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _bad(path, f"member {key!r} uses zip compression method "
                                 f"{info.compress_type} (only stored or deflated)")
            with self.zip.open(info) as stream:
                self.members[key] = _npy_header(stream, key, info, path)

    def read(self, key: str) -> np.ndarray:
        """The member's array: exactly the bytes its header declares (CRC checked)."""
        m = self.members[key]
        buf = bytearray(m.nbytes)
        try:
            with self.zip.open(m.info) as stream:
                stream.read(m.header_bytes)
                got = stream.readinto(buf) if m.nbytes else 0
                if got != m.nbytes or stream.read(1):  # reading to the end checks the CRC
                    raise _bad(self.path, f"member {key!r} is truncated")
        except CheckpointError:
            raise
        except _ZIP_ERRORS as exc:
            raise self._corrupt(exc) from None
        a = np.frombuffer(buf, dtype=m.dtype)
        return a.reshape(m.shape, order="F" if m.fortran else "C")

    def text(self, key: str) -> str:
        m = self.members.get(key)
        if m is None:
            raise _bad(self.path, f"missing {key!r}; not a convnet checkpoint or damaged")
        limit = MAX_TEXT_CHARS.get(key, 1_000)
        if m.shape != () or m.dtype.kind != "U" or m.dtype.itemsize // 4 > limit:
            raise _bad(self.path, f"{key!r} must be a text scalar of at most {limit:,} "
                                  f"characters, found shape {m.shape} dtype {m.dtype}")
        # Decoded here, strictly: NumPy turns code points past U+10FFFF into a malformed str
        # (found by fuzz/run.py: SystemError "invalid maximum character" when it is indexed).
        raw = self.read(key)
        raw = raw.astype(raw.dtype.newbyteorder("<")).tobytes()
        try:
            return raw.decode("utf-32-le").rstrip("\0")  # NumPy pads text with NULs
        except UnicodeDecodeError as exc:
            raise _bad(self.path, f"{key!r} is not valid text ({exc.reason} at byte "
                                  f"{exc.start})") from None

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.zip.close()
        self.file.close()


# --------------------------------------------------------------------------------- the schema
def _json(ar: _Archive, key: str) -> Any:
    text = ar.text(key)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, 4300-digit ints, nesting
        raise _bad(ar.path, f"{key!r} is not valid JSON ({excerpt(str(exc), 80)[1:-1]})") \
            from None
    # Iterative: any nesting is measured without recursion.
    todo = [(value, 1)]
    while todo:
        obj, depth = todo.pop()
        if depth > MAX_JSON_DEPTH:
            raise _bad(ar.path, f"{key!r} is nested more than {MAX_JSON_DEPTH} deep")
        if isinstance(obj, dict):
            todo.extend((v, depth + 1) for v in obj.values())
        elif isinstance(obj, list):
            todo.extend((v, depth + 1) for v in obj)
    return value


_KINDS = {"int": "a whole number", "number": "a number", "str": "text", "bool": "true or false",
          "list": "a list", "dict": "a JSON object"}


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float) and math.isfinite(value)
    return isinstance(value, {"str": str, "bool": bool, "list": list, "dict": dict}[kind])


@dataclass(frozen=True)
class Field:
    """One entry of a JSON object in a checkpoint: its kind and the values it may take."""

    kind: str
    required: bool = False
    nullable: bool = False
    low: float | None = None        # inclusive
    high: float | None = None       # exclusive
    positive: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: Any, where: str, path: Path) -> None:
        if value is None and self.nullable:
            return
        ok = _is(value, self.kind)
        if ok and self.kind in ("int", "number"):
            ok = (self.low is None or value >= self.low) and \
                 (self.high is None or value < self.high) and (not self.positive or value > 0)
        if ok and self.choices:
            ok = value in self.choices
        if not ok:
            want = _KINDS[self.kind]
            if self.choices:
                want = "one of " + ", ".join(self.choices)
            elif self.positive:
                want += " > 0"
            if self.low is not None:
                want += f" >= {self.low:g}"
            if self.high is not None:
                want += f" < {self.high:g}"
            if self.nullable:
                want += " (or null)"
            raise _bad(path, f"{where} must be {want}, found {excerpt(json.dumps(value), 40)}")


#: ``meta`` written by :func:`save` (other keys are ignored: nothing reads them).
META_SCHEMA: dict[str, Field] = {
    "epoch": Field("int", low=0, high=10**9), "metrics": Field("dict"), "history": Field("list"),
    "classes": Field("list", nullable=True), "input": Field("dict"), "config": Field("dict"),
    "extra": Field("dict"),
}
#: ``meta.input``: how raw images become network input.
INPUT_SCHEMA: dict[str, Field] = {
    "shape": Field("list"), "range": Field("list"), "mode": Field("str", choices=("L", "RGB")),
    "dataset": Field("str"),
}
#: ``meta.config``: the run's settings; ``Trainer`` writes the first four, other keys are free.
CONFIG_SCHEMA: dict[str, Field] = {
    "epochs": Field("int", low=0, high=10**9), "batch_size": Field("int", low=1, high=2**31),
    "seed": Field("int", low=0, nullable=True), "step": Field("int", low=0, high=2**62),
    "cli": Field("dict"),
}
#: ``meta.config.cli``: what ``convnet train`` writes and ``convnet train --resume`` reads back
#: (``cli/train.py``); the required keys are those a resumed run cannot do without.
CLI_SCHEMA: dict[str, Field] = {
    "arch": Field("str", required=True), "data": Field("str", required=True),
    "optimizer": Field("str", required=True, choices=("sgd", "adam", "adamw")),
    "lr": Field("number", required=True, positive=True),
    "momentum": Field("number", required=True, nullable=True, low=0, high=1),
    "weight_decay": Field("number", required=True, nullable=True, low=0),
    "schedule": Field("str", required=True),
    "epochs": Field("int", required=True, low=1, high=10**9),
    "batch_size": Field("int", required=True, low=1, high=2**31),
    "seed": Field("int", required=True, nullable=True, low=0),
    "augment": Field("bool", required=True, nullable=True),
    "val_split": Field("number", required=True, low=0, high=1),
    "early_stop": Field("int", required=True, nullable=True, low=1),
    "threads": Field("int", nullable=True, low=1), "n_train": Field("int", nullable=True, low=1),
    "n_test": Field("int", nullable=True, low=1), "arch_spec": Field("str"),
}


def _check_object(obj: dict[str, Any], schema: dict[str, Field], where: str, path: Path) -> None:
    for key, f in schema.items():
        if key in obj:
            f.check(obj[key], f"{where}.{key}" if where else key, path)
        elif f.required:
            raise _bad(path, f"{where or 'meta'} lacks {key!r}; it needs "
                             f"{', '.join(k for k, v in schema.items() if v.required)}")


def _check_meta(meta: Any, rng: Any, path: Path) -> None:
    """``meta`` and ``rng`` against the schema: types, ranges (depth was checked on parsing)."""
    if not isinstance(meta, dict) or not isinstance(rng, dict):
        raise _bad(path, "'meta' and 'rng' must be JSON objects")
    _check_object(meta, META_SCHEMA, "", path)
    if not all(isinstance(h, dict) for h in meta.get("history", [])):
        raise _bad(path, "'history' must be a list of per-epoch records")
    classes = meta.get("classes")
    if classes is not None and not all(isinstance(c, str) and len(c) <= MAX_NAME
                                       for c in classes):
        raise _bad(path, f"'classes' must be a list of names of at most {MAX_NAME} characters")
    info = meta.get("input", {})
    _check_object(info, INPUT_SCHEMA, "input", path)
    if "shape" in info and not (1 <= len(info["shape"]) <= 3 and all(
            type(d) is int and 1 <= d <= 10**6 for d in info["shape"])):
        raise _bad(path, f"input.shape must be a list of 1 to 3 whole numbers >= 1, found "
                         f"{excerpt(json.dumps(info['shape']), 40)}")
    if "range" in info:
        r = info["range"]
        if not (len(r) == 2 and all(_is(v, "number") for v in r) and r[0] < r[1]):
            raise _bad(path, f"input.range must be [low, high] with low < high, found "
                             f"{excerpt(json.dumps(r), 40)}")
    config = meta.get("config", {})
    _check_object(config, CONFIG_SCHEMA, "config", path)
    if "cli" in config:
        _check_object(config["cli"], CLI_SCHEMA, "config.cli", path)
    for key in ("net", "data"):
        if rng.get(key) is not None and not isinstance(rng[key], dict):
            raise _bad(path, f"rng.{key} must be a bit-generator state (a JSON object)")


def _spec_net(spec: str, dtype: str, path: Path, weights: bool) -> Graph:
    """The stored architecture, parsed as TEXT (never a path or a zoo name)."""
    from convnet.spec import build

    try:
        return build(spec, seed=0, dtype=np.dtype(dtype), weights=weights, literal=True)
    except (ConvnetError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        raise _bad(path, f"its architecture does not build: {exc}") from None


def _check_members(ar: _Archive, shapes_net: Graph) -> None:
    """Every member's name, type and size against the architecture, from the headers alone:
    run BEFORE the network's weights are allocated, so a spec that would allocate more than the
    file holds (``INPUT(100000x1x1) -> FC(9999)`` in a 4 KB file) is refused first."""
    path, members = ar.path, ar.members
    known = {"format", "version", "spec", "dtype", "meta", "rng"}
    groups = ("param/", "optim/", "norm/", "loop/")
    unknown = [k for k in members if k not in known and not k.startswith(groups)]
    if unknown:
        raise _bad(path, f"unknown member(s) {', '.join(excerpt(k, 40) for k in unknown[:5])}; "
                         "not a convnet checkpoint")
    # Parameters: the architecture may not need more than the file holds. This bounds what
    # building it allocates by the file's own (capped) size; names and exact shapes are compared
    # right after, before any data is read.
    have = 0
    for key, m in members.items():
        if key.startswith("param/"):
            if m.dtype.kind != "f":
                raise _bad(path, f"{key[6:]} has dtype {m.dtype}, not floating point")
            have += m.size
    want = shapes_net.num_params
    if want > have and want * shapes_net.dtype.itemsize > _SMALL_NET_BYTES:
        raise _bad(path, f"the stored architecture has {want:,} parameters "
                         f"({want * shapes_net.dtype.itemsize:,} bytes) but the file holds "
                         f"{have:,} values of weights; refused before allocating them")


def _check_state_members(ar: _Archive) -> None:
    """The optimiser, normalisation and loop members against the (exactly checked) parameters:
    names, types and shapes, still from the headers alone."""
    path, members = ar.path, ar.members
    for key, m in members.items():
        if key.startswith("norm/") and (key not in ("norm/mean", "norm/std")
                                        or m.dtype.kind != "f" or len(m.shape) != 1):
            raise _bad(path, f"{key}: normalisation needs norm/mean and norm/std, 1-d floating "
                             f"point arrays (found {m.shape} {m.dtype})")
        if key.startswith("loop/"):
            want = _LOOP.get(key[5:])
            if want is None or m.dtype.kind not in want[0] or len(m.shape) != want[1] \
                    or (key == "loop/sums" and m.shape != (4,)):
                raise _bad(path, f"{key}: not part of an interrupted epoch's state (order, "
                                 f"batch, sums, time), or of the wrong type {m.shape} {m.dtype}")
        if key == "optim/optimizer":
            ar.text(key)  # a short text scalar, or CheckpointError
        elif key.startswith("optim/"):
            if key == "optim/step":
                if m.shape != () or m.dtype.kind not in "iu":
                    raise _bad(path, "optim/step must be a whole number")
                continue
            param = key[6:].rpartition(".")[0]
            target = members.get(f"param/{param}")
            if target is None or m.dtype.kind not in "fiu" or m.shape not in ((), target.shape):
                raise _bad(path, f"{key}: optimiser state for a parameter the checkpoint does not "
                                 f"have, or of another shape ({m.shape} {m.dtype})")


# Networks this small are built whatever the file holds, for the exact message (which weights are
# missing); above it, the file must hold as many weights as the architecture allocates.
_SMALL_NET_BYTES = 64 * 2**20
# loop/<key>: (allowed dtype kinds, number of dimensions)
_LOOP = {"order": ("iu", 1), "batch": ("iu", 0), "sums": ("f", 1), "time": ("f", 0)}


def rng_state_from_json(
    state: Any, path: str | os.PathLike[str] = "<checkpoint>", what: str = "rng"
) -> np.random.Generator:
    """A new Generator at the saved bit-generator ``state``; CheckpointError if it is not one."""
    try:
        name = state["bit_generator"]
        if not isinstance(name, str) or name.startswith("_"):
            raise TypeError(excerpt(name, 30))
        bitgen_cls = getattr(np.random, name)
        if not (isinstance(bitgen_cls, type) and issubclass(bitgen_cls, np.random.BitGenerator)):
            raise TypeError(excerpt(name, 30))
        bitgen = bitgen_cls()
        bitgen.state = state
    except (TypeError, KeyError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: {what} state is not a numpy bit-generator state "
                              f"({excerpt(str(exc), 60)[1:-1]})") from None
    return np.random.Generator(bitgen)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save`.

    ``path`` may be a run directory (its ``best.npz``, else ``last.npz``), or an ONNX file
    (``.onnx``, read by :func:`convnet.interop.onnx_import.onnx_checkpoint`).

    The whole file is validated against the checkpoint's schema in one place, in this order,
    before anything is built or used: a regular file under the ``checkpoint_bytes`` cap
    (``--max-checkpoint-bytes``, ``CONVNET_MAX_CHECKPOINT_BYTES``); the zip directory (member
    count, decompressed total under the cap and at most 64 MiB + :data:`MAX_INFLATION` times
    the size on disk: no zip bomb is inflated); every member's ``.npy``
    header (types: numbers or text, never objects; shapes; declared sizes equal to the zip's);
    the text members and their JSON (depth, types and ranges of every field, ``config.cli``
    included); the stored spec, parsed as text only (never a path or a zoo name) into shapes
    without weights; the members' element counts per layer against those shapes; only then are
    the weights allocated, the exact shapes compared, the arrays read (exactly their declared
    bytes, CRC checked) and checked finite, and the normalisation statistics checked finite
    with std > 0.

    Raises:
        CheckpointError: naming the file, when any of that fails; messages quote at most a
            short, escaped excerpt of the file's text.
    """
    path = resolve_checkpoint_path(path)
    if path.suffix.lower() == ".onnx":   # issue 14: an ONNX model, read by the importer
        from convnet.interop.onnx_import import onnx_checkpoint

        return onnx_checkpoint(path)
    ar = _Archive(path)
    try:
        return _load(ar)
    finally:
        ar.close()


def _load(ar: _Archive) -> Checkpoint:
    path = ar.path
    fmt = ar.text("format")
    if fmt != FORMAT:
        raise _bad(path, f"format {excerpt(fmt, 40)}, expected {FORMAT!r}")
    version = ar.members.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise _bad(path, "missing or invalid 'version'")
    v = int(ar.read("version"))
    if v > VERSION or v < 1:
        raise _bad(path, f"checkpoint version {v} is not one this convnet reads ({VERSION}); "
                         "a newer file needs a newer convnet")
    spec = ar.text("spec")
    dtype = ar.text("dtype")
    if dtype not in ("float32", "float64"):
        raise _bad(path, f"dtype {excerpt(dtype, 20)}, expected float32 or float64")
    meta = _json(ar, "meta")
    rng = _json(ar, "rng")
    _check_meta(meta, rng, path)

    _check_members(ar, _spec_net(spec, dtype, path, weights=False))
    net = _spec_net(spec, dtype, path, weights=True)  # bounded now by the file's own arrays
    own = net.state_dict()
    params = {k[6:]: m for k, m in ar.members.items() if k.startswith("param/")}
    missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
    if missing or extra:
        raise _bad(path, f"weights do not match the network: missing "
                         f"{', '.join(missing) or 'nothing'}; unexpected "
                         f"{', '.join(excerpt(k, 30, quotes=False) for k in extra) or 'nothing'}")
    for key, target in own.items():
        if params[key].shape != target.shape:
            raise _bad(path, f"{key}: expected shape {target.shape}, received "
                             f"{params[key].shape}")
    _check_state_members(ar)
    depth = net.input_shape[-1]
    norm_keys = [k for k in ar.members if k.startswith("norm/")]
    if norm_keys:
        if sorted(norm_keys) != ["norm/mean", "norm/std"]:
            raise _bad(path, f"normalisation needs norm/mean and norm/std, found "
                             f"{sorted(k[5:] for k in norm_keys)}")
        shapes = ar.members["norm/mean"].shape, ar.members["norm/std"].shape
        if shapes != ((depth,), (depth,)):
            raise _bad(path, f"normalisation statistics of shapes {shapes[0]} and {shapes[1]}, "
                             f"but the network's input has {depth} channel(s)")
    shape = meta.get("input", {}).get("shape")
    if shape is not None and tuple(shape) != net.input_shape:
        raise _bad(path, f"input.shape {shape} is not the architecture's input "
                         f"{list(net.input_shape)}")
    classes = meta.get("classes")
    if classes is not None and len(classes) != net.output_shape[-1]:
        raise _bad(path, f"{len(classes)} class names for a network with "
                         f"{net.output_shape[-1]} outputs")

    # the data: exactly the declared bytes of each member
    for key in own:
        src = ar.read(f"param/{key}")
        if not np.all(np.isfinite(src)):
            raise _bad(path, f"{key} holds NaN or Inf values")
        own[key][...] = src
    if rng.get("net") is not None:
        net.rng.bit_generator.state = rng_state_from_json(rng["net"], path, "net rng") \
            .bit_generator.state
    normalizer = None
    if norm_keys:
        mean, std = ar.read("norm/mean"), ar.read("norm/std")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise _bad(path, f"normalisation statistics must be finite with std > 0, found mean "
                             f"{excerpt(str(mean.tolist()), 60)} and std "
                             f"{excerpt(str(std.tolist()), 60)}: with them every image would "
                             "become the same (or a meaningless) input")
        normalizer = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    optimizer = {key[6:]: ar.read(key) for key in ar.members if key.startswith("optim/")}
    loop = {key[5:]: ar.read(key) for key in ar.members if key.startswith("loop/")}
    return Checkpoint(
        path=path,
        net=net,
        spec=spec,
        epoch=meta.get("epoch", 0),
        metrics=meta.get("metrics", {}),
        history=meta.get("history", []),
        classes=classes,
        normalizer=normalizer,
        input=meta.get("input", {}),
        config=meta.get("config", {}),
        optimizer=optimizer,
        rng=rng,
        loop=loop,
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
