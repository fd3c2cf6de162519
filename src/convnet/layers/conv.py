"""CONV, depthwise CONV and transposed CONV (DECONV) layers.

They are duals: the input gradient of a CONV with weights ``W`` *is* the forward pass of a
transposed CONV with the same ``W``, and both run on one kernel
(:func:`convnet.ops.conv.conv2d_input_grad`), except that a CONV running as Winograd makes its
input gradient from its weight gradient's own tiles in the same pass.

A grouped CONV (``groups=G``, written ``G=4`` in a spec) splits the input depth into ``G`` groups
of ``D/G`` slices and its ``K`` filters into ``G`` groups of ``K/G``, each group of filters seeing
only its group of slices: ``G`` times fewer weights and MACs. ``groups == D`` is the depthwise
CONV of MobileNet (``DWCONV``: one ``F x F`` filter per input slice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.arith import Pair, Window, as_pair, fmt_pair, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, PlanTraits, Shape
from convnet.net.init import init_weights
from convnet.ops import conv as F_conv
from convnet.ops import grouped as F_grouped

if TYPE_CHECKING:
    from convnet.arith import LayerRow, ReceptiveField


def _check_K(K: int, kind: str) -> int:
    if isinstance(K, bool) or not isinstance(K, int | np.integer) or K < 1:
        raise ShapeError(
            f"{kind}: received K={K!r}: the number of filters must be a whole number > 0 "
            "(it is the output depth)"
        )
    return int(K)


def _n(x: int) -> str:
    return f"{x:,}"


def _hw(shape: Shape) -> str:
    return f"{shape[0]}x{shape[1]}"


class _WindowLayer(Layer):
    """Shared bits of layers that slide an F x F window with stride S and padding P."""

    window: Window
    slides = True
    #: a transposed window: the stride divides the receptive field's jump instead
    transposed = False

    def _window_text(self) -> str:
        w = self.window
        text = f" F={fmt_pair(w.F)} S={fmt_pair(w.S)} P={fmt_pair(w.P)}"
        if w.dilation != (1, 1):
            text += f" dilation={fmt_pair(w.dilation)}"
        return text

    def _window_args(self, default_S: Pair = (1, 1)) -> list[str]:
        w = self.window
        args = [f"F={fmt_pair(w.F)}"]
        if w.S != default_S:
            args.append(f"S={fmt_pair(w.S)}")
        if w.P != (0, 0):
            args.append(f"P={fmt_pair(w.P)}")
        if w.dilation != (1, 1):
            args.append(f"dilation={fmt_pair(w.dilation)}")
        return args

    def receptive_field(self, rf: ReceptiveField, grid: tuple[int, int]) -> ReceptiveField:
        return arith.receptive_field_step(rf, self.window, transposed=self.transposed)

    def hyper(self) -> dict[str, Any]:
        w = self.window
        return {"window": {"F": list(w.F), "S": list(w.S), "P": list(w.P),
                           "dilation": list(w.dilation)}}

    def short_hyper(self) -> str:
        w = self.window
        return f"F={fmt_pair(w.F)} S={fmt_pair(w.S)} P={fmt_pair(w.P)}"

    def formula_text(self) -> str:
        """``(227 - 11 + 2*0)/4 + 1 = 55`` (one per axis when rows and columns differ); with
        ``floor=true`` where the stride does not fit, what it is floored to."""
        ins = self.input_shape
        lines = arith.window_formula((ins[0], ins[1]), self.window)
        text = lines[0] if len(lines) == 1 else f"rows {lines[0]}; columns {lines[1]}"
        outs = self.output_shape
        if getattr(self, "floor", False) and outs is not None and "." in text:
            text += (f", floored to {outs[0]}x{outs[1]} (floor=true drops the positions where "
                     "the window would stick out, as PyTorch does)")
        return text


class _ConvBase(_WindowLayer):
    """What CONV and DECONV share: K filters on a window, a weight bank and a bias."""

    weighted = True
    _backward_op = None  # the functional backward: (dout, cache, need_dx) -> (dx, dW, db)

    def _setup(self, K: int, F: int | Pair, S: int | Pair, P: int | Pair,
               dilation: int | Pair, bias: bool) -> None:
        self.K = _check_K(K, self.kind)
        self.window = Window(
            F=as_pair(F, "F", minimum=1, where=self.kind),
            S=as_pair(S, "S", minimum=1, where=self.kind),
            P=as_pair(P, "P", minimum=0, where=self.kind),
            dilation=as_pair(dilation, "dilation", minimum=1, where=self.kind),
        )
        self.bias = bool(bias)
        self.groups = 1
        #: what evaluation passes keep between calls (Winograd's filter transform, see
        #: ``ops.conv.conv2d_forward``): checked against the weights at every call, emptied by
        #: every training pass (the weights change then), never saved
        self._memo: dict = {}

    # hyperparameters by their seed names
    F = property(lambda self: self.window.F)
    S = property(lambda self: self.window.S)
    P = property(lambda self: self.window.P)
    dilation = property(lambda self: self.window.dilation)

    def _hyper_text(self) -> str:
        return f" K={self.K}{self._window_text()}"

    def short_hyper(self) -> str:
        groups = f" G={self.groups}" if self.groups > 1 else ""
        return f"K={self.K} {super().short_hyper()}{groups}"

    def hyper(self) -> dict[str, Any]:
        return {**super().hyper(), "K": int(self.K), "groups": int(self.groups)}

    def count_params(self, input_shape: Shape | None = None) -> int:
        shape = input_shape or self.input_shape
        return arith.conv_params(self.window.F, shape[2] // self.groups, self.K, self.bias)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        fh, fw = self.window.F
        D = self.input_shape[2] // self.groups
        # fans of the filter bank: F*F*D inputs per output unit, F*F*K outputs per input unit
        # (the receptive-field convention PyTorch uses too, for CONV and DECONV alike; a group
        # sees D/G slices and feeds K/G filters)
        self.params["W"] = init_weights(
            rng, self._weight_shape(self.input_shape[2]), fan_in=fh * fw * D,
            fan_out=fh * fw * self.K // self.groups, init=init, dtype=self.dtype,
        )
        if self.bias:
            self.params["b"] = np.zeros(self.K, dtype=self.dtype)

    def _backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        dx, dW, db = self._backward_op(dout, self._cache, need_dx=need_dx)
        self._cache = None
        self.grads["W"] = dW
        if self.bias:
            self.grads["b"] = db
        return dx

    def backward_params(self, dout: np.ndarray) -> None:
        # the input gradient is more than half of a CONV's backward: skip it when unused
        self._backward(dout, need_dx=False)

    #: axis of W that indexes the output channels (CONV: K first; DECONV: K last)
    _out_axis = 0

    def _forward_folded(self, x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Evaluation of this layer followed by ``out * scale + shift`` per output channel (an
        evaluation-mode BN), as ONE convolution with ``W * scale`` and ``b * scale + shift``:
        the BN's pass over the output disappears. Keeps no cache (the folded weights are not
        this layer's: a backward pass must follow a training forward)."""
        shape = [1, 1, 1, 1]
        shape[self._out_axis] = -1
        W, b = self.params["W"], self.params.get("b")
        out, _ = self._op(x, W * scale.reshape(shape), shift if b is None else b * scale + shift,
                          memo=self._memo)
        self._cache = None
        return out

    def _op(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
            memo: dict | None = None) -> tuple[np.ndarray, Any]:
        """The functional forward with this layer's window on the given weights; ``memo``: see
        :attr:`_memo`."""
        raise NotImplementedError

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = self._op(x, self.params["W"], self.params.get("b"),
                                    memo=self._memo_for(train))
        return out

    def _memo_for(self, train: bool) -> dict | None:
        """The memo for a pass: None in training, which also drops what evaluation kept (a
        Winograd layer's memo holds a copy of its weights and their transform, 2.8x the
        weights' size)."""
        if train:
            self._memo.clear()
            return None
        return self._memo

    def _spec_args(self) -> list[str]:
        return [str(self.K), *self._window_args()] + ([] if self.bias else ["bias=false"])


class Conv(_ConvBase):
    """CONV: ``K`` filters of spatial extent ``F``, stride ``S``, zero padding ``P``.

    Each filter is ``F x F x D`` where ``D`` is the input depth (inferred at build, never given);
    the same weights slide over the whole input (parameter sharing), so the layer has
    ``(F*F*D)*K`` weights and ``K`` biases whatever the input size.

    Args:
        K: number of filters (the output depth).
        F: spatial extent, an int or a (rows, cols) pair.
        S: stride (default 1). P: zero padding on each side (default 0).
        dilation: spacing of the filter taps; 1 means none. ``F_eff = F + (F - 1)(dilation - 1)``.
        bias: whether each filter has a bias (ResNets use none before a BN).
        floor: opt in to PyTorch's and Keras's rule of silently dropping the last positions
            when the stride does not fit. By default a stride that does not fit is an error.
        groups: ``G`` (written ``G=`` in a spec): split the input depth and the filters into
            ``G`` groups, each filter seeing only ``D/G`` slices (``G`` must divide ``D`` and
            ``K``); ``G == D`` is a depthwise CONV.

    Shape:
        input ``(N, H, W, D)`` -> output ``(N, H2, W2, K)`` with
        ``H2 = (H - F_eff + 2P)/S + 1`` (and the same for W), which must be a whole number.
        Weights ``W``: ``(K, F, F, D/G)``; bias ``b``: ``(K,)``.

    >>> layer = Conv(K=10, F=5, S=1, P=2)
    >>> layer.build((32, 32, 3))
    (32, 32, 10)
    >>> layer.num_params
    760
    """

    kind = "CONV"
    foreign_names = ("CONV2D",)
    positional = ("K", "F", "S", "P")
    purpose = "K filters of F x F x D_in"
    example = "CONV(32,F=3,P=1)"
    spec_names = {"groups": "G"}
    plan_traits = PlanTraits(fresh_output=True, takes_pool=True, folds_bn=True)

    def __init__(
        self,
        K: int,
        F: int | Pair = 3,
        S: int | Pair = 1,
        P: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        floor: bool = False,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self._setup(K, F, S, P, dilation, bias)
        self.floor = bool(floor)
        if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
            raise ShapeError(f"{self.kind}: received G={groups!r}: the number of groups must be "
                             "a whole number > 0")
        self.groups = int(groups)
        if self.K % self.groups:
            raise ShapeError(f"{self.kind}: G={self.groups} groups must divide the K={self.K} "
                             f"filters (each group has K/G filters)")
        self._pooled = False      # whether the last _forward_pool ran as one fused pass

    @property
    def _backward_op(self) -> Any:
        return F_conv.conv2d_backward if self.groups == 1 else F_grouped.grouped_conv2d_backward

    def _hyper_text(self) -> str:
        return super()._hyper_text() + (f" G={self.groups}" if self.groups > 1 else "")

    def _check_groups(self, input_shape: Shape) -> None:
        D = input_shape[2]
        if D % self.groups:
            fits = ", ".join(str(g) for g in range(1, D + 1) if D % g == 0 and self.K % g == 0)
            raise ShapeError(
                f"{self.where(input_shape)}: G={self.groups} groups must divide the input depth "
                f"D={D}: {D}/{self.groups} = {D / self.groups:.2f} slices per group. Groups that "
                f"fit: {fits}"
            )

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        self._check_groups(input_shape)
        H, W = arith.window_output_hw(
            (input_shape[0], input_shape[1]), self.window, where=self.where(input_shape),
            floor=self.floor,
        )
        return (H, W, self.K)

    def macs(self) -> int:
        outs = self.output_shape
        return arith.conv_macs((outs[0], outs[1]), self.window.F,
                               self.input_shape[2] // self.groups, self.K)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        return (self.K, *self.window.F, D // self.groups)

    def _op(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
            memo: dict | None = None) -> tuple[np.ndarray, Any]:
        w = self.window
        if self.groups > 1:
            return F_grouped.grouped_conv2d_forward(x, W, b, w.S, w.P, w.dilation, self.groups)
        return F_conv.conv2d_forward(x, W, b, w.S, w.P, w.dilation, memo=memo)

    def _spec_args(self) -> list[str]:
        return super()._spec_args() + (["floor=true"] if self.floor else []) + (
            [f"G={self.groups}"] if self.groups > 1 else [])

    def derivation(self, row: LayerRow) -> list[str]:
        ins, outs, w = self.input_shape, self.output_shape, self.window
        D, K, G = ins[2], self.K, self.groups
        Dg = D // G
        fh, fw = w.F
        per_filter = fh * fw * Dg
        n_out = outs[0] * outs[1] * K
        dil = ""
        if w.dilation != (1, 1):
            dil = (f" The filter is dilated by {fmt_pair(w.dilation)}: its taps are spread to an "
                   f"effective extent F_eff = F + (F - 1)(d - 1) = {fmt_pair(w.extent)}.")
        bias = "plus 1 bias" if self.bias else "no bias"
        if G == D and G > 1:
            mult = K // D
            depth = (f"Depthwise: one {fh}x{fw} filter per input slice"
                     + (f", {mult} per slice" if mult > 1 else "")
                     + f" (G = D = {D} groups of one slice): {fh}*{fw} = {per_filter} weights "
                     f"each, {bias}; the slices are not mixed (a 1x1 CONV after it usually does "
                     "that: a depthwise separable CONV).")
        elif G == 1:
            depth = (f"Each filter is {fh}x{fw}x{D} (its depth always equals the input depth "
                     f"{D}): {fh}*{fw}*{D} = {_n(per_filter)} weights, {bias}.")
        else:
            depth = (f"Grouped: the {D} input slices and the {K} filters are split into G = {G} "
                     f"groups; each filter sees only its group's {D}/{G} = {Dg} slices, so it is "
                     f"{fh}x{fw}x{Dg}: {_n(per_filter)} weights, {bias} (G = {G} times fewer "
                     "than an ungrouped CONV).")
        return [
            f"Input volume: {fmt_shape(ins)} (H x W x D, so D1 = {D}).",
            f"Output side: (W1 - F + 2P)/S + 1 = {self.formula_text()}.{dil}",
            f"Depth: D2 = K = {K}. Each of the {K} filters slides over the whole input and gives "
            f"one {_hw(outs)} activation map; the {K} maps are stacked into {fmt_shape(outs)}.",
            depth,
            f"Parameters: ({fh}*{fw}*{Dg})*{K} weights"
            + (f" + {K} biases" if self.bias else "")
            + f" = {_n(row.params)}. Parameter sharing: a filter's weights are the same at all "
            f"{outs[0]}*{outs[1]} = {_n(outs[0] * outs[1])} positions of its map. Without "
            f"sharing, each of the {outs[0]}*{outs[1]}*{K} = {_n(n_out)} output units would need "
            f"its own {_n(per_filter)} weights{' and bias' if self.bias else ''}: "
            f"{_n(arith.conv_params_unshared((outs[0], outs[1]), w.F, Dg, K, self.bias))}.",
            f"MACs: {_n(n_out)} outputs x {_n(per_filter)} = {_n(row.macs)}.",
        ]

    # ------------------------------------------------ with the 2x2 max pool that follows it
    def fuses_pool(self, pool: Layer) -> bool:
        """Whether ``pool`` (the max POOL right after this layer) can run in this layer's pass:
        a 3x3 stride-1 CONV, which may run as Winograd F(2x2, 3x3), followed by a 2x2 stride-2
        unpadded POOL, whose windows are then Winograd's output tiles."""
        c, p = self.window, pool.window
        return (self.groups == 1 and c.F == (3, 3) and c.S == (1, 1) and c.dilation == (1, 1)
                and p.F == (2, 2) and p.S == (2, 2) and p.P == (0, 0))

    def _forward_pool(self, x: np.ndarray, pool: Layer, train: bool = False, *,
                      relu: bool = False) -> np.ndarray:
        """This layer, then ``pool`` (a 2x2 stride-2 MAXPOOL; then the RELU when ``relu``),
        as :func:`convnet.ops.conv.conv2d_maxpool_forward` when the convolution runs as
        Winograd (its output tiles are the pool's windows), else one after the other. Each layer
        keeps what its own backward reads (the pool its index, through
        :meth:`~convnet.layers.pool.MaxPool.remember_index`)."""
        w, W, b = self.window, self.params["W"], self.params.get("b")
        self._pooled = F_conv.maxpool_fuses(x.shape, W.shape, w.S, w.P, w.dilation)
        if not self._pooled:
            return pool._forward(self._forward(x, train), train, relu=relu)
        out, idx, cache, conv_hw = F_conv.conv2d_maxpool_forward(
            x, W, b, w.P, relu=relu, need_index=train, memo=self._memo_for(train))
        self._cache = cache if train else None
        pool.remember_index(idx if train else None, (x.shape[0], *conv_hw, self.K))
        return out

    def _backward_pool(self, dout: np.ndarray, pool: Layer, relu_out: np.ndarray | None,
                       need_dx: bool = True) -> np.ndarray | None:
        """The backward of :meth:`_forward_pool`: the pool's (and RELU's, from ``relu_out``)
        and this layer's, in one pass when the forward was one."""
        index = pool.fused_index()
        if not self._pooled:
            w = self.window
            if (not need_dx and index is not None and self._cache is not None
                    and F_conv.depth1_maxpool_fuses(self.params["W"].shape, w.S, w.dilation,
                                                    dout.dtype)):
                # a network's first layer on one channel: dW straight from the pooled gradient
                idx, conv_shape = index
                self.grads["W"], db = F_conv.conv3x3_depth1_maxpool_weight_grad(
                    self._cache[0], dout, idx, relu_out, w.P, conv_shape[1:3], self.bias)
                if self.bias:
                    self.grads["b"] = db
                self._cache = None
                pool.remember_index(None, None)
                return None
            d = pool._backward(dout, relu_out=relu_out)
            return self._backward(d, need_dx=need_dx)
        if self._cache is None or index is None:
            raise ConfigError(f"{self.describe()}: call forward(x, train=True) before backward")
        idx, conv_shape = index
        dx, dW, db = F_conv.conv2d_maxpool_backward(dout, idx, relu_out, self._cache,
                                                    conv_shape[1:3], need_dx=need_dx)
        self._cache = None
        pool.remember_index(None, None)
        self.grads["W"] = dW
        if self.bias:
            self.grads["b"] = db
        return dx


class DepthwiseConv(Conv):
    """DWCONV: one ``F x F`` filter per input depth slice (MobileNet's depthwise CONV): a CONV
    with ``groups == D`` and ``K = multiplier * D``, inferred from the input.

    Args:
        F, S, P, dilation, bias, floor: as for :class:`Conv`.
        multiplier: filters per input slice (default 1, so the depth is kept).

    Shape:
        input ``(N, H, W, D)`` -> output ``(N, H2, W2, multiplier*D)``; weights
        ``(multiplier*D, F, F, 1)``: ``F*F*D*multiplier`` weights instead of ``F*F*D*K``.

    >>> layer = DepthwiseConv(F=3, S=2, P=1)
    >>> layer.build((17, 17, 32))
    (9, 9, 32)
    >>> layer.num_params
    320
    """

    kind = "DWCONV"
    aliases = ("DEPTHWISE",)
    foreign_names = ("DEPTHWISECONV2D",)
    positional = ("F", "S", "P")
    purpose = "depthwise CONV: one F x F filter per input slice (groups = D)"
    example = "DWCONV(F=3,S=2,P=1)"
    spec_names = {}
    # no Winograd tiles for a depthwise CONV: it declares only what it does
    plan_traits = PlanTraits(fresh_output=True, folds_bn=True)

    def __init__(
        self,
        F: int | Pair = 3,
        S: int | Pair = 1,
        P: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        floor: bool = False,
        multiplier: int = 1,
    ) -> None:
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | np.integer) \
                or multiplier < 1:
            raise ShapeError(f"{self.kind}: received multiplier={multiplier!r}: filters per input "
                             "slice must be a whole number > 0")
        super().__init__(1, F, S, P, dilation, bias, floor)
        self.multiplier = int(multiplier)
        self.K = 0   # known once the input depth is: multiplier * D

    def _hyper_text(self) -> str:
        k = f" K={self.K}" if self.K else ""
        return f"{k}{self._window_text()}"

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        self.groups = input_shape[2]
        self.K = self.multiplier * input_shape[2]
        return super().infer_shape(input_shape)

    def count_params(self, input_shape: Shape | None = None) -> int:
        shape = input_shape or self.input_shape
        K = self.multiplier * shape[2]
        return arith.conv_params(self.window.F, 1, K, self.bias)

    def fuses_pool(self, pool: Layer) -> bool:
        return False

    def _spec_args(self) -> list[str]:
        args = self._window_args()
        if not self.bias:
            args.append("bias=false")
        if self.floor:
            args.append("floor=true")
        if self.multiplier != 1:
            args.append(f"multiplier={self.multiplier}")
        return args


class ConvTranspose(_ConvBase):
    """Transposed CONV (DECONV): ``K`` output maps; upsamples by the stride ``S``.

    It computes the input gradient of the CONV that has the same ``W``: that CONV maps a
    ``(.., K)`` volume to ``(.., D)`` with ``D`` filters of shape ``F x F x K``, hence the layout.

    Args:
        K: output depth. F, S, P, dilation: as for :class:`Conv` (of the associated CONV).
        output_padding: ``a``, extra rows/cols on one side, ``0 <= a < S``; it picks which of the
            ``S`` input sizes that the associated stride-``S`` CONV maps to the same size.

    Shape:
        input ``(N, H, W, D)`` -> output ``(N, H2, W2, K)`` with
        ``H2 = S(H - 1) + F_eff - 2P + a``. Weights ``W``: ``(D, F, F, K)``; bias ``b``: ``(K,)``.

    >>> layer = ConvTranspose(K=8, F=2, S=2)
    >>> layer.build((14, 14, 16))
    (28, 28, 8)
    """

    kind = "DECONV"
    aliases = ("CONVT", "CONVTRANSPOSE")
    foreign_names = ("CONVTRANSPOSE2D", "TRANSPOSEDCONV")
    positional = ("K", "F", "S", "P")
    purpose = "transposed convolution (upsamples)"
    example = "DECONV(16,F=2,S=2)"
    transposed = True
    plan_traits = PlanTraits(fresh_output=True, folds_bn=True)

    def __init__(
        self,
        K: int,
        F: int | Pair = 2,
        S: int | Pair = 1,
        P: int | Pair = 0,
        output_padding: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self._setup(K, F, S, P, dilation, bias)
        self.output_padding = as_pair(output_padding, "output_padding", minimum=0,
                                      where=self.kind)
        for a, s, d in zip(self.output_padding, self.window.S, self.window.dilation, strict=True):
            if a >= max(s, d):
                raise ConfigError(
                    f"{self.kind}: output_padding={a} must be smaller than the stride S={s}"
                )

    _backward_op = staticmethod(F_conv.conv_transpose2d_backward)
    _out_axis = 3

    def _hyper_text(self) -> str:
        text = super()._hyper_text()
        if self.output_padding != (0, 0):
            text += f" output_padding={fmt_pair(self.output_padding)}"
        return text

    def hyper(self) -> dict[str, Any]:
        return {**super().hyper(), "output_padding": list(self.output_padding)}

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        H, W = arith.deconv_output_hw(
            (input_shape[0], input_shape[1]), self.window, self.output_padding,
            where=self.where(input_shape),
        )
        return (H, W, self.K)

    def macs(self) -> int:
        ins = self.input_shape
        return arith.deconv_macs((ins[0], ins[1]), self.window.F, ins[2], self.K)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        return (D, *self.window.F, self.K)  # the layout of the CONV whose dx this computes

    def _op(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
            memo: dict | None = None) -> tuple[np.ndarray, Any]:
        w = self.window
        return F_conv.conv_transpose2d_forward(x, W, b, w.S, w.P, w.dilation,
                                               self.output_padding, memo=memo)

    def _spec_args(self) -> list[str]:
        args = [str(self.K), *self._window_args()]
        if self.output_padding != (0, 0):
            args.append(f"output_padding={fmt_pair(self.output_padding)}")
        return args + ([] if self.bias else ["bias=false"])

    def derivation(self, row: LayerRow) -> list[str]:
        ins, outs, w = self.input_shape, self.output_shape, self.window
        D, K = ins[2], self.K
        parts = []
        for i in range(2):
            a = self.output_padding[i]
            parts.append(f"{w.S[i]}*({ins[i]} - 1) + {w.extent[i]} - 2*{w.P[i]} + {a} = "
                         f"{outs[i]}")
        formula = parts[0] if parts[0] == parts[1] else f"rows {parts[0]}; columns {parts[1]}"
        fh, fw = w.F
        return [
            f"Input volume: {fmt_shape(ins)}. A transposed convolution (DECONV) upsamples: each "
            f"input unit scatters a {fh}x{fw}x{K} patch, weighted, into the output, the patches "
            f"{fmt_pair(w.S)} pixel(s) apart.",
            f"Output side: S(W1 - 1) + F - 2P + a = {formula} (a is the output padding, a < S).",
            f"It is the reverse of a CONV(F={fmt_pair(w.F)}, S={fmt_pair(w.S)}, "
            f"P={fmt_pair(w.P)}), which maps {_hw(outs)} back to {_hw(ins)}: its forward pass is "
            "that CONV's input gradient.",
            f"Depth: D2 = K = {K}. Weights: {fh}*{fw}*{D}*{K}"
            + (f" + {K} biases" if self.bias else "") + f" = {_n(row.params)} parameters.",
            f"MACs: {_n(ins[0] * ins[1] * D)} input values x {fh}*{fw}*{K} = {_n(row.macs)}.",
        ]
