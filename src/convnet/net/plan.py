"""The execution plan: the order a network runs its layers in, and where it fuses them.

A network is a list of nodes in topological order (``layers[i]`` reads the outputs of
``inputs_of[i]``, ``-1`` being the network's input). The plan is a list of steps, each producing
one node's value; most steps run one layer, a few run two or three layers in one pass. Every
rewrite only removes memory passes and changes no result (but the CONV -> POOL step's bias
gradient, summed over the tiles in another order: the last bits in float32):

- **RELU -> POOL runs as POOL -> RELU.** Max pooling commutes with any nondecreasing function,
  so ``pool(relu(x)) == relu(pool(x))``, and the RELU then touches a quarter of the values (for
  2x2 pooling), forward and backward. The gradients agree too: where a window's max is positive
  both pick the same first argmax; where it is <= 0 the RELU gradient is 0 either way.
- **POOL -> RELU in one pass**: the max pool applies the RELU to each range of images it has
  just pooled, and its backward takes the RELU's mask the same way. The RELU layer keeps its
  own cache (the output), handed over with :meth:`~convnet.layers.ReLU.remember_output`.
- **RELU in place** when its input is an array the previous layer just made and nobody else
  reads (a ``fresh_output`` layer whose only consumer is the RELU), and in the backward pass
  when its ``dout`` comes fresh from its one consumer's backward.
- **3x3 stride-1 CONV -> 2x2 stride-2 POOL (-> RELU) in one step**: where the CONV runs as
  Winograd F(2x2, 3x3) its 2x2 output tiles are the pool's windows, so the pool (and the RELU)
  are taken on each tile as it is transformed, and the backward routes the pooled gradient
  straight into the output-gradient tiles (:meth:`~convnet.layers.conv.Conv._forward_pool`).
  The reference network (2 threads, medians): training step 31.2 vs 32.6 ms at batch 128,
  inference 11.1 vs 12.3 ms.
- **BN folded into the CONV or DECONV before it, in evaluation**: the BN is then the affine map
  ``x * scale + shift`` per channel, folded into that layer's weights and bias, so the BN's pass
  disappears (the encoder-decoder at batch 32: six BN passes, ~2.9 of ~19 ms of its evaluation).

Which layer may be fused with which is declared by the layer classes themselves
(:class:`~convnet.layers.base.PlanTraits`, read from each class's own body): the plan holds no
table of kinds and no ``isinstance`` ladder, so a subclass that changes a kernel is never fused
by inheritance. Two layers fuse only along a single edge: the first one's only reader is the
second, whose only input is the first. Calling the layers one by one (as ``visualize`` does)
runs the plain order with no in-place writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet.layers.base import Layer, traits


@dataclass
class Step:
    """One step of a plan: produces the value of node ``node`` from the values of ``inputs``."""

    node: int
    inputs: tuple[int, ...]

    @property
    def layers(self) -> tuple[Layer, ...]:
        raise NotImplementedError

    #: whether forward returns an array nobody else holds (the next RELU may overwrite it)
    fresh_forward: bool = field(default=False, init=False)
    #: whether backward returns input gradients nobody else holds
    fresh_backward: bool = field(default=False, init=False)

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        raise NotImplementedError

    def describe(self) -> str:
        return " + ".join(ly.name for ly in self.layers)


@dataclass
class LayerStep(Step):
    """One layer on its own; an in-place activation overwrites its argument where allowed."""

    layer: Layer = None  # type: ignore[assignment]
    inplace_forward: bool = False
    inplace_backward: bool = False

    def __post_init__(self) -> None:
        t = traits(self.layer)
        self.fresh_forward, self.fresh_backward = t.fresh_output, t.fresh_input_grad

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.layer,)

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        if self.inplace_forward:
            return self.layer._forward(xs[0], train, inplace=True)
        return self.layer._forward(xs[0], train)

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        layer = self.layer
        if not need_dx:
            if layer.params:
                layer.backward_params(dout)
            else:
                layer.forget()
            return [None]
        if self.inplace_backward:
            return [layer._backward(dout, inplace=True)]
        return [layer._backward(dout)]


@dataclass
class MergeStep(Step):
    """A merge layer (ADD, CAT) of two or more nodes."""

    layer: Layer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        t = traits(self.layer)
        self.fresh_forward, self.fresh_backward = t.fresh_output, t.fresh_input_grad

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.layer,)

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        return self.layer._forward(xs, train)

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        return list(self.layer._backward(dout))


@dataclass
class PoolActStep(Step):
    """A max POOL and the activation after it (or swapped from before it), in the pool's pass."""

    pool: Layer = None  # type: ignore[assignment]
    act: Layer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.fresh_backward = True

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.pool, self.act)

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        out = self.pool._forward(xs[0], train, relu=True)
        self.act.remember_output(out if train else None)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        dx = self.pool._backward(dout, relu_out=self.act.take_output())
        return [dx if need_dx else None]


@dataclass
class ConvPoolStep(Step):
    """A CONV and the max POOL after it (and a RELU), on Winograd's output tiles."""

    conv: Layer = None  # type: ignore[assignment]
    pool: Layer = None  # type: ignore[assignment]
    act: Layer | None = None

    def __post_init__(self) -> None:
        self.fresh_forward = self.act is None
        self.fresh_backward = True

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.conv, self.pool) + ((self.act,) if self.act is not None else ())

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        out = self.conv._forward_pool(xs[0], self.pool, train, relu=self.act is not None)
        if self.act is not None:
            self.act.remember_output(out if train else None)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        relu_out = None if self.act is None else self.act.take_output()
        return [self.conv._backward_pool(dout, self.pool, relu_out, need_dx)]


@dataclass
class FoldedStep(Step):
    """Evaluation only: a CONV or DECONV with the BN after it folded into its weights."""

    layer: Layer = None  # type: ignore[assignment]
    bn: Layer = None  # type: ignore[assignment]

    @property
    def layers(self) -> tuple[Layer, ...]:
        return (self.layer, self.bn)

    def forward(self, xs: list[np.ndarray], train: bool) -> np.ndarray:
        out = self.layer._forward_folded(xs[0], *self.bn.affine())
        self.bn.forget()
        return out

    def backward(self, dout: np.ndarray, need_dx: bool) -> list[np.ndarray | None]:
        raise RuntimeError("a folded step runs in evaluation only")  # the plan guarantees it


@dataclass
class Plan:
    """The steps of a network's training and evaluation passes (see the module docstring)."""

    train: list[Step]
    eval: list[Step]
    output: int

    def steps(self, train: bool) -> list[Step]:
        return self.train if train else self.eval


def consumers_of(inputs_of: Sequence[Sequence[int]]) -> list[list[int]]:
    """For each node, the nodes that read it, in order."""
    out: list[list[int]] = [[] for _ in inputs_of]
    for j, srcs in enumerate(inputs_of):
        for k in srcs:
            if k >= 0:
                out[k].append(j)
    return out


def make_plan(layers: Sequence[Layer], inputs_of: Sequence[Sequence[int]]) -> Plan:
    """The plan of a network whose node ``i`` runs ``layers[i]`` on ``inputs_of[i]``."""
    n = len(layers)
    consumers = consumers_of(inputs_of)

    def edge(i: int) -> bool:
        """Node ``i`` feeds only node ``i + 1``, which reads only node ``i``."""
        return i + 1 < n and consumers[i] == [i + 1] and tuple(inputs_of[i + 1]) == (i,)

    def is_relu(layer: Layer) -> bool:
        return traits(layer).monotone

    def takes(pool: Layer, act: Layer) -> bool:
        return act.kind in traits(pool).takes_activation and is_relu(act)

    def pool_after(conv: Layer, pool: Layer) -> bool:
        return traits(conv).takes_pool and bool(traits(pool).takes_activation) \
            and conv.fuses_pool(pool)

    steps: list[Step] = []
    i = 0
    while i < n:
        layer, srcs = layers[i], tuple(inputs_of[i])
        nxt = layers[i + 1] if edge(i) else None
        nxt2 = layers[i + 2] if nxt is not None and edge(i + 1) else None
        if layer.arity != 1:
            steps.append(MergeStep(i, srcs, layer=layer))
            i += 1
        elif nxt is not None and pool_after(layer, nxt):
            act = nxt2 if nxt2 is not None and takes(nxt, nxt2) else None
            steps.append(ConvPoolStep(i + 1 + (act is not None), srcs, conv=layer, pool=nxt,
                                      act=act))
            i += 2 + (act is not None)
        elif nxt is not None and nxt2 is not None and is_relu(nxt) and takes(nxt2, nxt) \
                and pool_after(layer, nxt2):
            # CONV -> RELU -> POOL: the RELU swapped after the POOL, all three on the tiles
            steps.append(ConvPoolStep(i + 2, srcs, conv=layer, pool=nxt2, act=nxt))
            i += 3
        elif nxt is not None and is_relu(layer) and takes(nxt, layer):
            steps.append(PoolActStep(i + 1, srcs, pool=nxt, act=layer))   # RELU -> POOL swapped
            i += 2
        elif nxt is not None and takes(layer, nxt):
            steps.append(PoolActStep(i + 1, srcs, pool=layer, act=nxt))   # POOL -> RELU
            i += 2
        else:
            steps.append(LayerStep(i, srcs, layer=layer))
            i += 1
    _mark_inplace(steps, consumers)
    return Plan(train=steps, eval=_fold_bn(steps, consumers), output=n - 1)


def _mark_inplace(steps: list[Step], consumers: list[list[int]]) -> None:
    """Let an in-place activation overwrite its argument where nobody else holds it."""
    producer = {s.node: s for s in steps}
    reader: dict[int, Step] = {}
    for s in steps:
        for k in s.inputs:
            reader[k] = s
    for s in steps:
        if not isinstance(s, LayerStep) or not traits(s.layer).inplace:
            continue
        src = s.inputs[0]
        if src >= 0 and consumers[src] == [s.node] and producer[src].fresh_forward:
            s.inplace_forward = True
        readers = consumers[s.node]
        if len(readers) == 1 and s.node in reader and reader[s.node].fresh_backward:
            s.inplace_backward = True


def _fold_bn(steps: list[Step], consumers: list[list[int]]) -> list[Step]:
    """The evaluation plan: each BN that runs right after a layer that folds it (and reads only
    that layer) becomes part of that layer's step."""
    out: list[Step] = []
    for s in steps:
        prev = out[-1] if out else None
        if (isinstance(s, LayerStep) and traits(s.layer).folds_into and isinstance(prev, LayerStep)
                and traits(prev.layer).folds_bn and s.inputs == (prev.node,)
                and consumers[prev.node] == [s.node]):
            out[-1] = FoldedStep(s.node, prev.inputs, layer=prev.layer, bn=s.layer)
        else:
            out.append(s)
    return out


def run_forward(plan: Plan, x: np.ndarray, train: bool) -> np.ndarray:
    """The values of the plan's steps in order, each value released after its last reader."""
    steps = plan.steps(train)
    left: dict[int, int] = {}
    for s in steps:
        for k in s.inputs:
            left[k] = left.get(k, 0) + 1
    values: dict[int, Any] = {-1: x}
    for s in steps:
        values[s.node] = s.forward([values[k] for k in s.inputs], train)
        for k in s.inputs:
            left[k] -= 1
            if left[k] == 0 and k != plan.output:
                del values[k]
    return values[plan.output]


def run_backward(plan: Plan, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
    """Backpropagate ``dout`` through the training plan; a gradient that reaches a node by two
    paths is summed. Returns the gradient w.r.t. the network's input (None unless ``need_dx``)."""
    grads: dict[int, np.ndarray] = {plan.output: dout}
    dx_total: np.ndarray | None = None
    steps = plan.train
    # the input gradient is needed for a node that another step reads, or for the network's
    # input when asked
    for s in reversed(steps):
        g = grads.pop(s.node)
        need = need_dx or any(k >= 0 for k in s.inputs)
        dxs = s.backward(g, need)
        for k, d in zip(s.inputs, dxs, strict=True):
            if d is None:
                continue
            if k < 0:
                dx_total = d if dx_total is None else dx_total + d
            elif k in grads:
                grads[k] = grads[k] + d
            else:
                grads[k] = d
    return dx_total if need_dx else None
