"""The data set interface training reads through, the in-memory data set every loader returns,
and reproducible splits.

:class:`DataSource` is the one interface: random access to samples by their global index,
``take(indices) -> (x, y)``. Training gathers every batch through it (one call per batch, for
the batch's sample indices), so the same loop trains from arrays in memory or from packed
shards on disk (:class:`~convnet.data.shards.ShardedDataset`), and a process that trains on a
share of each batch (data-parallel ranks) asks for just its indices.

A :class:`Dataset` is images and labels held as NumPy arrays, ready for a network:

- ``x``: ``(N, H, W, D)`` float32 with pixel values in ``[0, 1]`` (before normalisation);
- ``y``: ``(N,)`` int64 class indices into ``classes``.

Splits are stratified (every class keeps its share) and driven by a seed, so the same seed gives
the same split on every machine and every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from convnet.errors import DataError


@runtime_checkable
class DataSource(Protocol):
    """Random access to a data set's samples by global index: what training reads through.

    Attributes:
        name: the data set's name (messages, the default augmentation).
        classes: class names; labels index into them.
        hflip: whether a horizontal flip keeps the label.
        in_memory: True when ``take`` only copies from memory (no reason to prefetch).

    Shape:
        - ``input_shape``: ``(H, W, D)`` of one image
        - ``label_shape``: ``()`` for one label per image, ``(H, W)`` for one per pixel
        - ``take(indices)``: ``indices (n,)`` int -> ``x (n, H, W, D)`` float32 in ``[0, 1]``
          (not normalised: augmentation and normalisation are the trainer's), ``y (n,
          *label_shape)`` int64, both in the order of ``indices``
        - ``take_labels(indices)``: the ``y`` of ``take`` without reading any image

    Implemented by :class:`Dataset` (arrays in memory), by
    :class:`~convnet.data.segmentation.SegmentationDataset` and by
    :class:`~convnet.data.shards.ShardedDataset` (uint8 shards on disk). The same indices give
    the same values from all of them, bit for bit, for the same images.
    """

    name: str
    classes: list[str]
    hflip: bool
    in_memory: bool

    def __len__(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def label_shape(self) -> tuple[int, ...]: ...

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def take_labels(self, indices: np.ndarray) -> np.ndarray: ...


def is_source(data: Any) -> bool:
    """True for anything implementing :class:`DataSource` (checked by its two methods)."""
    return callable(getattr(data, "take", None)) and callable(getattr(data, "take_labels", None))


def iter_ranges(n: int, size: int) -> Iterator[np.ndarray]:
    """Consecutive index ranges ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n), dtype=np.int64)


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
    #: the images are arrays in memory (see :class:`DataSource`)
    in_memory = True

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
    def label_shape(self) -> tuple[int, ...]:
        """``()``: one class index per image."""
        return ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x[indices], y[indices])``: one gather each (see :class:`DataSource`)."""
        return self.x[indices], self.y[indices]

    def take_labels(self, indices: np.ndarray) -> np.ndarray:
        return self.y[indices]

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


def random_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, part)`` of a random split of ``range(n)``, ``part`` holding
    ``max(1, round(fraction * n))`` of them; both sorted (for data with no class per image to
    stratify by, such as per-pixel labels)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction={fraction!r} must lie strictly between 0 and 1")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(order[k:]), np.sort(order[:k])


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
