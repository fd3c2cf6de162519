"""The page's pictures as PNG files, drawn with matplotlib (the Agg renderer: no display needed).

- :func:`plot_filters`: the filters of every CONV layer (one row per filter, its depth slices
  side by side with gaps between them; a first layer on RGB input drawn in colour).
- :func:`plot_activations`: every activation map of every layer for one image, one colour scale
  (and colour bar) per layer.
- :func:`plot_curves`: loss and accuracy per epoch from a run's metrics log (whole epochs on the
  x axis, round ticks, the accuracy axis zoomed to the data).
- :func:`plot_confusion`: the confusion matrix, cells shaded by their share of the true class.

Each returns a :class:`matplotlib.figure.Figure` (laid out with constrained layout; add to it as
to any matplotlib figure); :func:`save_png` writes it. The figures are made without
``pyplot``, so nothing here touches matplotlib's global state or opens a window. Colour maps are
the page's: viridis for values of one sign, blue-white-red centred on zero for signed ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LinearSegmentedColormap, PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from convnet.arith import fmt_shape
from convnet.errors import ConfigError
from convnet.net.graph import Graph
from convnet.viz.common import _normalize, curve_extent, fmt_tick, layer_activations, nice_ticks

VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                   dtype=np.float64)
DIVERGING = np.array([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130],
                      [178, 24, 43]], dtype=np.float64)
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
#: Resolution of the PNGs: a 10-inch-wide figure is 1000 pixels.
DPI = 100
#: Width of the sheets of maps (filters, activations), in inches.
SHEET_WIDTH = 10.0


# ------------------------------------------------------------------------------ colour maps
def colormap(values: np.ndarray, lo: float, hi: float, stops: np.ndarray) -> np.ndarray:
    """Map ``values`` linearly from ``[lo, hi]`` onto the colour ``stops`` (the page's scale,
    in pure NumPy).

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


def mpl_colormap(stops: np.ndarray, name: str = "convnet") -> LinearSegmentedColormap:
    """The colour ``stops`` (uint8 RGB rows) as a matplotlib colour map; gaps (NaN) are white."""
    cmap = LinearSegmentedColormap.from_list(name, np.asarray(stops, np.float64) / 255.0)
    return cmap.with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


# ------------------------------------------------------------------------------ mosaics
def _mosaic(tiles: Sequence[np.ndarray], cols: int, gap: int) -> tuple[np.ndarray, list]:
    """Equal-sized 2-D (or ``(h, w, 3)``) ``tiles`` in a grid of ``cols`` columns, ``gap``
    NaN pixels between them; returns the mosaic and each tile's ``(row, col)`` corner."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    extra = tiles[0].shape[2:]
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, *extra), np.nan)
    corners = []
    for n, t in enumerate(tiles):
        r, c = divmod(n, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y:y + h, x:x + w] = t
        corners.append((y, x))
    return out, corners


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _colorbar(owner: Any, im: Any, ax: Any, lo: float, hi: float, label: str | None = None
              ) -> Any:
    """A colour bar beside ``ax`` with round ticks inside ``[lo, hi]``, labelled alike."""
    ticks = nice_ticks(lo, hi, 5, inside=True)
    cbar = owner.colorbar(im, ax=ax, shrink=0.9, aspect=15, pad=0.01, ticks=ticks)
    cbar.ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _p, t=ticks: _minus(fmt_tick(v, t))))
    cbar.ax.tick_params(labelsize=8)
    if label:
        cbar.set_label(label, fontsize=9)
    return cbar


def _minus(text: str) -> str:
    return text.replace("-", "\u2212")  # matplotlib's own labels use the typographic minus


def _upsample(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


# ------------------------------------------------------------------------------ filters
def plot_filters(net: Graph, layer: str | None = None, max_filters: int = 32,
                 max_slices: int = 8) -> Figure:
    """The filters of every CONV/DECONV layer (or only ``layer``), one colour scale per layer.

    A filter ``F x F x D`` is drawn as one row: its first ``max_slices`` depth slices side by
    side, a white gap between slices and a wider one between filters, each row labelled with
    the filter's index and each column with the depth slice. Filters of one depth slice are
    laid out as a grid. The first layer of a network on RGB input is drawn as colour images
    (mid-grey is a weight of 0). The scale is symmetric around 0 (blue negative, red positive)
    with a colour bar.

    Raises :class:`~convnet.errors.ConfigError` when the network (or ``layer``) has no CONV.
    """
    convs = [ly for ly in net.layers if ly.weighted and ly.slides]   # CONV, DWCONV, DECONV
    if layer is not None:
        convs = [ly for ly in convs if ly.name == layer]
        if not convs:
            names = ", ".join(ly.name for ly in net.layers if ly.weighted and ly.slides)
            raise ConfigError(f"no CONV layer named {layer!r}; CONV layers: {names or 'none'}")
    if not convs:
        raise ConfigError("this network has no CONV layer, so there are no filters to draw")
    panels = [_filter_panel(net, ly, max_filters, max_slices) for ly in convs]
    # each layer's height follows its mosaic's aspect at the sheet's width
    heights = [0.6 + (SHEET_WIDTH - 1.6) * p["mosaic"].shape[0] / p["mosaic"].shape[1]
               for p in panels]
    heights = [min(max(h, 1.6), 9.0) for h in heights]
    fig = Figure(figsize=(SHEET_WIDTH, sum(heights) + 0.4), dpi=DPI, layout="constrained")
    fig.suptitle(f"filters of {len(convs)} CONV layer{'s' * (len(convs) > 1)}", fontsize=13)
    subs = fig.subfigures(len(panels), 1, height_ratios=heights, squeeze=False)[:, 0]
    cmap = mpl_colormap(DIVERGING, "diverging")
    for sub, p in zip(subs, panels, strict=True):
        ax = sub.subplots()
        sub.suptitle(p["title"], fontsize=10, x=0.01, ha="left")
        if p["rgb"]:
            img = np.nan_to_num(p["mosaic"], nan=1.0)
            ax.imshow(img, interpolation="nearest")
        else:
            im = ax.imshow(p["mosaic"], cmap=cmap, vmin=-p["m"], vmax=p["m"],
                           interpolation="nearest")
            _colorbar(sub, im, ax, -p["m"], p["m"], "weight")
        _bare(ax)
        for text, (y, x), kw in p["labels"]:
            ax.text(x, y, text, fontsize=7, color="#555", **kw)
    return fig


def _filter_panel(net: Graph, ly: Any, max_filters: int, max_slices: int
                  ) -> dict[str, Any]:
    W = np.asarray(ly.params["W"], np.float64)
    if ly.transposed:
        W = W.transpose(3, 1, 2, 0)  # (D_in, F, F, K) -> filter-major (K, F, F, D_in)
    K, fh, fw, D = W.shape
    m = float(np.abs(W).max()) or 1.0
    k_shown = min(K, max_filters)
    rgb = D == 3 and ly is net.layers[0] and not ly.transposed
    # upsample so that a gap of one pixel is a thin line next to a slice, not a slice's third
    u = max(1, int(np.ceil(12 / max(fh, fw))))
    labels: list[tuple[str, tuple[float, float], dict[str, Any]]] = []
    if rgb or D == 1:
        tiles = [_upsample(np.clip(0.5 + 0.5 * W[k] / m, 0, 1), u) if rgb
                 else _upsample(W[k, :, :, 0], u) for k in range(k_shown)]
        cols = min(k_shown, 16)
        mosaic, corners = _mosaic(tiles, cols, gap=max(2, u * fw // 3))
        for k, (y, x) in enumerate(corners):
            labels.append((str(k), (y - 0.8, x), {"va": "bottom", "ha": "left"}))
        layout = ""
    else:
        d_shown = min(D, max_slices)
        slice_gap, filter_gap = max(1, u // 3), max(3, u * fh // 2)
        # one row per filter: its slices, slice_gap apart; rows filter_gap apart; long lists
        # of filters wrap into side-by-side blocks, as many as keep the sheet about twice as
        # wide as high
        row_w = d_shown * u * fw + (d_shown - 1) * slice_gap
        row_h = u * fh
        label_w = 3 * u * fw // 2 if u * fw >= 8 else 12
        block_w = label_w + row_w

        def aspect(b: int) -> float:
            per = -(-k_shown // b)
            return (b * block_w) / (per * (row_h + filter_gap))

        blocks = min(range(1, min(k_shown, 6) + 1), key=lambda b: abs(np.log(aspect(b) / 2)))
        per_block = -(-k_shown // blocks)
        H = per_block * row_h + (per_block - 1) * filter_gap
        Wd = blocks * block_w + (blocks - 1) * 2 * filter_gap
        mosaic = np.full((H, Wd), np.nan)
        for k in range(k_shown):
            b, r = divmod(k, per_block)
            y0 = r * (row_h + filter_gap)
            x0 = b * (block_w + 2 * filter_gap) + label_w
            for d in range(d_shown):
                x = x0 + d * (u * fw + slice_gap)
                mosaic[y0:y0 + row_h, x:x + u * fw] = _upsample(W[k, :, :, d], u)
            labels.append((f"{k}", (y0 + row_h / 2, x0 - 2), {"va": "center", "ha": "right"}))
        for b in range(blocks):
            for d in range(d_shown):
                x = b * (block_w + 2 * filter_gap) + label_w + d * (u * fw + slice_gap) \
                    + u * fw / 2
                labels.append((f"d{d}", (-1.0, x), {"va": "bottom", "ha": "center"}))
        layout = (" · one row per filter, its depth slices d0.. left to right"
                  + (f" (first {d_shown} of {D})" if D > d_shown else ""))
    more = f", first {k_shown} shown" if K > k_shown else ""
    title = (f"{ly.name}  {ly.to_spec()}: {K} filters of {fh}x{fw}x{D}{more}{layout}"
             + (" · colour: RGB, grey = 0" if rgb else ""))
    return {"mosaic": mosaic, "m": m, "rgb": rgb, "title": title, "labels": labels}


# ---------------------------------------------------------------------------- activations
def plot_activations(net: Graph, image: np.ndarray, max_maps: int = 16,
                     title: str = "activations") -> Figure:
    """Every layer's activation maps for one raw ``image`` ``(H, W, D)`` in ``[0, 1]``
    (normalised with ``net.normalizer`` when the model has one).

    One row per layer: up to ``max_maps`` maps in a grid with one colour scale and colour bar
    per layer (blue-white-red around 0 for signed values, viridis otherwise); a vector (an FC
    output) as bars, or as a strip when it is long. The input image comes first.

    Raises :class:`~convnet.errors.ConfigError` when the image does not fit the network.
    """
    image = np.asarray(image, np.float32)
    if image.shape != tuple(net.input_shape):
        raise ConfigError(f"an image of shape {fmt_shape(image.shape)} cannot feed a network "
                          f"whose input is {fmt_shape(net.input_shape)}")
    if max_maps < 1:
        raise ConfigError(f"max_maps={max_maps}: draw at least 1 map per layer")
    acts = [a[0] for a in layer_activations(net, _normalize(net, image[None]))]
    cols = min(max_maps, 16)
    heights = [1.8]
    for a in acts:
        if a.ndim == 3:
            rows = -(-min(a.shape[2], max_maps) // cols)
            tile_w = (SHEET_WIDTH - 1.4) / cols
            heights.append(0.45 + rows * tile_w * a.shape[0] / a.shape[1])
        else:
            heights.append(1.3)
    fig = Figure(figsize=(SHEET_WIDTH, sum(heights) + 0.4), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=13)
    subs = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]

    ax = subs[0].subplots()
    rgb = np.clip(image, 0, 1)
    if rgb.shape[2] == 3:
        ax.imshow(rgb, interpolation="nearest")
    else:
        ax.imshow(rgb[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _bare(ax)
    subs[0].suptitle(f"input {fmt_shape(image.shape)}"
                     + (" (first channel)" if image.shape[2] not in (1, 3) else ""),
                     fontsize=10, x=0.01, ha="left")
    for sub, ly, a in zip(subs[1:], net.layers, acts, strict=True):
        lo, hi, stops = layer_scale(a)
        cmap = mpl_colormap(stops)
        ax = sub.subplots()
        if a.ndim == 3:
            D = a.shape[2]
            shown = min(D, max_maps)
            gap = max(1, a.shape[1] // 12)
            mosaic, corners = _mosaic([a[:, :, d] for d in range(shown)], min(shown, cols), gap)
            # pad the grid to the full width so every layer's tiles have the same size
            want = cols * a.shape[1] + (cols - 1) * gap
            if mosaic.shape[1] < want:
                mosaic = np.pad(mosaic, ((0, 0), (0, want - mosaic.shape[1])),
                                constant_values=np.nan)
            # "auto": the row's height was chosen for square tiles, and a fixed aspect would
            # let the layout move the colour bar away from (or off) the maps
            im = ax.imshow(mosaic, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                           aspect="auto")
            _bare(ax)
            if a.shape[1] >= 6:
                for d, (y, x) in enumerate(corners):
                    ax.text(x + 0.3, y + 0.3, str(d), fontsize=6, color="#333", va="top",
                            ha="left", bbox={"boxstyle": "square,pad=0.05", "fc": "white",
                                             "ec": "none", "alpha": 0.6})
            more = f" (maps 0-{shown - 1} of {D})" if D > shown else ""
        else:
            n = a.shape[0]
            if n <= 128:
                colours = cmap((a - lo) / (hi - lo))
                ax.bar(np.arange(n), a, color=colours, width=0.85)
                ax.axhline(0, color="#888", linewidth=0.6)
                ax.set_xlim(-0.7, n - 0.3)
                names = getattr(net, "classes", None)
                if ly is net.layers[-1] and n <= 30:  # the class scores: every class named
                    names = names if names is not None and len(names) == n else range(n)
                    ax.set_xticks(np.arange(n), labels=[str(c) for c in names],
                                  rotation=30 if n > 10 else 0, ha="right" if n > 10 else "center")
                else:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n, 12),
                                                           steps=[1, 2, 5, 10]))
                ax.tick_params(labelsize=7)
                for s in ("top", "right"):
                    ax.spines[s].set_visible(False)
                im = None
            else:
                im = ax.imshow(a[None, :], cmap=cmap, vmin=lo, vmax=hi, aspect="auto",
                               interpolation="nearest")
                ax.set_yticks([])
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, steps=[1, 2, 5, 10]))
                ax.tick_params(labelsize=7)
            more = ""
        if im is not None:
            _colorbar(sub, im, ax, lo, hi)
        sub.suptitle(f"{ly.name}  {ly.to_spec()}  -> {fmt_shape(a.shape)}{more}", fontsize=10,
                     x=0.01, ha="left")
    return fig


# ---------------------------------------------------------------------------------- curves
def plot_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss (every field with "loss" in its name) and accuracy ("acc") per epoch, side by side.

    Whole epochs on the x axis, round ticks (:func:`~convnet.viz.common.nice_ticks`, the page's
    rule), accuracies as percentages on an axis zoomed to the data rather than 0-100%, and the
    best validation accuracy marked.

    Raises :class:`~convnet.errors.ConfigError` when the log has no such field.
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
    fig = Figure(figsize=(5.0 * len(charts), 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(charts), squeeze=False)[0]
    for ax, (keys, name, unit) in zip(axes, charts, strict=True):
        epochs, (lo, hi), _ = curve_extent(history, keys, unit)
        percent = unit and hi <= 1.0
        for j, k in enumerate(keys):
            pts = [(e, h[k]) for e, h in zip(epochs, history, strict=True) if k in h]
            xs, ys = zip(*pts, strict=True)
            label, c = k, SERIES[j % len(SERIES)]
            if unit and k.startswith("val_"):
                # the epoch a checkpoint's best.npz comes from: ringed, and said in the legend
                i = int(np.argmax(ys))
                best = f"{100 * ys[i]:.2f}%" if percent else f"{ys[i]:.4f}"
                label = f"{k} (best {best}, epoch {xs[i]:.0f})"
                ax.plot([xs[i]], [ys[i]], "o", markersize=9, markerfacecolor="none",
                        markeredgecolor=c, markeredgewidth=1.4, clip_on=False)
            ax.plot(xs, ys, "-o", color=c, markersize=3.5, linewidth=1.8, label=label,
                    clip_on=False)
        ticks = nice_ticks(lo, hi, 6)
        ax.set_ylim(lo, hi)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda v, _pos, t=ticks, p=percent: _minus(fmt_tick(v, t, p))))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, steps=[1, 2, 5, 10],
                                                     min_n_ticks=1))
        e0, e1 = min(epochs), max(epochs)
        pad = max(0.3, 0.03 * (e1 - e0))
        ax.set_xlim(e0 - pad, e1 + pad)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(f"{name} per epoch", fontsize=11)
        ax.grid(True, color="#e6e8eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for s in ("top", "right"):
            ax.spines[s].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------ confusion
def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str = "confusion matrix"
                   ) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), each cell shaded by its
    share of the true class's row (colour bar: 0-100% of the row) and labelled with its count.
    Every predicted-class label is rotated alike; the accuracy and the image count are in the
    title.
    """
    cm = np.asarray(cm, np.int64)
    C = cm.shape[0]
    names = [str(c) for c in classes]
    if len(names) != C:
        raise ConfigError(f"plot_confusion: {len(names)} class names for a {C}x{C} matrix")
    total = int(cm.sum())
    acc = float(np.trace(cm)) / total if total else float("nan")
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(14.0, max(4.5, 0.55 * C + 2.5))
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    # a square-root scale: a 10% confusion is a clear mid-blue, not a tint lost beside the
    # diagonal's 90%
    norm = PowerNorm(0.5, vmin=0.0, vmax=1.0)
    im = ax.imshow(share, cmap="Blues", norm=norm, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, shrink=0.8, aspect=30, pad=0.02,
                        ticks=[0, 0.02, 0.1, 0.25, 0.5, 0.75, 1.0])
    cbar.set_label("share of the true class (square-root scale)")
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{100 * v:.0f}%"))
    ax.set_xticks(np.arange(C), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(C), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\naccuracy {100 * acc:.2f}% on {total:,} images", fontsize=11)
    if C <= 30:
        size = 9 if C <= 12 else 7
        for i in range(C):
            for j in range(C):
                if cm[i, j] == 0 and i != j:
                    continue  # empty cells stay blank: the mistakes stand out
                ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", fontsize=size,
                        color="white" if share[i, j] > 0.4 else "#1d2433")
    ax.set_xticks(np.arange(C + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(C + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def save_png(fig: Figure | Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` (a matplotlib figure, or a ``PIL.Image.Image``) as PNG at ``path`` (its
    directory is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, Figure):
        fig.savefig(path, format="png", dpi=fig.dpi, facecolor="white")
    else:
        fig.save(path, format="PNG")
    return path


# curve_extent is imported above for code that took it from here; it lives in viz.common
__all__ = [
    "DIVERGING", "VIRIDIS", "colormap", "layer_scale", "mpl_colormap",
    "plot_activations", "plot_confusion", "plot_curves", "plot_filters", "save_png",
]
