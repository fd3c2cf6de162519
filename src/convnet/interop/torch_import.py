"""A PyTorch ``nn.Sequential`` as a convnet network, from its modules and state dict.

Each module becomes the node ONNX would write for it (PyTorch's weight layouts are ONNX's:
``Conv2d.weight`` is ``(K, D/G, F, F)``, ``Linear.weight`` ``(K, n)``, a Gemm with
``transB=1``), and the table (:mod:`convnet.interop.mapping`) turns those nodes into layers, as
for an imported ONNX file: one mapping for both. No tracing and no export: the modules are read
as they are (in evaluation form: BN with its running statistics). torch is imported only here.

=================================  ===============================================
PyTorch                            convnet
=================================  ===============================================
Conv2d (zero padding)              CONV (DWCONV where ``groups`` = in_channels)
ConvTranspose2d                    DECONV
Linear                             FC (a flattened volume's rows permuted to NHWC)
BatchNorm1d, BatchNorm2d           BN
ReLU, ReLU6, Hardtanh(0, 6)        RELU, RELU6
LeakyReLU, Tanh, Sigmoid           LRELU, TANH, SIGMOID
MaxPool2d, AvgPool2d               POOL, AVGPOOL
AdaptiveAvgPool2d(1)               GAP (other sizes that divide the input: AVGPOOL)
AdaptiveMaxPool2d(1)               POOL over the whole input
Flatten                            (read by the FC), FLATTEN where something else reads it
ZeroPad2d                          the P of the CONV or POOL after it
Dropout, Dropout2d, Identity       (nothing: the identity in inference)
Softmax (last)                     (left out: convnet's outputs are the scores)
=================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from convnet.interop import require
from convnet.interop.assemble import Assembler
from convnet.interop.mapping import Node, NotRepresentable, Val, f32_attr
from convnet.net.graph import Graph, check_input_shape


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _arr(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _modules(seq: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    nn = require("torch").nn
    for name, m in seq.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            yield from _modules(m, f"{full}.")
        else:
            yield full, m


def _conv_pads(m: Any, where: str) -> list[int]:
    if m.padding_mode != "zeros":
        raise NotRepresentable(f"{where}: padding_mode={m.padding_mode!r}: convnet pads with "
                               "zeros only")
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return [0, 0, 0, 0]
        # 'same': PyTorch puts the odd one at the end
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        total = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
        return [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
    p = _pair(m.padding)
    return [p[0], p[1], p[0], p[1]]


# One function per torch.nn class: (module, node to fill, the value it reads, where) -> the node
# filled, or None for the identity. Looked up by the module's exact class: a subclass may
# compute otherwise (its own forward), so it is refused rather than read as its parent.
def _conv(m: Any, node: Node, x: Val, where: str) -> Node:
    node.op = "Conv"
    node.attrs = {"kernel_shape": _pair(m.kernel_size), "strides": _pair(m.stride),
                  "pads": _conv_pads(m, where), "dilations": _pair(m.dilation),
                  "group": int(m.groups)}
    node.weights = {"W": _arr(m.weight)}
    if m.bias is not None:
        node.weights["B"] = _arr(m.bias)
    return node


def _deconv(m: Any, node: Node, x: Val, where: str) -> Node:
    if m.padding_mode != "zeros":
        raise NotRepresentable(f"{where}: padding_mode={m.padding_mode!r}: convnet pads with "
                               "zeros only")
    p = _pair(m.padding)
    node.op = "ConvTranspose"
    node.attrs = {"kernel_shape": _pair(m.kernel_size), "strides": _pair(m.stride),
                  "pads": [p[0], p[1], p[0], p[1]], "dilations": _pair(m.dilation),
                  "output_padding": _pair(m.output_padding), "group": int(m.groups)}
    node.weights = {"W": _arr(m.weight)}
    if m.bias is not None:
        node.weights["B"] = _arr(m.bias)
    return node


def _linear(m: Any, node: Node, x: Val, where: str) -> Node:
    node.op, node.attrs = "Gemm", {"transB": 1}
    node.weights = {"B": _arr(m.weight)}
    if m.bias is not None:
        node.weights["C"] = _arr(m.bias)
    return node


def _bn(m: Any, node: Node, x: Val, where: str) -> Node:
    if m.running_mean is None:
        raise NotRepresentable(f"{where}: track_running_stats=False: there are no running "
                               "statistics to normalise with in inference")
    if m.momentum is None:
        raise NotRepresentable(f"{where}: momentum=None (a cumulative average): convnet's BN "
                               "keeps an exponential average; set a momentum")
    n = m.num_features
    node.op = "BatchNormalization"
    node.attrs = {"epsilon": f32_attr(m.eps), "momentum": f32_attr(1.0 - m.momentum)}
    node.weights = {
        "scale": _arr(m.weight) if m.affine else np.ones(n, np.float32),
        "B": _arr(m.bias) if m.affine else np.zeros(n, np.float32),
        "input_mean": _arr(m.running_mean), "input_var": _arr(m.running_var)}
    return node


def _clip(m: Any, node: Node, x: Val, where: str) -> Node:
    node.op = "Clip"
    node.weights = {"min": np.array(m.min_val, np.float32),
                    "max": np.array(m.max_val, np.float32)}
    return node


def _op(op: str, **attrs: Any) -> Any:
    def convert(m: Any, node: Node, x: Val, where: str) -> Node:
        node.op = op
        node.attrs = {k: f(m) for k, f in attrs.items()}
        return node
    return convert


def _maxpool(m: Any, node: Node, x: Val, where: str) -> Node:
    if m.return_indices:
        raise NotRepresentable(f"{where}: return_indices=True: a layer gives one output")
    stride = m.stride if m.stride is not None else m.kernel_size
    p = _pair(m.padding)
    node.op = "MaxPool"
    node.attrs = {"kernel_shape": _pair(m.kernel_size), "strides": _pair(stride),
                  "pads": [p[0], p[1], p[0], p[1]], "dilations": _pair(m.dilation),
                  "ceil_mode": int(m.ceil_mode)}
    return node


def _avgpool(m: Any, node: Node, x: Val, where: str) -> Node:
    if m.divisor_override is not None:
        raise NotRepresentable(f"{where}: divisor_override={m.divisor_override}: convnet's "
                               "AVGPOOL divides by the window's size")
    stride = m.stride if m.stride is not None else m.kernel_size
    p = _pair(m.padding)
    node.op = "AveragePool"
    node.attrs = {"kernel_shape": _pair(m.kernel_size), "strides": _pair(stride),
                  "pads": [p[0], p[1], p[0], p[1]], "ceil_mode": int(m.ceil_mode),
                  "count_include_pad": int(m.count_include_pad)}
    return node


def _adaptive(is_max: bool) -> Any:
    def convert(m: Any, node: Node, x: Val, where: str) -> Node:
        out = _pair(m.output_size) if m.output_size is not None else None
        if out == [1, 1]:
            node.op = "GlobalMaxPool" if is_max else "GlobalAveragePool"
        elif (out is not None and not is_max and x.is_volume
              and x.shape[0] % out[0] == 0 and x.shape[1] % out[1] == 0):
            k = [x.shape[0] // out[0], x.shape[1] // out[1]]   # windows that tile the input
            node.op, node.attrs = "AveragePool", {"kernel_shape": k, "strides": k}
        else:
            raise NotRepresentable(f"{where}: output_size={m.output_size} on "
                                   f"{x.shape[:2]}: only sizes that divide the input are "
                                   "windows of one size (convnet's pools)")
        return node
    return convert


def _flatten(m: Any, node: Node, x: Val, where: str) -> Node:
    if m.start_dim != 1 or m.end_dim != -1:
        raise NotRepresentable(f"{where}: start_dim={m.start_dim}, end_dim={m.end_dim}: convnet "
                               "flattens (N, ...) to (N, n)")
    node.op, node.attrs = "Flatten", {"axis": 1}
    return node


def _zeropad(m: Any, node: Node, x: Val, where: str) -> Node:
    left, right, top, bottom = (int(v) for v in m.padding)
    node.op = "Pad"
    node.weights = {"pads": np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)}
    return node


def _identity(m: Any, node: Node, x: Val, where: str) -> None:
    return None


def _converters() -> dict[type, Any]:
    nn = require("torch").nn
    return {
        nn.Conv2d: _conv, nn.ConvTranspose2d: _deconv, nn.Linear: _linear,
        nn.BatchNorm1d: _bn, nn.BatchNorm2d: _bn,
        nn.ReLU: _op("Relu"), nn.ReLU6: _clip, nn.Hardtanh: _clip,
        nn.LeakyReLU: _op("LeakyRelu", alpha=lambda m: f32_attr(m.negative_slope)),
        nn.Tanh: _op("Tanh"), nn.Sigmoid: _op("Sigmoid"),
        nn.MaxPool2d: _maxpool, nn.AvgPool2d: _avgpool,
        nn.AdaptiveAvgPool2d: _adaptive(False), nn.AdaptiveMaxPool2d: _adaptive(True),
        nn.Flatten: _flatten, nn.ZeroPad2d: _zeropad,
        nn.Dropout: _identity, nn.Dropout2d: _identity, nn.AlphaDropout: _identity,
        nn.Identity: _identity,
    }


def _node(m: Any, name: str, x: Val, last: bool) -> Node | None:
    """The ONNX node PyTorch's exporter would write for module ``m`` (None: the identity)."""
    nn = require("torch").nn
    kind = type(m).__name__
    if type(m).__module__.startswith("torch.nn"):
        kind = f"nn.{kind}"
    node = Node("", name, origin=f"module {name!r} ({kind})")
    where = f"nn.Sequential: {node.label}"
    table = _converters()
    convert = table.get(type(m))
    if convert is not None:
        return convert(m, node, x, where)
    if type(m) is nn.Softmax and last:
        return Node("Softmax", name)
    parent = next((c for c in table if isinstance(m, c)), None)
    if parent is not None:
        raise NotRepresentable(
            f"{where}: a subclass of nn.{parent.__name__}, whose forward may compute otherwise: "
            f"convnet converts the torch.nn classes themselves (use nn.{parent.__name__}, or "
            "export with torch.onnx.export and import the file)")
    raise NotRepresentable(
        f"{where}: {kind} has no convnet layer. Modules convnet converts: Conv2d, "
        "ConvTranspose2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, Hardtanh(0, 6), LeakyReLU, "
        "Tanh, Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d(1), "
        "Flatten, ZeroPad2d, Dropout, Identity, a final Softmax")


def from_torch(module: Any, input_shape: Sequence[int], *, seed: int = 0) -> Graph:
    """The convnet network computing a PyTorch ``nn.Sequential`` (nested ones are read
    through), with its weights, BN running statistics and hyperparameters.

    Args:
        module: an ``nn.Sequential`` of the modules in this module's table.
        input_shape: the input in convnet's order, ``(H, W, D)`` (or ``(n,)`` for vectors):
            PyTorch's ``(N, D, H, W)`` batch becomes convnet's ``(N, H, W, D)``.
        seed: seeds the network's generator (dropout masks when it is trained further).

    Shape:
        PyTorch ``(N, D, H, W)`` -> ``(N, K)``; convnet ``(N, H, W, D)`` -> ``(N, K)``, the same
        numbers (a volume output is NHWC here).

    Raises:
        NotRepresentable: a module convnet has no layer for, or a setting it cannot represent,
            naming the module; a module that is not an ``nn.Sequential`` (its wiring is in its
            ``forward``: export it with ``torch.onnx.export`` and :func:`import_onnx` the file).
        ShapeError: a module whose shapes do not work on ``input_shape``.
    """
    torch = require("torch")
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise NotRepresentable(f"from_torch: expected a torch.nn.Module, received "
                               f"{type(module).__name__}")
    if not isinstance(module, nn.Sequential):
        raise NotRepresentable(
            f"from_torch: {type(module).__name__} is not an nn.Sequential: its wiring is in its "
            "forward(), which convnet does not read. Export it with torch.onnx.export(model, x, "
            "'model.onnx') and import the file (convnet.import_onnx)")
    shape = check_input_shape(input_shape)
    mods = list(_modules(module))
    first = next((m for _, m in mods if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)), None)
    if first is not None and len(shape) == 3 and first.in_channels != shape[2] \
            and first.in_channels == shape[0]:
        raise NotRepresentable(
            f"from_torch: input_shape={tuple(shape)} looks like PyTorch's (C, H, W); convnet "
            f"takes (H, W, D): {(shape[1], shape[2], shape[0])}")
    asm = Assembler("nn.Sequential")
    x = asm.input(shape, "NCHW")
    for i, (name, m) in enumerate(mods):
        node = _node(m, name, x, i == len(mods) - 1)
        if node is None:
            continue
        if node.op == "Softmax":
            asm.notes.append(f"the final nn.Softmax ({name!r}) is left out: convnet's outputs "
                             "are the scores before it")
            continue
        x = asm.apply(node, [x])
    if x.src == "input":
        raise NotRepresentable("from_torch: the module computes nothing (no layer)")
    net = asm.finish(x, seed=seed)
    net.classes = None  # type: ignore[attr-defined]
    net.normalizer = None  # type: ignore[attr-defined]
    return net


__all__ = ["from_torch"]
