"""Import an ONNX model as a convnet network: the table (:mod:`convnet.interop.mapping`) read from
right to left, after the patterns exporters write are recognised.

What is recognised, besides the table's operators:

- ``torch.onnx.export`` (TorchScript, ``dynamo=False``): Flatten + Gemm (``transB=1``), BN folded
  into the Conv or kept, Identity nodes, Constant nodes, Clip(0, 6) for ReLU6, ceil_mode pools
  where they give the floor's sizes.
- ``torch.onnx.export(dynamo=True)``: Reshape to ``(-1, n)`` or ``(N, -1)`` (a flatten), Gemm or
  MatMul + Add, ReduceMean over H and W (keepdims) as GAP, one initializer shared by several
  inputs (equal values deduplicated), BN kept or folded.
- tf2onnx (Keras Sequential CNNs in NHWC): the input ``(N, H, W, C)`` and the Transpose pairs
  around the NCHW operators (``perm=[0, 3, 1, 2]`` before, ``[0, 2, 3, 1]`` after), Flatten as a
  Transpose to NHWC + Reshape (convnet's own order: the FC's rows need no permutation), Dense as
  MatMul + Add, BiasAdd as an Add of a per-channel constant after a Conv, Pad + Conv (explicit
  zero padding) fused into one padded CONV, ReduceMean over axes 1, 2 as GAP, Dropout as
  Identity, a final Softmax (dropped: convnet's outputs are the scores before it).
- Shape arithmetic on a symbolic batch (Shape, Gather, Unsqueeze, Concat, Slice, Cast) is
  evaluated, so ``x.view(x.size(0), -1)`` reads as a flatten; initializers listed as graph inputs
  (IR < 4) are weights, not inputs.
- Input normalisation as the first nodes (Sub then Div, or Mul then Add, per channel or scalar,
  as ``export_onnx(bake_normalization=True)`` or Keras's Rescaling writes it) becomes the
  model's normaliser.

A file is checked before anything large is made (see :func:`load_model`): a size cap on the
protobuf, every tensor's size from its declared dims and data type against its stored bytes,
external data only inside the model's directory, every node input defined, no cycle, a graph
input of sane size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convnet import arith
from convnet.errors import CheckpointError, ConvnetError
from convnet.interop import require
from convnet.interop.assemble import Assembler, channel_vector
from convnet.interop.mapping import SLOTS, Node, NotRepresentable, Val
from convnet.interop.onnx_file import (
    MAX_BYTES,
    MAX_NODES,
    NAMES,
    check_tensor,
    label,
    load_model,
    node_attrs,
    refuse,
    tensor_array,
    topological_order,
)
from convnet.interop.onnx_fold import (
    BATCH,
    FOLD,
    MAX_FOLDED,
    Batch,
    folded_size,
    resolve_reshape,
)
from convnet.net.graph import MAX_PARAMS, Graph

ALIAS_OPS = ("Identity", "Dropout", "Transpose")


# ----------------------------------------------------------------------------- the result
@dataclass
class OnnxModel:
    """An imported ONNX model: the network and what came with it.

    Attributes:
        net: the network (a :class:`~convnet.net.sequential.Sequential` for a chain).
        classes: class names from the metadata (``classes``), or None.
        normalizer: ``{"mean", "std"}`` from the metadata or the graph's first nodes, or None.
        input: how raw images become input (``convnet.input`` metadata, else the shape).
        notes: what was recognised and done (fusions, dropped nodes), one sentence each.
        origin: ``{"conv1": "node 'features.0' (Conv)"}``: where each layer came from.
        metadata: every ``metadata_props`` entry; ``producer``: who wrote the file.
        layout, output_layout: how the graph holds its input and output (``"NCHW"``,
            ``"NHWC"``, ``"vec"``; ``"gap"`` for an ``(N, C, 1, 1)`` output).
        baked: the graph normalises its input itself (its first nodes became ``normalizer``).
        softmax: the graph ends in a Softmax, left out of ``net``.
    """

    net: Graph
    classes: list[str] | None = None
    normalizer: dict[str, np.ndarray] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""
    layout: str = "NCHW"
    output_layout: str = "vec"
    baked: bool = False
    softmax: bool = False


# ------------------------------------------------------------------------------ the walk
class _Walk:
    """Reads the graph's nodes in order into an :class:`Assembler` (see the module doc)."""

    def __init__(self, model: Any, path: Path, input_shape: Sequence[int] | None) -> None:
        self.path, self.model, self.g = path, model, model.graph
        self.base = path.parent
        self.asm = Assembler(path.name)
        self.env: dict[str, Any] = {}        # value name -> Val or np.ndarray (a constant)
        self.notes = self.asm.notes
        self.normalizer: dict[str, np.ndarray] | None = None
        self.softmax = False
        g = self.g
        inits = {t.name for t in g.initializer}
        for i, t in enumerate(g.initializer):
            if not t.name:
                raise refuse(path, f"initializer #{i} has no name")
        self.inputs = [v for v in g.input if v.name not in inits]
        if len(self.inputs) != 1 or len(g.output) != 1:
            raise NotRepresentable(
                f"{path.name}: the graph has {len(self.inputs)} input(s) and {len(g.output)} "
                "output(s); a convnet network has one of each (inputs: "
                f"{', '.join(v.name for v in self.inputs) or 'none'})")
        if len(g.node) > MAX_NODES:
            raise refuse(path, f"{len(g.node):,} nodes, more than {MAX_NODES:,}")
        self.order = topological_order(g.node, {*inits, self.inputs[0].name}, path)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(g.node):
            for v in n.input:
                self.consumers.setdefault(v, []).append(i)
        total = 0
        for t in g.initializer:     # sizes checked now; a weight is read when a node reads it
            total += check_tensor(t, f"{path.name}: initializer {t.name!r}", self.base)[2]
            self.env[t.name] = _Lazy(t)
        if total > MAX_PARAMS:
            raise refuse(path, f"its initializers declare {total:,} values in all, more than "
                                f"the {MAX_PARAMS:,} a convnet network may hold; refused")
        self.input_shape = input_shape

    # ------------------------------------------------------------------------- values
    def const(self, name: str, where: str) -> np.ndarray | None:
        v = self.env.get(name)
        if isinstance(v, _Lazy):
            v = tensor_array(v.t, f"{self.path.name}: initializer {name!r}", self.base)
            self.env[name] = v
        return v if isinstance(v, np.ndarray) else None

    def val(self, name: str, where: str) -> Val:
        v = self.env.get(name)
        if isinstance(v, Val):
            return v
        raise NotRepresentable(f"{where}: its data input {name!r} is a constant: convnet layers "
                               "compute on the network's values")

    # -------------------------------------------------------------------------- input
    def graph_input(self) -> Val:
        v = self.inputs[0]
        where = f"{self.path.name}: the graph's input {v.name!r}"
        tt = v.type.tensor_type
        if not v.type.HasField("tensor_type") or tt.elem_type != 1:
            raise NotRepresentable(f"{where} is not a float32 tensor (type "
                                   f"{NAMES.get(tt.elem_type, tt.elem_type)}): convnet computes "
                                   "in float32")
        dims: list[int | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                if d.dim_value <= 0:
                    raise refuse(self.path, f"the graph's input {v.name!r} declares a dimension "
                                             f"of {d.dim_value:,}; refused")
                dims.append(int(d.dim_value))
            else:
                dims.append(None)
        if len(dims) not in (2, 4):
            raise NotRepresentable(f"{where} has {len(dims)} dimensions; convnet takes images "
                                   "(N, C, H, W) or (N, H, W, C), or vectors (N, n)")
        #: a batch size the file fixes (a Reshape to (1, n) then means (N, n))
        self.batch = dims[0]
        layout = "vec" if len(dims) == 2 else self._input_layout(v.name)
        body = dims[1:]
        if layout == "NCHW":
            body = [body[1], body[2], body[0]]
        given = tuple(self.input_shape) if self.input_shape is not None else None
        if given is None and any(d is None for d in body):
            meta = _meta_json(self.model, "convnet.input", {}) or {}
            shape = meta.get("shape") if isinstance(meta, dict) else None
            if isinstance(shape, list) and len(shape) == len(body) and all(
                    b is None or b == s for b, s in zip(body, shape, strict=True)):
                given = tuple(shape)
        if given is not None:
            if len(given) != len(body) or any(b is not None and b != s
                                              for b, s in zip(body, given, strict=True)):
                raise NotRepresentable(f"{where} is {_fmt_dims(body)} (H x W x D), not "
                                       f"{_fmt_dims(given)}")
            body = list(given)
        if any(d is None for d in body):
            raise NotRepresentable(
                f"{where} has a symbolic size {_fmt_dims(body)} (H x W x D): say which to use "
                "(convnet import --input 224x224x3, or input_shape=(224, 224, 3))")
        from convnet.net.graph import check_input_shape

        try:
            shape = check_input_shape(tuple(int(b) for b in body))
        except ConvnetError as exc:
            raise refuse(self.path, f"the graph's input: {exc}") from None
        if layout == "NHWC":
            self.notes.append(f"the input {v.name!r} is NHWC (N, H, W, C), as tf2onnx writes "
                              "it: the Transposes to NCHW and back are followed, not layers")
        val = self.asm.input(shape, layout)
        self.env[v.name] = val
        return val

    def _input_layout(self, name: str) -> str:
        """NHWC when the input (after a normalisation prefix) is read only by Transposes to
        NCHW, as tf2onnx writes it; NCHW otherwise."""
        v = self._after_prefix(name)
        readers = [self.g.node[i] for i in self.consumers.get(v, [])]
        if readers and all(n.op_type == "Transpose" and list(_perm(n)) == [0, 3, 1, 2]
                           for n in readers):
            return "NHWC"
        return "NCHW"

    def _after_prefix(self, name: str) -> str:
        v = name
        while True:
            readers = self.consumers.get(v, [])
            if len(readers) != 1:
                return v
            n = self.g.node[readers[0]]
            if n.op_type not in ("Sub", "Add", "Mul", "Div") or len(n.input) != 2:
                return v
            other = n.input[1] if n.input[0] == v else n.input[0]
            if not isinstance(self.env.get(other), _Lazy) and not self._is_constant_node(other):
                return v
            v = n.output[0]

    def _is_constant_node(self, name: str) -> bool:
        return any(n.op_type == "Constant" and name in n.output for n in self.g.node)

    # ---------------------------------------------------------------------------- walk
    def run(self) -> Val:
        x_in = self.graph_input()
        depth = x_in.shape[-1] if x_in.layout != "vec" else arith.num_elements(x_in.shape)
        #: the input after the normalisation prefix so far: value -> (a, b, ops), x*a + b
        self.affine: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
            self.inputs[0].name: (np.ones(depth), np.zeros(depth), "")}
        out_name = self.g.output[0].name
        for i in self.order:
            n = self.g.node[i]
            where = f"{self.path.name}: node {label(n, i)!r} ({n.op_type})"
            if n.domain not in ("", "ai.onnx"):
                raise NotRepresentable(f"{where}: an operator of domain {n.domain!r}, not a "
                                       "standard ONNX one: convnet cannot import it")
            try:
                self.node(n, i, where, out_name)
            except ConvnetError:
                raise
            except (ArithmeticError, AttributeError, IndexError, KeyError, TypeError,
                    ValueError) as exc:
                # attributes of the wrong kind or length: a malformed node, not a crash
                raise NotRepresentable(f"{where}: malformed ({type(exc).__name__}: {exc})") \
                    from None
        out = self.env.get(out_name)
        if isinstance(out, _Lazy) or isinstance(out, np.ndarray) or out is None:
            raise NotRepresentable(f"{self.path.name}: the graph's output {out_name!r} is a "
                                   "constant, not computed from the input")
        return out

    def node(self, n: Any, i: int, where: str, out_name: str) -> None:
        op = n.op_type
        attrs = node_attrs(n, where, self.base)
        ins = list(n.input)
        if not n.output or not n.output[0]:
            raise NotRepresentable(f"{where}: a node without an output")
        if op == "Constant":
            self.env[n.output[0]] = self._constant(attrs, where)
            return
        # the input's normalisation prefix (Sub/Div, Mul/Add with constants)
        if op in ("Sub", "Add", "Mul", "Div") and len(ins) == 2 and (
                ins[0] in self.affine or ins[1] in self.affine):
            if self._affine(n, ins, where):
                return
        for v in ins:
            if v in self.affine:
                self._end_prefix(v)
        if not ins or not ins[0]:
            raise NotRepresentable(f"{where}: {op} reads no value (it generates one): convnet "
                                   "imports layers that compute on their input")
        values = [self.env.get(v) if v else None for v in ins]
        if all(not isinstance(v, Val) for v in values):
            self.env[n.output[0]] = self._fold(op, n, ins, attrs, where)
            return
        for extra in n.output[1:]:
            if extra and (self.consumers.get(extra) or extra == out_name):
                raise NotRepresentable(f"{where}: its output {extra!r} ({op}'s second output: "
                                       "training statistics, indices or a mask) is used: convnet "
                                       "computes the first output only")
        name = label(n, i)
        handler = getattr(self, f"_op_{op}", None)
        if handler is not None:
            result = handler(n, name, ins, attrs, where, out_name)
        else:
            result = self._layer(n, name, ins, attrs, where)
        self.env[n.output[0]] = result

    def _layer(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
               where: str) -> Val:
        """A node the table (or the assembler) knows: its first input is the data, the others
        its stored weights, by slot."""
        x = self.val(ins[0], where)
        weights: dict[str, np.ndarray] = {}
        slots = SLOTS.get(n.op_type, ())
        if n.op_type == "Pad":
            slots = ("pads", "constant_value", "axes")
        for slot, name in zip(slots, ins[1:], strict=False):
            if not name:
                continue
            c = self.const(name, where)
            if c is None:
                raise NotRepresentable(f"{where}: its {slot} input {name!r} is computed by the "
                                       "graph, not stored: convnet imports stored weights only")
            weights[slot] = c.astype(np.float32) if c.dtype.kind == "f" else c
        if len(ins) - 1 > len(slots):
            raise NotRepresentable(f"{where}: {len(ins)} inputs; {n.op_type} here takes "
                                   f"{1 + len(slots)}")
        if n.op_type == "Pad" and weights.get("axes") is not None:
            raise NotRepresentable(f"{where}: Pad with an axes input: write pads for every axis")
        node = Node(n.op_type, label, [ins[0]], list(n.output), attrs, weights)
        return self.asm.apply(node, [x])

    # ----------------------------------------------------------------------- constants
    def _constant(self, attrs: dict[str, Any], where: str) -> np.ndarray:
        if "value" in attrs:
            return np.asarray(attrs["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                return np.asarray(attrs[key], dtype=dtype)
        raise NotRepresentable(f"{where}: a Constant convnet cannot read (keys "
                               f"{sorted(attrs)})")

    def _fold(self, op: str, n: Any, ins: list[str], attrs: dict[str, Any],
              where: str) -> np.ndarray:
        """A node of constants (shape arithmetic) evaluated now."""
        args = []
        for v in ins:
            if not v:
                args.append(None)
                continue
            c = self.const(v, where)
            if c is None:
                c = self.env.get(v)
            args.append(c)
        out = FOLD.get(op)
        if out is None:
            raise NotRepresentable(f"{where}: computes a constant with {op}, which convnet does "
                                   "not evaluate (it folds Shape arithmetic: "
                                   f"{', '.join(sorted(FOLD))})")
        try:
            size = folded_size(op, args, attrs)  # from the shapes: checked before allocating
            if size > MAX_FOLDED:
                raise CheckpointError(f"{where}: computes {size:,} values, more than the "
                                      f"{MAX_FOLDED:,} convnet folds; refused")
            res = np.asarray(out(args, attrs))
        except (ValueError, IndexError, TypeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise NotRepresentable(f"{where}: cannot evaluate it ({exc})") from None
        if res.size > MAX_FOLDED:
            raise CheckpointError(f"{where}: computes {res.size:,} values, more than the "
                                  f"{MAX_FOLDED:,} convnet folds; refused")
        return res

    # ---------------------------------------------------------- the normalisation prefix
    def _affine(self, n: Any, ins: list[str], where: str) -> bool:
        """Takes ``Sub/Add/Mul/Div(prefix value, constant)`` into the input's affine map; False
        when it is not one (then the prefix ends there)."""
        v, c = (ins[0], ins[1]) if ins[0] in self.affine else (ins[1], ins[0])
        const = self.const(c, where)
        if const is None or len(self.consumers.get(v, [])) != 1:
            return False
        if n.op_type in ("Sub", "Div") and v != ins[0]:
            return False      # c - x, c / x: not a normalisation
        try:
            k = channel_vector(const, self.env[self.inputs[0].name], where).astype(np.float64)
        except NotRepresentable:
            return False
        a, b, ops = self.affine[v]
        if n.op_type == "Sub":
            b = b - k
        elif n.op_type == "Add":
            b = b + k
        elif n.op_type == "Mul":
            a, b = a * k, b * k
        else:
            if np.any(k == 0):
                return False
            a, b = a / k, b / k
        self.affine[n.output[0]] = (a, b, ops + n.op_type[0])
        self.env[n.output[0]] = self.env[self.inputs[0].name]
        return True

    def _end_prefix(self, v: str) -> None:
        a, b, ops = self.affine.pop(v)
        self.affine.clear()
        if not ops:
            return
        if np.any(a <= 0):
            raise NotRepresentable(f"{self.path.name}: the graph's first nodes scale its input "
                                   "by a negative or zero factor: not a normalisation")
        self.normalizer = {"mean": (-b / a).astype(np.float32),
                           "std": (1.0 / a).astype(np.float32)}
        self.notes.append(f"the first nodes ({'-'.join(_OPS[o] for o in ops)} with constants) "
                          "normalise the input: taken as the model's normaliser, "
                          "(x - mean) / std")

    # ----------------------------------------------------------------- no layer / patterns
    def _op_Add(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any], where: str,
                out_name: str) -> Val:
        return self._arith(n, label, ins, attrs, where)

    def _op_Concat(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                   where: str, out_name: str) -> Val:
        vals = [self.env.get(v) for v in ins]
        if not all(isinstance(v, Val) for v in vals):
            raise NotRepresentable(f"{where}: concatenates a constant to a computed value: "
                                   "convnet's CAT stacks branches of the network")
        return self.asm.apply(Node(n.op_type, label, ins, list(n.output), attrs), vals)

    def _op_Sum(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any], where: str,
                out_name: str) -> Val:
        return self._arith(n, label, ins, attrs, where)

    def _arith(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
               where: str) -> Val:
        vals = [self.env.get(v) for v in ins]
        if all(isinstance(v, Val) for v in vals):
            return self.asm.apply(Node(n.op_type, label, ins, list(n.output), attrs),
                                  vals)
        if n.op_type == "Add" and len(ins) == 2:
            x = next(v for v in vals if isinstance(v, Val))
            c = self.const(next(v for v, val in zip(ins, vals, strict=True)
                                if not isinstance(val, Val)), where)
            src = next(v for v, val in zip(ins, vals, strict=True) if isinstance(val, Val))
            self._sole_reader(x, src, n, where)
            return self.asm.bias_add(Node(n.op_type, label, ins, list(n.output)), x, c)
        raise NotRepresentable(f"{where}: mixes computed values and constants in a way that is "
                               "not a bias")

    def _sole_reader(self, x: Val, name: str, n: Any, where: str) -> None:
        """The bias Add must be the only reader of the value (and of its views: Transposes)."""
        views = {k for k, v in self.env.items() if isinstance(v, Val) and v.src == x.src
                 and v.flat is None}
        readers = [m for m in self.g.node if any(i in views for i in m.input)
                   and not (m.op_type in ALIAS_OPS and m.output[0] in views)]
        if readers != [n]:
            raise NotRepresentable(f"{where}: adds a constant to a value that other nodes read "
                                   "too: convnet folds a constant into the bias of the layer "
                                   "that computes the value only when the Add is its one reader")

    def _op_Dropout(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                    where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        mode = self.const(ins[2], where) if len(ins) > 2 and ins[2] else None
        if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
            raise NotRepresentable(f"{where}: a Dropout in training mode (training_mode=True)")
        return x

    def _op_Sub(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any], where: str,
                out_name: str) -> Val:
        raise NotRepresentable(f"{where}: arithmetic with a constant inside the network: convnet "
                               "reads a Sub, Mul or Div only at the start (a normalisation)")

    _op_Mul = _op_Div = _op_Sub

    def _op_MatMul(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                   where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        W = self.const(ins[1], where)
        if W is None or W.ndim != 2:
            what = "a computed value" if W is None else f"a {W.ndim}-D constant"
            raise NotRepresentable(f"{where}: MatMul by {what}: convnet reads MatMul(x, W) with "
                                   "a stored (n, K) matrix W as an FC")
        if x.is_volume or x.layout == "gap":
            raise NotRepresentable(f"{where}: MatMul of a {x.layout} volume multiplies along "
                                   "its last axis only, not a layer of convnet (flatten first)")
        node = Node("Gemm", label, [ins[0]], list(n.output), {"transB": 0},
                    {"B": W.astype(np.float32)}, origin=f"node {label!r} (MatMul)")
        return self.asm.apply(node, [x])

    def _op_Gemm(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                 where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        if x.is_volume:
            raise NotRepresentable(f"{where}: Gemm of a 4-D volume")
        return self._layer(n, label, ins, attrs, where)

    def _op_Reshape(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                    where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        target = self.const(ins[1], where) if len(ins) > 1 else None
        if target is None:
            target = self.env.get(ins[1]) if len(ins) > 1 else attrs.get("shape")
        if target is None or not isinstance(target, np.ndarray | list):
            raise NotRepresentable(f"{where}: a Reshape to a computed shape")
        have = x.onnx_shape(BATCH)
        given = list(np.asarray(target, dtype=object).ravel())
        target = [BATCH if (i == 0 and self.batch is not None and not isinstance(t, Batch)
                            and int(t) == self.batch) else t for i, t in enumerate(given)]
        want = resolve_reshape(target, have, bool(attrs.get("allowzero", 0)))
        if want is not None and want == have:
            return x
        if want is not None and len(want) == 2 and want[0] is BATCH:
            return self.asm.flatten(x, where, Node(n.op_type, label))
        raise NotRepresentable(
            f"{where}: Reshape of {_fmt_onnx(have)} to [{', '.join(str(t) for t in given)}]: "
            "convnet reads a Reshape that flattens (N, ...) to (N, n) only")

    def _op_Squeeze(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                    where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = self.const(ins[1], where)
        axes = sorted(int(a) % 4 for a in np.asarray(axes).ravel()) if axes is not None else None
        if x.layout == "gap" and axes in (None, [2, 3], [1, 2]):
            return self.asm.flatten(x, where, Node(n.op_type, label))
        raise NotRepresentable(f"{where}: Squeeze(axes={axes}) of a value held as {x.layout}: "
                               "convnet reads a Squeeze of a pooled (N, C, 1, 1) only")

    def _op_ReduceMean(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                       where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = self.const(ins[1], where)
        axes = sorted(int(a) % 4 for a in np.asarray(axes).ravel()) if axes is not None else None
        spatial = {"NCHW": [2, 3], "NHWC": [1, 2]}.get(x.layout)
        if x.flat is not None or spatial is None or axes != spatial:
            raise NotRepresentable(f"{where}: ReduceMean(axes={axes}) of a value held as "
                                   f"{x.layout}: convnet reads a mean over the rows and columns "
                                   "of a volume (GAP) only")
        gap = self.asm.apply(Node("GlobalAveragePool", label, [ins[0]], list(n.output),
                                  origin=f"node {label!r} (ReduceMean)"),
                             [replace(x, layout="NCHW")])
        return gap if attrs.get("keepdims", 1) else self.asm.flatten(gap, where)

    def _op_Softmax(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                    where: str, out_name: str) -> Val:
        x = self.val(ins[0], where)
        if n.output[0] != out_name or x.layout not in ("vec", "gap"):
            raise NotRepresentable(f"{where}: a Softmax inside the network: convnet applies "
                                   "softmax to its output scores only (where it shows "
                                   "probabilities)")
        self.notes.append(f"the final Softmax ({label!r}) is left out: convnet's outputs are "
                          "the scores before it, and it shows probabilities as softmax(scores)")
        self.softmax = True
        return x

    def _op_Shape(self, n: Any, label: str, ins: list[str], attrs: dict[str, Any],
                  where: str, out_name: str) -> np.ndarray:
        x = self.val(ins[0], where)
        shape = np.array(x.onnx_shape(BATCH), dtype=object)
        start, end = attrs.get("start", 0), attrs.get("end")
        return shape[start:end]


class _Lazy:
    """An initializer not yet read (only the weights a node reads are turned into arrays)."""

    def __init__(self, t: Any) -> None:
        self.t = t


_OPS = {"S": "Sub", "A": "Add", "M": "Mul", "D": "Div"}


def _perm(n: Any) -> list[int]:
    for a in n.attribute:
        if a.name == "perm":
            return list(a.ints)
    return []


def _fmt_dims(dims: Sequence[Any]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _fmt_onnx(dims: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _meta(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _meta_json(model: Any, key: str, default: Any) -> Any:
    text = _meta(model).get(key)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _metadata(model: Any, net: Graph, walk: _Walk, notes: list[str]) -> tuple[Any, Any, Any]:
    """Class names, normaliser and input information from the metadata, checked against the
    network (a value that does not fit is left out, and said so)."""
    classes = _meta_json(model, "classes", None)
    if classes is not None:
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                and len(classes) == net.output_shape[-1]):
            notes.append("metadata 'classes' is not a list of one name per output: left out")
            classes = None
    norm = walk.normalizer
    meta_norm = _meta_json(model, "normalization", None)
    if isinstance(meta_norm, dict) and norm is None:
        try:
            mean = np.asarray(meta_norm["mean"], np.float32).reshape(-1)
            std = np.asarray(meta_norm["std"], np.float32).reshape(-1)
            depth = net.input_shape[-1]
            if mean.shape != (depth,) or std.shape != (depth,) or not (
                    np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise ValueError("shapes or values")
            if meta_norm.get("baked"):
                notes.append("metadata 'normalization' says it is baked into the graph, but its "
                             "first nodes do not normalise: left out")
            else:
                norm = {"mean": mean, "std": std}
        except (KeyError, TypeError, ValueError):
            notes.append("metadata 'normalization' is not per-channel mean and std: left out")
    info = _meta_json(model, "convnet.input", None)
    if not isinstance(info, dict):
        info = {}
    info = {**info, "shape": list(net.input_shape)}
    return classes, norm, info


def _restore_spec(model: Any, structure: Graph, notes: list[str]) -> Graph | None:
    """A file convnet wrote keeps its spec (metadata ``convnet.spec``). Where that spec exports
    to the very graph imported (the table read left to right gives the same nodes, attributes,
    wiring and shapes), the network is built from it: the layers inference drops (DROPOUT) and
    convnet's own spellings (``floor=true`` where the stride fits, DWCONV on one slice) come
    back, and a round trip gives the very network. None where it does not."""
    spec = _meta(model).get("convnet.spec")
    if not spec:
        return None
    from convnet.spec.parser import build_text

    try:
        twin = build_text(spec, weights=False)
        if _signature(twin) != _signature(structure):
            return None
        twin = build_text(spec, seed=0)
    except ConvnetError:
        return None
    if twin.spec != structure.spec:
        notes.append("rebuilt from the spec in the file's metadata, which exports to this very "
                     "graph: its DROPOUT layers and spellings come back")
    return twin


def _signature(net: Graph) -> list[Any]:
    """What the exported graph of ``net`` is, with the values numbered instead of named: its
    nodes (operators, attributes, wiring) and each layer's output shape and parameter count
    (DROPOUT left out: it exports to nothing)."""
    from convnet.interop.onnx_export import graph_nodes

    ids: dict[str, int] = {}

    def num(v: str) -> int:
        return ids.setdefault(v, len(ids))

    nodes = [(n.op, sorted((k, repr(v)) for k, v in n.attrs.items()),
              tuple(num(v) for v in n.inputs), tuple(num(v) for v in n.outputs))
             for n in graph_nodes(net)[0]]
    layers = [(tuple(s), ly.count_params()) for ly, s in zip(net.layers, net.shapes,
                                                              strict=True)
              if ly.kind != "DROPOUT"]
    return [nodes, layers]


def read_onnx(path: str | os.PathLike[str], input_shape: Sequence[int] | None = None, *,
              max_bytes: int = MAX_BYTES) -> OnnxModel:
    """Read an ONNX file into an :class:`OnnxModel` (the network and what came with it).

    ``input_shape`` ``(H, W, D)`` gives the size where the graph's input has symbolic height
    and width (convnet's own files say it in their metadata).

    Raises:
        CheckpointError: a file that cannot be read safely (too large, not ONNX, a tensor whose
            data does not match its declared size, external data outside the model's
            directory, a cycle, an input nothing defines).
        NotRepresentable: a node convnet cannot represent, naming it and its operator.
        ShapeError: a node whose shapes do not work.
    """
    path = Path(path)
    model = load_model(path, max_bytes)
    walk = _Walk(model, path, input_shape)
    out = walk.run()
    notes = walk.notes
    structure = walk.asm.structure(out)
    net = _restore_spec(model, structure, notes)
    if net is None:
        net = walk.asm.build(structure)
    else:
        walk.asm.fill([ly for ly in net.layers if ly.kind != "DROPOUT"], structure.layers)
    origin = walk.asm.origin
    classes, norm, info = _metadata(model, net, walk, notes)
    return OnnxModel(net, classes, norm, info, notes, origin, _meta(model),
                     f"{model.producer_name} {model.producer_version}".strip(),
                     walk.asm.input_val.layout, out.layout, walk.normalizer is not None,
                     walk.softmax)


def agreement(m: OnnxModel, path: str | os.PathLike[str], *, batch: int = 2,
              seed: int = 0) -> float:
    """The largest relative difference between the imported network and onnxruntime running
    the file, on random inputs in ``[0, 1]``: ``max |convnet - onnxruntime| / max
    |onnxruntime|`` (through the softmax the file ends in, when it does)."""
    ort = require("onnxruntime")
    from convnet.ops.loss import softmax

    net = m.net
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *net.input_shape), dtype=np.float32)
    xn = x if not m.baked else (x - m.normalizer["mean"]) / m.normalizer["std"]
    want = net.forward(xn.astype(net.dtype)).astype(np.float64)
    if m.softmax:
        want = softmax(want)
    feed = x.transpose(0, 3, 1, 2) if m.layout == "NCHW" else x
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(feed)})[0]
    if m.output_layout == "NCHW":
        got = got.transpose(0, 2, 3, 1)
    got = got.reshape(want.shape).astype(np.float64)
    return float(np.abs(got - want).max()) / max(float(np.abs(got).max()), 1e-30)


def import_onnx(path: str | os.PathLike[str], input_shape: Sequence[int] | None = None, *,
                max_bytes: int = MAX_BYTES) -> Graph:
    """The network in an ONNX file, as a convnet network like any other: a
    :class:`~convnet.net.sequential.Sequential` when it is a chain, else a
    :class:`~convnet.net.graph.Graph` of RES/CAT blocks.

    Its class names and normalisation (from the metadata, or from normalising first nodes) are
    attached as ``net.classes`` and ``net.normalizer`` (None when absent), as
    :func:`convnet.load` does; :func:`read_onnx` returns everything, with notes on what was
    recognised.

    >>> import convnet as cn, tempfile, os
    >>> net = cn.build("INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
    >>> p = cn.export_onnx(net, os.path.join(tempfile.mkdtemp(), "m.onnx"))
    >>> back = cn.import_onnx(p)
    >>> back.spec == net.spec and all((back.state_dict()[k] == v).all()
    ...                               for k, v in net.state_dict().items())
    True

    Raises: as :func:`read_onnx`.
    """
    m = read_onnx(path, input_shape, max_bytes=max_bytes)
    m.net.classes = m.classes  # type: ignore[attr-defined]
    m.net.normalizer = m.normalizer  # type: ignore[attr-defined]
    return m.net


def onnx_checkpoint(path: str | os.PathLike[str]) -> Any:
    """An ONNX file as a :class:`~convnet.train.checkpoint.Checkpoint` (epoch 0, no optimiser
    state): how every verb that takes a MODEL reads a ``.onnx`` file."""
    from convnet.train.checkpoint import Checkpoint

    m = read_onnx(path)
    return Checkpoint(path=Path(path), net=m.net, spec=m.net.spec, classes=m.classes,
                      normalizer=m.normalizer, input=m.input,
                      extra={"onnx": {"producer": m.producer, "notes": m.notes}})


def is_onnx(path: Any) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix)."""
    return isinstance(path, str | os.PathLike) and os.fspath(path).strip().lower().endswith(
        ".onnx")


__all__ = ["MAX_BYTES", "OnnxModel", "agreement", "check_tensor", "import_onnx", "is_onnx",
           "load_model", "onnx_checkpoint", "read_onnx", "tensor_array"]
