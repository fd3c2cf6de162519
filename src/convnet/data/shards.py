"""Packed data sets: uint8 shards on disk, read by sample index with bounded memory.

``pack(SOURCE, OUT)`` (``convnet pack``) turns an image folder, IDX files, CIFAR-10 batches, a
named data set or the fashion-seg canvases into a directory of shards; :func:`open_packed` (and
``load_dataset(OUT)``) opens it as ``(train, test)`` :class:`ShardedDataset` objects, which
implement :class:`~convnet.data.dataset.DataSource`, so training, evaluation and normalisation
read them through ``take(indices)`` exactly as they read arrays in memory.

Layout of a packed directory::

    manifest.json          what is where (below); written last, atomically
    pack-job.json          the settings of the pack that fills the directory
    train-x-00000.npy      images (n, H, W, D) uint8, NumPy .npy (no pickle: plain uint8 data)
    train-y-00000.npy      labels (n,) uint8/uint16/int32, or (n, H, W) for per-pixel labels
    train-x-00001.npy ...  test-x-00000.npy, test-y-00000.npy, ...

``manifest.json``::

    {"format": "convnet-shards", "version": 1, "name": "fashion-mnist", "source": "...",
     "classes": [...], "hflip": true, "labels": "image" | "pixel",
     "input_shape": [H, W, D], "label_shape": [] | [H, W], "label_dtype": "uint8", "job": "...",
     "splits": {"train": {"count": N, "class_counts": [...], "mean": [...], "std": [...],
                          "shards": [{"x": "train-x-00000.npy", "y": "train-y-00000.npy",
                                      "count": n, "sha256": {"x": "...", "y": "..."},
                                      "sum": [...], "sum_sq": [...], "class_counts": [...]}]},
                "test": {...}},
     "skipped": [{"split": "train", "path": "...", "reason": "..."}], "settings": {...}}

``mean``/``std`` are per channel in ``[0, 1]`` units over every pixel of the split. They come from
one streaming pass while packing, from exact integer sums of the uint8 values (``sum``,
``sum_sq`` per shard; the variance is ``(n S2 - S1^2) / n^2`` in Python integers): no rounding
at all until the final division, where Welford's or float sums would round at every step.

**Why the images are uint8.** A pixel of an 8-bit image file is one of 256 levels ``k / 255``;
``uint8 / np.float32(255)`` gives back exactly the float32 the in-memory loaders make, so a shard
is a quarter of the float32 bytes and training from it is bit for bit training from memory.
16-bit and float images are rounded to the nearest of the 256 levels.

**Reading.** Each shard is memory-mapped (the mapping ``np.load(mmap_mode="r")`` makes, opened
here so the mapping can be handed back) and a batch is one fancy-index gather per shard it
touches. Pages of a file mapping that were read count in the process's resident memory until
unmapped, so after an epoch over a 10 GB pack ``top`` would show 10 GB (clean, reclaimable, but
alarming and counted by memory limits); after each gather the touched shards are released with
``madvise(MADV_DONTNEED)``: the pages stay in the page cache, the next read of them is a minor
fault (~0.1 us per 4 KiB), and resident memory stays at about one batch.

**Integrity.** Opening checks the manifest and every shard's header (shape, dtype, byte order,
file size) against it: a :class:`DataError` names the file. SHA-256 hashes are checked once per
process: by default *lazily*, each shard the first time it is read (``verify="lazy"``), because
training reads every shard in its first epoch anyway (the hash then costs one sequential read per
shard, in the prefetch thread, overlapping compute) while evaluating the test split should not
hash the training shards; ``verify="open"`` hashes everything at once (running ``convnet pack``
again on a finished pack does, and re-makes what is damaged), ``verify="none"`` trusts the
files. Label shards are read whole when opened, so they are
always checked then.

**Packing** decodes images in a pool of worker processes (``workers``), shows a progress bar,
and writes each shard atomically (temporary file, fsync, rename): an interrupted pack leaves
only complete shards, each recorded in a small ``<split>-<k>.json`` until the manifest is
written. Running the same pack again continues: shards that are complete and whose hashes verify
are kept, the rest are made. An image that cannot be read is listed in ``skipped`` with the
reason, never fatal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import shlex
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from convnet.errors import DataError

from .dataset import DataSplits, iter_ranges, random_split, stratified_split

FORMAT = "convnet-shards"
VERSION = 1
MANIFEST = "manifest.json"
JOB_FILE = "pack-job.json"
SPLITS = ("train", "test")
#: default bytes of images per shard (a shard is also the unit of resuming)
SHARD_BYTES = 128 << 20
#: images per decoding task sent to a worker process
DECODE_CHUNK = 64
_HASH_BLOCK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9._-]+\.npy$")
_RELEASE = getattr(mmap, "MADV_DONTNEED", None)  # absent on Windows: pages then stay mapped


# ------------------------------------------------------------------------------- file helpers
def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (never mapped: resident memory stays flat)."""
    digest = hashlib.sha256()
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # makes a rename durable; best effort (not possible on every platform)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


class _HashingWriter:
    """A file-like object that hashes what it writes (np.lib.format writes through it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.digest = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.f.write(data)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write ``array`` as a .npy file atomically; return the SHA-256 of the file's bytes."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    digest: list[str] = []

    def write(f: IO[bytes]) -> None:
        hw = _HashingWriter(f)
        np.lib.format.write_array(hw, array, allow_pickle=False)  # type: ignore[arg-type]
        digest.append(hw.digest.hexdigest())

    _atomic_write(path, write)
    return digest[0]


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a .npy file from its header; checks the file size.

    Raises :class:`DataError` naming the file for anything that is not a plain C-ordered
    numeric array whose data is all there (a pickled object array is refused, never loaded).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = {1: np.lib.format.read_array_header_1_0,
                    2: np.lib.format.read_array_header_2_0}.get(major)
            if read is None:
                raise ValueError(f".npy format version {major} is not 1 or 2")
            shape, fortran, dtype = read(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: shard file missing; re-run the pack command (it resumes and "
                        "makes only what is missing)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable .npy shard ({exc})") from None
    if dtype.hasobject or fortran:
        raise DataError(f"{path}: a shard must be a C-ordered numeric array, found "
                        f"{'Fortran-ordered ' if fortran else ''}{dtype}")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != need:
        raise DataError(
            f"{path}: {size:,} bytes but its header announces {'x'.join(map(str, shape))} "
            f"{dtype} = {need:,} bytes with the header: "
            f"{'truncated' if size < need else 'trailing bytes'}; re-run the pack command to "
            "re-make it"
        )
    return tuple(int(s) for s in shape), dtype, offset


# ------------------------------------------------------------------------------------ reading
class _Shard:
    """One .npy file: checked at open, hashed once, mapped on first read, released after."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, sha256: str,
                 verify: str) -> None:
        found_shape, found_dtype, self.offset = read_npy_header(path)
        if found_shape != shape or found_dtype != dtype:
            raise DataError(
                f"{path}: holds {'x'.join(map(str, found_shape)) or 'a scalar'} {found_dtype} "
                f"but the manifest says {'x'.join(map(str, shape))} {dtype}; the shard does not "
                "belong to this manifest: re-run the pack command to re-make it"
            )
        self.path, self.shape, self.dtype, self.sha256 = path, shape, dtype, sha256
        self.verified = verify == "none"
        self._lock = threading.Lock()
        self._mm: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        if verify == "open":
            self.verify()

    def verify(self) -> None:
        """Check the file's SHA-256 against the manifest (once)."""
        with self._lock:
            if self.verified:
                return
            found = sha256_file(self.path)
            if found != self.sha256:
                raise DataError(
                    f"{self.path}: SHA-256 {found} but the manifest says {self.sha256}: the "
                    "shard changed after packing (damaged disk, partial copy, edited file); "
                    "re-run the pack command: it keeps the shards that verify and re-makes "
                    "this one"
                )
            self.verified = True

    def array(self) -> np.ndarray:
        """The shard as a read-only array over the file (verified first)."""
        if self._array is None:
            self.verify()
            with self._lock:
                if self._array is None:
                    with open(self.path, "rb") as f:
                        if int(np.prod(self.shape)) == 0:
                            self._array = np.zeros(self.shape, self.dtype)
                            return self._array
                        self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    count = int(np.prod(self.shape))
                    self._array = np.frombuffer(self._mm, self.dtype, count, self.offset) \
                        .reshape(self.shape)
        return self._array

    def read(self) -> np.ndarray:
        """The whole shard as an array in memory (labels), verified."""
        self.verify()
        arr = np.load(self.path, allow_pickle=False)
        return arr

    def release(self) -> None:
        """Hand the mapped pages back (they stay in the page cache; see the module notes)."""
        if self._mm is not None and _RELEASE is not None:
            self._mm.madvise(_RELEASE)

    def close(self) -> None:
        with self._lock:
            self._array = None
            if self._mm is not None:
                with contextlib.suppress(BufferError):  # an array still refers to it
                    self._mm.close()
                self._mm = None


def _gather(shards: list[_Shard], starts: np.ndarray, base: np.ndarray,
            sample_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Rows ``base`` (global indices) of the concatenated shards, in the order given."""
    out = np.empty((len(base), *sample_shape), dtype)
    if not len(base):
        return out
    shard_of = np.searchsorted(starts, base, side="right") - 1
    rows = base - starts[shard_of]
    order = np.argsort(shard_of, kind="stable")
    cuts = np.flatnonzero(np.diff(shard_of[order])) + 1
    # one gather per shard the batch touches (a loop over shards, not over images)
    for group in np.split(order, cuts):
        shard = shards[int(shard_of[group[0]])]
        out[group] = shard.array()[rows[group]]
        shard.release()
    return out


@dataclass
class _Split:
    """The shared, opened state of one split; :class:`ShardedDataset` objects are views of it."""

    root: Path
    split: str
    x: list[_Shard]
    y: list[_Shard]
    starts: np.ndarray  # (shards,) global index of each shard's first sample
    count: int
    input_shape: tuple[int, int, int]
    label_shape: tuple[int, ...]
    labels: np.ndarray | None  # per-image labels, all in memory (int64); None per pixel
    label_dtype: np.dtype
    info: dict[str, Any] = field(default_factory=dict)


class ShardedDataset:
    """One split of a packed directory, read by sample index (a :class:`DataSource`).

    Made by :func:`open_packed` (or ``load_dataset(DIR)``); :meth:`subset` and :meth:`split`
    give views sharing the opened shards. ``take`` returns exactly the float32 images of the
    in-memory loaders (``uint8 / np.float32(255)``) with int64 labels.

    Attributes:
        name, classes, hflip, source: as :class:`~convnet.data.dataset.Dataset`'s (from the
            manifest).
        root: the packed directory; ``part``: ``"train"`` or ``"test"``.
        statistics: ``{"mean": [...], "std": [...]}`` per channel in ``[0, 1]`` units over the
            whole split as packed (from the manifest; a view's own statistics come from
            :meth:`Normalizer.fit <convnet.data.transforms.Normalizer.fit>`).

    Shape:
        - ``take(indices)``: ``x (n, H, W, D)`` float32 in ``[0, 1]``, ``y (n,)`` or
          ``(n, H, W)`` int64
    """

    in_memory = False

    def __init__(self, state: _Split, index: np.ndarray | None = None,
                 name: str | None = None) -> None:
        self._state = state
        self._index = index
        info = state.info
        self.name = name if name is not None else str(info.get("name", state.root))
        self.classes: list[str] = [str(c) for c in info["classes"]]
        self.hflip = bool(info.get("hflip", False))
        self.source = str(info.get("source", ""))
        self.root = state.root
        self.part = state.split
        split_info = info["splits"][state.split]
        self.statistics = {"mean": list(split_info["mean"]), "std": list(split_info["std"])}
        self._x_cache: np.ndarray | None = None

    # -- the DataSource interface ----------------------------------------------------------------
    def __len__(self) -> int:
        return self._state.count if self._index is None else int(len(self._index))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._state.input_shape

    @property
    def label_shape(self) -> tuple[int, ...]:
        return self._state.label_shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _base(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.dtype == bool or idx.dtype.kind not in "iu":
            raise IndexError(f"{self.name}: sample indices must be integers, received "
                             f"{idx.dtype}")
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        n = len(self)
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise IndexError(f"{self.name}: sample index {int(bad[0])} is out of range for "
                             f"{n} samples")
        idx = np.where(idx < 0, idx + n, idx)
        return idx if self._index is None else self._index[idx]

    def take(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of ``indices`` (global sample indices of this view), in order."""
        base = self._base(indices)
        s = self._state
        u8 = _gather(s.x, s.starts, base, s.input_shape, np.dtype(np.uint8))
        x = u8.astype(np.float32)
        x /= np.float32(255.0)  # the loaders' k / 255, bit for bit
        return x, self._labels(base)

    def take_labels(self, indices: Any) -> np.ndarray:
        return self._labels(self._base(indices))

    def _labels(self, base: np.ndarray) -> np.ndarray:
        s = self._state
        if s.labels is not None:
            return s.labels[base]
        return _gather(s.y, s.starts, base, s.label_shape, s.label_dtype).astype(np.int64)

    # -- like Dataset -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        h, w, d = self.input_shape
        return (f"ShardedDataset({self.name!r}, {self.part}, {len(self)} images {h}x{w}x{d}, "
                f"{self.num_classes} classes, {len(self._state.x)} shards in {self.root})")

    def class_counts(self) -> np.ndarray:
        """Images (per-pixel labels: pixels) per class, ``(num_classes,)`` int64."""
        if self._state.labels is not None:
            return np.bincount(self.take_labels(np.arange(len(self))),
                               minlength=self.num_classes).astype(np.int64)
        counts = np.zeros(self.num_classes, np.int64)
        for idx in iter_ranges(len(self), 4096):
            counts += np.bincount(self.take_labels(idx).ravel(), minlength=self.num_classes)
        return counts

    def subset(self, indices: np.ndarray | slice, name: str | None = None) -> ShardedDataset:
        """A view of the samples at ``indices`` (nothing is read or copied but the indices)."""
        if isinstance(indices, slice):
            indices = np.arange(len(self), dtype=np.int64)[indices]
        return ShardedDataset(self._state, self._base(indices), name or self.name)

    def split(self, fraction: float, seed: int = 0) -> tuple[ShardedDataset, ShardedDataset]:
        """``(rest, part)`` as :meth:`Dataset.split <convnet.data.dataset.Dataset.split>`
        (stratified by class) or, for per-pixel labels, a random split (the same indices the
        in-memory data set would give)."""
        if self.label_shape:
            rest, part = random_split(len(self), fraction, seed)
        else:
            rest, part = stratified_split(self.take_labels(np.arange(len(self))), fraction,
                                          seed, self.num_classes)
        return self.subset(rest), self.subset(part)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` mini-batches, shuffled by ``rng`` when given (as Dataset.batches)."""
        if batch_size < 1:
            raise DataError(f"{self.name}: batch_size={batch_size} must be at least 1")
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.take(order[start:start + batch_size])

    def verify(self) -> None:
        """Check every shard's SHA-256 now (those not checked yet in this process)."""
        for shard in (*self._state.x, *self._state.y):
            shard.verify()

    def to_memory(self, max_bytes: float | None = None) -> Any:
        """The view as an in-memory :class:`~convnet.data.dataset.Dataset` (or
        SegmentationDataset); refused above ``max_bytes`` (default: the image-folder limit,
        2 GiB as float32)."""
        x = self.x if max_bytes is None else self._materialise(max_bytes)
        y = self.take_labels(np.arange(len(self)))
        if self.label_shape:
            from .segmentation import SegmentationDataset

            return SegmentationDataset(x, y, self.classes, name=self.name, source=self.source)
        from .dataset import Dataset

        return Dataset(x, y, self.classes, name=self.name, hflip=self.hflip, source=self.source)

    @property
    def x(self) -> np.ndarray:
        """Every image of the view as one float32 array, read on first use and kept (for code
        that wants arrays, such as the page's test samples); refused above 2 GiB. Training and
        evaluation never use it: they read batches through :meth:`take`."""
        if self._x_cache is None:
            self._x_cache = self._materialise(None)
        return self._x_cache

    @property
    def y(self) -> np.ndarray:
        """Every label of the view (int64)."""
        return self.take_labels(np.arange(len(self)))

    def _materialise(self, max_bytes: float | None) -> np.ndarray:
        from . import images

        limit = images.IN_MEMORY_LIMIT if max_bytes is None else max_bytes
        need = len(self) * int(np.prod(self.input_shape)) * 4
        if need > limit:
            raise DataError(
                f"{self.root} ({self.part}): {len(self):,} images take {need / 1e9:.2f} GB as "
                f"float32, more than {limit / 1e9:.2f} GB: read it in batches with "
                "take(indices) (training and evaluation do) instead of as one array"
            )
        out = np.empty((len(self), *self.input_shape), np.float32)
        for idx in iter_ranges(len(self), 4096):
            out[idx[0]:idx[-1] + 1] = self.take(idx)[0]
        return out

    def close(self) -> None:
        """Unmap the shards (they are mapped again if read later)."""
        for shard in (*self._state.x, *self._state.y):
            shard.close()


# ----------------------------------------------------------------------------------- manifest
def is_packed(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a ``manifest.json`` of packed shards."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a packed directory, checked for everything :func:`open_packed` needs.

    Raises :class:`DataError` naming ``manifest.json`` for a missing, truncated, malformed or
    foreign manifest.
    """
    root = Path(path)
    file = root / MANIFEST
    redo = "re-run the pack command (it keeps the shards that verify)"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{root}: no {MANIFEST}: not a packed data set (make one with "
                        f"convnet pack SOURCE -o {shlex.quote(str(root))})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read: {exc}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                        f"({exc.msg}; {len(text):,} bytes: truncated or damaged?); {redo}") \
            from None

    def bad(what: str) -> DataError:
        return DataError(f"{file}: {what}; {redo}")

    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} manifest (its 'format' is "
                  f"{m.get('format') if isinstance(m, dict) else type(m).__name__!r})")
    if m.get("version") != VERSION:
        raise bad(f"format version {m.get('version')!r}; this convnet reads version {VERSION}")
    try:
        shape = tuple(int(v) for v in m["input_shape"])
        label_shape = tuple(int(v) for v in m["label_shape"])
        classes = m["classes"]
        label_dtype = np.dtype(m["label_dtype"])
        splits = m["splits"]
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"missing or invalid entry {exc}") from None
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
        raise bad(f"input_shape {list(shape)} is not (H, W, D) with D 1 or 3")
    if label_shape not in ((), shape[:2]):
        raise bad(f"label_shape {list(label_shape)} is neither [] nor the image's {shape[:2]}")
    if not isinstance(classes, list) or not classes:
        raise bad("no class names")
    if label_dtype.kind not in "iu" or label_dtype.itemsize > 4:
        raise bad(f"label dtype {label_dtype} is not an integer type")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        raise bad(f"splits {sorted(splits) if isinstance(splits, dict) else splits!r} are not "
                  f"{list(SPLITS)}")
    for name, sp in splits.items():
        try:
            shards = sp["shards"]
            total = sum(int(s["count"]) for s in shards)
            for s in shards:
                for key in ("x", "y"):
                    if not isinstance(s[key], str) or not _NAME.match(s[key]):
                        raise ValueError(f"shard file name {s[key]!r} is not a plain .npy name "
                                         "in the directory")
                    if not isinstance(s["sha256"][key], str):
                        raise ValueError("sha256 is not a string")
            mean, std = [float(v) for v in sp["mean"]], [float(v) for v in sp["std"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"split {name!r}: invalid shard list ({exc})") from None
        if total != int(sp.get("count", -1)):
            raise bad(f"split {name!r}: its shards hold {total} samples but its count is "
                      f"{sp.get('count')}")
        if len(mean) != shape[2] or len(std) != shape[2]:
            raise bad(f"split {name!r}: mean/std of {len(mean)}/{len(std)} channels for "
                      f"{shape[2]}-channel images")
    return m


def open_packed(path: str | os.PathLike, *, verify: str = "lazy") -> DataSplits:
    """Open a packed directory as ``(train, test)`` :class:`ShardedDataset` objects.

    Args:
        path: the directory ``convnet pack`` wrote.
        verify: when shard hashes are checked: ``"lazy"`` (default: each shard the first time
            it is read), ``"open"`` (all now), ``"none"``. Headers (shape, dtype, size) are
            always checked now.

    Raises :class:`DataError` naming the file for a bad manifest or shard.
    """
    if verify not in ("lazy", "open", "none"):
        raise DataError(f"verify={verify!r} must be 'lazy', 'open' or 'none'")
    root = Path(path)
    m = read_manifest(root)
    shape = tuple(int(v) for v in m["input_shape"])
    label_shape = tuple(int(v) for v in m["label_shape"])
    label_dtype = np.dtype(m["label_dtype"]).newbyteorder("<") \
        if np.dtype(m["label_dtype"]).itemsize > 1 else np.dtype(m["label_dtype"])
    out = []
    for part in SPLITS:
        shards = m["splits"][part]["shards"]
        xs, ys, counts = [], [], []
        for s in shards:
            n = int(s["count"])
            xs.append(_Shard(root / s["x"], (n, *shape), np.dtype(np.uint8), s["sha256"]["x"],
                             verify))
            ys.append(_Shard(root / s["y"], (n, *label_shape), label_dtype, s["sha256"]["y"],
                             verify))
            counts.append(n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts \
            else np.zeros(0, np.int64)
        labels = None
        if not label_shape:
            labels = np.concatenate([y.read().astype(np.int64) for y in ys]) if ys \
                else np.zeros(0, np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= len(m["classes"])):
                raise DataError(
                    f"{root / MANIFEST}: {part} labels range over [{labels.min()}, "
                    f"{labels.max()}] but there are {len(m['classes'])} classes"
                )
        state = _Split(root, part, xs, ys, starts, int(sum(counts)), shape,  # type: ignore[arg-type]
                       label_shape, labels, label_dtype, m)
        out.append(ShardedDataset(state))
    return DataSplits(*out)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ packing
def _moments(x: np.ndarray) -> tuple[list[int], list[int]]:
    """Exact per-channel ``sum`` and ``sum of squares`` of uint8 images, as Python ints."""
    d = x.shape[-1]
    flat = x.reshape(-1, d)
    hist = np.zeros((d, 256), np.int64)
    step = 1 << 20  # rows per bincount: bounds its int64 copy of one channel to 8 MiB
    for s in range(0, len(flat), step):
        block = flat[s:s + step]
        for c in range(d):  # 1 or 3 channels
            hist[c] += np.bincount(block[:, c], minlength=256)
    levels = np.arange(256, dtype=np.int64)
    return [int(v) for v in hist @ levels], [int(v) for v in hist @ (levels * levels)]


def _mean_std(pixels: int, s1: Sequence[int], s2: Sequence[int]) -> tuple[list[float],
                                                                           list[float]]:
    """Mean and population std in [0, 1] units from exact integer sums of 0..255 levels."""
    if pixels == 0:
        return [0.0] * len(s1), [1.0] * len(s1)
    mean = [a / pixels / 255.0 for a in s1]
    # (n S2 - S1^2) / n^2 exactly in integers, one rounding at the division
    var = [(pixels * b - a * a) / (pixels * pixels) for a, b in zip(s1, s2, strict=True)]
    return mean, [float(np.sqrt(v)) / 255.0 for v in var]


def _label_dtype(num_classes: int) -> np.dtype:
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 65536:
        return np.dtype("<u2")
    return np.dtype("<i4")


def _to_uint8(x: np.ndarray, what: str) -> tuple[np.ndarray, bool]:
    """Images in [0, 1] (or uint8) as uint8 levels; True when that rounded any value."""
    if x.dtype == np.uint8:
        return x, False
    u8 = np.rint(np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    back = u8.astype(np.float32)
    back /= np.float32(255.0)
    return u8, not np.array_equal(back, x)


@dataclass
class _Plan:
    """What one pack makes: per split, the samples of each shard, and how to make them."""

    kind: str  # "arrays" or "folder"
    name: str
    source: str
    classes: list[str]
    hflip: bool
    input_shape: tuple[int, int, int]
    label_shape: tuple[int, ...]
    shard_size: int
    settings: dict[str, Any]
    counts: dict[str, int]  # samples planned per split (before skipping)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    items: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)
    skipped: dict[str, dict[int, str]] = field(default_factory=dict)  # known unreadable
    fingerprint: str = ""

    def shards(self, split: str) -> int:
        return -(-self.counts[split] // self.shard_size)


def _default_shard_size(shape: Sequence[int]) -> int:
    return max(1, SHARD_BYTES // int(np.prod(shape)))


def _parse_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", size)
        if not m:
            raise DataError(f"size {size!r}: expected HxW (e.g. 96x96) or one number")
        h = int(m.group(1))
        return (h, int(m.group(2) or h))
    pair = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(pair) != 2 or min(pair) < 1:
        raise DataError(f"size {size!r}: expected (H, W) of positive whole numbers")
    return pair  # type: ignore[return-value]


def _plan_arrays(source: str, *, size: tuple[int, int] | None, grayscale: bool | None,
                 data_dir: Any, download: bool, options: dict[str, Any]) -> _Plan:
    from .registry import ALIASES, load_dataset

    key = ALIASES.get(str(source).lower())
    if key == "fashion-seg" and (size is not None or grayscale is not None):
        raise DataError("fashion-seg canvases are made at their size (options canvas=...); "
                        "--size and --grayscale/--rgb do not apply")
    loaded = load_dataset(source, data_dir=data_dir, image_size=size, grayscale=grayscale,
                          download=download, progress=None, **options)
    train, test = loaded
    name = key or str(getattr(train, "name", source))
    if key == "fashion-seg":
        name = "fashion-seg"
    arrays, rounded = {}, []
    for part, ds in (("train", train), ("test", test)):
        u8, r = _to_uint8(ds.x, f"{source} {part}")
        if r:
            rounded.append(part)
        arrays[part] = (u8, np.asarray(ds.y))
    shape = tuple(int(v) for v in train.x.shape[1:])
    label_shape = tuple(int(v) for v in np.asarray(train.y).shape[1:])
    digest = hashlib.sha256()
    for part in SPLITS:
        for a in arrays[part]:
            digest.update(np.ascontiguousarray(a).data)
    settings = {"source": str(source), "size": list(size) if size else None,
                "grayscale": grayscale, **{k: v for k, v in options.items()}}
    plan = _Plan("arrays", name, str(getattr(train, "source", "") or source),
                 list(train.classes), bool(getattr(train, "hflip", False)),
                 shape, label_shape, 0, settings,  # type: ignore[arg-type]
                 {p: len(arrays[p][0]) for p in SPLITS}, arrays=arrays)
    plan.settings["content_sha256"] = digest.hexdigest()
    if rounded:
        plan.settings["rounded_to_uint8"] = rounded
    return plan


def _scan_headers(paths: list[str]) -> list[tuple[int, int, bool] | str]:
    """Worker: each file's ``(H, W, grayscale)`` from its header, or why it cannot be read."""
    from .images import image_header

    out: list[tuple[int, int, bool] | str] = []
    for p in paths:
        try:
            out.append(image_header(p))
        except DataError as exc:
            out.append(_reason(exc, p))
    return out


def _reason(exc: BaseException, path: str) -> str:
    """The error's text without the file name in front (the record names the file)."""
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def _decode(paths: list[str], hw: tuple[int, int], channels: int
            ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Worker: the images as uint8 ``(n, H, W, D)`` (zeros where unreadable) and the failures."""
    from .images import decode_uint8

    out = np.zeros((len(paths), hw[0], hw[1], channels), np.uint8)
    failed: list[tuple[int, str]] = []
    # one decode per file: each is a separate file format to parse
    for i, p in enumerate(paths):
        try:
            out[i] = decode_uint8(p, hw, channels)
        except (DataError, OSError, ValueError) as exc:  # never fatal: listed in `skipped`
            failed.append((i, _reason(exc, p)))
    return out, failed


class _Pool:
    """Worker processes (spawned: safe whatever threads the parent runs) or in-process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ex: Any = None

    def __enter__(self) -> _Pool:
        return self

    def _executor(self) -> Any:
        if self._ex is None and self.workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._ex = ProcessPoolExecutor(self.workers,
                                           mp_context=multiprocessing.get_context("spawn"))
        return self._ex

    def imap(self, fn: Callable[..., Any], tasks: Iterator[tuple[Any, ...]]
             ) -> Iterator[Any]:
        """``fn(*task)`` for each task, results in task order, at most 2 per worker in flight
        (so results never pile up in memory faster than they are written)."""
        ex = self._executor()
        if ex is None:
            for task in tasks:
                yield fn(*task)
            return
        from concurrent.futures.process import BrokenProcessPool

        window: deque[Any] = deque()
        try:
            for task in tasks:
                window.append(ex.submit(fn, *task))
                if len(window) >= 2 * self.workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        except BrokenProcessPool as exc:
            raise DataError(f"a decoding worker process died ({exc}; out of memory?); run the "
                            "pack command again: it continues from the shards already "
                            "written") from None
        finally:
            for fut in window:
                fut.cancel()

    def __exit__(self, *exc: Any) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


def _plan_folder(root: Path, *, size: tuple[int, int] | None, grayscale: bool | None,
                 test_fraction: float, seed: int, pool: _Pool, progress: Any) -> _Plan:
    from .images import scan_image_folder

    classes, items, test_items = scan_image_folder(root)
    if test_items is None:
        labels = np.array([c for _, c in items], np.int64)
        rest, test = stratified_split(labels, test_fraction, seed, len(classes))
        split_items = {"train": [items[i] for i in rest], "test": [items[i] for i in test]}
    else:
        split_items = {"train": items, "test": test_items}
    all_items = split_items["train"] + split_items["test"]
    known_bad: dict[str, str] = {}
    if size is None or grayscale is None:
        # the most common size and mode, as load_image_folder chooses them (headers only)
        paths = [str(p) for p, _ in all_items]
        sizes: Counter[tuple[int, int]] = Counter()
        gray_votes = 0
        bar = progress(len(paths), "scan")
        chunks = ((paths[s:s + 256],) for s in range(0, len(paths), 256))
        for start, result in zip(range(0, len(paths), 256), pool.imap(_scan_headers, chunks),
                                 strict=True):
            for p, r in zip(paths[start:start + 256], result, strict=True):
                if isinstance(r, str):
                    known_bad[p] = r
                else:
                    sizes[(r[0], r[1])] += 1
                    gray_votes += r[2]
            bar.update(len(result))
        bar.close()
        if not sizes:
            raise DataError(f"{root}: none of its {len(paths)} images can be read (e.g. "
                            f"{next(iter(known_bad.values()), '')})")
        if size is None:
            size = sizes.most_common(1)[0][0]
        if grayscale is None:
            grayscale = gray_votes * 2 > len(paths) - len(known_bad)  # a tie keeps colour
    channels = 1 if grayscale else 3
    settings = {"source": str(root.resolve()), "size": list(size), "grayscale": bool(grayscale),
                "test_fraction": test_fraction if test_items is None else None,
                "seed": seed if test_items is None else None}
    plan = _Plan("folder", str(root), str(root), classes, False, (*size, channels), (), 0,
                 settings, {p: len(split_items[p]) for p in SPLITS}, items=split_items)
    plan.skipped = {p: {i: known_bad[str(f)] for i, (f, _) in enumerate(split_items[p])
                        if str(f) in known_bad} for p in SPLITS}
    # the files themselves (name, size, modification time) are part of what is packed
    digest = hashlib.sha256()
    for part in SPLITS:
        for f, c in split_items[part]:
            try:
                st = f.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{part}\t{f}\t{c}\t{stamp}\n".encode())
    plan.settings["files_sha256"] = digest.hexdigest()
    return plan


def _fingerprint(plan: _Plan) -> str:
    blob = json.dumps({"format": FORMAT, "version": VERSION, "settings": plan.settings,
                       "shard_size": plan.shard_size, "shape": plan.input_shape,
                       "counts": plan.counts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _names(split: str, k: int) -> tuple[str, str, str]:
    return f"{split}-x-{k:05d}.npy", f"{split}-y-{k:05d}.npy", f"{split}-{k:05d}.json"


def _record_ok(root: Path, rec: Any, job: str, shape: tuple[int, ...],
               label_shape: tuple[int, ...]) -> bool:
    """A shard made by this job whose files exist, fit the record and hash right."""
    try:
        if rec.get("job") != job:
            return False
        n = int(rec["count"])
        for key, want in (("x", (n, *shape)), ("y", (n, *label_shape))):
            found, _, _ = read_npy_header(root / rec[key])
            if found != want or sha256_file(root / rec[key]) != rec["sha256"][key]:
                return False
        return True
    except (DataError, OSError, KeyError, TypeError, ValueError):
        return False


@dataclass
class PackResult:
    """What :func:`pack` did: the manifest, the shards made and kept, the images skipped."""

    manifest: Path
    made: int
    kept: int
    skipped: list[dict[str, str]]
    counts: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        return str(self.manifest)


def pack(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: Any = None,
    grayscale: bool | None = None,
    shard_size: int | None = None,
    workers: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = False,
    stream: IO[str] | None = None,
    **options: Any,
) -> PackResult:
    """Pack a data set into uint8 shards in ``out`` (resumable; see the module notes).

    Args:
        source: an image folder (``root/<class>/...`` or ``root/train`` + ``root/test``), a
            directory of IDX files or CIFAR-10 batches, or a name ``load_dataset`` knows
            (``fashion``, ``cifar10``, ``fashion-seg`` (per-pixel labels), ...).
        out: the directory to fill (created; must be empty or hold this same pack).
        size: ``HxW`` (``"96x96"``, ``96`` or ``(96, 96)``) to resize every image to; default:
            the native size (for a folder, the most common size, as ``load_image_folder``).
        grayscale: True for one channel, False for three; default as ``load_image_folder``.
        shard_size: images per shard; default as many as make 128 MiB.
        workers: processes decoding the images of a folder (default: the CPU count, at most 8;
            0 decodes in this process).
        test_fraction, seed: the train/test split of a folder without ``train``/``test``
            (the same split ``load_image_folder`` makes with the same values).
        data_dir: where a named data set's files are.
        download: fetch a missing named data set from its mirrors (MD5-verified).
        progress: show a progress bar (or, off a terminal, a line every 10 s) on ``stream``.
        **options: settings of a generated data set (``fashion-seg``: ``n_train``, ``n_test``).

    Returns :class:`PackResult`. Raises :class:`DataError` for a source that cannot be packed
    or an ``out`` holding something else.
    """
    t0 = time.perf_counter()
    root = Path(out)
    src_path = Path(str(source)).expanduser()
    hw = _parse_size(size)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if shard_size is not None and shard_size < 1:
        raise DataError(f"shard_size={shard_size} must be at least 1")
    if src_path.is_dir() and is_packed(src_path):
        raise DataError(f"{src_path} is packed already: train from it with --data "
                        f"{shlex.quote(str(src_path))}")
    if root.exists() and src_path.exists() and root.resolve() == src_path.resolve():
        raise DataError(f"{root}: the output directory is the source; give another -o")

    def bar(total: int | None, desc: str) -> Any:
        from .progress import Progress

        return Progress(total, desc, stream=stream, enabled=progress)

    with _Pool(workers) as pool:
        if src_path.is_dir() and not _is_array_dir(src_path):
            if options:
                raise DataError(f"{source}: unexpected options {sorted(options)} for an image "
                                "folder")
            plan = _plan_folder(src_path, size=hw, grayscale=grayscale,
                                test_fraction=test_fraction, seed=seed, pool=pool,
                                progress=bar)
        else:
            plan = _plan_arrays(str(source), size=hw, grayscale=grayscale, data_dir=data_dir,
                                download=download, options=options)
        plan.shard_size = int(shard_size or _default_shard_size(plan.input_shape))
        return _execute(root, plan, pool, bar(sum(plan.counts.values()), "pack"), t0)


def _execute(root: Path, plan: _Plan, pool: _Pool, bar: Any, t0: float) -> PackResult:
    """Make every shard of ``plan`` in ``root`` that is not there already, then the manifest."""
    plan.fingerprint = _fingerprint(plan)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    records = _claim(root, plan)
    label_dtype = _label_dtype(len(plan.classes))
    made = kept = 0
    with bar:
        for part in SPLITS:
            for k in range(plan.shards(part)):
                lo, hi = k * plan.shard_size, min((k + 1) * plan.shard_size, plan.counts[part])
                rec = records.get((part, k))
                if rec is not None and _record_ok(root, rec, plan.fingerprint,
                                                  plan.input_shape, plan.label_shape):
                    kept += 1
                    bar.update(hi - lo)
                    continue
                records[(part, k)] = _make_shard(root, plan, part, k, lo, hi, label_dtype,
                                                 pool, bar)
                made += 1
    manifest = _finish(root, plan, records, label_dtype, time.perf_counter() - t0)
    for p in root.glob("*-?????.json"):  # the shard records: the manifest holds them now
        with contextlib.suppress(OSError):
            p.unlink()
    m = json.loads(manifest.read_text(encoding="utf-8"))
    return PackResult(manifest, made, kept, m["skipped"],
                      {p: m["splits"][p]["count"] for p in SPLITS}, time.perf_counter() - t0)


def _is_array_dir(path: Path) -> bool:
    from . import cifar
    from .registry import _find_idx

    return _find_idx(path) is not None or cifar.find_batch_dir(path) is not None


def _claim(root: Path, plan: _Plan) -> dict[tuple[str, int], Any]:
    """Check that ``root`` is empty or holds this pack; the shard records already there."""
    job_file = root / JOB_FILE
    pattern = re.compile(r"^(train|test)-(?:[xy]-)?\d{5}\.(npy|json)$|^\..*\.tmp$")
    names = [p.name for p in root.iterdir()]
    others = [n for n in names if n not in (MANIFEST, JOB_FILE) and not pattern.match(n)]
    if others:
        raise DataError(f"{root}: not empty ({', '.join(sorted(others)[:3])}"
                        f"{', ...' if len(others) > 3 else ''}) and not a pack: give a new or "
                        "empty directory with -o")
    previous: Any = None
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(job_file.read_text(encoding="utf-8"))
    if names and (not isinstance(previous, dict) or previous.get("job") != plan.fingerprint):
        was = previous if isinstance(previous, dict) else {}
        now = {**plan.settings, "shard_size": plan.shard_size}
        before = {**was.get("settings", {}), "shard_size": was.get("shard_size")}
        diff = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
        raise DataError(
            f"{root}: holds a pack of other data or settings"
            + (f" ({'; '.join(diff)})" if was and diff else "")
            + ": give another -o, or delete the directory to pack again"
        )
    for name in names:  # temporary files of an interrupted write
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                (root / name).unlink()
    _write_json(job_file, {"job": plan.fingerprint, "settings": plan.settings,
                           "shard_size": plan.shard_size})
    records: dict[tuple[str, int], Any] = {}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        m = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        if m.get("job") == plan.fingerprint:  # a finished pack: re-check, repair what is bad
            for part in SPLITS:
                for k, rec in enumerate(m["splits"][part]["shards"]):
                    records[(part, k)] = {**rec, "job": m["job"]}
    for p in sorted(root.glob("*-?????.json")):  # shards of an unfinished pack
        mm = re.match(r"^(train|test)-(\d{5})\.json$", p.name)
        with contextlib.suppress(OSError, ValueError):
            if mm:
                records.setdefault((mm.group(1), int(mm.group(2))),
                                   json.loads(p.read_text(encoding="utf-8")))
    return records


def _make_shard(root: Path, plan: _Plan, part: str, k: int, lo: int, hi: int,
                label_dtype: np.dtype, pool: _Pool, bar: Any) -> dict[str, Any]:
    """Make shard ``k`` of ``part`` (samples ``lo:hi`` of the split) and its record."""
    skipped: list[dict[str, str]] = []
    if plan.kind == "arrays":
        x, y = plan.arrays[part]
        xs, ys = x[lo:hi], np.asarray(y[lo:hi])
        bar.update(hi - lo)
    else:
        items = plan.items[part][lo:hi]
        known = plan.skipped[part]
        todo = [i for i in range(len(items)) if lo + i not in known]
        for i in range(len(items)):
            if lo + i in known:
                skipped.append({"split": part, "path": str(items[i][0]),
                                "reason": known[lo + i]})
        xs = np.empty((len(todo), *plan.input_shape), np.uint8)
        ok = np.ones(len(todo), bool)
        h, w, d = plan.input_shape
        tasks = (([str(items[i][0]) for i in todo[s:s + DECODE_CHUNK]], (h, w), d)
                 for s in range(0, len(todo), DECODE_CHUNK))
        for s, (chunk, failed) in zip(range(0, len(todo), DECODE_CHUNK),
                                      pool.imap(_decode, tasks), strict=True):
            xs[s:s + len(chunk)] = chunk
            for i, reason in failed:
                ok[s + i] = False
                skipped.append({"split": part, "path": str(items[todo[s + i]][0]),
                                "reason": reason})
            bar.update(len(chunk))
        bar.update(len(items) - len(todo))
        xs = xs[ok] if not ok.all() else xs
        ys = np.array([items[i][1] for i, good in zip(todo, ok, strict=True) if good],
                      np.int64).reshape(-1)
    xname, yname, recname = _names(part, k)
    s1, s2 = _moments(xs)
    rec = {
        "x": xname, "y": yname, "count": int(len(xs)),
        "sha256": {"x": save_npy(root / xname, xs),
                   "y": save_npy(root / yname, ys.astype(label_dtype))},
        "sum": s1, "sum_sq": s2,
        "class_counts": np.bincount(ys.ravel().astype(np.int64),
                                    minlength=len(plan.classes)).tolist(),
        "skipped": skipped, "job": plan.fingerprint,
    }
    _write_json(root / recname, rec)
    return rec


def _finish(root: Path, plan: _Plan, records: dict[tuple[str, int], Any],
            label_dtype: np.dtype, seconds: float) -> Path:
    from convnet import __version__

    splits: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    d = plan.input_shape[2]
    for part in SPLITS:
        recs = [records[(part, k)] for k in range(plan.shards(part))]
        count = sum(int(r["count"]) for r in recs)
        s1 = [sum(int(r["sum"][c]) for r in recs) for c in range(d)]
        s2 = [sum(int(r["sum_sq"][c]) for r in recs) for c in range(d)]
        mean, std = _mean_std(count * plan.input_shape[0] * plan.input_shape[1], s1, s2)
        counts = np.zeros(len(plan.classes), np.int64)
        for r in recs:
            counts += np.asarray(r["class_counts"], np.int64)
            skipped.extend(r.get("skipped", []))
        splits[part] = {
            "count": count, "class_counts": counts.tolist(), "mean": mean, "std": std,
            "shards": [{k: r[k] for k in ("x", "y", "count", "sha256", "sum", "sum_sq",
                                          "class_counts")} for r in recs],
        }
    manifest = {
        "format": FORMAT, "version": VERSION, "name": plan.name, "source": plan.source,
        "classes": plan.classes, "hflip": plan.hflip,
        "labels": "pixel" if plan.label_shape else "image",
        "input_shape": list(plan.input_shape), "label_shape": list(plan.label_shape),
        "dtype": "uint8", "label_dtype": label_dtype.str.lstrip("<>|="),
        "job": plan.fingerprint, "splits": splits, "skipped": skipped,
        "settings": {**plan.settings, "shard_size": plan.shard_size},
        "packed": {"convnet": __version__, "seconds": round(seconds, 3),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    path = root / MANIFEST
    _write_json(path, manifest)
    return path


def pack_arrays(
    out: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: Sequence[str],
    *,
    name: str = "arrays",
    hflip: bool = False,
    shard_size: int | None = None,
) -> PackResult:
    """Pack images already in memory (uint8, or float in ``[0, 1]`` on the 1/255 grid) with
    labels (per image or per pixel) into ``out``; the rest is as :func:`pack`."""
    t0 = time.perf_counter()
    arrays = {}
    digest = hashlib.sha256()
    for part, (x, y) in (("train", train), ("test", test)):
        u8, _ = _to_uint8(np.asarray(x), part)
        y = np.asarray(y)
        if u8.ndim != 4 or y.shape[0] != u8.shape[0] or y.shape[1:] not in ((), u8.shape[1:3]):
            raise DataError(f"pack_arrays: {part} images {u8.shape} and labels {y.shape} do "
                            "not fit: expected (N, H, W, D) with (N,) or (N, H, W) labels")
        arrays[part] = (u8, y)
        digest.update(np.ascontiguousarray(u8).data)
        digest.update(np.ascontiguousarray(y).data)
    shape = tuple(int(v) for v in arrays["train"][0].shape[1:])
    plan = _Plan("arrays", name, "arrays", [str(c) for c in classes], hflip,
                 shape, tuple(int(v) for v in arrays["train"][1].shape[1:]),  # type: ignore[arg-type]
                 int(shard_size or _default_shard_size(shape)),
                 {"source": "arrays", "content_sha256": digest.hexdigest()},
                 {p: len(arrays[p][0]) for p in SPLITS}, arrays=arrays)
    from .progress import Progress

    with _Pool(0) as pool:
        return _execute(Path(out), plan, pool, Progress(None, "pack", enabled=False), t0)


__all__ = ["FORMAT", "MANIFEST", "PackResult", "ShardedDataset", "is_packed", "open_packed",
           "pack", "pack_arrays", "read_manifest", "read_npy_header", "save_npy",
           "sha256_file"]
