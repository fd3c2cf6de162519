"""The one table between convnet's layers and ONNX's operators, read in both directions.

Each :class:`Row` names a convnet layer kind and the ONNX operator that computes it, and lists
once how their hyperparameters and weights correspond: ``kernel_shape`` is ``F``, ``strides``
``S``, ``pads`` ``[P_rows, P_cols, P_rows, P_cols]``, a CONV's weights ``(K, F, F, D/G)`` are
ONNX's ``(K, D/G, F, F)``, and so on. :func:`export_nodes` reads a row from left to right (layer
-> ONNX nodes), :meth:`Row.to_layer` from right to left (ONNX node -> layer), so the two
directions cannot drift apart; what one writes the other reads back bit for bit.

=========  ==========================  ====================================================
convnet    ONNX                        what the row knows
=========  ==========================  ====================================================
CONV       Conv                        F, S, P, dilation, G (``group``), bias; W transposed
DWCONV     Conv (``group = D``)        a CONV whose groups equal its input depth
DECONV     ConvTranspose               output_padding; W ``(D, F, F, K)`` <-> ``(D, K, F, F)``
POOL       MaxPool (GlobalMaxPool)     ``ceil_mode = 0`` (convnet floors only where asked)
AVGPOOL    AveragePool                 ``count_include_pad = 1`` (padded zeros count)
GAP        GlobalAveragePool, Flatten  ONNX keeps ``(N, D, 1, 1)``; convnet makes ``(N, D)``
FC         (Flatten), Gemm             ``transB = 1``; rows permuted between flatten orders
FLATTEN    (Transpose), Flatten        convnet flattens NHWC: channel-last first
RELU       Relu                        ...
RELU6      Clip(0, 6)                  min and max as inputs (opset 11 and later)
LRELU      LeakyRelu                   alpha
TANH       Tanh
SIGMOID    Sigmoid
BN         BatchNormalization          inference form; ONNX momentum = 1 - convnet's
DROPOUT    (nothing)                   the identity in inference: it vanishes
ADD        Add (Sum for 3 or more)     a merge of branches
CAT        Concat                      along depth: axis 1 in NCHW
=========  ==========================  ====================================================

**The flatten-order trap.** convnet flattens a volume row by row with all depth values of a
position together (NHWC: ``index = (row*W + col)*D + depth``); an NCHW graph flattens depth
slice by depth slice (``(depth*H + row)*W + col``). An FC reading a flattened volume therefore
has its weight rows permuted between the two orders (:func:`nchw_order`), in both directions, so
the numbers are the same. A value that is a flattened volume carries the order it is in
(:attr:`Val.order`).

Nothing here imports ``onnx``: a node is a plain :class:`Node` (the operator, its attributes as
Python values, its weights as arrays), which :mod:`convnet.interop.onnx_export` writes as a
protobuf and :mod:`convnet.interop.onnx_import` and :mod:`convnet.interop.torch_import` make
from an ONNX file or a PyTorch module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.errors import ConfigError, ConvnetError
from convnet.layers import (
    FC,
    Add,
    AvgPool,
    BatchNorm,
    Concat,
    Conv,
    ConvTranspose,
    DepthwiseConv,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    MaxPool,
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
)

Shape = tuple[int, ...]

#: the lowest opset the exporter writes (Clip with min/max inputs, BatchNormalization-15 ...)
MIN_OPSET = 17


class NotRepresentable(ConfigError):
    """An ONNX node or a PyTorch module that convnet cannot represent exactly: an unsupported
    operator, asymmetric padding, a wiring that is not RES/CAT blocks. The message names the
    node and its operator and says why; nothing is half-imported."""


@dataclass
class Node:
    """One ONNX node in the form the table speaks.

    ``inputs``/``outputs`` name the activations it reads and writes; ``attrs`` are its
    attributes as Python values; ``weights`` its constant inputs as arrays, by the name ONNX's
    operator gives that input (``"W"``, ``"B"``, ``"scale"``, ...)."""

    op: str
    name: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: what the exporter names each weight (``{"W": "conv1.W"}``): convnet's parameter names
    names: dict[str, str] = field(default_factory=dict)
    #: how messages name where it came from, when not an ONNX node (a PyTorch module)
    origin: str = ""

    @property
    def label(self) -> str:
        """``node 'conv_3' (Conv)``: how messages name it."""
        return self.origin or f"node {self.name!r} ({self.op})"


#: the constant inputs of each operator, in ONNX's input order after the data input(s)
SLOTS: dict[str, tuple[str, ...]] = {
    "Conv": ("W", "B"),
    "ConvTranspose": ("W", "B"),
    "Gemm": ("B", "C"),
    "BatchNormalization": ("scale", "B", "input_mean", "input_var"),
    "Clip": ("min", "max"),
}


@dataclass(frozen=True)
class Val:
    """A value flowing through a graph being translated, as both sides see it.

    Attributes:
        src: the convnet node that computes it (``"input"`` for the network's input).
        shape: convnet's shape, ``(H, W, D)`` or ``(n,)``.
        layout: how ONNX holds it: ``"NCHW"`` or ``"NHWC"`` (a volume), ``"vec"`` (``(N, n)``),
            ``"gap"`` (a 4-D tensor with ``H = W = 1`` that convnet holds as a vector, e.g. what
            GlobalAveragePool gives).
        order: for a vector, None when ONNX's feature ``i`` is convnet's feature ``i``; else the
            ``(H, W, D)`` volume it was flattened from depth slice by depth slice (NCHW).
        flat: a flatten not yet made a layer: the volume an ONNX Flatten or Reshape flattened.
            An FC reads that volume directly (it flattens its input itself).
        pads: a zero Pad not yet taken into a CONV or POOL: ``(top, left, bottom, right)``.
        nonneg: every value is >= 0 (after RELU, RELU6, SIGMOID): zero padding before a max
            pool then equals its -inf padding.
    """

    src: str
    shape: Shape
    layout: str = "NCHW"
    order: Shape | None = None
    flat: Val | None = None
    pads: tuple[int, int, int, int] | None = None
    nonneg: bool = False

    @property
    def is_volume(self) -> bool:
        return self.layout in ("NCHW", "NHWC")

    def onnx_shape(self, batch: Any) -> list[Any]:
        """The tensor's shape as ONNX holds it, with ``batch`` for N."""
        s = self.shape
        if self.layout == "NCHW":
            return [batch, s[2], s[0], s[1]]
        if self.layout == "NHWC":
            return [batch, *s]
        if self.layout == "gap":
            return [batch, s[0], 1, 1]
        return [batch, arith.num_elements(s)]


def nchw_order(shape: Shape) -> np.ndarray:
    """For each feature of an ``(H, W, D)`` volume flattened depth slice by depth slice (NCHW),
    its index in convnet's flatten order (NHWC): ``onnx[i] == convnet[nchw_order(shape)[i]]``.

    >>> nchw_order((1, 2, 3)).tolist()      # 2 positions x 3 depth slices
    [0, 3, 1, 4, 2, 5]
    """
    h, w, d = shape
    return np.arange(h * w * d).reshape(h, w, d).transpose(2, 0, 1).ravel()


def f32_attr(value: float) -> float:
    """A float attribute as written (ONNX stores float32): ``0.8999999761581421 -> 0.9``."""
    return float(f"{float(np.float32(value)):.7g}")


# ------------------------------------------------------------------------------- attributes
@dataclass(frozen=True)
class Attr:
    """One ONNX attribute and the convnet hyperparameter it is.

    ``get(layer)`` is the attribute's value for a layer (export); ``put(value)`` the
    constructor's value from the attribute's (import: a ValueError or TypeError when it is not
    ``expect``); ``default`` what ONNX means when a node leaves the attribute out."""

    onnx: str
    arg: str
    get: Callable[[Layer], Any]
    put: Callable[[Any], Any] = int
    default: Any = None
    expect: str = "a whole number"


def _ints(n: int) -> Callable[[Any], tuple[int, ...]]:
    def put(v: Any) -> tuple[int, ...]:
        out = tuple(int(x) for x in v)
        if len(out) != n:
            raise ValueError(f"{len(out)} values")
        return out
    return put


PAIR = "two whole numbers (rows, cols): convnet's layers work on images (N, C, H, W)"


def _window_attr(onnx: str, arg: str, default: Any = None) -> Attr:
    return Attr(onnx, arg, lambda ly: list(getattr(ly.window, arg)), _ints(2), default, PAIR)


KERNEL = _window_attr("kernel_shape", "F")
STRIDES = _window_attr("strides", "S", [1, 1])
DILATIONS = _window_attr("dilations", "dilation", [1, 1])
#: ONNX pads every side on its own, ``[top, left, bottom, right]``; convnet's P is both sides
#: (:func:`padding_of` reads them, with ``auto_pad`` and a Pad node before)
PADS = Attr("pads", "P", lambda ly: [*ly.window.P, *ly.window.P], _ints(4), [0, 0, 0, 0],
            "four whole numbers [top, left, bottom, right]")


def _as_list(v: Any, n: int, what: str, where: str) -> list[int]:
    try:
        out = [int(x) for x in v]
    except (TypeError, ValueError):
        raise NotRepresentable(f"{where}: {what}={v!r} is not a list of whole numbers") from None
    if len(out) != n:
        raise NotRepresentable(f"{where}: {what}={out} has {len(out)} values; a 2-D image "
                               f"operator needs {n}: convnet works on images (N, C, H, W)")
    return out


# --------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Weight:
    """One weight: convnet's name for it (``key``), ONNX's input (``slot``), and how its layout
    changes each way. A weight a layer does not have (a bias with ``bias=False``) is left out of
    the node, and a node without it makes a layer without it."""

    key: str
    slot: str
    to_onnx: Callable[[np.ndarray], np.ndarray] = lambda a: a
    from_onnx: Callable[[np.ndarray], np.ndarray] = lambda a: a


#: CONV ``(K, F, F, D/G)`` and DECONV ``(D, F, F, K)`` are both ONNX's ``(dim0, dim3, F, F)``
FILTERS = Weight("W", "W", lambda a: a.transpose(0, 3, 1, 2), lambda a: a.transpose(0, 2, 3, 1))
BIAS = Weight("b", "B")


# ------------------------------------------------------------------------------------ rows
class Row:
    """A line of the table: the convnet kinds it exports, the ONNX ops it imports, and how their
    hyperparameters (``attrs``) and weights correspond. ``fixed``: attributes the export writes
    and the import requires, with why convnet needs that value (``ceil_mode``: 0, ...)."""

    kinds: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    attrs: tuple[Attr, ...] = ()
    weights: tuple[Weight, ...] = ()
    fixed: dict[str, tuple[Any, str]] = {}
    #: how the importer treats the row's layer (read by :class:`~convnet.interop.assemble.
    #: Assembler`): it merges two or more values (ADD, CAT); it reads a flattened volume itself
    #: (FC); it is elementwise (the same before or after a flatten); it takes a zero Pad before
    #: it as its own padding (CONV, POOL, AVGPOOL)
    merges = False
    reads_flattened = False
    elementwise = False
    takes_pad = False
    #: a row that stacks values: the axis it stacks along for each layout (CAT: depth)
    depth_axis: dict[str, int] = {}

    # ------------------------------------------------------------------ convnet -> ONNX
    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        """The ONNX nodes computing ``layer`` on ``xs``, writing value ``out``."""
        attrs = {a.onnx: a.get(layer) for a in self.attrs}
        attrs.update({k: v for k, (v, _) in self.fixed.items()})
        present = [w for w in self.weights if _param(layer, w.key) is not None]
        weights = {w.slot: w.to_onnx(_param(layer, w.key)) for w in present}
        names = {w.slot: f"{layer.name}.{w.key}" for w in present}
        return [Node(self.ops[0], layer.name, [x.src for x in xs], [out], attrs, weights, names)]

    # ------------------------------------------------------------------ ONNX -> convnet
    def to_layer(self, node: Node, x: Val, where: str) -> tuple[Layer, dict[str, np.ndarray]]:
        """The layer computing ``node`` on ``x``, and its weights by convnet's names."""
        self.check_fixed(node, where)
        kw = {}
        for a in self.attrs:
            value = node.attrs.get(a.onnx, a.default)
            if value is None:
                continue
            try:
                kw[a.arg] = a.put(value)
            except (TypeError, ValueError, OverflowError):
                raise NotRepresentable(f"{where}: {a.onnx}={value!r}: expected {a.expect}") \
                    from None
        layer = self.make(kw, node, x, where)
        weights = {w.key: w.from_onnx(node.weights[w.slot]) for w in self.weights
                   if node.weights.get(w.slot) is not None}
        return layer, weights

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        raise NotImplementedError

    def check_fixed(self, node: Node, where: str) -> None:
        for name, (want, why) in self.fixed.items():
            got = node.attrs.get(name, want)
            if got != want:
                raise NotRepresentable(f"{where}: {name}={got!r}: {why}")

    #: the layer keeps values >= 0 when its input is (a pool: a max or a mean of them)
    keeps_sign = False

    def output(self, layer: Layer, x: Val, src: str) -> Val:
        """The value this row's layer produces (import): its layout follows its kind."""
        shape = layer.infer_shape(x.shape)
        nonneg = self.keeps_sign and x.nonneg
        if len(shape) == 1:
            return Val(src, shape, "vec", nonneg=nonneg)
        return Val(src, shape, x.layout if x.is_volume else "NCHW", nonneg=nonneg)


def _param(layer: Layer, key: str) -> np.ndarray | None:
    if key in layer.params:
        return layer.params[key]
    return layer.buffers.get(key)


def _weight(node: Node, slot: str, where: str, ndim: int | None = None) -> np.ndarray:
    w = node.weights.get(slot)
    if w is None:
        raise NotRepresentable(f"{where}: its {slot} input is not a stored constant (it is "
                               "computed by the graph, or missing): convnet imports stored "
                               "weights only")
    if ndim is not None and w.ndim != ndim:
        raise NotRepresentable(f"{where}: its {slot} has shape {list(w.shape)}; expected "
                               f"{ndim} dimensions")
    return w


def _make(where: str, cls: type[Layer], *args: Any, **kw: Any) -> Layer:
    """A layer from an imported node's values; a value the layer refuses names the node."""
    try:
        return cls(*args, **kw)
    except ConvnetError as exc:
        raise NotRepresentable(f"{where}: {exc}") from None


def _volume(x: Val, where: str, what: str) -> None:
    if not x.is_volume:
        raise NotRepresentable(f"{where}: {what} needs an image volume, but its input is a vector "
                               f"of {arith.num_elements(x.shape)} features")
    if x.layout != "NCHW":
        raise NotRepresentable(f"{where}: {what} reads its input as NCHW, but the input is held "
                               "as NHWC here (no Transpose(perm=[0, 3, 1, 2]) before it): ONNX "
                               "would slide the window over the columns and depth")


def padding_of(node: Node, x: Val, F: tuple[int, int], S: tuple[int, int],
               d: tuple[int, int], where: str) -> tuple[int, int]:
    """Convnet's P for a CONV or POOL node: its ``pads`` (or ``auto_pad``) plus a zero Pad
    before it (``x.pads``), which must be the same on both sides of each axis."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    pads = _as_list(node.attrs.get("pads", [0, 0, 0, 0]), 4, "pads", where)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            n, s, f = x.shape[i], S[i], arith.effective_extent(F[i], d[i])
            # ONNX's auto_pad rule: pad so that the output side is ceil(n/s)
            total = max((math.ceil(n / s) - 1) * s + f - n, 0)
            if total % 2:
                raise NotRepresentable(
                    f"{where}: auto_pad={auto} pads the {arith.AXES[i]} by {total} in all "
                    f"(ceil({n}/{s}) outputs with F={f}, S={s}), an odd total: one side would "
                    f"get {total // 2} and the other {total - total // 2}. convnet pads both "
                    "sides equally: re-export with explicit symmetric pads (e.g. an odd input "
                    "size, or padding='same' at stride 1 with an odd kernel)")
            pads.append(total // 2)
        pads = [*pads, *pads]
    elif auto not in ("NOTSET", "VALID", ""):
        raise NotRepresentable(f"{where}: auto_pad={auto!r} is not an ONNX value")
    if any(p < 0 for p in pads):
        raise NotRepresentable(f"{where}: pads={pads} are negative (a crop)")
    if x.pads is not None:   # a Pad node before this one: its zeros are part of the padding
        pads = [a + b for a, b in zip(pads, x.pads, strict=True)]
    if pads[0] != pads[2] or pads[1] != pads[3]:
        t, left, b, r = pads
        sides = (f"{t} row(s) above and {b} below" if t != b
                 else f"{left} column(s) left and {r} right")
        raise NotRepresentable(
            f"{where}: asymmetric padding {pads} ([top, left, bottom, right]): {sides}. convnet's "
            "P pads both sides of an axis equally. Re-export with symmetric padding: 'same' "
            "padding is symmetric for an odd kernel at stride 1, but pads one side more for an "
            "even kernel, or (Keras) at stride 2 on an even size; pad explicitly instead "
            "(ZeroPadding2D, nn.ZeroPad2d) and use padding='valid'")
    return pads[0], pads[1]


def _floor(x: Val, F: tuple[int, int], S: tuple[int, int], P: tuple[int, int],
           d: tuple[int, int]) -> bool:
    """ONNX always floors; convnet floors only where told: ``floor=True`` exactly where the
    stride does not fit this input."""
    return not all(arith.conv_fits(x.shape[i], F[i], S[i], P[i], d[i]) for i in range(2))


def _ceil_mode(node: Node, x: Val, F: tuple[int, int], S: tuple[int, int],
               P: tuple[int, int], where: str) -> None:
    """``ceil_mode=1`` is accepted where it gives the floor's sizes (no extra window)."""
    if not node.attrs.get("ceil_mode", 0):
        return
    for i in range(2):
        span = x.shape[i] + 2 * P[i] - F[i]
        if span % S[i]:
            n = x.shape[i]
            raise NotRepresentable(
                f"{where}: ceil_mode=1 adds a last window that sticks out of the padded "
                f"{arith.AXES[i]}: ceil(({n} + 2*{P[i]} - {F[i]})/{S[i]}) + 1 = "
                f"{-(-span // S[i]) + 1}, where convnet's windows give {span // S[i] + 1}. "
                "That window reads padding on one side only, which convnet's symmetric P "
                "cannot express; re-export with ceil_mode=False (or pad the input so that the "
                "stride fits)")


class ConvRow(Row):
    kinds = ("CONV", "DWCONV")
    ops = ("Conv",)
    takes_pad = True
    attrs = (KERNEL, STRIDES, PADS, DILATIONS, Attr("group", "groups", lambda ly: ly.groups))
    weights = (FILTERS, BIAS)

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        _volume(x, where, "a convolution")
        W = _weight(node, "W", where, 4)
        K, per_group = int(W.shape[0]), int(W.shape[1])
        F = kw.get("F", (int(W.shape[2]), int(W.shape[3])))
        if (W.shape[2], W.shape[3]) != tuple(F):
            raise NotRepresentable(f"{where}: kernel_shape={list(F)} but W holds "
                                   f"{W.shape[2]}x{W.shape[3]} filters")
        S, d = kw.get("S", (1, 1)), kw.get("dilation", (1, 1))
        P = padding_of(node, x, F, S, d, where)
        G, D = int(kw.get("groups", 1)), x.shape[2]
        if G < 1 or D % G or K % G or per_group != D // G:
            raise NotRepresentable(
                f"{where}: W has shape {list(W.shape)} (K={K} filters of depth {per_group}) with "
                f"group={G}, but the input has depth {D}: each filter must see D/G = "
                f"{D}/{G} slices")
        floor = _floor(x, F, S, P, d)
        bias = node.weights.get("B") is not None
        if G == D and G > 1:   # groups equal to the input depth: MobileNet's depthwise CONV
            return _make(where, DepthwiseConv, F=F, S=S, P=P, dilation=d, bias=bias,
                         floor=floor, multiplier=K // D)
        return _make(where, Conv, K, F=F, S=S, P=P, dilation=d, bias=bias, floor=floor,
                     groups=G)


class DeconvRow(Row):
    kinds = ("DECONV",)
    ops = ("ConvTranspose",)
    attrs = (KERNEL, STRIDES, PADS, DILATIONS,
             Attr("output_padding", "output_padding", lambda ly: list(ly.output_padding),
                  _ints(2), [0, 0], PAIR))
    weights = (FILTERS, BIAS)
    fixed = {"group": (1, "a grouped transposed convolution has no convnet layer (DECONV "
                          "mixes all input slices)")}

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        _volume(x, where, "a transposed convolution")
        if x.pads is not None:
            raise NotRepresentable(f"{where}: a Pad before a transposed convolution is not its "
                                   "padding P (which crops the output): no convnet layer pads "
                                   "on its own")
        W = _weight(node, "W", where, 4)
        D, K = x.shape[2], int(W.shape[1])
        if W.shape[0] != D:
            raise NotRepresentable(f"{where}: W has shape {list(W.shape)}, for an input of depth "
                                   f"{W.shape[0]}, but its input has depth {D}")
        F = kw.get("F", (int(W.shape[2]), int(W.shape[3])))
        S, d = kw.get("S", (1, 1)), kw.get("dilation", (1, 1))
        a = kw.get("output_padding", (0, 0))
        auto = node.attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto not in ("NOTSET", "VALID", ""):
            raise NotRepresentable(f"{where}: auto_pad={auto} on a transposed convolution: "
                                   "re-export with explicit pads")
        P = padding_of(Node(node.op, node.name, attrs={"pads": node.attrs.get("pads",
                                                                                [0, 0, 0, 0])}),
                       x, F, S, d, where)
        if node.attrs.get("output_shape") is not None:   # what tf2onnx writes: pads follow
            want = _as_list(node.attrs["output_shape"], 2, "output_shape", where)
            P = []
            for i in range(2):
                total = arith.deconv_output_size(x.shape[i], F[i], S[i], 0, a[i], d[i]) - want[i]
                if total < 0 or total % 2:
                    raise NotRepresentable(
                        f"{where}: output_shape={want} needs {total} rows/columns cropped along "
                        f"the {arith.AXES[i]} (S(W - 1) + F_eff + a = "
                        f"{arith.deconv_output_size(x.shape[i], F[i], S[i], 0, a[i], d[i])}): "
                        "convnet crops both sides equally (P), so the total must be even and "
                        "not negative")
                P.append(total // 2)
            P = tuple(P)
        return _make(where, ConvTranspose, K, F=F, S=S, P=P, output_padding=a, dilation=d,
                     bias=node.weights.get("B") is not None)


class _PoolRow(Row):
    cls: type[Layer] = MaxPool
    attrs = (KERNEL, STRIDES, PADS)
    keeps_sign = True
    takes_pad = True

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        _volume(x, where, "a pool")
        F = kw.get("F")
        if F is None:
            raise NotRepresentable(f"{where}: no kernel_shape")
        S = kw.get("S", (1, 1))
        P = padding_of(node, x, F, S, (1, 1), where)
        _ceil_mode(node, x, F, S, P, where)
        return _make(where, self.cls, F=F, S=S, P=P, floor=_floor(x, F, S, P, (1, 1)))


class MaxPoolRow(_PoolRow):
    kinds = ("POOL",)
    ops = ("MaxPool", "GlobalMaxPool")
    fixed = {"ceil_mode": (0, "")}    # ceil_mode=1 is read by _ceil_mode, which says why

    def check_fixed(self, node: Node, where: str) -> None:
        if any(v != 1 for v in node.attrs.get("dilations", [1, 1])):
            raise NotRepresentable(f"{where}: dilations={list(node.attrs['dilations'])}: "
                                   "convnet's POOL has no dilation")

    def to_layer(self, node: Node, x: Val, where: str) -> tuple[Layer, dict[str, np.ndarray]]:
        if node.op == "GlobalMaxPool":   # the max over each whole slice: a POOL as large
            _volume(x, where, "a global pool")
            hw = (x.shape[0], x.shape[1])
            return _make(where, MaxPool, F=hw, S=hw), {}
        if x.pads is not None and not x.nonneg:
            raise NotRepresentable(
                f"{where}: a zero Pad before a max pool: the padded zeros can be the maximum "
                "of a window, where convnet's POOL padding never is (it counts as -inf). Only "
                "after RELU, RELU6 or SIGMOID (values >= 0) are the two the same")
        return super().to_layer(node, x, where)


class AvgPoolRow(_PoolRow):
    kinds = ("AVGPOOL",)
    ops = ("AveragePool",)
    cls = AvgPool
    fixed = {"ceil_mode": (0, ""), "count_include_pad": (1, "")}

    def check_fixed(self, node: Node, where: str) -> None:
        pads = node.attrs.get("pads", [0, 0, 0, 0])
        auto = node.attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        padded = any(pads) or auto.startswith("SAME")
        if padded and not node.attrs.get("count_include_pad", 0):
            raise NotRepresentable(
                f"{where}: count_include_pad=0 with padding: a window at the border is "
                "divided by its cells inside the image, where convnet's AVGPOOL counts the "
                "padded zeros in the mean (PyTorch's default, count_include_pad=True)")


class GapRow(Row):
    kinds = ("GAP",)
    ops = ("GlobalAveragePool",)

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        # ONNX keeps the (N, D, 1, 1) volume; convnet's GAP is (N, D): a Flatten follows
        pooled = f"{out}/pooled"
        return [Node("GlobalAveragePool", layer.name, [xs[0].src], [pooled]),
                Node("Flatten", f"{layer.name}/flatten", [pooled], [out], {"axis": 1})]

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        _volume(x, where, "a global average pool")
        return GlobalAvgPool()

    def output(self, layer: Layer, x: Val, src: str) -> Val:
        return Val(src, layer.infer_shape(x.shape), "gap", nonneg=x.nonneg)


class FcRow(Row):
    kinds = ("FC",)
    ops = ("Gemm",)
    reads_flattened = True
    fixed = {"transA": (0, "a Gemm whose input is transposed is not a layer of a network "
                           "(convnet's FC computes x @ W + b with x of shape (N, n))")}

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        x, nodes = xs[0], []
        W = layer.params.get("W")          # None: a network built without weights
        src = x.src
        if x.is_volume:
            # the trap: ONNX flattens NCHW, convnet NHWC; the rows follow ONNX's order
            W = W[nchw_order(x.shape)] if W is not None else None
            src = f"{layer.name}/flat"
            nodes.append(Node("Flatten", f"{layer.name}/flatten", [x.src], [src], {"axis": 1}))
        weights = {"B": np.ascontiguousarray(W.T)} if W is not None else {}
        names = {"B": f"{layer.name}.W", "C": f"{layer.name}.b"}
        if layer.bias and "b" in layer.params:
            weights["C"] = layer.params["b"]
        nodes.append(Node("Gemm", layer.name, [src], [out], {"transB": 1}, weights, names))
        return nodes

    def to_layer(self, node: Node, x: Val, where: str) -> tuple[Layer, dict[str, np.ndarray]]:
        self.check_fixed(node, where)
        B = _weight(node, "B", where, 2)
        W = B.T if node.attrs.get("transB", 0) else B
        alpha = float(node.attrs.get("alpha", 1.0))
        beta = float(node.attrs.get("beta", 1.0))
        if alpha != 1.0:
            W = W * np.float32(alpha)
        n, K = (int(s) for s in W.shape)
        src = x.flat if x.flat is not None else x
        if arith.num_elements(src.shape) != n:
            raise NotRepresentable(f"{where}: W has {n} rows but its input has "
                                   f"{arith.num_elements(src.shape)} features "
                                   f"({fmt_shape(src.shape)})")
        # rows in ONNX's flatten order -> convnet's (the trap, read the other way)
        order = src.shape if (x.flat is not None and src.layout == "NCHW") else x.order
        if order is not None:
            W2 = np.empty_like(W)
            W2[nchw_order(order)] = W
            W = W2
        weights = {"W": np.ascontiguousarray(W)}
        C = node.weights.get("C")
        if C is not None:
            C = np.broadcast_to(np.asarray(C), (1, K)).reshape(K) if C.size in (1, K) else None
            if C is None:
                raise NotRepresentable(f"{where}: its bias C has shape "
                                       f"{list(node.weights['C'].shape)}; expected ({K},)")
            weights["b"] = (C * np.float32(beta)) if beta != 1.0 else C.copy()
        return _make(where, FC, K, bias=C is not None), weights


class FlattenRow(Row):
    """FLATTEN is convnet's NHWC flatten: a Transpose to NHWC and a Flatten (just the Flatten
    where the volume is one position). Imported Flattens become FLATTEN layers only where a
    layer other than an FC reads them (:class:`~convnet.interop.assemble.Assembler`)."""

    kinds = ("FLATTEN",)

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        x = xs[0]
        if not x.is_volume:
            return [Node("Identity", layer.name, [x.src], [out])]
        src, nodes = x.src, []
        if x.shape[0] * x.shape[1] > 1:
            src = f"{layer.name}/nhwc"
            nodes.append(Node("Transpose", f"{layer.name}/transpose", [x.src], [src],
                              {"perm": [0, 2, 3, 1]}))
        nodes.append(Node("Flatten", layer.name, [src], [out], {"axis": 1}))
        return nodes


class ActRow(Row):
    """An elementwise activation: the same on any layout."""

    elementwise = True

    def __init__(self, kind: str, op: str, cls: type[Layer], attrs: tuple[Attr, ...] = ()):
        self.kinds, self.ops, self.cls, self.attrs = (kind,), (op,), cls, attrs

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        return _make(where, self.cls, **kw)

    def output(self, layer: Layer, x: Val, src: str) -> Val:
        return Val(src, x.shape, x.layout, x.order,
                   nonneg=layer.kind in ("RELU", "RELU6", "SIGMOID"))


class ClipRow(ActRow):
    """RELU6 is Clip(0, 6), with min and max as inputs (opset 11 and later; earlier opsets had
    them as attributes, read too). Clip(0, inf) is a RELU."""

    def __init__(self) -> None:
        super().__init__("RELU6", "Clip", ReLU6)

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        return [Node("Clip", layer.name, [xs[0].src], [out], {},
                     {"min": np.array(0.0, np.float32), "max": np.array(6.0, np.float32)})]

    def to_layer(self, node: Node, x: Val, where: str) -> tuple[Layer, dict[str, np.ndarray]]:
        bounds = []
        for k in ("min", "max"):
            v = node.weights.get(k, node.attrs.get(k))
            if v is not None and np.size(v) != 1:
                raise NotRepresentable(f"{where}: its {k} has shape {list(np.shape(v))}: "
                                       "expected one number")
            bounds.append(None if v is None else float(np.asarray(v).reshape(())))
        lo, hi = bounds
        if lo == 0.0 and hi == 6.0:
            return ReLU6(), {}
        if lo == 0.0 and (hi is None or hi == math.inf):
            return ReLU(), {}
        raise NotRepresentable(f"{where}: Clip(min={lo}, max={hi}) is not a convnet activation: "
                               "convnet has RELU6 = Clip(0, 6) and RELU = Clip(0, inf)")


class BnRow(Row):
    kinds = ("BN",)
    ops = ("BatchNormalization",)
    attrs = (Attr("epsilon", "eps", lambda ly: ly.eps, f32_attr, 1e-5, "a number"),
             # ONNX's running = momentum*running + (1 - momentum)*batch: the other way round
             Attr("momentum", "momentum", lambda ly: 1.0 - ly.momentum,
                  lambda v: f32_attr(1.0 - f32_attr(v)), 0.9, "a number"))
    weights = (Weight("gamma", "scale"), Weight("beta", "B"),
               Weight("running_mean", "input_mean"), Weight("running_var", "input_var"))
    fixed = {"training_mode": (0, "convnet imports a model for inference: the running mean "
                                  "and variance are used, not the batch's")}

    def to_layer(self, node: Node, x: Val, where: str) -> tuple[Layer, dict[str, np.ndarray]]:
        if x.layout == "NHWC":
            raise NotRepresentable(f"{where}: BatchNormalization normalises axis 1, which holds "
                                   "the rows of this NHWC tensor, not its depth")
        layer, weights = super().to_layer(node, x, where)
        n = x.shape[-1] if x.layout != "vec" else arith.num_elements(x.shape)
        for k, v in weights.items():
            if v.size != n:
                raise NotRepresentable(f"{where}: its {k} has {v.size} values for {n} channels")
            weights[k] = v.reshape(n)
        if x.layout == "vec" and x.order is not None:   # features in NCHW flatten order
            for k, v in weights.items():
                w2 = np.empty_like(v)
                w2[nchw_order(x.order)] = v
                weights[k] = w2
        return layer, weights

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        return _make(where, BatchNorm, **kw)

    def output(self, layer: Layer, x: Val, src: str) -> Val:
        return Val(src, x.shape, x.layout, x.order)


class DropoutRow(Row):
    """DROPOUT is the identity in inference: it vanishes from the exported graph."""

    kinds = ("DROPOUT",)

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        return []


class AddRow(Row):
    kinds = ("ADD",)
    ops = ("Add", "Sum")
    merges = True

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        return [Node("Add" if len(xs) == 2 else "Sum", layer.name, [x.src for x in xs], [out])]

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        return Add()


class CatRow(Row):
    kinds = ("CAT",)
    ops = ("Concat",)
    merges = True
    #: the axis ONNX stacks along, for each layout a value may be held in (depth)
    depth_axis = {"NCHW": 1, "gap": 1, "NHWC": 3, "vec": 1}

    def to_nodes(self, layer: Layer, xs: Sequence[Val], out: str) -> list[Node]:
        return [Node("Concat", layer.name, [x.src for x in xs], [out], {"axis": 1})]

    def make(self, kw: dict[str, Any], node: Node, x: Val, where: str) -> Layer:
        return Concat()


#: the table
TABLE: tuple[Row, ...] = (
    ConvRow(), DeconvRow(), MaxPoolRow(), AvgPoolRow(), GapRow(), FcRow(), FlattenRow(),
    ActRow("RELU", "Relu", ReLU), ClipRow(),
    ActRow("LRELU", "LeakyRelu", LeakyReLU,
           (Attr("alpha", "alpha", lambda ly: ly.alpha, f32_attr, 0.01, "a number"),)),
    ActRow("TANH", "Tanh", Tanh), ActRow("SIGMOID", "Sigmoid", Sigmoid),
    BnRow(), DropoutRow(), AddRow(), CatRow(),
)
BY_KIND: dict[str, Row] = {k: row for row in TABLE for k in row.kinds}
BY_OP: dict[str, Row] = {op: row for row in TABLE for op in row.ops}


def export_nodes(layer: Layer, xs: Sequence[Val], out: str, where: str = "") -> list[Node]:
    """The ONNX nodes for ``layer`` reading ``xs`` (the table read left to right)."""
    row = BY_KIND.get(layer.kind)
    if row is None:   # a layer kind added to convnet without a line in this table
        raise NotRepresentable(f"{where or layer.describe()}: convnet's {layer.kind} has no ONNX "
                               f"operator in the table; kinds it exports: "
                               f"{', '.join(sorted(BY_KIND))}")
    return row.to_nodes(layer, xs, out)


__all__ = ["BY_KIND", "BY_OP", "MIN_OPSET", "SLOTS", "TABLE", "Attr", "Node",
           "NotRepresentable", "Row", "Val", "Weight", "export_nodes", "f32_attr", "nchw_order",
           "padding_of"]
