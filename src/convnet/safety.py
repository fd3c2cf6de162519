"""The rules convnet applies to every file it reads, in one place.

Every model, data set and image convnet opens may be hostile: a FIFO named ``x.npz``, a spec file
linked to ``/dev/zero``, a 4 MB zip that inflates to 3 GiB, a PNG header claiming 100000x100000,
an IDX header whose dimensions multiply past 2**64, a text field of a megabyte that an error
message would echo. The readers (:mod:`convnet.data.idx`, :mod:`convnet.data.cifar`,
:mod:`convnet.data.images`, :mod:`convnet.train.checkpoint`, the spec parser's file reader) all go
through the functions here, so each rule is written once:

1. **Regular files only** (:func:`open_regular`): opened with ``O_NONBLOCK`` (a FIFO cannot block
   the open), then ``fstat`` on the open descriptor (no race with a rename) must say "regular
   file"; FIFOs, devices, sockets and directories are refused before a byte is read.
2. **Sizes are checked before anything is allocated**: against what the header says (header
   arithmetic in Python integers, which never wrap) and against a documented cap
   (:data:`CAPS`), which a flag or an environment variable raises (:func:`cap`, :func:`caps`).
3. **Streams are read with a cap** (:func:`read_capped`): the most a reader will take is known
   before it starts, whatever the file (or a decompressor) keeps producing.
4. **Untrusted text in errors is a short, escaped excerpt** (:func:`excerpt`): never a whole
   field, never a control character that rewrites the terminal.
5. **Numbers that must be finite are checked where they are produced**
   (:func:`check_finite_scores`, :func:`dumps_finite_json`): a NaN never reaches a printed
   percentage or a JSON file.

``SECURITY.md`` at the root of the repository states the promises these rules make and lists
every cap with its default, its environment variable and its command-line flag.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from convnet.errors import ConfigError, ConvnetError, DataError, InputError

__all__ = [
    "CAPS",
    "Cap",
    "NpyHeader",
    "atomic_write",
    "cap",
    "caps",
    "check_finite_scores",
    "create_temp",
    "dumps_finite_json",
    "excerpt",
    "file_kind",
    "fsync_dir",
    "npy_header",
    "open_regular",
    "overrides",
    "parse_size",
    "read_capped",
    "read_regular",
    "too_big",
]


# ------------------------------------------------------------------------------------ the caps
@dataclass(frozen=True)
class Cap:
    """One documented resource limit.

    Attributes:
        name: the key in :data:`CAPS` (``"image_pixels"``).
        default: the value when neither the flag nor the environment variable is given.
        env: the environment variable that replaces the default (``CONVNET_MAX_IMAGE_PIXELS``).
        flag: the command-line flag of the verbs that read such files, or None.
        unit: what is counted (``"pixels"``, ``"bytes"``, ``"objects"``).
        what: one line on what is limited, for messages and ``--help``.
    """

    name: str
    default: int
    env: str
    flag: str | None
    unit: str
    what: str


GiB = 2**30

#: Every cap convnet applies to untrusted input. The defaults fit every data set and model of the
#: zoo with room to spare (VGG16 with Adam's state is a 1.7 GB checkpoint; MNIST's training
#: images are 47 MB of IDX; a 12-megapixel photo is 12 million pixels).
CAPS: dict[str, Cap] = {c.name: c for c in (
    Cap("image_pixels", 40_000_000, "CONVNET_MAX_IMAGE_PIXELS", "--max-image-pixels", "pixels",
        "pixels (width x height) of one image, checked from its header before it is decoded"),
    Cap("checkpoint_bytes", 2 * GiB, "CONVNET_MAX_CHECKPOINT_BYTES", "--max-checkpoint-bytes",
        "bytes", "bytes of a checkpoint, on disk and once its members are decompressed, checked "
                 "from the zip directory and the .npy headers before a member is read"),
    Cap("data_bytes", 2 * GiB, "CONVNET_MAX_DATA_BYTES", "--max-data-bytes", "bytes",
        "bytes of one data file (an IDX payload after gunzip, a CIFAR batch, a download, a "
        "member of the CIFAR archive), checked from its header before it is read"),
    Cap("pickle_objects", 5_000_000, "CONVNET_MAX_PICKLE_OBJECTS", None, "objects",
        "objects one CIFAR batch (a pickle) may create while it is read"),
    Cap("manifest_bytes", 64 * 2**20, "CONVNET_MAX_MANIFEST_BYTES", None, "bytes",
        "bytes of a packed data set's manifest.json (about 100,000 shards), checked before it "
        "is read"),
)}

_overrides: dict[str, int] = {}


def parse_size(text: str, where: str) -> int:
    """A whole number >= 1 from ``text``: ``2000000``, ``2_000_000``, ``4GiB``, ``500M``, ``1e9``.

    Suffixes k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti powers of 1024 (a trailing ``B`` is
    allowed). Raises :class:`ConfigError` naming ``where`` (the flag or the variable).
    """
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][+]?[0-9]+)?)\s*"
                     r"([kKmMgGtT]i?)?[bB]?\s*", text)
    value = None
    if m:
        scale = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
        unit = (m.group(2) or "").lower()
        factor = 1 if not unit else scale[unit[0]] if len(unit) == 1 else \
            1024 ** (1 + "kmgt".index(unit[0]))
        number = float(m.group(1).replace("_", "")) * factor
        if math.isfinite(number) and number == int(number) and 1 <= number < 2**63:
            value = int(number)
    if value is None:
        raise ConfigError(f"{where}={excerpt(text, 40)}: expected a whole number >= 1, e.g. "
                          "100000000, 4GiB or 500M")
    return value


def cap(name: str) -> int:
    """The current value of cap ``name``: a :func:`caps` override, else its environment
    variable, else its default."""
    if name in _overrides:
        return _overrides[name]
    c = CAPS[name]
    text = os.environ.get(c.env, "")
    return parse_size(text, c.env) if text.strip() else c.default


@contextlib.contextmanager
def caps(**values: int | None) -> Iterator[None]:
    """Raise (or lower) caps inside a ``with`` block; ``None`` leaves a cap as it is.

    >>> with caps(image_pixels=10**9):
    ...     cap("image_pixels")
    1000000000
    """
    new: dict[str, int] = {}
    for name, value in values.items():
        if name not in CAPS:
            raise ConfigError(f"unknown cap {name!r}; caps: {', '.join(CAPS)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"{name}={value!r}: a cap is a whole number >= 1")
        new[name] = int(value)
    saved = dict(_overrides)
    _overrides.update(new)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def overrides() -> dict[str, int]:
    """The caps set by :func:`caps` (command-line flags) right now, to hand to another process
    (a worker decoding images, a Dask worker), which applies them with ``caps(**overrides)``:
    the environment variables travel with the environment, these would not."""
    return dict(_overrides)


def too_big(where: Any, what: str, amount: int, name: str,
            error: type[ConvnetError] = DataError) -> ConvnetError:
    """The error for ``amount`` over cap ``name``: what, where, the numbers, and how to raise it."""
    c = CAPS[name]
    limit = cap(name)
    how = f"{c.flag} N or " if c.flag else ""
    return error(
        f"{where}: {what} is {amount:,} {c.unit}, over the limit of {limit:,} {c.unit}; if you "
        f"trust this file, raise the limit with {how}the environment variable {c.env}"
    )


# ------------------------------------------------------------------------------------- excerpts
def excerpt(text: Any, limit: int = 60, quotes: bool = True) -> str:
    """A short, escaped quotation of untrusted text for an error message.

    Control characters, quotes and non-ASCII are escaped as Python writes them (so nothing can
    move the cursor or fake a line), and only the first ``limit`` characters are shown, with the
    full length; ``quotes=False`` leaves out the quotes (for names inside a sentence):

    >>> excerpt("ab\\x1b[2Jcd")
    "'ab\\\\x1b[2Jcd'"
    >>> excerpt("x" * 100, 10)
    "'xxxxxxxxxx'... (100 characters)"
    >>> excerpt("conv1.W", quotes=False)
    'conv1.W'
    """
    if isinstance(text, bytes | bytearray):
        shown = ascii(bytes(text[:limit]))
        n, unit = len(text), "bytes"
    else:
        s = text if isinstance(text, str) else str(text)
        shown = ascii(s[:limit])
        n, unit = len(s), "characters"
    if not quotes:
        shown = shown[2:-1] if shown[0] == "b" else shown[1:-1]
    return f"{shown}... ({n:,} {unit})" if n > limit else shown


# -------------------------------------------------------------------------------- regular files
def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"``... for an ``st_mode`` that is not a regular file."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    error: type[ConvnetError] = DataError,
    cap_name: str | None = None,
    max_bytes: int | None = None,
    follow_symlinks: bool = True,
) -> IO[bytes]:
    """Open ``path`` for reading in binary mode if, and only if, it is a regular file.

    The file is opened with ``O_NONBLOCK`` so that a FIFO cannot hang the open, then ``fstat``
    of the open descriptor decides (a symlink is followed, and what it points at must be a
    regular file; with ``follow_symlinks=False`` a symlink is refused, ``O_NOFOLLOW``). Its
    size is checked against ``max_bytes`` (or the cap ``cap_name``) before anything is read.
    Blocking mode is restored for reading.

    Raises ``error`` (a :class:`~convnet.errors.ConvnetError` subclass) naming the file for a
    missing file, a directory, a FIFO, a device, a socket, an unreadable file or one over the cap.
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0) \
        | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if not follow_symlinks and os.path.islink(p):
            raise error(f"{p}: is a symlink; convnet reads this {what} only as the file itself") \
                from None
        if isinstance(exc, FileNotFoundError):
            raise error(f"{p}: file not found") from None
        if isinstance(exc, IsADirectoryError):
            raise error(f"{p}: is a directory, not a {what}") from None
        raise error(f"{p}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(
                f"{p}: is {file_kind(st.st_mode)}, not a regular file; convnet reads {what}s "
                "only from regular files (a pipe or a device may block forever or never end)"
            )
        limit = max_bytes if max_bytes is not None else cap(cap_name) if cap_name else None
        if limit is not None and st.st_size > limit:
            if cap_name and max_bytes is None:
                raise too_big(p, f"the {what}", st.st_size, cap_name, error)
            raise error(f"{p}: the {what} is {st.st_size:,} bytes; at most {limit:,} are read")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(stream: IO[bytes], limit: int, where: Any, what: str,
                error: type[ConvnetError] = DataError, cap_name: str | None = None) -> bytes:
    """Everything ``stream`` yields, or ``error`` as soon as it yields more than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes whatever the stream would produce (a growing file, a
    decompressor), so memory is bounded by the cap, not by the input.
    """
    # A buffered file's read(n) reserves n bytes before it reads: ask a file for what it holds
    # (+1 to see if it grew), so a 2 GiB cap does not mean 2 GiB reserved for a 2 KB file.
    want = limit + 1
    with contextlib.suppress(AttributeError, OSError, ValueError):
        left = os.fstat(stream.fileno()).st_size - stream.tell()
        if 0 <= left < limit:
            want = left + 1
    data = stream.read(want)
    if len(data) == want and want <= limit:  # it grew while being read: the rest, capped
        data += stream.read(limit + 1 - want)
    if len(data) > limit:
        if cap_name is not None:
            raise too_big(where, what, len(data), cap_name, error)
        raise error(f"{where}: {what} is over {limit:,} bytes; at most {limit:,} are read")
    return data


def read_regular(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    error: type[ConvnetError] = DataError,
    cap_name: str | None = None,
    max_bytes: int | None = None,
    follow_symlinks: bool = True,
) -> bytes:
    """The bytes of a regular file, read with a cap (see :func:`open_regular`)."""
    limit = max_bytes if max_bytes is not None else cap(cap_name) if cap_name else None
    with open_regular(path, what=what, error=error, cap_name=cap_name, max_bytes=max_bytes,
                      follow_symlinks=follow_symlinks) as f:
        try:
            if limit is None:
                return f.read()
            return read_capped(f, limit, os.fspath(path), f"the {what}", error, cap_name)
        except OSError as exc:
            raise error(f"{os.fspath(path)}: cannot read the {what}: {exc.strerror or exc}") \
                from None


# ------------------------------------------------------------------------------ finite numbers
def check_finite_scores(scores: Any, where: str) -> np.ndarray:
    """``scores`` as an array, or :class:`InputError` if any score is NaN or infinite.

    A network whose weights (or normalisation) overflow float32 produces Inf and then NaN
    scores; printing them as ``nan%`` or taking their argmax would present garbage as a result.
    ``where`` names what produced them (a file, ``"predict"``).

    >>> check_finite_scores([[1.0, 2.0]], "demo").shape
    (1, 2)
    """
    a = np.asarray(scores)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = ~np.isfinite(a)
        rows = int(np.any(bad.reshape(len(a), -1), axis=1).sum()) if a.ndim >= 1 and len(a) \
            else 1
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        finite = a[~bad]
        top = f"; the largest finite |score| is {float(np.abs(finite).max()):.3g}" \
            if finite.size else ""
        raise InputError(
            f"{where}: the network's scores are not finite ({int(bad.sum()):,} NaN or Inf "
            f"values in {rows:,} of {len(a) if a.ndim else 1:,} input(s), first at index "
            f"{first}: {a[first]}){top}. Its weights or normalisation overflow "
            f"{a.dtype} (a weight of 3e38 does), so no class can be read from them: check or "
            "retrain the model"
        )
    return a


def _first_non_finite(data: Any) -> tuple[str, Any] | None:
    """The JSON path (``samples[0].probs[3]``) and value of the first NaN/Inf in ``data``.

    Iterative (no recursion), so any nesting is safe.
    """
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:
        where, obj = todo.pop()
        if isinstance(obj, float | np.floating):
            if not math.isfinite(float(obj)):
                return where or "the value", obj
        elif isinstance(obj, dict):
            todo.extend((f"{where}.{k}" if where else str(k), v)
                        for k, v in reversed(list(obj.items())))
        elif isinstance(obj, list | tuple):
            todo.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(obj))))
        elif isinstance(obj, np.ndarray) and obj.dtype.kind in "fc" and obj.size:
            bad = np.argwhere(~np.isfinite(obj))
            if bad.size:
                idx = tuple(int(i) for i in bad[0])
                return f"{where}{list(idx)}", obj[idx]
    return None


def dumps_finite_json(data: Any, where: str, **kwargs: Any) -> str:
    """``json.dumps(data, allow_nan=False, **kwargs)``, but a NaN or Inf is an
    :class:`InputError` naming the field that holds it (``samples[0].probs[3] is nan``) instead of
    json's "Out of range float values are not JSON compliant"."""
    found = _first_non_finite(data)
    if found is not None:
        path, value = found
        raise InputError(
            f"{where}: {path} is {value}, which JSON cannot hold: the model's numbers are not "
            "finite (weights or normalisation statistics that overflow float32, e.g. a weight "
            "of 3e38); check or retrain the model"
        )
    return json.dumps(data, allow_nan=False, **kwargs)


# -------------------------------------------------------------------------------- .npy headers
MAX_NDIM = 32  # dimensions of one array (checkpoints, shards, pickles)
_NPY_MAGIC = b"\x93NUMPY"
# An element type convnet reads: bool, integers, floats, or text (U). Never objects, records.
_DESCR = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|U[0-9]{1,9})")


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, validated; nothing of the data read.

    Attributes:
        dtype, shape, fortran: as the header says (``shape`` in Python ints).
        header_bytes: magic, version, length and header dict: where the data starts.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    header_bytes: int

    @property
    def size(self) -> int:
        """Elements, in Python integers (never wraps)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def npy_header(stream: IO[bytes], where: str, error: type[ConvnetError] = DataError
               ) -> NpyHeader:
    """Parse and validate the ``.npy`` header at the start of ``stream`` without NumPy's reader
    (which evaluates the header and multiplies the shape in int64).

    ``where`` starts every message (``"x.npz: member 'param/W'"``, ``"train-x-00000.npy"``).
    Raises ``error`` for a bad magic, a truncated or malformed header, a pickled object array,
    a record or any element type but bool, integers, floats and text, or more than
    :data:`MAX_NDIM` dimensions. The caller compares :attr:`NpyHeader.nbytes` with what the
    file holds.
    """
    head = stream.read(8)
    if len(head) < 8 or head[:6] != _NPY_MAGIC or head[6] not in (1, 2, 3) or head[7] != 0:
        raise error(f"{where} is not a .npy array (bad magic {excerpt(head[:8])})")
    size_len = 2 if head[6] == 1 else 4
    raw_len = stream.read(size_len)
    if len(raw_len) < size_len:
        raise error(f"{where}: truncated .npy header")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > 10_000:  # NumPy's own limit
        raise error(f"{where}: .npy header of {hlen:,} bytes (at most 10,000)")
    text = stream.read(hlen)
    if len(text) < hlen:
        raise error(f"{where}: truncated .npy header")
    try:
        header = ast.literal_eval(text.decode("utf-8" if head[6] == 3 else "latin-1"))
    except Exception as exc:  # noqa: BLE001 - SyntaxError, ValueError, RecursionError, ...
        raise error(f"{where}: malformed .npy header "
                    f"({type(exc).__name__}: {excerpt(text, 60)})") from None
    ok = (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}
          and isinstance(header["descr"], str) and _DESCR.fullmatch(header["descr"])
          and isinstance(header["fortran_order"], bool) and isinstance(header["shape"], tuple)
          and len(header["shape"]) <= MAX_NDIM
          and all(type(d) is int and d >= 0 for d in header["shape"]))
    if not ok and isinstance(header, dict) and isinstance(header.get("descr"), str | list) \
            and "O" in str(header.get("descr")):
        raise error(f"{where} holds a pickled object array; convnet never executes code on "
                    "load, so this file is refused")
    if not ok:
        raise error(f"{where}: .npy header {excerpt(text.strip(), 80)} is not "
                    "{'descr': a numeric or text type, 'fortran_order': bool, 'shape': a "
                    "tuple of whole numbers} (object arrays, records and pickles are refused)")
    return NpyHeader(np.dtype(header["descr"]), header["shape"], header["fortran_order"],
                     8 + size_len + hlen)


# ------------------------------------------------------------------------------- atomic writes
def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable; best effort (not possible on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def create_temp(directory: str | os.PathLike[str], name: str) -> tuple[int, str]:
    """A new file beside the target, created with mode 0o666 so that the umask decides its
    permissions (as for any file the user writes; ``tempfile.mkstemp`` would make it 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {os.path.join(directory, name)}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into a new temporary file beside ``path``, fsync, rename over ``path``,
    fsync the directory: a reader sees the old file or the whole new one, never a part.

    The file gets the permissions the umask gives any new file (0644 for the usual umask 022),
    as every file convnet writes (checkpoints, shards, manifests, ONNX exports). On any failure,
    including KeyboardInterrupt, the temporary file is removed and the previous file (if any)
    is left as it was; the exception is raised again.
    """
    directory = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = create_temp(directory, os.path.basename(os.fspath(path)))
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
    fsync_dir(directory)
