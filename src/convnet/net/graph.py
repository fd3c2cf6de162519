"""Graph: a network of layers with named inputs (a DAG whose forks meet again), whose every
shape is known before any weight exists. :class:`~convnet.net.sequential.Sequential` is its
simple case, a chain.

A graph is given as *items* (layers and RES/CAT blocks, :mod:`convnet.net.blocks`), which is what
the architecture language builds, or as *nodes* with named inputs, which is what a program or an
importer writes::

    net = cn.Graph({"conv": (cn.Conv(16, F=3, P=1), "input"),
                    "bn": (cn.BatchNorm(), "conv"),
                    "add": (cn.Add(), ["bn", "input"]),
                    "relu": (cn.ReLU(), "add")}, input_shape=(8, 8, 16))

Either way the layers are placed in one canonical order (a block's branches in turn, then its
merge) and named by kind and position (``conv1, bn1, add1, relu1``), so that ``net.spec``
rebuilds the same network with the same parameter names. Running it is the execution plan's job
(:mod:`convnet.net.plan`): forward in topological order, each value released after its last
reader; backward in reverse, a gradient that reaches a node by two paths summed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from convnet import arith, backend
from convnet.arith import fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.layers.base import Layer, Shape, check_array
from convnet.net import blocks as B
from convnet.net.plan import make_plan, run_backward, run_forward

#: largest side or feature count of an input or of any layer's output: the one limit, used by
#: every entry point (:data:`convnet.net.blocks.MAX_DIM`)
MAX_DIM = B.MAX_DIM
#: parameters a network will allocate (4 GB in float32); ``weights=False`` counts any number
MAX_PARAMS = 1_000_000_000


def check_input_shape(input_shape: Any) -> Shape:
    """``(H, W, D)`` or ``(n,)`` as whole numbers from 1 to :data:`MAX_DIM`, or ShapeError."""
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


class Namer:
    """Names layers by kind and position as a network places them: ``conv1, relu1, conv2``; a
    kind that ends in a digit gets an underscore (``relu6_1``, not ``relu61``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, layer: Layer) -> None:
        key = layer.kind.lower()
        self.counts[key] = self.counts.get(key, 0) + 1
        sep = "_" if key[-1].isdigit() else ""
        layer.name = f"{key}{sep}{self.counts[key]}"


def choose_init(layers: Sequence[Layer], i: int,
                consumers: Sequence[Sequence[int]] | None = None) -> str:
    """He for weights whose output goes through a ReLU-family activation, Glorot otherwise.

    Looks along the layers that read this one (the next in a chain) past layers that do not
    change the nonlinearity (BN, DROPOUT, POOL, FLATTEN, merges) to the first activation; a
    layer with weights in between (or the end of the net) means Glorot.
    """
    seen = set()
    j = i
    while True:
        nxt = (consumers[j] if consumers is not None else [j + 1] if j + 1 < len(layers) else [])
        if not nxt or nxt[0] in seen:
            return "glorot"
        j = nxt[0]
        seen.add(j)
        layer = layers[j]
        if layer.activation is not None:
            return "he" if layer.activation == "relu" else "glorot"
        if layer.weighted:
            return "glorot"


def _nodes_to_items(nodes: Any) -> list[B.Item]:
    """Items from nodes with named inputs: ``{name: (layer, inputs)}`` or a list of
    ``(name, layer, inputs)``; an input is a node name or ``"input"``."""
    if isinstance(nodes, Mapping):
        entries = [(k, *v) if isinstance(v, tuple | list) else (k, v, None)
                   for k, v in nodes.items()]
    else:
        entries = list(nodes)
    names: list[str] = []
    layers: list[Layer] = []
    raw_inputs: list[Any] = []
    for e in entries:
        if not isinstance(e, tuple | list) or len(e) != 3:
            raise ConfigError(f"a node is (name, layer, inputs), received {e!r}")
        name, layer, ins = e
        if not isinstance(name, str) or not name or name == "input":
            raise ConfigError(f"node name {name!r} must be a non-empty string other than 'input'")
        if name in names:
            raise ConfigError(f"node name {name!r} is used twice")
        if not isinstance(layer, Layer):
            raise ConfigError(f"node {name!r}: {layer!r} is not a convnet layer")
        names.append(name)
        layers.append(layer)
        raw_inputs.append(ins)
    index = {n: i for i, n in enumerate(names)}
    inputs_of: list[tuple[int, ...]] = []
    for i, ins in enumerate(raw_inputs):
        if ins is None:
            ins = "input" if i == 0 else names[i - 1]
        seq = [ins] if isinstance(ins, str) else list(ins)
        srcs = []
        for s in seq:
            if s == "input":
                srcs.append(-1)
            elif s in index:
                srcs.append(index[s])
            else:
                raise ConfigError(f"node {names[i]!r} reads {s!r}, which is not a node (nodes: "
                                  f"{', '.join(names)}; the network's input is 'input')")
        inputs_of.append(tuple(srcs))
    if not layers:
        raise ShapeError("a network needs at least one layer after INPUT")
    # a node listed after one that reads it: sort topologically, keeping the given order
    order, placed = [], set()
    pending = list(range(len(layers)))
    while pending:
        ready = [i for i in pending if all(k < 0 or k in placed for k in inputs_of[i])]
        if not ready:
            raise ConfigError("the nodes' inputs form a cycle: "
                              + ", ".join(names[i] for i in pending))
        i = ready[0]
        order.append(i)
        placed.add(i)
        pending.remove(i)
    pos = {old: new for new, old in enumerate(order)}
    layers = [layers[i] for i in order]
    inputs_of = [tuple(pos[k] if k >= 0 else -1 for k in inputs_of[i]) for i in order]
    return B.decompose(layers, inputs_of, [names[i] for i in order])


def _check_unowned(items: Sequence[Any], where: str = "") -> None:
    """Every item is a layer or block, and no layer belongs to a network already (building it
    again would rename it and change that network's weights)."""
    for i, it in enumerate(items, 1):
        at = f"{where}item {i}"
        if isinstance(it, B.Block):
            for b, branch in enumerate(it.branches, 1):
                _check_unowned(branch, f"{at}, branch {b}: ")
            continue
        if not isinstance(it, Layer):
            raise ConfigError(f"{at} is {it!r}, not a convnet layer or block")
        if it.network is not None:
            raise ConfigError(
                f"{at} ({it.kind}) already belongs to another network; building it again would "
                "change that network's weights. Make a new layer object")


class Graph:
    """A network of layers with named inputs: chains, residual blocks and branches that merge.

    Every shape is inferred at construction, before any weight exists, so a network that cannot
    work fails here with a :class:`~convnet.errors.ShapeError` naming the layer (and its branch).
    Layers are named by kind and position: ``conv1, relu1, add1, ...``.

    Args:
        items: the network, as a list of layers and blocks (:func:`~convnet.net.blocks.Res`,
            :func:`~convnet.net.blocks.Cat`), or as nodes with named inputs (a mapping
            ``{name: (layer, inputs)}`` or a list of ``(name, layer, inputs)``; ``inputs`` is a
            node name, ``"input"``, or a list of them for a merge).
        input_shape: ``(H, W, D)`` for images or ``(n,)`` for vectors.
        seed: makes the initial weights and dropout masks reproducible.
        dtype: ``np.float32`` (default) or ``np.float64`` (for gradient checks).
        weights: ``False`` infers shapes and counts without allocating any array (what
            ``summary`` uses, so ``summary resnet50`` is instant).

    >>> import convnet as cn
    >>> net = cn.Graph([cn.Conv(16, F=3, P=1), cn.Res([cn.Conv(16, F=3, P=1), cn.BatchNorm()]),
    ...                 cn.ReLU(), cn.GlobalAvgPool(), cn.FC(10)], input_shape=(8, 8, 3), seed=0)
    >>> net.spec
    'INPUT(8x8x3) -> CONV(16,F=3,P=1) -> RES[CONV(16,F=3,P=1) -> BN] -> RELU -> GAP -> FC(10)'
    >>> [ly.name for ly in net.layers]
    ['conv1', 'conv2', 'bn1', 'add1', 'relu1', 'gap1', 'fc1']
    """

    def __init__(
        self,
        items: Any,
        input_shape: Sequence[int],
        seed: int | None = None,
        dtype: Any = np.float32,
        weights: bool = True,
    ) -> None:
        self.input_shape: Shape = check_input_shape(input_shape)
        if isinstance(items, Mapping) or (
                isinstance(items, list | tuple) and items and isinstance(items[0], tuple | list)):
            items = _nodes_to_items(items)
        self._setup(list(items), seed, dtype, weights)

    def _setup(self, items: list[B.Item], seed: int | None, dtype: Any, weights: bool) -> None:
        if not items:
            raise ShapeError("a network needs at least one layer after INPUT")
        _check_unowned(items)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ConfigError(f"dtype must be float32 or float64, not {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, not {dtype}")
        self.seed = seed
        self.items = items
        self._batch_shape: tuple[int, ...] | None = None  # output shape of the last train forward
        # 1. shapes, without arrays: fails here, naming the layer, if the network cannot work
        namer = Namer()

        def name(layer: Layer) -> None:
            namer(layer)
            layer.dtype = self.dtype

        compiled = B.compile_items(items, self.input_shape, name)
        self.layers: list[Layer] = compiled.layers
        self.inputs_of: list[tuple[int, ...]] = compiled.inputs_of
        self.shapes: list[Shape] = compiled.shapes
        self._plan = make_plan(self.layers, self.inputs_of)
        self.has_weights = bool(weights)
        # 2. weights, from one generator, so a seed reproduces everything (dropout masks too)
        self.rng = np.random.default_rng(seed)
        if weights:
            total = sum(ly.count_params() for ly in self.layers)
            if total > MAX_PARAMS:
                raise ShapeError(
                    f"this network has {total:,} parameters "
                    f"({total * self.dtype.itemsize / 2**30:,.1f} GiB): too many to allocate (at "
                    f"most {MAX_PARAMS:,}); build with weights=False to see its shapes")
            consumers = self.consumers
            try:
                for i, layer in enumerate(self.layers):
                    srcs = self.inputs_of[i]
                    if layer.arity == 1:
                        shape = self.input_shape if srcs[0] < 0 else self.shapes[srcs[0]]
                        layer.build(shape, rng=self.rng, dtype=self.dtype,
                                    init=choose_init(self.layers, i, consumers))
            except MemoryError:
                raise ShapeError("not enough memory to allocate this network's weights; build "
                                 "with weights=False to see its shapes") from None
            for layer in self.layers:  # a network with weights owns its layers
                layer.network = self

    # --------------------------------------------------------------------------- properties
    @property
    def consumers(self) -> list[list[int]]:
        """For each layer, the indices of the layers that read its output."""
        out: list[list[int]] = [[] for _ in self.layers]
        for j, srcs in enumerate(self.inputs_of):
            for k in srcs:
                if k >= 0:
                    out[k].append(j)
        return out

    @property
    def is_chain(self) -> bool:
        """True when every layer reads the one before it (no branches)."""
        return all(srcs == (i - 1,) for i, srcs in enumerate(self.inputs_of))

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
        return f"INPUT({fmt_shape(self.input_shape)}) -> {B.to_spec(self.items)}"

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
        lines = [f"{type(self).__name__}(input_shape={self.input_shape}, "
                 f"params={self.num_params:,})"]
        names = ["input", *[ly.name for ly in self.layers]]
        for i, (layer, shape) in enumerate(zip(self.layers, self.shapes, strict=True)):
            src = "" if self.inputs_of[i] == (i - 1,) else \
                "  <- " + ", ".join(names[k + 1] for k in self.inputs_of[i])
            lines.append(f"  {layer.name:<10} {layer.to_spec():<28} -> {fmt_shape(shape)}{src}")
        return "\n".join(lines)

    # -------------------------------------------------------------------------- computation
    def _require_weights(self) -> None:
        if not self.has_weights:
            raise ConfigError("this network was built with weights=False (shapes only)")

    @property
    def fully_convolutional(self) -> bool:
        """True when no layer needs a fixed input size (no FC, no FLATTEN): such a network
        accepts larger images and returns a map (see :mod:`convnet.fcn`)."""
        return len(self.input_shape) == 3 and not any(ly.fixed_size for ly in self.layers)

    def shapes_for(self, input_shape: Sequence[int]) -> list[Shape]:
        """Every layer's output shape for another input size (pure arithmetic; ShapeError naming
        the layer where a stride does not fit that size). Layer names stay as built."""
        shape = check_input_shape(input_shape)
        shapes: list[Shape] = []
        for i, layer in enumerate(self.layers):
            ins = [shape if k < 0 else shapes[k] for k in self.inputs_of[i]]
            if layer.arity == 1:
                shapes.append(layer.infer_shape(ins[0]))
            else:
                shapes.append(layer.infer_merge(ins))  # type: ignore[attr-defined]
            B.check_size(layer, shapes[-1])
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
        x = self._check_forward_input(x)
        with backend.single_blas():      # one BLAS thread switch per pass (ops/_threads.py)
            out = run_forward(self._plan, x, train)
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
        with backend.single_blas():
            return run_backward(self._plan, dout, need_dx)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Scores in evaluation mode, computed in chunks of ``batch_size``."""
        self._require_weights()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
                or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1")
        x = np.asarray(x)
        outs = [self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, *self.output_shape), self.dtype)

    # Keras's names, as thin methods over the library's functions
    def fit(self, train_data: Any, val_data: Any = None, **kwargs: Any) -> Any:
        """Train this network: :func:`convnet.train.fit` (``net.fit(train, val, epochs=5)``)."""
        from convnet.train import fit

        return fit(self, train_data, val_data, **kwargs)

    def evaluate(self, data: Any, **kwargs: Any) -> Any:
        """Loss, accuracy and confusion matrix on ``data``: :func:`convnet.train.evaluate`."""
        from convnet.train import evaluate

        return evaluate(self, data, **kwargs)

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
        for row, layer in zip(arith.layer_rows(self), self.layers, strict=True):
            rows.append({
                "name": layer.name, "spec": layer.to_spec(),
                "input_shape": layer.input_shape, "output_shape": row.output_shape,
                "params": row.params, "elements": arith.num_elements(row.output_shape),
                "inputs": list(row.inputs),
            })
        return rows

    def to_fully_convolutional(self) -> Graph:
        """The same network with every FC turned into a CONV (see :mod:`convnet.fcn`)."""
        from convnet.fcn.convert import to_fully_convolutional

        return to_fully_convolutional(self)
