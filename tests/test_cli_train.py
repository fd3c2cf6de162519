"""`convnet train / eval / predict`: errors, signals, resume, image conversion."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from convnet.cli.main import main
from convnet.train import load_checkpoint

TINY = "INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["train", "--arch", TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("argv, message", [
    (["--arch", "nosuchnet"], "'nosuchnet' is not a zoo architecture"),
    (["--data", "nosuchdata"], "unknown data set 'nosuchdata'"),
    (["--lr", "-1"], "lr must be finite and > 0"),
    (["--lr", "nan"], "lr must be finite"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum is for SGD"),
    (["--arch", "INPUT(28x28x1) -> FC(10)"], r"INPUT\(8x8x1\)"),
    (["--arch", "INPUT(8x8x1) -> FC(7)"], r"FC\(10\)"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "r")]) == 2
    line = _error_line(capsys)
    assert line.startswith("convnet train: error: ")
    assert re.search(message, line), line
    assert not (tmp_path / "r" / "last.npz").exists()


@pytest.mark.parametrize("argv, message", [
    (["--lr", "abc"], "invalid float value"),
    (["--epochs", "0"], "--epochs: expected a whole number >= 1"),
    (["--val-split", "1.5"], "fraction"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--progress-every", "-1"], "expected a number of seconds >= 0"),
])
def test_argparse_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert message in _error_line(capsys)


def test_a_zoo_network_is_built_for_the_data_sets_images(tmp_path, capsys):
    """`--arch resnet-cifar --data fashion` trains: a zoo NAME is a design and is built for the
    data's images (said so); spec text keeps its INPUT (refused above when it differs)."""
    out = tmp_path / "r"
    assert main(["train", "--arch", "resnet-cifar", "--epochs", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert ("zoo network 'resnet-cifar' is made for 32x32x3 images; built for the 8x8x1 images "
            "of digits instead (272,186 parameters)") in err
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.net.input_shape == (8, 8, 1) and ckpt.net.spec.startswith("INPUT(8x8x1) -> CONV(16")
    # a zoo design that cannot shrink that far says so, naming the layer
    assert main(["train", "--arch", "lenet5", "--out", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convnet train: error: zoo network 'lenet5' is made for 32x32x1 images "
                          "and does not fit the 8x8x1 images of digits: conv2 (CONV K=16 F=5")
    assert "Traceback" not in err and not (tmp_path / "l" / "last.npz").exists()


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """In a log (here pytest's capture: not a terminal) progress comes as plain lines, never
    carriage returns: every --progress-every seconds (0: after every batch)."""
    assert main(["train", "--arch", TINY, "--epochs", "1", "--progress-every", "0",
                 "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [ln for ln in err.splitlines() if re.match(r"epoch 1/1 \d+/41 \(", ln)]
    assert [int(ln.split()[2].split("/")[0]) for ln in progress] == list(range(1, 41))
    assert all(ln.endswith(" left") and "img/s, epoch " in ln for ln in progress)
    assert re.search(r"^epoch 1/1 41/41 loss .* lr ", err, re.M)


def test_existing_run_and_bad_resume_are_refused(model_dir, tmp_path, capsys):
    assert main(["train", "--out", str(model_dir)]) == 2
    assert "already holds a run" in _error_line(capsys)
    assert main(["train", "--resume", str(model_dir), "--lr", "0.5", "--epochs", "3"]) == 2
    assert "cannot change: --lr 0.5" in _error_line(capsys)
    assert main(["train", "--resume", str(model_dir)]) == 2
    assert "already completed its 2 epochs" in _error_line(capsys)
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no such checkpoint" in _error_line(capsys)


def test_eval_prints_accuracy_per_class_and_confusion(model_dir, capsys):
    assert main(["eval", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "per class:" in out and "confusion matrix:" in out
    assert re.search(r"^ *precision +recall +F1 +support$", out, re.M)
    assert re.search(r"^macro average +[\d.]+% +[\d.]+% +[\d.]+% +359$", out, re.M)
    assert "classes never predicted count as precision 0" in out
    assert main(["eval", str(model_dir / "last.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    cm = np.array(r["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == r["count"] == 359
    assert r["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert r["classes"] == [str(i) for i in range(10)]
    # the documented structure (cli/evaluate.py), checked against the confusion matrix
    assert set(r) == {"model", "data", "split", "count", "accuracy", "loss", "classes",
                      "per_class", "macro", "weighted", "per_class_accuracy", "confusion"}
    assert (r["data"], r["split"]) == ("digits", "test")
    tp, predicted, true = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    for i, row in enumerate(r["per_class"]):
        assert set(row) == {"index", "class", "precision", "recall", "f1", "support"}
        assert (row["index"], row["class"], row["support"]) == (i, str(i), int(true[i]))
        assert row["recall"] == pytest.approx(tp[i] / true[i]) == r["per_class_accuracy"][i]
        if predicted[i]:
            p, rc = tp[i] / predicted[i], tp[i] / true[i]
            assert row["precision"] == pytest.approx(p)
            assert row["f1"] == pytest.approx(2 * p * rc / (p + rc) if p + rc else 0.0)
        else:
            assert row["precision"] is None  # undefined, not 0: JSON null
    # a class never predicted counts as precision 0 in the averages (scikit-learn's default)
    assert r["macro"]["precision"] == pytest.approx(
        np.mean([row["precision"] or 0.0 for row in r["per_class"]]))
    assert r["macro"]["recall"] == pytest.approx(np.mean(tp / true))
    assert r["weighted"]["recall"] == pytest.approx(r["accuracy"])  # support-weighted recall
    bad = model_dir.parent / "not.npz"
    bad.write_text("hello")
    assert main(["eval", str(bad)]) == 2
    assert "not.npz: not a convnet checkpoint" in _error_line(capsys)


def test_predict_converts_images_and_says_so(model_dir, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)) \
        .save(big)
    exact = tmp_path / "exact.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(exact)
    assert main(["predict", str(model_dir), str(big), str(exact), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(big)) and "converted" in lines[0] and "40x30 -> 8x8" in lines[0]
    assert lines[4] == str(exact)  # already 8x8 grayscale: no conversion
    probs = [float(line.split()[-1].rstrip("%")) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
    assert main(["predict", str(model_dir), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in _error_line(capsys)


def test_sigterm_saves_and_exits_130_then_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convnet.cli.main", "train", "--arch", TINY, "--epochs", "500",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        # metrics.csv appears once training (and the signal handler) has started
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "SIGTERM received" in err and f"--resume {out}" in err
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.config["cli"]["epochs"] == 500
    # continue it for one more epoch than it finished
    target = ckpt.epoch + 1
    assert main(["train", "--resume", str(out), "--epochs", str(target)]) == 0
    done = load_checkpoint(out / "last.npz")
    assert done.epoch == target and not done.loop
    epochs = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, target + 1))


# ---------------------------------------------------------------- networks without FC (issue 5)
@pytest.mark.parametrize("arch", [
    # a CONV whose window is the whole 4x4x8 volume: a 1x1x10 output
    "INPUT(8x8x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> CONV(10,F=4)",
    # 1x1 CONV to 10 score maps, then global average pooling
    "INPUT(8x8x1) -> CONV(16,F=3,P=1) -> RELU -> CONV(32,F=3,P=1) -> RELU -> CONV(10,F=1) -> GAP",
])
def test_classifier_without_fc_trains_evaluates_and_predicts(arch, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--arch", arch, "--epochs", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    acc = float(re.search(r"test accuracy ([\d.]+)%", captured.out).group(1))
    assert acc > 50, captured  # ten classes: chance is 10%
    assert main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert np.array(r["confusion"]).shape == (10, 10) and r["count"] == 359
    assert r["accuracy"] > 0.5
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(image)
    assert main(["predict", str(out), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    assert all(re.fullmatch(r"  [12]\. \d +[\d.]+%", line) for line in lines[1:]), lines


def test_a_classifier_must_end_in_class_scores(tmp_path, capsys):
    arch = "INPUT(8x8x1) -> CONV(10,F=3,P=1)"  # 8x8x10: a map, not one score per class
    assert main(["train", "--arch", arch, "--out", str(tmp_path / "r")]) == 2
    line = _error_line(capsys)
    assert "outputs 8x8x10 but digits" in line and "CONV(10) to a 1x1x10 volume" in line


# ------------------------------------------------------------------------ segmentation (issue 5)
SEG = ["--data", "fashion-seg", "--n-train", "48", "--n-test", "8", "--epochs", "1",
       "--batch-size", "16"]


def test_segmentation_train_eval_predict(tmp_path, capsys):
    from convnet.fcn.segment import PALETTE

    out = tmp_path / "seg"
    # default network: the zoo's segnet (CONV/POOL down, DECONV up to 32x64x11)
    assert main(["train", *SEG, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "DECONV" in captured.err and "val_mIoU" in captured.err
    assert re.search(r"test mean IoU [\d.]+, pixel accuracy [\d.]+% \(8 images\)", captured.out)
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["test_mean_iou"] <= 1 and results["test_count"] == 8 * 32 * 64
    assert list(results["test_iou"])[:2] == ["background", "T-shirt/top"]
    # the per-epoch log carries the validation mean IoU
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= log[-1]["val_mean_iou"] <= 1

    assert main(["eval", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean IoU" in text and "per-class IoU" in text and "Ankle boot" in text
    assert main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 8 and len(r["iou"]) == 11
    assert r["mean_iou"] == pytest.approx(results["test_mean_iou"])  # the same test canvases

    canvas = tmp_path / "canvas.png"
    Image.fromarray(np.zeros((32, 64), np.uint8), mode="L").save(canvas)
    masks = tmp_path / "masks"
    assert main(["predict", str(out), str(canvas), "--out", str(masks)]) == 0
    said = capsys.readouterr().out
    assert f"written to {masks / 'canvas.mask.png'}" in said and "legend" in said
    mask = np.asarray(Image.open(masks / "canvas.mask.png"))
    assert mask.shape == (32, 64, 3)
    palette = {tuple(c) for c in PALETTE[:11].tolist()}
    assert {tuple(c) for c in mask.reshape(-1, 3).tolist()} <= palette
    assert (masks / "legend.png").exists()
    # without --out the mask goes next to the image
    assert main(["predict", str(out), str(canvas)]) == 0
    assert (tmp_path / "canvas.mask.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--augment"], "--augment moves pixels but not the per-pixel labels"),
    (["--arch", "INPUT(32x64x1) -> CONV(11,F=3,P=1) -> POOL"],
     r"outputs 16x32x11 but .* one label per pixel \(32x64, 11 classes\)"),
])
def test_segmentation_refuses_what_cannot_work(argv, message, tmp_path, capsys):
    assert main(["train", *SEG, *argv, "--out", str(tmp_path / "r")]) == 2
    assert re.search(message, _error_line(capsys))
