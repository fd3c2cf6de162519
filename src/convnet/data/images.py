"""Image files through Pillow: one image for ``convnet predict``, or a folder of class folders.

Every image becomes float32 in ``[0, 1]``, ``(H, W, D)`` with ``D`` 1 (grayscale, Pillow mode
``L``) or 3 (``RGB``). Other modes are converted: palette and 1-bit images expand, an alpha
channel is flattened onto white (how viewers show a transparent background), 16-bit and float
images are scaled by their format's range (65535 for 16-bit, 1.0 for float) rather than clipped
at 255, and a NaN or infinite pixel is an error.

Every file is opened as a regular file only, and its header's width x height is checked against
the ``image_pixels`` cap before a pixel is decoded (:mod:`convnet.safety`).

Sizes are written ``HxW`` (rows x columns) as everywhere in convnet, not Pillow's ``(W, H)``.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convnet.errors import DataError
from convnet.safety import CAPS, cap, excerpt, open_regular, too_big

from .dataset import Dataset, DataSplits, stratified_split

_HIGH_DEPTH = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_GRAY_MODES = {"1", "L", "LA", "La", *_HIGH_DEPTH}
# Resampling for resizes: Pillow's filters widen their support when shrinking, so BILINEAR
# also anti-aliases large photos going down to 28x28.
_RESAMPLE = Image.Resampling.BILINEAR


@contextlib.contextmanager
def _our_cap_only() -> Iterator[None]:
    """Pillow refuses images over 2x ``Image.MAX_IMAGE_PIXELS`` inside ``Image.open`` (and warns
    over 1x) with its own message; the ``image_pixels`` cap is the one rule, checked right after
    the header is read, so Pillow's check is off while a header is opened."""
    current = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = current


@contextlib.contextmanager
def _open_checked(path: Path) -> Iterator[Image.Image]:
    """The image at ``path`` with only its header read: a regular file (a FIFO or a device is
    refused before it is read), whose width x height fits the ``image_pixels`` cap. Pillow's
    own errors on a hostile file (any exception type its decoders raise) become one
    :class:`DataError` naming the file."""
    limit = cap("image_pixels")
    with open_regular(path, what="image", cap_name="data_bytes") as f:
        try:
            with _our_cap_only():
                img = Image.open(f)
        except UnidentifiedImageError:
            raise DataError(f"{path}: not an image Pillow can read (unknown or corrupt format)") \
                from None
        except Image.DecompressionBombError as exc:
            raise DataError(f"{path}: {excerpt(str(exc), 200)[1:-1]}; if you trust it, raise "
                            f"the limit with {CAPS['image_pixels'].flag} N or "
                            f"{CAPS['image_pixels'].env}") from None
        except Exception as exc:  # noqa: BLE001 - a decoder's error on untrusted bytes
            raise _unreadable(path, exc) from None
        with img:
            _check_pixels(img, path, limit)
            yield img


def _check_pixels(img: Image.Image, path: Path, limit: int) -> None:
    pixels = int(img.width) * int(img.height)
    if pixels > limit:
        raise too_big(path, f"the image ({img.height}x{img.width}, HxW)", pixels, "image_pixels")


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read image: {type(exc).__name__}: "
                     f"{excerpt(str(exc), 160)[1:-1]}")


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, or raise a DataError naming the file.

    The file must be a regular file (see :func:`convnet.safety.open_regular`) and its header's
    width x height must fit the ``image_pixels`` cap (``--max-image-pixels``,
    ``CONVNET_MAX_IMAGE_PIXELS``) before a pixel is decoded.
    """
    path = Path(path)
    with _open_checked(path) as img:
        try:
            img.load()  # decode now: a truncated file fails here, not later
            _check_pixels(img, path, cap("image_pixels"))  # a decoder that grew the image
            return img.copy()
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder's error on untrusted bytes
            raise _unreadable(path, exc) from None


def probe_image(path: str | os.PathLike) -> tuple[int, int, str]:
    """``(height, width, mode)`` of an image from its header alone (nothing decoded), with the
    same checks as :func:`open_image`."""
    path = Path(path)
    with _open_checked(path) as img:
        return int(img.height), int(img.width), str(img.mode)


def value_range(img: Image.Image) -> float:
    """The value of full intensity for an image's mode and format: 255 for 8-bit modes, 65535
    for 16-bit ones (``I;16*``; PNG, PPM/PGM and other 16-bit sources Pillow opens as ``I``),
    ``2**bits - 1`` for a TIFF's declared bit depth, 1.0 for floating point (``F``). Scaling by
    the format's range, not by the content, keeps a uniform 255 in a 16-bit PNG dark (255/65535)
    instead of reading it as white."""
    mode = img.mode
    if mode == "F":
        return 1.0
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "I" and img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258, (16,))
        bits = int(bits[0] if isinstance(bits, tuple | list) and bits else bits or 16)
        signed = tags.get(339, (1,))
        signed = int(signed[0] if isinstance(signed, tuple | list) and signed else signed) == 2
        return float(2 ** (bits - 1 if signed else bits) - 1) if 1 <= bits <= 32 else 65535.0
    if mode == "I":
        return 65535.0  # Pillow opens 16-bit PNG/PGM data as I (PGM maxvals scaled to 65535)
    return 255.0


def _high_depth_to_unit(img: Image.Image, path: Path | str) -> tuple[Image.Image, list[str]]:
    """A 16-bit, 32-bit or float image as mode ``F`` in [0, 1], scaled by :func:`value_range`.

    A NaN or infinite pixel is an error (a rescale from the content would let one Inf pixel
    darken every other; a clip would hide it); values outside the range are clipped, with a
    note.
    """
    a = np.asarray(img, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {int(bad.sum()):,} pixel(s) are NaN or infinite (first at "
                        f"row {first[0]}, column {first[1]}: {a[first]}); an image's values "
                        "must be finite")
    top = value_range(img)
    notes = []
    outside = int(np.count_nonzero((a < 0) | (a > top)))
    if outside:
        notes.append(f"clipped {outside:,} pixel(s) outside the {img.mode} range [0, {top:g}]")
    return Image.fromarray(np.clip(a / top, 0.0, 1.0).astype(np.float32), mode="F"), notes


def is_gray_mode(mode: str) -> bool:
    """True for Pillow modes without colour (``L``, ``1``, ``I;16``, ``F``, ``LA``...)."""
    return mode in _GRAY_MODES


def _size_pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise DataError(f"{what}: image size {size!r} must be a positive int or (H, W)")
    return pair  # type: ignore[return-value]


def _convert(
    img: Image.Image, hw: tuple[int, int], channels: int, path: Path | str = "<image>"
) -> tuple[np.ndarray, list[str]]:
    """``(H, W, channels)`` float32 in [0, 1], and notes on each conversion made."""
    original = img.mode
    notes: list[str] = []
    if original in _HIGH_DEPTH:
        # Pillow's convert("L") clips these at 255; scale by the format's range instead.
        img, scaled = _high_depth_to_unit(img, path)
        notes += scaled
    elif original in ("P", "PA"):
        has_alpha = original == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        # Flatten transparency onto white, as image viewers display it.
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
        notes.append(f"flattened the {original} image's transparency onto white")
    target = "L" if channels == 1 else "RGB"
    if img.mode != "F" and img.mode != target:
        try:
            img = img.convert(target)  # RGB -> L: 0.299 R + 0.587 G + 0.114 B (ITU-R 601)
        except ValueError as exc:
            raise DataError(f"{path}: cannot convert mode {original} to {target}: {exc}") from exc
    if original != target:
        notes.append(f"converted {original} -> {'grayscale (L)' if channels == 1 else 'RGB'}")
    if (img.height, img.width) != hw:
        notes.append(f"resized {img.height}x{img.width} -> {hw[0]}x{hw[1]} (HxW)")
        img = img.resize((hw[1], hw[0]), _RESAMPLE)
    if img.mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    else:
        a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] != channels:
        a = np.repeat(a, channels, axis=-1)
    return a, notes


def load_image(
    path: str | os.PathLike, target_shape: Sequence[int]
) -> tuple[np.ndarray, list[str]]:
    """Read any image Pillow understands as a network input of ``target_shape``.

    Args:
        path: the image file (PNG, JPEG, GIF, BMP, TIFF, WebP, ...).
        target_shape: the model's input ``(H, W, D)`` with ``D`` 1 or 3.

    Returns:
        ``(image, notes)``: the image as float32 in ``[0, 1]``, and human-readable notes on
        every conversion done (e.g. ``"converted RGB -> grayscale (L)"``,
        ``"resized 200x300 -> 28x28 (HxW)"``); no notes when the file already fits.

    Shape:
        - returns image ``(H, W, D)`` float32

    Raises :class:`DataError` naming the file when it cannot be read, or when ``D`` is neither
    1 nor 3.
    """
    path = Path(path)
    if len(target_shape) != 3 or target_shape[2] not in (1, 3):
        raise DataError(
            f"{path}: cannot make an image of shape {tuple(target_shape)}: images have "
            "(H, W, D) with D = 1 (grayscale) or 3 (RGB)"
        )
    h, w, d = (int(v) for v in target_shape)
    return _convert(open_image(path), (h, w), d, path)


# ------------------------------------------------------------------------------- image folders
def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    # Hidden files (.DS_Store, editor backups) are not images anyone meant to include.
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = _class_dirs(root)
    if not classes:
        raise DataError(
            f"{root}: no class folders: an image folder needs one sub-folder per class "
            "(e.g. cats/, dogs/) holding that class's images"
        )
    items = [(f, c) for c, d in enumerate(classes) for f in _files(d)]
    empty = [d.name for d in classes if not _files(d)]
    if empty:
        raise DataError(f"{root}: class folder(s) without images: {', '.join(empty)}")
    return [d.name for d in classes], items


def _load_items(
    items: list[tuple[Path, int]], hw: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(items), hw[0], hw[1], channels), dtype=np.float32)
    y = np.empty(len(items), dtype=np.int64)
    # A loop over files is unavoidable (each is a separate decode); it runs once per load.
    for i, (path, label) in enumerate(items):
        x[i], _ = _convert(open_image(path), hw, channels, path)
        y[i] = label
    return x, y


#: Above this many bytes as float32, :func:`load_image_folder` refuses to load a folder into memory
#: and says how to pack it into shards instead (2 GiB).
IN_MEMORY_LIMIT = 2 * 1024**3


def load_image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    hflip: bool = False,
    max_bytes: float | None = None,
) -> DataSplits:
    """Load a folder of images with one sub-folder per class.

    Layouts:
        - ``root/<class>/<image>``: split into train/test, stratified, by ``seed``;
        - ``root/train/<class>/...`` and ``root/test/<class>/...``: used as given (the class
          folders of both must have the same names).

    Args:
        path: the root folder.
        image_size: ``H`` or ``(H, W)`` every image is resized to; default: the most common size.
        grayscale: True for one channel (L), False for RGB; default: what most images are.
        test_fraction: share of each class held out as the test set (first layout only).
        seed: seed of that split; keep it fixed so the test set does not change.
        hflip: whether horizontal flips keep the labels (allows flip augmentation).
        max_bytes: the most the images may take as float32 (default :data:`IN_MEMORY_LIMIT`,
            2 GiB; ``math.inf`` for no limit). Above it nothing is decoded and the
            :class:`DataError` gives the ``convnet pack`` command that makes shards to train
            from with bounded memory.

    Shape:
        - train.x ``(N, H, W, D)`` float32 in ``[0, 1]``, ``D`` 1 or 3.

    Raises :class:`DataError` naming the file that cannot be read.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of class folders")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    if presplit:
        classes, train_items = _scan(root / "train")
        test_classes, test_items = _scan(root / "test")
        if test_classes != classes:
            raise DataError(
                f"{root}: train/ and test/ have different class folders: "
                f"{classes} vs {test_classes}"
            )
        all_items = train_items + test_items
    else:
        classes, all_items = _scan(root)

    # Opening reads only the header: size and mode are known before any pixel is decoded.
    sizes: Counter[tuple[int, int]] = Counter()
    gray_votes = 0
    for file, _ in all_items:
        h, w, mode = probe_image(file)
        sizes[(h, w)] += 1
        gray_votes += is_gray_mode(mode)
    hw = _size_pair(image_size, str(root)) if image_size is not None else sizes.most_common(1)[0][0]
    if grayscale is None:
        grayscale = gray_votes * 2 > len(all_items)  # a tie keeps colour
    channels = 1 if grayscale else 3
    _check_in_memory(root, len(all_items), (*hw, channels), max_bytes, image_size, grayscale)

    name = str(root)
    common = dict(classes=classes, name=name, hflip=hflip, source=name)
    if presplit:
        x_tr, y_tr = _load_items(train_items, hw, channels)
        x_te, y_te = _load_items(test_items, hw, channels)
        return DataSplits(Dataset(x_tr, y_tr, **common), Dataset(x_te, y_te, **common))
    x, y = _load_items(all_items, hw, channels)
    full = Dataset(x, y, **common)
    rest, test = stratified_split(y, test_fraction, seed, len(classes))
    return DataSplits(full.subset(rest), full.subset(test))


def _check_in_memory(root: Path, n: int, shape: tuple[int, int, int], max_bytes: float | None,
                     image_size: int | Sequence[int] | None, grayscale: bool | None) -> None:
    """Refuse a folder whose float32 images exceed ``max_bytes``, with the pack command."""
    import shlex

    limit = IN_MEMORY_LIMIT if max_bytes is None else max_bytes
    need = n * int(np.prod(shape)) * 4
    if need <= limit:
        return
    h, w, d = shape
    flags = f" --size {h}x{w}" if image_size is not None else ""
    if grayscale is not None:
        flags += " --grayscale" if grayscale else " --rgb"
    packed = root.with_name(root.name + "-packed")
    raise DataError(
        f"{root}: {n:,} images of {h}x{w}x{d} take {need / 1e9:.2f} GB as float32, more than "
        f"the {limit / 1e9:.2f} GB loaded into memory: pack them into uint8 shards once and "
        f"train from those with bounded memory: convnet pack {shlex.quote(str(root))} -o "
        f"{shlex.quote(str(packed))}{flags} then convnet train --data "
        f"{shlex.quote(str(packed))} (from Python: convnet.data.pack(...) and "
        f"load_dataset(...) of the packed folder; or max_bytes=math.inf to load it anyway)"
    )


def scan_image_folder(
    path: str | os.PathLike,
) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    """``(classes, items, test_items)`` of a folder in :func:`load_image_folder`'s layouts.

    ``items`` are ``(file, class index)`` in the order :func:`load_image_folder` loads them;
    ``test_items`` is None for ``root/<class>/...`` (split later) and the test half of
    ``root/train`` + ``root/test`` (then ``items`` is the train half). Nothing is opened.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of class folders")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train_items = _scan(root / "train")
        test_classes, test_items = _scan(root / "test")
        if test_classes != classes:
            raise DataError(
                f"{root}: train/ and test/ have different class folders: "
                f"{classes} vs {test_classes}"
            )
        return classes, train_items, test_items
    classes, items = _scan(root)
    return classes, items, None


def image_header(path: str | os.PathLike) -> tuple[int, int, bool]:
    """``(H, W, grayscale)`` from the file's header alone (no pixel decoded)."""
    try:
        with Image.open(path) as img:
            return img.height, img.width, is_gray_mode(img.mode)
    except (OSError, ValueError, SyntaxError) as exc:
        reason = "not an image Pillow can read" if isinstance(exc, UnidentifiedImageError) \
            else str(exc)
        raise DataError(f"{path}: {reason}") from exc


def decode_uint8(path: str | os.PathLike, hw: tuple[int, int], channels: int) -> np.ndarray:
    """The image :func:`load_image_folder` makes of ``path``, as uint8 ``(H, W, channels)``.

    ``decode_uint8(p, hw, d) / np.float32(255)`` is bit for bit the float32 image the folder
    loader holds for an 8-bit file (the loader's values are ``k / 255``); 16-bit and float
    images are rounded to the nearest of the 256 levels.
    """
    path = Path(path)
    a, _ = _convert(open_image(path), hw, channels, path)
    return np.rint(a * np.float32(255.0)).astype(np.uint8)


def convert_images(
    x: np.ndarray, image_size: int | Sequence[int] | None = None, channels: int | None = None
) -> np.ndarray:
    """Resize ``(N, H, W, D)`` images in ``[0, 1]`` and/or change their channel count.

    Channels: 3 -> 1 by the ITU-R 601 luma weights Pillow uses; 1 -> 3 by repeating.
    Resizing goes through Pillow (mode ``F``, bilinear), one image at a time.
    """
    if channels is not None and channels != x.shape[-1]:
        if channels == 1 and x.shape[-1] == 3:
            x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        elif channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        else:
            raise DataError(
                f"cannot convert images with {x.shape[-1]} channel(s) to {channels}: "
                "only 1 <-> 3 is defined"
            )
    if image_size is not None:
        h, w = _size_pair(image_size, "convert_images")
        if (h, w) != x.shape[1:3]:
            out = np.empty((x.shape[0], h, w, x.shape[3]), dtype=np.float32)
            for i in range(x.shape[0]):
                for c in range(x.shape[3]):
                    plane = Image.fromarray(np.ascontiguousarray(x[i, :, :, c]), mode="F")
                    out[i, :, :, c] = np.asarray(plane.resize((w, h), _RESAMPLE))
            x = out
    return np.ascontiguousarray(x, dtype=np.float32)
