"""The layer protocol: a thin stateful object over a stateless functional core (``convnet.ops``).

A layer is made in two steps, as in jax's ``stax`` and ConvNetJS's ``makeLayers``:

1. ``infer_shape(input_shape)``: pure shape arithmetic (``convnet.arith``), no arrays. A network
   calls it for every layer before any weight exists, so a stack that cannot work fails at build
   time, naming the layer.
2. ``build(input_shape, rng, dtype)``: allocates ``params`` (and zeroed ``grads``).

Then ``forward(x, train)`` keeps what ``backward(dout)`` needs, and ``backward`` fills ``grads``
and returns ``dx``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.arith import fmt_shape
from convnet.errors import ConfigError, InputError, ShapeError

Shape = tuple[int, ...]


class Layer:
    """Base class. Subclasses set ``kind`` (the spec name) and override the hooks below."""

    kind: str = "LAYER"
    #: the activation this layer *is*, used to choose He or Glorot for the weights before it
    activation: str | None = None
    #: elementwise layers with no state work on any shape without build()
    needs_build: bool = True

    def __init__(self) -> None:
        self.name: str = self.kind.lower()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.dtype: np.dtype = np.dtype(np.float32)
        self._cache: Any = None
        self.built = False  # True once build() has allocated the parameters
        self.network: Any = None  # the Sequential this layer belongs to, if any

    # ----------------------------------------------------------------------- shape inference
    def describe(self) -> str:
        """``conv2 (CONV K=8 F=3 S=3 P=0)``: how errors and reports name this layer."""
        return f"{self.name} ({self.kind}{self._hyper_text()})"

    def _hyper_text(self) -> str:
        return ""

    def where(self, input_shape: Shape) -> str:
        return f"{self.describe()} on {fmt_shape(input_shape)}"

    def infer_shape(self, input_shape: Shape) -> Shape:
        """Output shape for ``input_shape``; :class:`ShapeError` naming the layer if impossible."""
        return tuple(input_shape)

    def _require_volume(self, input_shape: Shape) -> None:
        if len(input_shape) != 3:
            raise ShapeError(
                f"{self.where(input_shape)}: needs an H x W x D volume, but its input is a vector "
                f"of {input_shape[0]} features (a layer after FC or FLATTEN has no spatial "
                "structure left)"
            )

    # ------------------------------------------------------------------------------- weights
    def build(
        self,
        input_shape: Shape,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
        init: str | None = None,
    ) -> Shape:
        """Infer the output shape and allocate parameters. Returns the output shape.

        ``init`` is ``"he"`` (for weights followed by a ReLU-family activation) or ``"glorot"``;
        None lets the layer choose (He).
        """
        self.output_shape = self.infer_shape(tuple(int(s) for s in input_shape))
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ShapeError(f"{self.describe()}: dtype must be float32 or float64, not {dtype}")
        self._init_params(rng if rng is not None else np.random.default_rng(), init or "he")
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.built = True
        return self.output_shape

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        """Allocate ``self.params`` (and ``self.buffers``); nothing for parameter-free layers."""

    @property
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def count_params(self) -> int:
        """Parameter count from the shapes alone (no weights needed); see ``convnet.arith``."""
        return 0

    # ------------------------------------------------------------------------- computation
    def forward(self, x: Any, train: bool = False, **kwargs: Any) -> np.ndarray:
        """The layer on a batch ``x``: ``(N, *input_shape)``, or another image size where the
        window fits it. Validated (a layer used on its own gets the same errors as a network);
        a :class:`~convnet.Sequential` validates once at its entry and calls :meth:`_forward`."""
        return self._forward(self._validate(x), train, **kwargs)

    def backward(self, dout: Any, **kwargs: Any) -> np.ndarray | None:
        """Gradient w.r.t. the input of the last ``forward``; fills ``grads``."""
        if self._cache is None and self.params:
            raise ConfigError(f"{self.describe()}: call forward(x, train=True) before backward")
        dout = np.asarray(dout)
        if self.built:
            dout = dout.astype(self.dtype, copy=False)
        return self._backward(dout, **kwargs)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, dout: np.ndarray) -> None:
        """Fill ``grads`` without computing ``dx`` (for the first layer of a network in training,
        whose input gradient nobody reads). Layers where ``dx`` is costly override this."""
        self._backward(dout)

    def _validate(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if not self.needs_build and not self.built:  # an elementwise layer: any shape will do
            dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float32)
            return check_array(arr, None, dtype, self.describe())
        self._check_built()
        shape = self.input_shape
        if (arr.ndim == 4 and len(shape) == 3 and arr.shape[3] == shape[2]
                and arr.shape[1:] != shape and self.kind not in ("FC", "FLATTEN")):
            self.infer_shape(arr.shape[1:])  # another image size: the window must fit it too
            shape = arr.shape[1:]
        return check_array(arr, shape, self.dtype, self.describe())

    def _check_built(self) -> None:
        if not self.built:
            raise ShapeError(
                f"{self.describe()}: call build(input_shape) (or put the layer in a Sequential) "
                "before forward"
            )

    # ---------------------------------------------------------------------------- spec text
    def to_spec(self) -> str:
        """This layer in the architecture language, e.g. ``CONV(32,F=3,P=1)``."""
        args = self._spec_args()
        return f"{self.kind}({','.join(args)})" if args else self.kind

    def _spec_args(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        # the hyperparameters that differ from their defaults, like PyTorch's extra_repr
        args = self._spec_args()
        return f"{type(self).__name__}({', '.join(args)})"


def check_array(x: Any, shape: Shape | None, dtype: np.dtype, where: str) -> np.ndarray:
    """Turn ``x`` into an array of ``dtype`` shaped ``(N, *shape)``, or raise a clear error.

    A wrongly shaped array raises :class:`ShapeError`; NaN or Inf raises :class:`InputError`.
    A single example without the batch axis is not guessed at: the message says how to add it.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and other things numpy refuses
        raise ShapeError(f"{where}: input is not an array ({exc})") from None
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{where}: input has dtype {arr.dtype}; expected numbers")
    if shape is not None and arr.shape[1:] != tuple(shape):
        expected = f"(N, {', '.join(str(s) for s in shape)})"
        hint = ""
        if arr.shape == tuple(shape):
            hint = " (one example without the batch axis: use x[None])"
        elif len(shape) == 3 and arr.ndim == 4 and arr.shape[1:] == (shape[2], shape[0], shape[1]):
            hint = " (this looks like NCHW; convnet is NHWC: use x.transpose(0, 2, 3, 1))"
        raise ShapeError(
            f"{where}: expected an input of shape {expected} ({fmt_shape(shape)} per example), "
            f"received {arr.shape}{hint}"
        )
    if arr.shape and arr.shape[0] == 0:
        raise ShapeError(f"{where}: received an empty batch (N = 0)")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{where}: input contains {bad} NaN or Inf value(s)")
    return arr
