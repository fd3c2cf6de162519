"""DROPOUT and BN (batch normalisation): layers that behave differently in training."""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet import arith
from convnet.errors import ConfigError, ShapeError
from convnet.keyed_random import STREAM_DROPOUT, SampleKeys
from convnet.layers.base import Layer, PlanTraits, Shape
from convnet.ops import norm as F_norm

if TYPE_CHECKING:
    from convnet.arith import LayerRow
    from convnet.distributed import Comm


class Dropout(Layer):
    """DROPOUT: in training, zero each activation with probability ``p`` and scale the survivors
    by ``1/(1 - p)`` ("inverted" dropout), so evaluation is the identity and needs no rescaling.

    ``p`` is the probability to *drop* (as in PyTorch; jax's stax uses a keep rate: a trap).

    Each unit's mask is a function of a key, not the next draw of a sequential generator
    (:mod:`convnet.keyed_random`): ``(run key, epoch, the sample's GLOBAL index, this layer's
    name, the unit's index in the sample)``. The trainer hands the batch's keys to
    :meth:`use_keys` before each training forward pass, so an image gets the same mask whether
    one process trains on the whole batch or several on parts of it. Without keys (a training
    forward called directly) the key is drawn from the network's generator, one 64-bit draw
    per pass, and the samples are numbered ``0..N-1``.
    """

    kind = "DROPOUT"
    positional = ("p",)
    purpose = "p is the probability to drop"
    example = "DROPOUT(p=0.5)"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) \
                or not 0 <= p < 1:
            raise ConfigError(
                f"DROPOUT: received p={p!r}; p is the probability to drop a unit and must satisfy "
                "0 <= p < 1 (p=1 would drop everything)"
            )
        self.p = float(p)
        self.rng: np.random.Generator | None = None
        self._keys: SampleKeys | None = None

    def _hyper_text(self) -> str:
        return f" p={self.p:g}"

    def hyper(self) -> dict[str, Any]:
        return {"p": self.p}

    def derivation(self, row: LayerRow) -> list[str]:
        size = f"{arith.num_elements(self.input_shape):,}"
        return [f"During training each of the {size} values is zeroed with probability "
                f"p = {self.p:g} and the rest scaled by 1/(1 - p); at test time it does nothing. "
                "Shape unchanged, no parameters."]

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None,
              dtype: Any = np.float32, init: str | None = None) -> Shape:
        # share the network's generator: one RNG state to save makes resuming exact
        self.rng = rng if rng is not None else np.random.default_rng()
        return super().build(input_shape, rng, dtype, init)

    def use_keys(self, keys: SampleKeys | None) -> None:
        """The keys of the next training forward pass's samples (used once, then forgotten)."""
        self._keys = keys

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        keys, self._keys = self._keys, None
        if not train or self.p == 0.0:
            self._cache = None
            return x
        if keys is None:
            if self.rng is None:
                self.rng = np.random.default_rng()
            keys = SampleKeys.from_generator(self.rng, x.shape[0])
        elif len(keys) != x.shape[0]:
            raise ConfigError(f"{self.describe()}: keys for {len(keys)} samples were given for "
                              f"a batch of {x.shape[0]}; give one key per image of the batch")
        # the layer's stream: its name (dropout1, dropout2, ...), stable across runs of a spec
        stream = (STREAM_DROPOUT, zlib.crc32(self.name.encode()))
        keep = keys.keep_mask(stream, x.shape[1:], self.p)
        scale = x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = keep
        return x * keep * scale

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        keep = self._cache
        self._cache = None
        if keep is None:
            return dout
        return dout * keep * dout.dtype.type(1.0 / (1.0 - self.p))

    def _spec_args(self) -> list[str]:
        return [f"p={self.p!r}"]


class BatchNorm(Layer):
    """BN: normalise each depth slice (volumes) or feature (vectors) over the batch, then scale by
    ``gamma`` and shift by ``beta``. Training uses the batch statistics and updates running
    estimates, ``running = (1 - momentum) * running + momentum * batch``; evaluation uses the
    running estimates.

    Shape: any ``(N, ..., D)`` -> same. Parameters ``gamma``, ``beta``: ``(D,)``; buffers
    ``running_mean``, ``running_var``: ``(D,)``.

    Synchronised in data-parallel training: while :attr:`comm` is a communicator of more than
    one process (the trainer sets it for the run), training uses the statistics of the GLOBAL
    batch, every process's images together: one reduction of per-channel sums in the forward
    pass and one in the backward pass (:mod:`convnet.ops.norm`), so a network with BN trains
    the same on one process or many.
    """

    kind = "BN"
    aliases = ("BATCHNORM",)
    foreign_names = ("BATCHNORM2D", "BATCHNORMALIZATION")
    example = "BN"
    # in evaluation the affine map x * scale + shift, folded into the CONV/DECONV before it
    plan_traits = PlanTraits(folds_into=True)

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        for name, v, lo, hi in (("momentum", momentum, 0.0, 1.0), ("eps", eps, 0.0, math.inf)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or not lo < v <= hi:
                raise ConfigError(f"BN: received {name}={v!r}; expected {lo} < {name} <= {hi}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        #: a :class:`convnet.distributed.Comm`: batch statistics over all its processes
        self.comm: Comm | None = None

    def count_params(self, input_shape: Shape | None = None) -> int:
        shape = input_shape or self.input_shape
        return 2 * shape[-1]

    def hyper(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def derivation(self, row: LayerRow) -> list[str]:
        ins = self.input_shape
        D = ins[-1]
        over = "the batch and every position" if len(ins) == 3 else "the batch"
        return [f"Batch normalisation: each of the {D} depth slices is normalised over {over}, "
                f"then scaled by gamma and shifted by beta: 2*{D} = {row.params} parameters "
                "(running mean and variance are kept too, but not trained). Shape unchanged."]

    def _init_params(self, rng: np.random.Generator, init: str) -> None:
        D = self.input_shape[-1]
        self.params["gamma"] = np.ones(D, dtype=self.dtype)
        self.params["beta"] = np.zeros(D, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(D, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(D, dtype=self.dtype)

    def _reduce(self) -> Any:
        comm = self.comm
        return comm.allreduce if comm is not None and comm.size > 1 else None

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        reduce = self._reduce() if train else None
        # synchronised, the count that matters is the global batch's, which only the reduction
        # knows: a process may hold one image, or none (forward_without_samples)
        if train and reduce is None and x.size // x.shape[-1] < 2:
            raise ShapeError(
                f"{self.describe()}: training needs more than one value per channel to compute "
                f"batch statistics, received input of shape {x.shape} (use a batch of 2 or more)"
            )
        out, self._cache = F_norm.batchnorm_forward(
            x, self.params["gamma"], self.params["beta"], self.buffers["running_mean"],
            self.buffers["running_var"], self.momentum, self.eps, train, reduce=reduce,
        )
        return out

    def forward_without_samples(self) -> None:
        """Join the forward reduction of a synchronised training step with no images here (a
        process whose share of a short last batch is empty): its count and sums are zero, and
        the running statistics are updated like every other process's. Every process must make
        the same collective calls in the same order, or they would wait for each other forever.
        """
        self._forward(np.empty((0, *self.input_shape), self.dtype), train=True)

    def backward_without_samples(self) -> None:
        """The backward counterpart of :meth:`forward_without_samples` (zero gradients)."""
        self._backward(np.empty((0, *self.input_shape), self.dtype))

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """This layer in evaluation as ``x * scale + shift`` per channel: ``(scale, shift)``."""
        return F_norm.batchnorm_affine(self.params["gamma"], self.params["beta"],
                                       self.buffers["running_mean"], self.buffers["running_var"],
                                       self.eps, self.dtype)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = F_norm.batchnorm_backward(dout, self._cache)
        self._cache = None
        self.grads["gamma"] = dgamma
        self.grads["beta"] = dbeta
        return dx

    def _spec_args(self) -> list[str]:
        args = []
        if self.momentum != 0.1:
            args.append(f"momentum={self.momentum!r}")
        if self.eps != 1e-5:
            args.append(f"eps={self.eps!r}")
        return args
