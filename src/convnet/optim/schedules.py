"""Learning-rate schedules: pure functions of the global step.

A schedule is called with the 0-based index of the optimiser step about to run and returns the
learning rate for it; nothing is stored between calls, so a run resumed at step ``s`` gets
exactly the rates it would have had (``schedule(s)``), with no scheduler state to checkpoint::

    opt.lr = schedule(step)
    opt.step(net)

Values match PyTorch's schedulers stepped once per batch (``scheduler.get_last_lr()`` before
the ``(step+1)``-th ``scheduler.step()``): :class:`StepLR` ~ ``StepLR``, :class:`MultiStepLR` ~
``MultiStepLR``, :class:`CosineLR` without warmup ~ ``CosineAnnealingLR(T_max=total_steps)``,
:class:`OneCycleLR` ~ ``OneCycleLR(cycle_momentum=False)``. Note :class:`ConstantLR` is simply
a constant, unlike PyTorch's ``ConstantLR`` (which scales the first iterations by a factor).
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Sequence
from typing import Any, Protocol

from convnet.errors import ConfigError

__all__ = [
    "ConstantLR",
    "CosineLR",
    "MultiStepLR",
    "OneCycleLR",
    "Schedule",
    "StepLR",
    "make_schedule",
]


class Schedule(Protocol):
    """``schedule(step) -> lr`` for a 0-based global step."""

    def __call__(self, step: int) -> float: ...


# ----------------------------------------------------------------------------------------------


def _positive_lr(owner: str, name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name} must be a number, received {name}={value!r}") from None
    if not (math.isfinite(out) and out > 0.0):
        raise ConfigError(f"{owner}: {name} must be finite and > 0, received {name}={value!r}")
    return out


def _int_at_least(owner: str, name: str, value: Any, low: int) -> int:
    try:
        out = operator.index(value)
    except TypeError:
        raise ConfigError(
            f"{owner}: {name} must be an integer, received {name}={value!r}"
        ) from None
    if out < low:
        raise ConfigError(f"{owner}: {name} must be >= {low}, received {name}={value!r}")
    return out


def _finite(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or a ConfigError naming the owner and the argument (the one
    check of optimizers' and schedules' real-valued settings)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name} must be a number, received {name}={value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{owner}: {name} must be finite, received {name}={value!r}")
    return out


def _check_step(owner: str, step: int) -> int:
    try:
        s = operator.index(step)
    except TypeError:
        raise ConfigError(f"{owner}: step must be an integer, received step={step!r}") from None
    if s < 0:
        raise ConfigError(f"{owner}: step must be >= 0 (0-based), received step={step}")
    return s


def _repr(obj: object, fields: dict[str, Any], defaults: dict[str, Any]) -> str:
    shown = [f"{k}={v!r}" for k, v in fields.items() if k not in defaults or defaults[k] != v]
    return f"{type(obj).__name__}({', '.join(shown)})"


# ----------------------------------------------------------------------------------------------


class ConstantLR:
    """The same learning rate at every step.

    Args:
        lr: finite, > 0.
    """

    def __init__(self, lr: float) -> None:
        self.lr = _positive_lr("ConstantLR", "lr", lr)

    def __call__(self, step: int) -> float:
        _check_step("ConstantLR", step)
        return self.lr

    def __repr__(self) -> str:
        return _repr(self, {"lr": self.lr}, {})


class StepLR:
    """Multiply the rate by ``gamma`` every ``step_size`` steps (steps, not epochs).

    ``lr(step) = lr * gamma ** (step // step_size)``

    Args:
        lr: initial rate, finite and > 0.
        step_size: steps between decays, >= 1 (pass ``epochs * steps_per_epoch`` to decay per
            epoch).
        gamma: decay factor, finite and > 0 (default 0.1).
    """

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = _positive_lr("StepLR", "lr", lr)
        self.step_size = _int_at_least("StepLR", "step_size", step_size, 1)
        self.gamma = _positive_lr("StepLR", "gamma", gamma)

    def __call__(self, step: int) -> float:
        s = _check_step("StepLR", step)
        return self.lr * self.gamma ** (s // self.step_size)

    def __repr__(self) -> str:
        return _repr(
            self,
            {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma},
            {"gamma": 0.1},
        )


class MultiStepLR:
    """Multiply the rate by ``gamma`` at each milestone step.

    ``lr(step) = lr * gamma ** (number of milestones <= step)``

    Args:
        lr: initial rate, finite and > 0.
        milestones: steps (0-based) from which each decay applies, >= 1, strictly increasing.
        gamma: decay factor, finite and > 0 (default 0.1).
    """

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.lr = _positive_lr("MultiStepLR", "lr", lr)
        ms = tuple(_int_at_least("MultiStepLR", "milestones[]", m, 1) for m in milestones)
        if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ConfigError(
                f"MultiStepLR: milestones must be strictly increasing, received {list(ms)}"
            )
        self.milestones = ms
        self.gamma = _positive_lr("MultiStepLR", "gamma", gamma)

    def __call__(self, step: int) -> float:
        s = _check_step("MultiStepLR", step)
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, s)

    def __repr__(self) -> str:
        return _repr(
            self,
            {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma},
            {"gamma": 0.1},
        )


class CosineLR:
    """Optional linear warmup, then cosine annealing from ``lr`` to ``min_lr``.

    With ``W = warmup_steps`` and ``T = total_steps``::

        lr(s) = lr * (s + 1) / W                                     for s < W
        lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2   for W <= s <= T
        lr(s) = min_lr                                               for s > T

    The warmup starts at ``lr / W`` (not 0, which would waste a step) and reaches ``lr`` at
    step ``W - 1``. Without warmup this is PyTorch's ``CosineAnnealingLR(T_max=T,
    eta_min=min_lr)``, except that past ``T`` it stays at ``min_lr`` instead of rising again.

    Args:
        lr: peak rate, finite and > 0.
        total_steps: steps of the whole run, >= 1.
        min_lr: final rate, 0 <= min_lr <= lr (default 0).
        warmup_steps: 0 <= warmup_steps < total_steps (default 0).
    """

    def __init__(
        self, lr: float, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0
    ) -> None:
        owner = "CosineLR"
        self.lr = _positive_lr(owner, "lr", lr)
        self.total_steps = _int_at_least(owner, "total_steps", total_steps, 1)
        self.min_lr = _finite(owner, "min_lr", min_lr)
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigError(
                f"CosineLR: min_lr must satisfy 0 <= min_lr <= lr, "
                f"received min_lr={min_lr!r} with lr={lr!r}"
            )
        self.warmup_steps = _int_at_least(owner, "warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(
                f"CosineLR: warmup_steps={warmup_steps} must be < total_steps={total_steps}, "
                "leaving steps to anneal"
            )

    def __call__(self, step: int) -> float:
        s = _check_step("CosineLR", step)
        w, t = self.warmup_steps, self.total_steps
        if s < w:
            return self.lr * (s + 1) / w
        if s >= t:
            return self.min_lr
        cos = math.cos(math.pi * (s - w) / (t - w))
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + cos) / 2.0

    def __repr__(self) -> str:
        return _repr(
            self,
            {
                "lr": self.lr,
                "total_steps": self.total_steps,
                "min_lr": self.min_lr,
                "warmup_steps": self.warmup_steps,
            },
            {"min_lr": 0.0, "warmup_steps": 0},
        )


class OneCycleLR:
    """The 1cycle policy (Smith & Topin): cosine up to ``max_lr``, then cosine down.

    PyTorch's ``OneCycleLR`` (two phases, ``anneal_strategy="cos"``) without momentum cycling::

        initial = max_lr / div_factor,   final = initial / final_div_factor
        a = pct_start * total_steps - 1,   b = total_steps - 1
        lr(s) = cos_anneal(initial, max_lr, s / a)              for s <= a
        lr(s) = cos_anneal(max_lr, final, (s - a) / (b - a))     for a < s <= b
        lr(s) = final                                            for s > b
        cos_anneal(start, end, pct) = end + (start - end) * (1 + cos(pi * pct)) / 2

    (PyTorch raises past the last step; this schedule stays at ``final`` instead. A phase of
    zero length, ``pct_start * total_steps == 1``, gives its end value.)

    Args:
        max_lr: peak rate, finite and > 0.
        total_steps: steps of the whole run, >= 1.
        pct_start: fraction of the steps spent rising, 0 <= pct_start <= 1 (default 0.3).
        div_factor: ``max_lr / initial``, > 0 (default 25).
        final_div_factor: ``initial / final``, > 0 (default 1e4).
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        owner = "OneCycleLR"
        self.max_lr = _positive_lr(owner, "max_lr", max_lr)
        self.total_steps = _int_at_least(owner, "total_steps", total_steps, 1)
        self.pct_start = _finite(owner, "pct_start", pct_start)
        if not 0.0 <= self.pct_start <= 1.0:
            raise ConfigError(
                f"OneCycleLR: pct_start must satisfy 0 <= pct_start <= 1, "
                f"received pct_start={pct_start!r} (0.3 spends the first 30% rising)"
            )
        self.div_factor = _positive_lr(owner, "div_factor", div_factor)
        self.final_div_factor = _positive_lr(owner, "final_div_factor", final_div_factor)
        self.initial_lr = self.max_lr / self.div_factor
        self.final_lr = self.initial_lr / self.final_div_factor
        # torch computes the phase ends as floats: float(pct_start * total_steps) - 1
        self._end_up = float(self.pct_start * self.total_steps) - 1.0
        self._end_down = float(self.total_steps - 1)

    @staticmethod
    def _anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def __call__(self, step: int) -> float:
        s = _check_step("OneCycleLR", step)
        if s > self._end_down:
            return self.final_lr
        if s <= self._end_up:
            start, end, a, b = self.initial_lr, self.max_lr, 0.0, self._end_up
        else:
            start, end, a, b = self.max_lr, self.final_lr, self._end_up, self._end_down
        pct = (s - a) / (b - a) if b != a else 1.0
        return self._anneal(start, end, pct)

    def __repr__(self) -> str:
        return _repr(
            self,
            {
                "max_lr": self.max_lr,
                "total_steps": self.total_steps,
                "pct_start": self.pct_start,
                "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor,
            },
            {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
        )


# ----------------------------------------------------------------------------------------------

SCHEDULE_NAMES = ("constant", "step", "cosine", "onecycle")


def make_schedule(
    name: str,
    lr: float,
    total_steps: int,
    steps_per_epoch: int,
    *,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_epochs: int = 0,
) -> Schedule:
    """Build a schedule by name (case-insensitive) for a run of ``total_steps`` steps.

    - ``"constant"``: :class:`ConstantLR` ``(lr)``.
    - ``"step"``: :class:`MultiStepLR`, x ``gamma`` (0.1) at each epoch in ``milestones``
      (epochs, converted to steps with ``steps_per_epoch``); without ``milestones``, at 50% and
      75% of the steps (``total_steps // 2`` and ``3 * total_steps // 4``, those that are >= 1).
    - ``"cosine"``: :class:`CosineLR` from ``lr`` to ``min_lr`` over ``total_steps``, after
      ``warmup_epochs * steps_per_epoch`` linear warmup steps.
    - ``"onecycle"``: :class:`OneCycleLR` with ``max_lr = lr`` and PyTorch's defaults.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones) or invalid values.
    """
    key = str(name).strip().lower()
    total_steps = _int_at_least("make_schedule", "total_steps", total_steps, 1)
    steps_per_epoch = _int_at_least("make_schedule", "steps_per_epoch", steps_per_epoch, 1)
    if key == "constant":
        return ConstantLR(lr)
    if key == "step":
        if milestones is None:
            steps = sorted({m for m in (total_steps // 2, 3 * total_steps // 4) if m >= 1})
        else:
            epochs = [_int_at_least("make_schedule", "milestones[]", m, 1) for m in milestones]
            steps = [e * steps_per_epoch for e in epochs]
        return MultiStepLR(lr, steps, gamma=gamma)
    if key == "cosine":
        warmup = _int_at_least("make_schedule", "warmup_epochs", warmup_epochs, 0)
        return CosineLR(lr, total_steps, min_lr=min_lr, warmup_steps=warmup * steps_per_epoch)
    if key == "onecycle":
        return OneCycleLR(lr, total_steps)
    raise ConfigError(
        f"unknown learning-rate schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}"
    )
