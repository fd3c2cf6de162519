"""A photo fitted to a network's input, and checked against what the network was trained on.

A network takes one size (Fashion-MNIST's 28x28); photos come in any shape. Three fits:

- ``pad`` (the default): scale the whole image into the input and fill the rest with the
  image's own background (the median of its border pixels, per channel). Nothing is cut off and
  nothing is distorted, which is how the training items of Fashion-MNIST, MNIST and CIFAR-10
  look: the whole object, centred, in proportion. The fill is the image's background rather than
  a fixed level because a photo's background is what surrounds the object already: padding a
  white-background photo with black would draw bars the network never saw. When the photo's
  background is the training set's (after ``--invert`` if needed), this is the training set's
  background too.
- ``crop``: scale the image to cover the input and cut the centre out; the object keeps its
  proportions and fills the frame, but whatever lies outside the central square is lost (the toe
  and heel of a shoe photographed side on).
- ``squash``: resize to the input regardless of proportions (what convnet did before): a
  200x300 shoe becomes a tall, narrow one.

:func:`input_check` compares an image with the training set's statistics (the normalisation
mean and std every checkpoint stores): an image whose background is bright where the training
images are mostly dark (or the reverse) is probably of the opposite polarity: white clothes on
black in Fashion-MNIST, a dark shoe on white in a photo. Measured on Fashion-MNIST's 10,000 test
images: the check flags none of them and 94.5% of the same images inverted (the rest are items
filling the frame, whose average level is near the middle). ``invert=True`` turns ``x`` into
``1 - x``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from convnet.errors import DataError

from .images import _HIGH_DEPTH, _RESAMPLE, _convert, open_image

FITS = ("pad", "crop", "squash")
#: the fit of ``convnet predict`` and :func:`load_photo` when none is given
DEFAULT_FIT = "pad"


def _border_level(a: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost ring of pixels: the image's background."""
    ring = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])  # (pixels, D)
    return np.median(ring, axis=0)


def fit_array(a: np.ndarray, hw: tuple[int, int], fit: str = DEFAULT_FIT, *,
              eight_bit: bool = True) -> tuple[np.ndarray, list[str]]:
    """Fit an image ``(H0, W0, D)`` in ``[0, 1]`` to ``hw`` by ``fit`` (see the module notes).

    ``eight_bit``: the values are levels ``k / 255`` (an 8-bit file); the resize then runs on
    the 8-bit image exactly as the data set loaders resize (Pillow, bilinear), else in float.

    Returns ``(image (H, W, D) float32, notes)``.
    """
    if fit not in FITS:
        raise DataError(f"fit {fit!r} is not one of {', '.join(FITS)}")
    h0, w0, d = a.shape
    h, w = hw
    notes: list[str] = []
    if (h0, w0) != (h, w) and fit != "squash" and h0 * w != w0 * h:
        if fit == "pad":
            # the smallest canvas of the input's proportions that holds the whole image
            if h0 * w > w0 * h:  # taller than the input's shape: pad left and right
                hc, wc = h0, max(w0, round(h0 * w / h))
            else:
                hc, wc = max(h0, round(w0 * h / w)), w0
            level = _border_level(a)
            if eight_bit:
                level = np.rint(level * 255.0) / 255.0
            canvas = np.empty((hc, wc, d), np.float32)
            canvas[...] = level.astype(np.float32)
            top, left = (hc - h0) // 2, (wc - w0) // 2
            canvas[top:top + h0, left:left + w0] = a
            a = canvas
            shown = "/".join(f"{v:.2f}" for v in np.atleast_1d(level))
            notes.append(f"fitted {h0}x{w0} -> {h}x{w} (HxW) keeping its proportions: padded "
                         f"to {hc}x{wc} with its background level {shown}")
        else:  # crop the centre
            if h0 * w > w0 * h:
                hc, wc = max(1, round(w0 * h / w)), w0
            else:
                hc, wc = h0, max(1, round(h0 * w / h))
            top, left = (h0 - hc) // 2, (w0 - wc) // 2
            a = a[top:top + hc, left:left + wc]
            notes.append(f"fitted {h0}x{w0} -> {h}x{w} (HxW) keeping its proportions: cropped "
                         f"the centre {hc}x{wc}")
    elif (h0, w0) != (h, w):
        notes.append(f"resized {h0}x{w0} -> {h}x{w} (HxW)"
                     + (", squashed out of proportion" if h0 * w != w0 * h else ""))
    if a.shape[:2] != (h, w):
        a = _resize(a, (h, w), eight_bit)
    return np.ascontiguousarray(a, dtype=np.float32), notes


def _resize(a: np.ndarray, hw: tuple[int, int], eight_bit: bool) -> np.ndarray:
    h, w = hw
    if eight_bit:
        u8 = np.rint(a * np.float32(255.0)).astype(np.uint8)
        img = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8,
                              mode="L" if u8.shape[-1] == 1 else "RGB")
        out = np.asarray(img.resize((w, h), _RESAMPLE), dtype=np.float32) / np.float32(255.0)
        return out.reshape(h, w, a.shape[-1])
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c]), mode="F")
                         .resize((w, h), _RESAMPLE)) for c in range(a.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def load_photo(path: str | os.PathLike, target_shape: Sequence[int], *,
               fit: str = DEFAULT_FIT, invert: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read an image file as a network input of ``target_shape``, fitted by ``fit``.

    Like :func:`~convnet.data.images.load_image` (which squashes) with the choice of fit
    (``pad``, ``crop``, ``squash``) and ``invert`` (``1 - x`` after fitting). ``fit="squash"``
    gives exactly ``load_image``'s pixels.

    Shape:
        - returns image ``(H, W, D)`` float32 in ``[0, 1]``, and notes on every conversion.

    Raises :class:`DataError` naming the file when it cannot be read.
    """
    path = Path(path)
    if len(target_shape) != 3 or target_shape[2] not in (1, 3):
        raise DataError(
            f"{path}: cannot make an image of shape {tuple(target_shape)}: images have "
            "(H, W, D) with D = 1 (grayscale) or 3 (RGB)"
        )
    if fit not in FITS:
        raise DataError(f"fit {fit!r} is not one of {', '.join(FITS)}")
    h, w, d = (int(v) for v in target_shape)
    img = open_image(path)
    eight_bit = img.mode not in _HIGH_DEPTH
    if fit == "squash":
        a, notes = _convert(img, (h, w), d, path)
        if notes and notes[-1].startswith("resized") and img.height * w != img.width * h:
            notes[-1] += ", squashed out of proportion"
    else:
        a, notes = _convert(img, (img.height, img.width), d, path)
        a, more = fit_array(a, (h, w), fit, eight_bit=eight_bit)
        notes += more
    if invert:
        a = np.float32(1.0) - a
        notes.append("inverted (1 - x)")
    return a, notes


def input_check(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> str | None:
    """A warning when ``image`` (``(H, W, D)`` in ``[0, 1]``) is far from the training images
    the normalisation ``mean``/``std`` (per channel, ``[0, 1]`` units) describe; else None.

    - polarity: the training set has a dominant level (its mean at least 0.15 from 0.5, such as
      Fashion-MNIST's dark backgrounds, mean 0.29) and the image's background (the median of
      its border) lies on the other side of 0.5, while ``1 - image`` is closer to the training
      mean than the image: the fix is ``--invert``;
    - brightness: the image's mean lies more than 1.5 training standard deviations from the
      training mean.
    """
    m = float(np.mean(mean))
    s = float(np.mean(std)) or 1.0
    level = float(image.mean())
    border = float(np.mean(_border_level(image)))
    d, d_inv = abs(level - m) / s, abs(1.0 - level - m) / s
    if abs(m - 0.5) > 0.15 and (border > 0.5) != (m > 0.5) and d_inv < d:
        light, dark = ("bright", "dark") if border > 0.5 else ("dark", "bright")
        return (f"looks inverted for this model: its background is {light} (level "
                f"{border:.2f}) where the training images are mostly {dark} (mean level "
                f"{m:.2f}); a prediction on it means little: try --invert")
    if d > 1.5:
        return (f"is much {'brighter' if level > m else 'darker'} than the training images "
                f"(mean level {level:.2f} against {m:.2f} +- {s:.2f}); a prediction on it "
                "means little: adjust its exposure, or use a photo more like them")
    return None


def save_input_png(image: np.ndarray, path: str | os.PathLike, min_side: int = 112) -> Path:
    """Write a network input ``(H, W, D)`` in ``[0, 1]`` as a PNG, enlarged by a whole factor
    (each pixel a k x k block, nearest neighbour) until its shorter side is at least
    ``min_side``, so a 28x28 input can be seen; ``png[::k, ::k]`` is the input's 8-bit levels.
    """
    path = Path(path)
    a = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    k = max(1, -(-min_side // min(a.shape[:2])))
    u8 = np.rint(a * 255.0).astype(np.uint8).repeat(k, axis=0).repeat(k, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(path)
    return path


__all__ = ["DEFAULT_FIT", "FITS", "fit_array", "input_check", "load_photo", "save_input_png"]
