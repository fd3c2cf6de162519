"""``scan``: a trained classifier over a larger image, as maps of class probabilities.

:func:`scan_image` returns the score map (one pass of the converted network, see
:mod:`convnet.fcn.maps`); :func:`class_summary` says per class where it is most likely, how
likely, and on what share of the crops it wins; :func:`overview_figure` draws the input, every
class's map and the winning class of every crop in one figure; :func:`heat_map` spreads a map
back over the image's pixels (each pixel gets the mean probability of the crops that contain
it) and :func:`overlay` blends it over the image as an RGB picture; :func:`score_table` writes
the map as text.
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
    """An image file at its own size as ``(H, W, depth)`` float32 in ``[0, 1]`` (decoded once:
    :func:`~convnet.data.images.open_image` checks and decodes it, the conversion reuses it)."""
    from convnet.data.images import _convert, open_image

    img = open_image(Path(path))  # the one place images are opened and checked
    image, _ = _convert(img, (img.height, img.width), depth, Path(path))
    return image


#: the default limit on the activations one scan may hold (``scan_image(max_bytes=...)``,
#: ``convnet scan --max-memory``): a 40-megapixel photo through VGG16's first CONV alone
#: makes 10 GB of activations
SCAN_MEMORY = 4 * 2**30


def scan_memory(net: Sequential, hw: Pair) -> tuple[int, str, int]:
    """``(bytes, layer, bytes of that layer)``: the activations a scan of an ``hw`` image holds
    (the input and every layer's output, float32 or the network's dtype, as
    :func:`convnet.arith.activation_bytes` counts them), and the largest one, from the shapes
    alone: nothing is allocated."""
    from convnet import arith

    fcn = maps.as_fully_convolutional(net)
    shapes = maps.check_input_size(fcn, (*hw, fcn.input_shape[2]))
    item = np.dtype(getattr(fcn, "dtype", np.float32)).itemsize
    sizes = [arith.activation_bytes(s, itemsize=item) for s in shapes]
    big = int(np.argmax(sizes))
    name = f"{fcn.layers[big].name} ({fmt_shape(shapes[big])})"  # one shape per layer
    total = arith.activation_bytes((*hw, fcn.input_shape[2]), itemsize=item) + sum(sizes)
    return total, name, sizes[big]


def check_scan_memory(net: Sequential, hw: Pair, max_bytes: int = SCAN_MEMORY) -> None:
    """:class:`ShapeError` when a scan of an ``hw`` image would hold more than ``max_bytes``
    of activations (:func:`scan_memory`), before anything runs."""
    from convnet import arith

    total, layer, most = scan_memory(net, hw)
    if total > max_bytes:
        raise ShapeError(
            f"scan: a {hw[0]}x{hw[1]} image through this network needs about "
            f"{arith.fmt_bytes(total)} of activations ({arith.fmt_bytes(most)} in {layer} "
            f"alone), more than the limit of {arith.fmt_bytes(max_bytes)}: scan a smaller "
            "image (resize or cut it), or raise the limit (convnet scan --max-memory SIZE, "
            "scan_image(..., max_bytes=...)) if this computer has the memory"
        )


def scan_image(net: Sequential, image: np.ndarray, normalizer: dict | None = None,
               crop: bool = True, max_bytes: int = SCAN_MEMORY) -> Scan:
    """Score every crop of ``image`` in one pass of ``net``'s fully convolutional form.

    ``image`` ``(H, W, D)`` in ``[0, 1]``; ``normalizer`` ``{"mean", "std"}`` as saved with the
    model. With ``crop`` an image whose size the strides do not fit is cut to the largest size
    that fits (bottom and right edges dropped, said in ``notes``); otherwise that is a
    :class:`ShapeError` listing the sizes that fit. A scan whose activations would exceed
    ``max_bytes`` (:func:`scan_memory`, from the shapes) is refused with an
    :class:`ShapeError` before it runs.

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
    check_scan_memory(fcn, image.shape[:2], max_bytes)
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


@dataclass
class ClassSummary:
    """One class's place in a scan (see :func:`class_summary`).

    Attributes:
        index, name: the class.
        best: its highest probability over all crops; ``unit``: the map unit ``(i, j)`` where
            (the first, row by row, on a tie); ``rows``, ``cols``: that crop's pixel rows and
            columns, first and last inclusive.
        wins: how many crops give this class their highest probability; ``share``: ``wins``
            over the number of crops.
    """

    index: int
    name: str
    best: float
    unit: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    wins: int
    share: float


def class_summary(scan: Scan, classes: Sequence[str]) -> list[ClassSummary]:
    """Per class: its best crop and probability there, and the share of crops where it wins;
    ordered by share of wins, then by best probability (the classes the image is mostly made
    of first).

    >>> import numpy as np
    >>> p = np.array([[[0.9, 0.1], [0.4, 0.6]]])                  # a 1x2 map of 2 classes
    >>> s = Scan(np.zeros((8, 12, 1)), np.log(p), p, (4, 4), (8, 8), [])
    >>> [(c.name, c.best, c.unit, c.cols, c.share) for c in class_summary(s, ["a", "b"])]
    [('a', 0.9, (0, 0), (0, 7), 0.5), ('b', 0.6, (0, 1), (4, 11), 0.5)]
    """
    rows, cols, K = scan.probs.shape
    if len(classes) != K:
        raise ShapeError(f"class_summary: {len(classes)} class names for a map of {K} classes")
    flat = scan.probs.reshape(-1, K)
    where = flat.argmax(axis=0)                                   # first best, row by row
    wins = np.bincount(flat.argmax(axis=1), minlength=K)
    out = []
    for k in range(K):
        i, j = divmod(int(where[k]), cols)
        r0, c0 = i * scan.stride[0], j * scan.stride[1]
        out.append(ClassSummary(k, str(classes[k]), float(flat[where[k], k]), (i, j),
                                (r0, r0 + scan.crop[0] - 1), (c0, c0 + scan.crop[1] - 1),
                                int(wins[k]), float(wins[k] / (rows * cols))))
    out.sort(key=lambda c: (-c.wins, -c.best, c.index))
    return out


def summary_text(scan: Scan, classes: Sequence[str], limit: int | None = None) -> str:
    """The scan in a few lines: the map's geometry, then one line per class (its share of the
    crops it wins, its best probability and where), best first; ``limit`` lines at most."""
    rows, cols, K = scan.probs.shape
    h, w = scan.image.shape[:2]
    n = rows * cols
    lines = [f"{h}x{w} image -> {rows}x{cols} map of {K} classes: {n} crops of "
             f"{scan.crop[0]}x{scan.crop[1]}, {scan.stride[0]}x{scan.stride[1]} pixels apart, "
             "in one pass", ""]
    summary = class_summary(scan, classes)
    shown = summary if limit is None else summary[:limit]
    width = max(5, max(len(c.name) for c in shown))
    lines.append(f"  {'class':<{width}}  {'wins':>15}  {'best P':>6}  best crop (pixel rows, cols)")
    for c in shown:
        wins = f"{100 * c.share:5.1f}% ({c.wins}/{n})"
        lines.append(f"  {c.name:<{width}}  {wins:>15}  {c.best:6.3f}  rows {c.rows[0]}-"
                     f"{c.rows[1]}, cols {c.cols[0]}-{c.cols[1]} (unit {c.unit[0]},{c.unit[1]})")
    if len(shown) < len(summary):
        lines.append(f"  ... and {len(summary) - len(shown)} classes that win no crop and are "
                     "less likely everywhere")
    lines.append("")
    lines.append("wins: the share of crops whose most likely class it is; best P: the class's "
                 "highest probability in any crop")
    return "\n".join(lines) + "\n"


def score_table(scan: Scan, classes: Sequence[str]) -> str:
    """The map as text: the summary (:func:`summary_text`), the most likely class per unit,
    then one probability grid per class."""
    rows, cols, K = scan.probs.shape
    width = max(4, max((len(c) for c in classes), default=4))
    lines = [summary_text(scan, classes),
             f"score map {rows}x{cols}x{K}: one unit per {scan.crop[0]}x{scan.crop[1]} crop, "
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


# ------------------------------------------------------------------------ the overview figure
def _unit_extent(scan: Scan) -> tuple[float, float, float, float]:
    """Where the map's units sit on the image, for ``imshow(extent=...)``: unit (i, j) is drawn
    as the stride-sized block centred on its crop's centre, so the blocks tile the part of the
    image the crop centres cover (the margins of crop/2 stay the picture)."""
    rows, cols, _ = scan.probs.shape
    (sr, sc), (cr, cc) = scan.stride, scan.crop
    top = (cr - 1) / 2 - sr / 2
    left = (cc - 1) / 2 - sc / 2
    return left, left + cols * sc, top + rows * sr, top


def _pct(share: float) -> str:
    return "<1%" if 0 < share < 0.005 else f"{100 * share:.0f}%"


def _grey(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, np.float32)
    if x.shape[-1] == 3:
        return x @ np.array([0.299, 0.587, 0.114], np.float32)
    return x[..., 0]


def overview_figure(scan: Scan, classes: Sequence[str], which: Sequence[int] | None = None,
                    title: str | None = None):  # noqa: ANN201 - matplotlib is imported lazily
    """One figure of the whole scan: the input image; the arg-max class map (each crop's most
    likely class, at the crop's centre, over the image) with a legend of the classes and their
    share of the crops; then each class of ``which`` (default: all) as its probability map
    upscaled onto the image, named with its best probability, its best crop outlined, the
    image's outline drawn over it, and one colour bar (probability 0-1) for them all.

    Returns a :class:`matplotlib.figure.Figure`; :func:`write_scan` saves it as ``scan.png``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    rows, cols, K = scan.probs.shape
    which = list(range(K)) if which is None else [int(k) for k in which]
    summary = {c.index: c for c in class_summary(scan, classes)}
    h, w = scan.image.shape[:2]
    grey = _grey(scan.image)
    extent = _unit_extent(scan)
    ncols = 5 if len(which) > 4 else max(len(which), 2)
    nrows = -(-len(which) // ncols)
    fig_w = 11.0
    panel_h = (fig_w - 1.0) / ncols * h / w + 0.45
    top_h = min(4.5, (fig_w - 1.8) / 2 * h / w + 0.5)  # two panels beside the legend
    fig = Figure(figsize=(fig_w, top_h + nrows * panel_h + 0.6), dpi=100, layout="constrained")
    fig.suptitle(title or f"scan: {rows}x{cols} crops of {scan.crop[0]}x{scan.crop[1]}, "
                 f"{scan.stride[0]}x{scan.stride[1]} pixels apart", fontsize=12)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, nrows * panel_h])

    ax_in, ax_arg = top.subplots(1, 2)
    ax_in.imshow(scan.image if scan.image.shape[-1] == 3 else grey, cmap="gray", vmin=0, vmax=1,
                 interpolation="nearest")
    ax_in.add_patch(Rectangle((0, 0), scan.crop[1] - 1, scan.crop[0] - 1, fill=False,
                              edgecolor="#ffb000", linewidth=1.2, linestyle="--"))
    ax_in.set_title(f"input {h}x{w} (dashed: one {scan.crop[0]}x{scan.crop[1]} crop)",
                    fontsize=10)

    from matplotlib import colormaps

    palette = colormaps["tab10" if K <= 10 else "tab20"]
    colours = np.array([palette(k % palette.N) for k in range(K)])
    arg = scan.probs.argmax(axis=-1)
    ax_arg.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_arg.imshow(colours[arg], extent=extent, alpha=0.6, interpolation="nearest")
    ax_arg.set_xlim(-0.5, w - 0.5)
    ax_arg.set_ylim(h - 0.5, -0.5)
    ax_arg.set_title("most likely class of each crop (at its centre)", fontsize=10)
    winners = [c for c in sorted(summary.values(), key=lambda c: -c.wins) if c.wins][:12]
    ax_arg.legend(handles=[Patch(color=colours[c.index], label=f"{c.name} {_pct(c.share)}")
                           for c in winners], loc="center left", bbox_to_anchor=(1.01, 0.5),
                  fontsize=8, frameon=False, title="share of crops", title_fontsize=8)
    for ax in (ax_in, ax_arg):
        ax.set_xticks([])
        ax.set_yticks([])

    axes = bottom.subplots(nrows, ncols, squeeze=False)
    im = None
    for n, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if n >= len(which):
            ax.set_axis_off()
            continue
        k = which[n]
        c = summary[k]
        im = ax.imshow(scan.probs[..., k], extent=extent, cmap="magma", vmin=0.0, vmax=1.0,
                       interpolation="nearest")
        if grey.max() > grey.min():
            ax.contour(grey, levels=[0.5 * (grey.min() + grey.max())], colors="#7fd4ff",
                       linewidths=0.6, alpha=0.8)
        ax.add_patch(Rectangle((c.cols[0] - 0.5, c.rows[0] - 0.5), scan.crop[1], scan.crop[0],
                               fill=False, edgecolor="#00e5ff", linewidth=1.0))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_facecolor("black")
        ax.set_title(f"{c.name}: best {c.best:.2f}, wins {_pct(c.share)}", fontsize=9)
    if im is not None:
        cbar = bottom.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, aspect=30, pad=0.01)
        cbar.set_label("probability of the class (box: its best crop)", fontsize=9)
    return fig


def safe_name(text: str) -> str:
    """A class name as a file-name part: ``"T-shirt/top" -> "T-shirt_top"``."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")
    return keep or "class"


def write_scan(scan: Scan, classes: Sequence[str], out_dir: str | os.PathLike,
               which: Sequence[int] | None = None, per_class_maps: bool = False) -> list[Path]:
    """Write into ``out_dir``: ``scores.npy`` and ``probs.npy`` (the map), ``scores.txt`` (the
    summary and the map as text) and ``scan.png`` (:func:`overview_figure` of the classes
    ``which``, default all); with ``per_class_maps`` also ``heat_<k>_<class>.png`` per class of
    ``which``, the image's own size (:func:`heat_map` over the image). Returns the paths
    written."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "scores.npy", out / "probs.npy", out / "scores.txt", out / "scan.png"]
    np.save(paths[0], scan.scores)
    np.save(paths[1], scan.probs)
    paths[2].write_text(score_table(scan, classes), encoding="utf-8")
    fig = overview_figure(scan, classes, which)
    fig.savefig(paths[3], format="png", dpi=fig.dpi, facecolor="white")
    if per_class_maps:
        hw = scan.image.shape[:2]
        for k in which if which is not None else range(scan.probs.shape[-1]):
            heat = heat_map(scan.probs[..., k], hw, scan.stride, scan.crop)
            path = out / f"heat_{k}_{safe_name(classes[k])}.png"
            Image.fromarray(overlay(scan.image, heat)).save(path)
            paths.append(path)
    return paths


__all__ = ["ClassSummary", "Scan", "class_summary", "colorize", "coverage", "heat_map",
           "largest_fit", "overlay", "overview_figure", "read_image", "scan_image", "score_table",
           "summary_text", "write_scan"]
