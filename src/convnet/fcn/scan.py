"""``scan``: a trained classifier over a larger image, as maps of class probabilities.

:func:`scan_image` returns the score map (one pass of the converted network, see
:mod:`convnet.fcn.maps`); :func:`heat_map` spreads a map back over the image's pixels (each
pixel gets the mean probability of the crops that contain it); :func:`overlay` blends it over
the image as an RGB picture; :func:`score_table` writes the map as text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convnet.arith import Pair, fmt_shape
from convnet.errors import ShapeError
from convnet.fcn import maps
from convnet.net.sequential import Sequential
from convnet.ops.loss import softmax


@dataclass
class Scan:
    """The result of :func:`scan_image`.

    Attributes:
        image: the image as scanned (after any crop), ``(H, W, D)`` float32 in ``[0, 1]``.
        scores: class scores, ``(rows, cols, K)``; ``probs``: their softmax over K.
        stride: pixels between neighbouring crops (rows, cols); ``crop``: the crop size.
        notes: what was done to the image to fit the network.
    """

    image: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    stride: Pair
    crop: Pair
    notes: list[str]


def largest_fit(net: Sequential, hw: Pair) -> Pair:
    """The largest ``(H, W)`` at most ``hw`` that the fully convolutional ``net`` accepts;
    :class:`ShapeError` when the image is smaller than the network's input."""
    fcn = maps.as_fully_convolutional(net)
    out = []
    for axis in range(2):
        sizes = [s for s in maps.sizes_that_fit(fcn, axis, upto=hw[axis])]
        if not sizes:
            raise ShapeError(
                f"the image is {hw[0]}x{hw[1]}, smaller than the network's "
                f"{fmt_shape(fcn.input_shape[:2])} input along {('rows', 'cols')[axis]}: "
                "scan needs an image at least as large as what the classifier was trained on"
            )
        out.append(sizes[-1])
    return out[0], out[1]


def read_image(path: str | os.PathLike, depth: int) -> np.ndarray:
    """An image file at its own size as ``(H, W, depth)`` float32 in ``[0, 1]``."""
    from convnet.data import load_image
    from convnet.data.images import open_image

    h, w = open_image(Path(path)).size[::-1]  # the one place images are opened and checked
    image, _ = load_image(path, (h, w, depth))
    return image


def scan_image(net: Sequential, image: np.ndarray, normalizer: dict | None = None,
               crop: bool = True) -> Scan:
    """Score every crop of ``image`` in one pass of ``net``'s fully convolutional form.

    ``image`` ``(H, W, D)`` in ``[0, 1]``; ``normalizer`` ``{"mean", "std"}`` as saved with the
    model. With ``crop`` an image whose size the strides do not fit is cut to the largest size
    that fits (bottom and right edges dropped, said in ``notes``); otherwise that is a
    :class:`ShapeError` listing the sizes that fit.

    Shape:
        ``scores``, ``probs``: ``(rows, cols, K)``, ``rows = (H - H0)/T + 1``.
    """
    fcn = maps.as_fully_convolutional(net)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ShapeError(f"scan: expected one image (H, W, D), received shape {image.shape}")
    notes = []
    if crop:
        H, W = largest_fit(fcn, image.shape[:2])
        if (H, W) != image.shape[:2]:
            notes.append(f"cropped {image.shape[0]}x{image.shape[1]} -> {H}x{W} (the largest "
                         f"size the strides fit; bottom/right edges dropped)")
            image = image[:H, :W]
    x = image[None]
    if normalizer is not None:
        x = (x - np.asarray(normalizer["mean"], np.float32)) / np.asarray(normalizer["std"],
                                                                          np.float32)
    scores = maps.score_map(fcn, x)[0]
    return Scan(image=image, scores=scores, probs=softmax(scores), stride=maps.total_stride(fcn),
                crop=(fcn.input_shape[0], fcn.input_shape[1]), notes=notes)


def coverage(size: int, n: int, stride: int, crop: int) -> np.ndarray:
    """``(size, n)`` 0/1 matrix: pixel ``y`` lies in crop ``i`` (rows ``i*stride .. +crop-1``)."""
    y = np.arange(size)[:, None]
    start = np.arange(n)[None, :] * stride
    return ((y >= start) & (y < start + crop)).astype(np.float32)


def heat_map(values: np.ndarray, image_hw: Pair, stride: Pair, crop: Pair) -> np.ndarray:
    """Each pixel's mean of ``values`` over the crops that contain it (0 where none does).

    Computed as ``A @ V @ B.T / (A @ 1 @ B.T)`` with the coverage matrices ``A`` (rows) and
    ``B`` (cols): two small matrix products, no loop over pixels or crops.

    Shape:
        ``values (rows, cols)`` -> ``(H, W)``.
    """
    A = coverage(image_hw[0], values.shape[0], stride[0], crop[0])
    B = coverage(image_hw[1], values.shape[1], stride[1], crop[1])
    total = A @ values.astype(np.float32) @ B.T
    count = A @ np.ones(values.shape, np.float32) @ B.T
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


# a "hot" colour map: black -> red -> yellow -> white
_HOT = np.array([[0, 0, 0], [230, 0, 0], [255, 210, 0], [255, 255, 255]], np.float32)


def colorize(heat: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` -> RGB uint8 through a black-red-yellow-white map. ``(H, W, 3)``."""
    t = np.clip(heat, 0.0, 1.0) * (len(_HOT) - 1)
    knots = np.arange(len(_HOT))
    rgb = np.stack([np.interp(t, knots, _HOT[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The heat map (``[0, 1]``) blended over the image (``[0, 1]``, 1 or 3 channels) where it
    is strong: ``out = (1 - alpha*heat)*image + alpha*heat*colour``. ``(H, W, 3)`` uint8."""
    base = np.asarray(image, np.float32)
    base = np.repeat(base, 3, axis=-1) if base.shape[-1] == 1 else base[..., :3]
    w = (alpha * np.clip(heat, 0, 1))[..., None]
    out = (1 - w) * base * 255.0 + w * colorize(heat).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def score_table(scan: Scan, classes: Sequence[str]) -> str:
    """The map as text: the most likely class per unit, then one probability grid per class."""
    rows, cols, K = scan.probs.shape
    width = max(4, max((len(c) for c in classes), default=4))
    lines = [f"score map {rows}x{cols}x{K}: one unit per {scan.crop[0]}x{scan.crop[1]} crop, "
             f"{scan.stride[0]}x{scan.stride[1]} pixels apart; unit (i, j) scores the crop at "
             f"rows {scan.stride[0]}i.., cols {scan.stride[1]}j..", "",
             "most likely class per unit:"]
    best = scan.probs.argmax(axis=-1)
    for i in range(rows):
        lines.append("  " + " ".join(f"{classes[best[i, j]][:width]:>{width}}"
                                      for j in range(cols)))
    for k in range(K):
        lines += ["", f"P({classes[k]}) (max {scan.probs[..., k].max():.3f}):"]
        for i in range(rows):
            lines.append("  " + " ".join(f"{scan.probs[i, j, k]:.3f}" for j in range(cols)))
    return "\n".join(lines) + "\n"


def safe_name(text: str) -> str:
    """A class name as a file-name part: ``"T-shirt/top" -> "T-shirt_top"``."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")
    return keep or "class"


def write_scan(scan: Scan, classes: Sequence[str], out_dir: str | os.PathLike,
               which: Sequence[int] | None = None) -> list[Path]:
    """Write ``scores.npy``, ``probs.npy``, ``scores.txt`` and ``heat_<k>_<class>.png`` for the
    classes ``which`` (default: all) into ``out_dir``; returns the paths written."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "scores.npy", out / "probs.npy", out / "scores.txt"]
    np.save(paths[0], scan.scores)
    np.save(paths[1], scan.probs)
    paths[2].write_text(score_table(scan, classes), encoding="utf-8")
    hw = scan.image.shape[:2]
    for k in which if which is not None else range(scan.probs.shape[-1]):
        heat = heat_map(scan.probs[..., k], hw, scan.stride, scan.crop)
        path = out / f"heat_{k}_{safe_name(classes[k])}.png"
        Image.fromarray(overlay(scan.image, heat)).save(path)
        paths.append(path)
    return paths


__all__ = ["Scan", "colorize", "coverage", "heat_map", "largest_fit", "overlay", "read_image",
           "scan_image", "score_table", "write_scan"]
