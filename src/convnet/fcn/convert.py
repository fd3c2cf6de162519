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

import numpy as np

from convnet.arith import fmt_shape
from convnet.errors import ConfigError
from convnet.layers import Layer
from convnet.net import blocks as B
from convnet.net.graph import Graph
from convnet.net.sequential import Sequential


def conversion_plan(net: Graph) -> list[tuple[Layer, Layer | None]]:
    """``(original layer, replacement)`` pairs in the network's order; the replacement is None
    when the layer is dropped (FLATTEN), a new CONV/AVGPOOL where it changes (each layer says
    what it becomes: :meth:`~convnet.layers.Layer.convolutional_twin`), and an unbuilt copy
    otherwise.

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
    # per node: the spatial size of the last volume on its path, and whether it was flattened
    state: dict[int, tuple[tuple[int, int], bool]] = {
        -1: ((net.input_shape[0], net.input_shape[1]), False)}
    for i, layer in enumerate(net.layers):
        grid, flattened = state[net.inputs_of[i][0]]
        shape = layer.input_shape
        if len(shape) == 3:
            grid = (shape[0], shape[1])
        if flattened and layer.count_params() and grid != (1, 1) and not layer.collapses:
            raise ConfigError(
                f"{layer.describe()} acts on the {fmt_shape(shape)} features FLATTEN made of "
                f"a {grid[0]}x{grid[1]} volume, with one parameter per feature: a CONV "
                "network has no per-position equivalent. Put it before FLATTEN, or after FC."
            )
        twin = layer.convolutional_twin(grid)
        plan.append((layer, twin))
        if twin is None:
            state[i] = (grid, True)
        elif layer.collapses:
            state[i] = ((1, 1), False)       # an FC or GAP: now a 1 x 1 x K volume
        else:
            state[i] = (grid, flattened)
    return plan


def _twin_items(items: list[B.Item], twins: dict[int, Layer | None]) -> list[B.Item]:
    out: list[B.Item] = []
    for it in items:
        if isinstance(it, B.Block):
            out.append(B.Block(it.kind, [_twin_items(b, twins) for b in it.branches],
                               identity=it.identity, merge=twins[id(it.merge)]))
        elif twins[id(it)] is not None:
            out.append(twins[id(it)])
    return out


def to_fully_convolutional(net: Graph) -> Graph:
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
    twins = {id(old): new for old, new in plan}
    if isinstance(net, Sequential):
        fcn: Graph = Sequential([new for _, new in plan if new is not None], net.input_shape,
                                seed=net.seed, dtype=net.dtype, weights=net.has_weights)
    else:
        fcn = Graph(_twin_items(net.items, twins), net.input_shape, seed=net.seed,
                    dtype=net.dtype, weights=net.has_weights)
    for attr in ("classes", "normalizer"):  # what `load` attaches travels with the network
        if hasattr(net, attr):
            setattr(fcn, attr, getattr(net, attr))
    if not net.has_weights:
        return fcn
    for old, new in plan:
        if new is not None:
            old.copy_weights_to(new)
    # dropout masks continue from the same generator state
    fcn.rng.bit_generator.state = net.rng.bit_generator.state
    return fcn


def scores_from_map(score_map: np.ndarray) -> np.ndarray:
    """``(N, 1, 1, K) -> (N, K)``: the converted network's output on the original size."""
    return score_map.reshape(score_map.shape[0], -1)
