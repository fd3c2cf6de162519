"""Elementwise activation kernels: ``forward(x) -> (out, cache)``, ``backward(dout, cache) -> dx``.

Memory: every cache here is the forward OUTPUT (or, for a leaky ReLU with a negative slope, a
boolean mask). The output is the array handed to the next layer, so keeping a reference to it
costs no extra memory, where caching the input would keep a second full-size array alive.
The derivatives of ReLU, tanh and sigmoid can all be read from the output:
``relu' = out > 0``, ``tanh' = 1 - out**2``, ``sigmoid' = out (1 - out)``.
Callers must therefore not modify ``out`` in place before calling backward.

Shape:
    any shape; ``out`` and ``dx`` have the shape and dtype of ``x`` and ``dout``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.ops import _arena, _jit, _threads

__all__ = [
    "leaky_relu_backward",
    "leaky_relu_forward",
    "relu6_backward",
    "relu6_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "tanh_backward",
    "tanh_forward",
]


def relu_forward(x: np.ndarray, *, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)``; NaN stays NaN. The cache is the output (see the module docstring).

    ``inplace=True`` overwrites ``x`` (no new array: one pass instead of an allocation, its page
    faults and a pass); only for an ``x`` nobody else reads, which :class:`Sequential` knows.
    """
    if x.ndim == 0:
        out = np.maximum(x, x.dtype.type(0))
        return out, out
    out = x if inplace else _arena.empty(x.shape, x.dtype)
    zero = x.dtype.type(0)
    # rows (images) over the worker threads when big enough (ops/_threads.py)
    _threads.split_rows(lambda a, b: np.maximum(x[a:b], zero, out=out[a:b]), len(x), x.size)
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """``dout`` where the output was positive, 0 elsewhere (0 at exactly 0, like PyTorch).

    A select, not ``dout * (out > 0)``: an Inf or NaN gradient where the RELU was off gives 0
    (PyTorch's ``threshold_backward`` and the fused POOL -> RELU kernels agree), where the
    product would give NaN. Compiled, one pass (:func:`convnet.ops._jit.relu_backward_kernel`,
    1.7x faster than the product and its boolean temporary); without Numba ``np.where``.
    ``inplace=True`` overwrites ``dout`` (see :func:`relu_forward`).
    """
    zero = dout.dtype.type(0)
    if dout.ndim == 0:
        return np.where(cache > 0, dout, zero)
    dx = dout if inplace else _arena.empty(dout.shape, dout.dtype)
    compiled = (_jit.HAVE_NUMBA and dout.dtype in (np.float32, np.float64)
                and cache.dtype == dout.dtype and dout.flags.c_contiguous
                and cache.flags.c_contiguous)

    def part(a: int, b: int) -> None:
        if compiled and dx is dout:
            _jit.relu_backward_inplace_kernel(dout[a:b].reshape(-1), cache[a:b].reshape(-1))
        elif compiled:
            _jit.relu_backward_kernel(dout[a:b].reshape(-1), cache[a:b].reshape(-1),
                                      dx[a:b].reshape(-1))
        else:
            np.copyto(dx[a:b], np.where(cache[a:b] > 0, dout[a:b], zero))

    _threads.split_rows(part, len(dout), dout.size)
    return dx


def leaky_relu_forward(x: np.ndarray, alpha: float = 0.01) -> tuple[np.ndarray, tuple[Any, float]]:
    """``x`` where ``x > 0``, ``alpha*x`` elsewhere.

    For ``alpha >= 0`` the sign of the output is the sign of the input, so the output serves as
    the cache; a negative ``alpha`` flips it, and then a boolean mask (1 byte per value) is kept.
    """
    a = float(alpha)  # a Python float keeps x's dtype (a NumPy float64 scalar would upcast)
    # max(x, a*x) is x for x > 0 and a*x for x < 0 whenever a <= 1 (min when a > 1): two
    # branch-free passes, about 15x faster here than np.where on random signs. NaN propagates.
    out = np.maximum(x, x * a) if a <= 1 else np.minimum(x, x * a)
    return out, (out if a >= 0 else x > 0, a)


def leaky_relu_backward(dout: np.ndarray, cache: tuple[Any, float]) -> np.ndarray:
    """``dout`` where the input was positive, ``alpha*dout`` elsewhere."""
    ref, a = cache
    slope = (ref > 0).astype(dout.dtype)  # 1 where positive, then a + (1 - a)*that
    slope *= 1 - a
    slope += a
    slope *= dout
    return slope


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tanh(x)``; the cache is the output."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """``dout * (1 - tanh(x)**2)``."""
    return dout * (1 - cache * cache)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``1/(1 + exp(-x))`` computed without overflow, as ``exp(min(x, 0)) / (1 + exp(-|x|))``.

    ``exp`` never sees a positive number, so nothing overflows, and for very negative ``x`` the
    result keeps full relative precision (``0.5*(1 + tanh(x/2))`` would cancel to 0 there).
    Two ``exp`` passes and no ``np.where``: selecting per element with a random-sign mask was
    2.5x slower here than the second ``exp``.
    """
    out = np.minimum(x, x.dtype.type(0))
    np.exp(out, out=out)
    den = np.abs(x)
    np.negative(den, out=den)
    np.exp(den, out=den)
    den += 1
    out /= den
    return out, out


def sigmoid_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """``dout * s(1 - s)`` with ``s`` the forward output."""
    return dout * cache * (1 - cache)


def relu6_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``min(max(x, 0), 6)`` (MobileNet's RELU6; ONNX writes it as Clip(0, 6)); the cache is the
    output."""
    if x.ndim == 0:
        out = np.clip(x, x.dtype.type(0), x.dtype.type(6))
        return out, out
    out = _arena.empty(x.shape, x.dtype)            # a reused buffer: no page faults
    lo, hi = x.dtype.type(0), x.dtype.type(6)
    if (_jit.HAVE_NUMBA and x.dtype in (np.float32, np.float64) and x.flags.c_contiguous):
        _threads.split_rows(lambda a, b: _jit.relu6_forward_kernel(x[a:b].reshape(-1),
                                                                   out[a:b].reshape(-1)),
                            len(x), x.size)
    else:
        _threads.split_rows(lambda a, b: np.clip(x[a:b], lo, hi, out=out[a:b]), len(x),
                            x.size)
    return out, out


def relu6_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """``dout`` where ``0 < out < 6``, 0 elsewhere (0 at both ends, like PyTorch's hardtanh).

    Compiled, one pass (:func:`convnet.ops._jit.relu6_backward_kernel`), ranges of images over
    the worker threads; without Numba (or for other dtypes and layouts) ``np.where``."""
    zero = dout.dtype.type(0)
    compiled = (_jit.HAVE_NUMBA and dout.ndim > 0 and dout.dtype in (np.float32, np.float64)
                and cache.dtype == dout.dtype and dout.flags.c_contiguous
                and cache.flags.c_contiguous)
    if not compiled:
        return np.where((cache > 0) & (cache < 6), dout, zero)
    dx = _arena.empty(dout.shape, dout.dtype)
    _threads.split_rows(
        lambda a, b: _jit.relu6_backward_kernel(dout[a:b].reshape(-1), cache[a:b].reshape(-1),
                                                dx[a:b].reshape(-1)), len(dout), dout.size)
    return dx
