"""The in-memory data set every loader returns, and reproducible splits of it.

A :class:`Dataset` is images and labels held as NumPy arrays, ready for a network:

- ``x``: ``(N, H, W, D)`` float32 with pixel values in ``[0, 1]`` (before normalisation);
- ``y``: ``(N,)`` int64 class indices into ``classes``.

Splits are stratified (every class keeps its share) and driven by a seed, so the same seed gives
the same split on every machine and every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from convnet.errors import DataError


@dataclass
class Dataset:
    """Images and labels of one split of a data set.

    Args:
        x: images, float32 in ``[0, 1]``.
        y: class index of each image.
        classes: human-readable class names; ``classes[y[i]]`` names image ``i``.
        name: the data set's name (``"digits"``, ``"fashion-mnist"``, a folder path, ...).
        hflip: whether a horizontal flip keeps the label (True for photos and clothes, False for
            digits, where a flipped 2 is no longer a 2); augmentation only flips when this is set.
        source: where the data came from (a directory, ``"scikit-learn"``), for messages.

    Shape:
        - x: ``(N, H, W, D)`` float32
        - y: ``(N,)`` int64, values in ``[0, len(classes))``

    Raises :class:`DataError` when the arrays do not agree with each other.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str = "data"
    hflip: bool = False
    source: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim != 4:
            raise DataError(
                f"{self.name}: images must be (N, H, W, D), got an array of shape {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise DataError(
                f"{self.name}: {x.shape[0]} images but labels of shape {y.shape}; "
                f"expected ({x.shape[0]},)"
            )
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if y.dtype != np.int64:
            y = y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
            raise DataError(
                f"{self.name}: labels range over [{y.min()}, {y.max()}] but there are "
                f"{len(self.classes)} classes (labels must lie in [0, {len(self.classes) - 1}])"
            )
        self.x, self.y = x, y
        self.classes = [str(c) for c in self.classes]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        h, w, d = self.input_shape
        return (
            f"Dataset({self.name!r}, {len(self)} images {h}x{w}x{d}, "
            f"{self.num_classes} classes)"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, D)`` of one image."""
        _, h, w, d = self.x.shape
        return (int(h), int(w), int(d))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        """Images per class, ``(num_classes,)`` int64."""
        return np.bincount(self.y, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: np.ndarray | slice, name: str | None = None) -> Dataset:
        """The images at ``indices`` (a copy for index arrays, a view for slices)."""
        return replace(self, x=self.x[indices], y=self.y[indices], name=name or self.name)

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split off ``fraction`` of the images, stratified by class: ``(rest, part)``.

        The same ``seed`` gives the same split. Each class contributes
        ``round(fraction * count)`` images to ``part`` (at least one when the class has two or
        more), so the class balance is kept on both sides.
        """
        rest, part = stratified_split(self.y, fraction, seed, self.num_classes)
        return self.subset(rest), self.subset(part)

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(x, y)`` mini-batches, shuffled by ``rng`` when given; the last may be short."""
        if batch_size < 1:
            raise DataError(f"{self.name}: batch_size={batch_size} must be at least 1")
        order = rng.permutation(len(self)) if rng is not None else None
        for start in range(0, len(self), batch_size):
            if order is None:
                sl = slice(start, start + batch_size)
                yield self.x[sl], self.y[sl]
            else:
                idx = order[start : start + batch_size]
                yield self.x[idx], self.y[idx]


class DataSplits(NamedTuple):
    """``(train, test)`` of a data set; unpacks as ``train, test = load_dataset(...)``."""

    train: Dataset
    test: Dataset


def stratified_split(
    y: np.ndarray, fraction: float, seed: int = 0, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, part)`` with ``part`` holding about ``fraction`` of every class.

    Both index arrays are sorted, so a split keeps the original order of the images.
    Raises :class:`DataError` unless ``0 < fraction < 1``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction={fraction!r} must lie strictly between 0 and 1")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    k = int(num_classes if num_classes is not None else (y.max() + 1 if len(y) else 0))
    chosen = []
    # One loop over classes (10 or so), never over images.
    for c in range(k):
        members = np.flatnonzero(y == c)
        n = len(members)
        take = int(round(fraction * n))
        if n >= 2:
            take = min(max(take, 1), n - 1)
        chosen.append(rng.permutation(members)[:take])
    part = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[part] = False
    return np.flatnonzero(mask), part


def train_val_split(
    train: Dataset, val_fraction: float = 0.1, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Hold out a stratified, reproducible validation set: ``(train_rest, val)``.

    Use a fixed ``seed`` (not the training seed) so the validation images stay the same across
    runs and a resumed run validates on the same images.
    """
    rest, val = train.split(val_fraction, seed)
    rest.name, val.name = train.name, f"{train.name} (validation)"
    return rest, val
