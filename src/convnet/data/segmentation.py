"""Fashion-MNIST segmentation: real clothing items placed on a larger canvas, labelled per pixel.

A canvas of H x W pixels is cut into a grid of ``(H // 28) x (W // 28)`` equal cells; some of the
cells (chosen at random) receive one 28x28 Fashion-MNIST item each, shifted at random inside its
cell (``cell - 28`` pixels of slack), so items never overlap. The default, used by
``convnet train --data fashion-seg``, is a 32x64 canvas holding two items side by side, each
shifted by 0..4 pixels: half the pixels of a 64x64 canvas of 2-3 items (``canvas=64,
items=(2, 3)``), so an epoch costs half as much while every canvas still shows two different
items to tell apart and to delineate. Every pixel is labelled:

- ``0`` (background) where no item is, or where the item's pixel is at most ``threshold``;
- ``class + 1`` (1..10, the item's Fashion-MNIST class) where the item's pixel is above it.

Everything is drawn from one seed, so the same arguments give the same canvases on every machine.
Training canvases use items of Fashion-MNIST's training split only and test canvases items of
its test split, so test canvases are held out twice: new arrangements of never-seen items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from convnet.errors import DataError

#: the names of the per-pixel labels: background, then Fashion-MNIST's classes
BACKGROUND = "background"
ITEM = 28
THRESHOLD = 0.2
#: the default canvas (rows, cols) and the least and most items on it
CANVAS = (32, 64)
ITEMS = (2, 2)


@dataclass
class SegmentationDataset:
    """Images with one class label per pixel.

    Args:
        x: images, float32 in ``[0, 1]``.
        y: label of every pixel, indices into ``classes`` (``0`` is the background).
        classes: label names, ``classes[0] == "background"``.
        name, source: for messages.

    Shape:
        - x: ``(N, H, W, D)`` float32
        - y: ``(N, H, W)`` int64

    Raises :class:`DataError` when the arrays do not agree with each other.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str = "segmentation"
    hflip: bool = False  # augmentation would have to flip the labels too: not offered
    source: str = field(default="", repr=False)
    #: the images are arrays in memory (see :class:`~convnet.data.dataset.DataSource`)
    in_memory = True

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, np.float32), np.asarray(self.y, np.int64)
        if x.ndim != 4 or y.shape != x.shape[:3]:
            raise DataError(
                f"{self.name}: images {x.shape} and labels {y.shape}: expected (N, H, W, D) "
                "images and (N, H, W) per-pixel labels"
            )
        if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
            raise DataError(f"{self.name}: labels range over [{y.min()}, {y.max()}] but there "
                            f"are {len(self.classes)} classes")
        self.x, self.y = x, y
        self.classes = [str(c) for c in self.classes]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        n, h, w, d = self.x.shape
        return (f"SegmentationDataset({self.name!r}, {n} images {h}x{w}x{d}, "
                f"{self.num_classes} pixel classes)")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, h, w, d = self.x.shape
        return (int(h), int(w), int(d))

    @property
    def label_shape(self) -> tuple[int, ...]:
        """``(H, W)``: one class index per pixel."""
        return tuple(int(v) for v in self.y.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x[indices], y[indices])`` (see :class:`~convnet.data.dataset.DataSource`)."""
        return self.x[indices], self.y[indices]

    def take_labels(self, indices: np.ndarray) -> np.ndarray:
        return self.y[indices]

    def class_counts(self) -> np.ndarray:
        """Pixels per class, ``(num_classes,)`` int64."""
        return np.bincount(self.y.ravel(), minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: np.ndarray | slice, name: str | None = None) -> SegmentationDataset:
        return replace(self, x=self.x[indices], y=self.y[indices], name=name or self.name)

    def split(self, fraction: float, seed: int = 0) -> tuple[SegmentationDataset,
                                                            SegmentationDataset]:
        """A random ``(rest, part)`` split with ``part`` holding ``fraction`` of the canvases
        (canvases are random already; there is no per-image class to stratify by)."""
        from .dataset import random_split

        rest, part = random_split(len(self), fraction, seed)
        return self.subset(rest), self.subset(part)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if batch_size < 1:
            raise DataError(f"{self.name}: batch_size={batch_size} must be at least 1")
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield self.x[idx], self.y[idx]


class SegmentationSplits(NamedTuple):
    train: SegmentationDataset
    test: SegmentationDataset


def canvas_grid(canvas: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((H, W), (rows, cols))``: the canvas size and its grid of item cells.

    >>> canvas_grid(64), canvas_grid((32, 64))
    (((64, 64), (2, 2)), ((32, 64), (1, 2)))
    """
    h, w = (canvas, canvas) if isinstance(canvas, int | np.integer) else tuple(canvas)
    h, w = int(h), int(w)
    if h < ITEM or w < ITEM:
        raise DataError(f"make_canvases: canvas={h}x{w} must be at least {ITEM} pixels on each "
                        f"side to hold a {ITEM}x{ITEM} item")
    return (h, w), (h // ITEM, w // ITEM)


def make_canvases(
    images: np.ndarray, labels: np.ndarray, n: int, *, canvas: int | tuple[int, int] = CANVAS,
    items: tuple[int, int] = ITEMS, threshold: float = THRESHOLD, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases of items drawn from ``images``/``labels``, and their per-pixel labels.

    Args:
        images: ``(M, 28, 28)`` or ``(M, 28, 28, 1)`` items in ``[0, 1]``.
        labels: ``(M,)`` their classes (0-based; a pixel of item class ``c`` is labelled c + 1).
        n: canvases to make.
        canvas: ``(H, W)``, or the side of a square canvas; cut into ``(H // 28) x (W // 28)``
            cells of ``(H // rows) x (W // cols)`` pixels, each leaving ``cell - 28`` pixels of
            random shift.
        items: the least and most items per canvas (1 .. the number of cells).
        threshold: an item pixel above it is the item's, at or below it background.
        seed: everything random (which items, cells and shifts) comes from it.

    Shape:
        returns x ``(n, H, W, 1)`` float32, y ``(n, H, W)`` int64.

    Built slot by slot (one per cell at most), each slot vectorised over all canvases with one
    fancy-index assignment: no loop over canvases or pixels.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (ITEM, ITEM) or len(images) != len(labels):
        raise DataError(f"make_canvases: expected items (M, {ITEM}, {ITEM}) with M labels, "
                        f"received {images.shape} and {np.shape(labels)}")
    (h, w), (grid_r, grid_c) = canvas_grid(canvas)
    n_cells = grid_r * grid_c
    lo, hi = items
    if not 1 <= lo <= hi <= n_cells:
        raise DataError(f"make_canvases: items={items!r} must satisfy 1 <= min <= max <= "
                        f"{n_cells} (a {h}x{w} canvas holds a {grid_r}x{grid_c} grid of "
                        f"{ITEM}x{ITEM} items)")
    rng = np.random.default_rng(seed)
    cell_h, cell_w = h // grid_r, w // grid_c
    count = rng.integers(lo, hi + 1, n)
    cells = rng.permuted(np.tile(np.arange(n_cells), (n, 1)), axis=1)  # (n, cells)
    pick = rng.integers(0, len(images), (n, n_cells))
    shift_r = rng.integers(0, cell_h - ITEM + 1, (n, n_cells))
    shift_c = rng.integers(0, cell_w - ITEM + 1, (n, n_cells))
    x = np.zeros((n, h, w), np.float32)
    y = np.zeros((n, h, w), np.int64)
    ar = np.arange(ITEM)
    for slot in range(hi):
        idx = np.flatnonzero(count > slot)
        r0 = (cells[idx, slot] // grid_c) * cell_h + shift_r[idx, slot]
        c0 = (cells[idx, slot] % grid_c) * cell_w + shift_c[idx, slot]
        rows = r0[:, None, None] + ar[None, :, None]
        cols = c0[:, None, None] + ar[None, None, :]
        item = images[pick[idx, slot]]
        x[idx[:, None, None], rows, cols] = item
        lab = (np.asarray(labels)[pick[idx, slot]] + 1)[:, None, None]
        y[idx[:, None, None], rows, cols] = np.where(item > threshold, lab, 0)
    return x[..., None], y


def load_fashion_segmentation(
    *, n_train: int = 6000, n_test: int = 1000, canvas: int | tuple[int, int] = CANVAS,
    items: tuple[int, int] = ITEMS, threshold: float = THRESHOLD, seed: int = 0,
    data_dir: str | None = None,
) -> SegmentationSplits:
    """Fashion-MNIST segmentation canvases (see the module docstring) as ``(train, test)``.

    Train canvases are made of Fashion-MNIST training items, test canvases of test items.
    ``classes`` is ``["background", "T-shirt/top", ..., "Ankle boot"]`` (11 pixel classes).

    Shape:
        - train.x ``(n_train, H, W, 1)`` float32, train.y ``(n_train, H, W)`` int64 (default
          ``H, W = 32, 64``)
    """
    from convnet.data.registry import FASHION_CLASSES, load_dataset

    items_train, items_test = load_dataset("fashion-mnist", data_dir=data_dir)
    classes = [BACKGROUND, *FASHION_CLASSES]
    out = []
    for part, ds, n, s in (("train", items_train, n_train, seed),
                           ("test", items_test, n_test, seed + 1)):
        x, y = make_canvases(ds.x, ds.y, n, canvas=canvas, items=items, threshold=threshold,
                             seed=s)
        out.append(SegmentationDataset(x, y, classes, name=f"fashion-seg ({part})",
                                       source=f"{ds.source}, seed {s}"))
    return SegmentationSplits(*out)


__all__ = ["BACKGROUND", "CANVAS", "ITEMS", "SegmentationDataset", "SegmentationSplits",
           "canvas_grid", "load_fashion_segmentation", "make_canvases"]
