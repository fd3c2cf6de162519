"""The training loop: ``fit(net, train, val, ...)`` and ``evaluate(net, data)``.

One epoch is a permutation of the training images seeded by ``(seed, epoch)``, cut into
mini-batches by index: each batch is one ``data.take(order[i:i+B])`` (a
:class:`~convnet.data.dataset.DataSource`: arrays in memory, or packed shards on disk read with
bounded memory), gathered ahead by a background thread (``prefetch``) while the network
computes. Each image's augmentation and each unit's dropout mask are functions of the seed, the
epoch and the image's index in the data set (:mod:`convnet.keyed_random`), so a run is fully
determined by its seed, whatever the source, the prefetch depth and the number of processes;
the seed, the permutation of an interrupted epoch and the optimiser state go into checkpoints,
which is what makes ``--resume`` bit-identical to an uninterrupted run.

Data-parallel (``comm``, a :class:`~convnet.distributed.Comm` of N processes): ``batch_size`` is
the GLOBAL batch; process ``r`` takes the contiguous share ``shard(len(batch), r, N)`` of each
batch's indices, scales its loss gradient by its share of the batch's label positions, and one
fused allreduce sums the gradients before every process takes the same optimiser step. BN
layers use the global batch's statistics; metrics, validation and evaluation are split over the
processes and reduced; rank 0 alone runs the callbacks that print or write
(``Callback.root_only``) and writes checkpoints. Every process makes the same collective calls in
the same order, including on a short last batch where its share may be empty; an exception on
any process ends the whole job (:func:`convnet.distributed.abort_job`).

Labels may be per image, ``y (N,)``, or per pixel, ``y (N, H, W)`` for a network that outputs
score maps ``(N, H, W, C)`` (segmentation); loss and accuracy are then means over pixels.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import secrets
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
from convnet.distributed.comm import Comm, LocalComm, shard
from convnet.distributed.sync import (
    GradientBuffer,
    abort_job,
    broadcast_network,
    broadcast_optimizer,
)
from convnet.errors import ConfigError, ShapeError
from convnet.keyed_random import STREAM_AUGMENT, SampleKeys, epoch_order, stream_key
from convnet.net.graph import Graph
from convnet.ops.loss import softmax_cross_entropy
from convnet.train.callbacks import Callback
from convnet.train.checkpoint import Checkpoint, load_checkpoint, save
from convnet.train.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou_from_confusion,
    per_class_accuracy,
)

__all__ = ["History", "Trainer", "evaluate", "fit"]

Normalize = Callable[[np.ndarray], np.ndarray]
#: ``augment(x, keys_or_rng) -> x``: with ``by_sample = True`` (:class:`Augmentation`) it receives
#: the batch's :class:`~convnet.keyed_random.SampleKeys`; otherwise a generator seeded by
#: ``(seed, epoch, batch, rank)``.
Augment = Callable[[np.ndarray, Any], np.ndarray]


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
    """Batches ``order[b*B:(b+1)*B]`` from ``start`` on (this process's share of each, ``part``
    = ``(rank, size)``), gathered ``depth`` ahead by a thread; None for an empty share.

    Only the gather (``take``: reading and converting the images) runs in the thread; the
    augmentation and everything else that draws random numbers stays in the training thread,
    in the same order as without prefetching, so results do not depend on ``depth``, and a
    checkpoint written between batches holds the generators' true state. ``depth=0`` gathers in
    the calling thread. An exception in the thread (a shard whose hash is wrong) is raised by
    the next call to :meth:`next`.
    """

    def __init__(self, feed: _Feed, order: np.ndarray, batch_size: int, start: int,
                 depth: int, part: tuple[int, int] = (0, 1)) -> None:
        self.feed, self.order, self.batch_size = feed, order, batch_size
        self.part = part
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
        batch = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        lo, hi = shard(len(batch), *self.part)
        return batch[lo:hi]

    def _take(self, b: int) -> tuple[np.ndarray, np.ndarray] | None:
        idx = self._indices(b)
        return self.feed.take(idx) if len(idx) else None

    def _work(self, start: int) -> None:
        for b in range(start, self.steps):
            if self._stop.is_set():
                return
            try:
                item: Any = self._take(b)
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

    def next(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The next batch's ``(x, y)`` (this process's share; None when it is empty)."""
        b = self.next_batch
        self.next_batch += 1
        if self._thread is None:
            return self._take(b)
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
    comm: Comm | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, confusion matrix and per-class accuracy of ``net`` on ``data``.

    Args:
        net: the network (evaluation mode: BN running statistics, no dropout).
        data: a Dataset or ``(x, y)``; labels per image or per pixel.
        batch_size: images per forward pass (memory only; results do not depend on it).
        normalizer: applied to the images first (a Normalizer, callable, or ``{mean, std}``).
        num_classes: size of the confusion matrix (default: the network's outputs).
        comm: a :class:`~convnet.distributed.Comm` of several processes: each evaluates its
            contiguous share of the images, and the sums, the confusion matrix and the
            predictions are gathered on every process (call it on every process).

    Returns:
        ``{"loss", "accuracy", "count", "confusion" (C, C) int64, "per_class_accuracy" (C,),
        "predictions" (N, ...) int64}``; for per-pixel labels also ``"iou" (C,)`` and
        ``"mean_iou"`` (over the classes present), and ``count`` counts pixels.
    """
    feed = _Feed(net, data, "evaluate")
    comm = comm if comm is not None else LocalComm()
    per_image = not feed.source.label_shape
    norm = _as_normalize(normalizer)
    C = int(num_classes or net.output_shape[-1])
    lo, hi = comm.shard(len(feed))
    res = _scores_and_sums(net, feed, feed.labels(np.arange(lo, hi, dtype=np.int64)), lo,
                           batch_size, norm, comm, C)
    pred, cm = res.pred, res.confusion
    if per_image:  # a (1, 1, K) output classifies: one prediction per image
        pred = pred.reshape(-1)
    if comm.size > 1:
        counts = [b - a for a, b in (shard(len(feed), r, comm.size) for r in range(comm.size))]
        pred = comm.allgather(pred, counts)
    out = {
        "loss": res.loss,
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "count": int(res.positions),
        "confusion": cm,
        "per_class_accuracy": per_class_accuracy(cm),
        "predictions": pred,
    }
    if not per_image:  # per-pixel labels: add the segmentation measures
        out["iou"] = iou_per_class(cm)
        out["mean_iou"] = mean_iou_from_confusion(cm)
    return out


@dataclass
class _EvalSums:
    """A split evaluation, reduced over the processes: the mean loss (NaN when any score was not
    finite), correct and total label positions, the confusion matrix, and this process's own
    predictions."""

    loss: float
    correct: int
    positions: int
    confusion: np.ndarray
    pred: np.ndarray


def _scores_and_sums(net: Graph, feed: _Feed, y: np.ndarray, start: int, batch_size: int,
                     norm: Normalize | None, comm: Comm, C: int) -> _EvalSums:
    """Scores of samples ``start .. start+len(y)`` (this process's share), then the loss, the
    counts and the confusion matrix over every process's share: one float64 allreduce."""
    scores = _predict(net, feed, batch_size, norm, start, start + len(y))
    finite = bool(np.all(np.isfinite(scores)))
    loss = float("nan")
    if finite and y.size:
        loss, _ = softmax_cross_entropy(scores, y)
    pred = scores.argmax(axis=-1)
    cm = confusion_matrix(y.reshape(-1), pred.reshape(-1), C)
    correct, positions = int(np.trace(cm)), int(y.size)
    if comm.size > 1:
        buf = np.concatenate([[loss * positions if finite and positions else 0.0,
                               0.0 if finite else 1.0, float(positions)],
                              cm.reshape(-1).astype(np.float64)])
        comm.allreduce(buf)
        positions = int(buf[2])
        loss = float(buf[0] / positions) if buf[1] == 0 and positions else float("nan")
        cm = np.rint(buf[3:]).astype(np.int64).reshape(C, C)
        correct = int(np.trace(cm))
    return _EvalSums(float(loss), correct, positions, cm, pred)


def _predict(net: Graph, feed: _Feed, batch_size: int, norm: Normalize | None,
             start: int = 0, stop: int | None = None) -> np.ndarray:
    """Scores of samples ``start .. stop`` (default: all), ``batch_size`` images at a time
    (the images are read batch by batch, so only the scores are ever held)."""
    stop = len(feed) if stop is None else stop
    outs = []
    for idx in iter_ranges(stop - start, batch_size):
        xb, _ = feed.take(idx + start)
        outs.append(net.forward(norm(xb) if norm else xb, train=False))
    if not outs:
        return np.zeros((0, *net.output_shape), net.dtype)
    return np.concatenate(outs)


# -------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run: the loop, its state, and how to checkpoint it.

    Built and run by :func:`fit`; callbacks receive it (``callback.trainer``) to read the state,
    save checkpoints (:meth:`save`) or stop training (:meth:`stop`). See :func:`fit` for the
    arguments. ``trainer.comm`` is the run's communicator (:class:`LocalComm` for one process),
    ``trainer.rank`` this process's rank.
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
        comm: Comm | None = None,
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
        #: the run's key: what the data order, augmentation and dropout masks are functions of
        #: (the seed; without one a random key, rank 0's, broadcast when the run starts)
        self.key = int(seed) if seed is not None else secrets.randbits(64)
        self.comm: Comm = comm if comm is not None else LocalComm()
        self.rank = self.comm.rank
        self.distributed = self.comm.size > 1
        self._dropouts = [ly for ly in net.layers if hasattr(ly, "use_keys")]
        self._bns = [ly for ly in net.layers if hasattr(ly, "forward_without_samples")]
        self._grads = GradientBuffer(net) if self.distributed else None
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
        """Write a checkpoint of the run as it stands (atomic; see :mod:`checkpoint`).

        Only rank 0 writes (every process holds the same state); on the others this returns
        ``path`` and writes nothing."""
        if self.rank != 0:
            return Path(path)
        loop = {}
        if self._order is not None:
            loop = {"order": self._order, "batch": np.array(self._batch, np.int64),
                    "sums": self._sums.copy(), "time": np.array(self._epoch_time)}
        config = {**self.config, "epochs": self.epochs, "batch_size": self.batch_size,
                  "seed": self.seed, "step": self.step, "key": self.key,
                  "processes": self.comm.size}
        out = save(
            self.net, path, optimizer=self.optimizer, epoch=self.epoch,
            metrics=self.history.last, history=self.history.epochs, classes=self.classes,
            normalizer=_normalizer_arrays(self.normalizer), input_info=self.input_info,
            config=config, loop=loop, **extra,
        )
        self.last_saved = (out, self.epoch)
        return out

    def restore(self, ckpt: Checkpoint | str | os.PathLike[str]) -> None:
        """Continue from a checkpoint written by :meth:`save`: weights, optimiser, the run's key,
        the network's generator, epoch, history and, for an interrupted epoch, its permutation
        and position. A checkpoint written by N processes resumes on any number: nothing in it
        depends on N."""
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
        key = ckpt.config.get("key", ckpt.config.get("seed"))
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 1 << 64:
            self.key = key
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
            n = len(self.data)
            if n and (order.min() < 0 or order.max() >= n
                      or int(np.bincount(order, minlength=n).max()) != 1):
                raise CheckpointError(
                    f"{path}: its interrupted epoch's sample order is not a permutation of the "
                    f"{n:,} images (each index 0..{n - 1} exactly once): the checkpoint is "
                    "damaged or was edited; resume from an earlier checkpoint, or start the "
                    "epoch again from the last epoch's checkpoint"
                )
            if not np.all(np.isfinite(sums)) or not np.isfinite(t):
                raise CheckpointError(f"{path}: its interrupted epoch's running sums are not "
                                      "finite: the checkpoint is damaged")
            self._order, self._batch, self._sums, self._epoch_time = order, batch, sums, t

    # -- the loop --------------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            if self.rank == 0 or not getattr(cb, "root_only", False):
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

    def _augment(self, xb: np.ndarray, keys: SampleKeys) -> np.ndarray:
        if getattr(self.augment, "by_sample", False):
            return self.augment(xb, keys)
        # a plain augment(x, rng): a generator of its own per (seed, epoch, batch, rank), so
        # resuming stays exact (its numbers depend on how the batch is split, not on history)
        seq = [stream_key(self.key, STREAM_AUGMENT), self.epoch, self._batch, self.rank]
        return self.augment(xb, np.random.default_rng(seq))

    def _train_batch(self) -> bool:
        """One optimiser step on the next batch; False when the loss is not finite.

        Distributed, every process makes the same collective calls in this order: the BN
        layers' forward reductions, the metrics (loss sum, correct, positions, a non-finite
        flag), the BN layers' backward reductions (in reverse), the fused gradients. A process
        whose share of the batch is empty joins each with zeros.
        """
        batch = self._feed.next()  # type: ignore[union-attr]
        size = len(self._order) - self._batch * self.batch_size  # type: ignore[arg-type]
        images = min(self.batch_size, size)                      # in the global batch
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(self.step)
        loss, correct, positions, bad = 0.0, 0, 0, 0
        dscores = None
        if batch is not None:
            xb, yb = batch
            lo, _ = shard(images, self.rank, self.comm.size)
            start = self._batch * self.batch_size + lo
            keys = SampleKeys(self.key, self.epoch,
                              self._order[start:start + len(xb)])  # type: ignore[index]
            if self.augment is not None:
                xb = self._augment(xb, keys)
            if self._normalize is not None:
                xb = self._normalize(xb)
            for layer in self._dropouts:
                layer.use_keys(keys)
            # A diverging run overflows inside the layers; that is reported below, once,
            # clearly, instead of as a stream of RuntimeWarnings.
            with np.errstate(over="ignore", invalid="ignore"):
                scores = self.net.forward(xb, train=True)
            positions = int(yb.size)
            if not np.all(np.isfinite(scores)):
                bad = 1
            else:
                loss, dscores = softmax_cross_entropy(scores, yb)
                if not math.isfinite(loss):
                    bad = 2
                else:
                    correct = int(np.count_nonzero(scores.argmax(axis=-1) == yb))
        else:
            for layer in self._bns:
                layer.forward_without_samples()
        loss_sum = loss * positions
        if self.distributed:
            m = self.comm.allreduce(np.array([loss_sum if not bad else 0.0, correct, positions,
                                              bad == 1, bad == 2], np.float64))
            loss_sum, correct, total = float(m[0]), int(m[1]), int(m[2])
            bad = 1 if m[3] else (2 if m[4] else 0)
        else:
            total = positions
        if bad:
            self._stop_nan("the network's output holds NaN or Inf" if bad == 1 else
                           f"the loss is {loss if not self.distributed else 'not finite'}")
            return False
        if dscores is not None:
            if total != positions:   # this process's share of the global batch's mean loss
                dscores *= dscores.dtype.type(positions / total)
            self.net.backward(dscores)
        else:
            for layer in reversed(self._bns):
                layer.backward_without_samples()
        if self._grads is not None:
            self._grads.allreduce(self.comm, contribute=dscores is not None)
        self.optimizer.step(self.net)
        self.step += 1
        self._batch += 1
        self._sums += (loss_sum, correct, total, images)
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
            C = int(self.net.output_shape[-1])
            lo, hi = self.comm.shard(len(self.val))
            res = _scores_and_sums(self.net, self.val, self._val_labels[lo:hi],  # type: ignore[index]
                                   lo, self.eval_batch_size, self._normalize, self.comm, C)
            logs["val_loss"] = res.loss
            logs["val_accuracy"] = float(res.correct / res.positions)
            if self.per_pixel:  # segmentation is judged by mean IoU
                logs["val_mean_iou"] = mean_iou_from_confusion(res.confusion)
        logs["lr"] = float(self.optimizer.lr)
        logs["time_s"] = self._epoch_time
        logs["images_per_s"] = float(images / self._epoch_time) if self._epoch_time > 0 else 0.0
        return logs

    # -- agreement between the processes ---------------------------------------------------------
    def _start(self) -> None:
        """Distributed: rank 0's weights, optimiser state and run state on every process (the
        same start, fresh or resumed), after checking that they run the same configuration."""
        if not self.distributed:
            return
        comm = self.comm
        broadcast_network(comm, self.net)
        broadcast_optimizer(comm, self.optimizer)
        mine = {"epochs": self.epochs, "batch_size": self.batch_size, "n": len(self.data),
                "val": len(self.val) if self.val is not None else 0}
        root = comm.broadcast_object(mine)
        if root != mine:
            diff = ", ".join(f"{k} {mine[k]} (rank 0: {root[k]})" for k in mine
                             if mine[k] != root[k])
            raise ConfigError(f"rank {self.rank} runs another configuration than rank 0: "
                              f"{diff}; start every process with the same arguments and data")
        state = comm.broadcast_object({
            "key": self.key, "epoch": self.epoch, "step": self.step,
            "history": self.history.epochs, "batch": self._batch, "sums": self._sums.tolist(),
            "time": self._epoch_time, "in_epoch": self._order is not None,
        })
        self.key, self.epoch, self.step = state["key"], state["epoch"], state["step"]
        self.history = History(epochs=[dict(h) for h in state["history"]])
        self._batch, self._epoch_time = state["batch"], state["time"]
        self._sums = np.array(state["sums"], np.float64)
        if state["in_epoch"]:
            order = self._order if self._order is not None and self.rank == 0 else \
                np.empty(len(self.data), np.int64)
            self._order = comm.broadcast(np.ascontiguousarray(order, np.int64))
        else:
            self._order = None

    def _stop_now(self) -> bool:
        """Whether to stop before the next batch: this process's request, or (distributed)
        any process's, agreed by one small allreduce so that every process stops at the same
        batch (a signal reaches each process at its own moment)."""
        if self.distributed:
            if self.comm.allreduce(np.array([float(self.stop_requested)]))[0]:
                self.stop_requested = True
        return self.stop_requested

    def _agree_epoch_end(self) -> None:
        """Distributed, after an epoch's callbacks: a stop requested or decided (early stopping
        from a callback) on any process applies on all."""
        if not self.distributed:
            return
        codes = {"early_stop": 1.0, "nan": 2.0}
        mine = codes.get(self.stop_reason, 3.0) if self.stop_reason else 0.0
        flags = self.comm.allreduce(np.array([float(self.stop_requested), mine > 0,
                                              mine == 1, mine == 2]))
        if flags[0]:
            self.stop_requested = True
        if flags[1] and self.stop_reason is None:
            self.stop_reason = "early_stop" if flags[2] else ("nan" if flags[3] else "stopped")
            self.stop_message = "stopped by a callback on another process"

    def run(self) -> History:
        """Train until ``epochs`` epochs are complete or something stops the run.

        Distributed, an exception on any process ends the whole job (:func:`abort_job`): the
        others would otherwise wait for it in their next collective call forever."""
        try:
            return self._run()
        except BaseException as exc:
            if self.distributed and not isinstance(exc, SystemExit):
                abort_job(self.comm, exc)
            raise

    def _run(self) -> History:
        self._start()
        self._layers_for_run(True)
        self._emit("on_train_begin", {})
        try:
            while self.epoch < self.epochs and self.stop_reason is None:
                if self._order is None:
                    self._order = epoch_order(self.key, self.epoch, len(self.data))
                    self._batch = 0
                    self._sums[:] = 0.0
                    self._epoch_time = 0.0
                self._emit("on_epoch_begin", self.epoch, {})
                t0 = time.perf_counter()
                self._feed = _Prefetch(self.data, self._order, self.batch_size, self._batch,
                                       self.prefetch, (self.rank, self.comm.size))
                try:
                    while self._batch < self.steps_per_epoch:
                        if self._stop_now():
                            break
                        if not self._train_batch():
                            break
                        self._emit("on_batch_end", self._batch - 1, self._batch_logs(t0))
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
                self._agree_epoch_end()
                if self.stop_requested and self.stop_reason is None:
                    self.stop_reason = "interrupted"
            if self.stop_reason == "interrupted" and not self.stop_message:
                where = f"epoch {self.epoch + 1}, batch {self._batch}/{self.steps_per_epoch}" \
                    if self.in_epoch else f"the end of epoch {self.epoch}"
                self.stop_message = f"interrupted at {where}"
        finally:
            self.history.stop_reason = self.stop_reason
            self.history.message = self.stop_message
            self._layers_for_run(False)
            self._emit("on_train_end", {"stop_reason": self.stop_reason})
            backend.release()               # the steps' kept buffers go back to the allocator
        return self.history

    def _layers_for_run(self, start: bool) -> None:
        """Hand the BN layers the communicator for the run (synchronised statistics), and take
        it back at the end: a network used afterwards on its own does no collective calls."""
        for layer in self._bns:
            layer.comm = self.comm if start and self.distributed else None
        if not start:
            for layer in self._dropouts:
                layer.use_keys(None)

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
    comm: Comm | None = None,
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
        batch_size: images per optimiser step, over all processes (the global batch); the last
            batch of an epoch may be smaller.
        optimizer: an :class:`~convnet.optim.Optimizer`, or a name for ``make_optimizer``
            (``"sgd"``, ``"adam"``, ``"adamw"``) with ``lr``.
        lr: learning rate (overrides the optimiser's when given).
        schedule: ``schedule(step) -> lr`` for the 0-based global step, or a name for
            ``make_schedule`` (``"constant"``, ``"step"``, ``"cosine"``, ``"onecycle"``).
        callbacks: :class:`~convnet.train.callbacks.Callback` objects (progress bar, metrics
            log, checkpoints, early stopping, signal handling), called in order.
        seed: what the data order, each image's augmentation and each unit's dropout mask are
            functions of, with the epoch and the image's index (:mod:`convnet.keyed_random`);
            None: a random one (saved in checkpoints). The network's own ``seed`` sets the
            initial weights.
        augment: ``augment(x, keys) -> x`` applied to each batch before normalisation, e.g.
            :class:`~convnet.data.transforms.Augmentation` (``by_sample = True``: it receives
            the batch's :class:`~convnet.keyed_random.SampleKeys`); any other callable
            ``augment(x, rng)`` receives a generator seeded by ``(seed, epoch, batch, rank)``,
            so its draws depend on how many processes share the batch.
        normalizer: applied to each batch (e.g. a fitted
            :class:`~convnet.data.transforms.Normalizer`); saved in checkpoints.
        classes: class names saved in checkpoints (default: ``train_data.classes``).
        resume: a checkpoint (or its path) of this run to continue exactly from.
        config, input_info: extra run settings and input conversion info saved in checkpoints.
        prefetch: batches gathered ahead by a background thread while the network computes
            (default: 2 for data read from disk, 0 for arrays in memory); results do not
            depend on it.
        comm: a :class:`~convnet.distributed.Comm` for data-parallel training: call ``fit``
            with the same arguments on every process (``mpiexec -n N python script.py`` with
            ``comm=convnet.distributed.MPIComm()``); each trains on its share of every batch
            and they end with the same weights, those one process would reach up to float
            rounding. Rank 0's weights and optimiser state are broadcast at the start; only
            rank 0 runs the callbacks that print or write files. Give each process its share
            of the machine's threads (``threadpoolctl.threadpool_limits(cores // processes)``;
            ``convnet train`` does). Default: one process.

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
        prefetch=prefetch, comm=comm,
    )
    if resume is not None:
        trainer.restore(resume)
    return trainer.run()
