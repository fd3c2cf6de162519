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

**Packing** is :mod:`convnet.data.packing` (``pack``, ``pack_arrays``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import re
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from convnet.errors import DataError
from convnet.safety import atomic_write, npy_header, open_regular, read_regular

from .dataset import DataSplits, iter_ranges, random_split, stratified_split

FORMAT = "convnet-shards"
VERSION = 1
MANIFEST = "manifest.json"
JOB_FILE = "pack-job.json"
SPLITS = ("train", "test")
_HASH_BLOCK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9._-]+\.npy$")
_RELEASE = getattr(mmap, "MADV_DONTNEED", None)  # absent on Windows: pages then stay mapped


# ------------------------------------------------------------------------------- file helpers
def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (never mapped: resident memory stays flat)."""
    digest = hashlib.sha256()
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    with open_regular(path, what="file") as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


class _HashingWriter:
    """A file-like object that hashes what it writes (np.lib.format writes through it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.digest = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.f.write(data)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write ``array`` as a .npy file atomically; return the SHA-256 of the file's bytes."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    digest: list[str] = []

    def write(f: IO[bytes]) -> None:
        hw = _HashingWriter(f)
        np.lib.format.write_array(hw, array, allow_pickle=False)  # type: ignore[arg-type]
        digest.append(hw.digest.hexdigest())

    atomic_write(path, write)
    return digest[0]


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file of a packed directory (the manifest, the job file, a shard record): a
    regular file under the ``manifest_bytes`` cap, decoded as UTF-8. Raises :class:`DataError`
    naming the file."""
    file = Path(path)
    raw = read_regular(file, what="manifest", cap_name="manifest_bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                        f"({exc.msg}; {len(raw):,} bytes: truncated or damaged?)") from None
    except RecursionError:
        raise DataError(f"{file}: JSON nested too deeply") from None


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a .npy file from its header; checks the file size.

    The header is parsed by :func:`convnet.safety.npy_header` (the checkpoints' reader; sizes in
    Python integers) from a regular file (:func:`convnet.safety.open_regular`: a FIFO or a
    device is refused, never waited on). Raises :class:`DataError` naming the file for anything
    that is not a plain C-ordered numeric array whose data is all there (a pickled object array
    is refused, never loaded).
    """
    path = Path(path)
    try:
        with open_regular(path, what=".npy shard") as f:
            h = npy_header(f, str(path))
            size = os.fstat(f.fileno()).st_size
    except DataError as exc:
        if not path.exists() and not path.is_symlink():
            raise DataError(f"{path}: shard file missing; re-run the pack command (it resumes "
                            "and makes only what is missing)") from None
        raise exc from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable .npy shard ({exc})") from None
    if h.dtype.kind not in "biuf" or h.fortran:
        raise DataError(f"{path}: a shard must be a C-ordered numeric array, found "
                        f"{'Fortran-ordered ' if h.fortran else ''}{h.dtype}")
    need = h.header_bytes + h.nbytes  # Python integers: a hostile shape cannot wrap
    if size != need:
        raise DataError(
            f"{path}: {size:,} bytes but its header announces {'x'.join(map(str, h.shape))} "
            f"{h.dtype} = {need:,} bytes with the header: "
            f"{'truncated' if size < need else 'trailing bytes'}; re-run the pack command to "
            "re-make it"
        )
    return h.shape, h.dtype, h.header_bytes


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
                    count = math.prod(self.shape)
                    if count == 0:
                        self._array = np.zeros(self.shape, self.dtype)
                        return self._array
                    with open_regular(self.path, what=".npy shard") as f:
                        self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    self._array = np.frombuffer(self._mm, self.dtype, count, self.offset) \
                        .reshape(self.shape)
        return self._array

    def read(self) -> np.ndarray:
        """The whole shard as an array in memory (labels), verified."""
        self.verify()
        with open_regular(self.path, what=".npy shard") as f:
            return np.load(f, allow_pickle=False)

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
        need = len(self) * math.prod(self.input_shape) * 4
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
    if not file.exists() and not file.is_symlink():
        raise DataError(f"{root}: no {MANIFEST}: not a packed data set (make one with "
                        f"convnet pack SOURCE -o {shlex.quote(str(root))})")
    raw = read_regular(file, what="manifest", cap_name="manifest_bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                        f"({exc.msg}; {len(text):,} bytes: truncated or damaged?); {redo}") \
            from None
    except RecursionError:
        raise DataError(f"{file}: JSON nested too deeply (a manifest nests 6 levels); {redo}") \
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


__all__ = ["FORMAT", "MANIFEST", "ShardedDataset", "is_packed", "open_packed", "read_manifest",
           "read_npy_header", "save_npy", "sha256_file"]
