"""Optimisers (SGD, Adam, AdamW) and learning-rate schedules (pure functions of the step)."""

from convnet.optim.optimizers import SGD, Adam, AdamW, HasParameters, Optimizer, make_optimizer
from convnet.optim.schedules import (
    SCHEDULE_NAMES,
    ConstantLR,
    CosineLR,
    MultiStepLR,
    OneCycleLR,
    Schedule,
    StepLR,
    make_schedule,
)

__all__ = [
    "SCHEDULE_NAMES",
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineLR",
    "HasParameters",
    "MultiStepLR",
    "OneCycleLR",
    "Optimizer",
    "Schedule",
    "StepLR",
    "make_optimizer",
    "make_schedule",
]
