"""Segmentation with transposed convolution: an encoder-decoder, mean IoU, and mask pictures.

The encoder (CONV/POOL) shrinks a 32x64 canvas to 8x16 while dilated CONVs widen what each unit
sees to a whole item (each output pixel's receptive field is 77 pixels) without shrinking
further (BN after each, which made the pixel classes learn much sooner); two stride-2 DECONVs
bring the volume back up to 32x64, and a final 1x1 CONV gives one score per class at every
pixel (the zoo's ``segnet``). The loss is the softmax cross-entropy averaged over pixels
(:func:`convnet.ops.loss.softmax_cross_entropy` on ``(N, H, W, C)`` scores and ``(N, H, W)``
labels). Recipe and measurements: ``bench/bench_segmentation.py``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convnet.errors import ShapeError
from convnet.spec.zoo import ZOO
from convnet.train.metrics import iou_per_class

#: the encoder-decoder for the default 32x64 Fashion-MNIST canvases (11 pixel classes): the
#: zoo's ``segnet``
SEGNET = ZOO["segnet"]

#: a smaller version for tests (same 32x64 input)
SEGNET_SMALL = """INPUT(32x64x1)
    -> CONV(8,F=3,P=1) -> RELU -> POOL
    -> CONV(16,F=3,P=1) -> RELU -> POOL
    -> CONV(24,F=3,P=4,dilation=4) -> RELU
    -> DECONV(16,F=2,S=2) -> RELU
    -> DECONV(8,F=2,S=2) -> RELU
    -> CONV(11,F=1)"""


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 pixel counts, rows true class, columns predicted (one bincount)."""
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ShapeError(f"labels {np.shape(y_true)} and predictions {np.shape(y_pred)} differ")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def mean_iou(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[float,
                                                                                np.ndarray]:
    """Mean IoU over the classes present (labels or predictions), background included, and the
    per-class IoU.

    Shape:
        ``y_true``, ``y_pred``: the same shape, e.g. ``(N, H, W)``; returns ``(float, (C,))``.

    >>> y = np.array([[0, 0, 1, 1]])
    >>> round(mean_iou(y, np.array([[0, 1, 1, 1]]), 2)[0], 3)  # (1/2 + 2/3) / 2
    0.583
    """
    ious = iou_per_class(confusion(y_true, y_pred, num_classes))
    return float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else float("nan"), ious


def evaluate_segmentation(net, data, batch_size: int = 64, normalizer=None) -> dict:
    """Pixel accuracy, mean IoU and per-class IoU of ``net`` on a segmentation data set.

    Returns ``{"pixel_accuracy", "mean_iou", "iou" (C,), "predictions" (N, H, W)}``.
    """
    x, y = np.asarray(data.x), np.asarray(data.y)
    C = int(net.output_shape[-1])
    preds = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        if normalizer is not None:
            xb = (xb - normalizer["mean"]) / normalizer["std"]
        preds.append(net.forward(xb).argmax(axis=-1))
    pred = np.concatenate(preds)
    cm = confusion(y, pred, C)
    ious = iou_per_class(cm)
    return {"pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
            "mean_iou": float(np.nanmean(ious)), "iou": ious, "predictions": pred}


# one colour per class: black background, then ten distinct colours
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
], np.uint8)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 RGB through :data:`PALETTE` (classes
    beyond it reuse its colours)."""
    mask = np.asarray(mask, np.int64)
    return PALETTE[mask % len(PALETTE)]


def save_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a predicted mask as a colour PNG (one colour per class, background black)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colorize_mask(mask)).save(path)
    return path


def save_legend_png(classes: list[str], path: str | os.PathLike, swatch: int = 16) -> Path:
    """Write the palette's legend: one row per class, a colour swatch and the class name."""
    from PIL import Image, ImageDraw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = colorize_mask(np.arange(len(classes)))
    width = swatch + 8 + 7 * max(len(c) for c in classes) + 8  # the default font: ~7 px a char
    img = Image.new("RGB", (width, (swatch + 4) * len(classes) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (name, rgb) in enumerate(zip(classes, colours, strict=True)):
        top = 4 + i * (swatch + 4)
        draw.rectangle([4, top, 4 + swatch - 1, top + swatch - 1], fill=tuple(int(v) for v in rgb),
                       outline=(128, 128, 128))
        draw.text((swatch + 10, top + 2), f"{i} {name}", fill=(0, 0, 0))
    img.save(path)
    return path


__all__ = ["PALETTE", "SEGNET", "SEGNET_SMALL", "colorize_mask", "confusion",
           "evaluate_segmentation", "iou_per_class", "mean_iou", "save_legend_png",
           "save_mask_png"]
