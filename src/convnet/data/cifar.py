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
need no import at all, the only imports allowed are the ones a NumPy array needs (each checked),
and the nesting depth and object count are bounded while the file is read: a hostile batch ends
as one :class:`~convnet.errors.DataError`, never as code run, memory exhausted or a crash.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from convnet.errors import DataError
from convnet.safety import cap, excerpt, read_capped, read_regular, too_big

from .dataset import Dataset, DataSplits

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"

try:  # NumPy 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray

#: Nesting a data batch may have (CIFAR's is 3: a dict of lists of bytes). A tuple nested 10**6
#: deep crashes CPython with a signal when it is hashed (tuple hashing recurses in C with no
#: depth check), so depth is bounded while the pickle is read, before anything hashes it.
MAX_PICKLE_DEPTH = 100
#: Class names in batches.meta: how many, and how long each may be.
_MAX_CLASSES, _MAX_NAME = 100_000, 1_000
#: Dimensions of an array in a pickle (NumPy's own limit is 64).
_MAX_NDIM = 32
#: Array element types a batch may hold: booleans, integers and floats, no objects, no records.
_ARRAY_KINDS = "biuf"


def _array_dtype(spec: Any, source: str) -> np.dtype:
    """``np.dtype(spec)`` for a plain numeric type given as text, else DataError."""
    if isinstance(spec, np.dtype):
        dt = spec
    elif isinstance(spec, str | bytes) and len(spec) <= 8:
        try:
            dt = np.dtype(spec.decode("latin-1") if isinstance(spec, bytes) else spec)
        except (TypeError, ValueError):
            dt = None
    else:
        dt = None
    if dt is None or dt.kind not in _ARRAY_KINDS or dt.fields is not None or dt.subdtype \
            is not None or dt.hasobject:
        raise DataError(f"{source}: refused to load: an array of type {excerpt(spec, 30)}; a "
                        "data batch holds only arrays of numbers")
    return dt


def _array_shape(shape: Any, dtype: np.dtype, source: str) -> tuple[int, ...]:
    """A validated shape whose bytes fit the ``data_bytes`` cap (Python integers: no wrap)."""
    if not isinstance(shape, tuple | list) or len(shape) > _MAX_NDIM or not all(
            type(d) is int and d >= 0 for d in shape):
        raise DataError(f"{source}: refused to load: array shape {excerpt(shape, 40)} is not a "
                        f"tuple of at most {_MAX_NDIM} whole numbers >= 0")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cap("data_bytes"):
        raise too_big(source, f"an array of shape {tuple(shape)} ({dtype})", nbytes,
                      "data_bytes")
    return tuple(shape)


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that cannot run code, allocate without bound, or crash by recursion.

    Built on the pure-Python :class:`pickle._Unpickler` so that every opcode goes through
    Python code that enforces these rules while the file is read, before any object is used:

    - **Imports**: only what a NumPy array needs, ``numpy.core.multiarray._reconstruct`` (and
      its NumPy 2 name ``numpy._core.multiarray._reconstruct``), ``numpy._core.numeric.
      _frombuffer`` (protocol 5), ``numpy.ndarray`` and ``numpy.dtype``; every other global
      raises :class:`DataError`, so a malicious file cannot call ``os.system``. Each allowed
      callable is replaced by a checking wrapper: arrays of plain numbers only, shapes whose
      bytes fit the ``data_bytes`` cap, dtypes always fresh copies. ``BUILD`` (``__setstate__``)
      is allowed on those arrays and dtypes only, with their states validated; the opcodes that
      instantiate arbitrary classes (``INST``, ``OBJ``, ``NEWOBJ``, extension registry) are
      refused, and persistent ids are refused by :class:`pickle.Unpickler` already.
    - **Depth**: every tuple, list, dict, set and frozenset is given its nesting depth when it
      is built (tuples and frozensets, whose hashing recurses in C, exactly), at most
      :data:`MAX_PICKLE_DEPTH`.
    - **Count**: at most the ``pickle_objects`` cap of opcodes (each makes at most one object).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, *, source: str = "<pickle>", **kwargs: Any) -> None:
        if not isinstance(file, io.BytesIO):
            # Read (with a cap) into memory: lengths in the pickle are then checked against
            # what is really there, and no read can ask the OS for an announced 2**60 bytes.
            file = io.BytesIO(read_capped(file, cap("data_bytes"), source, "the pickle",
                                          cap_name="data_bytes"))
        super().__init__(file, **kwargs)
        self.source = source
        self._size = len(file.getbuffer())
        # id -> (object, depth) of every container built; the object is kept so its id stays
        # unique while the pickle is read.
        self._depths: dict[int, tuple[Any, int]] = {}
        self._max_objects = cap("pickle_objects")

    # ---------------------------------------------------------------------------- the loop
    def load(self) -> Any:
        """Read the pickle: as :meth:`pickle.Unpickler.load`, counting opcodes."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack: list[Any] = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch, limit = self.read, self.dispatch, self._max_objects
        count = 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                count += 1
                if count > limit:
                    raise too_big(self.source, "the pickle's object count", count, "pickle_objects")
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            return stop.value

    # --------------------------------------------------------------------------- imports
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted({f"{m}.{n}" for m, n in _ALLOWED}))
            hint = ""
            if (module, name) == ("_codecs", "encode"):
                # Python 3 pickles bytes at protocol 2 as a call to _codecs.encode.
                hint = "; this looks like a Python 3 protocol-2 pickle: re-save it with protocol 4"
            raise DataError(
                f"{self.source}: refused to load: the pickle asks for "
                f"{excerpt(module, 40)[1:-1]}.{excerpt(name, 40)[1:-1]}, but a data batch may "
                f"only contain arrays, lists, dicts, strings and numbers (allowed: {allowed})"
                f"{hint}"
            ) from None

    def load_bytearray8(self) -> None:
        # The pure-Python unpickler allocates the announced length before reading: check it
        # against the input's size first (the other length-prefixed opcodes read, not allocate).
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:
            raise DataError(f"{self.source}: not a readable pickle: a bytearray of {n:,} bytes "
                            f"announced in {self._size:,} bytes of input")
        b = bytearray(n)
        if self.readinto(b) != n:
            raise DataError(f"{self.source}: not a readable pickle: truncated bytearray")
        self.append(b)

    def _refuse(self, what: str) -> None:
        raise DataError(f"{self.source}: refused to load: the pickle {what}; a data batch may only "
                        "contain arrays, lists, dicts, strings and numbers")

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if func not in _CALLABLE or type(args) is not tuple:
            self._refuse(f"calls {excerpt(repr(func), 40)}")
        stack[-1] = func(self.source, *args)

    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, np.dtype):
            _build_dtype(inst, state, self.source)
        elif type(inst) is np.ndarray:
            _build_array(inst, state, self.source)
        else:
            self._refuse(f"sets the state of a {type(inst).__name__}")

    # ------------------------------------------------------------------------------ depth
    def _depth(self, obj: Any) -> int:
        entry = self._depths.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else 0

    def _set_depth(self, obj: Any, items: Any) -> None:
        depth = 1 + max((self._depth(v) for v in items), default=0)
        depth = max(depth, self._depth(obj))
        if depth > MAX_PICKLE_DEPTH:
            raise DataError(f"{self.source}: refused to load: containers nested more than "
                            f"{MAX_PICKLE_DEPTH} deep (a data batch needs 3)")
        self._depths[id(obj)] = (obj, depth)

    def _built(self) -> None:
        """The container just pushed (made whole from the stack) gets its depth."""
        obj = self.stack[-1]
        self._set_depth(obj, [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj)


def _wrap_built(op: bytes) -> None:
    base = pickle._Unpickler.dispatch[op[0]]

    def run(self: RestrictedUnpickler) -> None:
        base(self)
        self._built()

    RestrictedUnpickler.dispatch[op[0]] = run


# Containers made whole from the stack: their depth comes from their items, before anything
# else (a dict key lookup, a set insertion) can hash them.
for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.EMPTY_TUPLE,
            pickle.FROZENSET, pickle.LIST, pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET):
    _wrap_built(_op)


def _growing(base: Any, pops: int) -> Any:
    """Wrap an opcode that adds stack items to the container under them (APPEND, SETITEM...):
    the container's depth grows with them. (Their own depth was checked when they were built,
    so nothing too deep can be hashed by the base opcode.)"""

    def run(self: RestrictedUnpickler) -> None:
        if pops < 0:  # everything above the mark, into the container under the mark
            items = self.stack
            below = self.metastack[-1] if self.metastack else []
            target = below[-1] if below else None
        else:
            items = self.stack[-pops:]
            target = self.stack[-pops - 1] if len(self.stack) > pops else None
        base(self)
        if target is not None:
            self._set_depth(target, items)

    return run


for _op, _pops in ((pickle.APPEND, 1), (pickle.APPENDS, -1), (pickle.SETITEM, 2),
                   (pickle.SETITEMS, -1), (pickle.ADDITEMS, -1)):
    RestrictedUnpickler.dispatch[_op[0]] = _growing(pickle._Unpickler.dispatch[_op[0]], _pops)


def _load_dict(self: RestrictedUnpickler) -> None:
    items = self.stack  # MARK k1 v1 k2 v2 ... DICT: a new dict of the items above the mark
    pickle._Unpickler.dispatch[pickle.DICT[0]](self)
    self._set_depth(self.stack[-1], items)


RestrictedUnpickler.dispatch[pickle.DICT[0]] = _load_dict


def _refused(what: str) -> Any:
    def run(self: RestrictedUnpickler) -> None:
        self._refuse(what)

    return run


for _op, _what in ((pickle.INST, "instantiates a class (INST)"),
                   (pickle.OBJ, "instantiates a class (OBJ)"),
                   (pickle.NEWOBJ, "instantiates a class (NEWOBJ)"),
                   (pickle.NEWOBJ_EX, "instantiates a class (NEWOBJ_EX)"),
                   (pickle.EXT1, "uses the extension registry"),
                   (pickle.EXT2, "uses the extension registry"),
                   (pickle.EXT4, "uses the extension registry")):
    RestrictedUnpickler.dispatch[_op[0]] = _refused(_what)
RestrictedUnpickler.dispatch[pickle.REDUCE[0]] = RestrictedUnpickler.load_reduce
RestrictedUnpickler.dispatch[pickle.BYTEARRAY8[0]] = RestrictedUnpickler.load_bytearray8
RestrictedUnpickler.dispatch[pickle.BUILD[0]] = RestrictedUnpickler.load_build


# ------------------------------------------------------------------- the allowed callables
def _safe_reconstruct(source: str, subtype: Any = None, shape: Any = None, dtype: Any = None,
                      *rest: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)``, checked."""
    if subtype is not np.ndarray or rest:
        raise DataError(f"{source}: refused to load: _reconstruct of "
                        f"{excerpt(repr(subtype), 40)}; only plain numpy arrays are allowed")
    dt = _array_dtype(dtype, source)
    return _multiarray._reconstruct(np.ndarray, _array_shape(shape, dt, source), dt)


def _safe_dtype(source: str, spec: Any = None, align: Any = False, copy: Any = True,
                *rest: Any) -> np.dtype:
    """``numpy.dtype(spec)`` for a plain numeric type; always a fresh copy, so that the
    ``BUILD`` that follows can never change NumPy's shared dtype objects."""
    if rest:
        raise DataError(f"{source}: refused to load: numpy.dtype called with "
                        f"{2 + len(rest)} arguments")
    return np.dtype(_array_dtype(spec, source), False, True)


def _safe_frombuffer(source: str, buf: Any = None, dtype: Any = None, shape: Any = None,
                     order: Any = "C", *rest: Any) -> np.ndarray:
    """``numpy._core.numeric._frombuffer`` (protocol-5 arrays), checked."""
    dt = _array_dtype(dtype, source)
    shape = _array_shape(shape, dt, source)
    if rest or not isinstance(buf, bytes | bytearray) or order not in ("C", "F"):
        raise DataError(f"{source}: refused to load: an array buffer that is not bytes")
    if len(buf) != math.prod(shape) * dt.itemsize:
        raise DataError(f"{source}: refused to load: an array of shape {shape} ({dt}) with "
                        f"{len(buf):,} bytes of data")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order)


def _latin1(v: Any) -> Any:
    return v.decode("latin-1") if isinstance(v, bytes) else v


def _build_dtype(inst: np.dtype, state: Any, source: str) -> None:
    """``dtype.__setstate__`` for a plain numeric dtype only: byte order, nothing else."""
    norm = tuple(_latin1(v) for v in state) if isinstance(state, tuple) else None
    if norm is None or len(norm) != 8 or norm[0] != 3 or norm[1] not in ("<", ">", "|", "=") \
            or norm[2:5] != (None, None, None) or norm[5:] != (-1, -1, 0):
        raise DataError(f"{source}: refused to load: a dtype state {excerpt(repr(state), 60)} "
                        "that is not the one of a plain numeric type")
    inst.__setstate__(norm)


def _build_array(inst: np.ndarray, state: Any, source: str) -> None:
    """``ndarray.__setstate__`` with ``(version, shape, dtype, fortran, bytes)`` checked."""
    if isinstance(state, tuple) and len(state) == 4:
        state = (1, *state)
    ok = isinstance(state, tuple) and len(state) == 5 and state[0] == 1 \
        and isinstance(state[2], np.dtype) and isinstance(state[3], bool | int) \
        and isinstance(state[4], bytes | bytearray)
    if not ok:
        raise DataError(f"{source}: refused to load: an array state "
                        f"{excerpt(repr(state), 60)} that is not (version, shape, dtype, "
                        "fortran, bytes)")
    _, shape, dt, fortran, raw = state
    dt = _array_dtype(dt, source)
    shape = _array_shape(shape, dt, source)
    if len(raw) != math.prod(shape) * dt.itemsize:
        raise DataError(f"{source}: refused to load: an array of shape {shape} ({dt}) with "
                        f"{len(raw):,} bytes of data")
    inst.__setstate__((1, shape, dt, bool(fortran), raw))


# (module, name) -> the checking wrapper: everything a pickled ndarray needs, and nothing else.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}
_CALLABLE = (_safe_reconstruct, _safe_dtype, _safe_frombuffer)


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (``encoding="bytes"`` so Python 2
    strings come back as ``bytes``, as the CIFAR files need). Errors are :class:`DataError`.

    The file must be a regular file no larger than the ``data_bytes`` cap; it is read whole
    (bounded) and then unpickled from memory.
    """
    path = Path(path)
    data = read_regular(path, what="pickle file", cap_name="data_bytes")
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=str(path), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever garbage makes pickle raise
        # pickle raises UnpicklingError, EOFError, ValueError, TypeError, ... on garbage.
        raise DataError(f"{path}: not a readable pickle: {type(exc).__name__}: "
                        f"{excerpt(str(exc), 120)[1:-1]}") from None


def _get(d: dict, key: str, path: Path) -> Any:
    """``d[b"key"]`` (Python 2 files) or ``d["key"]`` (files re-saved by Python 3)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = ", ".join(excerpt(k, 30) for k in list(d)[:10]) + (", ..." if len(d) > 10 else "")
    raise DataError(f"{path}: the batch has no {key!r} entry (keys: {keys})")


def _labels(labels: Any, path: Path) -> np.ndarray:
    """A flat list (or 1-d integer array) of whole numbers as int64, checked item by item
    BEFORE NumPy sees it: a list of shared nested lists (a "billion laughs", 31 KB of pickle
    for 7.9 GB of array) is refused instead of expanded."""
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        values = labels
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        values = labels
    else:
        what = type(labels).__name__ if not isinstance(labels, list) else next(
            type(v).__name__ for v in labels if type(v) is not int)
        raise DataError(f"{path}: b'labels' must be a flat list of whole numbers, found "
                        f"{'a list holding a ' if isinstance(labels, list) else 'a '}{what}")
    y = np.asarray(values)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= 2**31):
        raise DataError(f"{path}: b'labels' range over [{int(y.min())}, {int(y.max())}]; class "
                        "numbers are whole numbers from 0")
    return y.astype(np.int64)


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
    y = _labels(labels, path)
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
    if len(names) > _MAX_CLASSES or any(len(n) > _MAX_NAME for n in names):
        raise DataError(f"{path}: b'label_names' must be at most {_MAX_CLASSES:,} names of at "
                        f"most {_MAX_NAME} characters")
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
