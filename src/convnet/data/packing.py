"""Packing a data set into uint8 shards (``convnet pack``); the format: :mod:`~convnet.data.shards`.

Packing decodes images in a pool of worker processes (``workers``), shows a progress bar,
and writes each shard atomically (temporary file, fsync, rename): an interrupted pack leaves
only complete shards, each recorded in a small ``<split>-<k>.json`` until the manifest is
written. Running the same pack again continues: shards that are complete and whose hashes verify
are kept, the rest are made. An image that cannot be read is listed in ``skipped`` with the
reason, never fatal.

What is packed is fixed by a fingerprint of the settings and of the source (for a folder: every
file's name, size and modification time; for arrays: their bytes), kept in ``pack-job.json``:
a directory holding a pack of something else is refused rather than mixed, and each shard's
record names the fingerprint it was made for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from convnet.errors import DataError
from convnet.safety import cap, caps, overrides, too_big

from .dataset import stratified_split
from .shards import (
    FORMAT,
    JOB_FILE,
    MANIFEST,
    SPLITS,
    VERSION,
    _write_json,
    is_packed,
    read_json,
    read_npy_header,
    save_npy,
    sha256_file,
)

#: default bytes of images per shard (a shard is also the unit of resuming)
SHARD_BYTES = 128 << 20
#: images per decoding task sent to a worker process
DECODE_CHUNK = 64


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
        pair: tuple[int, ...] = (h, int(m.group(2) or h))
    else:
        pair = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(pair) != 2 or min(pair) < 1:
        raise DataError(f"size {size!r}: expected (H, W) of positive whole numbers")
    from convnet.net.blocks import MAX_DIM

    if max(pair) > MAX_DIM:
        raise DataError(f"size {'x'.join(map(str, pair))}: a side of at most {MAX_DIM:,} pixels "
                        "(the largest side any network takes)")
    return pair  # type: ignore[return-value]


def _check_pixels(hw: tuple[int, int]) -> None:
    """The size to resize to must fit the ``image_pixels`` cap (each image is made that big)."""
    if hw[0] * hw[1] > cap("image_pixels"):
        raise too_big(f"size {hw[0]}x{hw[1]}", "each resized image", hw[0] * hw[1],
                      "image_pixels")


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


def _with_caps(limits: dict[str, int], fn: Callable[..., Any], *args: Any) -> Any:
    """Worker: ``fn(*args)`` under the caps of the process that asked."""
    with caps(**limits):
        return fn(*args)


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
        limits = overrides()  # the --max-* flags: a worker applies them as this process does
        from concurrent.futures.process import BrokenProcessPool

        window: deque[Any] = deque()
        try:
            for task in tasks:
                window.append(ex.submit(_with_caps, limits, fn, *task))
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
    if hw is not None:
        _check_pixels(hw)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if shard_size is not None and shard_size < 1:
        raise DataError(f"shard_size={shard_size} must be at least 1")
    if src_path.is_dir() and is_packed(src_path):
        raise DataError(f"{src_path} is packed already: train from it with --data "
                        f"{shlex.quote(str(src_path))}")
    if src_path.is_dir() and root.resolve().is_relative_to(src_path.resolve()):
        raise DataError(f"{root}: inside the source folder {src_path} (it would be read as a "
                        "class folder of its own next time): give an -o outside it")

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
    m = read_json(manifest)
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
        previous = read_json(job_file)
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
        m = read_json(root / MANIFEST)
        if m.get("job") == plan.fingerprint:  # a finished pack: re-check, repair what is bad
            for part in SPLITS:
                for k, rec in enumerate(m["splits"][part]["shards"]):
                    records[(part, k)] = {**rec, "job": m["job"]}
    for p in sorted(root.glob("*-?????.json")):  # shards of an unfinished pack
        mm = re.match(r"^(train|test)-(\d{5})\.json$", p.name)
        with contextlib.suppress(OSError, ValueError):
            if mm:
                records.setdefault((mm.group(1), int(mm.group(2))),
                                   read_json(p))
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


__all__ = ["PackResult", "pack", "pack_arrays"]
