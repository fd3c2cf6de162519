"""Blocks: the structure of a branching network, as the architecture language writes it.

A network is a chain of *items*; an item is a layer or a block of parallel branches that merge:

- ``RES[main]``: a residual block, ``main(x) + x`` (the shortcut is the identity). Where the main
  branch changes the size or the depth, a projection is inserted on the shortcut (a 1x1 CONV
  with the stride and K that match, and a BN after it when the main branch has BN, as in
  ResNets), and the network says so (``layer.inserted == "projection"``).
- ``RES[main | shortcut]``: a residual block with the shortcut written out.
- ``CAT[b1 | b2 | ...]``: the branches' outputs stacked along depth (Inception).

:func:`compile_items` turns items into nodes (layers in topological order, each with the indices
of the nodes it reads), inferring every shape on the way, so a branch that does not fit fails
here, naming its layer and its block. :func:`decompose` is its inverse: it finds the blocks in
any wiring made of forks that meet again (a series-parallel graph: ResNets, MobileNets,
Inception), which is how a network given as nodes, or imported from ONNX, gets a spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from convnet.arith import conv_fits, conv_output_size, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, Shape


@dataclass
class Block:
    """Parallel branches from one input that meet in a merge layer (``Add`` or ``Concat``).

    ``identity``: for a RES block, the block's input itself is one of the summands (no shortcut
    branch was written). ``merge`` is made when None."""

    kind: str                                   # "RES" or "CAT"
    branches: list[list[Item]]
    identity: bool = False
    merge: Layer | None = None
    #: offset of the block in the spec text (for error carets), when parsed
    offset: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        from convnet.layers.merge import Add, Concat

        if self.kind not in ("RES", "CAT"):
            raise ConfigError(f"a block is RES or CAT, not {self.kind!r}")
        if not self.branches or any(not isinstance(b, list) for b in self.branches):
            raise ConfigError(f"{self.kind}: branches are lists of layers and blocks")
        if self.kind == "CAT" and len(self.branches) < 2:
            raise ConfigError("CAT: a concatenation needs two or more branches")
        if self.kind == "RES" and len(self.branches) < 2 and not self.identity:
            raise ConfigError("RES: one branch needs the identity shortcut (identity=True)")
        if self.merge is None:
            self.merge = Add() if self.kind == "RES" else Concat()

    def layers(self) -> list[Layer]:
        """Every layer of the block in network order: the branches', then the merge."""
        out: list[Layer] = []
        for branch in self.branches:
            out += flat_layers(branch)
        return out + [self.merge]


Item = Union[Layer, Block]  # noqa: UP007 - a runtime alias used in isinstance-free annotations


def Res(main: Sequence[Item], shortcut: Sequence[Item] | None = None) -> Block:
    """A residual block: ``main(x) + x``, or ``main(x) + shortcut(x)`` (see the module doc)."""
    if shortcut is None:
        return Block("RES", [list(main)], identity=True)
    return Block("RES", [list(main), list(shortcut)])


def Cat(*branches: Sequence[Item]) -> Block:
    """Branches from one input, their outputs stacked along depth (see the module doc)."""
    return Block("CAT", [list(b) for b in branches])


def flat_layers(items: Sequence[Item]) -> list[Layer]:
    """The layers of ``items`` in network order."""
    out: list[Layer] = []
    for it in items:
        out += it.layers() if isinstance(it, Block) else [it]
    return out


def to_spec(items: Sequence[Item]) -> str:
    """Items in the architecture language: ``CONV(16,F=3) -> RES[CONV(16,F=3,P=1) -> BN]``."""
    parts = []
    for it in items:
        if isinstance(it, Block):
            inner = " | ".join(to_spec(b) for b in it.branches)
            parts.append(f"{it.kind}[{inner}]")
        else:
            parts.append(it.to_spec())
    return " -> ".join(parts)


# ------------------------------------------------------------------------------- compiling
@dataclass
class Compiled:
    """Nodes in topological order: ``layers[i]`` reads ``inputs_of[i]`` (-1: the network's
    input) and outputs ``shapes[i]``."""

    layers: list[Layer]
    inputs_of: list[tuple[int, ...]]
    shapes: list[Shape]


def compile_items(items: Sequence[Item], input_shape: Shape,
                  name: Callable[[Layer], None] | None = None,
                  out: Compiled | None = None) -> Compiled:
    """Nodes of ``items`` on ``input_shape``, every shape inferred (see the module doc).

    ``name(layer)`` is called on each layer as it is placed, before its shape is inferred (so a
    ShapeError names it); a RES block that needs a projection gets it here. ``out`` collects
    the nodes as they are placed (what ``explain`` derives up to a layer that does not fit).
    """
    out = out if out is not None else Compiled([], [], [])

    def place(layer: Layer, srcs: tuple[int, ...], shape: Shape | list[Shape],
              sources: Sequence[str] = ()) -> tuple[int, Shape]:
        if any(layer is ly for ly in out.layers):
            raise ConfigError(f"layer {len(out.layers) + 1} ({layer.kind}) appears twice in the "
                              "network; each position needs its own layer object (use [...]*N "
                              "in a spec to repeat a pattern)")
        if name is not None:
            name(layer)
        if layer.arity == 1:
            if isinstance(shape, list):  # pragma: no cover - the callers pass one shape
                raise ConfigError(f"{layer.describe()} takes one input")
            res = layer.infer_shape(shape)
            layer.input_shape, layer.output_shape = tuple(shape), res
        else:
            res = layer.build_merge(shape, layer.dtype, sources)  # type: ignore[attr-defined]
        check_size(layer, res)
        out.layers.append(layer)
        out.inputs_of.append(srcs)
        out.shapes.append(res)
        return len(out.layers) - 1, res

    def chain(seq: Sequence[Item], src: int, shape: Shape) -> tuple[int, Shape]:
        for it in seq:
            if isinstance(it, Block):
                src, shape = block(it, src, shape)
            elif isinstance(it, Layer):
                if it.arity != 1:
                    raise ConfigError(f"{it.describe()} merges branches: use it through a RES[...] "
                                      "or CAT[...] block")
                src, shape = place(it, (src,), shape)
            else:
                raise ConfigError(f"{it!r} is not a convnet layer or block")
        return src, shape

    def where(b: Block, i: int) -> str:
        what = ("main branch" if i == 0 else "shortcut") if b.kind == "RES" else \
            f"branch {i + 1}"
        return f"{what} of {b.kind}[...]"

    def block(b: Block, src: int, shape: Shape) -> tuple[int, Shape]:
        ends: list[tuple[int, Shape]] = []
        for i, br in enumerate(b.branches):
            if not br:
                raise ConfigError(f"{where(b, i)} is empty: write a layer, or leave the "
                                  "branch out (RES[main] adds the input itself)")
            try:
                ends.append(chain(br, src, shape))
            except ShapeError as exc:
                raise ShapeError(f"{exc} (in the {where(b, i)})") from None
        if b.kind == "RES" and b.identity:
            if ends[0][1] != shape:
                proj = projection(shape, ends[0][1], has_bn=any(
                    ly.kind == "BN" for ly in flat_layers(b.branches[0])))
                b.branches.append(proj)
                b.identity = False
                ends.append(chain(proj, src, shape))
            else:
                ends.append((src, shape))
        names = [out.layers[k].name if k >= 0 else "input" for k, _ in ends]
        return place(b.merge, tuple(k for k, _ in ends), [s for _, s in ends], names)

    end, _ = chain(items, -1, tuple(input_shape))
    if end < 0:
        raise ShapeError("a network needs at least one layer after INPUT")
    return out


#: the largest side or feature count anywhere in a network (input, every layer's output): the one
#: size limit, checked as sizes grow (a stack of DECONVs multiplies them), not only on input
MAX_DIM = 100_000


def check_size(layer: Layer, shape: Shape) -> None:
    """ShapeError naming ``layer`` when its output has a side or feature count over MAX_DIM."""
    big = [d for d in shape if d > MAX_DIM]
    if big:
        text = f"{big[0]:,}" if big[0] <= 10**12 else f"more than {10**12:,}"
        raise ShapeError(
            f"{layer.describe()}: its output {'x'.join(str(min(d, 10**12)) for d in shape)} has "
            f"a size of {text}, over the limit of {MAX_DIM:,} for any size in a network (the "
            "input, and every layer's output as the sizes grow)")


def projection(shape: Shape, target: Shape, has_bn: bool) -> list[Layer]:
    """The shortcut that maps ``shape`` to ``target``: a 1x1 CONV with the stride and K that
    match (``floor=True`` where the stride does not tile the side exactly, as the main branch's
    strided CONV then does too), and a BN after it when ``has_bn`` (ResNets' downsample)."""
    from convnet.layers import BatchNorm, Conv

    if len(shape) != 3 or len(target) != 3:
        raise ShapeError(f"RES[...]: the main branch maps {fmt_shape(shape)} to "
                         f"{fmt_shape(target)}; a shortcut can only be projected between volumes")
    strides, floor = [], False
    for side, want in zip(shape[:2], target[:2], strict=True):
        # a 1x1 CONV with stride s maps a side to floor((side - 1)/s) + 1 (the CONV formula,
        # floored): the smallest s that gives the main branch's size
        fits = [s for s in range(1, side + 1)
                if conv_output_size(side, 1, s, floor=True) == want]
        if not fits:
            raise ShapeError(
                f"RES[...]: the main branch maps {fmt_shape(shape)} to {fmt_shape(target)}; no 1x1 "
                f"CONV maps a side of {side} to {want} (floor((W - 1)/S) + 1 = {want} has no "
                "stride S): write the shortcut yourself, RES[main | shortcut]")
        floor = floor or not conv_fits(side, 1, fits[0])
        strides.append(fits[0])
    conv = Conv(K=target[2], F=1, S=(strides[0], strides[1]), bias=not has_bn, floor=floor)
    conv.inserted = "projection"
    layers: list[Layer] = [conv]
    if has_bn:
        bn = BatchNorm()
        bn.inserted = "projection"
        layers.append(bn)
    return layers


# ----------------------------------------------------------------------------- decomposing
def decompose(layers: Sequence[Layer], inputs_of: Sequence[Sequence[int]],
              names: Sequence[str] | None = None) -> list[Item]:
    """The items (layers and RES/CAT blocks) of nodes wired by ``inputs_of`` (-1: the input).

    The wiring must be series-parallel: every fork meets again in one merge (ADD or CAT) that
    takes exactly the fork's branches. Anything else raises :class:`ConfigError` naming the node.
    """
    n = len(layers)
    label = list(names) if names is not None else [ly.name for ly in layers]

    def nm(k: int) -> str:
        return "the input" if k < 0 else f"{label[k]} ({layers[k].kind})"

    for j, srcs in enumerate(inputs_of):
        if not srcs:
            raise ConfigError(f"{nm(j)} has no input")
        for k in srcs:
            if not -1 <= k < j:
                raise ConfigError(f"{nm(j)} reads {nm(k) if 0 <= k < n else k}, which does not "
                                  "come before it: the nodes must be in topological order (no "
                                  "cycles)")
        if layers[j].arity == 1 and len(srcs) != 1:
            raise ConfigError(f"{nm(j)} takes one input, received {len(srcs)}")
        if layers[j].arity != 1 and len(srcs) < 2:
            raise ConfigError(f"{nm(j)} merges two or more inputs, received {len(srcs)}")
    consumers: dict[int, list[int]] = {k: [] for k in range(-1, n)}
    for j, srcs in enumerate(inputs_of):
        for k in srcs:
            consumers[k].append(j)
    for k in range(n - 1):
        if not consumers[k]:
            raise ConfigError(f"{nm(k)} is read by no layer: every branch must reach the output "
                              f"(the last node, {nm(n - 1)})")

    def walk(cur: int) -> tuple[list[Item], int, int | None]:
        """Follow the chain from node ``cur``: ``(items, last node, merge it stops at)``."""
        items: list[Item] = []
        while True:
            if cur == n - 1:
                return items, cur, None
            cons = consumers[cur]
            if len(cons) == 1:
                j = cons[0]
                if layers[j].arity != 1:
                    return items, cur, j
                items.append(layers[j])
                cur = j
                continue
            blk, cur = fork(cur, cons)
            items.append(blk)

    def fork(src: int, cons: list[int]) -> tuple[Block, int]:
        branches: list[tuple[list[Item], int]] = []
        merges = set()
        for j in cons:
            if layers[j].arity != 1:
                branches.append(([], src))
                merges.add(j)
                continue
            items, end, merge = walk(j)
            if merge is None:
                raise ConfigError(f"the branch from {nm(src)} through {nm(j)} reaches the output "
                                  "without meeting the other branches again")
            branches.append(([layers[j], *items], end))
            merges.add(merge)
        if len(merges) != 1:
            names_ = ", ".join(nm(m) for m in sorted(merges))
            raise ConfigError(f"the branches that fork at {nm(src)} meet in different merges "
                              f"({names_}): convnet represents forks that meet again in one ADD "
                              "or CAT (RES[...] and CAT[...] blocks)")
        m = merges.pop()
        ends = sorted(e for _, e in branches)
        if sorted(inputs_of[m]) != ends:
            raise ConfigError(f"{nm(m)} merges {', '.join(nm(k) for k in inputs_of[m])}, not "
                              f"exactly the branches that fork at {nm(src)}: convnet represents "
                              "forks that meet again in one ADD or CAT")
        merge = layers[m]
        if merge.kind == "ADD":
            empty = [b for b, _ in branches if not b]
            full = sorted((b for b, _ in branches if b), key=len, reverse=True)
            if len(empty) > 1:
                raise ConfigError(f"{nm(m)} adds the input of the block to itself")
            blk = Block("RES", full, identity=bool(empty), merge=merge)
        else:
            by_end = {e: b for b, e in branches}
            ordered = [by_end[k] for k in inputs_of[m]]
            if any(not b for b in ordered):
                raise ConfigError(f"{nm(m)} concatenates the block's input itself: write the "
                                  "branch as a layer (e.g. a 1x1 CONV) to keep it")
            blk = Block("CAT", ordered, merge=merge)
        return blk, m

    items, end, merge = walk(-1)
    if merge is not None:  # pragma: no cover - a merge with one input was refused above
        raise ConfigError(f"{nm(merge)} has only one input")
    return items
