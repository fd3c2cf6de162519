"""Sequential: a stack of layers whose every shape is known before any weight exists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, Shape, check_array
from convnet.ops import _threads

MAX_DIM = 1_000_000


def _check_input_shape(input_shape: Any) -> Shape:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ShapeError(
            f"input_shape={input_shape!r} must be (H, W, D) for images or (n,) for vectors"
        ) from None
    if len(shape) == 2:
        raise ShapeError(
            f"input_shape={shape!r} has no depth: write (H, W, D), e.g. {(*shape, 1)!r} for "
            f"grayscale images or {(*shape, 3)!r} for RGB"
        )
    if len(shape) not in (1, 3) or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and 0 < s <= MAX_DIM
        for s in shape
    ):
        raise ShapeError(
            f"input_shape={shape!r} must be (H, W, D) for images or (n,) for vectors, with whole "
            f"numbers between 1 and {MAX_DIM:,}"
        )
    return tuple(int(s) for s in shape)


def choose_init(layers: Sequence[Layer], i: int) -> str:
    """He for weights whose output goes through a ReLU-family activation, Glorot otherwise.

    Looks past layers that do not change the nonlinearity (BN, DROPOUT, POOL, FLATTEN) to the
    first activation; a layer with weights in between (or the end of the net) means Glorot.
    """
    for layer in layers[i + 1:]:
        if layer.activation is not None:
            return "he" if layer.activation == "relu" else "glorot"
        if layer.kind in ("CONV", "DECONV", "FC"):
            break
    return "glorot"


Step = tuple[int, bool, bool, "int | None", "int | None"]


def _execution_plan(layers: Sequence[Layer]) -> list[Step]:
    """The order :meth:`Sequential.forward` runs the layers in, and where RELU works in place.

    Four rewrites that only remove memory passes and change no result (but the last one's
    bias gradient, summed over the tiles in another order: the last bits in float32).
    Measured on the reference network at batch 128: 4.5 of 80 ms for the first two, at an
    early stage:

    - **RELU -> POOL runs as POOL -> RELU.** Max pooling commutes with any nondecreasing
      function, so ``pool(relu(x)) == relu(pool(x))``, and the RELU then touches a quarter of
      the values (for 2x2 pooling), forward and backward. The gradients agree too: where a
      window's max is positive both pick the same first argmax; where it is <= 0 the RELU
      gradient is 0 either way.
    - **POOL -> RELU in one pass**: the max pool applies the RELU to each range of images it
      has just pooled, and its backward takes the RELU's mask the same way (no pass and no
      thread hand-off of its own; the RELU layer still holds its cache, the output).
    - **RELU in place** when its input is an array the previous layer just made and keeps no
      reference to (CONV, DECONV and FC keep their input; POOL a compact index), and in the
      backward pass when its ``dout`` comes fresh from such a layer's backward.
    - **3x3 stride-1 CONV -> 2x2 stride-2 POOL (-> RELU) in one step**: where the CONV runs as
      Winograd F(2x2, 3x3) its 2x2 output tiles are the pool's windows, so the pool (and the
      RELU) are taken on each tile as it is transformed, and the backward routes the pooled
      gradient straight into the output-gradient tiles
      (:meth:`~convnet.layers.conv.Conv._forward_pool`; other batches run the layers one
      after the other). The CONV's full output and its gradient are never written; the
      reference network (2 threads, interleaved with the layers run one after the other,
      medians): training step 31.2 vs 32.6 ms at batch 128, 12.3 vs 13.2 at 32; inference
      11.1 vs 12.3 ms at batch 128, 4.3 vs 4.5 at 32.

    Returns ``(layer index, forward in place, backward in place, fused RELU index or None,
    fused POOL index or None)`` in execution order; a fused RELU or POOL has no step of its
    own. Calling the layers one by one (as ``visualize`` does) runs the plain order with no
    in-place writes.
    """
    from convnet.layers import FC, Conv, ConvTranspose, MaxPool, ReLU

    order = list(range(len(layers)))
    k = 0
    while k < len(order) - 1:
        if isinstance(layers[order[k]], ReLU) and isinstance(layers[order[k + 1]], MaxPool):
            order[k], order[k + 1] = order[k + 1], order[k]
            k += 2
        else:
            k += 1
    fresh = (Conv, ConvTranspose, FC, MaxPool)   # outputs (and input gradients) nobody keeps
    plan: list[Step] = []
    k = 0
    while k < len(order):
        i = order[k]
        if (isinstance(layers[i], MaxPool) and k + 1 < len(order)
                and isinstance(layers[order[k + 1]], ReLU)):
            plan.append((i, False, False, order[k + 1], None))
            k += 2
            continue
        relu = isinstance(layers[i], ReLU)
        fwd = relu and k > 0 and isinstance(layers[order[k - 1]], fresh)
        bwd = relu and k + 1 < len(order) and isinstance(layers[order[k + 1]], fresh)
        plan.append((i, fwd, bwd, None, None))
        k += 1
    merged: list[Step] = []
    for step in plan:
        prev = merged[-1] if merged else None
        if (prev is not None and prev[3] is None and prev[4] is None
                and isinstance(layers[prev[0]], Conv) and isinstance(layers[step[0]], MaxPool)
                and _tiles_are_windows(layers[prev[0]], layers[step[0]])):
            merged[-1] = (prev[0], False, False, step[3], step[0])
        else:
            merged.append(step)
    return merged


def _tiles_are_windows(conv: Layer, pool: Layer) -> bool:
    """A CONV that can run as Winograd F(2x2, 3x3) followed by a 2x2 stride-2 unpadded POOL."""
    c, p = conv.window, pool.window
    return (c.F == (3, 3) and c.S == (1, 1) and c.dilation == (1, 1)
            and p.F == (2, 2) and p.S == (2, 2) and p.P == (0, 0))


def _bn_folds(layers: Sequence[Layer], plan: list[Step]) -> dict[int, int]:
    """``{CONV/DECONV index: BN index}`` for each BN that runs right after a CONV or DECONV:
    in evaluation the BN is the affine map ``x * scale + shift`` per channel, which
    :meth:`~convnet.layers.conv._ConvBase._forward_folded` folds into that layer's weights and
    bias, so the BN's pass over the volume disappears (the encoder-decoder at batch 32: six BN
    passes, ~2.9 of ~19 ms of its evaluation). Training runs both layers as they are."""
    from convnet.layers import BatchNorm, Conv, ConvTranspose

    folds = {}
    for (i, _, _, relu, pool), (j, *_) in zip(plan, plan[1:], strict=False):
        if relu is None and pool is None and isinstance(layers[i], Conv | ConvTranspose) \
                and isinstance(layers[j], BatchNorm):
            folds[i] = j
    return folds


class Sequential:
    """A network: layers applied one after the other.

    Every shape is inferred at construction, before any weight exists, so a stack that cannot
    work fails here with a :class:`~convnet.errors.ShapeError` naming the layer. Layers are named
    by kind and position: ``conv1, relu1, pool1, conv2, ..., fc1``.

    Args:
        layers: the layers, unbuilt (each object may appear once).
        input_shape: ``(H, W, D)`` for images or ``(n,)`` for vectors.
        seed: makes the initial weights and dropout masks reproducible.
        dtype: ``np.float32`` (default) or ``np.float64`` (for gradient checks).
        weights: ``False`` infers shapes and counts without allocating any array (what
            ``summary`` uses, so ``summary vgg16`` is instant).

    >>> import convnet as cn
    >>> net = cn.Sequential([cn.Conv(K=32, F=3, P=1), cn.ReLU(), cn.MaxPool(), cn.FC(10)],
    ...                     input_shape=(28, 28, 1), seed=0)
    >>> net.output_shape, net.num_params
    ((10,), 63050)
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape: Sequence[int],
        seed: int | None = None,
        dtype: Any = np.float32,
        weights: bool = True,
    ) -> None:
        self.input_shape: Shape = _check_input_shape(input_shape)
        self.layers: list[Layer] = list(layers)
        if not self.layers:
            raise ShapeError("a network needs at least one layer after INPUT")
        seen: set[int] = set()
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layer {i + 1} is {layer!r}, not a convnet layer")
            if layer.network is not None:
                raise ConfigError(
                    f"layer {i + 1} ({layer.kind}) already belongs to another network; building "
                    "it again would change that network's weights. Make a new layer object"
                )
            if id(layer) in seen:
                raise ConfigError(
                    f"layer {i + 1} ({layer.kind}) appears twice in the list; each position needs "
                    "its own layer object (use [...]*N in a spec to repeat a pattern)"
                )
            seen.add(id(layer))
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ConfigError(f"dtype must be float32 or float64, not {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, not {dtype}")
        self.seed = seed
        self._name_layers()
        self._batch_shape: tuple[int, ...] | None = None  # output shape of the last train forward
        # 1. shapes, without arrays: fails here, naming the layer, if the stack cannot work
        self.shapes: list[Shape] = []
        shape = self.input_shape
        for layer in self.layers:
            layer.input_shape = shape
            shape = layer.output_shape = layer.infer_shape(shape)
            self.shapes.append(shape)
        self._plan = _execution_plan(self.layers)
        self._folds = _bn_folds(self.layers, self._plan)
        self.has_weights = bool(weights)
        # 2. weights, from one generator, so a seed reproduces everything (dropout masks too)
        self.rng = np.random.default_rng(seed)
        if weights:
            shape = self.input_shape
            for i, layer in enumerate(self.layers):
                shape = layer.build(shape, rng=self.rng, dtype=self.dtype,
                                    init=choose_init(self.layers, i))
            for layer in self.layers:  # a network with weights owns its layers
                layer.network = self

    def _name_layers(self) -> None:
        counts: dict[str, int] = {}
        for layer in self.layers:
            key = layer.kind.lower()
            counts[key] = counts.get(key, 0) + 1
            layer.name = f"{key}{counts[key]}"

    # --------------------------------------------------------------------------- properties
    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    @property
    def num_params(self) -> int:
        """Trainable parameters (weights and biases; BN's gamma and beta)."""
        if self.has_weights:
            return sum(layer.num_params for layer in self.layers)
        return sum(layer.count_params() for layer in self.layers)

    @property
    def spec(self) -> str:
        """The network in the architecture language; ``cn.build(net.spec)`` rebuilds it."""
        parts = [f"INPUT({fmt_shape(self.input_shape)})"] + [ly.to_spec() for ly in self.layers]
        return " -> ".join(parts)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            names = ", ".join(ly.name for ly in self.layers)
            raise KeyError(f"no layer named {key!r}; layers: {names}")
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        lines = [f"Sequential(input_shape={self.input_shape}, params={self.num_params:,})"]
        for layer, shape in zip(self.layers, self.shapes, strict=True):
            lines.append(f"  {layer.name:<10} {layer.to_spec():<28} -> {fmt_shape(shape)}")
        return "\n".join(lines)

    # -------------------------------------------------------------------------- computation
    def _require_weights(self) -> None:
        if not self.has_weights:
            raise ConfigError("this network was built with weights=False (shapes only)")

    @property
    def fully_convolutional(self) -> bool:
        """True when no layer needs a fixed input size (no FC, no FLATTEN): such a network
        accepts larger images and returns a map (see :mod:`convnet.fcn`)."""
        return len(self.input_shape) == 3 and all(
            ly.kind not in ("FC", "FLATTEN") for ly in self.layers)

    def shapes_for(self, input_shape: Sequence[int]) -> list[Shape]:
        """Every layer's output shape for another input size (pure arithmetic; ShapeError naming
        the layer where a stride does not fit that size). Layer names stay as built."""
        shape = _check_input_shape(input_shape)
        shapes = []
        for layer in self.layers:
            shape = layer.infer_shape(shape)
            shapes.append(shape)
        return shapes

    def _check_forward_input(self, x: Any) -> np.ndarray:
        where = f"network input ({fmt_shape(self.input_shape)})"
        arr = np.asarray(x)
        if (self.fully_convolutional and arr.ndim == 4 and arr.shape[1:3] != self.input_shape[:2]
                and arr.shape[3] == self.input_shape[2]):
            self.shapes_for(arr.shape[1:])  # validates that every stride fits the new size
            return check_array(arr, arr.shape[1:], self.dtype, where)
        return check_array(arr, self.input_shape, self.dtype, where)

    def forward(self, x: Any, train: bool = False) -> np.ndarray:
        """Scores for a batch ``x`` of shape ``(N, *input_shape)``.

        ``train=True`` keeps what ``backward`` needs, uses batch statistics in BN and drops units
        in DROPOUT. The input is validated: wrong shape -> ShapeError, NaN/Inf -> InputError.
        A :attr:`fully_convolutional` network also takes other image sizes where they fit.
        """
        self._require_weights()
        out = self._check_forward_input(x)
        folded = None
        with _threads.single_blas():      # one BLAS thread switch per pass (ops/_threads.py)
            for i, fwd_inplace, _, relu, pool in self._plan:
                if i == folded:               # a BN already folded into the layer before it
                    self.layers[i]._cache = None
                    continue
                if not train and i in self._folds:
                    folded = self._folds[i]
                    out = self.layers[i]._forward_folded(out, *self.layers[folded].affine())
                elif pool is not None:        # CONV, POOL (and RELU) on Winograd's tiles
                    out = self.layers[i]._forward_pool(out, self.layers[pool], train,
                                                       relu=relu is not None)
                    if relu is not None:
                        self.layers[relu]._cache = out
                elif relu is not None:        # POOL and the RELU after it in one pass
                    out = self.layers[i]._forward(out, train, relu=True)
                    self.layers[relu]._cache = out       # the RELU's cache: its output
                elif fwd_inplace:
                    out = self.layers[i]._forward(out, train, inplace=True)
                else:
                    out = self.layers[i]._forward(out, train)
        self._batch_shape = out.shape if train else None
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Backpropagate ``dout`` (gradient of the loss w.r.t. the scores); fills every layer's
        ``grads`` and returns the gradient w.r.t. the input.

        ``need_dx=False`` (what training uses) skips the input gradient of the first layer, as
        PyTorch does for an input that does not require grad, and returns None.
        """
        if self._batch_shape is None:
            raise ConfigError("call forward(x, train=True) before backward: backward needs what "
                              "the training forward pass kept")
        dout = np.asarray(dout)
        if dout.shape != self._batch_shape:
            raise ShapeError(f"backward: dout has shape {dout.shape}, but the last forward "
                             f"returned {self._batch_shape}")
        self._batch_shape = None  # the caches are consumed
        dout = dout.astype(self.dtype, copy=False)
        plan = self._plan
        with _threads.single_blas():
            for i, _, bwd_inplace, relu, pool in reversed(plan[1:]):
                if pool is not None:
                    relu_out = None if relu is None else self.layers[relu]._cache
                    dout = self.layers[i]._backward_pool(dout, self.layers[pool], relu_out)
                    if relu is not None:
                        self.layers[relu]._cache = None
                elif relu is not None:
                    dout = self.layers[i]._backward(dout, relu_out=self.layers[relu]._cache)
                    self.layers[relu]._cache = None
                elif bwd_inplace:
                    dout = self.layers[i]._backward(dout, inplace=True)
                else:
                    dout = self.layers[i]._backward(dout)
            i, _, _, relu, pool = plan[0]
            first = self.layers[i]
            if pool is not None:              # a network that starts with CONV -> POOL
                relu_out = None if relu is None else self.layers[relu]._cache
                dx = first._backward_pool(dout, self.layers[pool], relu_out, need_dx)
                if relu is not None:
                    self.layers[relu]._cache = None
                return dx
            if relu is not None:              # a network that starts with POOL -> RELU
                dx = first._backward(dout, relu_out=self.layers[relu]._cache)
                self.layers[relu]._cache = None
                return dx if need_dx else None
            if not need_dx:
                first.backward_params(dout)
                return None
            return first._backward(dout)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Scores in evaluation mode, computed in chunks of ``batch_size``."""
        self._require_weights()
        x = np.asarray(x)
        outs = [self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, *self.output_shape), self.dtype)

    # --------------------------------------------------------------------------- parameters
    def parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(qualified_name, param, grad)`` triples, e.g. ``("conv1.W", W, dW)``."""
        for layer in self.layers:
            for key, p in layer.params.items():
                yield f"{layer.name}.{key}", p, layer.grads[key]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as ``{"conv1.W": array, "bn1.running_mean": array}``."""
        state = {}
        for layer in self.layers:
            for key, v in {**layer.params, **layer.buffers}.items():
                state[f"{layer.name}.{key}"] = v
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into this network (in place); checks names and shapes first."""
        self._require_weights()
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ShapeError(
                f"weights do not match the network: missing {', '.join(missing) or 'nothing'}; "
                f"unexpected {', '.join(extra) or 'nothing'}"
            )
        for key, target in own.items():
            src = np.asarray(state[key])
            if src.shape != target.shape:
                raise ShapeError(f"{key}: expected shape {target.shape}, received {src.shape}")
        for key, target in own.items():
            target[...] = state[key]

    # ---------------------------------------------------------------------------- summaries
    def layer_info(self) -> list[dict[str, Any]]:
        """Per-layer shapes and counts from the arithmetic module (no arrays needed)."""
        rows = []
        for layer, shape in zip(self.layers, self.shapes, strict=True):
            rows.append({
                "name": layer.name, "spec": layer.to_spec(),
                "input_shape": layer.input_shape, "output_shape": shape,
                "params": layer.count_params(),
                "elements": arith.num_elements(shape),
            })
        return rows

    def to_fully_convolutional(self) -> Sequential:
        """The same network with every FC turned into a CONV (see :mod:`convnet.fcn`)."""
        from convnet.fcn.convert import to_fully_convolutional

        return to_fully_convolutional(self)
