"""The training loop: ``fit(net, train, val, ...)`` and ``evaluate(net, data)``.

One epoch is a permutation of the training images drawn from the *data generator*, cut into
mini-batches by index: each batch is one ``data.take(order[i:i+B])`` (a
:class:`~convnet.data.dataset.DataSource`: arrays in memory, or packed shards on disk read with
bounded memory), gathered ahead by a background thread (``prefetch``) while the network
computes. The same generator drives augmentation (in the training thread, after the gather),
and ``net.rng`` drives dropout, so a run is fully determined by its seed, whatever the source
and the prefetch depth; both generator states, the permutation of an interrupted epoch and the
optimiser state go into checkpoints, which is what makes ``--resume`` bit-identical to an
uninterrupted run.

Labels may be per image, ``y (N,)``, or per pixel, ``y (N, H, W)`` for a network that outputs
score maps ``(N, H, W, C)`` (segmentation); loss and accuracy are then means over pixels.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet import backend
from convnet.data.dataset import iter_ranges
from convnet.data.transforms import Normalizer
from convnet.errors import ConfigError, ShapeError
from convnet.net.graph import Graph
from convnet.ops.loss import softmax_cross_entropy
from convnet.train.callbacks import Callback
from convnet.train.checkpoint import Checkpoint, load_checkpoint, rng_state_from_json, save
from convnet.train.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou_from_confusion,
    per_class_accuracy,
)

__all__ = ["History", "Trainer", "evaluate", "fit"]

Normalize = Callable[[np.ndarray], np.ndarray]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class History:
    """What :func:`fit` returns: one record per completed epoch, and why training stopped.

    Attributes:
        epochs: per-epoch logs, oldest first: ``epoch`` (1-based), ``step`` (optimiser steps so
            far), ``loss``, ``accuracy``, ``val_loss``/``val_accuracy`` (with validation data),
            ``lr`` (of the epoch's last step), ``time_s``, ``images_per_s``; with per-pixel
            labels and validation data also ``val_mean_iou``.
        stop_reason: None when every epoch ran; ``"early_stop"``, ``"nan"`` (the loss became NaN
            or Inf) or ``"interrupted"`` (:meth:`Trainer.request_stop`, e.g. from Ctrl-C).
        message: a sentence explaining the stop (empty when none).

    ``history["loss"]`` gives the list of one metric over the epochs (like Keras).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    message: str = ""

    def __getitem__(self, key: str) -> list[Any]:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}


# ------------------------------------------------------------------------------------ data
class _Arrays:
    """``(x, y)`` arrays (or an object with ``.x``/``.y`` but no ``take``) as a DataSource."""

    in_memory = True
    hflip = False

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: Any = None,
                 name: str = "data") -> None:
        self.x, self.y, self.classes, self.name = x, y, classes, name

    def __len__(self) -> int:
        return int(self.x.shape[0]) if self.x.ndim else 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def label_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[indices], self.y[indices]

    def take_labels(self, indices: np.ndarray) -> np.ndarray:
        return self.y[indices]


def _source(data: Any, what: str) -> tuple[Any, list[str] | None]:
    """``(source, classes)``: a DataSource as given, or arrays wrapped as one."""
    from convnet.data.dataset import is_source

    if is_source(data):
        return data, getattr(data, "classes", None)
    if hasattr(data, "x") and hasattr(data, "y"):
        return _Arrays(np.asarray(data.x), np.asarray(data.y)), getattr(data, "classes", None)
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ConfigError(
            f"{what}: expected a Dataset, a DataSource or an (x, y) pair of arrays, received "
            f"{type(data).__name__}"
        ) from None
    return _Arrays(np.asarray(x), np.asarray(y)), None


class _Feed:
    """A checked DataSource and what each batch needs to fit the network.

    Everything is validated once, up front, so no batch can fail halfway through an epoch:
    the image shape, the label shape (a ``(1, 1, K)`` output takes one label per image,
    reshaped per batch), integer labels within the network's classes (read through
    ``take_labels`` in chunks: no image is read). Batches come from ``take`` and are cast to
    the network's dtype (arrays given as ``(x, y)`` are cast once here instead, as they always
    were).
    """

    def __init__(self, net: Graph, data: Any, what: str) -> None:
        source, self.classes = _source(data, what)
        want_x = tuple(net.input_shape)
        shape = tuple(int(v) for v in source.input_shape)
        n = len(source)
        if shape != want_x:
            raise ShapeError(
                f"{what}: images of shape {shape} ({n} of them) do not fit the network's "
                f"input {want_x}; load the data at that size or build the network for "
                f"INPUT({'x'.join(map(str, shape))})"
            )
        out = net.output_shape
        want_y = tuple(out[:-1])
        label_shape = tuple(source.label_shape)
        self.reshape: tuple[int, ...] | None = None
        if not label_shape and want_y and all(d == 1 for d in want_y):
            # A network ending in a 1x1xK volume (CONV to 1x1xK, or a pool over the whole map)
            # classifies: its one score position per image holds the image's K class scores.
            self.reshape = want_y
            label_shape = want_y
        if label_shape != want_y:
            kind = "one class index per image" if not want_y else \
                f"one class index per output position {want_y} (per-pixel labels)"
            raise ShapeError(
                f"{what}: labels of shape {(n, *source.label_shape)} for {n} images; the "
                f"network outputs {out}, so it needs {kind}: labels of shape {(n, *want_y)}"
            )
        if n == 0:
            raise ShapeError(f"{what}: no images")
        if isinstance(source, _Arrays):
            if source.y.dtype.kind not in "iu":
                raise ConfigError(f"{what}: labels must be integer class indices, received "
                                  f"dtype {source.y.dtype}")
            x = source.x if source.x.dtype == net.dtype else source.x.astype(net.dtype)
            y = source.y.astype(np.int64, copy=False)
            if self.reshape is not None:
                y = y.reshape(n, *self.reshape)
                self.reshape = None
            source = _Arrays(x, y, source.classes, source.name)
        lo, hi = None, None
        for idx in iter_ranges(n, 1 << 16):
            y = source.take_labels(idx)
            if y.dtype.kind not in "iu":
                raise ConfigError(f"{what}: labels must be integer class indices, received "
                                  f"dtype {y.dtype}")
            lo = int(y.min()) if lo is None else min(lo, int(y.min()))
            hi = int(y.max()) if hi is None else max(hi, int(y.max()))
        C = out[-1]
        if lo < 0 or hi >= C:
            raise ConfigError(
                f"{what}: labels range over [{lo}, {hi}] but the network has {C} outputs "
                f"(classes 0..{C - 1}); end the network with FC({hi + 1}) or check the "
                "labels"
            )
        self.source = source
        self.dtype = net.dtype
        self.per_pixel = bool(source.label_shape)  # segmentation, not a (1, 1, K) classifier

    def __len__(self) -> int:
        return len(self.source)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.source.take(indices)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x, self._fit_labels(y)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        return self._fit_labels(self.source.take_labels(indices))

    def _fit_labels(self, y: np.ndarray) -> np.ndarray:
        y = y.astype(np.int64, copy=False)
        return y if self.reshape is None else y.reshape(len(y), *self.reshape)


class _Prefetch:
    """Batches ``order[b*B:(b+1)*B]`` from ``start`` on, gathered ``depth`` ahead by a thread.

    Only the gather (``take``: reading and converting the images) runs in the thread; the
    augmentation and everything else that draws random numbers stays in the training thread,
    in the same order as without prefetching, so results do not depend on ``depth``, and a
    checkpoint written between batches holds the generators' true state. ``depth=0`` gathers in
    the calling thread. An exception in the thread (a shard whose hash is wrong) is raised by
    the next call to :meth:`next`.
    """

    def __init__(self, feed: _Feed, order: np.ndarray, batch_size: int, start: int,
                 depth: int) -> None:
        self.feed, self.order, self.batch_size = feed, order, batch_size
        self.next_batch = start
        self.steps = math.ceil(len(order) / batch_size)
        self.depth = depth
        self._thread: threading.Thread | None = None
        if depth > 0 and start < self.steps:
            self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, args=(start,),
                                            name="convnet-prefetch", daemon=True)
            self._thread.start()

    def _indices(self, b: int) -> np.ndarray:
        return self.order[b * self.batch_size:(b + 1) * self.batch_size]

    def _work(self, start: int) -> None:
        for b in range(start, self.steps):
            if self._stop.is_set():
                return
            try:
                item: Any = self.feed.take(self._indices(b))
            except BaseException as exc:  # handed to the training thread, raised there
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch's ``(x, y)``."""
        b = self.next_batch
        self.next_batch += 1
        if self._thread is None:
            return self.feed.take(self._indices(b))
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (a batch it is gathering is finished and dropped)."""
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            self._thread = None


def _as_normalize(normalizer: Any) -> Normalize | None:
    if normalizer is None:
        return None
    stats = Normalizer.coerce(normalizer)
    if stats is not None:
        return stats.apply
    if callable(normalizer):
        return normalizer
    raise ConfigError(f"normalizer must be a Normalizer, a callable or {{'mean', 'std'}}, "
                      f"received {type(normalizer).__name__}")


def _normalizer_arrays(normalizer: Any) -> dict[str, np.ndarray] | None:
    stats = Normalizer.coerce(normalizer)   # None for a bare callable: nothing to save
    return None if stats is None else {"mean": stats.mean, "std": stats.std}


# ------------------------------------------------------------------------------- evaluate
def evaluate(
    net: Graph,
    data: Any,
    *,
    batch_size: int = 256,
    normalizer: Any = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, confusion matrix and per-class accuracy of ``net`` on ``data``.

    Args:
        net: the network (evaluation mode: BN running statistics, no dropout).
        data: a Dataset or ``(x, y)``; labels per image or per pixel.
        batch_size: images per forward pass (memory only; results do not depend on it).
        normalizer: applied to the images first (a Normalizer, callable, or ``{mean, std}``).
        num_classes: size of the confusion matrix (default: the network's outputs).

    Returns:
        ``{"loss", "accuracy", "count", "confusion" (C, C) int64, "per_class_accuracy" (C,),
        "predictions" (N, ...) int64}``; for per-pixel labels also ``"iou" (C,)`` and
        ``"mean_iou"`` (over the classes present), and ``count`` counts pixels.
    """
    feed = _Feed(net, data, "evaluate")
    per_image = not feed.source.label_shape
    norm = _as_normalize(normalizer)
    scores = _predict(net, feed, batch_size, norm)
    y = feed.labels(np.arange(len(feed), dtype=np.int64))
    C = int(num_classes or net.output_shape[-1])
    loss = float("nan")
    if np.all(np.isfinite(scores)):
        loss, _ = softmax_cross_entropy(scores, y)
    pred = scores.argmax(axis=-1)
    if per_image:  # a (1, 1, K) output classifies: one prediction per image
        pred, y = pred.reshape(-1), y.reshape(-1)
    cm = confusion_matrix(y, pred, C)
    out = {
        "loss": loss,
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "count": int(y.size),
        "confusion": cm,
        "per_class_accuracy": per_class_accuracy(cm),
        "predictions": pred,
    }
    if y.ndim > 1:  # per-pixel labels: add the segmentation measures
        out["iou"] = iou_per_class(cm)
        out["mean_iou"] = mean_iou_from_confusion(cm)
    return out


def _predict(net: Graph, feed: _Feed, batch_size: int, norm: Normalize | None) -> \
        np.ndarray:
    """Scores of every sample, ``batch_size`` images at a time (the images are read batch by
    batch, so only the scores are ever held for the whole set)."""
    outs = []
    for idx in iter_ranges(len(feed), batch_size):
        xb, _ = feed.take(idx)
        outs.append(net.forward(norm(xb) if norm else xb, train=False))
    return np.concatenate(outs)


# -------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run: the loop, its state, and how to checkpoint it.

    Built and run by :func:`fit`; callbacks receive it (``callback.trainer``) to read the state,
    save checkpoints (:meth:`save`) or stop training (:meth:`stop`). See :func:`fit` for the
    arguments.
    """

    def __init__(
        self,
        net: Graph,
        train_data: Any,
        val_data: Any = None,
        *,
        epochs: int = 10,
        batch_size: int = 32,
        optimizer: Any = "adam",
        lr: float | None = None,
        schedule: Callable[[int], float] | str | None = None,
        callbacks: Iterable[Callback] = (),
        seed: int | None = 0,
        augment: Augment | None = None,
        normalizer: Any = None,
        classes: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        input_info: Mapping[str, Any] | None = None,
        eval_batch_size: int = 256,
        prefetch: int | None = None,
    ) -> None:
        from convnet.optim import Optimizer, make_optimizer, make_schedule

        if not isinstance(net, Graph):
            raise ConfigError(f"fit: expected a Graph network, received {type(net).__name__}")
        self.net = net
        self.data = _Feed(net, train_data, "fit: train_data")
        data_classes = self.data.classes
        self.per_pixel = self.data.per_pixel  # segmentation labels (not a (1, 1, K) classifier's)
        self.val: _Feed | None = None
        self._val_labels: np.ndarray | None = None
        if val_data is not None:
            self.val = _Feed(net, val_data, "fit: val_data")
            # the labels only (never the images) are kept for the whole validation set
            self._val_labels = self.val.labels(np.arange(len(self.val), dtype=np.int64))
        if prefetch is not None and (isinstance(prefetch, bool) or
                                     not isinstance(prefetch, int | np.integer) or prefetch < 0):
            raise ConfigError(f"fit: prefetch must be a whole number >= 0 (batches gathered "
                              f"ahead), received {prefetch!r}")
        # Arrays in memory: a gather costs less than handing a batch between threads
        # (measured in bench/bench_data.py); data read from disk: 2 batches ahead.
        self.prefetch = int(prefetch) if prefetch is not None else \
            (0 if getattr(self.data.source, "in_memory", True) else 2)
        for name, v in (("epochs", epochs), ("batch_size", batch_size),
                        ("eval_batch_size", eval_batch_size)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ConfigError(f"fit: {name} must be a whole number >= 1, received {v!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                                 or seed < 0):
            raise ConfigError(f"fit: seed must be a whole number >= 0 or None, received {seed!r}")
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.steps_per_epoch = math.ceil(len(self.data) / self.batch_size)
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                optimizer.lr = lr
            self.optimizer = optimizer
        else:
            self.optimizer = make_optimizer(str(optimizer), lr=lr)
        if isinstance(schedule, str):
            schedule = make_schedule(schedule, self.optimizer.lr,
                                     self.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.schedule = schedule
        if augment is not None and self.per_pixel:
            raise ConfigError(
                "fit: augmentation moves pixels but not per-pixel labels; train segmentation "
                "without augment= (or augment the labels yourself beforehand)"
            )
        self.augment = augment
        self.normalizer = normalizer
        self._normalize = _as_normalize(normalizer)
        self.classes = list(classes) if classes is not None else \
            (list(data_classes) if data_classes is not None else None)
        self.config = dict(config or {})
        self.input_info = dict(input_info or {"shape": list(net.input_shape), "range": [0, 1]})
        self.seed = seed
        self.data_rng = np.random.default_rng(seed)
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_trainer(self)
        # -- run state (all of it goes into checkpoints) --
        self.epoch = 0  # completed epochs
        self.step = 0  # optimiser steps taken
        self.history = History()
        self._order: np.ndarray | None = None  # permutation of the epoch in progress
        self._feed: _Prefetch | None = None  # its batches, gathered ahead
        self._batch = 0  # next batch of that epoch
        self._sums = np.zeros(4, np.float64)  # loss*count, correct, positions, images
        self._epoch_time = 0.0
        self.stop_requested = False
        self.stop_reason: str | None = None
        self.stop_message = ""
        self.last_saved: tuple[Path, int] | None = None  # (path, epoch) of the newest checkpoint

    # -- stopping --------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop after the current batch (safe to call from a signal handler: sets a flag)."""
        self.stop_requested = True

    def stop(self, reason: str, message: str = "") -> None:
        """Stop at the end of the current epoch (what EarlyStopping calls)."""
        self.stop_reason = self.stop_reason or reason
        self.stop_message = self.stop_message or message

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def in_epoch(self) -> bool:
        """True between the batches of an epoch (after an interruption)."""
        return self._order is not None

    def save(self, path: str | os.PathLike[str], **extra: Any) -> Path:
        """Write a checkpoint of the run as it stands (atomic; see :mod:`checkpoint`)."""
        loop = {}
        if self._order is not None:
            loop = {"order": self._order, "batch": np.array(self._batch, np.int64),
                    "sums": self._sums.copy(), "time": np.array(self._epoch_time)}
        config = {**self.config, "epochs": self.epochs, "batch_size": self.batch_size,
                  "seed": self.seed, "step": self.step}
        out = save(
            self.net, path, optimizer=self.optimizer, epoch=self.epoch,
            metrics=self.history.last, history=self.history.epochs, classes=self.classes,
            normalizer=_normalizer_arrays(self.normalizer), input_info=self.input_info,
            config=config, data_rng=self.data_rng, loop=loop, **extra,
        )
        self.last_saved = (out, self.epoch)
        return out

    def restore(self, ckpt: Checkpoint | str | os.PathLike[str]) -> None:
        """Continue from a checkpoint written by :meth:`save`: weights, optimiser, both RNGs,
        epoch, history and, for an interrupted epoch, its permutation and position."""
        from convnet.errors import CheckpointError

        if not isinstance(ckpt, Checkpoint):
            ckpt = load_checkpoint(ckpt)
        path = ckpt.path
        if ckpt.spec != self.net.spec:
            raise CheckpointError(
                f"{path}: saved for {ckpt.spec}, but the network is {self.net.spec}"
            )
        if ckpt.net is not self.net:
            self.net.load_state_dict(ckpt.net.state_dict())
            self.net.rng.bit_generator.state = ckpt.net.rng.bit_generator.state
        if ckpt.optimizer:
            self.optimizer.load_state_dict(ckpt.optimizer)
        if ckpt.rng.get("data") is not None:
            self.data_rng = rng_state_from_json(ckpt.rng["data"], path, "data rng")
        self.epoch = ckpt.epoch
        self.step = int(ckpt.config.get("step", self.optimizer.step_count))
        self.history = History(epochs=[dict(h) for h in ckpt.history])
        self._order, self._batch = None, 0
        self._sums = np.zeros(4, np.float64)
        self._epoch_time = 0.0
        if ckpt.loop:
            try:
                order = np.asarray(ckpt.loop["order"]).astype(np.int64)
                batch = int(ckpt.loop["batch"])
                sums = np.asarray(ckpt.loop["sums"], np.float64)
                t = float(ckpt.loop.get("time", 0.0))
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: invalid loop state ({exc})") from None
            if order.shape != (len(self.data),) or sums.shape != (4,) or \
                    not 0 <= batch <= self.steps_per_epoch:
                raise CheckpointError(
                    f"{path}: its interrupted epoch covers {order.size} images in batches of "
                    f"{ckpt.config.get('batch_size')}; this run has {len(self.data)} images in "
                    f"batches of {self.batch_size}: resume with the same data and batch size"
                )
            self._order, self._batch, self._sums, self._epoch_time = order, batch, sums, t

    # -- the loop --------------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _stop_nan(self, what: str) -> None:
        lr = self.optimizer.lr
        saved = ""
        if self.last_saved is not None:
            p, e = self.last_saved
            saved = f" The last good checkpoint, {p} (epoch {e}), is kept."
        self.stop_reason = "nan"
        self.stop_message = (
            f"{what} at epoch {self.epoch + 1}, batch {self._batch + 1}/"
            f"{self.steps_per_epoch} (step {self.step}, lr {lr:g}): training diverged and was "
            f"stopped.{saved} Lower the learning rate (e.g. {lr / 10:g}), or check the data "
            "for extreme values."
        )

    def _train_batch(self) -> bool:
        """One optimiser step on the next batch; False when the loss is not finite."""
        xb, yb = self._feed.next()  # type: ignore[union-attr]
        if self.augment is not None:
            xb = self.augment(xb, self.data_rng)
        if self._normalize is not None:
            xb = self._normalize(xb)
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(self.step)
        # A diverging run overflows inside the layers; that is reported below, once, clearly,
        # instead of as a stream of RuntimeWarnings.
        with np.errstate(over="ignore", invalid="ignore"):
            scores = self.net.forward(xb, train=True)
        if not np.all(np.isfinite(scores)):
            self._stop_nan("the network's output holds NaN or Inf")
            return False
        loss, dscores = softmax_cross_entropy(scores, yb)
        if not math.isfinite(loss):
            self._stop_nan(f"the loss is {loss}")
            return False
        self.net.backward(dscores)
        self.optimizer.step(self.net)
        self.step += 1
        self._batch += 1
        correct = np.count_nonzero(scores.argmax(axis=-1) == yb)
        self._sums += (loss * yb.size, correct, yb.size, len(yb))
        return True

    def _end_epoch(self) -> dict[str, Any]:
        loss_sum, correct, positions, images = self._sums
        logs: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "loss": float(loss_sum / positions),
            "accuracy": float(correct / positions),
        }
        if self.val is not None:
            vy = self._val_labels
            scores = _predict(self.net, self.val, self.eval_batch_size, self._normalize)
            if np.all(np.isfinite(scores)):
                logs["val_loss"], _ = softmax_cross_entropy(scores, vy)
            else:
                logs["val_loss"] = float("nan")
            pred = scores.argmax(-1)
            logs["val_accuracy"] = float(np.count_nonzero(pred == vy) / vy.size)
            if self.per_pixel:  # segmentation is judged by mean IoU
                C = int(self.net.output_shape[-1])
                logs["val_mean_iou"] = mean_iou_from_confusion(confusion_matrix(vy, pred, C))
        logs["lr"] = float(self.optimizer.lr)
        logs["time_s"] = self._epoch_time
        logs["images_per_s"] = float(images / self._epoch_time) if self._epoch_time > 0 else 0.0
        return logs

    def run(self) -> History:
        """Train until ``epochs`` epochs are complete or something stops the run."""
        self._emit("on_train_begin", {})
        try:
            while self.epoch < self.epochs and self.stop_reason is None:
                if self._order is None:
                    self._order = self.data_rng.permutation(len(self.data))
                    self._batch = 0
                    self._sums[:] = 0.0
                    self._epoch_time = 0.0
                self._emit("on_epoch_begin", self.epoch, {})
                t0 = time.perf_counter()
                self._feed = _Prefetch(self.data, self._order, self.batch_size, self._batch,
                                       self.prefetch)
                try:
                    while self._batch < self.steps_per_epoch:
                        if not self._train_batch():
                            break
                        self._emit("on_batch_end", self._batch - 1, self._batch_logs(t0))
                        if self.stop_requested:
                            break
                finally:
                    self._feed.close()
                    self._feed = None
                self._epoch_time += time.perf_counter() - t0
                if self.stop_reason == "nan":
                    break
                if self._batch < self.steps_per_epoch:  # interrupted inside the epoch
                    self.stop_reason = "interrupted"
                    break
                logs = self._end_epoch()
                self.epoch += 1
                self._order = None
                self.history.epochs.append(logs)
                if not math.isfinite(logs.get("val_loss", 0.0)):
                    self._stop_nan(f"the validation loss is {logs['val_loss']}")
                    break
                self._emit("on_epoch_end", self.epoch - 1, logs)
                if self.stop_requested and self.stop_reason is None:
                    self.stop_reason = "interrupted"
            if self.stop_reason == "interrupted" and not self.stop_message:
                where = f"epoch {self.epoch + 1}, batch {self._batch}/{self.steps_per_epoch}" \
                    if self.in_epoch else f"the end of epoch {self.epoch}"
                self.stop_message = f"interrupted at {where}"
        finally:
            self.history.stop_reason = self.stop_reason
            self.history.message = self.stop_message
            self._emit("on_train_end", {"stop_reason": self.stop_reason})
            backend.release()               # the steps' kept buffers go back to the allocator
        return self.history

    def _batch_logs(self, t0: float) -> dict[str, Any]:
        loss_sum, correct, positions, images = self._sums
        elapsed = self._epoch_time + time.perf_counter() - t0
        return {
            "batch": self._batch, "batches": self.steps_per_epoch,
            "loss": loss_sum / positions, "accuracy": correct / positions,
            "images_per_s": images / elapsed if elapsed > 0 else 0.0,
        }


def fit(
    net: Graph,
    train_data: Any,
    val_data: Any = None,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: Any = "adam",
    lr: float | None = None,
    schedule: Callable[[int], float] | str | None = None,
    callbacks: Iterable[Callback] = (),
    seed: int | None = 0,
    augment: Augment | None = None,
    normalizer: Any = None,
    classes: Sequence[str] | None = None,
    resume: Checkpoint | str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    input_info: Mapping[str, Any] | None = None,
    prefetch: int | None = None,
) -> History:
    """Train ``net`` in place with mini-batch gradient descent on softmax cross-entropy.

    Args:
        net: the network (its weights are updated in place).
        train_data: a :class:`~convnet.data.Dataset`, any
            :class:`~convnet.data.dataset.DataSource` (e.g. packed shards opened with
            :func:`~convnet.data.shards.open_packed`: trained on out of core) or ``(x, y)``:
            images ``(N, *net.input_shape)``, labels ``(N,)`` or, for score-map outputs,
            ``(N, H, W)``. Each batch is gathered with one ``take(indices)``.
        val_data: the same, evaluated after every epoch (``val_loss``, ``val_accuracy``).
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: images per optimiser step; the last batch of an epoch may be smaller.
        optimizer: an :class:`~convnet.optim.Optimizer`, or a name for ``make_optimizer``
            (``"sgd"``, ``"adam"``, ``"adamw"``) with ``lr``.
        lr: learning rate (overrides the optimiser's when given).
        schedule: ``schedule(step) -> lr`` for the 0-based global step, or a name for
            ``make_schedule`` (``"constant"``, ``"step"``, ``"cosine"``, ``"onecycle"``).
        callbacks: :class:`~convnet.train.callbacks.Callback` objects (progress bar, metrics
            log, checkpoints, early stopping, signal handling), called in order.
        seed: seeds the generator that shuffles and augments (the network's own ``seed`` sets
            the initial weights and dropout).
        augment: ``augment(x, rng) -> x`` applied to each batch before normalisation (e.g.
            :class:`~convnet.data.transforms.Augmentation`).
        normalizer: applied to each batch (e.g. a fitted
            :class:`~convnet.data.transforms.Normalizer`); saved in checkpoints.
        classes: class names saved in checkpoints (default: ``train_data.classes``).
        resume: a checkpoint (or its path) of this run to continue exactly from.
        config, input_info: extra run settings and input conversion info saved in checkpoints.
        prefetch: batches gathered ahead by a background thread while the network computes
            (default: 2 for data read from disk, 0 for arrays in memory); results do not
            depend on it.

    Returns:
        :class:`History`; ``history.stop_reason`` says whether and why it stopped early. A NaN
        or Inf loss stops training (``"nan"``) with the weights left as they are; checkpoints
        already written are kept.

    Shape:
        x ``(N, H, W, D)`` (or ``(N, n)``), y ``(N,)`` or ``(N, Ho, Wo)``.

    >>> import convnet as cn, numpy as np
    >>> net = cn.build("INPUT(4x4x1) -> FC(2)", seed=0)
    >>> x = np.random.default_rng(0).random((32, 4, 4, 1), dtype=np.float32)
    >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    >>> h = cn.fit(net, (x, y), epochs=2, batch_size=8, lr=0.01)
    >>> len(h), h.stop_reason
    (2, None)
    """
    trainer = Trainer(
        net, train_data, val_data, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        lr=lr, schedule=schedule, callbacks=callbacks, seed=seed, augment=augment,
        normalizer=normalizer, classes=classes, config=config, input_info=input_info,
        prefetch=prefetch,
    )
    if resume is not None:
        trainer.restore(resume)
    return trainer.run()
