"""Per-channel normalisation and batch augmentation (random crop with padding, horizontal flip).

Normalisation statistics come from the *training* set only and are then applied unchanged to
validation and test images (computing them on test images would leak the test set into
training). They are plain arrays so a checkpoint can store them beside the weights.

Augmentation works on a whole batch at once: one gather with per-image offsets does the crop and
the flip together, with no Python loop over images. Each image's offsets and flip are a function
of its key (:class:`~convnet.keyed_random.SampleKeys`: the run's seed, the epoch and the image's
global index), so an image is augmented the same way whether one process trains on its batch or
several processes on parts of it; given a ``numpy.random.Generator`` instead, the key is one
draw from it. A training run with a fixed seed is reproducible either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convnet.errors import DataError
from convnet.keyed_random import STREAM_AUGMENT, SampleKeys

# Images per chunk when accumulating float64 statistics: bounds the temporary to ~100 MB for
# 32x32x3 images instead of a float64 copy of the whole training set. Larger images take fewer
# per chunk (the same 4096 * 3072 values), so the bound holds for any image size.
_STATS_CHUNK = 4096
_STATS_VALUES = 4096 * 32 * 32 * 3


def _stats_chunk(values_per_image: int) -> int:
    return max(1, min(_STATS_CHUNK, _STATS_VALUES // max(values_per_image, 1)))


@dataclass
class Normalizer:
    """``(x - mean) / std`` per channel, with statistics fitted on training images.

    Shape:
        - mean, std: ``(D,)`` float32
        - apply: ``(..., D)`` -> same shape, float32

    A channel with zero spread (a constant channel) gets ``std = 1`` so it maps to zero rather
    than to NaN.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise DataError(
                f"Normalizer: mean has {self.mean.size} channel(s) but std has {self.std.size}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std))
                and np.all(self.std > 0)):
            raise DataError(
                f"Normalizer: mean must be finite and std finite and positive, got "
                f"mean={self.mean}, std={self.std}"
            )

    @classmethod
    def coerce(cls, obj: Any) -> Normalizer | None:
        """The statistics in any form the library accepts: a Normalizer, a mapping
        ``{"mean", "std"}`` (what a checkpoint stores) or an object with ``mean`` and ``std``;
        None for None and for anything without statistics (a bare callable)."""
        if obj is None or isinstance(obj, Normalizer):
            return obj
        if isinstance(obj, Mapping):
            if "mean" not in obj or "std" not in obj:
                raise DataError("Normalizer: a mapping of statistics needs 'mean' and 'std'")
            return cls(obj["mean"], obj["std"])
        if hasattr(obj, "mean") and hasattr(obj, "std") and not callable(obj.mean):
            return cls(obj.mean, obj.std)
        return None

    @classmethod
    def fit(cls, x: Any) -> Normalizer:
        """Per-channel mean and (population) standard deviation of ``x (N, H, W, D)``.

        ``x`` is an array or any :class:`~convnet.data.dataset.DataSource` (a Dataset, packed
        shards): a source is read chunk by chunk through ``take``, so the images never have to
        be in memory at once, and the result is bit for bit the one of its images as an array.

        Accumulated in float64 chunk by chunk, two passes (mean, then squared deviations),
        which stays accurate over tens of millions of pixels where float32 sums would not.
        """
        from .dataset import is_source

        if is_source(x):
            n, shape = len(x), tuple(x.input_shape)

            def chunks() -> Any:
                size = _stats_chunk(int(np.prod(shape)))
                for s in range(0, n, size):
                    yield x.take(np.arange(s, min(s + size, n), dtype=np.int64))[0]
        else:
            x = np.asarray(x)
            n, shape = (x.shape[0], x.shape[1:]) if x.ndim else (0, ())

            def chunks() -> Any:
                size = _stats_chunk(int(np.prod(shape)))
                for s in range(0, n, size):
                    yield x[s : s + size]
        if len(shape) != 3 or n == 0:
            raise DataError(f"Normalizer.fit: expected images (N, H, W, D), got shape "
                            f"{(n, *shape)}")
        count = n * shape[0] * shape[1]
        total = np.zeros(shape[2], np.float64)
        for chunk in chunks():
            total += chunk.sum(axis=(0, 1, 2), dtype=np.float64)
        mean = total / count
        sq = np.zeros(shape[2], np.float64)
        for chunk in chunks():
            dev = np.subtract(chunk, mean, dtype=np.float64)  # one float64 temporary, not two
            sq += np.einsum("nhwd,nhwd->d", dev, dev)
        std = np.sqrt(sq / count)
        std[std < 1e-8] = 1.0
        return cls(mean, std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise images ``(..., D)``; returns a new float32 array."""
        x = np.asarray(x)
        if x.shape[-1] != self.mean.size:
            raise DataError(
                f"Normalizer: images have {x.shape[-1]} channel(s) but the statistics were "
                f"fitted on {self.mean.size}"
            )
        return ((x - self.mean) / self.std).astype(np.float32, copy=False)

    __call__ = apply

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply` (for showing normalised images)."""
        return (np.asarray(x) * self.std + self.mean).astype(np.float32, copy=False)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``{prefix + "mean": (D,), prefix + "std": (D,)}`` for an npz checkpoint."""
        return {f"{prefix}mean": self.mean.copy(), f"{prefix}std": self.std.copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> Normalizer:
        """Rebuild from :meth:`to_arrays` output (any mapping, e.g. an opened npz)."""
        try:
            return cls(arrays[f"{prefix}mean"], arrays[f"{prefix}std"])
        except KeyError as exc:
            raise DataError(f"Normalizer: no {exc.args[0]!r} array to restore from") from exc


def augment_batch(
    x: np.ndarray, rng: np.random.Generator | SampleKeys, *, pad: int = 0, flip: bool = False
) -> np.ndarray:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    Each image is padded by ``pad`` zeros on every side and cropped back to ``H x W`` at an
    offset drawn uniformly from ``[0, 2*pad]`` in each direction (a shift of up to ``pad``
    pixels); with ``flip`` each image is mirrored left-right with probability 1/2. Both are one
    fancy-indexing gather over the padded batch.

    ``rng``: the images' keys (:class:`~convnet.keyed_random.SampleKeys`, one per image), or a
    generator from which one key is drawn (the images then numbered ``0..N-1``). Image ``i``'s
    row offset, column offset and flip are outputs 0, 1 and 2 of its stream
    ``(STREAM_AUGMENT,)``: see :func:`augment_draws`.

    Shape:
        - x: ``(N, H, W, D)`` -> ``(N, H, W, D)``, same dtype; ``x`` is not modified.
    """
    if x.ndim != 4:
        raise DataError(f"augment_batch: expected images (N, H, W, D), got shape {x.shape}")
    if pad < 0:
        raise DataError(f"augment_batch: pad={pad} must be 0 or more")
    n, h, w, _ = x.shape
    if pad == 0 and not flip:
        return x.copy()
    keys = rng if isinstance(rng, SampleKeys) else SampleKeys.from_generator(rng, n)
    if len(keys) != n:
        raise DataError(f"augment_batch: {len(keys)} keys for a batch of {n} images; give "
                        "one key per image")
    oy, ox, mirrored = augment_draws(keys, pad, flip)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    rows = oy[:, None] + np.arange(h)  # (N, H)
    cols = ox[:, None] + np.arange(w)  # (N, W)
    if flip:
        cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
    return xp[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment_draws(keys: SampleKeys, pad: int, flip: bool) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Each image's ``(row offset, column offset, mirrored)``: offsets in ``[0, 2*pad]``
    (outputs 0 and 1 of its augmentation stream), mirrored with probability 1/2 (the top bit of
    output 2); zeros and False where ``pad`` is 0 or ``flip`` is off."""
    n = len(keys)
    stream = (STREAM_AUGMENT,)
    if pad:
        oy = keys.below(stream, 2 * pad + 1, 0)
        ox = keys.below(stream, 2 * pad + 1, 1)
    else:
        oy = ox = np.zeros(n, np.int64)
    mirrored = (keys.bits(stream, 1, first=2)[:, 0] >> np.uint64(63)).astype(bool) if flip \
        else np.zeros(n, bool)
    return oy, ox, mirrored


@dataclass(frozen=True)
class Augmentation:
    """A batch augmentation recipe: ``Augmentation(pad=2, flip=True)(x, rng_or_keys)``.

    ``pad`` is the random-crop shift in pixels (0: no crop); ``flip`` enables horizontal flips.
    The trainer calls it with the batch's :class:`~convnet.keyed_random.SampleKeys` (what
    ``by_sample = True`` asks for), so each image's augmentation depends on the image alone.
    """

    pad: int = 0
    flip: bool = False
    #: takes SampleKeys: the trainer passes each batch's keys instead of a generator
    by_sample = True

    def __call__(self, x: np.ndarray, rng: np.random.Generator | SampleKeys) -> np.ndarray:
        return augment_batch(x, rng, pad=self.pad, flip=self.flip)

    @property
    def enabled(self) -> bool:
        return self.pad > 0 or self.flip


def default_augmentation(name: str, hflip: bool = False) -> Augmentation:
    """The augmentation that makes sense for a data set (by name; ``hflip`` from the Dataset).

    - digits (8x8): none; a 1-pixel shift is an eighth of the image.
    - mnist: crop with padding 2, no flip (a mirrored digit is another glyph).
    - fashion-mnist: crop with padding 2 and flip (a mirrored shoe is still a shoe).
    - cifar10: crop with padding 4 and flip (the standard recipe).
    - anything else: flip only when ``hflip`` says it keeps the labels, no crop.
    """
    key = name.lower()
    table = {
        "digits": Augmentation(),
        "mnist": Augmentation(pad=2),
        "fashion-mnist": Augmentation(pad=2, flip=True),
        "cifar10": Augmentation(pad=4, flip=True),
    }
    return table.get(key, Augmentation(flip=hflip))
