"""CONV and transposed CONV (DECONV) layers.

They are duals: the input gradient of a CONV with weights ``W`` *is* the forward pass of a
transposed CONV with the same ``W``, and both run on one kernel
(:func:`convnet.ops.conv.conv2d_input_grad`), except that a CONV running as Winograd makes its
input gradient from its weight gradient's own tiles in the same pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet import arith
from convnet.arith import Pair, Window, as_pair, fmt_pair
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, Shape
from convnet.net.init import init_weights
from convnet.ops import conv as F_conv


def _check_K(K: int, kind: str) -> int:
    if isinstance(K, bool) or not isinstance(K, int | np.integer) or K < 1:
        raise ShapeError(
            f"{kind}: received K={K!r}: the number of filters must be a whole number > 0 "
            "(it is the output depth)"
        )
    return int(K)


class _WindowLayer(Layer):
    """Shared bits of layers that slide an F x F window with stride S and padding P."""

    window: Window

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


class _ConvBase(_WindowLayer):
    """What CONV and DECONV share: K filters on a window, a weight bank and a bias."""

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

    def count_params(self, input_shape: Shape | None = None) -> int:
        shape = input_shape or self.input_shape
        return arith.conv_params(self.window.F, shape[2], self.K, self.bias)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        fh, fw = self.window.F
        D = self.input_shape[2]
        # fans of the filter bank: F*F*D inputs per output unit, F*F*K outputs per input unit
        # (the receptive-field convention PyTorch uses too, for CONV and DECONV alike)
        self.params["W"] = init_weights(
            rng, self._weight_shape(D), fan_in=fh * fw * D, fan_out=fh * fw * self.K,
            init=init, dtype=self.dtype,
        )
        if self.bias:
            self.params["b"] = np.zeros(self.K, dtype=self.dtype)

    def _backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        dx, dW, db = type(self)._backward_op(dout, self._cache, need_dx=need_dx)
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
        bias: whether each filter has a bias.
        floor: opt in to PyTorch's and Keras's rule of silently dropping the last positions
            when the stride does not fit. By default a stride that does not fit is an error.

    Shape:
        input ``(N, H, W, D)`` -> output ``(N, H2, W2, K)`` with
        ``H2 = (H - F_eff + 2P)/S + 1`` (and the same for W), which must be a whole number.
        Weights ``W``: ``(K, F, F, D)``; bias ``b``: ``(K,)``.

    >>> layer = Conv(K=10, F=5, S=1, P=2)
    >>> layer.build((32, 32, 3))
    (32, 32, 10)
    >>> layer.num_params
    760
    """

    kind = "CONV"

    def __init__(
        self,
        K: int,
        F: int | Pair = 3,
        S: int | Pair = 1,
        P: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        floor: bool = False,
    ) -> None:
        super().__init__()
        self._setup(K, F, S, P, dilation, bias)
        self.floor = bool(floor)
        self._pooled = False      # whether the last _forward_pool ran as one fused pass

    _backward_op = staticmethod(F_conv.conv2d_backward)

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        H, W = arith.window_output_hw(
            (input_shape[0], input_shape[1]), self.window, where=self.where(input_shape),
            floor=self.floor,
        )
        return (H, W, self.K)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        return (self.K, *self.window.F, D)

    def _op(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
            memo: dict | None = None) -> tuple[np.ndarray, Any]:
        w = self.window
        return F_conv.conv2d_forward(x, W, b, w.S, w.P, w.dilation, memo=memo)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = self._op(x, self.params["W"], self.params.get("b"),
                                    memo=self._memo_for(train))
        return out

    def _spec_args(self) -> list[str]:
        return super()._spec_args() + (["floor=true"] if self.floor else [])

    # ------------------------------------------------ with the 2x2 max pool that follows it
    def _forward_pool(self, x: np.ndarray, pool: Layer, train: bool = False, *,
                      relu: bool = False) -> np.ndarray:
        """This layer, then ``pool`` (a 2x2 stride-2 MAXPOOL; then the RELU when ``relu``),
        as :func:`convnet.ops.conv.conv2d_maxpool_forward` when the convolution runs as
        Winograd (its output tiles are the pool's windows), else one after the other. Both
        layers keep the caches their own backward passes read (the pool's index included)."""
        w, W, b = self.window, self.params["W"], self.params.get("b")
        self._pooled = F_conv.maxpool_fuses(x.shape, W.shape, w.S, w.P, w.dilation)
        if not self._pooled:
            return pool._forward(self._forward(x, train), train, relu=relu)
        out, idx, cache, conv_hw = F_conv.conv2d_maxpool_forward(
            x, W, b, w.P, relu=relu, need_index=train, memo=self._memo_for(train))
        self._cache = cache if train else None
        pool._cache = (idx, (x.shape[0], *conv_hw, self.K), pool.window.F, pool.window.S,
                       pool.window.P) if train else None
        return out

    def _backward_pool(self, dout: np.ndarray, pool: Layer, relu_out: np.ndarray | None,
                       need_dx: bool = True) -> np.ndarray | None:
        """The backward of :meth:`_forward_pool`: the pool's (and RELU's, from ``relu_out``)
        and this layer's, in one pass when the forward was one."""
        if not self._pooled:
            w = self.window
            if (not need_dx and pool._cache is not None and self._cache is not None
                    and F_conv.depth1_maxpool_fuses(self.params["W"].shape, w.S, w.dilation,
                                                    dout.dtype)):
                # a network's first layer on one channel: dW straight from the pooled gradient
                idx, conv_shape = pool._cache[:2]
                self.grads["W"], db = F_conv.conv3x3_depth1_maxpool_weight_grad(
                    self._cache[0], dout, idx, relu_out, w.P, conv_shape[1:3], self.bias)
                if self.bias:
                    self.grads["b"] = db
                self._cache = pool._cache = None
                return None
            d = pool._backward(dout, relu_out=relu_out)
            return self._backward(d, need_dx=need_dx)
        if self._cache is None or pool._cache is None:
            raise ConfigError(f"{self.describe()}: call forward(x, train=True) before backward")
        idx, conv_shape = pool._cache[:2]
        dx, dW, db = F_conv.conv2d_maxpool_backward(dout, idx, relu_out, self._cache,
                                                    conv_shape[1:3], need_dx=need_dx)
        self._cache = pool._cache = None
        self.grads["W"] = dW
        if self.bias:
            self.grads["b"] = db
        return dx


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

    def infer_shape(self, input_shape: Shape) -> Shape:
        self._require_volume(input_shape)
        H, W = arith.deconv_output_hw(
            (input_shape[0], input_shape[1]), self.window, self.output_padding,
            where=self.where(input_shape),
        )
        return (H, W, self.K)

    def _weight_shape(self, D: int) -> tuple[int, int, int, int]:
        return (D, *self.window.F, self.K)  # the layout of the CONV whose dx this computes

    def _op(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
            memo: dict | None = None) -> tuple[np.ndarray, Any]:
        w = self.window
        return F_conv.conv_transpose2d_forward(x, W, b, w.S, w.P, w.dilation,
                                               self.output_padding, memo=memo)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out, self._cache = self._op(x, self.params["W"], self.params.get("b"),
                                    memo=self._memo_for(train))
        return out

    def _spec_args(self) -> list[str]:
        args = [str(self.K), *self._window_args()]
        if self.output_padding != (0, 0):
            args.append(f"output_padding={fmt_pair(self.output_padding)}")
        return args + ([] if self.bias else ["bias=false"])
