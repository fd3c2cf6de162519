"""Optimisers: SGD (momentum, Nesterov), Adam and AdamW, with PyTorch's exact update rules.

An optimiser updates the parameters of anything with a ``parameters()`` method that yields
``(qualified_name, param, grad)`` triples (``("conv1.W", W, dW)``), as
:class:`convnet.net.sequential.Sequential` does. Parameters are updated IN PLACE
(``param -= ...``), never rebound, so the layers keep owning their arrays.

Per-parameter state (velocity, moments) is keyed by the qualified name, allocated lazily on the
first step in the parameter's dtype, and saved by :meth:`Optimizer.state_dict` as a flat
``{"conv1.W.velocity": array, "step": 0-d array}`` dict that fits in an ``npz`` written with
``allow_pickle=False``. :meth:`Optimizer.load_state_dict` restores it exactly, so training that
resumes from a checkpoint continues bit for bit as if it had never stopped.

The hot path runs every batch, so every update is written with in-place NumPy operations into
the state arrays or into two scratch buffers shared by all parameters (sized to the largest
one): no temporary array is allocated per parameter per step.

A schedule sets :attr:`Optimizer.lr` before each step::

    opt = SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = CosineLR(0.1, total_steps)
    for step in range(total_steps):
        ...forward, backward...
        opt.lr = sched(step)
        opt.step(net)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Protocol

import numpy as np

from convnet import backend
from convnet.errors import CheckpointError, ConfigError
from convnet.optim.schedules import _finite

__all__ = ["SGD", "Adam", "AdamW", "HasParameters", "Optimizer", "make_optimizer"]


class HasParameters(Protocol):
    """Anything whose ``parameters()`` yields ``(qualified_name, param, grad)`` triples."""

    def parameters(self) -> Iterable[tuple[str, np.ndarray, np.ndarray | None]]: ...


# ----------------------------------------------------------------------------------------------
# hyperparameter checks: each names the optimiser, the received value and what is allowed


def _check_lr(owner: str, lr: Any, *, allow_zero: bool = False) -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: lr must be a number, received lr={lr!r}") from None
    ok = math.isfinite(value) and (value >= 0.0 if allow_zero else value > 0.0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(
            f"{owner}: lr must be finite and {bound}, received lr={lr!r}; "
            "typical values are 0.01-0.1 for SGD and 1e-4-3e-3 for Adam/AdamW"
        )
    return value


def _check_weight_decay(owner: str, weight_decay: Any) -> float:
    value = _finite(owner, "weight_decay", weight_decay)
    if value < 0.0:
        raise ConfigError(
            f"{owner}: weight_decay must be >= 0, received weight_decay={weight_decay!r} "
            "(0 disables it; 5e-4 is a common SGD value, 0.01 the AdamW default)"
        )
    return value


def _check_betas(owner: str, betas: Any) -> tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ConfigError(
            f"{owner}: betas must be a pair (beta1, beta2), received betas={betas!r}"
        ) from None
    out = []
    for i, b in enumerate((b1, b2)):
        v = _finite(owner, f"betas[{i}]", b)
        if not 0.0 <= v < 1.0:
            raise ConfigError(
                f"{owner}: betas[{i}] must satisfy 0 <= beta < 1, received betas={betas!r} "
                "(beta = 1 would never forget the first gradient; the default is (0.9, 0.999))"
            )
        out.append(v)
    return out[0], out[1]


def _check_eps(owner: str, eps: Any) -> float:
    value = _finite(owner, "eps", eps)
    if value <= 0.0:
        raise ConfigError(
            f"{owner}: eps must be > 0, received eps={eps!r} "
            "(it keeps the update finite where the second moment is 0; the default is 1e-8)"
        )
    return value


# ----------------------------------------------------------------------------------------------


class Optimizer:
    """Base class: the loop over parameters, the lr attribute, scratch buffers, state I/O.

    Subclasses set :attr:`kind` and :attr:`slots` (the names of the per-parameter state arrays)
    and implement :meth:`_update`.

    Attributes:
        lr: the learning rate used by the next :meth:`step`; a schedule may set it before each
            step (it must be finite and >= 0; a schedule may legitimately reach 0).
        step_count: how many times :meth:`step` has run (saved as ``"step"``).
        state: ``{qualified_name: {slot: array}}``, allocated lazily on the first step.
    """

    kind: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr: float) -> None:
        self._lr = _check_lr(type(self).__name__, lr)
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}
        # (slot, dtype) -> flat buffer grown to the largest parameter seen; views of it serve as
        # temporaries so the hot path allocates nothing after the first step.
        self._scratch_buffers: dict[tuple[int, np.dtype], np.ndarray] = {}
        # Set by load_state_dict: the next step checks that the loaded state fits the network.
        self._verify_loaded = False

    # -- learning rate ---------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_lr(type(self).__name__, value, allow_zero=True)

    # -- the step --------------------------------------------------------------------------------

    def step(self, net: HasParameters) -> None:
        """Update every parameter of ``net`` in place from its gradient.

        Triples whose gradient is ``None`` are skipped (like PyTorch skips ``grad is None``).

        Raises:
            ConfigError: a gradient whose shape differs from its parameter's.
            CheckpointError: the state loaded by :meth:`load_state_dict` does not fit ``net``
                (checked on the first step after loading).
        """
        triples = list(self._iter_params(net))
        if self._verify_loaded:
            self._verify_state(triples)
            self._verify_loaded = False
        for name, param, grad in triples:
            self._update(name, param, grad)
        self.step_count += 1

    def _iter_params(self, net: HasParameters) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        owner = type(self).__name__
        for name, param, grad in net.parameters():
            if grad is None:
                continue
            if grad.shape != param.shape:
                raise ConfigError(
                    f"{owner}: gradient of {name} has shape {grad.shape} but the parameter has "
                    f"shape {param.shape}; the layer's backward must fill a gradient of the "
                    "parameter's shape"
                )
            yield name, param, grad

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    def _scratch(self, slot: int, like: np.ndarray) -> np.ndarray:
        """A temporary array shaped and typed like ``like``: a view of a reused buffer."""
        key = (slot, like.dtype)
        buf = self._scratch_buffers.get(key)
        if buf is None or buf.size < like.size:
            buf = np.empty(like.size, dtype=like.dtype)
            self._scratch_buffers[key] = buf
        return buf[: like.size].reshape(like.shape)

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimiser's state as a flat dict of arrays (copies).

        Keys: ``"optimizer"`` (0-d str array: ``"sgd"``, ``"adam"``, ``"adamw"``), ``"step"``
        (0-d int64, :attr:`step_count`), and ``"<qualified_name>.<slot>"`` for each parameter's
        state, e.g. ``"conv1.W.velocity"``, ``"fc1.b.exp_avg_sq"``, ``"fc1.b.step"``.
        Hyperparameters are not included: they come from the run's configuration.
        Every value is a plain numeric or str array, so ``np.savez(..., allow_pickle=False)``
        and ``np.load(..., allow_pickle=False)`` round-trip it.
        """
        out: dict[str, np.ndarray] = {
            "optimizer": np.array(self.kind),
            "step": np.array(self.step_count, dtype=np.int64),
        }
        for name, slots in self.state.items():
            for slot, arr in slots.items():
                out[f"{name}.{slot}"] = arr.copy()
        return out

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore the state saved by :meth:`state_dict`, exactly (arrays are copied).

        Whether the loaded state fits the network (same parameter names and shapes) is checked
        on the next :meth:`step`, because the optimiser does not hold the network.

        Raises:
            CheckpointError: the dict was saved by another optimiser kind, lacks ``"step"``, or
                holds keys or per-parameter slots this optimiser does not know.
        """
        owner = type(self).__name__
        saved_kind = str(np.asarray(d.get("optimizer", self.kind)))
        if saved_kind != self.kind:
            raise CheckpointError(
                f"{owner}: the optimiser state was saved by {saved_kind!r}, not {self.kind!r}; "
                f"resume with the same optimiser (--optimizer {saved_kind}) or start afresh"
            )
        if "step" not in d:
            raise CheckpointError(f"{owner}: optimiser state has no 'step' entry")
        step = np.asarray(d["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise CheckpointError(
                f"{owner}: optimiser 'step' must be a non-negative 0-d integer array, "
                f"received shape {step.shape} dtype {step.dtype}"
            )
        state: dict[str, dict[str, np.ndarray]] = {}
        for key, value in d.items():
            if key in ("optimizer", "step"):
                continue
            name, _, slot = key.rpartition(".")
            if not name or slot not in self.slots:
                known = ", ".join(f"'<param>.{s}'" for s in self.slots) or "none"
                raise CheckpointError(
                    f"{owner}: unexpected optimiser state entry {key!r}; "
                    f"this optimiser keeps per-parameter slots: {known}"
                )
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise CheckpointError(
                    f"{owner}: optimiser state entry {key!r} has dtype {arr.dtype}, not numeric"
                )
            state.setdefault(name, {})[slot] = arr.copy()
        for name, slots in state.items():
            missing = [s for s in self.slots if s not in slots]
            if missing:
                raise CheckpointError(
                    f"{owner}: optimiser state for {name} lacks "
                    + ", ".join(f"'{name}.{s}'" for s in missing)
                )
        self.state = state
        self.step_count = int(step)
        self._verify_loaded = True

    def _verify_state(self, triples: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        owner = type(self).__name__
        names = {name for name, _, _ in triples}
        unexpected = sorted(set(self.state) - names)
        if unexpected:
            raise CheckpointError(
                f"{owner}: the loaded optimiser state has parameters the network lacks: "
                f"{', '.join(unexpected)}; was it saved for another architecture?"
            )
        # A network parameter without state after a resume would silently restart its momentum:
        # only allowed when nothing was ever stepped (a fresh state dict) or the optimiser keeps
        # no per-parameter state (plain SGD).
        if self.slots and self.step_count > 0:
            missing = sorted(names - set(self.state))
            if missing:
                raise CheckpointError(
                    f"{owner}: the loaded optimiser state has no entry for {', '.join(missing)}; "
                    "was it saved for another architecture?"
                )
        for name, param, _ in triples:
            for slot, arr in self.state.get(name, {}).items():
                if slot == "step":
                    continue
                if arr.shape != param.shape:
                    raise CheckpointError(
                        f"{owner}: optimiser state {name}.{slot} has shape {arr.shape} but the "
                        f"parameter {name} has shape {param.shape}; was it saved for another "
                        "architecture?"
                    )
                if arr.dtype != param.dtype:
                    # Same values in the parameter's dtype, so the in-place updates keep it.
                    self.state[name][slot] = arr.astype(param.dtype)

    # -- repr ------------------------------------------------------------------------------------

    def _hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def __repr__(self) -> str:
        """The class and its settings: the learning rate always (every run's first question,
        and a schedule changes it: this is the current one), the others where they differ
        from their defaults, as PyTorch's ``extra_repr`` does.

        >>> Adam(), SGD(lr=0.1, momentum=0.9)
        (Adam(lr=0.001), SGD(lr=0.1, momentum=0.9))
        """
        defaults = {
            k: p.default
            for k, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        shown = []
        for k, v in self._hyperparameters().items():
            d = defaults.get(k, inspect.Parameter.empty)
            if k == "lr":
                shown.append(f"lr={v!r}")
            elif k == "betas":
                if tuple(v) != tuple(d):
                    shown.append(f"betas=({v[0]!r}, {v[1]!r})")
            elif v != d:
                shown.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    PyTorch's ``torch.optim.SGD`` rule (dampening 0), per parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p                 # L2 added to the gradient
        v = g                   on the first step (momentum > 0)
        v = momentum * v + g    afterwards
        g = g + momentum * v    if nesterov else   g = v
        p -= lr * g

    Args:
        lr: learning rate, finite and > 0 (default 0.01).
        momentum: 0 <= momentum < 1 (default 0: plain SGD, no state).
        nesterov: Nesterov momentum; requires momentum > 0.
        weight_decay: L2 coefficient >= 0 (default 0).

    State: ``"<name>.velocity"`` per parameter (only when momentum > 0), in the parameter's dtype.

    Raises:
        ConfigError: a hyperparameter outside the ranges above.
    """

    kind = "sgd"

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        momentum = _finite("SGD", "momentum", momentum)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(
                f"SGD: momentum must satisfy 0 <= momentum < 1, received momentum={momentum!r} "
                "(0 disables it; 0.9 is the usual value)"
            )
        if nesterov and momentum == 0.0:
            raise ConfigError(
                "SGD: nesterov=True requires momentum > 0, received momentum=0.0; "
                "set momentum (e.g. 0.9) or drop nesterov"
            )
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_weight_decay("SGD", weight_decay)

    @property
    def slots(self) -> tuple[str, ...]:  # type: ignore[override]
        """``("velocity",)`` with momentum; plain SGD keeps no per-parameter state."""
        return ("velocity",) if self.momentum > 0.0 else ()

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        lr, mu, wd = self._lr, self.momentum, self.weight_decay
        if self._compiled_update(name, param, grad):
            return
        # The layer owns its gradient (someone may read it after the step), so the decayed
        # gradient goes to a scratch buffer instead of modifying dW in place.
        if wd != 0.0:
            g = self._scratch(0, param)
            np.multiply(param, wd, out=g)
            g += grad
        else:
            g = grad
        tmp = self._scratch(1, param)
        if mu != 0.0:
            slots = self.state.get(name)
            if slots is None:
                # PyTorch starts the buffer at the first gradient, not at momentum * 0 + g.
                v = g.copy()
                self.state[name] = {"velocity": v}
            else:
                v = slots["velocity"]
                v *= mu
                v += g
            if self.nesterov:
                np.multiply(v, mu, out=tmp)
                tmp += g
                tmp *= lr
            else:
                np.multiply(v, lr, out=tmp)
        else:
            np.multiply(g, lr, out=tmp)
        param -= tmp

    def _compiled_update(self, name: str, param: np.ndarray, grad: np.ndarray) -> bool:
        """The same update as the NumPy passes of :meth:`_update`, bitwise, in one compiled
        pass (:func:`convnet.backend.sgd_step`) where the backend has compiled kernels and the
        arrays are contiguous float32/float64 of one dtype. Returns whether it ran."""
        if (not backend.has_jit() or param.dtype not in (np.float32, np.float64)
                or grad.dtype != param.dtype or not param.flags.c_contiguous
                or not param.flags.writeable):
            return False
        slots = self.state.get(name) if self.momentum != 0.0 else None
        first = self.momentum != 0.0 and slots is None
        if first:
            v = np.empty_like(param)
            self.state[name] = {"velocity": v}
        else:
            v = param if slots is None else slots["velocity"]   # unused without momentum
            if not v.flags.c_contiguous or v.dtype != param.dtype:
                return False
        t = param.dtype.type
        backend.sgd_step(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1), v.reshape(-1),
                         t(self._lr), t(self.momentum), t(self.weight_decay), self.nesterov,
                         first)
        return True


class Adam(Optimizer):
    """Adam with L2 weight decay coupled to the gradient, as ``torch.optim.Adam``.

    Per parameter ``p`` with gradient ``g`` at step ``t`` (1-based, per parameter)::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Args:
        lr: learning rate, finite and > 0 (default 1e-3).
        betas: ``(beta1, beta2)``, each in [0, 1) (default (0.9, 0.999)).
        eps: > 0, added to the denominator (default 1e-8).
        weight_decay: L2 coefficient >= 0 added to the gradient (default 0).

    State per parameter: ``"<name>.exp_avg"``, ``"<name>.exp_avg_sq"`` (parameter's dtype) and
    ``"<name>.step"`` (0-d int64).

    Raises:
        ConfigError: a hyperparameter outside the ranges above.
    """

    kind = "adam"
    slots = ("exp_avg", "exp_avg_sq", "step")
    _decoupled: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        owner = type(self).__name__
        super().__init__(lr)
        self.betas = _check_betas(owner, betas)
        self.eps = _check_eps(owner, eps)
        self.weight_decay = _check_weight_decay(owner, weight_decay)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        lr, wd = self._lr, self.weight_decay
        beta1, beta2 = self.betas
        slots = self.state.get(name)
        if slots is None:
            slots = {
                "exp_avg": np.zeros_like(param),
                "exp_avg_sq": np.zeros_like(param),
                "step": np.zeros((), dtype=np.int64),
            }
            self.state[name] = slots
        m, v, t_arr = slots["exp_avg"], slots["exp_avg_sq"], slots["step"]
        t_arr += 1
        t = int(t_arr)

        if wd != 0.0:
            if self._decoupled:
                param *= 1.0 - lr * wd
                g = grad
            else:
                g = self._scratch(0, param)
                np.multiply(param, wd, out=g)
                g += grad
        else:
            g = grad

        tmp = self._scratch(1, param)
        # m = lerp(m, g, 1 - beta1) = m + (1 - beta1) * (g - m), the form torch uses
        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - beta1
        m += tmp
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp

        step_size = lr / (1.0 - beta1**t)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)
        np.sqrt(v, out=tmp)
        tmp /= bias_correction2_sqrt
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        param -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Same as :class:`Adam` except the decay shrinks the parameter directly before the Adam step
    instead of entering the gradient (and so the moments)::

        p *= 1 - lr * weight_decay
        ...Adam step with the raw gradient...

    Args:
        lr: learning rate, finite and > 0 (default 1e-3).
        betas: ``(beta1, beta2)``, each in [0, 1) (default (0.9, 0.999)).
        eps: > 0 (default 1e-8).
        weight_decay: decoupled decay >= 0 (default 0.01).

    Raises:
        ConfigError: a hyperparameter outside the ranges above.
    """

    kind = "adamw"
    _decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


_OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """Build an optimiser by name (case-insensitive): ``"sgd"``, ``"adam"``, ``"adamw"``.

    Keyword arguments are the optimiser's hyperparameters; ``None`` values are dropped so a
    command line can pass options that were not given and get the optimiser's defaults.

    >>> make_optimizer("sgd", lr=0.1, momentum=0.9)
    SGD(lr=0.1, momentum=0.9)

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), a hyperparameter the
            optimiser does not take, or a value out of range.
    """
    key = str(name).strip().lower()
    cls = _OPTIMIZERS.get(key)
    if cls is None:
        raise ConfigError(
            f"unknown optimizer {name!r}; valid names: {', '.join(sorted(_OPTIMIZERS))}"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"optimizer {key!r} does not take {', '.join(unknown)}; "
            f"its hyperparameters are: {', '.join(accepted)}"
        )
    return cls(**kwargs)
