"""Sequential: a stack of layers whose every shape is known before any weight exists.

The simple case of :class:`~convnet.net.graph.Graph`: each layer reads the one before it. Every
method (forward, backward, predict, parameters, state_dict, spec, ...) is the graph's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet.errors import ConfigError
from convnet.layers.base import Layer
from convnet.net.graph import MAX_DIM, Graph, check_input_shape, choose_init

__all__ = ["MAX_DIM", "Sequential", "choose_init"]


class Sequential(Graph):
    """A network: layers applied one after the other.

    Every shape is inferred at construction, before any weight exists, so a stack that cannot
    work fails here with a :class:`~convnet.errors.ShapeError` naming the layer. Layers are named
    by kind and position: ``conv1, relu1, pool1, conv2, ..., fc1``.

    Args:
        layers: the layers, unbuilt (each object may appear once).
        input_shape: ``(H, W, D)`` for images or ``(n,)`` for vectors.
        seed: makes the initial weights and dropout masks reproducible.
        dtype: ``np.float32`` (default) or ``np.float64`` (for gradient checks).
        weights: ``False`` infers shapes and counts without allocating any array (what
            ``summary`` uses, so ``summary vgg16`` is instant).

    >>> import convnet as cn
    >>> net = cn.Sequential([cn.Conv(K=32, F=3, P=1), cn.ReLU(), cn.MaxPool(), cn.FC(10)],
    ...                     input_shape=(28, 28, 1), seed=0)
    >>> net.output_shape, net.num_params
    ((10,), 63050)
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape: Sequence[int],
        seed: int | None = None,
        dtype: Any = np.float32,
        weights: bool = True,
    ) -> None:
        self.input_shape = check_input_shape(input_shape)
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layer {i + 1} is {layer!r}, not a convnet layer")
            if layer.arity != 1:
                raise ConfigError(f"layer {i + 1} ({layer.kind}) merges branches: build a "
                                  "cn.Graph (or a spec with RES[...] / CAT[...]) instead")
        self._setup(layers, seed, dtype, weights)
