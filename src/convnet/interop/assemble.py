"""From nodes in the table's form to a convnet network: what the ONNX and PyTorch importers
share.

An importer reads its source (an ONNX graph, a PyTorch ``nn.Sequential``) node by node, turns
each into a :class:`~convnet.interop.mapping.Node` and hands it to :meth:`Assembler.apply`
with the values it reads. The assembler makes the layer through the table
(:data:`~convnet.interop.mapping.BY_OP`), infers its shape with the layer's own arithmetic (so a
node that cannot work fails here, naming it), and keeps the weights aside. Some nodes are no
layer at all and only change how a value is held: a Transpose between NCHW and NHWC, a Flatten
(an FC reads the volume itself; a FLATTEN layer is made only where something else reads it), a
zero Pad (taken into the CONV or POOL after it), Identity and Dropout. :meth:`Assembler.finish`
builds the network once every node is known (a :class:`~convnet.net.sequential.Sequential` for
a chain, a :class:`~convnet.net.graph.Graph` that finds the RES/CAT blocks otherwise) and copies
the weights in, checked: nothing is returned half-imported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.errors import ConvnetError, ShapeError
from convnet.interop.mapping import BY_OP, Node, NotRepresentable, Row, Val
from convnet.layers import Flatten, Layer
from convnet.net.graph import Graph
from convnet.net.sequential import Sequential

#: ops that only change how a value is held (no layer), handled by the assembler itself
STRUCTURAL = ("Identity", "Dropout", "Flatten", "Transpose", "Pad")


@dataclass
class Entry:
    """A convnet node being assembled: its layer, weights (convnet's names and layouts), the
    convnet nodes it reads, and the source node it came from."""

    layer: Layer
    weights: dict[str, np.ndarray]
    inputs: list[str]
    node: Node
    row: Row | None
    x: Val | None


def channel_vector(const: np.ndarray, x: Val, where: str) -> np.ndarray:
    """A constant added to ``x`` (a bias, a normalisation) as one value per channel; a constant
    that varies along another axis is refused."""
    const = np.asarray(const)
    if x.layout == "vec":
        n = arith.num_elements(x.shape)
        template: tuple[int, ...] = (1, n)
    else:
        n = x.shape[-1] if x.layout != "gap" else x.shape[0]
        template = {"NCHW": (1, n, 1, 1), "gap": (1, n, 1, 1), "NHWC": (1, 1, 1, n)}[x.layout]
    try:
        ok = const.ndim <= len(template) and np.broadcast_shapes(const.shape, template) == template
    except ValueError:
        ok = False
    if not ok:
        raise NotRepresentable(f"{where}: a constant of shape {list(const.shape)} on a value held "
                               f"as {x.layout} {x.onnx_shape('N')}: convnet adds one number per "
                               "channel (a bias) only")
    return np.broadcast_to(const, template).reshape(n).astype(np.float32)


class Assembler:
    """Collects the layers of an imported network (see the module doc).

    Args:
        source: names the file or module in messages (``"model.onnx"``).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.entries: dict[str, Entry] = {}
        self.notes: list[str] = []
        self._flattened: dict[str, Val] = {}   # volume src -> its FLATTEN layer's value
        self._flattened_by: dict[str, Node] = {}   # volume src -> the node that flattened it
        self.input_val: Val | None = None

    # ---------------------------------------------------------------------------- helpers
    def where(self, node: Node) -> str:
        return f"{self.source}: {node.label}"

    def _unique(self, node: Node) -> str:
        base = node.name or (node.outputs[0] if node.outputs else "") or node.op.lower()
        base = re.sub(r"\s+", "_", base)[:120] or node.op.lower()
        name, i = base, 1
        while name in self.entries or name == "input":
            i += 1
            name = f"{base}_{i}"
        return name

    def input(self, shape: Sequence[int], layout: str) -> Val:
        """The network's input value: ``shape`` in convnet's order ``(H, W, D)`` or ``(n,)``."""
        self.input_val = Val("input", tuple(int(s) for s in shape),
                             layout if len(shape) == 3 else "vec")
        return self.input_val

    def _place(self, node: Node, layer: Layer, weights: dict[str, np.ndarray],
               xs: Sequence[Val], row: Row | None, out: Any = None) -> Val:
        name = self._unique(node)
        layer.name = name                     # errors while inferring name the source's node
        try:
            if out is None:
                out = row.output(layer, xs[0], name)
            elif callable(out):
                out = out(name)
        except ConvnetError as exc:
            raise type(exc)(f"{self.source}: {node.label}: {exc}") from None
        self.entries[name] = Entry(layer, weights, [x.src for x in xs], node, row,
                                   xs[0] if xs else None)
        return out

    # ------------------------------------------------------------------------------ nodes
    def apply(self, node: Node, xs: Sequence[Val]) -> Val:
        """The value ``node`` computes from ``xs`` (its data inputs; constants are in
        ``node.weights``)."""
        where = self.where(node)
        if node.op in STRUCTURAL:
            return getattr(self, f"_{node.op.lower()}")(node, list(xs), where)
        row = BY_OP.get(node.op)
        if row is None:
            raise NotRepresentable(
                f"{where}: {node.op} is not an operator convnet can import. Operators it reads: "
                f"{', '.join(sorted({*BY_OP, *STRUCTURAL, 'MatMul', 'Reshape', 'ReduceMean'}))} "
                "(and Shape arithmetic, Constant, Squeeze, a final Softmax)")
        if row.merges:
            return self._merge(node, row, list(xs), where)
        if len(xs) != 1:
            raise NotRepresentable(f"{where}: reads {len(xs)} computed values; a layer reads one "
                                   "(its other inputs must be stored constants)")
        x = xs[0]
        if x.flat is not None and not row.reads_flattened:
            if row.elementwise:
                # elementwise: the same before or after the flatten, and an FC can then still
                # read the volume itself
                inner = self.apply(node, [x.flat])
                return replace(x, src=inner.src, flat=inner, nonneg=inner.nonneg)
            x = self.flatten_layer(x, node)
        if x.pads is not None and not row.takes_pad:
            raise NotRepresentable(f"{where}: reads a zero-padded value (a Pad node before it); "
                                   "convnet pads only inside a CONV or POOL (its P)")
        layer, weights = row.to_layer(node, x, where)
        return self._place(node, layer, weights, [x], row)

    def flatten_layer(self, x: Val, node: Node | None = None) -> Val:
        """A FLATTEN layer for the pending flatten ``x`` (one per volume), named after the node
        that flattened (:meth:`flatten`'s ``node``)."""
        vol = x.flat
        if vol.src in self._flattened:
            return self._flattened[vol.src]
        order = vol.shape if vol.layout == "NCHW" and vol.shape[0] * vol.shape[1] > 1 else None
        label = self._flattened_by.get(vol.src) or Node("Flatten", f"{vol.src}/flatten")
        out = self._place(label, Flatten(), {}, [replace(vol, pads=None)], None,
                          out=lambda name: Val(name, (arith.num_elements(vol.shape),), "vec",
                                               order, nonneg=vol.nonneg))
        self._flattened[vol.src] = out
        return out

    def _merge(self, node: Node, row: Row, xs: list[Val], where: str) -> Val:
        if len(xs) < 2:
            raise NotRepresentable(f"{where}: merges {len(xs)} computed value(s); a constant "
                                   "operand is a bias, and only after a CONV, DECONV or FC")
        xs = [self.flatten_layer(x, node) if x.flat is not None else x for x in xs]
        layouts = {x.layout for x in xs}
        orders = {x.order for x in xs}
        if len(layouts) > 1 or len(orders) > 1 or any(x.pads is not None for x in xs):
            raise NotRepresentable(f"{where}: merges values held in different layouts "
                                   f"({', '.join(sorted(layouts))}): convnet merges volumes "
                                   "of one layout")
        x0 = xs[0]
        if row.depth_axis:     # a CAT: along depth only
            axis = int(node.attrs.get("axis", 1))
            rank = 2 if x0.layout == "vec" else 4
            depth = row.depth_axis[x0.layout]
            if axis % rank != depth or (x0.layout == "vec" and x0.order is not None):
                raise NotRepresentable(f"{where}: concatenates along axis {axis} of "
                                       f"{x0.layout} values; convnet's CAT stacks along depth "
                                       f"(axis {depth} here)")
        layer, _ = row.to_layer(node, x0, where)

        def out(name: str) -> Val:
            shape = layer.infer_merge([x.shape for x in xs], [x.src for x in xs])
            nonneg = all(x.nonneg for x in xs)
            return Val(name, shape, x0.layout, x0.order, nonneg=nonneg)

        return self._place(node, layer, {}, xs, row, out=out)

    # -------------------------------------------------------------------- no layer at all
    def _identity(self, node: Node, xs: list[Val], where: str) -> Val:
        return xs[0]

    _dropout = _identity    # inference: the identity

    def _flatten(self, node: Node, xs: list[Val], where: str) -> Val:
        x = xs[0]
        if int(node.attrs.get("axis", 1)) != 1:
            raise NotRepresentable(f"{where}: Flatten(axis={node.attrs['axis']}) keeps more than "
                                   "the batch axis: convnet flattens (N, ...) to (N, n)")
        return self.flatten(x, where, node)

    def flatten(self, x: Val, where: str, node: Node | None = None) -> Val:
        """``x`` flattened to ``(N, n)`` by ``node`` (ONNX Flatten, a Reshape to two
        dimensions)."""
        if node is not None and x.is_volume:
            self._flattened_by.setdefault(x.src, node)
        if x.pads is not None:
            raise NotRepresentable(f"{where}: flattens a zero-padded value (a Pad node before it)")
        if x.layout == "gap":
            return Val(x.src, x.shape, "vec", nonneg=x.nonneg)   # (N, D, 1, 1): one order
        if x.layout == "vec":
            return x
        n = arith.num_elements(x.shape)
        flat = Val(x.src, (n,), "vec", flat=x, nonneg=x.nonneg)
        if x.layout == "NHWC" and x.shape[0] * x.shape[1] > 1:
            # a flatten in convnet's own order (tf2onnx's Transpose + Reshape for Keras's
            # Flatten, convnet's FLATTEN): a FLATTEN layer, whose FC needs no permutation
            return self.flatten_layer(flat)
        # NCHW: left to the FC that reads it (its rows are permuted); a FLATTEN layer is made
        # only if something else reads it
        return flat

    def _transpose(self, node: Node, xs: list[Val], where: str) -> Val:
        x = xs[0]
        perm = [int(p) for p in node.attrs.get("perm", [])]
        if x.flat is not None:
            x = self.flatten_layer(x, node)
        if perm == list(range(len(perm))) and perm:
            return x
        if x.layout == "gap" and len(perm) == 4 and perm[0] == 0:
            return x            # (N, D, 1, 1) in any order of its last three axes
        if x.layout == "NCHW" and perm == [0, 2, 3, 1]:
            return replace(x, layout="NHWC")
        if x.layout == "NHWC" and perm == [0, 3, 1, 2]:
            return replace(x, layout="NCHW")
        raise NotRepresentable(
            f"{where}: Transpose(perm={perm}) of a value held as {x.layout}: convnet follows "
            "the transposes between NCHW and NHWC ([0, 2, 3, 1] and [0, 3, 1, 2]) only")

    def _pad(self, node: Node, xs: list[Val], where: str) -> Val:
        x = xs[0]
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        value = node.weights.get("constant_value", node.attrs.get("value", 0.0))
        value = 0.0 if value is None or np.size(value) == 0 else float(np.asarray(value).ravel()[0])
        pads = node.weights.get("pads", node.attrs.get("pads"))
        if mode != "constant" or value != 0.0:
            raise NotRepresentable(f"{where}: Pad(mode={mode!r}, value={value:g}): convnet pads "
                                   "with zeros only (constant mode, value 0)")
        if not x.is_volume or pads is None or np.size(pads) != 8:
            raise NotRepresentable(f"{where}: pads a value held as {x.layout} with pads "
                                   f"{None if pads is None else np.asarray(pads).tolist()}: "
                                   "convnet pads the rows and columns of a volume only")
        p = [int(v) for v in np.asarray(pads).ravel()]
        h, w = (2, 3) if x.layout == "NCHW" else (1, 2)
        if any(p[i] for i in range(8) if i % 4 not in (h, w)) or any(v < 0 for v in p):
            raise NotRepresentable(f"{where}: pads={p} pad the batch or depth axis (or crop): "
                                   "convnet pads the rows and columns of a volume only")
        mine = (p[h], p[w], p[h + 4], p[w + 4])   # (top, left, bottom, right) in any layout
        prev = x.pads or (0, 0, 0, 0)
        return replace(x, pads=tuple(a + b for a, b in zip(prev, mine, strict=True)))

    def bias_add(self, node: Node, x: Val, const: np.ndarray) -> Val:
        """``x + const`` where ``x`` is computed by a CONV, DECONV or FC that nothing else reads:
        the constant becomes (or is added to) its bias (what tf2onnx writes for BiasAdd,
        MatMul + Add for a Dense)."""
        where = self.where(node)
        e = self.entries.get(x.src)
        if (e is None or e.layer.kind not in ("CONV", "DWCONV", "DECONV", "FC") or x.flat
                is not None or x.pads is not None or any(x.src in o.inputs
                                                         for o in self.entries.values())):
            raise NotRepresentable(
                f"{where}: adds a constant to a value"
                + (f" computed by {e.node.label}" if e is not None else " that is the input")
                + ": convnet folds a constant only into the bias of the CONV, DECONV or FC that "
                "computes the value, when nothing else reads it before")
        b = channel_vector(const, x, where)
        old = e.weights.get("b")
        e.weights["b"] = b if old is None else (old + b).astype(np.float32)
        if old is None:   # the layer gains a bias: make it again through the table
            node0 = e.node
            node0.weights[{"FC": "C"}.get(e.layer.kind, "B")] = np.zeros(b.shape, np.float32)
            layer, weights = e.row.to_layer(node0, e.x, self.where(node0))
            layer.name = x.src
            weights["b"] = e.weights["b"]
            e.layer, e.weights = layer, weights
        self.notes.append(f"{node.label} adds a constant per channel to {e.node.label}'s output: "
                          "taken as its bias")
        return x

    # ----------------------------------------------------------------------------- finish
    def finish(self, out: Val, seed: int = 0) -> Graph:
        """The network ending at ``out``, its weights copied in (checked): :meth:`structure`,
        then :meth:`build`."""
        return self.build(self.structure(out), seed)

    def structure(self, out: Val) -> Graph:
        """The network ending at ``out`` with its shapes and no arrays (``weights=False``): a
        :class:`~convnet.net.sequential.Sequential` when it is a chain. Where the wiring is not
        RES/CAT blocks, :class:`NotRepresentable` names the node."""
        if out.flat is not None:
            vol = out.flat
            if vol.layout == "NCHW" and vol.shape[0] * vol.shape[1] > 1:
                raise NotRepresentable(
                    f"{self.source}: the graph's output is a {fmt_shape(vol.shape)} volume "
                    "flattened depth slice by depth slice (NCHW); convnet flattens row by row "
                    "(NHWC), so its outputs would come in another order")
            out = self.flatten_layer(out)
        if out.layout == "vec" and out.order is not None:
            raise NotRepresentable(
                f"{self.source}: the graph's output is a volume flattened depth slice by depth "
                "slice (NCHW); convnet flattens row by row (NHWC), so its outputs would come "
                "in another order")
        if out.src == "input":
            raise NotRepresentable(f"{self.source}: the graph computes nothing: its output is "
                                   "its input")
        # the nodes the output needs (a node read by nobody is dropped, and said so)
        needed, stack = set(), [out.src]
        while stack:
            name = stack.pop()
            if name in needed or name == "input":
                continue
            needed.add(name)
            stack.extend(self.entries[name].inputs)
        unused = [e.node.label for k, e in self.entries.items() if k not in needed]
        if unused:
            self.notes.append("not used by the output, left out: " + ", ".join(unused))
        names = [k for k in self.entries if k in needed]
        entries = [self.entries[k] for k in names]
        shape = self.input_val.shape
        chain = all(e.inputs == ([names[i - 1]] if i else ["input"])
                    for i, e in enumerate(entries)) and names[-1] == out.src
        try:
            if chain:
                return Sequential([e.layer for e in entries], shape, weights=False)
            return Graph([(k, e.layer, e.inputs) for k, e in zip(names, entries, strict=True)],
                         shape, weights=False)
        except ShapeError as exc:
            raise ShapeError(f"{self.source}: {exc}") from None
        except ConvnetError as exc:
            raise NotRepresentable(f"{self.source}: {exc}") from None

    def build(self, structure: Graph, seed: int = 0) -> Graph:
        """``structure`` (from :meth:`structure`) with its weights: the same layers, built."""
        layers = structure.layers
        if isinstance(structure, Sequential):
            net: Graph = Sequential(layers, structure.input_shape, seed=seed)
        else:
            names = {id(ly): ly.name for ly in layers}
            net = Graph([(ly.name, ly, [names[id(layers[k])] if k >= 0 else "input"
                                        for k in structure.inputs_of[i]])
                         for i, ly in enumerate(layers)], structure.input_shape, seed=seed)
        self.fill(net.layers, layers)
        return net

    def fill(self, targets: list[Layer], layers: list[Layer]) -> None:
        """Copy the weights kept for ``layers`` (a :meth:`structure`'s) into ``targets``, built
        layers that compute the same, in the same order; the shapes are checked first."""
        by_layer = {id(e.layer): e for e in self.entries.values()}
        pairs = [(t, by_layer[id(ly)]) for t, ly in zip(targets, layers, strict=True)]
        for t, e in pairs:
            for key, value in e.weights.items():
                target = t.params.get(key, t.buffers.get(key))
                if target is None or target.shape != value.shape:
                    have = None if target is None else list(target.shape)
                    raise NotRepresentable(f"{self.source}: {e.node.label}: its {key} has shape "
                                           f"{list(value.shape)}; {t.describe()} needs {have}")
                if not np.all(np.isfinite(value)):
                    raise NotRepresentable(f"{self.source}: {e.node.label}: its {key} holds NaN "
                                           "or Inf values")
        for t, e in pairs:
            for key, value in e.weights.items():
                t.params.get(key, t.buffers.get(key))[...] = value
        #: where each layer came from: ``{"conv1": "node 'features.0' (Conv)"}``
        self.origin = {t.name: e.node.label for t, e in pairs}


__all__ = ["STRUCTURAL", "Assembler", "Entry", "channel_vector"]
