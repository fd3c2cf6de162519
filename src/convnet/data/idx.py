"""The IDX file format of MNIST and Fashion-MNIST, read by checking every claim of the header.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the payload::

    magic = 0x00 0x00 <type> <ndim>      type 0x08 = unsigned byte, 0x09 signed byte,
                                         0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    dims  = ndim x uint32 (big-endian)
    data  = prod(dims) items, row-major, big-endian

MNIST labels are ``0x00000801`` (ubyte, 1 dimension: count) and images ``0x00000803`` (ubyte, 3
dimensions: count x rows x columns). Files may be gzip-compressed (``.gz`` as distributed); the
gzip magic bytes are recognised whatever the file is called.

Nothing is assumed: a wrong magic number, dimension count, or a payload shorter or longer than
the header says is a :class:`DataError` naming the file, what was expected and what was found.
The header's arithmetic is done in Python integers (no int64 wrap), and the announced payload is
checked against the file's size and the ``data_bytes`` cap (:mod:`convnet.safety`) before it is
read; gzip data is inflated as a stream, never past what the header announces.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from convnet.errors import DataError
from convnet.safety import cap, excerpt, open_regular, too_big

#: IDX data type byte -> NumPy dtype (big-endian as the format stores it).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
               0x0D: "float32", 0x0E: "float64"}
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
_GZIP_MAGIC = b"\x1f\x8b"


class IdxHeader(NamedTuple):
    """What an IDX header claims, computed in Python integers (they never wrap)."""

    dtype: np.dtype
    dims: tuple[int, ...]
    header_bytes: int     # 4 + 4 * ndim
    payload_bytes: int    # prod(dims) * itemsize

    @property
    def shape_text(self) -> str:
        return " x ".join(str(d) for d in self.dims)


def _check_magic(head: bytes, path: Any, expected_magic: int | None) -> tuple[int, int]:
    """``(data type byte, ndim)`` from the 4 magic bytes, or a DataError saying what is wrong."""
    zero, dtype_byte, ndim = struct.unpack(">HBB", head)
    magic = (dtype_byte << 8) | ndim
    if expected_magic is not None and (zero != 0 or magic != expected_magic):
        exp_type, exp_ndim = expected_magic >> 8, expected_magic & 0xFF
        found = int.from_bytes(head, "big")
        why = []
        if zero != 0:
            why.append(f"the first two bytes are 0x{zero:04x}, not 0x0000 (is this an IDX file?)")
        if dtype_byte != exp_type:
            why.append(
                f"data type byte 0x{dtype_byte:02x} "
                f"({_TYPE_NAMES.get(dtype_byte, 'not an IDX type')}), expected 0x{exp_type:02x} "
                f"({_TYPE_NAMES[exp_type]})"
            )
        if ndim != exp_ndim:
            why.append(f"{ndim} dimensions, expected {exp_ndim}")
        raise DataError(
            f"{path}: IDX magic number 0x{found:08x} but expected 0x{expected_magic:08x}: "
            + "; ".join(why)
        )
    if zero != 0:
        raise DataError(
            f"{path}: not an IDX file: the first two bytes are 0x{zero:04x}, expected 0x0000"
        )
    if dtype_byte not in IDX_TYPES:
        raise DataError(
            f"{path}: IDX data type byte 0x{dtype_byte:02x} is not one of "
            + ", ".join(f"0x{t:02x} ({n})" for t, n in _TYPE_NAMES.items())
        )
    return dtype_byte, ndim


def _read_header(read: Any, path: Any, expected_magic: int | None) -> IdxHeader:
    """Parse the header from ``read(n)`` (a stream's read). Nothing but the header (at most
    1,024 bytes) is read."""
    head = read(4)
    if len(head) < 4:
        raise DataError(
            f"{path}: IDX file of {len(head)} bytes is too short for the 4-byte magic number"
        )
    dtype_byte, ndim = _check_magic(head, path, expected_magic)
    header = 4 + 4 * ndim
    raw_dims = read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{path}: IDX header announces {ndim} dimensions ({header} header bytes) but the "
            f"file has only {4 + len(raw_dims)} bytes"
        )
    dims = tuple(int(d) for d in struct.unpack(f">{ndim}I", raw_dims))
    dtype = IDX_TYPES[dtype_byte]
    # Python integers: 2**22 x 2**21 x 2**21 is 2**64, not 0 as an int64 product would say.
    return IdxHeader(dtype, dims, header, math.prod(dims) * dtype.itemsize)


def _check_payload(h: IdxHeader, found: int, path: Any) -> None:
    if found != h.payload_bytes:
        what = "truncated" if found < h.payload_bytes else "has trailing bytes"
        raise DataError(
            f"{path}: IDX payload {what}: the header says {h.shape_text} items of "
            f"{h.dtype.itemsize} byte(s) = {h.payload_bytes:,} bytes after the "
            f"{h.header_bytes}-byte header, but the file has {found:,}"
        )


def _check_cap(h: IdxHeader, path: Any) -> None:
    if math.prod(d for d in h.dims if d) * h.dtype.itemsize >= 2**63:
        # Even an empty array (a 0 among the dims) has a shape NumPy must be able to index.
        raise DataError(f"{path}: IDX dimensions {h.shape_text} describe more than 2**63 bytes; "
                        "no array can have that shape")
    if h.payload_bytes > cap("data_bytes"):
        raise too_big(path, f"the IDX payload ({h.shape_text} items of {h.dtype.itemsize} "
                            "byte(s))", h.payload_bytes, "data_bytes")


def _to_array(payload: bytes | bytearray, h: IdxHeader) -> np.ndarray:
    arr = np.frombuffer(payload, dtype=h.dtype).reshape(h.dims)
    return arr if h.dtype.itemsize == 1 else arr.astype(h.dtype.newbyteorder("="))


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>",
              expected_magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array of the header's shape.

    ``expected_magic`` (e.g. :data:`IMAGES_MAGIC`) pins the data type and dimension count.
    The result is a read-only view of ``data`` in native byte order for one-byte types.
    """
    stream = io.BytesIO(data)
    h = _read_header(stream.read, path, expected_magic)
    _check_payload(h, len(data) - h.header_bytes, path)
    _check_cap(h, path)
    return _to_array(memoryview(data)[h.header_bytes:], h)


@contextlib.contextmanager
def _open_stream(path: Path) -> Iterator[tuple[IO[bytes], int | None]]:
    """The file's content as a stream (gunzipped on the fly when it is gzip data, whatever its
    name), and its size when it is known without reading (plain files)."""
    with open_regular(path, what="IDX file", cap_name="data_bytes") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not is_gzip:
            yield raw, os.fstat(raw.fileno()).st_size
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield unzipped, None


def read_idx_header(path: str | os.PathLike, expected_magic: int | None = None) -> IdxHeader:
    """The header of an IDX file (plain or gzip): data type, dimensions and sizes, read without
    touching the payload. Raises :class:`DataError` like :func:`read_idx`."""
    path = Path(path)
    try:
        with _open_stream(path) as (stream, size):
            h = _read_header(stream.read, path, expected_magic)
            if size is not None:
                _check_payload(h, size - h.header_bytes, path)
            _check_cap(h, path)
            return h
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from None


def _read_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return DataError(f"{path}: corrupt or truncated gzip data: {excerpt(str(exc), 120)}")
    return DataError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) and validate its header against its size.

    Args:
        path: the file (a regular file: a FIFO or a device is refused before it is read).
        expected_magic: :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC` to insist on MNIST's layout;
            None accepts any valid IDX type and dimension count.

    Shape:
        - returns the array of the header's dimensions, e.g. ``(60000, 28, 28)`` uint8.

    The payload size the header announces is computed in Python integers and checked against
    the file's size (plain files) and the ``data_bytes`` cap (``--max-data-bytes``,
    ``CONVNET_MAX_DATA_BYTES``) before the payload is read; gzip data is inflated as a stream
    and never past the announced size (a ``.gz`` that inflates to more is refused, not read).

    Raises :class:`DataError` naming the file for a missing or special file, corrupt gzip data,
    a wrong magic number, a payload whose size differs from the header's, or one over the cap.
    """
    path = Path(path)
    try:
        with _open_stream(path) as (stream, size):
            h = _read_header(stream.read, path, expected_magic)
            if size is not None:
                _check_payload(h, size - h.header_bytes, path)
            _check_cap(h, path)
            payload = stream.read(h.payload_bytes)
            if len(payload) < h.payload_bytes:
                _check_payload(h, len(payload), path)
            if stream.read(1):
                raise DataError(
                    f"{path}: IDX payload has trailing bytes: the header says {h.shape_text} "
                    f"items of {h.dtype.itemsize} byte(s) = {h.payload_bytes:,} bytes after the "
                    f"{h.header_bytes}-byte header, but the gzip data holds more"
                )
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from None
    return _to_array(payload, h)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    code = {(dt.kind, dt.itemsize): t for t, dt in IDX_TYPES.items()}.get(
        (array.dtype.kind, array.dtype.itemsize)
    )
    if code is None:
        raise DataError(
            f"{path}: cannot write dtype {array.dtype} as IDX; use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-layout images file and its labels file, checking that they belong together.

    Shape:
        - returns ``(images (N, rows, cols) uint8, labels (N,) uint8)``

    Raises :class:`DataError` when either file is invalid or the counts disagree; the counts
    are compared from the two headers, before either payload is read.
    """
    n_images = read_idx_header(images_path, IMAGES_MAGIC).dims[0]
    n_labels = read_idx_header(labels_path, LABELS_MAGIC).dims[0]
    if n_images != n_labels:
        raise DataError(
            f"{images_path} holds {n_images} images but {labels_path} holds "
            f"{n_labels} labels; they must be equal (mixed-up train/test files?)"
        )
    return read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
