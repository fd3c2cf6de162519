"""The exceptions convnet raises on bad input.

Every one is a ``ValueError`` (through :class:`ConvnetError`), so ``except ValueError`` catches
them all; the command line turns any of them into one readable line and exit status 2.

- :class:`ShapeError`: a configuration or array whose shapes do not work (a stride that does not
  fit, a filter larger than the padded input, a depth mismatch, a wrongly shaped array, stride 0,
  negative padding).
- :class:`InputError`: array values that cannot be used (NaN or Inf in the input, labels out of
  range).
- :class:`SpecError`: architecture text that does not parse; it points at the column.
- :class:`DataError`: a data set file that is missing, corrupt or not what its header says.
- :class:`CheckpointError`: a saved model that cannot be read safely.
- :class:`ConfigError`: any other invalid hyperparameter or option (a dropout ``p`` of 1.5, an
  unknown optimiser name).
"""

from __future__ import annotations


class ConvnetError(ValueError):
    """Base class of every error convnet raises on bad input."""


class ShapeError(ConvnetError):
    """A layer configuration or an array whose shapes do not work."""


class InputError(ConvnetError):
    """Array values that cannot be used: NaN or Inf, labels out of range."""


class SpecError(ConvnetError):
    """Architecture text that does not parse."""


class DataError(ConvnetError):
    """A data set that is missing, corrupt, or not what its header says."""


class CheckpointError(ConvnetError):
    """A saved model or checkpoint that cannot be read safely."""


class ConfigError(ConvnetError):
    """An invalid hyperparameter or option that is not about shapes."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConvnetError",
    "DataError",
    "InputError",
    "ShapeError",
    "SpecError",
]
