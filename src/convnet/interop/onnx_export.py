"""Export a convnet network to ONNX: the table (:mod:`convnet.interop.mapping`) read from left
to right, written with ``onnx.helper``.

The graph takes NCHW float32 ``(N, D, H, W)``, the convention of every ONNX consumer, with a
symbolic batch dimension ``N`` (and symbolic ``H`` and ``W`` when the network is fully
convolutional, so that onnxruntime runs it on larger images); ``nhwc=True`` makes a graph that
takes convnet's own ``(N, H, W, D)`` arrays (a Transpose first, and one last for a volume
output). Standard operators only, opset 17 or newer; what ``onnx.checker.check_model(...,
full_check=True)`` accepts is checked before the file is written.

What travels with the model, as ONNX metadata (``metadata_props``, JSON values):

==========================  ===================================================================
``classes``                 the class names, ``classes[i]`` names output ``i``
``normalization``           ``{"mean": [...], "std": [...], "baked": false}``: the per-channel
                            normalisation the network expects its input to have had,
                            ``(x - mean) / std`` on images in ``[0, 1]``
``convnet.spec``            the architecture in convnet's language
``convnet.input``           how raw images become input (shape, value range, data set)
``convnet.layout``          ``"NCHW"`` or ``"NHWC"``: what the graph's input is
==========================  ===================================================================

The normalisation stays out of the graph by default, so the graph is exactly the network (as
torchvision's models expect normalised input); ``bake_normalization=True`` puts it in as the
first nodes (``Sub`` then ``Div``, per channel), so the graph takes raw images in ``[0, 1]``,
and the metadata says ``"baked": true``. :func:`~convnet.interop.import_onnx` reads either back
into the model's normaliser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convnet.errors import ConfigError
from convnet.interop import require
from convnet.interop.mapping import MIN_OPSET, SLOTS, Node, Val, export_nodes
from convnet.net.graph import Graph
from convnet.safety import atomic_write

#: a protobuf holds at most 2 GiB; past this much weight the tensors go to a side file
EXTERNAL_DATA_BYTES = 1_800_000_000
INPUT, OUTPUT = "input", "output"


def _json(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else
                      float(o) if isinstance(o, np.floating) else int(o))


def _normalizer(net: Graph, normalizer: Any) -> dict[str, np.ndarray] | None:
    from convnet.data.transforms import Normalizer

    stats = Normalizer.coerce(normalizer if normalizer is not None
                              else getattr(net, "normalizer", None))
    if stats is None:
        return None
    depth = net.input_shape[-1]
    if stats.mean.shape != (depth,):
        raise ConfigError(f"normalisation statistics for {stats.mean.size} channel(s), but the "
                          f"network's input has {depth}")
    return {"mean": stats.mean, "std": stats.std}


def graph_nodes(net: Graph, *, nhwc: bool = False,
                stats: Mapping[str, np.ndarray] | None = None) -> tuple[list[Node], Val]:
    """The nodes of ``net``'s graph (the table read left to right), before any protobuf: the
    Transpose of an NHWC input, the normalisation (``stats``) and every layer's nodes, the last
    value renamed ``output``. Pure: no ``onnx`` needed."""
    image = len(net.input_shape) == 3
    nodes: list[Node] = []
    x = Val(INPUT, net.input_shape, "NCHW" if image else "vec")
    if stats is not None:    # on the input as given: per channel, the last axis in NHWC
        shape = ((1, 1, 1, -1) if nhwc else (1, -1, 1, 1)) if image else (1, -1)
        nodes.append(Node("Sub", "normalization/sub", [x.src], ["normalization/centred"],
                          weights={"B": stats["mean"].reshape(shape)},
                          names={"B": "normalization.mean"}))
        nodes.append(Node("Div", "normalization/div", ["normalization/centred"],
                          ["normalization/out"], weights={"B": stats["std"].reshape(shape)},
                          names={"B": "normalization.std"}))
        x = Val("normalization/out", x.shape, x.layout)
    if image and nhwc:
        nodes.append(Node("Transpose", "input/to_nchw", [x.src], ["input/nchw"],
                          {"perm": [0, 3, 1, 2]}))
        x = Val("input/nchw", net.input_shape)
    vals: dict[int, Val] = {-1: x}
    for i, layer in enumerate(net.layers):
        xs = [vals[k] for k in net.inputs_of[i]]
        new = export_nodes(layer, xs, layer.name)
        nodes += new
        if not new:               # DROPOUT: the identity
            vals[i] = xs[0]
            continue
        shape = tuple(layer.output_shape)
        vals[i] = Val(layer.name, shape, "NCHW" if len(shape) == 3 else "vec")
    out = vals[len(net.layers) - 1]
    out_shape = net.output_shape
    if out.src in (INPUT, x.src):
        raise ConfigError("export: the network computes nothing (its layers are the identity "
                          "in inference)")
    if nhwc and len(out_shape) == 3:
        nodes.append(Node("Transpose", "output/to_nhwc", [out.src], [OUTPUT],
                          {"perm": [0, 2, 3, 1]}))
    else:   # the last value is the graph's output: give it its name
        for n in nodes:
            n.inputs = [OUTPUT if v == out.src else v for v in n.inputs]
            n.outputs = [OUTPUT if v == out.src else v for v in n.outputs]
    return nodes, out


def to_model(
    net: Graph,
    *,
    nhwc: bool = False,
    opset: int = MIN_OPSET,
    classes: Sequence[str] | None = None,
    normalizer: Any = None,
    bake_normalization: bool = False,
    input_info: Mapping[str, Any] | None = None,
    dynamic_size: bool | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``net`` (see :func:`export_onnx` for the arguments)."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(net, Graph):
        raise ConfigError(f"export: expected a convnet network, received {type(net).__name__}")
    if not getattr(net, "has_weights", True):
        raise ConfigError("export: this network was built with weights=False (shapes only); "
                          "build it with weights to export it")
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset {opset!r}: convnet writes opset {MIN_OPSET} to {top} (the "
                          f"newest this onnx {onnx.__version__} knows)")
    classes = list(classes) if classes is not None else getattr(net, "classes", None)
    if classes is not None and len(classes) != net.output_shape[-1]:
        raise ConfigError(f"{len(classes)} class names for a network with "
                          f"{net.output_shape[-1]} outputs")
    stats = _normalizer(net, normalizer)
    image = len(net.input_shape) == 3
    if dynamic_size is None:
        dynamic_size = net.fully_convolutional
    dynamic_size = bool(dynamic_size) and image

    nodes, out = graph_nodes(net, nhwc=nhwc, stats=stats if bake_normalization else None)
    out_shape = net.output_shape

    # ------------------------------------------------------------------- the protobuf
    inits, protos = [], []
    for n in nodes:
        ins = list(n.inputs)
        consts = [(s, f"{n.name}.{s}") for s in SLOTS.get(n.op, ())]
        if n.op in ("Sub", "Div"):
            consts = [("B", "")]
        for slot, default in consts:
            if slot not in n.weights:
                continue
            name = n.names.get(slot, default)
            arr = np.ascontiguousarray(n.weights[slot], dtype=np.float32)
            inits.append(numpy_helper.from_array(arr, name))
            ins.append(name)
        protos.append(helper.make_node(n.op, ins, n.outputs, name=n.name, **n.attrs))

    def dims(shape: tuple[int, ...], tail: str) -> list[Any]:
        if len(shape) == 1:
            return ["N", shape[0]]
        h, w, d = shape
        if dynamic_size:
            h, w = f"H{tail}", f"W{tail}"
        return ["N", h, w, d] if nhwc else ["N", d, h, w]

    graph = helper.make_graph(
        protos, "convnet",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, dims(net.input_shape, ""))],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, dims(out_shape, "_out"))],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    from convnet import __version__

    layout = "NHWC" if (nhwc and image) else "NCHW" if image else "vector"
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="convnet", producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=(f"convnet network {net.spec}. Input: float32 "
                    f"{tuple(dims(net.input_shape, ''))} ({layout})"
                    + ("; normalised inside the graph, give images in [0, 1]"
                       if bake_normalization and stats is not None else
                       "; normalise it first as metadata 'normalization' says"
                       if stats is not None else "")
                    + f". Output: {tuple(dims(out_shape, '_out'))} scores."),
    )
    meta = {"convnet.spec": net.spec, "convnet.layout": layout,
            "convnet.input": _json(dict(input_info or {"shape": list(net.input_shape)}))}
    if classes is not None:
        meta["classes"] = _json([str(c) for c in classes])
    if stats is not None:
        meta["normalization"] = _json({**stats, "baked": bool(bake_normalization)})
    helper.set_model_props(model, meta)
    return model


def export_onnx(
    net: Graph,
    path: str | os.PathLike[str],
    *,
    nhwc: bool = False,
    opset: int = MIN_OPSET,
    classes: Sequence[str] | None = None,
    normalizer: Any = None,
    bake_normalization: bool = False,
    input_info: Mapping[str, Any] | None = None,
    dynamic_size: bool | None = None,
    check: bool = True,
) -> Path:
    """Write ``net`` as an ONNX model at ``path`` (atomically) and return the path.

    Args:
        net: the network (its weights in evaluation form: BN with its running statistics,
            DROPOUT gone).
        nhwc: the graph takes ``(N, H, W, D)`` (convnet's layout) instead of ``(N, D, H, W)``.
        opset: the ONNX opset, 17 or newer.
        classes: class names (default: ``net.classes``, set by :func:`convnet.load`).
        normalizer: ``{"mean", "std"}`` or a Normalizer (default: ``net.normalizer``); stored
            as metadata ``normalization``.
        bake_normalization: also put the normalisation in the graph (first nodes ``Sub`` and
            ``Div``): the graph then takes raw images in ``[0, 1]``.
        input_info: how raw images become input (``convnet.input`` metadata).
        dynamic_size: symbolic ``H`` and ``W`` (default: when the network is fully
            convolutional: onnxruntime then runs it on other sizes).
        check: run ``onnx.checker.check_model(full_check=True)`` before writing.

    Shape:
        input ``(N, D, H, W)`` float32 (``nhwc``: ``(N, H, W, D)``; a vector network
        ``(N, n)``) -> output ``(N, K)``, or ``(N, K, H', W')`` for a volume (``nhwc``:
        ``(N, H', W', K)``).

    >>> import convnet as cn, tempfile, os
    >>> net = cn.build("INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
    >>> p = cn.export_onnx(net, os.path.join(tempfile.mkdtemp(), "m.onnx"))
    >>> [n.op_type for n in __import__("onnx").load(p).graph.node]
    ['Conv', 'Relu', 'MaxPool', 'Flatten', 'Gemm']

    Raises:
        ConfigError: an opset out of range, class names or statistics that do not fit.
        NotRepresentable: a layer kind with no line in the table.
    """
    onnx = require("onnx")
    model = to_model(net, nhwc=nhwc, opset=opset, classes=classes, normalizer=normalizer,
                     bake_normalization=bake_normalization, input_info=input_info,
                     dynamic_size=dynamic_size)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: give a file name, e.g. {path / 'model.onnx'}")
    big = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    if check and not big:
        onnx.checker.check_model(model, full_check=True)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    if big:
        # a protobuf holds 2 GiB at most: the weights go to PATH.data beside it
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data")
        if check:
            onnx.checker.check_model(str(path), full_check=True)
        return path
    data = model.SerializeToString()
    atomic_write(path, lambda f: f.write(data))  # umask permissions, as every file we write
    return path


def compare_with_onnxruntime(net: Graph, path: str | os.PathLike[str], *, nhwc: bool = False,
                             normalizer: Any = None, baked: bool = False, batch: int = 2,
                             sizes: Sequence[tuple[int, int]] = (), seed: int = 0) -> float:
    """The largest relative difference between ``net``'s scores and onnxruntime's on the file,
    over random inputs in ``[0, 1]`` (at the network's size and each of ``sizes``):
    ``max |a - b| / max |b|``.

    ``baked``: the file normalises its input itself (the network gets ``(x - mean) / std``).
    """
    ort = require("onnxruntime")
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    stats = _normalizer(net, normalizer) if baked else None
    worst = 0.0
    image = len(net.input_shape) == 3
    for hw in [None, *sizes]:
        shape = net.input_shape if hw is None else (*hw, net.input_shape[2])
        x = rng.random((batch, *shape), dtype=np.float32)
        xn = x if stats is None else (x - stats["mean"]) / stats["std"]
        want = net.forward(xn.astype(net.dtype))
        feed = x.transpose(0, 3, 1, 2) if image and not nhwc else x
        got = sess.run(None, {INPUT: np.ascontiguousarray(feed)})[0]
        if got.ndim == 4 and not nhwc:
            got = got.transpose(0, 2, 3, 1)
        got = got.reshape(want.shape)
        scale = max(float(np.abs(want).max()), 1e-30)
        worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()) / scale)
    return worst


__all__ = ["EXTERNAL_DATA_BYTES", "compare_with_onnxruntime", "export_onnx", "to_model"]
