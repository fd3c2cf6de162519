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
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from convnet.errors import DataError

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


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (whatever its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # EOFError: the gzip stream stops early (a truncated download).
        raise DataError(f"{path}: corrupt or truncated gzip data: {exc}") from exc


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>",
              expected_magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array of the header's shape.

    ``expected_magic`` (e.g. :data:`IMAGES_MAGIC`) pins the data type and dimension count.
    The result is a read-only view of ``data`` in native byte order for one-byte types.
    """
    if len(data) < 4:
        raise DataError(
            f"{path}: IDX file of {len(data)} bytes is too short for the 4-byte magic number"
        )
    zero, dtype_byte, ndim = struct.unpack(">HBB", data[:4])
    magic = (dtype_byte << 8) | ndim
    if expected_magic is not None and (zero != 0 or magic != expected_magic):
        exp_type, exp_ndim = expected_magic >> 8, expected_magic & 0xFF
        found = int.from_bytes(data[:4], "big")
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
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: IDX header announces {ndim} dimensions ({header} header bytes) but the "
            f"file has only {len(data)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[dtype_byte]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        shape = " x ".join(str(d) for d in dims)
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX payload {what}: the header says {shape} items of {dtype.itemsize} "
            f"byte(s) = {expected} bytes after the {header}-byte header, but the file has "
            f"{found}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) and validate its header against its size.

    Args:
        path: the file.
        expected_magic: :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC` to insist on MNIST's layout;
            None accepts any valid IDX type and dimension count.

    Shape:
        - returns the array of the header's dimensions, e.g. ``(60000, 28, 28)`` uint8.

    Raises :class:`DataError` naming the file for a missing file, corrupt gzip data, a wrong
    magic number, or a payload whose size differs from the header's.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), path, expected_magic)


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

    Raises :class:`DataError` when either file is invalid or the counts disagree.
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; they must be equal (mixed-up train/test files?)"
        )
    return images, labels
