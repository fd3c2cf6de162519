"""CIFAR-10 in its python-batch format, read through an unpickler that cannot run code.

The distribution ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` holding
``data_batch_1`` .. ``data_batch_5`` (10,000 images each), ``test_batch`` and ``batches.meta``.
Each batch is a Python 2 pickle of a dict::

    {b"batch_label": bytes, b"labels": [int] * 10000,
     b"data": uint8 array (10000, 3072), b"filenames": [bytes] * 10000}

where each row of ``data`` is one 32x32 image stored channel by channel (1024 red values, then
green, then blue, each row-major). ``batches.meta`` holds ``b"label_names"``.

A pickle can name any importable callable and call it while loading (``os.system`` included), so
these files are read with :class:`RestrictedUnpickler`: lists, dicts, strings, bytes and numbers
need no import at all, and the only imports allowed are the three a NumPy array needs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from convnet.errors import DataError

from .dataset import Dataset, DataSplits

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"

try:  # NumPy 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray

# (module, name) -> object: everything a pickled ndarray needs, and nothing else.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` allows only what NumPy arrays need.

    Allowed: ``numpy.core.multiarray._reconstruct`` (and its NumPy 2 name
    ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray``, ``numpy.dtype``. Every other
    global raises :class:`DataError`, so a malicious file cannot call ``os.system`` or import
    anything. Persistent ids are refused by :class:`pickle.Unpickler` already.
    """

    def __init__(self, file, *, source: str = "<pickle>", **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED)
            hint = ""
            if (module, name) == ("_codecs", "encode"):
                # Python 3 pickles bytes at protocol 2 as a call to _codecs.encode.
                hint = "; this looks like a Python 3 protocol-2 pickle: re-save it with protocol 4"
            raise DataError(
                f"{self.source}: refused to load: the pickle asks for {module}.{name}, but a "
                f"data batch may only contain arrays, lists, dicts, strings and numbers "
                f"(allowed: {allowed}){hint}"
            ) from None


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (``encoding="bytes"`` so Python 2
    strings come back as ``bytes``, as the CIFAR files need). Errors are :class:`DataError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, source=str(path), encoding="bytes").load()
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:
        # pickle raises UnpicklingError, EOFError, ValueError, TypeError, ... on garbage.
        raise DataError(f"{path}: not a readable pickle: {type(exc).__name__}: {exc}") from exc


def _get(d: dict, key: str, path: Path) -> Any:
    """``d[b"key"]`` (Python 2 files) or ``d["key"]`` (files re-saved by Python 3)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: the batch has no {key!r} entry (keys: {sorted(map(str, d))})")


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Shape:
        - returns ``(images (N, 32, 32, 3) uint8 NHWC, labels (N,) int64)``

    The stored rows are channel-major (CHW): they are reshaped to ``(N, 3, 32, 32)`` and
    transposed to NHWC.
    """
    path = Path(path)
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict of b'data' and b'labels', found a "
                        f"{type(batch).__name__}")
    data = _get(batch, "data", path)
    labels = _get(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise DataError(
            f"{path}: b'data' must be a uint8 array (N, 3072) = N images of 3 x 32 x 32, "
            f"found {found}"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: b'labels' is not a list of integers: {exc}") from exc
    if y.shape != (data.shape[0],):
        raise DataError(
            f"{path}: {data.shape[0]} images but {y.size} labels; they must be equal"
        )
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def read_label_names(path: str | os.PathLike) -> list[str]:
    """The class names stored in ``batches.meta``."""
    path = Path(path)
    meta = safe_unpickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a dict holding b'label_names'")
    names = _get(meta, "label_names", path)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{path}: b'label_names' must be a list of strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def find_batch_dir(path: str | os.PathLike) -> Path | None:
    """``path`` itself or its ``cifar-10-batches-py`` sub-folder, whichever holds the batches."""
    path = Path(path)
    for candidate in (path, path / BATCH_DIR):
        if (candidate / TEST_BATCH).is_file() or (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    return None


def load_cifar10(path: str | os.PathLike) -> DataSplits:
    """Load CIFAR-10 from a ``cifar-10-batches-py`` directory (or its parent).

    Shape:
        - train.x ``(50000, 32, 32, 3)``, test.x ``(10000, 32, 32, 3)`` float32 in ``[0, 1]``

    Raises :class:`DataError` naming the missing or invalid file.
    """
    root = find_batch_dir(path)
    if root is None:
        raise DataError(
            f"{path}: no CIFAR-10 python batches here (expected {BATCH_DIR}/ with "
            f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH}, {META})"
        )
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing CIFAR-10 file")
    classes = read_label_names(root / META)
    parts = [read_batch(root / name) for name in TRAIN_BATCHES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(root / TEST_BATCH)
    for y, name in ((y_train, "data_batch_*"), (y_test, TEST_BATCH)):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(
                f"{root / name}: labels range over [{y.min()}, {y.max()}] but {META} names "
                f"{len(classes)} classes"
            )

    def to_float(x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32)
        out /= 255.0
        return out

    common = dict(classes=classes, hflip=True, source=str(root))
    return DataSplits(
        Dataset(to_float(x_train), y_train, name="cifar10", **common),
        Dataset(to_float(x_test), y_test, name="cifar10", **common),
    )
