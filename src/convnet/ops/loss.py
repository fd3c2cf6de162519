"""Softmax and the softmax cross-entropy loss, over the last axis.

The loss accepts any leading dimensions: ``(N, C)`` scores with ``(N,)`` labels for
classification, or ``(N, H, W, C)`` score maps with ``(N, H, W)`` labels for segmentation (one
loss per pixel). The loss is the mean over all leading positions.

:func:`softmax_cross_entropy` is public API (``cn.softmax_cross_entropy``), so unlike the other
kernels it validates its arguments and raises :class:`~convnet.errors.ShapeError` or
:class:`~convnet.errors.InputError` with a message that says what was received and what fits.
"""

from __future__ import annotations

import numpy as np

from convnet.errors import InputError, ShapeError

__all__ = ["softmax", "softmax_cross_entropy"]


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis.

    The row maximum is subtracted first, so ``exp`` never sees a positive number and cannot
    overflow (softmax is unchanged by a constant shift).

    Shape:
        scores ``(..., C)`` -> probs ``(..., C)``, same dtype, each row summing to 1.

    >>> softmax(np.array([[1e4, 1e4]])).tolist()
    [[0.5, 0.5]]

    Whole numbers (or a list) are taken as float64; a 0-d array, strings or NaN/Inf scores raise
    :class:`~convnet.errors.InputError`.
    """
    try:
        scores = np.asarray(scores)
    except Exception as exc:  # ragged lists and other things numpy refuses
        raise InputError(f"softmax: scores are not an array ({exc})") from None
    if scores.dtype.kind in "iub":
        scores = scores.astype(np.float64)
    if scores.dtype.kind != "f":
        raise InputError(f"softmax: scores must be numbers, received dtype {scores.dtype}")
    if scores.ndim == 0:
        raise InputError("softmax: scores need at least one axis (the classes, last)")
    if scores.shape[-1] == 0:
        raise InputError("softmax: there are no classes (the last axis has size 0)")
    if not np.isfinite(scores).all():
        raise InputError("softmax: scores contain NaN or Inf (a diverged network?)")
    e = scores - scores.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _position(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def _validate(scores: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    y = np.asarray(y)
    if scores.dtype.kind not in "fiu":
        raise InputError(
            f"softmax_cross_entropy: scores must be real numbers, received dtype {scores.dtype}"
        )
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    if scores.ndim < 2 or scores.shape[-1] < 1:
        raise ShapeError(
            f"softmax_cross_entropy: scores must be (N, C) or (N, ..., C) with C >= 1 classes "
            f"on the last axis, received shape {scores.shape}"
        )
    lead, C = scores.shape[:-1], scores.shape[-1]
    if y.shape != lead:
        hint = ""
        if y.shape == scores.shape:
            hint = " These look like one-hot (or probability) targets: pass y.argmax(-1)."
        elif y.shape == (*lead, 1) or (y.size == scores.size // C and y.ndim != len(lead)):
            hint = f" Reshape them: y.reshape({lead})."
        raise ShapeError(
            f"softmax_cross_entropy: scores of shape {scores.shape} ({C} classes on the last "
            f"axis) need one class index per leading position, labels of shape {lead}; "
            f"received labels of shape {y.shape}.{hint}"
        )
    if scores.size == 0:
        raise ShapeError(
            f"softmax_cross_entropy: scores of shape {scores.shape} hold no positions: the mean "
            f"loss of an empty batch is undefined"
        )
    if y.dtype.kind not in "iu":
        hint = ""
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            hint = " They are whole numbers: pass y.astype(np.int64)."
        raise InputError(
            f"softmax_cross_entropy: labels must be integer class indices in [0, {C}), received "
            f"dtype {y.dtype}.{hint}"
        )
    bad = (y < 0) | (y >= C)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"softmax_cross_entropy: labels must be class indices in [0, {C}) for scores with "
            f"{C} classes; {int(bad.sum())} of {y.size} are outside (min {int(y.min())}, max "
            f"{int(y.max())}; the first at position {_position(first, lead)} is "
            f"{int(y.flat[first])})"
        )
    finite = np.isfinite(scores)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"softmax_cross_entropy: scores contain {int((~finite).sum())} NaN or Inf values "
            f"(the first at position {_position(first, scores.shape)} is "
            f"{scores.flat[first]}); the network has diverged: lower the learning rate or check "
            f"the input for NaN"
        )
    return scores, y


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of the softmax of ``scores`` against integer labels ``y``.

    ``loss = mean(logsumexp(scores) - scores[y])`` over all leading positions, computed from
    max-shifted scores so that scores of 1e4 give a finite loss. The gradient is
    ``(softmax(scores) - onehot(y)) / M`` with ``M`` the number of positions.

    Raises:
        ShapeError: scores with fewer than 2 axes or no positions; labels whose shape is not
            the scores' leading shape.
        InputError: non-integer labels, labels outside ``[0, C)``, NaN or Inf scores.

    Shape:
        scores ``(N, C)`` with y ``(N,)``, or ``(N, H, W, C)`` with y ``(N, H, W)``;
        returns a Python float and dscores of the shape and (floating) dtype of scores
        (integer scores are treated as float64).

    >>> loss, d = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6), d.shape
    (1.386294, (2, 4))
    """
    scores, y = _validate(scores, y)
    C = scores.shape[-1]
    M = y.size
    # One full-size buffer: the shifted scores become exp(shifted), then the probabilities,
    # then the gradient, in place.
    # order="C": the reshape below must be a view even for a transposed (NCHW-view) input.
    g = np.subtract(scores, scores.max(axis=-1, keepdims=True), order="C")
    rows, cols = np.arange(M), y.reshape(-1)
    g2 = g.reshape(M, C)  # a view: g is contiguous
    picked = g2[rows, cols].astype(np.float64)
    np.exp(g, out=g)
    e_y = g2[rows, cols].astype(np.float64)
    # The per-position sums are accumulated in float64 (M values, cheap). The row maximum
    # contributes exactly exp(0) = 1, so ``log(total) = log1p(total - 1)`` and ``p_y - 1 =
    # (e_y - total)/total`` are both free of the cancellation that float32 ``p_y - 1`` suffers
    # when the model is confident (p_y = 0.9999 would lose three of float32's seven digits).
    total = g2.sum(axis=-1, dtype=np.float64)
    loss = float(np.mean(np.log1p(total - 1) - picked))
    g2 /= total[:, None].astype(g.dtype)
    g2[rows, cols] = (e_y - total) / total
    g *= g.dtype.type(1.0 / M)
    return loss, g
