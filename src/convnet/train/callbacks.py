"""Callbacks: what happens around the training loop, Keras style.

A callback overrides any of ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)`` (``epoch``
and ``batch`` are 0-based; ``logs["epoch"]`` is the 1-based number of the completed epoch).
``self.trainer`` is the running :class:`~convnet.train.loop.Trainer`: callbacks read its state,
save checkpoints through it, and stop it.

Callbacks here keep no state of their own that a resumed run would need: the best epoch and the
epochs without improvement are recomputed from ``trainer.history``, which is checkpointed.

In data-parallel training every process runs the loop with the same history; a callback with
``root_only = True`` (the progress bar, the metrics log, checkpoints) runs on rank 0 alone, so
one process prints and writes. The others (early stopping, signal handling, your own by default)
run on every process: anything they decide must come out the same everywhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from convnet.errors import ConfigError
from convnet.train.checkpoint import BEST, LAST

if TYPE_CHECKING:
    from convnet.train.loop import Trainer

__all__ = [
    "DEFAULT_PROGRESS_INTERVAL",
    "Callback",
    "EarlyStopping",
    "MetricsLog",
    "ModelCheckpoint",
    "ProgressBar",
    "StopOnSignal",
    "best_epoch",
]


class Callback:
    """Base class: every hook does nothing.

    ``root_only``: run only on rank 0 of a data-parallel run (for callbacks that print or write
    files); False (the default) runs it on every process.
    """

    trainer: Trainer
    root_only: bool = False

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_train_end(self, logs: dict[str, Any]) -> None: ...


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"mode={mode!r} must be 'auto', 'min' or 'max'")
    if mode == "auto":
        return "min" if "loss" in monitor else "max"
    return mode


def best_epoch(history: Sequence[dict[str, Any]], monitor: str, mode: str = "auto",
               min_delta: float = 0.0) -> int | None:
    """Index (0-based) of the best record of ``monitor`` in ``history``, or None when no record
    has it. A later record must beat the best by more than ``min_delta`` to replace it."""
    sign = -1.0 if _mode(monitor, mode) == "min" else 1.0
    best, best_value = None, -math.inf
    for i, rec in enumerate(history):
        v = rec.get(monitor)
        if v is None or not math.isfinite(v):
            continue
        if best is None or sign * v > best_value + min_delta:
            best, best_value = i, sign * v
    return best


# -------------------------------------------------------------------------------- progress
def _fmt_rate(r: float) -> str:
    return f"{r:,.0f} img/s"


def _clock(seconds: float) -> str:
    """``[H:]MM:SS``, tqdm's clock format."""
    from tqdm import tqdm

    return tqdm.format_interval(max(0.0, seconds))


#: Seconds between two progress lines when the stream is not a terminal.
DEFAULT_PROGRESS_INTERVAL = 10.0


class ProgressBar(Callback):
    """Progress of every epoch: batches done, running loss and accuracy, images/s, and the time
    left in the epoch and in the whole run.

    On a terminal a tqdm bar redraws in place (at most 10 times a second) and gives way to one
    summary line per epoch. Elsewhere (a log file, a pipe, CI, ``nohup``) nothing can redraw, so
    a plain line is printed every ``interval`` seconds inside an epoch (``0``: after every
    batch; ``math.inf``: never), and the same summary line per epoch. Writes to ``stream``
    (default stderr), so the results printed on stdout stay clean.

    Args:
        stream: where to write (default ``sys.stderr``).
        width: the bar's total width in characters on a terminal (default: the terminal's).
        interval: seconds between progress lines off a terminal (default 10).
        redraw: seconds between two redraws of the bar on a terminal (default 0.1).
    """

    root_only = True

    def __init__(self, stream: IO[str] | None = None, width: int | None = None,
                 interval: float = DEFAULT_PROGRESS_INTERVAL, redraw: float = 0.1) -> None:
        if not (isinstance(interval, int | float) and interval >= 0):
            raise ConfigError(f"ProgressBar: interval must be a number of seconds >= 0 "
                              f"(math.inf for none), received {interval!r}")
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = float(interval)
        self.redraw = float(redraw)
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._bar: Any = None
        self._epoch_start = 0.0
        self._last_line = 0.0
        self._first_batch = 0
        self._epoch_times: list[float] = []

    # -- time left --------------------------------------------------------------------------
    def _left(self, done: int, total: int, now: float) -> tuple[float, float]:
        """Seconds left in this epoch and in the run, from this epoch's pace so far (batches
        done in this process: a resumed epoch's earlier batches took no time here)."""
        t = self.trainer
        elapsed = now - self._epoch_start
        ran = done - self._first_batch
        per_batch = elapsed / ran if ran > 0 else 0.0
        epoch_left = per_batch * (total - done)
        later = t.epochs - t.epoch - 1
        per_epoch = (sum(self._epoch_times) / len(self._epoch_times) if self._epoch_times
                     else per_batch * total)
        return epoch_left, epoch_left + later * per_epoch

    def _stats(self, logs: dict[str, Any]) -> str:
        return (f"loss {logs['loss']:.4f} acc {100 * logs['accuracy']:.2f}% "
                f"{_fmt_rate(logs['images_per_s'])}")

    # -- hooks ------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self._epoch_start = self._last_line = time.perf_counter()
        self._first_batch = -1

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        t = self.trainer
        done, total = logs["batch"], logs["batches"]
        now = time.perf_counter()
        if self._first_batch < 0:
            self._first_batch = done - 1
        epoch_left, run_left = self._left(done, total, now)
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                try:
                    size = os.get_terminal_size(self.stream.fileno())
                except (AttributeError, OSError, ValueError):
                    size = os.terminal_size((0, 0))
                # follow the terminal's width; a terminal that reports 0x0 (a bare pty, some
                # CI consoles) would make tqdm print nothing at all: 100x20 then
                ncols = self.width if self.width is not None else (
                    None if size.columns > 0 else 100)
                self._bar = tqdm(
                    total=total, initial=done - 1, file=self.stream, ncols=ncols,
                    nrows=None if size.lines > 0 else 20,
                    dynamic_ncols=ncols is None, leave=False, unit="batch",
                    desc=f"epoch {t.epoch + 1}/{t.epochs}", mininterval=self.redraw,
                    bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                               "[{elapsed}<{remaining}{postfix}]",
                )
            later = f", run {_clock(run_left)} left" if t.epoch + 1 < t.epochs else ""
            self._bar.set_postfix_str(self._stats(logs) + later, refresh=False)
            self._bar.update(done - self._bar.n)
            return
        if now - self._last_line >= self.interval and done < total:
            self._last_line = now
            self.stream.write(
                f"epoch {t.epoch + 1}/{t.epochs} {done}/{total} ({100 * done / total:.0f}%) "
                f"{self._stats(logs)}, epoch {_clock(epoch_left)} left, run "
                f"{_clock(run_left)} left\n")
            self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        t = self.trainer
        self._epoch_times.append(time.perf_counter() - self._epoch_start)
        if self._bar is not None:
            self._bar.close()  # leave=False: the bar is wiped, the summary line takes its place
            self._bar = None
        n = t.steps_per_epoch
        line = (
            f"epoch {logs['epoch']}/{t.epochs} {n}/{n} loss {logs['loss']:.4f} "
            f"acc {100 * logs['accuracy']:.2f}%"
        )
        if "val_loss" in logs:
            line += f" | val_loss {logs['val_loss']:.4f} val_acc {100 * logs['val_accuracy']:.2f}%"
        if "val_mean_iou" in logs:
            line += f" val_mIoU {logs['val_mean_iou']:.3f}"
        line += f" | {logs['time_s']:.1f}s {_fmt_rate(logs['images_per_s'])} lr {logs['lr']:.3g}"
        self.stream.write(line + "\n")
        self.stream.flush()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._bar is not None:  # interrupted inside an epoch: leave the partial bar visible
            self._bar.leave = True
            self._bar.close()
            self._bar = None


# ----------------------------------------------------------------------------- metrics log
CSV_FIELDS = ("epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time_s",
              "images_per_s")


class MetricsLog(Callback):
    """``metrics.csv`` and ``metrics.jsonl`` in ``run_dir``: one row / JSON object per epoch.

    At the start of training both files are rewritten from ``trainer.history`` (empty for a new
    run; the epochs so far for a resumed one), so a resumed run's log has each epoch once even if
    the previous process died between logging and checkpointing.
    """

    root_only = True

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        self.csv_path = self.dir / "metrics.csv"
        self.jsonl_path = self.dir / "metrics.jsonl"

    def _row(self, rec: dict[str, Any]) -> list[Any]:
        return [rec.get(k, "") for k in CSV_FIELDS]

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        history = self.trainer.history.epochs
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_FIELDS)
            w.writerows(self._row(r) for r in history)
        with open(self.jsonl_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in history)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(self._row(logs))
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(logs) + "\n")


# ------------------------------------------------------------------------------ checkpoints
class ModelCheckpoint(Callback):
    """Save ``last.npz`` after every epoch and ``best.npz`` whenever ``monitor`` improves.

    ``monitor`` falls back to the training ``accuracy`` when the logs lack it (no validation
    data). When training is interrupted (:meth:`Trainer.request_stop`) ``last.npz`` is saved
    with the position inside the epoch, so ``--resume`` continues from that very batch. After a
    NaN loss nothing is saved: the last good checkpoint stays.
    """

    root_only = True

    def __init__(self, run_dir: str | os.PathLike[str], monitor: str = "val_accuracy",
                 mode: str = "auto", save_best: bool = True) -> None:
        self.dir = Path(run_dir)
        self.monitor = monitor
        self.mode = _mode(monitor, mode)
        self.save_best = save_best
        self.last_path = self.dir / LAST
        self.best_path = self.dir / BEST

    def _key(self, logs: dict[str, Any]) -> str:
        return self.monitor if self.monitor in logs else "accuracy"

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        t = self.trainer
        if self.save_best:
            key = self._key(logs)
            mode = self.mode if key == self.monitor else "max"
            if best_epoch(t.history.epochs, key, mode) == len(t.history.epochs) - 1:
                t.save(self.best_path, best_monitor=key)
        # last, so that trainer.last_saved (quoted when training stops on NaN) is last.npz
        t.save(self.last_path)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if logs.get("stop_reason") == "interrupted" and self.trainer.in_epoch:
            self.trainer.save(self.last_path)


# --------------------------------------------------------------------------- early stopping
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs.

    Args:
        monitor: a key of the epoch logs: ``val_loss`` (default), ``val_accuracy``, ``loss``...
        patience: epochs without improvement to tolerate (>= 1).
        min_delta: the smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (min for losses, max otherwise).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"EarlyStopping: patience must be a whole number >= 1, received "
                              f"{patience!r}")
        if not (isinstance(min_delta, int | float) and math.isfinite(min_delta)
                and min_delta >= 0):
            raise ConfigError(f"EarlyStopping: min_delta must be >= 0, received {min_delta!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = _mode(monitor, mode)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.monitor not in logs:
            have = ", ".join(k for k in logs if k not in ("epoch", "step"))
            raise ConfigError(
                f"EarlyStopping monitors {self.monitor!r}, which the epoch logs lack (they hold "
                f"{have}); pass validation data or monitor one of those"
            )
        history = self.trainer.history.epochs
        best = best_epoch(history, self.monitor, self.mode, self.min_delta)
        waited = len(history) - 1 - (best if best is not None else -1)
        if waited >= self.patience:
            best_txt = "never improved" if best is None else \
                f"best {history[best][self.monitor]:.4f} at epoch {history[best]['epoch']}"
            self.trainer.stop(
                "early_stop",
                f"early stopping: {self.monitor} has not improved for {waited} epochs "
                f"({best_txt}, patience {self.patience})",
            )


# ---------------------------------------------------------------------------------- signals
class StopOnSignal(Callback):
    """First Ctrl-C (SIGINT) or SIGTERM: finish the batch, save, stop; a second one kills.

    Installs the handlers in ``on_train_begin`` and restores the previous ones in
    ``on_train_end``. Meant for the command line: a library should not take over a program's
    signals, so :func:`~convnet.train.loop.fit` never installs it by itself. Only works in the
    main thread (a limit of Python's ``signal``).
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                 stream: IO[str] | None = None) -> None:
        self.signals = tuple(signals)
        self.stream = stream if stream is not None else sys.stderr
        self._previous: dict[int, Any] = {}
        self.received: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum
        self.trainer.request_stop()
        # The next signal gets the old behaviour (KeyboardInterrupt, or termination).
        self._restore()
        if getattr(self.trainer, "rank", 0) != 0:   # every process gets it; one says so
            return
        try:
            name = signal.Signals(signum).name
            self.stream.write(f"\n{name} received: finishing the batch, then saving "
                              "(send it again to stop at once)\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self._restore()
