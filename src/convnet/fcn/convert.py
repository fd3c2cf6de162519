"""FC -> CONV: the same network, the same numbers, as a fully convolutional network.

An FC layer that looks at an ``H x W x D`` volume computes, for each of its K outputs, one dot
product with the whole volume: exactly what a CONV filter of extent ``F = (H, W)`` computes at the
single position where it fits. So (CS231n's VGG example):

- the first FC after a volume becomes ``CONV(K, F=(H, W))``: output ``1 x 1 x K``;
- each later FC (its input is now ``1 x 1 x K_prev``) becomes ``CONV(K, F=1)``;
- FLATTEN disappears (the CONV reads the volume directly); GAP becomes AVGPOOL with the window
  of its whole original input and stride 1, so it still averages that window everywhere.

The weights are the same numbers, reshaped: an FC weight matrix ``(H*W*D, K)`` rows are in the
flattening order ``(row, col, depth)`` (see :mod:`convnet.layers.dense`), so
``W_fc.reshape(H, W, D, K)`` is the filter bank, and moving K to the front gives the CONV layout
``(K, H, W, D)``.

On the original input size the converted network's output ``(N, 1, 1, K)`` equals the original
``(N, K)``; on a larger input it slides the whole classifier over the image and returns a map of
class scores, the network's total stride apart (see :mod:`convnet.fcn.maps`).
"""

from __future__ import annotations

import copy

import numpy as np

from convnet.arith import fmt_shape
from convnet.errors import ConfigError
from convnet.layers import FC, AvgPool, Conv, Flatten, GlobalAvgPool, Layer
from convnet.net.sequential import Sequential


def _copy_layer(layer: Layer) -> Layer:
    """A layer of the same kind and hyperparameters; the new network rebuilds its arrays and the
    weights are copied in afterwards."""
    # share nothing, and copy neither the old network nor the weight arrays (rebuilt anyway)
    memo = {id(v): None for v in (*layer.params.values(), *layer.grads.values(),
                                  *layer.buffers.values())}
    memo[id(layer.network)] = None
    new = copy.deepcopy(layer, memo)
    new.params, new.grads, new.buffers, new._cache = {}, {}, {}, None
    new.network, new.built = None, False
    return new


def conversion_plan(net: Sequential) -> list[tuple[Layer, Layer | None]]:
    """``(original layer, replacement)`` pairs; the replacement is None when the layer is
    dropped (FLATTEN), a new CONV/AVGPOOL where it changes, and an unbuilt copy otherwise.

    The FC's filter extent is the spatial size of the last *volume* before it: an FC straight
    after a CONV/POOL reads that volume, an FC after FLATTEN reads the volume FLATTEN unrolled
    (in the same order), and an FC after another FC or a GAP reads a ``1 x 1 x D`` volume.

    Raises :class:`ConfigError` for a network on a vector input (no image to slide over) and
    for a layer with per-feature parameters between FLATTEN and its FC (a BN over the ``H*W*D``
    flattened features has no per-depth-slice equivalent).
    """
    if len(net.input_shape) != 3:
        raise ConfigError(
            f"the network's input is a vector of {net.input_shape[0]} features: only a network "
            "on an H x W x D image can be made fully convolutional"
        )
    plan: list[tuple[Layer, Layer | None]] = []
    grid = (net.input_shape[0], net.input_shape[1])  # spatial size of the current volume
    flattened = False
    for layer in net.layers:
        shape = layer.input_shape
        if len(shape) == 3:
            grid = (shape[0], shape[1])
        if isinstance(layer, Flatten):
            plan.append((layer, None))
            flattened = True
            continue
        if isinstance(layer, FC):
            plan.append((layer, Conv(layer.K, F=grid, bias=layer.bias)))
            grid, flattened = (1, 1), False
        elif isinstance(layer, GlobalAvgPool):
            plan.append((layer, AvgPool(F=grid, S=1)))
            grid = (1, 1)
        else:
            if flattened and layer.count_params() and grid != (1, 1):
                raise ConfigError(
                    f"{layer.describe()} acts on the {fmt_shape(shape)} features FLATTEN made of "
                    f"a {grid[0]}x{grid[1]} volume, with one parameter per feature: a CONV "
                    "network has no per-position equivalent. Put it before FLATTEN, or after FC."
                )
            plan.append((layer, _copy_layer(layer)))
    return plan


def to_fully_convolutional(net: Sequential) -> Sequential:
    """The same network with every FC as a CONV; see the module docstring.

    Shape:
        On the original ``H x W x D`` input: ``(N, H, W, D) -> (N, 1, 1, K)`` (the original
        ``(N, K)`` scores, :func:`scores_from_map` reshapes). On a larger input that fits (see
        :func:`convnet.fcn.maps.sizes_that_fit`): ``(N, rows, cols, K)``.

    >>> import convnet as cn
    >>> net = cn.build("INPUT(8x8x1) -> CONV(4,F=3) -> RELU -> POOL(F=2,S=2) -> FC(16) -> FC(3)",
    ...                seed=0)
    >>> fcn = net.to_fully_convolutional()
    >>> fcn.spec
    'INPUT(8x8x1) -> CONV(4,F=3) -> RELU -> POOL -> CONV(16,F=3) -> CONV(3,F=1)'
    """
    plan = conversion_plan(net)
    fcn = Sequential([new for _, new in plan if new is not None], net.input_shape,
                     seed=net.seed, dtype=net.dtype, weights=net.has_weights)
    for attr in ("classes", "normalizer"):  # what `load` attaches travels with the network
        if hasattr(net, attr):
            setattr(fcn, attr, getattr(net, attr))
    if not net.has_weights:
        return fcn
    for old, new in plan:
        if new is None:
            continue
        if isinstance(old, FC):
            W = old.params["W"]
            fh, fw = new.window.F
            D = new.input_shape[2]
            # rows of W are (row, col, depth) in flattening order: the filter bank is a reshape
            new.params["W"][...] = W.reshape(fh, fw, D, old.K).transpose(3, 0, 1, 2)
            if old.bias:
                new.params["b"][...] = old.params["b"]
        else:
            for key, value in old.params.items():
                new.params[key][...] = value
            for key, value in old.buffers.items():
                new.buffers[key][...] = value
    # dropout masks continue from the same generator state
    fcn.rng.bit_generator.state = net.rng.bit_generator.state
    return fcn


def scores_from_map(score_map: np.ndarray) -> np.ndarray:
    """``(N, 1, 1, K) -> (N, K)``: the converted network's output on the original size."""
    return score_map.reshape(score_map.shape[0], -1)
