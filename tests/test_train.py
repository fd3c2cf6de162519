"""fit / evaluate / callbacks: learning, exact resume, NaN and early stops, per-pixel labels."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest

import convnet as cn
from convnet.data import Augmentation, Normalizer, load_dataset
from convnet.errors import ConfigError, ShapeError
from convnet.optim import SGD, Adam, make_schedule
from convnet.train import (
    Callback,
    EarlyStopping,
    MetricsLog,
    ModelCheckpoint,
    ProgressBar,
    Trainer,
    evaluate,
    fit,
    load_checkpoint,
)
from convnet.train.metrics import confusion_matrix, format_confusion, per_class_accuracy

SMALL = ("INPUT(8x8x1) -> CONV(8,F=3,P=1) -> BN -> RELU -> POOL -> DROPOUT(0.1) -> FC(32) "
         "-> RELU -> FC(10)")


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits")
    # a third of the images keeps every test here quick
    return train.subset(slice(0, 480)), test.subset(slice(0, 200))


def test_fit_reduces_loss_and_learns(digits):
    train, test = digits
    net = cn.build(SMALL, seed=0)
    before = evaluate(net, test)["loss"]
    h = fit(net, train, test, epochs=3, batch_size=32, optimizer="adam", lr=1e-2, seed=0)
    assert len(h) == 3 and h.stop_reason is None
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.8
    after = evaluate(net, test)
    assert after["loss"] < before / 2
    assert after["accuracy"] == pytest.approx(h["val_accuracy"][-1])
    assert after["confusion"].sum() == len(test.y)
    assert all(k in h.last for k in ("lr", "time_s", "images_per_s", "step"))


class _StopAt(Callback):
    """Request a stop after a given global batch (what the signal handler does)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, batch, logs):
        if self.trainer.step == self.step:
            self.trainer.request_stop()


def _run(digits, out, epochs, callbacks=(), resume=None):
    train, val = digits
    net = cn.build(SMALL, seed=3) if resume is None else load_checkpoint(resume).net
    steps = -(-len(train) // 32)
    trainer = Trainer(
        net, train, val, epochs=epochs, batch_size=32, optimizer=Adam(lr=2e-3),
        schedule=make_schedule("cosine", 2e-3, 3 * steps, steps), seed=5,
        augment=Augmentation(pad=1), normalizer=Normalizer.fit(train.x),
        callbacks=[*callbacks, ModelCheckpoint(out), MetricsLog(out)],
    )
    if resume is not None:
        trainer.restore(resume)
    return net, trainer.run()


def test_resume_is_bit_identical(digits, tmp_path):
    """3 epochs in one go == 1 epoch, stop, resume for 2 more == stopped mid-epoch, resumed.

    Covers every piece of state: Adam moments, cosine schedule step, shuffling and augmentation
    generator, dropout generator, BN running statistics.
    """
    full, h_full = _run(digits, tmp_path / "full", epochs=3)
    # stopped at an epoch boundary
    _run(digits, tmp_path / "a", epochs=1)
    a, h_a = _run(digits, tmp_path / "a", epochs=3, resume=tmp_path / "a" / "last.npz")
    # stopped in the middle of epoch 2 (as Ctrl-C would), then resumed
    _, h_stop = _run(digits, tmp_path / "b", epochs=3, callbacks=[_StopAt(20)])
    assert h_stop.stop_reason == "interrupted" and len(h_stop) == 1
    assert load_checkpoint(tmp_path / "b" / "last.npz").loop["batch"] == 20 - 15
    b, h_b = _run(digits, tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.npz")
    for other, h in ((a, h_a), (b, h_b)):
        for key, v in full.state_dict().items():
            np.testing.assert_array_equal(other.state_dict()[key], v, err_msg=key)
        assert other.rng.bit_generator.state == full.rng.bit_generator.state
        assert h["loss"] == h_full["loss"] and h["val_accuracy"] == h_full["val_accuracy"]
    # the metrics log of a resumed run has each epoch once
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("order", ["repeat", "out_of_range", "negative"])
def test_restore_requires_the_saved_order_to_be_a_permutation(digits, tmp_path, order):
    from convnet.errors import CheckpointError

    _run(digits, tmp_path / "s", epochs=3, callbacks=[_StopAt(4)])
    ckpt = load_checkpoint(tmp_path / "s" / "last.npz")
    saved = ckpt.loop["order"].copy()
    assert np.array_equal(np.sort(saved), np.arange(len(saved)))
    bad = saved.copy()
    if order == "repeat":
        bad[1] = bad[0]  # one image twice, another never: a silently different epoch
    elif order == "out_of_range":
        bad[0] = len(saved)
    else:
        bad[0] = -1
    ckpt.loop["order"] = bad
    train, val = digits
    trainer = Trainer(ckpt.net, train, val, epochs=3, batch_size=32, seed=5)
    with pytest.raises(CheckpointError, match="sample order is not a permutation"):
        trainer.restore(ckpt)


class _PoisonAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch + 1 == self.epoch:
            self.trainer.net["fc2"].params["W"][0, 0] = np.nan


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    train, val = digits
    net = cn.build(SMALL, seed=0)
    h = fit(net, train, val, epochs=5, batch_size=64, lr=1e-3, seed=0,
            callbacks=[ModelCheckpoint(tmp_path), _PoisonAfterEpoch(2)])
    assert h.stop_reason == "nan" and len(h) == 2
    assert "epoch 3, batch 1/" in h.message and "last.npz (epoch 2)" in h.message
    assert "Lower the learning rate" in h.message
    c = load_checkpoint(tmp_path / "last.npz")  # loads: finite weights of epoch 2
    assert c.epoch == 2


def test_diverging_learning_rate_stops_with_nan(digits):
    train, _ = digits
    # a deep linear stack with momentum grows its weights geometrically at this rate
    net = cn.build("INPUT(8x8x1) -> FC(32) -> FC(32) -> FC(10)", seed=0)
    h = fit(net, train, epochs=20, batch_size=32, optimizer=SGD(lr=1.0, momentum=0.9), seed=0)
    assert h.stop_reason == "nan" and len(h) < 20
    assert "NaN or Inf at epoch 1, batch" in h.message and "diverged" in h.message


class _Constant(Callback):
    def on_epoch_end(self, epoch, logs):
        logs["score"] = 1.0 if epoch == 0 else 0.5  # best at epoch 1, never better


def test_early_stopping(digits):
    train, val = digits
    net = cn.build(SMALL, seed=0)
    h = fit(net, train, val, epochs=10, batch_size=64, seed=0,
            callbacks=[_Constant(), EarlyStopping("score", patience=2)])
    assert h.stop_reason == "early_stop" and len(h) == 3
    assert "score has not improved for 2 epochs" in h.message
    assert "best 1.0000 at epoch 1" in h.message
    with pytest.raises(ConfigError, match="val_loss.*lack"):
        fit(cn.build(SMALL, seed=0), train, epochs=2, callbacks=[EarlyStopping("val_loss")])
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=0)


def test_per_pixel_labels_segmentation():
    rng = np.random.default_rng(0)
    x = rng.random((64, 6, 6, 1), dtype=np.float32)
    y = (x[..., 0] > 0.5).astype(np.int64)  # (N, H, W): class of each pixel
    net = cn.build("INPUT(6x6x1) -> CONV(8,F=3,P=1) -> RELU -> CONV(2,F=1)", seed=0)
    h = fit(net, (x, y), (x[:16], y[:16]), epochs=30, batch_size=16, lr=3e-2, seed=0)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    r = evaluate(net, (x, y))
    assert r["count"] == 64 * 36 and r["confusion"].shape == (2, 2)
    scores = net.predict(x)
    assert r["accuracy"] == pytest.approx(np.mean(scores.argmax(-1) == y))
    assert r["accuracy"] > 0.9
    with pytest.raises(ConfigError, match="per-pixel labels"):
        fit(net, (x, y), epochs=1, augment=Augmentation(pad=1))


def test_bad_data_is_refused_before_training():
    net = cn.build("INPUT(8x8x1) -> FC(3)", seed=0)
    x = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ShapeError, match=r"images of shape \(7, 8, 1\).*INPUT\(7x8x1\)"):
        fit(net, (np.zeros((4, 7, 8, 1)), np.zeros(4, int)), epochs=1)
    with pytest.raises(ShapeError, match=r"labels of shape \(4,\)"):
        fit(net, (x, np.zeros((4, 2), int)), epochs=1)
    with pytest.raises(ConfigError, match=r"FC\(6\)"):
        fit(net, (x, np.array([0, 1, 2, 5])), epochs=1)
    with pytest.raises(ConfigError, match="integer class indices"):
        fit(net, (x, np.zeros(4)), epochs=1)
    with pytest.raises(ConfigError, match="batch_size"):
        fit(net, (x, np.zeros(4, int)), batch_size=0)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        fit(net, (x, np.zeros(4, int)), optimizer="rmsprop")


def test_progress_bar_plain_when_not_a_tty(digits):
    train, val = digits
    stream = io.StringIO()  # not a terminal; no progress lines inside an epoch
    fit(cn.build(SMALL, seed=0), train, val, epochs=2, batch_size=64,
        callbacks=[ProgressBar(stream, interval=math.inf)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[0].startswith("epoch 1/2 8/8 loss ") and "val_acc" in lines[0]
    assert "img/s" in lines[1]

    # interval 0: a plain line after every batch but an epoch's last, with the time left
    stream = io.StringIO()
    fit(cn.build(SMALL, seed=0), train, epochs=2, batch_size=64,
        callbacks=[ProgressBar(stream, interval=0)])
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2 * 8
    assert [ln.split(" (")[0] for ln in lines[:7]] == [f"epoch 1/2 {b}/8" for b in range(1, 8)]
    assert lines[7].startswith("epoch 1/2 8/8 loss ") and "lr" in lines[7]  # the summary
    line = r"epoch 2/2 3/8 \(38%\) loss [\d.]+ acc [\d.]+% [\d,]+ img/s, epoch \d\d:\d\d left, " \
        r"run \d\d:\d\d left"
    assert re.fullmatch(line, lines[10]), lines[10]
    with pytest.raises(ConfigError, match="interval must be a number of seconds >= 0"):
        ProgressBar(stream, interval=-1)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()  # a tqdm bar with the time left, wiped by each epoch's summary line
    fit(cn.build(SMALL, seed=0), train, epochs=2, batch_size=64,
        callbacks=[ProgressBar(tty, redraw=0)])
    text = tty.getvalue()
    assert text.startswith("\repoch 1/2   0%|") and text.endswith("\n")
    assert text.count("\n") == 2 and "/8 [00:" in text and "loss " in text
    assert "run 00:" in text  # the time left in the whole run, while epoch 2 is to come
    summaries = [seg.split("\r")[-1] for seg in text.split("\n")[:-1]]
    assert [s.split(" loss")[0] for s in summaries] == ["epoch 1/2 8/8", "epoch 2/2 8/8"]


def test_precision_recall_f1_match_the_confusion_matrix_and_sklearn():
    from sklearn.metrics import classification_report

    from convnet.train.metrics import format_scores, precision_recall_f1

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    pred[pred == 4] = 3                   # class 4 is never predicted, class 5 never present
    r = precision_recall_f1(y, pred, 6)
    cm = confusion_matrix(y, pred, 6)
    tp = np.diag(cm).astype(float)
    np.testing.assert_allclose(r["recall"][:5], tp[:5] / cm.sum(1)[:5])
    np.testing.assert_allclose(r["precision"][:4], tp[:4] / cm.sum(0)[:4])
    assert np.isnan(r["precision"][4]) and np.isnan(r["precision"][5])
    assert np.isnan(r["recall"][5]) and r["support"].tolist() == cm.sum(1).tolist()
    assert r["macro"]["recall"] == pytest.approx(np.mean(tp[:5] / cm.sum(1)[:5]))
    assert r["weighted"]["recall"] == pytest.approx(tp.sum() / 300)
    report = classification_report(y, pred, labels=[0, 1, 2, 3], output_dict=True,
                                    zero_division=0)
    for k in range(4):
        assert r["f1"][k] == pytest.approx(report[str(k)]["f1-score"])
    text = format_scores(r, ["ant", "bee", "cat", "dog", "eel", "fox"])
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "F1", "support"]
    assert lines[5].split()[:3] == ["4", "eel", "n/a"] and lines[6].split()[2:] == ["n/a"] * 3 + ["0"]
    assert lines[7].startswith("macro average") and lines[8].endswith(" 300")
    with pytest.raises(ShapeError, match="predictions range"):
        precision_recall_f1(y, pred + 3, 6)


def test_scores_from_the_confusion_matrix_are_sklearns():
    from sklearn.metrics import precision_recall_fscore_support as prfs

    from convnet.train.metrics import scores_from_confusion

    rng = np.random.default_rng(1)
    for trial in range(200):  # small sets: classes absent, never predicted, empty averages
        C, n = int(rng.integers(2, 7)), int(rng.integers(1, 40))
        y, p = rng.integers(0, C, n), rng.integers(0, C, n)
        if trial % 3 == 0:
            p[p == C - 1] = 0
        if trial % 4 == 0:
            y[y == 1] = 0
        r = scores_from_confusion(confusion_matrix(y, p, C))
        ref = prfs(y, p, labels=list(range(C)), average=None, zero_division=np.nan)
        for key, want in zip(("precision", "recall", "f1", "support"), ref, strict=True):
            np.testing.assert_allclose(r[key], want, rtol=1e-12, equal_nan=True)
        # the averages: scikit-learn's default convention, zero_division=0 over the classes
        # in the labels or the predictions (a never-predicted class counts as precision 0)
        for average in ("macro", "weighted"):
            want = prfs(y, p, average=average, zero_division=0)
            got = [r[average][k] for k in ("precision", "recall", "f1")]
            np.testing.assert_allclose(got, want[:3], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("y, p, C", [
    ([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 2, 2], 3),        # class 1 never predicted
    ([0, 1, 2, 3, 3, 3], [0, 0, 0, 3, 3, 3], 5),        # 1 and 2 never predicted, 4 absent
    ([0, 0, 0, 1], [1, 1, 2, 1], 3),                    # 0 never predicted, 2 never true
    ([2, 2, 2], [2, 2, 2], 4),                          # one class only
])
def test_never_predicted_classes_count_as_precision_0(y, p, C):
    from sklearn.metrics import precision_recall_fscore_support as prfs

    from convnet.train.metrics import format_scores, precision_recall_f1

    y, p = np.array(y), np.array(p)
    r = precision_recall_f1(y, p, C)
    never = [c for c in range(C) if c in y and c not in p]
    assert all(np.isnan(r["precision"][c]) for c in never)  # n/a in the class's own row
    for average in ("macro", "weighted"):
        want = prfs(y, p, average=average, zero_division=0)[:3]
        got = [r[average][k] for k in ("precision", "recall", "f1")]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    present = sorted(set(y) | set(p))
    defined = [r["precision"][c] for c in present if c not in never]
    assert r["macro"]["precision"] == pytest.approx(sum(defined) / len(present))
    if never:  # the old convention (leave them out) would have given more
        assert r["macro"]["precision"] < np.mean(defined)
    assert "n/a" in format_scores(r, [str(c) for c in range(C)]) or not never


def test_metrics():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(cm)
    assert acc[:3].tolist() == [0.5, 1.0, 2 / 3] and np.isnan(acc[3])
    text = format_confusion(cm, ["cat", "dog", "bird", "fish"])
    assert "bird" in text and text.splitlines()[4].split("|")[1].split() == ["1", "0", "2", "0"]
    with pytest.raises(ShapeError, match="predictions range"):
        confusion_matrix(np.array([0]), np.array([4]), 4)


@pytest.mark.slow
def test_default_recipe_reaches_97_percent_on_digits(tmp_path, capsys):
    """The README's first command: `convnet train` with no arguments."""
    from convnet.cli.main import main

    assert main(["train", "--out", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["test_accuracy"] >= 0.97
    assert "test accuracy" in capsys.readouterr().out
