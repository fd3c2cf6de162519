"""Reports on a network's shapes and counts, built on :mod:`convnet.arith` (no weights needed).

- :func:`summary`: a table of every layer (volume, parameters, MACs, receptive field,
  activation memory) with totals, as text, markdown, csv or json.
- :func:`explain`: the derivation of every layer in words and numbers, including a
  configuration that does not fit.

Both take a network (:class:`~convnet.net.graph.Graph` or ``Sequential``), spec text, a spec
file, a zoo name ("vgg16") or a saved model (a path ending in ``.npz``); see
:func:`load_network`.

>>> from convnet.report import summary
>>> "138,357,544" in summary("vgg16")
True
"""

from __future__ import annotations

import os
import re
from typing import Any

from convnet.errors import CheckpointError, ConfigError
from convnet.net.graph import Graph

Source = Any  # Graph | str | os.PathLike: spec text, spec file, zoo name, or saved .npz


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"224x224x3" -> (224, 224, 3)``; ``"64" -> (64,)``. :class:`ConfigError` otherwise.

    >>> parse_input_shape("32x32x3")
    (32, 32, 3)
    """
    s = str(text).strip().lower().replace(" ", "")
    if not re.fullmatch(r"\d+(x\d+x\d+)?", s):
        raise ConfigError(
            f"input size {text!r} must read HxWxD (e.g. 224x224x3) or n for a vector"
        )
    dims = tuple(int(d) for d in s.split("x"))
    if not all(d >= 1 for d in dims):
        raise ConfigError(f"input size {text!r}: every dimension must be at least 1")
    return dims


def _is_saved_model(source: Any) -> bool:
    """A path ending in ``.npz`` or ``.onnx``, or a directory (a training run holding a
    checkpoint)."""
    if not isinstance(source, str | os.PathLike):
        return False
    path = os.fspath(source).strip()
    if path.lower().endswith((".npz", ".onnx")):
        return True
    try:
        return "\n" not in path and os.path.isdir(path)
    except (OSError, ValueError):
        return False


def _load_saved(path: str) -> Graph:
    try:
        from convnet.train.checkpoint import load
    except ModuleNotFoundError as exc:
        raise CheckpointError(
            f"cannot read {path}: reading saved models needs convnet.train.checkpoint, which "
            "this build does not have"
        ) from exc
    return load(path)


def load_network(source: Source, input_shape: tuple[int, ...] | None = None) -> Graph:
    """The network ``source`` names, with shapes inferred and, where we build it, no weights.

    ``source`` is a network, spec text, a spec file, a zoo name, or a saved model
    (a ``.npz`` file, a run directory or an ``.onnx`` file, read with
    ``convnet.train.checkpoint.load``).
    ``input_shape`` replaces the input size (a network is rebuilt from its spec for that).

    Raises:
        SpecError, ShapeError: from :func:`convnet.spec.build`.
        CheckpointError: a saved model that cannot be read.
    """
    from convnet.spec import build

    if isinstance(source, Graph):
        net = source
    elif _is_saved_model(source):
        net = _load_saved(os.fspath(source).strip())
    else:
        return build(source, input_shape=input_shape, weights=False)
    if input_shape is not None and tuple(input_shape) != tuple(net.input_shape):
        return build(net.spec, input_shape=input_shape, weights=False)
    return net


# Imported last: the submodules use load_network above. Binding the functions after the imports
# also keeps ``convnet.report.summary`` the function, not the submodule of the same name.
from convnet.report.explain import explain  # noqa: E402
from convnet.report.summary import summary  # noqa: E402

__all__ = ["explain", "load_network", "parse_input_shape", "summary"]
