"""Reading an ONNX file safely: what is checked before anything large is made.

- the protobuf's size against a cap (:data:`MAX_BYTES`), before it is parsed;
- every stored tensor's declared dims and data type against the bytes it holds
  (:func:`check_tensor`): a tensor declaring 90 billion values in 16 bytes is refused without
  allocating them, and a tensor is turned into an array only when a node reads it;
- external data only as a file inside the model's own directory (no ``..``, no absolute path, no
  link leading out), with the declared length present;
- every node input defined, no cycle (:func:`topological_order`), at most :data:`MAX_NODES`
  nodes.

Every refusal is a :class:`~convnet.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convnet.errors import CheckpointError
from convnet.interop import require
from convnet.interop.mapping import NotRepresentable
from convnet.net.graph import MAX_PARAMS
from convnet.safety import cap, open_regular, read_capped, too_big

#: the largest ONNX protobuf read (a protobuf cannot be larger than 2 GiB anyway)
MAX_BYTES = 2**31 - 1
#: the most nodes a graph may have
MAX_NODES = 200_000
#: data types a stored tensor may have, with their NumPy types
DTYPES = {1: np.float32, 11: np.float64, 10: np.float16, 7: np.int64, 6: np.int32,
          3: np.int8, 2: np.uint8, 9: np.bool_}
NAMES = {1: "FLOAT", 11: "DOUBLE", 10: "FLOAT16", 7: "INT64", 6: "INT32", 3: "INT8",
         2: "UINT8", 9: "BOOL"}



def refuse(path: Any, msg: str) -> CheckpointError:
    return CheckpointError(f"{Path(path).name}: {msg}")


def load_model(path: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> Any:
    """The ``ModelProto`` at ``path``, read without its external data, after the file-level
    checks: a regular file (:func:`convnet.safety.open_regular`: a FIFO or a device is refused
    before a byte is read) no larger than ``max_bytes`` nor the ``checkpoint_bytes`` cap
    (``--max-checkpoint-bytes``), which also bounds the external data its tensors declare,
    that parses as ONNX, with a graph.

    Raises :class:`~convnet.errors.CheckpointError` naming the file."""
    onnx = require("onnx")
    p = Path(path)
    limit = cap("checkpoint_bytes")
    with open_regular(p, what="ONNX model", error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise refuse(p, f"{size:,} bytes, more than the {max_bytes:,} an ONNX protobuf may "
                            "have here; a larger model keeps its weights as external data "
                            "beside the .onnx file")
        if size > limit:
            raise too_big(p, "the ONNX model", size, "checkpoint_bytes", CheckpointError)
        data = read_capped(f, min(max_bytes, limit), p, "the ONNX model", CheckpointError)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:   # protobuf's DecodeError and friends
        raise refuse(p, f"not an ONNX model (the protobuf does not parse: "
                         f"{type(exc).__name__})") from None
    del data
    if not model.HasField("graph") or not model.graph.node:
        raise refuse(p, "an ONNX model without a graph (or with no node)")
    external = 0
    for t in model.graph.initializer:
        if t.data_location == 1:   # EXTERNAL: what would be read beside the file
            item = np.dtype(DTYPES[t.data_type]).itemsize if t.data_type in DTYPES else 1
            external += math.prod(max(int(d), 0) for d in t.dims) * item
    total = size + external
    if total > limit:
        raise too_big(p, "the ONNX model with its external data", total, "checkpoint_bytes",
                      CheckpointError)
    return model


def _external(t: Any, base: Path, where: str) -> tuple[Path, int, int | None]:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    rel = Path(loc)
    if not loc or rel.is_absolute() or ".." in rel.parts or loc.startswith(("/", "\\")):
        raise CheckpointError(f"{where}: external data location {loc!r} is not a file name "
                              "inside the model's directory; refused")
    root = base.resolve()
    target = (root / rel).resolve()
    if root not in target.parents:
        raise CheckpointError(f"{where}: external data location {loc!r} leads outside the "
                              "model's directory (a link?); refused")
    if not target.is_file():
        raise CheckpointError(f"{where}: its external data file {loc!r} is missing")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise CheckpointError(f"{where}: external data offset/length are not numbers") from None
    if offset < 0 or (length is not None and length < 0):
        raise CheckpointError(f"{where}: negative external data offset or length")
    return target, offset, length


def check_tensor(t: Any, where: str, base: Path) -> tuple[np.dtype, list[int], int]:
    """Check that a stored tensor's declared dims and data type match the bytes it holds (or its
    external file), before anything is allocated: ``(dtype, dims, count)``."""
    if t.data_type not in DTYPES:
        raise CheckpointError(f"{where}: data type {t.data_type} is not one convnet reads "
                              f"({', '.join(NAMES.values())})")
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{where}: negative dimension in {dims}")
    count = math.prod(dims)      # Python integers: no overflow
    if count > MAX_PARAMS:
        raise CheckpointError(f"{where}: declares {dims} = {count:,} values, more than the "
                              f"{MAX_PARAMS:,} a convnet network may hold; refused")
    if t.HasField("segment"):
        raise CheckpointError(f"{where}: a segmented tensor; refused")
    dtype = np.dtype(DTYPES[t.data_type])
    need = count * dtype.itemsize
    if t.data_location == 1:   # EXTERNAL
        target, offset, length = _external(t, base, where)
        have = target.stat().st_size - offset
        if (length is not None and length != need) or have < need:
            got = length if length is not None else have
            raise CheckpointError(f"{where}: external data holds {got:,} bytes for {dims} "
                                  f"{NAMES[t.data_type]} ({need:,} bytes); refused")
    elif t.HasField("raw_data"):
        if len(t.raw_data) != need:
            raise CheckpointError(f"{where}: raw data of {len(t.raw_data):,} bytes for {dims} "
                                  f"{NAMES[t.data_type]} ({need:,} bytes); refused")
    else:
        field_ = {1: "float_data", 11: "double_data", 7: "int64_data"}.get(t.data_type,
                                                                           "int32_data")
        if len(getattr(t, field_)) != count:
            raise CheckpointError(f"{where}: {len(getattr(t, field_)):,} values in {field_} "
                                  f"for {dims} ({count:,} values); refused")
    return dtype, dims, count


def tensor_array(t: Any, where: str, base: Path) -> np.ndarray:
    """A stored tensor as an array, after :func:`check_tensor`: nothing is allocated for a
    tensor whose size is a lie."""
    from onnx import numpy_helper

    dtype, dims, count = check_tensor(t, where, base)
    if t.data_location == 1:
        target, offset, _ = _external(t, base, where)
        with open_regular(target, what="external data file", error=CheckpointError) as f:
            arr = np.fromfile(f, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
        return arr.reshape(dims).astype(dtype)
    return numpy_helper.to_array(t)


def node_attrs(node: Any, where: str, base: Path) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    out = {}
    for a in node.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            raise NotRepresentable(f"{where}: holds a subgraph (control flow): convnet imports "
                                   "feed-forward networks")
        if a.type == AttributeProto.TENSOR:
            out[a.name] = tensor_array(a.t, f"{where} attribute {a.name!r}", base)
            continue
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return out


def label(node: Any, i: int) -> str:
    return node.name or (node.output[0] if node.output else f"#{i}")


def topological_order(nodes: Sequence[Any], defined: set[str], path: Any) -> list[int]:
    """The nodes in an order where every input is defined first; CheckpointError for an input
    nothing defines or a cycle."""
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                if o in producer or o in defined:
                    raise refuse(path, f"node {label(n, i)!r} ({n.op_type}) writes {o!r}, "
                                        "which another node or a graph input also defines")
                producer[o] = i
    for i, n in enumerate(nodes):
        for v in n.input:
            if v and v not in defined and v not in producer:
                raise refuse(path, f"node {label(n, i)!r} ({n.op_type}) reads {v!r}, which no "
                                    "node, initializer or graph input defines")
    deps = [{producer[v] for v in n.input if v in producer} for n in nodes]
    readers: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            readers[j].append(i)
    left = [len(d) for d in deps]
    # Kahn's algorithm, smallest index first: the file's own order where it is already one
    ready = [i for i, k in enumerate(left) if k == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            left[j] -= 1
            if left[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [label(nodes[i], i) for i, k in enumerate(left) if k][:6]
        raise refuse(path, f"the graph has a cycle (nodes {', '.join(map(repr, stuck))} read "
                            "each other's outputs): a network is acyclic")
    return order


__all__ = ["DTYPES", "MAX_BYTES", "MAX_NODES", "NAMES", "check_tensor", "label", "load_model",
           "node_attrs", "refuse", "tensor_array", "topological_order"]
