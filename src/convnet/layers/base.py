"""The layer protocol: a thin stateful object over a stateless functional core (``convnet.ops``).

A layer is made in two steps, as in jax's ``stax`` and ConvNetJS's ``makeLayers``:

1. ``infer_shape(input_shape)``: pure shape arithmetic (``convnet.arith``), no arrays. A network
   calls it for every layer before any weight exists, so a stack that cannot work fails at build
   time, naming the layer.
2. ``build(input_shape, rng, dtype)``: allocates ``params`` (and zeroed ``grads``).

Then ``forward(x, train)`` keeps what ``backward(dout)`` needs, and ``backward`` fills ``grads``
and returns ``dx``.

A layer also *describes itself*, so that adding a layer kind is one class (and its kernels): its
spec name and arguments (read from the constructor's signature), parameters, MACs, receptive
field, derivation text and what the page draws. The architecture language, ``arith``'s reports,
``explain`` and ``visualize`` read these; none of them keeps a table of kinds. Every concrete
class with its own ``kind`` is registered in :data:`LAYER_CLASSES`.

How a network may run a layer faster (fusing it with its neighbour, working in place) is declared
by the class itself in :class:`PlanTraits`, read from the class's OWN body only: a subclass does
not silently inherit a fusion whose kernels it may have changed (see ``convnet/net/plan.py``).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from convnet.arith import fmt_shape
from convnet.errors import ConfigError, InputError, ShapeError

if TYPE_CHECKING:
    from convnet.arith import LayerRow, ReceptiveField

Shape = tuple[int, ...]

#: every concrete layer class by its spec name (``"CONV" -> Conv``), filled as classes are defined
LAYER_CLASSES: dict[str, type[Layer]] = {}


@dataclass(frozen=True)
class SpecArg:
    """One argument of a layer in the architecture language, read from its constructor.

    ``kind`` is ``"int"``, ``"pair"`` (an int or rows x cols), ``"float"`` or ``"bool"``;
    ``default`` is how the default is written (``""`` for a required argument)."""

    name: str
    kind: str
    default: str
    required: bool
    param: str = ""   # the constructor keyword, when the spec spells it otherwise (G: groups)

    @property
    def keyword(self) -> str:
        return self.param or self.name


@dataclass(frozen=True)
class PlanTraits:
    """What a layer class lets a network's execution plan do with it (``convnet/net/plan.py``).

    Attributes:
        fresh_output: ``forward`` returns a new array nobody else holds and ``backward`` a new
            input gradient (CONV, DECONV, FC, POOL): the RELU after it may work in place.
        inplace: an elementwise layer that can overwrite its argument, forward and backward
            (``_forward(x, train, inplace=True)``, ``_backward(dout, inplace=True)``).
        monotone: an elementwise nondecreasing function (RELU): a max pool commutes with it.
        takes_activation: kinds of the activation this layer can apply in its own pass, with
            ``_forward(x, train, relu=True)`` / ``_backward(dout, relu_out=...)`` (a max POOL).
        takes_pool: this layer can run with the max POOL after it as one step
            (``fuses_pool(pool)``, ``_forward_pool``, ``_backward_pool``: a CONV on Winograd tiles).
        folds_bn: in evaluation a BN after this layer folds into its weights
            (``_forward_folded(x, scale, shift)``).
        folds_into: in evaluation this layer is an affine map per channel that folds into a
            ``folds_bn`` layer before it (``affine() -> (scale, shift)``: a BN).
        fresh_backward: whether backward returns input gradients nobody else holds, where it
            differs from ``fresh_output`` (an ADD's forward makes a new array, its backward hands
            the same gradient to every input).
    """

    fresh_output: bool = False
    fresh_backward: bool | None = None
    inplace: bool = False
    monotone: bool = False
    takes_activation: tuple[str, ...] = ()
    takes_pool: bool = False
    folds_bn: bool = False
    folds_into: bool = False

    @property
    def fresh_input_grad(self) -> bool:
        return self.fresh_output if self.fresh_backward is None else self.fresh_backward


NO_TRAITS = PlanTraits()


def traits(layer: Layer) -> PlanTraits:
    """The :class:`PlanTraits` that ``layer``'s own class declares (not inherited ones)."""
    return type(layer).__dict__.get("plan_traits", NO_TRAITS)


def _arg_kind(annotation: Any, default: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                  str(annotation))
    if "Pair" in text:
        return "pair"
    if "bool" in text:
        return "bool"
    if "float" in text:
        return "float"
    if "int" in text:
        return "int"
    raise TypeError(f"spec argument of unsupported type {text!r}")  # a programming error


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return f"{value[0]}x{value[1]}" if value[0] != value[1] else str(value[0])
    return "" if value is inspect.Parameter.empty else str(value)


class Layer:
    """Base class. Subclasses set ``kind`` (the spec name) and override the hooks below.

    Self-description (class attributes; all optional but ``kind``):

    - ``kind``: the name in the architecture language (``"CONV"``); ``aliases`` other spellings
      the language accepts (``"MAXPOOL"``), ``foreign_names`` names from other libraries that get
      a did-you-mean (``"DENSE"``); ``purpose`` and ``example`` for help texts.
    - ``positional``: the constructor arguments that may be given without a name, in the seeds'
      order (``("K", "F", "S", "P")``); ``spec_defaults`` how a default that is not a literal is
      written (POOL's ``S`` defaults to ``"F"``), ``spec_names`` a constructor keyword the
      language spells otherwise (``{"groups": "G"}``). The arguments themselves, their kinds and
      defaults come from the constructor's signature (:meth:`spec_args`).
    - ``activation``: the activation this layer *is*, which chooses He or Glorot for the weights
      before it; ``weighted``: a layer whose weights mix its inputs (CONV, DECONV, FC), where
      that search stops; ``slides``: it slides a ``window`` over its input; ``fixed_size``:
      the layer needs one input size (FC, FLATTEN), so a network holding it is not fully
      convolutional; ``collapses``: it turns its whole input volume into a vector (FC, GAP,
      FLATTEN), and :meth:`convolutional_twin` says what it becomes in a fully convolutional
      network.
    - ``arity``: how many inputs it takes (1; 0 for a merge of two or more, ``Add``, ``Concat``).
    - ``plan_traits``: :class:`PlanTraits`, how a network may fuse it (declared per class).
    """

    kind: ClassVar[str] = "LAYER"
    aliases: ClassVar[tuple[str, ...]] = ()
    foreign_names: ClassVar[tuple[str, ...]] = ()
    purpose: ClassVar[str] = ""
    example: ClassVar[str] = ""
    positional: ClassVar[tuple[str, ...]] = ()
    spec_defaults: ClassVar[dict[str, str]] = {}
    spec_names: ClassVar[dict[str, str]] = {}
    #: the activation this layer *is*, used to choose He or Glorot for the weights before it
    activation: ClassVar[str | None] = None
    weighted: ClassVar[bool] = False
    #: slides a window over its input (CONV, DECONV, POOL, GAP): it has a ``window``
    slides: ClassVar[bool] = False
    fixed_size: ClassVar[bool] = False
    #: turns its whole input volume into a vector (FC, GAP, FLATTEN): where a classifier starts
    collapses: ClassVar[bool] = False
    arity: ClassVar[int] = 1
    #: elementwise layers with no state work on any shape without build()
    needs_build: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__ and not cls.__name__.startswith("_"):
            LAYER_CLASSES[cls.kind] = cls

    def __init__(self) -> None:
        self.name: str = self.kind.lower()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.dtype: np.dtype = np.dtype(np.float32)
        self._cache: Any = None
        self._trained = False     # the last forward() was a training one, not yet backpropagated
        self.built = False  # True once build() has allocated the parameters
        self.network: Any = None  # the network this layer belongs to, if any
        #: why a network made this layer itself (e.g. "projection"), or None for a written one
        self.inserted: str | None = None

    # ------------------------------------------------------------------- self-description
    @classmethod
    def spec_args(cls) -> tuple[SpecArg, ...]:
        """The layer's arguments in the architecture language, from its constructor."""
        args = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            required = p.default is inspect.Parameter.empty
            default = cls.spec_defaults.get(p.name, _default_text(p.default))
            name = cls.spec_names.get(p.name, p.name)
            args.append(SpecArg(name, _arg_kind(p.annotation, p.default), default, required,
                                p.name if name != p.name else ""))
        return tuple(args)

    def macs(self) -> int:
        """Multiply-accumulates for one image, from the shapes (0 for layers without weights:
        pooling, activations, BN and DROPOUT do a handful of comparisons or additions per
        element, reported as 0 as torchinfo and most papers do)."""
        return 0

    def receptive_field(self, rf: ReceptiveField, grid: tuple[int, int]) -> ReceptiveField:
        """The receptive field of this layer's units from its input's (``rf``); ``grid`` is the
        spatial grid its input was last laid out on (a vector remembers the volume it was
        flattened from). Elementwise layers keep it."""
        return rf

    def derivation(self, row: LayerRow) -> list[str]:
        """Sentences that derive this layer's numbers (``convnet explain``)."""
        from convnet import arith

        return [f"{self.describe()}: {fmt_shape(row.input_shape)} -> "
                f"{fmt_shape(row.output_shape)}; {row.params:,} parameters, "
                f"{arith.num_elements(row.output_shape):,} outputs."]

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters the page shows and its click-a-unit explainer reads (JSON)."""
        return {}

    def short_hyper(self) -> str:
        """``K=32 F=3 S=1 P=1``: the label under the layer's volume in the page's drawing."""
        return self._hyper_text().strip()

    # ------------------------------------------------------ in a fully convolutional network
    def unbuilt_copy(self) -> Layer:
        """A layer of the same kind and hyperparameters, with no arrays and no network."""
        # share nothing, and copy neither the network nor the weight arrays
        memo: dict[int, Any] = {id(v): None for v in (*self.params.values(),
                                                      *self.grads.values(),
                                                      *self.buffers.values())}
        memo[id(self.network)] = None
        memo[id(self._cache)] = None
        new = copy.deepcopy(self, memo)
        new.params, new.grads, new.buffers, new._cache = {}, {}, {}, None
        new.network, new.built = None, False
        return new

    def convolutional_twin(self, grid: tuple[int, int]) -> Layer | None:
        """This layer in the fully convolutional twin of its network (:mod:`convnet.fcn`), where
        its input lies on a ``grid`` (rows, cols) volume: itself (a copy) unless it collapses
        the volume; None drops it."""
        return self.unbuilt_copy()

    def copy_weights_to(self, twin: Layer) -> None:
        """Copy this layer's parameters and buffers into its (built) convolutional twin."""
        for key, value in self.params.items():
            twin.params[key][...] = value
        for key, value in self.buffers.items():
            twin.buffers[key][...] = value

    def twin_sentence(self, twin: Layer | None) -> str | None:
        """Why the twin computes the same numbers, when it is another layer (explain)."""
        return None

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
        a network validates once at its entry and calls :meth:`_forward`.

        ``train=True`` keeps what :meth:`backward` needs (and uses batch statistics in BN, drops
        units in DROPOUT); evaluation (the default, as for a network) keeps nothing to
        backpropagate through."""
        out = self._forward(self._validate(x), train, **kwargs)
        self._trained = bool(train)
        return out

    def backward(self, dout: Any, **kwargs: Any) -> np.ndarray | None:
        """Gradient w.r.t. the input of the last ``forward(x, train=True)``; fills ``grads``.

        Every layer raises the same :class:`~convnet.errors.ConfigError` when the last forward
        was not a training one (or was backpropagated already): one backward per training
        forward, as for a network."""
        if not self._trained:
            raise ConfigError(f"{self.describe()}: call forward(x, train=True) before backward "
                              "(backward needs what the training forward kept, once)")
        self._trained = False
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

    def forget(self) -> None:
        """Drop what the last forward kept for backward (its gradient is not wanted)."""
        self._cache = None

    def remember_output(self, out: np.ndarray | None) -> None:
        """Keep ``out`` as this layer's output for its backward pass, when another layer's kernel
        computed this layer in its own pass (a POOL applying the RELU after it); None forgets it.
        Only activations whose backward reads their output (``takes_activation`` partners)
        implement it."""
        raise ConfigError(f"{self.describe()} cannot be computed inside another layer's pass")

    def _validate(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if not self.needs_build and not self.built:  # an elementwise layer: any shape will do
            dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float32)
            return check_array(arr, None, dtype, self.describe())
        self._check_built()
        shape = self.input_shape
        if (arr.ndim == 4 and len(shape) == 3 and arr.shape[3] == shape[2]
                and arr.shape[1:] != shape and not self.fixed_size):
            self.infer_shape(arr.shape[1:])  # another image size: the window must fit it too
            shape = arr.shape[1:]
        return check_array(arr, shape, self.dtype, self.describe())

    def _check_built(self) -> None:
        if not self.built:
            raise ShapeError(
                f"{self.describe()}: call build(input_shape) (or put the layer in a network) "
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
