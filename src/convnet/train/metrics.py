"""Classification metrics from scores and labels: accuracy, confusion matrix, per-class accuracy,
precision, recall and F1 (per class and averaged, by scikit-learn).

Everything works on any number of leading positions: scores ``(N, C)`` with labels ``(N,)`` for
classification, or score maps ``(N, H, W, C)`` with labels ``(N, H, W)`` for segmentation, where
each pixel counts as one prediction. All counting is done with ``argmax`` and ``bincount``: no
Python loop over images or pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet.errors import ShapeError

__all__ = [
    "accuracy",
    "confusion_matrix",
    "correct_count",
    "format_confusion",
    "format_scores",
    "iou_per_class",
    "mean_iou_from_confusion",
    "per_class_accuracy",
    "precision_recall_f1",
    "scores_from_confusion",
]


def _check(scores: np.ndarray, y: np.ndarray, where: str) -> None:
    if scores.ndim < 2 or scores.shape[:-1] != y.shape:
        raise ShapeError(
            f"{where}: scores of shape {scores.shape} need labels of their leading shape "
            f"{scores.shape[:-1]} (one class index per position), received labels of shape "
            f"{y.shape}"
        )


def correct_count(scores: np.ndarray, y: np.ndarray) -> int:
    """How many positions have their highest score at the true class.

    Shape:
        scores ``(N, ..., C)``, y ``(N, ...)``; returns an int in ``[0, y.size]``.
    """
    scores, y = np.asarray(scores), np.asarray(y)
    _check(scores, y, "correct_count")
    return int(np.count_nonzero(scores.argmax(axis=-1) == y))


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Fraction of positions (images, or pixels of score maps) classified correctly.

    >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    0.5
    """
    y = np.asarray(y)
    return correct_count(scores, y) / max(y.size, 1)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]``: how many positions of true class ``i`` were predicted as class ``j``.

    One ``bincount`` over ``i * C + j``.

    Shape:
        y_true, y_pred: any equal shapes of class indices in ``[0, num_classes)``;
        returns ``(num_classes, num_classes)`` int64.

    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ShapeError(
            f"confusion_matrix: {t.size} true labels but {p.size} predictions; they must match"
        )
    C = int(num_classes)
    for name, arr in (("true labels", t), ("predictions", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= C):
            raise ShapeError(
                f"confusion_matrix: {name} range over [{arr.min()}, {arr.max()}] but there are "
                f"{C} classes (indices must lie in [0, {C - 1}])"
            )
    return np.bincount(t * C + p, minlength=C * C).reshape(C, C).astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix: ``cm[i, i] / cm[i].sum()``; NaN for a class
    that has no examples.

    Shape:
        cm ``(C, C)`` -> ``(C,)`` float64.
    """
    cm = np.asarray(cm)
    totals = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Intersection over union of each class from a confusion matrix, ``TP / (TP + FP + FN)``
    (the segmentation measure: the pixels both call class c over the pixels either calls c);
    NaN for a class absent from both the labels and the predictions.

    Shape:
        cm ``(C, C)`` -> ``(C,)`` float64.

    >>> iou_per_class(np.array([[1, 1], [0, 2]])).round(3).tolist()  # [1/2, 2/3]
    [0.5, 0.667]
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou_from_confusion(cm: np.ndarray) -> float:
    """Mean IoU over the classes present (labels or predictions); NaN when there are none."""
    ious = iou_per_class(cm)
    return float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else float("nan")


def format_confusion(cm: np.ndarray, classes: list[str], max_name: int = 12) -> str:
    """The confusion matrix as an aligned text table, rows = true class, columns = predicted.

    Column headers are the class indices (names can be long); each row starts with the index and
    the class name, so the table stays narrow enough for a terminal with 10 classes.
    """
    cm = np.asarray(cm)
    C = cm.shape[0]
    names = [str(c)[:max_name] for c in classes]
    width = max(len(str(int(cm.max()))) if cm.size else 1, len(str(C - 1)), 1) + 1
    name_w = max((len(n) for n in names), default=4)
    idx_w = len(str(C - 1))
    head_pad = " " * (idx_w + 1 + name_w + 3)
    lines = ["true \\ predicted", head_pad + "".join(f"{j:>{width}}" for j in range(C))]
    for i in range(C):
        row = "".join(f"{int(v):>{width}}" for v in cm[i])
        lines.append(f"{i:>{idx_w}} {names[i]:<{name_w}} | {row}")
    return "\n".join(lines)


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
                        ) -> dict[str, Any]:
    """Precision, recall and F1 of every class, and their macro and weighted averages
    (scikit-learn's :func:`~sklearn.metrics.precision_recall_fscore_support`).

    A class's precision is the share of the positions predicted as it that truly are it; its
    recall the share of its positions predicted as it (its per-class accuracy); F1 their
    harmonic mean. A class never predicted has no precision, one absent from the labels no
    recall: those are NaN per class. The averages follow scikit-learn's default
    (``zero_division=0``): they run over the classes that occur in the labels or the
    predictions, and count such an undefined value as 0, so a classifier cannot raise its macro
    precision by never naming a hard class. ``macro`` is the plain mean over those classes;
    ``weighted`` weighs each class by its ``support`` (its number of true positions).

    Returns:
        ``{"precision", "recall", "f1"}``: ``(C,)`` float64 arrays; ``"support"``: ``(C,)``
        int64; ``"macro"`` and ``"weighted"``: ``{"precision", "recall", "f1"}`` floats.

    >>> r = precision_recall_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    >>> r["precision"].round(3).tolist(), r["recall"].tolist(), round(r["macro"]["f1"], 3)
    ([1.0, 0.667], [0.5, 1.0], 0.733)
    """
    return scores_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """:func:`precision_recall_f1` from a confusion matrix (rows: true class, columns:
    predicted), computed once from its diagonal and its sums, as scikit-learn's
    ``precision_recall_fscore_support`` gives them:

    - per class, as with ``zero_division=np.nan``: ``precision = tp / column sum``,
      ``recall = tp / row sum`` (the support), ``F1 = 2 tp / (2 tp + fp + fn)``; NaN where the
      denominator is 0 (never predicted; absent from the labels);
    - the averages as with scikit-learn's default, ``zero_division=0`` (and no ``labels``):
      over the classes present in the labels or the predictions, an undefined value counting
      as 0; ``macro`` is their mean, ``weighted`` their mean weighted by the support (0 when
      all of it is 0). NaN when no class is present (an empty matrix).

    >>> r = scores_from_confusion(np.array([[1, 1], [0, 2]]))
    >>> r["precision"].round(3).tolist(), r["recall"].tolist(), round(r["macro"]["f1"], 3)
    ([1.0, 0.667], [0.5, 1.0], 0.733)
    >>> r = scores_from_confusion(np.array([[2, 0, 0], [1, 0, 0], [0, 0, 0]]))  # 1: never named
    >>> r["precision"].round(3).tolist()[:2], round(r["macro"]["precision"], 3)
    ([0.667, nan], 0.333)
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    denom = (2 * tp + (predicted - tp) + (support - tp))
    with np.errstate(divide="ignore", invalid="ignore"):
        out: dict[str, Any] = {
            "precision": np.where(predicted > 0, tp / predicted, np.nan),
            "recall": np.where(support > 0, tp / support, np.nan),
            "f1": np.where(denom > 0, 2 * tp / denom, np.nan),
            "support": support.astype(np.int64),
        }
    present = (predicted + support) > 0  # scikit-learn's labels: those in y_true or y_pred
    w = support[present]
    for average in ("macro", "weighted"):
        avg = {}
        for key in ("precision", "recall", "f1"):
            v = np.nan_to_num(out[key][present], nan=0.0)  # zero_division=0
            if not present.any():
                avg[key] = float("nan")
            elif average == "macro":
                avg[key] = float(np.mean(v))
            else:
                avg[key] = float(np.sum(v * w) / w.sum()) if w.sum() > 0 else 0.0
        out[average] = avg
    return out


def format_scores(scores: dict[str, Any], classes: list[str]) -> str:
    """The result of :func:`precision_recall_f1` as an aligned text table: one row per class,
    then the macro and weighted averages; percentages, ``n/a`` where a value is undefined."""

    def pct(v: float) -> str:
        return "    n/a" if np.isnan(v) else f"{100 * v:6.2f}%"

    C = len(classes)
    idx_w = len(str(C - 1))
    name_w = max(max((len(str(c)) for c in classes), default=0), len("weighted average") - idx_w)
    head = " " * (idx_w + 1) + f"{'':<{name_w}}  precision   recall       F1  support"
    lines = [head]
    for i, name in enumerate(classes):
        lines.append(f"{i:>{idx_w}} {str(name):<{name_w}}    {pct(scores['precision'][i])}  "
                     f"{pct(scores['recall'][i])}  {pct(scores['f1'][i])}  "
                     f"{int(scores['support'][i]):>7,}")
    total = int(np.sum(scores["support"]))
    for average in ("macro", "weighted"):
        a = scores[average]
        label = f"{average} average"
        lines.append(f"{label:<{idx_w + 1 + name_w}}    {pct(a['precision'])}  "
                     f"{pct(a['recall'])}  {pct(a['f1'])}  {total:>7,}")
    return "\n".join(lines)
