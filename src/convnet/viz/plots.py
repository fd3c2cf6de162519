"""The page's pictures as PNG files, drawn with Pillow alone (matplotlib is not a dependency).

- :func:`plot_filters`: the filters of every CONV layer (one tile per filter, its depth slices
  side by side; a first layer on RGB input drawn in colour).
- :func:`plot_activations`: every activation map of every layer for one image, with one colour
  scale per layer.
- :func:`plot_curves`: loss and accuracy per epoch from a run's metrics log.
- :func:`plot_confusion`: the confusion matrix, cells shaded by their share of the true class.

Each returns a ``PIL.Image.Image``; :func:`save_png` writes it. Colour maps are the page's:
viridis for values of one sign, blue-white-red centred on zero for signed ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from convnet.arith import fmt_shape
from convnet.errors import ConfigError
from convnet.net.sequential import Sequential

VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                   dtype=np.float64)
DIVERGING = np.array([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130],
                      [178, 24, 43]], dtype=np.float64)
BG = (255, 255, 255)
FG = (29, 36, 51)
MUTED = (110, 118, 135)
SERIES = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` (a scalable one since Pillow 10.1; a bitmap before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


# ------------------------------------------------------------------------------ colour maps
def colormap(values: np.ndarray, lo: float, hi: float, stops: np.ndarray) -> np.ndarray:
    """Map ``values`` linearly from ``[lo, hi]`` onto the colour ``stops``.

    Shape:
        values ``(...)`` -> ``(..., 3)`` uint8.
    """
    span = hi - lo if hi - lo > 1e-12 else 1.0
    t = np.clip((np.asarray(values, np.float64) - lo) / span, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(np.int64), len(stops) - 2)
    f = (t - i)[..., None]
    return np.round(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def layer_scale(values: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``(lo, hi, stops)`` shared by every map of a layer: symmetric blue-white-red around zero
    for signed values, viridis from min to max otherwise."""
    vmin, vmax = float(np.min(values)), float(np.max(values))
    if vmin < 0 < vmax:
        m = max(-vmin, vmax)
        return -m, m, DIVERGING
    if vmax - vmin < 1e-12:
        return vmin - 1.0, vmax + 1.0, VIRIDIS
    return vmin, vmax, VIRIDIS


def _upscale(tile: np.ndarray, target: int) -> np.ndarray:
    k = max(1, target // max(tile.shape[0], tile.shape[1]))
    return np.repeat(np.repeat(tile, k, axis=0), k, axis=1)


def _image_rgb(img: np.ndarray) -> np.ndarray:
    """``(H, W, D)`` in [0, 1] -> RGB uint8 (grey for D = 1, first channel for other D)."""
    x = np.clip(np.asarray(img, np.float64), 0, 1)
    rgb = x[..., :3] if x.shape[-1] == 3 else np.repeat(x[..., :1], 3, axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ layout
class _Sheet:
    """Sections stacked top to bottom, each a heading and a wrapped row of tiles."""

    def __init__(self, title: str, width: int = 900) -> None:
        self.title = title
        self.width = width
        self.sections: list[tuple[str, list[tuple[np.ndarray, str]], tuple | None]] = []

    def add(self, heading: str, tiles: list[tuple[np.ndarray, str]],
            scale: tuple[float, float, np.ndarray] | None = None) -> None:
        self.sections.append((heading, tiles, scale))

    def render(self) -> Image.Image:
        f_title, f_head, f_small = font(18), font(13), font(10)
        pad, gap = 14, 6
        y = pad + 28
        placements = []
        for heading, tiles, scale in self.sections:
            placements.append((pad, y, None, (heading, scale)))
            y += 20
            x, row_h = pad, 0
            for tile, label in tiles:
                h, w = tile.shape[:2]
                if x + w > self.width - pad and x > pad:
                    x, y = pad, y + row_h + gap + 12
                    row_h = 0
                placements.append((x, y, tile, label))
                x += w + gap
                row_h = max(row_h, h)
            y += row_h + 12 + 14
        img = Image.new("RGB", (self.width, y + pad), BG)
        draw = ImageDraw.Draw(img)
        draw.text((pad, pad), self.title, fill=FG, font=f_title)
        for x, yy, tile, label in placements:
            if tile is None:
                heading, scale = label
                draw.text((x, yy), heading, fill=FG, font=f_head)
                if scale is not None:
                    self._legend(draw, img, yy, scale, f_small)
                continue
            img.paste(Image.fromarray(tile), (x, yy))
            draw.rectangle((x - 1, yy - 1, x + tile.shape[1], yy + tile.shape[0]),
                           outline=(206, 212, 218))
            if label:
                draw.text((x, yy + tile.shape[0] + 1), label, fill=MUTED, font=f_small)
        return img

    def _legend(self, draw: ImageDraw.ImageDraw, img: Image.Image, y: int,
                scale: tuple[float, float, np.ndarray], f: Any) -> None:
        lo, hi, stops = scale
        bar_w = 120
        x0 = self.width - 14 - bar_w - 50
        bar = colormap(np.linspace(lo, hi, bar_w)[None, :].repeat(10, axis=0), lo, hi, stops)
        img.paste(Image.fromarray(bar), (x0, y + 3))
        draw.text((x0 - 6, y + 1), f"{lo:.3g}", fill=MUTED, font=f, anchor="ra")
        draw.text((x0 + bar_w + 6, y + 1), f"{hi:.3g}", fill=MUTED, font=f)


# ------------------------------------------------------------------------------ filters
def plot_filters(net: Sequential, layer: str | None = None, max_filters: int = 32,
                 max_slices: int = 8, tile: int = 36) -> Image.Image:
    """The filters of every CONV/DECONV layer (or only ``layer``), one colour scale per layer.

    A filter ``F x F x D`` is drawn as its first ``max_slices`` depth slices side by side; the
    first layer of a network on RGB input is drawn as colour images instead.
    """
    convs = [ly for ly in net.layers if ly.kind in ("CONV", "DECONV")]
    if layer is not None:
        convs = [ly for ly in convs if ly.name == layer]
        if not convs:
            names = ", ".join(ly.name for ly in net.layers if ly.kind in ("CONV", "DECONV"))
            raise ConfigError(f"no CONV layer named {layer!r}; CONV layers: {names or 'none'}")
    if not convs:
        raise ConfigError("this network has no CONV layer, so there are no filters to draw")
    sheet = _Sheet("filters")
    for ly in convs:
        W = np.asarray(ly.params["W"], np.float64)
        if ly.kind == "DECONV":
            W = W.transpose(3, 1, 2, 0)  # (D_in, F, F, K) -> filter-major (K, F, F, D_in)
        K, fh, fw, D = W.shape
        m = float(np.abs(W).max()) or 1.0
        scale = (-m, m, DIVERGING)
        rgb = D == 3 and ly is net.layers[0] and ly.kind == "CONV"
        tiles = []
        for k in range(min(K, max_filters)):
            if rgb:
                t = np.round(np.clip(0.5 + 0.5 * W[k] / m, 0, 1) * 255).astype(np.uint8)
                tiles.append((_upscale(t, tile), str(k)))
                continue
            # several slices per filter: smaller tiles, so a filter stays one readable row
            size = tile if D == 1 else max(tile * 2 // 3, fh)
            slices = [_upscale(colormap(W[k, :, :, d], *scale), size)
                      for d in range(min(D, max_slices))]
            sep = np.full((slices[0].shape[0], 4, 3), 255, np.uint8)
            row = np.concatenate([p for s in slices for p in (s, sep)][:-1], axis=1)
            tiles.append((row, str(k)))
        more = f", first {min(K, max_filters)} shown" if K > max_filters else ""
        depth = "" if rgb or D <= max_slices else f", first {max_slices} depth slices each"
        sheet.add(f"{ly.name}  {ly.to_spec()}: {K} filters of {fh}x{fw}x{D}{more}{depth}", tiles,
                  None if rgb else scale)
    return sheet.render()


# ---------------------------------------------------------------------------- activations
def plot_activations(net: Sequential, image: np.ndarray, max_maps: int = 16,
                     tile: int = 56, title: str = "activations") -> Image.Image:
    """Every layer's activation maps for one raw ``image`` ``(H, W, D)`` in [0, 1] (normalised
    with ``net.normalizer`` when the model has one), a shared colour scale per layer."""
    from convnet.viz.page import _normalize, layer_activations

    image = np.asarray(image, np.float32)
    if image.shape != tuple(net.input_shape):
        raise ConfigError(f"an image of shape {fmt_shape(image.shape)} cannot feed a network "
                          f"whose input is {fmt_shape(net.input_shape)}")
    acts = layer_activations(net, _normalize(net, image[None]))
    sheet = _Sheet(title)
    sheet.add(f"input {fmt_shape(image.shape)}", [(_upscale(_image_rgb(image), tile * 2), "")])
    for ly, a in zip(net.layers, acts, strict=True):
        a = a[0]
        scale = layer_scale(a)
        if a.ndim == 3:
            D = a.shape[2]
            tiles = [(_upscale(colormap(a[:, :, d], *scale), tile), str(d))
                     for d in range(min(D, max_maps))]
            more = f" (first {max_maps} of {D} maps)" if D > max_maps else ""
        else:
            n = a.shape[0]
            cell = max(2, min(24, 860 // max(n, 1)))
            strip = np.repeat(np.repeat(colormap(a[None, :], *scale), 14, axis=0), cell, axis=1)
            tiles, more = [(strip, "")], ""
        sheet.add(f"{ly.name}  {ly.to_spec()}  -> {fmt_shape(a.shape)}{more}", tiles, scale)
    return sheet.render()


# ---------------------------------------------------------------------------------- curves
def curve_extent(history: Sequence[Mapping[str, Any]], keys: Sequence[str], unit_range: bool
                 ) -> tuple[list[float], tuple[float, float], tuple[float, float]]:
    """Epochs, value range and epoch range of per-epoch curves (the PNG and the page's SVG).

    Accuracies (``unit_range``) keep the whole 0..1 scale; a flat curve or a single epoch get a
    range of 1 so nothing divides by zero."""
    epochs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    vals = [v for h in history for k in keys if (v := h.get(k)) is not None]
    lo, hi = min(vals), max(vals)
    if unit_range and hi <= 1.0:
        lo, hi = min(lo, 0.0), 1.0
    if hi - lo < 1e-12:
        hi = lo + 1.0
    e0, e1 = min(epochs), max(epochs)
    if e1 == e0:
        e1 = e0 + 1
    return epochs, (lo, hi), (e0, e1)


def _chart(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int],
           history: Sequence[Mapping[str, float]], keys: list[str], title: str,
           unit_range: bool) -> None:
    x0, y0, x1, y1 = box
    f, fs = font(12), font(10)
    L, B, T = 52, 30, 26
    px0, py0, px1, py1 = x0 + L, y0 + T, x1 - 10, y1 - B
    epochs, (lo, hi), (e0, e1) = curve_extent(history, keys, unit_range)

    def X(e: float) -> float:
        return px0 + (e - e0) / (e1 - e0) * (px1 - px0)

    def Y(v: float) -> float:
        return py1 - (v - lo) / (hi - lo) * (py1 - py0)

    draw.rectangle((px0, py0, px1, py1), outline=(200, 205, 212), fill=(251, 252, 253))
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        draw.line((px0, Y(v), px1, Y(v)), fill=(233, 236, 239))
        draw.text((px0 - 4, Y(v)), f"{v:.3g}", fill=MUTED, font=fs, anchor="rm")
    n_ticks = min(len(set(epochs)), 8)
    for t in range(n_ticks):
        e = e0 + (e1 - e0) * t / max(n_ticks - 1, 1)
        draw.text((X(e), py1 + 4), f"{e:.3g}", fill=MUTED, font=fs, anchor="ma")
    draw.text(((px0 + px1) / 2, y1 - 12), "epoch", fill=FG, font=fs, anchor="ma")
    draw.text((x0 + 4, y0 + 4), title, fill=FG, font=f)
    lx = x0 + 16 + int(draw.textlength(title, font=f))
    for j, k in enumerate(keys):
        c = SERIES[j % len(SERIES)]
        pts = [(X(e), Y(h[k])) for e, h in zip(epochs, history, strict=True) if k in h]
        if len(pts) > 1:
            draw.line(pts, fill=c, width=2)
        for px, py in pts:
            draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=c)
        draw.rectangle((lx, y0 + 8, lx + 9, y0 + 17), fill=c)
        draw.text((lx + 13, y0 + 6), k, fill=FG, font=fs)
        lx += 20 + int(draw.textlength(k, font=fs))


def plot_curves(history: Sequence[Mapping[str, float]]) -> Image.Image:
    """Loss (every field with "loss" in its name) and accuracy ("acc") per epoch, side by side.

    Raises :class:`ConfigError` when the log has no such field.
    """
    if not history:
        raise ConfigError("no metrics log: the run directory has no metrics.jsonl or "
                          "metrics.csv and the checkpoint holds no history")
    loss = sorted({k for h in history for k in h if "loss" in k.lower()})
    acc = sorted({k for h in history for k in h if "acc" in k.lower()})
    charts = [(loss, "loss", False), (acc, "accuracy", True)]
    charts = [c for c in charts if c[0]]
    if not charts:
        fields = sorted({k for h in history for k in h})
        raise ConfigError(f"the metrics log has no loss or accuracy field (fields: {fields})")
    w, h = 460, 300
    img = Image.new("RGB", (w * len(charts), h), BG)
    draw = ImageDraw.Draw(img)
    for i, (keys, title, unit) in enumerate(charts):
        _chart(draw, (i * w, 0, (i + 1) * w, h), history, keys, f"{title} per epoch", unit)
    return img


# ------------------------------------------------------------------------------ confusion
def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str = "confusion matrix"
                   ) -> Image.Image:
    """The confusion matrix (rows: true class, columns: predicted), each cell shaded by its
    share of the row: green on the diagonal, red off it."""
    cm = np.asarray(cm, np.int64)
    C = cm.shape[0]
    f, fs = font(12), font(11)
    names = [str(c) for c in classes]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(probe.textlength(n, font=fs) for n in names)) + 12
    cell = max(30, min(56, int(max(probe.textlength(str(cm.max()), font=fs), 20)) + 12))
    top = 60 + (label_w if max(len(n) for n in names) > 3 else 16)
    W = label_w + 50 + C * cell + 20
    H = top + C * cell + 40
    img = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(img)
    draw.text((12, 10), title, fill=FG, font=font(16))
    draw.text((label_w + 50, 34), "predicted ->", fill=MUTED, font=fs)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    x0, y0 = label_w + 50, top
    for j, n in enumerate(names):
        cx = x0 + j * cell + cell // 2
        if len(n) > 3:  # long names go vertical
            txt = Image.new("RGBA", (int(probe.textlength(n, font=fs)) + 4, 14), (0, 0, 0, 0))
            ImageDraw.Draw(txt).text((2, 0), n, fill=FG, font=fs)
            rot = txt.rotate(90, expand=True)
            img.paste(rot, (cx - 7, y0 - 6 - rot.size[1]), rot)
        else:
            draw.text((cx, y0 - 6), n, fill=FG, font=fs, anchor="md")
    for i in range(C):
        draw.text((x0 - 8, y0 + i * cell + cell // 2), names[i], fill=FG, font=fs, anchor="rm")
        for j in range(C):
            s = float(share[i, j])
            if i == j:
                a = 0.1 + 0.8 * s
                col = tuple(int(255 * (1 - a) + c * a) for c in (43, 138, 62))
            else:
                a = min(1.0, 1.6 * s)
                col = tuple(int(255 * (1 - a) + c * a) for c in (201, 42, 42))
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1)
            draw.rectangle(box, fill=col)
            lum = 0.299 * col[0] + 0.587 * col[1] + 0.114 * col[2]
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(int(cm[i, j])),
                      fill=(255, 255, 255) if lum < 128 else FG, font=f, anchor="mm")
    draw.text((8, y0 + C * cell // 2), "true", fill=MUTED, font=fs, anchor="lm")
    total = int(cm.sum())
    acc = float(np.trace(cm)) / total if total else math.nan
    draw.text((x0, y0 + C * cell + 12), f"accuracy {100 * acc:.2f}% on {total:,} images",
              fill=FG, font=fs)
    return img


def save_png(img: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``img`` as PNG at ``path`` (directory created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


__all__ = [
    "colormap", "layer_scale", "plot_activations", "plot_confusion", "plot_curves",
    "plot_filters", "save_png",
]
