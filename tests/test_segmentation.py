"""Fashion-MNIST segmentation canvases, mean IoU, and an encoder-decoder that learns (issue 5)."""

from __future__ import annotations

import numpy as np
import pytest

import convnet as cn
from convnet.data.segmentation import (
    SegmentationDataset,
    canvas_grid,
    load_fashion_segmentation,
    make_canvases,
)
from convnet.fcn.segment import (
    SEGNET,
    SEGNET_SMALL,
    colorize_mask,
    confusion,
    evaluate_segmentation,
    mean_iou,
    save_mask_png,
)
from convnet.spec import describe


def synthetic_items(m=20, seed=0):
    """Items whose pixels tell where they came from: item i is a square of value (i+1)/m."""
    x = np.zeros((m, 28, 28), np.float32)
    for i in range(m):
        x[i, 4:24, 6:22] = (i + 1) / m
    return x, np.arange(m) % 10


# ---------------------------------------------------------------------------------- canvases
def test_canvases_are_deterministic_and_labelled_per_pixel():
    items, labels = synthetic_items()
    x, y = make_canvases(items, labels, 50, canvas=64, items=(2, 3), seed=3)
    x2, y2 = make_canvases(items, labels, 50, canvas=64, items=(2, 3), seed=3)
    x3, _ = make_canvases(items, labels, 50, canvas=64, items=(2, 3), seed=4)
    assert x.shape == (50, 64, 64, 1) and y.shape == (50, 64, 64)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, x3)
    # a pixel is its item's class + 1 exactly where the item is above the threshold
    np.testing.assert_array_equal(y > 0, x[..., 0] > 0.2)
    # each item pixel's value identifies the item, hence its class: labels must agree
    fg = y > 0
    item_index = np.rint(x[..., 0][fg] * 20).astype(int) - 1
    np.testing.assert_array_equal(y[fg], labels[item_index] + 1)


def test_canvases_hold_two_or_three_items_one_per_cell():
    items, labels = synthetic_items()
    x, _ = make_canvases(items, labels, 200, canvas=64, items=(2, 3), seed=0)
    ink = x[..., 0] > 0
    per_cell = ink.reshape(200, 2, 32, 2, 32).any(axis=(2, 4)).sum(axis=(1, 2))
    assert set(np.unique(per_cell)) == {2, 3}
    # items are shifted inside their cells, not always at the same place
    first_rows = np.argmax(ink.any(axis=2), axis=1)
    assert len(np.unique(first_rows)) > 3


def test_default_canvas_holds_two_items_side_by_side():
    items, labels = synthetic_items()
    assert canvas_grid(64) == ((64, 64), (2, 2))
    assert canvas_grid((32, 64)) == ((32, 64), (1, 2))
    assert canvas_grid((60, 90)) == ((60, 90), (2, 3))
    x, y = make_canvases(items, labels, 100, seed=1)
    assert x.shape == (100, 32, 64, 1) and y.shape == (100, 32, 64)
    ink = x[..., 0] > 0
    per_cell = ink.reshape(100, 32, 2, 32).any(axis=(1, 3))
    assert per_cell.all()  # one item in each 32x32 half
    # shifted 0..4 pixels inside the cell: every shift occurs, nothing leaves the cell
    first_rows = np.argmax(ink.any(axis=2), axis=1)  # the synthetic ink starts at item row 4
    assert set(np.unique(first_rows)) == set(range(4, 4 + 5))
    np.testing.assert_array_equal(y > 0, x[..., 0] > 0.2)


def test_canvas_arguments_are_checked():
    items, labels = synthetic_items()
    with pytest.raises(cn.DataError, match="at least 28 pixels on each side"):
        make_canvases(items, labels, 2, canvas=(20, 64))
    with pytest.raises(cn.DataError, match=r"items=\(0, 5\) must satisfy 1 <= min <= max <= 4 "
                       r"\(a 64x64 canvas holds a 2x2 grid"):
        make_canvases(items, labels, 2, canvas=64, items=(0, 5))
    with pytest.raises(cn.DataError, match="max <= 2"):
        make_canvases(items, labels, 2, items=(1, 3))
    with pytest.raises(cn.DataError, match="per-pixel"):
        SegmentationDataset(np.zeros((2, 8, 8, 1)), np.zeros((2, 8)), ["a", "b"])


def test_fashion_segmentation_from_the_real_data_set():
    train, test = cn.load_dataset("fashion-seg", n_train=40, n_test=10)
    assert train.x.shape == (40, 32, 64, 1) and test.y.shape == (10, 32, 64)
    assert train.classes[0] == "background" and train.classes[1] == "T-shirt/top"
    assert train.num_classes == 11
    share = train.class_counts() / train.y.size
    assert 0.55 < share[0] < 0.85  # mostly background, as a canvas of 2 items is
    again, _ = load_fashion_segmentation(n_train=40, n_test=10)
    np.testing.assert_array_equal(again.y, train.y)


# ------------------------------------------------------------------------------------ metrics
def test_mean_iou_against_a_hand_count():
    y = np.array([[0, 0, 1, 1, 2, 2]])
    p = np.array([[0, 1, 1, 1, 2, 0]])
    # class 0: TP 1, union 3; class 1: TP 2, union 3; class 2: TP 1, union 2
    m, ious = mean_iou(y, p, 4)
    np.testing.assert_allclose(ious[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(ious[3])  # absent everywhere: not counted
    assert m == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert confusion(y, p, 4).sum() == 6
    assert mean_iou(y, y, 3)[0] == 1.0


def test_mask_png_uses_one_colour_per_class(tmp_path):
    from PIL import Image

    mask = np.array([[0, 1], [2, 10]])
    path = save_mask_png(mask, tmp_path / "m.png")
    img = np.asarray(Image.open(path))
    assert img.shape == (2, 2, 3)
    np.testing.assert_array_equal(img, colorize_mask(mask))
    assert (img[0, 0] == 0).all() and len({tuple(c) for c in img.reshape(-1, 3)}) == 4


# ---------------------------------------------------------------------------- the network
def test_segnet_shapes_come_back_to_the_input_size():
    for spec in (SEGNET, SEGNET_SMALL, "segnet"):
        net = cn.build(spec, weights=False)
        assert net.output_shape == (32, 64, 11)
        assert any(ly.kind == "DECONV" for ly in net.layers)
        assert net.fully_convolutional
    assert cn.build("segnet", weights=False).spec == cn.build(SEGNET, weights=False).spec


def test_segnet_sees_a_whole_item():
    """Each output pixel's receptive field (77, what the zoo's description says) spans a 28x28
    item with room to spare, so every pixel can be classified by the item it belongs to."""
    from convnet.fcn.maps import map_receptive_field

    rf = map_receptive_field(cn.build("segnet", weights=False))
    assert rf.size == (77, 77) and rf.jump == (1, 1)
    assert "77 pixels" in describe("segnet")


@pytest.mark.slow
def test_small_encoder_decoder_learns_above_chance():
    """A short version of the recipe (bench/bench_segmentation.py trains SEGNET on 5000 canvases
    for 8 epochs to a held-out mean IoU above 0.6): a few hundred canvases and two epochs of
    the small network already bring the per-pixel loss well below chance."""
    from convnet.data import Normalizer

    train, test = load_fashion_segmentation(n_train=256, n_test=64, seed=0)
    norm = Normalizer.fit(train.x)
    net = cn.build(SEGNET_SMALL, seed=0)
    h = cn.fit(net, train, epochs=2, batch_size=8, lr=3e-3, normalizer=norm)
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"] < 2.0
    # above chance: the per-pixel cross-entropy is well below that of the best constant
    # prediction (each pixel gets the training set's class frequencies), which knows the
    # share of background and of each class but not where anything is
    freq = train.class_counts() / train.y.size
    chance = float(-np.mean(np.log(freq[test.y])))
    result = cn.evaluate(net, test, normalizer=norm)
    assert result["loss"] < 0.8 * chance, (result["loss"], chance)
    r = evaluate_segmentation(net, test, normalizer={"mean": norm.mean, "std": norm.std})
    assert r["predictions"].shape == test.y.shape
    # the training loop's measure agrees with the segmentation module's
    assert result["mean_iou"] == pytest.approx(r["mean_iou"])
    np.testing.assert_allclose(result["iou"], r["iou"])
    assert r["pixel_accuracy"] == pytest.approx(result["accuracy"])


def test_legend_png_shows_each_class_colour(tmp_path):
    from PIL import Image

    from convnet.fcn.segment import PALETTE, save_legend_png

    names = ["background", "T-shirt/top", "Trouser"]
    img = np.asarray(Image.open(save_legend_png(names, tmp_path / "legend.png", swatch=16)))
    assert img.shape[0] == 3 * 20 + 4
    for i in range(3):  # the middle of each swatch is the class's colour
        np.testing.assert_array_equal(img[4 + 20 * i + 8, 12], PALETTE[i])
