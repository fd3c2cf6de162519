"""Batch normalisation (Ioffe & Szegedy, 2015) over every axis but the last.

For ``(N, D)`` vectors the statistics are per feature over the batch; for ``(N, H, W, D)``
activation maps they are per depth slice over the batch and all pixels (spatial batch norm), so
one kernel serves both.

Train mode normalises with the batch mean and the biased batch variance and updates the running
statistics in place (PyTorch's convention: ``running = (1 - momentum)*running + momentum*batch``,
with the UNBIASED variance ``var * m/(m - 1)`` for ``running_var``, ``m`` values per channel).
Eval mode normalises with the running statistics, which makes it an affine map per channel.

Shape:
    x ``(N, ..., D)``; gamma, beta, running_mean, running_var ``(D,)``; out like x.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["batchnorm_backward", "batchnorm_forward"]


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: float,
    eps: float,
    train: bool,
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """``out = gamma * (x - mean)/sqrt(var + eps) + beta``, per channel (last axis).

    ``running_mean`` and ``running_var`` are updated IN PLACE when ``train`` is true. With a
    single value per channel (``m = 1``) the unbiased variance is undefined; the BatchNorm layer
    rejects that case in train mode (as PyTorch does), and here the biased one (0) is used.

    Shape:
        x ``(N, D)`` or ``(N, H, W, D)`` -> out of the same shape; the parameters are ``(D,)``.
    """
    axes = tuple(range(x.ndim - 1))
    eps = float(eps)
    if train:
        m = x.size // x.shape[-1]
        mean = x.mean(axis=axes)
        xc = x - mean
        var = np.mean(xc * xc, axis=axes)
        inv_std = 1 / np.sqrt(var + eps)
        unbiased = var * (m / (m - 1)) if m > 1 else var
        momentum = float(momentum)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * unbiased
        xhat = xc
        xhat *= inv_std  # reuse xc's buffer: one full-size temporary instead of two
    else:
        inv_std = (1 / np.sqrt(running_var + eps)).astype(x.dtype, copy=False)
        xhat = (x - running_mean.astype(x.dtype, copy=False)) * inv_std
    out = xhat * gamma + beta
    # xhat (not x) is cached: the backward formula needs only xhat, gamma and 1/std.
    return out, (xhat, gamma, inv_std, train)


def batchnorm_backward(
    dout: np.ndarray, cache: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batchnorm_forward` with respect to x, gamma and beta.

    Train mode (the statistics depend on x), the compact formula with ``m`` values per channel::

        dx = gamma/std/m * (m*dout - sum(dout) - xhat*sum(dout*xhat))

    Eval mode (fixed statistics): ``dx = gamma/std * dout``.

    Shape:
        dout like x -> dx like x, dgamma ``(D,)``, dbeta ``(D,)``.
    """
    xhat, gamma, inv_std, train = cache
    axes = tuple(range(dout.ndim - 1))
    dbeta = dout.sum(axis=axes)
    dgamma = np.sum(dout * xhat, axis=axes)
    scale = gamma * inv_std
    if not train:
        return dout * scale, dgamma, dbeta
    m = dout.size // dout.shape[-1]
    dx = dout * m
    dx -= dbeta
    dx -= xhat * dgamma
    dx *= scale / m
    return dx, dgamma, dbeta
