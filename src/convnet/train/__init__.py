"""Training: ``fit``, ``evaluate``, callbacks, and checkpoints (``save`` / ``load``).

>>> import convnet as cn
>>> callable(cn.fit), callable(cn.save), callable(cn.load)
(True, True, True)
"""

from convnet.train import callbacks
from convnet.train.callbacks import (
    Callback,
    EarlyStopping,
    MetricsLog,
    ModelCheckpoint,
    ProgressBar,
    StopOnSignal,
)
from convnet.train.checkpoint import Checkpoint, load, load_checkpoint, save
from convnet.train.loop import History, Trainer, evaluate, fit
from convnet.train.metrics import accuracy, confusion_matrix, per_class_accuracy

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "History",
    "MetricsLog",
    "ModelCheckpoint",
    "ProgressBar",
    "StopOnSignal",
    "Trainer",
    "accuracy",
    "callbacks",
    "confusion_matrix",
    "evaluate",
    "fit",
    "load",
    "load_checkpoint",
    "per_class_accuracy",
    "save",
]
